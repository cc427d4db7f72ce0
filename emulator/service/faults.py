"""Seeded fault injection for the emulator service: the faults a real link has, on demand."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Faults"]


@dataclass
class Faults:
    """Which faults to inject, and the random stream that decides when.

    Probabilities are per transfer: each chunk the service reads, and each reply it writes,
    independently gets the fault with that probability (with a stop-and-wait client a transfer
    is usually one frame).

    Parameters
    ----------
    corrupt : float
        Probability that one byte of a transfer is flipped (XOR with a random non-zero byte).
    drop_byte : float
        Probability that one byte of a transfer is lost.
    drop_reply : float
        Probability that a reply is not sent at all.
    latency : float
        Seconds to wait before each reply.
    seed : int, optional
        Seed of the fault stream (the same seed injects the same faults for the same traffic).
    """

    corrupt: float = 0.0
    drop_byte: float = 0.0
    drop_reply: float = 0.0
    latency: float = 0.0
    seed: int | None = None
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop_byte", "drop_reply"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {name}={value} must be in [0, 1]")
        if not 0.0 <= self.latency <= 60.0:
            raise ValueError(f"latency={self.latency} s must be in [0, 60]")
        self._rng = np.random.default_rng(self.seed)

    @property
    def active(self) -> bool:
        return bool(self.corrupt or self.drop_byte or self.drop_reply or self.latency)

    def damage(self, data: bytes) -> bytes:
        """``data`` with the byte faults applied (for both directions)."""
        if not data or not (self.corrupt or self.drop_byte):
            return data
        rng = self._rng
        if self.corrupt and rng.random() < self.corrupt:
            i = int(rng.integers(len(data)))
            data = data[:i] + bytes([data[i] ^ int(rng.integers(1, 256))]) + data[i + 1 :]
            self._count("corrupted")
        if self.drop_byte and rng.random() < self.drop_byte:
            i = int(rng.integers(len(data)))
            data = data[:i] + data[i + 1 :]
            self._count("dropped bytes")
        return data

    def outgoing(self, data: bytes) -> bytes | None:
        """A reply as it should leave (damaged, delayed), or None to drop it."""
        if self.latency:
            time.sleep(self.latency)
        if self.drop_reply and self._rng.random() < self.drop_reply:
            self._count("dropped replies")
            return None
        return self.damage(data)

    def _count(self, what: str) -> None:
        self.injected[what] = self.injected.get(what, 0) + 1
