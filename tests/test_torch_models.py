"""rnnext.interop.to_torch / from_torch for whole Sequential models (rnnext.interop_torch), against PyTorch.

rnnext -> torch gives the same outputs on padded batches fed with lengths (torch packs them), and torch -> rnnext
the identical weights back; a hand-built torch stack converts too. Skipped without torch.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnext  # noqa: E402
from rnnext.interop import from_torch, to_torch  # noqa: E402
from rnnext.interop_torch import TorchRecurrent, TorchSequential  # noqa: E402

from conftest import assert_close, weights  # noqa: E402

# Relative to the largest |torch| entry; float32 cells with other approximations and summation orders
# (observed <= 3e-7): 1e-5 leaves 30x and catches any misplaced block (~1e-1).
RTOL = 1e-5
N, T = 4, 9
LENGTHS = np.array([T, 3, 1, 6])  # torch's packing rejects length 0

MODELS = {
    "course-lstm": lambda: [rnnext.Embedding(1000, 16), rnnext.LSTM(8), rnnext.Dense(1, activation="sigmoid")],
    "bi-lstm": lambda: [rnnext.Embedding(1000, 16), rnnext.LSTM(8, bidirectional=True), rnnext.Dropout(0.5),
                        rnnext.Dense(1, activation="sigmoid")],
    "stacked": lambda: [rnnext.Embedding(1000, 16), rnnext.GRU(8, num_layers=2, layer_dropout=0.1, return_sequences=True),
                        rnnext.RNN(6, activation="relu", bidirectional=True, return_sequences=True),
                        rnnext.Dense(5, activation="softmax")],
    "no-embedding": lambda: [rnnext.LSTM(8, input_size=3, return_sequences=True), rnnext.Dense(4, activation="tanh"),
                             rnnext.Dense(2, activation="relu"), rnnext.Dense(2)],
}


def random_input(model, rng):
    if isinstance(model.layers[0], rnnext.Embedding):
        return rng.integers(0, 1000, size=(N, T))
    return rng.standard_normal((N, T, 3)).astype(np.float32)


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_round_trip_through_torch(name, with_lengths):
    rng = np.random.default_rng(0)
    model = rnnext.Sequential(MODELS[name]())
    for param in model.parameters():
        param.value[...] = 0.5 * rng.standard_normal(param.value.shape)
    x = random_input(model, rng)
    lengths = LENGTHS if with_lengths else None
    model.eval()
    stack = to_torch(model)
    assert isinstance(stack, TorchSequential) and not stack.training
    with torch.no_grad():
        expected = stack(torch.from_numpy(x), None if lengths is None else torch.from_numpy(lengths)).numpy()
    assert_close(model.forward(x, lengths=lengths), expected, RTOL, name)

    back = from_torch(stack)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config().get("activation") for layer in back.layers] == \
        [layer.get_config().get("activation") for layer in model.layers]
    original = weights(model)
    returned = weights(back)
    assert list(returned) == list(original)
    for key in original:
        np.testing.assert_array_equal(returned[key], original[key], err_msg=key)


def test_a_hand_built_torch_stack_converts():
    torch.manual_seed(0)
    stack = TorchSequential(torch.nn.Embedding(50, 6, padding_idx=0),
                            TorchRecurrent(torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True),
                                           return_sequences=True),
                            torch.nn.Dropout(0.2),
                            TorchRecurrent(torch.nn.GRU(10, 4, batch_first=True), return_sequences=False),
                            torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    model = from_torch(stack)
    assert model.layers[0].padding_idx == 0 and model.layers[-1].activation == "softmax"
    ids = np.random.default_rng(1).integers(1, 50, size=(N, T))
    with torch.no_grad():
        expected = stack(torch.from_numpy(ids), torch.from_numpy(LENGTHS)).numpy()
    assert_close(model.eval().forward(ids, lengths=LENGTHS), expected, RTOL, "hand-built stack")


def test_what_torch_cannot_take_is_refused_by_name():
    with pytest.raises(ValueError) as error:
        to_torch(rnnext.Sequential([rnnext.LSTM(4, input_size=3, peephole=True)]))
    assert "layer 'lstm' (LSTM): to_torch: LSTM with peephole=True" in str(error.value)
    with pytest.raises(ValueError) as error:
        from_torch(torch.nn.Sequential(torch.nn.LSTM(3, 4), torch.nn.Linear(4, 1)))
    assert "step 0 (LSTM): a bare torch recurrent module" in str(error.value)
    with pytest.raises(ValueError) as error:
        from_torch(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU()))
    assert "step 1 (GELU) has no rnnext equivalent" in str(error.value)
    with pytest.raises(ValueError) as error:
        from_torch(torch.nn.Sequential(torch.nn.Linear(3, 4)), return_sequences=False)
    assert "takes only dtype" in str(error.value)
