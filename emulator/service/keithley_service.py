"""``memristor-hil emulate --dialect keithley2600``: the emulated SMU + matrix bench as a service.

Two TCP ports, one process: the 2600B on ``--tcp`` and the 707B on ``--matrix-port``, both
switching and pulsing the same emulated devices (:class:`~.bench.Bench`), the matrix reachable
from the SMU's scripts as TSP-Link node 2. Both are served by the main service's TCP server
(:func:`~.tcp.serve_sessions`) and share its limits (``--max-clients`` across both ports,
``--idle-timeout``, ``--stall-timeout``). The first stdout line is ``HOST:PORT HOST:PORT``
(SMU, matrix).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from memristor_hil.protocol.tsp import Wiring
from memristor_hil.url_options import query_options

from .bench import Bench
from .faults import Faults
from .keithley707b import Keithley707B
from .keithley2600 import Keithley2600
from .stop import StopFlag
from .tcp import TcpLimits, serve_sessions
from .tsp_tcp import TspFaults, TspSession

__all__ = ["serve_keithley"]


def serve_keithley(
    args: argparse.Namespace, address: tuple[str, int], say: Callable[[str], None]
) -> int:
    """Serve the bench until SIGINT/SIGTERM; ``args`` are ``emulate``'s options."""
    if args.state is not None:
        raise ValueError("--state is not supported with --dialect keithley2600")
    wiring = Wiring.load(args.map) if args.map else None
    options = {k: getattr(args, k) for k in ("rows", "cols", "seed") if getattr(args, k)}
    url = args.url
    if options:
        url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in options.items())
    if wiring is not None and not {"rows", "cols"} & set(query_options(url)[1]):
        url += ("&" if "?" in url else "?") + f"rows={wiring.shape[0]}&cols={wiring.shape[1]}"
    log = say if not args.quiet else None
    forbidden = [c for c in args.forbid.split(",") if c.strip()]
    bench = Bench.from_url(url, wiring, forbidden=forbidden or None, log=log)
    bench.warm_up()
    smu = Keithley2600(bench, log=log)
    matrix = Keithley707B(bench, log=log)
    stop = StopFlag()
    stop.install()
    host = address[0]

    def announce(where: str) -> None:
        print(where, flush=True)
        say(f"serving a {bench.xbar.shape} bench: 2600B + 707B on {where}")

    faults = Faults(args.corrupt, args.drop_byte, args.drop_reply, args.latency, args.fault_seed)
    links = TspFaults(int(args.drop_after), int(args.stall_after))
    limits = TcpLimits(args.max_clients, args.idle_timeout, args.stall_timeout)
    endpoints = [
        (address, lambda: TspSession(smu, links)),
        ((host, int(args.matrix_port)), lambda: TspSession(matrix, links)),
    ]
    try:
        serve_sessions(_Host(say), stop, endpoints, announce, faults, limits)
    finally:
        stop.close()
    say(f"stopped ({stop.reason}); {bench.counts}")
    return 0


class _Host:
    """What the TCP server asks of the bench besides sessions: event lines (nothing to save)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def tick(self) -> None:
        pass

    def seconds_to_next_save(self) -> None:
        return None
