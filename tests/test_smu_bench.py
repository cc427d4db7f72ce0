"""smu:// end to end: SmuMatrixCrossbar -> pyvisa-py -> TCP -> the emulated 2600B + 707B bench
(``memristor-hil emulate --dialect keithley2600``, its own process), plus the exact lines the
driver sends, its failures, and the bounds on what a script may do to the emulation."""

import json
import re
import socket
import subprocess
import sys
import time

import nengo
import numpy as np
import pytest
from memristor_hil.drivers.smu import SCRIPT, ComplianceError, SmuMatrixCrossbar, open_smu

from memristor_hil import (
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
    PulseBatch,
    SafetyLimitError,
    mPES,
    open_crossbar,
)
from memristor_hil.protocol.tsp import Wiring
from memristor_hil.testing import EmulatorService

ROWS, COLS = 6, 6
DEVICES = f"emulator://?rows={ROWS}&cols={COLS}&seed=7&sigma=0.15&noise=0.05"
SCRIPT_LINES = SCRIPT.strip().splitlines()
#: The SMU line on which the first batch's ``mhil_go()`` arrives (see the command table).
FIRST_GO = 7 + len(SCRIPT_LINES) + 3


class Bench:
    """The emulated bench as a process; ``url`` opens it, ``ask`` queries an instrument."""

    def __init__(self, *args: str, devices: str = DEVICES) -> None:
        self.service = EmulatorService(
            "--tcp", "127.0.0.1:0", "--dialect", "keithley2600", *args, url=devices
        )
        self.smu, self.matrix = self.service.where.split()

    def url(self, **options) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"rows": ROWS, "cols": COLS, **options}.items())
        return f"smu://{_resource(self.smu)}?matrix={_resource(self.matrix)}&{query}"

    def ask(self, which: str, line: str, timeout: float = 10) -> str:
        host, port = (self.smu if which == "smu" else self.matrix).rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.decode().strip()

    def assert_safe(self) -> None:
        """What the emulated instruments say: SMU output off, no crosspoint closed."""
        assert float(self.ask("smu", "print(smua.source.output)")) == 0
        assert self.ask("matrix", 'print(channel.getclose("allslots"))') == "nil"

    def kill(self) -> None:
        self.service.kill()


def _resource(where: str) -> str:
    host, port = where.rsplit(":", 1)
    return f"TCPIP::{host}::{port}::SOCKET"


@pytest.fixture
def benches():
    started: list[Bench] = []

    def start(*args: str, devices: str = DEVICES) -> Bench:
        bench = Bench(*args, devices=devices)
        started.append(bench)
        return bench

    yield start
    for bench in started:
        bench.kill()


def workload(steps: int, seed: int = 0):
    """Seeded batches an SMU bench can take: widths of 100 us, pulse counts >= 1, repeated cells,
    per-cell counts, per-cell voltages, with and without read-back."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        n = int(rng.integers(1, 12))
        rows, cols = rng.integers(0, ROWS, n), rng.integers(0, COLS, n)
        counts = rng.integers(1, 6, n) if step % 2 else int(rng.integers(1, 4))
        voltage = rng.uniform(0.08, 0.2, n) if step % 3 == 2 else 0.1
        yield PulseBatch(rows, cols, counts, voltage=voltage, width=1e-4), step % 4 != 3


def run(xbar, steps: int = 16) -> list[np.ndarray]:
    seen = [xbar.apply(batch, read_back=back) for batch, back in workload(steps)]
    seen = [r for r in seen if r is not None]
    seen.append(xbar.read([0, 5, 3], [0, 4, 2]))
    seen.append(xbar.read_all())
    return seen


class PulseByPulse:
    """The in-process emulator, applying each pulse of a batch as its own step in batch order:
    what the bench does, since each pulse of a train reads the state it meets (issue 24,
    defect 12)."""

    def __init__(self, xbar) -> None:
        self.xbar = xbar

    def apply(self, batch: PulseBatch, read_back: bool = False):
        voltages = np.broadcast_to(batch.voltage, batch.rows.shape)
        widths = np.broadcast_to(batch.width, batch.rows.shape)
        for r, c, n, v, w in zip(
            batch.rows, batch.cols, batch.pulses, voltages, widths, strict=True
        ):
            for _ in range(int(n)):
                self.xbar.apply(PulseBatch([r], [c], 1, voltage=float(v), width=float(w)))
        return self.xbar.read(batch.rows, batch.cols) if read_back else None

    def read(self, rows, cols):
        return self.xbar.read(rows, cols)

    def read_all(self):
        return self.xbar.read_all()


def test_workload_over_visa_is_bit_identical_to_the_in_process_emulator(benches):
    bench = benches()
    with open_crossbar(DEVICES) as reference:
        want = run(PulseByPulse(reference))
    with open_crossbar(bench.url(), record=False) as xbar:
        assert isinstance(xbar, SmuMatrixCrossbar) and "Model 2611B" in xbar.identity
        got = run(xbar)
        assert xbar.stats["instrument_seconds"] > 0  # the emulated instruments' clock ran
        # output on between batches, crosspoints open
        assert float(bench.ask("smu", "print(smua.source.output)")) == 1
        assert bench.ask("matrix", 'print(channel.getclose("allslots"))') == "nil"
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.tobytes() == b.tobytes()
    bench.assert_safe()  # closing switched the output off and opened everything


class ExpectedLink:
    """A scripted instrument: every line written must be the next expected one; replies are
    queued for the reads that follow (as PyMeasure's ``expected_protocol``)."""

    def __init__(self, name: str, table: list) -> None:
        self.name, self.table, self.pending = name, table, b""

    def write(self, line: str) -> None:
        assert self.table, f"{self.name}: unexpected {line!r}"
        who, sent, reply = self.table.pop(0)
        assert (who, line) == (self.name, sent)
        self.pending += reply

    def read_line(self) -> str:
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def read_exact(self, size: int) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def close(self) -> None:
        pass


def test_a_long_batch_runs_as_several_scripts_with_the_same_result(benches, monkeypatch):
    """More than PULSES_PER_GO pulses run as several mhil_go() calls (an entry split into
    consecutive parts), so no script outlasts the bench's per-script time budget; the devices
    end as the same pulses applied one at a time would leave them."""
    import memristor_hil.drivers.smu as smu

    monkeypatch.setattr(smu, "PULSES_PER_GO", 7)
    batch = PulseBatch([0, 1, 0, 2], [1, 1, 1, 3], [5, 9, 2, 1], voltage=0.12, width=1e-4)
    bench = benches()
    with open_crossbar(DEVICES) as reference:
        want = PulseByPulse(reference).apply(batch, read_back=True)
    with open_crossbar(bench.url(), record=False) as xbar:
        before = xbar.stats["batches"]
        got = xbar.apply(batch, read_back=True)
        assert xbar.stats["batches"] - before == 3  # 17 pulses in groups of at most 7
    assert got.tobytes() == want.tobytes()


def test_command_table_pins_what_the_driver_sends():
    wiring = Wiring.default(2, 3)  # rows on 1:01-1:02, columns on 1:03-1:05
    block = b"#0" + np.array([1e5, 2e5], "<f8").tobytes() + b"\n"
    table = [
        ("smu", "*IDN?", b"Keithley Instruments Inc., Model 2636B, 1, 4.0\n"),
        ("matrix", "*IDN?", b"Keithley Instruments Inc., Model 707B, 2, 1.6\n"),
        ("matrix", "errorqueue.clear()", b""),
        ("matrix", 'channel.open("allslots")', b""),
        ("smu", "errorqueue.clear()", b""),
        (
            "smu",
            'if tsplink.state ~= "online" then tsplink.reset() end '
            "print(tsplink.state, node[2].model)",
            b"online\t707B\n",
        ),
        ("smu", "\n".join(["loadscript mhilScript", *SCRIPT_LINES, "endscript"]), b""),
        ("smu", "mhilScript.run()", b""),
        ("smu", "mhil_setup(2, 1.5, 0.001, 0.01, 0.001, 0.1)", b"MHIL READY\n"),
        # a batch: one line of pulse trains (the zero-count entry sends nothing), one of reads
        ("smu", 'mhil_pulses(2,{"1A01,1B05","1A02,1B03"},{3,1},{0.1,0.1},{0.0001,0.0001})', b""),
        ("smu", 'mhil_reads(3,{"1A01,1B05","1A02,1B03","1A02,1B04"})', b""),
        ("smu", "mhil_go()", b"MHIL OK 3 0.0203\n" + block[:-1] + b"\x00" * 8 + b"\n"),
        # close: output off, all open, each confirmed
        ("smu", "smua.source.levelv = 0 smua.source.output = smua.OUTPUT_OFF", b""),
        ("matrix", 'channel.open("allslots")', b""),
        ("smu", 'pcall(function() node[2].channel.open("allslots") end)', b""),
        ("smu", "print(smua.source.output)", b"0.00000e+00\n"),
        ("matrix", "print(1)", b"1.00000e+00\n"),
    ]
    xbar = SmuMatrixCrossbar(
        "SMU", "MATRIX", wiring, links=(ExpectedLink("smu", table), ExpectedLink("matrix", table))
    )
    r = xbar.apply(PulseBatch([0, 1, 1], [2, 0, 1], [3, 1, 0], width=1e-4), read_back=True)
    assert r.tolist() == [1e5, 2e5, 0.0]
    assert xbar.last_batch_seconds == pytest.approx(0.0203)
    xbar.close()
    assert table == []


def test_limits_are_enforced_before_anything_is_sent():
    table = []
    wiring = Wiring.default(2, 2)
    with pytest.raises(AssertionError):  # nothing scripted: the first write would fail
        SmuMatrixCrossbar("S", "M", wiring, links=(ExpectedLink("smu", table),) * 2)
    with pytest.raises(ValueError, match="compliance"):
        SmuMatrixCrossbar("S", "M", wiring, compliance=5.0, links=(None, None))
    with pytest.raises(ValueError, match="no matrix"):
        open_smu("smu://TCPIP::h::1::SOCKET?rows=2&cols=2")
    with pytest.raises(ValueError, match="map=FILE"):
        open_smu("smu://TCPIP::h::1::SOCKET?matrix=M")
    with pytest.raises(ValueError, match="unknown smu:// options"):
        open_smu("smu://TCPIP::h::1::SOCKET?matrix=M&rows=2&cols=2&volts=3")


def test_map_file_round_trip_and_errors(tmp_path):
    wiring = Wiring.default(3, 14)
    assert wiring.crosspoints(2, 13) == "1A03,2B05"  # the 17th line is slot 2, column 5
    path = tmp_path / "map.json"
    path.write_text(json.dumps(wiring.to_dict()))
    assert Wiring.load(path) == wiring
    bad = {"rows": ["1:01"], "cols": ["1:01"]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="same matrix column"):
        Wiring.load(path)
    path.write_text(json.dumps({"rows": ["1:13"], "cols": ["1:01"]}))
    with pytest.raises(ValueError, match=r"map.json: rows\[0\]: column 13"):
        Wiring.load(path)


def test_out_of_range_pulses_are_refused_before_reaching_the_bench(benches):
    bench = benches()
    with open_crossbar(bench.url(vmax=0.5), record=False) as xbar:
        lines = xbar.stats["lines"]
        with pytest.raises(SafetyLimitError):
            xbar.apply(PulseBatch([0], [0], voltage=0.6, width=1e-4))
        with pytest.raises(SafetyLimitError):
            xbar.apply(PulseBatch([0], [0], voltage=0.1, width=1e-6))  # SMU pulses >= 100 us
        assert xbar.stats["lines"] == lines


def test_compliance_raises_and_leaves_the_outputs_off(benches):
    # low-resistance devices: 0.1 V draws ~1 uA, over a 100 nA compliance
    bench = benches(devices=f"emulator://?rows={ROWS}&cols={COLS}&seed=1&r1=2e5&r_init=1e5")
    with open_crossbar(bench.url(compliance=1e-7), record=False) as xbar:
        before = xbar.read([2], [3])
        with pytest.raises(ComplianceError, match=r"compliance \(1e-07 A\) reached at 1A03,1B10"):
            xbar.apply(PulseBatch([2], [3], 5, width=1e-4))
        bench.assert_safe()
        np.testing.assert_array_equal(xbar.read([2], [3]), before)  # the device took no pulse


def test_a_refused_crosspoint_raises_and_leaves_the_outputs_off(benches):
    bench = benches("--forbid", "1A04")  # crossbar row 3's force crosspoint
    with open_crossbar(bench.url(), record=False) as xbar:
        xbar.apply(PulseBatch([0], [0], width=1e-4))
        with pytest.raises(DeviceError, match="1A04 is forbidden"):
            xbar.apply(PulseBatch([1, 3], [1, 1], width=1e-4))
        bench.assert_safe()
        xbar.apply(PulseBatch([1], [1], width=1e-4))  # the next batch works again


def test_a_lost_connection_raises_and_the_outputs_are_switched_off(benches):
    bench = benches("--drop-after", str(FIRST_GO))
    xbar = open_crossbar(bench.url(timeout=3), record=False)
    # the shared VISA link (drivers/_visa_link.py) sees the closed socket at once; pyvisa-py
    # alone would wait out the timeout and report it as one
    t0 = time.monotonic()
    with pytest.raises(ConnectionLostError):
        xbar.apply(PulseBatch([1], [1], width=1e-4), read_back=True)
    assert time.monotonic() - t0 < 2, "waited out the timeout"
    bench.assert_safe()  # over fresh connections
    xbar.close()


def test_a_timeout_raises_and_the_outputs_are_switched_off(benches):
    bench = benches("--stall-after", str(FIRST_GO))
    xbar = open_crossbar(bench.url(timeout=0.5), record=False)
    t0 = time.monotonic()
    with pytest.raises(CrossbarTimeoutError, match="no reply"):
        xbar.apply(PulseBatch([1], [1], width=1e-4), read_back=True)
    assert time.monotonic() - t0 < 5
    bench.assert_safe()
    xbar.close()


def test_a_runaway_script_is_stopped_and_the_instrument_keeps_answering(benches):
    bench = benches()
    for code in (
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
        "x = string.rep('x', 1 << 30)",
        "os.execute('true')",
        "require('io')",
    ):
        t0 = time.monotonic()
        reply = bench.ask("smu", f"{code}\nprint(errorqueue.next())", timeout=30)
        assert time.monotonic() - t0 < 15
        assert re.match(r"-2\.86000e\+02\tTSP Runtime error", reply), (code, reply)
    assert bench.ask("smu", "print(1 + 1)") == "2.00000e+00"
    # an uploaded script is bounded too
    lines = "loadscript spin\nwhile true do end\nendscript\nspin.run()\nprint(errorqueue.count)"
    assert bench.ask("smu", lines, timeout=30) == "1.00000e+00"


def test_closing_at_interpreter_exit_leaves_the_bench_safe(benches):
    bench = benches()
    code = (
        "from memristor_hil import open_crossbar, PulseBatch\n"
        f"xbar = open_crossbar({bench.url()!r}, record=False)\n"
        "xbar.apply(PulseBatch([1], [1], width=1e-4))\n"
        "print(xbar.closed)\n"  # exits without closing
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    bench.assert_safe()


def test_garbage_changes_no_device_and_the_service_keeps_answering(benches):
    bench = benches()
    with open_crossbar(bench.url(), record=False) as xbar:
        xbar.apply(PulseBatch([0, 2], [1, 3], 4, width=1e-4))
        before = xbar.read_all()
        host, port = bench.smu.rsplit(":", 1)
        rng = np.random.default_rng(3)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for _ in range(200):
                junk = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
                sock.sendall(junk + (b"\n" if rng.random() < 0.7 else b""))
            sock.sendall(b"\nprint('alive')\n")
            reply = b""
            while b"alive" not in reply:
                reply += sock.recv(1 << 16)
        np.testing.assert_array_equal(xbar.read_all(), before)


def test_overlong_lines_and_garbage_do_not_break_the_service(benches):
    bench = benches()
    reply = bench.ask("smu", "x" * 200_000 + "\n\xff\xfe junk\nprint(errorqueue.count)")
    assert float(reply) >= 1
    assert bench.ask("matrix", "*IDN?").startswith("Keithley Instruments Inc., Model 707B")


def test_mpes_info_characterize_fit_on_the_smu_url(benches, tmp_path, monkeypatch):
    bench = benches()
    url = bench.url()
    monkeypatch.chdir(tmp_path)
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre, post = nengo.Ensemble(3, 1), nengo.Ensemble(3, 1)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((3, 3)),
            learning_rule_type=mPES(crossbar=url, pulse_width=1e-4),
        )
        nengo.Connection(stim, conn.learning_rule, transform=-1)
        p = nengo.Probe(conn.learning_rule, "pulses")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.02)
    assert np.sum(sim.data[p]) > 0  # devices were pulsed through the bench
    records = list((tmp_path / "records").glob("*-smu.sqlite"))
    assert records, "hardware runs are recorded by default"
    bench.assert_safe()  # the simulator closed the crossbar it opened

    def cli(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "memristor_hil", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    info = json.loads(cli("info", url, "--json"))
    assert (info["rows"], info["cols"]) == (ROWS, COLS) and "707B" in info["identity"]
    assert info["limits"]["width_min"] == 1e-4
    out = cli("characterize", url, "--cells", "0:2,0:2", "--pulses", "3000", "--width", "1e-4",
              "--record", "c.sqlite")  # fmt: skip
    assert "characterizing 4 cells" in out
    assert "fitted" in cli("fit", "c.sqlite")
    bench.assert_safe()


def test_emulate_explains_a_bad_bench_request(tmp_path):
    def emulate(*args):
        return subprocess.run(
            [sys.executable, "-m", "memristor_hil", "emulate", "--dialect", "keithley2600", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    proc = emulate("--serial")
    assert proc.returncode != 0 and "needs --tcp" in proc.stderr
    (tmp_path / "map.json").write_text('{"rows": ["1:01"], "cols": ["1:99"]}')
    proc = emulate("--tcp", "127.0.0.1:0", "--map", str(tmp_path / "map.json"))
    assert proc.returncode != 0 and "cols[0]: column 99" in proc.stderr
