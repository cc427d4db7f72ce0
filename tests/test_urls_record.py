"""open_crossbar(url, record=...): recording on request, and by default for hardware schemes."""

from pathlib import Path

import pytest
from memristor_hil.emulator import EmulatedCrossbar

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.backends import _SCHEMES, Scheme, hardware_schemes
from memristor_hil.lab.record import Record
from memristor_hil.lab.record_policy import RECORDS_ENV
from memristor_hil.lab.recording import RecordingCrossbar

EMULATOR = "memristor_hil.emulator.url:open_emulator"


def test_emulator_records_only_when_asked(tmp_path):
    with open_crossbar("emulator://?rows=2&cols=3") as xbar:
        assert isinstance(xbar, EmulatedCrossbar)
    path = tmp_path / "a.sqlite"
    with open_crossbar("emulator://?rows=2&cols=3&seed=4", record=path) as xbar:
        assert isinstance(xbar, RecordingCrossbar) and xbar.record.path == path
        xbar.apply(PulseBatch([1], [2]), read_back=True)
    with Record.open(path) as record:
        assert record.url == "emulator://?rows=2&cols=3&seed=4"
        assert record.shape == (2, 3) and len(record) == 1


def test_record_in_the_url_is_taken_out_of_the_query(tmp_path):
    path = tmp_path / "b.sqlite"
    with open_crossbar(f"emulator://?rows=2&record={path}&cols=3") as xbar:
        assert isinstance(xbar, RecordingCrossbar) and xbar.shape == (2, 3)
    assert path.is_file()
    with open_crossbar(f"emulator://?rows=2&record={path}", record=False) as xbar:
        assert isinstance(xbar, EmulatedCrossbar)  # the keyword wins
    with pytest.raises(ValueError, match="twice"):
        open_crossbar("emulator://?record=a&record=b")


@pytest.mark.parametrize("scheme", sorted(hardware_schemes()))
def test_hardware_schemes_record_by_default(tmp_path, monkeypatch, scheme):
    # Stand in for the hardware driver with the emulator: what is tested is the default.
    monkeypatch.setitem(_SCHEMES, scheme, Scheme(EMULATOR, hardware=True))
    monkeypatch.delenv(RECORDS_ENV)  # the default folder: records/ under the working directory
    monkeypatch.chdir(tmp_path)
    with open_crossbar(f"{scheme}://?rows=2&cols=2") as first:
        assert isinstance(first, RecordingCrossbar)
        path = first.record.path
        assert path.parent == Path("records") and path.name.endswith(f"-{scheme}.sqlite")
        with open_crossbar(f"{scheme}://?rows=2&cols=2") as second:  # same second: new file
            assert second.record.path != path
    with open_crossbar(f"{scheme}://?rows=2&cols=2", record=False) as xbar:
        assert not isinstance(xbar, RecordingCrossbar)
    assert len(list((tmp_path / "records").iterdir())) == 2


def test_a_record_that_cannot_be_created_closes_the_crossbar(tmp_path):
    path = tmp_path / "exists.sqlite"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError):
        open_crossbar("emulator://?rows=2&cols=2", record=path)


def test_the_default_folder_can_be_set_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setitem(_SCHEMES, "serial", Scheme(EMULATOR, hardware=True))
    monkeypatch.setenv(RECORDS_ENV, str(tmp_path / "lab-data"))
    with open_crossbar("serial://?rows=2&cols=2") as xbar:
        assert xbar.record.path.parent == tmp_path / "lab-data"
