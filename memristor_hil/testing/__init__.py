"""Testing lab code without hardware: the emulator service for tests, and a pytest plugin.

:class:`EmulatorService` starts ``memristor-hil emulate`` as its own process and tells the URL
to open; the pytest plugin ``pytest_memristor_hil`` (registered when memristor-hil is
installed) gives tests fixtures built on it. ``docs/testing.md`` shows both in a lab's CI.
"""

from .service import EmulatorService, ServiceError, emulator_url, state_from_file

__all__ = ["EmulatorService", "ServiceError", "emulator_url", "state_from_file"]
