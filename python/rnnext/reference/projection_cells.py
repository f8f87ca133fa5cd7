"""The twin of the LSTM with projection (cpp/rnnext/lstm_projection.h; Sak et al. 2014, torch.nn.LSTM's
proj_size), a Python loop over time steps, the whole batch at each step.

    z[t]    = x[t] @ kernel + h[t] @ recurrent_kernel + bias      h [N, P], recurrent_kernel [P, 4H]
    i,f,g,o = sigmoid, sigmoid, tanh, sigmoid of z[t]'s four blocks
    c[t+1]  = f * c[t] + i * g                                     c [N, H]
    m[t]    = o * tanh(c[t+1]);   h[t+1] = m[t] @ projection       projection [H, P] (torch's weight_hr transposed)

The masks of the regularisers are those of the plain LSTM (reference.cells) with h's of P units: under zoneout
c[t+1] = k_c * c[t] + (1 - k_c) * c~ with m[t] = o * tanh(c~), and h[t+1] = k_h * h[t] + (1 - k_h) * m[t] @
projection.
"""
from __future__ import annotations

import numpy as np

from ._common import _check, _check_cache, _check_lengths, _check_or_zeros, _check_x, _sigmoid, _valid_rows
from .cells import _Masks


def _check_projected_lstm(fn, x, kernel, recurrent_kernel, bias, projection):
    x = _check_x(fn, x)
    T, N, I = x.shape
    shape = np.shape(projection)
    if len(shape) != 2 or not 1 <= shape[1] < shape[0]:
        raise ValueError(f"{fn}: projection has shape {shape}, expected (H, P) with 1 <= P < H")
    H, P = shape
    dtype = x.dtype
    gates = ("4*H", 4 * H)
    W_xz = _check(fn, "kernel", kernel, [("I", I), gates], dtype)                    # input -> gates
    W_hz = _check(fn, "recurrent_kernel", recurrent_kernel, [("P", P), gates], dtype)  # projected state -> gates
    b_z = _check(fn, "bias", bias, [gates], dtype)
    W_mh = _check(fn, "projection", projection, [("H", H), ("P", P)], dtype)           # cell output -> state
    return x, (T, N, I, H, P), (W_xz, W_hz, b_z, W_mh)


def projected_lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, projection, lengths=None, masks=None):
    """x [T, N, I], h0 [N, P], c0 [N, H], kernel [I, 4H], recurrent_kernel [P, 4H], bias [4H], projection [H, P]
    -> (y [T, N, P], h_n [N, P], c_n [N, H], cache).

    cache = {"h": [T+1, N, P], "c": [T+1, N, H], "gates": [T, N, 4H] activated, "m": [T, N, H] o * tanh(c[t+1])}.
    """
    fn = "projected_lstm_forward"
    x, (T, N, I, H, P), (W_xz, W_hz, b_z, W_mh) = _check_projected_lstm(fn, x, kernel, recurrent_kernel, bias,
                                                                         projection)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("P", P)], dtype)
    c0 = _check(fn, "c0", c0, [("N", N), ("H", H)], dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    mk = _Masks(fn, masks, T, N, I, H, 4, dtype, ("zoneout_h", "zoneout_c"), P=P)
    x, W_hz = mk.inputs(x), mk.recurrent(W_hz)

    h = np.zeros((T + 1, N, P), dtype=dtype)
    c = np.zeros((T + 1, N, H), dtype=dtype)
    gates = np.zeros((T, N, 4 * H), dtype=dtype)
    m = np.zeros((T, N, H), dtype=dtype)
    y = np.zeros((T, N, P), dtype=dtype)
    h[0] = h0
    c[0] = c0
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        z_i, z_f, z_g, z_o = np.split(x[t] @ W_xz + mk.states(h[t]) @ W_hz + b_z, 4, axis=1)
        i, f, g, o = _sigmoid(z_i), _sigmoid(z_f), np.tanh(z_g), _sigmoid(z_o)
        c_cand = f * c[t] + i * g
        m[t] = o * np.tanh(c_cand)
        # zoneout: keep a share of the previous states
        c_new = mk.mix("zoneout_c", t, c[t], c_cand)
        h_new = mk.mix("zoneout_h", t, h[t], m[t] @ W_mh)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c[t + 1] = np.where(valid, c_new, c[t])
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    return y, h[T].copy(), c[T].copy(), {"h": h, "c": c, "gates": gates, "m": m}


def projected_lstm_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_kernel, bias, projection, lengths=None,
                            masks=None):
    """Gradients of projected_lstm_forward given dy [T, N, P], dh_n [N, P], dc_n [N, H] (each may be None: zero).

    Returns {"x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "projection"}.
    """
    fn = "projected_lstm_backward"
    x, (T, N, I, H, P), (W_xz, W_hz, b_z, W_mh) = _check_projected_lstm(fn, x, kernel, recurrent_kernel, bias,
                                                                         projection)
    dtype = x.dtype
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("P", P)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("P", P)], dtype)
    dc = _check_or_zeros(fn, "dc_n", dc_n, [("N", N), ("H", H)], dtype)
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("P", P)], dtype)
    c = _check_cache(fn, cache, "c", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", [("T", T), ("N", N), ("4*H", 4 * H)], dtype)
    m = _check_cache(fn, cache, "m", [("T", T), ("N", N), ("H", H)], dtype)
    mk = _Masks(fn, masks, T, N, I, H, 4, dtype, ("zoneout_h", "zoneout_c"), P=P)
    x_masked, W_hz = mk.inputs(x), mk.recurrent(W_hz)

    dx = np.zeros_like(x)
    dW_xz, dW_hz, db_z, dW_mh = (np.zeros_like(a) for a in (W_xz, W_hz, b_z, W_mh))
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        i, f, g, o = np.split(gates[t], 4, axis=1)
        # backprop into h_new and c_new from step t+1 (and y[t]); masked rows never ran this step
        dh_new = np.where(valid, dh + dy[t], 0)
        dc_next = np.where(valid, dc, 0)
        # backprop through zoneout's mixes into the candidates and straight into h[t], c[t]
        dh_kept, dh_new = mk.split("zoneout_h", t, dh_new)
        dc_kept, dc_next = mk.split("zoneout_c", t, dc_next)
        # backprop through h_cand = m @ W_mh, then m = o * tanh(c_cand) (c_cand recomputed)
        dW_mh += m[t].T @ dh_new
        dm = dh_new @ W_mh.T
        tc = np.tanh(f * c[t] + i * g)
        dz_o = dm * tc * o * (1 - o)
        dc_new = dc_next + dm * o * (1 - tc * tc)
        # backprop through c_new = f * c[t] + i * g; masked rows get none (their gates may be NaN from padding)
        dz = np.concatenate([dc_new * g * i * (1 - i), dc_new * c[t] * f * (1 - f), dc_new * i * (1 - g * g), dz_o],
                            axis=1)
        dz = np.where(valid, dz, 0)
        # backprop through z = x[t] @ W_xz + h[t] @ W_hz + b_z, under the masks
        dx[t] = mk.inputs(dz @ W_xz.T)
        dW_xz += x_masked[t].T @ dz
        dW_hz += mk.states(h[t]).T @ dz
        db_z += dz.sum(axis=0)
        dh = np.where(valid, mk.states(dz @ W_hz.T) + dh_kept, dh)  # a carried state passes its gradients through
        dc = np.where(valid, dc_new * f + dc_kept, dc)
    return {"x": dx, "h0": dh, "c0": dc, "kernel": dW_xz, "recurrent_kernel": mk.unmask_recurrent(dW_hz),
            "bias": db_z, "projection": dW_mh}
