"""The twins of the Embedding gather and scatter-add (cpp/rnnext/embedding.h)."""
from __future__ import annotations

import numpy as np

from ._common import _check


def _check_ids(fn, ids, V):
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{fn}: ids has dtype {ids.dtype}, expected an integer dtype")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"{fn}: ids contains {ids[(ids < 0) | (ids >= V)].ravel()[0]}, expected ids in [0, V={V})")
    return ids


def embedding_forward(table, ids, out=None):
    """y [*ids.shape, D] = table [V, D] rows by id, written into out when given."""
    ids = _check_ids("embedding_forward", ids, table.shape[0])
    y = np.empty(ids.shape + table.shape[1:], dtype=table.dtype) if out is None else out
    for position in np.ndindex(ids.shape):
        y[position] = table[ids[position]]
    return y


def embedding_backward(table_grad, dy, ids, padding_idx=None):
    """table_grad [V, D] += dy [*ids.shape, D] row by row, in the order of the ids, skipping padding_idx
    (the engine ACCUMULATES here, like the layers' backward passes)."""
    ids = _check_ids("embedding_backward", ids, table_grad.shape[0])
    dy = _check("embedding_backward", "dy", dy, [("", s) for s in ids.shape] + [("D", table_grad.shape[1])],
                table_grad.dtype)
    for position in np.ndindex(ids.shape):
        if ids[position] != padding_idx:
            table_grad[ids[position]] += dy[position]
