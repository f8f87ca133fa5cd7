"""r2rt's binary echo task ("Recurrent Neural Networks in Tensorflow I", 2016) with RNN, LSTM and GRU, and the
elementwise-recurrence cells IndRNN, MinGRU, MinLSTM, SRU and QRNN (rnnext.scan_cells).

X_t is a fair coin; P(Y_t = 1) = 0.5, +0.5 if X_{t-3} = 1, -0.25 if X_{t-8} = 1. One long stream is cut into
`batch_size` rows and windows of `num_steps` (rnnext.data.echo_batches); the model (one-hot input, a stateful
recurrent layer, a softmax over 2 classes) carries its state from window to window, but gradients stop at
the window's start (TensorFlow-style truncated BPTT). r2rt's point: with num_steps=1 the network learns
neither echo (loss ~0.66), with 5 only the first (~0.52), with 10 both (~0.45). The three reference losses
come from rnnext.data.echo_reference_losses (computed, not typed in).

r2rt's runs do not share one configuration: the 1- and 5-step runs have 4 units (2 epochs and 1 epoch), the
10-step run 16 units and 10 epochs (R2RT_RUNS). By default each window length gets its published
configuration; --state-size and --epochs override it for every window. The final loss of a run is the mean
training loss over its last `--average-last` steps, as r2rt reports it.

What we measure (docs/results.md), and an independent PyTorch version of r2rt's graph agrees: with the
published configurations the three figures appear. The contrast between 5 and 10 steps comes from the
state size, though: with 4 units the RNN stays near the first echo at both window lengths, and with 16 units
it learns both echoes at num_steps=5 too, because the state carried across windows holds X_{t-8} without any
gradient reaching back 8 steps.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import time

import numpy as np

from .. import _core, data, train
from ..history import pyplot
from ..layers import GRU, LSTM, QRNN, RNN, SRU, Dense, IndRNN, MinGRU, MinLSTM
from ..losses import softmax_cross_entropy
from ..models import Sequential
from ..optim import SGD, Adagrad, Adam
from . import positive_int

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "indrnn": IndRNN, "mingru": MinGRU, "minlstm": MinLSTM,
         "sru": SRU, "qrnn": QRNN}
REFERENCE_NAMES = {"none": "neither", "t-3": "first (t-3)", "t-3 and t-8": "both (t-3, t-8)"}
TOLERANCE = 0.02  # the "within +-0.02 of the reference figures"
_ONE_HOT = np.eye(2, dtype=np.float32)
# r2rt's published runs, num_steps -> (state size, epochs); other window lengths get DEFAULT_RUN
R2RT_RUNS = {1: (4, 2), 5: (4, 1), 10: (16, 10)}
DEFAULT_RUN = (4, 1)


def build_model(cell: str, state_size: int, seed: int, dtype=np.float32) -> Sequential:
    """One-hot bits [N, T, 2] -> stateful recurrent layer -> Dense(2) logits [N, T, 2]."""
    recurrent = CELLS[cell](state_size, return_sequences=True, stateful=True, input_size=2, seed=seed, dtype=dtype)
    return Sequential([recurrent, Dense(2, seed=seed + 1, dtype=dtype)], input_shape=(None, 2), name=f"echo_{cell}")


def batch_source(size: int, batch_size: int, num_steps: int, seed: int):
    """fit's batch source: epoch e trains on a fresh stream drawn from seed (seed, e), as r2rt's gen_epochs."""
    def batches(epoch):
        x, y = data.echo_data(size, seed=[seed, epoch])
        # a list (8 bytes per step) rather than a generator, so the progress bar knows the epoch's length
        return [(_ONE_HOT[xb], yb) for xb, yb in data.echo_batches(x, y, batch_size, num_steps)]
    return batches


def make_optimizer(name: str, params, lr: float):
    if name == "adagrad":
        # TensorFlow's AdagradOptimizer, which r2rt used, starts its accumulator at 0.1
        return Adagrad(params, lr=lr, initial_accumulator_value=0.1)
    if name == "adam":
        return Adam(params, lr=lr)
    return SGD(params, lr=lr)


def run_config(num_steps: int, args) -> tuple[int, int]:
    """(state size, epochs) for a window of `num_steps`: r2rt's unless --state-size / --epochs were given."""
    state_size, epochs = R2RT_RUNS.get(num_steps, DEFAULT_RUN)
    return args.state_size or state_size, args.epochs or epochs


def train_echo_model(cell: str, num_steps: int, args, progress: bool = False):
    """Train one model as `args` says; returns (model, history, seconds)."""
    state_size, epochs = run_config(num_steps, args)
    model = build_model(cell, state_size, args.seed)
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr)
    source = batch_source(args.size, args.batch_size, num_steps, args.seed)
    started = time.perf_counter()
    history = train.fit(model, softmax_cross_entropy, optimizer, source, epochs, progress=progress, seed=args.seed)
    return model, history, time.perf_counter() - started


@contextlib.contextmanager
def engine_threads(count):
    """Run the engine with `count` threads (None: leave it), restoring the previous setting afterwards (a fixed
    count, or the default tuning)."""
    previous = None if _core.thread_tuning() else _core.get_num_threads()
    if count:
        _core.set_num_threads(count)
    try:
        yield
    finally:
        _core.set_num_threads(previous)


def what_was_learned(loss: float, reference: dict) -> str:
    """A reference name when `loss` is within TOLERANCE of it, else where it lies between them."""
    for name, value in reference.items():
        if abs(loss - value) <= TOLERANCE:
            return REFERENCE_NAMES[name]
    if loss > reference["none"]:
        return "nothing"
    if loss > reference["t-3"]:
        return "part of first"
    if loss > reference["t-3 and t-8"]:
        return "first, part of second"
    return "below both (?)"


def run(args, log=print) -> dict:
    """Train every cell at every num_steps; returns {"reference", "runs", "reproduced", "seconds"}."""
    with engine_threads(args.threads):
        return _run(args, log)


def _run(args, log) -> dict:
    reference = data.echo_reference_losses()
    log("expected cross-entropy (nats) of a model that learns")
    for name, value in reference.items():
        log(f"  {REFERENCE_NAMES[name]:<18} {value:.4f}")
    log(f"training: epochs of {args.size:,} steps, batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
        f"seed {args.seed}")
    log("per window (r2rt's runs unless --state-size / --epochs say otherwise):")
    for num_steps in args.num_steps:
        state_size, epochs = run_config(num_steps, args)
        log(f"  num_steps={num_steps}: {state_size} units, {epochs} epoch(s)")

    runs = []
    started = time.perf_counter()
    for num_steps in args.num_steps:
        for cell in args.cells:
            model, history, seconds = train_echo_model(cell, num_steps, args, progress=args.progress)
            final = float(np.mean(history.step_losses[-args.average_last:]))
            learned = what_was_learned(final, reference)
            state_size, epochs = run_config(num_steps, args)
            runs.append({"cell": cell, "num_steps": num_steps, "state_size": state_size, "epochs": epochs,
                         "final_loss": final, "learned": learned,
                         "first_loss": float(np.mean(history.step_losses[:args.average_last])),
                         "seconds": seconds, "step_losses": history.step_losses})
            log(f"{cell.upper():<5} num_steps={num_steps:<3} final loss {final:.4f} (learned: {learned}), "
                f"{seconds:.1f} s")
    total = time.perf_counter() - started

    log("")
    log(_table(runs, reference))
    reproduced = _check_effect(runs, reference)
    if reproduced is not None:
        log("r2rt's effect (RNN learns the first echo with num_steps=5, both with 10, within "
            f"+-{TOLERANCE}): {'reproduced' if reproduced else 'NOT reproduced'}")
        if run_config(5, args) != run_config(10, args):
            log("note: the 10-step run also has more units or epochs than the 5-step run, as in r2rt; "
                "--state-size 16 --epochs 10 trains both windows alike")
    log(f"total wall time {total:.1f} s")
    if args.csv:
        _write_csv(args.csv, runs, reference)
        log(f"results written to {args.csv}")
    if args.plot:
        try:
            _plot(args.plot, runs, reference, args.average_last)
            log(f"plot written to {args.plot}")
        except ImportError as error:
            log(f"plot skipped: {error}")
    return {"reference": reference, "runs": runs, "reproduced": reproduced, "seconds": total}


def _table(runs, reference) -> str:
    header = f"{'cell':<7} {'num_steps':>9} {'units':>5} {'epochs':>6} {'final loss':>10} {'neither':>8} " \
             f"{'first':>8} {'both':>8}  {'learned':<21} {'seconds':>7}"
    lines = [header, "-" * len(header)]
    for r in runs:
        lines.append(f"{r['cell'].upper():<7} {r['num_steps']:>9} {r['state_size']:>5} {r['epochs']:>6} "
                     f"{r['final_loss']:>10.4f} "
                     f"{reference['none']:>8.4f} {reference['t-3']:>8.4f} {reference['t-3 and t-8']:>8.4f}  "
                     f"{r['learned']:<21} {r['seconds']:>7.1f}")
    return "\n".join(lines)


def _check_effect(runs, reference):
    """True/False when the RNN ran with num_steps 5 and 10; None otherwise."""
    rnn = {r["num_steps"]: r["final_loss"] for r in runs if r["cell"] == "rnn"}
    if 5 not in rnn or 10 not in rnn:
        return None
    return bool(abs(rnn[5] - reference["t-3"]) <= TOLERANCE and abs(rnn[10] - reference["t-3 and t-8"]) <= TOLERANCE)


def _write_csv(path, runs, reference) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "num_steps", "state_size", "epochs", "final_loss", "reference_none",
                         "reference_t3", "reference_both", "learned", "seconds"])
        for r in runs:
            writer.writerow([r["cell"], r["num_steps"], r["state_size"], r["epochs"], repr(r["final_loss"]), repr(reference["none"]),
                             repr(reference["t-3"]), repr(reference["t-3 and t-8"]), r["learned"],
                             round(r["seconds"], 3)])


def _plot(path, runs, reference, window) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        losses = np.asarray(r["step_losses"])
        width = min(window, len(losses))
        smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
        axis.plot(np.arange(width, len(losses) + 1), smooth, label=f"{r['cell'].upper()}, num_steps={r['num_steps']}, {r['state_size']} units")
    for name, value in reference.items():
        axis.axhline(value, color="gray", linestyle="--", linewidth=0.8)
        axis.text(0, value, f" {REFERENCE_NAMES[name]}", va="bottom", fontsize=8, color="gray")
    axis.set_xlabel("training step")
    axis.set_ylabel(f"cross-entropy (mean of {window} steps)")
    axis.set_title("echo task: TensorFlow-style truncated BPTT")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------
# command line

def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers such as 5,10")
    return values


def _cell_list(text: str) -> list[str]:
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if not cells or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(CELLS)}")
    return cells


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def build_parser(prog: str = "rnnext train echo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="r2rt's binary echo task: TensorFlow-style truncated BPTT "
                                "with num_steps=5 learns only the echo at lag 3, and with 10 both echoes (lags 3 "
                                "and 8). Defaults are r2rt's runs: 4 units for 1 epoch at num_steps=5 (2 epochs at "
                                "1), 16 units for 10 epochs at num_steps=10.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cells", type=_cell_list, default="rnn,lstm,gru", metavar="LIST",
                   help="comma-separated cells to train: " + ", ".join(CELLS))
    p.add_argument("--num-steps", type=_positive_int_list, default="5,10", metavar="LIST",
                   help="comma-separated truncated-BPTT window lengths")
    # None (r2rt's per window) comes from set_defaults; SUPPRESS keeps "(default: None)" out of the help
    p.set_defaults(state_size=None, epochs=None)
    p.add_argument("--state-size", type=positive_int, default=argparse.SUPPRESS,
                   help="units of the recurrent layer for every window (default: r2rt's per num_steps: 4 for 1 "
                        "and 5, 16 for 10; 4 for others)")
    p.add_argument("--batch-size", type=positive_int, default=200, help="parallel rows the stream is cut into")
    p.add_argument("--size", type=positive_int, default=1_000_000, help="steps of echo data per epoch")
    p.add_argument("--epochs", type=positive_int, default=argparse.SUPPRESS,
                   help="epochs, each on freshly drawn data, for every window (default: r2rt's per num_steps: 2 "
                        "for 1, 1 for 5, 10 for 10; 1 for others)")
    p.add_argument("--optimizer", choices=("adagrad", "adam", "sgd"), default="adagrad",
                   help="optimizer (adagrad starts its accumulator at 0.1, as TensorFlow's)")
    p.add_argument("--lr", type=_positive_float, default=0.1, help="learning rate")
    p.add_argument("--average-last", type=positive_int, default=100,
                   help="the final loss is the mean training loss of this many last steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="engine threads; these layers are so small that more threads only add synchronisation")
    p.add_argument("--csv", metavar="PATH", help="also write the results table to this CSV file")
    p.add_argument("--plot", metavar="PATH", help="also plot the loss curves to this PNG (needs matplotlib)")
    # progress defaults to True at the parser level; SUPPRESS keeps "(default: True)" out of --quiet's help
    p.set_defaults(progress=True)
    p.add_argument("--quiet", dest="progress", action="store_false", default=argparse.SUPPRESS,
                   help="hide the per-step progress (a tqdm bar when tqdm is installed, else log lines)")
    p.add_argument("--quick", action="store_true",
                   help="tiny preset for smoke tests: 20,000 steps, batch 20, lr 0.3")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.lr, args.average_last = 20_000, 20, 0.3, 20
    if args.size < args.batch_size * max(args.num_steps):
        build_parser().error(f"--size {args.size} is too small for --batch-size {args.batch_size} and "
                             f"--num-steps {max(args.num_steps)}")
    return args


def main(argv=None) -> int:
    """`rnnext train echo [options]`; returns the exit status."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
