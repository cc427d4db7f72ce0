"""A sweep's table: one row per run, in one Parquet file rewritten as each run finishes.

The file is replaced atomically (written beside, then renamed), so a crash, Ctrl-C or a
killed machine leaves the table as it was after the last finished run: nothing finished is
lost and nothing half-written is read. A table of a few thousand rows rewrites in
milliseconds, far below a run's seconds, so one file (not a folder of parts) stays the simple
thing to read: ``pandas.read_parquet("results.parquet")``.

Columns: ``run_id``; every :class:`~memristor_hil.experiments.tasks.RunSpec` field; ``label``
and ``settings`` (the rule and device settings in words); the metrics of
:func:`~memristor_hil.experiments.tasks.run_task`; ``status`` (``"ok"`` or ``"failed"``),
``error`` and ``traceback`` of a failed run; ``cells`` (the crossbar cells a hardware run
used); ``worker``, ``started``, ``finished`` (UTC seconds) and ``wall_s``; ``version_*``
(``version_commit``: the git commit of the source that ran).

Tables written before ``pulses_applied`` existed kept the number of pulses in ``pulses``,
over the run's policy; :func:`upgrade_row` moves it, and reads the policy back from the
run's label, when such a table is read, so a resumed or re-summarized old table has one
meaning per column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["ResultTable", "upgrade_row"]


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row of an older table in today's columns (in place; returned for chaining).

    Before ``pulses_applied``, ``pulses`` held the number of pulses a run applied (a number)
    instead of the run's pulse policy: the number moves to ``pulses_applied`` and the policy
    is read back from the run's ``label`` (``"mPES one"`` is ``"one"``, ``"mPES stochastic/2"``
    ``"stochastic"``; the default's ``"mPES rate"`` and PES's are None, as in a new row).
    """
    if "pulses_applied" not in row and isinstance(row.get("pulses"), int | float):
        row["pulses_applied"] = float(row["pulses"])
        row["pulses"] = _policy_of(str(row.get("label", "")))
    return row


def _policy_of(label: str) -> str | None:
    """The pulse policy a run's label names (the inverse of ``RunSpec.label``)."""
    words = label.split()
    if len(words) < 2 or words[0] != "mPES":
        return None
    policy = words[1].split("/")[0]
    return None if policy == "rate" else policy


class ResultTable:
    """The rows of one sweep's ``results.parquet``, kept in memory and on disk.

    Parameters
    ----------
    path : path-like
        The Parquet file. An existing file is read (to resume).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            import pandas as pd

            frame = pd.read_parquet(self.path)
            for row in frame.to_dict("records"):
                # a NumPy array after the Parquet round trip (no truth value when it holds
                # several blocks, as paper 2's runs do), None for a failed run
                blocks = row.get("block_errors")
                row["block_errors"] = [] if blocks is None else [float(x) for x in blocks]
                self.rows[row["run_id"]] = upgrade_row(row)

    def finished(self) -> set[str]:
        """Ids of the runs that finished without error (``--resume`` skips these)."""
        return {rid for rid, row in self.rows.items() if row.get("status") == "ok"}

    def add(self, row: dict[str, Any]) -> None:
        """Add (or replace) one run's row and rewrite the file atomically."""
        self.rows[row["run_id"]] = row
        self.write()

    def frame(self) -> Any:
        """The table as a pandas DataFrame, in the order the runs finished."""
        import pandas as pd

        return pd.DataFrame(list(self.rows.values()))

    def write(self) -> None:
        """Replace the Parquet file with the current rows."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
