"""Sequential models and checkpoints: a stack of layers with forward/backward, a Keras-style summary, and one-file
.npz checkpoints (architecture, weights, metadata, optimizer state) that are written atomically.

Checkpoint format: an .npz written with np.savez (members stored, not compressed), checked member by member
before any data is read (rnnext.checkpoint_io) and read with allow_pickle=False, holding
- "header": a 0-d string array with JSON {"format": "rnnext-checkpoint", "version": 1, "model": Sequential config
  (name, input_shape, layers as {"class", "config"}), "frozen": names of non-trainable parameters,
  "generators": each layer's generator state, "metadata": the caller's JSON-able dict, "optimizer": null or
  {"class", "params" (parameter names in the optimizer's order), "keys" (its state_dict keys)}};
- "param/<name>": one array per parameter, by its model name ("lstm.kernel", "lstm_1.l0.reverse.bias", ...);
- "optimizer/<key>": the optimizer's state_dict entries (numbers become 0-d arrays).
The states that stateful layers carry between calls are not saved.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from . import layers as _layers
from .checkpoint_io import (MAX_JSON_DEPTH, MAX_LAYERS, MIN_MEMBER_BYTES, CheckpointArchive, implied_weights,
                            json_depth, write_atomically)
from .layer_base import inference_mode, without_initialization
from .layers import Layer, check_custom_objects, layer_from_config
from .parameter import Parameter
from .validation import FLOAT_DTYPES, check_int

__all__ = ["Sequential", "Checkpoint", "load", "load_checkpoint", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "rnnext-checkpoint"
CHECKPOINT_VERSION = 1
_HEADER = "header"
_PARAM = "param/"
_OPTIMIZER = "optimizer/"


def _default_name(layer: Layer) -> str:
    """Keras-style base name: LSTM -> "lstm", SimpleRNN -> "simple_rnn", Embedding -> "embedding"."""
    kind = type(layer).__name__
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", kind).lower()


def _implied_input_shape(layer: Layer):
    """The model input shape a first layer fixes by itself, as Keras builds a model whose first layer has an
    input shape: ids (None,) for an Embedding, (None, I) for a recurrent layer given input_size. None otherwise
    (a Dense takes [N, F] as well as [N, T, F], so its input size alone does not say which)."""
    if isinstance(layer, _layers.Embedding):
        return (None,)
    if isinstance(layer, _layers.Recurrent) and layer.built:
        return (None, layer.input_size)
    return None


class Sequential:
    """A stack of layers applied in order.

    `forward(x, lengths=None)` passes `lengths` to the recurrent layers only; `backward(dy)` runs the layers in
    reverse and returns the gradient of the model input (None when the model starts with an Embedding).
    Layers without a name get a Keras-style one, unique in the model ("lstm", "lstm_1", ...); parameters are
    named "<layer name>.<parameter name>". `metadata` is a JSON-able dict saved with the model.
    Layers with return_state=True do not fit in a Sequential (their output is a pair).

    The model is built (every parameter exists) as soon as its input shape is known: from `input_shape`, from a
    first layer that fixes it (an Embedding, or a recurrent layer with input_size), from build(), or else at the
    first forward. Create the optimizer over `model.parameters()` after that.
    """

    def __init__(self, layers=None, input_shape=None, name=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"Sequential: name is {name!r}, expected a non-empty string")
        self.name = name or "sequential"
        self.layers: list = []
        self.input_shape = None
        self.metadata: dict = {}
        for layer in layers or []:
            self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    # -- composition
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise ValueError(f"Sequential.add: layer is {type(layer).__name__}, expected an rnnext.layers.Layer")
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"Sequential.add: the layer {layer.name!r} is already in this model")
        if getattr(layer, "return_state", False):
            raise ValueError(f"Sequential.add: {type(layer).__name__} has return_state=True; its output is a pair "
                             "(output, states), which the next layer cannot take")
        taken = {existing.name for existing in self.layers}
        if layer.name is None:
            base = _default_name(layer)
            name, suffix = base, 0
            while name in taken:
                suffix += 1
                name = f"{base}_{suffix}"
            layer.name = name
        elif layer.name in taken:
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in this model")
        self.layers.append(layer)
        if self.input_shape is None and len(self.layers) == 1:
            implied = _implied_input_shape(layer)
            if implied is not None:
                self.input_shape = implied
        if self.input_shape is not None:
            self._build_layers(self.input_shape)
        self._name_parameters()

    def build(self, input_shape) -> None:
        """Build every layer for inputs of `input_shape` (without the batch axis, e.g. (T,) for ids or (T, I))."""
        try:
            input_shape = tuple(None if size is None else int(size) for size in input_shape)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ValueError(f"Sequential.build: input_shape is {input_shape!r}, expected a tuple of sizes (None "
                             "for unknown) without the batch axis") from None
        self._build_layers(input_shape)
        self.input_shape = input_shape

    def _build_layers(self, input_shape) -> list:
        """Builds the layers in order; returns the output shape after each."""
        shapes = []
        shape = input_shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
            shapes.append(shape)
        self._name_parameters()
        return shapes

    def _name_parameters(self) -> None:
        # Parameter.name carries the model name, so optimizer messages say which weight they mean.
        for name, param in self.named_parameters():
            param.name = name

    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def training(self) -> bool:
        return all(layer.training for layer in self.layers)

    # -- forward / backward
    def forward(self, x, lengths=None):
        if not self.layers:
            raise ValueError("Sequential.forward: the model has no layers")
        if self.input_shape is None:
            self.build(np.shape(x)[1:])
        y = x
        for layer in self.layers:
            y = layer.forward(y, lengths=lengths) if (layer.takes_lengths and lengths is not None) else layer.forward(y)
        return y

    __call__ = forward

    def predict(self, x, lengths=None, batch_size=None):
        """The outputs for `x` in eval mode (no dropout) under inference_mode() (no backward caches: less memory
        and time, the same outputs as forward, bit for bit), in batches of `batch_size` rows along the first axis
        (all at once when None). The training mode is restored afterwards; stateful layers carry their states
        from batch to batch as forward does."""
        where = "Sequential.predict"
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{where}: x is a scalar, expected a batch (N, ...)")
        rows = x.shape[0]
        batch_size = max(rows, 1) if batch_size is None else check_int(where, "batch_size", batch_size, minimum=1)
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (rows,):
                raise ValueError(f"{where}: lengths has shape {lengths.shape}, expected (N={rows},)")
        was_training = self.training
        self.eval()
        try:
            with inference_mode():
                outputs = [self.forward(x[first:first + batch_size],
                                        None if lengths is None else lengths[first:first + batch_size])
                           for first in range(0, max(rows, 1), batch_size)]
        finally:
            self.train(was_training)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def backward(self, dy):
        dx = dy
        for position in reversed(range(len(self.layers))):
            dx = self.layers[position].backward(dx)
            if dx is None and position > 0:
                layer = self.layers[position]
                raise ValueError(f"Sequential.backward: {layer.name} ({type(layer).__name__}) returns no input "
                                 "gradient, so it must be the first layer")
        return dx

    # -- parameters and modes
    def named_parameters(self) -> list:
        return [(f"{layer.name}.{name}", param) for layer in self.layers for name, param in layer.named_parameters()]

    def parameters(self) -> list:
        return [param for _, param in self.named_parameters()]

    def generators(self) -> dict:
        """The random generators of every layer, by "layers.{index}.{name}" (fit saves and restores them)."""
        return {f"layers.{index}.{name}": generator for index, layer in enumerate(self.layers)
                for name, generator in layer.generators().items()}

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode: bool = True):
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def reset_states(self, rows=None) -> None:
        """Forget the states every stateful layer carries: all rows, or only `rows` (see Recurrent.reset_states)."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states(rows=rows)

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict, *, custom_objects: dict | None = None) -> "Sequential":
        check_custom_objects("Sequential.from_config", custom_objects)
        layers = [layer_from_config(spec, custom_objects=custom_objects) for spec in config["layers"]]
        input_shape = config.get("input_shape")
        return cls(layers, input_shape=None if input_shape is None else tuple(input_shape), name=config.get("name"))

    # -- summary
    def summary(self, print_fn=print) -> str:
        """Print (with print_fn; None prints nothing) and return a Keras-style table of layers, output shapes and
        parameter counts. Needs the model built (input_shape given, build() called, or one forward run)."""
        if not self.layers:
            raise ValueError("Sequential.summary: the model has no layers")
        if self.input_shape is None or not self.built:
            raise ValueError("Sequential.summary: the model is not built; pass input_shape, call build(input_shape) "
                             "or run one forward pass first")
        shapes = self._build_layers(self.input_shape)
        line_length = 65
        positions = [29, 55, 65]  # Keras's [.45, .85, 1] of 65 columns for sequential models

        def row(fields):
            line = ""
            for index, field in enumerate(fields):
                if index > 0:
                    line = line[:-1] + " "
                line += str(field)
                line = line[:positions[index]]
                line += " " * (positions[index] - len(line))
            return line.rstrip()

        lines = [f'Model: "{self.name}"', "_" * line_length, row(["Layer (type)", "Output Shape", "Param #"]),
                 "=" * line_length]
        for index, (layer, shape) in enumerate(zip(self.layers, shapes)):
            output_shape = "(" + ", ".join("None" if s is None else str(s) for s in (None,) + shape) + ")"
            lines.append(row([f"{layer.name} ({type(layer).__name__})", output_shape, layer.count_params()]))
            lines.append("=" * line_length if index == len(self.layers) - 1 else "_" * line_length)
        total = self.count_params()
        trainable = sum(param.size for param in self.parameters() if param.trainable)
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * line_length]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- checkpoints
    def save(self, path, optimizer=None, metadata=None) -> None:
        """Write architecture, weights, metadata (default: self.metadata) and optionally the optimizer's state to
        one .npz at exactly `path` (no suffix added), atomically: a temporary file in the same directory is
        renamed over `path`, so a failure leaves any previous file intact.

        The optimizer's parameters must belong to this model; stateful layers' carried states are not saved.
        """
        path = os.fspath(path)
        if not self.built:
            raise ValueError("Sequential.save: the model is not built; build it or run one forward pass first")
        metadata = self.metadata if metadata is None else metadata
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Sequential.save: metadata is not JSON-serializable ({error})") from None

        named = self.named_parameters()
        arrays = {_PARAM + name: param.value for name, param in named}
        optimizer_entry = None
        if optimizer is not None:
            names_by_id = {id(param): name for name, param in named}
            param_names = []
            for index, param in enumerate(getattr(optimizer, "params", None) or []):
                if id(param) not in names_by_id:
                    raise ValueError(f"Sequential.save: optimizer.params[{index}] ({getattr(param, 'name', '?')!r}) "
                                     "is not a parameter of this model")
                param_names.append(names_by_id[id(param)])
            if not hasattr(optimizer, "state_dict") or not param_names:
                raise ValueError(f"Sequential.save: optimizer is {type(optimizer).__name__}, expected an "
                                 "rnnext.optim optimizer over this model's parameters")
            state = optimizer.state_dict()
            for key, value in state.items():
                arrays[_OPTIMIZER + key] = np.asarray(value)
            optimizer_entry = {"class": type(optimizer).__name__, "params": param_names, "keys": sorted(state)}

        header = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.get_config(),
            "frozen": [name for name, param in named if not param.trainable],
            "generators": {layer.name: layer.rng.bit_generator.state for layer in self.layers},
            "metadata": metadata,
            "optimizer": optimizer_entry,
        }
        if len(self.layers) > MAX_LAYERS:  # load refuses such a file, so do not write one
            raise ValueError(f"Sequential.save: the model has {len(self.layers)} layers, more than the "
                             f"{MAX_LAYERS} rnnext saves and loads")
        if json_depth(header) > MAX_JSON_DEPTH:  # load refuses deeper headers, so do not write one
            raise ValueError(f"Sequential.save: metadata nests deeper than {MAX_JSON_DEPTH - 1} levels")
        arrays[_HEADER] = np.array(json.dumps(header))
        write_atomically(path, arrays)


class Checkpoint:
    """What load_checkpoint() read: `model` (a new Sequential, with `model.metadata`), `metadata`,
    `optimizer_class` (name or None), `optimizer_params` (parameter names in the saved optimizer's order) and
    `optimizer_state` (a dict for `Optimizer.load_state_dict`, or None). The state indexes parameters by position
    in `optimizer_params`, which is `model.parameters()` order when the optimizer was built over the whole model."""

    def __init__(self, path, model, metadata, optimizer_class, optimizer_params, optimizer_state):
        self.path = path
        self.model = model
        self.metadata = metadata
        self.optimizer_class = optimizer_class
        self.optimizer_params = optimizer_params
        self.optimizer_state = optimizer_state

    def __repr__(self) -> str:
        return (f"Checkpoint({self.path!r}, {len(self.model.layers)} layers, optimizer={self.optimizer_class}, "
                f"metadata keys={sorted(self.metadata) if isinstance(self.metadata, dict) else None})")


def load_checkpoint(path, *, custom_objects: dict | None = None) -> Checkpoint:
    """Read a checkpoint written by Sequential.save into a new model; see Checkpoint.

    custom_objects: {class name: Layer subclass} for your own layers in the model (see layer_from_config).

    A file that is not a readable rnnext checkpoint (truncated, corrupt, crafted, another format or version,
    weights that do not fit the architecture) raises ValueError "load: <path>: <problem>", naming the member at
    fault. Everything the file declares is checked before its data is read, and what it can make the loader
    allocate is bounded by its own size (see rnnext.checkpoint_io). Nothing is returned half-built.
    """
    path = os.fspath(path)
    classes = check_custom_objects("load", custom_objects)  # the caller's mistake, not the file's: raised first
    with CheckpointArchive(path) as archive:
        header = archive.read_header()
        model = _model_from_header(path, header, archive.file_size, classes, custom_objects)
        optimizer_class, optimizer_params, optimizer_keys = _check_members(path, header, archive.members, model)
        # Everything is checked: now read the data.
        for name, param in model.named_parameters():
            param.value[...] = archive.read(_PARAM + name)
        optimizer_state = None
        if optimizer_keys is not None:
            optimizer_state = {key: archive.read(_OPTIMIZER + key) for key in optimizer_keys}
    return Checkpoint(path, model, model.metadata, optimizer_class, optimizer_params, optimizer_state)


_HEADER_KEYS = {"format", "version", "model", "frozen", "generators", "metadata", "optimizer"}


def _model_from_header(path: str, header: dict, file_size: int, classes: dict, custom_objects) -> Sequential:
    """The model the header describes, with its frozen flags, generator states and metadata (zero weights)."""
    def fail(problem):
        return ValueError(f"load: {path}: {problem}")

    if header.get("format") != CHECKPOINT_FORMAT:
        raise fail(f"format is {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):  # True == 1 in Python, "1" is not a version
        raise fail(f"header 'version' is {version!r}, expected the integer {CHECKPOINT_VERSION}")
    if version != CHECKPOINT_VERSION:
        raise fail(f"checkpoint version {version!r} is not supported; this rnnext reads version "
                   f"{CHECKPOINT_VERSION}")
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        raise fail(f"the header has unknown entries {unknown}, expected only {sorted(_HEADER_KEYS)}")

    # Before building anything, check that the weights the architecture would allocate could be in this file
    # at all (each weight takes at least the smallest layer dtype's bytes, each array a member's overhead): an
    # Embedding declared with 2**33 rows in a 3 KB file is refused here instead of allocating 256 GiB. What
    # passes costs a few times the file's size to build, and the members are then checked against the model
    # one by one, with precise messages.
    config = header.get("model")
    layer_count = len(config["layers"]) if isinstance(config, dict) and isinstance(config.get("layers"), list) else 0
    if layer_count > MAX_LAYERS:
        raise fail(f"the architecture has {layer_count} layers, more than the {MAX_LAYERS} rnnext saves and loads")
    weights, arrays = implied_weights(config, classes)
    least = weights * min(dtype.itemsize for dtype in FLOAT_DTYPES) + arrays * MIN_MEMBER_BYTES
    if least > file_size:
        raise fail(f"the architecture implies {weights:,} weights in {arrays:,} arrays (at least {least:,} bytes), "
                   f"more than the whole file ({file_size:,} bytes) holds")
    # Build the model without drawing weights or touching the default generator: everything comes from the file.
    try:
        with without_initialization():
            model = Sequential.from_config(config, custom_objects=custom_objects)
        for layer in model.layers:
            layer._initialize = True  # layers built later (no input size yet) draw their weights normally
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # AttributeError: a list for a dict
        raise fail(f"the architecture cannot be rebuilt ({type(error).__name__}: {error})") from None
    if not model.built:
        raise fail("the architecture does not say every layer's input size")

    by_name = dict(model.named_parameters())
    frozen = header.get("frozen", [])
    if not isinstance(frozen, list) or any(not isinstance(name, str) or name not in by_name for name in frozen):
        raise fail(f"header 'frozen' is {frozen!r}, expected a list of the model's parameter names")
    for name in frozen:
        by_name[name].trainable = False
    generators = header.get("generators", {})
    layer_names = {layer.name for layer in model.layers}
    if not isinstance(generators, dict) or not set(generators) <= layer_names:
        found = sorted(generators) if isinstance(generators, dict) else generators
        raise fail(f"header 'generators' has entries for {found!r}, expected a dict over the layer names "
                   f"{sorted(layer_names)}")
    for layer in model.layers:
        if layer.name in generators:
            try:
                layer.rng.bit_generator.state = generators[layer.name]
            except (TypeError, ValueError, KeyError, OverflowError) as error:
                raise fail(f"the generator state of layer {layer.name!r} is invalid ({type(error).__name__}: "
                           f"{error})") from None
    metadata = header.get("metadata")
    model.metadata = metadata if metadata is not None else {}
    return model


# "m.3": state of the optimizer's params[3] (as rnnext.optim names it); the digits are bounded so that int()
# of a crafted 5000-digit index cannot fail (Python refuses to convert more than 4300 digits)
_PER_PARAMETER_KEY = re.compile(r"[A-Za-z_]+\.(\d{1,18})")


def _check_members(path: str, header: dict, members: dict, model: Sequential):
    """Checks that the members are exactly the model's weights (each of its shape and dtype) and the optimizer
    state the header lists (0-d numbers, or arrays shaped like the parameter they belong to). Returns
    (optimizer class, its parameter names, its state keys), all None when the file has no optimizer."""
    def fail(problem):
        return ValueError(f"load: {path}: {problem}")

    named = model.named_parameters()
    expected = {_PARAM + name for name, _ in named}
    present = {key for key in members if key.startswith(_PARAM)}
    if expected - present:
        raise fail(f"weights missing for {sorted(key[len(_PARAM):] for key in expected - present)}")
    if present - expected:
        raise fail(f"weights for parameters the architecture does not have: "
                   f"{sorted(key[len(_PARAM):] for key in present - expected)}")
    for name, param in named:
        member = members[_PARAM + name]
        # Exactly the dtype the layer stores: a float16 or int weight would be cast, losing what was saved.
        if member.shape != param.value.shape or member.dtype != param.value.dtype:
            raise fail(f"weight {name!r} has shape {member.shape} and dtype {member.dtype}, expected "
                       f"{param.value.shape} {param.value.dtype}")

    entry = header.get("optimizer")
    present = {key[len(_OPTIMIZER):] for key in members if key.startswith(_OPTIMIZER)}
    if entry is None:
        if present:
            raise fail(f"the file has optimizer state members {sorted(present)}, but the header no optimizer entry")
        return None, None, None
    if not isinstance(entry, dict) or set(entry) != {"class", "params", "keys"} \
            or not isinstance(entry["class"], str) \
            or not all(isinstance(entry[field], list) and all(isinstance(item, str) for item in entry[field])
                       for field in ("params", "keys")):
        raise fail("header 'optimizer' is malformed, expected {'class': name, 'params': [parameter names], "
                   "'keys': [state keys]}")
    by_name = dict(named)
    params, keys = entry["params"], entry["keys"]
    unknown = [name for name in params if name not in by_name]
    if unknown:
        raise fail(f"the optimizer refers to unknown parameters {unknown}")
    if len(set(params)) != len(params) or len(set(keys)) != len(keys):
        raise fail("header 'optimizer' lists a parameter or a key twice")
    if set(keys) - present:
        raise fail(f"optimizer state missing for keys {sorted(set(keys) - present)}")
    if present - set(keys):
        raise fail(f"optimizer state members {sorted(present - set(keys))} are not in the header's keys")
    for key in keys:
        member = members[_OPTIMIZER + key]
        if member.dtype.kind not in "biuf":
            raise fail(f"optimizer state {key!r} has dtype {member.dtype}, expected numbers")
        if member.shape == ():
            continue
        match = _PER_PARAMETER_KEY.fullmatch(key)
        index = int(match.group(1)) if match else None
        if index is None or index >= len(params):
            raise fail(f"optimizer state {key!r} has shape {member.shape}, expected a number (only per-parameter "
                       f"state '<name>.<index < {len(params)}>' holds arrays)")
        param = by_name[params[index]]
        if member.shape != param.value.shape or member.dtype != param.value.dtype:
            raise fail(f"optimizer state {key!r} has shape {member.shape} and dtype {member.dtype}, expected "
                       f"{param.value.shape} {param.value.dtype} (parameter {params[index]!r})")
    return entry["class"], params, keys


def load(path, optimizer=None, *, custom_objects: dict | None = None) -> Sequential:
    """Read a checkpoint into a new Sequential (its metadata in `model.metadata`).

    With `optimizer` (an rnnext.optim optimizer of the saved class over parameters of the same shapes, e.g. one
    built over a freshly constructed model of the same architecture), its state is restored and its `params` are
    re-pointed at the returned model's parameters, so `optimizer.step()` then trains the loaded model exactly as
    the saved run would have continued. The optimizer is validated before anything in it changes.
    custom_objects: {class name: Layer subclass} for your own layers in the model (see layer_from_config).
    For the raw optimizer state, use load_checkpoint().
    """
    checkpoint = load_checkpoint(path, custom_objects=custom_objects)
    model = checkpoint.model
    if optimizer is None:
        return model

    def fail(problem):
        return ValueError(f"load: {checkpoint.path}: {problem}")

    if checkpoint.optimizer_state is None:
        raise fail("the checkpoint holds no optimizer state (it was saved without optimizer=)")
    kind = type(optimizer).__name__
    if kind != checkpoint.optimizer_class:
        raise fail(f"the checkpoint holds {checkpoint.optimizer_class} state, but optimizer is {kind}")
    by_name = dict(model.named_parameters())
    new_params = [by_name[name] for name in checkpoint.optimizer_params]
    old_params = list(getattr(optimizer, "params", []))
    if len(old_params) != len(new_params):
        raise fail(f"optimizer has {len(old_params)} params, the checkpoint's had {len(new_params)}")
    for index, (old, new, name) in enumerate(zip(old_params, new_params, checkpoint.optimizer_params)):
        if not isinstance(old, Parameter) or old.value.shape != new.value.shape:
            raise fail(f"optimizer.params[{index}] has shape {getattr(old, 'shape', None)}, expected "
                       f"{new.value.shape} (the saved {name!r})")
    try:
        optimizer.load_state_dict(checkpoint.optimizer_state)  # validates everything before changing anything
    except ValueError as error:
        raise fail(f"the optimizer state does not fit ({error})") from None
    optimizer.params = new_params
    return model
