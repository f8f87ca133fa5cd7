"""Property-based tests (hypothesis) of the engine functions rnnext.{rnn,lstm,gru}_{forward,backward} at their
Python boundary: generated cells, options, shapes (zero input size included), dtypes (pickled, metadata-carrying,
either byte order), memory layouts (strides, transposes, Fortran order, broadcast views, read-only, unaligned),
lengths of any integer type, and NaN/inf. Every call either matches the NumPy twin (rnnext.reference) within the
tolerances of tests/test_engine.py, or raises TypeError/ValueError (MemoryError for impossible sizes) whose
message names the bad argument.

Example counts scale from the hypothesis profile in conftest.py (RNNEXT_HYPOTHESIS_PROFILE)."""
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnext
from rnnext import reference

from conftest import (
    CASES,
    FLOAT_DTYPES,
    FUNCTIONS,
    INTEGER_DTYPES,
    RTOL,
    as_float64,
    assert_close,
    backward_kwargs,
    cell_of,
    expected_grad_names,
    forward_kwargs,
    make_douts,
    make_problem,
    mentions,
    run_backward,
    run_forward,
    scaled,
    valid_kwargs,
)

# lengths may be of any integer type; np.intp is one more spelling (int64 here, int32 on a 32-bit platform)
LENGTHS_DTYPES = INTEGER_DTYPES + [np.intp]

# ---------------------------------------------------------------------------------------------------------
# strategies

# T, N >= 1 (the engine refuses T = 0 and N = 0, see test_zero_T_or_N_is_refused); I = 0 is valid (no input
# features: the cell runs on its recurrence and bias alone); H >= 1 (recurrent_kernel fixes it).
dims = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(0, 6), st.integers(1, 7))

# How an argument is handed to the engine. Every one holds exactly the values of the plain array (broadcast
# replaces the values by a broadcast of the first entry along an axis, and the twin gets those values too).
LAYOUTS = ["c", "fortran", "strided", "reversed", "transposed", "broadcast", "readonly", "pickled", "metadata",
           "native-byteorder", "swapped-byteorder", "unaligned"]


def relayout(a, layout, axis):
    """a's values (for "broadcast": a's first slice along `axis`, broadcast) in the memory layout `layout`."""
    axis = axis % a.ndim
    if layout == "c":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        shape = list(a.shape)
        shape[axis] *= 3
        big = np.full(shape, np.nan, dtype=a.dtype)  # NaN between the entries: a read of the gaps would show
        index = [slice(None)] * a.ndim
        index[axis] = slice(1, None, 3)
        big[tuple(index)] = a
        return big[tuple(index)]
    if layout == "reversed":
        return np.flip(np.ascontiguousarray(np.flip(a, axis)), axis)
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    if layout == "broadcast":
        index = [slice(None)] * a.ndim
        index[axis] = slice(0, 1)
        return np.broadcast_to(a[tuple(index)], a.shape)
    if layout == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if layout == "pickled":
        return pickle.loads(pickle.dumps(a))
    if layout == "metadata":
        return a.astype(np.dtype(a.dtype.type, metadata={"unit": "volt"}))
    if layout == "native-byteorder":
        return a.astype(a.dtype.newbyteorder("="))
    if layout == "swapped-byteorder":
        return a.astype(a.dtype.newbyteorder("S"))
    if layout == "unaligned":
        buffer = np.zeros(a.nbytes + 1, dtype=np.uint8)
        b = buffer[1:].view(a.dtype).reshape(a.shape)
        b[...] = a
        return b
    raise AssertionError(layout)


def lengths_values(draw, T, N):
    """None, or N lengths in [0, T] in one of the forms the engine takes: any integer dtype, a list, a view."""
    if not draw(st.booleans()):
        return None
    values = draw(st.lists(st.integers(0, T), min_size=N, max_size=N))
    form = draw(st.sampled_from(["list", "tuple", "array", "strided", "readonly"]))
    if form == "list":
        return values
    if form == "tuple":
        return tuple(values)
    dtype = draw(st.sampled_from(LENGTHS_DTYPES))
    a = np.array(values, dtype=dtype)
    if form == "strided":
        return np.repeat(a, 2)[::2]
    if form == "readonly":
        a.setflags(write=False)
    return a


@st.composite
def engine_calls(draw, with_nonfinite=True):
    """(case, dtype, shape, params, options, lengths, douts) of one valid forward/backward pair."""
    case = draw(st.sampled_from(sorted(CASES)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    T, N, I, H = shape = draw(dims)
    seed = draw(st.integers(0, 2**32 - 1))
    params, options = make_problem(case, shape, dtype, seed=seed)
    douts = make_douts(case, shape, dtype, seed=seed + 1)
    for name in list(douts):
        if draw(st.integers(0, 4)) == 0:
            douts[name] = None  # no gradient arriving there
    lengths = lengths_values(draw, T, N)
    if with_nonfinite and draw(st.integers(0, 3)) == 0:
        arrays = {**params, **{f"d{k}": v for k, v in douts.items() if v is not None}}
        names = sorted(k for k, v in arrays.items() if v.size)
        if names:
            name = draw(st.sampled_from(names))
            target = params[name] if name in params else douts[name[1:]]
            index = draw(st.integers(0, target.size - 1))
            target.reshape(-1)[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return case, dtype, shape, params, options, lengths, douts


# ---------------------------------------------------------------------------------------------------------
# valid calls: the engine's results are the twin's, whatever the layout and dtype flavour of the arguments

def check_against_twin(case, dtype, shape, params, options, lengths, douts, engine_params=None, engine_douts=None,
                       engine_cache=None):
    """Runs forward and backward in the engine (on engine_params/engine_douts: the same values in other layouts)
    and in the twin (on float64 copies), and compares everything. Returns nothing; asserts."""
    engine_params = params if engine_params is None else engine_params
    engine_douts = douts if engine_douts is None else engine_douts
    before = {k: np.array(v, copy=True) for k, v in {**engine_params, **engine_douts}.items() if v is not None}

    outputs, cache = run_forward(rnnext, case, forward_kwargs(case, engine_params, options, lengths))
    if engine_cache is not None:
        cache = engine_cache(cache)
    grads = run_backward(rnnext, case, backward_kwargs(case, engine_params, options, lengths, engine_douts, cache))

    params64, douts64 = as_float64(params), as_float64(douts)
    with np.errstate(all="ignore"):  # inf - inf and 0 * inf in the twin are expected with inf inputs
        outputs_ref, cache_ref = run_forward(reference, case, forward_kwargs(case, params64, options, lengths))
        grads_ref = run_backward(reference, case,
                                 backward_kwargs(case, params64, options, lengths, douts64, cache_ref))

    # Each tensor is measured against max(its largest |expected| entry, 1) (scale_floor). make_problem keeps every
    # value O(1), so an entry is a sum of O(1) terms whose float32 rounding (~1e-7 each) does not shrink when the
    # terms cancel: a bias gradient that sums 30 terms of size ~1 to 0.008 carries ~1e-7 absolute error, 1e-5
    # relative to itself.
    assert_close(outputs, outputs_ref, RTOL[dtype], f"{case} forward outputs", scale_floor=1.0)
    assert_close({f"cache[{k!r}]": v for k, v in cache.items()},
                 {f"cache[{k!r}]": v for k, v in cache_ref.items()}, RTOL[dtype], f"{case} cache", scale_floor=1.0)
    assert set(grads) == expected_grad_names(case)
    padded = lengths is not None and np.min(np.asarray(lengths)) < shape[0]
    if padded and not all(np.isfinite(v).all() for v in {**params, **douts}.values() if v is not None):
        # The twin runs padded steps through the same formulas with a zero mask, so a NaN/inf that reaches a padded
        # step's gates makes its dx there and its weight gradients NaN (0 * NaN), while the engine leaves padded
        # steps out (docs/conventions.md does not say; test_engine.test_nan_in_padding_is_not_seen calls it
        # doubtful). There the gradients are compared where the twin's are finite, and the engine's dx at
        # padded steps must be exactly zero (below).
        for name in list(grads):
            if grads[name] is not None:
                finite = np.isfinite(grads_ref[name])
                grads, grads_ref = ({**g, name: np.where(finite, g[name], 0)} for g in (grads, grads_ref))
    assert_close(grads, grads_ref, RTOL[dtype], f"{case} gradients", scale_floor=1.0)
    if lengths is not None:
        # x at a step past a row's length influences nothing: its gradient is exactly zero
        dx_padded = grads["x"][np.arange(shape[0])[:, None] >= np.asarray(lengths, dtype=np.int64)[None, :]]
        assert not dx_padded.any(), f"dx at padded steps is not zero: {dx_padded}"
    for name, value in {**outputs, **grads}.items():
        if value is not None:
            assert value.dtype == np.dtype(dtype), f"{name} has dtype {value.dtype}, expected {np.dtype(dtype)}"
            assert value.dtype.isnative and value.flags.c_contiguous, f"{name} is not a native C-contiguous array"
    for name, value in before.items():
        now = engine_params[name] if name in engine_params else engine_douts[name]
        assert np.array_equal(np.asarray(now), value, equal_nan=True), f"{name} was modified by the engine"


@scaled(4)
@given(call=engine_calls())
def test_engine_matches_twin(example_counter, call):
    """Generated cell, option, dtype, shape, lengths, absent gradients and NaN/inf: engine == twin."""
    check_against_twin(*call)
    example_counter()


@pytest.mark.parametrize("coupled", [False, True])
def test_twin_lstm_without_peephole_keeps_gates_finite_with_a_nan_cell(coupled):
    G = 3 if coupled else 4
    x, h0, c0 = np.zeros((1, 1, 0)), np.full((1, 1), 0.1), np.full((1, 1), np.nan)
    kernel, recurrent_kernel, bias = np.zeros((0, G)), np.full((1, G), 0.2), np.full(G, 0.1)
    engine = rnnext.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, coupled=coupled)[3]["gates"]
    twin = reference.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, coupled=coupled)[3]["gates"]
    assert np.isfinite(engine).all()  # no peephole: the gates do not see the cell
    assert np.array_equal(np.isnan(twin), np.isnan(engine)), f"twin gates {twin}, engine gates {engine}"


def test_twin_lstm_without_peephole_backward_keeps_an_infinite_cell_gradient():
    x, h0, c0 = np.zeros((1, 1, 0)), np.full((1, 1), 0.06), np.full((1, 1), -0.066)
    kernel, recurrent_kernel, bias = np.zeros((0, 4)), np.array([[0.32, 0.05, -0.27, 0.18]]), np.full(4, 0.1)
    grads = {}
    for module in (rnnext, reference):
        cache = module.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias)[3]
        with np.errstate(all="ignore"):
            grads[module.__name__] = module.lstm_backward(None, None, np.full((1, 1), np.inf), cache, x, kernel,
                                                          recurrent_kernel, bias)["c0"]
    assert grads["rnnext"][0, 0] == np.inf  # dc0 = dc_n * f with f > 0
    assert grads["rnnext.reference"][0, 0] == np.inf, grads


@pytest.mark.parametrize("case", ["rnn-tanh", "lstm", "lstm-peephole", "gru-reset_after", "gru-reset_before"])
def test_nan_weight_does_not_leak_into_dh0_through_padded_steps(case):
    """lengths[0] = 0: row 0 never steps, h_n[0] = h0[0], so dh0[0] = dh_n[0] exactly, whatever the weights."""
    params, options = make_problem(case, (2, 2, 3, 4), np.float64)
    params["recurrent_kernel"][0, 0] = np.nan
    douts = make_douts(case, (2, 2, 3, 4), np.float64)
    lengths = np.array([0, 2])
    _, cache = run_forward(rnnext, case, forward_kwargs(case, params, options, lengths))
    grads = run_backward(rnnext, case, backward_kwargs(case, params, options, lengths, douts, cache))
    assert np.array_equal(grads["h0"][0], douts["h_n"][0]), f"dh0[0] = {grads['h0'][0]}, dh_n[0] = {douts['h_n'][0]}"


def test_relu_backward_passes_nothing_through_a_unit_that_is_off():
    """relu's derivative is a select, in the engine, the twin and PyTorch: a unit with a <= 0 passes no gradient,
    not even a NaN one (NaN * 0 would be NaN)."""
    x, h0 = np.full((1, 1, 1), 1.0), np.zeros((1, 1))
    kernel, recurrent_kernel, bias = np.full((1, 1), -1.0), np.full((1, 1), 0.5), np.zeros(1)
    for module in (rnnext, reference):
        cache = module.rnn_forward(x, h0, kernel, recurrent_kernel, bias, activation="relu")[2]  # a = -1: h = 0
        grads = module.rnn_backward(None, np.full((1, 1), np.nan), cache, x, kernel, recurrent_kernel, bias,
                                    activation="relu")
        assert np.array_equal(grads["x"], np.zeros((1, 1, 1))), f"{module.__name__}: dx = {grads['x']}"


@st.composite
def relayouts(draw, arrays):
    """{name: (layout, axis)} for some of `arrays` (the others stay plain)."""
    out = {}
    for name in sorted(arrays):
        if arrays[name] is not None and draw(st.booleans()):
            out[name] = (draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 2)))
    return out


def apply_layouts(arrays, layouts):
    return {k: (relayout(v, *layouts[k]) if k in layouts else v) for k, v in arrays.items()}


def plain(arrays):
    """The values of relayout'ed arrays as plain native arrays of their dtype (what the twin is given)."""
    return {k: None if v is None else np.array(v, dtype=v.dtype.newbyteorder("=").type) for k, v in arrays.items()}


@scaled(2)
@given(call=engine_calls(with_nonfinite=False), data=st.data())
def test_engine_layouts_and_dtype_flavours(example_counter, call, data):
    """Every array argument (and the cache handed back to backward) in a generated memory layout or dtype
    flavour (pickled, metadata, native '=' or swapped byte order): the results are the twin's on those values."""
    case, dtype, shape, params, options, lengths, douts = call
    engine_params = apply_layouts(params, data.draw(relayouts(params), label="parameter layouts"))
    engine_douts = apply_layouts(douts, data.draw(relayouts(douts), label="gradient layouts"))
    cache_layouts = data.draw(st.dictionaries(st.sampled_from(["h", "c", "gates", "hn", "rh"]),
                                              st.tuples(st.sampled_from(LAYOUTS), st.integers(0, 2)), max_size=3),
                              label="cache layouts")

    def relayout_cache(cache):
        # broadcast would change the cache's values (no longer the forward's), so it is left out here
        return {k: relayout(v, *cache_layouts[k]) if k in cache_layouts and cache_layouts[k][0] != "broadcast"
                else v for k, v in cache.items()}

    check_against_twin(case, dtype, shape, plain(engine_params), options, lengths, plain(engine_douts),
                       engine_params=engine_params, engine_douts=engine_douts, engine_cache=relayout_cache)
    example_counter()


@scaled(0.5)
@given(call=engine_calls(with_nonfinite=False), layout=st.sampled_from(LAYOUTS), axis=st.integers(0, 2))
def test_layout_gives_the_bits_of_the_plain_array(example_counter, call, layout, axis):
    """A non-broadcast layout or dtype flavour of x changes nothing: bit-identical results to the plain x."""
    assume(layout != "broadcast")
    case, dtype, shape, params, options, lengths, douts = call
    plain_out = run_forward(rnnext, case, forward_kwargs(case, params, options, lengths))
    other = run_forward(rnnext, case, forward_kwargs(case, {**params, "x": relayout(params["x"], layout, axis)},
                                                     options, lengths))
    for name in plain_out[0]:
        assert plain_out[0][name].tobytes() == other[0][name].tobytes(), f"{name} differs with a {layout} x"
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# invalid calls: TypeError or ValueError naming the argument

FLOAT_ARGUMENT_CORRUPTIONS = ["extra-axis", "missing-axis", "first-axis+1", "last-axis-1", "flattened", "int64",
                              "float16", "complex128", "bool", "object", "other-float", "structured", "list",
                              "python-scalar", "numpy-scalar", "string", "none"]
X_CORRUPTIONS = ["extra-axis", "missing-axis", "flattened", "T=0", "N=0", "int64", "float16", "complex128", "bool",
                 "object", "structured", "list", "python-scalar", "numpy-scalar", "string", "none", "longdouble"]
LENGTHS_CORRUPTIONS = ["negative", "above-T", "uint64-2**63", "int64-max", "float", "bool", "short", "long",
                       "2-d", "scalar", "ragged", "strings", "complex"]


def corrupt_float(a, corruption, dtype, rng):
    """A wrong value for a floating array argument, or None (the corruption does not apply to a)."""
    other = np.float64 if dtype == np.float32 else np.float32
    if corruption == "extra-axis":
        return a[None]
    if corruption == "missing-axis":
        return a[0] if a.ndim > 1 and a.shape[0] else None
    if corruption == "first-axis+1":
        return np.concatenate([a, a[:1] if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)])
    if corruption == "last-axis-1":
        return a[..., :-1] if a.shape[-1] else None
    if corruption == "flattened":
        return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)
    if corruption in ("int64", "float16", "complex128", "bool", "longdouble"):
        if corruption == "longdouble" and np.dtype(np.longdouble).itemsize == 8:
            return None  # long double is double on this platform: a valid float64
        return a.astype(corruption if corruption != "bool" else np.bool_)
    if corruption == "object":
        return a.astype(object)
    if corruption == "other-float":
        return a.astype(other)
    if corruption == "structured":
        out = np.zeros(a.shape, dtype=[("value", dtype)])
        out["value"] = a
        return out
    if corruption == "list":
        return a.tolist()
    if corruption == "python-scalar":
        return 1.0
    if corruption == "numpy-scalar":
        return dtype(1.0)
    if corruption == "string":
        return "x"
    if corruption == "none":
        return "NONE"  # marker: replaced by None below (None itself means "not applicable")
    if corruption == "T=0":
        return a[:0]
    if corruption == "N=0":
        return a[:, :0]
    raise AssertionError(corruption)


def corrupt_lengths(T, N, corruption, rng):
    good = rng.integers(0, T + 1, size=N)
    n = int(rng.integers(0, N))
    if corruption == "negative":
        good[n] = -int(rng.integers(1, 2**62))
        return good
    if corruption == "above-T":
        good[n] = T + int(rng.integers(1, 1000))
        return good
    if corruption == "uint64-2**63":
        out = good.astype(np.uint64)
        out[n] = np.uint64(2**63) + np.uint64(rng.integers(0, 2**62))
        return out
    if corruption == "int64-max":
        good[n] = np.iinfo(np.int64).max
        return good
    if corruption == "float":
        return good.astype(np.float64)
    if corruption == "bool":
        return good > 0
    if corruption == "short":
        return good[:-1]
    if corruption == "long":
        return np.append(good, 0)
    if corruption == "2-d":
        return good[None]
    if corruption == "scalar":
        return np.int64(T)
    if corruption == "ragged":
        return [[1], [1, 2]][: max(N, 2)]
    if corruption == "strings":
        return ["a"] * N
    if corruption == "complex":
        return good.astype(np.complex128)
    raise AssertionError(corruption)


def call_expecting_rejection(fn, kwargs, name):
    with pytest.raises((TypeError, ValueError)) as caught:
        getattr(rnnext, fn)(**kwargs)
    message = str(caught.value)
    assert message.startswith(f"{fn}: "), f"{fn}: message does not name the function: {message!r}"
    assert mentions(message, name), f"{fn}: the message does not name {name!r}: {message!r}"


def case_of(fn, data):
    cell = fn.split("_")[0]
    return data.draw(st.sampled_from(sorted(c for c in CASES if cell_of(c) == cell)), label="case")


@scaled(3)
@given(fn=st.sampled_from(FUNCTIONS), dtype=st.sampled_from(FLOAT_DTYPES), shape=dims,
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_bad_floating_argument_is_named(example_counter, fn, dtype, shape, seed, data):
    """One floating argument (not x) of a valid call replaced by a wrong shape, dtype or type."""
    case = case_of(fn, data)
    kwargs = valid_kwargs(fn, dtype, case, shape, seed=seed, with_lengths=False)
    names = [k for k, v in kwargs.items() if isinstance(v, np.ndarray) and k != "x"]
    names += [f"cache[{k!r}]" for k in kwargs.get("cache", {})]
    name = data.draw(st.sampled_from(names), label="argument")
    corruption = data.draw(st.sampled_from(FLOAT_ARGUMENT_CORRUPTIONS), label="corruption")
    match = re.fullmatch(r"cache\['(\w+)'\]", name)
    value = kwargs["cache"][match[1]] if match else kwargs[name]
    bad = corrupt_float(value, corruption, dtype, np.random.default_rng(seed))
    assume(bad is not None)
    if isinstance(bad, str) and bad == "NONE":
        # None is a valid value of the optional ones (zero gradient, no peephole)
        assume(name not in ("dy", "dh_n", "dc_n", "peephole"))
        bad = None
    if match:
        kwargs = {**kwargs, "cache": {**kwargs["cache"], match[1]: bad}}
    else:
        kwargs = {**kwargs, name: bad}
    call_expecting_rejection(fn, kwargs, name)
    example_counter()


@scaled(2)
@given(fn=st.sampled_from(FUNCTIONS), dtype=st.sampled_from(FLOAT_DTYPES), shape=dims,
       seed=st.integers(0, 2**32 - 1), corruption=st.sampled_from(X_CORRUPTIONS), data=st.data())
def test_bad_x_is_named(example_counter, fn, dtype, shape, seed, corruption, data):
    case = case_of(fn, data)
    kwargs = valid_kwargs(fn, dtype, case, shape, seed=seed, with_lengths=False)
    bad = corrupt_float(kwargs["x"], corruption, dtype, np.random.default_rng(seed))
    assume(bad is not None)
    if isinstance(bad, str) and bad == "NONE":
        bad = None
    call_expecting_rejection(fn, {**kwargs, "x": bad}, "x")
    example_counter()


@scaled(2)
@given(fn=st.sampled_from(FUNCTIONS), dtype=st.sampled_from(FLOAT_DTYPES), shape=dims,
       seed=st.integers(0, 2**32 - 1), corruption=st.sampled_from(LENGTHS_CORRUPTIONS), data=st.data())
def test_bad_lengths_are_named(example_counter, fn, dtype, shape, seed, corruption, data):
    case = case_of(fn, data)
    kwargs = valid_kwargs(fn, dtype, case, shape, seed=seed, with_lengths=False)
    T, N = shape[:2]
    assume(not (corruption == "ragged" and N < 2))
    bad = corrupt_lengths(T, N, corruption, np.random.default_rng(seed))
    call_expecting_rejection(fn, {**kwargs, "lengths": bad}, "lengths")
    example_counter()


@scaled(0.5)
@given(fn=st.sampled_from([f for f in FUNCTIONS if f.endswith("backward")]), dtype=st.sampled_from(FLOAT_DTYPES),
       shape=dims, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_missing_cache_entry_is_named(example_counter, fn, dtype, shape, seed, data):
    case = case_of(fn, data)
    kwargs = valid_kwargs(fn, dtype, case, shape, seed=seed, with_lengths=False)
    key = data.draw(st.sampled_from(sorted(kwargs["cache"])), label="missing key")
    cache = {k: v for k, v in kwargs["cache"].items() if k != key}
    call_expecting_rejection(fn, {**kwargs, "cache": cache}, "cache")
    example_counter()


@scaled(0.5)
@given(fn=st.sampled_from(["rnn_forward", "rnn_backward"]), dtype=st.sampled_from(FLOAT_DTYPES), shape=dims,
       seed=st.integers(0, 2**32 - 1), activation=st.text(max_size=8))
def test_bad_activation_is_named(example_counter, fn, dtype, shape, seed, activation):
    assume(activation not in ("tanh", "relu", "sigmoid"))
    kwargs = valid_kwargs(fn, dtype, "rnn-tanh", shape, seed=seed, with_lengths=False)
    call_expecting_rejection(fn, {**kwargs, "activation": activation}, "activation")
    example_counter()


@scaled(0.5)
@given(fn=st.sampled_from(FUNCTIONS), dtype=st.sampled_from(FLOAT_DTYPES), shape=dims,
       seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["T", "N"]), data=st.data())
def test_zero_T_or_N_is_refused(example_counter, fn, dtype, shape, seed, which, data):
    """An empty sequence or batch is refused with a message naming x (not a crash, not an empty result)."""
    case = case_of(fn, data)
    kwargs = valid_kwargs(fn, dtype, case, shape, seed=seed, with_lengths=False)
    x = kwargs["x"][:0] if which == "T" else kwargs["x"][:, :0]
    with pytest.raises(ValueError, match=rf"^{fn}: x has shape .*{which}=0"):
        getattr(rnnext, fn)(**{**kwargs, "x": x})
    example_counter()


# ---------------------------------------------------------------------------------------------------------
# impossible sizes: a huge non-contiguous argument needs a copy that cannot be allocated -> MemoryError naming it,
# never a crash. Run in a subprocess, so a crash fails this test instead of killing the session.

HUGE_SCRIPT = textwrap.dedent("""
    import numpy as np, rnnext
    f32 = np.float32
    def huge(shape):
        return np.broadcast_to(f32(0), shape)
    cases = []
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        H = 2
        small = dict(h0=np.zeros((1, H), f32), kernel=np.zeros((1, G * H), f32),
                     recurrent_kernel=np.zeros((H, G * H), f32),
                     bias=np.zeros((2, 3 * H) if cell == "gru" else (G * H,), f32))
        if cell == "lstm":
            small["c0"] = np.zeros((1, H), f32)
        cases.append((cell, "x", {**small, "x": huge((2**36, 1, 1))}))
        cases.append((cell, "x", {**small, "x": huge((2**20, 2**18, 1))}))
        # H = 2**18: recurrent_kernel [H, G*H] has G * 2**36 entries (the others are small enough to copy)
        H = 2**18
        big = dict(x=np.zeros((1, 1, 1), f32), h0=huge((1, H)), kernel=huge((1, G * H)),
                   recurrent_kernel=huge((H, G * H)), bias=huge((2, 3 * H) if cell == "gru" else (G * H,)))
        if cell == "lstm":
            big["c0"] = huge((1, H))
        cases.append((cell, "recurrent_kernel", big))
    for cell, name, kwargs in cases:
        try:
            getattr(rnnext, cell + "_forward")(**kwargs)
            print("RESULT", cell, name, "returned")
        except MemoryError as error:
            print("RESULT", cell, name, "MemoryError", error)
        except (TypeError, ValueError) as error:
            print("RESULT", cell, name, type(error).__name__, error)
""")


def test_huge_noncontiguous_arguments_raise_memory_error():
    result = subprocess.run([sys.executable, "-c", HUGE_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"crashed with return code {result.returncode}:\n{result.stderr[-2000:]}"
    lines = [line.split(" ", 4)[1:] for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 9, result.stdout
    for cell, name, kind, *message in lines:
        message = message[0] if message else ""
        assert kind == "MemoryError", f"{cell} with a huge {name}: {kind} {message}"
        assert mentions(message, name), f"{cell}: the MemoryError does not name {name}: {message}"
