"""Tests for rnnext.layers: every backward against central finite differences of its forward (float64) in every
mode, the layer semantics (lengths, reversal, stacking, dropout, states, step), initialization, seeding, errors,
and, when torch is installed, 2-layer bidirectional LSTM/GRU with packed sequences against torch.nn."""
import numpy as np
import pytest

import rnnext
from rnnext.gradcheck import gradcheck
from rnnext.layers import (
    GRU,
    LSTM,
    RNN,
    Dense,
    Dropout,
    Embedding,
    SimpleRNN,
    layer_from_config,
)
from rnnext.losses import mean_squared_error, softmax_cross_entropy

from conftest import (GRADCHECK_TOL, check_rows_alone, check_step_matches_sequence, numerical_gradient,
                      relative_error, state_arrays)

F64 = np.float64
T, N, I, H = 5, 3, 3, 2
LENGTHS = np.array([5, 2, 3])  # a full row and two shorter ones, unsorted

# Central differences with eps = 1e-6 in float64 are good to ~1e-9 absolute (truncation eps^2 ~ 1e-12, rounding
# ~ 1e-16 * |L| / eps with |L| ~ 1..10). Errors are taken relative to the largest entry of each gradient, which
# is O(0.1..1) for the random-projection losses below, so a correct backward lands near 1e-9..1e-8; 1e-6 leaves
# margin, and a missing term, a swapped block or a wrong reversal shows up at 1e-3 or worse.
RTOL = 1e-6

CELLS = {
    "rnn-tanh": lambda **kw: RNN(H, **kw),
    "rnn-sigmoid": lambda **kw: RNN(H, activation="sigmoid", **kw),
    "lstm": lambda **kw: LSTM(H, **kw),
    "lstm-peephole": lambda **kw: LSTM(H, peephole=True, **kw),
    "lstm-coupled-peephole": lambda **kw: LSTM(H, peephole=True, coupled=True, forget_bias=0.5, **kw),
    "gru": lambda **kw: GRU(H, **kw),
    "gru-reset_before": lambda **kw: GRU(H, reset_after=False, **kw),
}

# (layer options, forward options); every mode runs for every cell.
MODES = {
    "plain": ({}, {}),
    "sequences": ({"return_sequences": True}, {}),
    "stacked": ({"num_layers": 2, "return_sequences": True}, {}),
    "bidirectional": ({"bidirectional": True}, {}),
    "bidirectional-lengths": ({"bidirectional": True, "return_sequences": True}, {"lengths": LENGTHS}),
    "lengths-final-state": ({"bidirectional": True}, {"lengths": LENGTHS}),
    "stacked-bidirectional-lengths": ({"num_layers": 2, "bidirectional": True, "return_sequences": True},
                                      {"lengths": np.array([4, 1, 5])}),
    "dropout": ({"num_layers": 2, "layer_dropout": 0.5, "return_sequences": True}, {}),
    "time-major": ({"batch_first": False, "return_sequences": True, "bidirectional": True},
                   {"lengths": LENGTHS}),
}


def make_layer(cell, seed=0, **options):
    layer = CELLS[cell](dtype=F64, seed=seed, **options)
    layer.build((None, I))
    randomize(layer, seed)
    return layer


def randomize(layer, seed):
    """Moves every parameter off its initial value (non-zero biases and peepholes exercise their gradients)."""
    rng = np.random.default_rng(seed + 100)
    for _, param in layer.named_parameters():
        param.value += 0.3 * rng.standard_normal(param.shape)


def draw(rng, *shape):
    return rng.standard_normal(shape)


def check_layer_gradients(layer, x, forward_kwargs=None, initial_state=None, with_states=False, label=""):
    """L = sum(wy * output) [+ sum(ws * states)]: compares backward's dx, parameter gradients and (when given)
    initial_state_grad with full finite differences. Dropout masks and stateful states are restored before each
    forward, so every evaluation sees the same function."""
    forward_kwargs = dict(forward_kwargs or {})
    if initial_state is not None:
        forward_kwargs["initial_state"] = initial_state
    saved = layer._get_volatile()
    rng = np.random.default_rng(7)

    def run():
        layer._set_volatile(saved)
        out = layer.forward(x, **forward_kwargs)
        return out if with_states else (out, None)

    output, states = run()
    w_out = draw(rng, *output.shape)
    w_states = None
    if with_states:
        w_states = [tuple(draw(rng, *a.shape) for a in s) if isinstance(s, tuple) else draw(rng, *s.shape)
                    for s in states]

    def loss():
        out, st = run()
        total = np.sum(w_out * out)
        if with_states:
            total += sum(np.sum(w * a) for w, a in zip(state_arrays(w_states), state_arrays(st)))
        return total

    layer.zero_grad()
    run()
    dx = layer.backward(w_out, dstates=w_states) if with_states else layer.backward(w_out)
    analytic = {name: param.grad.copy() for name, param in layer.named_parameters()}
    analytic["x"] = dx
    if initial_state is not None:
        for index, (a, g) in enumerate(zip(state_arrays(initial_state), state_arrays(layer.initial_state_grad))):
            analytic[f"initial_state.{index}"] = g

    targets = {name: param.value for name, param in layer.named_parameters()}
    targets["x"] = x
    if initial_state is not None:
        for index, a in enumerate(state_arrays(initial_state)):
            targets[f"initial_state.{index}"] = a
    errors = {}
    for name, array in targets.items():
        assert analytic[name].shape == array.shape, f"{label} {name}: grad shape {analytic[name].shape}"
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, array))
    run()
    report = ", ".join(f"{name}: {err:.1e}" for name, err in errors.items())
    bad = [name for name, err in errors.items() if not err < RTOL]
    assert not bad, f"{label}: relative error above {RTOL:g} for {bad}; all: {report}"


# ---------------------------------------------------------------------------------------------------------
# finite differences, every recurrent cell in every mode


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("cell", list(CELLS))
def test_recurrent_gradients(cell, mode):
    options, forward_kwargs = MODES[mode]
    layer = make_layer(cell, **options)
    shape = (T, N, I) if options.get("batch_first") is False else (N, T, I)
    x = draw(np.random.default_rng(1), *shape)
    check_layer_gradients(layer, x, forward_kwargs, label=f"{cell}/{mode}")


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm-peephole", "gru"])
def test_return_state_gradients_with_initial_state(cell):
    """dstates enter every layer and direction; initial_state_grad is checked too."""
    layer = make_layer(cell, num_layers=2, bidirectional=True, return_state=True)
    rng = np.random.default_rng(3)
    x = draw(rng, N, T, I)
    states = [(draw(rng, N, H), draw(rng, N, H)) if cell.startswith("lstm") else draw(rng, N, H) for _ in range(4)]
    check_layer_gradients(layer, x, {"lengths": LENGTHS}, initial_state=states, with_states=True, label=cell)


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm", "gru"])
def test_stateful_second_call_gradients(cell):
    """The second call starts from the first call's final states, which are constants (no gradient across)."""
    layer = make_layer(cell, num_layers=2, stateful=True, return_sequences=True)
    rng = np.random.default_rng(4)
    first, second = draw(rng, N, T, I), draw(rng, N, T, I)
    layer.forward(first)
    carried = state_arrays(layer.states)
    assert all(np.any(a != 0) for a in carried)
    check_layer_gradients(layer, second, label=cell)


# ---------------------------------------------------------------------------------------------------------
# gradcheck() on every layer


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradcheck_recurrent(cell):
    layer = make_layer(cell, num_layers=2, bidirectional=True, return_sequences=True, layer_dropout=0.3)
    rng = np.random.default_rng(5)
    x = draw(rng, N, T, I)
    targets = draw(rng, N, T, 2 * H)
    report = gradcheck(layer, x, targets, mean_squared_error, num_checks=8, check_input=True, lengths=LENGTHS)
    assert set(report) == {name for name, _ in layer.named_parameters()} | {"input"}
    assert report.worst < GRADCHECK_TOL, str(report)


def test_gradcheck_dense_embedding_dropout():
    rng = np.random.default_rng(6)
    dense = Dense(4, "tanh", dtype=F64, seed=1)
    report = gradcheck(dense, draw(rng, 3, 5, 2), rng.integers(0, 4, (3, 5)), softmax_cross_entropy,
                       check_input=True)
    assert report.worst < GRADCHECK_TOL, str(report)

    embedding = Embedding(7, 3, dtype=F64, seed=2)  # (the padding row's zero gradient is by design, tested below)
    ids = rng.integers(0, 7, (4, 6))
    report = gradcheck(embedding, ids, draw(rng, 4, 6, 3), mean_squared_error, num_checks=21)
    assert report.worst < GRADCHECK_TOL, str(report)

    dropout = Dropout(0.5, seed=3)
    report = gradcheck(dropout, draw(rng, 4, 5), draw(rng, 4, 5), mean_squared_error, check_input=True)
    assert dropout.mask is not None and np.any(dropout.mask == 0)
    assert report.worst < GRADCHECK_TOL, str(report)


def test_gradcheck_rejects_float32():
    layer = LSTM(H, seed=0)
    x = np.zeros((N, T, I), dtype=np.float32)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(layer, x, np.zeros((N, H), dtype=np.float32), mean_squared_error)


# ---------------------------------------------------------------------------------------------------------
# Dense, Embedding, Dropout


@pytest.mark.parametrize("activation", [None, "linear", "sigmoid", "tanh", "relu", "softmax"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3)])
def test_dense_gradients(activation, shape):
    layer = Dense(5, activation, dtype=F64, seed=0)
    layer.build(shape[1:])
    randomize(layer, 0)
    x = draw(np.random.default_rng(1), *shape)
    if activation == "relu":
        a = x @ layer.kernel.value + layer.bias.value
        assert np.min(np.abs(a)) > 1e-4, "a relu pre-activation sits on the kink; pick another seed"
    check_layer_gradients(layer, x, label=f"dense/{activation}")


def test_dense_activations_values():
    layer = Dense(3, "softmax", input_size=2, dtype=F64, seed=0)
    x = np.array([[1.0, -2.0]])
    a = x @ layer.kernel.value
    np.testing.assert_allclose(layer(x), np.exp(a) / np.exp(a).sum(), rtol=1e-14)
    layer = Dense(3, "sigmoid", input_size=2, dtype=F64, seed=0)
    np.testing.assert_allclose(layer(x), 1 / (1 + np.exp(-a)), rtol=1e-14)
    big = Dense(1, "sigmoid", input_size=1, dtype=F64, seed=0)
    big.kernel.value[...] = 1.0
    assert big(np.array([[-1e4], [1e4]])).ravel().tolist() == [0.0, 1.0]  # no overflow warning


def test_embedding_gradient_padding_and_repeats():
    layer = Embedding(6, 3, padding_idx=0, dtype=F64, seed=0)
    assert np.all(layer.embeddings.value[0] == 0)
    ids = np.array([[1, 1, 0, 4], [0, 1, 5, 5]])
    out = layer(ids)
    assert out.shape == (2, 4, 3) and np.all(out[ids == 0] == 0)
    dy = np.arange(24, dtype=F64).reshape(2, 4, 3)
    assert layer.backward(dy) is None
    grad = layer.embeddings.grad
    np.testing.assert_array_equal(grad[0], 0)  # padding never learns
    np.testing.assert_array_equal(grad[1], dy[0, 0] + dy[0, 1] + dy[1, 1])  # repeated ids add up
    np.testing.assert_array_equal(grad[5], dy[1, 2] + dy[1, 3])
    np.testing.assert_array_equal(grad[2], 0)
    check_layer_gradients_embedding(layer, ids)


def check_layer_gradients_embedding(layer, ids):
    rng = np.random.default_rng(0)
    w = draw(rng, *ids.shape, layer.dim)
    layer.zero_grad()
    layer(ids)
    layer.backward(w)
    numeric = numerical_gradient(lambda: np.sum(w * layer(ids)), layer.embeddings.value)
    numeric[layer.padding_idx] = 0  # the padding row is excluded from learning by design
    assert relative_error(layer.embeddings.grad, numeric) < RTOL


def test_embedding_pretrained_weights_and_freezing():
    weights = np.arange(12, dtype=F64).reshape(4, 3)
    layer = Embedding(4, 3, weights=weights, padding_idx=3)
    assert layer.embeddings.value.dtype == np.float32
    np.testing.assert_array_equal(layer.embeddings.value[:3], weights[:3])
    assert np.all(layer.embeddings.value[3] == 0)
    layer.embeddings.value[0, 0] = 99
    assert weights[0, 0] == 0  # a copy, not a view of the caller's array
    assert layer.embeddings.trainable
    layer.freeze()
    assert not layer.embeddings.trainable and layer.get_config()["trainable"] is False
    layer.unfreeze()
    assert layer.embeddings.trainable
    assert not Embedding(4, 3, trainable=False).embeddings.trainable
    with pytest.raises(ValueError, match=r"weights has shape \(4, 3\), expected \(vocab_size=5, dim=3\)"):
        Embedding(5, 3, weights=weights)


@pytest.mark.parametrize("ids, bad", [([[0, 10]], "10"), ([[-1, 2]], "-1"), ([[0, 12]], "12")])
def test_embedding_ids_out_of_range(ids, bad):
    layer = Embedding(10, 2)
    with pytest.raises(ValueError, match=rf"ids contains {bad}, expected ids in \[0, vocab_size=10\)"):
        layer(np.array(ids))
    with pytest.raises(ValueError, match="ids has dtype float64, expected integer"):
        layer(np.array([[0.0, 1.0]]))


def test_dropout_train_and_eval():
    layer = Dropout(0.25, seed=0)
    x = np.ones((200, 50))
    y = layer(x)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), layer.mask)
    layer.eval()
    assert layer(x) is x or np.array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_recurrent_dropout_only_in_training():
    layer = make_layer("lstm", num_layers=2, layer_dropout=0.5, return_sequences=True)
    x = draw(np.random.default_rng(0), N, T, I)
    trained = layer(x)
    masks = layer._cache["masks"]
    assert len(masks) == 1 and masks[0] is not None and np.any(masks[0] == 0)
    assert set(np.unique(masks[0])) == {0.0, 2.0}
    layer.eval()
    evaluated = layer(x)
    assert layer._cache["masks"] == [None]
    assert not np.allclose(trained, evaluated)
    np.testing.assert_array_equal(evaluated, layer(x))  # deterministic in eval mode


# ---------------------------------------------------------------------------------------------------------
# semantics


def test_bidirectional_with_lengths_equals_each_row_alone():
    """Each row, run alone on its own prefix, gives the same outputs and final states; outputs past a row's
    length are zero (the reverse direction starts from each row's last valid step)."""
    for cell in ("lstm", "gru", "rnn-tanh"):
        layer = make_layer(cell, num_layers=2, bidirectional=True, return_sequences=True, return_state=True)
        check_rows_alone(layer, draw(np.random.default_rng(2), N, T, I), np.array([5, 2, 0]), cell)


def test_final_output_is_top_layer_states():
    layer = make_layer("lstm", num_layers=2, bidirectional=True, return_state=True)
    x = draw(np.random.default_rng(0), N, T, I)
    output, states = layer(x, lengths=LENGTHS)
    assert len(states) == 4 and all(isinstance(s, tuple) and len(s) == 2 for s in states)
    np.testing.assert_array_equal(output, np.concatenate([states[2][0], states[3][0]], axis=1))
    sequences = make_layer("lstm", num_layers=2, bidirectional=True, return_sequences=True)
    y = sequences(x, lengths=LENGTHS)
    for n, length in enumerate(LENGTHS):
        np.testing.assert_allclose(y[n, length - 1, :H], output[n, :H], rtol=0, atol=1e-15)  # forward: last valid
        np.testing.assert_allclose(y[n, 0, H:], output[n, H:], rtol=0, atol=1e-15)  # reverse: ends at step 0


def test_batch_first_false_is_the_transpose():
    x = draw(np.random.default_rng(0), N, T, I)
    first = make_layer("gru", bidirectional=True, return_sequences=True)
    second = make_layer("gru", bidirectional=True, return_sequences=True, batch_first=False)
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(first(x, lengths=LENGTHS),
                                  second(time_major, lengths=LENGTHS).transpose(1, 0, 2))


def test_initial_state_continues_a_sequence():
    """Running T steps in two calls, passing the states along, equals one call over all steps."""
    layer = make_layer("lstm-peephole", num_layers=2, return_sequences=True, return_state=True)
    x = draw(np.random.default_rng(0), N, 2 * T, I)
    whole, whole_states = layer(x)
    first, states = layer(x[:, :T])
    second, final = layer(x[:, T:], initial_state=states)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=0, atol=1e-14)
    for got, want in zip(state_arrays(final), state_arrays(whole_states)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_stateful_carries_and_resets():
    layer = make_layer("gru", stateful=True, return_sequences=True)
    reference = make_layer("gru", return_sequences=True, return_state=True)
    x = draw(np.random.default_rng(0), N, 2 * T, I)
    first, second = layer(x[:, :T]), layer(x[:, T:])
    whole, _ = reference(x)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="reset_states"):
        layer(x[:2, :T])
    layer.reset_states()
    np.testing.assert_array_equal(layer(x[:, :T]), first)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_step_equals_sequence_forward(cell, dtype):
    layer = CELLS[cell](num_layers=2, return_sequences=True, return_state=True, layer_dropout=0.5, dtype=dtype, seed=0)
    layer.eval()  # step never applies dropout, so compare with the inference forward
    check_step_matches_sequence(layer, np.random.default_rng(0).standard_normal((N, T, I)).astype(dtype), dtype)


def test_step_does_not_disturb_backward_cache():
    layer = make_layer("lstm", return_sequences=True)
    x = draw(np.random.default_rng(0), N, T, I)
    dy = draw(np.random.default_rng(1), N, T, H)
    layer(x)
    layer.zero_grad()
    expected = layer.backward(dy)
    layer.step(x[:, 0])
    np.testing.assert_array_equal(layer.backward(dy), expected)


# ---------------------------------------------------------------------------------------------------------
# initialization, seeding, parameters, config


def test_initialization():
    layer = LSTM(4, input_size=6, dtype=F64, seed=0)
    kernel = dict(layer.named_parameters())["kernel"].value
    recurrent = dict(layer.named_parameters())["recurrent_kernel"].value
    bias = dict(layer.named_parameters())["bias"].value
    assert kernel.shape == (6, 16) and np.max(np.abs(kernel)) <= np.sqrt(6 / (6 + 16))
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(4), atol=1e-12)  # orthonormal rows of [H, 4H]
    np.testing.assert_array_equal(bias, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])  # i, f, g, o
    coupled = LSTM(4, input_size=6, coupled=True, forget_bias=2.0, peephole=True, seed=0)
    params = dict(coupled.named_parameters())
    np.testing.assert_array_equal(params["bias"].value, np.r_[2 * np.ones(4), np.zeros(8)])  # f, g, o
    assert params["peephole"].shape == (2, 4) and np.all(params["peephole"].value == 0)
    gru = GRU(4, input_size=6, seed=0)
    assert dict(gru.named_parameters())["bias"].shape == (2, 12)
    assert dict(GRU(4, input_size=6, reset_after=False).named_parameters())["bias"].shape == (12,)
    rnn = RNN(4, input_size=6, seed=0)
    u = dict(rnn.named_parameters())["recurrent_kernel"].value
    np.testing.assert_allclose(u @ u.T, np.eye(4), atol=1e-6)
    assert SimpleRNN is RNN


def test_parameter_names_and_shapes():
    layer = GRU(3, input_size=2, num_layers=2, bidirectional=True, reset_after=False)
    shapes = {name: param.shape for name, param in layer.named_parameters()}
    assert shapes == {
        "l0.forward.kernel": (2, 9), "l0.forward.recurrent_kernel": (3, 9), "l0.forward.bias": (9,),
        "l0.reverse.kernel": (2, 9), "l0.reverse.recurrent_kernel": (3, 9), "l0.reverse.bias": (9,),
        "l1.forward.kernel": (6, 9), "l1.forward.recurrent_kernel": (3, 9), "l1.forward.bias": (9,),
        "l1.reverse.kernel": (6, 9), "l1.reverse.recurrent_kernel": (3, 9), "l1.reverse.bias": (9,),
    }
    assert [name for name, _ in LSTM(3, input_size=2, peephole=True).named_parameters()] == [
        "kernel", "recurrent_kernel", "bias", "peephole"]
    assert layer.count_params() == sum(int(np.prod(s)) for s in shapes.values())


def test_seeding():
    same = [LSTM(3, input_size=2, seed=5).parameters()[0].value for _ in range(2)]
    np.testing.assert_array_equal(*same)
    rnnext.layers.seed(11)
    first = [Dense(3, input_size=2).kernel.value, Dense(3, input_size=2).kernel.value]
    rnnext.layers.seed(11)
    again = [Dense(3, input_size=2).kernel.value, Dense(3, input_size=2).kernel.value]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # two layers, two draws
    # float32 and float64 layers with one seed hold the same weights (drawn in float64, then cast)
    np.testing.assert_allclose(LSTM(3, input_size=2, seed=1).parameters()[1].value,
                               LSTM(3, input_size=2, seed=1, dtype=F64).parameters()[1].value, rtol=1e-6)


@pytest.mark.parametrize("layer", [
    LSTM(4, input_size=3, num_layers=2, bidirectional=True, layer_dropout=0.2, peephole=True, coupled=True,
         forget_bias=0.5, return_sequences=True, batch_first=False, stateful=True, dtype=F64, seed=3, name="enc"),
    GRU(4, reset_after=False, return_state=True),
    RNN(4, "relu", input_size=2),
    Embedding(10, 3, padding_idx=0, trainable=False),
    Dense(2, "softmax", input_size=4),
    Dropout(0.3, seed=1),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    import json

    spec = json.loads(json.dumps({"class": type(layer).__name__, "config": layer.get_config()}))
    rebuilt = layer_from_config(spec)
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == layer.get_config()
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [(n, p.shape) for n, p in layer.named_parameters()]


def test_float32_default_and_input_cast():
    layer = LSTM(3, return_sequences=True, seed=0)
    y = layer(np.ones((2, 4, 5), dtype=np.float64))
    assert y.dtype == np.float32 and y.shape == (2, 4, 3) and y.flags.c_contiguous
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and dx.shape == (2, 4, 5)
    assert layer.parameters()[0].grad.dtype == np.float32


def test_output_shapes():
    assert LSTM(4, bidirectional=True).compute_output_shape((None, 3)) == (8,)
    assert GRU(4, return_sequences=True).compute_output_shape((7, 3)) == (7, 4)
    assert Dense(2).compute_output_shape((7, 3)) == (7, 2)
    assert Embedding(10, 3).compute_output_shape((7,)) == (7, 3)


# ---------------------------------------------------------------------------------------------------------
# errors name the argument and the expected shape

@pytest.mark.parametrize("cell", [RNN, GRU, LSTM])
def test_ragged_inputs_name_the_argument(cell):
    layer = cell(3, seed=0, num_layers=2)
    x = np.zeros((2, 4, 5))
    ragged_h = [[0.0, 0.0, 0.0], [0.0, 0.0]]
    entry = (ragged_h, np.zeros((2, 3))) if cell is LSTM else ragged_h
    label = r"initial_state\[1\]\[0\] \(h\)" if cell is LSTM else r"initial_state\[1\]"
    good = (np.zeros((2, 3)), np.zeros((2, 3))) if cell is LSTM else np.zeros((2, 3))
    with pytest.raises(ValueError, match=rf"^{cell.__name__}.forward: {label} is not a rectangular array of numbers"):
        layer(x, initial_state=[good, entry])
    single = cell(3, seed=0)
    with pytest.raises(ValueError, match=rf"^{cell.__name__}.forward: initial_state"):
        single(x, initial_state=[entry] if cell is LSTM else ragged_h)
    with pytest.raises(ValueError, match=rf"^{cell.__name__}.forward: x is not a rectangular array of numbers"):
        single([[[0.0] * 5] * 4, [[0.0] * 5] * 3])
    with pytest.raises(ValueError, match=rf"^{cell.__name__}.forward: lengths is not a rectangular array"):
        single(x, lengths=[[1], [2, 3]])


def test_zero_input_features_are_reported_on_x():
    with pytest.raises(ValueError, match=r"^LSTM.forward: x has shape \(2, 4, 0\) \(N, T, I\): I=0 input features, "
                                         r"expected I >= 1$"):
        LSTM(3)(np.zeros((2, 4, 0)))


def test_unsigned_lengths_beyond_int64():
    with pytest.raises(ValueError, match=r"lengths has values in \[1, 9223372036854775808\], expected values in "
                                         r"\[0, T=4\]"):
        GRU(3)(np.zeros((2, 4, 5)), lengths=np.array([2**63, 1], np.uint64))


def test_embedding_empty_and_huge_ids():
    embedding = Embedding(10, 4, seed=0)
    assert embedding([]).shape == (0, 4)  # NumPy reads [] as float64; it is an empty batch of ids
    assert embedding(np.zeros((2, 0), np.int64)).shape == (2, 0, 4)
    with pytest.raises(ValueError, match="ids has dtype float64"):
        embedding(np.zeros(0))  # an array given as float64 keeps its dtype and is refused
    # 2**40 ids as a zero-stride view: refused at once because the output cannot exist, not after scanning them
    with pytest.raises(MemoryError, match=r"^Embedding.forward: ids has shape \(1099511627776,\); the output"):
        embedding(np.broadcast_to(np.int64(0), (2**40,)))
    with pytest.raises(ValueError, match="ids is not a rectangular array"):
        embedding([[1, 2], [3]])


def test_errors():
    layer = LSTM(3, seed=0)
    with pytest.raises(ValueError, match="no forward pass"):
        layer.backward(np.zeros((2, 3)))
    layer(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 4, 6\), expected \(N, T, I=5\)"):
        layer(np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 4\), expected \(N, T, I\)"):
        layer(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"lengths has shape \(3,\) and dtype int64, expected integers of shape "
                                         r"\(N=2,\)"):
        layer(np.zeros((2, 4, 5)), lengths=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"lengths has dtype float64|lengths has shape \(2,\) and dtype float64"):
        layer(np.zeros((2, 4, 5)), lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lengths has values in \[1, 5\], expected values in \[0, T=4\]"):
        layer(np.zeros((2, 4, 5)), lengths=np.array([1, 5]))
    with pytest.raises(ValueError, match=r"initial_state\[0\]\[0\] \(h\) has shape \(2, 4\), expected \(N=2, H=3\)"):
        layer(np.zeros((2, 4, 5)), initial_state=[(np.zeros((2, 4)), np.zeros((2, 3)))])
    with pytest.raises(ValueError, match="initial_state is a list of length 3, expected a list of 1"):
        layer(np.zeros((2, 4, 5)), initial_state=[np.zeros((2, 3))] * 3)
    layer(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4\), expected \(N=2, D\*H=3\)"):
        layer.backward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="bidirectional"):
        LSTM(3, bidirectional=True).step(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"x_t has shape \(2, 4\), expected \(N, I=5\)"):
        layer.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="units is 0"):
        GRU(0)
    with pytest.raises(ValueError, match="activation is 'gelu'"):
        RNN(3, activation="gelu")
    with pytest.raises(ValueError, match="dropout is 1.5"):
        GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match=r"forget_bias is 1e\+300, expected a finite number of magnitude at most "
                                         r"3\.40282e\+38 \(float32\)"):
        LSTM(3, forget_bias=1e300)
    assert LSTM(3, forget_bias=1e300, dtype=np.float64, input_size=2).forget_bias == 1e300
    with pytest.raises(ValueError, match="dtype is float16"):
        GRU(3, dtype=np.float16)
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\), expected \(N, \.\.\., F=4\)"):
        dense = Dense(2, input_size=4)
        dense(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------------------
# PyTorch: a 2-layer bidirectional LSTM and GRU over packed sequences, outputs and gradients


def torch_module_and_layer(kind, torch):
    torch.manual_seed(0)
    hidden, inputs = 3, 4
    if kind == "lstm":
        module = torch.nn.LSTM(inputs, hidden, num_layers=2, bidirectional=True, batch_first=True).double()
        layer = LSTM(hidden, input_size=inputs, num_layers=2, bidirectional=True, return_sequences=True,
                     return_state=True, dtype=F64, forget_bias=0.0)
    else:
        module = torch.nn.GRU(inputs, hidden, num_layers=2, bidirectional=True, batch_first=True).double()
        layer = GRU(hidden, input_size=inputs, num_layers=2, bidirectional=True, return_sequences=True,
                    return_state=True, dtype=F64)
    params = dict(layer.named_parameters())
    for k in range(2):
        for direction, suffix in (("forward", ""), ("reverse", "_reverse")):
            def get(name):
                return getattr(module, f"{name}_l{k}{suffix}").detach().numpy()

            prefix = f"l{k}.{direction}."
            # torch stores [G*H, I] in the same gate order (i, f, g, o / r, z, n); the engine wants [I, G*H]
            params[prefix + "kernel"].value[...] = get("weight_ih").T
            params[prefix + "recurrent_kernel"].value[...] = get("weight_hh").T
            if kind == "lstm":
                params[prefix + "bias"].value[...] = get("bias_ih") + get("bias_hh")
            else:
                params[prefix + "bias"].value[...] = np.stack([get("bias_ih"), get("bias_hh")])
    return torch, module, layer


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_against_torch_packed_bidirectional(kind, torch):
    torch, module, layer = torch_module_and_layer(kind, torch)
    rng = np.random.default_rng(0)
    n, steps = 4, 6
    lengths = np.array([6, 2, 4, 1])  # torch's packing needs lengths >= 1
    x = rng.standard_normal((n, steps, 4))

    output, states = layer(x, lengths=lengths)
    x_torch = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_torch, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    packed_out, torch_states = module(packed)
    torch_out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=steps)
    h_n = torch_states[0] if kind == "lstm" else torch_states

    # float64 through the same operations in another order: ~1e-16 measured; 1e-12 catches any real mismatch.
    tol = 1e-12
    np.testing.assert_allclose(output, torch_out.detach().numpy(), rtol=0, atol=tol, err_msg="output")
    ours_h = [s[0] if kind == "lstm" else s for s in states]
    np.testing.assert_allclose(np.stack(ours_h), h_n.detach().numpy(), rtol=0, atol=tol, err_msg="h_n")
    if kind == "lstm":
        np.testing.assert_allclose(np.stack([s[1] for s in states]), torch_states[1].detach().numpy(),
                                   rtol=0, atol=tol, err_msg="c_n")

    # gradients of L = sum(w * output) + sum(v * h_n)
    w = rng.standard_normal(output.shape)
    v = rng.standard_normal((4, n, 3))
    loss = (torch_out * torch.tensor(w)).sum() + (h_n * torch.tensor(v)).sum()
    loss.backward()
    layer.zero_grad()
    dstates = [(v[i], None) if kind == "lstm" else v[i] for i in range(4)]
    dx = layer.backward(w, dstates=dstates)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=0, atol=tol, err_msg="dx")
    params = dict(layer.named_parameters())
    for k in range(2):
        for direction, suffix in (("forward", ""), ("reverse", "_reverse")):
            prefix = f"l{k}.{direction}."

            def grad(name):
                return getattr(module, f"{name}_l{k}{suffix}").grad.numpy()

            np.testing.assert_allclose(params[prefix + "kernel"].grad, grad("weight_ih").T, rtol=0, atol=tol,
                                       err_msg=prefix + "kernel")
            np.testing.assert_allclose(params[prefix + "recurrent_kernel"].grad, grad("weight_hh").T, rtol=0,
                                       atol=tol, err_msg=prefix + "recurrent_kernel")
            expected_bias = grad("bias_ih") if kind == "lstm" else np.stack([grad("bias_ih"), grad("bias_hh")])
            np.testing.assert_allclose(params[prefix + "bias"].grad, expected_bias, rtol=0, atol=tol,
                                       err_msg=prefix + "bias")
