"""The emulator service speaking ArC ONE's serial command set (``emulate --dialect arc1``).

The same power-law devices as every other service dialect, behind the ASCII commands that
:mod:`memristor_hil.drivers.arc1` sends (see its table), and the vendor's commands beyond that
subset that change no device: ``011`` c p (read cycles and write scheme, as arc1_pyqt
``main.py`` ``updateHW`` sends them) is taken with its two arguments. The vendor's module
jobs (:data:`MODULE_JOBS`: FormFinder, SwitchSeeker, Endurance, CurveTracer, ConvergeToState,
ChronoAmperometry, VolatilityRead, STDP, MultiBias, MultiStateSeeker) are measurement programs
the firmware runs; they are not emulated: each takes exactly the arguments the vendor sends
(so none runs as a job), changes no device, says so in the service log, and answers the host
where it waits with no data (see :meth:`ArC1Dialect._module`). Blank lines are skipped
anywhere, as C's ``scanf`` skips whitespace before a number (*unverified*: the firmware is
not public); libarc1's SwitchSeeker sends one after its job number (``switchseeker.py``
41-45 wraps the job's ``String`` twice, ``15\n\n``). A reset ``00`` ends any command in
progress (no vendor argument is written ``00``: ints are ``%d``, floats carry a point or an
exponent), so a host that gave up waiting on a module and resets is served. A read-all ``2 1 W B``
answers W x B values, word-major, as the command asks (libarc1 ``modules/readops.py``
``ReadAll`` reads W x B values); a masked read ``2 2 W B n`` ignores W and B (libarc1 sends
32, 32, "useless") and answers each pair as it arrives, so a client that waits for each value
before sending the next pair (the vendor's pacing) is served. ``999`` answers a firmware
version in the range of firmware that knows it (9.3 on); ``firmware=None`` emulates older
firmware, which does not answer it. The pulses of consecutive ``02``
selects and ``04`` pulses are collected and applied together as one batch when the next
command of any other kind arrives, in the order they came; an emulator's state is seen only
through reads, so this is what an instrument that pulses at once would show, and it applies
the same batch as ``apply`` on the in-process emulator (the same noise draws, bit for bit).

Nothing from the wire can crash the service or grow its memory: a line longer than
:data:`MAX_LINE` bytes, an unknown job or a bad number drops the command being parsed (and is
logged); an address outside the configured array reads as NaN and is never pulsed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np

from memristor_hil.errors import CrossbarError
from memristor_hil.pulses import PulseBatch

from .core import CrossbarService
from .faults import Faults
from .serial import serve_pty, write_all
from .stop import StopFlag

__all__ = ["ArC1Dialect", "serve_arc1"]

#: The longest line accepted (a number); anything longer is discarded up to its newline.
MAX_LINE = 64
#: The most cells one masked read may name.
MAX_MASKED = 1 << 20
#: Firmware version reported to ``999``: 9.3, the first that answers it (arc1_pyqt
#: ``ControlWidgets/about_widget.py`` shows "< 9.3" for firmware that does not).
FIRMWARE = (9, 3)
#: Write schemes job ``0`` and ``011`` accept: V/3 (0), V/2 (1), floating (256, libarc1).
WRITE_SCHEMES = (0, 1, 256)
#: The most samples one VolatilityRead batch (job ``33``) may ask for.
MAX_BATCH = 1 << 16
#: The most reply bytes one read of the host's input may produce: a stop flag answers a whole
#: batch, so a host that sends flags faster than it reads their answers (the vendor reads each
#: batch first) would otherwise have the service buffer every answer at once.
MAX_REPLY = 16 << 20
_READ_SIZE = 1 << 16
_NAN32 = np.float32(np.nan).tobytes()
_NAN_TRIPLET = _NAN32 * 3
#: The triplet modules' end marker, (0, 0, 0) (libarc1 ``__init__.py``
#: ``generic_triplet_runner``: "before terminating they return a triplet of zeros").
_END_TRIPLET = np.zeros(3, dtype="<f4").tobytes()
#: MultiStateSeeker's end of a phase, a triplet with a negative third value, then its status
#: line; a status other than 0 is a failed phase (arc1_pyqt ``ProgPanels/MultiStateSeeker.py``
#: ``phase1`` and ``phase3``).
_FAILED_PHASE = np.array([0.0, 0.0, -1.0], dtype="<f4").tobytes() + b"1\n"


@dataclass(frozen=True)
class ModuleJob:
    """A vendor module job: a measurement program the firmware runs, which is not emulated.

    Parameters
    ----------
    name : str
        The vendor's module name.
    params : int
        The parameter lines the host sends after the job number, before anything that depends
        on them (a device count, a wordline list).
    protocol : str
        How the exchange goes on after the parameters (see :meth:`ArC1Dialect._module`):
        ``"triplets"``, ``"multibias"``, ``"stdp"``, ``"volatility"``, ``"phase"`` or
        ``"stability"``.
    cycles_at : int or None
        For ``"triplets"``: the parameter holding the cycles, one end marker per cycle.
    """

    name: str
    params: int
    protocol: str
    cycles_at: int | None = None


#: Every module job arc1_pyqt (a9a18a1) and libarc1 (5bfc6af) send, with their arguments.
MODULE_JOBS: dict[bytes, ModuleJob] = {
    b"14": ModuleJob("FormFinder (multiplicative, legacy)", 11, "triplets"),
    b"141": ModuleJob("FormFinder (linear)", 12, "triplets"),
    b"15": ModuleJob("SwitchSeeker (fast)", 12, "triplets"),
    b"152": ModuleJob("SwitchSeeker (slow)", 12, "triplets"),
    b"191": ModuleJob("Endurance", 10, "triplets"),
    b"201": ModuleJob("CurveTracer", 12, "triplets", cycles_at=8),
    b"21": ModuleJob("ConvergeToState", 12, "triplets"),
    b"220": ModuleJob("ChronoAmperometry", 3, "triplets"),
    b"33": ModuleJob("VolatilityRead", 4, "volatility"),
    b"40": ModuleJob("STDP", 0, "stdp"),
    b"50": ModuleJob("MultiBias", 6, "multibias"),
    b"161": ModuleJob("MultiStateSeeker phase 1", 9, "phase"),
    b"162": ModuleJob("MultiStateSeeker phase 2 (stability)", 2, "stability"),
    b"163": ModuleJob("MultiStateSeeker phase 3 (voltage)", 11, "phase"),
    b"164": ModuleJob("MultiStateSeeker phase 3 (pulse)", 11, "phase"),
    b"165": ModuleJob("MultiStateSeeker phase 3 (program)", 11, "phase"),
}


class _Dropped(Exception):
    """The command being parsed is malformed and is dropped."""


class ArC1Dialect:
    """Turns ArC ONE command bytes into replies, against a :class:`CrossbarService`'s devices.

    Feed it bytes as they arrive with :meth:`feed`; it returns the reply bytes that became due.
    """

    def __init__(
        self, service: CrossbarService, firmware: tuple[int, int] | None = FIRMWARE
    ) -> None:
        self.service = service
        self.firmware = firmware
        self.read_cycles = 50
        self.write_scheme = 1
        self.xbar = service.xbar
        self.words = 0
        self.bits = 0
        self.vread = 0.5
        self._line = bytearray()
        self._overlong = False
        self._between_commands = True
        self._parser = self._commands()
        next(self._parser)
        self._out = bytearray()
        # pending pulses: (flat cell, pulses, voltage, width), applied at the next other command
        self._pending: list[list] = []
        self._selected: int | None = None
        self._new_entry = True

    # ------------------------------------------------------------------ bytes in, bytes out
    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the replies it completed."""
        for byte_line in self._lines(data):
            if not byte_line:  # blank lines are whitespace between numbers (module doc)
                continue
            if byte_line == b"00" and not self._between_commands:
                # no vendor argument is written "00": a host that gave up resets the board
                self.service.say("arc1: a reset (00) ends the command in progress")
                self._parser.close()
                self._parser = self._commands()
                next(self._parser)
            self._parser.send(byte_line)
        out, self._out = bytes(self._out), bytearray()
        return out

    def _lines(self, data: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._line += data[start:]
                if len(self._line) > MAX_LINE:
                    self._overlong = True
                    self._line.clear()
                return
            self._line += data[start:end]
            start = end + 1
            line = bytes(self._line).strip(b"\r ")
            self._line.clear()
            if self._overlong or len(line) > MAX_LINE:
                self._overlong = False
                yield b"\x00"  # a token no command accepts: drops the command in progress
            else:
                yield line

    # ------------------------------------------------------------------ command parser
    def _commands(self) -> Iterator[None]:
        """A coroutine: receives one line at a time, runs each command when complete."""
        while True:
            self._between_commands = True
            job = yield
            self._between_commands = False
            try:
                if job != b"02" and job != b"04":
                    self._flush()
                if job == b"00":
                    self._reset()
                elif job == b"0":
                    args = []
                    for _ in range(7):
                        args.append((yield))
                    self._configure(args)
                elif job == b"01":
                    _mode, vread = (yield), (yield)
                    self.vread = _float(vread)
                elif job == b"011":
                    cycles, scheme = _int((yield)), _int((yield))
                    if cycles < 1 or scheme not in WRITE_SCHEMES:
                        raise _Dropped(f"011 with cycles {cycles}, write scheme {scheme}")
                    self.read_cycles, self.write_scheme = cycles, scheme
                elif job == b"02":
                    w, b = (yield), (yield)
                    self._selected = self._cell(w, b)
                    self._new_entry = True
                elif job == b"04":
                    voltage, width = _float((yield)), _float((yield))
                    self._pulse(voltage, width)
                elif job == b"1":
                    w, b = (yield), (yield)
                    self._out += self._read_cell(self._cell(w, b))
                elif job == b"3":
                    w, b, voltage, width = (yield), (yield), (yield), (yield)
                    self._selected = self._cell(w, b)
                    self._new_entry = True
                    self._pulse(_float(voltage), _float(width))
                    self._flush()
                    self._out += self._read_cell(self._cell(w, b))
                elif job == b"2":
                    mode, words, bits = _int((yield)), _int((yield)), _int((yield))
                    if mode == 1:
                        self._read_all(words, bits)
                    elif mode == 2:
                        count = _int((yield))
                        if not 0 <= count <= MAX_MASKED:
                            raise _Dropped(f"masked read of {count} cells")
                        for _ in range(count):
                            w, b = (yield), (yield)
                            self._out += self._read_cell(self._cell(w, b))
                    else:
                        raise _Dropped(f"read mode {mode}")
                elif job in MODULE_JOBS:
                    yield from self._module(job, MODULE_JOBS[job])
                elif job == b"999":
                    if self.firmware is not None:  # older firmware does not know the job
                        self._out += np.array(self.firmware, dtype="<u2").tobytes()
                elif job:
                    raise _Dropped(f"unknown job {job[:16]!r}")
            except _Dropped as exc:
                self.service.say(f"arc1: dropped a command: {exc}")

    # ------------------------------------------------------------------ module jobs
    def _module(self, job: bytes, spec: ModuleJob) -> Generator[None, bytes, None]:
        """Take a module job's every argument, as the vendor sends them, and refuse it.

        The measurement program is not run and no device changes; where the host waits for
        the instrument, it is answered so that it stops waiting with no data: the end marker
        of each device (and cycle), NaN where the host reads a fixed number of values, a
        failed status where the module has one. So no argument is ever run as a job.
        """
        params = []
        for _ in range(spec.params):
            params.append((yield))
        self.service.say(
            f"arc1: job {job.decode()} ({spec.name}) is not emulated: its arguments are "
            "taken, no device is changed, and the host is answered with no data"
        )
        if spec.protocol == "multibias":
            yield from self._multibias(params)
        elif spec.protocol == "stdp":
            yield from self._stdp()
        elif spec.protocol in ("phase", "stability"):
            yield  # the device count; one word/bit pair follows, one device per call
            yield from self._device()
            if spec.protocol == "phase":
                self._out += _FAILED_PHASE
            else:
                yield from self._until_stop(_NAN32)
        elif spec.protocol == "volatility":
            batch = int(_float(params[2]))
            if not 1 <= batch <= MAX_BATCH:
                raise _Dropped(f"VolatilityRead batch of {batch}")
            for _ in range(_count((yield))):
                yield from self._device()
                self._out += _NAN32
                yield from self._until_stop((b"0\n" + _NAN32) * batch, last=_NAN32)
        else:  # triplets: the end marker, per device and per cycle
            cycles = 1 if spec.cycles_at is None else max(_count(params[spec.cycles_at]), 1)
            for _ in range(_count((yield))):
                yield from self._device()
                self._out += _END_TRIPLET * cycles

    @staticmethod
    def _device() -> Generator[None, bytes, None]:
        """Take a device's word and bit (the vendor's ``queue_select``), which are not used."""
        yield
        yield

    def _until_stop(self, answer: bytes, last: bytes = b"") -> Generator[None, bytes, None]:
        """Send ``answer``, then again for each stop flag 0 the host sends; ``last`` on 1."""
        self._out += answer
        while _int((yield)) == 0:
            if len(self._out) + len(answer) > MAX_REPLY:
                raise _Dropped("stop flags sent faster than their answers were read")
            self._out += answer
        self._out += last

    def _multibias(self, params: list[bytes]) -> Generator[None, bytes, None]:
        """MultiBias: n wordlines follow; one triplet (read) or two per configured word."""
        lines, action = _count(params[3]), _int(params[5])
        for _ in range(lines):
            yield
        self._out += _NAN_TRIPLET * (1 if action == 1 else 2 * self.words)

    def _stdp(self) -> Generator[None, bytes, None]:
        """STDP: per device, a first triplet, then per time step its waveform and two."""
        for _ in range(_count((yield))):
            yield from self._device()
            self._out += _NAN_TRIPLET
            for _ in range(_count((yield))):
                for _ in range(2 * _count((yield))):  # (time, voltage) pairs
                    yield
                self._out += _NAN_TRIPLET * 2
            self._out += _NAN_TRIPLET

    # ------------------------------------------------------------------ commands
    def _reset(self) -> None:
        self._selected = None
        self.service.safe()

    def _configure(self, args: list[bytes]) -> None:
        cycles, words, bits, mode, session, sneak = (_int(a) for a in args[:6])
        vread = _float(args[6])
        rows, cols = self.xbar.shape
        ok = (
            1 <= words <= min(32, rows)
            and 1 <= bits <= min(32, cols)
            and mode in (0, 1, 2, 3)
            and session in (0, 1, 2, 3)
            and sneak in WRITE_SCHEMES
            and 1 <= cycles
            and 0 < abs(vread) <= 12
        )
        if ok:
            self.words, self.bits, self.vread = words, bits, vread
            self.read_cycles, self.write_scheme = cycles, sneak
        self._out += b"1\n" if ok else b"0\n"

    def _cell(self, w: bytes, b: bytes) -> int | None:
        """The flat index of word ``w``, bit ``b`` (1-based), or None outside the array."""
        word, bit = _int(w), _int(b)
        if 1 <= word <= self.words and 1 <= bit <= self.bits:
            return (word - 1) * self.xbar.shape[1] + (bit - 1)
        return None

    def _pulse(self, voltage: float, width: float) -> None:
        cell = self._selected
        if cell is None:
            raise _Dropped("pulse with no device selected, or outside the configured array")
        last = self._pending[-1] if self._pending else None
        if not self._new_entry and last is not None and last[2:] == [voltage, width]:
            last[1] += 1  # the same device's pulse train goes on
        else:
            self._pending.append([cell, 1, voltage, width])
        self._new_entry = False
        if len(self._pending) > MAX_MASKED:
            self._flush()

    def _flush(self) -> None:
        """Apply the pending pulses as one batch, in the order they arrived."""
        pending, self._pending = self._pending, []
        self._new_entry = True
        if not pending:
            return
        cells = np.array([p[0] for p in pending], dtype=np.int64)
        counts = np.array([p[1] for p in pending], dtype=np.int64)
        voltages = np.array([p[2] for p in pending])
        widths = np.array([p[3] for p in pending])
        rows, cols = np.divmod(cells, self.xbar.shape[1])
        voltage = float(voltages[0]) if np.all(voltages == voltages[0]) else voltages
        width = float(widths[0]) if np.all(widths == widths[0]) else widths
        pulses = int(counts[0]) if np.all(counts == counts[0]) else counts
        try:
            self.xbar.apply(PulseBatch(rows, cols, pulses, voltage, width))
        except CrossbarError as exc:
            self.service.say(f"arc1: pulses refused: {exc}")
            return
        self.service.note_change()

    def _read_cell(self, cell: int | None) -> bytes:
        if cell is None:
            return _NAN32
        rows, cols = divmod(cell, self.xbar.shape[1])
        value = self.xbar.read(np.array([rows]), np.array([cols]))
        return value.astype("<f4").tobytes()

    def _read_all(self, words: int, bits: int) -> None:
        """W x B values, word-major, as the command asks; NaN outside the configured array."""
        if not self.words:
            raise _Dropped("read-all before the array was configured")
        if not (1 <= words <= 32 and 1 <= bits <= 32):
            raise _Dropped(f"read-all of {words} x {bits} lines")
        out = np.full((words, bits), np.nan, dtype="<f4")
        w, b = min(words, self.words), min(bits, self.bits)
        out[:w, :b] = self.xbar.read_region(0, 0, w, b)
        self._out += out.tobytes()

    def close(self) -> None:
        """Apply any pulses still pending (the service is stopping)."""
        self._flush()


def _int(token: bytes) -> int:
    try:
        return int(token)
    except ValueError:
        raise _Dropped(f"not an integer: {token[:16]!r}") from None


def _count(token: bytes) -> int:
    """A count the host sends (devices, wordlines, time steps, samples), within bounds."""
    count = _int(token)
    if not 0 <= count <= MAX_MASKED:
        raise _Dropped(f"a count of {count}")
    return count


def _float(token: bytes) -> float:
    try:
        value = float(token)
    except ValueError:
        raise _Dropped(f"not a number: {token[:16]!r}") from None
    if not np.isfinite(value):
        raise _Dropped(f"not a finite number: {token[:16]!r}")
    return value


def serve_arc1(
    service: CrossbarService,
    stop: StopFlag,
    announce: Callable[[str], None],
    faults: Faults | None = None,
) -> None:
    """Serve ArC ONE's command set on a new pseudo-terminal until ``stop`` is set."""
    faults = faults or Faults()
    dialect = ArC1Dialect(service)

    def on_bytes(data: bytes, master: int, slave: int) -> None:
        reply = dialect.feed(data)
        if reply:
            out = faults.outgoing(reply)
            if out:
                write_all(master, slave, out)

    try:
        serve_pty(service, stop, announce, faults, on_bytes, read_size=_READ_SIZE)
    finally:
        dialect.close()
