"""Writes through the array: a batch of pulses as array operations, and the voltage every device
sees during each.

An operation drives one word line at the pulse voltage ``V`` from its column-0 end and holds
the bit lines of its selected cells at 0 V at their last-row ends, for ``k`` pulses; the write
scheme biases every other line (:data:`~.options.WRITE_SCHEMES`: V/2, V/3, or floating). The
nodal solve gives each device's voltage: the selected devices get ``V`` less the IR drop, the
half-selected ones their fraction, the rest what the sneak paths leave them.

Grouping (``group``):

- ``"row"``: the cells a batch names in one row, at one voltage, form a row slice written
  together (as ArC TWO programs a row). Cells asking for different pulse counts are split by
  count: the slice is first pulsed with every cell selected for the smallest count, then the
  cells that need more stay selected for the next count, and so on (one operation per
  distinct count in the row).
- ``"cell"``: one operation per cell (its row and column selected alone).

A cell named twice at one voltage receives the sum of its counts. All operations of a batch
are solved with the devices' conductances from before the batch (one factorisation per
batch); each device then changes by its own voltage and count. The error this allows is the
change of the other devices' conductances within one batch, felt through the wires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .circuit import NodalSystem, batch_size

__all__ = ["Operation", "biased_cells", "counted_pulses", "operation_fields", "operations"]

_CHUNK = 32  # operations solved together, at most (circuit.batch_size bounds the memory)


@dataclass(frozen=True)
class Operation:
    """One array operation: word line ``row`` at ``voltage``, bit lines ``cols`` at 0 V,
    ``pulses`` pulses long."""

    row: int
    cols: np.ndarray
    pulses: int
    voltage: float


def operations(
    rows: np.ndarray, cols: np.ndarray, pulses: np.ndarray, voltage: np.ndarray, group: str
) -> list[Operation]:
    """The operations of a batch (entries with zero pulses are dropped), in row order."""
    pulses = np.broadcast_to(pulses, rows.shape).astype(np.int64)
    voltage = np.broadcast_to(voltage, rows.shape).astype(float)
    keep = pulses > 0
    rows, cols, pulses, voltage = rows[keep], cols[keep], pulses[keep], voltage[keep]
    if not rows.size:
        return []
    # sum the counts of repeated (row, voltage, col)
    key = np.rec.fromarrays([rows, voltage, cols])
    unique, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=pulses, minlength=unique.size).astype(np.int64)
    u_rows, u_volts, u_cols = unique["f0"], unique["f1"], unique["f2"]
    out: list[Operation] = []
    if group == "cell":
        for r, v, c, k in zip(u_rows, u_volts, u_cols, total, strict=True):
            out.append(Operation(int(r), np.array([c]), int(k), float(v)))
        return out
    start = 0
    while start < unique.size:
        stop = start
        while stop < unique.size and (u_rows[stop], u_volts[stop]) == (
            u_rows[start],
            u_volts[start],
        ):
            stop += 1
        counts, slice_cols = total[start:stop], u_cols[start:stop]
        done = 0
        for level in np.unique(counts):
            out.append(
                Operation(
                    int(u_rows[start]),
                    slice_cols[counts >= level],
                    int(level - done),
                    float(u_volts[start]),
                )
            )
            done = int(level)
        start = stop
    return out


def operation_fields(
    system: NodalSystem,
    conductance: np.ndarray,
    version: object,
    ops: list[Operation],
    bias: tuple[float, float] | None,
) -> Iterator[tuple[Operation, np.ndarray]]:
    """Each operation with its device voltages, shape ``(rows, cols)``."""
    rows, cols = system.shape
    step = batch_size(system.shape, _CHUNK) if bias is not None else 1
    for start in range(0, len(ops), step):
        chunk = ops[start : start + step]
        k = len(chunk)
        row_ends = np.full((rows, 2, k), np.nan)
        col_ends = np.full((cols, 2, k), np.nan)
        for i, op in enumerate(chunk):
            if bias is not None:
                row_ends[:, 0, i] = bias[0] * op.voltage
                col_ends[:, 1, i] = bias[1] * op.voltage
            row_ends[op.row, 0, i] = op.voltage
            col_ends[op.cols, 1, i] = 0.0
        if bias is None:  # a different set of connected ends each time: one at a time
            row_ends, col_ends = row_ends[..., 0], col_ends[..., 0]
        dv = system.solve(conductance, row_ends, col_ends, version).device_voltage
        if bias is None:
            dv = dv[..., None]
        for i, op in enumerate(chunk):
            yield op, dv[..., i]


def biased_cells(
    op: Operation, shape: tuple[int, int], bias: tuple[float, float], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Without wire or end resistance, the cells an operation pulses and their voltages, in
    closed form: the selected cells ``V``, the rest of the selected row ``(1 - beta) V``, the
    rest of the selected columns ``alpha V``, every other cell ``(alpha - beta) V``; only
    those at ``threshold`` or above (the selected cells always)."""
    rows, cols = shape
    alpha, beta = bias
    v = op.voltage
    in_cols = np.zeros(cols, bool)
    in_cols[op.cols] = True
    parts = [op.row * cols + op.cols]
    volts = [np.full(op.cols.size, v)]
    if abs((1 - beta) * v) >= threshold:
        others = np.flatnonzero(~in_cols)
        parts.append(op.row * cols + others)
        volts.append(np.full(others.size, (1 - beta) * v))
    other_rows = np.delete(np.arange(rows), op.row)
    if abs(alpha * v) >= threshold:
        cells = (other_rows[:, None] * cols + op.cols[None, :]).ravel()
        parts.append(cells)
        volts.append(np.full(cells.size, alpha * v))
    if abs((alpha - beta) * v) >= threshold:
        others = np.flatnonzero(~in_cols)
        cells = (other_rows[:, None] * cols + others[None, :]).ravel()
        parts.append(cells)
        volts.append(np.full(cells.size, (alpha - beta) * v))
    return np.concatenate(parts), np.concatenate(volts)


def counted_pulses(
    flat: np.ndarray, pulses: np.ndarray, shape: tuple[int, int], group: str, half: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A one-voltage batch without wire resistance as pulse counts per cell, in the order the
    operations of :func:`operations` reach it (rows in order; within a row, by count level for
    ``"row"`` grouping, by column for ``"cell"``).

    Returns ``counts`` (each cell's own pulses), ``before`` and ``after`` (the half-select
    pulses it takes before and after its own: from operations on earlier and later rows that
    select its column, and from its own row's operations that do not select it), and the
    pulses all operations last in total. With ``half`` False (the half-select voltage is
    below the threshold) ``before`` and ``after`` are zero. The selected row's half-select
    voltage ``(1 - beta) V`` and the selected columns' ``alpha V`` are the same in both
    schemes, so both kinds of half-select pulse add into one count.
    """
    rows, cols = shape
    counts = np.bincount(flat, weights=pulses, minlength=rows * cols).reshape(shape)
    total_row = counts.max(axis=1) if group == "row" else counts.sum(axis=1)
    duration = int(total_row.sum())
    if not half:
        zero = np.zeros(rows * cols)
        return counts.ravel(), zero, zero, duration
    column_before = np.cumsum(counts, axis=0) - counts  # earlier rows, same column
    column_after = counts.sum(axis=0) - column_before - counts
    if group == "row":  # selected for the first `count` levels of its row, then half-selected
        row_before = np.where(counts > 0, 0.0, total_row[:, None])
    else:  # one operation per cell, in column order
        row_before = np.cumsum(counts, axis=1) - counts
    row_after = total_row[:, None] - row_before - counts
    before = column_before + row_before
    after = column_after + row_after
    return counts.ravel(), before.ravel(), after.ravel(), duration
