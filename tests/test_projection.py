"""The LSTM with projection (proj_size): engine (lstm_projection.h) against its NumPy twin
(reference/projection_cells.py), both against finite differences, thread-count and cache independence, bad input,
the LSTM(proj_size=...) layer, and parity with torch.nn.LSTM(proj_size=...) through the converters."""
import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext.gradcheck import gradcheck
from rnnext.interop import from_torch, to_keras_weights, to_torch
from rnnext.layers import LSTM, Dense, Embedding
from rnnext.losses import mean_squared_error
from rnnext.models import Sequential, load
from rnnext.reference import projection_cells as twin

from conftest import GRADCHECK_TOL, assert_close, assert_same_bits, check_rows_alone, check_step_matches_sequence, \
    numerical_gradient, requires_openmp

# float64 agrees to rounding; float32 to ~10 ulps of each tensor's largest entry (as test_layer_norm_cells)
TWIN_TOL = {np.float32: 2e-5, np.float64: 1e-10}
WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias", "projection")
# (T, N, I, H, P): one partial block each; N = 1's 128-unit blocks (two of H, one of P); several blocks of each
SHAPES = [(5, 3, 4, 40, 7), (4, 1, 3, 130, 50), (3, 6, 5, 100, 64)]


def make_problem(shape, dtype, seed=0):
    T, N, I, H, P = shape
    rng = np.random.default_rng(seed)

    def draw(*s, scale=1.0):
        return (scale * rng.standard_normal(s)).astype(dtype)

    return {"x": draw(T, N, I), "h0": draw(N, P), "c0": draw(N, H), "kernel": draw(I, 4 * H, scale=0.5),
            "recurrent_kernel": draw(P, 4 * H, scale=0.3), "bias": draw(4 * H, scale=0.1),
            "projection": draw(H, P, scale=0.3)}


def output_gradients(shape, dtype, seed=1):
    T, N, _, H, P = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((T, N, P), (N, P), (N, H))]


def lengths_for(shape):
    T, N = shape[:2]
    return np.array([(T, 0, 2, T - 1, 1, T)[n % 6] for n in range(N)], dtype=np.int64)


def forward_and_backward(module, p, douts, lengths):
    y, h_n, c_n, cache = module.projected_lstm_forward(**p, lengths=lengths)
    grads = module.projected_lstm_backward(*douts, cache, p["x"], **{n: p[n] for n in WEIGHT_NAMES}, lengths=lengths)
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
    assert_close(engine_out, twin_out, TWIN_TOL[dtype], "forward")
    assert_close(engine_grads, twin_grads, TWIN_TOL[dtype], "gradients")


@pytest.mark.parametrize("module", [twin, _core], ids=["twin", "engine"])
def test_gradients_match_finite_differences(module):
    shape = (3, 2, 3, 5, 3)
    p = make_problem(shape, np.float64, seed=3)
    douts = output_gradients(shape, np.float64, seed=4)
    lengths = np.array([3, 2])

    def loss():
        y, h_n, c_n, _ = module.projected_lstm_forward(**p, lengths=lengths)
        return sum(float((a * d).sum()) for a, d in zip((y, h_n, c_n), douts))

    _, grads = forward_and_backward(module, p, douts, lengths)
    numeric = {name: numerical_gradient(loss, p[name]) for name in ("x", "h0", "c0") + WEIGHT_NAMES}
    assert_close({name: grads[name] for name in numeric}, numeric, 1e-7, "gradients against finite differences")


@requires_openmp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_give_identical_bits(dtype, restore_threads):
    shape = (4, 8, 6, 100, 40)
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
    cached = _core.projected_lstm_forward(**p, lengths=lengths)
    y, h_n, c_n, cache = _core.projected_lstm_forward(**p, lengths=lengths, keep_cache=False)
    assert cache is None
    assert_same_bits({"y": y, "h_n": h_n, "c_n": c_n}, dict(zip(("y", "h_n", "c_n"), cached[:3])), "keep_cache=False")


@pytest.mark.parametrize("module", [twin, _core], ids=["twin", "engine"])
def test_nan_in_padding_is_not_seen(module):
    """A NaN in x past a row's length reaches neither the outputs and states nor the input-side gradients."""
    shape = SHAPES[0]
    p = make_problem(shape, np.float64)
    douts = output_gradients(shape, np.float64)
    lengths = np.array([5, 2, 0])
    clean_out, clean_grads = forward_and_backward(module, p, douts, lengths)
    p["x"][2:, 1] = np.nan
    p["x"][:, 2] = np.nan
    out, grads = forward_and_backward(module, p, douts, lengths)
    assert_close({k: out[k] for k in ("y", "h_n", "c_n")}, {k: clean_out[k] for k in ("y", "h_n", "c_n")}, 1e-12,
                 "outputs, NaN padding")
    assert_close({k: grads[k] for k in ("x", "h0", "c0")}, {k: clean_grads[k] for k in ("x", "h0", "c0")}, 1e-12,
                 "input side, NaN padding")


@pytest.mark.parametrize("name, bad, message", [
    ("projection", np.ones((5, 5)), "projection has shape (5, 5), expected (H, P) with 1 <= P < H"),
    ("projection", np.ones(5), "projection has shape (5,), expected (H, P) with 1 <= P < H"),
    ("recurrent_kernel", np.ones((5, 20)), "recurrent_kernel has shape (5, 20), expected (P=3, 4*H=20)"),
    ("h0", np.ones((2, 5)), "h0 has shape (2, 5), expected (N=2, P=3)"),
    ("c0", np.ones((2, 3)), "c0 has shape (2, 3), expected (N=2, H=5)"),
    ("bias", np.ones(20, dtype=np.float32), "bias"),
])
def test_bad_arguments_are_named(name, bad, message):
    p = make_problem((3, 2, 3, 5, 3), np.float64)
    p[name] = bad
    with pytest.raises((ValueError, TypeError)) as error:
        _core.projected_lstm_forward(**p)
    assert message in str(error.value) and str(error.value).startswith("projected_lstm_forward:")


def test_backward_names_a_missing_cache_entry():
    p = make_problem((3, 2, 3, 5, 3), np.float64)
    _, _, _, cache = _core.projected_lstm_forward(**p)
    del cache["m"]
    with pytest.raises(ValueError, match="projected_lstm_backward: cache has no entry 'm'"):
        _core.projected_lstm_backward(None, None, None, cache, p["x"], **{n: p[n] for n in WEIGHT_NAMES})


@pytest.mark.parametrize("N", [1, 3, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_stepper_step_is_the_one_step_forward_of_each_layer(N, dtype, restore_threads):
    I, H, P, L = 7, 70, 20, 3
    problems = [make_problem((1, N, I if k == 0 else P, H, P), dtype, seed=k) for k in range(L)]
    layers = [tuple(p[name] for name in WEIGHT_NAMES) for p in problems]
    states = [(p["h0"], p["c0"]) for p in problems]
    stepper = _core.projected_lstm_stepper(layers, N)
    x = problems[0]["x"][0]
    layer_input, expected = x[None], []
    for weights, state in zip(layers, states):
        layer_input, *finals, _ = _core.projected_lstm_forward(layer_input, *state, *weights)
        expected.append(finals)
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        for _ in range(2):  # a second step from the same states: the stepper keeps nothing between steps
            y, new_states = stepper.step(x, states)
            assert y.shape == (N, P)
            assert_same_bits({"y": y}, {"y": layer_input[0]}, f"stepper, top output, {threads} threads")
            for k, (got, want) in enumerate(zip(new_states, expected)):
                assert_same_bits(dict(enumerate(got)), dict(enumerate(want)), f"stepper, layer {k} states")


def test_the_stepper_keeps_its_own_copies_of_the_weights():
    p = make_problem((1, 2, 3, 6, 4), np.float64)
    layers = [tuple(p[name] for name in WEIGHT_NAMES)]
    stepper = _core.projected_lstm_stepper(layers, 2)
    before = stepper.step(p["x"][0], [(p["h0"], p["c0"])])
    p["projection"][...] = 0
    after = stepper.step(p["x"][0], [(p["h0"], p["c0"])])
    assert_same_bits({"y": after[0]}, {"y": before[0]}, "a weight changed after the stepper was made")


@pytest.mark.parametrize("bad, message", [
    (lambda layers: layers[:1] + [layers[1][:3]], "layers[1] must be a tuple (kernel, recurrent_kernel, bias, "
                                                  "projection)"),
    (lambda layers: [layers[0][:3] + (np.ones((6, 6)),)] + layers[1:],
     "layers[0].projection has shape (6, 6), expected (H, P) with 1 <= P < H"),
    (lambda layers: layers[:1] + [(np.ones((6, 24)),) + layers[1][1:]],
     "layers[1].kernel has shape (6, 24), expected (P=4, 4*H=24)"),
    (lambda layers: layers[:1] + [layers[1][:3] + (np.ones((6, 3)),)],
     "layers[1].projection has shape (6, 3), expected (H=6, P=4)"),
    (lambda layers: layers[:1] + [layers[1][:1] + (np.ones((6, 24)),) + layers[1][2:]],
     "layers[1].recurrent_kernel has shape (6, 24), expected (P=4, 4*H=24)"),
])
def test_stepper_bad_weights_are_named(bad, message):
    problems = [make_problem((1, 2, 3 if k == 0 else 4, 6, 4), np.float64, seed=k) for k in range(2)]
    layers = [tuple(p[name] for name in WEIGHT_NAMES) for p in problems]
    with pytest.raises((ValueError, TypeError)) as info:
        _core.projected_lstm_stepper(bad(layers), 2)
    assert f"projected_lstm_stepper: {message}" in str(info.value), str(info.value)


@pytest.mark.parametrize("states, message", [
    (lambda p: [(p["h0"], p["c0"])], "states must be a list of 2 tuples (one per layer) of 2 arrays ([N, P], [N, H])"),
    (lambda p: [(p["h0"], p["c0"]), (p["c0"], p["c0"])], "states[1][0] has shape (2, 6), expected (N=2, P=4)"),
    (lambda p: [(p["h0"], p["c0"]), (p["h0"], p["h0"])], "states[1][1] has shape (2, 4), expected (N=2, H=6)"),
])
def test_stepper_bad_states_are_named(states, message):
    problems = [make_problem((1, 2, 3 if k == 0 else 4, 6, 4), np.float64, seed=k) for k in range(2)]
    stepper = _core.projected_lstm_stepper([tuple(p[name] for name in WEIGHT_NAMES) for p in problems], 2)
    with pytest.raises((ValueError, TypeError)) as info:
        stepper.step(problems[0]["x"][0], states(problems[0]))
    assert f"projected_lstm_stepper.step: {message}" in str(info.value), str(info.value)


# -- the layer

def projected_layer(**options):
    return LSTM(6, proj_size=4, dtype=np.float64, seed=3, **options)


def test_layer_shapes_and_counts():
    layer = LSTM(6, proj_size=4, input_size=3, num_layers=2, bidirectional=True, return_sequences=True,
                 return_state=True)
    params = dict(layer.named_parameters())
    assert params["l0.forward.recurrent_kernel"].value.shape == (4, 24)
    assert params["l0.forward.projection"].value.shape == (6, 4)
    assert params["l1.reverse.kernel"].value.shape == (8, 24)  # the layer below gives 2 directions x P
    per_direction = {0: 3 * 24 + 4 * 24 + 24 + 6 * 4, 1: 8 * 24 + 4 * 24 + 24 + 6 * 4}
    assert layer.count_params() == 2 * (per_direction[0] + per_direction[1])
    output, states = layer(np.zeros((2, 5, 3), dtype=np.float32))
    assert output.shape == (2, 5, 8)
    assert [(h.shape, c.shape) for h, c in states] == [((2, 4), (2, 6))] * 4
    model = Sequential([LSTM(6, proj_size=4), Dense(1)], input_shape=(5, 3))
    assert model.layers[1].count_params() == 5
    assert f"{model.layers[0].count_params():,}" in model.summary(print_fn=None)


@pytest.mark.parametrize("options, message", [
    ({"proj_size": 6}, "proj_size is 6, expected 0 (none) or less than units=6"),
    ({"proj_size": 2, "peephole": True}, "proj_size=2 with peephole=True"),
    ({"proj_size": 2, "coupled": True}, "proj_size=2 with peephole=False, coupled=True"),
    ({"proj_size": 2, "layer_norm": True}, "layer_norm=True is not supported"),
])
def test_layer_refuses_what_it_cannot_do(options, message):
    with pytest.raises(ValueError) as error:
        LSTM(6, **options)
    assert message in str(error.value)


def test_layer_states_are_checked_with_p():
    layer = projected_layer(return_state=True)
    x = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"\(N=2, P=4\)"):
        layer(x, initial_state=[(np.zeros((2, 6)), np.zeros((2, 6)))])


def test_layer_gradcheck_stacked_bidirectional_with_lengths():
    layer = projected_layer(num_layers=2, bidirectional=True, return_sequences=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2))
    report = gradcheck(layer, x, rng.standard_normal((3, 4, 8)), mean_squared_error, num_checks=6, check_input=True,
                       lengths=[4, 1, 3])
    assert "l1.reverse.projection" in report
    assert report.worst < GRADCHECK_TOL, str(report)


def test_layer_rows_alone_step_and_stateful():
    layer = projected_layer(num_layers=2, return_sequences=True, return_state=True)
    x = np.random.default_rng(6).standard_normal((3, 5, 2))
    check_rows_alone(layer, x, [5, 2, 0], "projected LSTM")
    check_step_matches_sequence(layer, x, np.float64)
    check_rows_alone(projected_layer(bidirectional=True, return_sequences=True, return_state=True), x, [5, 2, 3],
                     "bidirectional projected LSTM")
    stateful = projected_layer(stateful=True, return_sequences=True)
    whole = projected_layer(return_sequences=True)
    stateful.build((None, 2))
    whole.build((None, 2))
    for (_, target), (_, source) in zip(whole.named_parameters(), stateful.named_parameters()):
        target.value[...] = source.value
    np.testing.assert_allclose(np.concatenate([stateful(x[:, :2]), stateful(x[:, 2:])], axis=1), whole(x), rtol=0,
                               atol=1e-14)


def test_checkpoint_round_trip(tmp_path):
    model = Sequential([LSTM(5, proj_size=3, return_sequences=True, seed=1), Dense(2, seed=2)], input_shape=(4, 3))
    x = np.random.default_rng(8).standard_normal((2, 4, 3)).astype(np.float32)
    model.save(tmp_path / "lstmp.npz")
    loaded = load(tmp_path / "lstmp.npz")
    assert loaded.layers[0].proj_size == 3
    assert_same_bits({"y": loaded(x)}, {"y": model(x)}, "outputs after load")


def test_keras_and_onnx_refuse_projection(tmp_path):
    with pytest.raises(ValueError, match="proj_size=3 has no Keras equivalent"):
        to_keras_weights(LSTM(5, proj_size=3, input_size=2))
    pytest.importorskip("onnx")
    from rnnext import onnx

    with pytest.raises(ValueError, match="layer 0 .* has proj_size=3; ONNX's LSTM operator has no projection"):
        onnx.export(Sequential([LSTM(5, proj_size=3), Dense(1)], input_shape=(4, 2)), tmp_path / "never.onnx")


# -- parity with torch.nn.LSTM(proj_size=...)

TORCH_TOL = {np.float32: 2e-5, np.float64: 1e-10}


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_outputs_states_and_gradients(torch, num_layers, bidirectional, dtype):
    torch.manual_seed(0)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    module = torch.nn.LSTM(3, 7, proj_size=4, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                           dtype=torch_dtype)
    layer = from_torch(module, return_state=True)
    assert layer.proj_size == 4 and layer.dtype == dtype
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 3)).astype(dtype)
    D = 2 if bidirectional else 1
    dy = rng.standard_normal((2, 5, D * 4)).astype(dtype)

    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    y_t, (h_t, c_t) = module(x_t)
    (y_t * torch.from_numpy(dy)).sum().backward()
    y, states = layer(x)
    dx = layer.backward(dy)
    assert_close({"y": y, "h_n": np.stack([h for h, _ in states]), "c_n": np.stack([c for _, c in states]),
                  "dx": dx},
                 {"y": y_t.detach().numpy(), "h_n": h_t.detach().numpy(), "c_n": c_t.detach().numpy(),
                  "dx": x_t.grad.numpy()}, TORCH_TOL[dtype], "against torch")
    params = dict(layer.named_parameters())
    for k in range(num_layers):
        for d in range(D):
            suffix = f"l{k}" + ("_reverse" if d else "")
            prefix = f"l{k}.{'reverse' if d else 'forward'}." if num_layers > 1 or bidirectional else ""
            expected = {"kernel": getattr(module, f"weight_ih_{suffix}").grad.numpy().T,
                        "recurrent_kernel": getattr(module, f"weight_hh_{suffix}").grad.numpy().T,
                        "bias": getattr(module, f"bias_ih_{suffix}").grad.numpy(),
                        "projection": getattr(module, f"weight_hr_{suffix}").grad.numpy().T}
            assert_close({n: params[prefix + n].grad for n in expected}, expected, TORCH_TOL[dtype],
                         f"gradients of {suffix}")


def test_torch_round_trip(torch):
    layer = LSTM(6, proj_size=2, input_size=3, num_layers=2, bidirectional=True, return_sequences=True, seed=4)
    module = to_torch(layer)
    assert module.proj_size == 2
    back = from_torch(module)
    x = np.random.default_rng(10).standard_normal((2, 4, 3)).astype(np.float32)
    with torch.no_grad():
        y_t, _ = module(torch.from_numpy(x))
    assert_close({"y": layer(x)}, {"y": y_t.numpy()}, 2e-5, "to_torch")
    assert_same_bits({"y": back(x)}, {"y": layer(x)}, "from_torch(to_torch(layer))")


def test_torch_whole_model_round_trip(torch):
    model = Sequential([Embedding(20, 6), LSTM(8, proj_size=3, num_layers=2, bidirectional=True, seed=1),
                        Dense(2, seed=2)], input_shape=(5,))
    module = to_torch(model)
    ids = np.random.default_rng(11).integers(0, 20, (4, 5))
    with torch.no_grad():
        y_t = module(torch.from_numpy(ids))
    assert_close({"y": model(ids)}, {"y": y_t.numpy()}, 2e-5, "to_torch(Sequential)")
    assert_same_bits({"y": from_torch(module)(ids)}, {"y": model(ids)}, "from_torch(to_torch(Sequential))")
