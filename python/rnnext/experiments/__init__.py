"""The reference experiments of the classic RNN course material, one module each with `main(argv=None) -> int`.

`rnnext train NAME [options]` runs `EXPERIMENTS[NAME].main(options)`; `python -m rnnext.experiments.<module>`
works too. Modules are imported only when asked for, so a missing optional one fails alone and clearly.
"""
from __future__ import annotations

import argparse
import importlib

__all__ = ["EXPERIMENTS", "load", "positive_int"]

# command-line name -> module (relative to this package)
EXPERIMENTS = {
    "echo": "echo",
    "char-lm": "char_lm",
    "word-lm": "word_lm",
    "sentiment": "sentiment",
    "vanishing": "vanishing",
    "numpy-rnn": "numpy_rnn",
}


def load(name: str):
    """The module of experiment `name` (a key of EXPERIMENTS); ValueError for an unknown or missing one."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    module_name = f"{__name__}.{EXPERIMENTS[name]}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise  # a dependency of the module is missing: let its own message through
        raise ValueError(f"experiment {name!r} is not available in this installation "
                         f"(no module {module_name})") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value
