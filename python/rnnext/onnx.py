"""ONNX export of Sequential models: Embedding (Gather), RNN/LSTM/GRU (the ONNX RNN/LSTM/GRU operators), Dense
(MatMul, Add and its activation) and Dropout (identity), built with onnx.helper.

    import rnnext.onnx
    rnnext.onnx.export(model, "model.onnx", lengths=True)     # inputs "x" and "lengths", output "y"
    rnnext.onnx.check(model, "model.onnx")                    # {"y": max |onnxruntime - rnnext|, ...}

Needs the `onnx` package (pip install rnnext[onnx]), and onnxruntime for run_both and check; rnnext itself
depends on neither, and this module imports them only inside the functions that use them.

How rnnext's layers map onto the operators (docs/api.md, "Export and converters", says the same):
- Weights: ONNX keeps W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] = (Wb, Rb), rnnext kernel [I, G*H] and
  recurrent_kernel [H, G*H], so W and R are the transposes with the gate blocks reordered: LSTM i, f, g, o ->
  i, o, f, c; GRU r, z, n -> z, r, h. The summed LSTM/RNN bias goes into Wb, Rb is zero.
- GRU: reset_after=True is linear_before_reset=1 (Wb = bias[0], Rb = bias[1]); reset_after=False is
  linear_before_reset=0, whose `(r * h) @ Rh + Rbh + Wbh` is rnnext's `(r * h) @ U_n` plus the input bias once
  Rb is zero.
- LSTM peepholes: P [D, 3H] in ONNX's order i, o, f; ONNX's i and f look at the previous cell and o at the new
  one, as rnnext's (Gers & Schmidhuber).
- Coupled LSTM (i = 1 - f): exported WITHOUT `input_forget`. The ONNX spec only says "couple the input and forget
  gates" and onnxruntime computes f = 1 - i, the other way round; instead the input gate gets the forget gate's
  rows negated (W, R, B and the peephole), so i = sigmoid(-z_f) = 1 - f in every runtime.
- lengths: an optional int64 input [N] cast to the operators' sequence_lens. Past a row's length both give zero
  outputs and keep the state of the row's last valid step (Y_h), and the reverse direction starts at each row's
  last valid step, as rnnext's lengths do.
- Layout: a batch_first layer's input is transposed to the operators' time-major layout and its sequence output
  back; a return_sequences=False layer's output is the top layer's Y_h, directions side by side.
Layers of other classes and stateful layers (whose next call would start from carried states the graph does not
have) raise a ValueError naming the layer: never a silently different model.
"""
from __future__ import annotations

import os

import numpy as np

from .checkpoint_io import write_file_atomically
from .layers import GRU, LSTM, RNN, Dense, Dropout, Embedding, Recurrent

__all__ = ["export", "run_both", "check", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # has every operator used here in its current form; onnxruntime >= 1.11 runs it
_IR_VERSION = 8  # the IR version of opset 17, so older runtimes read the file too
_RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
_DENSE_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softmax": "Softmax"}


def _import_onnx(where: str):
    try:
        import onnx
    except ImportError as error:
        raise ImportError(f"{where} needs the onnx package (pip install rnnext[onnx]); rnnext itself does not "
                          "depend on it") from error
    return onnx


# ---------------------------------------------------------------------------------------------------------
# weights in the operators' layouts

def _blocks(a, count):
    """The `count` gate blocks of a [..., count*H] array, along its last axis."""
    return np.split(a, count, axis=-1)


def _onnx_gate_columns(layer, a):
    """a [..., G*H] in rnnext's gate order -> [..., G'*H] in the ONNX operator's (G' = 4 for every LSTM)."""
    if isinstance(layer, LSTM):
        if layer.coupled:
            f, g, o = _blocks(a, 3)
            return np.concatenate([-f, o, f, g], axis=-1)  # i = sigmoid(-z_f) = 1 - f
        i, f, g, o = _blocks(a, 4)
        return np.concatenate([i, o, f, g], axis=-1)
    if isinstance(layer, GRU):
        r, z, n = _blocks(a, 3)
        return np.concatenate([z, r, n], axis=-1)
    return a


def _onnx_peephole(layer, peephole):
    """rnnext peephole rows (i, f, o), or (f, o) when coupled -> ONNX P [3H] in the order i, o, f."""
    if layer.coupled:
        p_f, p_o = peephole
        return np.concatenate([-p_f, p_o, p_f])
    p_i, p_f, p_o = peephole
    return np.concatenate([p_i, p_o, p_f])


def _operator_weights(layer, k):
    """W [D, G'*H, I_k], R [D, G'*H, H], B [D, 2*G'*H] and P [D, 3H] (None without peepholes) of layer k."""
    Ws, Rs, Bs, Ps = [], [], [], []
    for w in layer._weights[k]:
        kernel, recurrent_kernel, bias = (w[name].value for name in ("kernel", "recurrent_kernel", "bias"))
        Ws.append(_onnx_gate_columns(layer, kernel).T)
        Rs.append(_onnx_gate_columns(layer, recurrent_kernel).T)
        if isinstance(layer, GRU) and layer.reset_after:
            input_bias, recurrent_bias = _onnx_gate_columns(layer, bias[0]), _onnx_gate_columns(layer, bias[1])
        else:  # a bias that is only ever added: whole into Wb
            input_bias = _onnx_gate_columns(layer, bias)
            recurrent_bias = np.zeros_like(input_bias)
        Bs.append(np.concatenate([input_bias, recurrent_bias]))
        if isinstance(layer, LSTM) and layer.peephole:
            Ps.append(_onnx_peephole(layer, w["peephole"].value))
    stack = lambda arrays: np.ascontiguousarray(np.stack(arrays))  # noqa: E731
    return stack(Ws), stack(Rs), stack(Bs), (stack(Ps) if Ps else None)


# ---------------------------------------------------------------------------------------------------------
# the graph

class _Graph:
    """Nodes and initializers of the graph being built, with fresh value names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self._used = set()

    def name(self, base):
        name, suffix = base, 0
        while name in self._used:
            suffix += 1
            name = f"{base}_{suffix}"
        self._used.add(name)
        return name

    def constant(self, base, array):
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, base, outputs=1, **attributes):
        """Adds one node; returns its output name (or names, with outputs > 1)."""
        names = [self.name(f"{base}.{op}" if outputs == 1 else f"{base}.{op}.{index}") for index in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, names, name=self.name(f"{base}/{op}"),
                                                     **attributes))
        return names[0] if outputs == 1 else names


def _recurrent(graph, layer, x, sequence_lens, want_states):
    """The nodes of one recurrent layer on x (the layer's input layout). Returns (output, final states): the
    states are (h_n [L*D, N, H], c_n or None), in rnnext's order (layer-major, forward before reverse)."""
    H, D, base = layer.units, layer.num_directions, layer.name
    op = "LSTM" if isinstance(layer, LSTM) else "GRU" if isinstance(layer, GRU) else "RNN"
    attributes = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if isinstance(layer, GRU):
        attributes["linear_before_reset"] = int(layer.reset_after)
    if isinstance(layer, RNN):
        attributes["activations"] = [_RNN_ACTIVATIONS[layer.activation]] * D

    top = layer.num_layers - 1
    sequence = graph.node("Transpose", [x], base, perm=[1, 0, 2]) if layer.batch_first else x  # [T, N, I]
    h_parts, c_parts = [], []
    for k in range(layer.num_layers):
        W, R, B, P = _operator_weights(layer, k)
        inputs = [sequence, graph.constant(f"{base}.l{k}.W", W), graph.constant(f"{base}.l{k}.R", R),
                  graph.constant(f"{base}.l{k}.B", B), sequence_lens or ""]
        if P is not None:
            inputs += ["", "", graph.constant(f"{base}.l{k}.P", P)]  # no initial_h, initial_c: zeros
        outputs = 3 if op == "LSTM" else 2
        y, y_h, *y_c = graph.node(op, inputs, f"{base}.l{k}", outputs=outputs, **attributes)
        h_parts.append(y_h)
        c_parts += y_c
        if k < top or layer.return_sequences:  # Y [T, D, N, H] -> [T, N, D*H]
            y = graph.node("Transpose", [y], f"{base}.l{k}", perm=[0, 2, 1, 3])
            sequence = graph.node("Reshape", [y, graph.constant(f"{base}.l{k}.shape", np.array([0, 0, -1]))],
                                  f"{base}.l{k}")
    if layer.return_sequences:
        output = graph.node("Transpose", [sequence], base, perm=[1, 0, 2]) if layer.batch_first else sequence
    else:  # Y_h [D, N, H] of the top layer -> [N, D*H]
        last = graph.node("Transpose", [h_parts[-1]], base, perm=[1, 0, 2])
        output = graph.node("Reshape", [last, graph.constant(f"{base}.last_shape", np.array([0, -1]))], base)

    if not want_states:
        return output, None
    concat = lambda parts, what: parts[0] if len(parts) == 1 else graph.node(  # noqa: E731
        "Concat", parts, f"{base}.{what}", axis=0)
    return output, (concat(h_parts, "h_n"), concat(c_parts, "c_n") if c_parts else None)


def _dense(graph, layer, x):
    base = layer.name
    y = graph.node("MatMul", [x, graph.constant(f"{base}.kernel", layer.kernel.value)], base)
    y = graph.node("Add", [y, graph.constant(f"{base}.bias", layer.bias.value)], base)
    if layer.activation == "softmax":
        return graph.node("Softmax", [y], base, axis=-1)
    if layer.activation in _DENSE_ACTIVATIONS:
        return graph.node(_DENSE_ACTIVATIONS[layer.activation], [y], base)
    return y


def _check_exportable(model, where: str):
    """The model's float dtype; raises ValueError naming the first layer the export cannot express."""
    if not getattr(model, "layers", None):
        raise ValueError(f"{where}: model is {type(model).__name__}, expected an rnnext Sequential with layers")
    if not model.built or model.input_shape is None:
        raise ValueError(f"{where}: the model is not built or its input shape is unknown; pass input_shape, call "
                         "build(input_shape) or run one forward pass")
    dtypes = set()
    for position, layer in enumerate(model.layers):
        label = f"layer {position} {layer.name!r} ({type(layer).__name__})"
        if not isinstance(layer, (Recurrent, Dense, Embedding, Dropout)) \
                or (isinstance(layer, Recurrent) and not isinstance(layer, (RNN, LSTM, GRU))):
            raise ValueError(f"{where}: {label} has no ONNX export; the exporter knows Embedding, RNN, LSTM, GRU, "
                             "Dense and Dropout")
        if getattr(layer, "layer_norm", False):
            raise ValueError(f"{where}: {label} has layer_norm=True; the ONNX recurrent operators have no layer "
                             "normalisation")
        if getattr(layer, "proj_size", 0):
            raise ValueError(f"{where}: {label} has proj_size={layer.proj_size}; ONNX's LSTM operator has no "
                             "projection")
        if isinstance(layer, Embedding) and position > 0:
            raise ValueError(f"{where}: {label}: an Embedding is exported only as the first layer (it takes ids)")
        if isinstance(layer, Recurrent) and layer.stateful:
            raise ValueError(f"{where}: {label} is stateful; the graph would start every call from zero states, "
                             "not from the carried ones: export a copy built with stateful=False")
        if isinstance(layer, Recurrent) and layer._zoneout_rates():
            raise ValueError(f"{where}: {label} has zoneout={layer.zoneout!r}; its inference output mixes each "
                             "state with the previous one, which no ONNX RNN/LSTM/GRU operator computes")
        if not isinstance(layer, Dropout):
            dtypes.add(np.dtype(layer.dtype))
    if len(dtypes) != 1:
        raise ValueError(f"{where}: the layers have dtypes {sorted(str(d) for d in dtypes)}; the export needs one "
                         "float dtype for the whole model")
    return dtypes.pop()


def _first_computing_layer(model):
    """The first layer that is not a Dropout: it says what the model input is (ids, or its layout)."""
    return next((layer for layer in model.layers if not isinstance(layer, Dropout)), model.layers[0])


def _build_model_proto(model, *, lengths, states, opset, where):
    onnx = _import_onnx(where)
    helper, TensorProto = onnx.helper, onnx.TensorProto
    dtype = _check_exportable(model, where)
    float_type = helper.np_dtype_to_tensor_dtype(dtype)
    graph = _Graph(onnx)

    first = _first_computing_layer(model)
    time_axis = 0 if isinstance(first, Recurrent) and not first.batch_first else 1
    if isinstance(first, Embedding):
        input_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["N", "T"])
    else:
        if len(model.input_shape) != 2:
            raise ValueError(f"{where}: the model's input shape is {model.input_shape}, expected (T, I) sequences "
                             "or ids (T,) for an Embedding")
        axes = ["N", "T"] if time_axis == 1 else ["T", "N"]
        input_info = helper.make_tensor_value_info("x", float_type, axes + [model.input_shape[-1]])
    graph.name("x")
    inputs = [input_info]
    sequence_lens = None
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["N"]))
        graph.name("lengths")
        sequence_lens = graph.node("Cast", ["lengths"], "lengths", to=TensorProto.INT32)

    value, state_outputs = "x", []
    for layer in model.layers:
        if isinstance(layer, Embedding):
            value = graph.node("Gather", [graph.constant(f"{layer.name}.embeddings", layer.embeddings.value), value],
                               layer.name, axis=0)
        elif isinstance(layer, Recurrent):
            value, final = _recurrent(graph, layer, value, sequence_lens, states)
            if final is not None:
                for part, name in zip(final, ("h_n", "c_n")):
                    if part is not None:
                        state_outputs.append((part, f"{layer.name}.{name}", layer))
        elif isinstance(layer, Dense):
            value = _dense(graph, layer, value)
        # Dropout: the identity at inference, no node

    # the batch and time axes stay symbolic (where the batch axis is depends on the layers' layouts)
    output_shape = model._build_layers(model.input_shape)[-1]  # without the batch axis
    out_axes = [None] * len(output_shape) + [output_shape[-1]]
    graph.nodes.append(helper.make_node("Identity", [value], ["y"], name=graph.name("output/Identity")))
    outputs = [helper.make_tensor_value_info("y", float_type, out_axes)]
    for part, name, layer in state_outputs:
        graph.nodes.append(helper.make_node("Identity", [part], [name], name=graph.name(f"{name}/Identity")))
        count = layer.num_layers * layer.num_directions
        outputs.append(helper.make_tensor_value_info(name, float_type, [count, "N", layer.units]))

    onnx_graph = helper.make_graph(graph.nodes, model.name, inputs, outputs, initializer=graph.initializers)
    proto = helper.make_model(onnx_graph, producer_name="rnnext", opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = _IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, *, lengths=False, states=False, opset=DEFAULT_OPSET):
    """Write `model` (an rnnext Sequential) as an ONNX model to `path`, atomically; returns the ModelProto.

    Graph inputs: "x" (int64 ids [N, T] when the model starts with an Embedding, else float [N, T, I], or
    [T, N, I] when the first layer is a recurrent layer with batch_first=False) and, with lengths=True,
    "lengths" (int64 [N], the `lengths` of Sequential.forward). Outputs: "y", the model's output; with
    states=True also "<layer>.h_n" (and "<layer>.c_n" for an LSTM) [L*D, N, H] per recurrent layer, in the
    order of the layer's `states` (layer-major, forward before reverse). The graph computes what the model does
    in eval mode from zero initial states. The model is checked with onnx.checker before it is written.
    Raises ValueError for models it cannot express (naming the layer), ImportError without onnx.
    """
    where = "rnnext.onnx.export"
    path = os.fspath(path)
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 14:
        raise ValueError(f"{where}: opset is {opset!r}, expected an integer >= 14 (the operators' current form)")
    proto = _build_model_proto(model, lengths=bool(lengths), states=bool(states), opset=opset, where=where)
    data = proto.SerializeToString()
    write_file_atomically(path, lambda file: file.write(data))
    return proto


# ---------------------------------------------------------------------------------------------------------
# running the exported model next to rnnext's

def _rnnext_outputs(model, x, lengths):
    """{"y": the model's eval-mode output, "<layer>.h_n" / ".c_n": each recurrent layer's final states stacked
    [L*D, N, H]}, as the graph's outputs are named. The layers' modes and return_state are restored."""
    modes = [layer.training for layer in model.layers]
    model.eval()
    outputs, y = {}, x
    try:
        for layer in model.layers:
            if not isinstance(layer, Recurrent):
                y = layer.forward(y)
                continue
            return_state, layer.return_state = layer.return_state, True
            try:
                y, states = layer.forward(y, lengths=lengths)
            finally:
                layer.return_state = return_state
            parts = [s if isinstance(s, tuple) else (s,) for s in states]
            for index, name in enumerate(layer._state_names):
                outputs[f"{layer.name}.{name}_n"] = np.stack([part[index] for part in parts])
    finally:
        for layer, mode in zip(model.layers, modes):
            layer.train(mode)
    outputs["y"] = y
    return outputs


def _session(path, where):
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"{where} needs onnxruntime (pip install onnxruntime)") from error
    return onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def run_both(model, path, x, lengths=None):
    """Run the exported model at `path` in onnxruntime (CPU) and `model` in eval mode on the same input.
    Returns {output name: (onnxruntime's array, rnnext's array)} for every graph output ("y", and the states of
    an export with states=True). `lengths` [N] is required when the graph has a "lengths" input and refused
    when it has none."""
    return _run_both(_session(path, "rnnext.onnx.run_both"), model, x, lengths, path)


def _run_both(session, model, x, lengths, path):
    where = "rnnext.onnx.run_both"
    has_lengths = "lengths" in [i.name for i in session.get_inputs()]
    if has_lengths != (lengths is not None):
        raise ValueError(f"{where}: the graph at {os.fspath(path)} " + (
            "has a 'lengths' input; pass lengths [N]" if has_lengths else
            "has no 'lengths' input (exported with lengths=False); pass lengths=None"))
    feed = {"x": np.asarray(x)}
    if has_lengths:
        lengths = np.asarray(lengths, dtype=np.int64)
        feed["lengths"] = lengths
    ours = _rnnext_outputs(model, x, lengths)
    theirs = session.run(None, feed)
    return {output.name: (value, ours[output.name]) for output, value in zip(session.get_outputs(), theirs)}


def check(model, path, *, batch=4, steps=None, seed=0):
    """The difference between onnxruntime and rnnext for every graph output on one random batch, as
    max |onnxruntime - rnnext| / max(1, max |rnnext|): absolute for outputs within [-1, 1] (probabilities,
    tanh states), relative for larger ones (a relu RNN's). The batch: `batch` rows of `steps` steps (None: the
    model's input length, else 7), ids uniform over the Embedding's vocabulary or standard normal inputs, and
    lengths uniform in [0, T] (one row at T) when the graph takes lengths. Returns {name: float}."""
    session = _session(path, "rnnext.onnx.check")
    rng = np.random.default_rng(seed)
    first = _first_computing_layer(model)
    T = steps or (model.input_shape[0] if model.input_shape and model.input_shape[0] else 7)
    if isinstance(first, Embedding):
        x = rng.integers(0, first.vocab_size, size=(batch, T), dtype=np.int64)
    else:
        I = model.input_shape[-1]
        shape = (T, batch, I) if isinstance(first, Recurrent) and not first.batch_first else (batch, T, I)
        x = rng.standard_normal(shape).astype(_check_exportable(model, "rnnext.onnx.check"))
    lengths = None
    if "lengths" in [i.name for i in session.get_inputs()]:
        lengths = rng.integers(0, T + 1, size=batch)
        lengths[0] = T
    pairs = _run_both(session, model, x, lengths, path)
    return {name: float(np.max(np.abs(theirs - ours)) / max(1.0, float(np.max(np.abs(ours)))))
            for name, (theirs, ours) in pairs.items()}
