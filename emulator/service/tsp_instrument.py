"""An emulated TSP instrument: lines in, output bytes out, Lua chunks run in a sandbox.

What every Keithley TSP instrument shares is here: each line received is a Lua chunk; a
script is uploaded between ``loadscript NAME`` and ``endscript`` lines (by one connection: its
:class:`ScriptUpload`) and run with ``NAME.run()`` (or ``NAME()``); the IEEE-488.2 common
commands (``*IDN?``, ``*RST``, ``*CLS``, ``*OPC``, ``*OPC?``, ``*WAI``, ``*TRG``, ``*STB?``,
``*ESR?``, ``*ESE``, ``*SRE``, ``*TST?``), with a status byte and standard event register as
the 2600B reference manual's status model describes; ``print``, ``printnumber``, ``printbuffer``
with ``format.data`` (``ASCII``, or ``REAL32``/``REAL64`` binary blocks), ``format.byteorder``
and ``format.asciiprecision`` (restored by ``reset()``), ``delay``, ``waitcomplete``,
``timer``, ``errorqueue`` (code, message, severity, node) and ``localnode``. A failing chunk
queues a TSP error (-285 syntax, -286 runtime, severity 20) and changes nothing else. The
instruments themselves (:mod:`.keithley2600`, :mod:`.keithley707b`) add their own Lua on top.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .lua_sandbox import LuaSandbox, ScriptError

__all__ = ["ScriptUpload", "TspInstrument", "lua_safe"]

#: Longest line accepted; a longer one is dropped with an error (memory stays bounded).
MAX_LINE = 64 * 1024
#: Largest uploaded script, in bytes.
MAX_SCRIPT = 1 << 20
#: Most output one chunk may produce.
MAX_OUTPUT = 16 << 20
_MAX_ERRORS = 64
#: Error severities (2600B reference manual, errorqueue.next(): 0 no error, 10 informational,
#: 20 recoverable, 30 serious, 40 fatal); everything a client's input causes is recoverable.
RECOVERABLE = 20
#: Standard event status register bits (IEEE 488.2 11.5.1; the 2600B status model).
_OPC, _QYE, _DDE, _EXE, _CME = 1, 4, 8, 16, 32

_COMMON = """
local emit, emit_numbers, wait, now, err_count, err_next, err_clear, make_checked = ...
local function checked(f)
  return function(...)
    local ok, a, b, c, d = f(...)
    if not ok then error(a, 2) end
    return a, b, c, d
  end
end
CHECKED = checked
-- 2600B reference manual, format.data / format.byteorder / format.asciiprecision
format = {ASCII = 1, SREAL = 2, REAL32 = 2, REAL = 3, REAL64 = 3, DREAL = 3,
          NORMAL = 0, BIGENDIAN = 0, NETWORK = 0, SWAPPED = 1, LITTLEENDIAN = 1}
local function format_defaults()
  format.data, format.byteorder, format.asciiprecision = 1, 1, 6
end
format_defaults()
local function number_text(x)
  if type(x) ~= "number" then return tostring(x) end
  return string.format("%." .. math.max(1, math.min(16, format.asciiprecision)) - 1 .. "e", x)
end
print = function(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    parts[i] = type(v) == "number" and number_text(v) or tostring(v)
  end
  emit(table.concat(parts, "\\t") .. "\\n")
end
local function print_numbers(values)
  if format.data == format.ASCII then
    local parts = {}
    for i = 1, #values do parts[i] = number_text(values[i]) end
    emit(table.concat(parts, ", ") .. "\\n")
  else
    emit_numbers(values, format.data, format.byteorder)
  end
end
printnumber = function(...) print_numbers({...}) end
-- 2600B manual, printbuffer(): with several buffers the readings are interleaved
-- (a[1], b[1], a[2], b[2], ...), as in printbuffer(1, n, buf.readings, buf.sourcevalues)
printbuffer = function(first, last, ...)
  local values, buffers = {}, {...}
  if type(first) ~= "number" or type(last) ~= "number" or last - first > 1e6 then
    error("printbuffer: bad index range", 2)
  end
  for i = first, last do
    for _, b in ipairs(buffers) do
      local v = b[i]
      if v == nil then error("printbuffer: index " .. i .. " is outside the buffer", 2) end
      values[#values + 1] = v
    end
  end
  print_numbers(values)
end
delay = checked(wait)
waitcomplete = function() end
opc = function() end
local t0 = 0
timer = {reset = function() t0 = now() end, measure = {t = function() return now() - t0 end}}
errorqueue = setmetatable({
  clear = function() err_clear() end,
  next = function() return err_next() end,
}, {__index = function(t, k) if k == "count" then return err_count() end end,
    Getters = {count = err_count}, Setters = {}})
table.getn = function(t) return #t end
reset = function() format_defaults() end
"""


def lua_safe(function: Callable[..., Any]) -> Callable[..., tuple]:
    """Wrap a Python function for the Lua side: ``(true, results...)`` or ``(false, message)``
    (the Lua helper ``CHECKED`` turns the latter into a Lua error with that message)."""

    def wrapped(*args: Any) -> tuple:
        try:
            result = function(*args)
        except (ValueError, TypeError, OverflowError) as exc:
            return False, str(exc)
        if isinstance(result, tuple):
            return (True, *result)
        return True, result

    wrapped.__name__ = getattr(function, "__name__", "function")
    return wrapped


class TspInstrument:
    """Lines in, output out; the Lua state persists between lines as on the instrument.

    Parameters
    ----------
    identity : str
        The ``*IDN?`` reply.
    model : str
        ``localnode.model``.
    clock : callable
        Seconds of instrument time (``timer.measure.t``).
    wait : callable
        Makes ``seconds`` of instrument time pass (``delay``).
    log : callable, optional
        Gets event lines.
    sandbox : LuaSandbox, optional
        The interpreter (default limits otherwise).
    """

    def __init__(
        self,
        identity: str,
        model: str,
        clock: Callable[[], float],
        wait: Callable[[float], None],
        log: Callable[[str], None] | None = None,
        sandbox: LuaSandbox | None = None,
    ) -> None:
        self.identity = identity
        self.model = model
        self.node = 1  #: ``localnode`` number: the node errors originate at
        self.errors: deque[tuple[int, str]] = deque()
        self.event_status = 0  # the standard event status register
        self.event_enable = 0
        self.request_enable = 0
        self._upload = ScriptUpload()  # for lines handed in without a connection
        self.lines = 0
        self._log = log or (lambda text: None)
        self._wait = wait
        self._out = bytearray()
        self._script: list[str] | None = None
        self._script_name = ""
        self._script_size = 0
        self._overlong = False
        self.sandbox = sandbox or LuaSandbox()
        self.sandbox.setup(
            _COMMON,
            self._emit,
            self._emit_numbers,
            lua_safe(self._delay),
            clock,
            lambda: len(self.errors),
            self._next_error,
            self.errors.clear,
            None,
        )
        self.sandbox.setup(
            "localnode = {model = ..., prompts = 0, prompts4882 = 1, showerrors = 0, linefreq = 60,"
            " node = 1}",
            model,
        )

    # ------------------------------------------------------------------ errors
    def queue_error(self, code: int, message: str) -> None:
        """Add an error to the queue (the oldest is dropped when it is full)."""
        if len(self.errors) >= _MAX_ERRORS:
            self.errors.popleft()
        self.errors.append((int(code), message[:200]))
        self.event_status |= _event_bit(int(code))
        self._log(f"{self.model}: error {code}: {message[:200]}")

    def _next_error(self) -> tuple[int, str, int, int]:
        if not self.errors:
            return 0, "Queue Is Empty", 0, self.node
        code, message = self.errors.popleft()
        return code, message, RECOVERABLE, self.node

    # ------------------------------------------------------------------ output
    def _emit(self, text: str) -> None:
        data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        if len(self._out) + len(data) > MAX_OUTPUT:
            raise ValueError("output too large")
        self._out += data

    def _emit_numbers(self, values: Any, data_format: float, byteorder: float) -> None:
        numbers = [float(values[i]) for i in range(1, len(values) + 1)]
        little = int(byteorder) == 1
        if int(data_format) == 2:
            code, size = "f", 4
        elif int(data_format) == 3:
            code, size = "d", 8
        else:
            raise ValueError(f"format.data = {data_format} is not emulated")
        if code == "f" and any(math.isfinite(x) and abs(x) > 3.4e38 for x in numbers):
            raise ValueError("a number does not fit REAL32")
        if len(self._out) + size * len(numbers) + 3 > MAX_OUTPUT:
            raise ValueError("output too large")
        order = "<" if little else ">"
        self._out += b"#0" + struct.pack(f"{order}{len(numbers)}{code}", *numbers) + b"\n"

    def _delay(self, seconds: float) -> None:
        seconds = float(seconds)
        if not (math.isfinite(seconds) and 0 <= seconds <= 1e5):
            raise ValueError(f"delay({seconds}): expected 0..100000 s")
        self._wait(seconds)

    # ------------------------------------------------------------------ lines
    def handle_line(self, raw: bytes, upload: ScriptUpload | None = None) -> bytes:
        """Execute one received line (without its terminator) and return what it printed.

        ``upload`` is the sending connection's script upload (one of the instrument's own
        when None), so a script being uploaded collects that connection's lines only.
        """
        upload = self._upload if upload is None else upload
        self.lines += 1
        self._out = bytearray()
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            self.queue_error(-286, "TSP Runtime error: non-ASCII input")
            return b""
        line = line.rstrip("\r")
        if upload.active:
            self._script_line(upload, line)
            return b""
        stripped = line.strip()
        if not stripped:
            return b""
        word = stripped.split(None, 1)
        if word[0] in ("loadscript", "loadandrunscript") and len(word) == 2:
            self._begin_script(upload, word[1].strip(), run=word[0] == "loadandrunscript")
            return b""
        if stripped.startswith("*"):
            return self._common(stripped)
        if stripped == "abort":
            return b""
        self._run(line, "=line")
        return bytes(self._out)

    def overlong_line(self, upload: ScriptUpload | None = None) -> None:
        """A line longer than :data:`MAX_LINE` arrived and was refused."""
        upload = self._upload if upload is None else upload
        self.queue_error(-363, f"Input buffer overrun: a line longer than {MAX_LINE} bytes")
        if upload.active:
            self.abandon_script(upload)
            self.queue_error(-285, f"TSP Syntax error: script {upload.name} discarded")

    def abandon_script(self, upload: ScriptUpload) -> None:
        """Drop a script being uploaded (its connection went, or it was refused)."""
        if upload.active:
            self._log(f"{self.model}: script {upload.name} abandoned")
        upload.lines = None

    # ------------------------------------------------------------------ IEEE 488.2
    def _common(self, text: str) -> bytes:
        """The common commands (IEEE 488.2 10; the 2600B manual's "Common commands")."""
        command, _, argument = text.upper().partition(" ")
        if command == "*IDN?":
            return self.identity.encode("ascii") + b"\n"
        if command == "*OPC?":
            return b"1\n"
        if command == "*TST?":
            return b"0\n"  # self-test passed
        if command == "*STB?":
            return f"{self.status_byte()}\n".encode()
        if command == "*ESR?":
            value, self.event_status = self.event_status, 0  # reading clears it
            return f"{value}\n".encode()
        if command in ("*ESE?", "*SRE?"):
            value = self.event_enable if command == "*ESE?" else self.request_enable
            return f"{value}\n".encode()
        if command in ("*ESE", "*SRE"):
            try:
                value = int(float(argument))
                if not 0 <= value <= 255:
                    raise ValueError
            except ValueError:
                self.queue_error(-222, f"Parameter data out of range: {command} {argument[:20]}")
                return b""
            if command == "*ESE":
                self.event_enable = value
            else:
                self.request_enable = value & ~64
        elif command == "*RST":
            self._run("reset()", "=*RST")
        elif command == "*CLS":
            self.errors.clear()
            self.event_status = 0
        elif command == "*OPC":
            self.event_status |= _OPC
        elif command == "*TRG":
            self.trigger()
        elif command != "*WAI":
            self.queue_error(-113, f"Undefined header {command[:40]}")
        return b""

    def status_byte(self) -> int:
        """The status byte: EAV (bit 2) with errors queued, ESB (bit 5) when an enabled
        standard event is set, MSS (bit 6) when an enabled summary bit is."""
        stb = (4 if self.errors else 0) | (32 if self.event_status & self.event_enable else 0)
        return stb | (64 if stb & self.request_enable else 0)

    def trigger(self) -> None:
        """``*TRG``: the instrument's trigger event (instruments that use it override this)."""

    def _run(self, code: str, name: str) -> None:
        try:
            self.sandbox.run(code, name)
        except ScriptError as exc:
            kind = "Syntax" if exc.syntax else "Runtime"
            self.queue_error(-285 if exc.syntax else -286, f"TSP {kind} error: {exc}")

    # ------------------------------------------------------------------ scripts
    def _begin_script(self, upload: ScriptUpload, name: str, run: bool) -> None:
        if not (name.isidentifier() and name.isascii()) or len(name) > 64:
            self.queue_error(-285, f"TSP Syntax error: bad script name {name[:64]!r}")
            return
        upload.lines, upload.name, upload.size, upload.run = [], name, 0, run

    def _script_line(self, upload: ScriptUpload, line: str) -> None:
        if line.strip() == "endscript":
            body, upload.lines = "\n".join(upload.lines or []), None
            self._finish_script(upload.name, body, upload.run)
            return
        upload.size += len(line) + 1
        if upload.size > MAX_SCRIPT:
            upload.lines = None
            self.queue_error(-285, f"TSP Syntax error: script longer than {MAX_SCRIPT} bytes")
            return
        upload.lines.append(line)

    def _finish_script(self, name: str, body: str, run: bool) -> None:
        try:
            self.sandbox.run(
                f"local f = function(...)\n{body}\nend\n"
                f"{name} = setmetatable({{name = {name!r}, run = function() return f() end}}, "
                "{__call = function() return f() end})",
                f"={name}",
            )
        except ScriptError as exc:
            kind = "Syntax" if exc.syntax else "Runtime"
            self.queue_error(-285 if exc.syntax else -286, f"TSP {kind} error in {name}: {exc}")
            return
        self._log(f"{self.model}: script {name} loaded ({len(body)} bytes)")
        if run:
            self._run(f"{name}.run()", f"={name}")


@dataclass
class ScriptUpload:
    """One connection's script upload in progress (``lines`` is None when there is none)."""

    lines: list[str] | None = None
    name: str = ""
    size: int = 0
    run: bool = False

    @property
    def active(self) -> bool:
        return self.lines is not None


def _event_bit(code: int) -> int:
    """The standard event bit an error sets (SCPI error classes: -1xx command, -2xx
    execution, -3xx device-specific, -4xx query)."""
    if -199 <= code <= -100:
        return _CME
    if -299 <= code <= -200:
        return _EXE
    if -399 <= code <= -300 or code > 0:
        return _DDE
    if -499 <= code <= -400:
        return _QYE
    return 0
