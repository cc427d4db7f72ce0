"""What the pytest plugin costs a test suite that uses none of its fixtures.

Runs ``python -m pytest`` on a one-test suite in a temporary folder, with the plugin loaded
(as installing memristor-hil does) and with ``-p no:memristor_hil``, alternating, and prints
the median wall time of each and their difference (target: under 50 ms).

Usage::

    .venv/bin/python benchmarks/bench_pytest_plugin.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(folder: Path, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nengo", *extra],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each (default 15)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_plain.py").write_text(
            "def test_nothing_of_ours():\n    assert 1 + 1 == 2\n"
        )
        run(folder)  # warm the file caches
        with_plugin, without = [], []
        for _ in range(args.runs):
            with_plugin.append(run(folder))
            without.append(run(folder, "-p", "no:memristor_hil"))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"pytest on a one-test suite, median of {args.runs} alternating runs:")
    print(f"  plugin loaded       {1e3 * a:7.1f} ms")
    print(f"  -p no:memristor_hil {1e3 * b:7.1f} ms")
    print(f"  the plugin adds     {1e3 * (a - b):7.1f} ms (target < 50 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
