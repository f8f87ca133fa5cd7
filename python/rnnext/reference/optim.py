"""The twins of the optimizer updates and the gradient-list kernels (cpp/rnnext/optim.h)."""
from __future__ import annotations

import numpy as np

from ._common import _check


# ---------------------------------------------------------------------------------------------------------
# Optimizer updates, gradient lists and embeddings (cpp/rnnext/optim.h, embedding.h). The updates work in place,
# one NumPy operation per step of the formula in the order the engine computes it, hyperparameters as Python
# floats (NumPy rounds them to the arrays' dtype), so engine and twin give the same bits. A gradient list may mix
# float32 and float64 arrays.



def _check_state(fn, name, a, value):
    """An array updated alongside value: its shape and dtype."""
    return _check(fn, name, a, [("", size) for size in value.shape], value.dtype, " (the shape of value)")


def sgd_update(value, grad, momentum_buffer, lr, momentum, nesterov, weight_decay, initialize_buffer):
    """torch.optim.SGD's step in place; momentum_buffer is None when momentum is 0, and is set to the first
    gradient (not updated) when initialize_buffer."""
    lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)
    grad = _check_state("sgd_update", "grad", grad, value)
    if weight_decay:
        grad = grad + weight_decay * value
    if momentum:
        _check_state("sgd_update", "momentum_buffer", momentum_buffer, value)
        if initialize_buffer:
            momentum_buffer[...] = grad
        else:
            momentum_buffer *= momentum
            momentum_buffer += grad
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    value -= lr * grad


def adagrad_update(value, grad, squared_sum, lr, eps, weight_decay):
    """torch.optim.Adagrad's step in place: squared_sum accumulates g * g."""
    lr, eps, weight_decay = float(lr), float(eps), float(weight_decay)
    grad = _check_state("adagrad_update", "grad", grad, value)
    _check_state("adagrad_update", "squared_sum", squared_sum, value)
    if weight_decay:
        grad = grad + weight_decay * value
    squared_sum += grad * grad
    value -= lr * grad / (np.sqrt(squared_sum) + eps)


def rmsprop_update(value, grad, square_avg, momentum_buffer, lr, alpha, eps, momentum, weight_decay):
    """torch.optim.RMSprop's step in place (not centered); momentum_buffer is None when momentum is 0."""
    lr, alpha, eps, momentum, weight_decay = float(lr), float(alpha), float(eps), float(momentum), float(weight_decay)
    grad = _check_state("rmsprop_update", "grad", grad, value)
    _check_state("rmsprop_update", "square_avg", square_avg, value)
    if weight_decay:
        grad = grad + weight_decay * value
    square_avg *= alpha
    square_avg += (1 - alpha) * grad * grad
    step = grad / (np.sqrt(square_avg) + eps)
    if momentum:
        _check_state("rmsprop_update", "momentum_buffer", momentum_buffer, value)
        momentum_buffer *= momentum
        momentum_buffer += step
        step = momentum_buffer
    value -= lr * step


def adam_update(value, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    """torch.optim.Adam's update number `step` (>= 1) in place; with decoupled_weight_decay, AdamW's."""
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    step = int(step)
    grad = _check_state("adam_update", "grad", grad, value)
    _check_state("adam_update", "m", m, value)
    _check_state("adam_update", "v", v, value)
    if weight_decay and decoupled_weight_decay:
        value *= 1 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * value
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    root_correction = float(np.sqrt(1 - beta2**step))  # a Python float, which NumPy rounds to v's dtype
    value -= step_size * m / (np.sqrt(v) / root_correction + eps)


def grad_norm(grads):
    """The L2 norm of every element of every array together, summed in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(grad, dtype=np.float64))) for grad in grads)))


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ in place, except that a non-finite norm scales nothing; returns the norm."""
    norm = grad_norm(grads)
    factor = max_norm / (norm + 1e-6)
    if np.isfinite(norm) and factor < 1:
        for grad in grads:
            grad *= factor
    return norm


def clip_grad_value(grads, clip_value):
    for grad in grads:
        np.clip(grad, -clip_value, clip_value, out=grad)


def zero_grads(grads):
    for grad in grads:
        grad.fill(0)
