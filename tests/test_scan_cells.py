"""Proves the engine's elementwise-recurrence cells (rnnext.indrnn_*, mingru_*, minlstm_*, sru_*,
qrnn_*) against their NumPy twins
in float32 and float64 with and without lengths, the twins against finite differences, and checks what the twins
cannot: bits across thread counts, argument errors naming the argument, inputs left alone and the GIL."""
import inspect
import re

import numpy as np
import pytest

import rnnext
from rnnext import reference

from conftest import (
    DTYPES,
    RTOL,
    SHAPES,
    another_thread_ran_during,
    as_float64,
    assert_close,
    assert_same_bits,
    get_argument,
    mixed_lengths,
    numerical_gradient,
    raises,
    relative_error,
    with_argument,
)

# Every cell x option: (engine function prefix, gate blocks G, options). SRU's kernel has 3 blocks when its highway
# adds x itself (I = H: make_problem then sets I to H) and 4 when the highway is projected.
CASES = {
    "indrnn-relu": ("indrnn", 1, {"activation": "relu"}),
    "indrnn-tanh": ("indrnn", 1, {"activation": "tanh"}),
    "mingru": ("mingru", 2, {}),
    "minlstm": ("minlstm", 3, {}),
    "sru": ("sru", 4, {}),
    "sru-highway-x": ("sru", 3, {}),
    "qrnn": ("qrnn", 3, {}),
    "qrnn-width-1": ("qrnn", 3, {}),
    "qrnn-width-3": ("qrnn", 3, {}),
}
QRNN_WIDTH = {"qrnn": 2, "qrnn-width-1": 1, "qrnn-width-3": 3}  # K, the width of QRNN's convolution
CELLS = {"indrnn": "indrnn-relu", "mingru": "mingru", "minlstm": "minlstm", "sru": "sru", "qrnn": "qrnn"}
STATES = {"sru": ("h", "c"), "qrnn": ("h", "c", "x")}  # the state parts of each cell, ("h",) unless listed
FUNCTIONS = [f"{cell}_{direction}" for cell in CELLS for direction in ("forward", "backward")]


def states_of(case):
    return STATES.get(CASES[case][0], ("h",))


def make_problem(case, shape, dtype=np.float64, seed=0):
    """The differentiable arguments of one case by name, at the scales of conftest.make_problem (pre-activations
    O(1), so no gate sits on a flat tail); IndRNN's recurrent weight in [0, 1.2], around the paper's range."""
    T, N, I, H = shape
    cell, G, _ = CASES[case]
    if case == "sru-highway-x":
        I = H
    rng = np.random.default_rng(seed)
    K = QRNN_WIDTH.get(case, 1)
    params = {"x": rng.standard_normal((T, N, I))}
    params.update({f"{part}0": 0.5 * rng.standard_normal((N, (K - 1) * I if part == "x" else H))
                   for part in states_of(case)})
    kernel_shape = (K, I, G * H) if cell == "qrnn" else (I, G * H)
    params["kernel"] = 0.5 / np.sqrt(K * I) * rng.standard_normal(kernel_shape)
    if cell == "indrnn":
        params["recurrent_weight"] = rng.uniform(0.0, 1.2, H)
    if cell == "sru":
        params["recurrent_weight"] = 0.5 * rng.standard_normal((2, H))
    params["bias"] = 0.1 * rng.standard_normal((2, H) if cell == "sru" else G * H)
    return {name: value.astype(dtype) for name, value in params.items()}


def make_douts(shape, dtype, seed=1, case=None):
    T, N, I, H = shape
    rng = np.random.default_rng(seed)
    K = QRNN_WIDTH.get(case, 1)
    douts = {"y": rng.standard_normal((T, N, H)).astype(dtype)}
    douts.update({f"{part}_n": rng.standard_normal((N, (K - 1) * I if part == "x" else H)).astype(dtype)
                  for part in (states_of(case) if case else ("h",))})
    return douts


def forward(module, case, params, lengths):
    """({"y", "h_n"[, "c_n"]}, cache) of the case's forward in `module` (rnnext or rnnext.reference)."""
    cell, _, options = CASES[case]
    out = getattr(module, f"{cell}_forward")(**params, **options, lengths=lengths)
    return dict(zip(["y"] + [f"{part}_n" for part in states_of(case)], out[:-1])), out[-1]


def backward(module, case, params, lengths, douts, cache):
    cell, _, options = CASES[case]
    weights = {name: value for name, value in params.items() if name not in ("h0", "c0")}
    final = {f"d{part}_n": douts.get(f"{part}_n") for part in states_of(case)}
    return getattr(module, f"{cell}_backward")(douts["y"], *final.values(), cache, **weights, **options,
                                               lengths=lengths)


# ---------------------------------------------------------------------------------------------------------
# 1. engine vs twin (tolerances and shapes as for the other cells: conftest.RTOL, conftest.SHAPES; the observed
# differences are <= 2e-15 in float64 and <= 4e-7 in float32)

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-N{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("with_lengths", [False, True], ids=["no-lengths", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES)
def test_engine_matches_twin(case, dtype, with_lengths, shape):
    params, douts = make_problem(case, shape, dtype), make_douts(shape, dtype, case=case)
    lengths = mixed_lengths(shape[0], shape[1]) if with_lengths else None
    before = {name: value.copy() for name, value in {**params, **douts}.items()}

    outputs, cache = forward(rnnext, case, params, lengths)
    grads = backward(rnnext, case, params, lengths, douts, cache)
    params64, douts64 = as_float64(params), as_float64(douts)
    outputs_ref, cache_ref = forward(reference, case, params64, lengths)
    grads_ref = backward(reference, case, params64, lengths, douts64, cache_ref)

    assert_close(outputs, outputs_ref, RTOL[dtype], f"{case} forward outputs")
    assert_close({f"cache[{k!r}]": v for k, v in cache.items()},
                 {f"cache[{k!r}]": v for k, v in cache_ref.items()}, RTOL[dtype], f"{case} cache")
    assert_close(grads, grads_ref, RTOL[dtype], f"{case} gradients")
    assert set(grads) == set(params)
    for name, value in {**outputs, **grads, **cache}.items():
        assert value.dtype == dtype, f"{name} has dtype {value.dtype}, expected {np.dtype(dtype)}"
        assert value.flags.c_contiguous, f"{name} is not C-contiguous"
    for name, value in before.items():
        assert np.array_equal({**params, **douts}[name], value), f"{name} was modified by the engine"


@pytest.mark.parametrize("absent", ["all", "dy", "final-state"])
@pytest.mark.parametrize("case", CASES)
def test_absent_gradients(case, absent):
    """dy and dh_n may be None (zero); with both None every gradient is exactly zero."""
    shape = (4, 3, 6, 37)
    params, douts = make_problem(case, shape), make_douts(shape, np.float64, case=case)
    if absent in ("all", "dy"):
        douts["y"] = None
    if absent in ("all", "final-state"):
        douts = {name: None if name.endswith("_n") else value for name, value in douts.items()}
    lengths = mixed_lengths(shape[0], shape[1])
    _, cache = forward(rnnext, case, params, lengths)
    grads = backward(rnnext, case, params, lengths, douts, cache)
    _, cache_ref = forward(reference, case, params, lengths)
    assert_close(grads, backward(reference, case, params, lengths, douts, cache_ref), RTOL[np.float64],
                 f"{case} gradients with {absent} absent")
    if absent == "all":
        for name, grad in grads.items():
            assert not grad.any(), f"{name} gradient is not zero with no gradient arriving"


def test_masked_steps_carry_the_state_and_output_zero():
    """docs/conventions.md: a step t >= lengths[n] leaves h unchanged and outputs 0; a row of length 0 returns
    h0 and passes dh_n straight to dh0."""
    shape = (5, 4, 3, 6)
    lengths = np.array([5, 0, 2, 3])
    for case in CASES:
        params, douts = make_problem(case, shape), make_douts(shape, np.float64, case=case)
        outputs, cache = forward(rnnext, case, params, lengths)
        grads = backward(rnnext, case, params, lengths, douts, cache)
        for n, length in enumerate(lengths):
            assert not outputs["y"][length:, n].any(), f"{case}: outputs past row {n}'s length are not zero"
            state = cache["c" if "c" in states_of(case) else "h"]  # h, or the c of SRU and QRNN
            np.testing.assert_array_equal(state[length:, n], np.broadcast_to(state[length, n], state[length:, n].shape))
            assert not grads["x"][length:, n].any(), f"{case}: x gradient past row {n}'s length is not zero"
        np.testing.assert_array_equal(outputs["h_n"][1], params["h0"][1])
        np.testing.assert_array_equal(grads["h0"][1], douts["h_n"][1])


# ---------------------------------------------------------------------------------------------------------
# 2. the twins against central differences (float64; conftest.numerical_gradient says why 1e-6 is the bound)

@pytest.mark.parametrize("case", CASES)
def test_twin_matches_finite_differences(case):
    shape = (4, 3, 3, 5)
    params, douts = make_problem(case, shape, seed=2), make_douts(shape, np.float64, seed=3, case=case)
    lengths = np.array([4, 1, 3])

    def loss():
        outputs, _ = forward(reference, case, params, lengths)
        return sum(np.sum(douts[name] * outputs[name]) for name in outputs)

    _, cache = forward(reference, case, params, lengths)
    grads = backward(reference, case, params, lengths, douts, cache)
    errors = {name: relative_error(grads[name], numerical_gradient(loss, value)) for name, value in params.items()
              if value.size}  # QRNN of width 1 has an empty history x0
    assert all(error < 1e-6 for error in errors.values()), f"{case}: {errors}"


# ---------------------------------------------------------------------------------------------------------
# 3. threads: every column runs alone through all steps on fixed work items (scan_loop.h), so the thread count
# changes speed, never bits. The shapes are above the scan's parallel threshold (T*N*H >= 2**15); the last is a
# single sequence.

THREAD_SHAPES = [(6, 48, 24, 130), (4, 40, 16, 300), (220, 1, 16, 170)]


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=lambda s: "T{}-N{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES)
def test_threads_give_identical_bits(case, dtype, shape, restore_threads):
    T, N, _, H = shape
    assert T * N * H >= 2**15, "shape too small for the scan to use 2 threads"
    params, douts = make_problem(case, shape, dtype), make_douts(shape, dtype, case=case)
    lengths = mixed_lengths(T, N) if N > 1 else None
    results = []
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        outputs, cache = forward(rnnext, case, params, lengths)
        grads = backward(rnnext, case, params, lengths, douts, cache)
        results.append({**outputs, **{f"cache[{k!r}]": v for k, v in cache.items()},
                        **{f"d{k}": v for k, v in grads.items()}})
    assert_same_bits(results[1], results[0], f"{case}, 2 threads vs 1")
    assert_same_bits(results[2], results[0], f"{case}, 3 threads vs 1")


# ---------------------------------------------------------------------------------------------------------
# 4. bad input: the exception type, the function, the argument and what was expected

BAD_SHAPE = (3, 4, 6, 9)  # T, N, I, H


def valid_kwargs(fn, dtype=np.float64):
    cell, direction = fn.split("_")
    case = CELLS[cell]
    params = make_problem(case, BAD_SHAPE, dtype)
    lengths = mixed_lengths(BAD_SHAPE[0], BAD_SHAPE[1])
    options = CASES[case][2]
    if direction == "forward":
        return {**params, **options, "lengths": lengths}
    _, cache = forward(rnnext, case, params, lengths)
    douts = make_douts(BAD_SHAPE, dtype, case=case)
    weights = {name: value for name, value in params.items() if name not in ("x", "h0", "c0")}
    final = {f"d{part}_n": douts[f"{part}_n"] for part in states_of(case)}
    return {"dy": douts["y"], **final, "cache": cache, "x": params["x"], **weights, **options, "lengths": lengths}


def expected_shape(fn, name):
    T, N, I, H = BAD_SHAPE
    cell = fn.split("_")[0]
    G = CASES[CELLS[cell]][1]
    gates = "H" if G == 1 else f"{G}*H"
    state, sequence = f"(N={N}, H={H})", f"(T+1={T + 1}, N={N}, H={H})"
    if cell == "sru":
        vector = f"(2, H={H})"
        kernel = f"(I={I}, 4*H={4 * H}), or (I, 3*H={3 * H}) when I = H (the highway then adds x itself)"
    else:
        vector, kernel = f"(H={H},)", f"(I={I}, {gates}={G * H})"
    if cell == "qrnn":
        vector, kernel = f"(3*H={3 * H},)", f"(K=2, I={I}, 3*H={3 * H})"
    history = f"(N={N}, (K-1)*I={I})"  # QRNN's case has K = 2
    return {"h0": state, "c0": state, "dh_n": state, "dc_n": state, "x0": history, "dx_n": history,
            "dy": f"(T={T}, N={N}, H={H})",
            "kernel": kernel, "bias": vector if cell in ("sru", "qrnn") else f"({gates}={G * H},)",
            "recurrent_weight": vector, "cache['h']": sequence, "cache['c']": sequence,
            "cache['gates']": f"(T={T}, N={N}, {gates}={G * H})"}[name]


def sized_arguments():
    """(fn, name) for every array argument whose shape follows from x and H (not x, not the one H is read from)."""
    pairs = []
    for fn in FUNCTIONS:
        kwargs = valid_kwargs(fn)
        names = [k for k, v in kwargs.items() if isinstance(v, np.ndarray) and k not in ("x", "lengths")]
        names += [f"cache[{k!r}]" for k in kwargs.get("cache", {})]
        source = "recurrent_weight" if fn.startswith(("indrnn", "sru")) else "kernel"  # where H is read
        pairs += [pytest.param(fn, name, id=f"{fn}-{name}") for name in names if name != source]
    return pairs


@pytest.mark.parametrize("fn, name", sized_arguments())
def test_wrong_shape_dtype_and_type(fn, name):
    kwargs = valid_kwargs(fn)
    a = get_argument(kwargs, name)
    wrong = [a[:-1], a[..., :-1], a[None], a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)]
    for value in wrong:
        raises(ValueError, fn, f"{name} has shape {value.shape}, expected {expected_shape(fn, name)}",
               with_argument(kwargs, name, value))
    for bad in (np.int64, np.float32):
        raises(TypeError, fn, f"{name} has dtype {np.dtype(bad)}, expected float64 like the other floating arguments",
               with_argument(kwargs, name, a.astype(bad)))
    raises(TypeError, fn, f"{name} must be a NumPy array, got <class 'list'>", with_argument(kwargs, name, a.tolist()))
    if name not in ("dy", "dh_n", "dc_n", "dx_n"):
        raises(TypeError, fn, f"{name} is None, expected a NumPy array", with_argument(kwargs, name, None))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_x_and_hidden_size_errors(fn):
    T, N, I, H = BAD_SHAPE
    kwargs = valid_kwargs(fn)
    x = kwargs["x"]
    raises(ValueError, fn, f"x has shape {x[0].shape}, expected (T, N, I) (time-major)", with_argument(kwargs, "x", x[0]))
    raises(ValueError, fn, f"x has shape (0, {N}, {I}): T=0, an empty sequence; expected T >= 1",
           with_argument(kwargs, "x", x[:0]))
    raises(TypeError, fn, "x has dtype int64, expected float32 or float64", with_argument(kwargs, "x", x.astype(np.int64)))
    if fn.startswith("indrnn"):
        u = kwargs["recurrent_weight"]
        for value in (u[None], u[:0]):
            raises(ValueError, fn, f"recurrent_weight has shape {value.shape}, expected (H,) with H >= 1",
                   with_argument(kwargs, "recurrent_weight", value))
        raises(ValueError, fn, f"kernel has shape ({I}, {H}), expected (I={I + 1}, H={H})",
               with_argument(kwargs, "x", np.zeros((T, N, I + 1))))
    elif fn.startswith("sru"):
        v = kwargs["recurrent_weight"]
        for value in (v[0], v[:1], v[:, :0]):
            raises(ValueError, fn, f"recurrent_weight has shape {value.shape}, expected (2, H) with H >= 1 (rows v_f, "
                   "v_r)", with_argument(kwargs, "recurrent_weight", value))
        # a 3-block kernel (the highway adds x itself) needs I = H
        raises(ValueError, fn, f"kernel has shape ({I}, {3 * H}), expected {expected_shape(fn, 'kernel')}",
               with_argument(kwargs, "kernel", kwargs["kernel"][:, :3 * H]))
    elif fn.startswith("qrnn"):
        k = kwargs["kernel"]
        for value in (k[0], k[:0], k[:, :-1], k[..., :-1], k[..., :0]):
            raises(ValueError, fn, f"kernel has shape {value.shape}, expected (K, I={I}, 3*H) with the width K >= 1 "
                   "and H >= 1", with_argument(kwargs, "kernel", value))
    else:
        k = kwargs["kernel"]
        G = k.shape[1] // H
        for value in (k[:, :-1], k[:-1], k[None], k[:, :0]):
            raises(ValueError, fn, f"kernel has shape {value.shape}, expected (I={I}, {G}*H) with H >= 1",
                   with_argument(kwargs, "kernel", value))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_lengths_and_cache_errors(fn):
    T, N, _, _ = BAD_SHAPE
    kwargs = valid_kwargs(fn)
    lengths = kwargs["lengths"].copy()
    lengths[2] = T + 1
    raises(ValueError, fn, f"lengths[2] = {T + 1} is out of range [0, T={T}]", with_argument(kwargs, "lengths", lengths))
    raises(ValueError, fn, f"lengths has shape ({N - 1},), expected (N={N},)",
           with_argument(kwargs, "lengths", lengths[:-1]))
    for key in kwargs.get("cache", {}):
        cache = {k: v for k, v in kwargs["cache"].items() if k != key}
        raises(ValueError, fn, f"cache has no entry '{key}'; pass the cache returned by the forward call",
               {**kwargs, "cache": cache})


@pytest.mark.parametrize("fn", ["indrnn_forward", "indrnn_backward"])
def test_bad_activation(fn):
    raises(ValueError, fn, "activation is 'sigmoid', expected 'relu' or 'tanh'",
           {**valid_kwargs(fn), "activation": "sigmoid"})


def test_twin_names_and_arguments_match_the_engine():
    """The twins take the engine's argument names (the engine's are in its signature line)."""
    for fn in FUNCTIONS:
        signature = getattr(rnnext, fn).__doc__.splitlines()[0]
        engine = [part.split(":")[0].strip() for part in re.fullmatch(rf"{fn}\((.*)\) -> .*", signature)[1].split(", ")]
        assert list(inspect.signature(getattr(reference, fn)).parameters) == engine, fn


# ---------------------------------------------------------------------------------------------------------
# 5. the GIL is released during compute (conftest.another_thread_ran_during says how this is seen without a clock)

@pytest.mark.parametrize("fn", FUNCTIONS)
def test_gil_released(fn):
    cell, direction = fn.split("_")
    for T in (16, 64, 256, 1024, 4096):
        params = make_problem(CELLS[cell], (T, 16, 32, 128))
        if direction == "forward":
            kwargs = {**params, **CASES[CELLS[cell]][2]}
        else:
            _, cache = forward(rnnext, CELLS[cell], params, None)
            final = {f"d{part}_n": params[f"{part}0"] for part in states_of(CELLS[cell])}
            kwargs = {"dy": None, **final, "cache": cache, "x": params["x"], **CASES[CELLS[cell]][2],
                      **{k: v for k, v in params.items() if k not in ("x", "h0", "c0")}}
        if another_thread_ran_during(lambda: getattr(rnnext, fn)(**kwargs)):
            return
    pytest.fail(f"{fn}: no other Python thread ran during calls of up to T=4096 steps; is the GIL held?")
