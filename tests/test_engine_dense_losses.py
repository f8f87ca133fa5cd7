"""Proves the engine's Dense (rnnext._core.dense_*) and losses (softmax_cross_entropy, binary_cross_entropy_with_logits,
mean_squared_error) against their NumPy twins (rnnext.reference), finite differences and torch.nn.functional, and
checks what the twins cannot: bits that do not depend on threads or addresses, argument errors, NaN."""
import numpy as np
import pytest

import rnnext
from rnnext import _core, reference

from conftest import (
    DTYPES,
    RTOL,
    another_thread_ran_during,
    assert_close,
    assert_same_bits,
    mentions,
    mixed_lengths,
    numerical_gradient,
    relative_error,
    requires_openmp,
)

ACTIVATIONS = ["linear", "sigmoid", "tanh", "relu", "softmax"]

# (M, F, U). The products cut rows into chunks of 256 and output columns into chunks of 256 (weight gradients)
# or 192 (kRowSplit), and the depth into Eigen's blocks (~250 here): (300, 20, 37) has two row chunks, (5, 530, 9)
# a deep F, (3, 7, 600) wide U; U = 37 and 9 are odd, so rows start at every alignment; M = 0 and F = 0 are the
# empty batch and an input-free layer (y = act(bias)).
DENSE_SHAPES = [(1, 3, 5), (7, 4, 1), (300, 20, 37), (5, 530, 9), (3, 7, 600), (0, 4, 3), (4, 0, 3)]

# (logits shape, masking). Positions [N, T] for sequences, [M] for rows, () for a single vector of logits.
LOSS_SHAPES = [(5, 7), (3, 4, 11), (2, 3, 1), (9,), (40, 1003), (0, 4)]


def dense_problem(shape, dtype, seed=0):
    M, F, U = shape
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((M, F)).astype(dtype),
            "kernel": (rng.standard_normal((F, U)) / np.sqrt(max(F, 1))).astype(dtype),
            "bias": (0.1 * rng.standard_normal(U)).astype(dtype),
            "dy": rng.standard_normal((M, U)).astype(dtype),
            "dkernel": rng.standard_normal((F, U)).astype(dtype),  # what a Parameter.grad held before
            "dbias": rng.standard_normal(U).astype(dtype)}


def dense_results(module, p, activation, accumulate=True):
    """{"y", "dx", "kernel", "bias"} of one forward and backward in `module` (the engine or its twin)."""
    y = module.dense_forward(p["x"], p["kernel"], p["bias"], activation)
    buffers = {"dkernel": p["dkernel"].copy(), "dbias": p["dbias"].copy()} if accumulate else {}
    grads = module.dense_backward(p["dy"], y, p["x"], p["kernel"], activation, **buffers)
    return {"y": y, "dx": grads["x"], "kernel": grads["kernel"], "bias": grads["bias"]}


def as64(p):
    return {k: v.astype(np.float64) for k, v in p.items()}


def loss_problem(shape, dtype, masking, seed=0):
    """Keyword arguments of one softmax_cross_entropy call: logits * 3, targets, and the masking."""
    rng = np.random.default_rng(seed)
    C = shape[-1]
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    targets = rng.integers(0, C, size=shape[:-1])
    kwargs = {"logits": logits, "targets": targets}
    if masking == "mask":
        kwargs["mask"] = np.asarray(rng.random(shape[:-1]) < 0.6)
        kwargs["targets"] = np.where(kwargs["mask"], targets, -1)  # never read where the mask is off
    elif masking == "lengths":
        kwargs["lengths"] = mixed_lengths(shape[1], shape[0])
    return kwargs


def loss_masking_cases():
    return [pytest.param(shape, masking, id=f"{shape}-{masking}") for shape in LOSS_SHAPES
            for masking in ["none", "mask", "lengths"] if masking != "lengths" or len(shape) == 3]


def elementwise_problem(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    # np.asarray: a 0-d shape draws NumPy scalars, and the engine takes arrays
    return np.asarray(4 * rng.standard_normal(shape), dtype=dtype), np.asarray(rng.random(shape), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# 1. engine vs twin. The twin runs in float64 on the very values the engine got, so the difference is the
# engine's own rounding; tolerances as for the cells (conftest.RTOL: 1e-5 float32, 1e-10 float64), relative to
# each tensor's largest entry (floored at 1e-3 for the losses). Observed over these cases: float32 <= 5e-7
# (Eigen's exp, tanh and logistic are a few ulp; sums in another order), float64 <= 3e-15.

@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "M{}-F{}-U{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_matches_twin(activation, dtype, shape):
    p = dense_problem(shape, dtype)
    before = {k: v.copy() for k, v in p.items()}
    engine = dense_results(_core, p, activation)
    expected = dense_results(reference, as64(p), activation)
    assert all(engine[k].dtype == dtype for k in engine)
    assert_close(engine, expected, RTOL[dtype], f"dense {activation} {np.dtype(dtype)} {shape}")
    assert_same_bits(p, before, "dense inputs after the calls")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_dense_backward_accumulates_into_given_buffers(dtype):
    p = dense_problem((6, 5, 4), dtype)
    y = _core.dense_forward(p["x"], p["kernel"], p["bias"], "tanh")
    dkernel, dbias = p["dkernel"].copy(), p["dbias"].copy()
    grads = _core.dense_backward(p["dy"], y, p["x"], p["kernel"], "tanh", dkernel, dbias)
    assert grads["kernel"] is dkernel and grads["bias"] is dbias, "the given buffers are not the ones returned"
    fresh = _core.dense_backward(p["dy"], y, p["x"], p["kernel"], "tanh")
    assert_close({"kernel": dkernel, "bias": dbias},
                 {"kernel": p["dkernel"] + fresh["kernel"], "bias": p["dbias"] + fresh["bias"]}, RTOL[dtype],
                 "accumulated gradients")


@pytest.mark.parametrize("shape, masking", loss_masking_cases())
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_softmax_cross_entropy_matches_twin(dtype, reduction, shape, masking):
    kwargs = loss_problem(shape, dtype, masking)
    loss, grad = _core.softmax_cross_entropy(**kwargs, reduction=reduction)
    kwargs64 = {**kwargs, "logits": kwargs["logits"].astype(np.float64)}
    expected_loss, expected_grad = reference.softmax_cross_entropy(**kwargs64, reduction=reduction)
    assert isinstance(loss, float) and grad.dtype == dtype and grad.shape == shape
    assert_close({"loss": np.float64(loss), "grad": grad}, {"loss": np.float64(expected_loss), "grad": expected_grad},
                 RTOL[dtype], f"softmax_cross_entropy {np.dtype(dtype)} {reduction}", scale_floor=1e-3)


@pytest.mark.parametrize("shape", [(3, 4), (7,), (), (5000,), (0, 2)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("loss_name", ["binary_cross_entropy_with_logits", "mean_squared_error"])
def test_elementwise_losses_match_twin(loss_name, dtype, reduction, shape):
    first, targets = elementwise_problem(shape, dtype)
    loss, grad = getattr(_core, loss_name)(first, targets, reduction)
    expected_loss, expected_grad = getattr(reference, loss_name)(first.astype(np.float64),
                                                                 targets.astype(np.float64), reduction)
    assert isinstance(loss, float) and grad.dtype == dtype and grad.shape == shape
    assert_close({"loss": np.float64(loss), "grad": grad}, {"loss": np.float64(expected_loss), "grad": expected_grad},
                 RTOL[dtype], f"{loss_name} {np.dtype(dtype)} {reduction}", scale_floor=1e-3)


# ---------------------------------------------------------------------------------------------------------
# 2. finite differences, float64, through the engine. Central differences with step 1e-6 on these O(1) losses
# have truncation ~1e-12 and rounding ~1e-10 (conftest.numerical_gradient); 1e-7 relative to the largest entry
# leaves three orders of margin without hiding a wrong factor.
FD_TOL = 1e-7


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_gradients_match_finite_differences(activation):
    p = dense_problem((4, 3, 5), np.float64, seed=3)
    projection = np.random.default_rng(4).standard_normal((4, 5))  # loss = sum(y * projection)

    def loss():
        return float(np.sum(_core.dense_forward(p["x"], p["kernel"], p["bias"], activation) * projection))

    y = _core.dense_forward(p["x"], p["kernel"], p["bias"], activation)
    grads = _core.dense_backward(projection, y, p["x"], p["kernel"], activation)
    for name in ("x", "kernel", "bias"):
        error = relative_error(grads[name], numerical_gradient(loss, p[name]))
        assert error < FD_TOL, f"dense {activation}: d{name} relative error {error:.3g}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masking", ["none", "mask", "lengths"])
def test_softmax_cross_entropy_matches_finite_differences(masking, reduction):
    kwargs = loss_problem((3, 4, 5), np.float64, masking, seed=5)
    _, grad = _core.softmax_cross_entropy(**kwargs, reduction=reduction)
    expected = numerical_gradient(lambda: _core.softmax_cross_entropy(**kwargs, reduction=reduction)[0],
                                  kwargs["logits"])
    assert relative_error(grad, expected) < FD_TOL, f"softmax_cross_entropy {masking} {reduction}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_name", ["binary_cross_entropy_with_logits", "mean_squared_error"])
def test_elementwise_losses_match_finite_differences(loss_name, reduction):
    first, targets = elementwise_problem((4, 3), np.float64, seed=6)
    _, grad = getattr(_core, loss_name)(first, targets, reduction)
    expected = numerical_gradient(lambda: getattr(_core, loss_name)(first, targets, reduction)[0], first)
    assert relative_error(grad, expected) < FD_TOL, f"{loss_name} {reduction}"


# ---------------------------------------------------------------------------------------------------------
# 3. torch.nn.functional, same dtype, tolerances per dtype as against the twin

def torch_activation(torch, activation, a):
    functional = torch.nn.functional
    return {"linear": lambda: a, "sigmoid": lambda: torch.sigmoid(a), "tanh": lambda: torch.tanh(a),
            "relu": lambda: functional.relu(a), "softmax": lambda: functional.softmax(a, dim=-1)}[activation]()


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_matches_torch(torch, activation, dtype):
    p = dense_problem((30, 12, 7), dtype, seed=7)
    engine = dense_results(_core, p, activation, accumulate=False)
    x, kernel, bias = (torch.tensor(p[k], requires_grad=True) for k in ("x", "kernel", "bias"))
    y = torch_activation(torch, activation, torch.nn.functional.linear(x, kernel.T, bias))
    y.backward(torch.tensor(p["dy"]))
    expected = {"y": y.detach().numpy(), "dx": x.grad.numpy(), "kernel": kernel.grad.numpy(), "bias": bias.grad.numpy()}
    assert_close(engine, expected, RTOL[dtype], f"dense {activation} vs torch")


def torch_loss(torch, function, first, *args, **kwargs):
    first_t = torch.tensor(first, requires_grad=True)
    loss = function(first_t, *args, **kwargs)
    loss.backward()
    return np.float64(loss.item()), first_t.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_softmax_cross_entropy_matches_torch(torch, dtype, reduction):
    kwargs = loss_problem((4, 6, 9), dtype, "mask", seed=8)
    loss, grad = _core.softmax_cross_entropy(**kwargs, reduction=reduction)
    ignored = np.where(kwargs["mask"], kwargs["targets"], -100)  # torch's ignore_index stands for the mask
    expected = torch_loss(torch, lambda t: torch.nn.functional.cross_entropy(
        t.permute(0, 2, 1), torch.tensor(ignored), ignore_index=-100, reduction=reduction), kwargs["logits"])
    assert_close({"loss": np.float64(loss), "grad": grad}, dict(zip(["loss", "grad"], expected)), RTOL[dtype],
                 f"softmax_cross_entropy vs torch {reduction}", scale_floor=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("loss_name, torch_name", [("binary_cross_entropy_with_logits",
                                                    "binary_cross_entropy_with_logits"),
                                                   ("mean_squared_error", "mse_loss")])
def test_elementwise_losses_match_torch(torch, loss_name, torch_name, dtype, reduction):
    first, targets = elementwise_problem((6, 5), dtype, seed=9)
    loss, grad = getattr(_core, loss_name)(first, targets, reduction)
    expected = torch_loss(torch, lambda t: getattr(torch.nn.functional, torch_name)(
        t, torch.tensor(targets), reduction=reduction), first)
    assert_close({"loss": np.float64(loss), "grad": grad}, dict(zip(["loss", "grad"], expected)), RTOL[dtype],
                 f"{loss_name} vs torch {reduction}", scale_floor=1e-3)


# ---------------------------------------------------------------------------------------------------------
# 4. threads and addresses change speed, never bits. Every shape is above the work (2e6 flops) at which the
# engine starts its threads, for the products and the row-wise passes alike.

def results_with_threads(threads, call):
    rnnext.set_num_threads(threads)
    return call()


def flat_results(out):
    """An engine call's outputs as a dict of named arrays."""
    if isinstance(out, dict):
        return out
    if isinstance(out, tuple):
        return {"loss": np.float64(out[0]), "grad": out[1]}
    return {"y": out}


def thread_calls():
    dense = dense_problem((600, 64, 301), np.float32, seed=10)
    dense64 = dense_problem((600, 64, 301), np.float64, seed=10)
    calls = {}
    for activation in ("linear", "softmax"):
        for name, p in (("float32", dense), ("float64", dense64)):
            y = _core.dense_forward(p["x"], p["kernel"], p["bias"], activation)
            calls[f"dense_forward-{activation}-{name}"] = \
                lambda p=p, activation=activation: _core.dense_forward(p["x"], p["kernel"], p["bias"], activation)
            calls[f"dense_backward-{activation}-{name}"] = \
                lambda p=p, y=y, activation=activation: _core.dense_backward(
                    p["dy"], y, p["x"], p["kernel"], activation, p["dkernel"].copy(), p["dbias"].copy())
    for dtype in DTYPES.values():
        ce = loss_problem((10, 30, 1000), dtype, "lengths", seed=11)
        calls[f"softmax_cross_entropy-{np.dtype(dtype)}"] = lambda ce=ce: _core.softmax_cross_entropy(**ce)
        first, targets = elementwise_problem((300, 2000), dtype, seed=12)
        for loss_name in ("binary_cross_entropy_with_logits", "mean_squared_error"):
            calls[f"{loss_name}-{np.dtype(dtype)}"] = \
                lambda f=getattr(_core, loss_name), a=first, b=targets: f(a, b, "sum")
    return calls


@requires_openmp
def test_threads_give_identical_bits(restore_threads):
    for name, call in thread_calls().items():
        one = flat_results(results_with_threads(1, call))
        for threads in (2, 3):
            assert_same_bits(flat_results(results_with_threads(threads, call)), one, f"{name}, {threads} threads vs 1")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_identical_rows_give_identical_bits_at_any_address(dtype):
    # C = 37 and U = 37 are odd, so the rows of one call start at every alignment; a sum or exp whose SIMD and scalar
    # paths round differently would make equal rows differ. The inputs are also offset by one element.
    row = (5 * np.random.default_rng(13).standard_normal(37)).astype(dtype)
    logits = np.empty(40 * 37 + 1, dtype=dtype)[1:].reshape(40, 37)
    logits[:] = row
    _, grad = _core.softmax_cross_entropy(logits, np.full(40, 3), reduction="sum")
    assert_same_bits({"rows": grad}, {"rows": np.broadcast_to(grad[0], grad.shape).copy()}, "cross-entropy rows")
    p = dense_problem((40, 6, 37), dtype, seed=14)
    p["x"][:] = p["x"][0]
    y = _core.dense_forward(p["x"], p["kernel"], p["bias"], "softmax")
    dx = _core.dense_backward(np.broadcast_to(p["dy"][0], y.shape).copy(), y, p["x"], p["kernel"], "softmax")["x"]
    for name, out in (("y", y), ("dx", dx)):
        assert_same_bits({name: out}, {name: np.broadcast_to(out[0], out.shape).copy()}, f"dense softmax rows: {name}")


# ---------------------------------------------------------------------------------------------------------
# 5. NaN: a NaN logit makes its own row's loss and gradient NaN and nothing else; NaN in padding is never seen

@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_nan_and_infinite_logits(dtype):
    logits = np.zeros((4, 3), dtype=dtype)
    logits[1, 2] = np.nan
    logits[2, 0] = np.inf
    logits[3] = -np.inf
    loss, grad = _core.softmax_cross_entropy(logits, np.array([0, 1, 2, 0]), mask=np.array([1, 1, 0, 0]))
    assert np.isnan(loss)
    assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(grad[0])) and not grad[2:].any()
    for rows in ([2], [3]):  # +inf - inf and -inf - (-inf) are NaN
        loss, grad = _core.softmax_cross_entropy(logits[rows], np.array([0]))
        assert np.isnan(loss) and np.all(np.isnan(grad))
    extreme = np.array([[80, -80, 0], [-1e4, 0, -np.inf]], dtype=dtype)  # exp underflows to exactly 0
    loss, grad = _core.softmax_cross_entropy(extreme, np.array([1, 1]), reduction="sum")
    assert loss == pytest.approx(160, rel=1e-6) and grad[1].tolist() == [0, 0, 0] and grad[0, :2].tolist() == [1, -1]


# ---------------------------------------------------------------------------------------------------------
# 6. bad input: a ValueError (shape, range, value) or TypeError (dtype, not an array) naming the argument

def bad_dense_calls():
    p = dense_problem((4, 3, 5), np.float64)
    y = _core.dense_forward(p["x"], p["kernel"], p["bias"])
    good = {"dy": p["dy"], "y": y, "x": p["x"], "kernel": p["kernel"]}
    forward = lambda **changes: lambda: _core.dense_forward(**{**{k: p[k] for k in ("x", "kernel", "bias")}, **changes})
    backward = lambda **changes: lambda: _core.dense_backward(**{**good, **changes})
    return {
        "x": [forward(x=p["x"][None]), forward(x=p["x"].astype(np.float16)), forward(x=p["x"].tolist()),
              backward(x=p["x"][0])],
        "kernel": [forward(kernel=p["kernel"][:2]), forward(kernel=p["kernel"][:, :0]),
                   forward(kernel=p["kernel"].astype(np.float32)), backward(kernel=p["kernel"].T)],
        "bias": [forward(bias=p["bias"][:4]), forward(bias=p["bias"].astype(np.float32))],
        "dy": [backward(dy=p["dy"][:3]), backward(dy=None)],
        "y": [backward(y=y[:, :4]), backward(y=y.astype(np.float32))],
        "dkernel": [backward(dkernel=np.zeros((3, 4))), backward(dkernel=np.zeros((5, 3)).T),
                    backward(dkernel=np.zeros((3, 5), np.float32)), backward(dkernel=np.zeros((3, 5), ">f8"))],
        "dbias": [backward(dbias=np.zeros(4)), backward(dbias=np.zeros(10)[::2])],
        "activation": [forward(activation="gelu"), backward(activation="softplus")],
    }


def bad_loss_calls():
    logits, targets = 3 * np.random.default_rng(15).standard_normal((2, 3, 4)), np.array([[0, 1, 2], [3, 0, 1]])
    ce = lambda **changes: lambda: _core.softmax_cross_entropy(**{"logits": logits, "targets": targets, **changes})
    bce = lambda *args: lambda: _core.binary_cross_entropy_with_logits(*args)
    mse = lambda *args: lambda: _core.mean_squared_error(*args)
    probs = np.full((2, 3, 4), 0.5)
    return {
        "logits": [ce(logits=logits[..., :0]), ce(logits=np.float64(1.0)), ce(logits=targets[..., None]),
                   bce(logits.astype(np.complex128), probs)],
        "targets": [ce(targets=targets[:, :2]), ce(targets=targets.astype(float)), ce(targets=np.full((2, 3), 4)),
                    ce(targets=np.full((2, 3), -1)), ce(targets=np.full((2, 3), 2**64 - 1, np.uint64)),
                    bce(logits, probs[..., :3]), bce(logits, probs + 1), bce(logits, np.where(probs, np.nan, 0)),
                    bce(logits, probs.astype(np.float32)), mse(logits, probs[0])],
        "mask": [ce(mask=np.ones((2, 4), bool)), ce(mask=np.full((2, 3), 2)), ce(mask=np.full((2, 3), np.nan)),
                 ce(mask=np.full((2, 3), "a"))],
        "lengths": [ce(lengths=np.array([1, 4])), ce(lengths=np.array([1.0, 2.0])), ce(lengths=np.ones(3, int)),
                    ce(logits=logits[0], targets=targets[0], lengths=np.ones(3, int)),
                    ce(mask=np.ones((2, 3), bool), lengths=np.ones(2, int))],
        "reduction": [ce(reduction="none"), ce(reduction=None), bce(logits, probs, "avg"), mse(logits, probs, 1)],
        "predictions": [mse(targets, targets), mse(None, probs)],
    }


def bad_cases():
    return [pytest.param(calls, name, index, id=f"{kind}-{name}-{index}")
            for kind, calls in (("dense", bad_dense_calls), ("loss", bad_loss_calls))
            for name, cases in calls().items() for index in range(len(cases))]


@pytest.mark.parametrize("calls, name, index", bad_cases())
def test_bad_input_names_the_argument(calls, name, index):
    with pytest.raises((TypeError, ValueError)) as caught:
        calls()[name][index]()
    message = str(caught.value)
    assert mentions(message, name), message
    assert message.startswith(("dense_", "softmax_cross_entropy: ", "binary_cross_entropy_with_logits: ",
                               "mean_squared_error: ")), message


def test_out_of_range_targets_are_reported_as_written():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"targets contains 18446744073709551615 at a counted position, expected "
                                         r"class indices in \[0, C=4\)"):
        _core.softmax_cross_entropy(logits, np.array([1, 2**64 - 1, 7], dtype=np.uint64))
    # not counted: never read
    loss, _ = _core.softmax_cross_entropy(logits, np.array([1, -5, 7]), mask=np.array([True, False, False]))
    assert loss == pytest.approx(np.log(4), rel=1e-15)


# ---------------------------------------------------------------------------------------------------------
# 7. the GIL is released during compute (another_thread_ran_during in conftest.py says how this is seen)

def gil_call(name, rows, repeats=20):
    """`repeats` calls of engine function `name` over `rows` rows of 256 (up to 0.5 GFLOP for Dense at 4096
    rows). Each call releases the GIL once: the waiting thread needs to be scheduled during any one of them, which
    a busy machine may not do within one short loss call."""
    rng = np.random.default_rng(18)
    x, kernel = rng.standard_normal((rows, 256)), rng.standard_normal((256, 256))
    if name == "dense_forward":
        once = lambda: _core.dense_forward(x, kernel, np.zeros(256))  # noqa: E731
    elif name == "dense_backward":
        once = lambda: _core.dense_backward(x, x, x, kernel, "tanh")  # noqa: E731
    elif name == "softmax_cross_entropy":
        once = lambda: _core.softmax_cross_entropy(x, np.zeros(rows, dtype=np.int64))  # noqa: E731
    else:
        once = lambda: getattr(_core, name)(x, np.full_like(x, 0.5))  # noqa: E731

    def calls():
        for _ in range(repeats):
            once()
    return calls


@pytest.mark.parametrize("name", ["dense_forward", "dense_backward", "softmax_cross_entropy",
                                  "binary_cross_entropy_with_logits", "mean_squared_error"])
def test_gil_released(name):
    for rows in (16, 64, 256, 1024, 4096):
        if another_thread_ran_during(gil_call(name, rows)):
            return
    pytest.fail(f"{name}: no other Python thread ran during 20 calls of up to 4096 x 256 values; is the GIL held?")


# ---------------------------------------------------------------------------------------------------------
# 8. the Python layer and losses run on the engine and keep their behaviour

def test_dense_layer_is_the_engine():
    layer = rnnext.Dense(7, activation="tanh", seed=0)
    x = np.random.default_rng(16).standard_normal((3, 5, 4)).astype(np.float32)
    y = layer.forward(x)
    assert_same_bits({"y": y.reshape(15, 7)}, {"y": _core.dense_forward(
        x.reshape(15, 4), layer.kernel.value, layer.bias.value, "tanh")}, "Dense.forward")
    layer.zero_grad()
    layer.kernel.grad += 1  # backward adds to what the gradients hold
    dy = np.ones_like(y)
    dx = layer.backward(dy)
    expected = _core.dense_backward(dy.reshape(15, 7), y.reshape(15, 7), x.reshape(15, 4), layer.kernel.value, "tanh")
    assert_close({"dx": dx.reshape(15, 4), "kernel": layer.kernel.grad, "bias": layer.bias.grad},
                 {"dx": expected["x"], "kernel": expected["kernel"] + 1, "bias": expected["bias"]}, 1e-6,
                 "Dense.backward")


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_losses_of_other_float_dtypes_keep_the_dtype(dtype):
    logits = np.random.default_rng(17).standard_normal((4, 3)).astype(dtype)
    results = [rnnext.losses.softmax_cross_entropy(logits, np.array([0, 1, 2, 0])),
               rnnext.losses.binary_cross_entropy_with_logits(logits, np.ones((4, 3))),
               rnnext.losses.mean_squared_error(logits, np.zeros((4, 3)))]
    for (loss, grad), (twin_loss, _) in zip(results, [
            reference.softmax_cross_entropy(logits.astype(np.float64), np.array([0, 1, 2, 0])),
            reference.binary_cross_entropy_with_logits(logits.astype(np.float64), np.ones((4, 3))),
            reference.mean_squared_error(logits.astype(np.float64), np.zeros((4, 3)))]):
        assert isinstance(loss, float) and grad.dtype == dtype and loss == pytest.approx(twin_loss, rel=1e-12)
