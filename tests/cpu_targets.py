"""One fixed workload of the emulator's arithmetic, for comparing CPU targets.

``tests/test_cpu_targets.py`` runs :func:`outputs` in this process and again in a fresh
process whose numba code is compiled for another CPU (``NUMBA_CPU_NAME``) and whose NumPy
dispatches no SIMD code above the other target (``NPY_DISABLE_CPU_FEATURES``), then compares
the two, path by path. The inputs are drawn here from a seeded generator, never through a
power, so both processes start from the same bits.

Run as a script, it writes the outputs to the ``.npz`` file named on the command line; with
``--env`` it prints the other target's environment as shell ``export`` lines, for CI's second
run of the kernel tests (``eval "$(python tests/cpu_targets.py --env)"``).
"""

from __future__ import annotations

import sys

import numpy as np

_BOTH = ("float64", "float32")
#: Results (``<path>_<dtype>``) that are the same bits on every x86-64 CPU with FMA
#: (docs/protocol.md, section 7): the compiled kernels.
COMPILED = (
    *(
        f"{path}_{t}"
        for path in ("pulse_shared_v", "pulse_per_device", "pulse_each_v")
        for t in _BOTH
    ),
    "law_f32_float32",
    "law_f64_shared_float64",
)
#: Results evaluated by NumPy, which picks its ``pow`` by CPU: close, not identical.
NUMPY = (
    *(f"{path}_{t}" for path in ("reference_after_pulses", "sample_devices_n") for t in _BOTH),
    "law_f64_per_device_float64",
)


def other_target() -> dict[str, str]:
    """The environment of a CPU below this machine's, for numba and for NumPy.

    On an AVX-512 machine the other target is an AVX2 one (haswell); on any other, an SSE4.2
    one (nehalem). NumPy keeps its own baseline but dispatches no SIMD code above the target.
    """
    import llvmlite.binding as llvm
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    if llvm.get_host_cpu_features().get("avx512f"):
        name, above = "haswell", ("X86_V4", "AVX512")
    else:
        name, above = "nehalem", ("X86_V3", "X86_V4", "AVX", "FMA")
    disable = [f for f in __cpu_dispatch__ if f.startswith(above) and __cpu_features__.get(f)]
    env = {"NUMBA_CPU_NAME": name}
    if disable:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disable)
    return env


def _inputs(dtype: type) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    size = 4000
    return {
        "n": rng.uniform(0.5, 1e5, size).astype(dtype),
        "flat": rng.integers(0, size, 3000).astype(np.uint64),
        "pulses": rng.integers(0, 9, 3000).astype(dtype),
        "ratio": rng.uniform(0.55, 0.95, size).astype(dtype),
        "voltage": rng.uniform(0.05, 0.4, 3000).astype(dtype),
        "a": rng.uniform(-0.2, -0.1, size).astype(dtype),
    }


def outputs() -> dict[str, np.ndarray]:
    """Every path's result on the fixed inputs, keyed ``<path>_<dtype>``."""
    from memristor_hil.emulator import kernels

    from memristor_hil import PowerLaw

    out: dict[str, np.ndarray] = {}
    empty = np.empty(0)
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        x = _inputs(dtype)
        one = np.ones(1, dtype)
        r0, r1 = np.array([200.0], dtype), np.array([2.3e8], dtype)
        n_min = np.array([1.0], dtype)
        flat = x["flat"]
        for key, ratio in (("pulse_shared_v", x["ratio"][:1]), ("pulse_per_device", x["ratio"])):
            n = x["n"].copy()
            devices = tuple(kernels.Devices(n, n_min, r0, r1, one))
            pulses = tuple(kernels.SetPulses(x["pulses"], ratio, 0.0, empty))
            read = tuple(kernels.ReadBack(n[:0], kernels.STATES))
            kernels.apply_set_pulses(devices, flat, pulses, read, False)
            out[f"{key}_{name}"] = n
        n = x["n"].copy()
        kernels.add_set_pulses_each_voltage(
            tuple(kernels.Devices(n, n_min, r0, r1, x["a"])),
            flat,
            tuple(kernels.VoltagePulses(x["pulses"], x["voltage"], -0.53, 0.1, 0.0, empty)),
        )
        out[f"pulse_each_v_{name}"] = n
        if dtype is np.float32:
            law = x["n"].copy()
            size = law.shape[0]
            kernels.power_law_f32(
                law, np.full(size, 200.0, dtype), np.full(size, 2.3e8, dtype), x["a"], flat[:0]
            )
            out["law_f32_float32"] = law
        else:
            shared = PowerLaw().nominal()
            out["law_f64_shared_float64"] = kernels.resistance(x["n"].copy(), shared)
            size = x["n"].shape[0]
            each = type(shared)(np.full(size, 200.0), np.full(size, 2.3e8), x["a"])
            out["law_f64_per_device_float64"] = kernels.resistance(x["n"].copy(), each)
        model = PowerLaw(dtype=name, variability=0.15)
        out[f"reference_after_pulses_{name}"] = model.after_pulses(
            x["n"][:3000], x["pulses"], x["voltage"]
        )
        out[f"sample_devices_n_{name}"] = model.sample_devices(4000, rng=5)[1]
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--env":
        print("\n".join(f"export {k}='{v}'" for k, v in other_target().items()))
    else:
        np.savez(sys.argv[1], **outputs())
