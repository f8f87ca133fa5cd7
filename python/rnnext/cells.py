"""The recurrent cells over the engine: RNN, LSTM and GRU. Each says how many gate blocks it has, its bias and
extra parameters, and which engine functions run it; the stacking, directions, states, dropout and zoneout are
Recurrent's (recurrent.py)."""
from __future__ import annotations

import math

import numpy as np

from . import _core
from .layer_base import glorot_uniform, orthogonal
from .recurrent import Recurrent
from .validation import check_bool, check_choice, check_int

__all__ = ["RNN", "SimpleRNN", "LSTM", "GRU"]


class RNN(Recurrent):
    """Simple (Elman) RNN: h_new = activation(x @ kernel + h @ recurrent_kernel + bias). `SimpleRNN` is an alias.
    zoneout=z mixes h as for the GRU: h[t+1] = k * h[t] + (1 - k) * h_new (keep masks k in training, k = z
    outside)."""

    _ACTIVATIONS = ("tanh", "relu", "sigmoid")

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        self.activation = check_choice("RNN", "activation", activation, self._ACTIVATIONS)
        self._finish_init()

    _takes_masks = True
    _zoneout_parts = ("h",)

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
    at start). The forget-gate block of every bias starts at `forget_bias`. With zoneout and peepholes the output
    gate's peephole looks at the cell that is kept, c[t+1] after zoneout (docs/api.md).

    layer_norm=True: the layer-normalised LSTM (Ba, Kiros & Hinton 2016, haste's placement): the input and the
    recurrent pre-activations are each normalised over all 4H values with gains `ln_input_gamma`,
    `ln_recurrent_gamma` [4H], and c[t+1] over its H values with `ln_cell_gamma`, `ln_cell_beta` [H] before its
    tanh (gains start at 1, shifts at 0); see rnnext.reference.layer_norm_cells. It takes dropout,
    recurrent_dropout, weight_drop and zoneout as the plain LSTM does (the masks act before the normalisations;
    zoneout mixes the candidates, and the cell normalisation sees the candidate cell).

    proj_size=P (0 < P < units): the LSTM with projection as torch.nn.LSTM defines it: h = (o * tanh(c)) @
    projection with `projection [H, P]` (torch's weight_hr transposed), so h and the outputs have P units,
    `recurrent_kernel` is [P, 4H] and c keeps H; see rnnext.reference.projection_cells. It takes dropout,
    recurrent_dropout, weight_drop and zoneout as the plain LSTM does, h's masks with P units (zoneout on h mixes
    the projected state)."""

    _state_names = ("h", "c")
    _takes_masks = True
    _zoneout_parts = ("h", "c")

    def __init__(self, units, *, peephole=False, coupled=False, forget_bias=1.0, layer_norm=False, proj_size=0,
                 **kwargs):
        super().__init__(units, **kwargs)
        self.peephole = check_bool("LSTM", "peephole", peephole)
        self.coupled = check_bool("LSTM", "coupled", coupled)
        # -- layer normalisation (its own engine kernel, layer_norm_lstm.h)
        self.layer_norm = check_bool("LSTM", "layer_norm", layer_norm)
        if self.layer_norm and (self.peephole or self.coupled):
            raise ValueError(f"LSTM: layer_norm=True with peephole={self.peephole}, coupled={self.coupled} is not "
                             "supported; the layer-normalised LSTM has the four plain gates i, f, g, o")
        # -- projection (its own engine kernel, lstm_projection.h)
        self.proj_size = check_int("LSTM", "proj_size", proj_size, minimum=0)
        if self.proj_size >= self.units:
            raise ValueError(f"LSTM: proj_size is {self.proj_size}, expected 0 (none) or less than units={self.units} "
                             "(as torch.nn.LSTM)")
        if self.proj_size and (self.peephole or self.coupled or self.layer_norm):
            raise ValueError(f"LSTM: proj_size={self.proj_size} with peephole={self.peephole}, coupled={self.coupled}, "
                             f"layer_norm={self.layer_norm} is not supported; the projected LSTM has the four plain "
                             "gates, as torch.nn.LSTM")
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

    def _output_units(self) -> int:
        return self.proj_size or self.units

    def _state_width(self, index, part):
        if self.proj_size and part == "h":
            return "P", self.proj_size
        return "H", self.units

    def _cell_parameters(self, layer_input) -> dict:
        if not self.proj_size:
            return super()._cell_parameters(layer_input)
        H, P = self.units, self.proj_size
        return {"kernel": self._draw(glorot_uniform, (layer_input, 4 * H)),
                "recurrent_kernel": self._draw(orthogonal, (P, 4 * H)), "bias": self._initial_bias(),
                "projection": self._draw(glorot_uniform, (H, P))}

    def _extra_parameters(self) -> dict:
        if self.layer_norm:
            return _layer_norm_parameters(4, self.units, self.dtype, cell=True)
        if not self.peephole:
            return {}
        rows = 2 if self.coupled else 3  # (f, o) or (i, f, o)
        return {"peephole": np.zeros((rows, self.units), dtype=self.dtype)}

    def get_config(self) -> dict:
        return {**super().get_config(), "peephole": self.peephole, "coupled": self.coupled,
                "forget_bias": self.forget_bias, "layer_norm": self.layer_norm, "proj_size": self.proj_size}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        if self.layer_norm:
            y, h_n, c_n, cache = _core.layer_norm_lstm_forward(x, state[0], state[1], *_layer_norm_lstm_weights(w),
                                                               lengths=lengths, keep_cache=keep_cache, masks=masks)
            return y, (h_n, c_n), cache
        if self.proj_size:
            y, h_n, c_n, cache = _core.projected_lstm_forward(x, state[0], state[1], *_projected_lstm_weights(w),
                                                              lengths=lengths, keep_cache=keep_cache, masks=masks)
            return y, (h_n, c_n), cache
        peephole = w["peephole"].value if self.peephole else None
        y, h_n, c_n, cache = _core.lstm_forward(x, state[0], state[1], w["kernel"].value,
                                                w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                                lengths=lengths, coupled=self.coupled, keep_cache=keep_cache,
                                                masks=masks)
        return y, (h_n, c_n), cache

    def _engine_stepper(self, layer_weights, batch_size):
        if self.layer_norm:
            return _core.layer_norm_lstm_stepper([_layer_norm_lstm_weights(w) for w in layer_weights], batch_size)
        if self.proj_size:
            return _core.projected_lstm_stepper([_projected_lstm_weights(w) for w in layer_weights], batch_size)
        return _core.lstm_stepper([(w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value,
                                    w["peephole"].value if self.peephole else None) for w in layer_weights],
                                  batch_size, coupled=self.coupled)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        if self.layer_norm:
            grads = _core.layer_norm_lstm_backward(dy, dstate[0], dstate[1], cache, x, *_layer_norm_lstm_weights(w),
                                                   lengths=lengths, masks=masks)
            return grads["x"], (grads["h0"], grads["c0"]), grads
        if self.proj_size:
            grads = _core.projected_lstm_backward(dy, dstate[0], dstate[1], cache, x, *_projected_lstm_weights(w),
                                                  lengths=lengths, masks=masks)
            return grads["x"], (grads["h0"], grads["c0"]), grads
        peephole = w["peephole"].value if self.peephole else None
        grads = _core.lstm_backward(dy, dstate[0], dstate[1], cache, x, w["kernel"].value,
                                    w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                    lengths=lengths, coupled=self.coupled, masks=masks)
        return grads["x"], (grads["h0"], grads["c0"]), grads


# -- layer normalisation: the parameters and the engine's argument order
def _layer_norm_parameters(G, H, dtype, cell):
    """The gains of the input and recurrent normalisations [G*H] (ones), and with `cell` the cell's gain and shift
    [H] (ones, zeros): the normalisations start as plain standardisation."""
    parameters = {"ln_input_gamma": np.ones(G * H, dtype=dtype), "ln_recurrent_gamma": np.ones(G * H, dtype=dtype)}
    if cell:
        parameters.update(ln_cell_gamma=np.ones(H, dtype=dtype), ln_cell_beta=np.zeros(H, dtype=dtype))
    return parameters


_LAYER_NORM_LSTM_WEIGHTS = ("kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma",
                            "ln_cell_gamma", "ln_cell_beta")


def _layer_norm_lstm_weights(w):
    return tuple(w[name].value for name in _LAYER_NORM_LSTM_WEIGHTS)


def _layer_norm_gru_weights(w):
    return tuple(w[name].value for name in ("kernel", "recurrent_kernel", "bias", "ln_input_gamma", "ln_recurrent_gamma"))


def _projected_lstm_weights(w):
    return tuple(w[name].value for name in ("kernel", "recurrent_kernel", "bias", "projection"))


class GRU(Recurrent):
    """GRU, gate order r, z, n; h_new = (1 - z) * n + z * h. reset_after=True (cuDNN/PyTorch/Keras default) has
    bias [2, 3H] (input and recurrent biases), reset_after=False bias [3H].

    layer_norm=True (reset_after only): the layer-normalised GRU as haste's LayerNormGRU: the input and the
    recurrent pre-activations are each normalised over all 3H values with gains `ln_input_gamma`,
    `ln_recurrent_gamma` [3H] (start 1) before their biases; r multiplies n's normalised recurrent term. It takes
    dropout, recurrent_dropout, weight_drop and zoneout as the plain GRU does, each mask applied before the
    normalisation of the product it enters."""

    _takes_masks = True
    _zoneout_parts = ("h",)

    def __init__(self, units, *, reset_after=True, layer_norm=False, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = check_bool("GRU", "reset_after", reset_after)
        # -- layer normalisation (its own engine kernel, layer_norm_gru.h)
        self.layer_norm = check_bool("GRU", "layer_norm", layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError("GRU: layer_norm=True needs reset_after=True (the reset gate multiplies the normalised "
                             "recurrent term; before the product it would need every unit's r first)")
        self._finish_init()

    def _gates(self) -> int:
        return 3

    def _bias_shape(self) -> tuple:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _extra_parameters(self) -> dict:
        return _layer_norm_parameters(3, self.units, self.dtype, cell=False) if self.layer_norm else {}

    def get_config(self) -> dict:
        return {**super().get_config(), "reset_after": self.reset_after, "layer_norm": self.layer_norm}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        if self.layer_norm:
            y, h_n, cache = _core.layer_norm_gru_forward(x, state[0], *_layer_norm_gru_weights(w), lengths=lengths,
                                                         keep_cache=keep_cache, masks=masks)
            return y, (h_n,), cache
        y, h_n, cache = _core.gru_forward(x, state[0], w["kernel"].value, w["recurrent_kernel"].value,
                                          w["bias"].value, lengths=lengths, reset_after=self.reset_after,
                                          keep_cache=keep_cache, masks=masks)
        return y, (h_n,), cache

    def _engine_stepper(self, layer_weights, batch_size):
        if self.layer_norm:
            return _core.layer_norm_gru_stepper([_layer_norm_gru_weights(w) for w in layer_weights], batch_size)
        return _core.gru_stepper([(w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value)
                                  for w in layer_weights], batch_size, reset_after=self.reset_after)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        if self.layer_norm:
            grads = _core.layer_norm_gru_backward(dy, dstate[0], cache, x, *_layer_norm_gru_weights(w),
                                                  lengths=lengths, masks=masks)
            return grads["x"], (grads["h0"],), grads
        grads = _core.gru_backward(dy, dstate[0], cache, x, w["kernel"].value, w["recurrent_kernel"].value,
                                   w["bias"].value, lengths=lengths, reset_after=self.reset_after, masks=masks)
        return grads["x"], (grads["h0"],), grads
