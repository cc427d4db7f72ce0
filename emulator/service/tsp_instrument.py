"""An emulated TSP instrument: lines in, output bytes out, Lua chunks run in a sandbox.

What every Keithley TSP instrument shares is here: each line received is a Lua chunk; a
script is uploaded between ``loadscript NAME`` and ``endscript`` lines and run with
``NAME.run()`` (or ``NAME()``); a few IEEE-488.2 common commands (``*IDN?``, ``*RST``,
``*CLS``, ``*OPC?``); ``print``, ``printnumber``, ``printbuffer`` with ``format.data``
(``ASCII`` or ``REAL64``/``REAL32`` binary blocks), ``format.byteorder``, ``delay``,
``waitcomplete``, ``timer``, ``errorqueue`` and ``localnode``. A failing chunk queues a TSP
error (-285 syntax, -286 runtime) and changes nothing else. The instruments themselves
(:mod:`.keithley2600`, :mod:`.keithley707b`) add their own Lua on top.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .lua_sandbox import LuaSandbox, ScriptError

__all__ = ["TspInstrument", "lua_safe"]

#: Longest line accepted; a longer one is dropped with an error (memory stays bounded).
MAX_LINE = 64 * 1024
#: Largest uploaded script, in bytes.
MAX_SCRIPT = 1 << 20
#: Most output one chunk may produce.
MAX_OUTPUT = 16 << 20
_MAX_ERRORS = 64

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
format = {ASCII = 1, SREAL = 2, REAL = 3, REAL32 = 4, REAL64 = 5, DREAL = 5,
          NORMAL = 1, BIGENDIAN = 1, NETWORK = 1, SWAPPED = 0, LITTLEENDIAN = 0,
          data = 1, byteorder = 1, asciiprecision = 6}
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
printbuffer = function(first, last, ...)
  local values = {}
  for _, b in ipairs({...}) do
    local readings = b.readings or b
    for i = first, last do
      local v = readings[i]
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
}, {__index = function(t, k) if k == "count" then return err_count() end end})
table.getn = function(t) return #t end
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
        self.errors: deque[tuple[int, str]] = deque()
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
            "localnode = {model = ..., prompts = 0, prompts4882 = 0, showerrors = 0}", model
        )

    # ------------------------------------------------------------------ errors
    def queue_error(self, code: int, message: str) -> None:
        """Add an error to the queue (the oldest is dropped when it is full)."""
        if len(self.errors) >= _MAX_ERRORS:
            self.errors.popleft()
        self.errors.append((int(code), message[:200]))
        self._log(f"{self.model}: error {code}: {message[:200]}")

    def _next_error(self) -> tuple[int, str, int, int]:
        if not self.errors:
            return 0, "Queue Is Empty", 0, 0
        code, message = self.errors.popleft()
        return code, message, 1, 0

    # ------------------------------------------------------------------ output
    def _emit(self, text: str) -> None:
        data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        if len(self._out) + len(data) > MAX_OUTPUT:
            raise ValueError("output too large")
        self._out += data

    def _emit_numbers(self, values: Any, data_format: float, byteorder: float) -> None:
        numbers = [float(values[i]) for i in range(1, len(values) + 1)]
        little = int(byteorder) == 0
        if int(data_format) == 4:
            code, size = "f", 4
        elif int(data_format) in (3, 5):
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
    def handle_line(self, raw: bytes) -> bytes:
        """Execute one received line (without its terminator) and return what it printed."""
        self.lines += 1
        self._out = bytearray()
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            self.queue_error(-286, "TSP Runtime error: non-ASCII input")
            return b""
        line = line.rstrip("\r")
        if self._script is not None:
            self._script_line(line)
            return b""
        stripped = line.strip()
        if not stripped:
            return b""
        word = stripped.split(None, 1)
        if word[0] in ("loadscript", "loadandrunscript") and len(word) == 2:
            return self._begin_script(word[1].strip(), run=word[0] == "loadandrunscript")
        if stripped.startswith("*"):
            return self._common(stripped.upper())
        if stripped == "abort":
            return b""
        self._run(line, "=line")
        return bytes(self._out)

    def overlong_line(self) -> None:
        """A line longer than :data:`MAX_LINE` arrived and was dropped."""
        self.queue_error(-363, f"Input buffer overrun: a line longer than {MAX_LINE} bytes")
        if self._script is not None:
            self._script = None
            self.queue_error(-285, f"TSP Syntax error: script {self._script_name} discarded")

    def _common(self, command: str) -> bytes:
        if command == "*IDN?":
            return self.identity.encode("ascii") + b"\n"
        if command == "*OPC?":
            return b"1\n"
        if command == "*RST":
            self._run("reset()", "=*RST")
        elif command == "*CLS":
            self.errors.clear()
        elif command not in ("*WAI", "*TRG", "*OPC"):
            self.queue_error(-113, f"Undefined header {command[:40]}")
        return b""

    def _run(self, code: str, name: str) -> None:
        try:
            self.sandbox.run(code, name)
        except ScriptError as exc:
            kind = "Syntax" if exc.syntax else "Runtime"
            self.queue_error(-285 if exc.syntax else -286, f"TSP {kind} error: {exc}")

    # ------------------------------------------------------------------ scripts
    def _begin_script(self, name: str, run: bool) -> bytes:
        if not (name.isidentifier() and name.isascii()) or len(name) > 64:
            self.queue_error(-285, f"TSP Syntax error: bad script name {name[:64]!r}")
            return b""
        self._script, self._script_name, self._script_size = [], name, 0
        self._run_after_load = run
        return b""

    def _script_line(self, line: str) -> None:
        if line.strip() == "endscript":
            body, self._script = "\n".join(self._script or []), None
            self._finish_script(self._script_name, body)
            return
        self._script_size += len(line) + 1
        if self._script_size > MAX_SCRIPT:
            self._script = None
            self.queue_error(-285, f"TSP Syntax error: script longer than {MAX_SCRIPT} bytes")
            return
        self._script.append(line)

    def _finish_script(self, name: str, body: str) -> None:
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
        if self._run_after_load:
            self._run(f"{name}.run()", f"={name}")
