"""The `rnnext` command line, run as `python -m rnnext` in a subprocess from a scratch directory."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rnnext import cli
from rnnext.experiments import EXPERIMENTS


def rnnext(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "rnnext", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_info(tmp_path):
    result = rnnext("info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import rnnext as package
    assert f"rnnext {package.__version__}" in result.stdout
    assert "engine threads:" in result.stdout and "openmp" in result.stdout


@pytest.mark.parametrize("command", [[], ["train"], ["info"], ["generate"], ["export"]] + [["train", name] for name in EXPERIMENTS])
def test_help(capsys, command):
    # in process: argparse prints the usage and exits 0, as the console script would
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rnnext")
    if command[:1] == ["train"] and len(command) == 2:
        assert f"rnnext train {command[1]}" in out and "--seed" in out


def test_help_as_a_subprocess(tmp_path):
    result = rnnext("train", "echo", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: rnnext train echo" in result.stdout


def test_bench_help():
    if cli._find_bench_script() is None:
        pytest.skip("no bench/bench_cells.py (not a source checkout)")
    assert cli.main(["bench", "--help"]) == 0  # bench_cells.py's own help, in a subprocess


def test_bad_option_exits_2_with_a_message(tmp_path, capsys):
    result = rnnext("train", "echo", "--no-such-option", cwd=tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr
    for argv, message in ((["frobnicate"], "invalid choice: 'frobnicate'"),
                          (["train", "echo", "--num-steps", "0"], "--num-steps"),
                          (["info", "--verbose"], "unrecognized arguments: --verbose")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_missing_file_exits_1_without_traceback(tmp_path):
    result = rnnext("generate", str(tmp_path / "missing.npz"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("rnnext: error:") and "missing.npz" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_errors_are_caught_in_process(capsys, monkeypatch):
    def fail(argv):
        raise FileNotFoundError(2, "No such file or directory", "corpus.txt")

    monkeypatch.setattr(cli, "_train", lambda name, options: fail(options))
    assert cli.main(["train", "echo"]) == 1
    assert capsys.readouterr().err.strip() == "rnnext: error: no such file: corpus.txt"
    with pytest.raises(FileNotFoundError):
        cli.main(["--traceback", "train", "echo"])


def test_bench_without_a_checkout(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_find_bench_script", lambda: None)
    assert cli.main(["bench"]) == 1
    assert "not installed with the package" in capsys.readouterr().err


def test_train_echo_tiny_run(tmp_path):
    result = rnnext("train", "echo", "--quick", "--quiet", "--cells", "rnn", "--num-steps", "5",
                    "--csv", "echo.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RNN   num_steps=5" in result.stdout and "final loss" in result.stdout
    assert (tmp_path / "echo.csv").read_text().startswith("cell,num_steps,state_size,epochs,final_loss")


def test_train_numpy_rnn(tmp_path):
    result = rnnext("train", "numpy-rnn", "--timesteps", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reproduces the NumPy listing" in result.stdout
