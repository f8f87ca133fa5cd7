"""Loss functions that return (loss, dloss/dinput) in one call, for training loops written in NumPy.

The engine (rnnext._core, cpp/rnnext/losses.h) computes each loss and its gradient in one pass on its own threads;
this module checks and converts the arguments. The NumPy twins in rnnext.reference define the same results.

Conventions shared by every loss here:
- The first argument is the network output (logits or predictions), a floating array; the gradient
  comes back with its shape and dtype. The loss is a Python float, accumulated in float64.
- reduction="mean" averages over the positions that count, reduction="sum" adds them up; the gradient
  is that of the reduced loss. When nothing counts (empty batch, everything masked) both give loss 0
  and a zero gradient, so padding-only batches need no special case in the caller.
- Non-finite inputs never raise or warn: a NaN in a counted position makes the loss (and that
  position's gradient) NaN, so the caller sees it and decides. Masked-out positions are excluded
  with `np.where`, not by multiplying with 0, so garbage in padding cannot leak into the result.
"""
from __future__ import annotations

import numpy as np

from . import _core
from .validation import FLOAT_DTYPES, as_array, check_choice, real_array

__all__ = [
    "log_softmax",
    "softmax",
    "softmax_cross_entropy",
    "binary_cross_entropy_with_logits",
    "mean_squared_error",
]

_REDUCTIONS = ("mean", "sum")


def log_softmax(logits, axis: int = -1) -> np.ndarray:
    """log(softmax(logits)) along `axis`, computed as x - max - log(sum(exp(x - max))) so it never overflows."""
    logits = np.asarray(logits)
    # Ignore invalid/overflow: an all -inf or +inf row yields NaN by design, not a warning turned error.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = logits - np.max(logits, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits, axis: int = -1) -> np.ndarray:
    """softmax(logits) along `axis`, shifted by the maximum so exp never overflows."""
    logits = np.asarray(logits)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        exps = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
        return exps / np.sum(exps, axis=axis, keepdims=True)


def softmax_cross_entropy(logits, targets, mask=None, lengths=None, reduction: str = "mean"):
    """Cross-entropy of integer class targets under softmax(logits); returns (loss, dloss/dlogits).

    logits:  [..., C] floating, e.g. [N, C] or batch-first sequences [N, T, C].
    targets: [...] = logits.shape[:-1], integer dtype, class indices in [0, C) at every counted position.
    mask:    optional [...] bool or 0/1, True where the position counts.
    lengths: optional [N] integers in [0, T], only for [N, T, C] logits: step t of row n counts when
             t < lengths[n]. Pass `mask` or `lengths`, not both.

    Targets at positions that do not count are never read, so padding may hold any integer (e.g. -1).
    "mean" divides by the number of counted positions (like torch's ignore_index), not by the total.
    The gradient is (softmax(logits) - onehot(targets)) / count at counted positions and 0 elsewhere.
    NaN logits in a counted position give a NaN loss; no exception, no warning.
    """
    name = "softmax_cross_entropy"
    logits = _floating_array(name, "logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name}: logits has shape {logits.shape}, expected [..., C] with C >= 1 classes")
    position_shape = logits.shape[:-1]

    targets = as_array(name, "targets", targets)
    if targets.shape != position_shape:
        raise ValueError(f"{name}: targets has shape {targets.shape}, expected logits.shape[:-1] = {position_shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name}: targets has dtype {targets.dtype}, expected an integer dtype (class indices)")
    check_choice(name, "reduction", reduction, _REDUCTIONS)
    mask, lengths = _check_counting(name, logits.shape, mask, lengths)
    # The engine checks the targets at the counted positions: [0, C) or a ValueError naming the first bad one.
    loss, grad = _core.softmax_cross_entropy(_engine_array(logits), targets, mask, lengths, reduction)
    return loss, grad.astype(logits.dtype, copy=False)


def binary_cross_entropy_with_logits(logits, targets, reduction: str = "mean"):
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1]; returns (loss, dloss/dlogits).

    logits and targets must have exactly the same shape (no broadcasting, no implicit reshape of
    [N] against [N, 1]: reshape explicitly). Targets may be soft labels; any real dtype is accepted.
    Per element: max(x, 0) - x*y + log1p(exp(-|x|)), which never overflows; the gradient is
    sigmoid(x) - y, divided by the element count for "mean".
    NaN logits give a NaN loss; no exception, no warning. NaN targets are rejected (not in [0, 1]).
    """
    name = "binary_cross_entropy_with_logits"
    logits = _floating_array(name, "logits", logits)
    targets = real_array(name, "targets", targets)
    if targets.shape != logits.shape:
        raise ValueError(f"{name}: targets has shape {targets.shape}, expected the shape of logits {logits.shape}")
    # Negated so NaN targets fail too.
    if targets.size and not np.all((targets >= 0) & (targets <= 1)):
        # Not np.nanmin/np.nanmax: on all-NaN targets they warn ("All-NaN slice encountered"), and the losses
        # never warn; the message then reports [nan, nan].
        numbers = targets[~np.isnan(targets)] if targets.dtype.kind == "f" else targets
        low, high = (numbers.min(), numbers.max()) if numbers.size else (np.nan, np.nan)
        raise ValueError(f"{name}: targets must lie in [0, 1], got values in [{low}, {high}] (or NaN)")
    check_choice(name, "reduction", reduction, _REDUCTIONS)
    engine_logits = _engine_array(logits)
    loss, grad = _core.binary_cross_entropy_with_logits(engine_logits,
                                                        targets.astype(engine_logits.dtype, copy=False), reduction)
    return loss, grad.astype(logits.dtype, copy=False)


def mean_squared_error(predictions, targets, reduction: str = "mean"):
    """Squared error sum((p - t)^2), averaged over all elements for "mean"; returns (loss, dloss/dpredictions).

    predictions and targets must have the same shape; the gradient is 2 (p - t), divided by the
    element count for "mean". NaN predictions give a NaN loss; no exception, no warning.
    """
    name = "mean_squared_error"
    predictions = _floating_array(name, "predictions", predictions)
    targets = real_array(name, "targets", targets)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"{name}: targets has shape {targets.shape}, expected the shape of predictions {predictions.shape}"
        )
    check_choice(name, "reduction", reduction, _REDUCTIONS)
    engine_predictions = _engine_array(predictions)
    loss, grad = _core.mean_squared_error(engine_predictions, targets.astype(engine_predictions.dtype, copy=False),
                                          reduction)
    return loss, grad.astype(predictions.dtype, copy=False)


def _floating_array(where: str, name: str, value) -> np.ndarray:
    array = as_array(where, name, value)
    # The gradient takes this dtype, so an integer array would silently truncate it.
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: {name} has dtype {array.dtype}, expected a floating dtype")
    return array


def _engine_array(array: np.ndarray) -> np.ndarray:
    """The array in a dtype the engine computes in: float32 and float64 as they are, other floats (float16,
    longdouble) in float64; the gradient is cast back to the caller's dtype."""
    return array if array.dtype in FLOAT_DTYPES else array.astype(np.float64)


def _check_counting(function: str, logits_shape, mask, lengths):
    """(mask, lengths) checked for logits of logits_shape: a bool mask of logits_shape[:-1] or None, and lengths [N]
    in [0, T] (logits [N, T, C] only) or None."""
    position_shape = logits_shape[:-1]
    if mask is not None and lengths is not None:
        raise ValueError(f"{function}: pass mask or lengths, not both")
    if mask is not None:
        mask = as_array(function, "mask", mask)
        if mask.shape != position_shape:
            raise ValueError(f"{function}: mask has shape {mask.shape}, expected logits.shape[:-1] = {position_shape}")
        if mask.dtype != np.bool_:
            # 0/1 masks are common; anything else is more likely a bug (e.g. passing lengths as mask).
            if not (np.issubdtype(mask.dtype, np.number) and np.all((mask == 0) | (mask == 1))):
                raise ValueError(f"{function}: mask must be bool or contain only 0 and 1")
            mask = np.asarray(mask != 0)  # a 0-d comparison gives a NumPy scalar
    if lengths is not None:
        if len(logits_shape) != 3:
            raise ValueError(f"{function}: lengths needs logits of shape [N, T, C], got {logits_shape}")
        batch, steps = logits_shape[0], logits_shape[1]
        lengths = as_array(function, "lengths", lengths)
        if lengths.shape != (batch,):
            raise ValueError(f"{function}: lengths has shape {lengths.shape}, expected (N={batch},)")
        if not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"{function}: lengths has dtype {lengths.dtype}, expected an integer dtype")
        if lengths.size and (lengths.min() < 0 or lengths.max() > steps):
            raise ValueError(
                f"{function}: lengths must lie in [0, T={steps}], got values in [{lengths.min()}, {lengths.max()}]"
            )
    return mask, lengths
