"""TSP on one TCP connection (raw socket, as a VISA ``TCPIP::...::SOCKET``): a :class:`Session`
that the main service's TCP server (:mod:`.tcp`) runs, so the emulated instruments share its
limits (``--max-clients``, ``--idle-timeout``, non-blocking output, time slices).

Each received line is handed to its instrument and whatever it prints is the reply. A script
being uploaded (``loadscript`` .. ``endscript``) belongs to the connection that started it and is
abandoned when that connection goes. Lines are bounded (:data:`~.tsp_instrument.MAX_LINE`): a
longer one is refused with error -363 and never run. For tests, :class:`TspFaults` closes a
connection at the instrument's Nth line (as a cable pulled mid-batch would) or executes that line
but never answers on that connection again (a hung session); each once per instrument.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .tsp_instrument import MAX_LINE, ScriptUpload, TspInstrument

__all__ = ["TspFaults", "TspSession"]


@dataclass
class TspFaults:
    """Injected link faults, counted in the instrument's lines (0: none)."""

    drop_after: int = 0
    stall_after: int = 0
    fired: set[int] = field(default_factory=set)  # id() of the instruments already faulted

    def drops(self, instrument: TspInstrument) -> bool:
        """Whether the link fails before the instrument's next line arrives."""
        if self.drop_after and id(instrument) not in self.fired:
            if instrument.lines + 1 >= self.drop_after:
                self.fired.add(id(instrument))
                instrument.lines += 1
                return True
        return False

    def stalls(self, instrument: TspInstrument) -> bool:
        """Whether the session hangs after the line just executed."""
        if self.stall_after and id(instrument) not in self.fired:
            if instrument.lines >= self.stall_after:
                self.fired.add(id(instrument))
                return True
        return False


class TspSession:
    """One client connection to a :class:`TspInstrument`."""

    def __init__(self, instrument: TspInstrument, faults: TspFaults | None = None) -> None:
        self.instrument = instrument
        self.faults = faults or TspFaults()
        self.closed = False
        self.upload = ScriptUpload()
        self._pending = bytearray()
        self._skipping = False  # inside the tail of a line already refused as too long
        self._stalled = False

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> None:
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            data, self._skipping = data[end + 1 :], False
        self._pending += data
        tail = self._pending.rfind(b"\n") + 1
        if len(self._pending) - tail > MAX_LINE:  # an unfinished line already too long
            del self._pending[tail:]
            self._skipping = True
            self.instrument.overlong_line(self.upload)

    def replies(self) -> Iterator[tuple[bytes, bool]]:
        start = 0
        try:
            while not self.closed:
                end = self._pending.find(b"\n", start)
                if end < 0:
                    return
                line, start = bytes(self._pending[start:end]), end + 1
                if self._stalled:
                    continue  # this connection hangs: nothing more is run or answered
                if len(line) > MAX_LINE:
                    self.instrument.overlong_line(self.upload)
                    continue
                if self.faults.drops(self.instrument):
                    self.closed = True
                    return
                reply = self.instrument.handle_line(line, self.upload)
                if self.faults.stalls(self.instrument):
                    self._stalled = True
                    continue
                yield reply, False
        finally:
            del self._pending[:start]

    def close(self) -> None:
        """The connection is gone: a script it was uploading is abandoned."""
        if self.upload.active:
            self.instrument.abandon_script(self.upload)
        self.closed = True
