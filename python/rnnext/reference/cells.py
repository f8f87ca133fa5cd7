"""The twins of the recurrent cells (cpp/rnnext/rnn.h, lstm.h, gru.h): a Python loop over time steps, the
whole batch at each step."""
from __future__ import annotations

import numpy as np

from ._common import _check, _check_activation, _check_cache, _check_lengths, _check_or_zeros, _check_x, _hidden_size, _sigmoid, _valid_rows


# ---------------------------------------------------------------------------------------------------------
# The regularisers' masks (the engine's `masks` argument, time_loop.h): x * input mask at every step, h[t] * state
# mask where it enters the recurrent product, recurrent_kernel * weight mask, and zoneout's share of the previous
# state kept: a rate (evaluation, the expectation) or keep masks [T, N, H] (training).

class _Masks:
    """P: h's width when it is not H (the LSTM with projection): state [N, P], weight [P, G*H], zoneout_h
    [T, N, P]; zoneout_c stays [T, N, H]."""

    def __init__(self, fn, masks, T, N, I, H, G, dtype, zoneout_keys=(), P=None):
        masks = dict(masks or {})
        known = ("input", "state", "weight") + tuple(zoneout_keys)
        for key in masks:
            if key not in known:
                raise ValueError(f"{fn}: masks has the key {key!r}, expected some of {known}")

        def get(key, dims):
            return None if masks.get(key) is None else _check(fn, f"masks[{key!r}]", masks[key], dims, dtype)

        state = ("H", H) if P is None else ("P", P)
        self.input = get("input", [("N", N), ("I", I)])
        self.state = get("state", [("N", N), state])
        self.weight = get("weight", [state, (f"{G}H", G * H)])
        self.zoneout = {}
        for key in zoneout_keys:
            value = masks.get(key)
            if value is not None and np.ndim(value) == 0:
                if not 0 <= float(value) < 1:
                    raise ValueError(f"{fn}: masks[{key!r}] is {value}, expected a rate in [0, 1)")
                value = dtype.type(value)
            elif value is not None:
                units = state if key == "zoneout_h" else ("H", H)
                value = _check(fn, f"masks[{key!r}]", value, [("T", T), ("N", N), units], dtype)
                if not ((value >= 0) & (value <= 1)).all():
                    raise ValueError(f"{fn}: masks[{key!r}] holds values outside [0, 1], expected keep masks")
            self.zoneout[key] = value

    def inputs(self, x):
        return x if self.input is None else x * self.input

    def recurrent(self, kernel):
        return kernel if self.weight is None else kernel * self.weight

    def states(self, h):
        return h if self.state is None else h * self.state

    def unmask_recurrent(self, d_kernel):
        return d_kernel if self.weight is None else d_kernel * self.weight

    def mix(self, key, t, previous, candidate):
        """Zoneout's new value at step t: the share kept of `previous` plus the rest of `candidate`."""
        keep = self._keep(key, t)
        return candidate if keep is None else keep * previous + (1 - keep) * candidate

    def split(self, key, t, grad):
        """Backprop through mix: (the gradient on `previous` through the kept share, the one on `candidate`)."""
        keep = self._keep(key, t)
        return (0, grad) if keep is None else (keep * grad, (1 - keep) * grad)

    def zoneout_on(self, key):
        """Whether zoneout `key` changes anything (keep masks, or a rate above 0), as the engine's active()."""
        value = self.zoneout.get(key)
        return value is not None and not (np.ndim(value) == 0 and value == 0)

    def _keep(self, key, t):
        value = self.zoneout.get(key)
        return value if value is None or np.ndim(value) == 0 else value[t]


# ---------------------------------------------------------------------------------------------------------
# Simple RNN (Elman):  h[t+1] = act(x[t] @ W_xh + h[t] @ W_hh + b_h)

def rnn_forward(x, h0, kernel, recurrent_kernel, bias, lengths=None, activation="tanh", masks=None):
    """x [T, N, I], h0 [N, H], kernel [I, H], recurrent_kernel [H, H], bias [H] -> (y [T, N, H], h_n [N, H], cache).

    cache = {"h": [T+1, N, H]} with h[0] = h0, and under zoneout "candidate" [T, N, H] = act(a), the candidate
    that zoneout mixes with h[t] (h[t+1] no longer holds it, and act' is written on it).
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
    m = _Masks(fn, masks, T, N, I, H, 1, dtype, ("zoneout_h",))
    x, W_hh = m.inputs(x), m.recurrent(W_hh)

    h = np.zeros((T + 1, N, H), dtype=dtype)  # h[t] is the state before step t
    y = np.zeros((T, N, H), dtype=dtype)
    candidate = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        a = x[t] @ W_xh + m.states(h[t]) @ W_hh + b_h
        candidate[t] = act(a)
        h_new = m.mix("zoneout_h", t, h[t], candidate[t])  # zoneout: keep a share of the previous state
        h[t + 1] = np.where(valid, h_new, h[t])  # rows past their length carry their state
        y[t] = np.where(valid, h_new, 0)
    cache = {"h": h}
    if m.zoneout_on("zoneout_h"):
        cache["candidate"] = candidate
    return y, h[T].copy(), cache


def rnn_backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, lengths=None, activation="tanh", masks=None):
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
    m = _Masks(fn, masks, T, N, I, H, 1, dtype, ("zoneout_h",))
    x_masked, W_hh = m.inputs(x), m.recurrent(W_hh)
    # the activation's outputs: h[t+1] at valid rows, the cached candidates under zoneout
    outputs = h[1:] if not m.zoneout_on("zoneout_h") else \
        _check_cache(fn, cache, "candidate", [("T", T), ("N", N), ("H", H)], dtype)

    dx = np.zeros_like(x)
    dW_xh = np.zeros_like(W_xh)
    dW_hh = np.zeros_like(W_hh)
    db_h = np.zeros((H,), dtype=dtype)
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        # backprop into h_new, from step t+1 and from y[t]; rows past their length never ran this step
        # (their y[t] is a constant 0), so nothing enters the cell there
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop through zoneout's mix, straight into h[t] and into the candidate
        dh_kept, dh_new = m.split("zoneout_h", t, dh_new)
        # backprop through the candidate act(a); at valid rows it is h[t+1] without zoneout
        da = act_grad(dh_new, outputs[t])
        # backprop through a = x[t] @ W_xh + h[t] @ W_hh + b_h
        dx[t] = m.inputs(da @ W_xh.T)
        dW_xh += x_masked[t].T @ da
        dW_hh += m.states(h[t]).T @ da
        db_h += da.sum(axis=0)
        dh_prev = m.states(da @ W_hh.T) + dh_kept
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradient straight through
    return {"x": dx, "h0": dh, "kernel": dW_xh, "recurrent_kernel": m.unmask_recurrent(dW_hh), "bias": db_h}


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


def lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, peephole=None, lengths=None, coupled=False, masks=None):
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
    m = _Masks(fn, masks, T, N, I, H, G, dtype, ("zoneout_h", "zoneout_c"))
    x, W_hz = m.inputs(x), m.recurrent(W_hz)

    h = np.zeros((T + 1, N, H), dtype=dtype)
    c = np.zeros((T + 1, N, H), dtype=dtype)
    gates = np.zeros((T, N, G * H), dtype=dtype)
    y = np.zeros((T, N, H), dtype=dtype)
    h[0] = h0
    c[0] = c0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        z = x[t] @ W_xz + m.states(h[t]) @ W_hz + b_z  # gate pre-activations, blocks in gate order
        if coupled:
            z_f, z_g, z_o = np.split(z, 3, axis=1)
            f = _sigmoid(z_f + _peek(p_f, c[t]))
            i = 1 - f
        else:
            z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
            i = _sigmoid(z_i + _peek(p_i, c[t]))
            f = _sigmoid(z_f + _peek(p_f, c[t]))
        g = np.tanh(z_g)
        c_cand = f * c[t] + i * g
        c_new = m.mix("zoneout_c", t, c[t], c_cand)  # zoneout: keep a share of the previous cell
        o = _sigmoid(z_o + _peek(p_o, c_new))  # the output gate peeks at the new cell, the one that is kept
        h_new = o * np.tanh(c_cand)
        h_new = m.mix("zoneout_h", t, h[t], h_new)  # zoneout: keep a share of the previous state
        gates[t] = np.concatenate([f, g, o] if coupled else [i, f, g, o], axis=1)
        c[t + 1] = np.where(valid, c_new, c[t])
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), c[T].copy(), {"h": h, "c": c, "gates": gates}


def lstm_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_kernel, bias, peephole=None, lengths=None,
                  coupled=False, masks=None):
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
    m = _Masks(fn, masks, T, N, I, H, G, dtype, ("zoneout_h", "zoneout_c"))
    x_masked, W_hz = m.inputs(x), m.recurrent(W_hz)

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
        # backprop through zoneout's h mix into the candidate and straight into h[t] (c_cand recomputed)
        dh_kept, dh_new = m.split("zoneout_h", t, dh_new)
        c_cand = f * c[t] + i * g
        # backprop through h_cand = o * tanh(c_cand)
        tc = np.tanh(c_cand)
        dz_o = dh_new * tc * o * (1 - o)
        # backprop into the kept cell c[t+1]: from step t+1 and through the output-gate peephole; then
        # through zoneout's c mix into the candidate and straight into c[t]
        dc_next = dc_next + _peek(p_o, dz_o)
        dc_kept, dc_next = m.split("zoneout_c", t, dc_next)
        # backprop into c_cand: that share, and through tanh(c_cand)
        dc_new = dc_next + dh_new * o * (1 - tc * tc)
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
        dc_prev = dc_new * f + _peek(p_i, dz_i) + _peek(p_f, dz_f) + dc_kept
        # backprop through z = x[t] @ W_xz + h[t] @ W_hz + b_z (+ peephole terms), under the masks
        dx[t] = m.inputs(dz @ W_xz.T)
        dW_xz += x_masked[t].T @ dz
        dW_hz += m.states(h[t]).T @ dz
        db_z += dz.sum(axis=0)
        if peephole is not None:
            dp_i += (dz_i * c[t]).sum(axis=0)
            dp_f += (dz_f * c[t]).sum(axis=0)
            dp_o += (dz_o * m.mix("zoneout_c", t, c[t], c_cand)).sum(axis=0)  # c[t+1] at valid rows
        dh_prev = m.states(dz @ W_hz.T) + dh_kept
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradients straight through
        dc = np.where(valid, dc_prev, dc)
    if peephole is None:
        dpeephole = None
    elif coupled:
        dpeephole = np.stack([dp_f, dp_o])
    else:
        dpeephole = np.stack([dp_i, dp_f, dp_o])
    return {"x": dx, "h0": dh, "c0": dc, "kernel": dW_xz, "recurrent_kernel": m.unmask_recurrent(dW_hz), "bias": db_z,
            "peephole": dpeephole}


# ---------------------------------------------------------------------------------------------------------
# GRU, gate order r, z, n;  h_new = (1 - z) * n + z * h[t]  (as PyTorch, Keras and Cho et al. 2014)

def _gru_bias_dims(reset_after, H):
    # reset_after=True keeps separate input and recurrent biases, because r multiplies the recurrent one
    return [("2", 2), ("3H", 3 * H)] if reset_after else [("3H", 3 * H)]


def gru_forward(x, h0, kernel, recurrent_kernel, bias, lengths=None, reset_after=True, masks=None):
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
    m = _Masks(fn, masks, T, N, I, H, 3, dtype, ("zoneout_h",))
    x, W_hg = m.inputs(x), m.recurrent(W_hg)
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
            hu = m.states(h[t]) @ W_hg + bias[1]
            xw_r, xw_z, xw_n = np.split(xw, 3, axis=1)
            hu_r, hu_z, hu_n = np.split(hu, 3, axis=1)
            r = _sigmoid(xw_r + hu_r)
            z = _sigmoid(xw_z + hu_z)
            n = np.tanh(xw_n + r * hu_n)  # reset applied after the recurrent projection
            extra[t] = hu_n
        else:
            xw = x[t] @ W_xg + bias
            xw_r, xw_z, xw_n = np.split(xw, 3, axis=1)
            r = _sigmoid(xw_r + m.states(h[t]) @ U_r)
            z = _sigmoid(xw_z + m.states(h[t]) @ U_z)
            rh = r * h[t]
            n = np.tanh(xw_n + m.states(rh) @ U_n)  # reset applied to the state before the projection
            extra[t] = rh
        h_new = (1 - z) * n + z * h[t]  # the unmasked state: the mask is on the recurrent product only
        h_new = m.mix("zoneout_h", t, h[t], h_new)
        gates[t] = np.concatenate([r, z, n], axis=1)
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    cache = {"h": h, "gates": gates, ("hn" if reset_after else "rh"): extra}
    return y, h[T].copy(), cache


def gru_backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, lengths=None, reset_after=True, masks=None):
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
    m = _Masks(fn, masks, T, N, I, H, 3, dtype, ("zoneout_h",))
    x_masked, W_hg = m.inputs(x), m.recurrent(W_hg)
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
        # backprop through zoneout's mix, straight into h[t] and into the candidate
        dh_kept, dh_new = m.split("zoneout_h", t, dh_new)
        # backprop through h_cand = (1 - z) * n + z * h[t]
        dn = dh_new * (1 - z)
        dz = dh_new * (h[t] - n)
        dh_prev = dh_new * z + dh_kept
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
            drh = m.states(da_n @ U_n.T)
            dr = drh * h[t]
            dh_prev = dh_prev + drh * r
        da_z = dz * z * (1 - z)
        da_r = dr * r * (1 - r)
        dxw = np.concatenate([da_r, da_z, da_n], axis=1)
        # backprop through xw = x[t] @ W_xg + input bias
        dx[t] = m.inputs(dxw @ W_xg.T)
        dW_xg += x_masked[t].T @ dxw
        if reset_after:
            # backprop through hu = h[t] @ W_hg + recurrent bias
            dhu = np.concatenate([da_r, da_z, dhu_n], axis=1)
            dW_hg += m.states(h[t]).T @ dhu
            dbias[0] += dxw.sum(axis=0)
            dbias[1] += dhu.sum(axis=0)
            dh_prev = dh_prev + m.states(dhu @ W_hg.T)
        else:
            # backprop through h[t] @ U_r, h[t] @ U_z and rh @ U_n
            h_masked = m.states(h[t])
            dW_hg += np.concatenate([h_masked.T @ da_r, h_masked.T @ da_z, m.states(rh).T @ da_n], axis=1)
            dbias += dxw.sum(axis=0)
            dh_prev = dh_prev + m.states(da_r @ U_r.T + da_z @ U_z.T)
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradient straight through
    return {"x": dx, "h0": dh, "kernel": dW_xg, "recurrent_kernel": m.unmask_recurrent(dW_hg), "bias": dbias}
