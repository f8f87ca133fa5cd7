"""The twins of the losses (cpp/rnnext/losses.h)."""
from __future__ import annotations

import numpy as np

from ._common import _check, _check_floating, _check_lengths


def _loss_scale(fn, reduction, count):
    """The factor of the reduced loss: 1 / count for "mean" (1 when nothing counts), 1 for "sum"."""
    if not isinstance(reduction, str) or reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction is {reduction!r}, expected one of ('mean', 'sum')")
    return 1.0 / count if reduction == "mean" and count > 0 else 1.0


def _counted_positions(fn, logits_shape, mask, lengths):
    """Booleans [...] = logits_shape[:-1]: True where a position counts."""
    positions = logits_shape[:-1]
    if mask is not None and lengths is not None:
        raise ValueError(f"{fn}: pass mask or lengths, not both")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != positions:
            raise ValueError(f"{fn}: mask has shape {mask.shape}, expected logits.shape[:-1] = {positions}")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"{fn}: mask must be bool or contain only 0 and 1")
        return mask != 0
    if lengths is not None:
        if len(logits_shape) != 3:
            raise ValueError(f"{fn}: lengths needs logits of shape (N, T, C), got {logits_shape}")
        N, T = logits_shape[:2]
        lengths = _check_lengths(fn, lengths, N, T)
        return np.arange(T)[np.newaxis, :] < lengths[:, np.newaxis]  # [N, T]
    return np.ones(positions, dtype=bool)


def softmax_cross_entropy(logits, targets, mask=None, lengths=None, reduction="mean"):
    """logits [..., C], integer targets [...] -> (loss, dlogits): -log softmax(logits)[target] over the counted
    positions (mask [...] or lengths [N] for logits [N, T, C]); 0 and zero gradient where a position does not count."""
    fn = "softmax_cross_entropy"
    logits = _check_floating(fn, "logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{fn}: logits has shape {logits.shape}, expected (..., C) with C >= 1 classes")
    C = logits.shape[-1]
    targets = np.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"{fn}: targets has shape {targets.shape}, expected logits.shape[:-1] = {logits.shape[:-1]}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{fn}: targets has dtype {targets.dtype}, expected an integer dtype (class indices)")
    counted = _counted_positions(fn, logits.shape, mask, lengths)
    bad = counted & ((targets < 0) | (targets >= C))
    if bad.any():
        raise ValueError(f"{fn}: targets contains {targets[bad][0]} at a counted position, expected class indices in "
                         f"[0, C={C})")
    scale = _loss_scale(fn, reduction, int(counted.sum()))

    safe_targets = np.where(counted, targets, 0)[..., np.newaxis]  # any class will do where nothing counts
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # NaN rows give NaN, without a warning
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))  # [..., C]
        target_log_probs = np.take_along_axis(log_probs, safe_targets, axis=-1)[..., 0]  # [...]
        loss = -np.sum(target_log_probs[counted], dtype=np.float64) * scale
        # backprop through -log softmax(x)[target]: softmax(x) - onehot(target)
        dlogits = np.exp(log_probs)
        np.put_along_axis(dlogits, safe_targets, np.take_along_axis(dlogits, safe_targets, axis=-1) - 1, axis=-1)
        dlogits = np.where(counted[..., np.newaxis], dlogits * scale, 0).astype(logits.dtype)
    return float(loss), dlogits


def _check_elementwise(fn, first_name, first, targets):
    first = _check_floating(fn, first_name, first)
    return first, _check(fn, "targets", targets, [("", size) for size in first.shape], first.dtype)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """logits, targets in [0, 1] of one shape -> (loss, dlogits): max(x, 0) - x*y + log1p(exp(-|x|)) per element."""
    fn = "binary_cross_entropy_with_logits"
    x, y = _check_elementwise(fn, "logits", logits, targets)
    if not np.all((y >= 0) & (y <= 1)):  # negated, so NaN fails too
        raise ValueError(f"{fn}: targets must lie in [0, 1]")
    scale = _loss_scale(fn, reduction, x.size)
    with np.errstate(invalid="ignore", over="ignore"):
        exp_neg_abs = np.exp(-np.abs(x))  # never overflows
        losses = np.maximum(x, 0) - x * y + np.log1p(exp_neg_abs)
        # backprop through the loss: sigmoid(x) - y, with sigmoid written on exp(-|x|) as well
        sigmoid_x = np.where(x >= 0, 1 / (1 + exp_neg_abs), exp_neg_abs / (1 + exp_neg_abs))
        dlogits = (sigmoid_x - y) * x.dtype.type(scale)
    return float(np.sum(losses, dtype=np.float64) * scale), dlogits


def mean_squared_error(predictions, targets, reduction="mean"):
    """predictions, targets of one shape -> (loss, dpredictions): (p - t)^2 per element."""
    fn = "mean_squared_error"
    p, t = _check_elementwise(fn, "predictions", predictions, targets)
    scale = _loss_scale(fn, reduction, p.size)
    with np.errstate(invalid="ignore", over="ignore"):
        residual = p - t
        loss = np.sum(np.square(residual, dtype=np.float64)) * scale
        # backprop through residual^2
        dpredictions = residual * p.dtype.type(2 * scale)
    return float(loss), dpredictions
