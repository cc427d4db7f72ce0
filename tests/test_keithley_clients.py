"""The emulated Keithley bench (``memristor-hil emulate --dialect keithley2600``, its own process)
against clients nobody here wrote: PyMeasure's ``Keithley2600``, the ``keithley2600`` package
(OE-FET), and plain pyvisa sending the reference manuals' TSP examples, all over real TCP
through pyvisa-py; then abuse (issue 24) that must leave every other client answered within
1 s and our own ``smu://`` driver working.

Where a fact comes from is cited beside each test: the 2600B reference manual (2600BS-901-01)
and the 707B reference manual (707B-901-01) by section, public drivers by repository, file and
line.
"""

import socket
import struct
import time
import warnings

import numpy as np
import pytest

from memristor_hil import open_crossbar
from memristor_hil.protocol.tsp import Wiring
from memristor_hil.testing import EmulatorService

pyvisa = pytest.importorskip("pyvisa")
pytest.importorskip("lupa")

ROWS, COLS = 4, 4
DEVICES = f"emulator://?rows={ROWS}&cols={COLS}&seed=7"
CELL = Wiring.default(ROWS, COLS).crosspoints(1, 2)  # the matrix channels of device (1, 2)


class Bench:
    """The emulated bench as a process."""

    def __init__(self, *args: str) -> None:
        self.service = EmulatorService(
            "--tcp", "127.0.0.1:0", "--dialect", "keithley2600", "--quiet", *args, url=DEVICES
        )
        self.smu, self.matrix = self.service.where.split()
        self.rm = pyvisa.ResourceManager("@py")

    def resource(self, which: str = "smu") -> str:
        host, port = (self.smu if which == "smu" else self.matrix).rsplit(":", 1)
        return f"TCPIP::{host}::{port}::SOCKET"

    def visa(self, which: str = "smu", timeout: float = 5.0):
        return self.rm.open_resource(
            self.resource(which),
            read_termination="\n",
            write_termination="\n",
            timeout=int(timeout * 1000),
        )

    def raw(self, which: str = "smu", timeout: float = 5.0) -> socket.socket:
        host, port = (self.smu if which == "smu" else self.matrix).rsplit(":", 1)
        return socket.create_connection((host, int(port)), timeout=timeout)

    def smu_url(self) -> str:
        return f"smu://{self.resource()}?matrix={self.resource('matrix')}&rows={ROWS}&cols={COLS}"

    def close(self) -> None:
        self.service.kill()  # (the resource manager is pyvisa's shared one: left open)


@pytest.fixture
def bench():
    started = Bench()
    yield started
    started.close()


@pytest.fixture(scope="module")
def shared():
    """One bench for the tests that only ask questions and reset what they set."""
    started = Bench()
    yield started
    started.close()


def ask_raw(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        reply += chunk
    return reply.decode().strip()


def answered_within(bench: Bench, seconds: float = 1.0) -> float:
    """How long a fresh client waits for ``*IDN?`` on each instrument (both must answer)."""
    t0 = time.monotonic()
    for which in ("smu", "matrix"):
        with bench.raw(which, timeout=seconds + 1) as sock:
            assert ask_raw(sock, "*IDN?").startswith("Keithley Instruments Inc., Model")
    elapsed = time.monotonic() - t0
    assert elapsed < seconds, f"another client waited {elapsed:.2f} s"
    return elapsed


def our_driver_works(bench: Bench) -> None:
    with open_crossbar(bench.smu_url(), record=False) as xbar:
        assert xbar.read_all().shape == (ROWS, COLS)


def connect_device(visa) -> None:
    """Close the crosspoints of device (1, 2) from the SMU over TSP-Link (node 2 = the 707B)."""
    visa.write("tsplink.reset()")
    visa.write(f'node[2].channel.exclusiveclose("{CELL}")')


# --------------------------------------------------------------------------- PyMeasure
def test_pymeasure_keithley2600_drives_the_emulated_smu(bench):
    Keithley2600 = pytest.importorskip("pymeasure.instruments.keithley").Keithley2600

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SCPIUnknownMixin's notice
        k = Keithley2600(bench.resource(), read_termination="\n", timeout=5000)
    assert "Model 2611B" in k.id
    connect_device(k)
    a = k.ChA
    # pymeasure keithley2600.py: apply_voltage (source.func=1, limiti), source_voltage
    # ('source.levelv'), source_output ('source.output'), current ('measure.i()'),
    # voltage ('measure.v()', defect 4), resistance ('measure.r()')
    a.apply_voltage(compliance_current=0.1)
    a.source_voltage = 0.2
    a.source_output = "ON"
    r = a.resistance
    assert 1e3 < r < 1e12
    assert a.voltage == pytest.approx(0.2)
    assert a.current == pytest.approx(0.2 / r, rel=1e-5)
    # compliance (defect 2): a limit below V/R clamps the current at the limit
    a.source_voltage = 20.0
    a.compliance_current = 1e-6  # written '%f': 0.000001
    expected = min(20.0 / r, 1e-6)
    assert a.current == pytest.approx(expected, rel=1e-5)
    assert k.ask("print(smua.source.compliance)").strip() == ("true" if 20 / r > 1e-6 else "false")
    # current source, voltage limit (apply_current, source_current, compliance_voltage)
    a.apply_current(compliance_voltage=1.0)
    a.source_current = 1e-3
    assert a.voltage == pytest.approx(1.0)  # 1 mA into >1 kohm: clamped at 1 V
    assert a.wires_mode == "2"
    # errors (Keithley2600.next_error: 'print(errorqueue.next())', tab separated)
    k.write("smua.source.nonsense = 1")
    code, message = k.next_error
    assert code == -286 and "nonsense" in message and "<python>" not in message
    assert k.next_error[0] == 0
    assert k.status.strip() == "0" and k.complete.strip() == "1"  # *STB?, *OPC? (defect 6)
    # shutdown: ramps the source to 0 and switches the output off
    a.apply_voltage(compliance_current=0.1)
    a.source_voltage = 0.1
    a.shutdown()
    assert k.ask("print(smua.source.levelv, smua.source.output)").split() == ["0.00000e+00"] * 2
    k.adapter.close()


# --------------------------------------------------------------------------- keithley2600
def test_keithley2600_package_attributes_reach_the_instrument(bench):
    # keithley2600 2.1 imports xdrlib, which Python 3.13 removed
    Keithley2600 = pytest.importorskip("keithley2600", reason="needs Python < 3.13").Keithley2600

    k = Keithley2600(bench.resource(), raise_keithley_errors=True, timeout=5000)
    try:
        connect_device(k.connection)
        # keithley_driver.py:248-284, 296-388: attributes are learnt from next() and the
        # metatable's Getters/Setters/Objects; an unknown name would stay in Python (defect 9)
        k.smua.source.levelv = 0.1
        k.smua.source.output = k.smua.OUTPUT_ON
        assert k.connection.query("print(smua.source.levelv)") == "1.00000e-01"
        i = k.smua.measure.i()
        r = k.smua.measure.r()
        assert i == pytest.approx(0.1 / r, rel=1e-4)
        assert k.read_error_queue() == []
        # keithley_driver.py:1000-1185: listv, trigger model, *trg, status.operation.sweeping,
        # read_buffer through readings.getreading(i)
        sweep = [0.1, 0.2, 0.0, -0.1]
        v, i = k.voltage_sweep_single_smu(k.smua, sweep, t_int=0.001, delay=-1, pulsed=False)
        assert v == sweep
        assert i[2] == 0 and i[0] == pytest.approx(0.1 / r, rel=0.05)
        assert np.sign(i).tolist() == [1, 1, 0, -1]
        assert k.read_error_queue() == []
    finally:
        k.smua.source.output = 0
        k.disconnect()


# --------------------------------------------------------------------------- the manuals
def test_format_constants_defaults_and_reset(shared):
    # 2600B manual, format.byteorder: NORMAL/BIGENDIAN/NETWORK 0, SWAPPED/LITTLEENDIAN 1,
    # default LITTLEENDIAN; format.data: ASCII 1, SREAL/REAL32 2, REAL/REAL64/DREAL 3,
    # default ASCII; both "affected by instrument reset" (defect 3)
    v = shared.visa()
    names = "NORMAL BIGENDIAN NETWORK SWAPPED LITTLEENDIAN ASCII SREAL REAL32 REAL REAL64 DREAL"
    got = v.query("print(" + ", ".join(f"format.{n}" for n in names.split()) + ")")
    assert [int(float(x)) for x in got.split("\t")] == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    v.write("format.data = format.REAL32 format.byteorder = format.BIGENDIAN")
    v.write("printnumber(1.5)")
    assert v.read_raw() == b"#0" + struct.pack(">f", 1.5) + b"\n"
    v.write("format.asciiprecision = 3 reset()")
    defaults = v.query("print(format.data, format.byteorder, format.asciiprecision)")
    assert defaults == "1.00000e+00\t1.00000e+00\t6.00000e+00"
    v.close()


def test_measure_functions_buffers_and_compliance(shared):
    v = shared.visa()
    connect_device(v)
    v.write("smua.reset() smua.source.levelv = 0.2 smua.source.output = 1")
    r = float(v.query("print(smua.measure.r())"))
    # 2600B manual, smuX.measure.Y(): i, v, r, p, iv (iv returns current then voltage)
    i, volts = (float(x) for x in v.query("print(smua.measure.iv())").split("\t"))
    assert volts == pytest.approx(0.2) and i == pytest.approx(0.2 / r)
    assert float(v.query("print(smua.measure.p())")) == pytest.approx(0.2 * 0.2 / r)
    # reading buffers: buffer[i] is buffer.readings[i] (defect 4)
    v.write("smua.nvbuffer1.clear() smua.measure.v(smua.nvbuffer1) smua.measure.i(smua.nvbuffer1)")
    got = v.query("print(smua.nvbuffer1.n, smua.nvbuffer1[1], smua.nvbuffer1.readings[2])")
    n, first, second = (float(x) for x in got.split("\t"))
    assert (n, first) == (2, pytest.approx(0.2)) and second == pytest.approx(0.2 / r)
    # DC compliance (defect 2): the current clamps at limiti, compliance reads true
    limit = 2 / r  # a tenth of what 20 V would drive (and above the 10 nA floor)
    v.write(f"smua.source.levelv = 20 smua.source.limiti = {limit!r}")
    assert float(v.query("print(smua.measure.i())")) == pytest.approx(limit)
    assert v.query("print(smua.source.compliance)") == "true"
    v.write("smua.reset()")
    assert v.query("print(smua.source.output, smua.source.compliance)") == "0.00000e+00\tfalse"
    v.close()


#: A DC sweep as Keithley's factory scripts (KISweep's LinVSweepMeasureI) write it: a script
#: defining a function, the buffer collecting source values, printbuffer of readings and
#: source values together.
LIN_SWEEP = """loadscript LinSweep
function LinVSweepMeasureI(smu, startv, stopv, stime, points)
  local l_stepv = (stopv - startv) / (points - 1)
  local l_sweepv = startv
  smu.source.func = smu.OUTPUT_DCVOLTS
  smu.source.limiti = 0.1
  smu.measure.autozero = smu.AUTOZERO_ONCE
  smu.nvbuffer1.clear()
  smu.nvbuffer1.appendmode = 1
  smu.nvbuffer1.collectsourcevalues = 1
  smu.source.output = smu.OUTPUT_ON
  for l_j = 1, points do
    smu.source.levelv = l_sweepv
    delay(stime)
    smu.measure.i(smu.nvbuffer1)
    l_sweepv = l_sweepv + l_stepv
  end
  smu.source.output = smu.OUTPUT_OFF
  smu.source.levelv = 0
  printbuffer(1, points, smu.nvbuffer1, smu.nvbuffer1.sourcevalues)
end
endscript
LinSweep.run()"""


def test_a_factory_style_dc_sweep_script(shared):
    # 2600B manual, printbuffer(): several buffers are interleaved (reading, source value)
    v = shared.visa()
    connect_device(v)
    v.write("smua.reset() smua.source.levelv = 0.1 smua.source.output = 1")
    r = float(v.query("print(smua.measure.r())"))
    for line in LIN_SWEEP.splitlines():
        v.write(line)
    got = [float(x) for x in v.query("LinVSweepMeasureI(smua, 0.1, 0.3, 0.01, 3)").split(",")]
    assert got[1::2] == pytest.approx([0.1, 0.2, 0.3])
    assert got[0::2] == pytest.approx([0.1 / r, 0.2 / r, 0.3 / r], rel=1e-4)
    assert v.query("print(errorqueue.count, smua.source.output)") == "0.00000e+00\t0.00000e+00"
    v.close()


def pulse_trigger_model(levels: str, count: int, measure: str = "i") -> str:
    """The 2600B manual's pulse sweep ("Pulse mode sweeps": source list, timer as the pulse
    width, endpulse SOURCE_IDLE), measuring into nvbuffer1, then printbuffer."""
    return "\n".join(
        [
            "smua.reset()",
            "smua.source.func = smua.OUTPUT_DCVOLTS",
            "smua.source.limiti = 0.1",
            f"smua.trigger.source.listv({levels})",
            "smua.trigger.source.action = smua.ENABLE",
            "smua.trigger.measure.action = smua.ENABLE",
            f"smua.trigger.measure.{measure}(smua.nvbuffer1)",
            "smua.trigger.endpulse.action = smua.SOURCE_IDLE",
            "smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID",
            "trigger.timer[1].delay = 1e-4",
            "trigger.timer[1].stimulus = smua.trigger.SOURCE_COMPLETE_EVENT_ID",
            f"smua.trigger.count = {count}",
            "smua.nvbuffer1.clear()",
            "smua.source.output = smua.OUTPUT_ON",
            "smua.trigger.initiate()",
            "waitcomplete()",
            "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)",
        ]
    )


def test_pulse_trains_read_the_state_each_pulse_meets(bench):
    v = bench.visa()
    connect_device(v)
    script = pulse_trigger_model("{0.15}", 6)
    currents = [float(x) for x in v.query(script.replace("\n", " ")).split(",")]
    # each SET pulse lowers the resistance the next one meets (defect 12)
    assert len(currents) == 6 and np.all(np.diff(currents) > 0)
    # trigger.measure.r stores resistances, not currents (defect 4)
    resistances = [float(x) for x in v.query(pulse_trigger_model("{0.15}", 3, "r")).split(",")]
    assert resistances[0] == pytest.approx(0.15 / currents[-1], rel=0.05)
    assert np.all(np.diff(resistances) < 0)
    assert v.query("print(errorqueue.count)") == "0.00000e+00"
    v.close()


def test_zero_and_reset_steps_do_what_the_user_asked(bench):
    v = bench.visa()
    connect_device(v)
    v.write("smua.source.output = 1 smua.source.levelv = 0.1")
    before = v.query("print(smua.measure.r())")
    # a 0 V step draws no current; a RESET pulse on a SET-only model leaves the device as it
    # is; neither is an error (defect 5)
    got = v.query(pulse_trigger_model("{0, -0.15, 0}", 3))
    assert [float(x) for x in got.split(",")][0::2] == [0.0, 0.0]
    assert v.query("print(errorqueue.count)") == "0.00000e+00"
    v.write("smua.source.output = 1 smua.source.levelv = 0.1")
    assert v.query("print(smua.measure.r())") == before
    # what the instrument refuses is said in the user's terms, not the emulator's code
    v.write(pulse_trigger_model("{0.1}", 1).replace("1e-4", "50").rsplit("\n", 1)[0])
    code, message, severity, node = v.query("print(errorqueue.next())").split("\t")
    assert float(code) == -286 and "<python>" not in message and ".py" not in message
    assert (float(severity), float(node)) == (20, 1)
    v.close()


def test_ieee488_common_commands_and_the_error_queue(shared):
    # 2600B manual, "Common commands" and errorqueue.next(): severity 0 for an empty queue,
    # 20 (recoverable) for input errors, and the node the error arose on (defect 6)
    v = shared.visa()
    v.write("*CLS")
    assert v.query("*TST?") == "0"
    assert v.query("*OPC?") == "1"
    v.write("*ESE 60")
    v.write("*WAI")
    v.write("*OPC")
    assert int(v.query("*ESR?")) & 1  # OPC
    v.write("1 +")  # a syntax error: EAV in the status byte, EXE in the event register
    stb = int(v.query("*STB?"))
    assert stb & 4 and stb & 32
    code, _, severity, node = v.query("print(errorqueue.next())").split("\t")
    assert (float(code), float(severity), float(node)) == (-285, 20, 1)
    assert v.query("print(errorqueue.next())") == (
        "0.00000e+00\tQueue Is Empty\t0.00000e+00\t1.00000e+00"
    )
    v.write("smua.source.levelv = 0.3")
    v.write("*RST")
    assert v.query("print(smua.source.levelv)") == "0.00000e+00"
    assert v.query("print(errorqueue.count)") == "0.00000e+00"
    v.write("*ESE 0")
    v.close()


def test_identity_names_the_channels_that_exist(shared):
    # a 2611B has one channel, smua (defect 8)
    v = shared.visa()
    assert "Model 2611B" in v.query("*IDN?")
    assert v.query("print(localnode.model)") == "2611B"
    assert v.query("print(type(smua), type(smub))") == "table\tnil"
    v.close()


def test_matrix_channel_lists_with_ranges(shared):
    # 707B manual, channel.close() example: "1A01:1A05, 1C03" and channel.getclose("slot1")
    # sorted and ';'-separated; channel.getclose() Example 2: "1B03:1B05"
    m = shared.visa("matrix")
    m.write('channel.open("allslots")')
    m.write('channel.close("1A01:1A05, 1C03")')
    assert m.query('print(channel.getclose("slot1"))') == "1A01;1A02;1A03;1A04;1A05;1C03"
    m.write('channel.open("allslots") channel.close("1B03:1B05")')
    assert m.query('print(channel.getclose("allslots"))') == "1B03;1B04;1B05"
    m.write('channel.close("1A05:1A01")')  # highest first: refused, nothing closed
    assert m.query("print(errorqueue.count)") == "1.00000e+00"
    m.write('errorqueue.clear() channel.open("allslots")')
    assert m.query('print(channel.getclose("allslots"))') == "nil"
    m.close()


# --------------------------------------------------------------------------- abuse
def test_a_connection_dropped_inside_loadscript_abandons_its_script(bench):
    with bench.raw() as sock:
        sock.sendall(b"loadscript half\nprint('never')\n")
    time.sleep(0.2)  # the disconnect has reached the service
    answered_within(bench)  # defect 1: nobody's lines are collected into "half"
    with bench.raw() as sock:
        assert ask_raw(sock, "print(half)") == "nil"
        # another connection's upload does not swallow this one's lines either
        with bench.raw() as other:
            other.sendall(b"loadscript mine\nx = 1\n")
            assert ask_raw(sock, "print(2)") == "2.00000e+00"
            other.sendall(b"endscript\nmine.run()\nprint(x)\n")
            assert ask_raw(other, "") == "1.00000e+00"
    our_driver_works(bench)


def test_overlong_lines_are_refused_not_run(bench):
    with bench.raw() as sock:
        sock.sendall(b"x = 1 -- " + b"y" * 100_000 + b"\n")
        assert ask_raw(sock, "print(x)") == "nil"  # defect 11: refused, not run
        assert ask_raw(sock, "print(errorqueue.next())").startswith("-3.63000e+02")
    answered_within(bench)


def test_a_client_that_never_reads_delays_nobody(bench):
    hog = bench.raw()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = b"print(string.rep('x', 60000))\n" * 400  # ~24 MB of replies it never reads
    hog.setblocking(False)
    try:
        sent = 0
        deadline = time.monotonic() + 2
        while sent < len(flood) and time.monotonic() < deadline:
            try:
                sent += hog.send(flood[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        for _ in range(3):
            answered_within(bench)  # defect 10: it stalled others ~5 s
        our_driver_works(bench)
    finally:
        hog.close()


def test_seventy_connections_share_the_server_and_its_limits():
    bench = Bench("--max-clients", "80", "--idle-timeout", "2")
    try:
        socks = [bench.raw("smu" if i % 2 else "matrix") for i in range(70)]
        answered_within(bench)  # defect 10: a hard cap of 8 refused this one
        for sock in socks[:10]:
            assert ask_raw(sock, "*IDN?").startswith("Keithley")
        # --idle-timeout is honoured: silent clients are closed
        time.sleep(3.5)
        for sock in socks[:3]:
            sock.settimeout(2)
            assert sock.recv(100) == b""
        for sock in socks:
            sock.close()
    finally:
        bench.close()
    bench = Bench("--max-clients", "2")
    try:
        with bench.raw() as a, bench.raw("matrix") as b:
            assert ask_raw(a, "*IDN?").startswith("Keithley")
            assert ask_raw(b, "*IDN?").startswith("Keithley")
            with bench.raw() as c:  # the cap spans both ports
                assert ask_raw(c, "*IDN?").startswith("BUSY")
    finally:
        bench.close()


def test_runaway_lua_is_bounded_and_others_are_answered(bench):
    with bench.raw(timeout=30) as runaway:
        runaway.sendall(b"while true do end\n" * 3)
        time.sleep(0.05)
        answered_within(bench)
        # a loop spending its time in instrument calls is bounded too
        runaway.sendall(b"smua.source.output = 1 while true do smua.measure.i() end\n")
        time.sleep(0.05)
        answered_within(bench)
        runaway.sendall(b"print(errorqueue.count)\n")
        assert ask_raw(runaway, "") == "4.00000e+00"
    our_driver_works(bench)
