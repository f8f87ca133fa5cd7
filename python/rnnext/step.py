"""One training step and the batches it takes: reading a batch, the batches of an epoch from a source, which
arguments a loss takes, and `train_step` with its guard against non-finite losses, gradients and weights."""
from __future__ import annotations

import inspect
import math

import numpy as np

from . import _core
from .data import BucketIterator
from .optim import clip_grad_norm

__all__ = ["train_step"]


def unpack_batch(batch, where: str):
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


def epoch_batches(source, epoch: int, where: str):
    """The iterable of batches for 0-based `epoch` from a callable or re-iterable source."""
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


def loss_kwargs(function, output, y, lengths, option):
    """`lengths=` goes to the loss for sequence outputs [N, T, ...] whose loss accepts it (or when forced)."""
    if lengths is None or option is False:
        return {}
    if option is True:
        return {"lengths": lengths}
    output = np.asarray(output)
    if output.ndim >= 3 and y.ndim >= 2 and _accepts_lengths(function):
        return {"lengths": lengths}
    return {}


def forward(model, x, lengths):
    return model.forward(x) if lengths is None else model.forward(x, lengths=lengths)


class NonFiniteError(FloatingPointError):
    """Raised inside a step; fit re-raises it as a FloatingPointError that also says where."""

    def __init__(self, what: str, value: float | None = None):
        super().__init__(what)
        self.what = what if value is None else f"{what} ({value})"


class WeightGuard:
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
    # The norm clip_grad_norm would report, from the same engine pass (float64, no BLAS).
    return _core.grad_norm([param.grad for param in params if param.trainable])


def zero_grad(model, optimizer) -> None:
    # The model's zero_grad also clears frozen parameters that the optimizer may not hold.
    if hasattr(model, "zero_grad"):
        model.zero_grad()
    else:
        optimizer.zero_grad()


def backward_step(model, loss_fn, optimizer, x, y, lengths=None, loss_lengths=None):
    """Forward, loss, zero_grad and backward: the gradients of one batch in `param.grad`; returns
    `(loss, output)`. The loss is not checked here (a distributed step checks the combined batch's)."""
    output = forward(model, x, lengths)
    loss, doutput = loss_fn(output, y, **loss_kwargs(loss_fn, output, y, lengths, loss_lengths))
    zero_grad(model, optimizer)
    model.backward(doutput)
    return float(loss), output


def apply_update(optimizer, clip_norm=None, guard: WeightGuard | None = None) -> None:
    """Clip and update from the gradients in `param.grad`; NonFiniteError for a non-finite gradient norm
    before the update, and (with a guard) for non-finite weights after it, which are then put back."""
    params = optimizer.params
    norm = clip_grad_norm(params, clip_norm) if clip_norm is not None else _gradient_norm(params)
    if not math.isfinite(norm):
        raise NonFiniteError("gradient norm", norm)
    if guard is None:
        optimizer.step()
        return
    guard.save()
    guard.updating = True
    optimizer.step()
    guard.updating = False
    if not guard.weights_finite():
        guard.restore()
        raise NonFiniteError("updated weights")


def train_step(model, loss_fn, optimizer, x, y, lengths=None, *, clip_norm=None, loss_lengths=None,
               guard: WeightGuard | None = None):
    """One step of the plain loop in docs/api.md: forward, loss, zero_grad, backward, clip, update.

    Returns `(loss, output)`. Raises `FloatingPointError` for a non-finite loss or gradient *before* touching
    the weights; with a `guard` (fit always passes one) also for non-finite weights after the update, which
    are then put back as they were.
    """
    loss, output = backward_step(model, loss_fn, optimizer, x, y, lengths, loss_lengths)
    if not math.isfinite(loss):
        raise NonFiniteError("loss", loss)
    apply_update(optimizer, clip_norm, guard)
    return loss, output
