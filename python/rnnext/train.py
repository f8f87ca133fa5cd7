"""Training loops: `fit` (progress, validation, early stopping, checkpoints and exact resume, a NaN guard,
Ctrl-C handling), `evaluate`, `History`, and r2rt's two styles of truncated backpropagation through time.

Everything here speaks the layer/model protocol of docs/api.md: `forward(x[, lengths=])`, `backward(dy)`,
`parameters()`, `zero_grad()`, `train()` / `eval()`, and for checkpoints `save(path, ...)` / `rnnext.load`.

Batches are `(x, y)`, `(x, y, lengths)` or dicts with keys `"x"`, `"y"` and optionally `"lengths"` and
`"weight"` (the batch's share of the epoch average; by default the number of counted targets).
A batch source is one of
- a callable `source(epoch)` (or `source()`) returning an iterable of batches: the most flexible form, and the
  one that makes `resume=True` exact when it returns the same batches for the same epoch;
- a re-iterable object such as a list or `rnnext.data.BucketIterator` (whose `(x, lengths, labels)` batches
  are recognised and reordered); its NumPy Generators are saved in checkpoints, so resume is exact too.
Generators reachable from the model, from a source object or from a source function's closure are saved and
restored; a source that draws from anything else (a module-level generator) resumes with different batches.

    history = fit(model, softmax_cross_entropy, Adam(model.parameters(), 1e-3), lambda epoch: batches(epoch),
                  epochs=10, val_batches=valid, clip_norm=5.0, checkpoint_path="run.npz", resume=True)
    history.to_csv("history.csv")

A checkpoint is an ordinary `model.save` file (rnnext.load reads it); fit's own state is under
`metadata["train_state"]`.
"""
from __future__ import annotations

import csv
import inspect
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .optim import clip_grad_norm

__all__ = [
    "History",
    "fit",
    "evaluate",
    "train_step",
    "accuracy",
    "tbptt_tensorflow_style",
    "tbptt_k1_k2",
]

_STATEFUL_RESETS = ("epoch", "batch", "never")
_DERIVED_METRICS = {
    # name: function of the epoch's mean loss (in nats), so they are exact rather than averaged per batch
    "perplexity": lambda loss: math.exp(min(loss, 700.0)),
    "bits_per_char": lambda loss: loss / math.log(2.0),
    "bpc": lambda loss: loss / math.log(2.0),
}
CHECKPOINT_FORMAT = "rnnext.train/1"


# ---------------------------------------------------------------------------------------------------------
# history

class History:
    """What `fit` records: one row per epoch (`rows`) and the training loss of every step (`step_losses`).

    Each row holds `epoch` (1-based), `loss`, the training metrics, `val_loss` and `val_<metric>` when there
    is validation data, `lr` (the learning rate used during the epoch) and `seconds`. `history["val_loss"]`
    gives one column, like Keras' `history.history["val_loss"]`.
    """

    def __init__(self):
        self.rows: list[dict] = []
        self.step_losses: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.interrupted = False

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list:
        if key not in self.columns:
            raise KeyError(f"History has no column {key!r}; columns are {self.columns}")
        return [row.get(key) for row in self.rows]

    @property
    def columns(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names.extend(k for k in row if k not in names)
        return names

    @property
    def last(self) -> dict:
        return dict(self.rows[-1]) if self.rows else {}

    def to_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "step_losses": list(self.step_losses),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "interrupted": self.interrupted}

    @classmethod
    def from_dict(cls, state: dict) -> "History":
        history = cls()
        history.rows = [dict(r) for r in state.get("rows", [])]
        history.step_losses = [float(v) for v in state.get("step_losses", [])]
        history.best_epoch = state.get("best_epoch")
        history.stopped_early = bool(state.get("stopped_early", False))
        history.interrupted = bool(state.get("interrupted", False))
        return history

    def to_csv(self, path) -> Path:
        """Write one line per epoch, with a header of all columns; missing values are empty cells."""
        path = Path(path)
        columns = self.columns
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
        return path

    def plot(self, path, title: str | None = None) -> Path:
        """Save a PNG: the loss (per step, and per epoch with validation) and one panel per metric.

        Needs matplotlib (`pip install 'rnnext[plot]'`); raises ImportError with that hint without it.
        """
        plt = _pyplot()
        metric_names = [c for c in self.columns
                        if c not in ("epoch", "loss", "val_loss", "lr", "seconds") and not c.startswith("val_")]
        panels = 1 + len(metric_names)
        figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
        axes = axes[0]
        loss_axis = axes[0]
        if len(self.rows) <= 1 and self.step_losses:
            steps = np.arange(1, len(self.step_losses) + 1)
            loss_axis.plot(steps, self.step_losses, lw=0.6, alpha=0.5, label="train (per step)")
            window = max(1, len(self.step_losses) // 50)
            if window > 1:
                smooth = np.convolve(self.step_losses, np.ones(window) / window, mode="valid")
                loss_axis.plot(steps[window - 1:], smooth, label=f"train (mean of {window})")
            loss_axis.set_xlabel("step")
        else:
            epochs = self["epoch"]
            loss_axis.plot(epochs, self["loss"], marker="o", label="train")
            if "val_loss" in self.columns:
                loss_axis.plot(epochs, self["val_loss"], marker="o", label="validation")
            loss_axis.set_xlabel("epoch")
        loss_axis.set_ylabel("loss")
        loss_axis.legend()
        for axis, name in zip(axes[1:], metric_names):
            axis.plot(self["epoch"], self[name], marker="o", label="train")
            if f"val_{name}" in self.columns:
                axis.plot(self["epoch"], self[f"val_{name}"], marker="o", label="validation")
            axis.set_xlabel("epoch")
            axis.set_ylabel(name)
            axis.legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={_format_number(v)}" for k, v in self.last.items())
        return f"History({len(self.rows)} epochs, {len(self.step_losses)} steps; last: {last})"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib, which is not installed: "
                          "pip install 'rnnext[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    return plt


def _csv_value(value):
    return repr(value) if isinstance(value, float) else value


def _format_number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# batches, losses and metrics

def _unpack_batch(batch, where: str):
    """Return (x, y, lengths, weight) from a tuple or dict batch."""
    if isinstance(batch, dict):
        if "x" not in batch or "y" not in batch:
            raise ValueError(f"{where}: a dict batch needs keys 'x' and 'y', got {sorted(batch)}")
        x, y, lengths, weight = batch["x"], batch["y"], batch.get("lengths"), batch.get("weight")
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        x, y = batch[0], batch[1]
        lengths = batch[2] if len(batch) == 3 else None
        weight = None
    else:
        size = f" of length {len(batch)}" if hasattr(batch, "__len__") else ""
        raise ValueError(f"{where}: a batch must be (x, y), (x, y, lengths) or a dict with 'x' and 'y', "
                         f"got {type(batch).__name__}{size}")
    y = np.asarray(y)
    if lengths is not None:
        lengths = np.asarray(lengths)
    if weight is None:
        weight = float(np.sum(lengths)) if lengths is not None and y.ndim >= 2 else float(max(y.size, 1))
    return x, y, lengths, float(weight)


def _bucket_batches(iterator):
    # BucketIterator yields (x, lengths, labels); fit's batches are (x, y, lengths).
    for x, lengths, labels in iterator:
        yield x, labels, lengths


def _epoch_batches(source, epoch: int, where: str):
    """The iterable of batches for 0-based `epoch` from a callable or re-iterable source."""
    from .data import BucketIterator

    if isinstance(source, BucketIterator):
        return _bucket_batches(source)
    if callable(source) and not hasattr(source, "__iter__"):
        batches = source(epoch) if _positional_arity(source) >= 1 else source()
        if isinstance(batches, BucketIterator):
            return _bucket_batches(batches)
        return batches
    if iter(source) is source:
        raise ValueError(f"{where}: batches is a one-shot iterator ({type(source).__name__}); pass a list, or a "
                         "function epoch -> iterable of batches, so every epoch can iterate it again")
    return source


def _positional_arity(function) -> int:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)


def _accepts_lengths(function) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return "lengths" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def _loss_kwargs(function, output, y, lengths, option):
    """`lengths=` goes to the loss for sequence outputs [N, T, ...] whose loss accepts it (or when forced)."""
    if lengths is None or option is False:
        return {}
    if option is True:
        return {"lengths": lengths}
    output = np.asarray(output)
    if output.ndim >= 3 and y.ndim >= 2 and _accepts_lengths(function):
        return {"lengths": lengths}
    return {}


def _forward(model, x, lengths):
    return model.forward(x) if lengths is None else model.forward(x, lengths=lengths)


def accuracy(output, y, lengths=None) -> float:
    """Fraction of correct predictions: argmax over classes for [..., C] outputs with C > 1, or `logit > 0`
    for one output per example ([N] or [N, 1] logits against 0/1 targets). For sequence outputs [N, T, C]
    with `lengths`, only valid steps count."""
    output = np.asarray(output)
    y = np.asarray(y)
    if output.shape == y.shape or (output.ndim == y.ndim + 1 and output.shape[-1] == 1):
        predicted = (output.reshape(y.shape) > 0).astype(np.int64)
        correct = predicted == (y > 0.5)
    else:
        correct = np.argmax(output, axis=-1) == y
    if lengths is not None and correct.ndim >= 2:
        valid = np.arange(correct.shape[1])[np.newaxis, :] < np.asarray(lengths)[:, np.newaxis]
        return float(np.count_nonzero(correct & valid)) / max(int(np.count_nonzero(valid)), 1)
    return float(np.mean(correct)) if correct.size else 0.0


def _resolve_metrics(metrics) -> tuple[dict, dict]:
    """Split `metrics` into per-batch callables {name: fn(output, y)} and epoch-level ones derived from the
    epoch's mean loss {name: fn(loss)}."""
    if metrics is None:
        return {}, {}
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        items = []
        for metric in metrics:
            if isinstance(metric, str):
                items.append((metric, metric))
            elif callable(metric):
                items.append((getattr(metric, "__name__", "metric"), metric))
            else:
                raise ValueError(f"fit: metric {metric!r} is neither a name nor a callable")
    batch_metrics, derived = {}, {}
    for name, metric in items:
        if isinstance(metric, str):
            if metric == "accuracy":
                batch_metrics[name] = accuracy
            elif metric in _DERIVED_METRICS:
                derived[name] = _DERIVED_METRICS[metric]
            else:
                raise ValueError(f"fit: unknown metric {metric!r}, expected a callable or one of "
                                 f"{['accuracy', *_DERIVED_METRICS]}")
        elif callable(metric):
            batch_metrics[name] = metric
        else:
            raise ValueError(f"fit: metric {name!r} is {type(metric).__name__}, expected a callable or a name")
    return batch_metrics, derived


class _Averages:
    """Weighted running means of the loss and the per-batch metrics over one epoch."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.weight = float(state.get("weight", 0.0))
        self.sums = {k: float(v) for k, v in state.get("sums", {}).items()}
        self.batches = int(state.get("batches", 0))

    def add(self, weight: float, values: dict) -> None:
        self.weight += weight
        self.batches += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + weight * float(value)

    def means(self) -> dict:
        return {name: total / self.weight for name, total in self.sums.items()} if self.weight else {}

    def state(self) -> dict:
        return {"weight": self.weight, "sums": dict(self.sums), "batches": self.batches}


# ---------------------------------------------------------------------------------------------------------
# one step, evaluation

class _NonFiniteError(FloatingPointError):
    """Raised inside a step; fit re-raises it as a FloatingPointError that also says where."""

    def __init__(self, what: str, value: float | None = None):
        super().__init__(what)
        self.what = what if value is None else f"{what} ({value})"


class _WeightGuard:
    """Copies of the parameters taken before each update, so a step that makes them NaN/inf can be undone.

    The buffers are allocated once; each step is one memcpy per parameter (cheap next to forward/backward).
    """

    def __init__(self, params):
        self.params = list(params)
        self.copies = [np.empty_like(p.value) for p in self.params]
        self.updating = False  # True inside optimizer.step(), when the weights may be half updated

    def save(self) -> None:
        for copy, param in zip(self.copies, self.params):
            np.copyto(copy, param.value)

    def restore(self) -> None:
        for copy, param in zip(self.copies, self.params):
            np.copyto(param.value, copy)

    def weights_finite(self) -> bool:
        # A float64 sum cannot overflow for float32 weights and propagates any NaN/inf; no temporary array.
        return all(math.isfinite(float(np.sum(p.value, dtype=np.float64))) for p in self.params)


def _gradient_norm(params) -> float:
    squared = 0.0
    for param in params:
        if param.trainable:
            flat = np.asarray(param.grad, dtype=np.float64).ravel()
            squared += float(np.dot(flat, flat))
    return math.sqrt(squared)


def _zero_grad(model, optimizer) -> None:
    # The model's zero_grad also clears frozen parameters that the optimizer may not hold.
    if hasattr(model, "zero_grad"):
        model.zero_grad()
    else:
        optimizer.zero_grad()


def train_step(model, loss_fn, optimizer, x, y, lengths=None, *, clip_norm=None, loss_lengths=None,
               guard: _WeightGuard | None = None):
    """One step of the plain loop in docs/api.md: forward, loss, zero_grad, backward, clip, update.

    Returns `(loss, output)`. Raises `FloatingPointError` for a non-finite loss or gradient *before* touching
    the weights; with a `guard` (fit always passes one) also for non-finite weights after the update, which
    are then put back as they were.
    """
    output = _forward(model, x, lengths)
    loss, doutput = loss_fn(output, y, **_loss_kwargs(loss_fn, output, y, lengths, loss_lengths))
    loss = float(loss)
    if not math.isfinite(loss):
        raise _NonFiniteError("loss", loss)
    _zero_grad(model, optimizer)
    model.backward(doutput)
    params = optimizer.params
    norm = clip_grad_norm(params, clip_norm) if clip_norm is not None else _gradient_norm(params)
    if not math.isfinite(norm):
        raise _NonFiniteError("gradient norm", norm)
    if guard is None:
        optimizer.step()
        return loss, output
    guard.save()
    guard.updating = True
    optimizer.step()
    guard.updating = False
    if not guard.weights_finite():
        guard.restore()
        raise _NonFiniteError("updated weights")
    return loss, output


def evaluate(model, loss_fn, batches, *, metrics=None, epoch: int = 0, reset_states: bool = True,
             loss_lengths=None) -> dict:
    """Mean loss and metrics of `model` over `batches` in eval mode (no dropout, no weight change).

    Returns `{"loss": ..., "<metric>": ...}`, each a mean weighted as in `fit`. Stateful layers are reset
    before the first batch when `reset_states` is true, so validation starts from zero states.
    """
    batch_metrics, derived = _resolve_metrics(metrics)
    was_training = getattr(model, "training", True)
    if hasattr(model, "eval"):
        model.eval()
    if reset_states and hasattr(model, "reset_states"):
        model.reset_states()
    averages = _Averages()
    try:
        for batch in _epoch_batches(batches, epoch, "evaluate"):
            x, y, lengths, weight = _unpack_batch(batch, "evaluate")
            output = _forward(model, x, lengths)
            loss, _ = loss_fn(output, y, **_loss_kwargs(loss_fn, output, y, lengths, loss_lengths))
            values = {"loss": float(loss)}
            for name, metric in batch_metrics.items():
                values[name] = metric(output, y, **_loss_kwargs(metric, output, y, lengths, loss_lengths))
            averages.add(weight, values)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if averages.batches == 0:
        raise ValueError("evaluate: the batches yielded no batch")
    result = averages.means()
    for name, function in derived.items():
        result[name] = function(result["loss"])
    return result


# ---------------------------------------------------------------------------------------------------------
# random state, stateful layers, checkpoints

def _seed_everything(seed: int) -> None:
    """Seed NumPy's legacy global RNG and rnnext's default generator (used by layers built without seed=)."""
    from . import layers

    np.random.seed(seed % 2**32)
    layers.seed(seed)


def _find_generators(root, prefix: str, found: dict, seen: set, depth: int = 0) -> None:
    """Collect every NumPy Generator reachable from `root` through attributes, lists, tuples and dicts."""
    if depth > 8 or id(root) in seen:
        return
    seen.add(id(root))
    if isinstance(root, np.random.Generator):
        found[prefix] = root
        return
    if isinstance(root, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(root)]
    elif isinstance(root, dict):
        children = [(str(k), v) for k, v in root.items()]
    elif (hasattr(root, "__dict__") and not isinstance(root, type) and not inspect.ismodule(root)
          and not inspect.isroutine(root)):
        children = list(vars(root).items())
    else:
        return
    for name, child in children:
        if not isinstance(child, (np.ndarray, str, bytes, int, float)):
            _find_generators(child, f"{prefix}.{name}", found, seen, depth + 1)


class _RandomState:
    """The NumPy Generators that a run draws from, split into the model's (dropout, and rnnext's default
    generator) and the data sources' (plus NumPy's legacy global RNG), with JSON-able snapshots.

    Resuming in the middle of an epoch restores the data generators to their state at the start of the epoch,
    replays the batches already trained on, and then restores the model generators to their state at the
    checkpoint: so shuffling and dropout masks both continue exactly.
    """

    def __init__(self, model, sources):
        self.model: dict = {}
        self.data: dict = {}
        seen: set = set()
        _find_generators(model, "model", self.model, seen)
        from . import layers  # its default generator, which layers built without seed= draw from

        for attr, value in vars(layers).items():
            if isinstance(value, np.random.Generator) and id(value) not in seen:
                seen.add(id(value))
                self.model[f"rnnext.layers.{attr}"] = value
        for i, source in enumerate(sources):
            if source is not None:
                _find_generators(source, f"data{i}", self.data, seen)
                closure = getattr(source, "__closure__", None) or ()
                for j, cell in enumerate(closure):
                    try:
                        content = cell.cell_contents
                    except ValueError:  # an empty cell
                        continue
                    _find_generators(content, f"data{i}.closure{j}", self.data, seen)

    def snapshot(self) -> dict:
        legacy = np.random.get_state()
        return {
            "model": {name: g.bit_generator.state for name, g in self.model.items()},
            "data": {name: g.bit_generator.state for name, g in self.data.items()},
            "numpy_legacy": [legacy[0], legacy[1].tolist(), int(legacy[2]), int(legacy[3]), float(legacy[4])],
        }

    def restore(self, state: dict, parts=("model", "data")) -> None:
        for part in parts:
            generators = getattr(self, part)
            for name, saved in state.get(part, {}).items():
                if name in generators:
                    generators[name].bit_generator.state = saved
        legacy = state.get("numpy_legacy")
        if "data" in parts and legacy:
            np.random.set_state((legacy[0], np.asarray(legacy[1], dtype=np.uint32), legacy[2], legacy[3], legacy[4]))


def _reset_states(model) -> None:
    if hasattr(model, "reset_states"):
        model.reset_states()


def _stateful_layers(model) -> list:
    layers = getattr(model, "layers", None)
    layers = list(layers) if layers is not None else [model]
    return [layer for layer in layers if getattr(layer, "stateful", False)]


def _copy_carried_states(model) -> list:
    """Copies of the states each stateful layer carries to its next call (None where it carries none yet)."""
    return [layer.states for layer in _stateful_layers(model)]


def _set_carried_states(model, carried: list) -> None:
    for layer, states in zip(_stateful_layers(model), carried):
        layer.states = states


def _states_to_json(carried: list) -> list:
    """Carried states as nested lists (exact: float32 and float64 values survive the round trip through JSON)."""
    return [None if states is None else
            [{"pair": isinstance(s, tuple), "arrays": [a.tolist() for a in (s if isinstance(s, tuple) else (s,))],
              "dtype": str((s[0] if isinstance(s, tuple) else s).dtype)} for s in states]
            for states in carried]


def _states_from_json(saved: list) -> list:
    carried = []
    for states in saved:
        if states is None:
            carried.append(None)
            continue
        entries = []
        for entry in states:
            arrays = [np.asarray(a, dtype=entry["dtype"]) for a in entry["arrays"]]
            entries.append(tuple(arrays) if entry["pair"] else arrays[0])
        carried.append(entries)
    return carried


def _write_checkpoint(model, optimizer, path: Path, metadata: dict) -> None:
    model.save(path, metadata=metadata, optimizer=optimizer)


def _read_checkpoint(path: Path):
    """(weights {name: array}, metadata dict, optimizer state dict or None) of a checkpoint."""
    from .models import load_checkpoint

    checkpoint = load_checkpoint(path)
    weights = {name: param.value for name, param in checkpoint.model.named_parameters()}
    return weights, checkpoint.metadata, checkpoint.optimizer_state


def _assign_weights(model, weights: dict, path: Path) -> None:
    named = dict(model.named_parameters())
    missing = [name for name in named if name not in weights]
    if missing:
        raise ValueError(f"checkpoint {path} has no weights for {missing}; was it saved from another model?")
    for name, param in named.items():
        value = np.asarray(weights[name])
        if value.shape != param.value.shape:
            raise ValueError(f"checkpoint {path}: {name!r} has shape {value.shape}, expected {param.value.shape}")
        np.copyto(param.value, value)


def _best_path(path: Path) -> Path:
    return path.with_name(path.stem + ".best" + (path.suffix or ".npz"))


class _InterruptGuard:
    """While active (main thread only), the first Ctrl-C only sets `requested`, so `fit` stops cleanly after
    the current step and saves a checkpoint that resumes exactly; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ---------------------------------------------------------------------------------------------------------
# progress display

class _Progress:
    """A tqdm bar per epoch when tqdm is installed, else a plain line every `log_every` steps."""

    def __init__(self, enabled: bool, epochs: int, log_every: int | None):
        self.enabled, self.epochs, self.log_every = enabled, epochs, log_every
        self.bar = None
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.tqdm = tqdm
            except ImportError:
                pass

    def start_epoch(self, epoch: int, total: int | None, initial: int) -> None:
        self.epoch, self.total, self.started = epoch, total, time.perf_counter()
        self.every = self.log_every or (max(1, total // 10) if total else 100)
        if self.enabled and self.tqdm is not None:
            self.bar = self.tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{self.epochs}",
                                 unit="step", leave=False, dynamic_ncols=True)

    def update(self, step_in_epoch: int, running_loss: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step_in_epoch % 10 == 0 or step_in_epoch == self.total:
                self.bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
        elif step_in_epoch % self.every == 0:
            of = f"/{self.total}" if self.total else ""
            seconds = time.perf_counter() - self.started
            print(f"epoch {self.epoch + 1}/{self.epochs}  step {step_in_epoch}{of}  loss {running_loss:.4f}"
                  f"  ({seconds:.1f} s)", flush=True)

    def end_epoch(self, row: dict) -> None:
        self.close()
        self.write("  ".join([f"epoch {row['epoch']}/{self.epochs}:"] +
                             [f"{k} {_format_number(v)}" for k, v in row.items() if k != "epoch"]))

    def write(self, message: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.clear()
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _length(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"fit: {name} is {value!r}, expected an integer >= {minimum}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# fit

class _Position:
    """Where a run is: 0-based `epoch`, batches of it already trained on, and steps over all epochs."""

    def __init__(self, epoch: int = 0, done_in_epoch: int = 0, global_step: int = 0):
        self.epoch, self.done_in_epoch, self.global_step = epoch, done_in_epoch, global_step

    def where(self) -> str:
        return (f"epoch {self.epoch + 1}, step {self.done_in_epoch + 1} of the epoch "
                f"(global step {self.global_step + 1})")


def fit(model, loss_fn, optimizer, train_batches, epochs: int = 1, *, val_batches=None, clip_norm=None,
        scheduler=None, early_stopping_patience=None, early_stopping_min_delta: float = 0.0,
        restore_best_weights: bool = False, checkpoint_path=None, checkpoint_every=None, resume: bool = False,
        metadata: dict | None = None, progress: bool = True, log_every: int | None = None, seed=None,
        metrics=None, stateful_reset: str = "epoch", loss_lengths=None, on_interrupt: str = "raise") -> History:
    """Train `model` for `epochs` epochs and return a `History`.

    model:          docs/api.md protocol; `optimizer` holds `model.parameters()`.
    loss_fn:        `loss_fn(output, y) -> (loss, doutput)`, e.g. `rnnext.losses.softmax_cross_entropy`.
                    A batch's `lengths` go to the model and, for [N, T, ...] outputs, to a loss that takes
                    `lengths=` (`loss_lengths=True/False` forces this on or off).
    train_batches, val_batches: batch sources (see the module docstring). Validation runs after every epoch
                    in eval mode, from zero states.
    clip_norm:      clip the global gradient norm to this value before each update.
    scheduler:      stepped once after every epoch (rnnext.optim.StepLR etc.).
    early_stopping_patience: stop once the monitored loss (`val_loss`, else `loss`) has gone this many epochs
                    without improving by more than `early_stopping_min_delta` (Keras' EarlyStopping);
                    `restore_best_weights` then puts back the weights of the best epoch.
    checkpoint_path: `.npz` written atomically by `model.save` after every epoch, every `checkpoint_every`
                    steps, on Ctrl-C and at the end. It holds the optimizer state and, in its metadata
                    (beside the `metadata` given here), the position in training, the history, the scheduler
                    state, the carried states of stateful layers and the RNG states, so that `resume=True`
                    continues exactly: the same numbers as an uninterrupted run, given a batch source that
                    yields the same batches for the same epoch. Without a checkpoint file resume starts afresh.
    seed:           seeds NumPy's legacy RNG and rnnext's default generator first (dropout masks, and data
                    sources that draw from them; the weights exist already, since the optimizer holds them).
    metrics:        names ("accuracy", "perplexity", "bits_per_char") or {name: fn(output, y)} per batch.
    stateful_reset: when stateful layers are reset: "epoch" (start of every epoch), "batch", or "never".
    progress:       a tqdm bar when tqdm is installed, else a plain line every `log_every` steps (default:
                    ten per epoch); False prints nothing.
    on_interrupt:   after Ctrl-C (KeyboardInterrupt) and the checkpoint: "raise" re-raises KeyboardInterrupt,
                    "return" returns the history with `history.interrupted = True`.

    A non-finite loss, gradient or updated weight raises `FloatingPointError` naming the epoch and step; the
    weights are then those from before that step (an update that produced NaN/inf is undone) and stateful
    layers are reset (their carried states may hold NaN).
    """
    epochs = _check_count("epochs", epochs, minimum=0)
    if stateful_reset not in _STATEFUL_RESETS:
        raise ValueError(f"fit: stateful_reset={stateful_reset!r}, expected one of {_STATEFUL_RESETS}")
    if on_interrupt not in ("raise", "return"):
        raise ValueError(f"fit: on_interrupt={on_interrupt!r}, expected 'raise' or 'return'")
    if checkpoint_every is not None:
        checkpoint_every = _check_count("checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_path is None:
            raise ValueError("fit: checkpoint_every needs a checkpoint_path")
    if early_stopping_patience is not None:
        early_stopping_patience = _check_count("early_stopping_patience", early_stopping_patience, minimum=0)
    if resume and checkpoint_path is None:
        raise ValueError("fit: resume=True needs a checkpoint_path")
    if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
        raise ValueError(f"fit: clip_norm is {clip_norm!r}, expected a positive number")
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    batch_metrics, derived = _resolve_metrics(metrics)
    if seed is not None:
        _seed_everything(int(seed))

    show = _Progress(progress, epochs, log_every)
    history = History()
    at = _Position()
    averages = _Averages()
    best = {"value": None, "epoch": None, "waited": 0}
    best_weights = None
    rng = _RandomState(model, [train_batches, val_batches])
    epoch_rng = None          # RNG snapshot at the start of the current epoch
    step_start = None         # (RNG snapshot, carried states) at the start of the current step
    resume_state = None

    if resume and checkpoint_path.exists():
        weights, saved_meta, optimizer_state = _read_checkpoint(checkpoint_path)
        resume_state = _train_state(saved_meta, checkpoint_path)
        _assign_weights(model, weights, checkpoint_path)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        with _malformed_train_state(checkpoint_path):
            if scheduler is not None and resume_state.get("scheduler") is not None:
                scheduler.load_state_dict(resume_state["scheduler"])
            history = History.from_dict(resume_state["history"])
            at = _Position(*(_check_count(key, resume_state[key], minimum=0)
                              for key in ("epoch", "done_in_epoch", "global_step")))
            averages = _Averages(resume_state["averages"])
            best = dict(resume_state["best"])
        if restore_best_weights and _best_path(checkpoint_path).exists():
            best_weights = _read_checkpoint(_best_path(checkpoint_path))[0]
        show.write(f"resuming from {checkpoint_path} at epoch {at.epoch + 1}, step {at.done_in_epoch} of the "
                   f"epoch (global step {at.global_step})")
        if resume_state["finished"] and at.epoch >= epochs:
            show.write(f"{checkpoint_path}: training already finished ({at.epoch} epochs)")
    elif resume:
        show.write(f"no checkpoint at {checkpoint_path} yet: starting from the beginning")

    def save_checkpoint(finished: bool = False, at_step_start: bool = False) -> None:
        rng_now, carried = step_start if at_step_start else (rng.snapshot(), _copy_carried_states(model))
        train_state = {
            "format": CHECKPOINT_FORMAT, "epoch": at.epoch, "done_in_epoch": at.done_in_epoch,
            "global_step": at.global_step, "epochs": epochs, "finished": finished,
            "averages": averages.state(), "history": history.to_dict(), "best": best,
            "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else None,
            "rng": rng_now, "epoch_rng": epoch_rng,
            "carried_states": _states_to_json(carried) if at.done_in_epoch else None,
        }
        _write_checkpoint(model, optimizer, checkpoint_path, {**(metadata or {}), "train_state": train_state})

    guard = _WeightGuard(optimizer.params)
    if hasattr(model, "train"):
        model.train()
    interrupted = False
    in_step = False  # between the start of a step and its bookkeeping: the RNGs and states have moved
    with _InterruptGuard() as interrupt:
        try:
            while at.epoch < epochs and not history.stopped_early:
                if resume_state is not None:
                    # The data source starts from its state at the start of the epoch (the checkpoint's
                    # current state when it was written at an epoch boundary) ...
                    with _malformed_train_state(checkpoint_path):
                        rng.restore(resume_state["epoch_rng"] or resume_state["rng"], parts=("data",))
                if at.done_in_epoch == 0:
                    epoch_rng = rng.snapshot()
                    averages = _Averages()
                    if stateful_reset in ("epoch", "batch"):
                        _reset_states(model)
                batches = _epoch_batches(train_batches, at.epoch, "fit")
                show.start_epoch(at.epoch, _length(batches), at.done_in_epoch)
                started = time.perf_counter()
                iterator = iter(batches)
                if resume_state is not None:
                    # ... replays the batches trained on before the checkpoint, and then the model's
                    # generators and carried states continue from where the checkpoint left them.
                    for done in range(at.done_in_epoch):
                        if next(iterator, None) is None:
                            raise ValueError(f"fit: {checkpoint_path}: the training state says {at.done_in_epoch} "
                                             f"batches of epoch {at.epoch + 1} were trained on, but it has {done}")
                    with _malformed_train_state(checkpoint_path):
                        rng.restore(resume_state["rng"], parts=("model",))
                        if resume_state["carried_states"] is not None:
                            _set_carried_states(model, resume_state["carried_states"])
                    resume_state = None

                for batch in iterator:
                    x, y, lengths, weight = _unpack_batch(batch, "fit")
                    if stateful_reset == "batch":
                        _reset_states(model)
                    if checkpoint_path is not None:
                        step_start = (rng.snapshot(), _copy_carried_states(model))
                    in_step = True
                    try:
                        loss, output = train_step(model, loss_fn, optimizer, x, y, lengths, clip_norm=clip_norm,
                                                  loss_lengths=loss_lengths, guard=guard)
                    except _NonFiniteError as error:
                        _reset_states(model)
                        raise FloatingPointError(
                            f"fit: non-finite {error.what} at {at.where()}; the weights are "
                            "those from before this step. Try a smaller learning rate, or clip_norm."
                        ) from None
                    values = {"loss": loss}
                    for name, metric in batch_metrics.items():
                        values[name] = metric(output, y, **_loss_kwargs(metric, output, y, lengths, loss_lengths))
                    averages.add(weight, values)
                    history.step_losses.append(loss)
                    at.done_in_epoch += 1
                    at.global_step += 1
                    in_step = False
                    show.update(at.done_in_epoch, averages.means()["loss"])
                    if checkpoint_every and at.global_step % checkpoint_every == 0:
                        save_checkpoint()
                    if interrupt.requested:
                        raise KeyboardInterrupt
                if averages.batches == 0:
                    raise ValueError(f"fit: train_batches gave no batches in epoch {at.epoch + 1}")

                row = {"epoch": at.epoch + 1, **averages.means()}
                for name, function in derived.items():
                    row[name] = function(row["loss"])
                if val_batches is not None:
                    carried = _copy_carried_states(model)  # validation starts from zero states
                    validation = evaluate(model, loss_fn, val_batches, metrics=metrics, epoch=at.epoch,
                                          loss_lengths=loss_lengths)
                    _set_carried_states(model, carried)
                    row.update({f"val_{k}": v for k, v in validation.items()})
                row["lr"] = optimizer.lr
                row["seconds"] = round(time.perf_counter() - started, 3)
                history.rows.append(row)
                show.end_epoch(row)
                if scheduler is not None:
                    scheduler.step()

                monitored = row.get("val_loss", row["loss"])
                if best["value"] is None or monitored < best["value"] - early_stopping_min_delta:
                    best.update(value=monitored, epoch=at.epoch + 1, waited=0)
                    history.best_epoch = at.epoch + 1
                    if restore_best_weights:
                        best_weights = {n: p.value.copy() for n, p in model.named_parameters()}
                        if checkpoint_path is not None:
                            model.save(_best_path(checkpoint_path), metadata=dict(metadata or {}))
                else:
                    best["waited"] += 1
                    if early_stopping_patience is not None and best["waited"] >= early_stopping_patience:
                        history.stopped_early = True
                        show.write(f"early stopping: no improvement for {best['waited']} epochs "
                                   f"(best: epoch {best['epoch']}, {best['value']:.4f})")
                at.epoch += 1
                at.done_in_epoch = 0
                epoch_rng = None
                if checkpoint_path is not None:
                    save_checkpoint(finished=at.epoch >= epochs or history.stopped_early)
        except KeyboardInterrupt:
            interrupted = True
            if guard.updating:  # stopped inside optimizer.step: put the weights back as they were
                guard.restore()
        finally:
            show.close()

    if interrupted:
        history.interrupted = True
        where = f"epoch {at.epoch + 1}, after step {at.done_in_epoch} of the epoch"
        if checkpoint_path is not None:
            save_checkpoint(at_step_start=in_step and step_start is not None)
            message = f"interrupted at {where}; checkpoint saved to {checkpoint_path} (resume it with resume=True)"
        else:
            message = f"interrupted at {where} (no checkpoint_path, nothing saved)"
        print(message, file=sys.stderr, flush=True)
        if on_interrupt == "raise":
            raise KeyboardInterrupt(message)
        return history

    if restore_best_weights and best_weights is not None:
        for name, param in model.named_parameters():
            np.copyto(param.value, best_weights[name])
    return history


def _train_state(metadata, path: Path) -> dict:
    state = (metadata or {}).get("train_state")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"fit: {path} is not a training checkpoint written by rnnext.train.fit (resume=True "
                         "needs one); use rnnext.load for a plain saved model")
    with _malformed_train_state(path):
        carried = state.get("carried_states")
        return {**state, "carried_states": None if carried is None else _states_from_json(carried)}


class _malformed_train_state:
    """Turns what a damaged or crafted training state makes the resume code raise into a ValueError naming the
    checkpoint (the weights and optimizer state were checked by load_checkpoint already)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, (KeyError, TypeError, ValueError, IndexError, AttributeError,
                                                  OverflowError)):
            raise ValueError(f"fit: {self.path}: the training state (metadata['train_state']) is malformed "
                             f"({kind.__name__}: {error})") from None
        return False


# ---------------------------------------------------------------------------------------------------------
# truncated backpropagation through time (r2rt, "Styles of Truncated Backpropagation", 2016)

class _CarryStates:
    """Make every recurrent layer of `model` stateful for the duration, starting from zero states, and put the
    `stateful` flags (and the carried states of layers that were not stateful) back afterwards."""

    def __init__(self, model):
        self.layers = [layer for layer in (getattr(model, "layers", None) or [model]) if hasattr(layer, "stateful")]
        if not self.layers:
            raise ValueError(f"truncated BPTT: {type(model).__name__} has no recurrent layer to carry states")

    def __enter__(self):
        self.flags = [layer.stateful for layer in self.layers]
        for layer in self.layers:
            layer.stateful = True
            layer.reset_states()
        return self

    def __exit__(self, *exc):
        for layer, flag in zip(self.layers, self.flags):
            layer.stateful = flag
            if not flag:
                layer.reset_states()
        return False


def _check_stream(x, y, where: str):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.ndim < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"{where}: x has shape {x.shape} and y {y.shape}, expected batch-first streams "
                         "[N, L, ...] with the same N and L")
    return x, y


def tbptt_tensorflow_style(model, loss_fn, optimizer, x, y, num_steps: int, *, clip_norm=None) -> list[float]:
    """TensorFlow-style truncated BPTT over one long batch of streams `x [N, L, ...]`, targets `y [N, L, ...]`.

    The streams are cut into consecutive windows of `num_steps` (the last one may be shorter); each window is
    one training step: forward from the state the previous window ended in, loss on every step of the window,
    backward within the window only, update. So the error at the last step of a window flows back
    `num_steps - 1` steps but the error at its first step flows back none; r2rt gives this as the reason an
    RNN trained with num_steps=5 does not learn the echo at lag 8 (docs/results.md: with 16 units it does,
    from the state carried across windows). Cost per time step: one forward and one backward
    step. Stateful layers give the same thing across `fit` batches; this function runs from zero states and
    leaves the layers' `stateful` flags as they were. `model` must output every step (`return_sequences=True`).
    Returns the loss of every window.
    """
    where = "tbptt_tensorflow_style"
    x, y = _check_stream(x, y, where)
    num_steps = _check_count("num_steps", num_steps, minimum=1)
    losses = []
    guard = _WeightGuard(optimizer.params)
    with _CarryStates(model):
        for start in range(0, x.shape[1], num_steps):
            window = slice(start, start + num_steps)
            try:
                loss, _ = train_step(model, loss_fn, optimizer, x[:, window], y[:, window], clip_norm=clip_norm,
                                     guard=guard)
            except _NonFiniteError as error:
                raise FloatingPointError(f"{where}: non-finite {error.what} in the window starting at step "
                                         f"{start}; the weights are those from before it") from None
            losses.append(loss)
    return losses


def tbptt_k1_k2(model, loss_fn, optimizer, x, y, k1: int, k2: int, *, clip_norm=None) -> list[float]:
    """True truncated BPTT(k1, k2) (Williams and Peng 1990; r2rt's "true" style) over streams `x [N, L, ...]`.

    Every `k1` steps (at t = k1, 2*k1, ..., and at L) there is one update, whose loss is that of the steps
    since the previous update, each backpropagated through the `k2` steps before t: the layers run forward
    from their state at `s = t - k2` over `x[:, s:t]`, the loss of the last `k1` outputs is differentiated
    (dy is zero on the earlier ones), and backward runs over the whole window. With `k1 = 1, k2 = n`, every
    error flows back the full `n` steps, which TensorFlow-style windows give only to the last step of each.
    `k2 >= k1` is required (otherwise some errors would not reach their own inputs).

    The state at the next window's start, `t + k1 - k2`, is found by running the layers forward from the
    state at `s` over `x[:, s:s+k1]` (with the updated weights); when k1 = k2 it is simply the window's final
    state, so `tbptt_k1_k2(..., k, k)` gives exactly `tbptt_tensorflow_style(..., k)`.
    Cost per time step: (k1 + k2) / k1 forward steps and k2 / k1 backward steps (TF style: 1 and 1), so
    k1 = 1, k2 = n costs about n times as much as TF-style windows of n. Memory holds one k2-step window.
    `model` must output every step (`return_sequences=True`); it starts from zero states, and its layers'
    `stateful` flags are left as they were. Returns the loss of every update.
    """
    where = "tbptt_k1_k2"
    x, y = _check_stream(x, y, where)
    k1 = _check_count("k1", k1, minimum=1)
    k2 = _check_count("k2", k2, minimum=1)
    if k2 < k1:
        raise ValueError(f"{where}: k2={k2} < k1={k1}; each update must backpropagate at least the k1 steps "
                         "whose losses it uses")
    length = x.shape[1]
    losses = []
    guard = _WeightGuard(optimizer.params)
    with _CarryStates(model):
        anchor, anchor_states = 0, _copy_carried_states(model)  # states at step `anchor` (zeros at 0)
        previous = 0
        while previous < length:
            t = min(previous + k1, length)
            start = max(0, t - k2)
            if start > anchor:  # advance the saved state from `anchor` to `start`, forward only
                _set_carried_states(model, anchor_states)
                _forward(model, x[:, anchor:start], None)
                anchor, anchor_states = start, _copy_carried_states(model)
            _set_carried_states(model, anchor_states)
            scored = t - previous  # the last `scored` outputs of the window carry loss

            def window_loss(output, targets, scored=scored):
                loss, dscored = loss_fn(output[:, -scored:], targets[:, -scored:])
                doutput = np.zeros_like(output)
                doutput[:, -scored:] = dscored
                return loss, doutput

            try:
                loss, _ = train_step(model, window_loss, optimizer, x[:, start:t], y[:, start:t],
                                     clip_norm=clip_norm, guard=guard)
            except _NonFiniteError as error:
                raise FloatingPointError(f"{where}: non-finite {error.what} in the update at step {t}; the "
                                         "weights are those from before it") from None
            losses.append(loss)
            if max(0, min(t + k1, length) - k2) == t:
                # the next window starts where this one ended (k1 = k2): its final states are the right ones
                anchor, anchor_states = t, _copy_carried_states(model)
            previous = t
    return losses
