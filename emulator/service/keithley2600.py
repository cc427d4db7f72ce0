"""An emulated Keithley 2600B source-measure unit (channel A), in TSP, driving a :class:`Bench`.

Emulated: ``smua.source`` (``func``, ``levelv``, ``limiti``, ``rangev``, ``autorangev``,
``output``, and ``compliance`` read back), ``smua.measure`` (``nplc``, ``autorangei``,
``count``, ``r()``, ``i()``), the trigger model for pulses (``smua.trigger.source.listv`` /
``linearv``, ``action``, ``smua.trigger.measure.i``/``action``, ``endpulse.action`` =
``SOURCE_IDLE`` with ``endpulse.stimulus`` = a ``trigger.timer[N].EVENT_ID`` whose ``delay`` is
the pulse width, ``count``, ``arm.count``, ``initiate()``), the reading buffers ``nvbuffer1``
and ``nvbuffer2`` (``clear()``, ``n``, ``readings``), ``reset()``/``smua.reset()``, and
TSP-Link (``tsplink.state``, ``tsplink.reset()``, ``node[N]``) through which a script reaches
the matrix (``node[N].channel...``). Attributes are strict: setting one the emulation does not
know is an error, as a typo would be on the instrument.

Timing is virtual: ``delay()``, pulse widths and measurements add to the bench's clock
(``timer.measure.t()``) instead of being waited out.
"""

from __future__ import annotations

from collections.abc import Callable

from .bench import Bench
from .keithley707b import CHANNEL_LUA
from .tsp_instrument import TspInstrument, lua_safe

__all__ = ["Keithley2600"]

#: Seconds per power-line cycle (60 Hz mains).
_PLC = 1 / 60

_SMU = """
local hw = ...
local checked = CHECKED
local function strict(name, fields, on_set)
  local values = {}
  for k, v in pairs(fields) do values[k] = v end
  return setmetatable({}, {
    __index = function(_, k)
      if on_set and on_set.get and on_set.get[k] then return on_set.get[k]() end
      return values[k]
    end,
    __newindex = function(_, k, v)
      if values[k] == nil and type(v) ~= "function"
          and not (on_set and on_set.set and on_set.set[k]) then
        error(name .. "." .. tostring(k) .. " is not an attribute", 2)
      end
      if on_set and on_set.set and on_set.set[k] then on_set.set[k](v) end
      values[k] = v
    end,
  }), values
end
local function new_buffer()
  local b = {readings = {}, n = 0, appendmode = 0}
  b.clear = function() b.readings = {}; b.n = 0 end
  b.append = function(x)
    if b.n >= 100000 then error("buffer full", 2) end
    b.n = b.n + 1; b.readings[b.n] = x
  end
  return b
end
local set_output, pulse, measure_r = checked(hw.set_output), checked(hw.pulse),
  checked(hw.measure_r)

trigger = {timer = {}}
for k = 1, 4 do
  trigger.timer[k] = strict("trigger.timer[" .. k .. "]",
    {delay = 10e-6, count = 1, passthrough = false, stimulus = 0, delaylist = false,
     EVENT_ID = 100 + k})
end

smua = {OUTPUT_DCAMPS = 0, OUTPUT_DCVOLTS = 1, OUTPUT_OFF = 0, OUTPUT_ON = 1,
        OUTPUT_HIGH_Z = 2, DISABLE = 0, ENABLE = 1, SOURCE_IDLE = 0, SOURCE_HOLD = 1,
        AUTORANGE_OFF = 0, AUTORANGE_ON = 1}
local source_values
smua.source, source_values = strict("smua.source",
  {func = 1, levelv = 0, leveli = 0, limiti = 0.1, limitv = 20, rangev = 0.2,
   autorangev = 1, output = 0, offmode = 0, settling = 0, delay = 0},
  {set = {output = function(v) set_output(v == 1) end},
   get = {compliance = function() return smua._compliance end}})
smua._compliance = false
local measure_values
smua.measure, measure_values = strict("smua.measure",
  {nplc = 1, autorangei = 1, autorangev = 1, rangei = 0.1, count = 1, autozero = 1,
   delay = 0, interval = 0})
local function measure_time() return smua.measure.nplc * %(plc)r end
smua.measure.r = function(buffer)
  local r = measure_r(measure_time())
  if buffer then buffer.append(r) end
  return r
end
smua.measure.i = function(buffer)
  local r = measure_r(measure_time())
  local i = smua.source.levelv / r
  if buffer then buffer.append(i) end
  return i
end
smua.nvbuffer1, smua.nvbuffer2 = new_buffer(), new_buffer()

local T = {}
smua.trigger = strict("smua.trigger",
  {count = 1, ARMED_EVENT_ID = 1, SOURCE_COMPLETE_EVENT_ID = 2, MEASURE_COMPLETE_EVENT_ID = 3,
   PULSE_COMPLETE_EVENT_ID = 4, SWEEP_COMPLETE_EVENT_ID = 5, IDLE_EVENT_ID = 6,
   arm = strict("smua.trigger.arm", {count = 1, stimulus = 0}),
   source = strict("smua.trigger.source", {action = 0, limiti = 0, stimulus = 0}),
   measure = strict("smua.trigger.measure", {action = 0, stimulus = 0}),
   endpulse = strict("smua.trigger.endpulse", {action = 1, stimulus = 0}),
   endsweep = strict("smua.trigger.endsweep", {action = 0})})
local source_list, measure_buffer = nil, nil
local function set_list(values)
  if #values < 1 or #values > 2500 then error("source list: 1..2500 values", 3) end
  for i = 1, #values do
    if type(values[i]) ~= "number" then error("source list: numbers only", 3) end
  end
  source_list = values
end
local trigger_tables = {
  listv = function(values) set_list(values) end,
  linearv = function(first, last, points)
    local values = {}
    if points < 1 or points > 2500 then error("linearv: 1..2500 points", 2) end
    for i = 1, points do
      values[i] = points == 1 and first or first + (last - first) * (i - 1) / (points - 1)
    end
    set_list(values)
  end,
}
local function pulse_width()
  local s = smua.trigger.endpulse.stimulus
  for k = 1, 4 do
    if s == trigger.timer[k].EVENT_ID then return trigger.timer[k].delay end
  end
  error("smua.trigger.endpulse.stimulus is not a timer event: no pulse width", 3)
end
local function initiate()
  local trig = smua.trigger
  if trig.source.action ~= smua.ENABLE or source_list == nil then
    error("trigger model: no source sweep (set smua.trigger.source.action and a list)", 2)
  end
  if smua.source.output ~= smua.OUTPUT_ON then
    error("trigger model: output is off", 2)
  end
  local width
  if trig.endpulse.action == smua.SOURCE_IDLE then width = pulse_width()
  else width = measure_time() end
  local limit = trig.source.limiti
  if limit == 0 then limit = smua.source.limiti end
  local total = trig.count * trig.arm.count
  if total < 1 or total > 1000000 then error("trigger count: 1..1000000", 2) end
  smua._compliance = false
  local n = #source_list
  local i = 1
  while i <= total do
    local level = source_list[(i - 1) %% n + 1]
    local k = 1
    while i + k <= total and source_list[(i + k - 1) %% n + 1] == level do k = k + 1 end
    local current, compliance = pulse(level, width, k, limit)
    if trig.measure.action == smua.ENABLE and measure_buffer then
      for _ = 1, k do measure_buffer.append(current) end
    end
    if compliance then smua._compliance = true end
    i = i + k
  end
end
local function measure_into(buffer) measure_buffer = buffer end
-- functions beside the strict attributes: smua.trigger.source.listv, .measure.i, .initiate
local src_mt = getmetatable(smua.trigger.source)
local src_index = src_mt.__index
src_mt.__index = function(t, k)
  if trigger_tables[k] then return trigger_tables[k] end
  return src_index(t, k)
end
local meas_mt = getmetatable(smua.trigger.measure)
local meas_index = meas_mt.__index
meas_mt.__index = function(t, k)
  if k == "i" or k == "v" or k == "r" then return measure_into end
  return meas_index(t, k)
end
local trig_mt = getmetatable(smua.trigger)
local trig_index = trig_mt.__index
trig_mt.__index = function(t, k)
  if k == "initiate" then return initiate end
  if k == "abort" then return function() end end
  return trig_index(t, k)
end

smua.reset = function()
  set_output(false)
  for k, v in pairs({func = 1, levelv = 0, limiti = 0.1, rangev = 0.2, autorangev = 1,
                     output = 0}) do source_values[k] = v end
  measure_values.nplc = 1
  source_list, measure_buffer = nil, nil
  smua.nvbuffer1.clear(); smua.nvbuffer2.clear()
  smua._compliance = false
end
smua.abort = function() end
reset = function() smua.reset() end

tsplink = {state = "offline", reset = function() tsplink.state = "online"; return 2 end}
node = setmetatable({}, {__index = function(_, k)
  if k == 1 then return _G end
  if tsplink.state ~= "online" then error("TSP-Link is offline (call tsplink.reset())", 2) end
  if k == hw.matrix_node then return MATRIX_NODE end
  error("no node " .. tostring(k) .. " on the TSP-Link network", 2)
end})
"""


class Keithley2600(TspInstrument):
    """An emulated 2600B (channel A only) wired to a :class:`Bench`.

    Parameters
    ----------
    bench : Bench
        The devices and the matrix.
    matrix_node : int
        The matrix's TSP-Link node number (``node[N]``).
    model : str
        ``"2636B"`` by default.
    log : callable, optional
        Gets event lines.
    """

    def __init__(
        self,
        bench: Bench,
        matrix_node: int = 2,
        model: str = "2636B",
        log: Callable[[str], None] | None = None,
        **sandbox_limits: float,
    ) -> None:
        from .lua_sandbox import LuaSandbox

        self.bench = bench
        super().__init__(
            f"Keithley Instruments Inc., Model {model}, 4000001, 4.0.4 (memristor-hil emulation)",
            model,
            clock=lambda: bench.clock,
            wait=bench.delay,
            log=log,
            sandbox=LuaSandbox(**sandbox_limits) if sandbox_limits else None,
        )
        hw = self.sandbox.table(
            set_output=lua_safe(bench.set_output),
            pulse=lua_safe(self._pulse),
            measure_r=lua_safe(self._measure_r),
            matrix_node=int(matrix_node),
        )
        self.sandbox.setup(
            CHANNEL_LUA + "\nMATRIX_NODE = {model = '707B', channel = channel}\nchannel = nil",
            self._matrix_table(),
        )
        self.sandbox.setup(_SMU % {"plc": _PLC}, hw)

    def _matrix_table(self):
        from .keithley707b import channel_functions

        return self.sandbox.table(**channel_functions(self.bench))

    def _pulse(self, level: float, width: float, count: float, limit: float) -> tuple:
        level, width, count, limit = float(level), float(width), int(count), float(limit)
        if not (0 < width <= 10.0) or not (0 < limit <= 1.5) or abs(level) > 200:
            raise ValueError(f"pulse {level} V, {width} s, limit {limit} A is out of range")
        current, compliance = self.bench.pulse_train(level, width, count, limit)
        return current, compliance

    def _measure_r(self, seconds: float) -> float:
        return self.bench.measure_r(float(seconds))
