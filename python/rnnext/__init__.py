"""rnnext: small, fast recurrent networks (RNN, LSTM, GRU) with a C++/Eigen engine and NumPy twins."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import _core
from ._core import (
    build_info,
    get_num_threads,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
    set_num_threads,
)
from .parameter import Parameter

try:
    __version__ = _version("rnnext")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = _core.build_info()["version"]

__all__ = [
    "Parameter",
    "__version__",
    "build_info",
    "get_num_threads",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
    "set_num_threads",
]
