"""The twins of Dense forward and backward (cpp/rnnext/dense.h)."""
from __future__ import annotations

import numpy as np

from ._common import _ACTIVATIONS, _check, _check_floating


# Dense and the losses (the engine's dense.h and losses.h). Letters: M rows (a batch, or N*T flattened
# positions), F input features, U units, C classes. rnnext.losses documents what the losses mean; these have the
# engine's arguments: arrays of one float dtype, integer class ids, and no conversion of lists or other dtypes.

def _softmax_rows(a):
    exps = np.exp(a - a.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


_DENSE_ACTIVATIONS = {
    # name: (y = act(a), da from the gradient on y and y itself)
    "linear": (lambda a: a, lambda dy, y: dy),
    **{name: _ACTIVATIONS[name] for name in ("sigmoid", "tanh", "relu")},
    # softmax over a row: da = J^T dy with J = diag(y) - y y^T
    "softmax": (_softmax_rows, lambda dy, y: y * (dy - np.sum(dy * y, axis=-1, keepdims=True))),
}


def _check_dense(fn, x, kernel, activation):
    """(x [M, F], kernel [F, U], the activation's pair)."""
    if activation not in _DENSE_ACTIVATIONS:
        raise ValueError(f"{fn}: activation is {activation!r}, expected one of {sorted(_DENSE_ACTIVATIONS)}")
    x = _check_floating(fn, "x", x)
    if x.ndim != 2:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected (M, F)")
    shape = np.shape(kernel)
    if len(shape) != 2 or shape[0] != x.shape[1] or shape[1] < 1:
        raise ValueError(f"{fn}: kernel has shape {shape}, expected (F={x.shape[1]}, U) with U >= 1")
    return x, _check(fn, "kernel", kernel, [("F", shape[0]), ("U", shape[1])], x.dtype), _DENSE_ACTIVATIONS[activation]


def dense_forward(x, kernel, bias, activation="linear"):
    """x [M, F], kernel [F, U], bias [U] -> y [M, U] = act(x @ W_xy + b_y)."""
    fn = "dense_forward"
    x, W_xy, (act, _) = _check_dense(fn, x, kernel, activation)
    b_y = _check(fn, "bias", bias, [("U", W_xy.shape[1])], x.dtype)
    return act(x @ W_xy + b_y)


def dense_backward(dy, y, x, kernel, activation="linear", dkernel=None, dbias=None):
    """Gradients of dense_forward given dy [M, U] and its output y [M, U]: {"x", "kernel", "bias"}.

    dkernel [F, U] and dbias [U], when given, are added to in place and returned (a layer's Parameter.grad).
    """
    fn = "dense_backward"
    x, W_xy, (_, act_grad) = _check_dense(fn, x, kernel, activation)
    (M, F), U = x.shape, W_xy.shape[1]
    dy = _check(fn, "dy", dy, [("M", M), ("U", U)], x.dtype)
    y = _check(fn, "y", y, [("M", M), ("U", U)], x.dtype)
    # backprop through y = act(a)
    da = act_grad(dy, y)
    # backprop through a = x @ W_xy + b_y
    dx = da @ W_xy.T
    dW_xy = x.T @ da
    db_y = da.sum(axis=0)
    if dkernel is None:
        dkernel = dW_xy
    else:
        _check(fn, "dkernel", dkernel, [("F", F), ("U", U)], x.dtype)[...] += dW_xy
    if dbias is None:
        dbias = db_y
    else:
        _check(fn, "dbias", dbias, [("U", U)], x.dtype)[...] += db_y
    return {"x": dx, "kernel": dkernel, "bias": dbias}
