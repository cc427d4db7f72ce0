"""pytest plugin of memristor-hil: an emulated crossbar for your tests, in process or as a
service, with faults.

Installing memristor-hil registers this plugin (entry point ``pytest11``, name
``memristor_hil``). It does nothing until a test asks for one of its fixtures: it is a
top-level module, so loading it imports only pytest and the standard library, not
memristor_hil (NumPy and the rest load when a fixture first runs). Disable it with
``-p no:memristor_hil``.

Nengo 4.1's own pytest plugin does not load under pytest 9; memristor-hil mends it at start-up
(:mod:`memristor_hil_nengo_compat`), so a lab's ``pytest`` needs no ``-p no:nengo``.

Fixtures
--------
crossbar_url
    A seeded ``emulator://`` URL (in process), or the URL given with ``--crossbar-url``.
crossbar_service
    The emulator service as its own process; an :class:`.EmulatorService` with ``.url``,
    ``.proc``, ``.log``, ``.read_all()``, ``.kill()``, ``.restart()``. Options come from
    ``@pytest.mark.crossbar_service(transport="tcp", rows=8, ...)`` or from indirect
    parametrisation with a dict of the same keywords (see :meth:`.EmulatorService.start`).
faulty_crossbar_service
    The same with seeded faults injected (corrupted bytes, dropped replies, latency).
crossbar_service_factory
    A function starting any number of services; all are stopped at teardown.
crossbar_service_session
    One TCP service shared by the whole session (its devices carry over between tests).

Every service is stopped after its test, also when the test fails or is interrupted; records
that hardware URLs write by default go to the test's temporary folder.

Options
-------
--crossbar-url URL
    Run the tests that use ``crossbar_url`` against this crossbar (a bench instrument)
    instead of the emulator.
--run-hardware
    Also give the URL to tests marked ``@pytest.mark.hardware``; without it they run on the
    emulator, so a test that must never pulse a real device unasked never does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import memristor_hil_nengo_compat

if TYPE_CHECKING:
    from memristor_hil.testing.service import EmulatorService

#: What a faulty service injects unless the test says otherwise.
DEFAULT_FAULTS = {"corrupt": 0.02, "drop_reply": 0.02, "latency": 0.0, "fault_seed": 1}
_SERVICE_KEYS = (
    "transport",
    "rows",
    "cols",
    "seed",
    "model",
    "state",
    "save_interval",
    "faults",
    "dialect",
    "extra_args",
)


memristor_hil_nengo_compat.install()  # for an interpreter started without ``site``


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memristor_hil", "memristor-hil crossbars")
    group.addoption(
        "--crossbar-url",
        default=None,
        metavar="URL",
        help="run tests using the crossbar_url fixture against this crossbar instead of the "
        "in-process emulator (e.g. a bench instrument)",
    )
    group.addoption(
        "--run-hardware",
        action="store_true",
        default=False,
        help="also give --crossbar-url to tests marked 'hardware' (otherwise they use the "
        "emulator)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "hardware: the test may pulse the crossbar given with --crossbar-url only when "
        "--run-hardware is given; otherwise it gets the emulator",
    )
    config.addinivalue_line(
        "markers",
        "crossbar_service(**options): options of the crossbar_service fixtures "
        "(transport, rows, cols, seed, model, state, save_interval, faults, dialect)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    url = config.getoption("--crossbar-url")
    if url is None:
        return None
    marked = "too" if config.getoption("--run-hardware") else "not (they use the emulator)"
    return f"memristor-hil: crossbar_url = {url}; tests marked hardware: {marked}"


# ---------------------------------------------------------------------------- in process
@pytest.fixture
def crossbar_url(request: pytest.FixtureRequest) -> str:
    """A URL to open with ``open_crossbar``: a seeded emulator, or ``--crossbar-url``.

    The emulator is 10 x 10 with device variability (``sigma=0.15``), seeded from the test's
    name so every test is reproducible and different tests get different devices.
    """
    given = request.config.getoption("--crossbar-url")
    marked = request.node.get_closest_marker("hardware") is not None
    if given and (not marked or request.config.getoption("--run-hardware")):
        return given
    from memristor_hil.testing.service import emulator_url

    return emulator_url(10, 10, seed=_seed_of(request.node.nodeid), sigma=0.15)


def _seed_of(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------- services
def _options(request: pytest.FixtureRequest, **defaults: Any) -> dict[str, Any]:
    options = dict(defaults)
    marker = request.node.get_closest_marker("crossbar_service")
    if marker is not None:
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        options.update(param)
    elif param is not None:
        raise TypeError(f"parametrise crossbar_service with dicts of options, got {param!r}")
    unknown = sorted(set(options) - set(_SERVICE_KEYS))
    if unknown:
        raise TypeError(f"unknown crossbar_service options {unknown}; known: {_SERVICE_KEYS}")
    return options


@pytest.fixture
def crossbar_service_factory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., EmulatorService]]:
    """``start(**options) -> EmulatorService``; every service started is stopped at teardown.

    Keywords as :meth:`memristor_hil.testing.EmulatorService.start`; a ``state=True`` option
    puts a state file in a temporary folder. ``start(*cli_args, url=...)`` passes
    ``memristor-hil emulate`` options as they are (``start("--serial", url=...)``).
    """
    from memristor_hil.testing.service import EmulatorService

    folder = tmp_path_factory.mktemp("crossbar-service")
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", os.fspath(folder / "records"))
    started: list[EmulatorService] = []

    def start(*cli_args: str, **options: Any) -> EmulatorService:
        if cli_args:
            service = EmulatorService(*cli_args, **options)
            started.append(service)
            return service
        if options.get("state") is True:
            options["state"] = folder / f"state-{len(started)}.npz"
        service = EmulatorService.start(**options)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.kill()


@pytest.fixture
def crossbar_service(
    request: pytest.FixtureRequest, crossbar_service_factory: Callable[..., EmulatorService]
) -> EmulatorService:
    """The emulator service in its own process (default: a 10 x 10 crossbar on a pty)."""
    return crossbar_service_factory(**_options(request))


@pytest.fixture
def faulty_crossbar_service(
    request: pytest.FixtureRequest, crossbar_service_factory: Callable[..., EmulatorService]
) -> EmulatorService:
    """The emulator service with seeded faults (:data:`DEFAULT_FAULTS` unless told)."""
    options = _options(request)
    options["faults"] = {**DEFAULT_FAULTS, **options.get("faults", {})}
    return crossbar_service_factory(**options)


@pytest.fixture(scope="session")
def crossbar_service_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmulatorService]:
    """One TCP service (10 x 10, seed 0) for the whole session: start-up paid once."""
    from memristor_hil.testing.service import EmulatorService

    folder = tmp_path_factory.mktemp("crossbar-session")
    service = EmulatorService.start(
        "tcp", env={"MEMRISTOR_HIL_RECORDS": os.fspath(folder / "records")}
    )
    try:
        yield service
    finally:
        service.kill()
