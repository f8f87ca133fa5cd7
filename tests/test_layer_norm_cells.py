"""The layer-normalised LSTM and GRU: engine (layer_norm_lstm.h, layer_norm_gru.h) against the NumPy twins
(reference/layer_norm_cells.py), both against finite differences, the engine against PyTorch autograd on haste's
formulation, thread-count and cache independence, bad input, and the LSTM/GRU(layer_norm=True) layers (summary
counts, checkpoints, step, lengths, bidirectional stacks, the converters that refuse them, word-lm --layer-norm)."""
import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext.gradcheck import gradcheck
from rnnext.layers import GRU, LSTM, Dense
from rnnext.losses import mean_squared_error
from rnnext.models import Sequential, load
from rnnext.reference import layer_norm_cells as twin

from conftest import GRADCHECK_TOL, assert_close, assert_same_bits, check_rows_alone, check_step_matches_sequence, \
    numerical_gradient, requires_openmp, write_tiny_ptb

# Twin against engine: float64 agrees to rounding (1e-10 leaves room for the different summation orders of the
# statistics and the GEMMs); float32 to ~10 ulps of the largest entry of each tensor.
TWIN_TOL = {np.float32: 2e-5, np.float64: 1e-10}
WEIGHT_NAMES = {"lstm": ("kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma",
                         "ln_cell_gamma", "ln_cell_beta"),
                "gru": ("kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma")}
STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}
CELLS = ("lstm", "gru")
# (T, N, I, H): unit blocks of 32 (a partial last one at H = 40), and N = 1's blocks of 128 (two at H = 130)
SHAPES = [(5, 3, 4, 40), (4, 1, 3, 130), (3, 6, 5, 64)]


def make_problem(cell, shape, dtype, seed=0):
    """Arguments of layer_norm_{cell}_forward with gains and shifts away from 1 and 0, so each one matters."""
    T, N, I, H = shape
    G = 4 if cell == "lstm" else 3
    rng = np.random.default_rng(seed)

    def draw(*s, scale=1.0, offset=0.0):
        return (offset + scale * rng.standard_normal(s)).astype(dtype)

    p = {"x": draw(T, N, I), "h0": draw(N, H), "kernel": draw(I, G * H, scale=0.5),
         "recurrent_kernel": draw(H, G * H, scale=0.3), "bias": draw(*((G * H,) if cell == "lstm" else (2, G * H)), scale=0.1),
         "ln_input_gamma": draw(G * H, scale=0.2, offset=1.0), "ln_recurrent_gamma": draw(G * H, scale=0.2, offset=1.0)}
    if cell == "lstm":
        p.update(c0=draw(N, H), ln_cell_gamma=draw(H, scale=0.2, offset=1.0), ln_cell_beta=draw(H, scale=0.1))
    return p


def output_gradients(cell, shape, dtype, seed=1):
    T, N, _, H = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in [(T, N, H)] + [(N, H)] * len(STATES[cell])]


def lengths_for(shape):
    T, N = shape[:2]
    return np.array([(T, 0, 2, T - 1, 1, T)[n % 6] for n in range(N)], dtype=np.int64)


def forward_and_backward(cell, module, p, douts, lengths):
    y, *finals, cache = getattr(module, f"layer_norm_{cell}_forward")(**p, lengths=lengths)
    weights = {name: p[name] for name in WEIGHT_NAMES[cell]}
    grads = getattr(module, f"layer_norm_{cell}_backward")(*douts, cache, p["x"], **weights, lengths=lengths)
    outputs = {"y": y, **{f"{state[0]}_n": final for state, final in zip(STATES[cell], finals)}}
    return {**outputs, **{f"cache.{k}": v for k, v in cache.items()}}, grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_matches_twin(cell, shape, with_lengths, dtype):
    p = make_problem(cell, shape, dtype)
    douts = output_gradients(cell, shape, dtype)
    lengths = lengths_for(shape) if with_lengths else None
    engine_out, engine_grads = forward_and_backward(cell, _core, p, douts, lengths)
    twin_out, twin_grads = forward_and_backward(cell, twin, p, douts, lengths)
    assert all(a.dtype == dtype for a in list(engine_out.values()) + list(engine_grads.values()))
    assert_close(engine_out, twin_out, TWIN_TOL[dtype], "forward")
    assert_close(engine_grads, twin_grads, TWIN_TOL[dtype], "gradients")


@pytest.mark.parametrize("cell", CELLS)
def test_absent_output_gradients_are_zero(cell):
    shape = SHAPES[0]
    p = make_problem(cell, shape, np.float64)
    cache = getattr(_core, f"layer_norm_{cell}_forward")(**p)[-1]
    weights = {name: p[name] for name in WEIGHT_NAMES[cell]}
    backward = getattr(_core, f"layer_norm_{cell}_backward")
    zeros = [np.zeros_like(a) for a in output_gradients(cell, shape, np.float64)]
    assert_same_bits(backward(*[None] * len(zeros), cache, p["x"], **weights),
                     backward(*zeros, cache, p["x"], **weights), "absent output gradients")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module", [twin, _core], ids=["twin", "engine"])
def test_gradients_match_finite_differences(cell, module):
    shape = (3, 2, 3, 5)
    p = make_problem(cell, shape, np.float64, seed=3)
    douts = output_gradients(cell, shape, np.float64, seed=4)
    lengths = np.array([3, 2])
    forward = getattr(module, f"layer_norm_{cell}_forward")

    def loss():
        outputs = forward(**p, lengths=lengths)[:-1]
        return sum(float((a * d).sum()) for a, d in zip(outputs, douts))

    _, grads = forward_and_backward(cell, module, p, douts, lengths)
    numeric = {name: numerical_gradient(loss, p[name]) for name in ("x",) + STATES[cell] + WEIGHT_NAMES[cell]}
    # central differences in float64 are good to ~1e-9 of O(1) gradients (conftest.numerical_gradient)
    assert_close({name: grads[name] for name in numeric}, numeric, 1e-7, "gradients against finite differences")


@requires_openmp
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_give_identical_bits(cell, dtype, restore_threads):
    shape = (4, 8, 6, 96)  # 2 N H G H >= 440k flops a step: the loop uses every thread it is given
    p = make_problem(cell, shape, dtype)
    douts = output_gradients(cell, shape, dtype)
    results = []
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        results.append(forward_and_backward(cell, _core, p, douts, lengths_for(shape)))
    for out, grads in results[1:]:
        assert_same_bits(out, results[0][0], "forward")
        assert_same_bits(grads, results[0][1], "gradients")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cache_free_forward_gives_the_same_bits(cell, shape, dtype):
    p = make_problem(cell, shape, dtype)
    lengths = lengths_for(shape)
    forward = getattr(_core, f"layer_norm_{cell}_forward")
    *cached, _ = forward(**p, lengths=lengths)
    *outputs, cache = forward(**p, lengths=lengths, keep_cache=False)
    assert cache is None
    names = ["y"] + [f"{state[0]}_n" for state in STATES[cell]]
    assert_same_bits(dict(zip(names, outputs)), dict(zip(names, cached)), "keep_cache=False")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("N", [1, 3, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_stepper_step_is_the_one_step_forward_of_each_layer(cell, N, dtype, restore_threads):
    I, H, L = 7, 70, 3
    problems = [make_problem(cell, (1, N, I if k == 0 else H, H), dtype, seed=k) for k in range(L)]
    layers = [tuple(p[name] for name in WEIGHT_NAMES[cell]) for p in problems]
    states = [tuple(p[name] for name in STATES[cell]) for p in problems]
    stepper = getattr(_core, f"layer_norm_{cell}_stepper")(layers, N)
    x = problems[0]["x"][0]
    layer_input, expected = x[None], []
    for weights, state in zip(layers, states):
        layer_input, *finals, _ = getattr(_core, f"layer_norm_{cell}_forward")(layer_input, *state, *weights)
        expected.append(finals)
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        for _ in range(2):  # a second step from the same states: the stepper keeps nothing between steps
            y, new_states = stepper.step(x, states)
            assert_same_bits({"y": y}, {"y": layer_input[0]}, f"{cell} stepper, top output, {threads} threads")
            for k, (got, want) in enumerate(zip(new_states, expected)):
                assert_same_bits(dict(enumerate(got)), dict(enumerate(want)), f"{cell} stepper, layer {k} states")


@pytest.mark.parametrize("cell,bad,message", [
    ("lstm", lambda layers: layers[:1] + [layers[1][:6]], "layers[1] must be a tuple (kernel,"),
    ("lstm", lambda layers: layers[:1] + [layers[1][:5] + (np.ones(9, np.float32),) + layers[1][6:]],
     "layers[1].ln_cell_gamma has shape (9,), expected (H=6"),
    ("gru", lambda layers: [layers[0][:2] + (layers[0][2][0],) + layers[0][3:]], "layers[0].bias has shape (18,)"),
])
def test_stepper_bad_weights_are_named(cell, bad, message):
    problems = [make_problem(cell, (1, 2, 4 if k == 0 else 6, 6), np.float32, seed=k) for k in range(2)]
    layers = [tuple(p[name] for name in WEIGHT_NAMES[cell]) for p in problems]
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(_core, f"layer_norm_{cell}_stepper")(bad(layers), 2)
    assert f"layer_norm_{cell}_stepper: {message}" in str(info.value), str(info.value)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module", [twin, _core], ids=["twin", "engine"])
def test_nan_in_padding_is_not_seen(cell, module):
    """A NaN in x past a row's length reaches neither the outputs and states nor the input-side gradients (the
    weight gradients sum x^T . 0 over padded steps, NaN as in the plain cells: test_engine.py)."""
    shape = (5, 3, 4, 40)
    p = make_problem(cell, shape, np.float64)
    douts = output_gradients(cell, shape, np.float64)
    lengths = np.array([5, 2, 0])
    clean_out, clean_grads = forward_and_backward(cell, module, p, douts, lengths)
    p["x"][2:, 1] = np.nan
    p["x"][:, 2] = np.nan
    out, grads = forward_and_backward(cell, module, p, douts, lengths)
    outputs = ["y"] + [f"{state[0]}_n" for state in STATES[cell]]
    inputs = ("x",) + STATES[cell]
    assert_close({k: out[k] for k in outputs}, {k: clean_out[k] for k in outputs}, 1e-12, "outputs, NaN padding")
    assert_close({k: grads[k] for k in inputs}, {k: clean_grads[k] for k in inputs}, 1e-12, "input side, NaN padding")


@pytest.mark.parametrize("name, bad, message", [
    ("ln_cell_gamma", np.ones(7), "ln_cell_gamma has shape (7,), expected (H=5,)"),
    ("ln_input_gamma", np.ones(5), "ln_input_gamma has shape (5,), expected (4*H=20,)"),
    ("ln_recurrent_gamma", np.ones((2, 20)), "ln_recurrent_gamma has shape (2, 20), expected (4*H=20,)"),
    ("ln_cell_beta", np.ones(5, dtype=np.float32), "ln_cell_beta"),
    ("recurrent_kernel", np.ones((5, 15)), "recurrent_kernel has shape (5, 15), expected (H, 4*H)"),
    ("h0", np.ones((3, 5)), "h0 has shape (3, 5), expected (N=2, H=5)"),
])
def test_bad_arguments_are_named(name, bad, message):
    p = make_problem("lstm", (3, 2, 3, 5), np.float64)
    p[name] = bad
    with pytest.raises((ValueError, TypeError)) as error:
        _core.layer_norm_lstm_forward(**p)
    assert message in str(error.value) and str(error.value).startswith("layer_norm_lstm_forward:")


@pytest.mark.parametrize("name, bad, message", [
    ("bias", np.ones(15), "bias has shape (15,), expected (2, 3*H=15)"),
    ("ln_recurrent_gamma", np.ones(20), "ln_recurrent_gamma has shape (20,), expected (3*H=15,)"),
    ("recurrent_kernel", np.ones((5, 20)), "recurrent_kernel has shape (5, 20), expected (H, 3*H)"),
])
def test_gru_bad_arguments_are_named(name, bad, message):
    p = make_problem("gru", (3, 2, 3, 5), np.float64)
    p[name] = bad
    with pytest.raises(ValueError) as error:
        _core.layer_norm_gru_forward(**p)
    assert message in str(error.value) and str(error.value).startswith("layer_norm_gru_forward:")


@pytest.mark.parametrize("cell", CELLS)
def test_backward_names_a_missing_cache_entry(cell):
    p = make_problem(cell, (3, 2, 3, 5), np.float64)
    cache = getattr(_core, f"layer_norm_{cell}_forward")(**p)[-1]
    del cache["recurrent_rstd"]
    with pytest.raises(ValueError, match=f"layer_norm_{cell}_backward: cache has no entry 'recurrent_rstd'"):
        getattr(_core, f"layer_norm_{cell}_backward")(*[None] * len(STATES[cell]) + [None], cache, p["x"],
                                                      **{n: p[n] for n in WEIGHT_NAMES[cell]})


def test_lengths_are_checked():
    p = make_problem("lstm", (3, 2, 3, 5), np.float64)
    with pytest.raises(ValueError, match="layer_norm_lstm_forward: lengths"):
        _core.layer_norm_lstm_forward(**p, lengths=np.array([4, 1]))


# -- the layers

LAYERS = {"lstm": LSTM, "gru": GRU}


def ln_layer(cell="lstm", **options):
    return LAYERS[cell](6, layer_norm=True, dtype=np.float64, seed=3, **options)


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
    gru = GRU(6, layer_norm=True, input_size=4)
    assert gru.count_params() == GRU(6, input_size=4).count_params() + 2 * 3 * H
    assert sorted(name for name, _ in gru.named_parameters() if name.startswith("ln_")) == \
        ["ln_input_gamma", "ln_recurrent_gamma"]


def test_layers_refuse_what_they_cannot_do():
    for option in ("peephole", "coupled"):
        with pytest.raises(ValueError, match=f"LSTM: layer_norm=True with .*{option}=True"):
            LSTM(4, layer_norm=True, **{option: True})
    with pytest.raises(ValueError, match="GRU: layer_norm=True needs reset_after=True"):
        GRU(4, layer_norm=True, reset_after=False)


@pytest.mark.parametrize("cell", CELLS)
def test_layer_gradcheck_stacked_bidirectional_with_lengths(cell):
    layer = ln_layer(cell, num_layers=2, bidirectional=True, return_sequences=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2))
    targets = rng.standard_normal((3, 4, 12))
    report = gradcheck(layer, x, targets, mean_squared_error, num_checks=6, check_input=True, lengths=[4, 1, 3])
    assert "l1.reverse.ln_recurrent_gamma" in report
    assert report.worst < GRADCHECK_TOL, str(report)


@pytest.mark.parametrize("cell", CELLS)
def test_layer_rows_alone_and_step(cell):
    layer = ln_layer(cell, num_layers=2, return_sequences=True, return_state=True)
    x = np.random.default_rng(6).standard_normal((3, 5, 2))
    check_rows_alone(layer, x, [5, 2, 0], f"layer_norm {cell}")
    check_step_matches_sequence(layer, x, np.float64)
    bidirectional = ln_layer(cell, bidirectional=True, return_sequences=True, return_state=True)
    check_rows_alone(bidirectional, x, [5, 2, 3], f"bidirectional layer_norm {cell}")


@pytest.mark.parametrize("cell", CELLS)
def test_layer_stateful_carries_states(cell):
    layer = ln_layer(cell, stateful=True, return_sequences=True)
    whole = ln_layer(cell, return_sequences=True)
    x = np.random.default_rng(7).standard_normal((2, 6, 3))
    whole.build((None, 3))
    layer.build((None, 3))
    for (_, target), (_, source) in zip(whole.named_parameters(), layer.named_parameters()):
        target.value[...] = source.value
    expected = whole(x)
    np.testing.assert_allclose(np.concatenate([layer(x[:, :3]), layer(x[:, 3:])], axis=1), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_round_trip(cell, tmp_path):
    model = Sequential([LAYERS[cell](5, layer_norm=True, return_sequences=True, seed=1), Dense(2, seed=2)],
                       input_shape=(4, 3))
    rng = np.random.default_rng(8)
    for _, param in model.layers[0].named_parameters():
        param.value[...] += rng.standard_normal(param.value.shape).astype(param.value.dtype) * 0.1
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    model.save(tmp_path / f"ln-{cell}.npz")
    loaded = load(tmp_path / f"ln-{cell}.npz")
    assert loaded.layers[0].layer_norm
    assert_same_bits({"y": loaded(x)}, {"y": model(x)}, "outputs after load")


@pytest.mark.parametrize("cell", CELLS)
def test_converters_refuse_layer_norm(cell):
    from rnnext import interop

    layer = LAYERS[cell](4, layer_norm=True, input_size=3)
    name = type(layer).__name__
    with pytest.raises(ValueError, match=f"{name} with layer_norm=True has no torch.nn equivalent"):
        interop.to_torch_state_dict(layer)
    with pytest.raises(ValueError, match=f"{name} with layer_norm=True has no Keras equivalent"):
        interop.to_keras_weights(layer)


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_export_refuses_layer_norm(cell, tmp_path):
    pytest.importorskip("onnx")
    from rnnext import onnx

    model = Sequential([LAYERS[cell](4, layer_norm=True), Dense(1)], input_shape=(5, 3))
    with pytest.raises(ValueError, match="layer 0 .* has layer_norm=True; the ONNX recurrent operators"):
        onnx.export(model, tmp_path / "never-written.onnx")
    assert not list(tmp_path.iterdir())


def test_word_lm_layer_norm_learns_on_tiny_ptb(tmp_path):
    from rnnext.experiments import word_lm

    model = word_lm.build_model(50, hidden=8, num_layers=2, seed=0, layer_norm=True)
    for name, param in model.named_parameters():
        if ".ln_" in name:  # the uniform init leaves the gains and shifts at their start
            assert np.all(param.value == (0 if name.endswith("beta") else 1)), name
        else:
            assert np.abs(param.value).max() <= 0.1, name
    args = word_lm.parse_args(["--data", str(write_tiny_ptb(tmp_path)), "--quick", "--layer-norm"])
    args.max_words, args.epochs, args.hidden, args.batch = None, 6, 32, 8
    result = word_lm.run(args, log=lambda *_: None)
    assert result["model"].layers[1].layer_norm
    ppl = [h["valid_ppl"] for h in result["history"]]
    # 15 types: uniform guessing is perplexity 15 (as test_lm_experiments' plain run)
    assert ppl[-1] < ppl[0] and ppl[-1] < 6, ppl


# -- against PyTorch autograd on haste's formulation (LayerNormLSTMScript, LayerNormGRUScript; the GRU in rnnext's
# gate order r, z, n), written with torch.nn.functional.layer_norm

def torch_layer_norm_cell(torch, cell, t):
    """y [T, N, H] of haste's scripts on the tensors t (named as the engine's arguments)."""
    F = torch.nn.functional
    G, H = (4, t["h0"].shape[1]) if cell == "lstm" else (3, t["h0"].shape[1])
    input_side = F.layer_norm(t["x"] @ t["kernel"], (G * H,), weight=t["ln_input_gamma"])
    h, c, ys = t["h0"], t.get("c0"), []
    for step_input in input_side:
        recurrent = F.layer_norm(h @ t["recurrent_kernel"], (G * H,), weight=t["ln_recurrent_gamma"])
        if cell == "lstm":
            i, f, g, o = (recurrent + step_input + t["bias"]).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), weight=t["ln_cell_gamma"], bias=t["ln_cell_beta"]))
        else:
            a_r, a_z, a_n = (step_input + t["bias"][0]).chunk(3, dim=1)
            b_r, b_z, b_n = (recurrent + t["bias"][1]).chunk(3, dim=1)
            r, z = torch.sigmoid(a_r + b_r), torch.sigmoid(a_z + b_z)
            h = (1 - z) * torch.tanh(a_n + r * b_n) + z * h
        ys.append(h)
    return torch.stack(ys)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_autograd(torch, cell, dtype):
    shape = (5, 3, 4, 40)
    p = make_problem(cell, shape, dtype, seed=11)
    dy = output_gradients(cell, shape, dtype, seed=12)[0]
    t = {name: torch.from_numpy(value.copy()).requires_grad_(True) for name, value in p.items()}
    y_torch = torch_layer_norm_cell(torch, cell, t)
    (y_torch * torch.from_numpy(dy)).sum().backward()
    y, *_, cache = getattr(_core, f"layer_norm_{cell}_forward")(**p)
    grads = getattr(_core, f"layer_norm_{cell}_backward")(dy, *[None] * len(STATES[cell]), cache, p["x"],
                                                          **{n: p[n] for n in WEIGHT_NAMES[cell]})
    assert_close({"y": y, **{name: grads[name] for name in t}},
                 {"y": y_torch.detach().numpy(), **{name: tensor.grad.numpy() for name, tensor in t.items()}},
                 TWIN_TOL[dtype], "against torch autograd")
