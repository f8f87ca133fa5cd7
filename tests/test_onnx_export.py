"""rnnext.onnx.export, checked by running the exported graphs in onnxruntime (CPU) next to rnnext.

Every variant of the recurrent layers (cells, peepholes, coupled gates, both GRUs, the RNN activations, stacked,
bidirectional, both layouts, return_sequences or not), the Dense activations and the course's models are exported
with random weights and run on random inputs with random lengths (0 and T included); the outputs and every final
state must equal rnnext's. Skipped without onnx or onnxruntime.
"""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import rnnext  # noqa: E402
import rnnext.onnx  # noqa: E402

from conftest import assert_close, mentions  # noqa: E402

# Relative to each output's largest |rnnext| entry. Two float32 computations of the same cells with different
# exp/tanh approximations and summation orders, over at most two stacked layers: observed <= 2e-7 (see
# bench/bench_onnx.py), so 1e-5 leaves 50x and still catches a swapped gate block (off by ~1e-1).
RTOL = 1e-5
N, T, I, H = 5, 6, 3, 4
LENGTHS = np.array([T, 2, 0, 5, 1])  # unsorted, with an empty row and a full one

CELLS = {
    "rnn-tanh": lambda **kw: rnnext.RNN(H, activation="tanh", **kw),
    "rnn-relu": lambda **kw: rnnext.RNN(H, activation="relu", **kw),
    "rnn-sigmoid": lambda **kw: rnnext.RNN(H, activation="sigmoid", **kw),
    "lstm": lambda **kw: rnnext.LSTM(H, **kw),
    "lstm-peephole": lambda **kw: rnnext.LSTM(H, peephole=True, **kw),
    "lstm-coupled": lambda **kw: rnnext.LSTM(H, coupled=True, **kw),
    "lstm-coupled-peephole": lambda **kw: rnnext.LSTM(H, coupled=True, peephole=True, **kw),
    "gru-reset_after": lambda **kw: rnnext.GRU(H, reset_after=True, **kw),
    "gru-reset_before": lambda **kw: rnnext.GRU(H, reset_after=False, **kw),
}


def randomize(model, seed):
    """Every weight drawn from N(0, 0.5^2): biases and peepholes nonzero, so each one's place is tested."""
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.value[...] = 0.5 * rng.standard_normal(param.value.shape)
    return model


def export_and_compare(model, tmp_path, x, lengths, what, states=True):
    path = tmp_path / "model.onnx"
    rnnext.onnx.export(model, path, lengths=lengths is not None, states=states)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    pairs = rnnext.onnx.run_both(model, path, x, lengths)
    assert "y" in pairs
    assert_close({name: theirs for name, (theirs, _) in pairs.items()},
                 {name: ours for name, (_, ours) in pairs.items()}, RTOL, what, finite=True)
    return pairs


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_recurrent_layer_matches_onnxruntime(tmp_path, cell, bidirectional, num_layers, return_sequences,
                                             with_lengths):
    layer = CELLS[cell](input_size=I, num_layers=num_layers, bidirectional=bidirectional,
                        return_sequences=return_sequences, layer_dropout=0.25, dropout=0.2, recurrent_dropout=0.3,
                        weight_drop=0.1)
    model = randomize(rnnext.Sequential([layer]), seed=len(cell))
    model.train()  # export and run_both use eval mode: every dropout mask is the identity
    x = np.random.default_rng(1).standard_normal((N, T, I)).astype(np.float32)
    lengths = LENGTHS if with_lengths else None
    pairs = export_and_compare(model, tmp_path, x, lengths, cell)
    D = 2 if bidirectional else 1
    assert pairs[f"{layer.name}.h_n"][0].shape == (num_layers * D, N, H)
    assert model.training  # the modes are restored


@pytest.mark.parametrize("cell", ["lstm-peephole", "gru-reset_after", "rnn-relu"])
def test_time_major_layer_matches_onnxruntime(tmp_path, cell):
    layers = [CELLS[cell](input_size=I, batch_first=False, bidirectional=True, return_sequences=True),
              CELLS[cell](batch_first=False), rnnext.Dense(3)]
    model = randomize(rnnext.Sequential(layers), seed=3)
    x = np.random.default_rng(2).standard_normal((T, N, I)).astype(np.float32)
    export_and_compare(model, tmp_path, x, LENGTHS, cell)
    graph_input = onnx.load(str(tmp_path / "model.onnx")).graph.input[0]
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["T", "N", I]


def test_a_leading_dropout_keeps_the_next_layers_layout(tmp_path):
    model = randomize(rnnext.Sequential([rnnext.Dropout(0.5), rnnext.LSTM(H, batch_first=False)], input_shape=(T, I)),
                      seed=9)
    x = np.random.default_rng(5).standard_normal((T, N, I)).astype(np.float32)
    export_and_compare(model, tmp_path, x, LENGTHS, "Dropout, time-major LSTM")
    assert rnnext.onnx.check(model, tmp_path / "model.onnx")["y"] < 1e-5


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu", "softmax"])
def test_dense_activations_match_onnxruntime(tmp_path, activation):
    model = randomize(rnnext.Sequential([rnnext.GRU(H, input_size=I, return_sequences=True),
                                         rnnext.Dense(3, activation=activation)]), seed=4)
    x = np.random.default_rng(3).standard_normal((N, T, I)).astype(np.float32)
    export_and_compare(model, tmp_path, x, LENGTHS, f"Dense({activation})")


COURSE_MODELS = {  # the course's sentiment models, as rnnext builds them
    "lstm": lambda: [rnnext.Embedding(10000, 32), rnnext.LSTM(32), rnnext.Dense(1, activation="sigmoid")],
    "bi-lstm": lambda: [rnnext.Embedding(10000, 32), rnnext.LSTM(32, bidirectional=True), rnnext.Dropout(0.5),
                        rnnext.Dense(1, activation="sigmoid")],
    "stacked-lstm": lambda: [rnnext.Embedding(10000, 32), rnnext.LSTM(32, return_sequences=True),
                             rnnext.LSTM(32), rnnext.Dense(1, activation="sigmoid")],
}


@pytest.mark.parametrize("name", list(COURSE_MODELS))
def test_course_models_match_onnxruntime(tmp_path, name):
    model = rnnext.Sequential(COURSE_MODELS[name](), input_shape=(40,))
    randomize(model, seed=5)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 10000, size=(N, 40))
    lengths = np.array([40, 17, 1, 33, 0])
    export_and_compare(model, tmp_path, ids, lengths, name)
    export_and_compare(model, tmp_path, ids, None, name, states=False)  # no lengths input, "y" only
    assert [i.name for i in onnx.load(str(tmp_path / "model.onnx")).graph.output] == ["y"]


def test_check_reports_max_differences_and_sees_a_wrong_graph(tmp_path):
    model = randomize(rnnext.Sequential([rnnext.Embedding(50, 8), rnnext.LSTM(H, bidirectional=True)],
                                        input_shape=(9,)), seed=6)
    path = tmp_path / "model.onnx"
    proto = rnnext.onnx.export(model, path, lengths=True, states=True)
    differences = rnnext.onnx.check(model, path)
    assert set(differences) == {"y", "lstm.h_n", "lstm.c_n"}
    assert max(differences.values()) < 1e-5
    # the same graph with the recurrent weights of the forward direction scaled: check must see it
    for initializer in proto.graph.initializer:
        if initializer.name == "lstm.l0.R":
            R = onnx.numpy_helper.to_array(initializer).copy()
            R[0] *= 1.5
            initializer.CopyFrom(onnx.numpy_helper.from_array(R, initializer.name))
    onnx.save(proto, str(path))
    assert rnnext.onnx.check(model, path)["y"] > 1e-3


def test_float64_models_export_their_weights_exactly(tmp_path):
    # onnxruntime's CPU RNN, LSTM and GRU kernels are float32 only, so float64 graphs are checked, not run
    model = randomize(rnnext.Sequential([rnnext.LSTM(H, input_size=I, peephole=True, dtype=np.float64),
                                         rnnext.Dense(2, dtype=np.float64)]), seed=7)
    proto = rnnext.onnx.export(model, tmp_path / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert initializers["dense.kernel"].dtype == np.float64
    np.testing.assert_array_equal(initializers["dense.kernel"], model.layers[1].kernel.value)
    i, f, g, o = np.split(model.layers[0]._weights[0][0]["kernel"].value, 4, axis=1)
    np.testing.assert_array_equal(initializers["lstm.l0.W"][0], np.concatenate([i, o, f, g], axis=1).T)


class Scale(rnnext.Layer):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("layers, message", [
    (lambda: [rnnext.LSTM(H, input_size=I), Scale(name="double")], "'double' (Scale) has no ONNX export"),
    (lambda: [rnnext.GRU(H, input_size=I, stateful=True)], "'gru' (GRU) is stateful"),
    (lambda: [rnnext.LSTM(H, input_size=I), rnnext.Dense(1, dtype=np.float64)], "dtypes"),
    (lambda: [rnnext.Dense(8, input_size=I), rnnext.Embedding(8, 2)], "'embedding' (Embedding): an Embedding is "
                                                                      "exported only as the first layer"),
])
def test_what_cannot_be_exported_is_refused_by_name_and_writes_nothing(tmp_path, layers, message):
    model = rnnext.Sequential(layers())
    if model.input_shape is None:
        model.build((T, I))
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier file")
    with pytest.raises(ValueError) as error:
        rnnext.onnx.export(model, path)
    assert message in str(error.value)
    assert path.read_bytes() == b"earlier file"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError) as error:
        rnnext.onnx.export(rnnext.Sequential([rnnext.LSTM(H)]), tmp_path / "m.onnx")
    assert "not built" in str(error.value)
    model = rnnext.Sequential([rnnext.LSTM(H, input_size=I)])
    with pytest.raises(ValueError) as error:
        rnnext.onnx.export(model, tmp_path / "m.onnx", opset=11)
    assert mentions(str(error.value), "opset")
    rnnext.onnx.export(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError) as error:
        rnnext.onnx.run_both(model, tmp_path / "m.onnx", np.zeros((2, 3, I), np.float32), lengths=[1, 2])
    assert "no 'lengths' input" in str(error.value)


def test_the_export_command_writes_and_checks_a_checkpoint(tmp_path):
    import subprocess
    import sys

    model = randomize(rnnext.Sequential(COURSE_MODELS["bi-lstm"](), input_shape=(30,)), seed=8)
    model.save(tmp_path / "model.npz")
    command = [sys.executable, "-m", "rnnext", "export", "model.npz", "model.onnx", "--lengths", "--states",
               "--check"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote model.onnx" in result.stdout and "inputs x, lengths" in result.stdout
    assert "lstm.c_n" in result.stdout and result.stdout.rstrip().endswith(": ok")
    assert rnnext.onnx.check(model, tmp_path / "model.onnx")["y"] < 1e-5

    result = subprocess.run(command[:4] + ["missing.npz", "model.onnx"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "no such file: missing.npz" in result.stderr


@pytest.mark.parametrize("cell", ["lstm", "gru-reset_after"])
def test_zoneout_is_refused_by_name(tmp_path, cell):
    """Zoneout's inference output is an expectation that mixes each state with the previous one: no ONNX
    LSTM/GRU computes it, so the export refuses the layer by name."""
    model = rnnext.Sequential([CELLS[cell](input_size=I, zoneout=0.1, name="zoned")])
    with pytest.raises(ValueError, match="'zoned'.*zoneout=0.1"):
        rnnext.onnx.export(model, tmp_path / "model.onnx")
