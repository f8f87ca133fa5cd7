"""Training loops: `fit` (progress, validation, early stopping, checkpoints and exact resume, a NaN guard,
Ctrl-C handling, a time limit), `evaluate`, and, from their own modules, `History`, `train_step`, `accuracy`
and r2rt's two styles of truncated backpropagation through time.

Everything here speaks the layer/model protocol of docs/api.md: `forward(x[, lengths=])`, `backward(dy)`,
`parameters()`, `zero_grad()`, `train()` / `eval()`, and for checkpoints `save(path, ...)` / `rnnext.load`.

Batches are `(x, y)`, `(x, y, lengths)` or dicts with keys `"x"`, `"y"` and optionally `"lengths"` and
`"weight"` (the batch's share of the epoch average; by default the number of counted targets).
A batch source is one of
- a callable `source(epoch)` (or `source()`) returning an iterable of batches: the most flexible form, and the
  one that makes `resume=True` exact when it returns the same batches for the same epoch;
- a re-iterable object such as a list or `rnnext.data.BucketIterator` (whose `(x, lengths, labels)` batches
  are recognised and reordered).
The random generators of the model and of sources that have a `generators()` method are saved in checkpoints
and restored on resume (see rnnext.train_state); a source that draws from anything else resumes with
different batches.

    history = fit(model, softmax_cross_entropy, Adam(model.parameters(), 1e-3), lambda epoch: batches(epoch),
                  epochs=10, val_batches=valid, clip_norm=5.0, checkpoint_path="run.npz", resume=True)
    history.to_csv("history.csv")

A checkpoint is an ordinary `model.save` file (rnnext.load reads it); fit's own state is under
`metadata["train_state"]`.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .history import History, Progress
from .layer_base import inference_mode
from .metrics import Averages, accuracy, resolve_metrics
from .step import NonFiniteError, WeightGuard, epoch_batches, forward, loss_kwargs, train_step, unpack_batch
from .tbptt import tbptt_k1_k2, tbptt_tensorflow_style
from .train_state import (TRAIN_STATE_FORMAT, RandomState, assign_weights, best_path, copy_carried_states,
                          malformed_train_state, read_checkpoint, seed_everything, set_carried_states,
                          states_to_json, train_state)
from .validation import check_choice, check_float, check_int

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


def _reset_states(model) -> None:
    if hasattr(model, "reset_states"):
        model.reset_states()


def evaluate(model, loss_fn, batches, *, metrics=None, epoch: int = 0, reset_states: bool = True,
             loss_lengths=None, distributed=None) -> dict:
    """Mean loss and metrics of `model` over `batches` in eval mode (no dropout, no weight change), under
    inference_mode() (no backward caches).

    Returns `{"loss": ..., "<metric>": ...}`, each a mean weighted as in `fit`. Stateful layers are reset
    before the first batch when `reset_states` is true, so validation starts from zero states.
    With `distributed` (an rnnext.distributed.DataParallel), each rank evaluates its rows of every batch and
    the sums are reduced: every rank returns the means over the combined batches.
    """
    batch_metrics, derived = resolve_metrics(metrics)
    was_training = getattr(model, "training", True)
    if hasattr(model, "eval"):
        model.eval()
    if reset_states:
        _reset_states(model)
    averages = Averages()
    failure = None
    try:
        with inference_mode():
            for batch in epoch_batches(batches, epoch, "evaluate"):
                if distributed is None:
                    x, y, lengths, weight = unpack_batch(batch, "evaluate")
                else:
                    x, y, lengths, weight = distributed.local_batch(batches, batch, "evaluate")
                    if y.shape[0] == 0:  # fewer rows than ranks: this rank has none of this batch
                        averages.add(0.0, {})
                        continue
                output = forward(model, x, lengths)
                loss, _ = loss_fn(output, y, **loss_kwargs(loss_fn, output, y, lengths, loss_lengths))
                values = {"loss": float(loss)}
                for name, metric in batch_metrics.items():
                    values[name] = metric(output, y, **loss_kwargs(metric, output, y, lengths, loss_lengths))
                averages.add(weight, values)
    except Exception as error:  # noqa: BLE001 - under MPI every rank raises it (reduce_averages)
        if distributed is None:
            raise
        failure = error
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if distributed is not None:
        averages = distributed.reduce_averages(averages, ["loss", *batch_metrics], failure)
    if averages.batches == 0:
        raise ValueError("evaluate: the batches yielded no batch")
    result = averages.means()
    for name, function in derived.items():
        result[name] = function(result["loss"])
    return result


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


def _length(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None


class _Position:
    """Where a run is: 0-based `epoch`, batches of it already trained on, and steps over all epochs."""

    def __init__(self, epoch: int = 0, done_in_epoch: int = 0, global_step: int = 0):
        self.epoch, self.done_in_epoch, self.global_step = epoch, done_in_epoch, global_step

    def where(self) -> str:
        return (f"epoch {self.epoch + 1}, step {self.done_in_epoch + 1} of the epoch "
                f"(global step {self.global_step + 1})")


# ---------------------------------------------------------------------------------------------------------
# fit, in parts: the run's state, resume, checkpoints, one epoch's steps, the end of an epoch

class _Run:
    """One call of fit: its options (checked), where it is, what it has recorded, and the parts of its loop."""

    def __init__(self, model, loss_fn, optimizer, train_batches, epochs, options: dict):
        self.model, self.loss_fn, self.optimizer, self.train_batches = model, loss_fn, optimizer, train_batches
        self.epochs = epochs
        self.__dict__.update(options)
        self.batch_metrics, self.derived = resolve_metrics(self.metrics)
        self.dist = self.distributed  # an rnnext.distributed.DataParallel, or None for one process
        self.show = Progress(self.progress and (self.dist is None or self.dist.is_root), epochs, self.log_every)
        self.history = History()
        self.at = _Position()
        self.averages = Averages()
        self.best = {"value": None, "epoch": None, "waited": 0}
        self.best_weights = None
        self.rng = RandomState(model, [train_batches, self.val_batches])
        self.epoch_rng = None   # RNG snapshot at the start of the current epoch
        self.step_start = None  # (RNG snapshot, carried states) at the start of the current step
        self.resume_state = None
        self.guard = WeightGuard(optimizer.params)
        self.started = time.perf_counter()

    # -- resume and checkpoints
    def resume(self, path: Path) -> None:
        """Weights, optimizer, scheduler, history and position from the training checkpoint at `path`."""
        weights, saved_meta, optimizer_state = read_checkpoint(path)
        self.resume_state = train_state(saved_meta, path)
        assign_weights(self.model, weights, path)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        state = self.resume_state
        with malformed_train_state(path):
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.history = History.from_dict(state["history"])
            self.at = _Position(*(check_int("fit", key, state[key], minimum=0)
                                  for key in ("epoch", "done_in_epoch", "global_step")))
            self.averages = Averages(state["averages"])
            self.best = dict(state["best"])
        if self.restore_best_weights and best_path(path).exists():
            self.best_weights = read_checkpoint(best_path(path))[0]
        self.resume_path = path
        self.show.write(f"resuming from {path} at epoch {self.at.epoch + 1}, step {self.at.done_in_epoch} of the "
                        f"epoch (global step {self.at.global_step})")
        if state["finished"] and self.at.epoch >= self.epochs:
            self.show.write(f"{path}: training already finished ({self.at.epoch} epochs)")

    def save_checkpoint(self, finished: bool = False, at_step_start: bool = False) -> None:
        at = self.at
        rng_now, carried = self.step_start if at_step_start else (self.rng.snapshot(), copy_carried_states(self.model))
        if self.dist is not None:  # one checkpoint of the combined batch, by rank 0: it resumes on any K
            carried = self.dist.gather_states(carried)
        state = {
            "format": TRAIN_STATE_FORMAT, "epoch": at.epoch, "done_in_epoch": at.done_in_epoch,
            "global_step": at.global_step, "epochs": self.epochs, "finished": finished,
            "averages": self.averages.state(), "history": self.history.to_dict(), "best": self.best,
            "scheduler": self.scheduler.state_dict() if hasattr(self.scheduler, "state_dict") else None,
            "rng": rng_now, "epoch_rng": self.epoch_rng,
            "carried_states": states_to_json(carried) if at.done_in_epoch and carried is not None else None,
        }
        self._on_root(lambda: self.model.save(self.checkpoint_path, optimizer=self.optimizer,
                                              metadata={**(self.metadata or {}), "train_state": state}))

    def _restore_before_replay(self) -> None:
        # The data source starts from its state at the start of the epoch (the checkpoint's current state
        # when it was written at an epoch boundary) ...
        with malformed_train_state(self.resume_path):
            self.rng.restore(self.resume_state["epoch_rng"] or self.resume_state["rng"], parts=("data",))

    def _replay(self, iterator) -> None:
        # ... replays the batches trained on before the checkpoint, and then the model's generators and
        # carried states continue from where the checkpoint left them.
        for done in range(self.at.done_in_epoch):
            if next(iterator, None) is None:
                raise ValueError(f"fit: {self.resume_path}: the training state says {self.at.done_in_epoch} "
                                 f"batches of epoch {self.at.epoch + 1} were trained on, but it has {done}")
        with malformed_train_state(self.resume_path):
            self.rng.restore(self.resume_state["rng"], parts=("model",))
            carried = self.resume_state["carried_states"]
            if carried is not None:
                set_carried_states(self.model, carried if self.dist is None else self.dist.local_states(carried))
        self.resume_state = None

    # -- the loop
    def out_of_time(self) -> bool:
        out = self.time_limit_s is not None and time.perf_counter() - self.started >= self.time_limit_s
        return out if self.dist is None else self.dist.any(out)  # rank 0's clock and rank 1's may disagree

    def stop_requested(self, interrupt) -> bool:
        return interrupt.requested if self.dist is None else self.dist.any(interrupt.requested)

    def local_batches(self, iterator):
        """This process's batches, unpacked: all of them, or under MPI this rank's rows (then None at the end)."""
        if self.dist is None:
            return (unpack_batch(batch, "fit") for batch in iterator)
        return self.dist.local_batches(self.train_batches, iterator)

    def train_epoch(self, interrupt) -> float:
        """The steps of the current epoch (from its first untrained batch); returns the epoch's start time.
        Sets self.cut_short when the time limit ends the epoch early."""
        if self.resume_state is not None:
            self._restore_before_replay()
        if self.at.done_in_epoch == 0:
            self.epoch_rng = self.rng.snapshot()
            self.averages = Averages()
            if self.stateful_reset in ("epoch", "batch"):
                _reset_states(self.model)
        batches = self._everywhere(lambda: epoch_batches(self.train_batches, self.at.epoch, "fit"))
        self.epoch_length = _length(batches)
        self.show.start_epoch(self.at.epoch, self.epoch_length, self.at.done_in_epoch)
        started = time.perf_counter()
        iterator = iter(batches)
        if self.resume_state is not None:
            self._everywhere(lambda: self._replay(iterator))
        self.cut_short = False
        for batch in self.local_batches(iterator):
            if not self.train_one(batch):
                break
            if self.stop_requested(interrupt):
                raise KeyboardInterrupt
            if self.time_limit_per == "step" and self.out_of_time():
                self.cut_short = self.epoch_length is None or self.at.done_in_epoch < self.epoch_length
                break
        if self.averages.batches == 0:
            raise ValueError(f"fit: train_batches gave no batches in epoch {self.at.epoch + 1}")
        return started

    def train_one(self, batch) -> bool:
        """One step on `batch` (x, y, lengths, weight); False when, under MPI, every rank's batches ran out."""
        at = self.at
        if self.stateful_reset == "batch":
            _reset_states(self.model)
        if self.checkpoint_path is not None:
            self.step_start = (self.rng.snapshot(), copy_carried_states(self.model))
        self.in_step = True
        try:
            stepped = self._step(batch)
        except NonFiniteError as error:
            _reset_states(self.model)
            raise FloatingPointError(f"fit: non-finite {error.what} at {at.where()}; the weights are those from "
                                     "before this step. Try a smaller learning rate, or clip_norm.") from None
        if stepped is None:
            self.in_step = False
            return False
        values, weight = stepped
        self.averages.add(weight, values)
        self.history.step_losses.append(values["loss"])
        at.done_in_epoch += 1
        at.global_step += 1
        self.in_step = False
        self.show.update(at.done_in_epoch, self.averages.means()["loss"])
        if self.checkpoint_every and at.global_step % self.checkpoint_every == 0:
            self.save_checkpoint()
        return True

    def _step(self, batch):
        """(values, weight) of one step: the loss and metrics of the batch (of the combined batch under MPI)."""
        options = dict(clip_norm=self.clip_norm, loss_lengths=self.loss_lengths, guard=self.guard)
        if self.dist is not None:
            return self.dist.train_step(batch, self.model, self.loss_fn, self.optimizer, metrics=self.batch_metrics,
                                        **options)
        x, y, lengths, weight = batch
        loss, output = train_step(self.model, self.loss_fn, self.optimizer, x, y, lengths, **options)
        values = {"loss": loss}
        for name, metric in self.batch_metrics.items():
            values[name] = metric(output, y, **loss_kwargs(metric, output, y, lengths, self.loss_lengths))
        return values, weight

    def end_epoch(self, started: float) -> None:
        """The epoch's row (validated), the scheduler, early stopping and the best weights; then the checkpoint."""
        at = self.at
        row = {"epoch": at.epoch + 1, **self.averages.means()}
        for name, function in self.derived.items():
            row[name] = function(row["loss"])
        if self.cut_short and self.epoch_length:
            row["fraction"] = round(at.done_in_epoch / self.epoch_length, 4)
        if self.val_batches is not None:
            carried = copy_carried_states(self.model)  # validation starts from zero states
            validation = evaluate(self.model, self.loss_fn, self.val_batches, metrics=self.metrics, epoch=at.epoch,
                                  loss_lengths=self.loss_lengths, distributed=self.dist)
            set_carried_states(self.model, carried)
            row.update({f"val_{k}": v for k, v in validation.items()})
        row["lr"] = self.optimizer.lr
        row["seconds"] = round(time.perf_counter() - started, 3)
        self.history.rows.append(row)
        self.show.end_epoch(row)
        if self.dist is not None:
            self.dist.check_in_sync(self.model)
        if self.cut_short:  # the epoch goes on at its next batch when this checkpoint is resumed
            self.history.time_limited = True
            self.show.write(f"time limit of {self.time_limit_s:g} s reached in epoch {at.epoch + 1}")
            if self.checkpoint_path is not None:
                self.save_checkpoint()
            return
        if self.scheduler is not None:
            self.scheduler.step()
        self._early_stopping(row)
        at.epoch += 1
        at.done_in_epoch = 0
        self.epoch_rng = None
        if self.time_limit_per == "epoch" and self.out_of_time() and at.epoch < self.epochs:
            self.history.time_limited = True
            self.show.write(f"time limit of {self.time_limit_s:g} s reached after epoch {at.epoch}")
        if self.checkpoint_path is not None:
            self.save_checkpoint(finished=at.epoch >= self.epochs or self.history.stopped_early)

    def _early_stopping(self, row: dict) -> None:
        best, at = self.best, self.at
        monitored = row.get("val_loss", row["loss"])
        if best["value"] is None or monitored < best["value"] - self.early_stopping_min_delta:
            best.update(value=monitored, epoch=at.epoch + 1, waited=0)
            self.history.best_epoch = at.epoch + 1
            if self.restore_best_weights:
                self.best_weights = {n: p.value.copy() for n, p in self.model.named_parameters()}
                if self.checkpoint_path is not None:
                    self._on_root(lambda: self.model.save(best_path(self.checkpoint_path),
                                                          metadata=dict(self.metadata or {})))
            return
        best["waited"] += 1
        if self.early_stopping_patience is not None and best["waited"] >= self.early_stopping_patience:
            self.history.stopped_early = True
            self.show.write(f"early stopping: no improvement for {best['waited']} epochs "
                            f"(best: epoch {best['epoch']}, {best['value']:.4f})")

    def _on_root(self, write) -> None:
        write() if self.dist is None else self.dist.run_on_root(write)

    def _everywhere(self, function):
        # under MPI an exception of one rank's function is raised on every rank, so none waits for the others
        return function() if self.dist is None else self.dist.collectively(function)

    def run(self) -> History:
        if hasattr(self.model, "train"):
            self.model.train()
        interrupted = False
        self.in_step = False  # between the start of a step and its bookkeeping: the RNGs and states have moved
        with _InterruptGuard() as interrupt:
            try:
                while self.at.epoch < self.epochs and not (self.history.stopped_early or self.history.time_limited):
                    started = self.train_epoch(interrupt)
                    self.end_epoch(started)
            except KeyboardInterrupt:
                interrupted = True
                if self.guard.updating:  # stopped inside optimizer.step: put the weights back as they were
                    self.guard.restore()
            finally:
                self.show.close()
        if interrupted:
            return self.interrupted()
        if self.restore_best_weights and self.best_weights is not None:
            for name, param in self.model.named_parameters():
                np.copyto(param.value, self.best_weights[name])
        return self.history

    def interrupted(self) -> History:
        self.history.interrupted = True
        where = f"epoch {self.at.epoch + 1}, after step {self.at.done_in_epoch} of the epoch"
        if self.checkpoint_path is not None:
            self.save_checkpoint(at_step_start=self.in_step and self.step_start is not None)
            message = (f"interrupted at {where}; checkpoint saved to {self.checkpoint_path} (resume it with "
                       "resume=True)")
        else:
            message = f"interrupted at {where} (no checkpoint_path, nothing saved)"
        if self.dist is None or self.dist.is_root:
            print(message, file=sys.stderr, flush=True)
        if self.on_interrupt == "raise":
            raise KeyboardInterrupt(message)
        return self.history


def fit(model, loss_fn, optimizer, train_batches, epochs: int = 1, *, val_batches=None, clip_norm=None,
        scheduler=None, early_stopping_patience=None, early_stopping_min_delta: float = 0.0,
        restore_best_weights: bool = False, checkpoint_path=None, checkpoint_every=None, resume=False,
        metadata: dict | None = None, progress: bool = True, log_every: int | None = None, seed=None,
        metrics=None, stateful_reset: str = "epoch", loss_lengths=None, on_interrupt: str = "raise",
        time_limit_s=None, time_limit_per: str = "step", distributed=None) -> History:
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
                    state, the carried states of stateful layers and the RNG states, so that resuming
                    continues exactly: the same numbers as an uninterrupted run, given a batch source that
                    yields the same batches for the same epoch.
    resume:         True continues from the checkpoint at `checkpoint_path` (without one, training starts
                    afresh); a path continues from that checkpoint instead, and later checkpoints go to
                    `checkpoint_path` (None: none are written).
    seed:           seeds NumPy's legacy RNG and rnnext's default generator first (dropout masks, and data
                    sources that draw from them; the weights exist already, since the optimizer holds them).
    metrics:        names ("accuracy", "perplexity", "bits_per_char") or {name: fn(output, y)} per batch.
    stateful_reset: when stateful layers are reset: "epoch" (start of every epoch), "batch", or "never".
    progress:       a tqdm bar when tqdm is installed, else a plain line every `log_every` steps (default:
                    ten per epoch); False prints nothing.
    on_interrupt:   after Ctrl-C (KeyboardInterrupt) and the checkpoint: "raise" re-raises KeyboardInterrupt,
                    "return" returns the history with `history.interrupted = True`.
    time_limit_s:   stop once this many seconds have passed since fit began, checked after every step
                    (`time_limit_per="step"`: the epoch is cut short there, validated and checkpointed, and
                    its row has `fraction`, the share of its batches trained; resuming continues it) or after
                    every epoch (`"epoch"`). `history.time_limited` says whether it happened.
    distributed:    an rnnext.distributed.DataParallel to train on K MPI ranks as one process on the combined
                    batch: each rank takes its rows of every batch (all of a LocalShards source's), rank 0's
                    weights, optimizer state and generators are broadcast first, only rank 0 prints and
                    writes checkpoints, and an exception on any rank stops every rank (docs/api.md).

    A non-finite loss, gradient or updated weight raises `FloatingPointError` naming the epoch and step; the
    weights are then those from before that step (an update that produced NaN/inf is undone) and stateful
    layers are reset (their carried states may hold NaN).
    """
    epochs = check_int("fit", "epochs", epochs, minimum=0)
    check_choice("fit", "stateful_reset", stateful_reset, _STATEFUL_RESETS)
    check_choice("fit", "on_interrupt", on_interrupt, ("raise", "return"))
    check_choice("fit", "time_limit_per", time_limit_per, ("step", "epoch"))
    if checkpoint_every is not None:
        checkpoint_every = check_int("fit", "checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_path is None:
            raise ValueError("fit: checkpoint_every needs a checkpoint_path")
    if early_stopping_patience is not None:
        early_stopping_patience = check_int("fit", "early_stopping_patience", early_stopping_patience, minimum=0)
    if resume is True and checkpoint_path is None:
        raise ValueError("fit: resume=True needs a checkpoint_path")
    if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
        raise ValueError(f"fit: clip_norm is {clip_norm!r}, expected a positive number")
    if time_limit_s is not None:
        time_limit_s = check_float("fit", "time_limit_s", time_limit_s, minimum=0.0)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    resume_path = checkpoint_path if resume is True else Path(resume) if resume not in (False, None) else None
    if seed is not None:
        seed_everything(int(seed))

    run = _Run(model, loss_fn, optimizer, train_batches, epochs, dict(
        val_batches=val_batches, clip_norm=clip_norm, scheduler=scheduler,
        early_stopping_patience=early_stopping_patience, early_stopping_min_delta=early_stopping_min_delta,
        restore_best_weights=restore_best_weights, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, metadata=metadata, progress=progress, log_every=log_every,
        metrics=metrics, stateful_reset=stateful_reset, loss_lengths=loss_lengths, on_interrupt=on_interrupt,
        time_limit_s=time_limit_s, time_limit_per=time_limit_per, distributed=distributed))
    if distributed is None:
        return _start(run, resume, resume_path)
    with distributed.guard():
        return _start(run, resume, resume_path)


def _start(run: _Run, resume, resume_path) -> History:
    if resume_path is not None and resume_path.exists():
        run.resume(resume_path)
    elif resume_path is not None:
        if resume is not True:
            raise FileNotFoundError(f"fit: resume is {str(resume_path)!r}, and there is no checkpoint there")
        run.show.write(f"no checkpoint at {run.checkpoint_path} yet: starting from the beginning")
    if run.dist is not None:
        run.dist.broadcast_start(run.model, run.optimizer, run.rng)
    return run.run()
