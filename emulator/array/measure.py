"""Reads through the array: what the instrument's sense amplifier measures, sneak paths and all.

A read of cell ``(r, c)`` drives word line ``r`` at ``v`` from its column-0 end and senses bit
line ``c`` at 0 V at its last-row end (badcrossbar's convention); the scheme biases the other
lines (:data:`~.options.READ_SCHEMES`). The reading is ``v / I`` with ``I`` the current into
bit line ``c``'s sense amplifier.

Every scheme is linear in the drivers' voltages, so one set of solves serves every cell: the
short-circuit admittance matrix ``Y`` of the ``rows + cols`` drivers (``Y[k, l]``: the current
driver ``k`` delivers when driver ``l`` is at 1 V and the others at 0 V; ``rows + cols``
right-hand sides on one factorisation; without wire and end resistance it is the devices'
bipartite Laplacian, written down without a solve). Biased schemes read
``I = -(Y v)[c]``; the floating scheme reads the two-port resistance between drivers ``r``
and ``c`` with every other driver disconnected, ``R = (e_r - e_c)^T Y^+ (e_r - e_c)``.
"""

from __future__ import annotations

import numpy as np

from .circuit import NodalSystem, batch_size

__all__ = ["admittance", "biased_sense_current", "floating_sense_current"]

_CHUNK = 64  # right-hand sides per solve, at most (circuit.batch_size bounds the memory)


def admittance(
    system: NodalSystem,
    conductance: np.ndarray,
    version: object,
    ports: np.ndarray | None = None,
) -> np.ndarray:
    """``Y``, shape ``(rows + cols, rows + cols)``: drivers are the word lines' column-0 ends
    (first ``rows``) and the bit lines' last-row ends. With ``ports``, only those columns
    ``Y[:, ports]`` (one right-hand side each)."""
    rows, cols = system.shape
    total = rows + cols
    if ports is not None:
        return _columns(system, conductance, version, np.asarray(ports))
    ports = total
    if system.wiring.ideal:
        # every line is one node held by its driver: Y is the devices' bipartite Laplacian
        y = np.zeros((ports, ports))
        y[:rows, rows:] = -conductance
        y[rows:, :rows] = -conductance.T
        y[np.arange(rows), np.arange(rows)] = conductance.sum(axis=1)
        y[np.arange(rows, ports), np.arange(rows, ports)] = conductance.sum(axis=0)
        return y
    return _columns(system, conductance, version, np.arange(total))


def _columns(
    system: NodalSystem, conductance: np.ndarray, version: object, ports: np.ndarray
) -> np.ndarray:
    rows, cols = system.shape
    total = rows + cols
    y = np.empty((total, ports.size))
    chunk = batch_size(system.shape, _CHUNK)
    for start in range(0, ports.size, chunk):
        stop = min(start + chunk, ports.size)
        k = stop - start
        unit = np.zeros((total, k))
        unit[ports[start:stop], np.arange(k)] = 1.0
        row_ends = np.full((rows, 2, k), np.nan)
        col_ends = np.full((cols, 2, k), np.nan)
        row_ends[:, 0, :] = unit[:rows]
        col_ends[:, 1, :] = unit[rows:]
        nodes = system.solve(conductance, row_ends, col_ends, version)
        y[:rows, start:stop] = nodes.row_current[:, 0, :]
        y[rows:, start:stop] = -nodes.col_current[:, 1, :]
    return y


def biased_sense_current(
    columns: np.ndarray,
    n_rows: int,
    cells: tuple[np.ndarray, np.ndarray],
    v: float,
    bias: tuple[float, float],
) -> np.ndarray:
    """The sense current of reading each cell ``(rows[i], cols[i])`` at ``v`` volt in a biased
    scheme, ``I = -(Y v)[c]``, from the bit lines' columns of ``Y`` only:
    ``columns[:, i]`` is ``Y[:, rows + cols[i]]`` (one per cell). ``Y`` is symmetric
    (reciprocity), so row ``rows + c`` of ``Y`` is that column."""
    rows, cols = cells
    alpha, beta = bias
    idx = np.arange(rows.size)
    col_of = columns.T  # (cells, ports): Y[rows + c, :]
    into = (
        alpha * col_of[:, :n_rows].sum(axis=1)
        + beta * col_of[:, n_rows:].sum(axis=1)
        + (1 - alpha) * col_of[idx, rows]
        - beta * col_of[idx, n_rows + cols]
    )
    return -v * into


def floating_sense_current(
    y: np.ndarray, n_rows: int, cells: tuple[np.ndarray, np.ndarray], v: float
) -> np.ndarray:
    """The sense current of reading each cell ``(rows[i], cols[i])`` at ``v`` volt with every
    other line floating, from the admittance ``y`` of an array with ``n_rows`` word lines."""
    rows, cols = cells
    c_port = n_rows + cols
    z = _pseudo_inverse(y)
    r = z[rows, rows] + z[c_port, c_port] - 2 * z[rows, c_port]
    return v / r


def _pseudo_inverse(y: np.ndarray) -> np.ndarray:
    """``Y^+`` up to a constant shift (enough for two-port resistances): ``Y`` grounded at
    driver 0 and inverted, with a zero row and column for it."""
    z = np.zeros_like(y)
    z[1:, 1:] = np.linalg.inv(y[1:, 1:])
    return z
