"""One VISA link, one error contract: ``visa://`` and ``smu://`` turn the same pyvisa failure
into the same Crossbar error (drivers/_visa_link.py).

Both drivers run against the emulator service as its own process, over TCP through pyvisa-py;
the failure is injected where pyvisa raises it: in the resource's ``write_raw`` or
``read_bytes`` (pyvisa/resources/messagebased.py), as pyvisa-py and pyvisa do:
``VisaIOError(VI_ERROR_TMO)`` for a timeout, ``VisaIOError(VI_ERROR_CONN_LOST)`` for a dropped
connection, ``InvalidSession`` for a session its exit handler already closed
(pyvisa/highlevel.py, ``ResourceManager.__new__`` registers that handler).
"""

from __future__ import annotations

import pytest
from memristor_hil.drivers.visa import VisaCrossbar
from pyvisa import constants
from pyvisa.errors import InvalidSession, VisaIOError
from pyvisa.resources import MessageBasedResource

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.errors import ConnectionLostError, CrossbarTimeoutError
from memristor_hil.testing import EmulatorService

SMU_DEVICES = "emulator://?rows=4&cols=4&seed=7"
FAILURES = [
    ("write_raw", lambda: InvalidSession(), ConnectionLostError),
    ("read_bytes", lambda: InvalidSession(), ConnectionLostError),
    ("write_raw", lambda: VisaIOError(constants.VI_ERROR_CONN_LOST), ConnectionLostError),
    ("read_bytes", lambda: VisaIOError(constants.VI_ERROR_CONN_LOST), ConnectionLostError),
    ("write_raw", lambda: OSError(104, "Connection reset by peer"), ConnectionLostError),
    ("read_bytes", lambda: VisaIOError(constants.VI_ERROR_TMO), CrossbarTimeoutError),
]


def _resource(where: str) -> str:
    host, port = where.rsplit(":", 1)
    return f"TCPIP::{host}::{port}::SOCKET"


@pytest.fixture(scope="module")
def both():
    """``(visa_xbar, smu_xbar)`` opened on two services (a crossbar and a Keithley bench)."""
    crossbar = EmulatorService("--tcp", "127.0.0.1:0", url="emulator://?rows=4&cols=4&seed=7")
    bench = EmulatorService("--tcp", "127.0.0.1:0", "--dialect", "keithley2600", url=SMU_DEVICES)
    try:
        smu, matrix = bench.where.split()
        yield (
            crossbar,
            (f"smu://{_resource(smu)}?matrix={_resource(matrix)}&rows=4&cols=4&timeout=0.5"),
        )
    finally:
        crossbar.kill()
        bench.kill()


@pytest.mark.parametrize(
    ("method", "failure", "expected"),
    FAILURES,
    ids=[f"{m}-{f().__class__.__name__}-{e.__name__}" for m, f, e in FAILURES],
)
def test_both_drivers_turn_a_pyvisa_failure_into_the_same_crossbar_error(
    both, monkeypatch, method, failure, expected
):
    crossbar, smu_url = both
    raised = {}
    for name in ("visa", "smu"):
        if name == "visa":
            xbar = VisaCrossbar(_resource(crossbar.where), timeout=0.5, retries=0)
        else:
            xbar = open_crossbar(smu_url, record=False)
        try:
            with monkeypatch.context() as patch:

                def fail(*args, **kwargs):
                    raise failure()

                patch.setattr(MessageBasedResource, method, fail)
                try:
                    xbar.apply(PulseBatch([1], [1], width=1e-4), read_back=True)
                except Exception as exc:  # noqa: BLE001 - the type is what is compared
                    raised[name] = type(exc)
                else:
                    raised[name] = None
        finally:
            xbar.close()
    assert raised == {"visa": expected, "smu": expected}


def test_a_reply_comes_in_one_pyvisa_read_and_bytes_read_ahead_wait_for_the_next(
    monkeypatch,
):
    # read_exact/read_line used to ask pyvisa for exactly what they needed: three pyvisa
    # calls per binary block (#, its length, the data) and one per byte of a text line.
    # Now a read takes what has arrived (up to READ_AHEAD more); the rest waits in the link.
    import socket
    import threading

    from memristor_hil.drivers._visa_link import READ_AHEAD, VisaResource

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    lines = b"".join(b"line %d\n" % i for i in range(100))
    flood = b"x" * (4 * READ_AHEAD)

    sent = threading.Event()

    def peer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(16)
            conn.sendall(b"#15hello\n" + lines)  # on loopback: in our socket when it returns
            sent.set()
            conn.recv(16)
            conn.sendall(flood)
            conn.recv(16)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    link = VisaResource(f"TCPIP::127.0.0.1::{port}::SOCKET", "@py", timeout=5)
    calls = []
    real = MessageBasedResource.read_bytes
    monkeypatch.setattr(
        MessageBasedResource,
        "read_bytes",
        lambda self, count, *a, **k: calls.append(count) or real(self, count, *a, **k),
    )
    try:
        link.write(b"go\n")
        assert sent.wait(5)
        assert link.read_exact(2) + link.read_exact(1) + link.read_exact(6) == b"#15hello\n"
        assert [link.read_line() for _ in range(100)] == lines.splitlines(keepends=True)
        assert len(calls) == 1  # one pyvisa read for a block and 100 lines that had arrived
        link.write(b"more\n")
        got = bytearray()
        while len(got) < len(flood):
            got += link.read_exact(1000 if len(flood) - len(got) >= 1000 else 1)
        assert bytes(got) == flood
        assert max(calls) <= READ_AHEAD  # never more than that ahead, however much arrives
        link.write(b"end\n")
    finally:
        link.close()
        thread.join(5)
        server.close()
