"""SmuMatrixCrossbar: a crossbar on a bench of a Keithley 2600B SMU and a 707B switching matrix.

Both instruments speak TSP (Lua) over VISA; this driver writes TSP through pyvisa directly
(see docs/instruments.md for why no instrument library is used). At open it uploads one
script to the SMU; a batch is then a few lines of data, one call, and one reply: the SMU's
script walks the batch, closing each cell's two crosspoints through TSP-Link
(``node[N].channel.exclusiveclose``), sourcing the cell's pulse train in pulse mode (trigger
model, ``SOURCE_IDLE`` end-pulse, timer width), checking the current of every pulse against
the compliance, and then reading each requested cell with ``smua.measure.r`` into a buffer that
comes back as one REAL64 ``printbuffer`` block.

Any failure (compliance, a refused crosspoint, a timeout, a lost link) leaves the SMU output
off and every crosspoint open: the script does it itself for errors it sees, the driver over
fresh connections for the others, and at close and interpreter exit.
"""

from __future__ import annotations

import atexit
import math
import weakref
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memristor_hil.crossbar import Crossbar
from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
)
from memristor_hil.protocol.tsp import Wiring, decode_real64_block
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits
from memristor_hil.url_options import (
    REQUIRED,
    Option,
    keyword_only,
    query_options,
    read_options,
)

from ._visa_link import VisaResource, close_at_exit

__all__ = ["ComplianceError", "SmuMatrixCrossbar", "open_smu"]

#: Entries sent per line, and most pulse trains or reads per script call.
ENTRIES_PER_LINE = 50
MAX_ENTRIES = 5000
#: Most pulses one ``mhil_go()`` sources: a longer batch runs as several, in order, so that no
#: script holds the SMU (or the emulated bench's per-script time budget) for long.
PULSES_PER_GO = 20_000

#: The script uploaded once per session (TSP is Lua 5.0: no ``#``, ``table.getn`` for sizes).
SCRIPT_NAME = "mhilScript"
SCRIPT = r"""
MHIL = {}
function mhil_setup(matrix_node, rangev, limiti, nplc, settle, vread)
  MHIL = {node = matrix_node, limiti = limiti, settle = settle, vread = vread,
          pulses = {}, np = 0, reads = {}, nr = 0}
  smua.reset()
  smua.source.func = smua.OUTPUT_DCVOLTS
  smua.source.autorangev = smua.AUTORANGE_OFF
  smua.source.rangev = rangev
  smua.source.levelv = 0
  smua.source.limiti = limiti
  smua.measure.nplc = nplc
  smua.measure.autorangei = smua.AUTORANGE_ON
  smua.trigger.source.action = smua.ENABLE
  smua.trigger.source.limiti = limiti
  smua.trigger.measure.action = smua.ENABLE
  smua.trigger.endpulse.action = smua.SOURCE_IDLE
  smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID
  trigger.timer[1].count = 1
  trigger.timer[1].passthrough = false
  trigger.timer[1].stimulus = smua.trigger.SOURCE_COMPLETE_EVENT_ID
  smua.trigger.arm.count = 1
  format.data = format.ASCII
  format.byteorder = format.LITTLEENDIAN
  node[MHIL.node].channel.open("allslots")
  print("MHIL READY")
end
function mhil_pulses(n, chs, counts, levels, widths)
  for i = 1, n do
    MHIL.np = MHIL.np + 1
    MHIL.pulses[MHIL.np] = {chs[i], counts[i], levels[i], widths[i]}
  end
end
function mhil_reads(n, chs)
  for i = 1, n do
    MHIL.nr = MHIL.nr + 1
    MHIL.reads[MHIL.nr] = chs[i]
  end
end
local function mhil_safe()
  smua.source.levelv = 0
  smua.source.output = smua.OUTPUT_OFF
  node[MHIL.node].channel.open("allslots")
end
local function mhil_train(e)
  local matrix = node[MHIL.node].channel
  matrix.exclusiveclose(e[1])
  delay(MHIL.settle)
  smua.trigger.source.listv({e[3]})
  smua.trigger.count = e[2]
  trigger.timer[1].delay = e[4]
  smua.nvbuffer2.clear()
  smua.trigger.measure.i(smua.nvbuffer2)
  smua.trigger.initiate()
  waitcomplete()
  for k = 1, smua.nvbuffer2.n do
    if math.abs(smua.nvbuffer2.readings[k]) >= 0.99 * MHIL.limiti then
      error("MHIL_COMPLIANCE at " .. e[1] .. ", pulse " .. k .. " of " .. e[2], 0)
    end
  end
end
local function mhil_body()
  smua.nvbuffer1.clear()
  smua.source.levelv = 0
  smua.source.output = smua.OUTPUT_ON
  for i = 1, MHIL.np do mhil_train(MHIL.pulses[i]) end
  local matrix = node[MHIL.node].channel
  for i = 1, MHIL.nr do
    matrix.exclusiveclose(MHIL.reads[i])
    delay(MHIL.settle)
    smua.source.levelv = MHIL.vread
    smua.measure.r(smua.nvbuffer1)
    smua.source.levelv = 0
  end
  matrix.open("allslots")
end
function mhil_go()
  timer.reset()
  local ok, err = pcall(mhil_body)
  local nr = MHIL.nr
  MHIL.pulses, MHIL.np, MHIL.reads, MHIL.nr = {}, 0, {}, 0
  if not ok then
    pcall(mhil_safe)
    print("MHIL FAIL " .. string.gsub(tostring(err), "\n", " "))
    return
  end
  print("MHIL OK " .. nr .. " " .. string.format("%.6f", timer.measure.t()))
  if nr > 0 then
    format.data = format.REAL64
    printbuffer(1, nr, smua.nvbuffer1.readings)
    format.data = format.ASCII
  end
end
function mhil_off()
  smua.source.levelv = 0
  smua.source.output = smua.OUTPUT_OFF
end
"""


class ComplianceError(DeviceError):
    """A pulse reached the SMU's current compliance; the output was switched off."""


class Link(Protocol):
    """A line-oriented connection to one TSP instrument (pyvisa, or a test's scripted one)."""

    def write(self, line: str) -> None: ...
    def read_line(self) -> str: ...
    def read_exact(self, size: int) -> bytes: ...
    def close(self) -> None: ...


class _TspLink:
    """TSP lines over a :class:`VisaResource` (its errors: :class:`ConnectionLostError`,
    :class:`CrossbarTimeoutError`)."""

    def __init__(self, resource: str, backend: str, timeout: float) -> None:
        self.visa = VisaResource(resource, backend, timeout)

    def write(self, line: str) -> None:
        self.visa.write(line.encode("ascii") + b"\n")

    def read_line(self) -> str:
        return self.visa.read_line().decode("ascii", "replace").rstrip("\r\n")

    def read_exact(self, size: int) -> bytes:
        return self.visa.read_exact(size)

    def allow(self, seconds: float) -> None:
        """Wait up to ``seconds`` more than the timeout for the next replies (a long batch);
        ``allow(0)`` returns to the timeout."""
        self.visa.allow(seconds)

    def reopen(self) -> None:
        """Open the resource again, a fresh connection (the same object, so that the
        driver's finalizer and exit handler reach it)."""
        self.visa.reopen()

    def close(self) -> None:
        self.visa.close()


class SmuMatrixCrossbar(Crossbar):
    """A crossbar reached through a 2600B SMU (channel A) and a 707B matrix, over VISA.

    Parameters
    ----------
    smu, matrix : str
        VISA resource strings, e.g. ``TCPIP::192.168.0.2::5025::SOCKET``.
    wiring : Wiring
        Which matrix column each crossbar line is on (the map file); its shape is the
        crossbar's.
    backend : str
        pyvisa backend, ``"@py"`` (pyvisa-py) by default; ``""`` for the system VISA.
    timeout : float
        Seconds to wait for a reply; a batch waits ``timeout`` plus the instrument time the
        batch needs (relay settling, pulses, readings).
    vread : float
        Read voltage, in volt.
    compliance : float
        SMU current limit during pulses and reads, in ampere.
    vmax : float
        Largest pulse magnitude, in volt (also the SMU's fixed source range).
    width_min, width_max : float
        Allowed pulse widths, in seconds (the SMU's pulse mode needs about 100 us or more).
    settle : float
        Extra settling after closing a cell's crosspoints, in seconds, on top of the relay
        settling the 707B waits out itself before ``exclusiveclose`` returns.
    nplc : float
        Integration time of each reading, in power-line cycles.
    matrix_node : int
        The matrix's TSP-Link node number.
    max_pulses : int
        Most pulses one batch entry may ask for.
    limits : SafetyLimits, optional
        Narrower limits than those the options give.
    links : tuple, optional
        ``(smu_link, matrix_link)`` objects to use instead of opening the resources (tests).
    """

    def __init__(
        self,
        smu: str,
        matrix: str,
        wiring: Wiring,
        *,
        backend: str = "@py",
        timeout: float = 5.0,
        vread: float = 0.1,
        compliance: float = 1e-3,
        vmax: float = 1.5,
        width_min: float = 1e-4,
        width_max: float = 1e-2,
        settle: float = 1e-3,
        nplc: float = 0.01,
        matrix_node: int = 2,
        max_pulses: int = 10_000,
        limits: SafetyLimits | None = None,
        links: tuple[Link, Link] | None = None,
    ) -> None:
        for name, value, low, high in (
            ("timeout", timeout, 1e-3, 3600),
            ("vread", vread, 1e-3, 1.0),
            ("compliance", compliance, 1e-9, 1.0),
            ("vmax", vmax, 1e-3, 20.0),
            ("settle", settle, 0.0, 1.0),
            ("nplc", nplc, 0.001, 25.0),
        ):
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name}={value} is outside {low}..{high}")
        own = SafetyLimits(-vmax, vmax, width_min, width_max, int(max_pulses), compliance)
        if limits is not None:
            own = own.narrowed(limits)
        self._smu_name, self._matrix_name = smu, matrix
        self._node = int(matrix_node)
        self._settle, self._nplc = float(settle), float(nplc)
        self.wiring = wiring
        self.stats = {"batches": 0, "lines": 0, "instrument_seconds": 0.0}
        self.last_batch_seconds = 0.0
        if links is None:
            smu_link = _TspLink(smu, backend, timeout)
            try:
                matrix_link = _TspLink(matrix, backend, timeout)
            except BaseException:
                smu_link.close()
                raise
        else:
            smu_link, matrix_link = links
        self._smu, self._matrix = smu_link, matrix_link
        self._finalizer = weakref.finalize(self, _safe_state, smu_link, matrix_link, self._node)
        try:
            identity = self._start(own, vread)
        except BaseException:
            self._finalizer()
            raise
        super().__init__(wiring.shape, limits=own, identity=identity)
        # at interpreter exit: output off and crosspoints open before pyvisa closes the
        # sessions (see close_at_exit)
        self._at_exit = close_at_exit(self.close)

    # ------------------------------------------------------------------ session
    def _start(self, limits: SafetyLimits, vread: float) -> str:
        smu_id = self._query(self._smu, "*IDN?")
        if "Model 26" not in smu_id:
            raise DeviceError(f"{self._smu_name} is not a Keithley 2600 SMU: {smu_id!r}")
        matrix_id = self._query(self._matrix, "*IDN?")
        if "Model 707" not in matrix_id and "Model 708" not in matrix_id:
            raise DeviceError(f"{self._matrix_name} is not a Keithley 707B/708B: {matrix_id!r}")
        self._send(self._matrix, "errorqueue.clear()")
        self._send(self._matrix, 'channel.open("allslots")')
        self._send(self._smu, "errorqueue.clear()")
        link = self._query(
            self._smu,
            'if tsplink.state ~= "online" then tsplink.reset() end '
            f"print(tsplink.state, node[{self._node}].model)",
        )
        if not link.startswith("online") or "707" not in link and "708" not in link:
            raise DeviceError(
                f"the SMU does not reach the matrix as TSP-Link node {self._node}: {link!r} "
                f"({self._errors(self._smu)})"
            )
        # the whole script in one write: the instrument reads it line by line
        self._send(self._smu, "\n".join([f"loadscript {SCRIPT_NAME}", SCRIPT.strip(), "endscript"]))
        self._send(self._smu, f"{SCRIPT_NAME}.run()")
        rangev = max(abs(limits.v_min), abs(limits.v_max), vread)
        ready = self._query(
            self._smu,
            f"mhil_setup({self._node}, {_num(rangev)}, {_num(limits.compliance)}, "
            f"{_num(self._nplc)}, {_num(self._settle)}, {_num(vread)})",
        )
        if ready != "MHIL READY":
            raise DeviceError(f"{self._smu_name}: the script did not start ({self._errors()})")
        return f"{smu_id.strip()} + {matrix_id.strip()}"

    def _send(self, link: Link, line: str) -> None:
        self.stats["lines"] += 1
        link.write(line)

    def _query(self, link: Link, line: str) -> str:
        self._send(link, line)
        return link.read_line()

    def _errors(self, link: Link | None = None) -> str:
        """The SMU's error queue, emptied, as text (for messages)."""
        link = link or self._smu
        try:
            self._send(
                link, 'while errorqueue.count > 0 do print(errorqueue.next()) end print("MHIL END")'
            )
            lines = []
            while len(lines) < 64:
                line = link.read_line()
                if line == "MHIL END":
                    break
                lines.append(line.replace("\t", " "))
            return "; ".join(lines) or "error queue empty"
        except (DeviceError, CrossbarTimeoutError, ConnectionLostError, ProtocolError):
            return "error queue unreadable"

    # ------------------------------------------------------------------ Crossbar hooks
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        n = len(batch)
        if n > MAX_ENTRIES:
            raise InvalidBatchError(f"a batch may name at most {MAX_ENTRIES} cells; split it")
        pulses = batch.pulses
        voltage = np.broadcast_to(np.asarray(batch.voltage, dtype=float), (n,))
        width = np.broadcast_to(np.asarray(batch.width, dtype=float), (n,))
        channels = self._channels(batch.rows, batch.cols)
        groups = _pulse_groups(pulses)
        result = None
        for k, (entries, counts) in enumerate(groups):
            for start in range(0, len(entries), ENTRIES_PER_LINE):
                part = slice(start, start + ENTRIES_PER_LINE)
                which = entries[part]
                self._send(
                    self._smu,
                    f"mhil_pulses({len(which)},{_lua_strings(channels[i] for i in which)},"
                    f"{_lua_numbers(counts[part])},{_lua_numbers(voltage[which])},"
                    f"{_lua_numbers(width[which])})",
                )
            reads = self._queue_reads(channels) if read_back and k == len(groups) - 1 else 0
            seconds = float(np.sum(counts * width[entries])) + (len(entries) + reads) * self._settle
            result = self._go(reads, seconds)
        return result if read_back else None

    def _read(self, flat: np.ndarray) -> np.ndarray:
        rows, cols = np.divmod(flat, self.shape[1])
        channels = self._channels(rows, cols)
        parts = []
        for start in range(0, len(channels), MAX_ENTRIES):
            chunk = channels[start : start + MAX_ENTRIES]
            parts.append(self._go(self._queue_reads(chunk), len(chunk) * self._settle))
        return np.concatenate(parts) if parts else np.empty(0)

    def _close(self) -> None:
        atexit.unregister(self._at_exit)
        self._finalizer()

    # ------------------------------------------------------------------ batches
    def _channels(self, rows: np.ndarray, cols: np.ndarray) -> list[str]:
        return [self.wiring.crosspoints(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]

    def _queue_reads(self, channels: list[str]) -> int:
        for start in range(0, len(channels), ENTRIES_PER_LINE):
            part = channels[start : start + ENTRIES_PER_LINE]
            self._send(self._smu, f"mhil_reads({len(part)},{_lua_strings(part)})")
        return len(channels)

    def _go(self, reads: int, seconds: float) -> np.ndarray:
        """Run the queued batch; the resistances read, in order."""
        try:
            if isinstance(self._smu, _TspLink):
                self._smu.allow(2 * seconds + reads * self._nplc / 50)
            self._send(self._smu, "mhil_go()")
            status = self._smu.read_line()
            if status.startswith("MHIL FAIL"):
                message = status[len("MHIL FAIL ") :]
                errors = self._errors()
                if "MHIL_COMPLIANCE" in message:
                    raise ComplianceError(
                        f"{self._smu_name}: current compliance "
                        f"({self.limits.compliance} A) reached "
                        f"{message.replace('MHIL_COMPLIANCE ', '')}; output off, crosspoints open"
                    )
                raise DeviceError(
                    f"{self._smu_name}: batch failed: {message} ({errors}); output off, "
                    "crosspoints open"
                )
            head = status.split()
            if len(head) != 4 or head[:2] != ["MHIL", "OK"] or int(head[2]) != reads:
                raise ProtocolError(f"{self._smu_name}: unexpected reply {status[:80]!r}")
            self.last_batch_seconds = float(head[3])
            self.stats["instrument_seconds"] += self.last_batch_seconds
            self.stats["batches"] += 1
            if not reads:
                return np.empty(0)
            try:
                return decode_real64_block(self._smu.read_exact(3 + 8 * reads), reads)
            except ValueError as exc:
                raise ProtocolError(f"{self._smu_name}: {exc}") from None
        except (CrossbarTimeoutError, ConnectionLostError, ProtocolError) as exc:
            self._recover(exc)
            raise
        finally:
            if isinstance(self._smu, _TspLink):
                self._smu.allow(0)

    def _recover(self, exc: Exception) -> None:
        """After a timeout or a lost link: outputs off over fresh connections."""
        self._smu.close()
        self._matrix.close()
        if not isinstance(self._smu, _TspLink):
            return
        try:
            self._smu.reopen()
            self._matrix.reopen()
        except ConnectionLostError:
            return
        _safe_state(self._smu, self._matrix, self._node, close=False)


def _safe_state(smu: Link, matrix: Link, node: int, close: bool = True) -> None:
    """SMU output off, every crosspoint open (through the matrix and over TSP-Link); quiet."""
    for link, line in (
        (smu, "smua.source.levelv = 0 smua.source.output = smua.OUTPUT_OFF"),
        (matrix, 'channel.open("allslots")'),
        (smu, f'pcall(function() node[{node}].channel.open("allslots") end)'),
    ):
        try:
            link.write(line)
        except (ConnectionLostError, CrossbarTimeoutError, OSError):
            pass
    for link, line in ((smu, "print(smua.source.output)"), (matrix, "print(1)")):
        try:  # wait until each has executed what came before
            link.write(line)
            link.read_line()
        except (ConnectionLostError, CrossbarTimeoutError, ProtocolError, OSError):
            pass
    if close:
        smu.close()
        matrix.close()


def _num(value: float) -> str:
    return repr(float(value))


def _lua_numbers(values: np.ndarray) -> str:
    return "{" + ",".join(repr(float(v)) if v % 1 else str(int(v)) for v in values) + "}"


def _pulse_groups(pulses: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The entries with pulses, as ``(entry indices, counts)`` groups of at most
    :data:`PULSES_PER_GO` pulses each (at least one group, maybe empty); an entry with more is
    split into consecutive parts: the same pulses, in the same order."""
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    entries: list[int] = []
    counts: list[int] = []
    total = 0
    for i in np.flatnonzero(pulses > 0).tolist():
        left = int(pulses[i])
        while left:
            take = min(left, PULSES_PER_GO - total)
            entries.append(i)
            counts.append(take)
            total, left = total + take, left - take
            if total == PULSES_PER_GO:
                groups.append((np.array(entries, dtype=np.int64), np.array(counts)))
                entries, counts, total = [], [], 0
    if entries or not groups:
        groups.append((np.array(entries, dtype=np.int64), np.array(counts, dtype=np.int64)))
    return groups


def _lua_strings(values: Any) -> str:
    return "{" + ",".join(f'"{v}"' for v in values) + "}"


_SMU_OPTIONS: dict[str, Option[Any]] = {
    "matrix": Option(str, REQUIRED),
    "map": Option(str, None),
    "backend": Option(str, "@py"),
    "limits": Option(keyword_only, None),
    **{
        name: Option(float, None)
        for name in "timeout vread compliance vmax width_min width_max settle nplc".split()
    },
    **{name: Option(int, None) for name in ("matrix_node", "max_pulses", "rows", "cols")},
}


def open_smu(url: str, **overrides: Any) -> SmuMatrixCrossbar:
    """Open ``smu://SMU_RESOURCE?matrix=MATRIX_RESOURCE&map=FILE[&options]``.

    Options: ``map=FILE`` (the wiring; or ``rows=R&cols=C`` for the default wiring),
    ``backend``, ``timeout``, ``vread``, ``compliance``, ``vmax``, ``width_min``,
    ``width_max``, ``settle``, ``nplc``, ``matrix_node``, ``max_pulses`` (see
    :class:`SmuMatrixCrossbar`).
    """
    rest = url.split("://", 1)[1]
    resource, _, query = rest.partition("?")
    _, options = query_options("x://?" + query)
    options.update(overrides)
    if not resource:
        raise ValueError(f"{url!r} names no SMU resource (smu://RESOURCE?matrix=...)")
    if not options.get("matrix"):
        raise ValueError(f"{url!r} names no matrix (add matrix=VISA_RESOURCE)")
    values = read_options("smu", options, _SMU_OPTIONS)
    matrix, wiring_file = values.pop("matrix"), values.pop("map")
    backend, limits = values.pop("backend"), values.pop("limits")
    rows, cols = values.pop("rows"), values.pop("cols")
    if wiring_file:
        wiring = Wiring.load(Path(wiring_file))
    elif rows and cols:
        wiring = Wiring.default(rows, cols)
    else:
        raise ValueError(f"{url!r}: give map=FILE (or rows= and cols= for the default wiring)")
    given = {name: value for name, value in values.items() if value is not None}
    return SmuMatrixCrossbar(resource, matrix, wiring, backend=backend, limits=limits, **given)
