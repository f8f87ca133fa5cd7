"""The recurrent layers whose recurrence is elementwise, over the engine: IndRNN, MinGRU, MinLSTM, SRU and QRNN.
Their products read x only (IndRNN's and SRU's recurrent weights are vectors), so the engine runs the input products for
all steps at once and then an elementwise scan over time (cpp/rnnext/scan_loop.h). Stacking, directions, lengths, states, step() and
dropout are Recurrent's (recurrent.py); each cell says its parameters and which engine functions run it."""
from __future__ import annotations

import math

import numpy as np

from . import _core
from .layer_base import glorot_uniform
from .recurrent import Recurrent
from .validation import check_choice, check_int

__all__ = ["IndRNN", "MinGRU", "MinLSTM", "SRU", "QRNN"]


def _linear_uniform(rng, shape, dtype, fan_in):
    """Uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)]: PyTorch's nn.Linear default, which the minGRU/minLSTM
    paper's code uses for its gate projections (kernel and bias alike)."""
    limit = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class IndRNN(Recurrent):
    """IndRNN (Li et al. 2018): h_new = activation(x @ kernel + recurrent_weight * h + bias), with an elementwise
    `recurrent_weight [H]` per layer and direction in place of a recurrent kernel. activation "relu" (the paper's)
    or "tanh".

    recurrent_weight starts uniform in [0, 2**(1/time_steps)] when `time_steps` (the sequence length trained on)
    is given: the paper's bound |u| <= 2**(1/T), under which the gradient of a relu unit grows at most 2x over T
    steps; else in [0, 1]. kernel is Glorot-uniform, bias zero. The weight is not clipped during training.
    """

    _ACTIVATIONS = ("relu", "tanh")

    def __init__(self, units, activation="relu", *, time_steps=None, **kwargs):
        super().__init__(units, **kwargs)
        self.activation = check_choice("IndRNN", "activation", activation, self._ACTIVATIONS)
        self.time_steps = None if time_steps is None else check_int("IndRNN", "time_steps", time_steps, minimum=1)
        self._finish_init()

    def _gates(self) -> int:
        return 1

    def _cell_parameters(self, layer_input) -> dict:
        H = self.units
        limit = 1.0 if self.time_steps is None else 2.0 ** (1.0 / self.time_steps)
        return {"kernel": self._draw(glorot_uniform, (layer_input, H)),
                "recurrent_weight": self._draw(lambda rng, shape, dtype: rng.uniform(0, limit, shape).astype(dtype),
                                               (H,)),
                "bias": self._initial_bias()}

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation, "time_steps": self.time_steps}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):  # keeps its cache either way
        y, h_n, cache = _core.indrnn_forward(x, state[0], w["kernel"].value, w["recurrent_weight"].value,
                                             w["bias"].value, lengths=lengths, activation=self.activation)
        return y, (h_n,), cache

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        grads = _core.indrnn_backward(dy, dstate[0], cache, x, w["kernel"].value, w["recurrent_weight"].value,
                                      w["bias"].value, lengths=lengths, activation=self.activation)
        return grads["x"], (grads["h0"],), grads


class _GatesFromInput(Recurrent):
    """A cell whose gates all read x only: `kernel [I, G*H]` and `bias [G*H]`, no recurrent kernel, both
    initialised as PyTorch's nn.Linear. Subclasses name G and the engine functions."""

    _gate_blocks = None  # G, set by each subclass
    _forward = _backward = None  # the engine functions, set by each subclass

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self._finish_init()

    def _gates(self) -> int:
        return self._gate_blocks

    def _cell_parameters(self, layer_input) -> dict:
        GH = self._gates() * self.units
        return {"kernel": self._draw(lambda rng, shape, dtype: _linear_uniform(rng, shape, dtype, layer_input),
                                     (layer_input, GH)),
                "bias": self._draw(lambda rng, shape, dtype: _linear_uniform(rng, shape, dtype, layer_input), (GH,))}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):  # keeps its cache either way
        y, h_n, cache = self._forward(x, state[0], w["kernel"].value, w["bias"].value, lengths=lengths)
        return y, (h_n,), cache

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        grads = self._backward(dy, dstate[0], cache, x, w["kernel"].value, w["bias"].value, lengths=lengths)
        return grads["x"], (grads["h0"],), grads


class MinGRU(_GatesFromInput):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"), gate order z, h~: z = sigmoid(x @ kernel_z + bias_z),
    h~ = x @ kernel_h + bias_h, h_new = (1 - z) * h + z * h~. kernel [I, 2H], bias [2H]."""

    _gate_blocks = 2
    _forward, _backward = staticmethod(_core.mingru_forward), staticmethod(_core.mingru_backward)


class MinLSTM(_GatesFromInput):
    """minLSTM (Feng et al. 2024), gate order f, i, h~: f, i = sigmoid(x @ kernel + bias) per block,
    h~ = x @ kernel_h + bias_h, h_new = (f * h + i * h~) / (f + i). kernel [I, 3H], bias [3H]."""

    _gate_blocks = 3
    _forward, _backward = staticmethod(_core.minlstm_forward), staticmethod(_core.minlstm_backward)


class SRU(Recurrent):
    """SRU (Lei et al. 2018) with its highway: f = sigmoid(x @ kernel_f + v_f * c + b_f), r likewise,
    c_new = f * c + (1 - f) * (x @ kernel_h), h = r * c_new + (1 - r) * skip. The state is (h, c) as for LSTM;
    c is the recurrence, h the output (it feeds nothing back).

    kernel [I, 3H] (blocks h~, f, r) with skip = x where the layer's input size equals units (the paper's case),
    else [I, 4H] with skip = x @ kernel_s; `recurrent_weight [2, H]` (v_f, v_r) and `bias [2, H]` (b_f, b_r).
    kernel starts uniform with variance 1/I (the paper's initialisation), v and b at zero (no scaling correction).
    """

    _state_names = ("h", "c")

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self._finish_init()

    def _gates(self) -> int:
        return 3  # h~, f, r: the fourth (skip) block depends on the input size, see _cell_parameters

    def _cell_parameters(self, layer_input) -> dict:
        H = self.units
        blocks = 3 if layer_input == H else 4
        limit = math.sqrt(3.0 / layer_input)  # uniform on [-a, a] has variance a**2 / 3 = 1 / I
        return {"kernel": self._draw(lambda rng, shape, dtype: rng.uniform(-limit, limit, shape).astype(dtype),
                                     (layer_input, blocks * H)),
                "recurrent_weight": np.zeros((2, H), dtype=self.dtype),
                "bias": np.zeros((2, H), dtype=self.dtype)}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):  # keeps its cache either way
        y, h_n, c_n, cache = _core.sru_forward(x, state[0], state[1], w["kernel"].value, w["recurrent_weight"].value,
                                               w["bias"].value, lengths=lengths)
        return y, (h_n, c_n), cache

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        grads = _core.sru_backward(dy, dstate[0], dstate[1], cache, x, w["kernel"].value,
                                   w["recurrent_weight"].value, w["bias"].value, lengths=lengths)
        return grads["x"], (grads["h0"], grads["c0"]), grads


class QRNN(Recurrent):
    """QRNN (Bradbury et al. 2017) with fo-pooling: a causal convolution of width `window` (K) over the input,
    z = tanh(conv_z(x) + b_z), f = sigmoid(conv_f(x) + b_f), o = sigmoid(conv_o(x) + b_o), then
    c_new = f * c + (1 - f) * z and h = o * c_new. `kernel [K, I, 3H]` (tap j multiplies x[t-j]), `bias [3H]`.

    The state is (h, c, x): c recurs, h is the output (it feeds nothing back), and x [N, (K-1)*I] holds the last
    K-1 inputs (block j-1 is x[t-j]), which the next call's first steps read; so stateful calls and step() see the
    same convolution as one long sequence. The paper's width 2 is the default. kernel is Glorot-uniform over the
    whole convolution (fan-in K*I, fan-out 3H), bias zero.
    """

    _state_names = ("h", "c", "x")

    def __init__(self, units, *, window=2, **kwargs):
        super().__init__(units, **kwargs)
        self.window = check_int("QRNN", "window", window, minimum=1)
        self._finish_init()

    def _gates(self) -> int:
        return 3

    def _state_width(self, index, part):
        if part != "x":
            return super()._state_width(index, part)
        layer = index // self.num_directions
        layer_input = self.input_size if layer == 0 else self.num_directions * self.units
        return "(K-1)*I", (self.window - 1) * layer_input

    def _cell_parameters(self, layer_input) -> dict:
        K, GH = self.window, 3 * self.units
        limit = math.sqrt(6.0 / (K * layer_input + GH))
        return {"kernel": self._draw(lambda rng, shape, dtype: rng.uniform(-limit, limit, shape).astype(dtype),
                                     (K, layer_input, GH)),
                "bias": np.zeros(GH, dtype=self.dtype)}

    def get_config(self) -> dict:
        return {**super().get_config(), "window": self.window}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):  # keeps its cache either way
        y, h_n, c_n, x_n, cache = _core.qrnn_forward(x, *state, w["kernel"].value, w["bias"].value, lengths=lengths)
        return y, (h_n, c_n, x_n), (cache, state[2])  # backward reads the history this call started from

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        engine_cache, x0 = cache
        grads = _core.qrnn_backward(dy, *dstate, engine_cache, x, x0, w["kernel"].value, w["bias"].value,
                                    lengths=lengths)
        return grads["x"], (grads["h0"], grads["c0"], grads["x0"]), grads
