"""The distribution: every package folder is in the wheel, the version is written once, and the
core install (driver, emulator, rule) needs none of the extras' heavy libraries."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import memristor_hil

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What the extras bring and the core must neither require nor import.
HEAVY = ("dask", "distributed", "pandas", "pyarrow", "tensorflow", "lupa", "nengo_dl", "pyarc2")


def test_every_package_folder_is_in_the_wheel():
    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    folders = {"memristor_hil": ROOT / "memristor_hil", **{
        name: ROOT / path for name, path in tool["package-dir"].items()
    }}  # fmt: skip
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder)
            found.add(".".join([name, *relative.parts]))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_the_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "memristor_hil.__version__"
    assert metadata.version("memristor-hil") == memristor_hil.__version__
    assert f"## [{memristor_hil.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_the_core_requires_no_heavy_extra():
    names = {
        d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        for d in PYPROJECT["project"]["dependencies"]
    }
    assert not names & {"dask", "pandas", "pyarrow", "tensorflow", "tensorflow-cpu", "lupa"}


def test_the_core_paths_import_no_heavy_extra():
    """Driver, emulator, service and rule: a learning step on the emulator, a service's
    module, the CLI's parser; none may import what only an extra installs."""
    code = f"""
import sys
import nengo, numpy as np
import memristor_hil
from memristor_hil import PulseBatch, mPES, open_crossbar
from memristor_hil.cli import build_parser
import memristor_hil.drivers.serial, memristor_hil.drivers.visa
import memristor_hil.emulator.service.core, memristor_hil.emulator.service.tcp
import memristor_hil.lab.record, memristor_hil.lab.fitting, memristor_hil.lab.record_export
build_parser()
with open_crossbar("emulator://?rows=4&cols=4") as xbar:
    xbar.apply(PulseBatch([0], [1]), read_back=True)
with nengo.Network(seed=0) as net:
    a, b = nengo.Ensemble(5, 1), nengo.Ensemble(5, 1)
    c = nengo.Connection(a.neurons, b.neurons, transform=np.zeros((5, 5)),
                         learning_rule_type=mPES())
    nengo.Connection(b, c.learning_rule)
with nengo.Simulator(net, progress_bar=False) as sim:
    sim.run(0.01)
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
