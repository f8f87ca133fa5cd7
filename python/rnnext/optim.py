"""Optimizers, gradient clipping and learning-rate schedules over Parameter objects, with PyTorch semantics.

Usage mirrors torch.optim:

    opt = Adam(params, lr=1e-3)
    for batch in data:
        opt.zero_grad()
        ...                       # backward accumulates into p.grad
        clip_grad_norm(params, 5.0)
        opt.step()

`step()` updates `p.value` in place (views held by layers stay valid) from `p.grad`, skipping parameters
with `trainable=False`. The update formulas are those of torch.optim with default flags (no amsgrad,
centered, maximize, foreach or lr_decay). Each parameter's update is one pass of the engine over its value,
gradient and state (cpp/rnnext/optim.h), on the engine's threads; its NumPy twin in rnnext.reference gives the
same bits. Parameters must be float32 or float64, with a gradient of the value's dtype.

`state_dict()` returns plain numbers and NumPy arrays (copies) with keys "lr", the other hyperparameters,
"step" (number of step() calls), "num_params", and per-parameter entries "<name>.<index>" such as "m.0"
and "v.0", indexed by position in `params`. Per-parameter state is created on a parameter's first
update, so a never-updated parameter has no entries. The dict survives `np.savez`/`np.load`, and
`load_state_dict()` restores hyperparameters too, so a resumed run continues bit for bit.
"""
from __future__ import annotations

import re

import numpy as np

from . import _core
from .parameter import Parameter
from .validation import FLOAT_DTYPES, check_bool, check_float, check_int, check_rate, scalar

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "clip_grad_value",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "LambdaLR",
]

_PER_PARAM_KEY = re.compile(r"^([A-Za-z_]+)\.(\d+)$")


class Optimizer:
    """Base class: holds the parameter list, lr, the step counter and per-parameter state.

    Subclasses set `_hyperparameters` (names saved in the state dict besides lr), `_array_state`
    (per-parameter arrays, shaped like the parameter) and `_count_state` (per-parameter integers),
    and implement `_configure` (validate and set hyperparameters) and `_update`.
    """

    _hyperparameters: tuple = ()
    _array_state: tuple = ()
    _count_state: tuple = ()

    def __init__(self, params, lr: float):
        self.params = list(params)
        name = type(self).__name__
        if not self.params:
            raise ValueError(f"{name}: params is empty, expected at least one Parameter")
        for index, param in enumerate(self.params):
            if not isinstance(param, Parameter):
                raise ValueError(f"{name}: params[{index}] is {type(param).__name__}, expected Parameter")
        if len({id(param) for param in self.params}) != len(self.params):
            # The same array updated twice per step would silently double its learning rate.
            raise ValueError(f"{name}: params contains the same Parameter more than once")
        self.lr = lr
        self.step_count = 0
        self.state: dict = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float(type(self).__name__, "lr", value, 0.0)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (frozen ones too, so stale gradients never linger)."""
        _core.zero_grads([param.grad for param in self.params])

    def step(self) -> None:
        """Apply one update to every trainable parameter from its current gradient."""
        for index, param in enumerate(self.params):
            if not param.trainable:
                continue
            if param.grad.shape != param.value.shape:
                raise ValueError(
                    f"{type(self).__name__}.step: params[{index}] {param.name!r} has grad of shape "
                    f"{param.grad.shape}, expected the value's shape {param.value.shape}"
                )
            if param.value.dtype not in FLOAT_DTYPES or param.grad.dtype != param.value.dtype:
                raise ValueError(
                    f"{type(self).__name__}.step: params[{index}] {param.name!r} has value of dtype "
                    f"{param.value.dtype} and grad of dtype {param.grad.dtype}, expected both float32 or both float64"
                )
            self._update(index, param)
        self.step_count += 1

    def state_dict(self) -> dict:
        """Snapshot of hyperparameters, step counter and per-parameter state (arrays are copies)."""
        snapshot = {"lr": self.lr, "step": self.step_count, "num_params": len(self.params)}
        for name in self._hyperparameters:
            snapshot[name] = getattr(self, name)
        for key, value in self.state.items():
            snapshot[key] = value.copy() if isinstance(value, np.ndarray) else value
        return snapshot

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a `state_dict()` snapshot, including hyperparameters; nothing changes if it is invalid.

        Accepts the dict as returned, or after a round trip through np.savez/np.load (0-d arrays).
        """
        name = f"{type(self).__name__}.load_state_dict"
        required = ("lr", "step", "num_params") + self._hyperparameters
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise ValueError(f"{name}: missing keys {missing} (was it saved by a different optimizer?)")
        num_params = check_int(name, "num_params", state_dict["num_params"], 0, integral_floats=True)
        if num_params != len(self.params):
            raise ValueError(
                f"{name}: num_params is {num_params}, expected {len(self.params)} (the number of params)"
            )

        new_state = {}
        for key, value in state_dict.items():
            if key in required:
                continue
            match = _PER_PARAM_KEY.match(key)
            if match is None or match.group(1) not in self._array_state + self._count_state:
                raise ValueError(f"{name}: unexpected key {key!r} for {type(self).__name__}")
            index = int(match.group(2))
            if index >= len(self.params):
                raise ValueError(
                    f"{name}: key {key!r} refers to parameter {index}, expected an index < {len(self.params)}"
                )
            if match.group(1) in self._count_state:
                new_state[key] = check_int(name, key, value, 1, integral_floats=True)
                continue
            param = self.params[index]
            value = np.asarray(value)
            if value.shape != param.value.shape:
                raise ValueError(
                    f"{name}: {key!r} has shape {value.shape}, expected {param.value.shape} "
                    f"(the shape of params[{index}] {param.name!r})"
                )
            # A C-contiguous copy: later steps update it in place, never the caller's arrays.
            new_state[key] = np.array(value, dtype=param.value.dtype, order="C")

        hyperparameters = {key: scalar(state_dict[key]) for key in self._hyperparameters}
        step_count = check_int(name, "step", state_dict["step"], 0, integral_floats=True)
        lr = check_float(name, "lr", state_dict["lr"], 0.0)
        # Validate everything before assigning anything, so a bad dict leaves the optimizer untouched.
        self._configure(**hyperparameters)
        self.lr = lr
        self.step_count = step_count
        self.state = new_state

    def _configure(self, **hyperparameters) -> None:
        raise NotImplementedError

    def _update(self, index: int, param: Parameter) -> None:
        raise NotImplementedError

    def _buffer(self, key: str, param: Parameter, fill: float = 0.0) -> np.ndarray:
        """Per-parameter array `key`, created filled with `fill` on first use."""
        if key not in self.state:
            self.state[key] = np.full_like(param.value, fill)
        return self.state[key]

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in ("lr",) + self._hyperparameters)
        return f"{type(self).__name__}({len(self.params)} params, {settings})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    torch.optim.SGD with dampening=0:
        g = grad + weight_decay * p
        buf = g on the first update, else momentum * buf + g
        g = g + momentum * buf if nesterov else buf          (only when momentum > 0)
        p -= lr * g
    """

    _hyperparameters = ("momentum", "nesterov", "weight_decay")
    _array_state = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._configure(momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def _configure(self, momentum, nesterov, weight_decay) -> None:
        momentum = check_float("SGD", "momentum", momentum, 0.0)
        weight_decay = check_float("SGD", "weight_decay", weight_decay, 0.0)
        nesterov = check_bool("SGD", "nesterov", nesterov)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, index: int, param: Parameter) -> None:
        buffer, first_update = None, False
        if self.momentum:
            key = f"momentum_buffer.{index}"
            first_update = key not in self.state
            if first_update:
                self.state[key] = np.empty_like(param.value)  # the update sets it to the first gradient
            buffer = self.state[key]
        _core.sgd_update(param.value, param.grad, buffer, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                         weight_decay=self.weight_decay, initialize_buffer=first_update)


class Adagrad(Optimizer):
    """Adagrad: per-element step lr / (sqrt(sum of squared gradients) + eps).

    torch.optim.Adagrad with lr_decay=0:
        g = grad + weight_decay * p
        sum += g * g                      (sum starts at initial_accumulator_value)
        p -= lr * g / (sqrt(sum) + eps)

    min-char-rnn (the course's optimizer) is close but not identical: it uses lr=0.1 and
    p -= lr * g / sqrt(sum + 1e-8), with eps inside the square root. The two differ only where the
    accumulated sum is comparable to eps (tiny or zero gradients); torch's eps=1e-10 default is smaller still.
    """

    _hyperparameters = ("eps", "initial_accumulator_value", "weight_decay")
    _array_state = ("sum",)

    def __init__(
        self, params, lr: float = 0.01, eps: float = 1e-10, initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self._configure(eps=eps, initial_accumulator_value=initial_accumulator_value, weight_decay=weight_decay)

    def _configure(self, eps, initial_accumulator_value, weight_decay) -> None:
        # Check all, then assign all, so a failed load_state_dict leaves the optimizer as it was.
        eps = check_float("Adagrad", "eps", eps, 0.0)
        initial_accumulator_value = check_float(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0
        )
        weight_decay = check_float("Adagrad", "weight_decay", weight_decay, 0.0)
        self.eps, self.initial_accumulator_value, self.weight_decay = eps, initial_accumulator_value, weight_decay

    def _update(self, index: int, param: Parameter) -> None:
        squared_sum = self._buffer(f"sum.{index}", param, fill=self.initial_accumulator_value)
        _core.adagrad_update(param.value, param.grad, squared_sum, lr=self.lr, eps=self.eps,
                             weight_decay=self.weight_decay)


class RMSprop(Optimizer):
    """RMSprop: divide by a running root-mean-square of the gradient.

    torch.optim.RMSprop with centered=False:
        g = grad + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g     (starts at 0)
        step = g / (sqrt(square_avg) + eps)                       (eps outside the sqrt)
        buf = momentum * buf + step; p -= lr * buf                 (momentum > 0, buf starts at 0)
        p -= lr * step                                             (momentum == 0)
    """

    _hyperparameters = ("alpha", "eps", "momentum", "weight_decay")
    _array_state = ("square_avg", "momentum_buffer")

    def __init__(
        self, params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self._configure(alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)

    def _configure(self, alpha, eps, momentum, weight_decay) -> None:
        alpha = check_float("RMSprop", "alpha", alpha, 0.0)
        if alpha > 1:
            raise ValueError(f"RMSprop: alpha is {alpha}, expected a value in [0, 1]")
        eps = check_float("RMSprop", "eps", eps, 0.0)
        momentum = check_float("RMSprop", "momentum", momentum, 0.0)
        weight_decay = check_float("RMSprop", "weight_decay", weight_decay, 0.0)
        self.alpha, self.eps, self.momentum, self.weight_decay = alpha, eps, momentum, weight_decay

    def _update(self, index: int, param: Parameter) -> None:
        square_avg = self._buffer(f"square_avg.{index}", param)
        buffer = self._buffer(f"momentum_buffer.{index}", param) if self.momentum else None
        _core.rmsprop_update(param.value, param.grad, square_avg, buffer, lr=self.lr, alpha=self.alpha, eps=self.eps,
                             momentum=self.momentum, weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam with bias correction and optional coupled L2 weight decay.

    torch.optim.Adam with amsgrad=False, for the k-th update of a parameter:
        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g     (both start at 0)
        p -= lr / (1 - beta1**k) * m / (sqrt(v) / sqrt(1 - beta2**k) + eps)

    k counts the updates this parameter received (state "step.<index>"), not optimizer steps,
    so a parameter thawed late starts its bias correction afresh, as in torch.
    """

    _hyperparameters = ("beta1", "beta2", "eps", "weight_decay")
    _array_state = ("m", "v")
    _count_state = ("step",)
    _decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        beta1, beta2 = _unpack_betas(type(self).__name__, betas)
        self._configure(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)

    @property
    def betas(self) -> tuple:
        return (self.beta1, self.beta2)

    def _configure(self, beta1, beta2, eps, weight_decay) -> None:
        name = type(self).__name__
        beta1 = check_rate(name, "betas[0]", beta1)
        beta2 = check_rate(name, "betas[1]", beta2)
        eps = check_float(name, "eps", eps, 0.0)
        weight_decay = check_float(name, "weight_decay", weight_decay, 0.0)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def _update(self, index: int, param: Parameter) -> None:
        step = self.state[f"step.{index}"] = self.state.get(f"step.{index}", 0) + 1
        m = self._buffer(f"m.{index}", param)
        v = self._buffer(f"v.{index}", param)
        _core.adam_update(param.value, param.grad, m, v, step=step, lr=self.lr, beta1=self.beta1, beta2=self.beta2,
                          eps=self.eps, weight_decay=self.weight_decay,
                          decoupled_weight_decay=self._decoupled_weight_decay)


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): first p -= lr * weight_decay * p, then the
    Adam update from the raw gradient. Same arguments as Adam; weight_decay defaults to 0.01."""

    # Decoupled: the weights shrink directly instead of the penalty joining the gradient.
    _decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale gradients in place so their global L2 norm is at most `max_norm`; return the norm before clipping.

    torch.nn.utils.clip_grad_norm_ semantics: the norm is taken over all gradients together, and
    they are multiplied by max_norm / (norm + 1e-6) when that factor is below 1. Frozen parameters
    (trainable=False) are left out of the norm and untouched, as torch leaves out parameters without grad.
    The norm is accumulated in float64, so large float32 gradients do not overflow it, in one engine pass over
    all gradients whose result is bitwise the same for any thread count.
    A non-finite norm (NaN or inf in some gradient) is returned without scaling anything, unlike torch
    which would turn every gradient into NaN: the caller decides whether to skip the step.
    """
    max_norm = check_float("clip_grad_norm", "max_norm", max_norm, 0.0)
    return _core.clip_grad_norm([param.grad for param in _trainable(params, "clip_grad_norm")], max_norm)


def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element of the trainable parameters into [-clip_value, clip_value], in place.
    NaN elements stay NaN."""
    clip_value = check_float("clip_grad_value", "clip_value", clip_value, 0.0)
    _core.clip_grad_value([param.grad for param in _trainable(params, "clip_grad_value")], clip_value)


class LRScheduler:
    """Base class: sets optimizer.lr = base_lr * factor(epoch), where epoch counts step() calls.

    base_lr is the optimizer's lr when the scheduler is created; creating the scheduler applies
    factor(0) (torch does the same). Call step() once per epoch, after the epoch's optimizer steps.
    The lr is recomputed from base_lr each time, so a value assigned to optimizer.lr by hand lasts
    only until the next step() (torch's chained form would compound it instead).
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise ValueError(
                f"{type(self).__name__}: optimizer is {type(optimizer).__name__}, expected an rnnext.optim.Optimizer"
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._apply()

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def factor(self, epoch: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore base_lr and last_epoch, and set optimizer.lr to the lr scheduled for that epoch."""
        name = f"{type(self).__name__}.load_state_dict"
        missing = [key for key in ("base_lr", "last_epoch") if key not in state_dict]
        if missing:
            raise ValueError(f"{name}: missing keys {missing}")
        base_lr = check_float(name, "base_lr", state_dict["base_lr"], 0.0)
        last_epoch = check_int(name, "last_epoch", state_dict["last_epoch"], 0, integral_floats=True)
        self.base_lr, self.last_epoch = base_lr, last_epoch
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.base_lr * self.factor(self.last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): decay by gamma every step_size epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = check_int("StepLR", "step_size", step_size, 1, integral_floats=True)
        self.gamma = check_float("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer)

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = check_float("ExponentialLR", "gamma", gamma, 0.0)
        super().__init__(optimizer)

    def factor(self, epoch: int) -> float:
        return self.gamma**epoch


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch) for any callable; its state_dict omits the callable (not serialisable)."""

    def __init__(self, optimizer: Optimizer, lr_lambda):
        if not callable(lr_lambda):
            raise ValueError(f"LambdaLR: lr_lambda is {type(lr_lambda).__name__}, expected a callable epoch -> factor")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def factor(self, epoch: int) -> float:
        return check_float("LambdaLR", f"lr_lambda({epoch})", self.lr_lambda(epoch), 0.0)


def _trainable(params, function: str) -> list:
    params = list(params)
    for index, param in enumerate(params):
        if not isinstance(param, Parameter):
            raise ValueError(f"{function}: params[{index}] is {type(param).__name__}, expected Parameter")
    return [param for param in params if param.trainable]


def _unpack_betas(function: str, betas) -> tuple:
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{function}: betas is {betas!r}, expected a pair (beta1, beta2)") from None
    return beta1, beta2
