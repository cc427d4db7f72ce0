"""Setup of the NengoDL tests (``.venv-dl`` only; the main suite never imports TensorFlow)."""

import os
import sys
from pathlib import Path

import nengo
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
# the main suite's helpers (the emulator service as a subprocess)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# Nengo's decoder cache (~/.cache/nengo) is shared by every environment; entries pickled under
# the main environment's NumPy 2 cannot be read by this one's NumPy 1.24.
nengo.rc["decoder_cache"]["enabled"] = "False"


@pytest.fixture(autouse=True)
def _records_in_tmp(tmp_path, monkeypatch):
    """Default records (hardware URLs record by default) go to the test's tmp dir."""
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", str(tmp_path / "records"))
