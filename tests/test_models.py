"""Tests for rnnext.models: Sequential forward/backward end to end (finite differences through the losses),
Keras-style names and summary with exact parameter counts, and checkpoints (round trip, resumed training, damaged
files, atomic writes)."""
import functools
import json
import os

import numpy as np
import pytest

import rnnext
from rnnext import models
from rnnext.gradcheck import gradcheck
from rnnext.layers import GRU, LSTM, RNN, Dense, Dropout, Embedding, SimpleRNN
from rnnext.losses import binary_cross_entropy_with_logits, softmax_cross_entropy
from rnnext.models import Sequential, load, load_checkpoint
from rnnext.optim import SGD, Adam, clip_grad_norm

from conftest import GRADCHECK_TOL

F64 = np.float64

IMDB_SUMMARY = """\
Model: "sequential"
_________________________________________________________________
Layer (type)                 Output Shape              Param #
=================================================================
embedding (Embedding)        (None, 500, 32)           320000
_________________________________________________________________
lstm (LSTM)                  (None, 32)                8320
_________________________________________________________________
dense (Dense)                (None, 1)                 33
=================================================================
Total params: 328,353
Trainable params: 328,353
Non-trainable params: 0
_________________________________________________________________"""


# ---------------------------------------------------------------------------------------------------------
# summary and names


def test_summary_matches_keras_for_the_imdb_model():
    model = Sequential([Embedding(10000, 32), LSTM(32), Dense(1, "sigmoid")], input_shape=(500,))
    printed = []
    text = model.summary(print_fn=printed.append)
    assert text == IMDB_SUMMARY
    assert printed == [text]
    assert model.count_params() == 328_353


@pytest.mark.parametrize("recurrent, count, total", [
    (LSTM(32, bidirectional=True), 16_640, 336_705),
    (SimpleRNN(32), 2_080, 322_113),
    (GRU(32), 6_336, 326_369),
    (GRU(32, reset_after=False), 6_240, 326_273),
], ids=["bilstm", "simple_rnn", "gru", "gru-reset_before"])
def test_summary_parameter_counts(recurrent, count, total):
    units = 64 if recurrent.bidirectional else 32
    model = Sequential([Embedding(10000, 32), recurrent, Dense(1, "sigmoid")], input_shape=(500,))
    text = model.summary(print_fn=None)
    assert recurrent.count_params() == count
    assert model.layers[2].count_params() == units + 1
    assert total == 320_000 + count + units + 1
    assert f"(None, {units})" in text and f"  {count}\n" in text + "\n"
    assert f"Total params: {total:,}" in text and f"Trainable params: {total:,}" in text


def test_summary_non_trainable_and_sequences():
    model = Sequential([Embedding(100, 8, trainable=False), GRU(4, return_sequences=True), LSTM(4),
                        Dropout(0.5), Dense(3)], input_shape=(None,))
    text = model.summary(print_fn=None)
    assert "embedding (Embedding)        (None, None, 8)           800" in text
    assert "gru (GRU)                    (None, None, 4)" in text
    assert "dropout (Dropout)            (None, 4)                 0" in text
    assert "Non-trainable params: 800" in text


def test_layer_names_are_unique_in_a_model():
    model = Sequential([LSTM(3, return_sequences=True), LSTM(3, return_sequences=True), RNN(2), Dense(1),
                        Dense(1)])
    assert [layer.name for layer in model.layers] == ["lstm", "lstm_1", "rnn", "dense", "dense_1"]
    with pytest.raises(ValueError, match="already in this model"):
        model.add(Dense(1, name="dense"))
    with pytest.raises(ValueError, match="return_state"):
        model.add(GRU(2, return_state=True))
    named = Sequential([Dense(2, name="head"), Dense(2)])
    assert [layer.name for layer in named.layers] == ["head", "dense"]


def test_named_parameters_are_prefixed():
    model = Sequential([Embedding(5, 2), LSTM(3, bidirectional=True), Dense(1)], input_shape=(4,))
    names = [name for name, _ in model.named_parameters()]
    assert names[:3] == ["embedding.embeddings", "lstm.l0.forward.kernel", "lstm.l0.forward.recurrent_kernel"]
    assert names[-2:] == ["dense.kernel", "dense.bias"]
    assert [param.name for param in model.parameters()] == names  # optimizer messages use these
    assert model.parameters()[0] is model.layers[0].embeddings


def test_model_builds_as_soon_as_the_input_shape_is_known():
    """As Keras: a first layer that fixes the input shape builds the whole model, so an optimizer created right
    after construction sees every parameter (a lazily built Dense would otherwise be left out of it)."""
    model = Sequential([LSTM(4, input_size=2, return_sequences=True), Dropout(0.2), Dense(2)])
    assert model.built and model.input_shape == (None, 2)
    assert [name for name, _ in model.named_parameters()][-2:] == ["dense.kernel", "dense.bias"]
    assert Sequential([Embedding(5, 3), GRU(2), Dense(1)]).built
    lazy = Sequential([Dense(3, input_size=2), Dense(1)])  # [N, F] or [N, T, F]: not known yet
    assert not lazy.built
    lazy.forward(np.zeros((4, 2), dtype=np.float32))
    assert lazy.built and lazy.count_params() == 9 + 4


def test_summary_needs_a_built_model():
    model = Sequential([LSTM(3)])
    with pytest.raises(ValueError, match="not built"):
        model.summary()
    model.forward(np.zeros((2, 4, 5), dtype=np.float32))
    assert "lstm (LSTM)                  (None, 3)                 108" in model.summary(print_fn=None)


# ---------------------------------------------------------------------------------------------------------
# end to end: finite differences through the losses


def ids_and_lengths(rng, n=4, steps=6, vocab=9):
    lengths = np.array([6, 3, 1, 5])[:n]
    ids = rng.integers(1, vocab, (n, steps))
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0  # padding
    return ids, lengths


def test_sequential_softmax_cross_entropy_gradients():
    """Tagger: Embedding -> stacked bidirectional LSTM with lengths and dropout -> Dense over every step."""
    rng = np.random.default_rng(0)
    ids, lengths = ids_and_lengths(rng)
    model = Sequential([
        Embedding(9, 4, padding_idx=0, dtype=F64, seed=1),
        LSTM(3, num_layers=2, bidirectional=True, layer_dropout=0.4, return_sequences=True, peephole=True, dtype=F64,
             seed=2),
        Dense(5, dtype=F64, seed=3),
    ], input_shape=(None,))
    # Off the initial point: O(1) embeddings and non-zero peepholes, whose gradients are otherwise so small that
    # the check would measure rounding noise.
    for _, param in model.named_parameters():
        param.value += 0.5 * rng.standard_normal(param.shape)
    targets = rng.integers(0, 5, ids.shape)
    loss = functools.partial(softmax_cross_entropy, lengths=lengths)
    report = gradcheck(model, ids, targets, loss, num_checks=12, lengths=lengths)
    assert report.worst < GRADCHECK_TOL, str(report)
    assert "embedding.embeddings" in report and "lstm.l1.reverse.peephole" in report


def test_sequential_binary_cross_entropy_gradients():
    """Classifier on float inputs: bidirectional GRU (final states) -> Dropout -> Dense(1) logits; input checked."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3))
    lengths = np.array([6, 2, 4, 1])
    model = Sequential([GRU(4, bidirectional=True, num_layers=2, dtype=F64, seed=4), Dropout(0.3, seed=5),
                        Dense(1, dtype=F64, seed=6)])
    targets = rng.integers(0, 2, (4, 1)).astype(F64)
    report = gradcheck(model, x, targets, binary_cross_entropy_with_logits, num_checks=12, check_input=True,
                       lengths=lengths)
    assert report.worst < GRADCHECK_TOL, str(report)
    assert "input" in report and "Dropout" not in str(report)


def test_sequential_rnn_stateful_gradients():
    rng = np.random.default_rng(2)
    model = Sequential([RNN(3, stateful=True, return_sequences=True, dtype=F64, seed=1),
                        Dense(2, "tanh", dtype=F64, seed=2)])
    model.forward(rng.standard_normal((2, 4, 3)))  # carried states for the checked call
    report = gradcheck(model, rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 2)),
                       lambda y, t: (float(np.sum((y - t) ** 2)), 2 * (y - t)), check_input=True)
    assert report.worst < GRADCHECK_TOL, str(report)


def test_forward_passes_lengths_to_recurrent_layers_only():
    rng = np.random.default_rng(3)
    ids, lengths = ids_and_lengths(rng)
    model = Sequential([Embedding(9, 4, seed=0), GRU(3, return_sequences=True, seed=1), Dense(2, seed=2)])
    y = model.forward(ids, lengths=lengths)
    gru_alone = model.layers[1].forward(model.layers[0].forward(ids), lengths=lengths)
    np.testing.assert_array_equal(y, model.layers[2].forward(gru_alone))
    dy = np.ones_like(y)
    model.zero_grad()
    model.forward(ids, lengths=lengths)
    assert model.backward(dy) is None  # an Embedding input has no gradient


def test_short_training_run_learns():
    """Embedding + LSTM + Dense learns 'does token 1 occur?' on padded batches: the loss falls well below chance."""
    rng = np.random.default_rng(0)
    rnnext.layers.seed(0)
    n, steps = 32, 8
    lengths = rng.integers(2, steps + 1, n)
    ids = rng.integers(2, 6, (n, steps))
    targets = rng.integers(0, 2, n)
    for row in np.flatnonzero(targets):
        ids[row, rng.integers(0, lengths[row])] = 1
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    # built up front (input_shape), so that model.parameters() holds every weight when the optimizer takes them
    model = Sequential([Embedding(6, 8, padding_idx=0), LSTM(16), Dense(1)], input_shape=(steps,))
    optimizer = Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(40):
        logits = model.forward(ids, lengths=lengths)
        loss, dlogits = binary_cross_entropy_with_logits(logits, targets[:, None].astype(np.float32))
        model.zero_grad()
        model.backward(dlogits)
        clip_grad_norm(model.parameters(), 5.0)
        optimizer.step()
        losses.append(loss)
    assert losses[0] > 0.6 and losses[-1] < 0.1, f"loss curve {losses[0]:.3f} -> {losses[-1]:.3f}"


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def tagger(seed=0, dropout=0.3):
    return Sequential([
        Embedding(9, 4, padding_idx=0, seed=seed),
        LSTM(5, bidirectional=True, num_layers=2, layer_dropout=dropout, return_sequences=True, seed=seed + 1),
        GRU(3, return_sequences=True, reset_after=False, seed=seed + 2),
        Dense(4, seed=seed + 3),
    ], input_shape=(None,))


def train_steps(model, optimizer, batches):
    losses = []
    for ids, lengths, targets in batches:
        logits = model.forward(ids, lengths=lengths)
        loss, dlogits = softmax_cross_entropy(logits, targets, lengths=lengths)
        model.zero_grad()
        model.backward(dlogits)
        optimizer.step()
        losses.append(loss)
    return losses


def make_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        ids, lengths = ids_and_lengths(rng)
        batches.append((ids, lengths, rng.integers(0, 4, ids.shape)))
    return batches


def test_save_load_round_trip_and_resumed_training(tmp_path):
    path = tmp_path / "model.npz"
    batches = make_batches(6)
    model = tagger()
    model.layers[0].freeze()
    optimizer = Adam(model.parameters(), lr=0.01)
    train_steps(model, optimizer, batches[:3])
    model.save(path, optimizer=optimizer, metadata={"vocab": ["<pad>", "a"], "epoch": 3})
    assert not [name for name in os.listdir(tmp_path) if name != "model.npz"]  # no temporary left behind

    # the original continues for three more steps: the reference trajectory
    reference_losses = train_steps(model, optimizer, batches[3:])

    fresh_optimizer = Adam(tagger(seed=50).parameters(), lr=0.5)  # any model of the same architecture
    before = rnnext.layer_base._default_generator.bit_generator.state
    loaded = load(path, optimizer=fresh_optimizer)
    assert rnnext.layer_base._default_generator.bit_generator.state == before  # loading draws nothing
    assert loaded.metadata == {"vocab": ["<pad>", "a"], "epoch": 3}
    assert [layer.name for layer in loaded.layers] == ["embedding", "lstm", "gru", "dense"]
    assert not loaded.layers[0].embeddings.trainable
    assert fresh_optimizer.lr == 0.01 and fresh_optimizer.step_count == 3
    assert all(a is b for a, b in zip(fresh_optimizer.params, loaded.parameters()))
    assert loaded.get_config() == model.get_config()

    # continued training follows the original (dropout masks included: the generators are restored). Not bit for
    # bit: the engine's LSTM bias gradient can differ by an ulp between identical calls (an alignment-dependent
    # Eigen reduction, reported), so 3 Adam steps are compared to 1e-6, far below any real divergence (~1e-2).
    resumed_losses = train_steps(loaded, fresh_optimizer, batches[3:])
    np.testing.assert_allclose(resumed_losses, reference_losses, rtol=1e-6)
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_allclose(a.value, b.value, rtol=0, atol=1e-6, err_msg=name)
    ids, lengths, _ = batches[0]
    np.testing.assert_allclose(model.eval().forward(ids, lengths=lengths), loaded.eval().forward(ids, lengths=lengths),
                               rtol=0, atol=1e-6)


def test_loaded_model_is_identical(tmp_path):
    model = tagger()
    optimizer = Adam(model.parameters(), lr=0.01)
    train_steps(model, optimizer, make_batches(2))
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    for (name, a), (loaded_name, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == loaded_name and a.value.dtype == b.value.dtype
        np.testing.assert_array_equal(a.value, b.value, err_msg=name)
    ids, lengths, _ = make_batches(1, seed=1)[0]
    np.testing.assert_array_equal(model.eval().forward(ids, lengths=lengths),
                                  loaded.eval().forward(ids, lengths=lengths))
    model.train(), loaded.train()
    np.testing.assert_array_equal(model.forward(ids, lengths=lengths), loaded.forward(ids, lengths=lengths))


class Scale(rnnext.Layer):
    """A user-defined layer: y = x * weight, one weight per feature."""

    def __init__(self, input_size=None, **kwargs):
        super().__init__(**kwargs)
        self.input_size = input_size
        if input_size is not None:
            self.build((input_size,))

    def build(self, input_shape):
        if not self.built:
            self.input_size = input_shape[-1]
            self.weight = self._add_parameter("weight", self._draw(lambda rng, shape, dtype: rng.uniform(
                0.5, 1.5, size=shape).astype(dtype), (self.input_size,)))
            self.built = True

    def forward(self, x):
        self.build(x.shape)
        self._cache = x
        return x * self.weight.value

    def backward(self, dy):
        x = self._require_cache()
        self.weight.grad += (dy * x).reshape(-1, self.input_size).sum(axis=0)
        return dy * self.weight.value

    def get_config(self):
        return {"input_size": self.input_size, **super().get_config()}


def test_custom_layers_load_with_custom_objects(tmp_path):
    model = Sequential([Embedding(20, 4, seed=1, dtype=F64), Scale(seed=2, dtype=F64), LSTM(3, seed=3, dtype=F64),
                        Dense(1, seed=4, dtype=F64)], input_shape=(5,))
    x = np.arange(10).reshape(2, 5) % 20
    report = gradcheck(model, x, np.ones((2, 1)), binary_cross_entropy_with_logits)
    assert report.worst < GRADCHECK_TOL and "scale.weight" in report, str(report)  # the custom layer is sound
    path = tmp_path / "custom.npz"
    model.save(path)
    with pytest.raises(ValueError, match=r"'Scale'.*custom_objects"):
        load(path)
    for bad in ({"Scale": object}, [Scale]):
        with pytest.raises(ValueError, match=r"^load: custom_objects is .*Layer subclass"):
            load(path, custom_objects=bad)
    loaded = load(path, custom_objects={"Scale": Scale})
    assert isinstance(loaded.layers[1], Scale)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_load_checkpoint_object(tmp_path):
    path = tmp_path / "m.ckpt"  # the name is used as given, no suffix added
    model = tagger(dropout=0.0)
    model.metadata = {"note": "kept"}
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, optimizer, make_batches(1))
    model.save(str(path), optimizer=optimizer)
    assert path.exists()
    checkpoint = load_checkpoint(path)
    assert checkpoint.metadata == {"note": "kept"} and checkpoint.model.metadata == {"note": "kept"}
    assert checkpoint.optimizer_class == "SGD"
    assert checkpoint.optimizer_params == [name for name, _ in model.named_parameters()]
    again = SGD(checkpoint.model.parameters(), lr=1.0)
    again.load_state_dict(checkpoint.optimizer_state)
    assert again.momentum == 0.9 and again.step_count == 1
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["header"]))
        assert header["format"] == "rnnext-checkpoint" and header["version"] == 1
        assert [layer["class"] for layer in header["model"]["layers"]] == ["Embedding", "LSTM", "GRU", "Dense"]
        assert "param/lstm.l1.reverse.recurrent_kernel" in archive.files
        assert "optimizer/momentum_buffer.0" in archive.files
    # saved without an optimizer: load(path, optimizer=...) says so
    model.save(path)
    assert load_checkpoint(path).optimizer_state is None
    with pytest.raises(ValueError, match="no optimizer state"):
        load(path, optimizer=SGD(model.parameters(), lr=0.1))


def test_load_rejects_a_mismatched_optimizer_untouched(tmp_path):
    path = tmp_path / "m.npz"
    model = tagger()
    optimizer = Adam(model.parameters())
    train_steps(model, optimizer, make_batches(1))
    model.save(path, optimizer=optimizer)
    sgd = SGD(model.parameters(), lr=0.5)
    with pytest.raises(ValueError, match=f"{path}: the checkpoint holds Adam state, but optimizer is SGD"):
        load(path, optimizer=sgd)
    other = Adam(tagger().parameters()[1:], lr=0.5)
    with pytest.raises(ValueError, match="optimizer has 17 params, the checkpoint.s had 18"):
        load(path, optimizer=other)
    assert other.lr == 0.5 and other.step_count == 0 and not other.state


def save_small(path):
    model = Sequential([Embedding(5, 2, seed=0), LSTM(3, seed=1), Dense(1, seed=2)], input_shape=(4,))
    model.save(path)
    return model


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable rnnext checkpoint"),
    ("garbage", "not a readable rnnext checkpoint"),
    ("empty", "not a readable rnnext checkpoint"),
    ("npy", "single .npy array"),
    ("no-header", "no 'header' entry"),
    ("wrong-format", "format is 'something-else', expected 'rnnext-checkpoint'"),
    ("wrong-version", "checkpoint version 2 is not supported; this rnnext reads version 1"),
    ("missing-weight", r"weights missing for \['lstm.bias'\]"),
    ("bad-shape", r"weight 'dense.kernel' has shape \(2, 1\)"),
    ("bad-class", "the architecture cannot be rebuilt"),
])
def test_damaged_checkpoints_raise_value_error(tmp_path, damage, message):
    path = tmp_path / "m.npz"
    save_small(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(str(arrays["header"]))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        with open(path, "wb") as file:
            np.save(file, np.zeros(3))
    else:
        if damage == "no-header":
            del arrays["header"]
        elif damage == "wrong-format":
            header["format"] = "something-else"
        elif damage == "wrong-version":
            header["version"] = 2
        elif damage == "missing-weight":
            del arrays["param/lstm.bias"]
        elif damage == "bad-shape":
            arrays["param/dense.kernel"] = np.zeros((2, 1), dtype=np.float32)
        elif damage == "bad-class":
            header["model"]["layers"][1]["class"] = "Transformer"
        if "header" in arrays:
            arrays["header"] = np.array(json.dumps(header))
        with open(path, "wb") as file:
            np.savez(file, **arrays)
    with pytest.raises(ValueError, match=message) as error:
        load(path)
    assert str(path) in str(error.value)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")


@pytest.mark.parametrize("failing", ["savez", "replace"])
def test_save_is_atomic(tmp_path, monkeypatch, failing):
    path = tmp_path / "m.npz"
    old = save_small(path)
    old_bytes = path.read_bytes()
    model = Sequential([Embedding(5, 2, seed=7), LSTM(3, seed=8), Dense(1, seed=9)], input_shape=(4,))

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    def broken_replace(source, target):
        raise OSError("rename failed")

    if failing == "savez":
        monkeypatch.setattr(np, "savez", broken_savez)
    else:
        monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["m.npz"]  # the temporary file is gone
    restored = load(path)
    for (name, a), (_, b) in zip(old.named_parameters(), restored.named_parameters()):
        np.testing.assert_array_equal(a.value, b.value, err_msg=name)


def test_save_rejects_bad_metadata_and_foreign_optimizer(tmp_path):
    model = save_small(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="metadata is not JSON-serializable"):
        model.save(tmp_path / "x.npz", metadata={"array": np.zeros(2)})
    with pytest.raises(ValueError, match=r"optimizer.params\[0\].*is not a parameter of this model"):
        model.save(tmp_path / "x.npz", optimizer=SGD(tagger().parameters(), lr=0.1))
    assert not (tmp_path / "x.npz").exists()


def test_models_module_exports():
    assert set(models.__all__) >= {"Sequential", "load", "load_checkpoint", "Checkpoint"}
