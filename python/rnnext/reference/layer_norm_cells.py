"""The twins of the layer-normalised cells (cpp/rnnext/layer_norm_lstm.h, layer_norm_gru.h): Ba, Kiros & Hinton
(2016) as haste's LayerNormLSTM and LayerNormGRU place the normalisations, a Python loop over time steps, the whole
batch at each step. The LSTM:

    z[t]    = LN(x[t] @ kernel; ln_input_gamma) + LN(h[t] @ recurrent_kernel; ln_recurrent_gamma) + bias
    i,f,g,o = sigmoid, sigmoid, tanh, sigmoid of z[t]'s four blocks
    c[t+1]  = f * c[t] + i * g
    h[t+1]  = o * tanh(LN(c[t+1]; ln_cell_gamma, ln_cell_beta))

LN(a; gamma, beta) = gamma * (a - mean(a)) / sqrt(var(a) + 1e-5) + beta, statistics per row over all of a's
columns (all 4H pre-activations, the H cells). The two gate normalisations have no shift of their own: the
paper's two betas would add to `bias` and only duplicate it. The regularisers' masks act as in the plain LSTM
(rnnext.reference.cells): dropout on x and on h[t] and weight-drop on recurrent_kernel before the products (so
before their normalisations), zoneout on the candidates c~ = f * c[t] + i * g and h~ = o * tanh(LN(c~)).
"""
from __future__ import annotations

import numpy as np

from ._common import _check, _check_cache, _check_lengths, _check_or_zeros, _check_x, _hidden_size, _sigmoid, _valid_rows
from .cells import _Masks

LAYER_NORM_EPSILON = 1e-5  # as haste, PyTorch's nn.LayerNorm and the paper's code


def _normalise(a):
    """(a - mean) * rstd row by row over the last axis -> (normalised a, rstd [rows])."""
    mean = a.mean(axis=-1, keepdims=True)
    centred = a - mean
    rstd = 1 / np.sqrt((centred * centred).mean(axis=-1) + a.dtype.type(LAYER_NORM_EPSILON))
    return centred * rstd[..., None], rstd


def _normalise_backward(d_normalised, normalised, rstd):
    """The gradient on a, given the one on normalised = (a - mean) * rstd."""
    mean_d = d_normalised.mean(axis=-1, keepdims=True)
    mean_dx = (d_normalised * normalised).mean(axis=-1, keepdims=True)
    return rstd[..., None] * (d_normalised - mean_d - normalised * mean_dx)


def _input_side_backward(d_normalised, input_norm, input_rstd, lengths):
    """_normalise_backward of the input projections [T, N, G*H], zero at masked steps (whose normalised values are
    NaN where the padding is, and 0 * NaN would be NaN)."""
    T, N = input_rstd.shape
    valid = np.stack([_valid_rows(lengths, t, N) for t in range(T)])  # [T, N, 1]
    return np.where(valid, _normalise_backward(d_normalised, input_norm, input_rstd), 0)


def _check_layer_norm_lstm(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma,
                           ln_cell_gamma, ln_cell_beta):
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    gates = [("4*H", 4 * H)]
    weights = {
        "kernel": _check(fn, "kernel", kernel, [("I", I)] + gates, dtype),                        # input -> gates
        "recurrent_kernel": _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H)] + gates, dtype),  # h -> gates
        "bias": _check(fn, "bias", bias, gates, dtype),
        "ln_input_gamma": _check(fn, "ln_input_gamma", ln_input_gamma, gates, dtype),
        "ln_recurrent_gamma": _check(fn, "ln_recurrent_gamma", ln_recurrent_gamma, gates, dtype),
        "ln_cell_gamma": _check(fn, "ln_cell_gamma", ln_cell_gamma, [("H", H)], dtype),
        "ln_cell_beta": _check(fn, "ln_cell_beta", ln_cell_beta, [("H", H)], dtype),
    }
    return x, (T, N, I, H), weights


def layer_norm_lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma,
                            ln_cell_gamma, ln_cell_beta, lengths=None, masks=None):
    """x [T, N, I], h0 and c0 [N, H], kernel [I, 4H], recurrent_kernel [H, 4H], bias, ln_input_gamma and
    ln_recurrent_gamma [4H], ln_cell_gamma and ln_cell_beta [H] -> (y [T, N, H], h_n, c_n [N, H], cache).
    masks: as lstm_forward's (input, state, weight, zoneout_h, zoneout_c).

    cache = {"h", "c": [T+1, N, H]; "gates": [T, N, 4H] activated; "input_norm", "recurrent_norm": [T, N, 4H] and
    "input_rstd", "recurrent_rstd": [T, N], the normalised projections and their 1/std; "cell_norm" [T, N, H] and
    "cell_rstd" [T, N], the same for the candidate c~ (c[t+1] without zoneout)}.
    """
    fn = "layer_norm_lstm_forward"
    x, (T, N, I, H), w = _check_layer_norm_lstm(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma,
                                                ln_recurrent_gamma, ln_cell_gamma, ln_cell_beta)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    c0 = _check(fn, "c0", c0, [("N", N), ("H", H)], dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    m = _Masks(fn, masks, T, N, I, H, 4, dtype, ("zoneout_h", "zoneout_c"))
    U = m.recurrent(w["recurrent_kernel"])

    h = np.zeros((T + 1, N, H), dtype=dtype)
    c = np.zeros((T + 1, N, H), dtype=dtype)
    y = np.zeros((T, N, H), dtype=dtype)
    gates = np.zeros((T, N, 4 * H), dtype=dtype)
    recurrent_norm = np.zeros((T, N, 4 * H), dtype=dtype)
    recurrent_rstd = np.zeros((T, N), dtype=dtype)
    cell_norm = np.zeros((T, N, H), dtype=dtype)
    cell_rstd = np.zeros((T, N), dtype=dtype)
    h[0] = h0
    c[0] = c0
    input_norm, input_rstd = _normalise(m.inputs(x) @ w["kernel"])  # all steps at once, as the engine's one GEMM
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        recurrent_norm[t], recurrent_rstd[t] = _normalise(m.states(h[t]) @ U)
        z = w["ln_input_gamma"] * input_norm[t] + w["ln_recurrent_gamma"] * recurrent_norm[t] + w["bias"]
        z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
        i, f, g, o = _sigmoid(z_i), _sigmoid(z_f), np.tanh(z_g), _sigmoid(z_o)
        c_new = f * c[t] + i * g
        cell_norm[t], cell_rstd[t] = _normalise(c_new)
        h_new = o * np.tanh(w["ln_cell_gamma"] * cell_norm[t] + w["ln_cell_beta"])
        c_new = m.mix("zoneout_c", t, c[t], c_new)  # zoneout: keep a share of the previous states
        h_new = m.mix("zoneout_h", t, h[t], h_new)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c[t + 1] = np.where(valid, c_new, c[t])
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    cache = {"h": h, "c": c, "gates": gates, "input_norm": input_norm, "input_rstd": input_rstd,
             "recurrent_norm": recurrent_norm, "recurrent_rstd": recurrent_rstd, "cell_norm": cell_norm,
             "cell_rstd": cell_rstd}
    return y, h[T].copy(), c[T].copy(), cache


def layer_norm_lstm_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_kernel, bias, ln_input_gamma,
                             ln_recurrent_gamma, ln_cell_gamma, ln_cell_beta, lengths=None, masks=None):
    """Gradients of layer_norm_lstm_forward given dy [T, N, H], dh_n and dc_n [N, H] (each may be None: zero),
    under the forward's masks.

    Returns {"x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma",
    "ln_cell_gamma", "ln_cell_beta"}.
    """
    fn = "layer_norm_lstm_backward"
    x, (T, N, I, H), w = _check_layer_norm_lstm(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma,
                                                ln_recurrent_gamma, ln_cell_gamma, ln_cell_beta)
    dtype = x.dtype
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    dc = _check_or_zeros(fn, "dc_n", dc_n, [("N", N), ("H", H)], dtype)
    steps, cells, gate_rows = [("T+1", T + 1), ("N", N), ("H", H)], [("T", T), ("N", N), ("H", H)], [("T", T), ("N", N)]
    h = _check_cache(fn, cache, "h", steps, dtype)
    c = _check_cache(fn, cache, "c", steps, dtype)
    gates = _check_cache(fn, cache, "gates", gate_rows + [("4*H", 4 * H)], dtype)
    input_norm = _check_cache(fn, cache, "input_norm", gate_rows + [("4*H", 4 * H)], dtype)
    input_rstd = _check_cache(fn, cache, "input_rstd", gate_rows, dtype)
    recurrent_norm = _check_cache(fn, cache, "recurrent_norm", gate_rows + [("4*H", 4 * H)], dtype)
    recurrent_rstd = _check_cache(fn, cache, "recurrent_rstd", gate_rows, dtype)
    cell_norm = _check_cache(fn, cache, "cell_norm", cells, dtype)
    cell_rstd = _check_cache(fn, cache, "cell_rstd", gate_rows, dtype)
    m = _Masks(fn, masks, T, N, I, H, 4, dtype, ("zoneout_h", "zoneout_c"))
    U = m.recurrent(w["recurrent_kernel"])

    dz = np.zeros((T, N, 4 * H), dtype=dtype)  # gradient on the gate pre-activations z
    grads = {name: np.zeros_like(value) for name, value in w.items()}
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        i, f, g, o = np.split(gates[t], 4, axis=1)
        # backprop into h_new and c_new from step t+1 (and y[t]); masked rows never ran this step
        dh_new = np.where(valid, dh + dy[t], 0)
        dc_next = np.where(valid, dc, 0)
        # backprop through zoneout's mixes, straight into h[t] and c[t] and into the candidates
        dh_kept, dh_new = m.split("zoneout_h", t, dh_new)
        dc_kept, dc_next = m.split("zoneout_c", t, dc_next)
        # backprop through h_new = o * tanh(cell_out), cell_out = ln_cell_gamma * cell_norm + ln_cell_beta
        tc = np.tanh(w["ln_cell_gamma"] * cell_norm[t] + w["ln_cell_beta"])
        dz_o = dh_new * tc * o * (1 - o)
        d_cell_out = dh_new * o * (1 - tc * tc)
        grads["ln_cell_gamma"] += (d_cell_out * cell_norm[t]).sum(axis=0)
        grads["ln_cell_beta"] += d_cell_out.sum(axis=0)
        # backprop through the cell's normalisation into c_new
        dc_new = dc_next + _normalise_backward(d_cell_out * w["ln_cell_gamma"], cell_norm[t], cell_rstd[t])
        # backprop through c_new = f * c[t] + i * g
        dz_i = dc_new * g * i * (1 - i)
        dz_f = dc_new * c[t] * f * (1 - f)
        dz_g = dc_new * i * (1 - g * g)
        dz[t] = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
        dc_prev = dc_new * f + dc_kept
        # backprop through the recurrent normalisation into h[t] @ U (masked), then into h[t]
        grads["ln_recurrent_gamma"] += (dz[t] * recurrent_norm[t]).sum(axis=0)
        d_recurrent = _normalise_backward(dz[t] * w["ln_recurrent_gamma"], recurrent_norm[t], recurrent_rstd[t])
        grads["recurrent_kernel"] += m.states(h[t]).T @ d_recurrent
        dh_prev = dh_kept + m.states(d_recurrent @ U.T)
        dh = np.where(valid, dh_prev, dh)  # a carried state passes its gradients straight through
        dc = np.where(valid, dc_prev, dc)
    grads["recurrent_kernel"] = m.unmask_recurrent(grads["recurrent_kernel"])
    # backprop through the input normalisation and the input projection, all steps at once
    grads["bias"] = dz.sum(axis=(0, 1))
    grads["ln_input_gamma"] = (dz * input_norm).sum(axis=(0, 1))
    d_projection = _input_side_backward(dz * w["ln_input_gamma"], input_norm, input_rstd, lengths)
    grads["kernel"] = np.einsum("tni,tng->ig", m.inputs(x), d_projection)
    return {"x": m.inputs(d_projection @ w["kernel"].T), "h0": dh, "c0": dc, **grads}


# ---------------------------------------------------------------------------------------------------------
# Layer-normalised GRU (reset_after, as haste's LayerNormGRU), gate order r, z, n:
#   a[t] = LN(x[t] @ kernel; ln_input_gamma) + bias[0],   b[t] = LN(h[t] @ recurrent_kernel; ln_recurrent_gamma) + bias[1]
#   r = sigmoid(a_r + b_r),  z = sigmoid(a_z + b_z),  n = tanh(a_n + r * b_n),  h[t+1] = (1 - z) * n + z * h[t]
# The reset gate multiplies the normalised recurrent pre-activation of n (with its bias), as reset_after=True
# multiplies h @ U_n + b_hn.

def _check_layer_norm_gru(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma):
    x = _check_x(fn, x)
    T, N, I = x.shape
    H = _hidden_size(fn, recurrent_kernel)
    dtype = x.dtype
    gates = [("3*H", 3 * H)]
    weights = {
        "kernel": _check(fn, "kernel", kernel, [("I", I)] + gates, dtype),                        # input -> gates
        "recurrent_kernel": _check(fn, "recurrent_kernel", recurrent_kernel, [("H", H)] + gates, dtype),  # h -> gates
        "bias": _check(fn, "bias", bias, [("", 2)] + gates, dtype),  # rows: input bias, recurrent bias
        "ln_input_gamma": _check(fn, "ln_input_gamma", ln_input_gamma, gates, dtype),
        "ln_recurrent_gamma": _check(fn, "ln_recurrent_gamma", ln_recurrent_gamma, gates, dtype),
    }
    return x, (T, N, I, H), weights


def layer_norm_gru_forward(x, h0, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma, lengths=None,
                           masks=None):
    """x [T, N, I], h0 [N, H], kernel [I, 3H], recurrent_kernel [H, 3H], bias [2, 3H], ln_input_gamma and
    ln_recurrent_gamma [3H] -> (y [T, N, H], h_n [N, H], cache). masks: as gru_forward's, each applied before the
    normalisation of the product it enters (x before x @ kernel, h[t] and recurrent_kernel before h @ U).

    cache = {"h": [T+1, N, H]; "gates": [T, N, 3H] activated r, z, n; "input_norm", "recurrent_norm": [T, N, 3H]
    and "input_rstd", "recurrent_rstd": [T, N]}.
    """
    fn = "layer_norm_gru_forward"
    x, (T, N, I, H), w = _check_layer_norm_gru(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma,
                                               ln_recurrent_gamma)
    dtype = x.dtype
    h0 = _check(fn, "h0", h0, [("N", N), ("H", H)], dtype)
    lengths = _check_lengths(fn, lengths, N, T)
    m = _Masks(fn, masks, T, N, I, H, 3, dtype, ("zoneout_h",))
    U = m.recurrent(w["recurrent_kernel"])

    h = np.zeros((T + 1, N, H), dtype=dtype)
    y = np.zeros((T, N, H), dtype=dtype)
    gates = np.zeros((T, N, 3 * H), dtype=dtype)
    recurrent_norm = np.zeros((T, N, 3 * H), dtype=dtype)
    recurrent_rstd = np.zeros((T, N), dtype=dtype)
    h[0] = h0
    input_norm, input_rstd = _normalise(m.inputs(x) @ w["kernel"])
    a = w["ln_input_gamma"] * input_norm + w["bias"][0]
    for t in range(T):
        valid = _valid_rows(lengths, t, N)
        recurrent_norm[t], recurrent_rstd[t] = _normalise(m.states(h[t]) @ U)
        b = w["ln_recurrent_gamma"] * recurrent_norm[t] + w["bias"][1]
        a_r, a_z, a_n = np.split(a[t], 3, axis=1)
        b_r, b_z, b_n = np.split(b, 3, axis=1)
        r, z = _sigmoid(a_r + b_r), _sigmoid(a_z + b_z)
        n = np.tanh(a_n + r * b_n)
        h_new = (1 - z) * n + z * h[t]
        h_new = m.mix("zoneout_h", t, h[t], h_new)  # zoneout: keep a share of the previous state
        gates[t] = np.concatenate([r, z, n], axis=1)
        h[t + 1] = np.where(valid, h_new, h[t])
        y[t] = np.where(valid, h_new, 0)
    cache = {"h": h, "gates": gates, "input_norm": input_norm, "input_rstd": input_rstd,
             "recurrent_norm": recurrent_norm, "recurrent_rstd": recurrent_rstd}
    return y, h[T].copy(), cache


def layer_norm_gru_backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, ln_input_gamma, ln_recurrent_gamma,
                            lengths=None, masks=None):
    """Gradients of layer_norm_gru_forward given dy [T, N, H] and dh_n [N, H] (each may be None: zero), under the
    forward's masks.

    Returns {"x", "h0", "kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma"}.
    """
    fn = "layer_norm_gru_backward"
    x, (T, N, I, H), w = _check_layer_norm_gru(fn, x, kernel, recurrent_kernel, bias, ln_input_gamma,
                                               ln_recurrent_gamma)
    dtype = x.dtype
    lengths = _check_lengths(fn, lengths, N, T)
    dy = _check_or_zeros(fn, "dy", dy, [("T", T), ("N", N), ("H", H)], dtype)
    dh = _check_or_zeros(fn, "dh_n", dh_n, [("N", N), ("H", H)], dtype)
    rows, gate_dims = [("T", T), ("N", N)], [("3*H", 3 * H)]
    h = _check_cache(fn, cache, "h", [("T+1", T + 1), ("N", N), ("H", H)], dtype)
    gates = _check_cache(fn, cache, "gates", rows + gate_dims, dtype)
    input_norm = _check_cache(fn, cache, "input_norm", rows + gate_dims, dtype)
    input_rstd = _check_cache(fn, cache, "input_rstd", rows, dtype)
    recurrent_norm = _check_cache(fn, cache, "recurrent_norm", rows + gate_dims, dtype)
    recurrent_rstd = _check_cache(fn, cache, "recurrent_rstd", rows, dtype)
    m = _Masks(fn, masks, T, N, I, H, 3, dtype, ("zoneout_h",))
    U = m.recurrent(w["recurrent_kernel"])

    da = np.zeros((T, N, 3 * H), dtype=dtype)  # gradient on the input pre-activations a
    db = np.zeros((T, N, 3 * H), dtype=dtype)  # gradient on the recurrent pre-activations b
    grads = {name: np.zeros_like(value) for name, value in w.items()}
    for t in reversed(range(T)):
        valid = _valid_rows(lengths, t, N)
        r, z, n = np.split(gates[t], 3, axis=1)
        b_n = (w["ln_recurrent_gamma"] * recurrent_norm[t] + w["bias"][1])[:, 2 * H:]
        # backprop into h_new from step t+1 (and y[t]); masked rows never ran this step
        dh_new = np.where(valid, dh + dy[t], 0)
        # backprop through zoneout's mix, straight into h[t] and into the candidate
        dh_kept, dh_new = m.split("zoneout_h", t, dh_new)
        # backprop through h_cand = (1 - z) * n + z * h[t]
        dn_pre = dh_new * (1 - z) * (1 - n * n)
        dz_pre = dh_new * (h[t] - n) * z * (1 - z)
        dr_pre = dn_pre * b_n * r * (1 - r)
        da[t] = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        db[t] = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
        # backprop through the recurrent normalisation into h[t] @ U (masked), then into h[t]
        grads["ln_recurrent_gamma"] += (db[t] * recurrent_norm[t]).sum(axis=0)
        d_recurrent = _normalise_backward(db[t] * w["ln_recurrent_gamma"], recurrent_norm[t], recurrent_rstd[t])
        grads["recurrent_kernel"] += m.states(h[t]).T @ d_recurrent
        dh = np.where(valid, dh_new * z + dh_kept + m.states(d_recurrent @ U.T), dh)
    grads["recurrent_kernel"] = m.unmask_recurrent(grads["recurrent_kernel"])
    grads["bias"] = np.stack([da.sum(axis=(0, 1)), db.sum(axis=(0, 1))])
    grads["ln_input_gamma"] = (da * input_norm).sum(axis=(0, 1))
    d_projection = _input_side_backward(da * w["ln_input_gamma"], input_norm, input_rstd, lengths)
    grads["kernel"] = np.einsum("tni,tng->ig", m.inputs(x), d_projection)
    return {"x": m.inputs(d_projection @ w["kernel"].T), "h0": dh, **grads}
