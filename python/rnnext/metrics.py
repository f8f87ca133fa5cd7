"""Metrics of a training run: `accuracy`, the metrics derived from the epoch's mean loss (perplexity, bits per
character), and the weighted running means of one epoch."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["accuracy"]

DERIVED_METRICS = {
    # name: function of the epoch's mean loss (in nats), so they are exact rather than averaged per batch
    "perplexity": lambda loss: math.exp(min(loss, 700.0)),
    "bits_per_char": lambda loss: loss / math.log(2.0),
    "bpc": lambda loss: loss / math.log(2.0),
}


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


def resolve_metrics(metrics) -> tuple[dict, dict]:
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
            elif metric in DERIVED_METRICS:
                derived[name] = DERIVED_METRICS[metric]
            else:
                raise ValueError(f"fit: unknown metric {metric!r}, expected a callable or one of "
                                 f"{['accuracy', *DERIVED_METRICS]}")
        elif callable(metric):
            batch_metrics[name] = metric
        else:
            raise ValueError(f"fit: metric {name!r} is {type(metric).__name__}, expected a callable or a name")
    return batch_metrics, derived


class Averages:
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
