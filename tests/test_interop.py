"""Tests of rnnext.interop: PyTorch modules and Keras weight lists <-> rnnext layers.

The torch tests (skipped without torch) run the converted layer and the torch module on the same random input,
padded and packed, and compare every output and final state. The Keras tests need no Keras: they build the weight
lists in the documented Keras layouts by hand and check them against NumPy implementations of Keras's own cell
equations (keras/src/layers/rnn/{lstm,gru,simple_rnn}.py), written below independently of rnnext's gate order.
"""
import sys

import numpy as np
import pytest

import rnnext
from rnnext.interop import from_keras_weights, from_torch, to_keras_weights, to_torch, to_torch_state_dict

from conftest import assert_close, mixed_lengths, sigmoid

# Relative to each tensor's largest |expected| entry.
# - float64: the same sums in different orders; observed ~1e-16, so 1e-12 still catches any wrong block or
#   transpose (those are off at ~1e-1) with four orders of margin for longer sums.
# - float32: two float32 computations with different tanh/sigmoid approximations and summation orders over two
#   stacked layers; observed ~3e-7, 1e-5 leaves 30x.
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


# =========================================================================================================
# PyTorch

TORCH_CELLS = {  # name -> (torch class name, torch options)
    "rnn-tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn-relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
}
T, N, I, H = 5, 4, 3, 6
# Unsorted lengths in [1, T] with T present (torch's packing rejects 0 and pads to the longest row).
LENGTHS = mixed_lengths(T, N, shortest=1, also=(T - 1,))


def torch_run(torch, module, x, state0, lengths):
    """module's outputs (zero past each row's length when packed) and final states, as NumPy."""
    x_t = torch.from_numpy(x)
    if lengths is not None:
        steps = x.shape[1] if module.batch_first else x.shape[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(lengths), batch_first=module.batch_first,
                                                         enforce_sorted=False)
        out, state = module(packed, state0)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=steps)
    else:
        y, state = module(x_t, state0)
    return y.detach().numpy(), state


def compare_with_torch(torch, module, layer, dtype, packed, what, rng):
    """Runs both on one random input and random initial states; compares outputs and every final state."""
    L, D, is_lstm = module.num_layers, 2 if module.bidirectional else 1, isinstance(module, torch.nn.LSTM)
    x = rng.standard_normal((N, T, I) if module.batch_first else (T, N, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((L * D, N, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((L * D, N, H))).astype(dtype)
    lengths = LENGTHS if packed else None
    torch_state0 = (torch.from_numpy(h0), torch.from_numpy(c0)) if is_lstm else torch.from_numpy(h0)
    initial_state = [(h0[i], c0[i]) if is_lstm else h0[i] for i in range(L * D)]

    with torch.no_grad():
        y_expected, state = torch_run(torch, module, x, torch_state0, lengths)
    y, states = layer.forward(x, initial_state=initial_state, lengths=lengths)

    actual, expected = {"y": y}, {"y": y_expected}
    h_n, c_n = (state[0].numpy(), state[1].numpy()) if is_lstm else (state.numpy(), None)
    for i in range(L * D):  # both libraries order states layer-major, forward before reverse
        actual[f"h_n[{i}]"] = states[i][0] if is_lstm else states[i]
        expected[f"h_n[{i}]"] = h_n[i]
        if is_lstm:
            actual[f"c_n[{i}]"], expected[f"c_n[{i}]"] = states[i][1], c_n[i]
    assert y.dtype == dtype
    assert_close(actual, expected, RTOL[dtype], what, finite=True)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_from_torch_matches_torch(torch, cell, dtype, packed, batch_first, bias):
    class_name, options = TORCH_CELLS[cell]
    torch.manual_seed(0)  # torch's default init: weights and biases uniform in +-1/sqrt(H)
    module = getattr(torch.nn, class_name)(I, H, num_layers=2, bias=bias, batch_first=batch_first,
                                           bidirectional=True, dtype=torch.float64 if dtype == np.float64 else
                                           torch.float32, **options)
    module.eval()
    layer = from_torch(module, return_state=True)
    assert type(layer).__name__ == class_name
    assert layer.dtype == dtype and layer.batch_first == batch_first and layer.return_sequences
    assert (layer.num_layers, layer.bidirectional, layer.units, layer.input_size) == (2, True, H, I)
    if class_name == "GRU":
        assert layer.reset_after
    if class_name == "RNN":
        assert layer.activation == options["nonlinearity"]
    if not bias:
        assert all(not param.value.any() for name, param in layer.named_parameters() if name.endswith("bias"))
    compare_with_torch(torch, module, layer, dtype, packed, f"from_torch {cell} vs torch",
                       np.random.default_rng(1))


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (3, False), (1, True)])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_from_torch_other_stacks(torch, cell, num_layers, bidirectional):
    class_name, options = TORCH_CELLS[cell]
    torch.manual_seed(1)
    module = getattr(torch.nn, class_name)(I, H, num_layers=num_layers, bidirectional=bidirectional,
                                           dtype=torch.float64, **options)
    layer = from_torch(module, return_state=True)
    names = [name for name, _ in layer.named_parameters()]
    if num_layers == 1 and not bidirectional:
        assert names == ["kernel", "recurrent_kernel", "bias"]
    compare_with_torch(torch, module, layer, np.float64, True, f"from_torch {cell} L={num_layers}",
                       np.random.default_rng(2))


def test_from_torch_options_and_copies(torch):
    torch.manual_seed(2)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=False, dropout=0.25, dtype=torch.float64)
    # dtype override, batch_first override, dropout and training mode carried over
    layer = from_torch(module, dtype=np.float32, batch_first=True, return_sequences=False, name="enc")
    assert layer.dtype == np.float32 and layer.batch_first and not layer.return_sequences
    assert layer.layer_dropout == 0.25 and layer.training and layer.name == "enc"
    module.eval()
    assert not from_torch(module).training
    # weights copied: changing the module afterwards leaves the layer alone
    layer = from_torch(module)
    before = {name: param.value.copy() for name, param in layer.named_parameters()}
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.add_(1.0)
    for name, param in layer.named_parameters():
        np.testing.assert_array_equal(param.value, before[name], err_msg=name)
    # batch_first override: the layer reads [N, T, I] while the module reads [T, N, I]
    layer = from_torch(module, batch_first=True)
    x = np.random.default_rng(3).standard_normal((T, N, I))
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    assert_close({"y": layer(x.transpose(1, 0, 2)).transpose(1, 0, 2)}, {"y": expected}, RTOL[np.float64],
                 "batch_first override", finite=True)


def random_layer(cell, dtype, **options):
    """An rnnext layer with random weights and non-zero biases (every bias entry matters in a round trip)."""
    activation = {"rnn-tanh": {"activation": "tanh"}, "rnn-relu": {"activation": "relu"}}.get(cell, {})
    cls = {"lstm": rnnext.LSTM, "gru": rnnext.GRU}.get(cell, rnnext.RNN)
    layer = cls(H, input_size=I, dtype=dtype, seed=7, **activation, **options)
    rng = np.random.default_rng(8)
    for name, param in layer.named_parameters():
        if name.endswith("bias"):
            param.value[...] = 0.3 * rng.standard_normal(param.shape)
    return layer


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_round_trip_through_torch(torch, cell, dtype):
    class_name, options = TORCH_CELLS[cell]
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    layer = random_layer(cell, dtype, num_layers=2, bidirectional=True, return_sequences=True, return_state=True,
                         batch_first=False)
    layer.eval()

    # into a module built independently of rnnext: strict load_state_dict checks every name and shape
    state = to_torch_state_dict(layer)
    module = getattr(torch.nn, class_name)(I, H, num_layers=2, bidirectional=True, dtype=torch_dtype, **options)
    assert list(state) == list(module.state_dict())
    assert all(tensor.dtype == torch_dtype for tensor in state.values())
    module.load_state_dict(state)
    module.eval()
    compare_with_torch(torch, module, layer, dtype, True, f"{cell} layer -> state dict -> torch",
                       np.random.default_rng(4))

    built = to_torch(layer)
    assert isinstance(built, getattr(torch.nn, class_name)) and not built.training
    compare_with_torch(torch, built, layer, dtype, False, f"{cell} layer -> to_torch", np.random.default_rng(5))

    # and back: the same numbers (LSTM/RNN bias = bias_ih + 0, GRU rows = (bias_ih, bias_hh))
    back = from_torch(built)
    for (name, param), (back_name, back_param) in zip(layer.named_parameters(), back.named_parameters()):
        assert name == back_name
        np.testing.assert_array_equal(back_param.value, param.value, err_msg=name)

    # the state dict is a copy: writing into it leaves the layer alone
    kernel = dict(layer.named_parameters())["l0.forward.kernel"].value
    kernel_before = kernel.copy()
    state["weight_ih_l0"].add_(1.0)
    np.testing.assert_array_equal(kernel, kernel_before)


def test_torch_unsupported_options(torch):
    with pytest.raises(TypeError, match="expected torch.nn.RNN"):
        from_torch(torch.nn.Linear(I, H))
    with pytest.raises(ValueError, match="num_layers cannot be passed"):
        from_torch(torch.nn.GRU(I, H), num_layers=3)
    unsupported = {
        "peephole": rnnext.LSTM(H, input_size=I, peephole=True),
        "coupled": rnnext.LSTM(H, input_size=I, coupled=True),
        "reset_after=False": rnnext.GRU(H, input_size=I, reset_after=False),
        "activation='sigmoid'": rnnext.RNN(H, input_size=I, activation="sigmoid"),
    }
    for text, layer in unsupported.items():
        for convert in (to_torch_state_dict, to_torch):
            with pytest.raises(ValueError, match=f"{text}.*no torch"):
                convert(layer)
    with pytest.raises(ValueError, match="not built"):
        to_torch_state_dict(rnnext.LSTM(H))
    with pytest.raises(TypeError, match="expected an rnnext RNN, LSTM or GRU"):
        to_torch(rnnext.Dense(3, input_size=2))


def test_torch_missing_gives_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    layer = rnnext.LSTM(H, input_size=I)
    for convert in (to_torch_state_dict, to_torch):
        with pytest.raises(ImportError, match="needs PyTorch"):
            convert(layer)


# =========================================================================================================
# Keras: NumPy implementations of Keras's cell equations, in Keras's own gate order

def keras_lstm_step(x, state, kernel, recurrent_kernel, bias):
    """keras LSTMCell: z = x W + h U + b split into i, f, c, o."""
    h, c = state
    u = kernel.shape[1] // 4
    z = x @ kernel + h @ recurrent_kernel + bias
    i = sigmoid(z[:, :u])
    f = sigmoid(z[:, u:2 * u])
    c = f * c + i * np.tanh(z[:, 2 * u:3 * u])
    o = sigmoid(z[:, 3 * u:])
    return o * np.tanh(c), (o * np.tanh(c), c)


def keras_gru_step(x, h, kernel, recurrent_kernel, bias, reset_after):
    """keras GRUCell, blocks z (update), r (reset), h (candidate); h = z * h_prev + (1 - z) * h_tilde."""
    u = kernel.shape[1] // 3
    W_z, W_r, W_h = kernel[:, :u], kernel[:, u:2 * u], kernel[:, 2 * u:]
    U_z, U_r, U_h = recurrent_kernel[:, :u], recurrent_kernel[:, u:2 * u], recurrent_kernel[:, 2 * u:]
    if reset_after:  # bias (2, 3u): row 0 for the input projection, row 1 for the recurrent one
        b_x, b_h = bias[0], bias[1]
        z = sigmoid(x @ W_z + b_x[:u] + h @ U_z + b_h[:u])
        r = sigmoid(x @ W_r + b_x[u:2 * u] + h @ U_r + b_h[u:2 * u])
        h_tilde = np.tanh(x @ W_h + b_x[2 * u:] + r * (h @ U_h + b_h[2 * u:]))
    else:  # bias (3u,)
        z = sigmoid(x @ W_z + h @ U_z + bias[:u])
        r = sigmoid(x @ W_r + h @ U_r + bias[u:2 * u])
        h_tilde = np.tanh(x @ W_h + bias[2 * u:] + (r * h) @ U_h)
    h = z * h + (1 - z) * h_tilde
    return h, h


def keras_simple_rnn_step(x, h, kernel, recurrent_kernel, bias, activation):
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": sigmoid}[activation]
    h = act(x @ kernel + h @ recurrent_kernel + bias)
    return h, h


def keras_rnn(step, x, mask, state, go_backwards=False):
    """keras RNN over x [N, T, I] with a mask [N, T]: masked steps keep the state and output zero (the
    Bidirectional wrapper's zero_output_for_mask). go_backwards reverses the padded sequence, as Keras's backward
    layer does, and its outputs are flipped back (as Bidirectional does with return_sequences)."""
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    outputs = []
    for t in range(x.shape[1]):
        y, new_state = step(x[:, t], state)
        keep = mask[:, t][:, None]
        state = tuple(np.where(keep, a, b) for a, b in zip(new_state, state)) if isinstance(state, tuple) \
            else np.where(keep, new_state, state)
        outputs.append(np.where(keep, y, 0))
    y = np.stack(outputs, axis=1)
    return (y[:, ::-1] if go_backwards else y), state


def keras_forward(kind, weights, x, lengths, bidirectional, reset_after=True, activation="tanh"):
    """A Keras layer (or Bidirectional(layer), merge_mode="concat") with these get_weights(): (y, final states)."""
    N, T_, _ = x.shape
    mask = np.arange(T_)[None, :] < (np.full(N, T_) if lengths is None else lengths)[:, None]
    u = weights[1].shape[0]
    zero = np.zeros((N, u))
    directions = [weights[:3], weights[3:]] if bidirectional else [weights]
    ys, states = [], []
    for d, (kernel, recurrent_kernel, bias) in enumerate(directions):
        if kind == "lstm":
            step = lambda x_t, s, w=(kernel, recurrent_kernel, bias): keras_lstm_step(x_t, s, *w)
            state0 = (zero, zero)
        elif kind == "gru":
            step = lambda x_t, s, w=(kernel, recurrent_kernel, bias): keras_gru_step(x_t, s, *w, reset_after)
            state0 = zero
        else:
            step = lambda x_t, s, w=(kernel, recurrent_kernel, bias): keras_simple_rnn_step(x_t, s, *w, activation)
            state0 = zero
        y, state = keras_rnn(step, x, mask, state0, go_backwards=d == 1)
        ys.append(y)
        states.append(state)
    return np.concatenate(ys, axis=-1), states


def keras_weight_list(kind, I_, u, rng, bidirectional, reset_after=True):
    """Random weights in the Keras layout (Keras gate order; the values do not care)."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    bias_shape = (2, 3 * u) if kind == "gru" and reset_after else (G * u,)
    one = lambda: [0.5 * rng.standard_normal((I_, G * u)), 0.5 * rng.standard_normal((u, G * u)),
                   0.3 * rng.standard_normal(bias_shape)]
    return one() + one() if bidirectional else one()


def compare_with_keras(kind, weights, layer, lengths, bidirectional, what, reset_after=True, activation="tanh"):
    x = np.random.default_rng(11).standard_normal((N, T, weights[0].shape[0]))
    y_expected, states_expected = keras_forward(kind, weights, x, lengths, bidirectional, reset_after, activation)
    y, states = layer.forward(x, lengths=lengths)
    actual, expected = {"y": y}, {"y": y_expected}
    for d, (state, state_expected) in enumerate(zip(states, states_expected)):
        if kind == "lstm":
            actual[f"h[{d}]"], actual[f"c[{d}]"] = state
            expected[f"h[{d}]"], expected[f"c[{d}]"] = state_expected
        else:
            actual[f"h[{d}]"], expected[f"h[{d}]"] = state, state_expected
    assert_close(actual, expected, RTOL[np.float64], what, finite=True)


KERAS_CASES = {  # name -> (kind, reset_after, activation)
    "lstm": ("lstm", True, "tanh"),
    "gru-reset_after": ("gru", True, "tanh"),
    "gru-reset_before": ("gru", False, "tanh"),
    "simplernn-tanh": ("rnn", True, "tanh"),
    "simplernn-relu": ("rnn", True, "relu"),
}


@pytest.mark.parametrize("packed", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("case", KERAS_CASES)
def test_from_keras_weights_matches_keras_equations(case, bidirectional, packed):
    kind, reset_after, activation = KERAS_CASES[case]
    weights = keras_weight_list(kind, I, H, np.random.default_rng(10), bidirectional, reset_after)
    layer = from_keras_weights(kind, weights, bidirectional=bidirectional, reset_after=reset_after,
                               activation=activation, return_sequences=True, return_state=True)
    assert layer.dtype == np.float64 and layer.units == H and layer.input_size == I and layer.batch_first
    lengths = LENGTHS if packed else None
    compare_with_keras(kind, weights, layer, lengths, bidirectional, f"from_keras_weights {case}", reset_after,
                       activation)
    # round trip: exactly the arrays that went in, in the same order and shapes
    back = to_keras_weights(layer)
    assert [a.shape for a in back] == [a.shape for a in weights]
    for index, (a, b) in enumerate(zip(back, weights)):
        np.testing.assert_array_equal(a, b, err_msg=f"weights[{index}]")


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gru_keras_order_by_hand(reset_after):
    """From an rnnext GRU (r, z, n blocks) build Keras's list by the documented permutation (z, r, h), by hand;
    the Keras equations on that list must give the layer's own outputs."""
    layer = rnnext.GRU(H, input_size=I, reset_after=reset_after, bidirectional=True, return_sequences=True,
                       return_state=True, dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    for name, param in layer.named_parameters():
        if name.endswith("bias"):
            param.value[...] = 0.3 * rng.standard_normal(param.shape)
    params = dict(layer.named_parameters())
    by_hand = []
    for direction in ("forward", "reverse"):
        for what in ("kernel", "recurrent_kernel", "bias"):
            ours = params[f"l0.{direction}.{what}"].value
            r, z, n = ours[..., :H], ours[..., H:2 * H], ours[..., 2 * H:]
            by_hand.append(np.concatenate([z, r, n], axis=-1))
    bias_shape = (2, 3 * H) if reset_after else (3 * H,)
    assert [a.shape for a in by_hand] == [(I, 3 * H), (H, 3 * H), bias_shape] * 2

    converted = to_keras_weights(layer)
    for index, (a, b) in enumerate(zip(converted, by_hand)):
        np.testing.assert_array_equal(a, b, err_msg=f"to_keras_weights()[{index}]")
    compare_with_keras("gru", by_hand, layer, LENGTHS, True, "rnnext GRU vs Keras equations",
                       reset_after)
    # a permutation that is NOT Keras's (rnnext's own order) gives different numbers: the check has teeth
    ours = [params[f"l0.{d}.{w}"].value for d in ("forward", "reverse") for w in ("kernel", "recurrent_kernel",
                                                                                  "bias")]
    x = np.random.default_rng(11).standard_normal((N, T, I))
    y_wrong, _ = keras_forward("gru", ours, x, None, True, reset_after)
    assert np.abs(y_wrong - layer.forward(x)[0]).max() > 1e-2


def test_lstm_and_simple_rnn_keras_order_by_hand():
    """LSTM i, f, c, o and SimpleRNN are rnnext's own order: the layer's arrays are Keras's list as they are."""
    for layer in (rnnext.LSTM(H, input_size=I, bidirectional=True, return_sequences=True, return_state=True,
                              dtype=np.float64, seed=5),
                  rnnext.RNN(H, input_size=I, return_sequences=True, return_state=True, dtype=np.float64, seed=6)):
        kind = "lstm" if isinstance(layer, rnnext.LSTM) else "rnn"
        by_hand = [param.value for _, param in layer.named_parameters()]
        converted = to_keras_weights(layer)
        for index, (a, b) in enumerate(zip(converted, by_hand)):
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} weights[{index}]")
        compare_with_keras(kind, by_hand, layer, LENGTHS, layer.bidirectional, f"rnnext {kind} vs Keras")
    # Keras's unit_forget_bias puts ones in block 1 of (i, f, c, o); rnnext's forget_bias=1 does the same
    bias = to_keras_weights(rnnext.LSTM(H, input_size=I))[2]
    np.testing.assert_array_equal(bias, np.concatenate([np.zeros(H), np.ones(H), np.zeros(2 * H)]))


def test_keras_documented_shapes():
    u, i = 4, 3
    shapes = lambda layer: [a.shape for a in to_keras_weights(layer)]
    assert shapes(rnnext.LSTM(u, input_size=i)) == [(i, 4 * u), (u, 4 * u), (4 * u,)]
    assert shapes(rnnext.GRU(u, input_size=i)) == [(i, 3 * u), (u, 3 * u), (2, 3 * u)]
    assert shapes(rnnext.GRU(u, input_size=i, reset_after=False)) == [(i, 3 * u), (u, 3 * u), (3 * u,)]
    assert shapes(rnnext.RNN(u, input_size=i)) == [(i, u), (u, u), (u,)]
    assert shapes(rnnext.LSTM(u, input_size=i, bidirectional=True)) == [(i, 4 * u), (u, 4 * u), (4 * u,)] * 2
    dense = rnnext.Dense(5, input_size=i, seed=1)
    assert shapes(dense) == [(i, 5), (5,)]
    np.testing.assert_array_equal(to_keras_weights(dense)[0], dense.kernel.value)
    embedding = rnnext.Embedding(10, u, seed=1)
    assert shapes(embedding) == [(10, u)]
    np.testing.assert_array_equal(to_keras_weights(embedding)[0], embedding.embeddings.value)
    assert to_keras_weights(rnnext.Dropout(0.5)) == []


def test_keras_options_and_copies():
    weights = keras_weight_list("lstm", I, H, np.random.default_rng(12), False)
    # dtype follows the arrays unless given; layer options pass through
    assert from_keras_weights("LSTM", [a.astype(np.float32) for a in weights]).dtype == np.float32
    layer = from_keras_weights("lstm", weights, dtype=np.float32, batch_first=False, name="enc")
    assert layer.dtype == np.float32 and not layer.batch_first and layer.name == "enc"
    # the arrays are copied both ways
    layer = from_keras_weights("lstm", weights, units=H)
    kernel_before = layer.named_parameters()[0][1].value.copy()
    weights[0] += 1.0
    np.testing.assert_array_equal(layer.named_parameters()[0][1].value, kernel_before)
    to_keras_weights(layer)[0][...] = 0.0
    np.testing.assert_array_equal(layer.named_parameters()[0][1].value, kernel_before)
    # use_bias=False: two arrays per direction, zero biases
    gru = keras_weight_list("gru", I, H, np.random.default_rng(13), True)
    layer = from_keras_weights("gru", gru[0:2] + gru[3:5], use_bias=False, bidirectional=True,
                               return_sequences=True, return_state=True)
    assert all(not p.value.any() for name, p in layer.named_parameters() if name.endswith("bias"))
    gru[2][...] = gru[5][...] = 0.0  # Keras's use_bias=False layer computes as one with zero biases
    compare_with_keras("gru", gru, layer, None, True, "from_keras_weights use_bias=False")


def test_keras_errors():
    lstm = keras_weight_list("lstm", I, H, np.random.default_rng(15), True)
    with pytest.raises(ValueError, match=r"weights is 5 arrays, expected 6 for a Bidirectional Keras LSTM"):
        from_keras_weights("lstm", lstm[:5], bidirectional=True)
    with pytest.raises(ValueError, match=r"weights is 6 arrays, expected 3"):
        from_keras_weights("lstm", lstm)
    bad = list(lstm)
    bad[4] = bad[4][:, :-1]
    with pytest.raises(ValueError, match=r"weights\[4\] \(backward recurrent_kernel\) has shape \(6, 23\), "
                                         r"expected \(H=6, 4H=24\)"):
        from_keras_weights("lstm", bad, bidirectional=True)
    with pytest.raises(ValueError, match=r"weights\[0\] \(kernel\) has shape \(3, 24\), expected \(I=3, 3H=18\)"):
        from_keras_weights("gru", lstm[:3])
    with pytest.raises(ValueError, match=r"weights\[0\] \(kernel\) has shape \(3, 24\), expected \(I=3, 4H=20\)"):
        from_keras_weights("lstm", lstm[:3], units=5)
    gru_before = keras_weight_list("gru", I, H, np.random.default_rng(16), False, reset_after=False)
    with pytest.raises(ValueError, match=r"weights\[2\] \(bias\) has shape \(18,\), expected \(2, 3H=18\).*"
                                         r"pass reset_after=False"):
        from_keras_weights("gru", gru_before)
    with pytest.raises(ValueError, match="hard_sigmoid"):
        from_keras_weights("gru", gru_before, reset_after=False, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="computes 'tanh' only"):
        from_keras_weights("lstm", lstm[:3], activation="relu")
    with pytest.raises(ValueError, match="kind is 'conv'"):
        from_keras_weights("conv", lstm[:3])
    with pytest.raises(ValueError, match="input_size cannot be passed"):
        from_keras_weights("lstm", lstm[:3], input_size=3)
    with pytest.raises(ValueError, match="num_layers=2.*Keras stacks separate layers"):
        to_keras_weights(rnnext.LSTM(H, input_size=I, num_layers=2))
    with pytest.raises(ValueError, match="peephole=True"):
        to_keras_weights(rnnext.LSTM(H, input_size=I, peephole=True))
    with pytest.raises(ValueError, match="not built"):
        to_keras_weights(rnnext.GRU(H))
    with pytest.raises(TypeError, match="expected an rnnext RNN"):
        to_keras_weights(object())
