"""Shared test setup."""

import pytest


@pytest.fixture(autouse=True)
def _records_in_tmp(tmp_path, monkeypatch):
    """Default records (hardware URLs record by default) go to the test's tmp dir, not the repo."""
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", str(tmp_path / "records"))
