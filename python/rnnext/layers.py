"""Layers with explicit forward/backward over NumPy arrays: RNN, LSTM, GRU (the engine does the recurrent math),
Embedding, Dense and Dropout. The contract is docs/api.md; the engine's is docs/conventions.md.

Each layer caches what its backward needs in forward; backward ACCUMULATES parameter gradients (`+=`) and
returns the gradient of its input. Layers build their weights on first use (or from `input_size`), drawing from
their own generator: `np.random.default_rng(seed)` with `seed=`, else one spawned from the module's default
generator at construction, so `rnnext.seed(n)` followed by the same constructions gives the same weights.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from . import _core
from .parameter import Parameter

__all__ = [
    "seed",
    "Layer",
    "Recurrent",
    "RNN",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Embedding",
    "Dense",
    "Dropout",
    "layer_from_config",
]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# ---------------------------------------------------------------------------------------------------------
# seeding

_default_generator = np.random.default_rng()


def seed(value=None) -> None:
    """Reset the default generator that layers without `seed=` draw their weights and dropout masks from.

    Layers take their own generator from it when they are constructed, so call this before building a model.
    """
    global _default_generator
    _default_generator = np.random.default_rng(value)


# False while load() rebuilds a model: weights are then allocated as zeros (the file overwrites them) and the
# default generator is left alone (the file restores each layer's generator state).
_initializing = True


@contextlib.contextmanager
def _without_initialization():
    global _initializing
    previous, _initializing = _initializing, False
    try:
        yield
    finally:
        _initializing = previous


def _layer_generator(layer_seed) -> np.random.Generator:
    if layer_seed is not None:
        return np.random.default_rng(layer_seed)
    if not _initializing:
        return np.random.default_rng()
    # A child seeded from the default generator: construction order, not build order, fixes the weights.
    return np.random.default_rng(int(_default_generator.integers(0, 2**63)))


# ---------------------------------------------------------------------------------------------------------
# initializers (drawn in float64, then cast, so float32 and float64 layers with one seed hold the same weights)

def _glorot_uniform(rng, shape, dtype):
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) for a [fan_in, fan_out] matrix."""
    fan_in, fan_out = shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _orthogonal(rng, shape, dtype):
    """Keras's Orthogonal over the whole matrix: [H, G*H] gets orthonormal rows (QR of a Gaussian matrix)."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # makes the decomposition unique, hence uniformly distributed
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q).astype(dtype)


# ---------------------------------------------------------------------------------------------------------
# small shared checks

def _check_dtype(dtype, where):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{where}: dtype is {dtype!r}, expected float32 or float64") from None
    if dtype not in _DTYPES:
        raise ValueError(f"{where}: dtype is {dtype}, expected float32 or float64")
    return dtype


def _check_positive_int(value, where, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {name} is {value!r}, expected an integer >= 1")
    return int(value)


def _check_bool(value, where, name):
    if value not in (True, False):
        raise ValueError(f"{where}: {name} is {value!r}, expected True or False")
    return bool(value)


def _check_rate(value, where, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0 <= value < 1:
        raise ValueError(f"{where}: {name} is {value!r}, expected a number in [0, 1)")
    return float(value)


def _as_array(value, where, name):
    """np.asarray(value), with NumPy's complaint about a ragged or otherwise unreadable input naming the argument."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{where}: {name} is not a rectangular array of numbers ({error})") from None


def _ndim(value):
    """Number of axes of value as an array, or None where it is not rectangular (a ragged nested list)."""
    try:
        return np.ndim(value)
    except (ValueError, TypeError):
        return None


def _real_array(x, where, name, dtype):
    """x as an array of `dtype` (any real input is cast, as Keras does)."""
    x = _as_array(x, where, name)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {name} has dtype {x.dtype}, expected real numbers")
    return x.astype(dtype, copy=False)


def _shape_text(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------------------
# base class

class Layer:
    """Base class: parameters by name, train/eval mode, a random generator, config and parameter counting.

    Subclasses create their parameters in `build` with `_add_parameter`, and implement `forward`, `backward`,
    `compute_output_shape` and `get_config`.
    """

    takes_lengths = False  # Sequential passes `lengths` to the layers that set this

    def __init__(self, *, dtype=np.float32, seed=None, name=None):
        self.dtype = _check_dtype(dtype, type(self).__name__)
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
        for _, param in self._parameters:
            param.zero_grad()

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

    def _draw(self, init, shape):
        """Initial weights from `init(rng, shape, dtype)`, or zeros when load() will overwrite them anyway."""
        if not self._initialize:
            return np.zeros(shape, dtype=self.dtype)
        return init(self.rng, shape, self.dtype)

    def _require_cache(self, method: str = "backward"):
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise ValueError(f"{self._where(method)}: no forward pass to differentiate; call forward first")
        return cache

    # Everything a forward pass reads besides parameters and inputs (the generator, stateful states): saved and
    # restored around finite-difference evaluations so each one sees the same dropout masks and states.
    def _get_volatile(self):
        return self.rng.bit_generator.state

    def _set_volatile(self, saved) -> None:
        self.rng.bit_generator.state = saved


# ---------------------------------------------------------------------------------------------------------
# recurrent layers

def _reverse_index(lengths, T, N):
    """[T, N] gather index that reverses each row within its own length (positions past it stay put), or None
    when every row is full (then reversal is x[::-1]). It is its own inverse."""
    if lengths is None:
        return None
    t = np.arange(T)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _reverse_time(a, index):
    """a [T, N, F] with each row reversed in time by `index` (see _reverse_index); a new C-contiguous array."""
    if index is None:
        return np.ascontiguousarray(a[::-1])
    return a[index, np.arange(a.shape[1])[None, :]]


class Recurrent(Layer):
    """Stacked, optionally bidirectional recurrent layer over the engine; RNN, LSTM and GRU fill in the cell.

    Parameters per layer k and direction: `kernel [I_k, G*H]`, `recurrent_kernel [H, G*H]`, `bias` (engine
    layouts), named "kernel" ... for one layer and one direction, else "l{k}.forward.kernel" /
    "l{k}.reverse.kernel". I_0 is the input size, I_k = D*H above it (D = 2 when bidirectional).

    `dropout` is applied to the outputs of every layer but the top one (PyTorch semantics), in training mode only.
    After backward, `initial_state_grad` holds the gradient of the initial states (the structure of `states`),
    for example to continue backpropagation into an encoder whose final states were passed as `initial_state`.
    `step()` runs without dropout and does not touch the cache of the last forward.
    Stateful states are not saved in checkpoints.
    """

    takes_lengths = True
    _has_cell_state = False

    def __init__(self, units, *, input_size=None, num_layers=1, bidirectional=False, dropout=0.0,
                 return_sequences=False, return_state=False, batch_first=True, stateful=False,
                 dtype=np.float32, seed=None, name=None):
        super().__init__(dtype=dtype, seed=seed, name=name)
        where = type(self).__name__
        self.units = _check_positive_int(units, where, "units")
        self.num_layers = _check_positive_int(num_layers, where, "num_layers")
        self.bidirectional = _check_bool(bidirectional, where, "bidirectional")
        self.dropout = _check_rate(dropout, where, "dropout")
        self.return_sequences = _check_bool(return_sequences, where, "return_sequences")
        self.return_state = _check_bool(return_state, where, "return_state")
        self.batch_first = _check_bool(batch_first, where, "batch_first")
        self.stateful = _check_bool(stateful, where, "stateful")
        self.input_size = None
        self._weights: list = []  # [k][d] -> {"kernel": Parameter, ...}
        self._states = None  # stateful: final states of the last call (detached copies)
        self._cache = None
        self.initial_state_grad = None
        self._pending_input_size = input_size

    def _finish_init(self):
        """Builds from `input_size` once the subclass has set its cell options."""
        if self._pending_input_size is not None:
            size = _check_positive_int(self._pending_input_size, type(self).__name__, "input_size")
            self.build((None, size))
        del self._pending_input_size

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    # -- cell description, filled in by subclasses
    def _gates(self) -> int:
        raise NotImplementedError

    def _bias_shape(self) -> tuple:
        return (self._gates() * self.units,)

    def _initial_bias(self):
        return np.zeros(self._bias_shape(), dtype=self.dtype)

    def _extra_parameters(self) -> dict:
        return {}

    def _engine_forward(self, x, state, w, lengths):
        raise NotImplementedError

    def _engine_backward(self, dy, dstate, cache, x, w, lengths):
        raise NotImplementedError

    # -- building
    def build(self, input_shape) -> None:
        where = self._where("build")
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{where}: input_shape is {input_shape}, expected (T, I) without the batch axis")
        size = input_shape[-1]
        if self.built:
            if size != self.input_size:
                raise ValueError(f"{where}: input_shape {_shape_text(input_shape)} has I={size}, but the layer was "
                                 f"built for I={self.input_size}")
            return
        size = _check_positive_int(size, where, "the input size input_shape[-1]")
        H, G = self.units, self._gates()
        self.input_size = size
        self._weights = []
        for k in range(self.num_layers):
            layer_input = size if k == 0 else self.num_directions * H
            directions = []
            for d in range(self.num_directions):
                prefix = ""
                if self.num_layers > 1 or self.bidirectional:
                    prefix = f"l{k}.{'forward' if d == 0 else 'reverse'}."
                w = {
                    "kernel": self._add_parameter(prefix + "kernel",
                                                  self._draw(_glorot_uniform, (layer_input, G * H))),
                    "recurrent_kernel": self._add_parameter(prefix + "recurrent_kernel",
                                                            self._draw(_orthogonal, (H, G * H))),
                    "bias": self._add_parameter(prefix + "bias", self._initial_bias()),
                }
                for extra_name, value in self._extra_parameters().items():
                    w[extra_name] = self._add_parameter(prefix + extra_name, value)
                directions.append(w)
            self._weights.append(directions)
        self.built = True

    def compute_output_shape(self, input_shape) -> tuple:
        """(T, D*H) with return_sequences, else (D*H,); the states of return_state are not included."""
        input_shape = tuple(input_shape)
        where = self._where("compute_output_shape")
        if len(input_shape) != 2:
            raise ValueError(f"{where}: input_shape is {input_shape}, expected (T, I) without the batch axis")
        if self.built and input_shape[-1] != self.input_size:
            raise ValueError(f"{where}: input_shape {_shape_text(input_shape)} has I={input_shape[-1]}, but the "
                             f"layer was built for I={self.input_size}")
        features = self.num_directions * self.units
        return (input_shape[0], features) if self.return_sequences else (features,)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "input_size": self.input_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "batch_first": self.batch_first,
            "stateful": self.stateful,
            **super().get_config(),
        }

    # -- states
    @property
    def states(self):
        """The states a stateful layer carries into its next call (copies), or None before the first call."""
        if self._states is None:
            return None
        return [tuple(a.copy() for a in s) if self._has_cell_state else s.copy() for s in self._states]

    def reset_states(self) -> None:
        """Forget the states a stateful layer carries between calls (the next call starts from zeros)."""
        self._states = None

    def _zero_state(self, N):
        h = np.zeros((N, self.units), dtype=self.dtype)
        return (h, h.copy()) if self._has_cell_state else h

    def _normalize_states(self, states, N, method, name, allow_none_entries):
        """`states` as a list of L*D entries, each h [N, H] (or (h, c) for LSTM) of the layer dtype.

        With a single layer and direction a bare h (or a pair (h, c)) is accepted too, as Keras takes it.
        With allow_none_entries (gradients), entries and their parts may be None, meaning zero.
        """
        where = self._where(method)
        count = self.num_layers * self.num_directions
        H = self.units
        structure = "(h, c) pairs" if self._has_cell_state else "h arrays"
        if count == 1:
            if self._has_cell_state:
                if isinstance(states, (list, tuple)) and len(states) == 2 and all(
                        s is None or _ndim(s) == 2 for s in states):
                    states = [tuple(states)]
            elif states is None or _ndim(states) == 2:
                states = [states]
        if not isinstance(states, (list, tuple)) or len(states) != count:
            got = f"a {type(states).__name__} of length {len(states)}" if isinstance(states, (list, tuple)) \
                else type(states).__name__
            raise ValueError(f"{where}: {name} is {got}, expected a list of {count} {structure} (one per layer and "
                             f"direction, layer-major, forward before reverse)")

        def one(array, label):
            if array is None:
                if allow_none_entries:
                    return None
                raise ValueError(f"{where}: {label} is None, expected an array of shape (N={N}, H={H})")
            array = _real_array(array, where, label, self.dtype)
            if array.shape != (N, H):
                raise ValueError(f"{where}: {label} has shape {array.shape}, expected (N={N}, H={H})")
            return np.ascontiguousarray(array)

        out = []
        for index, entry in enumerate(states):
            if self._has_cell_state:
                if entry is None and allow_none_entries:
                    out.append((None, None))
                    continue
                if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                    raise ValueError(f"{where}: {name}[{index}] is {type(entry).__name__}, expected a pair (h, c) "
                                     f"of arrays (N={N}, H={H})")
                out.append((one(entry[0], f"{name}[{index}][0] (h)"), one(entry[1], f"{name}[{index}][1] (c)")))
            else:
                out.append(one(entry, f"{name}[{index}]"))
        return out

    def _initial_states(self, initial_state, N, method):
        if initial_state is not None:
            return self._normalize_states(initial_state, N, method, "initial_state", allow_none_entries=False)
        if self.stateful and self._states is not None:
            first = self._states[0][0] if self._has_cell_state else self._states[0]
            if first.shape[0] != N:
                raise ValueError(f"{self._where(method)}: the stateful layer carries states for N={first.shape[0]} "
                                 f"rows but x has N={N}; call reset_states() before changing the batch size")
            return self._states
        return [self._zero_state(N) for _ in range(self.num_layers * self.num_directions)]

    # -- input checks
    def _time_major_input(self, x, method):
        """x as a C-contiguous time-major array [T, N, I] of the layer dtype; builds the layer on first use."""
        where = self._where(method)
        layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
        x = _real_array(x, where, "x", self.dtype)
        if x.ndim != 3:
            raise ValueError(f"{where}: x has shape {x.shape}, expected {layout}")
        shape = x.shape
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        T, N, size = x.shape
        if T == 0 or N == 0:
            raise ValueError(f"{where}: x has shape {shape} {layout}, expected at least one step and one row")
        if size == 0:
            raise ValueError(f"{where}: x has shape {shape} {layout}: I=0 input features, expected I >= 1")
        if not self.built:
            self.build((T, size))
        elif size != self.input_size:
            raise ValueError(f"{where}: x has shape {shape}, expected {layout[:-2]}I={self.input_size}) (the layer "
                             f"was built for {self.input_size} input features)")
        return np.ascontiguousarray(x)

    def _check_lengths(self, lengths, T, N, method):
        if lengths is None:
            return None
        where = self._where(method)
        lengths = _as_array(lengths, where, "lengths")
        if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"{where}: lengths has shape {lengths.shape} and dtype {lengths.dtype}, expected "
                             f"integers of shape (N={N},)")
        if lengths.min() < 0 or lengths.max() > T:
            raise ValueError(f"{where}: lengths has values in [{lengths.min()}, {lengths.max()}], expected values "
                             f"in [0, T={T}]")
        return np.ascontiguousarray(lengths, dtype=np.int64)

    # -- forward / backward
    def forward(self, x, initial_state=None, lengths=None):
        """x [N, T, I] (or [T, N, I] with batch_first=False) -> output, or (output, states) with return_state."""
        x_tm = self._time_major_input(x, "forward")
        T, N, _ = x_tm.shape
        lengths = self._check_lengths(lengths, T, N, "forward")
        states0 = self._initial_states(initial_state, N, "forward")
        D = self.num_directions
        reverse = _reverse_index(lengths, T, N) if self.bidirectional else None

        runs = []  # per (k, d): (engine input, engine cache)
        masks = []  # dropout mask applied to the output of layer k (k < L-1), or None
        final_states = []
        layer_input = x_tm
        for k in range(self.num_layers):
            outputs = []
            for d in range(D):
                w = self._weights[k][d]
                x_dir = layer_input if d == 0 else _reverse_time(layer_input, reverse)
                y, final, cache = self._engine_forward(x_dir, states0[k * D + d], w, lengths)
                runs.append((x_dir, cache))
                final_states.append(final)
                outputs.append(y if d == 0 else _reverse_time(y, reverse))
            out = outputs[0] if D == 1 else np.concatenate(outputs, axis=2)  # [T, N, D*H]
            if k < self.num_layers - 1:
                mask = None
                if self.training and self.dropout > 0:
                    keep = self.rng.random(out.shape) >= self.dropout
                    mask = keep.astype(self.dtype) * self.dtype.type(1.0 / (1.0 - self.dropout))
                    out = out * mask
                masks.append(mask)
            layer_input = out

        if self.return_sequences:
            output = np.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out
        else:
            top = final_states[-D:]
            tops = [s[0] if self._has_cell_state else s for s in top]
            output = tops[0].copy() if D == 1 else np.concatenate(tops, axis=1)

        if self.stateful:  # detached copies: gradients never flow across calls
            self._states = [tuple(a.copy() for a in s) if self._has_cell_state else s.copy() for s in final_states]
        self._cache = {"T": T, "N": N, "lengths": lengths, "reverse": reverse, "runs": runs, "masks": masks}
        if self.return_state:
            return output, final_states
        return output

    def backward(self, dy, dstates=None):
        """Gradient of the input given dy (the output's shape, or None for zero) and optionally dstates (the
        structure of `states`; entries may be None). Accumulates parameter gradients; sets initial_state_grad."""
        cache = self._require_cache()
        where = self._where("backward")
        T, N, lengths, reverse = cache["T"], cache["N"], cache["lengths"], cache["reverse"]
        D, H, L = self.num_directions, self.units, self.num_layers

        dy_sequence = None  # time-major [T, N, D*H] gradient on the top layer's outputs
        dh_top = [None] * D  # gradient on the top layer's final h per direction (from dy without return_sequences)
        if dy is not None:
            dy = _real_array(dy, where, "dy", self.dtype)
            if self.return_sequences:
                expected = (N, T, D * H) if self.batch_first else (T, N, D * H)
                letters = "(N={}, T={}, D*H={})" if self.batch_first else "(T={}, N={}, D*H={})"
                if dy.shape != expected:
                    raise ValueError(f"{where}: dy has shape {dy.shape}, expected {letters.format(*expected)}")
                dy_sequence = dy.transpose(1, 0, 2) if self.batch_first else dy
            else:
                if dy.shape != (N, D * H):
                    raise ValueError(f"{where}: dy has shape {dy.shape}, expected (N={N}, D*H={D * H})")
                dh_top = [np.ascontiguousarray(dy[:, d * H:(d + 1) * H]) for d in range(D)]
        if dstates is not None:
            dstates = self._normalize_states(dstates, N, "backward", "dstates", allow_none_entries=True)
        else:
            dstates = [(None, None) if self._has_cell_state else None for _ in range(L * D)]

        initial_grads = [None] * (L * D)
        d_out = dy_sequence
        for k in reversed(range(L)):
            dx_layer = None
            for d in range(D):
                index = k * D + d
                x_dir, engine_cache = cache["runs"][index]
                w = self._weights[k][d]
                dy_dir = None
                if d_out is not None:
                    dy_dir = d_out[:, :, d * H:(d + 1) * H] if D > 1 else d_out
                    dy_dir = _reverse_time(dy_dir, reverse) if d == 1 else np.ascontiguousarray(dy_dir)
                dstate = dstates[index]
                if k == L - 1 and dh_top[d] is not None:
                    if self._has_cell_state:
                        dh = dh_top[d] if dstate[0] is None else dh_top[d] + dstate[0]
                        dstate = (dh, dstate[1])
                    else:
                        dstate = dh_top[d] if dstate is None else dh_top[d] + dstate
                dx_dir, dstate0, grads = self._engine_backward(dy_dir, dstate, engine_cache, x_dir, w, lengths)
                for param_name, param in w.items():
                    param.grad += grads[param_name]
                initial_grads[index] = dstate0
                if d == 1:
                    dx_dir = _reverse_time(dx_dir, reverse)
                dx_layer = dx_dir if dx_layer is None else dx_layer + dx_dir
            if k > 0:
                mask = cache["masks"][k - 1]
                d_out = dx_layer if mask is None else dx_layer * mask
        self.initial_state_grad = initial_grads
        if self.batch_first:
            return np.ascontiguousarray(dx_layer.transpose(1, 0, 2))
        return dx_layer

    def step(self, x_t, state=None):
        """One time step for generation: x_t [N, I] -> (h_t [N, H], state). `state` has the structure of
        `states` (None: zeros; a stateful layer's carried states are not used). Same engine call as forward with
        T=1, in inference mode (no dropout); the cache of the last forward is left alone."""
        where = self._where("step")
        if self.bidirectional:
            raise ValueError(f"{where}: step needs a single direction; this layer is bidirectional")
        x_t = _real_array(x_t, where, "x_t", self.dtype)
        if x_t.ndim != 2:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected (N, I)")
        N, size = x_t.shape
        if N == 0:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected at least one row")
        if not self.built:
            self.build((None, size))
        elif size != self.input_size:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected (N, I={self.input_size})")
        if state is None:
            states = [self._zero_state(N) for _ in range(self.num_layers)]
        else:
            states = self._normalize_states(state, N, "step", "state", allow_none_entries=False)
        layer_input = np.ascontiguousarray(x_t[None])  # [1, N, I]
        new_states = []
        for k in range(self.num_layers):
            y, final, _ = self._engine_forward(layer_input, states[k], self._weights[k][0], None)
            new_states.append(final)
            layer_input = y
        return layer_input[0], new_states

    # -- volatile state: generator and stateful states
    def _get_volatile(self):
        return super()._get_volatile(), self.states

    def _set_volatile(self, saved) -> None:
        generator_state, states = saved
        super()._set_volatile(generator_state)
        self._states = states


class RNN(Recurrent):
    """Simple (Elman) RNN: h_new = activation(x @ kernel + h @ recurrent_kernel + bias). `SimpleRNN` is an alias."""

    _ACTIVATIONS = ("tanh", "relu", "sigmoid")

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"RNN: activation is {activation!r}, expected one of {self._ACTIVATIONS}")
        self.activation = activation
        self._finish_init()

    def _gates(self) -> int:
        return 1

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation}

    def _engine_forward(self, x, state, w, lengths):
        return _core.rnn_forward(x, state, w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value,
                                 lengths=lengths, activation=self.activation)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths):
        grads = _core.rnn_backward(dy, dstate, cache, x, w["kernel"].value, w["recurrent_kernel"].value,
                                   w["bias"].value, lengths=lengths, activation=self.activation)
        return grads["x"], grads["h0"], grads


SimpleRNN = RNN


class LSTM(Recurrent):
    """LSTM, gate order i, f, g, o (coupled: f, g, o with i = 1 - f), optional peepholes (`peephole [P, H]`, zero
    at start). The forget-gate block of every bias starts at `forget_bias`."""

    _has_cell_state = True

    def __init__(self, units, *, peephole=False, coupled=False, forget_bias=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.peephole = _check_bool(peephole, "LSTM", "peephole")
        self.coupled = _check_bool(coupled, "LSTM", "coupled")
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

    def _engine_forward(self, x, state, w, lengths):
        peephole = w["peephole"].value if self.peephole else None
        y, h_n, c_n, cache = _core.lstm_forward(x, state[0], state[1], w["kernel"].value,
                                                w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                                lengths=lengths, coupled=self.coupled)
        return y, (h_n, c_n), cache

    def _engine_backward(self, dy, dstate, cache, x, w, lengths):
        peephole = w["peephole"].value if self.peephole else None
        grads = _core.lstm_backward(dy, dstate[0], dstate[1], cache, x, w["kernel"].value,
                                    w["recurrent_kernel"].value, w["bias"].value, peephole=peephole,
                                    lengths=lengths, coupled=self.coupled)
        return grads["x"], (grads["h0"], grads["c0"]), grads


class GRU(Recurrent):
    """GRU, gate order r, z, n; h_new = (1 - z) * n + z * h. reset_after=True (cuDNN/PyTorch/Keras default) has
    bias [2, 3H] (input and recurrent biases), reset_after=False bias [3H]."""


    def __init__(self, units, *, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = _check_bool(reset_after, "GRU", "reset_after")
        self._finish_init()

    def _gates(self) -> int:
        return 3

    def _bias_shape(self) -> tuple:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def get_config(self) -> dict:
        return {**super().get_config(), "reset_after": self.reset_after}

    def _engine_forward(self, x, state, w, lengths):
        return _core.gru_forward(x, state, w["kernel"].value, w["recurrent_kernel"].value, w["bias"].value,
                                 lengths=lengths, reset_after=self.reset_after)

    def _engine_backward(self, dy, dstate, cache, x, w, lengths):
        grads = _core.gru_backward(dy, dstate, cache, x, w["kernel"].value, w["recurrent_kernel"].value,
                                   w["bias"].value, lengths=lengths, reset_after=self.reset_after)
        return grads["x"], grads["h0"], grads


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
        self.vocab_size = _check_positive_int(vocab_size, "Embedding", "vocab_size")
        self.dim = _check_positive_int(dim, "Embedding", "dim")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not 0 <= padding_idx < self.vocab_size:
                raise ValueError(f"Embedding: padding_idx is {padding_idx!r}, expected None or an integer in "
                                 f"[0, vocab_size={self.vocab_size})")
            padding_idx = int(padding_idx)
        self.padding_idx = padding_idx
        trainable = _check_bool(trainable, "Embedding", "trainable")
        if weights is not None:
            weights = _real_array(weights, "Embedding", "weights", self.dtype)
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
        ids = _as_array(ids, where, "ids")
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
        self._cache = ids
        np.take(self.embeddings.value, ids, axis=0, out=y)
        return y

    def backward(self, dy):
        ids = self._require_cache()
        where = self._where("backward")
        dy = _real_array(dy, where, "dy", self.dtype)
        if dy.shape != ids.shape + (self.dim,):
            raise ValueError(f"{where}: dy has shape {dy.shape}, expected ids.shape + (dim,) = "
                             f"{ids.shape + (self.dim,)}")
        flat_ids = ids.reshape(-1)
        flat_dy = dy.reshape(-1, self.dim)
        if self.padding_idx is not None:
            keep = flat_ids != self.padding_idx
            flat_ids, flat_dy = flat_ids[keep], flat_dy[keep]
        np.add.at(self.embeddings.grad, flat_ids, flat_dy)  # repeated ids add up
        return None


# ---------------------------------------------------------------------------------------------------------
# Dense

def _sigmoid(a):
    # exp(-a) overflows to inf for very negative a, and 1 / (1 + inf) = 0 is the right answer.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-a))


def _softmax(a):
    exps = np.exp(a - np.max(a, axis=-1, keepdims=True))
    return exps / np.sum(exps, axis=-1, keepdims=True)


class Dense(Layer):
    """y = activation(x @ kernel + bias) over the last axis: [N, F] -> [N, units], [N, T, F] -> [N, T, units].

    kernel [F, units] Glorot-uniform, bias [units] zero. activation in None/"linear", "sigmoid", "tanh", "relu",
    "softmax". The losses take logits, so a classifier trained with softmax_cross_entropy or
    binary_cross_entropy_with_logits ends in a linear Dense.
    """

    _ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "softmax")

    def __init__(self, units, activation=None, input_size=None, *, dtype=np.float32, seed=None, name=None):
        super().__init__(dtype=dtype, seed=seed, name=name)
        self.units = _check_positive_int(units, "Dense", "units")
        activation = "linear" if activation is None else activation
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"Dense: activation is {activation!r}, expected None or one of {self._ACTIVATIONS}")
        self.activation = activation
        self.input_size = None
        self._cache = None
        if input_size is not None:
            self.build((_check_positive_int(input_size, "Dense", "input_size"),))

    def build(self, input_shape) -> None:
        where = self._where("build")
        input_shape = tuple(input_shape)
        if len(input_shape) < 1:
            raise ValueError(f"{where}: input_shape is {input_shape}, expected (..., F)")
        size = input_shape[-1]
        if self.built:
            if size != self.input_size:
                raise ValueError(f"{where}: input_shape {_shape_text(input_shape)} has F={size}, but the layer was "
                                 f"built for F={self.input_size}")
            return
        size = _check_positive_int(size, where, "the feature size input_shape[-1]")
        self.input_size = size
        self.kernel = self._add_parameter("kernel", self._draw(_glorot_uniform, (size, self.units)))
        self.bias = self._add_parameter("bias", np.zeros(self.units, dtype=self.dtype))
        self.built = True

    def compute_output_shape(self, input_shape) -> tuple:
        input_shape = tuple(input_shape)
        if self.built and input_shape[-1] != self.input_size:
            raise ValueError(f"{self._where('compute_output_shape')}: input_shape {_shape_text(input_shape)} has "
                             f"F={input_shape[-1]}, but the layer was built for F={self.input_size}")
        return input_shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, "activation": self.activation, "input_size": self.input_size,
                **super().get_config()}

    def forward(self, x):
        where = self._where("forward")
        x = _real_array(x, where, "x", self.dtype)
        if x.ndim < 2:
            raise ValueError(f"{where}: x has shape {x.shape}, expected (N, ..., F) with a batch axis")
        if x.shape[-1] == 0:
            raise ValueError(f"{where}: x has shape {x.shape}: F=0 features, expected F >= 1")
        if not self.built:
            self.build(x.shape[1:])
        elif x.shape[-1] != self.input_size:
            raise ValueError(f"{where}: x has shape {x.shape}, expected (N, ..., F={self.input_size})")
        # One 2-D GEMM over all leading axes: NumPy's batched matmul on [N, T, F] is several times slower.
        a = (x.reshape(-1, self.input_size) @ self.kernel.value).reshape(x.shape[:-1] + (self.units,))
        a += self.bias.value
        if self.activation == "linear":
            y = a
        elif self.activation == "sigmoid":
            y = _sigmoid(a)
        elif self.activation == "tanh":
            y = np.tanh(a)
        elif self.activation == "relu":
            y = np.maximum(a, 0)
        else:
            y = _softmax(a)
        self._cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._require_cache()
        where = self._where("backward")
        dy = _real_array(dy, where, "dy", self.dtype)
        if dy.shape != y.shape:
            raise ValueError(f"{where}: dy has shape {dy.shape}, expected the output's shape {y.shape}")
        # backprop through the activation (derivatives written on the output y)
        if self.activation == "linear":
            da = dy
        elif self.activation == "sigmoid":
            da = dy * y * (1 - y)
        elif self.activation == "tanh":
            da = dy * (1 - y * y)
        elif self.activation == "relu":
            da = dy * (y > 0)
        else:
            da = y * (dy - np.sum(dy * y, axis=-1, keepdims=True))
        # backprop through a = x @ kernel + bias, over all leading axes at once
        flat_x = x.reshape(-1, self.input_size)
        flat_da = da.reshape(-1, self.units)
        self.kernel.grad += flat_x.T @ flat_da
        self.bias.grad += flat_da.sum(axis=0)
        return (flat_da @ self.kernel.value.T).reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------
# Dropout

class Dropout(Layer):
    """Inverted dropout: in training mode each element is zeroed with probability `rate` and the rest scaled by
    1 / (1 - rate); identity in eval mode. The last mask is kept in `mask` (None when nothing was dropped)."""

    def __init__(self, rate, *, seed=None, name=None):
        super().__init__(seed=seed, name=name)
        self.rate = _check_rate(rate, "Dropout", "rate")
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
        x = _as_array(x, self._where("forward"), "x")
        self.mask = None
        if self.training and self.rate > 0:
            if x.dtype.kind != "f":
                raise ValueError(f"{self._where('forward')}: x has dtype {x.dtype}, expected a floating dtype")
            keep = self.rng.random(x.shape) >= self.rate
            self.mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
            x = x * self.mask
        self._cache = True
        return x

    def backward(self, dy):
        self._require_cache()
        dy = _as_array(dy, self._where("backward"), "dy")
        if self.mask is None:
            return dy
        if dy.shape != self.mask.shape:
            raise ValueError(f"{self._where('backward')}: dy has shape {dy.shape}, expected {self.mask.shape}")
        return dy * self.mask


# ---------------------------------------------------------------------------------------------------------
# configs

LAYER_CLASSES = {"RNN": RNN, "SimpleRNN": RNN, "LSTM": LSTM, "GRU": GRU, "Embedding": Embedding, "Dense": Dense,
                 "Dropout": Dropout}


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
    return cls(**spec["config"])
