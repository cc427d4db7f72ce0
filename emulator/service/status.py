"""IEEE 488.2 status reporting: the status byte and the standard event status register.

What ``*STB?``, ``*ESR?``, ``*ESE``, ``*SRE``, ``*OPC`` and ``*CLS`` read and write (IEEE
488.2-1992, section 11). Every error the service queues sets its event bit here, by the SCPI
error class of its code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ESR_BITS", "StatusRegisters"]

#: Standard event status register bits (IEEE 488.2 figure 11-5).
OPC, QYE, DDE, EXE, CME, PON = 0x01, 0x04, 0x08, 0x10, 0x20, 0x80
ESR_BITS = {"OPC": OPC, "QYE": QYE, "DDE": DDE, "EXE": EXE, "CME": CME, "PON": PON}
#: Status byte bits: error/event queue not empty (SCPI), event summary, master summary.
EAV, ESB, MSS = 0x04, 0x20, 0x40


@dataclass
class StatusRegisters:
    """The event status register (ESR), its enable mask (ESE) and the service request
    enable mask (SRE). The ESR starts with power-on (PON) set, as after switching on."""

    esr: int = PON
    ese: int = 0
    sre: int = 0

    def record_error(self, code: int) -> None:
        """Set the event bit of an error's class: -1xx command, -2xx execution,
        -3xx device-specific, -4xx query error."""
        bit = {1: CME, 2: EXE, 3: DDE, 4: QYE}.get(-code // 100)
        if bit is not None:
            self.esr |= bit

    def operation_complete(self) -> None:
        """``*OPC``: every command before it has finished (they run one at a time)."""
        self.esr |= OPC

    def read_esr(self) -> int:
        """``*ESR?``: the register's value; reading it clears it."""
        value, self.esr = self.esr, 0
        return value

    def status_byte(self, errors_queued: bool) -> int:
        """``*STB?``: EAV, ESB and MSS computed from the current state (not cleared).

        MAV (message available) is always 0: a reply is written as soon as it is computed.
        """
        stb = (EAV if errors_queued else 0) | (ESB if self.esr & self.ese else 0)
        return stb | (MSS if stb & self.sre else 0)

    def clear(self) -> None:
        """``*CLS``: the event register is cleared (the masks are kept)."""
        self.esr = 0

    @staticmethod
    def mask(text: str) -> int:
        """The 0..255 argument of ``*ESE``/``*SRE``; ValueError otherwise."""
        value = float(text.strip())
        if not value.is_integer() or not 0 <= value <= 255:
            raise ValueError(f"expected an integer in 0..255, got {text.strip()!r}")
        return int(value)
