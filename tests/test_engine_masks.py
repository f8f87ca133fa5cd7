"""The regularisers' masks in the engine (issue 15): variational dropout on the inputs and on the recurrent state,
weight-drop on the recurrent kernel and zoneout, against the NumPy twins (rnnext.reference), by finite
differences, across thread counts, and with bad masks."""
import numpy as np
import pytest

import rnnext
import rnnext.reference as ref
from conftest import (CASES, GRADCHECK_TOL, RTOL, as_float64, assert_close, assert_same_bits, backward_kwargs,
                      cell_of, forward_kwargs, gates_of, make_douts, make_problem,
                      mentions, mixed_lengths, numerical_gradient, relative_error, run_backward, run_forward)

# Which masks each variant passes; zoneout exists for the LSTM (h and c, with and without peepholes), the GRU and
# the RNN (h).
VARIANTS = ["dropout", "recurrent_dropout", "weight_drop", "zoneout", "zoneout_eval", "all"]
SHAPES = [(1, 1, 3, 5), (4, 3, 6, 37), (5, 4, 9, 70), (3, 1, 5, 160), (4, 48, 24, 70)]


def zoneout_keys(case):
    return {"lstm": ("zoneout_h", "zoneout_c"), "gru": ("zoneout_h",), "rnn": ("zoneout_h",)}[cell_of(case)]


def make_masks(case, shape, variant, dtype, seed=5):
    """The masks of one variant, drawn as the layers draw them: dropout 0 or 1 / (1 - p), zoneout keeps 0 or 1."""
    T, N, I, H = shape
    G = gates_of(case)
    rng = np.random.default_rng(seed)

    def dropout(p, *dims):
        return ((rng.random(dims) >= p) / (1 - p)).astype(dtype)

    masks = {}
    if variant in ("dropout", "all"):
        masks["input"] = dropout(0.3, N, I)
    if variant in ("recurrent_dropout", "all"):
        masks["state"] = dropout(0.4, N, H)
    if variant in ("weight_drop", "all"):
        masks["weight"] = dropout(0.5, H, G * H)
    for k, key in enumerate(zoneout_keys(case)):
        if variant in ("zoneout", "all"):
            masks[key] = (rng.random((T, N, H)) < (0.2 + 0.2 * k)).astype(dtype)
        elif variant == "zoneout_eval":
            masks[key] = 0.2 + 0.2 * k
    return masks


PARAMS = [(v, c) for v in VARIANTS for c in CASES]


def problem(case, shape, variant, dtype, with_lengths):
    params, options = make_problem(case, shape, dtype)
    lengths = mixed_lengths(shape[0], shape[1]) if with_lengths else None
    masks = make_masks(case, shape, variant, dtype)
    return params, options, lengths, masks


@pytest.mark.parametrize("variant,case", PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_engine_matches_twin(variant, case, dtype, with_lengths):
    for shape in SHAPES:
        params, options, lengths, masks = problem(case, shape, variant, dtype, with_lengths)
        kwargs = {**forward_kwargs(case, params, options, lengths), "masks": masks}
        outs, cache = run_forward(rnnext, case, kwargs)
        masks64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in masks.items()}
        kwargs64 = {**forward_kwargs(case, as_float64(params), options, lengths), "masks": masks64}
        ref_outs, ref_cache = run_forward(ref, case, kwargs64)
        what = f"{case} {variant} {shape} {np.dtype(dtype).name} lengths={with_lengths}"
        assert_close(as_float64(outs), ref_outs, RTOL[dtype], f"forward {what}")
        douts = make_douts(case, shape, dtype)
        grads = run_backward(rnnext, case, {**backward_kwargs(case, params, options, lengths, douts, cache),
                                            "masks": masks})
        ref_grads = run_backward(ref, case, {**backward_kwargs(case, as_float64(params), options, lengths,
                                                               as_float64(douts), ref_cache),
                                             "masks": masks64})
        assert_close(as_float64(grads), ref_grads, RTOL[dtype], f"backward {what}")


@pytest.mark.parametrize("variant,case", PARAMS)
def test_gradients_by_finite_differences(variant, case):
    """float64, masks fixed: every gradient of a random linear loss of (y, h_n[, c_n]) against central
    differences (see numerical_gradient for why 1e-5 holds)."""
    shape = (3, 2, 3, 4)
    params, options, lengths, masks = problem(case, shape, variant, np.float64, True)
    douts = make_douts(case, shape, np.float64)

    def loss():
        outs, _ = run_forward(rnnext, case, {**forward_kwargs(case, params, options, lengths), "masks": masks})
        return sum(float((outs[k] * douts[{"y": "y", "h_n": "h_n", "c_n": "c_n"}[k]]).sum()) for k in outs)

    _, cache = run_forward(rnnext, case, {**forward_kwargs(case, params, options, lengths), "masks": masks})
    grads = run_backward(rnnext, case, {**backward_kwargs(case, params, options, lengths, douts, cache),
                                        "masks": masks})
    for name, array in params.items():
        err = relative_error(grads[name], numerical_gradient(loss, array))
        assert err < GRADCHECK_TOL, f"{case} {variant}: d{name} off by {err:.2e} from finite differences"


@pytest.mark.parametrize("variant,case", [(v, c) for v, c in PARAMS if v == "all" or cell_of(c) == "rnn"])
def test_results_do_not_depend_on_thread_count(variant, case, restore_threads):
    shape = (5, 48, 24, 70)
    params, options, lengths, masks = problem(case, shape, variant, np.float32, True)
    douts = make_douts(case, shape, np.float32)
    results = []
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        outs, cache = run_forward(rnnext, case, {**forward_kwargs(case, params, options, lengths), "masks": masks})
        grads = run_backward(rnnext, case, {**backward_kwargs(case, params, options, lengths, douts, cache),
                                            "masks": masks})
        results.append({**outs, **{f"d{k}": v for k, v in grads.items() if v is not None}})
    for threads, result in zip((2, 3), results[1:]):
        assert_same_bits(result, results[0], f"{case} {variant}: {threads} threads against 1")


@pytest.mark.parametrize("case", ["rnn-tanh", "lstm", "gru-reset_before"])
def test_masks_of_ones_change_nothing(case):
    """Masks of ones (and zoneout rate 0) give the plain cell's results bit for bit."""
    shape = (4, 5, 6, 37)
    T, N, I, H = shape
    params, options = make_problem(case, shape, np.float32)
    lengths = mixed_lengths(T, N)
    ones = {"input": np.ones((N, I), np.float32), "state": np.ones((N, H), np.float32),
            "weight": np.ones((H, gates_of(case) * H), np.float32), **{k: 0.0 for k in zoneout_keys(case)}}
    plain, _ = run_forward(rnnext, case, forward_kwargs(case, params, options, lengths))
    masked, _ = run_forward(rnnext, case, {**forward_kwargs(case, params, options, lengths), "masks": ones})
    assert_same_bits(masked, plain, f"{case} with masks of ones")


BAD = [
    ("input", lambda N, I, H, G, T: np.ones((N, I + 1)), "masks['input']"),
    ("state", lambda N, I, H, G, T: np.ones((N + 1, H)), "masks['state']"),
    ("weight", lambda N, I, H, G, T: np.ones((H, G * H + 1)), "masks['weight']"),
    ("zoneout_h", lambda N, I, H, G, T: 1.0, "masks['zoneout_h']"),
    ("zoneout_h", lambda N, I, H, G, T: -0.1, "masks['zoneout_h']"),
    ("zoneout_h", lambda N, I, H, G, T: np.ones((T, N, H + 1)), "masks['zoneout_h']"),
    ("zoneout_h", lambda N, I, H, G, T: np.full((T, N, H), 2.0), "masks['zoneout_h']"),
    ("bogus", lambda N, I, H, G, T: np.ones((N, H)), "masks"),
]


@pytest.mark.parametrize("case", ["lstm", "gru-reset_after", "rnn-tanh"])
@pytest.mark.parametrize("key,make,name", BAD)
@pytest.mark.parametrize("module", [rnnext, ref], ids=["engine", "twin"])
def test_bad_masks_name_the_argument(case, key, make, name, module):
    shape = (3, 4, 6, 9)
    T, N, I, H = shape
    params, options = make_problem(case, shape, np.float64)
    masks = {key: make(N, I, H, gates_of(case), T)}
    with pytest.raises(ValueError) as info:
        run_forward(module, case, {**forward_kwargs(case, params, options, None), "masks": masks})
    assert mentions(str(info.value), name), str(info.value)


@pytest.mark.parametrize("case", ["lstm-peephole", "lstm-peephole-coupled"])
def test_zoneout_peephole_looks_at_the_kept_cell(case):
    """With zoneout on c only and every unit kept (k_c = 1), c[t+1] = c[t]: the output gate's peephole sees c[t]
    (the kept cell), not the candidate, so the outputs equal a hand computation from the gates."""
    shape = (3, 2, 4, 5)
    T, N, I, H = shape
    params, options = make_problem(case, shape, np.float64)
    params["peephole"] = params["peephole"] + 0.7  # a peephole large enough to matter
    masks = {"zoneout_c": np.ones((T, N, H))}
    outs, cache = run_forward(rnnext, case, {**forward_kwargs(case, params, options, None), "masks": masks})
    assert_same_bits({"c": cache["c"][1:]}, {"c": np.broadcast_to(params["c0"], (T, N, H)).copy()},
                     f"{case}: every cell unit kept")
    G = gates_of(case)
    z_o = None
    for t in range(T):  # the output gate's pre-activation recomputed from the gates before it
        z = params["x"][t] @ params["kernel"] + cache["h"][t] @ params["recurrent_kernel"] + params["bias"]
        z_o = z[:, (G - 1) * H:] + params["peephole"][-1] * cache["c"][t + 1]
        o = 1 / (1 + np.exp(-z_o))
        assert_close({"o": cache["gates"][t][:, (G - 1) * H:]}, {"o": o}, 1e-12, f"{case} step {t}: o")
