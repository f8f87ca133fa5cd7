"""Whole-model converters between rnnext Sequential models and Keras 3 Sequential models, built on the per-layer
weight converters of interop.py (re-exported there: use rnnext.interop.from_keras / to_keras).

    model = rnnext.interop.from_keras(keras_model)             # Embedding, SimpleRNN/LSTM/GRU, Bidirectional,
    keras_model = rnnext.interop.to_keras(model)               # Dense, Dropout
    model.forward(ids, lengths=rnnext.interop.mask_zero_lengths(ids))   # what Keras's mask_zero=True computes

Keras's `mask_zero=True` skips the steps whose id is 0; rnnext takes `lengths` instead, which is the same model
when the padding is at the end of each row (post-padding, Keras's pad_sequences(padding="post")):
mask_zero_lengths(ids) counts each row's steps and refuses rows with a 0 before a real id. from_keras keeps the
flag in `model.metadata["keras_mask_zero"]`, and to_keras gives it back to the Keras Embedding.
keras is imported only inside these functions; its own backend (KERAS_BACKEND) is used, and weights are read
with keras.ops.convert_to_numpy.
"""
from __future__ import annotations

import warnings

import numpy as np

from .interop import from_keras_weights, to_keras_weights
from .layers import GRU, LSTM, RNN, Dense, Dropout, Embedding, Recurrent
from .models import Sequential
from .validation import as_array

__all__ = ["from_keras", "to_keras", "mask_zero_lengths"]

_KERAS_RECURRENT = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
_DENSE_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "softmax")
MASK_ZERO_KEY = "keras_mask_zero"


def _import_keras(where: str):
    try:
        import keras
    except ImportError as error:
        raise ImportError(f"{where} needs Keras 3 (pip install keras); rnnext itself does not depend on it") \
            from error
    return keras


def _keras_arrays(keras, layer) -> list:
    """The layer's weights as NumPy copies, in get_weights() order."""
    with warnings.catch_warnings():
        # the torch backend converts with np.array(tensor), which NumPy 2 warns about (torch's __array__ takes no
        # copy argument); the values are copied either way
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return [np.array(keras.ops.convert_to_numpy(weight)) for weight in layer.weights]


def mask_zero_lengths(ids, padding_id=0):
    """lengths [N] (int64) for ids [N, T] padded at the end with `padding_id`: each row's count of steps before
    its padding, so `model.forward(ids, lengths=...)` computes what Keras's mask_zero=True does. A row with a
    padding id before a real one (Keras would skip that step and go on; lengths cannot say so) is a ValueError
    naming the row."""
    where = "mask_zero_lengths"
    ids = as_array(where, "ids", ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: ids has shape {ids.shape} and dtype {ids.dtype}, expected integer ids (N, T)")
    real = ids != padding_id
    lengths = real.sum(axis=1)
    gaps = real & (np.arange(ids.shape[1])[None, :] >= lengths[:, None])
    if gaps.any():
        row = int(np.argmax(gaps.any(axis=1)))
        raise ValueError(f"{where}: row {row} of ids has a padding id {padding_id} before a real id; Keras's mask "
                         "skips such steps, lengths only cut a row's end: pad at the end (padding='post')")
    return lengths.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Keras -> rnnext

def _recurrent_from_keras(keras, layer, where, bidirectional=None):
    """The rnnext layer of a Keras SimpleRNN / LSTM / GRU, or of a Bidirectional wrapper around one."""
    label = f"layer {layer.name!r} ({type(layer).__name__})"
    inner = layer.forward_layer if bidirectional else layer
    config = inner.get_config()
    if bidirectional:
        if layer.merge_mode != "concat":
            raise ValueError(f"{where}: {label} has merge_mode={layer.merge_mode!r}; rnnext's bidirectional "
                             "layers concatenate the directions (merge_mode='concat')")
        backward = layer.backward_layer.get_config()
        differs = sorted(key for key in ("units", "activation", "recurrent_activation", "use_bias", "reset_after")
                         if backward.get(key) != config.get(key))
        if differs:
            raise ValueError(f"{where}: {label}: its backward layer differs from its forward layer in {differs}; "
                             "rnnext's directions share one configuration")
    for key, why in (("go_backwards", "runs the sequence backwards"), ("return_state", "returns its states"),
                     ("stateful", "is stateful (Keras fixes its batch size)")):
        if config.get(key):
            raise ValueError(f"{where}: {label} {why}; from_keras converts layers without {key}")
    kind = _KERAS_RECURRENT[type(inner).__name__]
    # Keras's dropout and recurrent_dropout are rnnext's (the same rates; the masks are drawn by each side)
    options = dict(bidirectional=bool(bidirectional), use_bias=config["use_bias"],
                   activation=config["activation"], return_sequences=config["return_sequences"], name=layer.name,
                   dropout=float(config.get("dropout", 0.0)),
                   recurrent_dropout=float(config.get("recurrent_dropout", 0.0)))
    if kind != "rnn":
        options["recurrent_activation"] = config["recurrent_activation"]
    if kind == "gru":
        options["reset_after"] = config["reset_after"]
    try:
        return from_keras_weights(kind, _keras_arrays(keras, layer), **options)
    except ValueError as error:
        raise ValueError(f"{where}: {label}: {error}") from None


def from_keras(keras_model):
    """A new rnnext Sequential computing what `keras_model` (a Keras 3 Sequential, built) computes, with copies
    of its weights and its layer names.

    Layers: Embedding (first only), SimpleRNN, LSTM, GRU (both reset_after), Bidirectional around one of them
    (merge_mode="concat"), Dense (activations linear, sigmoid, tanh, relu, softmax; use_bias=False gives a zero
    bias), Dropout. Anything else, and recurrent layers with go_backwards, return_state, stateful, dropout or
    recurrent_dropout, raise ValueError naming the layer. With an Embedding(mask_zero=True), pass
    lengths=mask_zero_lengths(ids) to forward (module docstring); the flag is kept in
    model.metadata["keras_mask_zero"].
    """
    where = "from_keras"
    keras = _import_keras(where)
    if not isinstance(keras_model, keras.Sequential):
        raise TypeError(f"{where}: keras_model is {type(keras_model).__name__}, expected a keras.Sequential")
    if not keras_model.built:
        raise ValueError(f"{where}: the Keras model is not built; give it a keras.Input or call build()")
    layers, mask_zero = [], False
    for position, layer in enumerate(keras_model.layers):
        kind, label = type(layer).__name__, f"layer {layer.name!r} ({type(layer).__name__})"
        if kind == "Embedding":
            if position > 0:
                raise ValueError(f"{where}: {label}: an Embedding is converted only as the first layer")
            mask_zero = bool(layer.mask_zero)
            table = _keras_arrays(keras, layer)[0]
            layers.append(Embedding(table.shape[0], table.shape[1], weights=table, name=layer.name,
                                    dtype=np.float64 if table.dtype == np.float64 else np.float32))
        elif kind in _KERAS_RECURRENT:
            layers.append(_recurrent_from_keras(keras, layer, where))
        elif kind == "Bidirectional" and type(layer.forward_layer).__name__ in _KERAS_RECURRENT:
            layers.append(_recurrent_from_keras(keras, layer, where, bidirectional=True))
        elif kind == "Dense":
            activation = layer.get_config()["activation"]
            if activation not in _DENSE_ACTIVATIONS:
                raise ValueError(f"{where}: {label} has activation={activation!r}, expected one of "
                                 f"{_DENSE_ACTIVATIONS}")
            arrays = _keras_arrays(keras, layer)
            kernel = arrays[0]
            dense = Dense(kernel.shape[1], activation=activation, input_size=kernel.shape[0], name=layer.name,
                          dtype=np.float64 if kernel.dtype == np.float64 else np.float32)
            dense.kernel.value[...] = kernel
            dense.bias.value[...] = arrays[1] if len(arrays) > 1 else 0
            layers.append(dense)
        elif kind == "Dropout":
            layers.append(Dropout(float(layer.rate), name=layer.name))
        else:
            raise ValueError(f"{where}: {label} has no rnnext equivalent; from_keras converts Embedding, "
                             "SimpleRNN, LSTM, GRU, Bidirectional, Dense and Dropout")
    model = Sequential(layers, input_shape=tuple(keras_model.input_shape[1:]), name=keras_model.name)
    if mask_zero:
        model.metadata[MASK_ZERO_KEY] = True
    return model


# ---------------------------------------------------------------------------------------------------------
# rnnext -> Keras

def _keras_recurrent(keras, layer, name, return_sequences):
    """The Keras layer of one level of `layer` (an rnnext RNN, LSTM or GRU), named `name`."""
    masks = dict(dropout=layer.dropout, recurrent_dropout=layer.recurrent_dropout)
    if isinstance(layer, RNN):
        cell = keras.layers.SimpleRNN(layer.units, activation=layer.activation, return_sequences=return_sequences,
                                      **masks)
    elif isinstance(layer, LSTM):
        cell = keras.layers.LSTM(layer.units, return_sequences=return_sequences, **masks)
    elif isinstance(layer, GRU):
        cell = keras.layers.GRU(layer.units, reset_after=layer.reset_after, return_sequences=return_sequences,
                                **masks)
    else:
        raise ValueError(f"to_keras: layer {layer.name!r} ({type(layer).__name__}) has no Keras equivalent")
    if layer.bidirectional:
        return keras.layers.Bidirectional(cell, merge_mode="concat", name=name)
    cell.name = name
    return cell


def to_keras(model, *, mask_zero=None):
    """A new Keras 3 Sequential computing what `model` (an rnnext Sequential, built) computes in eval mode, with
    copies of its weights and its layer names. A recurrent layer with num_layers=L becomes L Keras layers
    ("<name>", "<name>_l1", ...; a Dropout between them when it has dropout), a bidirectional one a
    Bidirectional(merge_mode="concat"). mask_zero: for the Keras Embedding; None takes
    model.metadata["keras_mask_zero"] (from_keras sets it), default False. Layers Keras cannot express (peephole or
    coupled LSTM, batch_first=False, stateful) raise ValueError naming the layer."""
    where = "to_keras"
    keras = _import_keras(where)
    if not isinstance(model, Sequential) or not model.built:
        raise ValueError(f"{where}: model is {type(model).__name__}, expected a built rnnext Sequential")
    if mask_zero is None:
        mask_zero = bool(model.metadata.get(MASK_ZERO_KEY, False))
    first = model.layers[0]
    input_dtype = "int64" if isinstance(first, Embedding) else np.dtype(first.dtype).name
    keras_layers, weights = [keras.Input(shape=model.input_shape, dtype=input_dtype)], []
    for layer in model.layers:
        label = f"layer {layer.name!r} ({type(layer).__name__})"
        if isinstance(layer, Embedding):
            keras_layers.append(keras.layers.Embedding(layer.vocab_size, layer.dim, mask_zero=mask_zero,
                                                       name=layer.name))
            weights.append(to_keras_weights(layer))
        elif isinstance(layer, Recurrent):
            if not layer.batch_first or layer.stateful:
                raise ValueError(f"{where}: {label} has batch_first={layer.batch_first}, stateful={layer.stateful}; "
                                 "Keras layers are batch-first and to_keras converts layers that are not stateful")
            for option in ("weight_drop", "zoneout"):
                if getattr(layer, option):
                    raise ValueError(f"{where}: {label} has {option}={getattr(layer, option)!r}, which Keras's "
                                     "recurrent layers do not have; set it to 0")
            for k, single in enumerate(_single_layers(layer)):
                if k > 0 and layer.layer_dropout > 0:
                    keras_layers.append(keras.layers.Dropout(layer.layer_dropout, name=f"{layer.name}_dropout{k}"))
                    weights.append([])
                top = k == layer.num_layers - 1
                try:
                    weights.append(to_keras_weights(single))
                except ValueError as error:
                    raise ValueError(f"{where}: {label}: {error}") from None
                keras_layers.append(_keras_recurrent(keras, layer, layer.name if k == 0 else f"{layer.name}_l{k}",
                                                     layer.return_sequences or not top))
        elif isinstance(layer, Dense):
            keras_layers.append(keras.layers.Dense(layer.units, activation=layer.activation, name=layer.name))
            weights.append(to_keras_weights(layer))
        elif isinstance(layer, Dropout):
            keras_layers.append(keras.layers.Dropout(layer.rate, name=layer.name))
            weights.append([])
        else:
            raise ValueError(f"{where}: {label} has no Keras equivalent; to_keras converts Embedding, RNN, LSTM, "
                             "GRU, Dense and Dropout")
    keras_model = keras.Sequential(keras_layers, name=model.name)
    for keras_layer, arrays in zip(keras_model.layers, weights):
        keras_layer.set_weights(arrays)
    return keras_model


def _single_layers(layer):
    """The layers of a stacked recurrent layer as num_layers=1 layers of the same cell, sharing no memory with it
    (each gets copies of its layer's weights)."""
    options = {key: value for key, value in layer.get_config().items()
               if key not in ("input_size", "num_layers", "layer_dropout", "name", "return_sequences", "return_state")}
    singles = []
    for k in range(layer.num_layers):
        input_size = layer.input_size if k == 0 else layer.num_directions * layer.units
        single = type(layer)(input_size=input_size, **options)
        params = dict(single.named_parameters())
        for d, w in enumerate(layer._weights[k]):
            prefix = f"l0.{'forward' if d == 0 else 'reverse'}." if layer.bidirectional else ""
            for name, param in w.items():
                params[prefix + name].value[...] = param.value
        singles.append(single)
    return singles
