"""What every twin shares: the activations (derivatives written on the output) and the argument checks."""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# activations (derivatives are written on the activation *output* y, so the cache only holds outputs)

def _sigmoid(a):
    # exp(-a) overflows for very negative a (below about -88 in float32); 1 / (1 + inf) = 0 is then exactly
    # the right answer, so the overflow warning is silenced rather than the formula changed.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-a))


def _relu(a):
    return np.maximum(a, 0)


_ACTIVATIONS = {
    # name: (y = act(a), da from the gradient on y and y itself)
    "tanh": (np.tanh, lambda dy, y: dy * (1 - y * y)),
    # a select, not dy * (y > 0): a unit that is off passes no gradient at all, not even a NaN (as in PyTorch)
    "relu": (_relu, lambda dy, y: np.where(y > 0, dy, 0)),
    "sigmoid": (_sigmoid, lambda dy, y: dy * (y * (1 - y))),
}


# ---------------------------------------------------------------------------------------------------------
# argument checks (kept short: each raises ValueError naming the function, the argument and what was expected)

def _check_x(fn, x):
    """x as an array [T, N, I] of float32 or float64 with T >= 1."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected (T, N, I)")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: x has dtype {x.dtype}, expected float32 or float64")
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: x has T=0 time steps, expected T >= 1")
    return x


def _hidden_size(fn, recurrent_kernel):
    """H, read from recurrent_kernel [H, G*H]; the other arrays are then checked against it."""
    shape = np.shape(recurrent_kernel)
    if len(shape) != 2:
        raise ValueError(f"{fn}: recurrent_kernel has shape {shape}, expected (H, G*H)")
    return shape[0]


def _check(fn, name, a, dims, dtype, note=""):
    """`a` as an array of shape `dims` (pairs (letter, size)) and the given dtype."""
    a = np.asarray(a)
    if a.shape != tuple(size for _, size in dims):
        expected = ", ".join(f"{letter}={size}" if letter else str(size) for letter, size in dims)
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected ({expected}){note}")
    if a.dtype != dtype:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected {dtype} (the dtype of x)")
    return a


def _check_or_zeros(fn, name, a, dims, dtype):
    """Like _check, but None (no gradient arriving) becomes zeros."""
    if a is None:
        return np.zeros([size for _, size in dims], dtype=dtype)
    return _check(fn, name, a, dims, dtype)


def _check_cache(fn, cache, key, dims, dtype):
    if key not in cache:
        raise ValueError(f"{fn}: cache has no key {key!r}; pass the cache returned by the matching forward")
    return _check(fn, f"cache[{key!r}]", cache[key], dims, dtype)


def _check_lengths(fn, lengths, N, T):
    """None, or an integer array [N] with 0 <= lengths <= T."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"{fn}: lengths has shape {lengths.shape} and dtype {lengths.dtype}, "
                         f"expected integers of shape (N={N},)")
    if N > 0 and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"{fn}: lengths has values in [{lengths.min()}, {lengths.max()}], "
                         f"expected values in [0, T={T}]")
    return lengths


def _check_activation(fn, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{fn}: activation is {activation!r}, expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation]


def _valid_rows(lengths, t, N):
    """[N, 1] booleans: True where step t of that row is valid (t < lengths[n])."""
    if lengths is None:
        return np.ones((N, 1), dtype=bool)
    return (t < lengths)[:, None]


def _check_floating(fn, name, a):
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected float32 or float64")
    return a
