"""How slow an mPES timestep is on an SMU + switching-matrix bench (smu://).

Starts ``memristor-hil emulate --dialect keithley2600`` (an emulated 2600B + 707B, its own
process) and runs a 10x10-neuron mPES network on it, beside the same network on the in-process
emulator. Prints, per timestep: the host's wall time for both, and the *instrument* time the
emulated bench accounts for (relay settling, pulse widths and integration times, added up by
the emulation's virtual clock exactly as the script on a real bench would spend them). The
instrument time is what a real bench would take; it does not depend on this machine.

Usage::

    python benchmarks/bench_smu_timestep.py [--sim-time S] [--settle S] [--width S] [--nplc N]
"""

from __future__ import annotations

import argparse
import time

import nengo
import numpy as np
from bench_transports import start_service

from memristor_hil import mPES, open_crossbar

N = 10
SHAPE = (N, 2 * N)  # post x (pre positive + pre negative)
DEVICES = f"emulator://?rows={SHAPE[0]}&cols={SHAPE[1]}&seed=0&sigma=0.15"


def network(crossbar, width: float) -> tuple[nengo.Network, nengo.Probe]:
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre, post = nengo.Ensemble(N, 1), nengo.Ensemble(N, 1)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((N, N)),
            learning_rule_type=mPES(crossbar=crossbar, pulse_width=width),
        )
        err = nengo.Node(size_in=1)
        nengo.Connection(post, err, synapse=0.01)
        nengo.Connection(stim, err, transform=-1, synapse=0.01)
        nengo.Connection(err, conn.learning_rule)
        probe = nengo.Probe(conn.learning_rule, "pulses")
    return net, probe


def timed_run(crossbar, sim_time: float, width: float) -> tuple[float, int, np.ndarray]:
    net, probe = network(crossbar, width)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.002)  # build and warm up before timing
        start = time.perf_counter()
        sim.run(sim_time)
        wall = time.perf_counter() - start
        steps = int(round(sim_time / sim.dt))
        pulses = np.asarray(sim.data[probe])[-steps:]
    return wall, steps, pulses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-time", type=float, default=0.05, help="simulated seconds")
    parser.add_argument("--settle", type=float, default=1e-3, help="extra settling, s")
    parser.add_argument("--width", type=float, default=1e-4, help="pulse width, s")
    parser.add_argument("--nplc", type=float, default=0.01, help="integration, power cycles")
    args = parser.parse_args()

    with open_crossbar(DEVICES) as xbar:
        wall_emulator, steps, _ = timed_run(xbar, args.sim_time, args.width)
    proc, where = start_service("--tcp", "127.0.0.1:0", "--dialect", "keithley2600", url=DEVICES)
    smu, matrix = where.split()
    try:
        resources = [
            f"TCPIP::{h}::{p}::SOCKET" for h, p in (w.rsplit(":", 1) for w in (smu, matrix))
        ]
        url = (
            f"smu://{resources[0]}?matrix={resources[1]}&rows={SHAPE[0]}&cols={SHAPE[1]}"
            f"&settle={args.settle}&nplc={args.nplc}&timeout=30"
        )
        with open_crossbar(url, record=False) as xbar:
            before = xbar.stats["instrument_seconds"]
            wall_bench, steps, pulses = timed_run(xbar, args.sim_time, args.width)
            instrument = xbar.stats["instrument_seconds"] - before
            batches = xbar.stats["batches"]
    finally:
        proc.terminate()
        proc.wait(20)
    per_step = instrument / steps
    per_step_pulses = float(np.mean(pulses.reshape(steps, -1).sum(axis=1)))
    print(f"mPES {N}x{N} neurons ({SHAPE[0]}x{SHAPE[1]} devices), {steps} timesteps of 1 ms")
    print(f"  relays 4 ms per switching action, extra settle {args.settle * 1e3:g} ms, "
          f"pulse width {args.width * 1e6:g} us, nplc {args.nplc:g}")  # fmt: skip
    print(f"  pulses per step (mean): {per_step_pulses:.1f}; SMU script calls: {batches}")
    print(f"  host wall time per step: emulator:// {wall_emulator / steps * 1e3:.2f} ms, "
          f"smu:// (emulated bench over TCP) {wall_bench / steps * 1e3:.2f} ms "
          f"(ratio {wall_bench / wall_emulator:.1f}x)")  # fmt: skip
    print(f"  instrument time per step on the bench: {per_step * 1e3:.1f} ms")
    print(
        f"  => one simulated second takes about {per_step * 1000 / 60:.1f} minutes on the "
        "bench (real-time factor "
        f"{per_step / 1e-3:.0f}x slower than real time)"
    )


if __name__ == "__main__":
    main()
