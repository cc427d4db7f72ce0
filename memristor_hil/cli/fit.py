"""``memristor-hil fit RECORD``: fit R0, R1, a per device; write a parameter file and a plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memristor_hil.lab.read_effects import ReadEffects

ORDER = 40


def _r0(text: str) -> str | float:
    if text in ("auto", "free"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--r0 takes 'auto', 'free' or a resistance in ohm, not {text!r}"
        ) from None


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fit",
        help="fit the power law to each device in a record; write parameters and a plot",
        description="Fit R(m) = R0 + R1 (n0 + m)^a to each device's readings in a record "
        "(m: pulses in the record; n0: the device's unknown pulse count when the record began), "
        "print the medians and device-to-device spreads, and write a parameter file that "
        "emulator://?params=FILE and mPES accept, plus a PNG of the data and the fits.",
        epilog="examples:\n  memristor-hil fit records/chip7.sqlite\n"
        "  memristor-hil fit records/chip7.sqlite --r0 150 --json chip7.json\n"
        "then:  memristor-hil info 'emulator://?rows=8&cols=8&params=chip7.json'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("record", type=Path, help="a record written by characterize")
    parser.add_argument(
        "--r0",
        type=_r0,
        default="auto",
        help="'auto': fit R0 unless the readings cannot determine it, then fix it at "
        "200 ohm and say so; 'free': always fit it; or a value in ohm to fix it at",
    )
    parser.add_argument(
        "--json", type=Path, help="parameter file to write (default RECORD with -fit.json)"
    )
    parser.add_argument("--plot", type=Path, help="PNG to write (default RECORD with -fit.png)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    json_path = args.json or args.record.with_name(args.record.stem + "-fit.json")
    plot_path = args.plot or args.record.with_name(args.record.stem + "-fit.png")
    from memristor_hil.lab.fitting import fit_record  # scipy: only when fitting
    from memristor_hil.lab.record import Record

    from ._progress import ProgressBar

    with Record.open(args.record) as record:
        print(f"{record.identity}: {record.shape[0]}x{record.shape[1]} crossbar, {len(record)} "
              "events")  # fmt: skip
        result = fit_record(record, r0=args.r0, progress=ProgressBar("fitting", unit="device"))
    summary = result.summary()
    print(f"fitted {int(result.ok.sum())} of {result.cells.size} devices at "
          f"{result.voltage:g} V")  # fmt: skip
    print(f"{'parameter':<10} {'median':>14} {'mean':>14} {'sigma (rel.)':>13}")
    for name, label in (("r0", "R0 (ohm)"), ("r1", "R1 (ohm)"), ("a", "a"), ("r_init", "R_init")):
        s = summary[name]
        fixed = name == "r0" and result.r0_fixed is not None
        sigma = "fixed" if fixed else f"{s['sigma']:.4f}"
        print(f"{label:<10} {s['median']:>14.6g} {s['mean']:>14.6g} {sigma:>13}")
    effects = result.effects
    if effects is not None:
        print(f"read noise: {_describe_noise(effects)}")
        print(f"stuck:      {_describe_stuck(effects)}")
    for note in result.notes:
        print(f"note: {note}")
    result.write_json(json_path)
    result.write_plot(plot_path)
    print(f"parameters: {json_path}")
    print(f"plot:       {plot_path}")
    extra = effects.url_options() if effects is not None else ""
    url = f"emulator://?rows=R&cols=C&params={json_path}" + (f"&{extra}" if extra else "")
    print(f"use:        {url}")
    return 0


def _describe_noise(effects: ReadEffects) -> str:
    from memristor_hil.lab.read_effects import READ_RESOLUTION

    if effects.read_noise is None:
        return "not measured (no device was read twice without a pulse between)"
    if effects.read_noise == 0:
        return f"none seen ({effects.pairs} repeated reads agree to {READ_RESOLUTION:g} of R)"
    return f"{effects.read_noise:.3g} of R per read (from {effects.pairs} repeated reads)"


def _describe_stuck(effects: ReadEffects) -> str:
    if effects.stuck is None:
        return "cannot tell (the train did not move the devices far beyond the read noise)"
    return f"{effects.stuck.size} of {effects.devices} devices (no pulse moved them)"
