"""The recurrent cells over the engine: RNN, LSTM and GRU. Each says how many gate blocks it has, its bias and
extra parameters, and which engine functions run it; the stacking, directions, states, dropout and zoneout are
Recurrent's (recurrent.py)."""
from __future__ import annotations

import math

import numpy as np

from . import _core
from .recurrent import Recurrent
from .validation import check_bool, check_choice

__all__ = ["RNN", "SimpleRNN", "LSTM", "GRU"]


class RNN(Recurrent):
    """Simple (Elman) RNN: h_new = activation(x @ kernel + h @ recurrent_kernel + bias). `SimpleRNN` is an alias."""

    _ACTIVATIONS = ("tanh", "relu", "sigmoid")

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        self.activation = check_choice("RNN", "activation", activation, self._ACTIVATIONS)
        self._finish_init()

    _takes_masks = True

    def _gates(self) -> int:
        return 1

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        y, h_n, cache = _core.rnn_forward(x, state[0], w["kernel"].value, w["recurrent_kernel"].value,
                                          w["bias"].value, lengths=lengths, activation=self.activation,
                                          keep_cache=keep_cache, masks=masks)
        return y, (h_n,), cache

    def _engine_stepper(self, layer_weights, batch_size):
        return _core.rnn_stepper([(w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value)
                                  for w in layer_weights], batch_size, activation=self.activation)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        grads = _core.rnn_backward(dy, dstate[0], cache, x, w["kernel"].value, w["recurrent_kernel"].value,
                                   w["bias"].value, lengths=lengths, activation=self.activation, masks=masks)
        return grads["x"], (grads["h0"],), grads


SimpleRNN = RNN


class LSTM(Recurrent):
    """LSTM, gate order i, f, g, o (coupled: f, g, o with i = 1 - f), optional peepholes (`peephole [P, H]`, zero
    at start). The forget-gate block of every bias starts at `forget_bias`."""

    _state_names = ("h", "c")
    _takes_masks = True
    _zoneout_parts = ("h", "c")

    def __init__(self, units, *, peephole=False, coupled=False, forget_bias=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.peephole = check_bool("LSTM", "peephole", peephole)
        if self.peephole and self._zoneout_rates():
            raise ValueError(f"LSTM: zoneout={self.zoneout!r} with peephole=True is not supported (the output "
                             "peephole would look at zoneout's candidate cell); use one or the other")
        self.coupled = check_bool("LSTM", "coupled", coupled)
        largest = float(np.finfo(self.dtype).max)  # a larger value would overflow the bias to inf
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.number)) \
                or not math.isfinite(forget_bias) or abs(forget_bias) > largest:
            raise ValueError(f"LSTM: forget_bias is {forget_bias!r}, expected a finite number of magnitude at most "
                             f"{largest:g} ({np.dtype(self.dtype)})")
        self.forget_bias = float(forget_bias)
        self._finish_init()

    def _gates(self) -> int:
        return 3 if self.coupled else 4

    def _initial_bias(self):
        H = self.units
        bias = np.zeros(self._bias_shape(), dtype=self.dtype)
        forget_block = 0 if self.coupled else 1  # f is the first block of f, g, o and the second of i, f, g, o
        bias[forget_block * H:(forget_block + 1) * H] = self.forget_bias
        return bias

    def _extra_parameters(self) -> dict:
        if not self.peephole:
            return {}
        rows = 2 if self.coupled else 3  # (f, o) or (i, f, o)
        return {"peephole": np.zeros((rows, self.units), dtype=self.dtype)}

    def get_config(self) -> dict:
        return {**super().get_config(), "peephole": self.peephole, "coupled": self.coupled,
                "forget_bias": self.forget_bias}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        peephole = w["peephole"].value if self.peephole else None
        y, h_n, c_n, cache = _core.lstm_forward(x, state[0], state[1], w["kernel"].value,
                                                w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                                lengths=lengths, coupled=self.coupled, keep_cache=keep_cache,
                                                masks=masks)
        return y, (h_n, c_n), cache

    def _engine_stepper(self, layer_weights, batch_size):
        return _core.lstm_stepper([(w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value,
                                    w["peephole"].value if self.peephole else None) for w in layer_weights],
                                  batch_size, coupled=self.coupled)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        peephole = w["peephole"].value if self.peephole else None
        grads = _core.lstm_backward(dy, dstate[0], dstate[1], cache, x, w["kernel"].value,
                                    w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                    lengths=lengths, coupled=self.coupled, masks=masks)
        return grads["x"], (grads["h0"], grads["c0"]), grads


class GRU(Recurrent):
    """GRU, gate order r, z, n; h_new = (1 - z) * n + z * h. reset_after=True (cuDNN/PyTorch/Keras default) has
    bias [2, 3H] (input and recurrent biases), reset_after=False bias [3H]."""

    _takes_masks = True
    _zoneout_parts = ("h",)

    def __init__(self, units, *, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = check_bool("GRU", "reset_after", reset_after)
        self._finish_init()

    def _gates(self) -> int:
        return 3

    def _bias_shape(self) -> tuple:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def get_config(self) -> dict:
        return {**super().get_config(), "reset_after": self.reset_after}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        y, h_n, cache = _core.gru_forward(x, state[0], w["kernel"].value, w["recurrent_kernel"].value,
                                          w["bias"].value, lengths=lengths, reset_after=self.reset_after,
                                          keep_cache=keep_cache, masks=masks)
        return y, (h_n,), cache

    def _engine_stepper(self, layer_weights, batch_size):
        return _core.gru_stepper([(w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value)
                                  for w in layer_weights], batch_size, reset_after=self.reset_after)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        grads = _core.gru_backward(dy, dstate[0], cache, x, w["kernel"].value, w["recurrent_kernel"].value,
                                   w["bias"].value, lengths=lengths, reset_after=self.reset_after, masks=masks)
        return grads["x"], (grads["h0"],), grads
