"""The inference paths: forward passes that keep no backward cache (keep_cache=False, rnnext.inference_mode,
Sequential.predict) and the steppers that run a stack one time step at a time. Each must give the training
forward's results bit for bit, since the two share their arithmetic (cpp/rnnext/lstm.h LstmForward and kin)."""
import numpy as np
import pytest
from conftest import (CASES, DTYPES, SHAPES, THREAD_SHAPES, assert_same_bits, cell_of, forward_kwargs, make_problem,
                      mixed_lengths, run_forward, state_arrays)

import rnnext
from rnnext import _core
from rnnext.experiments import char_lm
from rnnext.sampling import _draw_rows, sampling_distribution

LAYERS = {"rnn": rnnext.RNN, "lstm": rnnext.LSTM, "gru": rnnext.GRU}


def same_bits(actual, expected, what):
    assert_same_bits({"array": actual}, {"array": expected}, what)


# ---------------------------------------------------------------------------------------------------------
# engine: keep_cache=False

@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("shape", SHAPES + THREAD_SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_cache_free_forward_gives_the_training_forward_bits(case, shape, dtype, with_lengths, restore_threads):
    params, options = make_problem(case, shape, dtype)
    T, N, _, _ = shape
    lengths = mixed_lengths(T, N) if with_lengths else None
    kwargs = forward_kwargs(case, params, options, lengths)
    expected, cache = run_forward(rnnext, case, kwargs)
    assert isinstance(cache, dict)
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        got, no_cache = run_forward(rnnext, case, {**kwargs, "keep_cache": False})
        assert no_cache is None
        assert_same_bits(got, expected, f"{case} without a cache, {threads} threads")


# ---------------------------------------------------------------------------------------------------------
# engine: steppers

def stepper_layers(case, dtype, num_layers, I, H, seed=0):
    """Weight tuples of a stack of `num_layers` layers of the case, in the order *_stepper takes them."""
    out = []
    for k in range(num_layers):
        params, _ = make_problem(case, (1, 1, I if k == 0 else H, H), dtype, seed=seed + k)
        entry = (params["kernel"], params["recurrent_kernel"], params["bias"])
        if cell_of(case) == "lstm":
            entry += (params.get("peephole"),)
        out.append(entry)
    return out


def stepper_of(case, layers, N):
    cell, options = CASES[case]
    options = {k: v for k, v in options.items() if k != "peephole"}
    return getattr(_core, f"{cell}_stepper")(layers, N, **options)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("N", [1, 3, 40])
@pytest.mark.parametrize("case", CASES)
def test_a_step_of_the_stack_is_the_one_step_forward_of_each_layer(case, N, dtype, restore_threads):
    I, H, L = 7, 70, 3
    layers = stepper_layers(case, dtype, L, I, H)
    stepper = stepper_of(case, layers, N)
    assert stepper.batch_size == N
    rng = np.random.default_rng(1)
    S = 2 if cell_of(case) == "lstm" else 1
    x = rng.standard_normal((N, I)).astype(dtype)
    states = [tuple(rng.standard_normal((N, H)).astype(dtype) for _ in range(S)) for _ in range(L)]
    cell, options = CASES[case]
    options = {k: v for k, v in options.items() if k != "peephole"}
    layer_input, expected_states = x[None], []
    for (kernel, recurrent_kernel, bias, *peephole), state in zip(layers, states):
        kwargs = {"x": layer_input, "h0": state[0], "kernel": kernel, "recurrent_kernel": recurrent_kernel,
                  "bias": bias, **options}
        if cell == "lstm":
            kwargs.update(c0=state[1], peephole=peephole[0])
        out = getattr(_core, f"{cell}_forward")(**kwargs)
        layer_input, expected_states = out[0], expected_states + [tuple(out[1:-1])]
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        for _ in range(2):  # a second step from the same states: the stepper keeps nothing between steps
            y, new_states = stepper.step(x, states)
            same_bits(y, layer_input[0], f"{case} top output, {threads} threads")
            for k, (got, want) in enumerate(zip(new_states, expected_states)):
                for part, (a, b) in enumerate(zip(got, want)):
                    same_bits(a, b, f"{case} layer {k} state {part}")


def test_the_stepper_keeps_its_own_copy_of_the_weights():
    layers = stepper_layers("lstm-peephole", np.float32, 2, 5, 16)
    stepper = stepper_of("lstm-peephole", layers, 2)
    x = np.ones((2, 5), np.float32)
    states = [(np.zeros((2, 16), np.float32),) * 2] * 2
    before = stepper.step(x, states)[0]
    for weights in layers:
        for array in weights:
            array[...] = 0  # an optimizer step in place
    same_bits(stepper.step(x, states)[0], before, "the output after the layer's weights changed")


@pytest.mark.parametrize("bad, message", [
    (lambda layers, x, s: (layers, 0, x, s), "lstm_stepper: batch_size is 0, expected at least 1"),
    (lambda layers, x, s: ([], 2, x, s), "lstm_stepper: layers must be a non-empty list of"),
    (lambda layers, x, s: ([layers[0][:3]], 2, x, s), "lstm_stepper: layers[0] must be a tuple (kernel,"),
    (lambda layers, x, s: ([layers[0], (layers[0][0],) + layers[1][1:]], 2, x, s),
     "lstm_stepper: layers[1].kernel has shape (5, 64), expected (H=16, 4*H=64)"),
    (lambda layers, x, s: ([layers[0], layers[1][:3] + (None,)], 2, x, s),
     "lstm_stepper: layers[1].peephole is None, expected an array"),
    (lambda layers, x, s: (layers, 2, x[:1], s), "lstm_stepper.step: x has shape (1, 5), expected (N=2, I=5)"),
    (lambda layers, x, s: (layers, 2, x, s[:1]), "lstm_stepper.step: states must be a list of 2 tuples"),
    (lambda layers, x, s: (layers, 2, x, [s[0], (s[0][0],)]), "lstm_stepper.step: states[1] must be a tuple of 2"),
    (lambda layers, x, s: (layers, 2, x, [s[0], (s[0][0][:1], s[0][1])]),
     "lstm_stepper.step: states[1][0] has shape (1, 16), expected (N=2, H=16)"),
    (lambda layers, x, s: (layers, 2, x.astype(np.float64), s), "lstm_stepper.step: x has dtype float64, expected"),
])
def test_stepper_bad_input_is_named(bad, message):
    layers = stepper_layers("lstm-peephole", np.float32, 2, 5, 16)
    x = np.ones((2, 5), np.float32)
    states = [(np.zeros((2, 16), np.float32),) * 2] * 2
    layers_arg, batch_size, x_arg, states_arg = bad(layers, x, states)
    with pytest.raises((ValueError, TypeError)) as error:
        _core.lstm_stepper(layers_arg, batch_size).step(x_arg, states_arg)
    assert str(error.value).startswith(message)


# ---------------------------------------------------------------------------------------------------------
# layers and models

@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
@pytest.mark.parametrize("cell", LAYERS)
def test_inference_mode_gives_the_forward_bits_and_keeps_nothing(cell, bidirectional, dtype):
    layer = LAYERS[cell](24, num_layers=2, bidirectional=bidirectional, layer_dropout=0.3, return_sequences=True,
                         return_state=True, dtype=dtype, seed=0)
    layer.eval()  # the same dropout (none) on both sides
    x = np.random.default_rng(0).standard_normal((5, 9, 6)).astype(dtype)
    lengths = np.array([9, 0, 4, 9, 1])
    expected, expected_states = layer(x, lengths=lengths)
    with rnnext.inference_mode():
        got, got_states = layer(x, lengths=lengths)
    same_bits(got, expected, f"{cell} output under inference_mode")
    for a, b in zip(state_arrays(got_states), state_arrays(expected_states)):
        same_bits(a, b, f"{cell} final states under inference_mode")
    with pytest.raises(ValueError, match="the last forward pass ran under inference_mode()"):
        layer.backward(np.zeros_like(got))
    layer(x, lengths=lengths)  # a training forward again: backward works
    layer.backward(np.zeros_like(got))


def test_inference_mode_is_per_thread_and_nests():
    import threading

    seen = {}
    with rnnext.inference_mode():
        with rnnext.inference_mode():
            pass
        assert rnnext.layer_base.inference_active()
        thread = threading.Thread(target=lambda: seen.setdefault("other", rnnext.layer_base.inference_active()))
        thread.start()
        thread.join()
    assert not rnnext.layer_base.inference_active()
    assert seen == {"other": False}


def course_model(seed=0):
    model = rnnext.Sequential([rnnext.Embedding(50, 8, seed=seed), rnnext.Dropout(0.5, seed=seed + 1),
                               rnnext.LSTM(12, seed=seed + 2), rnnext.Dense(1, seed=seed + 3)], input_shape=(11,))
    return model


def test_predict_is_the_eval_forward_in_batches():
    model = course_model()
    ids = np.random.default_rng(0).integers(1, 50, size=(7, 11))
    lengths = np.array([11, 3, 1, 11, 7, 2, 5])
    for batch_size in (None, 1, 3, 7, 100):
        # Each batch is its own forward: a product's rounding may depend on its row count (gemm.h).
        step = batch_size or len(ids)
        model.eval()
        expected = np.concatenate([model.forward(ids[first:first + step], lengths=lengths[first:first + step])
                                   for first in range(0, len(ids), step)])
        model.train()
        same_bits(model.predict(ids, lengths=lengths, batch_size=batch_size), expected,
                  f"predict with batch_size={batch_size}")
    assert model.training, "predict restores the training mode"
    with pytest.raises(ValueError, match="the last forward pass ran under inference_mode()"):
        model.backward(np.zeros((7, 1), np.float32))
    with pytest.raises(ValueError, match=r"Sequential.predict: lengths has shape \(6,\), expected \(N=7,\)"):
        model.predict(ids, lengths=lengths[:6])
    with pytest.raises(ValueError, match="Sequential.predict: batch_size is 0"):
        model.predict(ids, batch_size=0)


@pytest.mark.parametrize("cell", LAYERS)
def test_layer_stepper_matches_step_and_refuses_what_it_cannot_do(cell):
    layer = LAYERS[cell](16, num_layers=2, seed=0, input_size=5)
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    stepper = layer.stepper(3)
    state = None
    for _ in range(3):
        h_stepper, state_stepper = stepper.step(x, state)
        h_step, state_step = layer.step(x, state)
        same_bits(h_stepper, h_step, f"{cell} stepper output")
        for a, b in zip(state_arrays(state_stepper), state_arrays(state_step)):
            same_bits(a, b, f"{cell} stepper state")
        state = state_step
    with pytest.raises(ValueError, match=r"x_t has shape \(2, 5\), expected \(N=3, I=5\): the stepper was made"):
        stepper.step(x[:2])
    with pytest.raises(ValueError, match="stepping needs a single direction"):
        LAYERS[cell](4, bidirectional=True, input_size=5).stepper(1)
    with pytest.raises(ValueError, match="the layer is not built yet"):
        LAYERS[cell](4).stepper(1)
    with pytest.raises(ValueError, match="batch_size is 0"):
        layer.stepper(0)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_stepper_advance_is_step_on_the_internal_states(cell):
    layer = LAYERS[cell](16, num_layers=2, seed=0, input_size=5)
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    stepper = layer.stepper(3)
    state, states = None, None
    for _ in range(3):
        h_step, state = stepper.step(x, state)
        h_advance, states = stepper.advance(x, states)
        same_bits(h_advance, h_step, f"{cell} advance output")
        for a, b in zip([array for entry in states for array in entry], state_arrays(state)):
            same_bits(a, b, f"{cell} advance state")
    with pytest.raises((TypeError, ValueError), match="states"):  # the engine checks what advance passes on
        stepper.advance(x, states[:1])
    with pytest.raises(ValueError, match="x"):
        stepper.advance(x[:2], states)


# ---------------------------------------------------------------------------------------------------------
# generation

def test_char_lm_build_model_with_a_seed_is_reproducible():
    def parameters(seed):
        model = char_lm.build_model(20, "gru", 2, 8, embedding=4, dropout=0.1, seed=seed)
        return [p.value.copy() for p in model.parameters()]

    for a, b in zip(parameters(3), parameters(3)):
        same_bits(a, b, "a parameter of two models built with seed=3")


def test_row_draws_are_what_rng_choice_draws():
    """sampling draws one id per row as rng.choice(V, p=row / row.sum()) would, row by row, from one generator."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        V, N = int(rng.integers(2, 200)), int(rng.integers(1, 6))
        probabilities = sampling_distribution(3 * rng.standard_normal((N, V)), 0.8, top_k=None if seed % 3 else 5,
                                              top_p=None if seed % 2 else 0.9)
        choice = np.random.default_rng(seed + 1)
        expected = [choice.choice(V, p=row / row.sum()) for row in probabilities]
        assert _draw_rows(np.random.default_rng(seed + 1), probabilities).tolist() == expected, f"seed {seed}"


def test_a_cell_without_an_engine_stepper_steps_layer_by_layer():
    """Recurrent's default stepper (for cells the engine has no stepper for) runs each layer's forward with
    T = 1 on its own copy of the weights: the engine stepper's bits."""
    layer = rnnext.GRU(12, num_layers=3, seed=0, input_size=4)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    by_layer = rnnext.recurrent.Recurrent._engine_stepper(layer, [w[0] for w in layer._weights], 2)
    engine = layer._engine_stepper([w[0] for w in layer._weights], 2)
    states = layer._zero_states(2, 3)
    expected_y, expected_states = engine.step(x, states)
    layer._weights[0][0]["kernel"].value[...] = 0  # the copies are the stepper's own
    y, new_states = by_layer.step(x, states)
    same_bits(y, expected_y, "the layer-by-layer stepper's output")
    for (a,), (b,) in zip(new_states, expected_states):
        same_bits(a, b, "the layer-by-layer stepper's states")
    with pytest.raises(ValueError, match="states must be a list of 3 tuples"):
        by_layer.step(x, states[:2])
