"""The twins of the cells whose recurrence is elementwise (cpp/rnnext/indrnn.h, mingru.h, minlstm.h, sru.h,
qrnn.h): a Python loop over time steps, the whole batch at each step. Their products read x only (IndRNN's and SRU's
recurrent weights are vectors), so each forward starts with the input projection of every step at once, as the
engine does."""
from __future__ import annotations

import numpy as np

from ._common import _check, _check_cache, _check_lengths, _check_or_zeros, _check_x, _sigmoid, _valid_rows

_INDRNN_ACTIVATIONS = {
    # name: (y = act(a), da from the gradient on y and y itself); relu is a select, as in the RNN twin
    "relu": (lambda a: np.maximum(a, 0), lambda dy, y: np.where(y > 0, dy, 0)),
    "tanh": (np.tanh, lambda dy, y: dy * (1 - y * y)),
}


def _indrnn_activation(fn, activation):
    if activation not in _INDRNN_ACTIVATIONS:
        raise ValueError(f"{fn}: activation is {activation!r}, expected 'relu' or 'tanh'")
    return _INDRNN_ACTIVATIONS[activation]


def _hidden_from_kernel(fn, kernel, I, G):
    """H from kernel [I, G*H] for the cells without a recurrent kernel."""
    shape = np.shape(kernel)
    if len(shape) != 2 or shape[0] != I or shape[1] < G or shape[1] % G:
        raise ValueError(f"{fn}: kernel has shape {shape}, expected (I={I}, {G}*H) with H >= 1")
    return shape[1] // G


# ---------------------------------------------------------------------------------------------------------
# IndRNN (Li et al. 2018):  h[t+1] = act(x[t] @ W_xh + u * h[t] + b_h),  u [H] elementwise

def _indrnn_arguments(fn, x, kernel, recurrent_weight, bias, lengths):
    """The checked (x, kernel, recurrent_weight, bias, lengths, H); H is read from recurrent_weight [H]."""
    x = _check_x(fn, x)
    T, N, I = x.shape
    shape = np.shape(recurrent_weight)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{fn}: recurrent_weight has shape {shape}, expected (H,) with H >= 1")
    H = shape[0]
    u = _check(fn, "recurrent_weight", recurrent_weight, [("H", H)], x.dtype)  # each unit's weight on its own past
    W_xh = _check(fn, "kernel", kernel, [("I", I), ("H", H)], x.dtype)
    b_h = _check(fn, "bias", bias, [("H", H)], x.dtype)
    return x, W_xh, u, b_h, _check_lengths(fn, lengths, N, T), H


def indrnn_forward(x, h0, kernel, recurrent_weight, bias, lengths=None, activation="relu"):
    """x [T, N, I], h0 [N, H], kernel [I, H], recurrent_weight [H], bias [H] -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H]} with h[0] = h0.
    """
    fn = "indrnn_forward"
    act, _ = _indrnn_activation(fn, activation)
    x, W_xh, u, b_h, lengths, H = _indrnn_arguments(fn, x, kernel, recurrent_weight, bias, lengths)
    T, N, _ = x.shape
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)

    projected = x @ W_xh + b_h  # [T, N, H] the input side of every step
    h = np.zeros((T + 1, N, H), dtype=dtype)
    y = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        h_new = act(projected[t] + u * h[t])
        h[t + 1] = np.where(valid, h_new, h[t])  # rows past their length carry their state
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), {"h": h}


def indrnn_backward(dy, dh_n, cache, x, kernel, recurrent_weight, bias, lengths=None, activation="relu"):
    """Gradients of indrnn_forward given dy [T, N, H] and dh_n [N, H] (either may be None, meaning zero).

    Returns {"x", "h0", "kernel", "recurrent_weight", "bias"}, each with the shape of that argument.
    """
    fn = "indrnn_backward"
    _, act_grad = _indrnn_activation(fn, activation)
    x, W_xh, u, _, lengths, H = _indrnn_arguments(fn, x, kernel, recurrent_weight, bias, lengths)
    T, N, I = x.shape
    dtype = x.dtype
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)

    da = np.zeros((T, N, H), dtype=dtype)  # gradient on the pre-activations of every step
    du = np.zeros((H,), dtype=dtype)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        # backprop into h_new from step t+1 and y[t]; nothing enters the cell at rows past their length
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop through h_new = act(a), a = projected[t] + u * h[t]
        da[t] = act_grad(dh_new, h[t + 1])
        du += (da[t] * h[t]).sum(axis=0)
        dh = np.where(valid, da[t] * u, dh)  # a carried state passes its gradient straight through
    # backprop through projected = x @ W_xh + b_h, every step at once
    dx = da @ W_xh.T
    dW_xh = x.reshape(T * N, I).T @ da.reshape(T * N, H)
    return {"x": dx, "h0": dh, "kernel": dW_xh, "recurrent_weight": du, "bias": da.sum(axis=(0, 1))}


# ---------------------------------------------------------------------------------------------------------
# minGRU (Feng et al. 2024), gate order z, h~:  z = sigmoid(x @ W_xz + b_z),  h~ = x @ W_xh + b_h,
# h[t+1] = (1 - z) * h[t] + z * h~

def _min_cell_arguments(fn, x, h0, kernel, bias, lengths, G):
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_from_kernel(fn, kernel, I, G)
    dtype = x.dtype
    h0 = None if h0 is None else _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    kernel = _check(fn, "kernel", kernel, [("I", I), (f"{G}*H", G * H)], dtype)
    bias = _check(fn, "bias", bias, [(f"{G}*H", G * H)], dtype)
    return x, h0, kernel, bias, _check_lengths(fn, lengths, N, T), H


def _min_cell_gradients(fn, dy, dh_n, cache, x, kernel, bias, lengths, G):
    """The checked arguments of a minGRU / minLSTM backward: (x, kernel, lengths, dy, dh, h, gates, H)."""
    x, _, kernel, _, lengths, H = _min_cell_arguments(fn, x, None, kernel, bias, lengths, G)
    T, N, _ = x.shape
    dtype = x.dtype
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), (f"{G}*H", G * H)], dtype)
    return x, kernel, lengths, dy, dh, h, gates, H


def _input_side_gradients(dz, x, kernel, dh):
    """The gradients of z = x @ kernel + bias over every step at once, given dz [T, N, G*H], and dh on h0."""
    T, N, I = x.shape
    dx = dz @ kernel.T
    dkernel = x.reshape(T * N, I).T @ dz.reshape(T * N, -1)
    return {"x": dx, "h0": dh, "kernel": dkernel, "bias": dz.sum(axis=(0, 1))}


def mingru_forward(x, h0, kernel, bias, lengths=None):
    """x [T, N, I], h0 [N, H], kernel [I, 2H], bias [2H] -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H], "gates": [T, N, 2H]} with the activated gates (z, h~).
    """
    fn = "mingru_forward"
    x, h0, W_xg, b_g, lengths, H = _min_cell_arguments(fn, x, h0, kernel, bias, lengths, 2)
    T, N, _ = x.shape
    projected = x @ W_xg + b_g  # [T, N, 2H] gates of every step, from x only
    z = _sigmoid(projected[..., :H])
    h_tilde = projected[..., H:]
    h = np.zeros((T + 1, N, H), dtype=x.dtype)
    y = np.zeros((T, N, H), dtype=x.dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        h_new = (1 - z[t]) * h[t] + z[t] * h_tilde[t]
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), {"h": h, "gates": np.concatenate([z, h_tilde], axis=2)}


def mingru_backward(dy, dh_n, cache, x, kernel, bias, lengths=None):
    """Gradients of mingru_forward given dy [T, N, H] and dh_n [N, H] (either may be None, meaning zero).

    Returns {"x", "h0", "kernel", "bias"}, each with the shape of that argument.
    """
    fn = "mingru_backward"
    x, kernel, lengths, dy, dh, h, gates, H = _min_cell_gradients(fn, dy, dh_n, cache, x, kernel, bias, lengths, 2)
    T, N, _ = x.shape
    z, h_tilde = gates[..., :H], gates[..., H:]
    dz = np.zeros_like(gates)  # gradient on the gate pre-activations
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop h_new = (1 - z) * h[t] + z * h~ into z (through its sigmoid), h~ and h[t]
        dz[t, :, :H] = dh_new * (h_tilde[t] - h[t]) * z[t] * (1 - z[t])
        dz[t, :, H:] = dh_new * z[t]
        dh = np.where(valid, dh_new * (1 - z[t]), dh)
    return _input_side_gradients(dz, x, kernel, dh)


# ---------------------------------------------------------------------------------------------------------
# minLSTM (Feng et al. 2024), gate order f, i, h~:  f, i = sigmoid(x @ W + b),  h~ = x @ W_xh + b_h,
# f' = f / (f + i),  i' = i / (f + i),  h[t+1] = f' * h[t] + i' * h~

def minlstm_forward(x, h0, kernel, bias, lengths=None):
    """x [T, N, I], h0 [N, H], kernel [I, 3H], bias [3H] -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H], "gates": [T, N, 3H]} with the activated gates (f, i, h~), f and i not normalised.
    """
    fn = "minlstm_forward"
    x, h0, W_xg, b_g, lengths, H = _min_cell_arguments(fn, x, h0, kernel, bias, lengths, 3)
    T, N, _ = x.shape
    projected = x @ W_xg + b_g  # [T, N, 3H]
    f = _sigmoid(projected[..., :H])
    i = _sigmoid(projected[..., H:2 * H])
    h_tilde = projected[..., 2 * H:]
    h = np.zeros((T + 1, N, H), dtype=x.dtype)
    y = np.zeros((T, N, H), dtype=x.dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        f_norm = f[t] / (f[t] + i[t])
        i_norm = i[t] / (f[t] + i[t])
        h_new = f_norm * h[t] + i_norm * h_tilde[t]
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), {"h": h, "gates": np.concatenate([f, i, h_tilde], axis=2)}


def minlstm_backward(dy, dh_n, cache, x, kernel, bias, lengths=None):
    """Gradients of minlstm_forward given dy [T, N, H] and dh_n [N, H] (either may be None, meaning zero).

    Returns {"x", "h0", "kernel", "bias"}, each with the shape of that argument.
    """
    fn = "minlstm_backward"
    x, kernel, lengths, dy, dh, h, gates, H = _min_cell_gradients(fn, dy, dh_n, cache, x, kernel, bias, lengths, 3)
    T, N, _ = x.shape
    f, i, h_tilde = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:]
    dz = np.zeros_like(gates)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        dh_new = np.where(valid, dh + dy[t], 0)
        s = f[t] + i[t]
        # backprop h_new = f' * h[t] + i' * h~ into f', i', h~ and h[t]
        df_norm = dh_new * h[t]
        di_norm = dh_new * h_tilde[t]
        # backprop f' = f / s and i' = i / s (s = f + i) into f and i, then through their sigmoids
        df = (df_norm * i[t] - di_norm * i[t]) / (s * s)
        di = (di_norm * f[t] - df_norm * f[t]) / (s * s)
        dz[t, :, :H] = df * f[t] * (1 - f[t])
        dz[t, :, H:2 * H] = di * i[t] * (1 - i[t])
        dz[t, :, 2 * H:] = dh_new * i[t] / s
        dh = np.where(valid, dh_new * f[t] / s, dh)
    return _input_side_gradients(dz, x, kernel, dh)


# ---------------------------------------------------------------------------------------------------------
# SRU (Lei et al. 2018), gate blocks h~, f, r[, s]:  h~ = x @ W_xc,  f = sigmoid(x @ W_xf + v_f * c[t] + b_f),
# r = sigmoid(x @ W_xr + v_r * c[t] + b_r),  c[t+1] = f * c[t] + (1 - f) * h~,
# h = r * c[t+1] + (1 - r) * skip,  skip = x (kernel [I, 3H], I = H) or x @ W_xs (kernel [I, 4H])

def _sru_arguments(fn, x, kernel, recurrent_weight, bias, lengths):
    x = _check_x(fn, x)
    T, N, I = x.shape
    shape = np.shape(recurrent_weight)
    if len(shape) != 2 or shape[0] != 2 or shape[1] < 1:
        raise ValueError(f"{fn}: recurrent_weight has shape {shape}, expected (2, H) with H >= 1 (rows v_f, v_r)")
    H = shape[1]
    G = 3 if np.shape(kernel) == (I, 3 * H) and I == H else 4
    W_xg = _check(fn, "kernel", kernel, [("I", I), (f"{G}*H", G * H)], x.dtype,
                  note=", or (I, 3*H) when I = H (the highway then adds x itself)")
    v = _check(fn, "recurrent_weight", recurrent_weight, [("", 2), ("H", H)], x.dtype)
    b = _check(fn, "bias", bias, [("", 2), ("H", H)], x.dtype)
    return x, W_xg, v, b, _check_lengths(fn, lengths, N, T), H, G


def sru_forward(x, h0, c0, kernel, recurrent_weight, bias, lengths=None):
    """x [T, N, I], h0 and c0 [N, H], kernel [I, G*H] (G = 3 when I = H, else 4), recurrent_weight [2, H] (v_f, v_r),
    bias [2, H] (b_f, b_r) -> (y [T, N, H], h_n [N, H], c_n [N, H], cache).

    h_n is the output after each row's last valid step (h0 for a row of length 0); c is the recurrent state.
    cache = {"c": [T+1, N, H], "gates": [T, N, G*H]} with h~, f and r after their sigmoids, and skip.
    """
    fn = "sru_forward"
    x, W_xg, (v_f, v_r), (b_f, b_r), lengths, H = _sru_arguments(fn, x, kernel, recurrent_weight, bias, lengths)[:6]
    T, N, _ = x.shape
    h_n = _check(fn, "h0", h0, [("N", N), ("H", H)], x.dtype).copy()
    c0 = _check(fn, "c0", c0, [("N", N), ("H", H)], x.dtype)
    projected = x @ W_xg  # [T, N, G*H]
    h_tilde = projected[..., :H]
    skip = projected[..., 3 * H:] if W_xg.shape[1] == 4 * H else x
    c = np.zeros((T + 1, N, H), dtype=x.dtype)
    y = np.zeros((T, N, H), dtype=x.dtype)
    f = np.zeros((T, N, H), dtype=x.dtype)
    r = np.zeros((T, N, H), dtype=x.dtype)
    c[0] = c0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        f[t] = _sigmoid(projected[t, :, H:2 * H] + v_f * c[t] + b_f)
        r[t] = _sigmoid(projected[t, :, 2 * H:3 * H] + v_r * c[t] + b_r)
        c_new = f[t] * c[t] + (1 - f[t]) * h_tilde[t]
        h_new = r[t] * c_new + (1 - r[t]) * skip[t]
        c[t + 1] = np.where(valid, c_new, c[t])
        y[t] = np.where(valid, h_new, 0)
        h_n = np.where(valid, h_new, h_n)
    gates = [h_tilde, f, r] + ([projected[..., 3 * H:]] if W_xg.shape[1] == 4 * H else [])
    return y, h_n, c[T].copy(), {"c": c, "gates": np.concatenate(gates, axis=2)}


def sru_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_weight, bias, lengths=None):
    """Gradients of sru_forward given dy [T, N, H], dh_n and dc_n [N, H] (any may be None, meaning zero).

    Returns {"x", "h0", "c0", "kernel", "recurrent_weight", "bias"}, each with the shape of that argument.
    """
    fn = "sru_backward"
    x, W_xg, (v_f, v_r), _, lengths, H, G = _sru_arguments(fn, x, kernel, recurrent_weight, bias, lengths)
    T, N, _ = x.shape
    dtype = x.dtype
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh_last = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    dc = _check_or_zeros(fn, "dc_n", dc_n, [("N", N), ("H", H)], dtype)
    c = _check_cache(fn, cache, "c", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), (f"{G}*H", G * H)], dtype)
    h_tilde, f, r = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H]
    skip = gates[..., 3 * H:] if G == 4 else x
    steps = np.full(N, T) if lengths is None else lengths

    dz = np.zeros_like(gates)  # gradient on the projections (and, for G = 4, on skip)
    dskip = np.zeros((T, N, H), dtype=dtype)
    dv_f, dv_r = np.zeros(H, dtype=dtype), np.zeros(H, dtype=dtype)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        # backprop into h: from y[t], and from h_n at each row's last valid step
        dh = np.where(valid, dy[t], 0) + np.where((t == steps - 1)[:, None], dh_last, 0)
        # backprop h = r * c_new + (1 - r) * skip into r (through its sigmoid), skip and c_new
        dr = dh * (c[t + 1] - skip[t]) * r[t] * (1 - r[t])
        dskip[t] = dh * (1 - r[t])
        dc_new = np.where(valid, dc + dh * r[t], 0)
        # backprop c_new = f * c[t] + (1 - f) * h~ into f (through its sigmoid), h~ and c[t]; c[t] also feeds
        # f and r through v_f * c[t] and v_r * c[t]
        df = dc_new * (c[t] - h_tilde[t]) * f[t] * (1 - f[t])
        dz[t, :, :H] = dc_new * (1 - f[t])
        dz[t, :, H:2 * H] = df
        dz[t, :, 2 * H:3 * H] = dr
        dv_f += (df * c[t]).sum(axis=0)
        dv_r += (dr * c[t]).sum(axis=0)
        dc = np.where(valid, dc_new * f[t] + df * v_f + dr * v_r, dc)  # a carried state passes dc through
    if G == 4:
        dz[..., 3 * H:] = dskip
    dx = dz @ W_xg.T + (dskip if G == 3 else 0)
    dW_xg = x.reshape(T * N, -1).T @ dz.reshape(T * N, G * H)
    db = dz[..., H:3 * H].sum(axis=(0, 1)).reshape(2, H)
    dh0 = np.where((steps == 0)[:, None], dh_last, 0)  # h0 is h_n only in a row of length 0
    return {"x": dx, "h0": dh0, "c0": dc, "kernel": dW_xg, "recurrent_weight": np.stack([dv_f, dv_r]), "bias": db}


# ---------------------------------------------------------------------------------------------------------
# QRNN (Bradbury et al. 2017) with fo-pooling, a causal convolution of width K, gate blocks z, f, o:
# z = tanh(sum_j x[t-j] @ W[j]_z + b_z),  f, o = sigmoid(sum_j x[t-j] @ W[j] + b),
# c[t+1] = f * c[t] + (1 - f) * z,  h = o * c[t+1];  x[-j] comes from the history x0 (block j-1)

def _qrnn_arguments(fn, x, x0, kernel, bias, lengths):
    x = _check_x(fn, x)
    T, N, I = x.shape
    shape = np.shape(kernel)
    if len(shape) != 3 or shape[0] < 1 or shape[1] != I or shape[2] < 3 or shape[2] % 3:
        raise ValueError(f"{fn}: kernel has shape {shape}, expected (K, I={I}, 3*H) with the width K >= 1 and H >= 1")
    K, H = shape[0], shape[2] // 3
    W = _check(fn, "kernel", kernel, [("K", K), ("I", I), ("3*H", 3 * H)], x.dtype)
    b = _check(fn, "bias", bias, [("3*H", 3 * H)], x.dtype)
    x0 = _check(fn, "x0", x0, [("N", N), ("(K-1)*I", (K - 1) * I)], x.dtype)
    # the input with its history in front: step t of x is row t + K - 1, x[-j] is row K - 1 - j
    history = [x0[:, (j - 1) * I:j * I] for j in range(K - 1, 0, -1)]
    extended = np.concatenate([np.stack(history), x]) if K > 1 else x
    return x, extended, W, b, _check_lengths(fn, lengths, N, T), K, H


def qrnn_forward(x, h0, c0, x0, kernel, bias, lengths=None):
    """x [T, N, I], h0 and c0 [N, H], x0 [N, (K-1)*I] (block j-1 holds x[-j]), kernel [K, I, 3H], bias [3H]
    -> (y [T, N, H], h_n [N, H], c_n [N, H], x_n [N, (K-1)*I], cache).

    h_n is the output after each row's last valid step (h0 for a row of length 0); x_n the history after it.
    cache = {"c": [T+1, N, H], "gates": [T, N, 3H]} with z, f, o after their activations.
    """
    fn = "qrnn_forward"
    x, extended, W, b, lengths, K, H = _qrnn_arguments(fn, x, x0, kernel, bias, lengths)
    T, N, I = x.shape
    h_n = _check(fn, "h0", h0, [("N", N), ("H", H)], x.dtype).copy()
    c0 = _check(fn, "c0", c0, [("N", N), ("H", H)], x.dtype)
    # the convolution: tap j multiplies the input j steps back
    projected = sum(extended[K - 1 - j:K - 1 - j + T] @ W[j] for j in range(K)) + b
    z, f, o = np.tanh(projected[..., :H]), _sigmoid(projected[..., H:2 * H]), _sigmoid(projected[..., 2 * H:])
    c = np.zeros((T + 1, N, H), dtype=x.dtype)
    y = np.zeros((T, N, H), dtype=x.dtype)
    c[0] = c0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        c_new = f[t] * c[t] + (1 - f[t]) * z[t]
        h_new = o[t] * c_new
        c[t + 1] = np.where(valid, c_new, c[t])
        y[t] = np.where(valid, h_new, 0)
        h_n = np.where(valid, h_new, h_n)
    steps = np.full(N, T) if lengths is None else lengths
    rows = np.arange(N)
    x_n = np.concatenate([extended[K - 1 + steps - j, rows] for j in range(1, K)], axis=1) if K > 1 \
        else np.zeros((N, 0), dtype=x.dtype)
    return y, h_n, c[T].copy(), x_n, {"c": c, "gates": np.concatenate([z, f, o], axis=2)}


def qrnn_backward(dy, dh_n, dc_n, dx_n, cache, x, x0, kernel, bias, lengths=None):
    """Gradients of qrnn_forward given dy [T, N, H], dh_n and dc_n [N, H], dx_n [N, (K-1)*I] (any may be None,
    meaning zero). Returns {"x", "h0", "c0", "x0", "kernel", "bias"}, each with the shape of that argument.
    """
    fn = "qrnn_backward"
    x, extended, W, _, lengths, K, H = _qrnn_arguments(fn, x, x0, kernel, bias, lengths)
    T, N, I = x.shape
    dtype = x.dtype
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh_last = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    dc = _check_or_zeros(fn, "dc_n", dc_n, [("N", N), ("H", H)], dtype)
    dx_n = _check_or_zeros(fn, "dx_n", dx_n, [("N", N), ("(K-1)*I", (K - 1) * I)], dtype)
    c = _check_cache(fn, cache, "c", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), ("3*H", 3 * H)], dtype)
    z, f, o = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:]
    steps = np.full(N, T) if lengths is None else lengths

    dz = np.zeros_like(gates)  # gradient on the convolution's outputs
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        # backprop into h: from y[t], and from h_n at each row's last valid step
        dh = np.where(valid, dy[t], 0) + np.where((t == steps - 1)[:, None], dh_last, 0)
        # backprop h = o * c_new into o (through its sigmoid) and c_new
        dz[t, :, 2 * H:] = dh * c[t + 1] * o[t] * (1 - o[t])
        dc_new = np.where(valid, dc + dh * o[t], 0)
        # backprop c_new = f * c[t] + (1 - f) * z into z (through its tanh), f (through its sigmoid) and c[t]
        dz[t, :, :H] = dc_new * (1 - f[t]) * (1 - z[t] * z[t])
        dz[t, :, H:2 * H] = dc_new * (c[t] - z[t]) * f[t] * (1 - f[t])
        dc = np.where(valid, dc_new * f[t], dc)
    # backprop the convolution into the extended input and each tap's weights
    dextended = np.zeros_like(extended)
    dW = np.zeros_like(W)
    for j in range(K):
        dextended[K - 1 - j:K - 1 - j + T] += dz @ W[j].T
        dW[j] = extended[K - 1 - j:K - 1 - j + T].reshape(T * N, I).T @ dz.reshape(T * N, 3 * H)
    rows = np.arange(N)
    for j in range(1, K):  # x_n is a copy of extended rows
        dextended[K - 1 + steps - j, rows] += dx_n[:, (j - 1) * I:j * I]
    dx0 = np.concatenate([dextended[K - 1 - j] for j in range(1, K)], axis=1) if K > 1 else np.zeros((N, 0), dtype)
    dh0 = np.where((steps == 0)[:, None], dh_last, 0)
    return {"x": dextended[K - 1:], "h0": dh0, "c0": dc, "x0": dx0, "kernel": dW, "bias": dz.sum(axis=(0, 1))}
