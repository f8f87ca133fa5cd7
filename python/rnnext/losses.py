"""Loss functions that return (loss, dloss/dinput) in one call, for training loops written in NumPy.

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

from .validation import as_array, check_choice, real_array

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
    num_classes = logits.shape[-1]
    position_shape = logits.shape[:-1]

    targets = as_array(name, "targets", targets)
    if targets.shape != position_shape:
        raise ValueError(f"{name}: targets has shape {targets.shape}, expected logits.shape[:-1] = {position_shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name}: targets has dtype {targets.dtype}, expected an integer dtype (class indices)")
    check_choice(name, "reduction", reduction, _REDUCTIONS)

    counted = _counted_positions(name, logits.shape, mask, lengths)
    counted_targets = targets[counted]
    if counted_targets.size and (counted_targets.min() < 0 or counted_targets.max() >= num_classes):
        bad = counted_targets[(counted_targets < 0) | (counted_targets >= num_classes)][0]
        raise ValueError(
            f"{name}: targets contains {bad} at a counted position, expected class indices in [0, C={num_classes})"
        )

    count = int(np.count_nonzero(counted))
    grad = np.zeros_like(logits)
    if count == 0:
        return 0.0, grad

    # Any valid class index will do at uncounted positions; their results are discarded below.
    safe_targets = np.where(counted, targets, 0)[..., np.newaxis]  # [..., 1]
    log_probs = log_softmax(logits)  # [..., C]
    target_log_probs = np.take_along_axis(log_probs, safe_targets, axis=-1)[..., 0]  # [...]
    total = -np.sum(target_log_probs[counted], dtype=np.float64)
    scale = 1.0 / count if reduction == "mean" else 1.0

    with np.errstate(invalid="ignore", over="ignore"):
        probs = np.exp(log_probs)  # [..., C]
        # d(-log p_y)/dx = softmax(x) - onehot(y)
        target_probs = np.take_along_axis(probs, safe_targets, axis=-1)
        np.put_along_axis(probs, safe_targets, target_probs - 1, axis=-1)
        probs *= scale
    grad[counted] = probs[counted]
    return float(total * scale), grad


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
    if logits.size == 0:
        return 0.0, np.zeros_like(logits)

    targets = targets.astype(logits.dtype, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        exp_neg_abs = np.exp(-np.abs(logits))
        losses = np.maximum(logits, 0) - logits * targets + np.log1p(exp_neg_abs)
        # sigmoid(x) written with exp(-|x|) so neither branch overflows.
        sigmoid = np.where(logits >= 0, 1 / (1 + exp_neg_abs), exp_neg_abs / (1 + exp_neg_abs))
        grad = sigmoid - targets
    scale = 1.0 / logits.size if reduction == "mean" else 1.0
    grad *= scale
    return float(np.sum(losses, dtype=np.float64) * scale), grad


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
    if predictions.size == 0:
        return 0.0, np.zeros_like(predictions)

    with np.errstate(invalid="ignore", over="ignore"):
        residual = predictions - targets.astype(predictions.dtype, copy=False)
        scale = 1.0 / predictions.size if reduction == "mean" else 1.0
        loss = float(np.sum(np.square(residual, dtype=np.float64)) * scale)
        grad = residual
        grad *= 2 * scale
    return loss, grad


def _floating_array(where: str, name: str, value) -> np.ndarray:
    array = as_array(where, name, value)
    # The gradient takes this dtype, so an integer array would silently truncate it.
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: {name} has dtype {array.dtype}, expected a floating dtype")
    return array


def _counted_positions(function: str, logits_shape, mask, lengths) -> np.ndarray:
    """Boolean array of logits_shape[:-1], True where a position contributes to the loss."""
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
            mask = mask != 0
        return mask
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
        return np.arange(steps)[np.newaxis, :] < lengths[:, np.newaxis]  # [N, T]
    return np.ones(position_shape, dtype=bool)
