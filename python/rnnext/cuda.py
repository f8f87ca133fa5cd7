"""The optional CUDA engine, rnnext._cuda (docs/cuda.md): whether this build has it and a GPU is present, and the
engine calls a recurrent layer makes in place of the CPU engine's when its `device` is "cuda".

The CUDA engine is built only with RNNEXT_CUDA=ON; without it (or without a GPU) `device="cuda"` raises a
RuntimeError saying which is missing. A layer on "cuda" copies its NumPy input and weights to the GPU at each
forward call and keeps there what its backward pass reads (states, gates, weights), so that backward copies back
only the gradients. Stepping (`step`, `stepper`) stays on the CPU engine.
"""
from __future__ import annotations

import importlib

# import_module, not `from . import _cuda`: inside the package's own import that form reports a missing module as
# a circular import, and the two failures below must be told apart.
try:
    _cuda = importlib.import_module(f"{__package__}._cuda")
except ImportError as error:  # built without RNNEXT_CUDA=ON (no module), or libcublas not found (cannot load)
    _cuda, _IMPORT_ERROR = None, error
else:
    _IMPORT_ERROR = None

__all__ = ["DEVICES", "available", "build_info", "cuda_info", "to_device"]

DEVICES = ("cpu", "cuda")


def cuda_info() -> dict:
    """rnnext._cuda's build_info(): compiled architectures, CUDA runtime and cuBLAS versions, driver, the devices
    found now; or {"compiled": False, "reason": ...} when this build has no CUDA engine."""
    if _cuda is None:
        return {"compiled": False, "reason": _missing_module_reason()}
    return _cuda.build_info()


def available() -> bool:
    """Whether device="cuda" can run here: the CUDA engine is built and a GPU is present."""
    return _cuda is not None and _cuda.device_count() > 0


def build_info() -> dict:
    """rnnext.build_info(): the CPU engine's facts, with `cuda` (bool) saying whether the CUDA engine is built and
    `cuda_devices` the GPUs it finds now (empty without one)."""
    from . import _core

    info = _core.build_info()
    info["cuda"] = _cuda is not None
    info["cuda_devices"] = list(_cuda.build_info()["devices"]) if _cuda is not None else []
    return info


def _missing_module_reason() -> str:
    if isinstance(_IMPORT_ERROR, ModuleNotFoundError):
        return "this build of rnnext has no CUDA engine (build it with -C cmake.define.RNNEXT_CUDA=ON, docs/cuda.md)"
    return f"rnnext._cuda is built but does not load ({_IMPORT_ERROR})"


def check_device(layer, device) -> str:
    """`device` for `layer` (a Recurrent): "cpu", or "cuda" where the layer's cell has a CUDA engine and it can
    run here."""
    where = type(layer).__name__
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"{where}: device is {device!r}, expected one of {', '.join(map(repr, DEVICES))}")
    if device == "cpu":
        return device
    if _cell_kind(layer) is None:
        raise ValueError(f"{where}: device='cuda' is available for RNN, LSTM and GRU layers only")
    if getattr(layer, "layer_norm", False) or getattr(layer, "proj_size", 0):
        raise ValueError(f"{where}: device='cuda' has no layer-normalised or projected cells; use device='cpu'")
    if _cuda is None:
        raise RuntimeError(f"{where}: device='cuda' cannot run: {_missing_module_reason()}")
    if _cuda.device_count() == 0:
        reason = _cuda.build_info()["device_error"]
        raise RuntimeError(f"{where}: device='cuda' cannot run: no CUDA device found ({reason}); use device='cpu'")
    return device


def to_device(model, device: str):
    """Sets `device` on every recurrent layer of `model` (a Sequential, or one layer) and returns the model."""
    from .recurrent import Recurrent

    for layer in getattr(model, "layers", [model]):
        if isinstance(layer, Recurrent):
            layer.device = device
    return model


def _cell_kind(layer):
    from .cells import GRU, LSTM, RNN

    for kind, cls in (("rnn", RNN), ("lstm", LSTM), ("gru", GRU)):
        if isinstance(layer, cls):
            return kind
    return None


# ---------------------------------------------------------------------------------------------------------
# the engine calls of one layer and direction, with the signatures of Recurrent._engine_forward / _engine_backward

def engine_forward(layer):
    """layer's forward on the GPU: (x, state, w, lengths, keep_cache) -> (y, final state, DeviceCache or None)."""
    kind = _cell_kind(layer)

    def forward(x, state, w, lengths, keep_cache=True, masks=None):
        if masks is not None:
            raise ValueError(f"{type(layer).__name__}: device='cuda' runs without dropout, recurrent_dropout, "
                             "weight_drop and zoneout (their masks are fused into the CPU engine only)")
        weights = (w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value)
        if kind == "rnn":
            y, h_n, cache = _cuda.rnn_forward(x, state[0], *weights, lengths=lengths, activation=layer.activation,
                                              keep_cache=keep_cache)
            return y, (h_n,), cache
        if kind == "gru":
            y, h_n, cache = _cuda.gru_forward(x, state[0], *weights, lengths=lengths, reset_after=layer.reset_after,
                                              keep_cache=keep_cache)
            return y, (h_n,), cache
        peephole = w["peephole"].value if layer.peephole else None
        y, h_n, c_n, cache = _cuda.lstm_forward(x, state[0], state[1], *weights, peephole=peephole, lengths=lengths,
                                                coupled=layer.coupled, keep_cache=keep_cache)
        return y, (h_n, c_n), cache

    return forward


def engine_backward(layer):
    """layer's backward on the GPU from the DeviceCache of its forward: (dy, dstate, cache, x, w, lengths) ->
    (dx, initial state gradient, parameter gradients by name). x, w and lengths are on the device already."""
    kind = _cell_kind(layer)

    def backward(dy, dstate, cache, x, w, lengths, masks=None):  # masks: always None here (forward refuses them)
        if kind == "lstm":
            grads = _cuda.lstm_backward(dy, dstate[0], dstate[1], cache)
            return grads["x"], (grads["h0"], grads["c0"]), grads
        grads = (_cuda.rnn_backward if kind == "rnn" else _cuda.gru_backward)(dy, dstate[0], cache)
        return grads["x"], (grads["h0"],), grads

    return backward
