"""Property-based tests (hypothesis) of the Python API above the engine: the recurrent layers (RNN/SimpleRNN, LSTM,
GRU with stacking, bidirectional, lengths, initial and returned states, batch_first, step), Embedding, Dense, the
losses, the optimizers and save/load. Valid generated input must give the result of an independent NumPy
composition of the twins (rnnext.reference) or of the textbook formula; invalid input must raise TypeError or
ValueError (IndexError for Embedding ids, as documented) whose message names the argument.

Example counts scale from the hypothesis profile in conftest.py (RNNEXT_HYPOTHESIS_PROFILE)."""
import math
import os
import tempfile

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnext
from rnnext import losses, optim, reference
from rnnext.parameter import Parameter

from conftest import FLOAT_DTYPES, INTEGER_DTYPES, RTOL, assert_close, mentions, scaled

# Every assert_close here measures a tensor against max(its largest |expected| entry, 1) (scale_floor=1.0), as the
# engine's property tests do (test_properties_engine.py): the values are O(1), and an entry that is a sum of O(1)
# terms keeps their rounding error (~1e-7 each in float32) when the terms cancel.

# ---------------------------------------------------------------------------------------------------------
# recurrent layers against a composition of the twins

CELL_KINDS = ["rnn-tanh", "rnn-relu", "rnn-sigmoid", "simplernn", "lstm", "lstm-peephole", "lstm-coupled",
              "lstm-peephole-coupled", "gru", "gru-reset_before"]


def make_recurrent(kind, units, **options):
    if kind.startswith("rnn-"):
        return rnnext.RNN(units, activation=kind[4:], **options)
    if kind == "simplernn":
        return rnnext.SimpleRNN(units, **options)
    if kind.startswith("lstm"):
        return rnnext.LSTM(units, peephole="peephole" in kind, coupled="coupled" in kind, **options)
    return rnnext.GRU(units, reset_after=kind == "gru", **options)


def twin_forward(layer, x, state, w, lengths):
    """One engine call of `layer`'s cell in the twin: (y, final state, cache)."""
    if isinstance(layer, rnnext.LSTM):
        y, h, c, cache = reference.lstm_forward(x, state[0], state[1], w["kernel"], w["recurrent_kernel"],
                                                w["bias"], peephole=w.get("peephole"), lengths=lengths,
                                                coupled=layer.coupled)
        return y, (h, c), cache
    if isinstance(layer, rnnext.GRU):
        y, h, cache = reference.gru_forward(x, state, w["kernel"], w["recurrent_kernel"], w["bias"],
                                            lengths=lengths, reset_after=layer.reset_after)
        return y, h, cache
    y, h, cache = reference.rnn_forward(x, state, w["kernel"], w["recurrent_kernel"], w["bias"], lengths=lengths,
                                        activation=layer.activation)
    return y, h, cache


def twin_backward(layer, dy, dstate, cache, x, w, lengths):
    """(dx, d initial state, {weight name: gradient}) of one twin call."""
    if isinstance(layer, rnnext.LSTM):
        g = reference.lstm_backward(dy, dstate[0], dstate[1], cache, x, w["kernel"], w["recurrent_kernel"],
                                    w["bias"], peephole=w.get("peephole"), lengths=lengths, coupled=layer.coupled)
        return g["x"], (g["h0"], g["c0"]), g
    if isinstance(layer, rnnext.GRU):
        g = reference.gru_backward(dy, dstate, cache, x, w["kernel"], w["recurrent_kernel"], w["bias"],
                                   lengths=lengths, reset_after=layer.reset_after)
    else:
        g = reference.rnn_backward(dy, dstate, cache, x, w["kernel"], w["recurrent_kernel"], w["bias"],
                                   lengths=lengths, activation=layer.activation)
    return g["x"], g["h0"], g


def reverse_rows(a, lengths):
    """a [T, N, F] with each row n's first lengths[n] steps reversed (the rest left in place), written as a loop."""
    T, N = a.shape[:2]
    out = a.copy()
    for n in range(N):
        L = T if lengths is None else int(lengths[n])
        out[:L, n] = a[:L, n][::-1]
    return out


def twin_layer(layer, x_tm, states0, lengths, dy, dstates):
    """Forward and backward of a Recurrent layer rebuilt from the twins in float64: (output, final states, dx
    (time-major), initial-state gradients, {parameter name: gradient})."""
    D, H, L = layer.num_directions, layer.units, layer.num_layers
    weights = [[{k: p.value.astype(np.float64) for k, p in w.items()} for w in ws] for ws in layer._weights]
    names = {id(p): name for name, p in layer.named_parameters()}
    runs, finals, inp = [], [], x_tm
    for k in range(L):
        outs = []
        for d in range(D):
            x_dir = inp if d == 0 else reverse_rows(inp, lengths)
            y, final, cache = twin_forward(layer, x_dir, states0[k * D + d], weights[k][d], lengths)
            runs.append((x_dir, cache))
            finals.append(final)
            outs.append(y if d == 0 else reverse_rows(y, lengths))
        inp = np.concatenate(outs, axis=2)
    top = [f[0] if isinstance(f, tuple) else f for f in finals[-D:]]
    output = inp if layer.return_sequences else np.concatenate(top, axis=1)

    # backward
    d_out, dh_top = (dy, [None] * D) if layer.return_sequences else (None, [dy[:, d * H:(d + 1) * H] for d in range(D)])
    grads, dstates0 = {}, [None] * (L * D)
    for k in reversed(range(L)):
        dx_layer = 0
        for d in range(D):
            index = k * D + d
            x_dir, cache = runs[index]
            dy_dir = None if d_out is None else d_out[:, :, d * H:(d + 1) * H]
            if dy_dir is not None and d == 1:
                dy_dir = reverse_rows(dy_dir, lengths)
            ds = dstates[index] if dstates is not None else None
            if isinstance(layer, rnnext.LSTM):
                dh, dc = ds if ds is not None else (None, None)
            else:
                dh, dc = ds, None
            if k == L - 1 and dh_top[d] is not None:
                dh = dh_top[d] if dh is None else dh + dh_top[d]
            dstate = (dh, dc) if isinstance(layer, rnnext.LSTM) else dh
            dx_dir, ds0, g = twin_backward(layer, dy_dir, dstate, cache, x_dir, weights[k][d], lengths)
            for wname, param in layer._weights[k][d].items():
                grads[names[id(param)]] = g[wname]
            dstates0[index] = ds0
            dx_layer = dx_layer + (reverse_rows(dx_dir, lengths) if d == 1 else dx_dir)
        d_out = dx_layer
    return output, finals, d_out, dstates0, grads


def flat_states(states):
    out = {}
    for i, s in enumerate(states):
        for j, a in enumerate(s if isinstance(s, tuple) else (s,)):
            out[f"states[{i}][{j}]"] = a
    return out


@st.composite
def recurrent_setups(draw):
    kind = draw(st.sampled_from(CELL_KINDS))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    options = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                   return_sequences=draw(st.booleans()), return_state=draw(st.booleans()),
                   batch_first=draw(st.booleans()), dtype=dtype, seed=draw(st.integers(0, 2**31)))
    if options["num_layers"] > 1 and draw(st.booleans()):
        options["layer_dropout"] = 0.5  # the layer runs in eval mode below: no dropout
    T, N, I, H = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=N, max_size=N))
    x_dtype = draw(st.sampled_from([dtype, np.float64, np.float32, np.int32]))
    with_initial = draw(st.booleans())
    with_dstates = options["return_state"] and draw(st.booleans())
    return kind, H, options, (T, N, I), lengths, x_dtype, with_initial, with_dstates


def build_layer(kind, H, options, I, seed):
    layer = make_recurrent(kind, H, **options)
    layer.build((None, I))
    rng = np.random.default_rng(seed)
    for _, param in layer.named_parameters():  # non-zero biases and peepholes
        param.value += (0.3 * rng.standard_normal(param.shape)).astype(param.value.dtype)
    if options.get("layer_dropout"):
        layer.eval()
    return layer


@scaled(2)
@given(setup=recurrent_setups(), seed=st.integers(0, 2**31))
def test_recurrent_layer_matches_twin_composition(example_counter, setup, seed):
    kind, H, options, (T, N, I), lengths, x_dtype, with_initial, with_dstates = setup
    layer = build_layer(kind, H, options, I, seed)
    dtype = layer.dtype
    rng = np.random.default_rng(seed + 1)
    x_tm = rng.standard_normal((T, N, I)) * (3 if np.issubdtype(x_dtype, np.integer) else 1)
    x_tm = x_tm.astype(x_dtype)
    x = x_tm.transpose(1, 0, 2) if options["batch_first"] else x_tm  # a transposed view, on purpose
    D, L = layer.num_directions, layer.num_layers
    lstm = isinstance(layer, rnnext.LSTM)

    def state(scale=0.5):
        draw = lambda: (scale * rng.standard_normal((N, H))).astype(dtype)  # noqa: E731
        return (draw(), draw()) if lstm else draw()

    initial = [state() for _ in range(L * D)] if with_initial else None
    kwargs = {"lengths": lengths} if lengths is not None else {}
    result = layer.forward(x, initial_state=initial, **kwargs)
    output, states = result if options["return_state"] else (result, None)
    dy = rng.standard_normal(output.shape).astype(dtype)
    dstates = [state(1.0) for _ in range(L * D)] if with_dstates else None
    layer.zero_grad()
    dx = layer.backward(dy, dstates=dstates) if with_dstates else layer.backward(dy)

    zeros = [(np.zeros((N, H)), np.zeros((N, H))) if lstm else np.zeros((N, H)) for _ in range(L * D)]
    as64 = lambda s: tuple(a.astype(np.float64) for a in s) if isinstance(s, tuple) else s.astype(np.float64)  # noqa
    states0 = [as64(s) for s in initial] if initial is not None else zeros
    dy_tm = dy.transpose(1, 0, 2) if options["return_sequences"] and options["batch_first"] else dy
    lengths64 = None if lengths is None else np.array(lengths, dtype=np.int64)
    ref_out, ref_finals, ref_dx, ref_dstates0, ref_grads = twin_layer(
        layer, x_tm.astype(dtype).astype(np.float64), states0, lengths64, dy_tm.astype(np.float64),
        None if dstates is None else [as64(s) for s in dstates])
    if options["return_sequences"] and options["batch_first"]:
        ref_out = ref_out.transpose(1, 0, 2)
    if options["batch_first"]:
        ref_dx = ref_dx.transpose(1, 0, 2)

    rtol = RTOL[dtype.type]
    assert output.dtype == dtype and dx.dtype == dtype
    assert_close({"output": output, "dx": dx}, {"output": ref_out, "dx": ref_dx}, rtol, f"{kind} {options}",
                 scale_floor=1.0)
    if states is not None:
        assert_close(flat_states(states), flat_states(ref_finals), rtol, "returned states", scale_floor=1.0)
    assert_close({n: p.grad for n, p in layer.named_parameters()}, ref_grads, rtol, "parameter gradients",
                 scale_floor=1.0)
    assert_close(flat_states(layer.initial_state_grad), flat_states(ref_dstates0), rtol, "initial_state_grad",
                 scale_floor=1.0)
    example_counter()


@scaled(1)
@given(kind=st.sampled_from(CELL_KINDS), dtype=st.sampled_from(FLOAT_DTYPES), num_layers=st.integers(1, 2),
       N=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 4), with_state=st.booleans(),
       seed=st.integers(0, 2**31))
def test_step_matches_twin(example_counter, kind, dtype, num_layers, N, I, H, with_state, seed):
    layer = build_layer(kind, H, dict(num_layers=num_layers, dtype=dtype, seed=seed), I, seed)
    rng = np.random.default_rng(seed)
    lstm = isinstance(layer, rnnext.LSTM)
    x_t = rng.standard_normal((N, I)).astype(dtype)
    state = None
    if with_state:
        state = [(rng.standard_normal((N, H)).astype(dtype),) * 2 if lstm else rng.standard_normal((N, H)).astype(dtype)
                 for _ in range(num_layers)]
    h, new_states = layer.step(x_t, state)
    inp = x_t[None].astype(np.float64)
    expected = []
    for k in range(num_layers):
        w = {n: p.value.astype(np.float64) for n, p in layer._weights[k][0].items()}
        s = state[k] if state is not None else ((np.zeros((N, H)),) * 2 if lstm else np.zeros((N, H)))
        s = tuple(a.astype(np.float64) for a in s) if lstm else s.astype(np.float64)
        inp, final, _ = twin_forward(layer, inp, s, w, None)
        expected.append(final)
    assert_close({"h": h}, {"h": inp[0]}, RTOL[np.dtype(dtype).type], "step output", scale_floor=1.0)
    assert_close(flat_states(new_states), flat_states(expected), RTOL[np.dtype(dtype).type], "step states",
                 scale_floor=1.0)
    example_counter()


# invalid input of the recurrent layers

RECURRENT_CORRUPTIONS = {
    # corruption: (argument named in the message, method)
    "x-2d": ("x", "forward"), "x-4d": ("x", "forward"), "x-wrong-I": ("x", "forward"), "x-T=0": ("x", "forward"),
    "x-N=0": ("x", "forward"), "x-complex": ("x", "forward"), "x-strings": ("x", "forward"),
    "x-object": ("x", "forward"), "x-ragged": ("x", "forward"), "x-I=0-unbuilt": ("x", "forward"),
    "x-empty-list": ("x", "forward"),
    "lengths-short": ("lengths", "forward"), "lengths-float": ("lengths", "forward"),
    "lengths-negative": ("lengths", "forward"), "lengths-above-T": ("lengths", "forward"),
    "lengths-uint64-huge": ("lengths", "forward"), "lengths-2d": ("lengths", "forward"),
    "initial_state-count": ("initial_state", "forward"), "initial_state-shape": ("initial_state", "forward"),
    "initial_state-ragged": ("initial_state", "forward"), "initial_state-none-entry": ("initial_state", "forward"),
    "initial_state-complex": ("initial_state", "forward"),
    "dy-shape": ("dy", "backward"), "dy-complex": ("dy", "backward"),
    "dstates-count": ("dstates", "backward"), "dstates-shape": ("dstates", "backward"),
    "x_t-3d": ("x_t", "step"), "x_t-wrong-I": ("x_t", "step"), "x_t-N=0": ("x_t", "step"),
    "state-shape": ("state", "step"),
}


@scaled(3)
@given(kind=st.sampled_from(CELL_KINDS), num_layers=st.integers(1, 2), bidirectional=st.booleans(),
       return_state=st.booleans(), T=st.integers(1, 4), N=st.integers(1, 4), I=st.integers(1, 4),
       H=st.integers(1, 3), corruption=st.sampled_from(sorted(RECURRENT_CORRUPTIONS)), seed=st.integers(0, 2**31))
def test_recurrent_layer_bad_input_is_named(example_counter, kind, num_layers, bidirectional, return_state, T, N, I,
                                            H, corruption, seed):
    name, method = RECURRENT_CORRUPTIONS[corruption]
    if method == "step":
        bidirectional = False
    if corruption.startswith("dstates"):
        return_state = True
    options = dict(num_layers=num_layers, bidirectional=bidirectional, return_state=return_state, seed=seed)
    layer = make_recurrent(kind, H, **options)
    lstm = isinstance(layer, rnnext.LSTM)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    count = num_layers * (2 if bidirectional else 1)
    good_state = [(np.zeros((N, H)), np.zeros((N, H))) if lstm else np.zeros((N, H)) for _ in range(count)]
    if corruption != "x-I=0-unbuilt":
        layer.build((None, I))
    kwargs = {}
    if method == "forward":
        bad = {
            "x-2d": x[0], "x-4d": x[None], "x-wrong-I": np.zeros((N, T, I + 1)), "x-T=0": x[:, :0],
            "x-N=0": x[:0], "x-complex": x.astype(np.complex64), "x-strings": np.full((N, T, I), "a"),
            "x-object": np.array([[[None] * I] * T] * N, dtype=object),
            "x-ragged": [[[1.0] * I] * T, [[1.0] * I] * (T + 1)],  # rows of T and T + 1 steps: ragged for any T, I
            "x-I=0-unbuilt": np.zeros((N, T, 0)), "x-empty-list": [],
        }
        if corruption.startswith("x"):
            assume(not (corruption == "x-ragged" and N < 2))
            args = (bad[corruption],)
        else:
            args = (x,)
            L = rng.integers(0, T + 1, size=N)
            lengths_bad = {"lengths-short": L[:-1], "lengths-float": L.astype(np.float64),
                           "lengths-negative": np.where(np.arange(N) == 0, -1, L),
                           "lengths-above-T": np.where(np.arange(N) == N - 1, T + 1, L),
                           "lengths-uint64-huge": np.where(np.arange(N) == 0, 2**63 + 5, L).astype(np.uint64),
                           "lengths-2d": L[None]}
            if corruption in lengths_bad:
                kwargs["lengths"] = lengths_bad[corruption]
            elif corruption == "initial_state-count":
                kwargs["initial_state"] = good_state + good_state[:1]
            elif corruption == "initial_state-shape":
                kwargs["initial_state"] = [(np.zeros((N, H + 1)),) * 2 if lstm else np.zeros((N + 1, H))
                                           for _ in range(count)]
            elif corruption == "initial_state-ragged":
                ragged = [[0.0] * H, [0.0] * (H + 1)]
                kwargs["initial_state"] = [(ragged, ragged) if lstm else ragged for _ in range(count)]
            elif corruption == "initial_state-none-entry":
                kwargs["initial_state"] = [(None, np.zeros((N, H))) if lstm else None for _ in range(count)]
                if not lstm and count == 1:
                    assume(False)  # initial_state=[None] with one entry is "no initial state"
            elif corruption == "initial_state-complex":
                kwargs["initial_state"] = [(np.zeros((N, H), complex),) * 2 if lstm else np.zeros((N, H), complex)
                                           for _ in range(count)]
        call = lambda: layer.forward(*args, **kwargs)  # noqa: E731
    elif method == "backward":
        out = layer.forward(x)
        output = out[0] if return_state else out
        if corruption == "dy-shape":
            dy, dstates = np.zeros(output.shape[:-1] + (output.shape[-1] + 1,)), None
        elif corruption == "dy-complex":
            dy, dstates = output.astype(np.complex64), None
        elif corruption == "dstates-count":
            dy, dstates = np.zeros_like(output), good_state + good_state[:1]
        else:
            dy, dstates = np.zeros_like(output), [(np.zeros((N, H + 1)),) * 2 if lstm else np.zeros((N, H + 1))
                                                  for _ in range(count)]
        call = lambda: layer.backward(dy, dstates=dstates)  # noqa: E731
    else:
        bad_step = {"x_t-3d": (x, None), "x_t-wrong-I": (np.zeros((N, I + 1)), None),
                    "x_t-N=0": (np.zeros((0, I)), None),
                    "state-shape": (x[:, 0], [(np.zeros((N, H + 1)),) * 2 if lstm else np.zeros((N, H + 1))
                                              for _ in range(num_layers)])}
        call = lambda: layer.step(*bad_step[corruption])  # noqa: E731
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    assert mentions(str(caught.value), name), f"{corruption}: the message does not name {name!r}: {caught.value}"
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# Embedding

@st.composite
def embedding_setups(draw):
    vocab, dim = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    padding = draw(st.none() | st.integers(0, vocab - 1))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple))
    ids = np.array(draw(st.lists(st.integers(0, vocab - 1), min_size=math.prod(shape), max_size=math.prod(shape))),
                   dtype=draw(st.sampled_from(INTEGER_DTYPES))).reshape(shape)
    return vocab, dim, padding, ids, draw(st.sampled_from(FLOAT_DTYPES))


@scaled(1.5)
@given(setup=embedding_setups(), as_list=st.booleans(), seed=st.integers(0, 2**31))
def test_embedding_matches_lookup_and_scatter(example_counter, setup, as_list, seed):
    vocab, dim, padding, ids, dtype = setup
    assume(not (as_list and ids.size == 0))  # an empty list has no integer dtype (reported bug 3, tested there)
    layer = rnnext.Embedding(vocab, dim, padding_idx=padding, dtype=dtype, seed=seed)
    table = layer.embeddings.value.copy()
    out = layer.forward(ids.tolist() if as_list else ids)
    assert out.shape == ids.shape + (dim,) and out.dtype == dtype
    for position in np.ndindex(ids.shape):
        assert np.array_equal(out[position], table[ids[position]])
    if padding is not None:
        assert not table[padding].any()
    dy = np.random.default_rng(seed).standard_normal(out.shape)
    layer.zero_grad()
    assert layer.backward(dy) is None
    expected = np.zeros((vocab, dim))
    for position in np.ndindex(ids.shape):
        if ids[position] != padding:
            expected[ids[position]] += dy[position].astype(dtype)
    assert_close({"embeddings": layer.embeddings.grad}, {"embeddings": expected}, RTOL[np.dtype(dtype).type], "grad",
                 scale_floor=1.0)
    example_counter()


@scaled(1)
@given(vocab=st.integers(1, 8), shape=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
       bad=st.one_of(st.integers(-2**63, -1), st.integers(8, 2**63 - 1)), dtype=st.sampled_from([np.int64, None]),
       kind=st.sampled_from(["out-of-range", "float", "bool", "complex", "string"]))
def test_embedding_bad_ids_are_named(example_counter, vocab, shape, bad, dtype, kind):
    layer = rnnext.Embedding(vocab, 2, seed=0)
    ids = np.zeros(shape, dtype=np.int64)
    if kind == "out-of-range":
        ids.reshape(-1)[-1] = bad if bad < 0 else vocab + bad % 1000
        value = ids if dtype is not None else ids.tolist()
    else:
        value = ids.astype({"float": np.float64, "bool": np.bool_, "complex": np.complex128, "string": str}[kind])
    with pytest.raises((TypeError, ValueError, IndexError)) as caught:
        layer.forward(value)
    assert mentions(str(caught.value), "ids"), f"{kind}: {caught.value}"
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# Dense

def dense_reference(x, kernel, bias, activation, dy):
    """(y, dx, dkernel, dbias) in float64 from the definitions."""
    a = x @ kernel + bias
    if activation in (None, "linear"):
        y, da = a, dy
    elif activation == "sigmoid":
        y = 1 / (1 + np.exp(-a))
        da = dy * y * (1 - y)
    elif activation == "tanh":
        y = np.tanh(a)
        da = dy * (1 - y ** 2)
    elif activation == "relu":
        y = np.where(a > 0, a, 0.0)
        da = np.where(a > 0, dy, 0.0)
    else:
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        da = y * dy - y * np.sum(y * dy, axis=-1, keepdims=True)  # J^T dy with J = diag(y) - y y^T
    F, U = kernel.shape
    return y, da @ kernel.T, x.reshape(-1, F).T @ da.reshape(-1, U), da.reshape(-1, U).sum(axis=0)


@scaled(1.5)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), units=st.integers(1, 4),
       activation=st.sampled_from([None, "linear", "sigmoid", "tanh", "relu", "softmax"]),
       dtype=st.sampled_from(FLOAT_DTYPES), x_dtype=st.sampled_from([np.float32, np.float64, np.int16]),
       seed=st.integers(0, 2**31))
def test_dense_matches_formulas(example_counter, shape, units, activation, dtype, x_dtype, seed):
    rng = np.random.default_rng(seed)
    layer = rnnext.Dense(units, activation=activation, dtype=dtype, seed=seed)
    x = (rng.standard_normal(shape) * (3 if x_dtype == np.int16 else 1)).astype(x_dtype)
    y = layer.forward(x)
    layer.bias.value += rng.standard_normal(units).astype(dtype) * 0.1
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    layer.zero_grad()
    dx = layer.backward(dy)
    xs = x.astype(dtype).astype(np.float64)
    ref = dense_reference(xs, layer.kernel.value.astype(np.float64), layer.bias.value.astype(np.float64), activation,
                          dy.astype(np.float64))
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close({"y": y, "dx": dx, "kernel": layer.kernel.grad, "bias": layer.bias.grad},
                 dict(zip(["y", "dx", "kernel", "bias"], ref)), RTOL[np.dtype(dtype).type], f"Dense {activation}",
                 scale_floor=1.0)
    example_counter()


def test_dense_zero_features_are_reported_on_x():
    with pytest.raises(ValueError) as caught:
        rnnext.Dense(2, seed=0).forward(np.zeros((3, 0)))
    assert mentions(str(caught.value), "x"), str(caught.value)


@scaled(0.5)
@given(kind=st.sampled_from(["1-d", "wrong-F", "complex", "strings", "dy-shape"]),
       F=st.integers(1, 4), N=st.integers(1, 3))
def test_dense_bad_input_is_named(example_counter, kind, F, N):
    layer = rnnext.Dense(2, seed=0)
    layer.build((F,))
    bad = {"1-d": np.zeros(F), "wrong-F": np.zeros((N, F + 1)), "complex": np.zeros((N, F), complex),
           "strings": np.full((N, F), "a")}
    name = "dy" if kind == "dy-shape" else "x"
    with pytest.raises((TypeError, ValueError)) as caught:
        if kind == "dy-shape":
            layer.forward(np.zeros((N, F)))
            layer.backward(np.zeros((N, 3)))
        else:
            layer.forward(bad[kind])
    assert mentions(str(caught.value), name), f"{kind}: {caught.value}"
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# losses against their formulas (float64 NumPy, written out)

def finite_floats(dtype, bound=1e4):
    return st.floats(-bound, bound, width=32 if dtype == np.float32 else 64, allow_nan=False)


@st.composite
def logits_arrays(draw, min_classes=1):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = draw(st.sampled_from([(3,), (2, 3), (2, 3, 4)]))
    shape = tuple(draw(st.integers(0 if i == 0 else 1, 4)) for i in range(len(shape) - 1)) + \
        (draw(st.integers(min_classes, 5)),)
    size = math.prod(shape)
    values = draw(st.lists(finite_floats(dtype) | st.sampled_from([0.0, 1e30, -1e30]) if dtype == np.float64 else
                           finite_floats(dtype), min_size=size, max_size=size))
    logits = np.array(values, dtype=dtype).reshape(shape)
    if size and draw(st.integers(0, 4)) == 0:
        logits.reshape(-1)[draw(st.integers(0, size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return logits


def close_scalar(actual, expected, rtol):
    if math.isnan(expected):
        return math.isnan(actual)
    if math.isinf(expected):
        return actual == expected
    return abs(actual - expected) <= rtol * max(abs(expected), 1.0)


@scaled(2)
@given(logits=logits_arrays(), reduction=st.sampled_from(["mean", "sum"]), masking=st.sampled_from(
    ["none", "mask-bool", "mask-01", "lengths"]), seed=st.integers(0, 2**31))
def test_softmax_cross_entropy_matches_formula(example_counter, logits, reduction, masking, seed):
    rng = np.random.default_rng(seed)
    C = logits.shape[-1]
    positions = logits.shape[:-1]
    targets = rng.integers(0, C, size=positions)
    kwargs = {}
    counted = np.ones(positions, dtype=bool)
    if masking.startswith("mask"):
        counted = rng.random(positions) < 0.6
        kwargs["mask"] = counted if masking == "mask-bool" else counted.astype(np.int8)
        targets = np.where(counted, targets, -1)  # never read at uncounted positions
    elif masking == "lengths" and logits.ndim == 3:
        lengths = rng.integers(0, positions[1] + 1, size=positions[0])
        kwargs["lengths"] = lengths
        counted = np.arange(positions[1])[None, :] < lengths[:, None]
        targets = np.where(counted, targets, 999)
    loss, grad = losses.softmax_cross_entropy(logits, targets, reduction=reduction, **kwargs)

    x = logits.astype(np.float64)
    with np.errstate(all="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        count = int(counted.sum())
        scale = 1.0 / count if (reduction == "mean" and count) else 1.0
        safe = np.where(counted, targets, 0)
        picked = np.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
        expected_loss = float(-picked[counted].sum() * scale) if count else 0.0
        onehot = np.eye(C)[safe]
        expected_grad = np.where(counted[..., None], (np.exp(log_p) - onehot) * scale, 0.0)
    assert isinstance(loss, float)
    assert grad.shape == logits.shape and grad.dtype == logits.dtype
    rtol = RTOL[logits.dtype.type] * 10  # float32 log-softmax summed over up to 40 positions
    assert close_scalar(loss, expected_loss, rtol), f"loss {loss}, expected {expected_loss}"
    assert_close({"grad": grad}, {"grad": expected_grad}, rtol, "softmax_cross_entropy gradient", scale_floor=1.0)
    example_counter()


@scaled(1.5)
@given(logits=logits_arrays(), reduction=st.sampled_from(["mean", "sum"]), seed=st.integers(0, 2**31),
       target_kind=st.sampled_from(["soft", "hard", "int", "bool"]))
def test_binary_cross_entropy_matches_formula(example_counter, logits, reduction, seed, target_kind):
    rng = np.random.default_rng(seed)
    targets = {"soft": rng.random(logits.shape), "hard": rng.integers(0, 2, logits.shape).astype(np.float32),
               "int": rng.integers(0, 2, logits.shape), "bool": rng.random(logits.shape) < 0.5}[target_kind]
    loss, grad = losses.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    x, y = logits.astype(np.float64), targets.astype(logits.dtype).astype(np.float64)
    with np.errstate(all="ignore"):
        per = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
        scale = 1.0 / x.size if (reduction == "mean" and x.size) else 1.0
        expected_loss = float(per.sum() * scale)
        expected_grad = (sig - y) * scale
    assert grad.shape == logits.shape and grad.dtype == logits.dtype
    rtol = RTOL[logits.dtype.type] * 10
    assert close_scalar(loss, expected_loss, rtol), f"loss {loss}, expected {expected_loss}"
    assert_close({"grad": grad}, {"grad": expected_grad}, rtol, "binary_cross_entropy_with_logits gradient",
                 scale_floor=1.0)
    example_counter()


@scaled(1)
@given(predictions=logits_arrays(), reduction=st.sampled_from(["mean", "sum"]), seed=st.integers(0, 2**31),
       target_dtype=st.sampled_from([np.float32, np.float64, np.int32]))
def test_mean_squared_error_matches_formula(example_counter, predictions, reduction, seed, target_dtype):
    assume(np.all(np.abs(predictions[np.isfinite(predictions)]) < 1e15))  # squares of 1e30 overflow float64 sums
    targets = (np.random.default_rng(seed).standard_normal(predictions.shape) * 3).astype(target_dtype)
    loss, grad = losses.mean_squared_error(predictions, targets, reduction=reduction)
    r = predictions.astype(np.float64) - targets.astype(predictions.dtype).astype(np.float64)
    scale = 1.0 / r.size if (reduction == "mean" and r.size) else 1.0
    with np.errstate(all="ignore"):
        expected_loss, expected_grad = float(np.sum(r * r) * scale), 2 * r * scale
    assert grad.shape == predictions.shape and grad.dtype == predictions.dtype
    rtol = RTOL[predictions.dtype.type] * 10
    assert close_scalar(loss, expected_loss, rtol), f"loss {loss}, expected {expected_loss}"
    assert_close({"grad": grad}, {"grad": expected_grad}, rtol, "mean_squared_error gradient", scale_floor=1.0)
    example_counter()


def test_binary_cross_entropy_all_nan_targets_raise_without_warning():
    """Regression (found by test_loss_bad_input_is_named): all-NaN targets made np.nanmin warn "All-NaN slice
    encountered" before the ValueError (an error under filterwarnings=error), though the losses never warn."""
    with pytest.raises(ValueError, match="targets must lie in \\[0, 1\\], got values in \\[nan, nan\\]"):
        losses.binary_cross_entropy_with_logits(np.zeros(3), np.full(3, np.nan))


LOSS_CORRUPTIONS = {
    "logits-int": "logits", "logits-0d": "logits", "logits-C=0": "logits", "targets-shape": "targets",
    "targets-float": "targets", "targets-out-of-range": "targets", "mask-shape": "mask", "mask-values": "mask",
    "lengths-shape": "lengths", "lengths-range": "lengths", "lengths-2d-logits": "lengths",
    "lengths-float": "lengths", "reduction": "reduction", "bce-targets-shape": "targets",
    "bce-targets-range": "targets", "bce-targets-nan": "targets", "bce-logits-int": "logits",
    "mse-targets-shape": "targets", "mse-predictions-int": "predictions", "mse-targets-complex": "targets",
}


@scaled(1.5)
@given(corruption=st.sampled_from(sorted(LOSS_CORRUPTIONS)), N=st.integers(1, 3), T=st.integers(1, 3),
       C=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_loss_bad_input_is_named(example_counter, corruption, N, T, C, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, T, C))
    targets = rng.integers(0, C, size=(N, T))
    ce, bce, mse = losses.softmax_cross_entropy, losses.binary_cross_entropy_with_logits, losses.mean_squared_error
    calls = {
        "logits-int": lambda: ce(targets[..., None], targets),
        "logits-0d": lambda: ce(np.float64(1.0), targets),
        "logits-C=0": lambda: ce(np.zeros((N, T, 0)), targets),
        "targets-shape": lambda: ce(logits, targets[:, :-1] if T > 1 else targets[None]),
        "targets-float": lambda: ce(logits, targets.astype(np.float64)),
        "targets-out-of-range": lambda: ce(logits, np.where(np.arange(T) == 0, C, targets)),
        "mask-shape": lambda: ce(logits, targets, mask=np.ones((N, T + 1), bool)),
        "mask-values": lambda: ce(logits, targets, mask=np.full((N, T), 2)),
        "lengths-shape": lambda: ce(logits, targets, lengths=np.ones(N + 1, int)),
        "lengths-range": lambda: ce(logits, targets, lengths=np.full(N, T + 1)),
        "lengths-2d-logits": lambda: ce(logits[:, 0], targets[:, 0], lengths=np.ones(N, int)),
        "lengths-float": lambda: ce(logits, targets, lengths=np.ones(N)),
        "reduction": lambda: ce(logits, targets, reduction="avg"),
        "bce-targets-shape": lambda: bce(logits, rng.random((N, T, C + 1))),
        "bce-targets-range": lambda: bce(logits, rng.random((N, T, C)) + 1.5),
        "bce-targets-nan": lambda: bce(logits, np.full((N, T, C), np.nan)),
        "bce-logits-int": lambda: bce(targets, targets),
        "mse-targets-shape": lambda: mse(logits, logits[..., :-1] if C > 1 else logits[None]),
        "mse-predictions-int": lambda: mse(targets, targets),
        "mse-targets-complex": lambda: mse(logits, logits.astype(complex)),
    }
    with pytest.raises((TypeError, ValueError)) as caught:
        calls[corruption]()
    assert mentions(str(caught.value), LOSS_CORRUPTIONS[corruption]), f"{corruption}: {caught.value}"
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# optimizers: a few steps against the torch.optim formulas, written out in float64

def optimizer_configs():
    lr = st.floats(0, 1)
    wd = st.sampled_from([0.0]) | st.floats(0, 0.5)
    beta = st.floats(0, 0.999)
    eps = st.sampled_from([1e-8, 1e-3, 0.0, 1e-10])
    return st.one_of(
        st.builds(lambda lr, m, n, wd: ("SGD", dict(lr=lr, momentum=m if (m or not n) else 0.5, nesterov=n and m > 0,
                                                    weight_decay=wd)),
                  lr, st.sampled_from([0.0]) | st.floats(0, 0.99), st.booleans(), wd),
        st.builds(lambda lr, e, a, wd: ("Adagrad", dict(lr=lr, eps=max(e, 1e-10), initial_accumulator_value=a,
                                                        weight_decay=wd)), lr, eps, st.floats(0, 1), wd),
        st.builds(lambda lr, a, e, m, wd: ("RMSprop", dict(lr=lr, alpha=a, eps=max(e, 1e-8), momentum=m,
                                                           weight_decay=wd)),
                  lr, st.floats(0, 0.999), eps, st.sampled_from([0.0]) | st.floats(0, 0.9), wd),
        st.builds(lambda lr, b1, b2, e, wd, w: ("AdamW" if w else "Adam",
                                                dict(lr=lr, betas=(b1, b2), eps=max(e, 1e-8), weight_decay=wd)),
                  lr, beta, beta, eps, wd, st.booleans()),
    )


def reference_steps(kind, h, values, grads_per_step):
    """The parameters after the given steps, from the torch.optim formulas (float64, one dict of state each)."""
    values = [v.astype(np.float64) for v in values]
    state = [{} for _ in values]
    for step, grads in enumerate(grads_per_step, start=1):
        for p, (v, g0) in enumerate(zip(values, grads)):
            g0 = g0.astype(np.float64)
            s = state[p]
            wd = h.get("weight_decay", 0.0)
            if kind == "AdamW":
                v = v * (1 - h["lr"] * wd)
                g = g0
            else:
                g = g0 + wd * v
            if kind == "SGD":
                if h["momentum"]:
                    s["buf"] = g.copy() if "buf" not in s else h["momentum"] * s["buf"] + g
                    g = g + h["momentum"] * s["buf"] if h["nesterov"] else s["buf"]
                v = v - h["lr"] * g
            elif kind == "Adagrad":
                s["sum"] = s.get("sum", np.full_like(v, h["initial_accumulator_value"])) + g * g
                v = v - h["lr"] * g / (np.sqrt(s["sum"]) + h["eps"])
            elif kind == "RMSprop":
                s["sq"] = h["alpha"] * s.get("sq", np.zeros_like(v)) + (1 - h["alpha"]) * g * g
                u = g / (np.sqrt(s["sq"]) + h["eps"])
                if h["momentum"]:
                    s["buf"] = h["momentum"] * s.get("buf", np.zeros_like(v)) + u
                    u = s["buf"]
                v = v - h["lr"] * u
            else:
                b1, b2 = h["betas"]
                s["m"] = b1 * s.get("m", np.zeros_like(v)) + (1 - b1) * g
                s["v"] = b2 * s.get("v", np.zeros_like(v)) + (1 - b2) * g * g
                v = v - h["lr"] / (1 - b1 ** step) * s["m"] / (np.sqrt(s["v"]) / math.sqrt(1 - b2 ** step) + h["eps"])
            values[p] = v
    return values


@scaled(3)
@given(config=optimizer_configs(), dtype=st.sampled_from(FLOAT_DTYPES),
       shapes=st.lists(st.lists(st.integers(0, 3), max_size=2).map(tuple), min_size=1, max_size=3),
       steps=st.integers(1, 3), frozen=st.integers(-1, 2), seed=st.integers(0, 2**31))
def test_optimizer_steps_match_formulas(example_counter, config, dtype, shapes, steps, frozen, seed):
    kind, h = config
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.standard_normal(s).astype(dtype), name=f"p{i}") for i, s in enumerate(shapes)]
    if 0 <= frozen < len(params):
        params[frozen].trainable = False
    initial = [p.value.copy() for p in params]
    opt = getattr(optim, kind)(params, **h)
    grads_per_step = []
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad[...] = g
        grads_per_step.append(grads)
        opt.step()
    trainable = [p.trainable for p in params]
    expected = reference_steps(kind, h, [v for v, t in zip(initial, trainable) if t],
                               [[g for g, t in zip(gs, trainable) if t] for gs in grads_per_step])
    expected_iter = iter(expected)
    for p, v0, t in zip(params, initial, trainable):
        assert p.value.dtype == dtype
        if not t:
            assert np.array_equal(p.value, v0), f"{kind}: frozen {p.name} changed"
            continue
        e = next(expected_iter)
        # float32: each step rounds the value (~6e-8 relative) and the update; the update of Adam is ~lr
        assert_close({p.name: p.value}, {p.name: e}, 1e-5 if dtype == np.float32 else 1e-10, f"{kind} {h}",
                     scale_floor=1.0)
    example_counter()


BAD_NUMBERS = [-1.0, float("nan"), float("inf"), "0.1", None, True, [0.1], np.array([0.1, 0.2])]


@scaled(1)
@given(kind=st.sampled_from(["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]), bad=st.sampled_from(BAD_NUMBERS),
       data=st.data())
def test_optimizer_bad_hyperparameter_is_named(example_counter, kind, bad, data):
    names = {"SGD": ["lr", "momentum", "weight_decay"], "Adagrad": ["lr", "eps", "initial_accumulator_value",
                                                                    "weight_decay"],
             "RMSprop": ["lr", "alpha", "eps", "momentum", "weight_decay"],
             "Adam": ["lr", "betas", "eps", "weight_decay"], "AdamW": ["lr", "betas", "eps", "weight_decay"]}[kind]
    name = data.draw(st.sampled_from(names), label="hyperparameter")
    kwargs = {"lr": 0.1}
    if name == "betas":
        which = data.draw(st.sampled_from([0, 1, None]), label="which beta")
        value = bad if which is None else tuple(bad if i == which else 0.9 for i in range(2))
        assume(not (which is None and isinstance(bad, np.ndarray)))  # a pair of numbers is a valid betas
        if which is not None:
            name = f"betas[{which}]"
        kwargs["betas"] = value
    else:
        kwargs[name] = bad
    with pytest.raises((TypeError, ValueError)) as caught:
        getattr(optim, kind)([Parameter(np.zeros(2))], **kwargs)
    assert name in str(caught.value), f"{kind} {name}={bad!r}: {caught.value}"
    example_counter()


@scaled(1)
@given(shapes=st.lists(st.lists(st.integers(0, 3), max_size=2).map(tuple), min_size=1, max_size=3),
       max_norm=st.floats(0, 10), clip=st.floats(0, 2), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       dtype=st.sampled_from(FLOAT_DTYPES), seed=st.integers(0, 2**31))
def test_clipping_matches_formulas(example_counter, shapes, max_norm, clip, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    params = [Parameter(np.zeros(s, dtype=dtype)) for s in shapes]
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape) * scale
    grads = [p.grad.astype(np.float64) for p in params]
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    got = optim.clip_grad_norm(params, max_norm)
    assert close_scalar(got, norm, RTOL[np.dtype(dtype).type])
    factor = max_norm / (norm + 1e-6)
    expected = [g * factor if factor < 1 else g for g in grads]
    assert_close({f"g{i}": p.grad for i, p in enumerate(params)}, {f"g{i}": e for i, e in enumerate(expected)},
                 RTOL[np.dtype(dtype).type], "clip_grad_norm", scale_floor=1.0)
    optim.clip_grad_value(params, clip)
    assert_close({f"g{i}": p.grad for i, p in enumerate(params)},
                 {f"g{i}": np.clip(e.astype(dtype), -clip, clip) for i, e in enumerate(expected)},
                 RTOL[np.dtype(dtype).type], "clip_grad_value", scale_floor=1.0)
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# save / load: round trips of generated models, and generated damage to a valid file

@st.composite
def models(draw):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    T = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    layers, input_shape = [], None
    if draw(st.booleans()):
        vocab = draw(st.integers(2, 6))
        layers.append(rnnext.Embedding(vocab, draw(st.integers(1, 3)), dtype=dtype, seed=seed,
                                       padding_idx=draw(st.none() | st.just(0))))
        input_shape, kind = (T,), ("ids", vocab)
    else:
        input_shape, kind = (T, draw(st.integers(1, 3))), ("x", None)
    kind_name = draw(st.sampled_from(CELL_KINDS))
    sequences = draw(st.booleans())
    layers.append(make_recurrent(kind_name, draw(st.integers(1, 3)), num_layers=draw(st.integers(1, 2)),
                                 bidirectional=draw(st.booleans()), return_sequences=sequences, dtype=dtype,
                                 seed=seed + 1))
    if draw(st.booleans()):
        layers.append(rnnext.Dropout(0.3, seed=seed + 2))
    layers.append(rnnext.Dense(draw(st.integers(1, 3)), activation=draw(st.sampled_from([None, "tanh", "softmax"])),
                               dtype=dtype, seed=seed + 3))
    model = rnnext.Sequential(layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.value += (0.1 * rng.standard_normal(p.shape)).astype(p.value.dtype)
    if draw(st.booleans()):
        model.named_parameters()[0][1].trainable = False
    return model, kind, input_shape, seed


def model_input(kind, input_shape, seed):
    rng = np.random.default_rng(seed)
    if kind[0] == "ids":
        return rng.integers(0, kind[1], size=(3,) + input_shape)
    return rng.standard_normal((3,) + input_shape)


def same_model(loaded, model, x):
    a, b = loaded.named_parameters(), model.named_parameters()
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, p), (_, q) in zip(a, b):
        assert p.value.dtype == q.value.dtype and p.value.tobytes() == q.value.tobytes(), f"weight {name} differs"
        assert p.trainable == q.trainable, f"{name}: trainable {p.trainable}, saved {q.trainable}"
    loaded.eval()
    model.eval()
    assert loaded.forward(x).tobytes() == model.forward(x).tobytes(), "outputs differ"


@scaled(0.5)
@given(setup=models(), metadata=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5),
                                                max_size=3))
def test_save_load_round_trip(example_counter, setup, metadata):
    model, kind, input_shape, seed = setup
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.npz")
        model.save(path, metadata=metadata)
        loaded = rnnext.load(path)
    assert loaded.metadata == metadata
    same_model(loaded, model, model_input(kind, input_shape, seed))
    example_counter()


@scaled(1)
@given(setup=models(), damage=st.sampled_from(["truncate", "flip", "flip-many"]), where=st.floats(0, 1),
       mask=st.integers(1, 255), seed=st.integers(0, 2**31))
def test_damaged_file_loads_identically_or_raises_value_error(example_counter, setup, damage, where, mask, seed):
    model, kind, input_shape, model_seed = setup
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.npz")
        model.save(path)
        with open(path, "rb") as file:
            data = bytearray(file.read())
        position = min(int(where * len(data)), len(data) - 1)
        if damage == "truncate":
            data = data[:position]
        elif damage == "flip":
            data[position] ^= mask
        else:
            rng = np.random.default_rng(seed)
            for p in rng.integers(0, len(data), size=8):
                data[p] ^= int(rng.integers(1, 256))
        with open(path, "wb") as file:
            file.write(data)
        try:
            loaded = rnnext.load(path)
        except ValueError as error:
            assert path in str(error), f"the ValueError does not name the path: {error}"
        else:
            same_model(loaded, model, model_input(kind, input_shape, model_seed))
    example_counter()
