"""Which results are the same bits on every x86-64 CPU, and how close the others are.

docs/protocol.md, section 7, states the rule; these tests hold the code to it. Numba compiles
for the CPU it runs on and NumPy picks its SIMD kernels by CPU (``np.power`` on AVX-512 is
SVML-derived code; elsewhere the C library's ``pow``), so one machine cannot see what another
computes. A fresh process can: it compiles the kernels for another CPU (``NUMBA_CPU_NAME``)
and turns off NumPy's dispatch above that CPU (``NPY_DISABLE_CPU_FEATURES``). On an AVX-512
machine the other target is an AVX2 one (haswell); on any other, an SSE4.2 one (nehalem)
(``cpu_targets.other_target``). CI runs the kernel tests once more under that target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from cpu_targets import COMPILED, NUMPY, other_target, outputs  # noqa: E402

#: Largest distance in units in the last place between NumPy's SIMD and scalar paths, per
#: path (measured on an AMD EPYC with AVX-512 against its AVX2 path: 2, 1 and 3 in float64;
#: 1 and 4 in float32). One ``pow`` is within about 1 ulp of the exact value either way; the
#: reference's update chains two powers and a sum, which compounds.
MAX_ULP = {"law_f64_per_device": 4, "sample_devices_n": 4, "reference_after_pulses": 8}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cpu")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "NPY_DIS"))}
    env.update(other_target())
    env["NUMBA_CACHE_DIR"] = str(folder / "numba-cache")  # never mix targets in one cache
    path = folder / "other.npz"
    subprocess.run(
        [sys.executable, str(HERE / "cpu_targets.py"), str(path)], env=env, check=True, timeout=300
    )
    with np.load(path) as other:
        return outputs(), dict(other)


@pytest.mark.parametrize("key", COMPILED)
def test_the_compiled_paths_give_the_same_bits_on_another_cpu_target(both, key):
    here, there = both
    np.testing.assert_array_equal(here[key], there[key])


@pytest.mark.parametrize("key", NUMPY)
def test_the_numpy_paths_stay_within_their_stated_ulps_on_another_cpu_target(both, key):
    here, there = both
    path = key.rsplit("_", 1)[0]
    np.testing.assert_array_max_ulp(here[key], there[key], maxulp=MAX_ULP[path])


def test_every_result_of_the_workload_is_checked(both):
    assert set(both[0]) == set(COMPILED) | set(NUMPY) == set(both[1])
