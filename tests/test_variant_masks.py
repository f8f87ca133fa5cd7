"""The regularisers' masks (issue 15) in the cell variants' kernels: the layer-normalised LSTM and GRU and the
LSTM with projection. Engine against its NumPy twin in float32 and float64 with and without lengths, both against finite
differences, thread-count independence, bad masks named, and the layers with every regulariser (gradcheck,
evaluation, step())."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext.layers import GRU, LSTM
from rnnext.losses import mean_squared_error
from rnnext.reference import layer_norm_cells, projection_cells

import test_layer_norm_cells as ln
import test_projection as proj
from conftest import assert_close, assert_same_bits, mentions, numerical_gradient, requires_openmp

TWIN_TOL = ln.TWIN_TOL  # as the variants' own tests: float64 to rounding, float32 to ~10 ulps


@dataclass
class Variant:
    prefix: str                      # of the engine's and the twin's forward and backward functions
    twin: object                     # the twin's module
    G: int                           # gate blocks
    zoneout_keys: tuple
    states: tuple                    # the state arguments, in order
    weights: tuple                   # the weight arguments after x
    problem: Callable                # (shape, dtype, seed) -> arguments
    douts: Callable                  # (shape, dtype, seed) -> (dy, dh_n[, dc_n])
    shapes: list                     # (T, N, I, H[, P])
    small: tuple                     # the finite-difference shape
    threads: tuple                   # the thread-count shape


VARIANTS = {
    "ln_lstm": Variant("layer_norm_lstm", layer_norm_cells, 4, ("zoneout_h", "zoneout_c"), ln.STATES["lstm"],
                       ln.WEIGHT_NAMES["lstm"], lambda shape, dtype, seed=0: ln.make_problem("lstm", shape, dtype, seed),
                       lambda shape, dtype, seed=1: ln.output_gradients("lstm", shape, dtype, seed),
                       ln.SHAPES, (3, 2, 3, 5), (4, 8, 6, 96)),
    "ln_gru": Variant("layer_norm_gru", layer_norm_cells, 3, ("zoneout_h",), ln.STATES["gru"], ln.WEIGHT_NAMES["gru"],
                      lambda shape, dtype, seed=0: ln.make_problem("gru", shape, dtype, seed),
                      lambda shape, dtype, seed=1: ln.output_gradients("gru", shape, dtype, seed),
                      ln.SHAPES, (3, 2, 3, 5), (4, 8, 6, 96)),
    "lstmp": Variant("projected_lstm", projection_cells, 4, ("zoneout_h", "zoneout_c"), ("h0", "c0"), proj.WEIGHT_NAMES,
                     proj.make_problem, proj.output_gradients, proj.SHAPES, (3, 2, 3, 5, 3), (4, 8, 6, 96, 40)),
}
MASK_SETS = ["dropout", "recurrent_dropout", "weight_drop", "zoneout", "zoneout_eval", "all"]


def lengths_for(shape):
    T, N = shape[:2]
    return np.array([(T, 0, 2, T - 1, 1, T)[n % 6] for n in range(N)], dtype=np.int64)


def make_masks(variant, shape, which, dtype, seed=7):
    """The masks of one set, drawn as the layers draw them: dropout 0 or 1 / (1 - p), zoneout keeps 0 or 1. h's
    masks have P units where the variant has a projection."""
    T, N, I, H = shape[:4]
    S = shape[4] if len(shape) > 4 else H  # h's width
    v = VARIANTS[variant]
    G, zoneout_keys = v.G, v.zoneout_keys
    rng = np.random.default_rng(seed)

    def dropout(p, *dims):
        return ((rng.random(dims) >= p) / (1 - p)).astype(dtype)

    masks = {}
    if which in ("dropout", "all"):
        masks["input"] = dropout(0.3, N, I)
    if which in ("recurrent_dropout", "all"):
        masks["state"] = dropout(0.4, N, S)
    if which in ("weight_drop", "all"):
        masks["weight"] = dropout(0.5, S, G * H)
    for k, key in enumerate(zoneout_keys):
        if which in ("zoneout", "all"):
            masks[key] = (rng.random((T, N, S if key == "zoneout_h" else H)) < 0.2 + 0.2 * k).astype(dtype)
        elif which == "zoneout_eval":
            masks[key] = 0.2 + 0.2 * k
    return masks


def run(variant, module, p, douts, lengths, masks):
    """({"y", "h_n"[, "c_n"]}, gradients) of one forward and backward in `module` (_core, or "twin")."""
    v = VARIANTS[variant]
    module = v.twin if module == "twin" else module
    y, *finals, cache = getattr(module, f"{v.prefix}_forward")(**p, lengths=lengths, masks=masks)
    weights = {name: p[name] for name in v.weights}
    grads = getattr(module, f"{v.prefix}_backward")(*douts, cache, p["x"], **weights, lengths=lengths, masks=masks)
    outputs = {"y": y, **{f"{state[0]}_n": final for state, final in zip(v.states, finals)}}
    return outputs, grads


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("which", MASK_SETS)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_matches_twin(variant, which, with_lengths, dtype):
    v = VARIANTS[variant]
    for shape in v.shapes:
        p = v.problem(shape, dtype)
        douts = v.douts(shape, dtype)
        lengths = lengths_for(shape) if with_lengths else None
        masks = make_masks(variant, shape, which, dtype)
        engine = run(variant, _core, p, douts, lengths, masks)
        reference = run(variant, "twin", p, douts, lengths, masks)
        what = f"{variant} {which} {shape} {np.dtype(dtype).name} lengths={with_lengths}"
        assert_close(engine[0], reference[0], TWIN_TOL[dtype], f"forward {what}")
        assert_close(engine[1], reference[1], TWIN_TOL[dtype], f"gradients {what}")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("which", MASK_SETS)
@pytest.mark.parametrize("module", ["twin", _core], ids=["twin", "engine"])
def test_gradients_match_finite_differences(variant, which, module):
    v = VARIANTS[variant]
    shape = v.small
    p = v.problem(shape, np.float64, seed=3)
    douts = v.douts(shape, np.float64, seed=4)
    lengths = np.array([3, 2])
    masks = make_masks(variant, shape, which, np.float64)
    forward = getattr(v.twin if module == "twin" else module, f"{v.prefix}_forward")

    def loss():
        outputs = forward(**p, lengths=lengths, masks=masks)[:-1]
        return sum(float((a * d).sum()) for a, d in zip(outputs, douts))

    _, grads = run(variant, module, p, douts, lengths, masks)
    numeric = {name: numerical_gradient(loss, p[name]) for name in ("x",) + v.states + v.weights}
    # central differences in float64 are good to ~1e-9 of O(1) gradients (conftest.numerical_gradient)
    assert_close({name: grads[name] for name in numeric}, numeric, 1e-7, f"{variant} {which}: finite differences")


@requires_openmp
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_threads_give_identical_bits(variant, restore_threads):
    v = VARIANTS[variant]
    shape = v.threads
    p = v.problem(shape, np.float32)
    douts = v.douts(shape, np.float32)
    masks = make_masks(variant, shape, "all", np.float32)
    results = []
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        results.append(run(variant, _core, p, douts, lengths_for(shape), masks))
    for threads, (out, grads) in zip((2, 3), results[1:]):
        assert_same_bits(out, results[0][0], f"{variant} forward, {threads} threads against 1")
        assert_same_bits(grads, results[0][1], f"{variant} gradients, {threads} threads against 1")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cache_free_forward_gives_the_same_bits(variant):
    v = VARIANTS[variant]
    shape = v.shapes[0]
    p = v.problem(shape, np.float32)
    masks = make_masks(variant, shape, "all", np.float32)
    forward = getattr(_core, f"{v.prefix}_forward")
    *cached, _ = forward(**p, lengths=lengths_for(shape), masks=masks)
    *outputs, cache = forward(**p, lengths=lengths_for(shape), masks=masks, keep_cache=False)
    assert cache is None
    assert_same_bits(dict(enumerate(outputs)), dict(enumerate(cached)), f"{variant} keep_cache=False")


# (key, mask from (T, N, I, H, S = h's width, G), the name the error gives)
BAD = [
    ("input", lambda T, N, I, H, S, G: np.ones((N, I + 1)), "masks['input']"),
    ("state", lambda T, N, I, H, S, G: np.ones((N, S + 1)), "masks['state']"),
    ("state", lambda T, N, I, H, S, G: np.ones((N + 1, S)), "masks['state']"),
    ("weight", lambda T, N, I, H, S, G: np.ones((S, G * H + 1)), "masks['weight']"),
    ("weight", lambda T, N, I, H, S, G: np.ones((H + 1, G * H)), "masks['weight']"),
    ("zoneout_h", lambda T, N, I, H, S, G: 1.0, "masks['zoneout_h']"),
    ("zoneout_h", lambda T, N, I, H, S, G: np.ones((T, N, S + 1)), "masks['zoneout_h']"),
    ("zoneout_h", lambda T, N, I, H, S, G: np.full((T, N, S), 2.0), "masks['zoneout_h']"),
    ("bogus", lambda T, N, I, H, S, G: np.ones((N, H)), "masks"),
]
BAD_LSTMP = [  # zoneout_c keeps the cell's H units
    ("zoneout_c", lambda T, N, I, H, S, G: np.ones((T, N, S)), "masks['zoneout_c']"),
    ("zoneout_c", lambda T, N, I, H, S, G: -0.5, "masks['zoneout_c']"),
]
BAD_ZONEOUT_C = [
    ("zoneout_c", lambda T, N, I, H, S, G: np.ones((T, N, H + 1)), "masks['zoneout_c']"),
    ("zoneout_c", lambda T, N, I, H, S, G: -0.5, "masks['zoneout_c']"),
]


@pytest.mark.parametrize("variant,key,make,name", [(v, *bad) for v in VARIANTS for bad in BAD] +
                         [("lstmp", *bad) for bad in BAD_LSTMP] + [("ln_lstm", *bad) for bad in BAD_ZONEOUT_C])
@pytest.mark.parametrize("module", [_core, "twin"], ids=["engine", "twin"])
def test_bad_masks_name_the_argument(variant, key, make, name, module):
    v = VARIANTS[variant]
    shape = v.small
    T, N, I, H = shape[:4]
    S = shape[4] if len(shape) > 4 else H
    p = v.problem(shape, np.float64)
    masks = {key: make(T, N, I, H, S, v.G)}
    with pytest.raises(ValueError) as info:
        getattr(v.twin if module == "twin" else module, f"{v.prefix}_forward")(**p, masks=masks)
    assert mentions(str(info.value), name), str(info.value)


# -- the layers
T, N, I, H, P = 5, 3, 4, 6, 4
LAYERS = {"ln_lstm": lambda **o: LSTM(H, layer_norm=True, **o), "ln_gru": lambda **o: GRU(H, layer_norm=True, **o),
          "lstmp": lambda **o: LSTM(H, proj_size=P, **o)}
EVERY = dict(dropout=0.3, recurrent_dropout=0.4, weight_drop=0.2, layer_dropout=0.25, zoneout=0.2)
ZONEOUT_RATES = {"ln_lstm": {"zoneout_h": 0.3, "zoneout_c": 0.3}, "ln_gru": {"zoneout_h": 0.3},
                 "lstmp": {"zoneout_h": 0.3, "zoneout_c": 0.3}}


def make_layer(variant, **options):
    return LAYERS[variant](input_size=I, return_sequences=True, dtype=np.float64, seed=3, **options)


@pytest.mark.parametrize("variant", list(LAYERS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_gradients_with_every_regulariser(variant, bidirectional):
    """Training mode, stacked, lengths: gradcheck keeps the masks fixed by restoring the generator."""
    layer = make_layer(variant, num_layers=2, bidirectional=bidirectional, **EVERY)
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((N, T, I)), rng.standard_normal((N, T, layer.num_directions * layer._output_units()))
    report = rnnext.gradcheck(layer, x, target, mean_squared_error, check_input=True, lengths=np.array([5, 2, 0]))
    assert report.worst < 1e-5, str(report)


@pytest.mark.parametrize("variant", list(LAYERS))
def test_layer_masks_train_and_evaluation_uses_the_expectation(variant):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, T, I))
    plain, masked = make_layer(variant), make_layer(variant, **EVERY)
    assert not np.allclose(masked(x), plain(x))  # training draws masks
    dropout_only = make_layer(variant, **{k: v for k, v in EVERY.items() if k != "zoneout"}).eval()
    assert_same_bits({"y": dropout_only(x)}, {"y": plain.eval()(x)}, f"{variant}: dropout is off in evaluation")
    zoned = make_layer(variant, zoneout=0.3).eval()
    v = VARIANTS[variant]
    w = {name: p.value for name, p in zoned.named_parameters()}
    states = [np.zeros((N, P if variant == "lstmp" and name == "h0" else H)) for name in v.states]
    out = getattr(v.twin, f"{v.prefix}_forward")(np.ascontiguousarray(x.transpose(1, 0, 2)), *states,
                                                 *[w[name] for name in v.weights], masks=ZONEOUT_RATES[variant])
    assert_close(zoned(x), out[0].transpose(1, 0, 2), 1e-10, f"{variant}: zoneout's expectation in evaluation")


@pytest.mark.parametrize("variant", list(LAYERS))
def test_layer_step_uses_zoneouts_expectation(variant):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, T, I))
    layer = make_layer(variant, zoneout=0.25, num_layers=2, return_state=True).eval()
    expected, _ = layer(x)
    state, outputs = None, []
    for t in range(T):
        y, state = layer.step(x[:, t], state)
        outputs.append(y)
    assert_close(np.stack(outputs, axis=1), expected, 1e-10, f"{variant}: step() against forward")
