"""``memristor-hil emulate --dialect keithley2600``: the emulated SMU + matrix bench as a service.

Two TCP ports, one process: the 2600B on ``--tcp`` and the 707B on ``--matrix-port``, both
switching and pulsing the same emulated devices (:class:`~.bench.Bench`), the matrix reachable
from the SMU's scripts as TSP-Link node 2. The first stdout line is ``HOST:PORT HOST:PORT``
(SMU, matrix).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from memristor_hil.protocol.tsp import Wiring
from memristor_hil.url_options import query_options

from .bench import Bench
from .keithley707b import Keithley707B
from .keithley2600 import Keithley2600
from .stop import StopFlag
from .tsp_tcp import serve_tsp

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

    try:
        serve_tsp(
            [(smu, address), (matrix, (host, int(args.matrix_port)))],
            stop,
            announce,
            latency=float(args.latency),
            drop_after=int(args.drop_after),
            stall_after=int(args.stall_after),
        )
    finally:
        stop.close()
    say(f"stopped ({stop.reason}); {bench.counts}")
    return 0
