"""A sandboxed Lua interpreter (``lupa``) for the emulated TSP instruments.

Whatever a client uploads runs here, so the interpreter is cut off and bounded:

- no ``os``, ``io``, ``package``, ``require``, ``dofile``, ``loadfile``, ``load``, ``debug``,
  ``coroutine`` (a coroutine would run without the instruction hook), ``string.dump``,
  ``collectgarbage`` or ``warn``; no ``python`` module (``register_eval=False``,
  ``register_builtins=False``), and Lua cannot read or set any attribute of a Python object
  (``attribute_filter`` refuses every name);
- a count hook, installed with ``debug.sethook`` before ``debug`` is removed, stops a chunk
  after ``max_instructions`` virtual-machine instructions or ``max_seconds`` of wall time; the
  sandbox's ``pcall`` re-raises that stop, so a script cannot catch its way past it;
- ``max_memory`` bytes for the whole interpreter (lupa's allocator limit);
- the pattern functions (``string.find``/``match``/``gmatch``/``gsub``), which backtrack in C
  where the hook cannot reach, refuse a pattern whose worst case on that subject exceeds about
  10^8 steps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from lupa import lua54

__all__ = ["LuaSandbox", "ScriptError", "ScriptLimitError"]

#: How many instructions run between two checks of the budget.
_HOOK_EVERY = 10_000

_SETUP = """
local budget, exhausted = ...
local sethook = debug.sethook
sethook(function() budget() end, "", %(every)d)
local real_pcall, real_xpcall, unpack = pcall, xpcall, table.unpack
pcall = function(f, ...)
  local r = table.pack(real_pcall(f, ...))
  if not r[1] and exhausted() then error(r[2], 0) end
  return unpack(r, 1, r.n)
end
xpcall = function(f, handler, ...)
  local r = table.pack(real_xpcall(f, handler, ...))
  if not r[1] and exhausted() then error(r[2], 0) end
  return unpack(r, 1, r.n)
end
local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub
local function guard(s, p)
  -- Lua's matcher backtracks inside C, where the hook cannot stop it: a pattern with q
  -- quantifiers costs up to (#s + 1)^(q + 1) steps, so refuse the costly pairs up front.
  s, p = tostring(s), tostring(p)
  local q, i = 0, 1
  while i <= #p do
    local c = p:sub(i, i)
    if c == "%%" then i = i + 2 else
      if c == "*" or c == "+" or c == "-" or c == "?" then q = q + 1 end
      i = i + 1
    end
  end
  if (#s + 1) ^ (q + 1) > 1e8 then error("pattern too costly for a subject this long", 3) end
end
string.find = function(s, p, init, plain)
  if not plain then guard(s, p) end
  return find(s, p, init, plain)
end
string.match = function(s, p, init) guard(s, p); return match(s, p, init) end
string.gmatch = function(s, p) guard(s, p); return gmatch(s, p) end
string.gsub = function(s, p, r, n) guard(s, p); return gsub(s, p, r, n) end
os, io, package, require, dofile, loadfile, load, debug, coroutine = nil
collectgarbage, python, warn = nil
string.dump = nil
print = nil
"""


class ScriptError(Exception):
    """A chunk failed: a syntax or runtime error (the message is Lua's)."""

    def __init__(self, message: str, syntax: bool = False) -> None:
        super().__init__(message)
        self.syntax = syntax


class ScriptLimitError(ScriptError):
    """A chunk ran past its instruction, time or memory budget and was stopped."""


class _Stop(Exception):
    """Raised from the hook; uncatchable inside the sandbox (see ``_SETUP``)."""


def _refuse_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    raise AttributeError("Python attributes are not reachable from the sandbox")


class LuaSandbox:
    """One Lua 5.4 interpreter with the limits above.

    Parameters
    ----------
    max_instructions : int
        Instructions one chunk may run.
    max_seconds : float
        Wall-clock seconds one chunk may run.
    max_memory : int
        Bytes the interpreter may hold.
    """

    def __init__(
        self,
        max_instructions: int = 5_000_000,
        max_seconds: float = 5.0,
        max_memory: int = 64 << 20,
    ) -> None:
        self.max_instructions = int(max_instructions)
        self.max_seconds = float(max_seconds)
        self._lua = lua54.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_refuse_attributes,
            max_memory=int(max_memory),
        )
        self._used = 0
        self._deadline = float("inf")
        self._stopped = ""
        self._lua.execute(_SETUP % {"every": _HOOK_EVERY}, self._budget, self._exhausted)

    # ------------------------------------------------------------------ limits
    def _budget(self) -> None:
        self._used += _HOOK_EVERY
        if self._stopped:
            raise _Stop(self._stopped)
        if self._used > self.max_instructions:
            self._stopped = f"script stopped: more than {self.max_instructions} instructions"
        elif time.monotonic() > self._deadline:
            self._stopped = f"script stopped: ran longer than {self.max_seconds} s"
        if self._stopped:
            raise _Stop(self._stopped)

    def _exhausted(self) -> bool:
        return bool(self._stopped)

    # ------------------------------------------------------------------ use
    @property
    def globals(self) -> Any:
        """The interpreter's global table (for installing instrument functions)."""
        return self._lua.globals()

    def table(self, *items: Any, **fields: Any) -> Any:
        """A new Lua table."""
        return self._lua.table(*items, **fields)

    def setup(self, code: str, *args: Any) -> Any:
        """Run trusted set-up code (the instrument's own Lua), without the budget reset."""
        return self._lua.execute(code, *args)

    def run(self, code: str, name: str = "=chunk") -> None:
        """Compile and run one untrusted chunk within the limits.

        Raises
        ------
        ScriptError
            For a syntax or runtime error (the sandbox stays usable).
        ScriptLimitError
            When the chunk ran past its budget.
        """
        try:
            function = self._lua.compile(code, name)
        except lua54.LuaSyntaxError as exc:
            raise ScriptError(_first_line(exc), syntax=True) from None
        except lua54.LuaMemoryError:
            raise ScriptLimitError("script stopped: not enough memory") from None
        self.call(function)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call a Lua function under the same limits and with the same errors as :meth:`run`."""
        self._used = 0
        self._stopped = ""
        self._deadline = time.monotonic() + self.max_seconds
        try:
            return function(*args)
        except _Stop as exc:
            raise ScriptLimitError(str(exc)) from None
        except (lua54.LuaMemoryError, MemoryError):
            raise ScriptLimitError("script stopped: not enough memory") from None
        except lua54.LuaError as exc:
            if self._stopped:
                raise ScriptLimitError(self._stopped) from None
            raise ScriptError(_first_line(exc)) from None
        except Exception as exc:  # an instrument function refused its arguments
            if self._stopped:
                raise ScriptLimitError(self._stopped) from None
            raise ScriptError(_first_line(exc)) from None
        finally:
            self._deadline = float("inf")


#: Where the instrument's own Lua says an error arose: not the user's business.
_OWN_CHUNK = re.compile(r'\[string "<python>"\]:\d+: ')


def _first_line(exc: BaseException) -> str:
    """The error's first line, without positions inside the instrument's own Lua."""
    text = _OWN_CHUNK.sub("", str(exc).strip())
    return text.splitlines()[0] if text else type(exc).__name__
