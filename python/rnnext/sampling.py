"""Choosing the next token from a language model's logits: greedy, temperature, top-k and top-p (nucleus).

    probabilities = sampling_distribution(logits, temperature=0.8, top_k=40, top_p=0.95)
    next_ids = sample(logits, rng, temperature=0.8, top_k=40, top_p=0.95)

Top-k keeps the k most likely tokens (Fan et al. 2018); top-p keeps the smallest set of most likely tokens
whose probabilities add up to at least p (Holtzman et al. 2020), and at least one token; both apply after the
temperature, and together keep the tokens that pass both. Ties at the cut are kept in the order of their ids
(a stable sort), so the result does not depend on how NumPy orders equal values.
"""
from __future__ import annotations

import numpy as np

from .losses import softmax
from .validation import check_float, check_int

__all__ = ["sampling_distribution", "sample"]


def check_sampling(where: str, temperature, top_k, top_p):
    """(temperature, top_k, top_p) checked: temperature >= 0 (0 is greedy), top_k None or >= 1, top_p None or
    in (0, 1]."""
    temperature = check_float(where, "temperature", temperature, minimum=0.0)
    if top_k is not None:
        top_k = check_int(where, "top_k", top_k, minimum=1)
    if top_p is not None:
        top_p = check_float(where, "top_p", top_p, minimum=0.0)
        if not 0 < top_p <= 1:
            raise ValueError(f"{where}: top_p is {top_p}, expected a number in (0, 1]")
    return temperature, top_k, top_p


def sampling_distribution(logits, temperature: float = 1.0, top_k=None, top_p=None) -> np.ndarray:
    """Rows of next-token probabilities [N, V] (float64, each summing to 1) from logits [N, V], temperature > 0."""
    temperature, top_k, top_p = check_sampling("sampling_distribution", temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("sampling_distribution: temperature is 0 (greedy), expected a number > 0")
    return _distribution(logits, temperature, top_k, top_p)


def _distribution(logits, temperature, top_k, top_p) -> np.ndarray:
    """sampling_distribution on checked arguments."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    if top_k is None and top_p is None:
        return probabilities
    order = np.argsort(-probabilities, axis=-1, kind="stable")  # most likely first, ties by id
    ranked = np.take_along_axis(probabilities, order, axis=-1)
    keep = np.ones_like(ranked, dtype=bool)
    if top_k is not None:
        keep[:, top_k:] = False
    if top_p is not None:
        # a token is kept while the mass of the tokens ranked before it is still short of p
        mass_before = np.cumsum(ranked, axis=-1) - ranked
        keep &= mass_before < top_p
    kept = np.zeros_like(probabilities)
    np.put_along_axis(kept, order, np.where(keep, ranked, 0.0), axis=-1)
    return kept / kept.sum(axis=-1, keepdims=True)


def sample(logits, rng: np.random.Generator, temperature: float = 1.0, top_k=None, top_p=None) -> np.ndarray:
    """Next token ids [N] for logits [N, V]: the most likely with temperature 0, else one draw per row (in row
    order, one `rng.choice` each) from `sampling_distribution`."""
    temperature, top_k, top_p = check_sampling("sample", temperature, top_k, top_p)
    return sample_checked(logits, rng, temperature, top_k, top_p)


def sample_checked(logits, rng, temperature, top_k, top_p) -> np.ndarray:
    """`sample` on arguments check_sampling has passed (a generation loop checks them once, not per step)."""
    logits = np.asarray(logits)
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    return _draw_rows(rng, _distribution(logits, temperature, top_k, top_p))


def _draw_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One id per row of [N, V], drawn as `rng.choice(V, p=row / row.sum())` row after row would draw it (the
    same uniform numbers, the same cumulative sums), without its per-call cost."""
    p = probabilities / probabilities.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(p, axis=-1)
    cdf /= cdf[:, -1:]
    uniform = rng.random(len(p))
    return np.sum(cdf <= uniform[:, None], axis=-1).astype(np.int64)  # searchsorted(cdf, u, side="right")
