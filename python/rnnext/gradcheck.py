"""Finite-difference check of a model's (or layer's) backward pass against its forward pass, in float64.

    report = rnnext.gradcheck(model, x, targets, softmax_cross_entropy, num_checks=20)
    print(report)                    # a table, one row per parameter (and "input")
    assert report.worst < 1e-5       # report is a dict {name: worst relative error}

For each parameter, `num_checks` random entries are perturbed by +-eps and the central difference of the loss is
compared with the analytic gradient. The error of a parameter is max |analytic - numeric| over the checked
entries divided by the largest |analytic| entry of that whole gradient (or of the numeric ones, if larger):
entries near zero are rounding noise when divided by themselves. With eps = 1e-6 in float64 the numeric
gradient is good to about 1e-9 absolute, so a correct backward lands near 1e-8 or below and a real mistake shows
up at 1e-3 or worse. Check away from the initial point (tiny weights give tiny gradients, and then the check
measures rounding noise: zero-initialized peepholes, for example).
"""
from __future__ import annotations

import numpy as np

__all__ = ["gradcheck", "GradcheckReport"]


class GradcheckReport(dict):
    """{name: worst relative error}; str() gives a table, `worst` the largest error, `checked` the entry counts."""

    def __init__(self, errors: dict, checked: dict, shapes: dict):
        super().__init__(errors)
        self.checked = checked
        self.shapes = shapes

    @property
    def worst(self) -> float:
        return max(self.values(), default=0.0)

    def __str__(self) -> str:
        width = max([len(name) for name in self] + [9])
        lines = [f"{'parameter':<{width}}  {'shape':<16} {'checked':>7}  worst rel. error",
                 "-" * (width + 44)]
        for name, error in self.items():
            lines.append(f"{name:<{width}}  {str(self.shapes[name]):<16} {self.checked[name]:>7}  {error:.2e}")
        lines.append(f"worst: {self.worst:.2e}")
        return "\n".join(lines)

    __repr__ = __str__


def _layers_of(model):
    return list(getattr(model, "layers", [model]))


def _get_volatile(model):
    return [layer._get_volatile() for layer in _layers_of(model)]


def _set_volatile(model, saved) -> None:
    for layer, state in zip(_layers_of(model), saved):
        layer._set_volatile(state)


def gradcheck(model, inputs, targets, loss, num_checks: int = 10, eps: float = 1e-6, check_input: bool = False,
              lengths=None, seed: int = 0) -> GradcheckReport:
    """Compare model.backward with central differences of loss(model.forward(inputs), targets).

    model:   a Sequential or a single layer whose parameters are all float64 and whose forward returns one array.
    loss:    a function (output, targets) -> (loss, doutput), such as rnnext.losses.softmax_cross_entropy.
    lengths: passed to forward when given.
    check_input: also check the gradient of the (floating) input, reported as "input".
    Dropout masks and stateful states are the same in every evaluation: the layers' generators and carried states
    are saved first and restored before each forward. The parameters' .grad are overwritten with the analytic
    gradient, and the model is left as after one forward/backward on the unperturbed parameters.
    """
    if not isinstance(num_checks, int) or num_checks < 1:
        raise ValueError(f"gradcheck: num_checks is {num_checks!r}, expected an integer >= 1")
    kwargs = {} if lengths is None else {"lengths": lengths}
    if not getattr(model, "built", True):
        model.forward(inputs, **kwargs)  # builds layers that learn their input size from the first batch
    named = list(model.named_parameters())
    if not named and not check_input:
        raise ValueError("gradcheck: the model has no parameters; pass check_input=True to check the input gradient")
    not_float64 = [name for name, param in named if param.value.dtype != np.float64]
    if not_float64:
        raise ValueError(f"gradcheck: parameters {not_float64} are not float64; build the layers with "
                         "dtype=np.float64 (float32 differences are too coarse to check anything)")
    if check_input:
        inputs = np.array(inputs, dtype=np.float64)  # a copy we perturb
    saved = _get_volatile(model)

    def evaluate():
        _set_volatile(model, saved)
        output = model.forward(inputs, **kwargs)
        if not isinstance(output, np.ndarray):
            raise ValueError(f"gradcheck: forward returned {type(output).__name__}, expected one array (a layer "
                             "with return_state=True needs its own check)")
        return output

    # analytic gradients
    model.zero_grad()
    value, doutput = loss(evaluate(), targets)
    dinputs = model.backward(doutput)
    analytic = {name: param.grad.copy() for name, param in named}

    def numeric(array, flat_index):
        flat = array.reshape(-1)  # a view: parameter values and our input copy are contiguous
        original = flat[flat_index]
        flat[flat_index] = original + eps
        plus = loss(evaluate(), targets)[0]
        flat[flat_index] = original - eps
        minus = loss(evaluate(), targets)[0]
        flat[flat_index] = original
        return (plus - minus) / (2 * eps)

    rng = np.random.default_rng(seed)
    errors, checked, shapes = {}, {}, {}
    targets_to_check = [(name, param.value, analytic[name]) for name, param in named]
    if check_input:
        if dinputs is None:
            raise ValueError("gradcheck: check_input=True, but backward returned no input gradient (ids input?)")
        targets_to_check.append(("input", inputs, np.asarray(dinputs)))
    for name, array, grad in targets_to_check:
        count = min(num_checks, array.size)
        indices = rng.choice(array.size, size=count, replace=False)
        flat_grad = grad.reshape(-1)
        numbers = np.array([numeric(array, index) for index in indices])
        # a gradient that is exactly zero everywhere is checked against the numeric one's own size
        scale = max(float(np.max(np.abs(grad))), float(np.max(np.abs(numbers))), 1e-30)
        errors[name] = float(np.max(np.abs(flat_grad[indices] - numbers))) / scale
        checked[name], shapes[name] = count, array.shape

    # leave the model as after one forward/backward at the unperturbed point (grads hold the analytic gradient)
    evaluate()
    return GradcheckReport(errors, checked, shapes)
