"""A Dask cluster on loopback, as separate processes: what a lab starts to run sweeps on.

``memristor-hil sweep --scheduler ADDRESS`` (and :func:`memristor_hil.experiments.sweep.sweep`
with ``scheduler=``) runs on a cluster someone else started. :func:`dask_cluster` starts one the
way a user would (``dask scheduler`` and ``dask worker`` as their own processes, bound to
127.0.0.1, no dashboards), so tests and benchmarks exercise that path, and stops it on exit.
Needs the ``[sweep]`` extra (``dask[distributed]``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["dask_cluster"]


@contextmanager
def dask_cluster(workers: int = 1, *, timeout: float = 120.0) -> Iterator[str]:
    """Start a loopback Dask scheduler and ``workers`` one-thread worker processes.

    Parameters
    ----------
    workers : int
        Worker processes (one thread each: a Nengo run is single-threaded).
    timeout : float
        Seconds to wait for the scheduler's address and for every worker to join.

    Yields
    ------
    str
        The scheduler's address (``tcp://127.0.0.1:PORT``).

    Raises
    ------
    RuntimeError
        The scheduler did not start, or the workers did not join, within ``timeout``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="memristor-hil-dask-") as folder:
        file = Path(folder) / "scheduler.json"
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--no-dashboard",
                        "--scheduler-file",
                        str(file),
                    ],
                    **quiet,
                )  # fmt: skip
            )
            address = _scheduler_address(file, procs[0], timeout)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nworkers",
                        str(workers),
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                    ],
                    **quiet,
                )  # fmt: skip
            )
            from distributed import Client

            with Client(address, timeout=timeout) as client:
                try:
                    client.wait_for_workers(workers, timeout=timeout)
                except TimeoutError as exc:
                    raise RuntimeError(
                        f"{workers} dask worker(s) did not join within {timeout:g} s"
                    ) from exc
            yield address
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in reversed(procs):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _scheduler_address(file: Path, proc: subprocess.Popen, timeout: float) -> str:
    """The address the scheduler writes to its scheduler file, once it has."""
    deadline = time.monotonic() + timeout
    while True:
        if file.exists():
            try:
                return json.loads(file.read_text())["address"]
            except (json.JSONDecodeError, KeyError):
                pass  # written but not yet complete
        if proc.poll() is not None:
            raise RuntimeError(f"the dask scheduler exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dask scheduler did not start within {timeout:g} s")
        time.sleep(0.1)
