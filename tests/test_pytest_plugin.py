"""The pytest plugin, exercised as a user's suite would use it: a test file of a lab's own, run
by pytest in its own process (serially and under pytest-xdist), against real services."""

from __future__ import annotations

import os
import textwrap

import pytest

pytest_plugins = ["pytester"]

#: A lab's test module: a characterisation script and a crash-safety check, written against the
#: plugin's fixtures only.
LAB_TESTS = """
import os

import numpy as np
import pytest

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.lab.characterize import characterize
from memristor_hil.testing import emulator_url


def test_characterisation_script_on_an_emulated_crossbar(crossbar_url):
    with open_crossbar(crossbar_url) as xbar:
        run = characterize(xbar, np.array([0, 1]), np.array([2, 3]), pulses=20, reads=5)
    assert run.resistance.shape[1] == 2
    assert np.all(np.diff(run.resistance, axis=0) <= 0)  # SET pulses lower R


@pytest.mark.crossbar_service(transport="tcp", rows=6, cols=5, seed=4)
def test_the_same_script_through_visa_sees_the_same_devices(crossbar_service, tmp_path):
    assert crossbar_service.url.startswith("visa://")
    with open_crossbar(crossbar_service.url) as xbar:
        got = xbar.apply(PulseBatch([0, 5], [1, 4], pulses=3), read_back=True)
        assert xbar.record.path.is_relative_to(os.environ["MEMRISTOR_HIL_RECORDS"])
    with open_crossbar(emulator_url(6, 5, seed=4)) as twin:
        want = twin.apply(PulseBatch([0, 5], [1, 4], pulses=3), read_back=True)
        np.testing.assert_array_equal(crossbar_service.read_all(), twin.read_all())
    assert got.tobytes() == want.astype(np.float64).tobytes()
    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(f"{crossbar_service.proc.pid}\\n")


@pytest.mark.parametrize("transport", ["serial", "tcp"])
def test_kill_and_restart_lose_no_acknowledged_batch(crossbar_service_factory, transport):
    service = crossbar_service_factory(
        transport=transport, rows=8, cols=8, seed=2, state=True, save_interval=0
    )
    twin = EmulatedCrossbar.from_state(service.args[service.args.index("--state") + 1])
    rng = np.random.default_rng(0)
    acknowledged = 0
    with open_crossbar(service.url, record=False, timeout=2, retries=1) as xbar:
        for _ in range(30):
            batch = PulseBatch.from_flat(rng.choice(64, 5, replace=False), 8, pulses=2)
            xbar.apply(batch)
            twin.apply(batch)
            acknowledged += 1
    service.kill()
    assert not service.running
    service.restart()
    assert acknowledged == 30
    np.testing.assert_array_equal(service.read_all(), twin.read_all())


def test_faults_are_injected_and_survived(faulty_crossbar_service):
    with open_crossbar(faulty_crossbar_service.url, record=False, timeout=1, retries=5) as xbar:
        for _ in range(40):
            xbar.apply(PulseBatch([1], [1]), read_back=True)
        final = xbar.read([1], [1])
    with open_crossbar(emulator_url(10, 10, seed=0)) as twin:
        twin.apply(PulseBatch([1], [1], pulses=40))
        assert final.tobytes() == twin.read([1], [1]).astype(np.float64).tobytes()
    assert "faults injected" in faulty_crossbar_service.log or faulty_crossbar_service.running
"""


@pytest.fixture(autouse=True)
def _no_cache(pytester: pytest.Pytester):
    """A lab's suite as it is, Nengo's plugin included (no ``-p no:nengo``: see
    test_nengo_pytest_compat.py); only the cache is off, to leave nothing behind."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")


@pytest.fixture
def lab_project(pytester: pytest.Pytester, tmp_path):
    pytester.makepyfile(test_lab=LAB_TESTS)
    pids = tmp_path / "pids.txt"
    pids.write_text("")
    pytester._monkeypatch.setenv("PIDS_FILE", os.fspath(pids))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of an exited pytest run is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_lab_suite_passes_serially_and_under_xdist(pytester, lab_project, workers):
    args = ["-n", workers] if workers else []
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=5)
    pids = [int(p) for p in lab_project.read_text().split()]
    assert pids and not any(_alive(pid) for pid in pids)  # no orphan service processes
    # records went to the run's temporary folders only, never into the project
    records = list(pytester.path.rglob("*.sqlite"))
    assert records and all("runpytest-" in str(r.relative_to(pytester.path)) for r in records)
    assert not (pytester.path / "records").exists()


def test_the_plugin_can_be_disabled(pytester):
    pytester.makepyfile("def test_x(crossbar_url):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:memristor_hil")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'crossbar_url' not found*"])


def test_crossbar_url_option_and_the_hardware_marker(pytester):
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            def test_plain(crossbar_url):
                assert crossbar_url == "visa://BENCH"

            @pytest.mark.hardware
            def test_marked(crossbar_url, request):
                expect = request.config.getoption("--run-hardware")
                assert (crossbar_url == "visa://BENCH") == expect
                assert expect or crossbar_url.startswith("emulator://")
            """
        )
    )
    for extra in ([], ["--run-hardware"]):
        result = pytester.runpytest_subprocess("--crossbar-url", "visa://BENCH", *extra)
        result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*memristor-hil: crossbar_url = visa://BENCH*"])


def test_a_failing_test_still_stops_its_service(pytester, tmp_path):
    pids = tmp_path / "pid"
    pytester.makepyfile(
        f"""
        def test_fails(crossbar_service):
            open({str(pids)!r}, "w").write(str(crossbar_service.proc.pid))
            assert False, "the lab's test fails"
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    assert not _alive(int(pids.read_text()))


def test_loading_the_plugin_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, pytest_memristor_hil; "
        "print(sorted(m for m in ('numpy', 'memristor_hil', 'nengo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
