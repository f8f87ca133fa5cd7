"""The vanishing-gradient demonstration: how much the loss at the last step, L_T, depends on the state T-t steps
earlier, ||dL_T/dh_t||, for a simple RNN, an LSTM and a GRU, at initialisation and after training on r2rt's
echo task (experiments/echo.py).

Method. The echo model is recurrent layer -> Dense(2) -> softmax. Its recurrent layer runs over an echo stream
of `burn_in + max_lag` steps from zero states (the burn-in only brings the states to typical values), and L_T
is the cross-entropy of the last step alone. The layer API returns the gradient of the *initial* state only
(`initial_state_grad`), so the per-step gradients come from the engine functions directly:
dL_T/dh_T is the Dense layer's backward, and for each lag k >= 1 the engine runs forward from the saved state
h_{T-k} (and c_{T-k} for the LSTM) over the last k inputs and backward with that gradient on the final state
and none on the outputs (`rnn_backward(None, dL_T/dh_T, ...)`), whose `h0` gradient is dL_T/dh_{T-k}.
That costs O(max_lag^2) steps, nothing at these sizes, and uses the engine's own backward, so the numbers
are those BPTT uses. Each row's gradient norm is taken separately (summed, not averaged, loss) and the
table shows their mean over the batch.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import _core, data
from ..history import pyplot
from ..losses import softmax_cross_entropy
from . import echo, positive_int

CELL_LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _engine_forward(cell: str, layer, x, state):
    """(final state, cache) of the engine forward over time-major x [T, N, I] from `state`."""
    w = {name: param.value for name, param in layer.named_parameters()}
    if cell == "rnn":
        _, h_n, cache = _core.rnn_forward(x, state[0], w["kernel"], w["recurrent_kernel"], w["bias"],
                                          activation=layer.activation)
        return (h_n,), cache
    if cell == "lstm":
        _, h_n, c_n, cache = _core.lstm_forward(x, state[0], state[1], w["kernel"], w["recurrent_kernel"],
                                                w["bias"], w.get("peephole"), coupled=layer.coupled)
        return (h_n, c_n), cache
    _, h_n, cache = _core.gru_forward(x, state[0], w["kernel"], w["recurrent_kernel"], w["bias"],
                                      reset_after=layer.reset_after)
    return (h_n,), cache


def _engine_state_gradient(cell: str, layer, x, state, dh_final):
    """(dL/dh_0, dL/dc_0 or None) for a loss whose only gradient is dh_final on the final h, over x [k, N, I]
    from `state`."""
    w = {name: param.value for name, param in layer.named_parameters()}
    _, cache = _engine_forward(cell, layer, x, state)
    if cell == "rnn":
        grads = _core.rnn_backward(None, dh_final, cache, x, w["kernel"], w["recurrent_kernel"], w["bias"],
                                   activation=layer.activation)
    elif cell == "lstm":
        grads = _core.lstm_backward(None, dh_final, None, cache, x, w["kernel"], w["recurrent_kernel"], w["bias"],
                                    w.get("peephole"), coupled=layer.coupled)
    else:
        grads = _core.gru_backward(None, dh_final, cache, x, w["kernel"], w["recurrent_kernel"], w["bias"],
                                   reset_after=layer.reset_after)
    return grads["h0"], grads.get("c0")


def state_gradient_norms(cell: str, model, x, y, max_lag: int):
    """Mean over rows of ||dL_T/dh_{T-k}|| for k = 0..max_lag, where L_T is the loss of the last step; for the
    LSTM also ||dL_T/dc_{T-k}|| (NaN at lag 0, where the cell state has no gradient of its own), else None.

    x [N, T, 2] one-hot echo bits, y [N, T] targets, T > max_lag; see the module docstring for the method.
    """
    layer, dense = model.layers[0], model.layers[1]
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))  # the engine is time-major
    steps, rows = x_tm.shape[0], x_tm.shape[1]
    if steps <= max_lag:
        raise ValueError(f"state_gradient_norms: {steps} steps cannot show lags up to {max_lag}")
    zeros = np.zeros((rows, layer.units), dtype=x_tm.dtype)
    state = (zeros, zeros.copy()) if cell == "lstm" else (zeros,)
    # States before each of the last max_lag steps: run up to T - max_lag, then one step at a time.
    history = []
    state, _ = _engine_forward(cell, layer, x_tm[:steps - max_lag], state)
    for t in range(steps - max_lag, steps):
        history.append(state)
        state, _ = _engine_forward(cell, layer, x_tm[t:t + 1], state)
    h_last = state[0]  # h_T

    dense_w = {name: param.value for name, param in dense.named_parameters()}
    logits = h_last @ dense_w["kernel"] + dense_w["bias"]
    _, dlogits = softmax_cross_entropy(logits, y[:, -1], reduction="sum")  # per row: that row's own gradient
    dh_last = np.ascontiguousarray(dlogits @ dense_w["kernel"].T)  # dL_T/dh_T [N, H]

    h_norms, c_norms = [np.linalg.norm(dh_last, axis=1).mean()], [np.nan]
    for lag in range(1, max_lag + 1):
        start = steps - lag
        dh, dc = _engine_state_gradient(cell, layer, x_tm[start:], history[max_lag - lag], dh_last)
        h_norms.append(np.linalg.norm(dh, axis=1).mean())
        c_norms.append(np.nan if dc is None else np.linalg.norm(dc, axis=1).mean())
    return np.asarray(h_norms, dtype=np.float64), (np.asarray(c_norms) if cell == "lstm" else None)


def run(args, log=print) -> dict:
    """Measure every cell at initialisation and after training; returns {"lags", "norms", "seconds"}, norms
    keyed by (column label, "init" or "trained")."""
    with echo.engine_threads(args.threads):
        return _run(args, log)


def _run(args, log) -> dict:
    started = time.perf_counter()
    x_bits, y_bits = data.echo_data(args.rows * (args.burn_in + args.max_lag), seed=[args.seed, 10_000])
    x = np.eye(2, dtype=np.float32)[x_bits.reshape(args.rows, -1)]
    y = y_bits.reshape(args.rows, -1)
    train_args = argparse.Namespace(state_size=args.state_size, optimizer=args.optimizer, lr=args.lr,
                                    size=args.size, batch_size=200, epochs=args.epochs, seed=args.seed)
    norms = {}  # (column label, "init" or "trained") -> norms by lag
    for cell in args.cells:
        model = echo.build_model(cell, args.state_size, args.seed)
        h_norms, c_norms = state_gradient_norms(cell, model, x, y, args.max_lag)
        norms[(CELL_LABELS[cell], "init")] = h_norms
        if c_norms is not None:
            norms[("LSTM c", "init")] = c_norms
        model, history, seconds = echo.train_echo_model(cell, args.num_steps, train_args)
        final = float(np.mean(history.step_losses[-100:]))
        log(f"{CELL_LABELS[cell]}: trained on echo with num_steps={args.num_steps} in {seconds:.1f} s, "
            f"final loss {final:.4f}")
        h_norms, c_norms = state_gradient_norms(cell, model, x, y, args.max_lag)
        norms[(CELL_LABELS[cell], "trained")] = h_norms
        if c_norms is not None:
            norms[("LSTM c", "trained")] = c_norms

    lags = np.arange(args.max_lag + 1)
    log("")
    log("||dL_T/dh_t|| (mean over rows) against the lag T-t; 'LSTM c' is ||dL_T/dc_t||, the LSTM's cell state")
    log(_table(lags, norms))
    log("")
    for (label, when), n in norms.items():
        log(f"{label:<6} {when:<8} lag {args.max_lag} / lag 1 = {n[-1] / n[1]:.2e}")
    if args.plot:
        try:
            _plot(args.plot, lags, norms)
            log(f"plot written to {args.plot}")
        except ImportError as error:
            log(f"plot skipped: {error}")
    seconds = time.perf_counter() - started
    log(f"wall time {seconds:.1f} s")
    return {"lags": lags, "norms": norms, "seconds": seconds}


def _table(lags, norms) -> str:
    order = ["RNN", "LSTM", "LSTM c", "GRU"]
    columns = sorted(norms, key=lambda key: (order.index(key[0]), key[1] != "init"))
    header = "lag " + "".join(f"{label + ' ' + when:>16}" for label, when in columns)
    lines = [header, "-" * len(header)]
    for lag in lags:
        cells = ("-" if np.isnan(norms[key][lag]) else f"{norms[key][lag]:.3e}" for key in columns)
        lines.append(f"{lag:>3} " + "".join(f"{text:>16}" for text in cells))
    return "\n".join(lines)


def _plot(path, lags, norms) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colors = {"RNN": "tab:blue", "LSTM": "tab:orange", "GRU": "tab:green", "LSTM c": "tab:red"}
    for (label, when), n in norms.items():
        style = "--" if when == "init" else "-"
        axis.semilogy(lags, n, style, color=colors[label], label=f"{label} {when}")
    axis.set_xlabel("lag T - t (steps)")
    axis.set_ylabel("||dL_T / dh_t||  (LSTM c: ||dL_T / dc_t||)")
    axis.set_title("vanishing gradients on the echo task")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str = "rnnext train vanishing") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Vanishing gradients: the norm of dL_T/dh_t against the "
                                "lag T-t for RNN, LSTM and GRU, at initialisation and after training on the "
                                "echo task; prints a table and optionally plots it.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cells", type=echo._cell_list, default="rnn,lstm,gru", metavar="LIST",
                   help="comma-separated cells: rnn, lstm, gru")
    p.add_argument("--state-size", type=positive_int, default=16, help="units of the recurrent layer")
    p.add_argument("--max-lag", type=positive_int, default=20, help="largest lag T-t shown")
    p.add_argument("--burn-in", type=positive_int, default=20,
                   help="steps run before the measured ones, to bring the states to typical values")
    p.add_argument("--rows", type=positive_int, default=200, help="sequences the norms are averaged over")
    p.add_argument("--num-steps", type=positive_int, default=10, help="truncated-BPTT window for training")
    p.add_argument("--size", type=positive_int, default=1_000_000, help="echo steps per training epoch")
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs")
    p.add_argument("--optimizer", choices=("adam", "adagrad", "sgd"), default="adam",
                   help="optimizer for training (Adam gets all three cells to both echoes within one epoch)")
    p.add_argument("--lr", type=echo._positive_float, default=0.01, help="learning rate for training")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="engine threads; these layers are so small that more threads only add synchronisation")
    p.add_argument("--plot", metavar="PATH", help="also plot the norms to this PNG (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="tiny preset for smoke tests: 40,000 training steps, "
                   "50 rows, lags up to 10")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.rows, args.max_lag, args.burn_in = 40_000, 50, 10, 10
    if args.size < 200 * args.num_steps:
        build_parser().error(f"--size {args.size} is too small: training uses batches of 200 rows of "
                             f"--num-steps {args.num_steps}")
    return args


def main(argv=None) -> int:
    """`rnnext train vanishing [options]`; returns the exit status."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
