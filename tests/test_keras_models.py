"""rnnext.interop.from_keras / to_keras against real Keras 3 (torch backend, CPU).

Each supported Keras layer, and the course's models, get random weights; Keras -> rnnext must give Keras's
outputs, and Keras -> rnnext -> Keras the identical weights, layer names and configuration; summary() parameter
counts must equal Keras's count_params. Skipped without Keras (or without torch, its backend here).
"""
import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported; numpy's backend would need jax
pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import rnnext  # noqa: E402
from rnnext.interop import from_keras, mask_zero_lengths, to_keras  # noqa: E402

from conftest import assert_close  # noqa: E402

# keras's torch backend converts tensors with np.array(tensor), which NumPy 2 warns about (torch's __array__
# takes no copy argument); the values are right, the warning is theirs
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"
                                        ":DeprecationWarning")

# Relative to the largest |Keras| entry: both run the same float32 cells with other exp/tanh approximations and
# summation orders (observed <= 3e-7); 1e-5 still catches a swapped gate block (~1e-1).
RTOL = 1e-5
N, T, I, H = 4, 7, 3, 5


def as_numpy(value):
    return np.array(keras.ops.convert_to_numpy(value))


def keras_weights(model):
    return {f"{layer.name}[{index}]": as_numpy(weight) for layer in model.layers
            for index, weight in enumerate(layer.weights)}


def randomize(keras_model, seed):
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        layer.set_weights([(0.5 * rng.standard_normal(tuple(w.shape))).astype(np.float32) for w in layer.weights])
    return keras_model


def summary_counts(model):
    """{layer name: the Param # column} of rnnext's summary()."""
    rows = re.findall(r"^(\S+) \(\w+\)\s.*?(\d[\d,]*)$", model.summary(print_fn=None), flags=re.M)
    return {name: int(count.replace(",", "")) for name, count in rows}


def check_round_trip(keras_model, x, lengths=None, what="", valid_steps_only=False):
    """Keras -> rnnext (same outputs), rnnext -> Keras (identical weights, names, configs, outputs)."""
    model = from_keras(keras_model)
    expected = as_numpy(keras_model(x))
    actual = model.eval().forward(x, lengths=lengths)
    if valid_steps_only:  # Keras repeats the last output at masked steps, rnnext gives zeros there
        valid = np.arange(expected.shape[1])[None, :] < lengths[:, None]
        expected, actual = expected[valid], actual[valid]
    assert_close(actual, expected, RTOL, f"{what}: rnnext vs Keras")

    assert summary_counts(model) == {layer.name: layer.count_params() for layer in keras_model.layers}
    assert model.count_params() == keras_model.count_params()

    back = to_keras(model)
    assert [layer.name for layer in back.layers] == [layer.name for layer in keras_model.layers]
    original, returned = keras_weights(keras_model), keras_weights(back)
    assert returned.keys() == original.keys()
    for name in original:
        np.testing.assert_array_equal(returned[name], original[name], err_msg=f"{what}: {name}")
    for before, after in zip(keras_model.layers, back.layers):
        config_before, config_after = before.get_config(), after.get_config()
        for key in ("units", "activation", "recurrent_activation", "return_sequences", "reset_after", "use_bias",
                    "merge_mode", "rate", "input_dim", "output_dim", "mask_zero"):
            assert config_after.get(key) == config_before.get(key), f"{what}: {before.name}.{key}"
    np.testing.assert_array_equal(as_numpy(back(x)), as_numpy(keras_model(x)), err_msg=f"{what}: outputs")
    return model


RECURRENT = {
    "simple_rnn-tanh": lambda **kw: keras.layers.SimpleRNN(H, **kw),
    "simple_rnn-relu": lambda **kw: keras.layers.SimpleRNN(H, activation="relu", **kw),
    "simple_rnn-sigmoid": lambda **kw: keras.layers.SimpleRNN(H, activation="sigmoid", **kw),
    "lstm": lambda **kw: keras.layers.LSTM(H, **kw),
    "gru-reset_after": lambda **kw: keras.layers.GRU(H, **kw),
    "gru-reset_before": lambda **kw: keras.layers.GRU(H, reset_after=False, **kw),
}


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(RECURRENT))
def test_each_recurrent_layer_round_trips(cell, bidirectional, return_sequences):
    layer = RECURRENT[cell](return_sequences=return_sequences)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    keras_model = randomize(keras.Sequential([keras.Input((T, I)), layer, keras.layers.Dense(2)]), seed=len(cell))
    x = np.random.default_rng(0).standard_normal((N, T, I)).astype(np.float32)
    check_round_trip(keras_model, x, what=cell)


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "tanh", "relu", "softmax"])
def test_dense_dropout_and_embedding_round_trip(activation):
    keras_model = randomize(keras.Sequential([keras.Input((T,), dtype="int64"), keras.layers.Embedding(20, 6),
                                              keras.layers.Dropout(0.3), keras.layers.Dense(4, activation=activation)]),
                            seed=1)
    ids = np.random.default_rng(1).integers(0, 20, size=(N, T))
    model = check_round_trip(keras_model, ids, what=activation)
    assert isinstance(model.layers[1], rnnext.Dropout) and model.layers[1].rate == 0.3


def test_layers_without_bias_get_a_zero_bias():
    keras_model = randomize(keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H, use_bias=False),
                                              keras.layers.Dense(3, use_bias=False)]), seed=5)
    x = np.random.default_rng(5).standard_normal((N, T, I)).astype(np.float32)
    model = from_keras(keras_model)
    assert_close(model.eval().forward(x), as_numpy(keras_model(x)), RTOL, "use_bias=False")
    lstm_bias = dict(model.layers[0].named_parameters())["bias"]
    assert not np.any(lstm_bias.value) and not np.any(model.layers[1].bias.value)
    # rnnext's layers always have a bias, so the counts differ by exactly the biases
    assert model.count_params() == keras_model.count_params() + 4 * H + 3


COURSE_MODELS = {  # the course's sentiment models, as Keras builds them
    "lstm": lambda mask: [keras.layers.Embedding(10000, 32, mask_zero=mask), keras.layers.LSTM(32),
                          keras.layers.Dense(1, activation="sigmoid")],
    "bi-lstm": lambda mask: [keras.layers.Embedding(10000, 32, mask_zero=mask),
                             keras.layers.Bidirectional(keras.layers.LSTM(32)), keras.layers.Dropout(0.5),
                             keras.layers.Dense(1, activation="sigmoid")],
    "stacked-lstm": lambda mask: [keras.layers.Embedding(10000, 32, mask_zero=mask),
                                  keras.layers.LSTM(32, return_sequences=True), keras.layers.LSTM(32),
                                  keras.layers.Dense(1, activation="sigmoid")],
}


@pytest.mark.parametrize("mask_zero", [False, True], ids=["unmasked", "mask_zero"])
@pytest.mark.parametrize("name", list(COURSE_MODELS))
def test_course_models_round_trip(name, mask_zero):
    steps = 40
    keras_model = keras.Sequential([keras.Input((steps,), dtype="int64"), *COURSE_MODELS[name](mask_zero)])
    randomize(keras_model, seed=2)
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 10000, size=(N, steps))
    lengths = None
    if mask_zero:  # post-padded rows of different lengths, one of them full
        lengths = np.array([steps, 11, 1, 27])
        ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
        np.testing.assert_array_equal(mask_zero_lengths(ids), lengths)
    model = check_round_trip(keras_model, ids, lengths, what=name)
    assert model.metadata.get("keras_mask_zero", False) == mask_zero


def test_masked_sequences_agree_at_the_valid_steps():
    keras_model = randomize(keras.Sequential([keras.Input((T,), dtype="int64"),
                                              keras.layers.Embedding(30, 4, mask_zero=True),
                                              keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True)),
                                              keras.layers.LSTM(H, return_sequences=True)]), seed=3)
    ids = np.random.default_rng(3).integers(1, 30, size=(N, T))
    lengths = np.array([T, 3, 1, 5])
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    check_round_trip(keras_model, ids, mask_zero_lengths(ids), what="masked sequences", valid_steps_only=True)


def test_stacked_rnnext_layers_become_keras_layers():
    model = rnnext.Sequential([rnnext.GRU(H, input_size=I, num_layers=3, bidirectional=True, layer_dropout=0.2),
                               rnnext.Dense(2)])
    keras_model = to_keras(model)
    assert [layer.name for layer in keras_model.layers] == ["gru", "gru_dropout1", "gru_l1", "gru_dropout2",
                                                            "gru_l2", "dense"]
    assert keras_model.count_params() == model.count_params()
    x = np.random.default_rng(4).standard_normal((N, T, I)).astype(np.float32)
    assert_close(as_numpy(keras_model(x)), model.eval().forward(x), RTOL, "stacked GRU")
    again = from_keras(keras_model)
    assert_close(again.eval().forward(x), model.forward(x), RTOL, "stacked GRU, back in rnnext")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_keras_dropout_and_recurrent_dropout_carry_over(kind):
    """Keras's dropout / recurrent_dropout are rnnext's: the rates go both ways, and in evaluation (no masks) the
    outputs agree. The masks themselves are each side's own draws, so training outputs are not compared."""
    keras_model = keras.Sequential([keras.Input((T, I)), getattr(keras.layers, kind)(
        H, dropout=0.2, recurrent_dropout=0.3, return_sequences=True)])
    model = from_keras(keras_model)
    layer = model.layers[0]
    assert (layer.dropout, layer.recurrent_dropout, layer.layer_dropout) == (0.2, 0.3, 0.0)
    x = np.random.default_rng(5).standard_normal((N, T, I)).astype(np.float32)
    assert_close(model.eval().forward(x), as_numpy(keras_model(x, training=False)), RTOL, f"{kind} in eval")
    back = to_keras(model)
    config = back.layers[0].get_config()
    assert (config["dropout"], config["recurrent_dropout"]) == (0.2, 0.3)
    assert_close(as_numpy(back(x, training=False)), model.forward(x), RTOL, f"{kind} back in Keras")
    model.train()
    assert not np.allclose(model.forward(x), model.eval().forward(x))  # the masks are on in training


def test_to_keras_refuses_weight_drop_and_zoneout():
    for options, message in (({"weight_drop": 0.3}, "weight_drop=0.3"), ({"zoneout": 0.1}, "zoneout=0.1")):
        with pytest.raises(ValueError, match=message):
            to_keras(rnnext.Sequential([rnnext.LSTM(H, input_size=I, **options)]))


@pytest.mark.parametrize("make, message", [
    (lambda: keras.Sequential([keras.Input((T, I)), keras.layers.Conv1D(2, 3)]), "'conv1d' (Conv1D) has no rnnext"),
    (lambda: keras.Sequential([keras.Input((T, I)), keras.layers.GRU(H, go_backwards=True)]), "go_backwards"),
    (lambda: keras.Sequential([keras.Input((T, I)), keras.layers.Bidirectional(keras.layers.LSTM(H),
                                                                              merge_mode="sum")]), "merge_mode"),
    (lambda: keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H, activation="relu")]), "activation"),
    (lambda: keras.Sequential([keras.Input((T, I)), keras.layers.Dense(2, activation="elu")]), "activation='elu'"),
])
def test_from_keras_refuses_what_rnnext_cannot_compute(make, message):
    with pytest.raises(ValueError) as error:
        from_keras(make())
    assert message in str(error.value)


def test_to_keras_and_mask_zero_lengths_refuse_by_name():
    for layer, message in ((rnnext.LSTM(H, input_size=I, peephole=True), "'lstm' (LSTM): to_keras_weights: LSTM "
                                                                          "with peephole=True"),
                           (rnnext.GRU(H, input_size=I, batch_first=False), "batch_first=False")):
        with pytest.raises(ValueError) as error:
            to_keras(rnnext.Sequential([layer]))
        assert message in str(error.value)
    with pytest.raises(ValueError) as error:
        mask_zero_lengths(np.array([[3, 4, 0], [5, 0, 6]]))
    assert "row 1" in str(error.value)
