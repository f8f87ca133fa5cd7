"""Parameter: a trainable array together with its gradient, shared by layers and optimizers."""
from __future__ import annotations

import numpy as np


class Parameter:
    """A named array `value` and its gradient `grad` (same shape and dtype).

    Layers accumulate into `grad` during backward (`+=`); optimizers read `grad` and update `value` in place,
    so views held elsewhere stay valid. `trainable=False` freezes the parameter: it still receives gradients,
    but optimizers skip it.
    """

    __slots__ = ("value", "grad", "name", "trainable")

    def __init__(self, value, name: str = "", trainable: bool = True):
        self.value = np.ascontiguousarray(value)
        self.grad = np.zeros_like(self.value)
        self.name = name
        self.trainable = trainable

    @property
    def shape(self):
        return self.value.shape

    @property
    def size(self) -> int:
        return self.value.size

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __repr__(self) -> str:
        frozen = "" if self.trainable else ", frozen"
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype}{frozen})"
