"""Let Nengo 4.1's pytest plugin load under pytest 9, in any folder, with no ``-p`` flag.

Nengo 4.1.0 (the newest release) ships a pytest plugin, ``pytest_nengo``, whose
``pytest_report_collectionfinish(config, startdir, items)`` names the ``startdir`` argument that
pytest 9 removed from the hook. pytest validates every plugin it loads against its hooks, so
with Nengo 4.1 and pytest 9 installed together, *any* ``pytest`` run stops before collecting::

    PluginValidationError: Plugin 'nengo' for hook 'pytest_report_collectionfinish' ...

memristor-hil depends on Nengo, so installing it is enough to break a lab's pytest. This
module mends the one hook when ``pytest_nengo`` is imported: the replacement takes
``(config, items)`` (valid for every pytest since 7) and gives the original ``None`` for the
``startdir`` it never reads. Nothing else of Nengo's plugin changes; a ``pytest_nengo`` that no
longer names ``startdir`` (a fixed Nengo) is left alone.

It must act before pytest registers Nengo's plugin, and pytest loads the ``pytest11`` entry
points of installed packages in file-system order, so memristor-hil's own plugin may come too
late; and pytest imports plugin modules through its assertion-rewriting import hook, which goes
first in ``sys.meta_path``. Hence the wheel (and an editable install) puts
``memristor_hil_nengo_compat.pth`` next to this module: Python's ``site`` runs it at start-up
and it adds a finder to ``sys.meta_path`` that looks only at the name ``pytest`` (one string
comparison per import). When ``pytest`` has been imported, the finder imports ``pytest_nengo``
(a small module that imports only pytest and the standard library, and that pytest imports
anyway) and mends it, marked ``PYTEST_DONT_REWRITE`` so pytest does not warn that it was
imported before its rewrite hook. memristor-hil's pytest plugin calls :func:`install` too, for
an interpreter started without ``site``.
"""

from __future__ import annotations

import importlib.machinery
import sys
from types import ModuleType

TYPE_CHECKING = False  # typing is not imported: this module loads at every interpreter start
if TYPE_CHECKING:
    from typing import Any

#: The module Nengo's ``pytest11`` entry point loads.
NENGO_PLUGIN = "pytest_nengo"


def mend(module: ModuleType) -> bool:
    """Give ``module.pytest_report_collectionfinish`` a signature pytest 9 accepts.

    Returns ``True`` when the hook named ``startdir`` and was replaced, ``False`` otherwise.
    """
    hook = getattr(module, "pytest_report_collectionfinish", None)
    if hook is None or getattr(hook, "_memristor_hil_mended", False):
        return False
    import inspect

    try:
        names = inspect.signature(hook).parameters
    except (TypeError, ValueError):
        return False
    if "startdir" not in names:
        return False

    def pytest_report_collectionfinish(config: Any, items: Any) -> Any:
        return hook(config=config, startdir=None, items=items)

    pytest_report_collectionfinish.__doc__ = hook.__doc__
    pytest_report_collectionfinish._memristor_hil_mended = True  # type: ignore[attr-defined]
    module.pytest_report_collectionfinish = pytest_report_collectionfinish
    return True


def mend_nengo_plugin() -> None:
    """Import ``pytest_nengo`` if Nengo is installed, and :func:`mend` it."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(NENGO_PLUGIN) is None:
        return
    module = importlib.import_module(NENGO_PLUGIN)
    if mend(module):
        module.__doc__ = (module.__doc__ or "") + (
            "\n\nPYTEST_DONT_REWRITE: imported and mended by memristor_hil_nengo_compat before"
            " pytest's assertion-rewriting hook was installed.\n"
        )


def _mend_quietly() -> None:
    """:func:`mend_nengo_plugin`, never raising: this runs at interpreter start-up and inside
    pytest's import of itself, and a broken Nengo is reported by pytest itself, as without us."""
    try:
        mend_nengo_plugin()
    except Exception:
        pass


class _MendingLoader:
    """Runs pytest's own loader, then :func:`mend_nengo_plugin` (:func:`_mend_quietly`)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _mend_quietly()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class PytestImportFinder:
    """A ``sys.meta_path`` finder for ``pytest`` alone; every other name is passed on."""

    @staticmethod
    def find_spec(
        fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "pytest":
            return None
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        except Exception:
            return None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # found by another finder, or not at all: import it as usual
        spec.loader = _MendingLoader(spec.loader)
        return spec


def install() -> None:
    """Mend ``pytest_nengo`` now if pytest is imported, else when it is (idempotent)."""
    if "pytest" in sys.modules:
        _mend_quietly()  # from the .pth or our pytest plugin: neither may fail on Nengo's account
    elif not any(isinstance(finder, PytestImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PytestImportFinder())


install()
