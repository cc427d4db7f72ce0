"""A small text progress bar for long bench work, on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``progress(done, total)`` callback drawing ``label [#####.....] 50% 5/10 ETA 3s``.

    On a terminal the bar redraws in place; otherwise (logs, pipes) it prints a line at every
    tenth of the work, so a log still shows progress without thousands of lines.
    """

    def __init__(self, label: str, unit: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._start = time.monotonic()
        self._last_tenth = -1
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        if total != self._total or done < 0:
            self._total, self._start, self._last_tenth = total, time.monotonic(), -1
        fraction = done / total if total else 1.0
        elapsed = time.monotonic() - self._start
        eta = elapsed / fraction - elapsed if fraction > 0 else float("inf")
        width = 30
        filled = int(round(width * fraction))
        text = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}% "
            f"{done}/{total}{self.unit} "
            + (f"ETA {eta:.0f}s" if done < total else f"in {elapsed:.1f}s")
        )
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r{text}", end=end, file=self.stream, flush=True)
            return
        tenth = int(fraction * 10)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            print(text, file=self.stream, flush=True)
