"""``Crossbar.device_parameters``: the capability NengoDL's native mPES builder keys on.

Only a crossbar whose devices are simulated in this process declares it; hardware, a service
and a recording (which must see every pulse) keep the interface's ``None``. The NengoDL tests
themselves run in their own environment (``tests_dl/``, ``.venv-dl``).
"""

import subprocess
import sys

import numpy as np
from memristor_hil.drivers import SerialCrossbar

from memristor_hil import open_crossbar
from memristor_hil.lab.recording import RecordingCrossbar


def test_only_the_in_process_emulator_declares_its_device_parameters(tmp_path):
    with open_crossbar("emulator://?rows=3&cols=4&seed=2&sigma=0.15") as xbar:
        params = xbar.device_parameters
        assert params is not None and params.per_device and params.r0.shape == (12,)
        np.testing.assert_array_equal(params.a, xbar.snapshot()["params"].a)
        with RecordingCrossbar(xbar, tmp_path / "run.sqlite") as recorded:
            assert recorded.model is xbar.model and recorded.device_parameters is None
    with open_crossbar("emulator://?rows=2&cols=2") as xbar:
        assert not xbar.device_parameters.per_device  # shared nominal parameters
    assert SerialCrossbar.device_parameters.fget(object.__new__(SerialCrossbar)) is None


def test_building_mpes_for_nengo_never_loads_tensorflow():
    code = (
        "import sys, nengo, numpy as np\n"
        "from memristor_hil import mPES\n"
        "with nengo.Network(seed=0) as net:\n"
        "    a, b = nengo.Ensemble(5, 1), nengo.Ensemble(5, 1)\n"
        "    c = nengo.Connection(a.neurons, b.neurons, transform=np.zeros((5, 5)),\n"
        "                         learning_rule_type=mPES())\n"
        "with nengo.Simulator(net, progress_bar=False) as sim:\n"
        "    sim.run_steps(5)\n"
        "print(sorted(m for m in ('tensorflow', 'nengo_dl') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
