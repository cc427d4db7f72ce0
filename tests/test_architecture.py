"""The layout's promises, checked from the code: import direction, no cycles, light imports.

Data flows one way (docs/architecture.md): Nengo -> learning -> Crossbar -> {emulator |
drivers -> protocol -> wire}. These tests read every module's imports (including those inside
functions) and fail when a lower layer imports a higher one or two modules import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memristor_hil import (
    AddressError,
    Crossbar,
    PulseBatch,
    UnsupportedError,
    open_crossbar,
)
from memristor_hil.backends import _SCHEMES, Scheme, hardware_schemes, schemes

ROOT = Path(__file__).resolve().parents[1]
#: Folder of each installed package (setuptools' package-dir mapping in pyproject.toml).
FOLDERS = {
    "memristor_hil": ROOT / "memristor_hil",
    "memristor_hil.emulator": ROOT / "emulator",
    "memristor_hil.drivers": ROOT / "drivers",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            found.setdefault(name, path)
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t != name)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) >= 2 and parts[1] in (
        "learning",
        "lab",
        "protocol",
        "experiments",
        "cli",
        "emulator",
        "drivers",
    ):
        return parts[1]
    return name


#: For each layer, the layers it must never import (it sits below them).
FORBIDDEN = {
    "memristor_hil.errors": "*",
    "memristor_hil.powerlaw": "*",
    "memristor_hil.pulses": "*",
    "memristor_hil.crossbar": "*",
    "memristor_hil.url_options": "*",
    "protocol": {"learning", "lab", "experiments", "cli", "emulator", "drivers", "backends"},
    "drivers": {"learning", "lab", "experiments", "cli", "emulator", "backends"},
    "emulator": {"learning", "lab", "experiments", "cli", "drivers", "backends"},
    "learning": {"lab", "experiments", "cli", "emulator", "drivers", "protocol"},
    "lab": {"learning", "experiments", "cli", "emulator", "drivers", "protocol"},
}
BASE = {"memristor_hil.errors", "memristor_hil.powerlaw", "memristor_hil.pulses"}
BASE |= {"memristor_hil.crossbar", "memristor_hil.url_options"}


def test_the_tree_has_the_layers_it_promises():
    for layer in ("learning", "lab", "protocol", "experiments", "cli", "emulator", "drivers"):
        assert any(_layer(name) == layer for name in MODULES), layer
    assert "memristor_hil.emulator.kernels" in MODULES
    assert not any(name.startswith("memristor_hil.mpes") for name in MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_it(name):
    layer = _layer(name)
    forbidden = FORBIDDEN.get(name, FORBIDDEN.get(layer, set()))
    for target in GRAPH[name]:
        target_layer = _layer(target)
        if forbidden == "*":
            assert target in BASE or target == "memristor_hil", f"{name} imports {target}"
        else:
            short = target_layer.rpartition(".")[2]
            assert short not in forbidden, f"{name} ({layer}) imports {target}"


def test_there_are_no_import_cycles():
    # Package __init__ files re-export their modules; a cycle through one is not a cycle of
    # the code, so only module-to-module edges count.
    graph = {
        name: {t for t in targets if MODULES[t].name != "__init__.py"}
        for name, targets in GRAPH.items()
        if MODULES[name].name != "__init__.py"
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def _fresh(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_interface_the_codec_and_the_drivers_import_without_numba_or_nengo():
    code = (
        "import sys, memristor_hil, memristor_hil.protocol.messages, "
        "memristor_hil.protocol.framing, memristor_hil.protocol.scpi, memristor_hil.drivers, "
        "memristor_hil.cli; print(sorted(m for m in ('numba', 'nengo', 'matplotlib', 'scipy') "
        "if m in sys.modules))"
    )
    assert _fresh(code) == "[]"


def test_help_lists_the_learning_rule_and_its_layout():
    text = _fresh(
        "import pydoc, memristor_hil; "
        "print(pydoc.render_doc(memristor_hil, renderer=pydoc.plaintext))"
    )
    assert "class mPES" in text and "class Layout" in text and "class Crossbar" in text


class _Minimal(Crossbar):
    """The least a backend must write: three hooks."""

    def __init__(self) -> None:
        super().__init__((2, 3))
        self.state = np.full(6, 1e8)

    def _apply(self, batch, cells, read_back):
        self.state[cells.flat] *= 0.9
        return self.state[cells.flat] if read_back else None

    def _read(self, flat):
        return self.state[flat]


def test_optional_capabilities_are_declared_on_the_interface():
    xbar = _Minimal()
    assert xbar.model is None and not xbar.can_restore
    with pytest.raises(UnsupportedError, match="snapshot"):
        xbar.snapshot()
    with pytest.raises(UnsupportedError, match="restore"):
        xbar.restore(None)
    # and the base class checks addresses with NumPy alone before the hooks see them
    with pytest.raises(AddressError, match=r"cell \(2, 0\) is outside the 2x3"):
        xbar.apply(PulseBatch([0, 2], [1, 0]))
    assert np.all(xbar.state == 1e8)
    assert xbar.apply(PulseBatch([1, 0], [2, 0]), read_back=True).shape == (2,)
    assert xbar.read_region(0, 1, 2, 2).shape == (2, 2)


def test_default_shape_sizes_only_backends_that_take_a_shape(monkeypatch):
    with open_crossbar("emulator://?seed=1", default_shape=(3, 5)) as xbar:
        assert xbar.shape == (3, 5)
    with open_crossbar("emulator://?rows=2&cols=2", default_shape=(3, 5)) as xbar:
        assert xbar.shape == (2, 2)  # the URL wins
    seen = {}

    def fixed(url, **options):
        seen.update(options)
        return _Minimal()

    monkeypatch.setattr(sys.modules[__name__], "fixed_factory", fixed, raising=False)
    monkeypatch.setitem(_SCHEMES, "fixedbar", Scheme(f"{__name__}:fixed_factory"))
    assert "fixedbar" in schemes() and "fixedbar" not in hardware_schemes()
    with open_crossbar("fixedbar://x", default_shape=(3, 5)) as xbar:
        assert xbar.shape == (2, 3) and seen == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(name):
    """Private names stay in their module (issue 25: ``kernels._block_row`` was imported by
    ``pairs``, ``arc1._check_inside`` by ``arc2``): what two modules share is public."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        if base not in MODULES or base == name:
            continue
        private = [a.name for a in node.names if a.name.startswith("_") and a.name[:2] != "__"]
        assert not private, f"{name} imports {private} from {base}"
