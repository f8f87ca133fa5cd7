"""The recurrent layers' regularisers (issue 15): Keras-style dropout / recurrent_dropout, weight_drop, zoneout and
layer_dropout as layer options: gradients, training and evaluation, step(), configs and old checkpoints."""
import numpy as np
import pytest

import rnnext
import rnnext.reference as ref
import rnnext.models
from rnnext import GRU, LSTM, RNN, Dense, Sequential
from rnnext.losses import mean_squared_error
from conftest import RTOL, assert_close, assert_same_bits

T, N, I, H = 5, 3, 4, 6
CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
ALL = {"rnn": dict(dropout=0.3, recurrent_dropout=0.4, weight_drop=0.2, layer_dropout=0.25, zoneout=0.2),
       "lstm": dict(dropout=0.3, recurrent_dropout=0.4, weight_drop=0.2, layer_dropout=0.25, zoneout=(0.2, 0.3)),
       "gru": dict(dropout=0.3, recurrent_dropout=0.4, weight_drop=0.2, layer_dropout=0.25, zoneout=0.2)}


def draw(rng, *shape):
    return rng.standard_normal(shape)


def make(cell, **options):
    return CELLS[cell](H, input_size=I, return_sequences=True, dtype=np.float64, seed=3, **options)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_with_every_regulariser(cell, bidirectional):
    """Training mode, stacked, lengths: gradcheck keeps the masks fixed by restoring the generator."""
    layer = make(cell, num_layers=2, bidirectional=bidirectional, **ALL[cell])
    rng = np.random.default_rng(0)
    x, target = draw(rng, N, T, I), draw(rng, N, T, layer.num_directions * H)
    report = rnnext.gradcheck(layer, x, target, mean_squared_error, check_input=True, lengths=np.array([5, 2, 0]))
    assert report.worst < 1e-5, str(report)


@pytest.mark.parametrize("coupled", [False, True])
def test_peephole_lstm_with_zoneout(coupled):
    """Training mode with every regulariser, stacked, lengths (gradcheck), then evaluation against the twin with the
    rates: the output peephole looks at the kept cell."""
    layer = make("lstm", num_layers=2, peephole=True, coupled=coupled, **ALL["lstm"])
    rng = np.random.default_rng(5)
    for name, p in layer.named_parameters():
        if name.endswith("peephole"):  # they start at 0, where the peephole would look at nothing
            p.value[...] = rng.uniform(-0.5, 0.5, p.value.shape)
    x, target = draw(rng, N, T, I), draw(rng, N, T, H)
    # eps 1e-5: at the default 1e-6 the differencing noise of this stack reaches ~1e-5 relative for the peephole
    # rows of the top layer with or without zoneout (measured: plain 2.4e-6, every mask 1.2e-5; at 1e-5 all <1e-6)
    report = rnnext.gradcheck(layer, x, target, mean_squared_error, check_input=True, lengths=np.array([5, 2, 0]),
                              eps=1e-5)
    assert report.worst < 1e-5, str(report)
    one = make("lstm", peephole=True, coupled=coupled, zoneout=(0.2, 0.3)).eval()
    w = {name: p.value for name, p in one.named_parameters()}
    w["peephole"][...] = rng.uniform(-1, 1, w["peephole"].shape)
    h0 = np.zeros((N, H))
    out = ref.lstm_forward(np.ascontiguousarray(x.transpose(1, 0, 2)), h0, h0, w["kernel"], w["recurrent_kernel"],
                           w["bias"], peephole=w["peephole"], coupled=coupled,
                           masks={"zoneout_h": 0.2, "zoneout_c": 0.3})
    assert_close(one(x), out[0].transpose(1, 0, 2), RTOL[np.float64], "peephole LSTM zoneout in evaluation")


@pytest.mark.parametrize("cell", list(CELLS))
def test_masks_are_reproducible_and_off_in_evaluation(cell):
    rng = np.random.default_rng(1)
    x = draw(rng, N, T, I)
    options = {k: v for k, v in ALL[cell].items() if k != "zoneout"}
    plain, masked, again = make(cell), make(cell, **options), make(cell, **options)
    trained = masked(x)
    assert_same_bits({"y": again(x)}, {"y": trained}, f"{cell}: the same seed draws the same masks")
    assert not np.allclose(trained, plain(x))
    masked.eval(), plain.eval()
    assert_same_bits({"y": masked(x)}, {"y": plain(x)}, f"{cell}: dropout masks are off in evaluation")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_zoneout_evaluation_is_the_expectation(cell):
    """In evaluation zoneout mixes each state with the previous one at its rate: the twin with the rates."""
    rng = np.random.default_rng(2)
    x = draw(rng, N, T, I)
    layer = make(cell, zoneout=0.3).eval()
    w = {name: p.value for name, p in layer.named_parameters()}
    h0 = np.zeros((N, H))
    keys = {"lstm": {"zoneout_h": 0.3, "zoneout_c": 0.3}, "gru": {"zoneout_h": 0.3}, "rnn": {"zoneout_h": 0.3}}[cell]
    states = (h0, h0) if cell == "lstm" else (h0,)
    out = getattr(ref, f"{cell}_forward")(np.ascontiguousarray(x.transpose(1, 0, 2)), *states, w["kernel"],
                                          w["recurrent_kernel"], w["bias"], masks=keys)
    assert_close(layer(x), out[0].transpose(1, 0, 2), RTOL[np.float64], f"{cell} zoneout in evaluation")
    trained = make(cell, zoneout=0.3)
    assert not np.allclose(trained(x), layer(x))  # training draws keep masks


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_uses_zoneouts_expectation(cell):
    rng = np.random.default_rng(3)
    x = draw(rng, N, T, I)
    layer = make(cell, zoneout=0.25, num_layers=2, return_state=True).eval()
    expected, _ = layer(x)
    state, outputs = None, []
    for t in range(T):
        y, state = layer.step(x[:, t], state)
        outputs.append(y)
    assert_close(np.stack(outputs, axis=1), expected, RTOL[np.float64], f"{cell}: step() against forward")


@pytest.mark.parametrize("cell", list(CELLS))
def test_stateful_layer_trains_with_masks(cell):
    layer = make(cell, stateful=True, **ALL[cell])
    rng = np.random.default_rng(4)
    x = draw(rng, N, T, I)
    first = layer(x)
    layer.backward(np.ones_like(first))
    second = layer(x)  # starts from the carried states, with fresh masks
    assert np.isfinite(second).all() and not np.allclose(first, second)


@pytest.mark.parametrize("cell", list(CELLS))
def test_config_round_trip_and_counts(cell):
    layer = make(cell, num_layers=2, **ALL[cell])
    config = layer.get_config()
    again = type(layer)(**config)
    assert again.get_config() == config
    assert layer.count_params() == make(cell, num_layers=2).count_params()  # the masks add no parameters


def test_old_checkpoints_keep_dropout_between_layers(tmp_path):
    """A config saved before the masks existed has "dropout" and no "layer_dropout": it meant between layers."""
    from rnnext.layers import layer_from_config
    old = make("lstm", num_layers=2).get_config()
    for key in ("recurrent_dropout", "weight_drop", "zoneout", "layer_dropout"):
        del old[key]
    old["dropout"] = 0.4
    layer = layer_from_config({"class": "LSTM", "config": old})
    assert (layer.layer_dropout, layer.dropout) == (0.4, 0.0)
    model = Sequential([make("gru", num_layers=2, layer_dropout=0.3, dropout=0.1), Dense(2)])
    model.save(tmp_path / "new.npz")
    loaded = rnnext.models.load(tmp_path / "new.npz")
    assert (loaded.layers[0].layer_dropout, loaded.layers[0].dropout) == (0.3, 0.1)


@pytest.mark.parametrize("options, message", [
    (dict(dropout=1.0), "dropout"), (dict(recurrent_dropout=-0.1), "recurrent_dropout"),
    (dict(weight_drop=1.5), "weight_drop"), (dict(zoneout=1.0), "zoneout"), (dict(zoneout=(0.1, 0.2, 0.3)), "zoneout"),
])
def test_bad_rates_name_the_argument(options, message):
    with pytest.raises(ValueError, match=message):
        LSTM(H, **options)


def test_cells_without_the_option_refuse_it():
    with pytest.raises(ValueError, match="this cell has no zoneout"):
        rnnext.SRU(H, zoneout=0.1)
    with pytest.raises(ValueError, match="zoneout"):
        RNN(H, zoneout=(0.1, 0.2))
    with pytest.raises(ValueError, match="zoneout"):
        GRU(H, zoneout=(0.1, 0.2))
    with pytest.raises(ValueError, match="recurrent_dropout=0.2 is not an option of this cell"):
        rnnext.SRU(H, recurrent_dropout=0.2)


def test_the_cuda_device_refuses_layer_normalised_and_projected_cells():
    from rnnext import cuda

    for layer in (LSTM(8, layer_norm=True), LSTM(8, proj_size=4), GRU(8, layer_norm=True)):
        with pytest.raises(ValueError, match="no layer-normalised or projected cells"):
            cuda.check_device(layer, "cuda")
