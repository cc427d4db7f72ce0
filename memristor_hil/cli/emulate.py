"""``memristor-hil emulate``: the emulator as a service speaking the wire protocol."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ORDER = 20
DEFAULT_URL = "emulator://?rows=100&cols=100&seed=0"

#: Instruments the service can impersonate instead of speaking docs/protocol.md:
#: name -> (the transport it needs, "module:function" serving it like serve_serial/serve_tcp).
DIALECTS = {
    "arc1": ("serial", "memristor_hil.emulator.service.arc1:serve_arc1"),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "emulate",
        help="serve an emulated crossbar over a pseudo-terminal or TCP (SCPI)",
        description="Run an emulated crossbar as its own process, speaking the protocol of "
        "docs/protocol.md: binary frames on a pseudo-terminal (--serial; open it with "
        "serial://PATH) or SCPI on a TCP socket (--tcp; open it with "
        "visa://TCPIP::HOST::PORT::SOCKET). The first line on stdout is the port to open.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument(
        "--tcp", metavar="HOST:PORT", help="serve SCPI on this address (port 0: any free port)"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow --tcp on a non-loopback address"
    )
    parser.add_argument(
        "--dialect",
        choices=("scpi", *sorted(DIALECTS), "keithley2600"),
        default="scpi",
        help="what the service speaks: this project's protocol (scpi, default: binary frames on "
        "--serial, SCPI on --tcp); arc1: ArC ONE's command set on --serial (open it with "
        "arc1://PATH); keithley2600: a 2600B SMU on --tcp and a 707B matrix on --matrix-port, "
        "wired to the devices (TSP; docs/instruments.md)",
    )
    bench = parser.add_argument_group("--dialect keithley2600")
    bench.add_argument("--matrix-port", type=int, default=0, help="the matrix's port (0: any)")
    bench.add_argument("--map", type=Path, help="wiring map file (default: rows, then columns)")
    bench.add_argument("--forbid", default="", help="matrix channels that refuse to close")
    parser.add_argument("--url", default=DEFAULT_URL, help="emulator URL")
    parser.add_argument("--rows", type=int, help="rows (overrides the URL)")
    parser.add_argument("--cols", type=int, help="columns (overrides the URL)")
    parser.add_argument("--seed", type=int, help="device seed (overrides the URL)")
    parser.add_argument(
        "--state",
        type=Path,
        help="state file: restored from if it exists (the URL and shape options are then "
        "ignored), saved to periodically and on exit",
    )
    parser.add_argument(
        "--save-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="save a changed state this often (0: after every change, before replying)",
    )
    parser.add_argument(
        "--max-message",
        type=int,
        metavar="BYTES",
        help="largest message this device takes or sends, reported at IDENTIFY (a host splits "
        "larger batches; default: the protocol's bound)",
    )
    parser.add_argument(
        "--max-cells", type=int, metavar="N", help="most cells per command, reported at IDENTIFY"
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a claim ends after this long without a command from its host (default 30; 0: "
        "never); it also ends when the host's link closes (docs/protocol.md 5.1)",
    )
    tcp = parser.add_argument_group(
        "TCP service limits (docs/protocol.md, 'Service limits')",
        "Each client has its own parser and output buffer and sockets never block, so a client "
        "that does not read its replies delays nobody else. A client over --max-clients is "
        "sent one line saying why ('BUSY: ...') and closed. Unsent replies of 1 MiB per client "
        "(64 MiB in all) pause that client's further commands; partly received commands are "
        "bounded by 128 MiB across clients.",
    )
    tcp.add_argument(
        "--max-clients",
        type=int,
        default=64,
        metavar="N",
        help="connections served at once (default 64)",
    )
    tcp.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="close a client that sends nothing for this long (default 300)",
    )
    tcp.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="close a client that leaves its replies unread this long (default 30)",
    )
    faults = parser.add_argument_group("fault injection (for tests)")
    faults.add_argument("--corrupt", type=float, default=0.0, help="P(a transfer has a bad byte)")
    faults.add_argument("--drop-byte", type=float, default=0.0, help="P(a transfer loses a byte)")
    faults.add_argument("--drop-reply", type=float, default=0.0, help="P(a reply is not sent)")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    faults.add_argument("--fault-seed", type=int, help="seed of the fault stream")
    faults.add_argument(
        "--drop-after", type=int, default=0, help="keithley2600: drop the link at line N"
    )
    faults.add_argument(
        "--stall-after", type=int, default=0, help="keithley2600: stop answering at line N"
    )
    parser.add_argument("--quiet", action="store_true", help="no event lines on stderr")
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="when the service accepts connections, write its address line to PATH (whole, "
        "at once; removed when it stops): a script started it with & waits for the file, e.g. "
        "until [ -s PATH ]; do sleep 0.1; done (not with --dialect keithley2600)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from memristor_hil.emulator.service.core import CrossbarService
    from memristor_hil.emulator.service.faults import Faults
    from memristor_hil.emulator.service.stop import StopFlag
    from memristor_hil.emulator.url import open_emulator

    faults = Faults(args.corrupt, args.drop_byte, args.drop_reply, args.latency, args.fault_seed)
    address = None
    if args.tcp is not None:
        from memristor_hil.emulator.service.tcp import parse_address

        address = parse_address(args.tcp, args.allow_remote)
    if args.dialect == "keithley2600":
        if address is None:
            raise ValueError("--dialect keithley2600 needs --tcp")
        if args.ready_file is not None:
            raise ValueError("--ready-file is not offered with --dialect keithley2600")
        try:
            from memristor_hil.emulator.service.keithley_service import serve_keithley
        except ImportError as exc:  # lupa is an extra
            raise ValueError(
                f"--dialect {args.dialect} needs {exc.name}: pip install "
                "'memristor-hil[bench-emulator]'"
            ) from None

        return serve_keithley(args, address, lambda text: say(args, text))
    if args.dialect in DIALECTS:
        transport = DIALECTS[args.dialect][0]
        if (transport == "serial") != (address is None):
            raise ValueError(f"--dialect {args.dialect} needs --{transport}")
    options = {
        key: value
        for key, value in (("rows", args.rows), ("cols", args.cols), ("seed", args.seed))
        if value is not None
    }
    service_options = {
        "save_interval": args.save_interval,
        "log": not args.quiet,
        "lease": args.lease,
    }
    for key in ("max_message", "max_cells"):
        if getattr(args, key) is not None:
            service_options[key] = getattr(args, key)
    if args.save_interval < 0:
        raise ValueError(f"--save-interval must be >= 0, got {args.save_interval}")
    if args.state is not None and args.state.exists():
        try:
            service = CrossbarService.restore(args.state, **service_options)
        except Exception as exc:  # a damaged file: say which, don't overwrite it
            raise ValueError(f"cannot restore the state in {args.state}: {exc}") from exc
        say(args, f"restored {service.xbar.shape} crossbar from {args.state}")
    else:
        xbar = open_emulator(args.url, **options)
        service = CrossbarService(xbar, state_path=args.state, **service_options)
        service.save()
    service.warm_up()
    stop = StopFlag()
    stop.install()

    def announce(where: str) -> None:
        if args.ready_file is not None:  # first: whoever reads the line finds the file too
            _write_ready(args.ready_file, where)
        print(where, flush=True)
        say(args, f"serving {service.xbar.identity} on {where}")

    try:
        if args.dialect in DIALECTS:
            module, func = DIALECTS[args.dialect][1].split(":")
            serve = getattr(importlib.import_module(module), func)
            where = {} if address is None else {"address": address}
            serve(service, stop, announce, faults, **where)
        elif address is None:
            from memristor_hil.emulator.service.serial import serve_serial

            serve_serial(service, stop, announce, faults)
        else:
            from memristor_hil.emulator.service.tcp import TcpLimits, serve_tcp

            limits = TcpLimits(args.max_clients, args.idle_timeout, args.stall_timeout)
            serve_tcp(service, stop, address, announce, faults, limits)
    finally:
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
        service.save()
        stop.close()
        if faults.injected:
            say(args, f"faults injected: {faults.injected}")
    say(args, f"stopped ({stop.reason}); state saved" if args.state else f"stopped ({stop.reason})")
    return 0


def _write_ready(path: Path, where: str) -> None:
    """Write ``where`` to ``path`` atomically: a reader sees no file or the whole line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(where + "\n")
    os.replace(tmp, path)


def say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"memristor-hil emulate: {text}", file=sys.stderr, flush=True)
