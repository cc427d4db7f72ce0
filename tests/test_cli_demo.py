"""The ``memristor-hil`` subcommands: the learning demo and the pulse demo."""

from memristor_hil.cli import main


def test_demo_learns_and_writes_a_plot(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--seconds", "1", "--neurons", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for rule in ("mPES ", "mPES-one", "PES "):
        assert rule in text
    assert "test MSE / PES test MSE" in text
    assert out.stat().st_size > 10_000


def test_demo_refuses_bad_arguments(capsys):
    assert main(["demo", "--seconds", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_pulse_demo_still_runs(tmp_path, capsys):
    out = tmp_path / "r.png"
    assert main(["pulse-demo", "--pulses", "100", "--steps", "5", "--out", str(out)]) == 0
    assert "median R" in capsys.readouterr().out
    assert out.exists()
