"""The approach this package replaced: a ``nengo.Node`` holding one Python object per device.

The seed thread (a researcher's forum post) describes it: every synapse is a pair of Python
memristor objects, and each timestep a Node loops over the post neurons and spiking pre
neurons, pulsing one object at a time and recomputing its weight. It is kept here, written
from that description, only as the speed anchor ``bench_mpes.py`` prints beside mPES ("30 s
at 100x100 took an hour"). It is not part of the package.
"""

from __future__ import annotations

import nengo
import numpy as np

R0, R1, A, GAIN = 200.0, 2.3e8, -0.146, 1e3


class Device:
    """One power-law memristor as a Python object: R(n) = R0 + R1 * n**A."""

    __slots__ = ("resistance",)

    def __init__(self, resistance: float) -> None:
        self.resistance = resistance

    def set_pulse(self) -> None:
        pulses = ((self.resistance - R0) / R1) ** (1 / A)
        self.resistance = R0 + R1 * (pulses + 1) ** A

    @property
    def conductance(self) -> float:
        return (1 / self.resistance - 1 / R1) / (1 / R0 - 1 / R1)


class DeviceNode:
    """Node function: input ``[filtered pre activities, error]``, output the post currents."""

    def __init__(self, n_pre: int, n_post: int, encoders: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n_pre = n_pre
        self.encoders = encoders
        self.pairs = [
            [(Device(rng.normal(1e8, 1e6)), Device(rng.normal(1e8, 1e6))) for _ in range(n_pre)]
            for _ in range(n_post)
        ]
        self.weights = np.array([[GAIN * (p.conductance - n.conductance) for p, n in row]
                                 for row in self.pairs])  # fmt: skip

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        acts, error = x[: self.n_pre], x[self.n_pre :]
        local = self.encoders @ error
        active = np.flatnonzero(np.rint(acts) > 0)
        for i in np.flatnonzero(np.abs(local) > 1e-5):
            for j in active:
                pos, neg = self.pairs[i][j]
                (pos if local[i] < 0 else neg).set_pulse()
                self.weights[i, j] = GAIN * (pos.conductance - neg.conductance)
        return self.weights @ acts


def build(n: int, seed: int = 0) -> nengo.Network:
    """The benchmark network of ``bench_mpes.build`` with the Node in place of a learned rule."""
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t / 4))
        pre = nengo.Ensemble(n, 1, seed=seed)
        post = nengo.Ensemble(n, 1, seed=seed + 1)
        error = nengo.Ensemble(100, 1, seed=seed + 2)
        nengo.Connection(stim, pre)
        # the error is projected on post's encoders, which only a build of post knows
        with nengo.Network(add_to_container=False) as scratch:
            scratch.add(post)
        with nengo.Simulator(scratch, progress_bar=False) as sim:
            encoders = sim.data[post].encoders.copy()
        node = nengo.Node(DeviceNode(n, n, encoders, seed), size_in=n + 1)
        nengo.Connection(pre.neurons, node[:n], synapse=0.005)
        nengo.Connection(error, node[n:])
        nengo.Connection(node, post.neurons, synapse=0.005)
        nengo.Connection(post, error)
        nengo.Connection(stim, error, function=lambda x: x**2, transform=-1)
    return net
