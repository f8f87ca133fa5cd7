"""Plain NumPy twins of the engine kernels: the readable definition the C++ engine is tested and timed against.

Same names, argument order, defaults, outputs and cache keys as `rnnext._core` (see docs/conventions.md).
The cells loop over time steps in Python and work on the whole batch at each step; Dense and the losses (the
last section) are whole-array NumPy. Nothing here is fast, everything here is meant to be read next to the
equations. Arrays stay in the dtype of `x` (of the first floating argument for the losses).

Letters: T time steps, N batch rows, I input size, H hidden size. Weight names say which way they map:
`W_xh` takes the input to the hidden state, `W_hz` takes the hidden state to the LSTM gate pre-activations.
"""
from __future__ import annotations

import numpy as np

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "dense_forward", "dense_backward", "softmax_cross_entropy", "binary_cross_entropy_with_logits",
           "mean_squared_error"]


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


# ---------------------------------------------------------------------------------------------------------
# Simple RNN (Elman):  h[t+1] = act(x[t] @ W_xh + h[t] @ W_hh + b_h)

def rnn_forward(x, h0, kernel, recurrent_kernel, bias, lengths=None, activation="tanh"):
    """x [T, N, I], h0 [N, H], kernel [I, H], recurrent_kernel [H, H], bias [H] -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H]} with h[0] = h0.
    """
    fn = "rnn_forward"
    act, _ = _check_activation(fn, activation)
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    W_xh = _check(fn, "kernel", kernel, [("I", I), ("H", H)], dtype)                    # input -> hidden
    W_hh = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), ("H", H)], dtype)  # hidden -> hidden
    b_h = _check(fn, "bias", bias, [("H", H)], dtype)
    lengths = _check_lengths(fn, lengths, N, T)

    h = np.zeros((T + 1, N, H), dtype=dtype)  # h[t] is the state before step t
    y = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        a = x[t] @ W_xh + h[t] @ W_hh + b_h
        h_new = act(a)
        h[t + 1] = np.where(valid, h_new, h[t])  # rows past their length carry their state
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), {"h": h}


def rnn_backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, lengths=None, activation="tanh"):
    """Gradients of rnn_forward given dy [T, N, H] and dh_n [N, H] (either may be None, meaning zero).

    Returns {"x", "h0", "kernel", "recurrent_kernel", "bias"}, each with the shape of that argument.
    """
    fn = "rnn_backward"
    _, act_grad = _check_activation(fn, activation)
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    W_xh = _check(fn, "kernel", kernel, [("I", I), ("H", H)], dtype)
    W_hh = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), ("H", H)], dtype)
    _check(fn, "bias", bias, [("H", H)], dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)

    dx = np.zeros_like(x)
    dW_xh = np.zeros_like(W_xh)
    dW_hh = np.zeros_like(W_hh)
    db_h = np.zeros((H,), dtype=dtype)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        # backprop into h_new, from step t+1 and from y[t]; rows past their length never ran this step
        # (their y[t] is a constant 0), so nothing enters the cell there
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop through h_new = act(a); at valid rows h_new is h[t+1]
        da = act_grad(dh_new, h[t + 1])
        # backprop through a = x[t] @ W_xh + h[t] @ W_hh + b_h
        dx[t] = da @ W_xh.T
        dW_xh += x[t].T @ da
        dW_hh += h[t].T @ da
        db_h += da.sum(axis=0)
        dh_prev = da @ W_hh.T
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradient straight through
    return {"x": dx, "h0": dh, "kernel": dW_xh, "recurrent_kernel": dW_hh, "bias": db_h}


# ---------------------------------------------------------------------------------------------------------
# LSTM, gate order i, f, g, o (coupled: f, g, o with i = 1 - f); optional peepholes (Gers & Schmidhuber 2000)

def _peephole_rows(peephole, coupled):
    """(p_i, p_f, p_o), each [H] or None where the cell has no such peephole."""
    if peephole is None:
        return None, None, None
    if coupled:
        p_f, p_o = peephole
        return None, p_f, p_o
    p_i, p_f, p_o = peephole
    return p_i, p_f, p_o


def _peek(p, a):
    """p * a, or 0 without that peephole: a missing peephole adds nothing, even where a is inf or NaN."""
    return 0 if p is None else p * a


def _check_peephole(fn, peephole, coupled, H, dtype):
    if peephole is None:
        return None
    if coupled:
        return _check(fn, "peephole", peephole, [("P", 2), ("H", H)], dtype, note=": rows (f, o) when coupled")
    return _check(fn, "peephole", peephole, [("P", 3), ("H", H)], dtype, note=": rows (i, f, o)")


def lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, peephole=None, lengths=None, coupled=False):
    """x [T, N, I], h0 and c0 [N, H], kernel [I, G*H], recurrent_kernel [H, G*H], bias [G*H], peephole None or [P, H]
    -> (y [T, N, H], h_n [N, H], c_n [N, H], cache).  G = 3 if coupled else 4; P = 2 if coupled else 3.

    cache = {"h": [T+1, N, H], "c": [T+1, N, H], "gates": [T, N, G*H]} with the activated gates.
    """
    fn = "lstm_forward"
    G = 3 if coupled else 4
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    c0 = _check(fn, "c0", c0, [("N", N), ("H", H)], dtype)
    W_xz = _check(fn, "kernel", kernel, [("I", I), (f"{G}H", G * H)], dtype)                    # input -> gates
    W_hz = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), (f"{G}H", G * H)], dtype)  # hidden -> gates
    b_z = _check(fn, "bias", bias, [(f"{G}H", G * H)], dtype)
    peephole = _check_peephole(fn, peephole, coupled, H, dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    p_i, p_f, p_o = _peephole_rows(peephole, coupled)

    h = np.zeros((T + 1, N, H), dtype=dtype)
    c = np.zeros((T + 1, N, H), dtype=dtype)
    gates = np.zeros((T, N, G * H), dtype=dtype)
    y = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    c[0] = c0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        z = x[t] @ W_xz + h[t] @ W_hz + b_z  # gate pre-activations, blocks in gate order
        if coupled:
            z_f, z_g, z_o = np.split(z, 3, axis=1)
            f = _sigmoid(z_f + _peek(p_f, c[t]))
            i = 1 - f
        else:
            z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
            i = _sigmoid(z_i + _peek(p_i, c[t]))
            f = _sigmoid(z_f + _peek(p_f, c[t]))
        g = np.tanh(z_g)
        c_new = f * c[t] + i * g
        o = _sigmoid(z_o + _peek(p_o, c_new))  # the output gate peeks at the new cell
        h_new = o * np.tanh(c_new)
        gates[t] = np.concatenate([f, g, o] if coupled else [i, f, g, o], axis=1)
        c[t + 1] = np.where(valid, c_new, c[t])
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), c[T].copy(), {"h": h, "c": c, "gates": gates}


def lstm_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_kernel, bias, peephole=None, lengths=None,
                  coupled=False):
    """Gradients of lstm_forward given dy [T, N, H], dh_n and dc_n [N, H] (each may be None, meaning zero).

    Returns {"x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "peephole"}; "peephole" is None without
    peepholes.
    """
    fn = "lstm_backward"
    G = 3 if coupled else 4
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    W_xz = _check(fn, "kernel", kernel, [("I", I), (f"{G}H", G * H)], dtype)
    W_hz = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), (f"{G}H", G * H)], dtype)
    _check(fn, "bias", bias, [(f"{G}H", G * H)], dtype)
    peephole = _check_peephole(fn, peephole, coupled, H, dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    dc = _check_or_zeros(fn, "dc_n", dc_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    c = _check_cache(fn, cache, "c", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), (f"{G}H", G * H)], dtype)
    p_i, p_f, p_o = _peephole_rows(peephole, coupled)

    dx = np.zeros_like(x)
    dW_xz = np.zeros_like(W_xz)
    dW_hz = np.zeros_like(W_hz)
    db_z = np.zeros((G * H,), dtype=dtype)
    dp_i = np.zeros((H,), dtype=dtype)
    dp_f = np.zeros((H,), dtype=dtype)
    dp_o = np.zeros((H,), dtype=dtype)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        if coupled:
            f, g, o = np.split(gates[t], 3, axis=1)
            i = 1 - f
        else:
            i, f, g, o = np.split(gates[t], 4, axis=1)
        # backprop into h_new and c_new from step t+1 (and y[t]); masked rows never ran this step
        dh_new = np.where(valid, dh + dy[t], 0)
        dc_next = np.where(valid, dc, 0)
        # backprop through h_new = o * tanh(c_new)
        tc = np.tanh(c[t + 1])
        dz_o = dh_new * tc * o * (1 - o)
        # backprop into c_new: from step t+1, through tanh(c_new), and through the output-gate peephole
        dc_new = dc_next + dh_new * o * (1 - tc * tc) + _peek(p_o, dz_o)
        # backprop through c_new = f * c[t] + i * g
        dz_g = dc_new * i * (1 - g * g)
        if coupled:
            dz_f = dc_new * (c[t] - g) * f * (1 - f)  # f also reaches c_new through i = 1 - f
            dz_i = np.zeros_like(dz_f)
            dz = np.concatenate([dz_f, dz_g, dz_o], axis=1)
        else:
            dz_f = dc_new * c[t] * f * (1 - f)
            dz_i = dc_new * g * i * (1 - i)
            dz = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
        # backprop into c[t]: through the forget gate and the i, f peepholes
        dc_prev = dc_new * f + _peek(p_i, dz_i) + _peek(p_f, dz_f)
        # backprop through z = x[t] @ W_xz + h[t] @ W_hz + b_z (+ peephole terms)
        dx[t] = dz @ W_xz.T
        dW_xz += x[t].T @ dz
        dW_hz += h[t].T @ dz
        db_z += dz.sum(axis=0)
        if peephole is not None:
            dp_i += (dz_i * c[t]).sum(axis=0)
            dp_f += (dz_f * c[t]).sum(axis=0)
            dp_o += (dz_o * c[t + 1]).sum(axis=0)
        dh_prev = dz @ W_hz.T
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradients straight through
        dc = np.where(valid, dc_prev, dc)
    if peephole is None:
        dpeephole = None
    elif coupled:
        dpeephole = np.stack([dp_f, dp_o])
    else:
        dpeephole = np.stack([dp_i, dp_f, dp_o])
    return {"x": dx, "h0": dh, "c0": dc, "kernel": dW_xz, "recurrent_kernel": dW_hz, "bias": db_z,
            "peephole": dpeephole}


# ---------------------------------------------------------------------------------------------------------
# GRU, gate order r, z, n;  h_new = (1 - z) * n + z * h[t]  (as PyTorch, Keras and Cho et al. 2014)

def _gru_bias_dims(reset_after, H):
    # reset_after=True keeps separate input and recurrent biases, because r multiplies the recurrent one
    return [("2", 2), ("3H", 3 * H)] if reset_after else [("3H", 3 * H)]


def gru_forward(x, h0, kernel, recurrent_kernel, bias, lengths=None, reset_after=True):
    """x [T, N, I], h0 [N, H], kernel [I, 3H], recurrent_kernel [H, 3H], bias [2, 3H] (reset_after) or [3H]
    -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H], "gates": [T, N, 3H] (r, z, n)} and "hn" [T, N, H] = the recurrent n
    projection (reset_after) or "rh" [T, N, H] = r * h[t] (not reset_after).
    """
    fn = "gru_forward"
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    W_xg = _check(fn, "kernel", kernel, [("I", I), ("3H", 3 * H)], dtype)                    # input -> gates
    W_hg = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), ("3H", 3 * H)], dtype)  # hidden -> gates
    bias = _check(fn, "bias", bias, _gru_bias_dims(reset_after, H), dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    U_r, U_z, U_n = np.split(W_hg, 3, axis=1)  # hidden -> r, z, n

    h = np.zeros((T + 1, N, H), dtype=dtype)
    gates = np.zeros((T, N, 3 * H), dtype=dtype)
    extra = np.zeros((T, N, H), dtype=dtype)  # cache "hn" or "rh": what r multiplied
    y = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        if reset_after:
            xw = x[t] @ W_xg + bias[0]
            hu = h[t] @ W_hg + bias[1]
            xw_r, xw_z, xw_n = np.split(xw, 3, axis=1)
            hu_r, hu_z, hu_n = np.split(hu, 3, axis=1)
            r = _sigmoid(xw_r + hu_r)
            z = _sigmoid(xw_z + hu_z)
            n = np.tanh(xw_n + r * hu_n)  # reset applied after the recurrent projection
            extra[t] = hu_n
        else:
            xw = x[t] @ W_xg + bias
            xw_r, xw_z, xw_n = np.split(xw, 3, axis=1)
            r = _sigmoid(xw_r + h[t] @ U_r)
            z = _sigmoid(xw_z + h[t] @ U_z)
            rh = r * h[t]
            n = np.tanh(xw_n + rh @ U_n)  # reset applied to the state before the projection
            extra[t] = rh
        h_new = (1 - z) * n + z * h[t]
        gates[t] = np.concatenate([r, z, n], axis=1)
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    cache = {"h": h, "gates": gates, ("hn" if reset_after else "rh"): extra}
    return y, h[T].copy(), cache


def gru_backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, lengths=None, reset_after=True):
    """Gradients of gru_forward given dy [T, N, H] and dh_n [N, H] (either may be None, meaning zero).

    Returns {"x", "h0", "kernel", "recurrent_kernel", "bias"}; "bias" has the bias's shape.
    """
    fn = "gru_backward"
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    W_xg = _check(fn, "kernel", kernel, [("I", I), ("3H", 3 * H)], dtype)
    W_hg = _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H), ("3H", 3 * H)], dtype)
    bias = _check(fn, "bias", bias, _gru_bias_dims(reset_after, H), dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), ("3H", 3 * H)], dtype)
    extra = _check_cache(fn, cache, "hn" if reset_after else "rh", [("T", T), ("N", N), ("H", H)], dtype)
    U_r, U_z, U_n = np.split(W_hg, 3, axis=1)

    dx = np.zeros_like(x)
    dW_xg = np.zeros_like(W_xg)
    dW_hg = np.zeros_like(W_hg)
    dbias = np.zeros_like(bias)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        r, z, n = np.split(gates[t], 3, axis=1)
        # backprop into h_new from step t+1 and y[t]; masked rows never ran this step
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop through h_new = (1 - z) * n + z * h[t]
        dn = dh_new * (1 - z)
        dz = dh_new * (h[t] - n)
        dh_prev = dh_new * z
        # backprop through the activations
        da_n = dn * (1 - n * n)
        if reset_after:
            hu_n = extra[t]
            # backprop through n = tanh(xw_n + r * hu_n)
            dr = da_n * hu_n
            dhu_n = da_n * r
        else:
            rh = extra[t]
            # backprop through n = tanh(xw_n + rh @ U_n), rh = r * h[t]
            drh = da_n @ U_n.T
            dr = drh * h[t]
            dh_prev = dh_prev + drh * r
        da_z = dz * z * (1 - z)
        da_r = dr * r * (1 - r)
        dxw = np.concatenate([da_r, da_z, da_n], axis=1)
        # backprop through xw = x[t] @ W_xg + input bias
        dx[t] = dxw @ W_xg.T
        dW_xg += x[t].T @ dxw
        if reset_after:
            # backprop through hu = h[t] @ W_hg + recurrent bias
            dhu = np.concatenate([da_r, da_z, dhu_n], axis=1)
            dW_hg += h[t].T @ dhu
            dbias[0] += dxw.sum(axis=0)
            dbias[1] += dhu.sum(axis=0)
            dh_prev = dh_prev + dhu @ W_hg.T
        else:
            # backprop through h[t] @ U_r, h[t] @ U_z and rh @ U_n
            dW_hg += np.concatenate([h[t].T @ da_r, h[t].T @ da_z, rh.T @ da_n], axis=1)
            dbias += dxw.sum(axis=0)
            dh_prev = dh_prev + da_r @ U_r.T + da_z @ U_z.T
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradient straight through
    return {"x": dx, "h0": dh, "kernel": dW_xg, "recurrent_kernel": dW_hg, "bias": dbias}


# ---------------------------------------------------------------------------------------------------------
# Optimizer updates, gradient lists and embeddings (cpp/rnnext/optim.h, embedding.h). The updates work in place,
# one NumPy operation per step of the formula in the order the engine computes it, hyperparameters as Python
# floats (NumPy rounds them to the arrays' dtype), so engine and twin give the same bits. A gradient list may mix
# float32 and float64 arrays.

__all__ += ["sgd_update", "adagrad_update", "rmsprop_update", "adam_update", "grad_norm", "clip_grad_norm",
            "clip_grad_value", "zero_grads", "embedding_forward", "embedding_backward"]


def _check_state(fn, name, a, value):
    """An array updated alongside value: its shape and dtype."""
    return _check(fn, name, a, [("", size) for size in value.shape], value.dtype, " (the shape of value)")


def sgd_update(value, grad, momentum_buffer, lr, momentum, nesterov, weight_decay, initialize_buffer):
    """torch.optim.SGD's step in place; momentum_buffer is None when momentum is 0, and is set to the first
    gradient (not updated) when initialize_buffer."""
    lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)
    grad = _check_state("sgd_update", "grad", grad, value)
    if weight_decay:
        grad = grad + weight_decay * value
    if momentum:
        _check_state("sgd_update", "momentum_buffer", momentum_buffer, value)
        if initialize_buffer:
            momentum_buffer[...] = grad
        else:
            momentum_buffer *= momentum
            momentum_buffer += grad
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    value -= lr * grad


def adagrad_update(value, grad, squared_sum, lr, eps, weight_decay):
    """torch.optim.Adagrad's step in place: squared_sum accumulates g * g."""
    lr, eps, weight_decay = float(lr), float(eps), float(weight_decay)
    grad = _check_state("adagrad_update", "grad", grad, value)
    _check_state("adagrad_update", "squared_sum", squared_sum, value)
    if weight_decay:
        grad = grad + weight_decay * value
    squared_sum += grad * grad
    value -= lr * grad / (np.sqrt(squared_sum) + eps)


def rmsprop_update(value, grad, square_avg, momentum_buffer, lr, alpha, eps, momentum, weight_decay):
    """torch.optim.RMSprop's step in place (not centered); momentum_buffer is None when momentum is 0."""
    lr, alpha, eps, momentum, weight_decay = float(lr), float(alpha), float(eps), float(momentum), float(weight_decay)
    grad = _check_state("rmsprop_update", "grad", grad, value)
    _check_state("rmsprop_update", "square_avg", square_avg, value)
    if weight_decay:
        grad = grad + weight_decay * value
    square_avg *= alpha
    square_avg += (1 - alpha) * grad * grad
    step = grad / (np.sqrt(square_avg) + eps)
    if momentum:
        _check_state("rmsprop_update", "momentum_buffer", momentum_buffer, value)
        momentum_buffer *= momentum
        momentum_buffer += step
        step = momentum_buffer
    value -= lr * step


def adam_update(value, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    """torch.optim.Adam's update number `step` (>= 1) in place; with decoupled_weight_decay, AdamW's."""
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    step = int(step)
    grad = _check_state("adam_update", "grad", grad, value)
    _check_state("adam_update", "m", m, value)
    _check_state("adam_update", "v", v, value)
    if weight_decay and decoupled_weight_decay:
        value *= 1 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * value
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    root_correction = float(np.sqrt(1 - beta2**step))  # a Python float, which NumPy rounds to v's dtype
    value -= step_size * m / (np.sqrt(v) / root_correction + eps)


def grad_norm(grads):
    """The L2 norm of every element of every array together, summed in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(grad, dtype=np.float64))) for grad in grads)))


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ in place, except that a non-finite norm scales nothing; returns the norm."""
    norm = grad_norm(grads)
    factor = max_norm / (norm + 1e-6)
    if np.isfinite(norm) and factor < 1:
        for grad in grads:
            grad *= factor
    return norm


def clip_grad_value(grads, clip_value):
    for grad in grads:
        np.clip(grad, -clip_value, clip_value, out=grad)


def zero_grads(grads):
    for grad in grads:
        grad.fill(0)


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


def _check_floating(fn, name, a):
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected float32 or float64")
    return a


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
