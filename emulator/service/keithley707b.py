"""An emulated Keithley 707B switching matrix, in TSP, switching a :class:`Bench`.

Emulated: ``channel.close``, ``channel.exclusiveclose``, ``channel.open`` (channel lists such
as ``"1A01,2B03"``, ``"slot1"``, ``"allslots"``), ``channel.getclose`` (closed channels joined
by ``;``, or nil), ``channel.setforbidden``/``clearforbidden``/``getforbidden``, and
``reset()`` (all crosspoints open). A refused channel (absent, forbidden) is a Lua error that
leaves the crosspoints as they were. The same ``channel`` functions are what a 2600B script
reaches as ``node[N].channel`` over TSP-Link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .bench import Bench, BenchError, parse_channels
from .tsp_instrument import TspInstrument, lua_safe

__all__ = ["CHANNEL_LUA", "Keithley707B", "channel_functions"]

#: Builds the ``channel`` table from :func:`channel_functions` (passed as ``...``).
CHANNEL_LUA = """
local f = ...
local checked = CHECKED
channel = {
  close = checked(f.close),
  exclusiveclose = checked(f.exclusiveclose),
  open = checked(f.open),
  getclose = function(list) local _, s = f.getclose(list); return s end,
  setforbidden = checked(f.setforbidden),
  clearforbidden = checked(f.clearforbidden),
  getforbidden = function(list) local _, s = f.getforbidden(list); return s end,
}
"""


def channel_functions(bench: Bench) -> dict[str, Callable[..., Any]]:
    """The Python side of ``channel.*`` for :data:`CHANNEL_LUA`."""

    def checked(function: Callable[..., Any]) -> Callable[..., tuple]:
        def call(*args: Any) -> Any:
            try:
                return function(*args)
            except BenchError as exc:
                raise ValueError(str(exc)) from None

        return lua_safe(call)

    def names(found: set) -> str | None:
        text = ";".join(sorted(f"{s}{r}{c:02d}" for s, r, c in found))
        return text or None

    def getclose(channels: str = "allslots") -> str | None:
        which = parse_channels(channels, bench.slots)
        return names(bench.closed if which is None else bench.closed & which)

    def setforbidden(channels: str) -> None:
        which = parse_channels(channels, bench.slots)
        if which is None:
            raise BenchError("cannot forbid allslots")
        bench.forbidden |= which

    def clearforbidden(channels: str) -> None:
        which = parse_channels(channels, bench.slots)
        bench.forbidden = set() if which is None else bench.forbidden - which

    return {
        "close": checked(lambda channels: bench.close(channels, exclusive=False)),
        "exclusiveclose": checked(lambda channels: bench.close(channels, exclusive=True)),
        "open": checked(bench.open),
        "getclose": checked(getclose),
        "setforbidden": checked(setforbidden),
        "clearforbidden": checked(clearforbidden),
        "getforbidden": checked(lambda channels="allslots": names(bench.forbidden)),
    }


class Keithley707B(TspInstrument):
    """An emulated 707B switching the crosspoints of a :class:`Bench`."""

    def __init__(
        self, bench: Bench, log: Callable[[str], None] | None = None, **sandbox_limits: float
    ) -> None:
        from .lua_sandbox import LuaSandbox

        self.bench = bench
        super().__init__(
            "Keithley Instruments Inc., Model 707B, 4000002, 1.6.0 (memristor-hil emulation)",
            "707B",
            clock=lambda: bench.clock,
            wait=bench.delay,
            log=log,
            sandbox=LuaSandbox(**sandbox_limits) if sandbox_limits else None,
        )
        self.sandbox.setup(CHANNEL_LUA, self.sandbox.table(**channel_functions(bench)))
        self.sandbox.setup(
            "local base_reset = reset\n"
            "reset = function() base_reset(); channel.open('allslots') end"
        )
