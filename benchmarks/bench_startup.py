"""Start-up time of the ``memristor-hil`` command: every subcommand's --help and argument errors.

Each case runs the installed command in a fresh process several times, interleaved with a bare
``python -c pass`` and ``python -c "import numpy"`` as references, and prints the minimum wall
time of each (the machine's load only adds to it). Target (issue 15): under 0.3 s for --help
and argument errors, which parse arguments and import nothing heavy (numba, nengo,
matplotlib, scipy are imported inside the subcommands that need them).

    .venv/bin/python benchmarks/bench_startup.py
    .venv/bin/python benchmarks/bench_startup.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

COMMAND = [str(Path(sys.executable).with_name("memristor-hil"))]
CASES = [
    ["--help"],
    ["demo", "--help"],
    ["pulse-demo", "--help"],
    ["emulate", "--help"],
    ["info", "--help"],
    ["characterize", "--help"],
    ["fit", "--help"],
    ["record", "--help"],
    ["record", "show", "--help"],
    ["record", "export", "--help"],
    ["demo", "--nuerons", "10"],  # a typo: argument error
    ["emulate"],  # a missing required argument
    ["fit"],
    ["nonsense"],
]
HEAVY = ("numpy", "numba", "nengo", "matplotlib", "scipy")


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def heavy_imports(case: list[str]) -> list[str]:
    """The heavy modules a case imports (run in-process under -c, with SystemExit caught)."""
    code = (
        "import sys\nfrom memristor_hil.cli import main\n"
        f"try:\n    main({case!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:") :].split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (minimum kept)")
    args = parser.parse_args()
    if not Path(COMMAND[0]).exists():
        sys.exit(f"{COMMAND[0]} not found: install the package in this environment first")
    refs = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
    }
    times: dict[str, list[float]] = {name: [] for name in [*refs, *map(" ".join, CASES)]}
    for _ in range(args.repeats):
        for name, argv in refs.items():
            times[name].append(wall(argv))
        for case in CASES:
            times[" ".join(case)].append(wall(COMMAND + case))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"minimum of {args.repeats} runs each, interleaved; load average {load:.1f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'case':<40} {'min s':>7} {'< 0.3 s':>8}  imports of: numpy numba nengo matplotlib scipy"
    )
    for name in refs:
        print(f"{name:<40} {min(times[name]):>7.3f}")
    for case in CASES:
        name = " ".join(case)
        best = min(times[name])
        heavy = ", ".join(heavy_imports(case)) or "none"
        print(f"memristor-hil {name:<26} {best:>7.3f} {'yes' if best < 0.3 else 'NO':>8}  {heavy}")


if __name__ == "__main__":
    main()
