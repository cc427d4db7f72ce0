"""The bench subcommands against the emulator service in its own process (VISA and serial)."""

import json

import numpy as np
import pytest
from test_cli_bench import cli

from memristor_hil import open_crossbar
from memristor_hil.lab.characterize import characterize, parse_cells
from memristor_hil.lab.fitting import fit_record
from memristor_hil.lab.record import Record

URL = "emulator://?rows=6&cols=5&seed=9&sigma=0.15"
DEVICES = {"rows": 6, "cols": 5, "seed": 9, "model": {"sigma": 0.15}}


@pytest.mark.parametrize(
    "crossbar_service",
    [{"transport": "tcp", **DEVICES}, {"transport": "serial", **DEVICES}],
    indirect=True,
    ids=["visa", "serial"],
)
def test_info_characterize_fit_show_export_through_the_service(crossbar_service, tmp_path):
    service = crossbar_service
    assert service.emulator_url == URL
    url = service.url
    code, out, err = cli("info", url, cwd=tmp_path)
    assert code == 0, err
    assert "EmulatedCrossbar,6x5,seed=9" in out and "6 x 5 (30 cells)" in out

    code, out, err = cli(
        "characterize", url, "--cells", "0:4,1:5", "--pulses", "1000000", "--record", "s.sqlite",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli("fit", "s.sqlite", cwd=tmp_path)
    assert code == 0, err
    assert "fitted 16 of 16 devices" in out
    fitted = json.loads((tmp_path / "s-fit.json").read_text())

    # The same characterization in process gives the same readings, hence the same fit.
    with open_crossbar(URL, record=tmp_path / "local.sqlite") as xbar:
        characterize(xbar, *parse_cells("0:4,1:5", xbar.shape), 1_000_000)
    with Record.open(tmp_path / "local.sqlite") as local, Record.open(tmp_path / "s.sqlite") as s:
        np.testing.assert_array_equal(s.readings().resistance, local.readings().resistance)
        assert s.url == url and s.identity == local.identity
        expected = fit_record(local).to_json()
    assert fitted["model"] == expected["model"]

    code, out, err = cli("record", "show", "s.sqlite", cwd=tmp_path)
    assert code == 0, err
    assert url in out and "0 with errors" in out
    code, out, err = cli("record", "export", "s.sqlite", "--format", "npz", cwd=tmp_path)
    assert code == 0, err
    with (
        np.load(tmp_path / "s.npz", allow_pickle=False) as npz,
        Record.open(tmp_path / "s.sqlite") as record,
    ):
        assert npz["row"].size == sum(e.cells.size for e in record)
