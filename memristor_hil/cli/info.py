"""``memristor-hil info URL``: who the crossbar is, its shape and its safety limits."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info",
        help="show a crossbar's identity, shape and safety limits",
        description="Open a crossbar (nothing is pulsed and nothing is recorded) and print its "
        "identity, shape and safety limits.",
        epilog="examples:\n  memristor-hil info 'emulator://?rows=4&cols=8'\n"
        "  memristor-hil info visa://TCPIP::127.0.0.1::5025::SOCKET\n"
        "  memristor-hil info serial:///dev/ttyUSB0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="crossbar URL: emulator://?..., serial://PORT, visa://RESOURCE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from memristor_hil import open_crossbar

    with open_crossbar(args.url, record=False) as xbar:
        info = {
            "url": args.url,
            "identity": xbar.identity,
            "backend": type(xbar).__name__,
            "rows": xbar.shape[0],
            "cols": xbar.shape[1],
            "limits": asdict(xbar.limits),
        }
        if xbar.model is not None:  # an emulator: show the device model it draws from
            info["model"] = xbar.model.to_dict()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    limits = info["limits"]
    print(f"identity:   {info['identity']}")
    print(f"backend:    {info['backend']}")
    print(f"shape:      {info['rows']} x {info['cols']} ({info['rows'] * info['cols']} cells)")
    print("safety limits:")
    print(f"  voltage     {limits['v_min']:g} .. {limits['v_max']:g} V")
    print(f"  width       {limits['width_min']:g} .. {limits['width_max']:g} s")
    print(f"  pulses      at most {limits['max_pulses']} per cell per batch")
    print(f"  compliance  {limits['compliance']:g} A")
    if "model" in info:
        m, v = info["model"], info["model"]["variability"]
        print("device model (emulated):")
        print(f"  R = R0 + R1 n^a with R0={m['r0']:.6g} ohm, R1={m['r1']:.6g} ohm, a={m['a']:.6g} "
              f"at {m['v_ref']:g} V; initial R {m['r_init']:.6g} ohm")  # fmt: skip
        print(f"  variability (relative sigma): R0 {v['r0']:.4g}, R1 {v['r1']:.4g}, "
              f"a {v['a']:.4g}, R_init {v['r_init']:.4g}; noise {m['noise']:g}")  # fmt: skip
    return 0
