"""ArC1Crossbar: Arc Instruments' ArC ONE over its serial link, as a Crossbar.

ArC ONE speaks newline-terminated ASCII on a serial port (921600 baud, 8 data bits, even
parity, 1 stop bit). A command is a job number on its own line followed by its arguments,
one per line; replies are raw little-endian float32 resistances (ohm), or a line for the
initialisation handshake. Word lines and bit lines count from 1. The commands this driver
sends (facts from the vendor's published control software; see docs/instruments.md):

====================  ============================================  =========================
job and arguments     what the instrument does                      reply
====================  ============================================  =========================
``00``                reset the microcontroller (safe state)         none
``0`` c w b m s p V   configure: read cycles, words, bits, read      ``1\\n`` when accepted
                      mode, session mode, write scheme, Vread
``01`` m V            read mode and read voltage                     none
``02`` w b            select (close) one crosspoint                  none
``04`` V pw           pulse the selected crosspoint                  none
``2 2`` W B n, then   read n crosspoints (masked read); each         one float32 per pair
n times ``w b``       pair is sent after the previous value came
``2 1`` W B           read every crosspoint, word-major              W*B float32
``999``               firmware version (firmware 9.3 and later)      2 x uint16
====================  ============================================  =========================

A batch becomes one write: per entry a select and its pulse train (``02`` then ``04`` per
pulse); the read-back, when asked for, is one masked read of the batch's cells, paced as the
vendor's software paces it (libarc1 ``modules/readops.py`` ``ReadMasked``, arc1_pyqt
``ControlWidgets/manual_ops_widget.py`` ``readAll``): the header, then one ``w b`` pair at a
time, each sent after the previous pair's value arrived. That costs one link round trip per
cell read (about 1-2 ms on USB serial, plus the read itself). Every value gets its own
``timeout`` (the vendor gives each ``read_floats(1)`` the port's 7 s), so a 32x32 read-all of
an instrument that takes a few ms per device never times out as a whole.

ArC ONE's link has neither checksums nor sequence numbers, so a pulse is never re-sent (it could
be applied twice); only reads, which change nothing, are retried after a timeout or a garbled
reply. Before a retry the driver resynchronises: it finishes a masked read it gave up on (the
remaining pairs), asks for the firmware version (``999``) and discards every byte up to that
known reply, so a late answer to the abandoned read (ArC ONE answers in order) can never be
taken for the retry's answer. Firmware older than 9.3 does not answer ``999``; the vendor
software connects to it anyway (arc1_pyqt ``instrument.py`` ``firmware_version`` returns
(-1, -1), shown as "< 9.3"), and so does this driver; on such firmware a lost reply is not
resynchronised and the read is not sent again (it raises, after discarding late bytes).
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

import numpy as np
import serial

from memristor_hil.crossbar import Crossbar
from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
)
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits
from memristor_hil.url_options import Option, keyword_only, query_options, read_options_and_limits

__all__ = [
    "ARC1_LIMITS",
    "ArC1Crossbar",
    "encode_batch",
    "encode_masked_read",
    "open_arc1",
]

#: The largest array ArC ONE addresses (32 word lines x 32 bit lines).
MAX_LINES = 32
#: What the instrument itself can do (vendor GUI bounds: +-12 V, 90 ns .. 10 s pulses).
ARC1_LIMITS = SafetyLimits(v_min=-12.0, v_max=12.0, width_min=90e-9, width_max=10.0)
#: The default limits: the project's conservative defaults, inside the instrument's range.
DEFAULT_LIMITS = SafetyLimits(v_min=-1.5, v_max=1.5, width_min=90e-9, width_max=1e-3)
#: What the ArC instruments' limits state: voltage and width ranges (SafetyLimits.within).
INSTRUMENT_RANGES = ("v_min", "v_max", "width_min", "width_max")
#: Read modes (job ``01``): 0 classic, 1 TIA, 2 TIA 4-point (V > 0), 3 TIA 4-point (V < 0).
READ_MODES = (0, 1, 2, 3)
#: Most pulses one batch may send (each is a 3-line ``04`` command on the wire).
MAX_BATCH_PULSES = 1_000_000
#: Write schemes (the sneak-path option of job ``0``): the voltage on the lines not addressed.
#: arc1_pyqt offers "Write: V/3" (0) and "Write: V/2" (1); libarc1's ``SNEAKPATH_LIMIT.FLOAT``
#: (inactive lines floating) is 256.
WRITE_SCHEMES = {0: "V/3", 1: "V/2", 256: "floating"}
#: What identity says for a firmware that does not answer ``999`` (the vendor's words).
OLD_FIRMWARE = "< 9.3"
_FLOAT = np.dtype("<f4")


def _number(value: float) -> bytes:
    """A float as the instrument reads it: Python's shortest round-trip text (``1e-06``)."""
    return repr(float(value)).encode()


def _line_table(largest: int) -> tuple[np.ndarray, np.ndarray]:
    """``b"0\\n"``, ``b"1\\n"``, ... ``b"<largest>\\n"`` as an object array, and their
    lengths (cached)."""
    global _LINES, _LINE_LENGTHS
    if len(_LINES) <= largest:
        _LINES = np.array([b"%d\n" % i for i in range(max(largest + 1, 64))], dtype=object)
        _LINE_LENGTHS = np.array([len(line) for line in _LINES], dtype=np.int64)
    return _LINES, _LINE_LENGTHS


_LINES = np.array([], dtype=object)
_LINE_LENGTHS = np.array([], dtype=np.int64)


def encode_batch(
    batch: PulseBatch, words: np.ndarray, bits: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """The bytes of a batch: per entry with pulses, ``02 w b`` then ``04 V pw`` per pulse.

    Entries keep their batch order (a cell named twice is selected twice); an entry with no
    pulses is not sent. ``words`` and ``bits`` are the 1-based lines of each entry. Returns the
    bytes and where each entry's part ends in them (for writing entry by entry).
    """
    keep = np.flatnonzero(batch.pulses)
    if keep.size == 0:
        return b"", np.empty(0, dtype=np.int64)
    counts = batch.pulses[keep]
    w, b = words[keep], bits[keep]
    lines, lengths = _line_table(int(max(w.max(), b.max())))
    pieces = np.empty((len(keep), 4), dtype=object)
    pieces[:, 0] = b"02\n"
    pieces[:, 1] = lines[w]
    pieces[:, 2] = lines[b]
    if np.ndim(batch.voltage) == 0 and np.ndim(batch.width) == 0:
        train = _train(float(batch.voltage), float(batch.width))
        train_lengths = len(train) * counts
        if counts.min() == counts.max():
            pieces[:, 3] = train * int(counts[0])
        else:
            pieces[:, 3] = [train * c for c in counts.tolist()]
    else:
        voltage = np.broadcast_to(batch.voltage, (len(batch),))[keep].tolist()
        width = np.broadcast_to(batch.width, (len(batch),))[keep].tolist()
        trains = zip(voltage, width, counts.tolist(), strict=True)
        pieces[:, 3] = [_train(v, pw) * c for v, pw, c in trains]
        train_lengths = np.array([len(t) for t in pieces[:, 3].tolist()], dtype=np.int64)
    ends = np.cumsum(3 + lengths[w] + lengths[b] + train_lengths)
    return b"".join(pieces.ravel().tolist()), ends


def _train(voltage: float, width: float) -> bytes:
    """One ``04`` pulse command."""
    return b"04\n" + _number(voltage) + b"\n" + _number(width) + b"\n"


def encode_masked_read(nwords: int, nbits: int, words: np.ndarray, bits: np.ndarray) -> bytes:
    """The bytes of a masked read of the cells ``(words[i], bits[i])`` (1-based): one float32
    each. The driver sends them paced: the header, then one pair per value received."""
    head = b"2\n2\n%d\n%d\n%d\n" % (nwords, nbits, len(words))
    if len(words) == 0:
        return head
    lines, _ = _line_table(int(max(words.max(), bits.max())))
    pairs = np.empty((len(words), 2), dtype=object)
    pairs[:, 0] = lines[words]
    pairs[:, 1] = lines[bits]
    return head + b"".join(pairs.ravel().tolist())


class ArC1Crossbar(Crossbar):
    """Arc Instruments' ArC ONE on a serial port.

    Crossbar row ``r`` is word line ``r + 1``, column ``c`` is bit line ``c + 1``.

    Parameters
    ----------
    port : str
        The serial device (``/dev/ttyACM0``, ``COM5``) or a pyserial URL.
    rows, cols : int
        Word and bit lines of the array in use (1..32 each). Default 32 x 32.
    vread : float
        Read voltage in volt (``abs(vread) <= 12``). Default 0.5 V, the vendor's default.
    read_mode : int
        0 classic, 1 TIA, 2 TIA 4-point (default; 3 is chosen for a negative vread).
    read_cycles : int
        Averaging cycles per read. Default 50.
    sneak_path : int
        Write scheme, the voltage on the lines not addressed: 0 V/3, 1 V/2 (default, as in
        arc1_pyqt), 256 floating (libarc1's value); see :data:`~.arc1.WRITE_SCHEMES`.
    timeout : float
        Seconds to wait for each value (one device read) or reply line. Default 2.
    retries : int
        Re-sends of a *read* after a timeout or garbled reply (pulses are never re-sent).
    limits : SafetyLimits, optional
        Safety limits; must lie inside the instrument's (:data:`.ARC1_LIMITS`).
    reset_delay : float
        Seconds to wait after the ``00`` reset at connect (the board reboots). Default 1.
    write_delay : float
        Pause between writes within a batch (the vendor library uses 1 ms; shorter risks
        dropped bytes on the real board). Default 1e-3.
    baudrate : int
        Default 921600.
    """

    def __init__(
        self,
        port: str,
        *,
        rows: int = MAX_LINES,
        cols: int = MAX_LINES,
        vread: float = 0.5,
        read_mode: int = 2,
        read_cycles: int = 50,
        sneak_path: int = 1,
        timeout: float = 2.0,
        retries: int = 2,
        limits: SafetyLimits | None = None,
        reset_delay: float = 1.0,
        write_delay: float = 1e-3,
        baudrate: int = 921_600,
    ) -> None:
        if not (1 <= rows <= MAX_LINES and 1 <= cols <= MAX_LINES):
            raise ValueError(f"ArC ONE addresses 1..32 word and bit lines, got {rows}x{cols}")
        if not abs(vread) <= 12.0 or vread == 0:
            raise ValueError(f"vread={vread} V must be non-zero and within +-12 V")
        if read_mode not in READ_MODES or sneak_path not in WRITE_SCHEMES:
            raise ValueError(
                f"read_mode must be in {READ_MODES} and sneak_path (write scheme) one of "
                + ", ".join(f"{k} ({v})" for k, v in WRITE_SCHEMES.items())
            )
        if not 1 <= read_cycles <= 1000:
            raise ValueError(f"read_cycles={read_cycles} must be in 1..1000")
        if not timeout > 0 or not 0 <= retries <= 100:
            raise ValueError("timeout must be positive and retries in 0..100")
        if read_mode == 2 and vread < 0:
            read_mode = 3
        limits = limits or DEFAULT_LIMITS
        limits.check_within(ARC1_LIMITS, "the ArC ONE", INSTRUMENT_RANGES)
        self._port_name = port
        self._settings = (read_cycles, rows, cols, read_mode, 0, sneak_path, float(vread))
        self.vread = float(vread)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.write_delay = float(write_delay)
        self.reset_delay = float(reset_delay)
        self.stats = {"writes": 0, "bytes_out": 0, "bytes_in": 0, "retries": 0}
        self._serial = _open_port(port, int(baudrate))
        try:
            self._initialise()
            version = self._firmware_version()
        except BaseException:
            self._close_port()
            raise
        super().__init__(
            (rows, cols),
            limits=limits,
            identity=f"Arc Instruments,ArC ONE,{rows}x{cols},firmware {version}",
        )
        # the board is reset (its safe state) on close, or at interpreter exit if never closed
        self._finalizer = weakref.finalize(self, _reset_and_close, self._serial)

    # ------------------------------------------------------------------ link
    def _write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
        except (OSError, serial.SerialException) as exc:
            raise ConnectionLostError(f"{self._port_name}: write failed: {exc}") from None
        self.stats["writes"] += 1
        self.stats["bytes_out"] += len(data)

    def _read_exact(self, size: int, step: int = 4) -> bytes:
        """Exactly ``size`` bytes, each ``step`` of them (one value, one device read) within
        ``timeout`` of the previous; else :class:`CrossbarTimeoutError`."""
        deadline = time.monotonic() + self.timeout
        data = bytearray()
        while len(data) < size:
            if time.monotonic() > deadline:
                raise CrossbarTimeoutError(
                    f"{self._port_name}: {len(data)} of {size} reply bytes, the next value not "
                    f"within {self.timeout} s"
                )
            done = len(data) // step
            try:
                data += self._serial.read(size - len(data))
            except (OSError, serial.SerialException) as exc:
                raise ConnectionLostError(f"{self._port_name}: read failed: {exc}") from None
            if len(data) // step > done:
                deadline = time.monotonic() + self.timeout
        self.stats["bytes_in"] += size
        return bytes(data)

    def _read_line(self, limit: int = 32) -> bytes:
        deadline = time.monotonic() + self.timeout
        line = bytearray()
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or len(line) > limit:
                raise CrossbarTimeoutError(
                    f"{self._port_name}: no reply line within {self.timeout} s "
                    f"(got {bytes(line)!r})"
                )
            try:
                line += self._serial.read(1)
            except (OSError, serial.SerialException) as exc:
                raise ConnectionLostError(f"{self._port_name}: read failed: {exc}") from None
        return bytes(line)

    def _drain(self) -> None:
        """Discard late bytes of a reply we gave up on, so the next reply starts clean."""
        try:
            time.sleep(min(0.05, self.timeout))
            self._serial.reset_input_buffer()
        except (OSError, serial.SerialException):
            pass

    def _resync(self) -> None:
        """Discard everything up to the answer of a fresh ``999`` (firmware version).

        ArC ONE answers in order and its replies carry no framing, so after a reply we gave up
        on, a late one could still arrive and be read as the next request's. The version's
        bytes are known since connect: once they end the stream and the line stays quiet for
        one port timeout (50 ms), what came before belonged to abandoned requests.
        """
        self._drain()
        marker = self._version_reply
        if marker is None:
            time.sleep(self.timeout)  # let late values of the abandoned read arrive ...
            self._drain()  # ... and discard them, so the next read starts clean
            raise _NoResync(
                f"{self._port_name}: firmware {OLD_FIRMWARE} does not answer 999, so a lost "
                "reply cannot be resynchronised and the read is not sent again"
            )
        self._write(b"999\n")
        deadline = time.monotonic() + self.timeout
        tail = b""
        while True:
            try:
                chunk = self._serial.read(4096)  # returns after the port's 50 ms timeout
            except (OSError, serial.SerialException) as exc:
                raise ConnectionLostError(f"{self._port_name}: read failed: {exc}") from None
            if chunk:
                self.stats["bytes_in"] += len(chunk)
                deadline = time.monotonic() + self.timeout  # late values still arriving
                tail = (tail + chunk)[-len(marker) :]
            elif tail == marker:
                return
            if time.monotonic() > deadline:
                raise CrossbarTimeoutError(
                    f"{self._port_name}: no firmware-version reply within {self.timeout} s "
                    "while resynchronising after a lost reply"
                )

    def _paced(self, words: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """A masked read as the vendor sends it: the header, then each ``w b`` pair after the
        previous pair's value arrived. After a timeout the remaining pairs are still sent
        (unanswered values are discarded by the resynchronisation), so the instrument ends
        the command in step with the driver."""
        self._write(b"2\n2\n%d\n%d\n%d\n" % (*self.shape, len(words)))
        out = bytearray()
        pairs = [b"%d\n%d\n" % wb for wb in zip(words.tolist(), bits.tolist(), strict=True)]
        for i, pair in enumerate(pairs):
            self._write(pair)
            try:
                out += self._read_exact(4)
            except CrossbarTimeoutError:
                for rest in pairs[i + 1 :]:
                    self._write(rest)
                    time.sleep(self.write_delay)
                raise
        return np.frombuffer(bytes(out), dtype=_FLOAT)

    def _floats(self, request: bytes | tuple[np.ndarray, np.ndarray], count: int) -> np.ndarray:
        """Send a read request (bytes, or the words and bits of a paced masked read) and
        decode ``count`` resistances, retrying (reads only)."""
        failure: CrossbarError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                try:
                    self._resync()
                except _NoResync as exc:
                    raise type(failure)(f"{failure}; {exc}") from None  # type: ignore[misc]
                except CrossbarTimeoutError as exc:
                    failure = exc
                    continue
            try:
                if isinstance(request, tuple):
                    values = self._paced(*request)
                else:
                    self._write(request)
                    values = np.frombuffer(self._read_exact(4 * count), dtype=_FLOAT)
            except CrossbarTimeoutError as exc:
                failure = exc
                continue
            if count and not (np.all(np.isfinite(values)) and values.min() > 0):
                failure = ProtocolError(
                    f"{self._port_name}: garbled reply: resistances must be positive and finite"
                )
                continue
            return values.astype(np.float64)
        assert failure is not None
        raise type(failure)(f"{failure} (after {self.retries + 1} attempt(s))")

    def _initialise(self) -> None:
        """Reset and configure the board; configuring is idempotent, so a lost answer is
        retried (nothing is pulsed)."""
        cycles, words, bits, mode, session, sneak, vread = self._settings
        configure = (
            b"0\n%d\n%d\n%d\n%d\n%d\n%d\n" % (cycles, words, bits, mode, session, sneak)
            + _number(vread)
            + b"\n"
        )
        for attempt in range(self.retries + 1):
            self._write(b"00\n")
            time.sleep(self.reset_delay)
            self._drain()
            self._write(configure)
            try:
                answer = self._read_line().strip()
            except CrossbarTimeoutError:
                if attempt == self.retries:
                    raise
                self.stats["retries"] += 1
                continue
            if answer != b"1":
                raise DeviceError(
                    f"{self._port_name}: ArC ONE did not confirm its configuration "
                    f"({words}x{bits}, read mode {mode}, Vread {vread} V): answered {answer!r}"
                )
            break
        self._write(b"01\n%d\n" % mode + _number(vread) + b"\n")

    def _firmware_version(self) -> str:
        """Ask once, as the vendor's software does (arc1_pyqt ``instrument.py``
        ``firmware_version``; libarc1 ``arc.py`` ``initialise``); firmware older than 9.3
        stays silent and is connected to all the same."""
        self._version_reply: bytes | None = None
        self._write(b"999\n")
        try:
            reply = self._read_exact(4)
        except CrossbarTimeoutError:
            self._drain()  # a late answer must not be taken for a read's
            return OLD_FIRMWARE
        self._version_reply = reply  # the marker _resync waits for
        major, minor = np.frombuffer(reply, dtype="<u2")
        return f"{major}.{minor}"

    # ------------------------------------------------------------------ Crossbar hooks
    def _lines(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.divmod(flat, self.shape[1])
        return rows + 1, cols + 1

    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        if batch.total_pulses > MAX_BATCH_PULSES:
            raise InvalidBatchError(
                f"{batch.total_pulses} pulses in one batch exceed ArC ONE's limit of "
                f"{MAX_BATCH_PULSES} (each is one command on the serial link); split the batch"
            )
        words, bits = self._lines(cells.flat)
        data, ends = encode_batch(batch, words, bits)
        try:
            if self.write_delay > 0:
                start = 0
                for end in ends.tolist():
                    self._write(data[start:end])
                    start = end
                    time.sleep(self.write_delay)
            elif data:
                self._write(data)
            if not read_back:
                return None
            return self._floats((words, bits), len(words))
        except CrossbarError:
            self._safe_quietly()
            raise

    def _read(self, flat: np.ndarray) -> np.ndarray:
        words, bits = self._lines(flat)
        return self._floats((words, bits), len(flat))

    def _read_all(self) -> np.ndarray:
        rows, cols = self.shape
        request = b"2\n1\n%d\n%d\n" % (rows, cols)
        return self._floats(request, rows * cols).reshape(rows, cols)

    def _safe_quietly(self) -> None:
        """Reset the board (its safe state); it is configured again before the next use."""
        try:
            self._write(b"00\n")
        except CrossbarError:
            return
        self._drain()
        try:
            time.sleep(self.reset_delay)
            self._initialise()
        except CrossbarError:
            pass

    def _close_port(self) -> None:
        try:
            self._serial.close()
        except (OSError, serial.SerialException):
            pass

    def _close(self) -> None:
        self._finalizer()


class _NoResync(CrossbarError):
    """The firmware cannot be resynchronised (it does not answer ``999``)."""


def _reset_and_close(port: serial.SerialBase) -> None:
    """Send the reset (ArC ONE's safe state) and release the port; never raises."""
    try:
        port.write(b"00\n")
        port.flush()
    except Exception:  # noqa: BLE001 - a port that is gone has nothing left to make safe
        pass
    try:
        port.close()
    except Exception:  # noqa: BLE001
        pass


def _open_port(port: str, baudrate: int) -> serial.SerialBase:
    """The port at ArC ONE's line settings (8E1).

    A Linux pseudo-terminal (the emulated instrument) has no line settings, and re-applying
    even parity to one that was configured before fails with EINVAL; there, and only there,
    the port is opened without them.
    """
    settings = {
        "baudrate": baudrate,
        "bytesize": serial.EIGHTBITS,
        "parity": serial.PARITY_EVEN,
        "stopbits": serial.STOPBITS_ONE,
        "timeout": 0.05,
        "write_timeout": 5.0,
    }
    try:
        try:
            return serial.serial_for_url(port, **settings)
        except Exception:  # termios.error is not an OSError
            if not os.path.realpath(port).startswith("/dev/pts/"):
                raise
            settings["parity"] = serial.PARITY_NONE
            return serial.serial_for_url(port, **settings)
    except Exception as exc:  # noqa: BLE001 - SerialException, OSError, termios.error, ValueError
        raise ConnectionLostError(f"cannot open ArC ONE port {port!r}: {exc}") from None


_ARC1_OPTIONS = {
    "rows": Option(int),
    "cols": Option(int),
    "vread": Option(float),
    "read_mode": Option(int),
    "read_cycles": Option(int),
    "sneak_path": Option(int),
    "timeout": Option(float),
    "retries": Option(int),
    "reset_delay": Option(float),
    "write_delay": Option(float),
    "baudrate": Option(int),
    "limits": Option(keyword_only),
}


def open_arc1(url: str, **overrides: Any) -> ArC1Crossbar:
    """Open ``arc1://PORT[?rows=R&cols=C&vread=V&...]``.

    ``PORT`` is a device path (``arc1:///dev/ttyACM0``) or name (``arc1://COM5``). Options:
    ``rows``, ``cols``, ``vread``, ``read_mode``, ``read_cycles``, ``sneak_path``, ``timeout``,
    ``retries``, ``reset_delay``, ``write_delay``, ``baudrate``; safety limits ``v_min``,
    ``v_max``, ``width_min``, ``width_max``, ``max_pulses`` (inside the instrument's own).
    """
    rest = url.split("://", 1)[1]
    port, _, query = rest.partition("?")
    if not port:
        raise ValueError(f"{url!r} names no serial port: arc1:///dev/ttyACM0 or arc1://COM5")
    _, options = query_options("x://?" + query)
    options = {**options, **overrides}
    kwargs = read_options_and_limits("arc1", options, _ARC1_OPTIONS, DEFAULT_LIMITS)
    return ArC1Crossbar(port, **kwargs)
