"""Run a sweep on Dask: every run of a plan as a task, rows written as they finish.

:func:`sweep` runs a :class:`~memristor_hil.experiments.plan.SweepPlan` (or a TOML file) on

- a local cluster of one single-threaded worker process per core (the default). The workers
  are ``dask worker`` processes, so a user's script is never re-imported by them and needs no
  ``if __name__ == "__main__"`` guard;
- an existing Dask cluster: ``scheduler="tcp://host:port"`` (or ``DASK_SCHEDULER_ADDRESS``),
  e.g. one started by dask-jobqueue on an HPC machine;
- or in this process, one run after another (``workers=0``).

Every finished run, successful or not, is a row of ``OUT/results.parquet`` at once
(:class:`~memristor_hil.experiments.results.ResultTable`); a failed run carries its error and
traceback and never stops the sweep. ``resume=True`` skips the runs the table already has as
finished.

Hardware: runs whose crossbar URL is a hardware scheme (``serial://``, ``visa://``) are chained
per URL (each run's task depends on the previous one's), so two runs never drive one instrument
at once, on any cluster. Each gets cells no earlier run of the sweep has used (its table
remembers them across resumes) or is refused with an error when the crossbar has no room.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memristor_hil.experiments.plan import SweepPlan, load_plan
from memristor_hil.experiments.results import ResultTable
from memristor_hil.experiments.tasks import RunSpec, run_task, versions

__all__ = [
    "NoFreeCellsError",
    "SweepProgress",
    "default_out",
    "hardware_url",
    "run_one",
    "runs_left",
    "sweep",
]

INSTALL_HINT = "pip install 'memristor-hil[sweep]' (in a clone: pip install -e '.[sweep]')"


class NoFreeCellsError(RuntimeError):
    """A hardware crossbar has no block of cells that no earlier run of the sweep pulsed."""


@dataclass(frozen=True)
class SweepProgress:
    """What :func:`sweep` tells its ``progress`` callback after each finished run."""

    done: int
    total: int
    failed: int
    elapsed: float
    row: dict[str, Any]

    @property
    def eta(self) -> float:
        """Seconds left, at the pace so far."""
        return self.elapsed / self.done * (self.total - self.done) if self.done else float("nan")


def hardware_url(spec: RunSpec) -> str | None:
    """The run's crossbar URL when it names real hardware (a ``hardware`` scheme), else None."""
    if spec.rule != "mPES" or not spec.crossbar:
        return None
    from memristor_hil.backends import hardware_schemes

    scheme = spec.crossbar.partition("://")[0].lower()
    return spec.crossbar if scheme in hardware_schemes() else None


def _base_row(spec: RunSpec) -> dict[str, Any]:
    row = {"run_id": spec.run_id, **asdict(spec), "label": spec.label, "settings": spec.settings}
    row.update(spec.resolved())  # the stimulus and seconds it ran with, failed or not
    row.update({f"version_{k}": v for k, v in versions().items()})
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return row


def run_one(spec: RunSpec, records: str | None = None) -> dict[str, Any]:
    """Run one spec and return its row; never raises (a failure is a row with a traceback).

    Parameters
    ----------
    spec : RunSpec
        The run.
    records : str, optional
        Folder for the record of a hardware run (``<run_id>.sqlite``).
    """
    return _run_placed(spec, [], records)


def _run_placed(spec: RunSpec, used: list[list[int]], records: str | None) -> dict[str, Any]:
    row = _base_row(spec)
    row["started"] = time.time()
    row["cells"] = None
    try:
        url = hardware_url(spec)
        if url is None:
            row.update(run_task(spec))
        else:
            row.update(_run_hardware(spec, url, used, row, records))
        row.update(status="ok", error=None, traceback=None)
    except BaseException as exc:  # noqa: BLE001 - a failed run is a row, never the sweep's end
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        row["traceback"] = traceback.format_exc()
    row["finished"] = time.time()
    row["wall_s"] = row["finished"] - row["started"]
    row["_used"] = used
    return row


def _run_hardware(
    spec: RunSpec, url: str, used: list[list[int]], row: dict[str, Any], records: str | None
) -> dict[str, Any]:
    from memristor_hil import open_crossbar
    from memristor_hil.learning.layout import Block, Layout

    resolved = spec.resolved()
    record: Any = None
    if records is not None:
        record = Path(records) / f"{spec.run_id}.sqlite"
        record.parent.mkdir(parents=True, exist_ok=True)
    with open_crossbar(url, record=record) as xbar:
        block = _free_block(xbar.shape, resolved["n_post"], 2 * resolved["n_pre"], used)
        if block is None:
            taken = ", ".join(str(Block(*b)) for b in used) or "none"
            raise NoFreeCellsError(
                f"{url} ({xbar.shape[0]}x{xbar.shape[1]}) has no {resolved['n_post']}x"
                f"{2 * resolved['n_pre']} block of cells that earlier runs of this sweep left "
                f"unpulsed (used: {taken}); refusing to learn on pulsed cells"
            )
        used.append([block.row, block.col, block.nrows, block.ncols])
        row["cells"] = str(block)
        return run_task(spec, crossbar=xbar, layout=Layout(row=block.row, col=block.col))


def _free_block(shape: tuple[int, int], nrows: int, ncols: int, used: list[list[int]]) -> Any:
    """The first ``nrows x ncols`` block (row-major) overlapping none of ``used``, or None."""
    from memristor_hil.learning.layout import Block

    taken = [Block(*b) for b in used]
    rows = sorted({0, *(b.row_stop for b in taken)})
    cols = sorted({0, *(b.col_stop for b in taken)})
    for r in rows:
        for c in cols:
            block = Block(r, c, nrows, ncols)
            if block.fits(shape) and not any(block.overlaps(b) for b in taken):
                return block
    return None


def _run_chained(
    spec: RunSpec, previous: dict[str, Any] | list[list[int]], records: str | None
) -> dict[str, Any]:
    """A hardware run after ``previous`` (the cells used so far, or the last run's row)."""
    used = previous["_used"] if isinstance(previous, dict) else previous
    return _run_placed(spec, [list(b) for b in used], records)


def _used_cells(table: ResultTable, url: str) -> list[list[int]]:
    """Cells earlier runs of this sweep (finished or failed) took on ``url``."""
    used = []
    for row in table.rows.values():
        if row.get("crossbar") == url and row.get("cells"):
            # str(Block): "rows a..b, cols c..d"
            rows_part, cols_part = row["cells"].split(", ")
            r0, r1 = (int(v) for v in rows_part.split(" ")[1].split(".."))
            c0, c1 = (int(v) for v in cols_part.split(" ")[1].split(".."))
            used.append([r0, c0, r1 - r0 + 1, c1 - c0 + 1])
    return used


def default_out(plan: SweepPlan) -> Path:
    """``out/sweeps/<name>``: a reduced plan (:meth:`.SweepPlan.limited`) has a name of its own."""
    return Path("out") / "sweeps" / plan.name


def runs_left(plan: SweepPlan, out: Path, resume: bool) -> tuple[ResultTable, list, list]:
    """The table at ``out``, every run of ``plan``, and the runs it has still to do.

    Raises
    ------
    ValueError
        The table exists and ``resume`` is false (nothing is overwritten); or ``resume`` is
        true and the table holds runs this plan does not have: it was written by another plan
        (other seeds, seconds, tasks or settings), which resuming would mix into it.
    """
    results = out / "results.parquet"
    if results.exists() and not resume:
        raise ValueError(
            f"{results} exists: pass resume=True (--resume) to continue that sweep, or choose "
            "another output folder"
        )
    table = ResultTable(results)
    specs = plan.runs()
    ids = {s.run_id for s in specs}
    foreign = [row for rid, row in table.rows.items() if rid not in ids]
    if foreign:
        first = foreign[0]
        raise ValueError(
            f"{results} holds {len(foreign)} runs that sweep {plan.name!r} does not have (e.g. "
            f"{first.get('task')} {first.get('label')} seed {first.get('seed')}, "
            f"{first.get('stimulus')}, {first.get('seconds')} s): it was written by another "
            "plan (other seeds, seconds, tasks or settings). Resume with the same plan and "
            "options, or choose another output folder"
        )
    finished = table.finished()
    return table, specs, [s for s in specs if s.run_id not in finished]


def sweep(
    plan: SweepPlan | Mapping[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: Callable[[SweepProgress], None] | None = None,
    summarize: bool = True,
) -> Any:
    """Run every run of a sweep on Dask and write its table, summary and plots.

    Parameters
    ----------
    plan : SweepPlan, mapping or path
        The sweep: a plan, a mapping in the TOML layout, or a TOML file.
    out : path-like, optional
        Output folder (default ``out/sweeps/<name>``, see :func:`.default_out`):
        ``results.parquet``, ``summary.md``,
        ``*.png`` and ``records/`` (hardware runs).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:port``). Default:
        ``$DASK_SCHEDULER_ADDRESS``, else a local cluster of ``workers`` processes.
    workers : int, optional
        Local worker processes (default: one per core). ``0``: run in this process, serially.
    resume : bool
        Continue a sweep whose table exists, skipping its finished runs. Without it an
        existing table is an error (nothing is overwritten); a table of another plan is an
        error either way (see :func:`.runs_left`).
    progress : callable, optional
        Called with a :class:`.SweepProgress` after each finished run.
    summarize : bool
        Write ``summary.md`` and the plots at the end.

    Returns
    -------
    pandas.DataFrame
        The table, one row per run.
    """
    if not isinstance(plan, SweepPlan):
        plan = SweepPlan.from_dict(plan) if isinstance(plan, Mapping) else load_plan(plan)
    out = Path(out) if out is not None else default_out(plan)
    table, specs, todo = runs_left(plan, out, resume)
    records = str(out / "records")
    start = time.monotonic()
    counts = {"done": len(specs) - len(todo), "failed": 0}

    def finish(row: dict[str, Any]) -> None:
        row.pop("_used", None)
        table.add(row)
        counts["done"] += 1
        counts["failed"] += row["status"] != "ok"
        if progress is not None:
            elapsed = time.monotonic() - start
            done_now = counts["done"] - (len(specs) - len(todo))
            progress(SweepProgress(done_now, len(todo), counts["failed"], elapsed, row))

    if todo:
        scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if workers == 0 and scheduler is None:
            _run_serial(todo, table, records, finish)
        else:
            _run_dask(todo, table, records, finish, scheduler, workers)
    if summarize:
        from memristor_hil.experiments.summary import write_summary

        write_summary(table.frame(), out, title=plan.name)
    return table.frame()


def _run_serial(
    todo: list[RunSpec], table: ResultTable, records: str, finish: Callable[[dict], None]
) -> None:
    used: dict[str, list[list[int]]] = {}
    for spec in todo:
        url = hardware_url(spec)
        if url is None:
            finish(run_one(spec, records))
        else:
            cells = used.setdefault(url, _used_cells(table, url))
            row = _run_placed(spec, cells, records)
            used[url] = row["_used"]
            finish(row)


def _run_dask(
    todo: list[RunSpec],
    table: ResultTable,
    records: str,
    finish: Callable[[dict], None],
    scheduler: str | None,
    workers: int | None,
) -> None:
    try:
        from distributed import as_completed
    except ImportError:
        raise ImportError(f"sweeps on Dask need the [sweep] extra: {INSTALL_HINT}") from None

    with _client(scheduler, workers) as client:
        futures: dict[Any, RunSpec] = {}
        last: dict[str, Any] = {}
        for spec in todo:
            url = hardware_url(spec)
            key = f"run-{spec.label.replace(' ', '-')}-{spec.run_id}"
            if url is None:
                future = client.submit(run_one, spec, records, key=key, pure=False)
            else:
                previous = last.get(url) or _used_cells(table, url)
                future = client.submit(_run_chained, spec, previous, records, key=key, pure=False)
                last[url] = future
            futures[future] = spec
        try:
            for future in as_completed(list(futures)):
                spec = futures.pop(future)
                if future.status == "finished":
                    row = future.result()
                else:  # the worker died or a chained hardware run before it did
                    row = _base_row(spec)
                    exc = future.exception()
                    row.update(
                        status="failed",
                        error=f"{type(exc).__name__}: {exc}",
                        traceback="".join(traceback.format_exception(exc)),
                        started=None,
                        finished=time.time(),
                        cells=None,
                    )
                finish(row)
        finally:
            client.cancel(list(futures))


class _client:  # noqa: N801 - a context manager used like a function
    """A Dask client: on ``scheduler``, or on local ``dask worker`` processes it starts."""

    def __init__(self, scheduler: str | None, workers: int | None) -> None:
        self.scheduler = scheduler
        self.workers = workers or os.cpu_count() or 1
        self.cluster: Any = None
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            self.client = Client(self.scheduler, timeout=30)
            return self.client
        self.cluster = LocalCluster(
            n_workers=0,
            processes=False,
            host="127.0.0.1",
            protocol="tcp",
            dashboard_address=None,
        )
        self.client = Client(self.cluster)
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    self.cluster.scheduler_address,
                    "--nworkers",
                    str(self.workers),
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--death-timeout",
                    "30",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        try:
            self.client.wait_for_workers(self.workers, timeout=120)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.client

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.cluster is not None:
            self.cluster.close()
