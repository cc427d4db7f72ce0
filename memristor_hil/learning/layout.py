"""Where a learned connection's devices sit on a crossbar: :class:`Layout`.

A connection from ``n_pre`` to ``n_post`` neurons needs two ``n_post x n_pre`` blocks of
devices: the positive devices (whose conductance raises a weight) and the negative ones (whose
conductance lowers it). Post neuron ``i`` and pre neuron ``j`` use the positive cell
``(pos_row + i, pos_col + j)`` and the negative cell ``(neg_row + i, neg_col + j)``.

The default places the negative block beside the positive one in the same rows. That keeps
every timestep's batch in ascending row-major order (a post neuron pulses either its positive
or its negative devices, never both), which is the emulator's fastest path and the fewest row
switches on hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Block", "Layout"]


@dataclass(frozen=True)
class Block:
    """A rectangle of crossbar cells: top-left ``(row, col)`` and size ``nrows x ncols``."""

    row: int
    col: int
    nrows: int
    ncols: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.nrows

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.ncols

    def overlaps(self, other: Block) -> bool:
        """True when the two rectangles share a cell."""
        return (
            self.row < other.row_stop
            and other.row < self.row_stop
            and self.col < other.col_stop
            and other.col < self.col_stop
        )

    def fits(self, shape: tuple[int, int]) -> bool:
        """True when the rectangle lies inside a ``rows x cols`` crossbar."""
        return (
            0 <= self.row
            and self.row_stop <= shape[0]
            and 0 <= self.col
            and (self.col_stop <= shape[1])
        )

    def __str__(self) -> str:
        return f"rows {self.row}..{self.row_stop - 1}, cols {self.col}..{self.col_stop - 1}"


@dataclass(frozen=True)
class Layout:
    """Placement of a connection's positive and negative device blocks on a crossbar.

    Parameters
    ----------
    row, col : int
        Top-left cell of the positive block (post neurons along rows, pre neurons along
        columns). Default ``(0, 0)``.
    neg_row, neg_col : int, optional
        Top-left cell of the negative block. Default: the same rows, directly to the right of
        the positive block (``neg_row = row``, ``neg_col = col + n_pre``).

    Examples
    --------
    Two 10x20 connections on one 20x40 crossbar, one above the other:

    >>> a = Layout(row=0, col=0)
    >>> b = Layout(row=10, col=0)
    >>> a.blocks(n_pre=20, n_post=10)[1]
    Block(row=0, col=20, nrows=10, ncols=20)
    """

    row: int = 0
    col: int = 0
    neg_row: int | None = None
    neg_col: int | None = None

    def __post_init__(self) -> None:
        for name in ("row", "col", "neg_row", "neg_col"):
            value = getattr(self, name)
            if value is None and name.startswith("neg"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Layout.{name}={value!r} must be a non-negative int")

    def blocks(self, n_pre: int, n_post: int) -> tuple[Block, Block]:
        """The positive and negative blocks for a connection of this size."""
        pos = Block(self.row, self.col, n_post, n_pre)
        neg = Block(
            self.row if self.neg_row is None else self.neg_row,
            self.col + n_pre if self.neg_col is None else self.neg_col,
            n_post,
            n_pre,
        )
        return pos, neg

    def extent(self, n_pre: int, n_post: int) -> tuple[int, int]:
        """The smallest crossbar shape ``(rows, cols)`` that holds both blocks."""
        pos, neg = self.blocks(n_pre, n_post)
        return max(pos.row_stop, neg.row_stop), max(pos.col_stop, neg.col_stop)
