"""mPES's memory stays flat over a run (issue 27, item 5).

``benchmarks/bench_mpes.py --memory-only`` prints the figures at 1000x1000 (mPES's own arrays
beside PES's own signals, and tracemalloc's growth over 1000 steps); this test holds the
no-growth part on a network small enough for CI.
"""

from __future__ import annotations

import tracemalloc

import nengo
import numpy as np

from memristor_hil import mPES


def _network(n: int) -> nengo.Network:
    """``pre -> post`` learned neuron to neuron under a large constant error, so that most
    pairs are pulsed every step (batches of thousands of cells, as at 1000x1000)."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t / 4))
        pre = nengo.Ensemble(n, 1, seed=0)
        post = nengo.Ensemble(n, 1, seed=1)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons, post.neurons, transform=np.zeros((n, n)), learning_rule_type=mPES()
        )
        nengo.Connection(nengo.Node([0.5]), conn.learning_rule)
    return net


def test_two_thousand_steps_keep_no_memory_in_proportion_to_the_crossbar():
    """From its first step, a 200x200 mPES run holds, 2000 steps later, less than a tenth of
    one float32 per device more than it did: the emulator's batch buffers used to grow at the
    first batch beyond 4096 cells (step 450 here, 320 kB; 7.6 MiB at 1000x1000), and now are
    sized when the simulator starts (``Crossbar.reserve``)."""
    n = 200
    with nengo.Simulator(_network(n), progress_bar=False) as sim:
        sim.run_steps(200)  # compiles the kernels: their caches are not the model's memory
    with nengo.Simulator(_network(n), progress_bar=False) as sim:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            sim.run_steps(2000)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    devices = 2 * n * n
    assert growth < 0.1 * devices * 4, [str(s) for s in after.compare_to(before, "lineno")[:5]]
