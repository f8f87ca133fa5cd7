"""The echo, vanishing and numpy-rnn experiments in tiny configurations (a few seconds each)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import rnnext
from rnnext import data, experiments
from rnnext.experiments import echo, numpy_rnn, vanishing

from conftest import numerical_gradient


def collect():
    lines = []
    return lines, lambda *parts: lines.append(" ".join(str(p) for p in parts))


def test_registry_and_unknown_names():
    assert set(experiments.EXPERIMENTS) == {"echo", "char-lm", "word-lm", "sentiment", "vanishing", "numpy-rnn"}
    assert experiments.load("echo") is echo
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        experiments.load("nope")


def test_echo_tiny_run_learns_and_prints_the_references():
    lines, log = collect()
    args = echo.parse_args(["--quick", "--quiet", "--cells", "rnn,gru", "--num-steps", "5,10", "--epochs", "2"])
    result = echo.run(args, log=log)
    text = "\n".join(lines)
    reference = data.echo_reference_losses()
    for value in reference.values():
        assert f"{value:.4f}" in text  # computed by data.echo_reference_losses, printed beside the losses
    assert len(result["runs"]) == 4
    for run in result["runs"]:
        assert run["final_loss"] < run["first_loss"] - 0.03, run  # the loss falls
        assert run["final_loss"] < reference["none"]
    assert result["reproduced"] in (True, False)  # RNN ran at 5 and 10 steps, so the effect was checked
    assert "r2rt's effect" in text
    # --epochs 2 applies to both windows; the state size stays r2rt's per window (4 at 5 steps, 16 at 10)
    assert {(r["num_steps"], r["state_size"], r["epochs"]) for r in result["runs"]} == {(5, 4, 2), (10, 16, 2)}
    assert "num_steps=10: 16 units, 2 epoch(s)" in text
    assert "note: the 10-step run also has more units" in text


def test_echo_defaults_are_r2rts_runs_per_window():
    args = echo.parse_args([])
    assert (args.state_size, args.epochs) == (None, None)
    assert echo.run_config(1, args) == (4, 2)  # r2rt: learns neither echo
    assert echo.run_config(5, args) == (4, 1)  # r2rt: learns the first
    assert echo.run_config(10, args) == (16, 10)  # r2rt: learns both
    assert echo.run_config(7, args) == (4, 1)  # not one of r2rt's runs
    args = echo.parse_args(["--state-size", "8", "--epochs", "3"])
    assert echo.run_config(5, args) == echo.run_config(10, args) == (8, 3)
    help_text = " ".join(echo.build_parser().format_help().split())
    assert "4 for 1 and 5, 16 for 10; 4 for others) --batch-size" in help_text  # no "(default: None)"


def test_echo_effect_check():
    reference = data.echo_reference_losses()
    runs = [{"cell": "rnn", "num_steps": 5, "final_loss": 0.525}, {"cell": "rnn", "num_steps": 10, "final_loss": 0.46}]
    assert echo._check_effect(runs, reference) is True
    runs[1]["final_loss"] = 0.51  # learned only the first echo with 10 steps
    assert echo._check_effect(runs, reference) is False
    assert echo._check_effect(runs[:1], reference) is None
    assert echo.what_was_learned(0.53, reference) == "first (t-3)"
    assert echo.what_was_learned(0.58, reference) == "part of first"
    assert echo.what_was_learned(0.49, reference) == "first, part of second"
    assert echo.what_was_learned(0.46, reference) == "both (t-3, t-8)"


def test_echo_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        echo.parse_args(["--num-steps", "5,x"])
    assert exit_info.value.code == 2
    assert "comma-separated list of integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        echo.parse_args(["--cells", "rnn,transformer"])


def test_vanishing_tiny_run():
    lines, log = collect()
    args = vanishing.parse_args(["--quick", "--cells", "rnn,lstm", "--size", "20000", "--state-size", "8"])
    result = vanishing.run(args, log=log)
    norms = result["norms"]
    assert set(norms) == {("RNN", "init"), ("RNN", "trained"), ("LSTM", "init"), ("LSTM", "trained"),
                          ("LSTM c", "init"), ("LSTM c", "trained")}
    for key, values in norms.items():
        assert values.shape == (args.max_lag + 1,)
        assert values[-1] < values[1], key  # the gradient shrinks with the lag
    assert np.isnan(norms[("LSTM c", "init")][0])
    text = "\n".join(lines)
    assert "||dL_T/dh_t||" in text and "RNN init" in text
    assert "plot" not in text  # no --plot, nothing plotted or skipped


def test_plot_without_matplotlib_is_skipped_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    lines, log = collect()
    vanishing.run(vanishing.parse_args(["--quick", "--cells", "rnn", "--plot", str(tmp_path / "v.png")]), log=log)
    assert any(line.startswith("plot skipped:") and "pip install" in line for line in lines), lines
    assert not (tmp_path / "v.png").exists()


def test_plots_are_written_with_real_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    reference = data.echo_reference_losses()
    runs = [{"cell": "rnn", "num_steps": 5, "state_size": 4, "step_losses": list(np.linspace(0.7, 0.52, 300))}]
    echo._plot(tmp_path / "echo.png", runs, reference, 100)
    lags = np.arange(4)
    vanishing._plot(tmp_path / "v.png", lags, {("RNN", "init"): np.ones(4), ("LSTM c", "trained"): np.ones(4)})
    for name in ("echo.png", "v.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_vanishing_norms_match_a_finite_difference():
    """dL_T/dh_t from the engine windows, checked against central differences on h_t for a float64 RNN."""
    model = echo.build_model("rnn", 3, seed=5, dtype=np.float64)  # float64 for an accurate finite difference
    layer = model.layers[0]
    x_bits, y_bits = data.echo_data(2 * 8, seed=3)
    x = np.eye(2)[x_bits.reshape(2, 8)]
    y = y_bits.reshape(2, 8)
    norms, _ = vanishing.state_gradient_norms("rnn", model, x, y, max_lag=4)

    w = {name: p.value for name, p in layer.named_parameters()}
    dense = {name: p.value for name, p in model.layers[1].named_parameters()}
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))

    def last_loss(h_t, start):  # loss of the last step per row, running from state h_t at step `start`
        _, h_n, _ = rnnext.rnn_forward(x_tm[start:], h_t, w["kernel"], w["recurrent_kernel"], w["bias"])
        logits = h_n @ dense["kernel"] + dense["bias"]
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -logp[np.arange(2), y[:, -1]]  # per row

    _, _, cache = rnnext.rnn_forward(x_tm, np.zeros((2, 3)), w["kernel"], w["recurrent_kernel"], w["bias"])
    for lag in (1, 2, 4):
        start = 8 - lag
        h_t = cache["h"][start].copy()
        # the rows are independent, so d(sum of the rows' losses) / dh_t[n] is row n's own gradient
        grad = numerical_gradient(lambda: last_loss(h_t, start).sum(), h_t)
        assert norms[lag] == pytest.approx(np.linalg.norm(grad, axis=1).mean(), rel=1e-6)


def test_numpy_rnn_reproduces_the_listing():
    lines, log = collect()
    differences = numpy_rnn.run(numpy_rnn.build_parser().parse_args([]), log=log)
    for (kind, dtype), difference in differences.items():
        assert difference <= numpy_rnn.TOLERANCE[dtype], (kind, dtype, difference)
    assert differences[("centred", "float64")] < 1e-13
    assert "reproduces the NumPy listing" in lines[-1]


def test_numpy_rnn_listing_matches_the_book_loop():
    rng = np.random.default_rng(1)
    inputs, W, U, b = numpy_rnn.make_weights("centred", 5, 3, 4, rng)
    outputs = numpy_rnn.numpy_listing(inputs, W, U, b)
    state = np.zeros(4)
    for t in range(5):
        state = np.tanh(W @ inputs[t] + U @ state + b)
        np.testing.assert_array_equal(outputs[t], state)


def test_plot_code_runs_against_a_stub_matplotlib(monkeypatch, tmp_path):
    """matplotlib is an optional extra: drive every plotting function through a stand-in that accepts any call,
    so their own code (names, shapes, loops) runs wherever the tests run, with or without matplotlib."""
    import types
    from unittest import mock

    from rnnext import train

    pyplot = mock.MagicMock()
    figure, axis = mock.MagicMock(), mock.MagicMock()

    def subplots(rows=1, columns=1, squeeze=True, **options):
        if squeeze:
            return figure, axis
        axes = np.empty((rows, columns), dtype=object)
        for index in np.ndindex(axes.shape):
            axes[index] = axis  # one by one: numpy would try to iterate a MagicMock given as a nested list
        return figure, axes

    pyplot.subplots.side_effect = subplots
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.use = lambda backend: None
    matplotlib.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)

    history = train.History()
    history.rows = [{"epoch": 1, "loss": 0.7, "val_loss": 0.72, "accuracy": 0.5, "val_accuracy": 0.55},
                    {"epoch": 2, "loss": 0.6, "val_loss": 0.65, "accuracy": 0.6, "val_accuracy": 0.6}]
    history.plot(tmp_path / "h.png", title="t")
    one_epoch = train.History()
    one_epoch.rows, one_epoch.step_losses = [{"epoch": 1, "loss": 0.6}], list(np.linspace(0.7, 0.5, 200))
    one_epoch.plot(tmp_path / "s.png")

    reference = data.echo_reference_losses()
    runs = [{"cell": "rnn", "num_steps": 5, "state_size": 4, "step_losses": list(np.linspace(0.7, 0.52, 300))}]
    echo._plot(tmp_path / "echo.png", runs, reference, 100)
    lags = np.arange(4)
    vanishing._plot(tmp_path / "v.png", lags, {("RNN", "init"): np.ones(4), ("LSTM c", "trained"): np.ones(4)})
    assert figure.savefig.call_count == 4
