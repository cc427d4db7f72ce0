"""The emulator as a crossbar circuit (issue 26) against the ideal emulator: time ratios.

1. mPES learning a 100x100 connection on a 100x200 crossbar (positive and negative blocks side
   by side), ``--seconds`` simulated, dt = 1 ms: CPU time of ``sim.run`` per simulated second
   for the ideal emulator and for each array configuration, and the ratio. The network is
   ``benchmarks/bench_mpes.py``'s (sine input, ``pre`` -> ``post`` learned, error
   ``post - input**2``).
2. A 1000x1000 crossbar taking ``--cells`` pulsed cells per step (random rows and columns,
   one SET pulse each, read back): time per step for the ideal emulator and the arrays.
3. The peers' solver strategies on the wired 100x200 system, reimplemented here (neither
   installs beside this package's pins): badcrossbar factors and solves on every call
   (``scipy.sparse.linalg.spsolve`` with all right-hand sides, ``badcrossbar/computing/
   solve.py`` line 29 at joksas/badcrossbar@0f8f381); MemTorch factors once per tile with
   Eigen's SparseLU in float32 and solves each input alone (``memtorch/cpp/solve_passive.cpp``
   lines 223-235 at coreylammie/MemTorch@305c3a7), here SuperLU in float32. Each is timed for
   one step's worth of right-hand sides (as many as the array's own solver took per step in
   part 1) and compared with the ideal emulator's step.

4. What the wire does to one write and one read of the 100x200 array (Nb:STO-like devices of
   the emulator's default model, sigma 0.15): the voltage across the far-corner cell (0, 199)
   when row 0 is written whole at 1 V and when that cell is written alone (V/2), and the V/2
   read-back against the devices' own resistances.

For every array run: right-hand sides solved per step, how many of them by line sweeps
(``emulator/array/lines.py``) and the sweeps each took, and LU factorisations per step; without
wire there is no solve at all (closed forms, one compiled pass per batch). Array
configurations:

- ``v2 no wire``: ``read=v2&write=v2`` without wire resistance (closed forms, no solve);
- ``wire 2 ohm``: ``wire=2&read=grounded&write=v2`` (a solve per operation, one per word line
  read back);
- ``wire 5 ohm v2``: ``wire=5&read=v2&write=v2`` (``experiments/array.toml``'s strongest wire;
  one solve per bit line read back); at 1000x1000 not run (as ``wire 2 ohm``).

The wired 1000x1000 array takes ``--big-steps`` steps (default 1; about a minute each here).
Peak memory is printed after the 1000x1000 runs (the process's, all parts so far).
Times are this process's CPU time; the load average is printed with the figures.

Usage::

    python benchmarks/bench_array.py                 # 0.02 s simulated, 1000 cells, 3 steps
    python benchmarks/bench_array.py --seconds 0.1 --steps 10 --big-steps 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import nengo
import numpy as np

from memristor_hil import PulseBatch, mPES, open_crossbar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpes import build  # noqa: E402 - the benchmark folder's own module

clock = time.process_time
ARRAYS = {
    "v2 no wire": "read=v2&write=v2",
    "wire 2 ohm": "wire=2&read=grounded&write=v2",
    "wire 5 ohm v2": "wire=5&read=v2&write=v2",
}


def learning(url: str, seconds: float) -> tuple[float, object]:
    """CPU seconds per simulated second of mPES on the crossbar ``url``, and the crossbar."""
    xbar = open_crossbar(url)
    net = build(100, mPES(crossbar=xbar, pulses="one"))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.002)  # warm-up: compiled kernels, first factorisation
        start = clock()
        sim.run(seconds)
        return (clock() - start) / seconds, xbar


def pulsing(url: str, cells: int, steps: int) -> tuple[float, object]:
    """CPU seconds per step of ``cells`` one-pulse SETs with read-back, and the crossbar."""
    xbar = open_crossbar(url)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps + 1):
        flat = np.sort(rng.choice(xbar.size, cells, replace=False))
        batches.append(PulseBatch(flat // xbar.shape[1], flat % xbar.shape[1]))
    xbar.apply(batches[0], read_back=True)  # warm-up
    start = clock()
    for batch in batches[1:]:
        xbar.apply(batch, read_back=True)
    return (clock() - start) / steps, xbar


def _solver(xbar: object, steps: float) -> str:
    system = getattr(xbar, "_system", None)
    if system is None or not system.right_hand_sides:
        return ""
    swept = max(system.line_solves, 1)
    return (
        f"\n{'':32s}right-hand sides/step {system.right_hand_sides / steps:.1f} "
        f"({system.line_solves / steps:.1f} by line sweeps, {system.sweeps / swept:.2f} "
        f"sweeps each; {system.sweeps / steps:.0f} sweeps/step), "
        f"LU factorisations/step {system.factorisations / steps:.2f}"
    )


def wire_effect(wires: tuple[float, ...] = (0.5, 2.0, 5.0)) -> None:
    """Print part 4 (see the module's docstring) as a Markdown table."""
    from memristor_hil.emulator.array import NodalSystem

    print("| wire (ohm) | V at (0, 199), row 0 written | the cell alone | read-back error |")
    print("|---|---|---|---|")
    for wire in wires:
        xbar = open_crossbar(
            f"emulator://?rows=100&cols=200&seed=0&sigma=0.15&wire={wire}&read=v2&write=v2"
        )
        g = 1 / xbar.true_resistances()
        rows, cols = xbar.shape
        volts = []
        for selected in (np.arange(cols), np.array([cols - 1])):
            row_ends = np.full((rows, 2), np.nan)
            col_ends = np.full((cols, 2), np.nan)
            row_ends[:, 0], col_ends[:, 1] = 0.5, 0.5
            row_ends[0, 0], col_ends[selected, 1] = 1.0, 0.0
            nodes = NodalSystem(rows, cols, xbar.array.wiring).solve(g, row_ends, col_ends)
            volts.append(nodes.device_voltage[0, cols - 1])
        error = (xbar.read_all() / xbar.true_resistances() - 1).ravel()
        print(
            f"| {wire} | {volts[0]:.4f} V | {volts[1]:.4f} V | median {np.median(error):.2%},"
            f" worst {error[np.argmax(np.abs(error))]:.2%} |"
        )


def peers(rows: int, cols: int, rhs: int) -> dict[str, float]:
    """CPU seconds for one step of ``rhs`` right-hand sides on the wired ``rows x cols``
    nodal system (2 ohm wires, Nb:STO-like devices), the peers' ways (see the module's
    docstring): badcrossbar's spsolve of them all, MemTorch's float32 LU once and a solve
    each."""
    from memristor_hil.emulator.array import Wiring
    from memristor_hil.emulator.array.circuit import nodal_matrix
    from scipy.sparse.linalg import splu, spsolve

    g = 1.0 / np.random.default_rng(0).uniform(1e4, 1e6, (rows, cols))
    row_held = np.zeros((rows, 2), bool)
    row_held[:, 0] = True
    col_held = np.zeros((cols, 2), bool)
    col_held[:, 1] = True
    a = nodal_matrix(Wiring(2.0, 2.0), g, row_held, col_held)
    b = np.random.default_rng(1).random((a.shape[0], rhs))
    start = clock()
    spsolve(a, b)
    bad = clock() - start
    start = clock()
    lu = splu(a.astype(np.float32))
    for i in range(rhs):
        lu.solve(b[:, i].astype(np.float32))
    return {"badcrossbar (spsolve per call)": bad, "MemTorch (LU once, float32)": clock() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.02, help="simulated seconds (mPES)")
    parser.add_argument("--cells", type=int, default=1000, help="pulsed cells per step")
    parser.add_argument("--steps", type=int, default=3, help="steps at 1000x1000")
    parser.add_argument("--big-steps", type=int, default=1, help="steps, wired 1000x1000")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; CPU time")

    print("\n1. mPES 100x100 on a 100x200 crossbar, CPU s per simulated s (target: within 3x)")
    base = "emulator://?rows=100&cols=200&seed=0&dtype=float32"
    ideal, _ = learning(base, args.seconds)
    print(f"  {'ideal':28s} {ideal:9.3f} s/s")
    steps = (args.seconds + 0.002) / 0.001
    rhs = 0.0
    for name, query in ARRAYS.items():
        t, xbar = learning(f"{base}&{query}", args.seconds)
        print(f"  {name:28s} {t:9.3f} s/s  ratio {t / ideal:8.1f}x{_solver(xbar, steps)}")
        if name == "wire 2 ohm":
            rhs = xbar._system.right_hand_sides / steps

    print(f"\n3. the peers' solvers, one step ({rhs:.0f} right-hand sides) of wire 2 ohm, 100x200")
    for name, t in peers(100, 200, max(int(round(rhs)), 1)).items():
        print(f"  {name:28s} {t / 0.001:9.3f} s/s  ratio {t / 0.001 / ideal:8.1f}x")

    print(f"\n2. 1000x1000, {args.cells} pulsed cells per step, CPU time per step (target: 10x)")
    base = "emulator://?rows=1000&cols=1000&seed=0&dtype=float32"
    ideal, _ = pulsing(base, args.cells, args.steps)
    print(f"  {'ideal':28s} {ideal * 1e3:9.4f} ms")
    for name, query in list(ARRAYS.items())[:2]:
        steps = args.big_steps if "wire" in query else args.steps
        t, xbar = pulsing(f"{base}&{query}", args.cells, steps)
        print(f"  {name:28s} {t * 1e3:9.1f} ms  ratio {t / ideal:8.1f}x{_solver(xbar, steps + 1)}")
    print(f"  peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")

    print("\n4. the wire's effect on one write and one read of the 100x200 array (V/2)")
    wire_effect()


if __name__ == "__main__":
    main()
