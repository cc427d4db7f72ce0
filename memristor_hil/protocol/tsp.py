"""What the SMU + switching-matrix backend and its emulation share: the wiring map and the
binary number blocks of TSP's ``printbuffer``.

The bench (docs/instruments.md): a Keithley 2600B source-measure unit drives a crossbar
through a Keithley 707B switching matrix. Two matrix rows carry the instrument: the *force*
row (SMU channel A HI) and the *ground* row (SMU LO). Every crossbar line (word lines =
crossbar rows, bit lines = crossbar columns) is wired to a matrix column. Cell ``(r, c)`` is
reached by closing two crosspoints: force row to row ``r``'s column, ground row to column
``c``'s column. A 707B channel is named ``<slot><row letter><column, 2 digits>``, e.g. ``1A05``.

The map file (JSON)::

    {"force_row": "A", "ground_row": "B",
     "rows": ["1:01", "1:02", ...],   # matrix column (slot:column) of each crossbar row
     "cols": ["2:01", "2:02", ...]}   # matrix column of each crossbar column
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_SLOTS",
    "Wiring",
    "decode_real64_block",
    "encode_real64_block",
]

#: A 707B has six slots; each 7174A card is a matrix of 8 rows (A..H) by 12 columns.
MAX_SLOTS = 6
CARD_ROWS = "ABCDEFGH"
CARD_COLUMNS = 12

_LINE = re.compile(r"^([1-6]):(\d{1,2})$")


def _parse_line(text: object, what: str) -> tuple[int, int]:
    match = _LINE.match(str(text).strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{what}: expected 'SLOT:COLUMN' like '1:05', got {text!r}")
    slot, column = int(match.group(1)), int(match.group(2))
    if not 1 <= column <= CARD_COLUMNS:
        raise ValueError(f"{what}: column {column} is outside 1..{CARD_COLUMNS}")
    return slot, column


@dataclass(frozen=True)
class Wiring:
    """Which matrix column each crossbar line is wired to, and which matrix rows carry the SMU.

    Parameters
    ----------
    rows, cols : tuple of (slot, column)
        Matrix column of each crossbar row (word line) and column (bit line).
    force_row, ground_row : str
        Matrix rows (``A``..``H``) wired to SMU HI and to SMU LO (ground).
    """

    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    force_row: str = "A"
    ground_row: str = "B"

    def __post_init__(self) -> None:
        if not self.rows or not self.cols:
            raise ValueError("the wiring needs at least one row and one column")
        for name in ("force_row", "ground_row"):
            value = getattr(self, name)
            if value not in CARD_ROWS or len(value) != 1:
                raise ValueError(f"{name} must be one of {', '.join(CARD_ROWS)}, got {value!r}")
        if self.force_row == self.ground_row:
            raise ValueError("force_row and ground_row must be different matrix rows")
        lines = [*self.rows, *self.cols]
        for slot, column in lines:
            if not (1 <= slot <= MAX_SLOTS and 1 <= column <= CARD_COLUMNS):
                raise ValueError(f"matrix column {slot}:{column:02d} does not exist on a 707B")
        if len(set(lines)) != len(lines):
            raise ValueError("two crossbar lines are wired to the same matrix column")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the crossbar."""
        return len(self.rows), len(self.cols)

    @classmethod
    def default(cls, rows: int, cols: int) -> Wiring:
        """Rows on matrix columns 1, 2, ... of slot 1 (then slot 2, ...), the columns after
        them; SMU HI on matrix row A, LO on row B."""
        lines = [(1 + i // CARD_COLUMNS, 1 + i % CARD_COLUMNS) for i in range(rows + cols)]
        if rows < 1 or cols < 1 or rows + cols > MAX_SLOTS * CARD_COLUMNS:
            raise ValueError(
                f"a {rows}x{cols} crossbar needs {rows + cols} matrix columns; a 707B has "
                f"at most {MAX_SLOTS * CARD_COLUMNS}"
            )
        return cls(tuple(lines[:rows]), tuple(lines[rows:]))

    @classmethod
    def from_dict(cls, data: dict) -> Wiring:
        """From the map file's JSON object (see the module docstring)."""
        if not isinstance(data, dict):
            raise ValueError("a map file holds one JSON object")
        unknown = sorted(set(data) - {"rows", "cols", "force_row", "ground_row", "comment"})
        if unknown:
            raise ValueError(f"unknown map file keys {unknown}")
        for key in ("rows", "cols"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"map file: {key!r} must be a list of 'SLOT:COLUMN' strings")
        return cls(
            tuple(_parse_line(x, f"rows[{i}]") for i, x in enumerate(data["rows"])),
            tuple(_parse_line(x, f"cols[{i}]") for i, x in enumerate(data["cols"])),
            str(data.get("force_row", "A")),
            str(data.get("ground_row", "B")),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Wiring:
        """Read a map file; errors name the file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"map file {path}: {exc}") from None

    def to_dict(self) -> dict:
        """The map file's JSON object."""
        return {
            "force_row": self.force_row,
            "ground_row": self.ground_row,
            "rows": [f"{s}:{c:02d}" for s, c in self.rows],
            "cols": [f"{s}:{c:02d}" for s, c in self.cols],
        }

    def crosspoints(self, row: int, col: int) -> str:
        """The two 707B channels that connect cell ``(row, col)``: ``"1A01,2B03"``."""
        (rs, rc), (cs, cc) = self.rows[row], self.cols[col]
        return f"{rs}{self.force_row}{rc:02d},{cs}{self.ground_row}{cc:02d}"

    def line_of(self, slot: int, column: int) -> tuple[str, int] | None:
        """``("row", i)`` or ``("col", j)`` for the crossbar line on a matrix column."""
        key = (slot, column)
        if key in self.rows:
            return "row", self.rows.index(key)
        if key in self.cols:
            return "col", self.cols.index(key)
        return None


def encode_real64_block(values: list[float] | tuple[float, ...], little_endian: bool) -> bytes:
    """``printbuffer`` output with ``format.data = format.REAL64``: ``#0``, the numbers, a
    newline."""
    order = "<" if little_endian else ">"
    return b"#0" + struct.pack(f"{order}{len(values)}d", *values) + b"\n"


def decode_real64_block(data: bytes, count: int, little_endian: bool = True) -> np.ndarray:
    """The ``count`` numbers of a REAL64 block (see :func:`encode_real64_block`).

    Raises
    ------
    ValueError
        If the block is not ``#0`` + ``8 * count`` bytes + newline.
    """
    if len(data) != 3 + 8 * count or data[:2] != b"#0" or data[-1:] != b"\n":
        raise ValueError(f"expected a REAL64 block of {count} numbers, got {len(data)} bytes")
    values = np.frombuffer(data[2:-1], dtype="<f8" if little_endian else ">f8")
    if not np.all(np.isfinite(values)):
        raise ValueError("the block holds a non-finite number")
    return values.astype(np.float64)
