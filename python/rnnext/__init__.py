"""rnnext: small, fast recurrent networks (RNN, LSTM, GRU) with a C++/Eigen engine and NumPy twins.

    import rnnext
    model = rnnext.Sequential([rnnext.Embedding(10000, 32), rnnext.LSTM(32), rnnext.Dense(1)], input_shape=(500,))
    model.summary()

The engine functions (rnnext.lstm_forward, ...) and their NumPy twins (rnnext.reference) follow
docs/conventions.md; the layers and models follow docs/api.md.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import _core, cuda, data, interop, losses, onnx, optim, reference
from ._core import (
    buffer_pool_stats,
    get_num_threads,
    gru_backward,
    gru_forward,
    indrnn_backward,
    indrnn_forward,
    lstm_backward,
    lstm_forward,
    max_num_threads,
    mingru_backward,
    mingru_forward,
    minlstm_backward,
    minlstm_forward,
    qrnn_backward,
    qrnn_forward,
    rnn_backward,
    rnn_forward,
    set_buffer_pool_limit,
    set_num_threads,
    sru_backward,
    sru_forward,
)
from .cuda import build_info  # the CPU engine's facts, with the CUDA engine's (rnnext/cuda.py)
from .gradcheck import gradcheck
from .layer_base import inference_mode
from .layers import (GRU, LSTM, QRNN, RNN, SRU, Dense, Dropout, Embedding, IndRNN, Layer, MinGRU, MinLSTM, SimpleRNN,
                     layer_from_config, seed)
from .models import Checkpoint, Sequential, load, load_checkpoint
from .parameter import Parameter

try:
    __version__ = _version("rnnext")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = _core.build_info()["version"]

__all__ = [
    "Checkpoint",
    "Dense",
    "Dropout",
    "Embedding",
    "GRU",
    "IndRNN",
    "LSTM",
    "Layer",
    "MinGRU",
    "MinLSTM",
    "Parameter",
    "QRNN",
    "RNN",
    "SRU",
    "Sequential",
    "SimpleRNN",
    "__version__",
    "buffer_pool_stats",
    "build_info",
    "cuda",
    "data",
    "get_num_threads",
    "gradcheck",
    "gru_backward",
    "gru_forward",
    "inference_mode",
    "indrnn_backward",
    "indrnn_forward",
    "interop",
    "layer_from_config",
    "load",
    "load_checkpoint",
    "losses",
    "lstm_backward",
    "lstm_forward",
    "onnx",
    "max_num_threads",
    "mingru_backward",
    "mingru_forward",
    "minlstm_backward",
    "minlstm_forward",
    "optim",
    "qrnn_backward",
    "qrnn_forward",
    "reference",
    "rnn_backward",
    "rnn_forward",
    "seed",
    "set_buffer_pool_limit",
    "set_num_threads",
    "sru_backward",
    "sru_forward",
]
