"""Only what pyproject.toml cannot say: install ``memristor_hil_nengo_compat.pth`` into
site-packages, from a wheel and from an editable install alike (memristor_hil_nengo_compat.py
says why it must run at interpreter start-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "memristor_hil_nengo_compat.pth"


class BuildPyWithPth(build_py):
    """build_py that also puts the .pth file at the wheel's root."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            self.copy_file(PTH, str(Path(self.build_lib) / PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib) / PTH)]


class _WithPth:
    """An editable strategy (setuptools' own) that also writes the .pth into the wheel."""

    def __init__(self, strategy: Any) -> None:
        self._strategy = strategy

    def __call__(self, wheel: Any, files: list[str], mapping: Any) -> object:
        result = self._strategy(wheel, files, mapping)
        wheel.writestr(PTH, Path(PTH).read_bytes())
        return result

    def __enter__(self) -> _WithPth:
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._strategy.__exit__(*exc)


class EditableWheelWithPth(editable_wheel):
    """``pip install -e``: setuptools' editable wheel plus the .pth file."""

    def _select_strategy(self, *args: Any, **kwargs: Any) -> Any:
        return _WithPth(super()._select_strategy(*args, **kwargs))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
