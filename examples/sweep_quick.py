"""A small sweep from Python: x^2 with PES and mPES over 3 seeds, on every core.

The same as a TOML file run by ``memristor-hil sweep`` (see ``experiments/`` and
``docs/sweeps.md``). No ``if __name__ == "__main__":`` guard is needed: the local Dask
workers are processes of their own that never import this script. Needs the ``[sweep]``
extra (``pip install -e '.[sweep]'``). Writes ``out/sweeps/quick/``: ``results.parquet``,
``summary.md`` and ``mse_by_rule.png``; run it again with ``resume=True`` to continue.
"""

import memristor_hil

table = memristor_hil.sweep(
    {
        "name": "quick",
        "seeds": 3,
        "tasks": ["x^2"],
        "seconds": 10,
        "rules": [
            {"rule": "PES", "learning_rate": 1e-5},
            {"rule": "mPES", "pulses": ["one", "stochastic"], "max_pulses": 2},
        ],
        "devices": {"sigma": 0.15},
    },
    out="out/sweeps/quick",
    progress=lambda p: print(f"{p.done}/{p.total} runs, ETA {p.eta:.0f} s", flush=True),
)
print(table.groupby("label")["mse"].agg(["mean", "std"]))
print(open("out/sweeps/quick/summary.md").read())
