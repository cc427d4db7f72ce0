"""An emulated Keithley 2611B (a one-channel 2600B: ``smua`` only), in TSP, driving a Bench.

Emulated (2600B reference manual, section "TSP command reference"): ``smua.source`` (``func``
voltage or current, ``levelv``/``leveli``, ``limiti``/``limitv`` with DC compliance clamping,
ranges and autorange attributes, ``output``, ``compliance`` read back), ``smua.measure``
(``nplc``, ranges, ``count``, ``delay``, and ``i()``, ``v()``, ``r()``, ``p()``, ``iv()``, each
optionally into reading buffers), ``smua.sense``, the trigger model for sweeps and pulses
(``smua.trigger.source.listv``/``linearv``, ``action``, ``limiti``, ``smua.trigger.measure.i``/
``v``/``r``/``p``/``iv`` and ``action``, ``endpulse.action`` ``SOURCE_IDLE`` (pulse) or
``SOURCE_HOLD`` (staircase), ``endpulse.stimulus`` a ``trigger.timer[N].EVENT_ID`` whose
``delay`` is the pulse width, ``count``, ``arm.count``, ``arm.stimulus`` = ``trigger.EVENT_ID``
waiting for ``*TRG``, ``initiate()``), ``trigger.timer[N]``, ``trigger.blender[N]`` (accepted),
``status.operation.sweeping.condition``, the reading buffers ``nvbuffer1``/``nvbuffer2``
(``clear()``, ``n``, ``readings``, ``buffer[i]``), ``reset()``/``smua.reset()``, and TSP-Link
(``tsplink.state``, ``tsplink.reset()``, ``node[N]``) through which a script reaches the matrix.

Tables are built as the instrument's are: attributes behind the metatable's ``Getters`` and
``Setters``, functions, tables and constants in its ``Objects``, so a client that learns the
instrument by listing them (the ``keithley2600`` package) sees what is there. Attributes are
strict: setting one the emulation does not know is an error, as a typo would be on the
instrument. Timing is virtual: ``delay()``, pulse widths and measurements add to the bench's
clock (``timer.measure.t()``) instead of being waited out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .bench import Bench
from .keithley707b import CHANNEL_LUA
from .lua_sandbox import LuaSandbox, ScriptError
from .tsp_instrument import TspInstrument, lua_safe

__all__ = ["Keithley2600"]

#: Seconds per power-line cycle (60 Hz mains).
_PLC = 1 / 60
#: Readings a buffer holds.
_CAPACITY = 100_000
#: The smallest current and voltage limits the source takes (a smaller one is raised to it,
#: as the instrument does): 10 nA and 10 mV.
_MIN_LIMIT = {1: 10e-9, 0: 10e-3}

_SMU = """
local hw = ...
local checked = CHECKED
local restores = {}
-- A table as the firmware builds it (what OE-FET/keithley2600 keithley_driver.py
-- _load_lua_namespace reads): next() lists nothing; getmetatable(t).Getters/Setters name the
-- attributes, .Objects the functions, tables and constants.
local function proxy(name, attrs, objects, hooks)
  hooks = hooks or {}
  objects = objects or {}
  local defaults, values, getters, setters = {}, {}, {}, {}
  for k, v in pairs(attrs) do
    defaults[k], values[k] = v, v
    getters[k] = function() return values[k] end
    setters[k] = function(v)
      if type(v) ~= type(defaults[k]) then
        error(name .. "." .. k .. " expects a " .. type(defaults[k]), 3)
      end
      values[k] = v
    end
  end
  for k, f in pairs(hooks.get or {}) do getters[k] = f end
  for k, f in pairs(hooks.set or {}) do
    local base = setters[k]
    setters[k] = function(v) base(v); f(v) end
  end
  restores[#restores + 1] = function() for k, v in pairs(defaults) do values[k] = v end end
  local mt = {Getters = getters, Setters = setters, Objects = objects}
  mt.__index = function(_, k)
    local g = getters[k]
    if g then return g() end
    if objects[k] ~= nil then return objects[k] end
    if hooks.index then return hooks.index(k) end
  end
  mt.__newindex = function(_, k, v)
    local s = setters[k]
    if s then s(v) return end
    local what = (getters[k] or objects[k] ~= nil) and " is read-only" or " is not an attribute"
    error(name .. "." .. tostring(k) .. what, 2)
  end
  return setmetatable({}, mt), values
end
local set_output, dc, train = checked(hw.set_output), checked(hw.dc), checked(hw.train)

-- reading buffers (manual: "Reading buffers"): buffer[i] is buffer.readings[i]; source
-- values and timestamps are kept beside each reading
local function column(name, data)
  local function get(k) return data[k] end
  return setmetatable({}, {
    __index = function(_, i) if i == "getreading" then return get end return data[i] end,
    __newindex = function() error(name .. " is read-only", 2) end,
    __len = function() return #data end,
    Objects = {getreading = get},
  })
end
local function new_buffer(name)
  local data, sources, times = {}, {}, {}
  local buffer = proxy(name, {appendmode = 0, collecttimestamps = 0, collectsourcevalues = 0,
                              fillmode = 0}, {
    clear = function()
      for i = #data, 1, -1 do data[i], sources[i], times[i] = nil, nil, nil end
    end,
    clearcache = function() end,
    readings = column(name .. ".readings", data),
    sourcevalues = column(name .. ".sourcevalues", sources),
    timestamps = column(name .. ".timestamps", times),
  }, {
    get = {n = function() return #data end, capacity = function() return %(capacity)d end},
    index = function(i) if type(i) == "number" then return data[i] end end,
  })
  local mt = getmetatable(buffer)
  mt.__len = function() return #data end
  mt.append = function(x, source)
    local n = #data + 1
    if n > %(capacity)d then error(name .. " is full", 2) end
    data[n], sources[n], times[n] = x, source, timer.measure.t()
  end
  mt.columns = {data, sources, times}  -- filled by the sweep's trains directly
  return buffer
end
local function store(buffer, x, source)
  if buffer then getmetatable(buffer).append(x, source) end
end
local function columns(buffer) return buffer and getmetatable(buffer).columns end

trigger = proxy("trigger", {}, {EVENT_ID = 1, timer = {}, blender = {},
  wait = function() return true end, clear = function() end})
for k = 1, 4 do
  local timer_values
  trigger.timer[k], timer_values = proxy("trigger.timer[" .. k .. "]",
    {delay = 10e-6, count = 1, passthrough = false, stimulus = 0},
    {EVENT_ID = 100 + k, clear = function() end})
  getmetatable(trigger.timer[k]).Objects.reset = function()
    timer_values.delay, timer_values.count, timer_values.passthrough = 10e-6, 1, false
    timer_values.stimulus = 0
  end
  trigger.blender[k] = proxy("trigger.blender[" .. k .. "]", {orenable = false},
    {EVENT_ID = 200 + k, stimulus = {0, 0, 0, 0}, clear = function() end})
end

local smu_objects = {OUTPUT_DCAMPS = 0, OUTPUT_DCVOLTS = 1, OUTPUT_OFF = 0, OUTPUT_ON = 1,
  OUTPUT_HIGH_Z = 2, DISABLE = 0, ENABLE = 1, SOURCE_IDLE = 0, SOURCE_HOLD = 1,
  AUTORANGE_OFF = 0, AUTORANGE_ON = 1, AUTOZERO_OFF = 0, AUTOZERO_ONCE = 1, AUTOZERO_AUTO = 2,
  SENSE_LOCAL = 0, SENSE_REMOTE = 1, OUTPUT_NORMAL = 0, OUTPUT_ZERO = 1, FILTER_OFF = 0,
  FILTER_ON = 1, FILTER_MOVING_AVG = 0, FILTER_REPEAT_AVG = 1, FILTER_MEDIAN = 2}
smua = proxy("smua", {sense = 0}, smu_objects)
local src
smu_objects.source, src = proxy("smua.source",
  {func = 1, levelv = 0, leveli = 0, limiti = 0.1, limitv = 20, rangev = 0.2, rangei = 1e-1,
   autorangev = 1, autorangei = 1, lowrangev = 0, lowrangei = 0, output = 0, offmode = 0,
   settling = 0, delay = 0, highc = 0, outputenableaction = 0},
  {}, {set = {output = function(v) set_output(v == 1) end},
       get = {compliance = function()
         local _, _, c = dc(src.func, src.func == 1 and src.levelv or src.leveli,
                            src.func == 1 and src.limiti or src.limitv, 0)
         return c
       end}})
local meas
local function measure_time() return meas.nplc * %(plc)r + math.max(meas.delay, 0) end
-- one DC reading: voltage, current, and what the function asked for
local function read(kind, b1, b2)
  local level = src.func == 1 and src.levelv or src.leveli
  local v, i, _, r = dc(src.func, level, src.func == 1 and src.limiti or src.limitv,
                        measure_time())
  if kind == "i" then store(b1, i, level); return i
  elseif kind == "v" then store(b1, v, level); return v
  elseif kind == "r" then store(b1, r, level); return r
  elseif kind == "p" then store(b1, v * i, level); return v * i end
  store(b1, i, level); store(b2, v, level)
  return i, v
end
smu_objects.measure, meas = proxy("smua.measure",
  {nplc = 1, autorangei = 1, autorangev = 1, autozero = 2, rangei = 0.1, rangev = 0.2,
   lowrangei = 0, lowrangev = 0, count = 1, delay = 0, interval = 0},
  {filter = proxy("smua.measure.filter", {enable = 0, count = 1, type = 1}),
   i = function(b) return read("i", b) end, v = function(b) return read("v", b) end,
   r = function(b) return read("r", b) end, p = function(b) return read("p", b) end,
   iv = function(b1, b2) return read("iv", b1, b2) end})
smu_objects.nvbuffer1, smu_objects.nvbuffer2 = new_buffer("smua.nvbuffer1"),
  new_buffer("smua.nvbuffer2")
smu_objects.makebuffer = function(n) return new_buffer("buffer") end

-- the trigger model (manual: "Triggering"): one sweep per initiate()
local source_list, measure_kind, measure_b1, measure_b2 = nil, nil, nil, nil
local sweeping, armed = 0, false
local function set_list(values)
  if type(values) ~= "table" or #values < 1 or #values > 2500 then
    error("source list: 1..2500 values", 3)
  end
  local copy = {}
  for i = 1, #values do
    if type(values[i]) ~= "number" then error("source list: numbers only", 3) end
    copy[i] = values[i]
  end
  source_list = copy
end
local function measure_into(kind)
  return function(b1, b2) measure_kind, measure_b1, measure_b2 = kind, b1, b2 end
end
local trig_objects = {ARMED_EVENT_ID = 11, SOURCE_COMPLETE_EVENT_ID = 12,
  MEASURE_COMPLETE_EVENT_ID = 13, PULSE_COMPLETE_EVENT_ID = 14, SWEEP_COMPLETE_EVENT_ID = 15,
  IDLE_EVENT_ID = 16, abort = function() armed = false end}
local trig
smu_objects.trigger, trig = proxy("smua.trigger", {count = 1}, trig_objects)
trig_objects.arm = proxy("smua.trigger.arm", {count = 1, stimulus = 0}, {})
trig_objects.source = proxy("smua.trigger.source",
  {action = 0, limiti = 0, limitv = 0, stimulus = 0}, {
    listv = function(values) set_list(values) end,
    linearv = function(first, last, points)
      if type(points) ~= "number" or points < 1 or points > 2500 then
        error("linearv: 1..2500 points", 2)
      end
      local values = {}
      for i = 1, points do
        values[i] = points == 1 and first or first + (last - first) * (i - 1) / (points - 1)
      end
      set_list(values)
    end})
trig_objects.measure = proxy("smua.trigger.measure", {action = 0, stimulus = 0},
  {i = measure_into("i"), v = measure_into("v"), r = measure_into("r"), p = measure_into("p"),
   iv = measure_into("iv")})
trig_objects.endpulse = proxy("smua.trigger.endpulse", {action = 1, stimulus = 0}, {})
trig_objects.endsweep = proxy("smua.trigger.endsweep", {action = 1}, {})

local function step_width(endpulse)
  if endpulse.action == smua.SOURCE_IDLE then
    for k = 1, 4 do
      if endpulse.stimulus == trigger.timer[k].EVENT_ID then return trigger.timer[k].delay end
    end
  end
  return measure_time()  -- the source holds each level while it is measured
end
local function sweep()
  armed = false
  local t = trig_objects
  local width = step_width(t.endpulse)
  local limit = t.source.limiti
  if limit == 0 then limit = src.limiti end
  local total = trig.count * t.arm.count
  local measuring = t.measure.action == smua.ENABLE and measure_kind
  local n, i = #source_list, 1
  while i <= total do
    local level = source_list[(i - 1) %% n + 1]
    local k = 1
    while i + k <= total and source_list[(i + k - 1) %% n + 1] == level do k = k + 1 end
    train(level, width, k, limit, measuring and measure_kind or "", columns(measure_b1),
          columns(measure_b2), timer.measure.t())
    i = i + k
  end
  sweeping = 1  -- status.operation.sweeping reports the sweep for one read (virtual time)
end
trig_objects.initiate = function()
  if trig_objects.source.action ~= smua.ENABLE or source_list == nil then
    error("trigger model: no source sweep (set smua.trigger.source.action and a list)", 2)
  end
  if src.output ~= smua.OUTPUT_ON then error("trigger model: output is off", 2) end
  local total = trig.count * trig_objects.arm.count
  if total < 1 or total > 1000000 then error("trigger count: 1..1000000", 2) end
  if trig_objects.arm.stimulus == trigger.EVENT_ID then armed = true; return end
  sweep()
end
local function bus_trigger() if armed then sweep() end end

local function condition()
  if sweeping > 0 then sweeping = sweeping - 1; return 2 end
  return 0
end
status = proxy("status", {}, {
  operation = proxy("status.operation", {}, {
    sweeping = proxy("status.operation.sweeping", {}, {}, {get = {condition = condition}}),
  }),
})
display = proxy("display", {screen = 0}, {MEASURE_DCAMPS = 0, MEASURE_DCVOLTS = 1,
  MEASURE_OHMS = 2, MEASURE_WATTS = 3, SMUA = 0, clear = function() end,
  settext = function() end, setcursor = function() end,
  smua = proxy("display.smua", {}, {measure = proxy("display.smua.measure", {func = 0}, {})})})

smu_objects.reset = function()
  set_output(false)
  for _, restore in ipairs(restores) do restore() end
  source_list, measure_kind, measure_b1, measure_b2 = nil, nil, nil, nil
  armed, sweeping = false, 0
  smua.nvbuffer1.clear(); smua.nvbuffer2.clear()
end
smu_objects.abort = function() armed = false end
local base_reset = reset
reset = function() base_reset(); smua.reset() end

tsplink = {state = "offline", reset = function() tsplink.state = "online"; return 2 end}
node = setmetatable({}, {__index = function(_, k)
  if k == 1 then return _G end
  if tsplink.state ~= "online" then error("TSP-Link is offline (call tsplink.reset())", 2) end
  if k == hw.matrix_node then return MATRIX_NODE end
  error("no node " .. tostring(k) .. " on the TSP-Link network", 2)
end})
return bus_trigger
"""


class Keithley2600(TspInstrument):
    """An emulated 2611B (channel A) wired to a :class:`Bench`.

    Parameters
    ----------
    bench : Bench
        The devices and the matrix.
    matrix_node : int
        The matrix's TSP-Link node number (``node[N]``).
    model : str
        ``"2611B"`` by default: one channel, as emulated (``smua`` only).
    log : callable, optional
        Gets event lines.
    """

    def __init__(
        self,
        bench: Bench,
        matrix_node: int = 2,
        model: str = "2611B",
        log: Callable[[str], None] | None = None,
        **sandbox_limits: float,
    ) -> None:
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
            dc=lua_safe(self._dc),
            train=lua_safe(self._train),
            matrix_node=int(matrix_node),
        )
        self.sandbox.setup(
            CHANNEL_LUA + "\nMATRIX_NODE = {model = '707B', channel = channel}\nchannel = nil",
            self._matrix_table(),
        )
        self._bus_trigger = self.sandbox.setup(_SMU % {"plc": _PLC, "capacity": _CAPACITY}, hw)

    def _matrix_table(self):
        from .keithley707b import channel_functions

        return self.sandbox.table(**channel_functions(self.bench))

    def trigger(self) -> None:
        """``*TRG``: starts a sweep armed on ``trigger.EVENT_ID``."""
        try:
            self.sandbox.call(self._bus_trigger)
        except ScriptError as exc:
            self.queue_error(-286, f"TSP Runtime error: {exc}")

    def _dc(self, func: float, level: float, limit: float, seconds: float) -> tuple:
        """A DC reading: (voltage, current, compliance), taking ``seconds``."""
        level, limit = float(level), max(abs(float(limit)), _MIN_LIMIT[int(func) == 1])
        if limit > 200:
            raise ValueError(f"source limit {limit} is out of range")
        self.bench.delay(float(seconds))
        self.bench.counts["reads"] += seconds > 0
        if int(func) == 1:
            return self.bench.source(level, limit)
        return self.bench.source_current(level, limit)

    def _train(
        self,
        level: float,
        width: float,
        count: float,
        limit: float,
        kind: str = "",
        *buffers: Any,
    ) -> bool:
        """Source ``count`` pulses; with a measurement ``kind`` (``i``, ``v``, ``r``, ``p``,
        ``iv``), each pulse's reading goes into the buffers' columns (readings, source values,
        timestamps; ``buffers`` ends with the time the train starts). Filled from here, so a
        long train costs the script's instruction budget nothing per pulse."""
        level, width, count, limit = float(level), float(width), int(count), float(limit)
        if not (0 < width <= 10.0) or not (0 < limit <= 1.5) or abs(level) > 200:
            raise ValueError(f"pulse {level} V, {width} s, limit {limit} A is out of range")
        *columns, start = buffers if buffers else (None,)
        for column in columns:
            if column is not None and len(column[1]) + count > _CAPACITY:
                raise ValueError(f"the reading buffer is full ({_CAPACITY} readings)")
        currents, seen, compliance = self.bench.pulse_train(level, width, count, limit)
        if kind:
            levels = np.full(currents.size, level)
            readings = {"i": currents, "v": levels, "r": seen, "p": levels * currents}
            first = readings.get(kind, currents)  # iv: currents, then voltages
            times = float(start) + width * np.arange(1, currents.size + 1)
            targets = [first, levels] if kind == "iv" else [first]
            for column, values in zip(columns, targets, strict=False):
                if column is not None:
                    _extend(column, values, levels, times)
        return compliance


def _extend(column: Any, values: np.ndarray, sources: np.ndarray, times: np.ndarray) -> None:
    """Append to a buffer's Lua columns (readings, source values, timestamps)."""
    data, source_values, timestamps = column[1], column[2], column[3]
    rows = zip(values.tolist(), sources.tolist(), times.tolist(), strict=True)
    for j, (x, s, t) in enumerate(rows, len(data) + 1):
        data[j], source_values[j], timestamps[j] = x, s, t
