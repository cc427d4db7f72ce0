"""SerialCrossbar: a crossbar controller on a serial port (binary frames, docs/protocol.md)."""

from __future__ import annotations

import os
import select
import time
from typing import Any

import serial

from memristor_hil.protocol.framing import FrameDecoder, FrameFault, encode_frame
from memristor_hil.protocol.messages import Op
from memristor_hil.pulses import SafetyLimits
from memristor_hil.url_options import (
    Option,
    boolean,
    keyword_only,
    query_options,
    read_options,
)

from ._sequenced import LinkTimeout, SequencedCrossbar

__all__ = ["SerialCrossbar", "open_serial"]

_POLL = 0.05
_WRITE_TIMEOUT = 5.0
_CHUNK = 1 << 16
#: Draining stale input at open: stop after this much quiet, or after this long in all.
_DRAIN_QUIET = 0.02
_DRAIN_MAX = 0.5


class _SerialLink:
    """Frames over a pyserial port; hunts for the next frame after damaged bytes."""

    reopen_after_timeout = False  # the frame decoder resynchronises by itself

    def __init__(self, port: str, baudrate: int) -> None:
        self.port = port
        self.baudrate = baudrate
        self._decoder = FrameDecoder()
        self._serial = self._open()

    def _open(self) -> serial.SerialBase:
        # exclusive: an advisory lock (flock) on a posix port, so that a second driver, or any
        # program that asks for exclusive access, is refused instead of stealing replies
        try:
            port = serial.serial_for_url(
                self.port,
                baudrate=self.baudrate,
                timeout=_POLL,
                write_timeout=_WRITE_TIMEOUT,
                exclusive=True,
            )
        except ValueError as exc:  # pyserial's way of saying "bad port settings or URL"
            raise OSError(f"cannot open {self.port!r}: {exc}") from None
        except serial.SerialException as exc:
            if "exclusively lock" in str(exc):
                raise OSError(
                    f"port in use: {self.port} is held by another program (another driver, a "
                    "terminal); close it there first"
                ) from None
            raise
        return port

    def retarget(self, port: str) -> None:
        """Use ``port`` from the next :meth:`reopen` on."""
        self.port = port

    def send(self, op: Op, message: bytes) -> None:
        frame = encode_frame(message)
        fd = getattr(self._serial, "fd", None)
        if fd is None:  # a pyserial URL handler: its own write
            self._serial.write(frame)
            return
        # a posix port: the system calls alone (pyserial's write adds a select per call)
        view = memoryview(frame)
        deadline = time.monotonic() + _WRITE_TIMEOUT
        while view:
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OSError(f"{self.port}: write timed out (the device reads nothing)")
            select.select([], [fd], [], remaining)

    def receive(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        decoder = self._decoder
        while True:
            for event in decoder.events():
                return None if isinstance(event, FrameFault) else event
            for event in decoder.expire():  # a partial frame nobody will complete
                return None if isinstance(event, FrameFault) else event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout
            fd = getattr(self._serial, "fd", None)
            if fd is None:  # a pyserial URL handler: its own read
                decoder.feed(self._serial.read(max(decoder.needed(), self._serial.in_waiting)))
            else:
                decoder.feed(self._read_fd(fd, decoder.needed(), deadline))

    def _read_fd(self, fd: int, need: int, deadline: float) -> bytes:
        """At least ``need`` bytes from a posix port, unless the deadline passes first.

        A pty hands over about 4 kB per read, so a large reply takes many reads; this loop does
        only the system calls (pyserial's read loop costs more than the transfer itself).
        """
        chunks: list[bytes] = []
        got = 0
        while got < need:
            # select first: with the raw settings pyserial gives a port (VMIN = 0), a read
            # with nothing waiting returns b"" at once, as a hang-up does
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            data = os.read(fd, max(need - got, _CHUNK))
            if not data:  # readable but empty: the other end hung up
                raise OSError(f"{self.port}: device disconnected")
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def drain(self) -> None:
        """Read and drop pending input until the line has been quiet for a moment."""
        fd = getattr(self._serial, "fd", None)
        deadline = time.monotonic() + _DRAIN_MAX
        while time.monotonic() < deadline:
            if fd is None:
                time.sleep(_DRAIN_QUIET)
                if not self._serial.in_waiting:
                    break
                self._serial.read(self._serial.in_waiting)
            elif not select.select([fd], [], [], _DRAIN_QUIET)[0] or not os.read(fd, _CHUNK):
                break
        self._decoder.clear()

    def reopen(self) -> None:
        self.close()
        self._decoder.clear()
        self._serial = self._open()

    def close(self) -> None:
        try:
            self._serial.close()
        except OSError:
            pass


class SerialCrossbar(SequencedCrossbar):
    """A crossbar controller on a serial port, speaking the binary framing of docs/protocol.md.

    Parameters
    ----------
    port : str
        A device (``/dev/ttyUSB0``, ``COM3``, a pseudo-terminal) or any pyserial URL
        (``socket://host:port``, ``rfc2217://...``, ``loop://``).
    baudrate : int
        Line speed (ignored by pseudo-terminals and sockets). Default 921600.
    timeout : float
        Seconds to wait for each reply. Default 1.
    retries : int
        Re-sends of a command (same sequence number, so never applied twice). Default 3.
    limits : SafetyLimits, optional
        Narrower safety limits to configure on the device; by default the device's.
    takeover : bool
        Take control of a device another host holds (only when that host has died; URL
        option ``takeover=1``). Default False: such a device is refused with a DeviceError.
    monitor : bool
        Watch a device another host drives, without claiming it: reads only (URL option
        ``monitor=1``).

    Raises
    ------
    ConnectionLostError
        If the port cannot be opened, or another program holds it ("port in use": the port is
        opened for exclusive access).
    CrossbarTimeoutError
        If the device does not answer its identify command.

    Notes
    -----
    After a failure (the device restarted, possibly on another port), :meth:`reopen` with the
    new port and repeat the call that failed: it is applied exactly once (see
    ``SequencedCrossbar`` in ``memristor_hil.drivers._sequenced``).

    Examples
    --------
    >>> with SerialCrossbar("/dev/ttyACM0") as xbar:  # doctest: +SKIP
    ...     r = xbar.apply(PulseBatch([0], [0], pulses=10), read_back=True)
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 921_600,
        timeout: float = 1.0,
        retries: int = 3,
        limits: SafetyLimits | None = None,
        takeover: bool = False,
        monitor: bool = False,
    ) -> None:
        from memristor_hil.errors import ConnectionLostError

        try:
            link = _SerialLink(port, int(baudrate))
        except OSError as exc:
            raise ConnectionLostError(f"cannot open serial port {port!r}: {exc}") from None
        super().__init__(
            link,
            port,
            timeout=timeout,
            retries=retries,
            limits=limits,
            takeover=takeover,
            monitor=monitor,
        )

    def reopen(self, port: str | None = None) -> None:
        """Open the port again, or ``port`` instead, keeping the sequence state.

        Use it when the device came back on another port (``/dev/ttyACM1``, a new
        ``/dev/pts/N``); then repeat the call that failed, which is applied exactly once.

        Raises
        ------
        ConnectionLostError
            If the port cannot be opened or is in use.
        DeviceError
            If the device there is not a crossbar of this shape.
        """
        super().reopen(port)


_SERIAL_OPTIONS = {
    "timeout": Option(float, 1.0),
    "retries": Option(int, 3),
    "baudrate": Option(int, 921_600),
    "takeover": Option(boolean, False),
    "monitor": Option(boolean, False),
    "limits": Option(keyword_only, None),
}


def open_serial(url: str, **overrides: Any) -> SerialCrossbar:
    """Open ``serial://<port or pyserial URL>[?timeout=S&retries=N&baudrate=B]``.

    The options named here are taken out of the query; anything else stays on the port, for
    pyserial URLs with options of their own.
    """
    port = url.split("://", 1)[1]
    options: dict[str, Any] = {}
    if "?" in port:
        base, _, _query = port.partition("?")
        _, query = query_options("x://?" + _query)
        for key in _SERIAL_OPTIONS:
            if key in query:
                options[key] = query.pop(key)
        rest = "&".join(f"{k}={v}" if v else k for k, v in query.items())
        port = base + ("?" + rest if rest else "")
    options.update(overrides)
    return SerialCrossbar(port, **read_options("serial", options, _SERIAL_OPTIONS))
