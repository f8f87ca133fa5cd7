"""Proves rnnext.reference correct on its own terms: every backward matches central finite differences of its
forward in float64, for every cell and option, with and without lengths; plus masking, dtype and argument checks."""
import re

import numpy as np
import pytest

from rnnext import reference

from conftest import (CASES, backward_kwargs, cell_of, expected_grad_names, forward_kwargs, make_problem,
                      numerical_gradient, relative_error, run_backward, run_forward, sigmoid)

T, N, I, H = SHAPE = 4, 3, 4, 3
LENGTHS = np.array([T, 0, 2])  # a full row, an empty row and a middle one; unsorted on purpose

LENGTH_OPTIONS = {"no-lengths": None, "lengths": LENGTHS}


def problem(case, dtype=np.float64):
    """make_problem at this module's small shape, every array drawn at 0.5 * standard normal."""
    return make_problem(case, SHAPE, dtype, scale=0.5)


def forward(case, params, options, lengths):
    """The twin's forward; returns ({"y", "h_n"[, "c_n"]}, cache)."""
    return run_forward(reference, case, forward_kwargs(case, params, options, lengths))


def backward(case, douts, cache, params, options, lengths):
    """The twin's backward with output gradients douts {"y", "h_n"[, "c_n"]} (values may be None)."""
    return run_backward(reference, case, backward_kwargs(case, params, options, lengths, douts, cache))


def rnn_preactivations(params, cache):
    """a_t = x[t] @ kernel + h[t] @ recurrent_kernel + bias at every step, from the cached states."""
    h = cache["h"]
    return np.stack([params["x"][t] @ params["kernel"] + h[t] @ params["recurrent_kernel"] + params["bias"]
                     for t in range(T)])


# ---------------------------------------------------------------------------------------------------------
# finite differences

# Central differences with eps = 1e-6 in float64: the truncation error is O(eps^2) ~ 1e-12 and the rounding
# error is O(u * |L| / eps) ~ 1e-16 * 10 / 1e-6 ~ 1e-9, so the numerical gradient is good to ~1e-9 in absolute
# terms. The relative error of a tensor is taken against its largest entry (entries near zero are pure rounding
# noise when divided by themselves); with gradients of order 0.1..1 it lands near 1e-9, and 1e-6 leaves margin
# while any real mistake (a missing term, a wrong sign, a swapped block) shows up at 1e-3 or worse.
EPS = 1e-6
RTOL = 1e-6


@pytest.mark.parametrize("lengths_id", list(LENGTH_OPTIONS))
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_match_finite_differences(case, lengths_id):
    lengths = LENGTH_OPTIONS[lengths_id]
    params, options = problem(case)
    outs, cache = forward(case, params, options, lengths)
    if options.get("activation") == "relu":
        a = rnn_preactivations(params, cache)
        assert np.min(np.abs(a)) > 1e-4, "a relu pre-activation sits on the kink; pick another seed"

    # L = sum(y * wy) + sum(h_n * wh) (+ sum(c_n * wc)), so dy, dh_n, dc_n are the weights themselves
    rng = np.random.default_rng(1)
    weights = {name: rng.standard_normal(out.shape) for name, out in outs.items()}

    def loss():
        outs, _ = forward(case, params, options, lengths)
        return sum(np.sum(outs[name] * weights[name]) for name in outs)

    grads = backward(case, weights, cache, params, options, lengths)
    assert set(grads) == expected_grad_names(case)
    if "peephole" in grads and "peephole" not in params:
        assert grads["peephole"] is None

    numeric = {name: numerical_gradient(loss, value, EPS) for name, value in params.items()}
    errors = {}
    for name in params:
        assert grads[name].shape == params[name].shape, f"grad {name!r} has shape {grads[name].shape}"
        errors[name] = relative_error(grads[name], numeric[name])
    report = ", ".join(f"{name}: {err:.1e}" for name, err in errors.items())
    bad = [name for name, err in errors.items() if not err < RTOL]
    assert not bad, f"{case} ({lengths_id}): max relative error above {RTOL:g} for {bad}; all: {report}"


# ---------------------------------------------------------------------------------------------------------
# one step against the equations of docs/conventions.md, written out with explicit column slices: finite
# differences cannot see a swapped gate block or a misplaced peephole, this can

def one_step_by_the_conventions(case, p, options):
    """(h_new, c_new or None) after the first step, straight from the conventions' equations."""
    cell = cell_of(case)
    x, h = p["x"][0], p["h0"]
    block = lambda a, k: a[:, k * H:(k + 1) * H]  # noqa: E731 (column block k of a gate-stacked array)
    if cell == "rnn":
        act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": sigmoid}[options["activation"]]
        return act(x @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"]), None
    if cell == "lstm":
        c = p["c0"]
        z = x @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"]
        peep = p.get("peephole")
        if options["coupled"]:
            z_f, z_g, z_o = block(z, 0), block(z, 1), block(z, 2)
            p_f, p_o = (0, 0) if peep is None else (peep[0], peep[1])
            f = sigmoid(z_f + p_f * c)
            i = 1 - f
        else:
            z_i, z_f, z_g, z_o = block(z, 0), block(z, 1), block(z, 2), block(z, 3)
            p_i, p_f, p_o = (0, 0, 0) if peep is None else (peep[0], peep[1], peep[2])
            i = sigmoid(z_i + p_i * c)
            f = sigmoid(z_f + p_f * c)
        c_new = f * c + i * np.tanh(z_g)
        o = sigmoid(z_o + p_o * c_new)
        return o * np.tanh(c_new), c_new
    W, U, b = p["kernel"], p["recurrent_kernel"], p["bias"]
    if options["reset_after"]:
        xw = x @ W + b[0]
        hu = h @ U + b[1]
        r = sigmoid(block(xw, 0) + block(hu, 0))
        z = sigmoid(block(xw, 1) + block(hu, 1))
        n = np.tanh(block(xw, 2) + r * block(hu, 2))
    else:
        xw = x @ W + b
        r = sigmoid(block(xw, 0) + h @ block(U, 0))
        z = sigmoid(block(xw, 1) + h @ block(U, 1))
        n = np.tanh(block(xw, 2) + (r * h) @ block(U, 2))
    return (1 - z) * n + z * h, None


@pytest.mark.parametrize("case", list(CASES))
def test_first_step_follows_the_conventions(case):
    params, options = problem(case)
    outs, cache = forward(case, params, options, None)
    h_new, c_new = one_step_by_the_conventions(case, params, options)
    np.testing.assert_allclose(outs["y"][0], h_new, rtol=1e-12, atol=1e-14, err_msg="y[0]")
    np.testing.assert_allclose(cache["h"][1], h_new, rtol=1e-12, atol=1e-14, err_msg="cache['h'][1]")
    if c_new is not None:
        np.testing.assert_allclose(cache["c"][1], c_new, rtol=1e-12, atol=1e-14, err_msg="cache['c'][1]")


# ---------------------------------------------------------------------------------------------------------
# masking

@pytest.mark.parametrize("case", list(CASES))
def test_masked_steps_output_zero_and_carry_the_state(case):
    params, options = problem(case)
    outs, _ = forward(case, params, options, LENGTHS)
    states = [name for name in ("h_n", "c_n") if name in outs]
    initial = {"h_n": params["h0"], "c_n": params.get("c0")}
    for n, length in enumerate(LENGTHS):
        assert np.all(outs["y"][length:, n] == 0), f"row {n}: y is not exactly 0 past length {length}"
        if length == 0:
            for name in states:
                np.testing.assert_array_equal(outs[name][n], initial[name][n], err_msg=f"row {n}: {name}")
            continue
        # the unmasked forward on the first `length` steps; the whole batch is run so that every matmul has
        # the same shape as in the masked run, which makes the results bitwise comparable
        prefix = dict(params, x=params["x"][:length])
        prefix_outs, _ = forward(case, prefix, options, None)
        np.testing.assert_array_equal(outs["y"][:length, n], prefix_outs["y"][:, n], err_msg=f"row {n}: y")
        for name in states:
            np.testing.assert_array_equal(outs[name][n], prefix_outs[name][n], err_msg=f"row {n}: {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_no_lengths_equals_full_lengths(case):
    params, options = problem(case)
    outs_none, cache_none = forward(case, params, options, None)
    full = np.full(N, T)
    outs_full, cache_full = forward(case, params, options, full)
    for name in outs_none:
        np.testing.assert_array_equal(outs_none[name], outs_full[name], err_msg=name)
    rng = np.random.default_rng(2)
    douts = {name: rng.standard_normal(out.shape) for name, out in outs_none.items()}
    grads_none = backward(case, douts, cache_none, params, options, None)
    grads_full = backward(case, douts, cache_full, params, options, full)
    for name in grads_none:
        np.testing.assert_array_equal(grads_none[name], grads_full[name], err_msg=f"grad {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_none_output_gradients_mean_zero(case):
    params, options = problem(case)
    outs, cache = forward(case, params, options, LENGTHS)
    grads_none = backward(case, {name: None for name in outs}, cache, params, options, LENGTHS)
    grads_zero = backward(case, {name: np.zeros_like(out) for name, out in outs.items()}, cache, params, options,
                          LENGTHS)
    for name in grads_zero:
        np.testing.assert_array_equal(grads_none[name], grads_zero[name], err_msg=f"grad {name}")


# ---------------------------------------------------------------------------------------------------------
# dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_dtype_is_kept(case, dtype):
    params, options = problem(case, dtype)
    outs, cache = forward(case, params, options, LENGTHS)
    grads = backward(case, outs, cache, params, options, LENGTHS)
    arrays = {**outs, **{f"cache[{k!r}]": v for k, v in cache.items()},
              **{f"grad {k}": v for k, v in grads.items() if v is not None}}
    wrong = {name: a.dtype for name, a in arrays.items() if a.dtype != dtype}
    assert not wrong, f"{case}: expected {np.dtype(dtype)}, got {wrong}"


@pytest.mark.parametrize("case", list(CASES))
def test_saturated_float32_raises_no_warning(case):
    # pre-activations far beyond the float32 range of exp(): sigmoid must saturate without an overflow warning
    # (pytest turns warnings into errors here)
    params, options = problem(case, np.float32)
    params["x"] = params["x"] * np.float32(1e3)
    outs, cache = forward(case, params, options, LENGTHS)
    grads = backward(case, outs, cache, params, options, LENGTHS)
    for name, a in {**outs, **grads}.items():
        assert a is None or np.all(np.isfinite(a)), name


# ---------------------------------------------------------------------------------------------------------
# argument checks: each bad call raises ValueError whose message starts with "<function>: <argument>"

def _shape(*shape):
    return np.zeros(shape)


BAD_CALLS = {
    # id: (case, direction, change to the call, function, argument named in the message)
    "h0-rows": ("rnn-tanh", "forward", {"h0": _shape(N + 1, H)}, "rnn_forward", "h0"),
    "h0-dtype": ("rnn-tanh", "forward", {"h0": np.zeros((N, H), np.float32)}, "rnn_forward", "h0"),
    "x-2d": ("rnn-tanh", "forward", {"x": _shape(T, N)}, "rnn_forward", "x"),
    "x-empty": ("gru-reset_after", "forward", {"x": _shape(0, N, I)}, "gru_forward", "x"),
    "x-int": ("rnn-tanh", "forward", {"x": np.zeros((T, N, I), np.int64)}, "rnn_forward", "x"),
    "activation": ("rnn-tanh", "forward", {"activation": "softplus"}, "rnn_forward", "activation"),
    "activation-backward": ("rnn-tanh", "backward", {"activation": "gelu"}, "rnn_backward", "activation"),
    "c0": ("lstm", "forward", {"c0": _shape(N, H + 1)}, "lstm_forward", "c0"),
    "kernel-gates": ("lstm", "forward", {"kernel": _shape(I, 3 * H)}, "lstm_forward", "kernel"),
    "recurrent_kernel": ("gru-reset_after", "forward", {"recurrent_kernel": _shape(H, 2 * H)}, "gru_forward",
                         "recurrent_kernel"),
    "bias-gru-after": ("gru-reset_after", "forward", {"bias": _shape(3 * H)}, "gru_forward", "bias"),
    "bias-gru-before": ("gru-reset_before", "forward", {"bias": _shape(2, 3 * H)}, "gru_forward", "bias"),
    "bias-lstm": ("lstm-coupled", "backward", {"bias": _shape(4 * H)}, "lstm_backward", "bias"),
    "peephole-coupled": ("lstm-coupled", "forward", {"peephole": _shape(3, H)}, "lstm_forward", "peephole"),
    "peephole-uncoupled": ("lstm", "forward", {"peephole": _shape(2, H)}, "lstm_forward", "peephole"),
    "lengths-too-long": ("rnn-tanh", "forward", {"lengths": np.array([T + 1, 0, 1])}, "rnn_forward", "lengths"),
    "lengths-negative": ("lstm", "backward", {"lengths": np.array([-1, 0, 1])}, "lstm_backward", "lengths"),
    "lengths-shape": ("gru-reset_after", "forward", {"lengths": np.array([1, 2])}, "gru_forward", "lengths"),
    "lengths-float": ("gru-reset_after", "forward", {"lengths": np.array([1.0, 2.0, 3.0])}, "gru_forward",
                      "lengths"),
    "dy": ("rnn-tanh", "backward", {"dy": _shape(T, N, H + 1)}, "rnn_backward", "dy"),
    "dh_n": ("gru-reset_before", "backward", {"dh_n": _shape(N, 2 * H)}, "gru_backward", "dh_n"),
    "dc_n": ("lstm", "backward", {"dc_n": _shape(N, H + 1)}, "lstm_backward", "dc_n"),
    "cache-key": ("gru-reset_after", "backward", {"cache": "drop hn"}, "gru_backward", "cache"),
    "cache-shape": ("lstm", "backward", {"cache": "short c"}, "lstm_backward", "cache['c']"),
}


@pytest.mark.parametrize("bad", list(BAD_CALLS))
def test_bad_arguments_raise_errors_naming_them(bad):
    case, direction, change, function, argument = BAD_CALLS[bad]
    params, options = problem(case)
    lengths = LENGTHS
    outs, cache = forward(case, params, options, lengths)
    douts = {name: np.ones_like(out) for name, out in outs.items()}
    for key, value in change.items():
        if key in params or key == "peephole":
            params[key] = value
        elif key in options or key == "activation":
            options[key] = value
        elif key == "lengths":
            lengths = value
        elif key == "cache":
            cache = dict(cache)
            if value == "drop hn":
                del cache["hn"]
            else:
                cache["c"] = cache["c"][:-1]
        else:
            douts[{"dy": "y", "dh_n": "h_n", "dc_n": "c_n"}[key]] = value
    # A wrong dtype is a TypeError (as in the engine), everything else a ValueError.
    error = TypeError if bad.endswith(("dtype", "int")) else ValueError
    with pytest.raises(error, match="^" + re.escape(f"{function}: {argument}")):
        if direction == "forward":
            forward(case, params, options, lengths)
        else:
            backward(case, douts, cache, params, options, lengths)


def test_error_message_names_shape_and_expectation():
    params, options = problem("lstm")
    params["h0"] = _shape(N + 1, H)
    expected = f"lstm_forward: h0 has shape ({N + 1}, {H}), expected (N={N}, H={H})"
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        forward("lstm", params, options, None)
