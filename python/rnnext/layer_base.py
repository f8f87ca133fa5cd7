"""The base of every layer: the seeding of weights, the initializers and the `Layer` class.

Layers build their weights on first use (or from `input_size`), drawing from their own generator:
`np.random.default_rng(seed)` with `seed=`, else one spawned from the module's default generator at
construction, so `rnnext.seed(n)` followed by the same constructions gives the same weights.
"""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from . import _core
from .parameter import Parameter
from .validation import check_dtype, check_int, shape_text


_default_generator = np.random.default_rng()


def seed(value=None) -> None:
    """Reset the default generator that layers without `seed=` draw their weights and dropout masks from.

    Layers take their own generator from it when they are constructed, so call this before building a model.
    """
    global _default_generator
    _default_generator = np.random.default_rng(value)


def default_generator() -> np.random.Generator:
    """The generator that layers built without `seed=` draw from now (seed() replaces it)."""
    return _default_generator


# False while load() rebuilds a model: weights are then allocated as zeros (the file overwrites them) and the
# default generator is left alone (the file restores each layer's generator state).
_initializing = True


@contextlib.contextmanager
def without_initialization():
    global _initializing
    previous, _initializing = _initializing, False
    try:
        yield
    finally:
        _initializing = previous


# Inference mode (per thread, like torch.inference_mode): forward passes keep nothing for a backward pass.
_inference = threading.local()


@contextlib.contextmanager
def inference_mode():
    """Within this block every forward pass runs without keeping what a backward pass would need: the recurrent
    layers run the engine's cache-free forward (the same outputs, bit for bit, in less memory and time), and
    backward afterwards raises until a forward runs outside the block. It does not switch dropout off: that is
    eval(). `Sequential.predict`, `evaluate`, the experiments' validation and generation run in it."""
    previous = getattr(_inference, "active", False)
    _inference.active = True
    try:
        yield
    finally:
        _inference.active = previous


def inference_active() -> bool:
    """Whether the calling thread is inside `inference_mode()`."""
    return getattr(_inference, "active", False)


def _layer_generator(layer_seed) -> np.random.Generator:
    if layer_seed is not None:
        return np.random.default_rng(layer_seed)
    if not _initializing:
        return np.random.default_rng()
    # A child seeded from the default generator: construction order, not build order, fixes the weights.
    return np.random.default_rng(int(_default_generator.integers(0, 2**63)))


# ---------------------------------------------------------------------------------------------------------
# initializers (drawn in float64, then cast, so float32 and float64 layers with one seed hold the same weights)

def glorot_uniform(rng, shape, dtype):
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) for a [fan_in, fan_out] matrix."""
    fan_in, fan_out = shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def orthogonal(rng, shape, dtype):
    """Keras's Orthogonal over the whole matrix: [H, G*H] gets orthonormal rows (QR of a Gaussian matrix)."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # makes the decomposition unique, hence uniformly distributed
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q).astype(dtype)


# The rows of a combined batch that this process holds (data-parallel training, rnnext.distributed): per thread,
# None outside `batch_shard`.
_shard = threading.local()


@contextlib.contextmanager
def batch_shard(offset: int, total: int):
    """Within this block the batches the layers see are rows `offset, offset + 1, ...` of a combined batch of
    `total` rows, so random masks over the batch are drawn for the combined batch and cut to these rows: K
    processes that each hold a shard draw exactly the masks one process draws for the whole batch, and their
    generators stay in step. rnnext.distributed enters it around every local step."""
    previous = getattr(_shard, "rows", None)
    _shard.rows = (int(offset), int(total))
    try:
        yield
    finally:
        _shard.rows = previous


def batch_uniforms(rng, shape, batch_axis: int = 0) -> np.ndarray:
    """Uniform [0, 1) draws of `shape` whose axis `batch_axis` runs over the batch's rows: `rng.random(shape)`,
    or inside `batch_shard` this shard's rows of the combined batch's draws."""
    shard = getattr(_shard, "rows", None)
    if shard is None:
        return rng.random(shape)
    offset, total = shard
    rows = shape[batch_axis]
    if offset + rows > total:
        raise RuntimeError(f"batch_shard: rows {offset}..{offset + rows - 1} of a combined batch of {total} rows")
    combined = list(shape)
    combined[batch_axis] = total
    return np.take(rng.random(combined), np.arange(offset, offset + rows), axis=batch_axis)


def dropout_mask(rng, shape, rate, dtype, batch_axis: int = 0):
    """Inverted-dropout mask (Dropout and the recurrent layers' inter-layer dropout): 0 with probability `rate`,
    else 1 / (1 - rate). Axis `batch_axis` runs over the batch (see batch_uniforms)."""
    keep = batch_uniforms(rng, shape, batch_axis) >= rate
    return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - rate))


# ---------------------------------------------------------------------------------------------------------
# base class

class Layer:
    """Base class: parameters by name, train/eval mode, a random generator, config and parameter counting.

    Subclasses create their parameters in `build` with `_add_parameter`, and implement `forward`, `backward`,
    `compute_output_shape` and `get_config`.
    """

    takes_lengths = False  # Sequential passes `lengths` to the layers that set this

    def __init__(self, *, dtype=np.float32, seed=None, name=None):
        self.dtype = check_dtype(type(self).__name__, dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"{type(self).__name__}: seed is {seed!r}, expected None or an integer >= 0")
        self.seed = None if seed is None else int(seed)
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ValueError(f"{type(self).__name__}: name is {name!r}, expected a non-empty string without '.'")
        self.name = name
        self.rng = _layer_generator(self.seed)
        self.training = True
        self.built = False
        self._parameters: list = []  # [(name, Parameter)] in creation order
        self._initialize = _initializing  # load() builds without drawing weights it will overwrite

    # -- protocol
    def __call__(self, x, **kwargs):
        return self.forward(x, **kwargs)

    def build(self, input_shape) -> None:
        self.built = True

    def forward(self, x, **kwargs):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed}

    def parameters(self) -> list:
        return [param for _, param in self._parameters]

    def named_parameters(self) -> list:
        return list(self._parameters)

    def zero_grad(self) -> None:
        _core.zero_grads([param.grad for _, param in self._parameters])

    def generators(self) -> dict:
        """The random generators this layer draws from, by name (fit saves and restores their states)."""
        return {"rng": self.rng}

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(f"{self._where('count_params')}: the layer is not built yet; call build(input_shape) "
                             "or pass input_size")
        return sum(param.size for _, param in self._parameters)

    def __repr__(self) -> str:
        config = self.get_config()
        settings = ", ".join(f"{key}={value!r}" for key, value in config.items() if key not in ("name",))
        return f"{type(self).__name__}({settings})"

    # -- helpers for subclasses
    def _where(self, method: str) -> str:
        kind = type(self).__name__
        return f"{self.name} ({kind}).{method}" if self.name else f"{kind}.{method}"

    def _add_parameter(self, name: str, value, trainable: bool = True) -> Parameter:
        param = Parameter(np.asarray(value, dtype=self.dtype), name=name, trainable=trainable)
        self._parameters.append((name, param))
        return param

    def _size_to_build(self, input_shape, letter: str, description: str):
        """input_shape[-1] checked for build(): the size to build for, or None when the layer is built for it
        already (another size is an error naming both)."""
        where, size = self._where("build"), input_shape[-1]
        if self.built:
            if size != self.input_size:
                raise ValueError(f"{where}: input_shape {shape_text(input_shape)} has {letter}={size}, but the layer "
                                 f"was built for {letter}={self.input_size}")
            return None
        return check_int(where, f"the {description} input_shape[-1]", size, minimum=1)

    def _draw(self, init, shape):
        """Initial weights from `init(rng, shape, dtype)`, or zeros when load() will overwrite them anyway."""
        if not self._initialize:
            return np.zeros(shape, dtype=self.dtype)
        return init(self.rng, shape, self.dtype)

    def _keep_cache(self, cache):
        """What forward keeps for backward: `cache`, or nothing under inference_mode()."""
        if inference_active():
            self._cache, self._forward_was_inference = None, True
        else:
            self._cache, self._forward_was_inference = cache, False

    def _require_cache(self, method: str = "backward"):
        cache = getattr(self, "_cache", None)
        if cache is None:
            if getattr(self, "_forward_was_inference", False):
                raise ValueError(f"{self._where(method)}: the last forward pass ran under inference_mode(), which "
                                 "keeps nothing to differentiate; run forward outside it first")
            raise ValueError(f"{self._where(method)}: no forward pass to differentiate; call forward first")
        return cache

    # Everything a forward pass reads besides parameters and inputs (the generator, stateful states): saved and
    # restored around finite-difference evaluations so each one sees the same dropout masks and states.
    def _get_volatile(self):
        return self.rng.bit_generator.state

    def _set_volatile(self, saved) -> None:
        self.rng.bit_generator.state = saved
