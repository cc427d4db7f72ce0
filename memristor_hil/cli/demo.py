"""``memristor-hil demo``: learn x^2 with mPES on memristors (emulated or served), beside PES."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

ORDER = 10

#: The mPES variants the demo runs, with their settings (besides the device seed and sigma):
#: the default policy, and the rule as published.
VARIANTS = (
    ("mPES", {"pulses": "learning_rate"}),
    ("mPES-one", {"pulses": "one"}),
)


def _cell(text: str) -> tuple[int, int]:
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layout takes ROW,COL, not {text!r}") from None
    if row < 0 or col < 0:
        raise argparse.ArgumentTypeError(f"--layout {text}: ROW and COL must be >= 0")
    return row, col


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="learn f(x) = x^2 with mPES on memristors and compare with PES",
        description="Learn f(x) = x^2 through a neuron-to-neuron connection whose weights are "
        "pairs of power-law memristors (mPES: its default, and as published), "
        "and through the same network with Nengo's PES. The memristors are an in-process "
        "emulator by default, or any crossbar URL (--crossbar: the emulator service, a real "
        "board). Each mPES variant gets devices no earlier variant pulsed: on a shared crossbar "
        "the variants sit one below the other from --layout. The first 3/4 of the run learns, "
        "the last 1/4 tests with the error inhibited. Prints test-period MSE, Spearman rho and "
        "a verdict against the MSE of a constant output, and writes a plot.",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per rule")
    parser.add_argument("--neurons", type=int, default=100, help="pre and post neurons")
    parser.add_argument(
        "--crossbar",
        default=None,
        metavar="URL",
        help="crossbar URL for mPES (default: an in-process emulator per variant, sized to it)",
    )
    parser.add_argument(
        "--layout",
        type=_cell,
        default=(0, 0),
        metavar="ROW,COL",
        help="top-left cell of the first variant's devices; variant k starts NEURONS*k rows "
        "lower. Each needs NEURONS rows x 2*NEURONS columns",
    )
    parser.add_argument("--sigma", type=float, default=0.15, help="device-to-device variability")
    parser.add_argument("--pes-rate", type=float, default=1e-5, help="PES learning rate")
    parser.add_argument("--seed", type=int, default=0, help="network and device seed")
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo_x_squared.png"), help="where to write the plot"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import nengo
    import numpy as np

    from memristor_hil.experiments import function_learning as fl

    if args.seconds <= 0 or args.neurons <= 0:
        raise ValueError("--seconds and --neurons must be positive")
    n = args.neurons
    learn_until = 0.75 * args.seconds
    print(
        f"learning f(x) = x^2 with {n}x{n} learned weights: "
        f"{learn_until:g} s learning, {args.seconds - learn_until:g} s testing"
    )
    task = fl.LearningTask(
        name="x^2",
        function=lambda x: x**2,
        stimulus=lambda t: np.sin(2 * np.pi * t / 4),
        learning=lambda t: t < learn_until,
        seconds=args.seconds,
    )
    results = []
    for k, (name, settings) in enumerate(VARIANTS):
        row, col = args.layout[0] + k * n, args.layout[1]
        with _variant_crossbar(args, k, name, settings, (row, col)) as xbar:
            rule = _mpes(args, settings, xbar, (row, col))
            results.append(_run(fl, name, rule, task, args))
    results.append(_run(fl, "PES", nengo.PES(learning_rate=args.pes_rate), task, args))
    fl.print_table(results)
    fl.plot_results(results, args.out, "Learning x^2: mPES (memristors) and PES")
    print(
        "mPES: the default policy, pulse counts whose expected weight change is PES's at "
        "learning_rate 1e-5, after balancing each pair to weight 0; mPES-one: one SET pulse per "
        "active synapse per ms, as published (mPES(pulses='one'))"
    )
    print(f"plot: {args.out}")
    return 0


def _run(fl: Any, name: str, rule: Any, task: Any, args: argparse.Namespace) -> Any:
    return fl.run(
        name,
        rule,
        task,
        n_pre=args.neurons,
        n_post=args.neurons,
        seed=args.seed,
    )


def _mpes(args: argparse.Namespace, settings: dict, xbar: Any, cell: tuple[int, int]) -> Any:
    from memristor_hil import Layout, mPES

    if xbar is None:  # the rule's own in-process emulator: fresh devices for this variant
        return mPES(variability=args.sigma, seed=args.seed, **settings)
    return mPES(
        variability=args.sigma, seed=args.seed, crossbar=xbar, layout=Layout(*cell), **settings
    )


class _variant_crossbar:
    """The crossbar one variant learns on (None: the rule opens its own), closed afterwards.

    On a URL the crossbar is opened once per variant, so a recording backend (``visa://``,
    ``serial://``) writes one record per variant, whose parameters name the rule and its
    settings. A crossbar too small for the variant's fresh block is refused before anything is
    pulsed, with the size it would need.
    """

    def __init__(
        self, args: argparse.Namespace, k: int, name: str, settings: dict, cell: tuple[int, int]
    ) -> None:
        self.args, self.k, self.name, self.settings, self.cell = args, k, name, settings, cell
        self.xbar: Any = None

    def __enter__(self) -> Any:
        args = self.args
        if args.crossbar is None:
            return None
        from memristor_hil import open_crossbar
        from memristor_hil.backends import hardware_schemes
        from memristor_hil.lab.record_policy import default_record_path, take_record_option
        from memristor_hil.lab.recording import RecordingCrossbar

        n = args.neurons
        need = (args.layout[0] + len(VARIANTS) * n, args.layout[1] + 2 * n)
        url, record = take_record_option(args.crossbar, None)
        xbar = open_crossbar(url, record=False, default_shape=need)
        if need[0] > xbar.shape[0] or need[1] > xbar.shape[1]:  # checked before any variant
            xbar.close()
            raise ValueError(
                f"{args.crossbar} is a {xbar.shape[0]}x{xbar.shape[1]} crossbar; the demo gives "
                f"each of its {len(VARIANTS)} mPES variants fresh cells ({n} rows x {2 * n} "
                f"columns each, one below the other from --layout {args.layout[0]},"
                f"{args.layout[1]}), so it needs {need[0]}x{need[1]}: serve a larger crossbar, "
                "use fewer --neurons or move --layout"
            )
        scheme = url.partition("://")[0].lower()
        if record is None:  # as open_crossbar: hardware schemes record by default
            record = scheme in hardware_schemes()
        if record is True:
            record = default_record_path(scheme)
        elif record is not False:  # a path: one record per variant beside it
            path = Path(record)
            record = path.with_name(f"{path.stem}-{self.name}{path.suffix}")
        if record is not False:
            parameters = {
                "command": "demo",
                "rule": self.name,
                "mpes": {
                    **self.settings,
                    "variability": args.sigma,
                    "seed": args.seed,
                    "layout": list(self.cell),
                },
                "task": "x^2",
                "seconds": args.seconds,
                "neurons": args.neurons,
                "network_seed": args.seed,
            }
            try:
                xbar = RecordingCrossbar(xbar, record, url=url, parameters=parameters)
            except BaseException:
                xbar.close()
                raise
            print(f"{self.name}: recording to {record}")
        self.xbar = xbar
        return xbar

    def __exit__(self, *exc_info: object) -> None:
        if self.xbar is not None:
            self.xbar.close()
