"""Plain ``pytest`` works wherever memristor-hil is installed next to Nengo 4.1 and pytest 9.

Nengo 4.1.0's plugin (``pytest_nengo``, its ``pytest11`` entry point) declares
``pytest_report_collectionfinish(config, startdir, items)``; pytest 9 dropped ``startdir`` from
that hook, so pytest refused to start in any folder (``PluginValidationError``) until
memristor_hil_nengo_compat mended it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import memristor_hil_nengo_compat as compat

LAB_TEST = """
def test_nengo_plugin_is_loaded_and_ours_too(request):
    manager = request.config.pluginmanager
    assert manager.has_plugin("nengo"), "Nengo's plugin was blocked, not mended"
    assert manager.has_plugin("memristor_hil")


def test_a_fixture_of_ours(crossbar_url):
    assert crossbar_url.startswith("emulator://")
"""


def _fresh_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}


def test_plain_pytest_in_a_fresh_folder_loads_nengos_plugin_and_passes(tmp_path: Path) -> None:
    (tmp_path / "test_lab.py").write_text(LAB_TEST)
    # the console script a user types, not ``python -m pytest``: no -p option, no ini file
    script = Path(sys.executable).with_name("pytest")
    command = [os.fspath(script)] if script.exists() else [sys.executable, "-m", "pytest"]
    done = subprocess.run(
        command, cwd=tmp_path, env=_fresh_env(), capture_output=True, text=True, timeout=300
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "2 passed" in out
    assert "PluginValidationError" not in out and "PytestAssertRewriteWarning" not in out


def test_mend_renames_only_the_startdir_hook() -> None:
    calls = []

    def pytest_report_collectionfinish(config, startdir, items):
        calls.append((config, startdir, items))
        return ["Nengo core tests collected"]

    module = types.ModuleType("pytest_nengo")
    module.pytest_report_collectionfinish = pytest_report_collectionfinish
    assert compat.mend(module)
    mended = module.pytest_report_collectionfinish
    assert mended("config", ["item"]) == ["Nengo core tests collected"]
    assert calls == [("config", None, ["item"])]
    assert not compat.mend(module)  # once only
    assert module.pytest_report_collectionfinish is mended


def test_a_fixed_nengo_is_left_alone() -> None:
    def pytest_report_collectionfinish(config, start_path, items):
        return None

    module = types.ModuleType("pytest_nengo")
    module.pytest_report_collectionfinish = pytest_report_collectionfinish
    assert not compat.mend(module)
    assert module.pytest_report_collectionfinish is pytest_report_collectionfinish


def test_the_pth_file_is_installed_and_loads_nothing_heavy() -> None:
    """The .pth runs in every interpreter: it installs the finder and imports no pytest."""
    probe = (
        "import sys; print(sorted(m for m in ('memristor_hil_nengo_compat', 'pytest', "
        "'pytest_nengo', 'inspect', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['memristor_hil_nengo_compat']"
