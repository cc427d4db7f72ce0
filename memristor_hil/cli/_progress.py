"""Progress bars for long bench work, on stderr, drawn by tqdm.

tqdm (rather than rich) because it is one small pure-Python package with no dependencies of
its own, its ``tqdm.auto`` draws a widget in Jupyter and a text bar elsewhere, and it already
handles what a hand-written bar got wrong: terminal width, pipes and log files (refreshed at
most every ``mininterval`` seconds there instead of every step), and unknown totals.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


def progress_bar(
    total: float | None, label: str, unit: str = "it", stream: TextIO | None = None, **kw: Any
) -> Any:
    """A tqdm bar on stderr (a widget in a notebook); slower refresh when not on a terminal."""
    from tqdm.auto import tqdm

    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    options = {"mininterval": 0.2 if tty else 5.0, "dynamic_ncols": tty, "leave": True}
    return tqdm(total=total, desc=label, unit=unit, file=stream, **{**options, **kw})


class ProgressBar:
    """A ``progress(done, total)`` callback (as ``characterize`` and ``fit`` call it) over tqdm.

    The bar opens on the first call and closes when ``done`` reaches ``total``.
    """

    def __init__(self, label: str, unit: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit.strip() or "it"
        self.stream = stream
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = progress_bar(total, self.label, self.unit, self.stream)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Close the bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
