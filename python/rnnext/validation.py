"""Argument checks shared by every module: one convention, one message style.

Every check takes ``(where, name, value, ...)``: `where` is the function or method the user called
("LSTM.forward", "Adam", "fit"), `name` the argument, and the error reads
``"{where}: {name} is {value!r}, expected ..."``. Checks return the value in its canonical Python form
(int, float, bool, np.dtype) so that callers store what they checked.
"""

import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def scalar(value):
    """Python scalar from a number, a NumPy scalar or a 0-d array (what np.load gives back for a saved number).

    Anything else is returned unchanged, for the check that follows to reject with a clear message."""
    if isinstance(value, np.ndarray):
        return value.item() if value.shape == () else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(where: str, name: str, value, minimum: int | None = None, *, integral_floats: bool = False) -> int:
    """An integer >= minimum (bool is refused; with integral_floats, 3.0 is read as 3)."""
    if integral_floats:
        value = scalar(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
    if not _is_int(value) or (minimum is not None and value < minimum):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} is {value!r}, expected {expected}")
    return int(value)


def check_float(where: str, name: str, value, minimum: float | None = None) -> float:
    """A finite real number >= minimum (bool is refused, NaN and infinities too)."""
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} is {value!r}, expected a real number")
    value = float(value)
    # `not >=` also rejects NaN.
    if not (math.isfinite(value) and (minimum is None or value >= minimum)):
        expected = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"{where}: {name} is {value}, expected {expected}")
    return value


def check_rate(where: str, name: str, value) -> float:
    """A probability-like number in [0, 1): dropout rates, momentum and beta coefficients."""
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{where}: {name} is {value!r}, expected a number in [0, 1)")
    return float(value)


def check_bool(where: str, name: str, value) -> bool:
    value = scalar(value)
    # `in` compares by equality, so 0 and 1 pass as they always have; an array is refused before `in` sees it.
    if isinstance(value, np.ndarray) or value not in (True, False):
        raise ValueError(f"{where}: {name} is {value!r}, expected True or False")
    return bool(value)


def check_choice(where: str, name: str, value, choices):
    """One of a fixed set of values (strings compared by equality)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where}: {name} is {value!r}, expected one of {tuple(choices)}")
    return value


def check_dtype(where: str, dtype) -> np.dtype:
    """float32 or float64, given as anything np.dtype accepts."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{where}: dtype is {dtype!r}, expected float32 or float64") from None
    if checked not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype is {checked}, expected float32 or float64")
    return checked


def as_array(where: str, name: str, value) -> np.ndarray:
    """np.asarray(value), with NumPy's complaint about a ragged or unreadable input naming the argument."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{where}: {name} is not a rectangular array of numbers ({error})") from None


def real_array(where: str, name: str, value, dtype=None) -> np.ndarray:
    """value as an array of real numbers (bool and integers included), cast to dtype when one is given."""
    array = as_array(where, name, value)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {name} has dtype {array.dtype}, expected real numbers")
    return array if dtype is None else array.astype(dtype, copy=False)


def ndim(value) -> int | None:
    """Number of axes of value as an array, or None where it is not rectangular (a ragged nested list)."""
    try:
        return np.ndim(value)
    except (ValueError, TypeError):
        return None


def shape_text(shape) -> str:
    """A shape as Python writes a tuple, with None for an unknown size: (None, 5, 3), (7,)."""
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
