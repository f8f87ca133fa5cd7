"""Tests for rnnext.optim: hand-computed updates, exact resumption, frozen parameters, clipping, schedules, PyTorch."""
import math

import numpy as np
import pytest

from rnnext.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    ExponentialLR,
    LambdaLR,
    RMSprop,
    StepLR,
    clip_grad_norm,
    clip_grad_value,
)
from rnnext.parameter import Parameter

from conftest import assert_close

# Hand-computed values are the same float64 operations in possibly another order: a few ulps.
HAND_TOL = 1e-14
# torch.optim in float64 over 5 steps agrees to ~1e-16 (measured); 1e-12 catches any formula change
# while leaving room for a different summation order in a future torch.
TORCH_TOL = 1e-12


def run_steps(optimizer, param, grads):
    """Apply optimizer.step() once per gradient in `grads`; return the value after each step."""
    values = []
    for grad in grads:
        param.grad[...] = grad
        optimizer.step()
        values.append(param.value.copy())
    return values


def assert_trajectory(name, actual, expected, tol=HAND_TOL):
    """The value after each step within tol (absolute, no NaN or inf) of the expected one; a scalar stands for every
    entry."""
    assert len(actual) == len(expected), f"{name}: {len(actual)} steps, expected {len(expected)}"
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        assert_close(got, np.broadcast_to(want, np.shape(got)), tol, f"{name}: step {step}", absolute=True, finite=True)


def scalar_param(value=1.0):
    return Parameter(np.array([value]), name="w")


# ---------------------------------------------------------------- hand-computed updates


def test_sgd_plain():
    param = scalar_param(1.0)
    values = run_steps(SGD([param], lr=0.1), param, [0.5, -1.0])
    assert_trajectory("sgd", values, [1 - 0.1 * 0.5, 1 - 0.05 + 0.1 * 1.0])


def test_sgd_momentum_buffer_starts_at_first_gradient():
    param = scalar_param(1.0)
    values = run_steps(SGD([param], lr=0.1, momentum=0.9), param, [1.0, 2.0, 3.0])
    buffer1 = 1.0
    buffer2 = 0.9 * buffer1 + 2.0
    buffer3 = 0.9 * buffer2 + 3.0
    p1 = 1.0 - 0.1 * buffer1
    p2 = p1 - 0.1 * buffer2
    p3 = p2 - 0.1 * buffer3
    assert_trajectory("sgd momentum", values, [p1, p2, p3])


def test_sgd_nesterov():
    param = scalar_param(1.0)
    values = run_steps(SGD([param], lr=0.1, momentum=0.9, nesterov=True), param, [1.0, 2.0])
    buffer1 = 1.0
    buffer2 = 0.9 * buffer1 + 2.0
    p1 = 1.0 - 0.1 * (1.0 + 0.9 * buffer1)
    p2 = p1 - 0.1 * (2.0 + 0.9 * buffer2)
    assert_trajectory("sgd nesterov", values, [p1, p2])


def test_sgd_weight_decay():
    param = scalar_param(2.0)
    values = run_steps(SGD([param], lr=0.1, weight_decay=0.5), param, [1.0, 1.0])
    p1 = 2.0 - 0.1 * (1.0 + 0.5 * 2.0)
    p2 = p1 - 0.1 * (1.0 + 0.5 * p1)
    assert_trajectory("sgd weight decay", values, [p1, p2])


def test_adagrad():
    param = scalar_param(1.0)
    values = run_steps(Adagrad([param], lr=0.1), param, [3.0, 4.0])
    p1 = 1.0 - 0.1 * 3.0 / (math.sqrt(9.0) + 1e-10)
    p2 = p1 - 0.1 * 4.0 / (math.sqrt(9.0 + 16.0) + 1e-10)
    assert_trajectory("adagrad", values, [p1, p2])


def test_adagrad_initial_accumulator_and_eps():
    param = scalar_param(1.0)
    values = run_steps(Adagrad([param], lr=0.5, eps=1e-3, initial_accumulator_value=1.0), param, [3.0, -1.0])
    p1 = 1.0 - 0.5 * 3.0 / (math.sqrt(1.0 + 9.0) + 1e-3)
    p2 = p1 - 0.5 * -1.0 / (math.sqrt(1.0 + 9.0 + 1.0) + 1e-3)
    assert_trajectory("adagrad init", values, [p1, p2])


def test_rmsprop():
    param = scalar_param(1.0)
    values = run_steps(RMSprop([param], lr=0.01, alpha=0.9), param, [2.0, -1.0])
    square_avg1 = 0.1 * 4.0
    square_avg2 = 0.9 * square_avg1 + 0.1 * 1.0
    p1 = 1.0 - 0.01 * 2.0 / (math.sqrt(square_avg1) + 1e-8)
    p2 = p1 - 0.01 * -1.0 / (math.sqrt(square_avg2) + 1e-8)
    assert_trajectory("rmsprop", values, [p1, p2])


def test_rmsprop_momentum():
    param = scalar_param(1.0)
    values = run_steps(RMSprop([param], lr=0.01, alpha=0.9, momentum=0.5), param, [2.0, -1.0])
    buffer1 = 2.0 / (math.sqrt(0.1 * 4.0) + 1e-8)
    buffer2 = 0.5 * buffer1 + -1.0 / (math.sqrt(0.9 * 0.4 + 0.1 * 1.0) + 1e-8)
    p1 = 1.0 - 0.01 * buffer1
    p2 = p1 - 0.01 * buffer2
    assert_trajectory("rmsprop momentum", values, [p1, p2])


def test_adam_bias_correction():
    param = scalar_param(1.0)
    values = run_steps(Adam([param], lr=0.1, betas=(0.9, 0.99)), param, [2.0, -1.0, 0.5])
    m1, v1 = 0.1 * 2.0, 0.01 * 4.0
    m2, v2 = 0.9 * m1 + 0.1 * -1.0, 0.99 * v1 + 0.01 * 1.0
    m3, v3 = 0.9 * m2 + 0.1 * 0.5, 0.99 * v2 + 0.01 * 0.25
    p1 = 1.0 - 0.1 / (1 - 0.9) * m1 / (math.sqrt(v1) / math.sqrt(1 - 0.99) + 1e-8)
    p2 = p1 - 0.1 / (1 - 0.9**2) * m2 / (math.sqrt(v2) / math.sqrt(1 - 0.99**2) + 1e-8)
    p3 = p2 - 0.1 / (1 - 0.9**3) * m3 / (math.sqrt(v3) / math.sqrt(1 - 0.99**3) + 1e-8)
    assert_trajectory("adam", values, [p1, p2, p3])
    # First Adam step moves by almost exactly lr, whatever the gradient's scale.
    assert values[0][0] == pytest.approx(0.9, abs=1e-8)


def test_adam_coupled_weight_decay():
    param = scalar_param(2.0)
    values = run_steps(Adam([param], lr=0.1, betas=(0.5, 0.75), weight_decay=0.1), param, [1.0, 1.0])
    g1 = 1.0 + 0.1 * 2.0
    m1, v1 = 0.5 * g1, 0.25 * g1 * g1
    p1 = 2.0 - 0.1 / 0.5 * m1 / (math.sqrt(v1) / math.sqrt(0.25) + 1e-8)
    g2 = 1.0 + 0.1 * p1
    m2, v2 = 0.5 * m1 + 0.5 * g2, 0.75 * v1 + 0.25 * g2 * g2
    p2 = p1 - 0.1 / (1 - 0.25) * m2 / (math.sqrt(v2) / math.sqrt(1 - 0.75**2) + 1e-8)
    assert_trajectory("adam weight decay", values, [p1, p2])


def test_adamw_decoupled_weight_decay():
    param = scalar_param(2.0)
    values = run_steps(AdamW([param], lr=0.1, betas=(0.5, 0.75), weight_decay=0.1), param, [1.0, 1.0])
    m1, v1 = 0.5 * 1.0, 0.25 * 1.0
    p1 = 2.0 * (1 - 0.1 * 0.1) - 0.1 / 0.5 * m1 / (math.sqrt(v1) / math.sqrt(0.25) + 1e-8)
    m2, v2 = 0.5 * m1 + 0.5 * 1.0, 0.75 * v1 + 0.25 * 1.0
    p2 = p1 * (1 - 0.1 * 0.1) - 0.1 / (1 - 0.25) * m2 / (math.sqrt(v2) / math.sqrt(1 - 0.75**2) + 1e-8)
    assert_trajectory("adamw", values, [p1, p2])
    assert AdamW([scalar_param()]).weight_decay == 0.01


# ---------------------------------------------------------------- behaviour shared by all optimizers

OPTIMIZER_CONFIGS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (SGD, {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01}),
    (SGD, {"lr": 0.05, "weight_decay": 0.1}),
    (Adagrad, {}),
    (Adagrad, {"lr": 0.1, "eps": 1e-8, "initial_accumulator_value": 0.1, "weight_decay": 0.1}),
    (RMSprop, {}),
    (RMSprop, {"lr": 0.01, "momentum": 0.9}),
    (RMSprop, {"lr": 0.02, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "weight_decay": 0.1}),
    (Adam, {}),
    (Adam, {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
    (AdamW, {}),
    (AdamW, {"lr": 0.01, "betas": (0.5, 0.6), "weight_decay": 0.5}),
]
CONFIG_IDS = [
    f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'}"
    for cls, kwargs in OPTIMIZER_CONFIGS
]


def make_params(seed, dtype=np.float64):
    """Two trainable parameters and a frozen one in the middle, so indices and skipping are both exercised."""
    rng = np.random.default_rng(seed)
    return [
        Parameter(rng.standard_normal((3, 4)).astype(dtype), name="kernel"),
        Parameter(rng.standard_normal((2,)).astype(dtype), name="frozen", trainable=False),
        Parameter(rng.standard_normal((5,)).astype(dtype), name="bias"),
    ]


def random_gradients(seed, params, steps):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.value.dtype) for p in params] for _ in range(steps)]


def apply_gradients(optimizer, params, gradient_steps):
    for gradients in gradient_steps:
        for param, grad in zip(params, gradients):
            param.grad[...] = grad
        optimizer.step()


@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_continues_identically(cls, kwargs, tmp_path):
    params = make_params(0)
    gradient_steps = random_gradients(1, params, 6)
    optimizer = cls(params, **kwargs)
    apply_gradients(optimizer, params, gradient_steps[:3])
    snapshot = optimizer.state_dict()
    saved_values = [p.value.copy() for p in params]
    apply_gradients(optimizer, params, gradient_steps[3:])

    # Resume from disk into fresh parameters and an optimizer built with other hyperparameters:
    # everything that matters must come from the snapshot.
    np.savez(tmp_path / "optimizer.npz", **snapshot)
    resumed_params = make_params(0)
    for param, value in zip(resumed_params, saved_values):
        param.value[...] = value
    resumed = cls(resumed_params, lr=0.5)
    with np.load(tmp_path / "optimizer.npz") as loaded:
        resumed.load_state_dict(dict(loaded))
    assert resumed.step_count == 3
    apply_gradients(resumed, resumed_params, gradient_steps[3:])
    for original, continued in zip(params, resumed_params):
        assert np.array_equal(original.value, continued.value), f"{cls.__name__}: {original.name} differs after resume"


@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CONFIGS, ids=CONFIG_IDS)
def test_frozen_parameter_unchanged_and_update_in_place(cls, kwargs):
    params = make_params(2)
    frozen_before = params[1].value.copy()
    kernel_array = params[0].value
    optimizer = cls(params, **kwargs)
    apply_gradients(optimizer, params, random_gradients(3, params, 2))
    assert np.array_equal(params[1].value, frozen_before)
    assert not any(key.endswith(".1") for key in optimizer.state_dict()), "frozen parameter got optimizer state"
    assert params[0].value is kernel_array, "step() replaced the array instead of updating it in place"
    assert not np.array_equal(params[0].value, make_params(2)[0].value)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CONFIGS, ids=CONFIG_IDS)
def test_float32_parameters_stay_float32(cls, kwargs):
    params = make_params(4, dtype=np.float32)
    optimizer = cls(params, **kwargs)
    apply_gradients(optimizer, params, random_gradients(5, params, 2))
    for param in params:
        assert param.value.dtype == np.float32
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32, key


def test_state_dict_is_a_snapshot_of_plain_values():
    params = make_params(6)
    optimizer = Adam(params, lr=0.01)
    apply_gradients(optimizer, params, random_gradients(7, params, 1))
    snapshot = optimizer.state_dict()
    assert snapshot["step"] == 1 and snapshot["step.0"] == 1 and snapshot["num_params"] == 3
    assert {"lr", "beta1", "beta2", "eps", "weight_decay", "m.0", "v.0", "m.2", "v.2", "step.2"} <= set(snapshot)
    m0 = snapshot["m.0"].copy()
    apply_gradients(optimizer, params, random_gradients(8, params, 1))
    assert np.array_equal(snapshot["m.0"], m0), "state_dict arrays must be copies"


def test_zero_grad_and_lr_attribute():
    params = make_params(9)
    for param in params:
        param.grad[...] = 1.0
    optimizer = SGD(params, lr=0.1)
    optimizer.zero_grad()
    assert all(not param.grad.any() for param in params)
    optimizer.lr = 0.25
    params[0].grad[...] = 2.0
    before = params[0].value.copy()
    optimizer.step()
    assert_trajectory("lr", [params[0].value], [before - 0.25 * 2.0])
    with pytest.raises(ValueError, match="lr is -1.0"):
        optimizer.lr = -1.0


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda ps: SGD(ps, lr=-0.1), "SGD: lr is -0.1"),
        (lambda ps: SGD(ps, lr=float("nan")), "SGD: lr is nan"),
        (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), "SGD: momentum is -0.5"),
        (lambda ps: SGD(ps, lr=0.1, nesterov=True), "nesterov=True needs momentum > 0"),
        (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), "SGD: weight_decay is -1.0"),
        (lambda ps: SGD(ps, lr="fast"), "SGD: lr is 'fast'"),
        (lambda ps: Adagrad(ps, eps=-1e-10), "Adagrad: eps"),
        (lambda ps: Adagrad(ps, initial_accumulator_value=-1), "Adagrad: initial_accumulator_value"),
        (lambda ps: RMSprop(ps, alpha=1.5), "RMSprop: alpha is 1.5"),
        (lambda ps: RMSprop(ps, momentum=-0.1), "RMSprop: momentum"),
        (lambda ps: Adam(ps, betas=(1.0, 0.999)), r"Adam: betas\[0\] is 1.0"),
        (lambda ps: Adam(ps, betas=(0.9, -0.1)), r"Adam: betas\[1\] is -0.1"),
        (lambda ps: Adam(ps, betas=0.9), "Adam: betas is 0.9"),
        (lambda ps: AdamW(ps, weight_decay=-0.01), "AdamW: weight_decay"),
        (lambda ps: Adam([], lr=0.1), "params is empty"),
        (lambda ps: Adam([ps[0], ps[0]]), "more than once"),
        (lambda ps: Adam([ps[0].value]), r"params\[0\] is ndarray, expected Parameter"),
    ],
)
def test_bad_hyperparameters_raise(factory, message):
    with pytest.raises(ValueError, match=message):
        factory(make_params(10))


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    params = make_params(11)
    optimizer = Adam(params, lr=0.01)
    apply_gradients(optimizer, params, random_gradients(12, params, 1))
    good = optimizer.state_dict()

    wrong_shape = dict(good, **{"m.0": np.zeros((4, 3))})
    expected = r"'m.0' has shape \(4, 3\), expected \(3, 4\) \(the shape of params\[0\] 'kernel'\)"
    with pytest.raises(ValueError, match=expected):
        optimizer.load_state_dict(wrong_shape)
    with pytest.raises(ValueError, match="num_params is 2, expected 3"):
        optimizer.load_state_dict(dict(good, num_params=2))
    with pytest.raises(ValueError, match=r"missing keys \['beta1', 'beta2', 'eps'\]"):
        optimizer.load_state_dict(SGD(params, lr=0.1).state_dict())
    with pytest.raises(ValueError, match="unexpected key 'momentum_buffer.0'"):
        optimizer.load_state_dict(dict(good, **{"momentum_buffer.0": np.zeros((3, 4))}))
    with pytest.raises(ValueError, match="refers to parameter 7"):
        optimizer.load_state_dict(dict(good, **{"m.7": np.zeros(1)}))
    with pytest.raises(ValueError, match=r"Adam: betas\[0\] is 2.0"):
        optimizer.load_state_dict(dict(good, lr=0.5, beta1=2.0))

    after = optimizer.state_dict()
    assert after.keys() == good.keys() and after["lr"] == 0.01 and after["beta1"] == 0.9
    assert all(np.array_equal(after[key], good[key]) for key in good)


# ---------------------------------------------------------------- clipping


def clipping_params():
    params = [
        Parameter(np.zeros(2), name="a"),
        Parameter(np.zeros(1), name="b"),
        Parameter(np.zeros(3), name="frozen", trainable=False),
    ]
    params[0].grad[...] = [3.0, 4.0]
    params[1].grad[...] = [12.0]
    params[2].grad[...] = [100.0, 100.0, 100.0]
    return params


def test_clip_grad_norm_scales_to_max_norm():
    params = clipping_params()
    total = clip_grad_norm(params, 6.5)
    assert total == 13.0  # sqrt(9 + 16 + 144); the frozen parameter is left out
    factor = 6.5 / (13.0 + 1e-6)
    assert_trajectory("a", [params[0].grad], [[3.0 * factor, 4.0 * factor]])
    assert_trajectory("b", [params[1].grad], [[12.0 * factor]])
    assert np.all(params[2].grad == 100.0)


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = clipping_params()
    assert clip_grad_norm(params, 20.0) == 13.0
    assert np.array_equal(params[0].grad, [3.0, 4.0]) and params[1].grad[0] == 12.0


def test_clip_grad_norm_non_finite_is_returned_unscaled():
    params = clipping_params()
    params[1].grad[0] = np.inf
    assert clip_grad_norm(params, 1.0) == math.inf
    params[1].grad[0] = np.nan
    assert math.isnan(clip_grad_norm(params, 1.0))
    assert np.array_equal(params[0].grad, [3.0, 4.0])


def test_clip_grad_norm_float32_does_not_overflow():
    param = Parameter(np.zeros(4, dtype=np.float32))
    param.grad[...] = 1e30  # squares overflow float32, not float64
    total = clip_grad_norm([param], 1.0)
    assert total == pytest.approx(2e30, rel=1e-6)
    assert param.grad.dtype == np.float32
    assert_trajectory("clipped", [param.grad], [np.full(4, 0.5)], tol=1e-6)


def test_clip_grad_value():
    params = clipping_params()
    params[0].grad[...] = [-3.0, 0.5]
    clip_grad_value(params, 1.0)
    assert np.array_equal(params[0].grad, [-1.0, 0.5]) and params[1].grad[0] == 1.0
    assert np.all(params[2].grad == 100.0)
    with pytest.raises(ValueError, match="clip_value is -1.0"):
        clip_grad_value(params, -1.0)
    with pytest.raises(ValueError, match="max_norm is nan"):
        clip_grad_norm(params, float("nan"))


# ---------------------------------------------------------------- schedules


def scheduled_lrs(scheduler, epochs):
    lrs = [scheduler.optimizer.lr]
    for _ in range(epochs):
        scheduler.step()
        lrs.append(scheduler.optimizer.lr)
    return lrs


def test_step_lr():
    optimizer = SGD(make_params(13), lr=1.0)
    lrs = scheduled_lrs(StepLR(optimizer, step_size=3, gamma=0.5), 7)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_exponential_lr():
    optimizer = SGD(make_params(14), lr=2.0)
    lrs = scheduled_lrs(ExponentialLR(optimizer, gamma=0.5), 3)
    assert lrs == [2.0, 1.0, 0.5, 0.25]


def test_lambda_lr_applies_factor_zero_at_construction():
    optimizer = SGD(make_params(15), lr=1.0)
    warmup = LambdaLR(optimizer, lambda epoch: min(1.0, (epoch + 1) / 4))
    assert optimizer.lr == 0.25
    assert scheduled_lrs(warmup, 4) == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_scheduler_state_dict_resumes():
    optimizer = Adam(make_params(16), lr=1.0)
    scheduler = StepLR(optimizer, step_size=2, gamma=0.1)
    for _ in range(5):
        scheduler.step()
    snapshot = scheduler.state_dict()
    assert snapshot == {"base_lr": 1.0, "last_epoch": 5}

    resumed_optimizer = Adam(make_params(16), lr=1.0)
    resumed = StepLR(resumed_optimizer, step_size=2, gamma=0.1)
    resumed.load_state_dict(snapshot)
    assert resumed_optimizer.lr == optimizer.lr
    assert scheduled_lrs(resumed, 3) == scheduled_lrs(scheduler, 3)


def test_scheduler_validation():
    optimizer = SGD(make_params(17), lr=1.0)
    with pytest.raises(ValueError, match="step_size is 0"):
        StepLR(optimizer, step_size=0)
    with pytest.raises(ValueError, match="gamma is -0.5"):
        ExponentialLR(optimizer, gamma=-0.5)
    with pytest.raises(ValueError, match="lr_lambda is int"):
        LambdaLR(optimizer, 3)
    with pytest.raises(ValueError, match=r"lr_lambda\(0\) is -1.0"):
        LambdaLR(optimizer, lambda epoch: -1.0)
    with pytest.raises(ValueError, match="optimizer is list"):
        StepLR([optimizer], step_size=1)
    with pytest.raises(ValueError, match="missing keys"):
        StepLR(optimizer, step_size=1).load_state_dict({"base_lr": 1.0})


# ---------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_torch(torch, cls, kwargs):
    params = make_params(20)
    torch_params = [torch.tensor(p.value.copy(), requires_grad=p.trainable) for p in params]
    optimizer = cls(params, **kwargs)
    torch_optimizer = getattr(torch.optim, cls.__name__)([t for t in torch_params if t.requires_grad], **kwargs)

    for step, gradients in enumerate(random_gradients(21, params, 5), start=1):
        for param, torch_param, grad in zip(params, torch_params, gradients):
            param.grad[...] = grad
            if torch_param.requires_grad:
                torch_param.grad = torch.tensor(grad)
        optimizer.step()
        torch_optimizer.step()
        for param, torch_param in zip(params, torch_params):
            assert_close(param.value, torch_param.detach().numpy(), TORCH_TOL,
                         f"{cls.__name__}: {param.name} step {step} vs torch", absolute=True, finite=True)


def test_clip_grad_norm_matches_torch(torch):
    params = make_params(22)
    gradients = random_gradients(23, params, 1)[0]
    torch_params = []
    for param, grad in zip(params, gradients):
        param.grad[...] = grad
        torch_param = torch.tensor(param.value.copy(), requires_grad=param.trainable)
        if param.trainable:
            torch_param.grad = torch.tensor(grad)
        torch_params.append(torch_param)
    total = clip_grad_norm(params, 1.5)
    torch_total = torch.nn.utils.clip_grad_norm_([t for t in torch_params if t.requires_grad], 1.5)
    assert total == pytest.approx(torch_total.item(), rel=TORCH_TOL)
    for param, torch_param in zip(params, torch_params):
        if param.trainable:
            assert_close(param.grad, torch_param.grad.numpy(), TORCH_TOL, f"{param.name}: clipped grad vs torch",
                         absolute=True, finite=True)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda opt: StepLR(opt, step_size=3, gamma=0.3),
            lambda torch, opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.3),
        ),
        (
            lambda opt: ExponentialLR(opt, gamma=0.9),
            lambda torch, opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9),
        ),
        (
            lambda opt: LambdaLR(opt, lambda epoch: 1 / (1 + epoch)),
            lambda torch, opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (1 + epoch)),
        ),
    ],
    ids=["StepLR", "ExponentialLR", "LambdaLR"],
)
def test_schedules_match_torch(torch, ours, theirs):
    scheduler = ours(SGD(make_params(24), lr=0.5))
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    torch_scheduler = theirs(torch, torch_optimizer)
    for epoch in range(10):
        assert scheduler.optimizer.lr == pytest.approx(torch_scheduler.get_last_lr()[0], rel=1e-14), f"epoch {epoch}"
        torch_optimizer.step()  # torch warns when the scheduler steps before the optimizer
        torch_scheduler.step()
        scheduler.step()
