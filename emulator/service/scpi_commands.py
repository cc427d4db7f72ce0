"""The emulator service's SCPI command table: what each text command and binary block does.

Text headers are matched the SCPI way (:mod:`memristor_hil.protocol.scpi_headers`): short or
long form, optional nodes, any case. The IEEE 488.2 mandatory common commands are all here,
with a real status byte and event status register (:mod:`.status`).
"""

from __future__ import annotations

from collections.abc import Callable

from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Status
from memristor_hil.protocol.scpi import (
    BlockCommand,
    ScpiFault,
    TextCommand,
    block_message,
    encode_reply_block,
)
from memristor_hil.protocol.scpi_headers import HeaderTable

from .core import CrossbarService

__all__ = ["SCPI_VERSION", "CompoundReplies", "scpi_reply"]

#: The SCPI standard version ``SYST:VERS?`` reports.
SCPI_VERSION = "1999.0"

_Handler = Callable[[CrossbarService, str], bytes | None]


class _ParameterError(ValueError):
    """A command's parameter is not one it takes (SCPI -224, or -108 for none allowed)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _no_args(handler: Callable[[CrossbarService], bytes | None]) -> _Handler:
    def checked(service: CrossbarService, args: str) -> bytes | None:
        if args:
            raise _ParameterError(-108, f"parameter not allowed: {args!r}")
        return handler(service)

    return checked


def _line(value: object) -> bytes:
    return f"{value}\n".encode("ascii", "replace")


def _set_mask(name: str) -> _Handler:
    def handler(service: CrossbarService, args: str) -> None:
        if not args:
            raise _ParameterError(-109, f"{name} needs a value in 0..255")
        try:
            setattr(service.status, name, service.status.mask(args))
        except ValueError as exc:
            raise _ParameterError(-224, str(exc)) from None

    return handler


def _next_error(service: CrossbarService) -> bytes:
    code, message = service.next_error()
    text = message.replace('"', "'").encode("ascii", "replace")
    return f"{code},".encode() + b'"' + text + b'"\n'


def _output(service: CrossbarService, args: str) -> None:
    if args.upper() not in ("OFF", "0"):
        raise _ParameterError(
            -224, f"OUTPut takes OFF or 0 (outputs are driven only by pulses), got {args!r}"
        )
    service.safe()


_COMMANDS: HeaderTable[_Handler] = HeaderTable(
    [
        ("*IDN?", _no_args(lambda s: s.xbar.identity.encode("ascii", "replace") + b"\n")),
        ("*RST", _no_args(lambda s: s.safe())),
        ("*CLS", _no_args(lambda s: s.clear_status())),
        ("*ESR?", _no_args(lambda s: _line(s.status.read_esr()))),
        ("*ESE", _set_mask("ese")),
        ("*ESE?", _no_args(lambda s: _line(s.status.ese))),
        ("*SRE", _set_mask("sre")),
        ("*SRE?", _no_args(lambda s: _line(s.status.sre))),
        ("*STB?", _no_args(lambda s: _line(s.status.status_byte(bool(s.errors))))),
        ("*TST?", _no_args(lambda s: b"0\n")),  # self-test passed: nothing to test in software
        ("*WAI", _no_args(lambda s: None)),  # commands already run one at a time
        ("*OPC", _no_args(lambda s: s.status.operation_complete())),
        ("*OPC?", _no_args(lambda s: b"1\n")),
        ("SYSTem:ERRor[:NEXT]?", _no_args(_next_error)),
        ("SYSTem:VERSion?", _no_args(lambda s: _line(SCPI_VERSION))),
        ("OUTPut[:STATe]", _output),
        ("OUTPut[:STATe]?", _no_args(lambda s: b"0\n" if s.outputs_safe else b"1\n")),
    ]
)


def scpi_reply(service: CrossbarService, event: TextCommand | BlockCommand | ScpiFault) -> bytes:
    """What the service answers to one parsed SCPI event (empty: nothing, as SCPI wants)."""
    if isinstance(event, ScpiFault):
        service.queue_error(event.code, event.message)
        if event.header.startswith("XBAR:") and event.is_query:
            return encode_reply_block(wire.encode_reply(0, 0, Status.FRAME, b""))
        return b""
    if isinstance(event, BlockCommand):
        return _block_reply(service, event)
    handler = _COMMANDS.resolve(event.header, event.path)
    if handler is None:
        service.queue_error(-113, f"undefined header {event.header!r}")
        return b""
    try:
        return handler(service, event.args) or b""
    except _ParameterError as exc:
        service.queue_error(exc.code, f"{event.header}: {exc}")
        return b""


def _block_reply(service: CrossbarService, event: BlockCommand) -> bytes:
    message = block_message(event.data)
    if message is None:
        return encode_reply_block(service.frame_fault("block failed its CRC"))
    if len(message) >= 5 and message[4] != event.op:
        reply = wire.encode_reply(
            int.from_bytes(message[:4], "little"),
            message[4],
            Status.MALFORMED,
            wire.encode_error(f"{event.header} carries opcode 0x{message[4]:02x}"),
            int.from_bytes(message[5:9], "little"),
        )
        service.queue_error(-104, f"{event.header} carries the wrong opcode")
        return encode_reply_block(reply)
    return encode_reply_block(service.handle(message))


class CompoundReplies:
    """Joins the replies of one compound message (``*IDN?;*OPC?``) with ``;`` and ends them
    with one newline, as IEEE 488.2 (8.4.1) wants; single commands pass straight through."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def reply(
        self, service: CrossbarService, event: TextCommand | BlockCommand | ScpiFault
    ) -> bytes:
        """The bytes to send after ``event`` (empty until the compound message ends)."""
        reply = scpi_reply(service, event)
        if isinstance(event, TextCommand) and (event.more or self._parts):
            if reply:
                self._parts.append(reply.rstrip(b"\n"))
            if event.more:
                return b""
            reply = b""
        if self._parts:  # the compound message ended (or a fault cut it short)
            reply = b";".join(self._parts) + b"\n" + reply
            self._parts.clear()
        return reply
