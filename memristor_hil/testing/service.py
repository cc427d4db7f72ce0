"""The emulator service as a subprocess a test can start, talk to, kill and restart.

:class:`EmulatorService` runs ``python -m memristor_hil emulate ...`` in its own process, reads
the address it announces on its first line of output, and knows the URL a driver opens
(``serial://`` for a pseudo-terminal, ``visa://`` for TCP). The pytest plugin
(``pytest_memristor_hil``) builds its fixtures on it; scripts can use it directly.

Only the standard library is imported here; the drivers load when :meth:`EmulatorService.read_all`
needs one.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

__all__ = ["EmulatorService", "ServiceError", "emulator_url", "state_from_file"]

#: Seconds to wait for a starting service to announce its address (numba compiles on the
#: first start of a fresh machine, which can take a while).
START_TIMEOUT = 120.0

_LIVE: weakref.WeakSet[EmulatorService] = weakref.WeakSet()


class ServiceError(RuntimeError):
    """The service did not start, or did not stop, as asked; the message holds its log."""


def emulator_url(
    rows: int = 10,
    cols: int = 10,
    seed: int | None = 0,
    **model: Any,
) -> str:
    """An ``emulator://`` URL: shape, seed and any device-model query options.

    Parameters
    ----------
    rows, cols : int
        The crossbar's shape.
    seed : int or None
        Device seed (None: a random crossbar).
    **model
        ``emulator://`` options: ``sigma``, ``noise``, ``r0``, ``a``, ``dtype``,
        ``params`` (a parameter file) ...

    Examples
    --------
    >>> emulator_url(4, 8, seed=3, sigma=0.15)
    'emulator://?rows=4&cols=8&seed=3&sigma=0.15'
    """
    query: dict[str, Any] = {"rows": int(rows), "cols": int(cols)}
    if seed is not None:
        query["seed"] = int(seed)
    query.update(model)
    return "emulator://?" + urlencode(query)


class EmulatorService:
    """``memristor-hil emulate`` in its own process.

    Parameters
    ----------
    *args : str
        Command-line options of ``memristor-hil emulate``: ``--serial`` or ``--tcp
        HOST:PORT`` (port 0 picks a free one), ``--state FILE``, ``--save-interval S``, fault
        options (``--corrupt P`` ...). See :meth:`start` for a keyword form.
    url : str
        The ``emulator://`` URL of the devices served.
    env : mapping, optional
        Extra environment variables for the process.

    Attributes
    ----------
    proc : subprocess.Popen
        The process.
    where : str
        What the service announced: a pseudo-terminal path, or ``HOST:PORT``.

    Notes
    -----
    A service is always stopped: by :meth:`kill`/:meth:`stop`, when used as a context
    manager, and at interpreter exit for any still running.
    """

    def __init__(
        self, *args: str, url: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.emulator_url = url or emulator_url()
        self._env = {**os.environ, **(env or {})}
        self._log = tempfile.TemporaryFile()
        self.proc: subprocess.Popen[bytes]
        self.where = ""
        self._launch()

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(
        cls,
        transport: str = "serial",
        *,
        rows: int = 10,
        cols: int = 10,
        seed: int | None = 0,
        model: Mapping[str, Any] | None = None,
        state: str | os.PathLike[str] | None = None,
        save_interval: float | None = None,
        faults: Mapping[str, float] | None = None,
        dialect: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> EmulatorService:
        """Start a service described by keywords.

        Parameters
        ----------
        transport : {"serial", "tcp"}
            A pseudo-terminal (``serial://``) or SCPI on a loopback TCP port (``visa://``).
        rows, cols, seed : int
            Shape and device seed.
        model : mapping, optional
            ``emulator://`` model options, e.g. ``{"sigma": 0.15, "noise": 0.05}``.
        state : path-like, optional
            State file (restored from when it exists; saved on changes and at exit).
        save_interval : float, optional
            Seconds between state saves (0: before every reply, so nothing acknowledged is
            lost to a kill).
        faults : mapping, optional
            Injected faults: ``corrupt``, ``drop_byte``, ``drop_reply`` (probabilities),
            ``latency`` (seconds), ``fault_seed``.
        dialect : str, optional
            An instrument dialect the service speaks instead of the project's protocol, for
            the versions of ``memristor-hil emulate`` that have one (``--dialect``).
        extra_args : tuple of str
            More ``memristor-hil emulate`` options, passed as they are.
        env : mapping, optional
            Extra environment variables.
        """
        if transport not in ("serial", "tcp"):
            raise ValueError(f"transport must be 'serial' or 'tcp', got {transport!r}")
        args = ["--serial"] if transport == "serial" else ["--tcp", "127.0.0.1:0"]
        if state is not None:
            args += ["--state", os.fspath(state)]
        if save_interval is not None:
            args += ["--save-interval", repr(float(save_interval))]
        for name, value in (faults or {}).items():
            if name not in ("corrupt", "drop_byte", "drop_reply", "latency", "fault_seed"):
                raise ValueError(f"unknown fault {name!r}")
            args += [f"--{name.replace('_', '-')}", str(value)]
        if dialect is not None:
            args += ["--dialect", dialect]
        args += list(extra_args)
        url = emulator_url(rows, cols, seed, **dict(model or {}))
        return cls(*args, url=url, env=env)

    def _launch(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memristor_hil",
                "emulate",
                *self.args,
                "--url",
                self.emulator_url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self._env,
            start_new_session=True,  # a Ctrl-C at the terminal reaches pytest, which stops it
        )
        _LIVE.add(self)
        self.where = self._first_line(START_TIMEOUT)

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not line.endswith(b"\n"):
            self.kill()
            raise ServiceError(f"memristor-hil emulate did not announce its address:\n{self.log}")
        text = line.decode().strip()
        # newer services announce the URL to open; older ones the bare address
        for prefix in ("serial://", "visa://TCPIP::"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                if prefix.startswith("visa"):
                    host, port = text.split("::")[:2]
                    text = f"{host}:{port}"
        return text

    # ------------------------------------------------------------------ where to connect
    @property
    def transport(self) -> str:
        """``"serial"`` or ``"tcp"``."""
        return "tcp" if any(a.startswith("--tcp") for a in self.args) else "serial"

    @property
    def url(self) -> str:
        """The crossbar URL a driver opens: ``serial://PATH`` or ``visa://TCPIP::H::P::SOCKET``."""
        return self.visa_url if self.transport == "tcp" else self.serial_url

    @property
    def serial_url(self) -> str:
        return f"serial://{self.where}"

    @property
    def visa_url(self) -> str:
        host, port = self.where.rsplit(":", 1)
        return f"visa://TCPIP::{host}::{port}::SOCKET"

    @property
    def port(self) -> int:
        """The TCP port (``tcp`` transport)."""
        return int(self.where.rsplit(":", 1)[1])

    @property
    def log(self) -> str:
        """Everything the service wrote on stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    #: The old name of :attr:`log`.
    stderr = log

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    # ------------------------------------------------------------------ talking to it
    def read_all(self, timeout: float = 5.0) -> Any:
        """Every cell's resistance, through a connection of its own (nothing is recorded).

        A serial port has one host at a time: close your own connection to a ``serial``
        service first.
        """
        from memristor_hil import open_crossbar

        with open_crossbar(self.url, record=False, timeout=timeout) as xbar:
            return xbar.read_all()

    # ------------------------------------------------------------------ stopping
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` (default SIGTERM: the service saves its state and exits) and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServiceError(f"the service ignored signal {sig} for {timeout} s") from None
        finally:
            self._close_pipe()

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would (nothing is saved beyond what was)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._close_pipe()

    def restart(self, timeout: float = START_TIMEOUT) -> EmulatorService:
        """Stop the service if it runs (SIGKILL) and start it again with the same options.

        With a state file (``--state``) the devices come back as last saved. The new process
        may announce a new address (a new pseudo-terminal, a new port): :attr:`url` follows.
        """
        if self.running:
            self.kill()
        self._launch()
        return self

    def _close_pipe(self) -> None:
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def __enter__(self) -> EmulatorService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.proc.returncode}"
        return f"<EmulatorService {self.url} {state}>"


@atexit.register
def _kill_leftovers() -> None:
    for service in list(_LIVE):
        if service.running:
            service.kill()


def state_from_file(path: str | os.PathLike[str]) -> Any:
    """Every cell's resistance as saved in a state file (the service need not run)."""
    from memristor_hil.emulator import EmulatedCrossbar

    with EmulatedCrossbar.from_state(Path(path)) as xbar:
        return xbar.read_all()
