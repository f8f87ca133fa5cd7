"""The recurrent layer over the engine, stacked and optionally bidirectional; the cells are in cells.py.

Inside this module a state is always a tuple per layer and direction, `(h,)` for RNN and GRU, `(h, c)` for
LSTM and SRU, `(h, c, x)` for QRNN (x: its input history), in a list of L*D entries (layer-major, forward before
reverse). The public form (a bare h per entry for RNN and GRU, a tuple for the others, a lone entry accepted for
one layer and direction as Keras takes it) is read and written only at the edge: `_states_from_api` and
`_states_to_api`.
"""
from __future__ import annotations

import numpy as np

from . import cuda
from .layer_base import Layer, batch_uniforms, dropout_mask, glorot_uniform, inference_active, orthogonal
from .stepping import LayerByLayer, Stepper
from .validation import as_array, check_bool, check_int, check_rate, ndim, real_array, shape_text

__all__ = ["Recurrent"]


# ---------------------------------------------------------------------------------------------------------
# the pieces of a stacked, bidirectional pass

def _reverse_index(lengths, T):
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


def _forward_layer(cell_forward, layer_input, states, weights, lengths, reverse, keep_cache, masks):
    """One layer of the stack, each direction over layer_input [T, N, I]: the forward direction as it is, the
    reverse one on the input reversed within each row's length, each with its engine masks (or None). Returns the
    outputs side by side [T, N, D*H], the final states per direction and what backward needs per direction,
    (engine input, engine cache, masks), the cache None unless keep_cache."""
    outputs, finals, runs = [], [], []
    for d, (state, w, m) in enumerate(zip(states, weights, masks)):
        x_dir = layer_input if d == 0 else _reverse_time(layer_input, reverse)
        y, final, cache = cell_forward(x_dir, state, w, lengths, keep_cache, m)
        outputs.append(y if d == 0 else _reverse_time(y, reverse))
        finals.append(final)
        runs.append((x_dir, cache, m))
    out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
    return out, finals, runs


def _backward_layer(cell_backward, d_out, dstates, runs, weights, lengths, reverse, units):
    """Backward of _forward_layer: d_out [T, N, D*H] (or None), the final states' gradients per direction.
    Accumulates the parameter gradients; returns the gradient of the layer's input [T, N, I] and of the initial
    states per direction."""
    D = len(runs)
    dx_layer, dstates0 = None, []
    for d, ((x_dir, cache, masks), dstate, w) in enumerate(zip(runs, dstates, weights)):
        dy_dir = None
        if d_out is not None:
            dy_dir = d_out[:, :, d * units:(d + 1) * units] if D > 1 else d_out
            dy_dir = _reverse_time(dy_dir, reverse) if d == 1 else np.ascontiguousarray(dy_dir)
        dx_dir, dstate0, grads = cell_backward(dy_dir, dstate, cache, x_dir, w, lengths, masks)
        for param_name, param in w.items():
            param.grad += grads[param_name]
        dstates0.append(dstate0)
        if d == 1:
            dx_dir = _reverse_time(dx_dir, reverse)
        dx_layer = dx_dir if dx_layer is None else dx_layer + dx_dir
    return dx_layer, dstates0


def _add_to_h(state, dh):
    """The state gradient `state` (a tuple, parts may be None) with dh added to its h."""
    h = state[0]
    return (dh if h is None else dh + h,) + tuple(state[1:])


def _copy_states(states):
    return None if states is None else [tuple(a.copy() for a in s) for s in states]


# ---------------------------------------------------------------------------------------------------------
# the layer

class Recurrent(Layer):
    """Stacked, optionally bidirectional recurrent layer over the engine; RNN, LSTM and GRU fill in the cell.

    Parameters per layer k and direction: `kernel [I_k, G*H]`, `recurrent_kernel [H, G*H]`, `bias` (engine
    layouts), named "kernel" ... for one layer and one direction, else "l{k}.forward.kernel" /
    "l{k}.reverse.kernel". I_0 is the input size, I_k = D*H above it (D = 2 when bidirectional).

    Regularisation, in training mode only (docs/api.md, "Dropout and zoneout in the recurrent layers"):
    `dropout` and `recurrent_dropout` as Keras means them, one mask per sequence (per layer and direction, the same
    at every step) on the layer's inputs and on h[t] where it enters the recurrent product; `weight_drop` one mask
    per forward call on `recurrent_kernel` (Merity et al. 2017); `zoneout` (Krueger et al. 2016) on h (and c: a pair
    (z_h, z_c) for the LSTM), whose expectation is used outside training; `layer_dropout` on the outputs of every
    layer but the top one (PyTorch's `dropout`). All masks come from the layer's generator `rng`.
    After backward, `initial_state_grad` holds the gradient of the initial states (the structure of `states`),
    for example to continue backpropagation into an encoder whose final states were passed as `initial_state`.
    `step()` runs without dropout and does not touch the cache of the last forward.
    A stateful layer's carried states are read and set through `states` and cleared, all rows or some, with
    `reset_states`; they are not saved in checkpoints.
    """

    takes_lengths = True
    _state_names = ("h",)  # the parts of one layer's state: ("h",), ("h", "c") or QRNN's ("h", "c", "x")

    def __init__(self, units, *, input_size=None, num_layers=1, bidirectional=False, dropout=0.0,
                 recurrent_dropout=0.0, weight_drop=0.0, zoneout=0.0, layer_dropout=0.0,
                 return_sequences=False, return_state=False, batch_first=True, stateful=False,
                 dtype=np.float32, seed=None, name=None, device="cpu"):
        super().__init__(dtype=dtype, seed=seed, name=name)
        where = type(self).__name__
        self.units = check_int(where, "units", units, minimum=1)
        self.num_layers = check_int(where, "num_layers", num_layers, minimum=1)
        self.bidirectional = check_bool(where, "bidirectional", bidirectional)
        # -- regularisers (issue 15)
        self.dropout = check_rate(where, "dropout", dropout)
        self.recurrent_dropout = check_rate(where, "recurrent_dropout", recurrent_dropout)
        self.weight_drop = check_rate(where, "weight_drop", weight_drop)
        self.layer_dropout = check_rate(where, "layer_dropout", layer_dropout)
        self.zoneout = self._check_zoneout(where, zoneout)
        if not self._takes_masks:
            for arg in ("dropout", "recurrent_dropout", "weight_drop"):
                if getattr(self, arg):
                    raise ValueError(f"{where}: {arg}={getattr(self, arg)} is not an option of this cell (RNN, LSTM "
                                     "and GRU have it); use layer_dropout between stacked layers or a Dropout layer")
        # --
        self.return_sequences = check_bool(where, "return_sequences", return_sequences)
        self.return_state = check_bool(where, "return_state", return_state)
        self.batch_first = check_bool(where, "batch_first", batch_first)
        self.stateful = check_bool(where, "stateful", stateful)
        self.input_size = None
        self._weights: list = []  # [k][d] -> {"kernel": Parameter, ...}
        self._carried = None  # stateful: final states of the last call (detached copies, internal form)
        self._cache = None
        self.initial_state_grad = None
        self._pending_input_size = input_size
        self.device = device  # where forward and backward run: "cpu" or "cuda" (rnnext/cuda.py)

    def _finish_init(self):
        """Builds from `input_size` once the subclass has set its cell options."""
        if self._pending_input_size is not None:
            size = check_int(type(self).__name__, "input_size", self._pending_input_size, minimum=1)
            self.build((None, size))
        del self._pending_input_size

    # -- the device that runs forward and backward (rnnext/cuda.py), read at each forward call; not saved in
    # checkpoints, which load on the CPU
    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value) -> None:
        self._device = cuda.check_device(self, value)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """A config saved before the Keras-style masks existed (no "layer_dropout" key) meant by "dropout" the
        dropout between stacked layers: it loads with that meaning."""
        if "layer_dropout" in config:
            return config
        config = dict(config)
        config["layer_dropout"] = config.pop("dropout", 0.0)
        return config

    # Whether the engine cell takes masks (dropout, recurrent_dropout, weight_drop), and the zoneout rates it
    # takes: ("h",), or ("h", "c") for the LSTM; () for a cell without zoneout.
    _takes_masks = False
    _zoneout_parts = ()

    def _check_zoneout(self, where, zoneout):
        """zoneout as a tuple of rates, one per part of _zoneout_parts (a single number is used for each)."""
        parts = self._zoneout_parts
        single = not isinstance(zoneout, (tuple, list))
        rates = [zoneout] * max(len(parts), 1) if single else list(zoneout)
        if len(rates) != max(len(parts), 1):
            raise ValueError(f"{where}: zoneout is {zoneout!r}, expected a rate or a pair of rates {tuple(parts)}")
        rates = tuple(check_rate(where, "zoneout", rate) for rate in rates)
        if not parts and any(rates):
            raise ValueError(f"{where}: zoneout is {zoneout!r}, but this cell has no zoneout (RNN, LSTM and GRU have)")
        return rates[0] if single or len(rates) == 1 else rates

    def _zoneout_rates(self):
        """{engine key: rate} of the zoneout rates that are on."""
        rates = self.zoneout if isinstance(self.zoneout, tuple) else (self.zoneout,) * len(self._zoneout_parts)
        return {f"zoneout_{part}": rate for part, rate in zip(self._zoneout_parts, rates) if rate > 0}

    def _draw_masks(self, T, N, layer_input):
        """The engine masks of one layer and direction for this forward, or None: in training the dropout masks
        (batch axis marked, see batch_uniforms) and zoneout's keep masks; outside training zoneout's rates. h's
        masks have the width of h (an LSTM's proj_size), c's the cell's units."""
        H, G, S = self.units, self._gates(), self._output_units()
        masks = {}
        zoneout = self._zoneout_rates()
        if self.training:
            if self.dropout > 0:
                masks["input"] = dropout_mask(self.rng, (N, layer_input), self.dropout, self.dtype, batch_axis=0)
            if self.recurrent_dropout > 0:
                masks["state"] = dropout_mask(self.rng, (N, S), self.recurrent_dropout, self.dtype, batch_axis=0)
            if self.weight_drop > 0:  # one mask for the whole batch: no batch axis
                masks["weight"] = ((self.rng.random((S, G * H)) >= self.weight_drop).astype(self.dtype)
                                   * np.dtype(self.dtype).type(1.0 / (1.0 - self.weight_drop)))
            for key, rate in zoneout.items():
                width = S if key == "zoneout_h" else H
                masks[key] = (batch_uniforms(self.rng, (T, N, width), batch_axis=1) < rate).astype(self.dtype)
        else:
            masks.update(zoneout)
        return masks or None

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

    def _output_units(self) -> int:
        """The width of h and of each direction's output: `units`, or an LSTM's proj_size."""
        return self.units

    def _cell_parameters(self, layer_input) -> dict:
        """Initial values of one layer and direction's parameters, by name, in creation order: `kernel`,
        `recurrent_kernel`, `bias` and the extra parameters; a cell without a recurrent kernel replaces it."""
        H, G = self.units, self._gates()
        return {"kernel": self._draw(glorot_uniform, (layer_input, G * H)),
                "recurrent_kernel": self._draw(orthogonal, (H, G * H)),
                "bias": self._initial_bias(), **self._extra_parameters()}

    def _engine_forward(self, x, state, w, lengths, keep_cache=True, masks=None):
        """(y [T, N, H], final state tuple, engine cache) for one layer and direction under its engine masks;
        without keep_cache the engine keeps no cache (None) and gives the same outputs, bit for bit."""
        raise NotImplementedError

    def _engine_backward(self, dy, dstate, cache, x, w, lengths, masks=None):
        """(dx, initial state gradient tuple, parameter gradients by name); dy and parts of dstate may be None."""
        raise NotImplementedError

    # -- building
    def build(self, input_shape) -> None:
        where = self._where("build")
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{where}: input_shape is {input_shape}, expected (T, I) without the batch axis")
        size = self._size_to_build(input_shape, "I", "input size")
        if size is None:
            return
        self.input_size = size
        self._weights = []
        for k in range(self.num_layers):
            layer_input = size if k == 0 else self.num_directions * self._output_units()
            directions = []
            for d in range(self.num_directions):
                prefix = ""
                if self.num_layers > 1 or self.bidirectional:
                    prefix = f"l{k}.{'forward' if d == 0 else 'reverse'}."
                w = {name: self._add_parameter(prefix + name, value)
                     for name, value in self._cell_parameters(layer_input).items()}
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
            raise ValueError(f"{where}: input_shape {shape_text(input_shape)} has I={input_shape[-1]}, but the "
                             f"layer was built for I={self.input_size}")
        features = self.num_directions * self._output_units()
        return (input_shape[0], features) if self.return_sequences else (features,)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "input_size": self.input_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "weight_drop": self.weight_drop,
            "zoneout": self.zoneout,
            "layer_dropout": self.layer_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "batch_first": self.batch_first,
            "stateful": self.stateful,
            **super().get_config(),
        }

    # -- states at the API edge
    def _states_to_api(self, states):
        if len(self._state_names) == 1:
            return [s[0] for s in states]
        return [tuple(s) for s in states]

    def _state_width(self, index, part):
        """(label, size) of the second axis of state `part` of entry `index` (layer-major, forward before reverse):
        ("H", units) for h and c; a cell whose state holds something else says so."""
        return "H", self.units

    def _states_from_api(self, states, N, method, name, allow_none_entries):
        """`states` in the public form -> the internal list of L*D tuples of [N, width] arrays of the layer dtype
        (width H unless _state_width says otherwise).

        With allow_none_entries (gradients), entries and their parts may be None, meaning zero; N=None takes
        N from the first array (for the `states` setter)."""
        where = self._where(method)
        count = self.num_layers * self.num_directions
        names = self._state_names
        parts = len(names)
        structure = {1: "h arrays", 2: "(h, c) pairs"}.get(parts, f"({', '.join(names)}) tuples")
        if count == 1:  # a lone entry, as Keras takes it
            if parts > 1:
                if isinstance(states, (list, tuple)) and len(states) == parts and all(
                        s is None or ndim(s) == 2 for s in states):
                    states = [tuple(states)]
            elif states is None or ndim(states) == 2:
                states = [states]
        if not isinstance(states, (list, tuple)) or len(states) != count:
            got = f"a {type(states).__name__} of length {len(states)}" if isinstance(states, (list, tuple)) \
                else type(states).__name__
            raise ValueError(f"{where}: {name} is {got}, expected a list of {count} {structure} (one per layer and "
                             f"direction, layer-major, forward before reverse)")

        def one(array, label, index, part):
            nonlocal N
            letter, width = self._state_width(index, part)
            if array is None:
                if allow_none_entries:
                    return None
                raise ValueError(f"{where}: {label} is None, expected an array of shape (N={N}, {letter}={width})")
            array = real_array(where, label, array, self.dtype)
            if N is None and array.ndim == 2:
                N = array.shape[0]
            if array.shape != (N, width):
                raise ValueError(f"{where}: {label} has shape {array.shape}, expected (N={N}, {letter}={width})")
            return np.ascontiguousarray(array)

        out = []
        for index, entry in enumerate(states):
            if parts == 1:
                out.append((one(entry, f"{name}[{index}]", index, names[0]),))
                continue
            if entry is None and allow_none_entries:
                out.append((None,) * parts)
                continue
            if not isinstance(entry, (list, tuple)) or len(entry) != parts:
                kind = "a pair" if parts == 2 else f"a tuple of {parts}"
                raise ValueError(f"{where}: {name}[{index}] is {type(entry).__name__}, expected {kind} "
                                 f"({', '.join(names)}) of arrays (N={N}, H={self.units})")
            out.append(tuple(one(entry[p], f"{name}[{index}][{p}] ({names[p]})", index, names[p])
                             for p in range(parts)))
        return out

    def _zero_states(self, N, count):
        return [tuple(np.zeros((N, self._state_width(index, part)[1]), dtype=self.dtype) for part in self._state_names)
                for index in range(count)]

    # -- carried states of a stateful layer
    @property
    def states(self):
        """The states a stateful layer carries into its next call (copies, in the structure of `initial_state`),
        or None when it carries none (before the first call, after reset_states()).

        Assigning sets them: a stateful layer then starts its next call from these states (copied); None forgets
        them."""
        if self._carried is None:
            return None
        return self._states_to_api(_copy_states(self._carried))

    @states.setter
    def states(self, value) -> None:
        if not self.stateful:
            raise ValueError(f"{self._where('states')}: the layer is not stateful and carries no states; pass "
                             "initial_state to forward instead, or build it with stateful=True")
        if value is None:
            self._carried = None
            return
        self._carried = _copy_states(self._states_from_api(value, None, "states", "states", allow_none_entries=False))

    def reset_states(self, rows=None) -> None:
        """Forget the states a stateful layer carries between calls: all of them (the next call starts from
        zeros), or with `rows` (indices, or a boolean mask over the batch) only those rows, for streams whose
        document ends in the middle of a batch."""
        if rows is None or self._carried is None:
            if rows is not None:
                self._check_rows(rows, None)
            self._carried = None
            return
        rows = self._check_rows(rows, self._carried[0][0].shape[0])
        for state in self._carried:
            for part in state:
                part[rows] = 0

    def _check_rows(self, rows, N):
        """rows as an index array into the carried batch of N rows (N=None: not known, only the kind is checked)."""
        where = self._where("reset_states")
        rows = as_array(where, "rows", rows)
        if rows.ndim != 1 or not (rows.dtype.kind in "iu" or rows.dtype == np.bool_ or rows.size == 0):
            raise ValueError(f"{where}: rows has shape {rows.shape} and dtype {rows.dtype}, expected a 1-D array of "
                             "row indices or a boolean mask over the batch")
        if rows.dtype == np.bool_:
            if N is not None and rows.shape != (N,):
                raise ValueError(f"{where}: rows is a boolean mask of shape {rows.shape}, expected (N={N},), the "
                                 "batch the layer carries states for")
            return rows
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or (N is not None and rows.max() >= N)):
            raise ValueError(f"{where}: rows has values in [{rows.min()}, {rows.max()}], expected row indices in "
                             f"[0, N={N}) (the layer carries states for N={N} rows)" if N is not None else
                             f"{where}: rows has values in [{rows.min()}, {rows.max()}], expected row indices >= 0")
        return rows

    def _initial_states(self, initial_state, N, method):
        if initial_state is not None:
            return self._states_from_api(initial_state, N, method, "initial_state", allow_none_entries=False)
        if self.stateful and self._carried is not None:
            carried_rows = self._carried[0][0].shape[0]
            if carried_rows != N:
                raise ValueError(f"{self._where(method)}: the stateful layer carries states for N={carried_rows} "
                                 f"rows but x has N={N}; call reset_states() before changing the batch size")
            return self._carried
        return self._zero_states(N, self.num_layers * self.num_directions)

    # -- input checks
    def _time_major_input(self, x, method):
        """x as a C-contiguous time-major array [T, N, I] of the layer dtype; builds the layer on first use."""
        where = self._where(method)
        layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
        x = real_array(where, "x", x, self.dtype)
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
        lengths = as_array(where, "lengths", lengths)
        if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"{where}: lengths has shape {lengths.shape} and dtype {lengths.dtype}, expected "
                             f"integers of shape (N={N},)")
        if lengths.min() < 0 or lengths.max() > T:
            raise ValueError(f"{where}: lengths has values in [{lengths.min()}, {lengths.max()}], expected values "
                             f"in [0, T={T}]")
        return np.ascontiguousarray(lengths, dtype=np.int64)

    def _output_gradients(self, dy, T, N, where):
        """dy -> (time-major gradient of the top layer's outputs or None, gradient of its final h per direction)."""
        D, H = self.num_directions, self._output_units()
        if dy is None:
            return None, [None] * D
        dy = real_array(where, "dy", dy, self.dtype)
        if self.return_sequences:
            expected = (N, T, D * H) if self.batch_first else (T, N, D * H)
            letters = "(N={}, T={}, D*H={})" if self.batch_first else "(T={}, N={}, D*H={})"
            if dy.shape != expected:
                raise ValueError(f"{where}: dy has shape {dy.shape}, expected {letters.format(*expected)}")
            return (dy.transpose(1, 0, 2) if self.batch_first else dy), [None] * D
        if dy.shape != (N, D * H):
            raise ValueError(f"{where}: dy has shape {dy.shape}, expected (N={N}, D*H={D * H})")
        return None, [np.ascontiguousarray(dy[:, d * H:(d + 1) * H]) for d in range(D)]

    # -- forward / backward
    def forward(self, x, initial_state=None, lengths=None):
        """x [N, T, I] (or [T, N, I] with batch_first=False) -> output, or (output, states) with return_state."""
        x_tm = self._time_major_input(x, "forward")
        T, N, _ = x_tm.shape
        lengths = self._check_lengths(lengths, T, N, "forward")
        states0 = self._initial_states(initial_state, N, "forward")
        D, L = self.num_directions, self.num_layers
        keep_cache = not inference_active()
        reverse = _reverse_index(lengths, T) if self.bidirectional else None
        on_gpu = self.device == "cuda"  # backward runs where forward ran, whatever device is set by then
        engine_forward = cuda.engine_forward(self) if on_gpu else self._engine_forward
        engine_backward = cuda.engine_backward(self) if on_gpu else self._engine_backward

        runs, masks, final_states = [], [], []  # masks: the dropout on the output of layer k < L-1, or None
        layer_input = x_tm
        for k in range(L):
            cell_masks = [self._draw_masks(T, N, layer_input.shape[2]) for _ in range(D)]
            out, finals, layer_runs = _forward_layer(engine_forward, layer_input, states0[k * D:(k + 1) * D],
                                                     self._weights[k], lengths, reverse, keep_cache, cell_masks)
            runs += layer_runs
            final_states += finals
            if k < L - 1:
                mask = None
                if self.training and self.layer_dropout > 0:
                    mask = dropout_mask(self.rng, out.shape, self.layer_dropout, self.dtype, batch_axis=1)  # time-major
                    out = out * mask
                masks.append(mask)
            layer_input = out

        if self.return_sequences:
            output = np.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out
        else:
            tops = [s[0] for s in final_states[-D:]]
            output = tops[0].copy() if D == 1 else np.concatenate(tops, axis=1)

        if self.stateful:  # detached copies: gradients never flow across calls
            self._carried = _copy_states(final_states)
        self._keep_cache({"T": T, "N": N, "lengths": lengths, "reverse": reverse, "runs": runs, "masks": masks,
                          "engine_backward": engine_backward})
        if self.return_state:
            return output, self._states_to_api(final_states)
        return output

    def backward(self, dy, dstates=None):
        """Gradient of the input given dy (the output's shape, or None for zero) and optionally dstates (the
        structure of `states`; entries may be None). Accumulates parameter gradients; sets initial_state_grad."""
        cache = self._require_cache()
        where = self._where("backward")
        T, N, lengths, reverse = cache["T"], cache["N"], cache["lengths"], cache["reverse"]
        D, L = self.num_directions, self.num_layers

        d_out, dh_top = self._output_gradients(dy, T, N, where)
        if dstates is not None:
            dstates = self._states_from_api(dstates, N, "backward", "dstates", allow_none_entries=True)
        else:
            dstates = [(None,) * len(self._state_names) for _ in range(L * D)]
        dstates[-D:] = [state if dh is None else _add_to_h(state, dh) for state, dh in zip(dstates[-D:], dh_top)]

        initial_grads = [None] * (L * D)
        for k in reversed(range(L)):
            span = slice(k * D, (k + 1) * D)
            dx_layer, initial_grads[span] = _backward_layer(cache["engine_backward"], d_out, dstates[span],
                                                            cache["runs"][span], self._weights[k], lengths, reverse,
                                                            self._output_units())
            if k > 0:
                mask = cache["masks"][k - 1]
                d_out = dx_layer if mask is None else dx_layer * mask
        self.initial_state_grad = self._states_to_api(initial_grads)
        if self.batch_first:
            return np.ascontiguousarray(dx_layer.transpose(1, 0, 2))
        return dx_layer

    def step(self, x_t, state=None):
        """One time step for generation: x_t [N, I] -> (h_t [N, H], state). `state` has the structure of
        `states` (None: zeros; a stateful layer's carried states are not used). The same arithmetic as forward
        with T=1, in inference mode (no dropout); the cache of the last forward is left alone. To step many
        times with unchanged weights, `stepper(N)` packs them once."""
        where = self._where("step")
        x_t = self._step_input(where, x_t)
        return self.stepper(x_t.shape[0]).step(x_t, state)

    def stepper(self, batch_size):
        """A Stepper of `batch_size` rows: `step(x_t, state)` as this layer's `step`, every layer of the stack in
        one engine call, on its own copy of the weights packed once. It keeps the weights as they are now: make
        a new one after they change (training, loading)."""
        where = self._where("stepper")
        if self.bidirectional:
            raise ValueError(f"{where}: stepping needs a single direction; this layer is bidirectional")
        if not self.built:
            raise ValueError(f"{where}: the layer is not built yet; call build(input_shape), pass input_size, or "
                             "run forward or step once")
        batch_size = check_int(where, "batch_size", batch_size, minimum=1)
        layer_weights = [w[0] for w in self._weights]
        if self._zoneout_rates():  # zoneout's expectation: the engine's steppers have no masks
            return Stepper(self, LayerByLayer(self, layer_weights, masks=self._zoneout_rates()), batch_size)
        return Stepper(self, self._engine_stepper(layer_weights, batch_size), batch_size)

    def _engine_stepper(self, layer_weights, batch_size):
        """The engine's stepper over the single-direction weights of every layer: an object whose
        step(x [N, I], states) returns (y [N, H], new states). A cell without one in the engine steps layer after
        layer with its forward (T = 1) on copies of the weights."""
        return LayerByLayer(self, layer_weights)

    def _step_input(self, where, x_t):
        """x_t [N, I] checked (building the layer from it if needed), as a contiguous array of the layer dtype."""
        if self.bidirectional:
            raise ValueError(f"{where}: step needs a single direction; this layer is bidirectional")
        x_t = real_array(where, "x_t", x_t, self.dtype)
        if x_t.ndim != 2:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected (N, I)")
        N, size = x_t.shape
        if N == 0:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected at least one row")
        if not self.built:
            self.build((None, size))
        elif size != self.input_size:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected (N, I={self.input_size})")
        return np.ascontiguousarray(x_t)

    # -- volatile state: generator and carried states
    def _get_volatile(self):
        return super()._get_volatile(), _copy_states(self._carried)

    def _set_volatile(self, saved) -> None:
        generator_state, carried = saved
        super()._set_volatile(generator_state)
        self._carried = carried

