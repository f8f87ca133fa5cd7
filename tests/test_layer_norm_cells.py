"""The layer-normalised LSTM: engine (layer_norm_lstm.h) against its NumPy twin (reference/layer_norm_cells.py),
both against finite differences, thread-count and cache independence, bad input, and the LSTM(layer_norm=True)
layer (summary counts, checkpoints, step, lengths, bidirectional stacks, the converters that refuse it)."""
import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext.gradcheck import gradcheck
from rnnext.layers import LSTM, Dense
from rnnext.losses import mean_squared_error
from rnnext.models import Sequential, load
from rnnext.reference import layer_norm_cells as twin

from conftest import GRADCHECK_TOL, assert_close, assert_same_bits, check_rows_alone, check_step_matches_sequence, \
    numerical_gradient, requires_openmp

# Twin against engine: float64 agrees to rounding (1e-10 leaves room for the different summation orders of the
# statistics and the GEMMs); float32 to ~10 ulps of the largest entry of each tensor.
TWIN_TOL = {np.float32: 2e-5, np.float64: 1e-10}
GRAD_NAMES = ("x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma",
              "ln_cell_gamma", "ln_cell_beta")
WEIGHT_NAMES = GRAD_NAMES[3:]
# (T, N, I, H): unit blocks of 32 (a partial last one at H = 40), and N = 1's blocks of 128 (two at H = 130)
SHAPES = [(5, 3, 4, 40), (4, 1, 3, 130), (3, 6, 5, 64)]


def make_problem(shape, dtype, seed=0):
    """Arguments of layer_norm_lstm_forward with gains and shifts away from 1 and 0, so each one matters."""
    T, N, I, H = shape
    rng = np.random.default_rng(seed)

    def draw(*s, scale=1.0, offset=0.0):
        return (offset + scale * rng.standard_normal(s)).astype(dtype)

    return {"x": draw(T, N, I), "h0": draw(N, H), "c0": draw(N, H), "kernel": draw(I, 4 * H, scale=0.5),
            "recurrent_kernel": draw(H, 4 * H, scale=0.3), "bias": draw(4 * H, scale=0.1),
            "ln_input_gamma": draw(4 * H, scale=0.2, offset=1.0), "ln_recurrent_gamma": draw(4 * H, scale=0.2, offset=1.0),
            "ln_cell_gamma": draw(H, scale=0.2, offset=1.0), "ln_cell_beta": draw(H, scale=0.1)}


def output_gradients(shape, dtype, seed=1):
    T, N, _, H = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((T, N, H), (N, H), (N, H))]


def lengths_for(shape):
    T, N = shape[:2]
    return np.array([(T, 0, 2, T - 1, 1, T)[n % 6] for n in range(N)], dtype=np.int64)


def forward_and_backward(module, p, douts, lengths):
    y, h_n, c_n, cache = module.layer_norm_lstm_forward(**p, lengths=lengths)
    weights = {name: p[name] for name in WEIGHT_NAMES}
    grads = module.layer_norm_lstm_backward(*douts, cache, p["x"], **weights, lengths=lengths)
    return {"y": y, "h_n": h_n, "c_n": c_n, **{f"cache.{k}": v for k, v in cache.items()}}, grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_matches_twin(shape, with_lengths, dtype):
    p = make_problem(shape, dtype)
    douts = output_gradients(shape, dtype)
    lengths = lengths_for(shape) if with_lengths else None
    engine_out, engine_grads = forward_and_backward(_core, p, douts, lengths)
    twin_out, twin_grads = forward_and_backward(twin, p, douts, lengths)
    assert all(a.dtype == dtype for a in list(engine_out.values()) + list(engine_grads.values()))
    assert_close(engine_out, twin_out, TWIN_TOL[dtype], "forward")
    assert_close(engine_grads, twin_grads, TWIN_TOL[dtype], "gradients")


def test_absent_output_gradients_are_zero():
    shape = SHAPES[0]
    p = make_problem(shape, np.float64)
    _, _, _, cache = _core.layer_norm_lstm_forward(**p)
    weights = {name: p[name] for name in WEIGHT_NAMES}
    zeros = [np.zeros_like(a) for a in output_gradients(shape, np.float64)]
    assert_same_bits(_core.layer_norm_lstm_backward(None, None, None, cache, p["x"], **weights),
                     _core.layer_norm_lstm_backward(*zeros, cache, p["x"], **weights), "absent dy, dh_n, dc_n")


@pytest.mark.parametrize("module", [twin, _core], ids=["twin", "engine"])
def test_gradients_match_finite_differences(module):
    shape = (3, 2, 3, 5)
    p = make_problem(shape, np.float64, seed=3)
    douts = output_gradients(shape, np.float64, seed=4)
    lengths = np.array([3, 2])

    def loss():
        y, h_n, c_n, _ = module.layer_norm_lstm_forward(**p, lengths=lengths)
        return sum(float((a * d).sum()) for a, d in zip((y, h_n, c_n), douts))

    _, grads = forward_and_backward(module, p, douts, lengths)
    names = {"h0": "h0", "c0": "c0", **{name: name for name in ("x",) + WEIGHT_NAMES}}
    numeric = {name: numerical_gradient(loss, p[arg]) for name, arg in names.items()}
    # central differences in float64 are good to ~1e-9 of O(1) gradients (conftest.numerical_gradient)
    assert_close({name: grads[name] for name in numeric}, numeric, 1e-7, "gradients against finite differences")


@requires_openmp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_give_identical_bits(dtype, restore_threads):
    shape = (4, 8, 6, 96)  # 2 N H 4H = 590k flops a step: the loop uses every thread it is given
    p = make_problem(shape, dtype)
    douts = output_gradients(shape, dtype)
    results = []
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        results.append(forward_and_backward(_core, p, douts, lengths_for(shape)))
    for out, grads in results[1:]:
        assert_same_bits(out, results[0][0], "forward")
        assert_same_bits(grads, results[0][1], "gradients")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cache_free_forward_gives_the_same_bits(shape, dtype):
    p = make_problem(shape, dtype)
    lengths = lengths_for(shape)
    cached = _core.layer_norm_lstm_forward(**p, lengths=lengths)
    y, h_n, c_n, cache = _core.layer_norm_lstm_forward(**p, lengths=lengths, keep_cache=False)
    assert cache is None
    assert_same_bits({"y": y, "h_n": h_n, "c_n": c_n}, dict(zip(("y", "h_n", "c_n"), cached[:3])), "keep_cache=False")


@pytest.mark.parametrize("name, bad, message", [
    ("ln_cell_gamma", np.ones(7), "ln_cell_gamma has shape (7,), expected (H=5,)"),
    ("ln_input_gamma", np.ones(5), "ln_input_gamma has shape (5,), expected (4*H=20,)"),
    ("ln_recurrent_gamma", np.ones((2, 20)), "ln_recurrent_gamma has shape (2, 20), expected (4*H=20,)"),
    ("ln_cell_beta", np.ones(5, dtype=np.float32), "ln_cell_beta"),
    ("recurrent_kernel", np.ones((5, 15)), "recurrent_kernel has shape (5, 15), expected (H, 4*H)"),
    ("h0", np.ones((3, 5)), "h0 has shape (3, 5), expected (N=2, H=5)"),
])
def test_bad_arguments_are_named(name, bad, message):
    p = make_problem((3, 2, 3, 5), np.float64)
    p[name] = bad
    with pytest.raises((ValueError, TypeError)) as error:
        _core.layer_norm_lstm_forward(**p)
    assert message in str(error.value) and str(error.value).startswith("layer_norm_lstm_forward:")


def test_backward_names_a_missing_cache_entry():
    p = make_problem((3, 2, 3, 5), np.float64)
    _, _, _, cache = _core.layer_norm_lstm_forward(**p)
    del cache["cell_rstd"]
    with pytest.raises(ValueError, match="layer_norm_lstm_backward: cache has no entry 'cell_rstd'"):
        _core.layer_norm_lstm_backward(None, None, None, cache, p["x"], **{n: p[n] for n in WEIGHT_NAMES})


def test_lengths_are_checked():
    p = make_problem((3, 2, 3, 5), np.float64)
    with pytest.raises(ValueError, match="layer_norm_lstm_forward: lengths"):
        _core.layer_norm_lstm_forward(**p, lengths=np.array([4, 1]))


# -- the layer

def ln_layer(**options):
    return LSTM(6, layer_norm=True, dtype=np.float64, seed=3, **options)


def test_layer_parameters_and_counts():
    layer = LSTM(6, layer_norm=True, input_size=4, num_layers=2, bidirectional=True)
    params = dict(layer.named_parameters())
    H, G = 6, 4
    for prefix, inputs in (("l0.forward.", 4), ("l1.reverse.", 2 * H)):
        assert params[prefix + "kernel"].value.shape == (inputs, G * H)
        assert np.all(params[prefix + "ln_input_gamma"].value == 1)
        assert np.all(params[prefix + "ln_recurrent_gamma"].value == 1)
        assert np.all(params[prefix + "ln_cell_gamma"].value == 1)
        assert np.all(params[prefix + "ln_cell_beta"].value == 0)
    per_direction = {0: 4 * G * H + H * G * H + G * H, 1: 2 * H * G * H + H * G * H + G * H}
    extra = 2 * G * H + 2 * H
    assert layer.count_params() == sum(2 * (per_direction[k] + extra) for k in range(2))
    model = Sequential([LSTM(6, layer_norm=True), Dense(1)], input_shape=(5, 4))
    plain = LSTM(6, input_size=4).count_params()
    assert model.layers[0].count_params() == plain + extra
    assert f"{plain + extra:,}" in model.summary(print_fn=None)


def test_layer_refuses_peephole_and_coupled():
    for option in ("peephole", "coupled"):
        with pytest.raises(ValueError, match=f"LSTM: layer_norm=True with .*{option}=True"):
            LSTM(4, layer_norm=True, **{option: True})


def test_layer_gradcheck_stacked_bidirectional_with_lengths():
    layer = ln_layer(num_layers=2, bidirectional=True, return_sequences=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2))
    targets = rng.standard_normal((3, 4, 12))
    report = gradcheck(layer, x, targets, mean_squared_error, num_checks=6, check_input=True, lengths=[4, 1, 3])
    assert "l1.reverse.ln_cell_beta" in report
    assert report.worst < GRADCHECK_TOL, str(report)


def test_layer_rows_alone_and_step():
    layer = ln_layer(num_layers=2, return_sequences=True, return_state=True)
    x = np.random.default_rng(6).standard_normal((3, 5, 2))
    check_rows_alone(layer, x, [5, 2, 0], "layer_norm LSTM")
    check_step_matches_sequence(layer, x, np.float64)
    bidirectional = ln_layer(bidirectional=True, return_sequences=True, return_state=True)
    check_rows_alone(bidirectional, x, [5, 2, 3], "bidirectional layer_norm LSTM")


def test_layer_stateful_carries_states():
    layer = ln_layer(stateful=True, return_sequences=True)
    whole = ln_layer(return_sequences=True)
    x = np.random.default_rng(7).standard_normal((2, 6, 3))
    whole.build((None, 3))
    layer.build((None, 3))
    for (_, target), (_, source) in zip(whole.named_parameters(), layer.named_parameters()):
        target.value[...] = source.value
    expected = whole(x)
    np.testing.assert_allclose(np.concatenate([layer(x[:, :3]), layer(x[:, 3:])], axis=1), expected, rtol=0, atol=1e-14)


def test_checkpoint_round_trip(tmp_path):
    model = Sequential([LSTM(5, layer_norm=True, return_sequences=True, seed=1), Dense(2, seed=2)], input_shape=(4, 3))
    rng = np.random.default_rng(8)
    for _, param in model.layers[0].named_parameters():
        param.value[...] += rng.standard_normal(param.value.shape).astype(param.value.dtype) * 0.1
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    model.save(tmp_path / "ln.npz")
    loaded = load(tmp_path / "ln.npz")
    assert loaded.layers[0].layer_norm
    assert_same_bits({"y": loaded(x)}, {"y": model(x)}, "outputs after load")


def test_converters_refuse_layer_norm():
    from rnnext import interop

    layer = LSTM(4, layer_norm=True, input_size=3)
    with pytest.raises(ValueError, match="layer_norm=True has no torch.nn equivalent"):
        interop.to_torch_state_dict(layer)
    with pytest.raises(ValueError, match="layer_norm=True has no Keras equivalent"):
        interop.to_keras_weights(layer)


def test_onnx_export_refuses_layer_norm(tmp_path):
    pytest.importorskip("onnx")
    from rnnext import onnx

    model = Sequential([LSTM(4, layer_norm=True), Dense(1)], input_shape=(5, 3))
    with pytest.raises(ValueError, match="layer 0 .* has layer_norm=True; the ONNX recurrent operators"):
        onnx.export(model, tmp_path / "never-written.onnx")
    assert not list(tmp_path.iterdir())
