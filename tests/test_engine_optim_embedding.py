"""The engine's optimizer updates, gradient-list kernels (norm, clipping, zeroing) and embedding lookup: against their
NumPy twins in rnnext.reference, against torch, across thread counts, and on bad input."""
import numpy as np
import pytest

import rnnext
from rnnext import _core, optim, reference
from rnnext.parameter import Parameter

from conftest import DTYPES, RTOL, assert_close, assert_same_bits, mentions, requires_openmp

# Every option of every update, as the engine's keyword arguments.
OPTIMIZER_CASES = {
    "sgd": ("sgd", dict(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)),
    "sgd-momentum": ("sgd", dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)),
    "sgd-nesterov": ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0)),
    "sgd-nesterov-decay": ("sgd", dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01)),
    "sgd-decay": ("sgd", dict(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.1)),
    "adagrad": ("adagrad", dict(lr=0.01, eps=1e-10, weight_decay=0.0)),
    "adagrad-decay": ("adagrad", dict(lr=0.1, eps=1e-8, weight_decay=0.1)),
    "rmsprop": ("rmsprop", dict(lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0)),
    "rmsprop-momentum-decay": ("rmsprop", dict(lr=0.02, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.1)),
    "adam": ("adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False)),
    "adam-decay": ("adam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.1,
                                decoupled_weight_decay=False)),
    "adamw": ("adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True)),
    "adamw-beta1-0": ("adam", dict(lr=0.01, beta1=0.0, beta2=0.6, eps=1e-8, weight_decay=0.5,
                                   decoupled_weight_decay=True)),
}
# Adagrad's accumulator starts at initial_accumulator_value (0.1 here, to exercise a non-zero start).
INITIAL_SUM = 0.1
STEPS = 4


def state_names(kind, options):
    names = {"sgd": [], "adagrad": ["squared_sum"], "rmsprop": ["square_avg"], "adam": ["m", "v"]}[kind]
    return names + (["momentum_buffer"] if kind in ("sgd", "rmsprop") and options["momentum"] else [])


def run_updates(module, case, value, grads):
    """{"value", state...} after one update per gradient in `grads`, by module's (rnnext._core or the twins')
    update of `case`, from zero state."""
    kind, options = OPTIMIZER_CASES[case]
    value = value.copy()
    state = {name: np.full_like(value, INITIAL_SUM if name == "squared_sum" else 0.0)
             for name in state_names(kind, options)}
    for step, grad in enumerate(grads, start=1):
        if kind == "sgd":
            module.sgd_update(value, grad, state.get("momentum_buffer"), initialize_buffer=step == 1, **options)
        elif kind == "adagrad":
            module.adagrad_update(value, grad, state["squared_sum"], **options)
        elif kind == "rmsprop":
            module.rmsprop_update(value, grad, state["square_avg"], state.get("momentum_buffer"), **options)
        else:
            module.adam_update(value, grad, state["m"], state["v"], step, **options)
    return {"value": value, **state}


def problem(shape, dtype, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    value = rng.standard_normal(shape).astype(dtype)
    return value, [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


# Engine and twin apply the same IEEE operations in the same order (the engine is compiled without fused
# multiply-adds), so the updates agree bit for bit, not just to the per-dtype tolerances of the cells.
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
@pytest.mark.parametrize("shape", [(), (7,), (3, 50, 41)], ids=["0-d", "7", "3x50x41"])
def test_update_matches_twin_bitwise(case, dtype, shape):
    value, grads = problem(shape, dtype)
    assert_same_bits(run_updates(_core, case, value, grads), run_updates(reference, case, value, grads), case)


# The optimizer classes drive the engine with their own hyperparameters and state: the same bits as the twin driven
# by hand, state dict included (its keys are unchanged from the NumPy optimizers').
CLASS_CASES = [
    (optim.SGD, dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01), "sgd-nesterov-decay",
     {"momentum_buffer": "momentum_buffer"}),
    (optim.Adagrad, dict(lr=0.1, eps=1e-8, weight_decay=0.1, initial_accumulator_value=INITIAL_SUM), "adagrad-decay",
     {"sum": "squared_sum"}),
    (optim.RMSprop, dict(lr=0.02, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.1), "rmsprop-momentum-decay",
     {"square_avg": "square_avg", "momentum_buffer": "momentum_buffer"}),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1), "adam-decay", {"m": "m", "v": "v"}),
    (optim.AdamW, dict(lr=0.01, betas=(0.0, 0.6), weight_decay=0.5), "adamw-beta1-0", {"m": "m", "v": "v"}),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("cls, kwargs, case, keys", CLASS_CASES, ids=[c[0].__name__ for c in CLASS_CASES])
def test_optimizer_classes_match_twin_bitwise(cls, kwargs, case, keys, dtype):
    value, grads = problem((4, 6), dtype, seed=1)
    param = Parameter(value.copy(), name="w")
    optimizer = cls([param], **kwargs)
    for grad in grads:
        param.grad[...] = grad
        optimizer.step()
    expected = run_updates(reference, case, value, grads)
    state = optimizer.state_dict()
    actual = {"value": param.value, **{twin_name: state[f"{key}.0"] for key, twin_name in keys.items()}}
    assert_same_bits(actual, expected, cls.__name__)


# ---------------------------------------------------------------------------------------------------------
# gradient lists: norm, clipping, zeroing

def gradient_list(seed=0, scale=1.0):
    """float32 and float64 arrays mixed, with a 0-d and an empty one; over 65536 elements in all, so the engine
    runs the list on several threads and cuts the large arrays into several blocks."""
    rng = np.random.default_rng(seed)
    shapes_and_dtypes = [((300, 301), np.float32), ((70001,), np.float64), ((), np.float32), ((0, 3), np.float64),
                         ((5,), np.float32)]
    return [np.array(scale * rng.standard_normal(shape), dtype=dtype) for shape, dtype in shapes_and_dtypes]


def copies(arrays):
    return [a.copy() for a in arrays]


def named(arrays):
    return {f"grads[{k}]": a for k, a in enumerate(arrays)}


# The norm is summed in float64 on both sides in different orders (blocks of 16 lanes against NumPy's pairwise
# sum): about 1e-15 relative; RTOL[float64] leaves orders of margin. The clipped gradients are scaled by factors that
# differ by that much, so they agree to their own dtype's rounding.
@pytest.mark.parametrize("max_norm", [1.0, 1e9], ids=["clips", "does-not-clip"])
def test_norm_and_clipping_match_twin(max_norm):
    grads = gradient_list()
    expected_norm = reference.grad_norm(grads)
    assert abs(_core.grad_norm(grads) - expected_norm) <= RTOL[np.float64] * expected_norm
    engine, twin = copies(grads), copies(grads)
    norm = _core.clip_grad_norm(engine, max_norm)
    assert norm == _core.grad_norm(grads) and abs(reference.clip_grad_norm(twin, max_norm) - norm) <= 1e-10 * norm
    for k, (a, e) in enumerate(zip(engine, twin)):
        assert_close(a, e, RTOL[a.dtype.type], f"clip_grad_norm grads[{k}]")
    if max_norm > expected_norm:
        assert_same_bits(named(engine), named(grads), "unclipped")


def test_non_finite_norm_scales_nothing():
    for bad in (np.inf, -np.inf, np.nan):
        grads = gradient_list()
        grads[1][17] = bad
        before = copies(grads)
        norm = _core.clip_grad_norm(grads, 1.0)
        assert (np.isnan(norm) if np.isnan(bad) else norm == np.inf), f"{bad}: norm {norm}"
        with np.errstate(invalid="ignore"):  # the report subtracts inf from inf
            assert_same_bits(named(grads), named(before), f"gradients with {bad}")


def test_float32_squares_do_not_overflow():
    grads = [np.full(4, 1e30, np.float32)]
    assert _core.grad_norm(grads) == pytest.approx(2e30, rel=1e-7)


@pytest.mark.parametrize("clip_value", [0.0, 0.5])
def test_clip_value_and_zero_match_twin_bitwise(clip_value):
    grads = gradient_list()
    grads[0][0, :6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -0.25]  # NaN stays, zeros keep NumPy's signs
    engine, twin = copies(grads), copies(grads)
    _core.clip_grad_value(engine, clip_value)
    reference.clip_grad_value(twin, clip_value)
    assert_same_bits(named(engine), named(twin), f"clip_grad_value {clip_value}")
    _core.zero_grads(engine)
    reference.zero_grads(twin)
    assert_same_bits(named(engine), named(twin), "zero_grads")


# ---------------------------------------------------------------------------------------------------------
# embedding

def embedding_problem(dtype, V=1000, D=40, ids_shape=(64, 50), seed=0):
    """Ids drawn with many repeats (about half of them among the first 20 rows, as frequent words are) and some
    padding (row 0); K * D = 128000 elements, enough for several threads."""
    rng = np.random.default_rng(seed)
    frequent = rng.integers(0, 20, size=ids_shape)
    ids = np.where(rng.random(ids_shape) < 0.5, frequent, rng.integers(0, V, size=ids_shape))
    table = rng.standard_normal((V, D)).astype(dtype)
    table_grad = rng.standard_normal((V, D)).astype(dtype)  # backward accumulates: start from non-zero
    dy = rng.standard_normal(ids_shape + (D,)).astype(dtype)
    return table, table_grad, dy, ids


@pytest.mark.parametrize("padding_idx", [None, 0, 7])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_embedding_matches_twin_and_add_at_bitwise(dtype, padding_idx):
    table, table_grad, dy, ids = embedding_problem(dtype, V=60, D=5, ids_shape=(7, 9))
    assert_same_bits({"y": _core.embedding_forward(table, ids)}, {"y": reference.embedding_forward(table, ids)},
                     "forward")
    engine, twin, add_at = table_grad.copy(), table_grad.copy(), table_grad.copy()
    _core.embedding_backward(engine, dy, ids, padding_idx)
    reference.embedding_backward(twin, dy, ids, padding_idx)
    keep = ids != padding_idx
    np.add.at(add_at, ids[keep], dy[keep])  # what Embedding.backward used before: the same additions in order
    assert_same_bits({"table_grad": engine, "add_at": engine}, {"table_grad": twin, "add_at": add_at}, "backward")


def test_embedding_out_and_integer_dtypes():
    table, _, _, ids = embedding_problem(np.float32, V=50, D=3, ids_shape=(4, 5))
    out = np.empty((4, 5, 3), np.float32)
    assert _core.embedding_forward(table, ids, out=out) is out
    for dtype in (np.int8, np.uint16, np.int32, np.uint64):
        assert_same_bits({"y": _core.embedding_forward(table, ids.astype(dtype))}, {"y": out}, np.dtype(dtype).name)
    assert _core.embedding_forward(table, np.zeros((2, 0), np.int64)).shape == (2, 0, 3)


# ---------------------------------------------------------------------------------------------------------
# against torch

def torch_optimizer(torch, case, params):
    kind, o = OPTIMIZER_CASES[case]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                               weight_decay=o["weight_decay"])
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=o["lr"], eps=o["eps"], weight_decay=o["weight_decay"],
                                   initial_accumulator_value=INITIAL_SUM)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=o["lr"], alpha=o["alpha"], eps=o["eps"], momentum=o["momentum"],
                                   weight_decay=o["weight_decay"])
    cls = torch.optim.AdamW if o["decoupled_weight_decay"] else torch.optim.Adam
    return cls(params, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"])


# torch orders some operations differently (addcdiv, sqrt of the bias correction): float64 agrees to ~1e-16 and
# float32 to a few ulp of the values (O(1)), so the per-dtype tolerances of the cells hold with wide margins.
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_update_matches_torch_optim(torch, case, dtype):
    value, grads = problem((5, 8), dtype, seed=2)
    tensor = torch.tensor(value.copy(), requires_grad=True)
    optimizer = torch_optimizer(torch, case, [tensor])
    for grad in grads:
        tensor.grad = torch.tensor(grad)
        optimizer.step()
    assert_close(run_updates(_core, case, value, grads)["value"], tensor.detach().numpy(), RTOL[dtype],
                 f"{case} vs torch", scale_floor=1.0)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_clip_grad_norm_matches_torch(torch, dtype):
    grads = [g.astype(dtype) for g in gradient_list(seed=3)]
    tensors = [torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                           requires_grad=True) for g in grads]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = torch.tensor(grad.copy())
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 2.0).item()
    norm = _core.clip_grad_norm(grads, 2.0)
    # torch sums the squares in the gradients' dtype: float32 rounding for the float32 runs
    assert abs(norm - torch_norm) <= RTOL[dtype] * norm
    assert_close(named(grads), named([t.grad.numpy() for t in tensors]), RTOL[dtype], "clipped vs torch")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_matches_torch(torch, dtype, padding_idx):
    table, _, dy, ids = embedding_problem(dtype, V=30, D=6, ids_shape=(5, 7))
    weight = torch.tensor(table.copy(), requires_grad=True)
    y = torch.nn.functional.embedding(torch.tensor(ids), weight, padding_idx=padding_idx)
    y.backward(torch.tensor(dy))
    assert_same_bits({"y": _core.embedding_forward(table, ids)}, {"y": y.detach().numpy()}, "forward vs torch")
    table_grad = np.zeros_like(table)
    _core.embedding_backward(table_grad, dy, ids, padding_idx)
    assert_close(table_grad, weight.grad.numpy(), RTOL[dtype], "table_grad vs torch")


# ---------------------------------------------------------------------------------------------------------
# thread counts: every kernel bitwise the same on 1, 2 and 3 threads, at sizes where the engine splits the work

def every_kernel(dtype):
    """{kernel: its outputs by name} from one run of every kernel, on inputs large enough to be split."""
    results = {}
    value, grads = problem((200003,), dtype, seed=4, steps=2)
    for case in ("sgd-nesterov-decay", "adagrad-decay", "rmsprop-momentum-decay", "adam-decay", "adamw"):
        results[case] = run_updates(_core, case, value, grads)
    grads = gradient_list(seed=5)
    results["grad_norm"] = {"norm": np.float64(_core.grad_norm(grads))}
    clipped = copies(grads)
    results["clip_grad_norm"] = {"norm": np.float64(_core.clip_grad_norm(clipped, 1.0)), **named(clipped)}
    _core.clip_grad_value(clipped, 1e-3)
    results["clip_grad_value"] = named(clipped)
    table, table_grad, dy, ids = embedding_problem(dtype)
    results["embedding_forward"] = {"y": _core.embedding_forward(table, ids)}
    _core.embedding_backward(table_grad, dy, ids, 0)
    results["embedding_backward"] = {"table_grad": table_grad}
    return results


@requires_openmp
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_every_kernel_is_bitwise_the_same_for_any_thread_count(restore_threads, dtype):
    runs = {}
    for threads in (1, 2, 3):
        rnnext.set_num_threads(threads)
        runs[threads] = every_kernel(dtype)
    for threads in (2, 3):
        for kernel, outputs in runs[1].items():
            assert_same_bits(runs[threads][kernel], outputs, f"{kernel}: {threads} threads vs 1")


def test_zero_grads_on_threads(restore_threads):
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        grads = gradient_list(seed=6)
        _core.zero_grads(grads)
        assert not any(g.any() for g in grads) and all(not np.signbit(g).any() for g in grads)


# ---------------------------------------------------------------------------------------------------------
# bad input: an error naming the argument

def update_call(case, dtype=np.float32, **changes):
    """A call of case's update with one argument replaced (or removed with None) by `changes`."""
    kind, options = OPTIMIZER_CASES[case]
    value, (grad,) = problem((3, 4), dtype, steps=1)
    kwargs = {"value": value, "grad": grad, **options}
    for name in state_names(kind, options):
        kwargs[name] = np.zeros_like(value)
    if kind == "sgd":
        kwargs.setdefault("momentum_buffer", None)
        kwargs["initialize_buffer"] = False
    if kind == "rmsprop":
        kwargs.setdefault("momentum_buffer", None)
    if kind == "adam":
        kwargs["step"] = 1
    kwargs.update(changes)
    return lambda: getattr(_core, f"{kind}_update")(**kwargs)


F32 = np.zeros((3, 4), np.float32)
BAD_UPDATES = [
    ("sgd", {"grad": np.zeros((4, 3), np.float32)}, ValueError, "grad"),
    ("sgd-momentum", {"momentum_buffer": np.zeros(12, np.float32)}, ValueError, "momentum_buffer"),
    ("sgd-momentum", {"momentum_buffer": None}, ValueError, "momentum_buffer"),
    ("sgd", {"momentum_buffer": F32.copy()}, ValueError, "momentum_buffer"),
    ("sgd", {"nesterov": True}, ValueError, "nesterov"),
    ("sgd", {"lr": -0.1}, ValueError, "lr"),
    ("sgd", {"value": np.zeros((4, 3), np.float32).T}, ValueError, "value"),  # not C-contiguous: no in-place update
    ("sgd", {"value": np.zeros((3, 4), np.int64)}, TypeError, "value"),
    ("adagrad", {"grad": np.zeros((3, 4), np.float64)}, TypeError, "grad"),
    ("adagrad", {"squared_sum": np.zeros((3, 5), np.float32)}, ValueError, "squared_sum"),
    ("rmsprop", {"square_avg": np.zeros((3, 4), np.float64)}, TypeError, "square_avg"),
    ("rmsprop", {"alpha": 1.5}, ValueError, "alpha"),
    ("adam", {"m": np.zeros((3, 8), np.float32)[:, ::2]}, ValueError, "m"),  # not C-contiguous
    ("adam", {"v": np.zeros((2, 3, 4), np.float32)}, ValueError, "v"),
    ("adam", {"step": 0}, ValueError, "step"),
    ("adam", {"beta2": 1.0}, ValueError, "beta2"),
]


@pytest.mark.parametrize("case, changes, error, name", BAD_UPDATES,
                         ids=[f"{case}-{name}-{error.__name__}" for case, _, error, name in BAD_UPDATES])
def test_bad_update_arguments_are_named(case, changes, error, name):
    # Wrong dtypes are TypeErrors and wrong shapes or values ValueErrors, as in the cells' bindings.
    with pytest.raises(error) as caught:
        update_call(case, **changes)()
    assert mentions(str(caught.value), name), caught.value


@pytest.mark.parametrize("case", ["sgd-momentum", "adagrad", "rmsprop-momentum-decay", "adam"])
def test_read_only_state_is_refused(case):
    read_only = F32.copy()
    read_only.flags.writeable = False
    kind, options = OPTIMIZER_CASES[case]
    for name in ["value"] + state_names(kind, options):
        with pytest.raises(ValueError, match=f"{name} is updated in place"):
            update_call(case, **{name: read_only})()


def test_bad_gradient_lists_are_named():
    good = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match=r"clip_grad_norm: grads\[1\] must be a NumPy array"):
        _core.clip_grad_norm([good, [1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match=r"zero_grads: grads\[0\] has dtype int32"):
        _core.zero_grads([np.zeros(3, np.int32)])
    with pytest.raises(ValueError, match=r"clip_grad_value: grads\[1\] is updated in place"):
        _core.clip_grad_value([good, np.zeros((4, 4))[:, 0]], 1.0)
    with pytest.raises(TypeError, match="grad_norm: grads must be a list"):
        _core.grad_norm(good)
    with pytest.raises(ValueError, match="max_norm is -1.0"):
        _core.clip_grad_norm([good], -1.0)
    assert _core.grad_norm([np.ones((4, 4))[:, 0]]) == 2.0  # only read: a strided array is fine


def test_bad_embedding_arguments_are_named():
    table = np.zeros((10, 3), np.float32)
    ids = np.array([[1, 2], [3, 9]])
    dy = np.zeros((2, 2, 3), np.float32)
    for bad, shown in ((10, "10"), (-1, "-1"), (np.uint64(2**63), "9223372036854775808")):
        bad_ids = ids.astype(np.uint64 if isinstance(bad, np.uint64) else np.int64)
        bad_ids[1, 0] = bad
        for call in (lambda: _core.embedding_forward(table, bad_ids),
                     lambda: _core.embedding_backward(table.copy(), dy, bad_ids)):
            with pytest.raises(ValueError, match=rf"ids contains {shown}, expected ids in \[0, V=10\)"):
                call()
    with pytest.raises(TypeError, match="ids has dtype float64"):
        _core.embedding_forward(table, ids.astype(np.float64))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\), expected \(2, 2, D=3\)"):
        _core.embedding_backward(table.copy(), dy[0], ids)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        _core.embedding_backward(table.copy(), dy.astype(np.float64), ids)
    with pytest.raises(ValueError, match=r"padding_idx is 10, expected None or an integer in \[0, V=10\)"):
        _core.embedding_backward(table.copy(), dy, ids, 10)
    with pytest.raises(ValueError, match=r"table has shape \(10,\), expected \(V, D\)"):
        _core.embedding_forward(table[:, 0], ids)
    with pytest.raises(ValueError, match="table_grad is updated in place"):
        _core.embedding_backward(np.zeros((3, 10), np.float32).T, dy, ids)
    with pytest.raises(ValueError, match=r"out has shape \(2, 2\), expected \(2, 2, D=3\)"):
        _core.embedding_forward(table, ids, out=np.zeros((2, 2), np.float32))


def test_optimizer_step_refuses_a_gradient_of_another_dtype():
    param = Parameter(np.zeros(3, np.float32), name="w")
    param.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"SGD.step: params\[0\] 'w' has value of dtype float32 and grad of dtype "
                                         r"float64, expected both float32 or both float64"):
        optim.SGD([param], lr=0.1).step()
