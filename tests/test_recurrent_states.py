"""The carried states of stateful recurrent layers: reading and setting them, and resetting chosen rows only."""
import numpy as np
import pytest

from rnnext.layers import GRU, LSTM, QRNN, RNN, SRU, Dense, MinGRU
from rnnext.models import Sequential

from conftest import state_arrays as arrays

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mingru": MinGRU, "sru": SRU, "qrnn": QRNN}  # QRNN: (h, c, x)
N, T, I, H = 4, 5, 3, 6


def make(cell, stateful=True, **options):
    options = {"num_layers": 2, "bidirectional": True, "input_size": I, **options}
    return CELLS[cell](H, stateful=stateful, return_sequences=True, seed=3, **options)


def with_rows_zeroed(states, rows):
    return [tuple(np.where(np.isin(np.arange(N), rows)[:, None], 0, a) for a in entry)
            if isinstance(entry, tuple) else np.where(np.isin(np.arange(N), rows)[:, None], 0, entry)
            for entry in states]


def inputs(seed):
    return np.random.default_rng(seed).standard_normal((N, T, I)).astype(np.float32)


@pytest.mark.parametrize("cell", CELLS)
def test_set_states_is_the_initial_state_of_the_next_call(cell):
    layer, twin = make(cell), make(cell, stateful=False)
    twin.forward(inputs(0))  # any first call: its carried states are replaced below
    states = make(cell, stateful=False, return_state=True).forward(inputs(1))[1]
    layer.states = states
    np.testing.assert_array_equal(layer.forward(inputs(2)), twin.forward(inputs(2), initial_state=states))


@pytest.mark.parametrize("cell", CELLS)
def test_states_are_copies_both_ways(cell):
    layer = make(cell)
    assert layer.states is None
    layer.forward(inputs(0))
    got = layer.states
    for a in arrays(got):
        a[...] = 7  # writing into what the getter returned changes nothing inside the layer
    assert not any((a == 7).any() for a in arrays(layer.states))
    layer.states = got
    for a in arrays(got):
        a[...] = 8  # nor does writing into what was assigned
    assert all((a == 7).all() for a in arrays(layer.states))
    layer.states = None
    assert layer.states is None


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("rows", [[1], [0, 3], np.array([False, True, True, False]), []])
def test_reset_chosen_rows_only(cell, rows):
    """Rows reset start the next call from zeros; the other rows continue from their carried states."""
    layer, twin = make(cell), make(cell, stateful=False)
    layer.forward(inputs(0))
    carried = layer.states
    layer.reset_states(rows=rows)
    index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else rows
    expected_states = with_rows_zeroed(carried, index)
    for got, want in zip(arrays(layer.states), arrays(expected_states)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(layer.forward(inputs(1)), twin.forward(inputs(1), initial_state=expected_states))


def test_sequential_resets_rows_of_every_stateful_layer():
    model = Sequential([make("lstm", bidirectional=False), make("gru", bidirectional=False, input_size=H),
                        Dense(2, seed=1)])
    model.forward(inputs(0))
    model.reset_states(rows=[2])
    for layer in model.layers[:2]:
        for a in arrays(layer.states):
            assert not a[2].any() and a[[0, 1, 3]].any()
    model.reset_states()
    assert all(layer.states is None for layer in model.layers[:2])


def test_reset_rows_before_any_call_is_checked_and_harmless():
    layer = make("rnn")
    layer.reset_states(rows=[0, 2])
    assert layer.states is None
    with pytest.raises(ValueError, match="rows"):
        layer.reset_states(rows=[-1])


@pytest.mark.parametrize("rows, problem", [
    ([4], r"row indices in \[0, N=4\)"),
    ([-1], r"row indices in \[0, N=4\)"),
    ([[0, 1]], "1-D array"),
    ([0.5], "1-D array"),
    (np.array([True, False]), r"expected \(N=4,\)"),
    ("0", "1-D array"),
])
def test_bad_rows_are_named(rows, problem):
    layer = make("lstm")
    layer.forward(inputs(0))
    with pytest.raises(ValueError, match=rf"reset_states: rows .*{problem}"):
        layer.reset_states(rows=rows)


def test_bad_states_are_named():
    with pytest.raises(ValueError, match="not stateful"):
        make("gru", stateful=False).states = [np.zeros((N, H))] * 4
    layer = make("lstm")
    with pytest.raises(ValueError, match=r"states is a list of length 1, expected a list of 4 \(h, c\) pairs"):
        layer.states = [(np.zeros((N, H)), np.zeros((N, H)))]
    with pytest.raises(ValueError, match=r"states\[1\]\[0\] \(h\) has shape \(3, 6\), expected \(N=4, H=6\)"):
        layer.states = [(np.zeros((N, H)), np.zeros((N, H))), (np.zeros((3, H)), np.zeros((3, H)))] * 2
    assert layer.states is None  # a refused assignment leaves the layer as it was


def test_set_states_then_a_batch_of_another_size_is_refused():
    layer = make("rnn", num_layers=1, bidirectional=False)
    layer.states = np.zeros((2, H))  # one layer and direction: a lone h, as Keras takes it
    with pytest.raises(ValueError, match=r"carries states for N=2 rows but x has N=4"):
        layer.forward(inputs(0))
