"""Layers with explicit forward/backward over NumPy arrays: RNN, LSTM, GRU (the engine does the recurrent math,
see recurrent.py and cells.py), IndRNN, MinGRU, MinLSTM, SRU, QRNN (scan_cells.py), Embedding, Dense (the engine's dense_forward / dense_backward) and Dropout. The
contract is docs/api.md; the engine's is docs/conventions.md.

Each layer caches what its backward needs in forward; backward ACCUMULATES parameter gradients (`+=`) and
returns the gradient of its input. How layers draw their weights is in layer_base.py.
"""
from __future__ import annotations

import numpy as np

from . import _core
from .layer_base import Layer, dropout_mask, glorot_uniform, seed
from .cells import GRU, LSTM, RNN, SimpleRNN
from .recurrent import Recurrent
from .scan_cells import QRNN, SRU, IndRNN, MinGRU, MinLSTM
from .validation import as_array, check_bool, check_int, check_rate, real_array, shape_text

__all__ = [
    "seed",
    "Layer",
    "Recurrent",
    "RNN",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "IndRNN",
    "MinGRU",
    "MinLSTM",
    "SRU",
    "QRNN",
    "Embedding",
    "Dense",
    "Dropout",
    "layer_from_config",
]


# ---------------------------------------------------------------------------------------------------------
# Embedding

class Embedding(Layer):
    """Integer ids [...] (e.g. [N, T]) -> vectors [..., dim] by row lookup in `embeddings [vocab_size, dim]`.

    Initial rows are uniform in [-0.05, 0.05] (Keras), or `weights` when given. The `padding_idx` row is set to
    zero (in pretrained weights too) and never receives gradient. `trainable=False` / `freeze()` keep the
    optimizers off the table (the gradient is still accumulated, as for any frozen Parameter).
    backward returns None: ids have no gradient.
    """

    def __init__(self, vocab_size, dim, padding_idx=None, weights=None, trainable=True, *, dtype=np.float32,
                 seed=None, name=None):
        super().__init__(dtype=dtype, seed=seed, name=name)
        self.vocab_size = check_int("Embedding", "vocab_size", vocab_size, minimum=1)
        self.dim = check_int("Embedding", "dim", dim, minimum=1)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not 0 <= padding_idx < self.vocab_size:
                raise ValueError(f"Embedding: padding_idx is {padding_idx!r}, expected None or an integer in "
                                 f"[0, vocab_size={self.vocab_size})")
            padding_idx = int(padding_idx)
        self.padding_idx = padding_idx
        trainable = check_bool("Embedding", "trainable", trainable)
        if weights is not None:
            weights = real_array("Embedding", "weights", weights, self.dtype)
            if weights.shape != (self.vocab_size, self.dim):
                raise ValueError(f"Embedding: weights has shape {weights.shape}, expected "
                                 f"(vocab_size={self.vocab_size}, dim={self.dim})")
            table = np.array(weights, dtype=self.dtype)  # a copy: training must not write into the caller's array
        else:
            table = self._draw(lambda rng, shape, dt: rng.uniform(-0.05, 0.05, size=shape).astype(dt),
                               (self.vocab_size, self.dim))
        if padding_idx is not None:
            table[padding_idx] = 0
        self.embeddings = self._add_parameter("embeddings", table, trainable=trainable)
        self.built = True
        self._cache = None

    def build(self, input_shape) -> None:
        pass  # built in the constructor: the table does not depend on the input shape

    def freeze(self):
        self.embeddings.trainable = False
        return self

    def unfreeze(self):
        self.embeddings.trainable = True
        return self

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape) + (self.dim,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "dim": self.dim, "padding_idx": self.padding_idx,
                "trainable": self.embeddings.trainable, **super().get_config()}

    def forward(self, ids):
        where = self._where("forward")
        given_array = isinstance(ids, np.ndarray)
        ids = as_array(where, "ids", ids)
        if ids.size == 0 and not given_array:
            ids = ids.astype(np.int64)  # NumPy reads an empty list as float64; it is an empty batch of ids
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{where}: ids has dtype {ids.dtype}, expected integer token ids")
        # The output first: ids of impossible size (a broadcast view, say) fail here at once, not after a scan.
        try:
            y = np.empty(ids.shape + (self.dim,), dtype=self.dtype)
        except MemoryError:
            raise MemoryError(f"{where}: ids has shape {ids.shape}; the output {ids.shape + (self.dim,)} of "
                              f"{np.dtype(self.dtype)} cannot be allocated") from None
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)].ravel()[0]
            raise ValueError(f"{where}: ids contains {bad}, expected ids in [0, vocab_size={self.vocab_size})")
        self._keep_cache(ids)
        return _core.embedding_forward(self.embeddings.value, ids, out=y)

    def backward(self, dy):
        ids = self._require_cache()
        where = self._where("backward")
        dy = real_array(where, "dy", dy, self.dtype)
        if dy.shape != ids.shape + (self.dim,):
            raise ValueError(f"{where}: dy has shape {dy.shape}, expected ids.shape + (dim,) = "
                             f"{ids.shape + (self.dim,)}")
        # Repeated ids add up, in id order, bitwise the same for any thread count; the padding row gets nothing.
        _core.embedding_backward(self.embeddings.grad, dy, ids, self.padding_idx)
        return None


# ---------------------------------------------------------------------------------------------------------
# Dense

class Dense(Layer):
    """y = activation(x @ kernel + bias) over the last axis: [N, F] -> [N, units], [N, T, F] -> [N, T, units].

    The engine computes it (rnnext._core.dense_forward / dense_backward, twins in rnnext.reference).
    kernel [F, units] Glorot-uniform, bias [units] zero. activation in None/"linear", "sigmoid", "tanh", "relu",
    "softmax". The losses take logits, so a classifier trained with softmax_cross_entropy or
    binary_cross_entropy_with_logits ends in a linear Dense.
    """

    _ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "softmax")

    def __init__(self, units, activation=None, input_size=None, *, dtype=np.float32, seed=None, name=None):
        super().__init__(dtype=dtype, seed=seed, name=name)
        self.units = check_int("Dense", "units", units, minimum=1)
        activation = "linear" if activation is None else activation
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"Dense: activation is {activation!r}, expected None or one of {self._ACTIVATIONS}")
        self.activation = activation
        self.input_size = None
        self._cache = None
        if input_size is not None:
            self.build((check_int("Dense", "input_size", input_size, minimum=1),))

    def build(self, input_shape) -> None:
        where = self._where("build")
        input_shape = tuple(input_shape)
        if len(input_shape) < 1:
            raise ValueError(f"{where}: input_shape is {input_shape}, expected (..., F)")
        size = self._size_to_build(input_shape, "F", "feature size")
        if size is None:
            return
        self.input_size = size
        self.kernel = self._add_parameter("kernel", self._draw(glorot_uniform, (size, self.units)))
        self.bias = self._add_parameter("bias", np.zeros(self.units, dtype=self.dtype))
        self.built = True

    def compute_output_shape(self, input_shape) -> tuple:
        input_shape = tuple(input_shape)
        if self.built and input_shape[-1] != self.input_size:
            raise ValueError(f"{self._where('compute_output_shape')}: input_shape {shape_text(input_shape)} has "
                             f"F={input_shape[-1]}, but the layer was built for F={self.input_size}")
        return input_shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, "activation": self.activation, "input_size": self.input_size,
                **super().get_config()}

    def forward(self, x):
        where = self._where("forward")
        x = real_array(where, "x", x, self.dtype)
        if x.ndim < 2:
            raise ValueError(f"{where}: x has shape {x.shape}, expected (N, ..., F) with a batch axis")
        if x.shape[-1] == 0:
            raise ValueError(f"{where}: x has shape {x.shape}: F=0 features, expected F >= 1")
        if not self.built:
            self.build(x.shape[1:])
        elif x.shape[-1] != self.input_size:
            raise ValueError(f"{where}: x has shape {x.shape}, expected (N, ..., F={self.input_size})")
        # The engine takes rows [M, F]: all leading axes at once, as one product.
        y = _core.dense_forward(x.reshape(-1, self.input_size), self.kernel.value, self.bias.value,
                                self.activation).reshape(x.shape[:-1] + (self.units,))
        self._keep_cache((x, y))
        return y

    def backward(self, dy):
        x, y = self._require_cache()
        where = self._where("backward")
        dy = real_array(where, "dy", dy, self.dtype)
        if dy.shape != y.shape:
            raise ValueError(f"{where}: dy has shape {dy.shape}, expected the output's shape {y.shape}")
        # The engine adds the weight gradients into the Parameters' grad buffers in place.
        grads = _core.dense_backward(dy.reshape(-1, self.units), y.reshape(-1, self.units),
                                     x.reshape(-1, self.input_size), self.kernel.value, self.activation,
                                     self.kernel.grad, self.bias.grad)
        return grads["x"].reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------
# Dropout

class Dropout(Layer):
    """Inverted dropout: in training mode each element is zeroed with probability `rate` and the rest scaled by
    1 / (1 - rate); identity in eval mode. The last mask is kept in `mask` (None when nothing was dropped)."""

    def __init__(self, rate, *, seed=None, name=None):
        super().__init__(seed=seed, name=name)
        self.rate = check_rate("Dropout", "rate", rate)
        self.mask = None
        self._cache = None
        self.built = True

    def build(self, input_shape) -> None:
        pass

    def get_config(self) -> dict:
        config = {"rate": self.rate, **super().get_config()}
        del config["dtype"]  # the output takes the input's dtype
        return config

    def forward(self, x):
        x = as_array(self._where("forward"), "x", x)
        self.mask = None
        if self.training and self.rate > 0:
            if x.dtype.kind != "f":
                raise ValueError(f"{self._where('forward')}: x has dtype {x.dtype}, expected a floating dtype")
            self.mask = dropout_mask(self.rng, x.shape, self.rate, x.dtype)
            x = x * self.mask
        self._keep_cache(True)
        return x

    def backward(self, dy):
        self._require_cache()
        dy = as_array(self._where("backward"), "dy", dy)
        if self.mask is None:
            return dy
        if dy.shape != self.mask.shape:
            raise ValueError(f"{self._where('backward')}: dy has shape {dy.shape}, expected {self.mask.shape}")
        return dy * self.mask


# ---------------------------------------------------------------------------------------------------------
# configs

LAYER_CLASSES = {"RNN": RNN, "SimpleRNN": RNN, "LSTM": LSTM, "GRU": GRU, "Embedding": Embedding, "Dense": Dense,
                 "Dropout": Dropout, "IndRNN": IndRNN, "MinGRU": MinGRU, "MinLSTM": MinLSTM,
                 "SRU": SRU, "QRNN": QRNN}


def check_custom_objects(where: str, custom_objects) -> dict:
    """The layer classes known to `where`: the built-in ones plus `custom_objects` ({class name: Layer subclass},
    as Keras' `custom_objects` but for layers only), which may override a built-in name."""
    if custom_objects is None:
        return dict(LAYER_CLASSES)
    if not isinstance(custom_objects, dict) or not all(
            isinstance(name, str) and isinstance(cls, type) and issubclass(cls, Layer)
            for name, cls in custom_objects.items()):
        raise ValueError(f"{where}: custom_objects is {custom_objects!r}, expected a dict {{class name: Layer "
                         "subclass}")
    return {**LAYER_CLASSES, **custom_objects}


def layer_from_config(spec: dict, *, custom_objects: dict | None = None) -> Layer:
    """Rebuild a layer from {"class": name, "config": layer.get_config()}; it is built when the config has its
    input size. The weights are freshly initialized (load() fills them from the checkpoint).

    custom_objects: {class name: Layer subclass} for your own layers; the class is called with its saved
    `get_config()` as keyword arguments."""
    classes = check_custom_objects("layer_from_config", custom_objects)
    if not isinstance(spec, dict) or "class" not in spec or "config" not in spec:
        raise ValueError(f"layer_from_config: spec is {spec!r}, expected a dict with keys 'class' and 'config'")
    cls = classes.get(spec["class"])
    if cls is None:
        raise ValueError(f"layer_from_config: class is {spec['class']!r}, expected one of {sorted(classes)}; "
                         "pass custom_objects={name: class} for your own layers")
    if not isinstance(spec["config"], dict):
        raise ValueError(f"layer_from_config: config is {spec['config']!r}, expected a dict")
    upgrade = getattr(cls, "upgrade_config", None)  # configs saved by older versions, read with their meaning
    return cls(**(spec["config"] if upgrade is None else upgrade(spec["config"])))
