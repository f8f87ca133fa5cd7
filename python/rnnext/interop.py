"""Weight converters between rnnext layers and PyTorch modules / Keras weight lists (explicit, tested, copying).

    layer = from_torch(torch_lstm)                   # torch.nn.RNN / LSTM / GRU -> rnnext layer
    torch_lstm.load_state_dict(to_torch_state_dict(layer)); module = to_torch(layer)
    layer = from_keras_weights("gru", keras_gru.get_weights())
    keras_gru.set_weights(to_keras_weights(layer))
    model = from_keras(keras_sequential); keras_sequential = to_keras(model)    # whole models: interop_models.py

Layouts (rnnext's are in docs/conventions.md):
- PyTorch, per layer k and direction (suffix "_reverse"): `weight_ih_l{k} [G*H, I_k]` = kernel.T,
  `weight_hh_l{k} [G*H, H]` = recurrent_kernel.T, `bias_ih_l{k}`, `bias_hh_l{k}` [G*H]. Gate orders agree with
  rnnext (LSTM i, f, g, o; GRU r, z, n). LSTM/RNN biases are only ever added, so rnnext keeps their sum; the
  torch GRU is the reset_after GRU, whose bias [2, 3H] is (bias_ih, bias_hh).
- Keras `get_weights()` of one recurrent layer: `[kernel (I, G*H), recurrent_kernel (H, G*H), bias]`, with
  `bias (G*H,)`, or `(2, 3H)` for a GRU with reset_after=True; no bias with use_bias=False. `Bidirectional`
  gives the forward layer's list followed by the backward layer's. Gate orders: LSTM i, f, c, o (= rnnext's);
  GRU z, r, h (update, reset, candidate), which is rnnext's r, z, n with the first two blocks swapped
  (keras/src/layers/rnn/gru.py: `x_z, x_r, x_h = ops.split(matrix_x, 3, axis=-1)`).

Only numpy is imported here; torch is imported inside the torch functions.
"""
from __future__ import annotations

import numpy as np

from .layers import GRU, LSTM, RNN, Dense, Dropout, Embedding, Recurrent
from .models import Sequential
from .validation import as_array, check_bool, check_dtype, check_int, shape_text

__all__ = ["from_torch", "to_torch_state_dict", "to_torch", "from_keras_weights", "to_keras_weights", "from_keras",
           "to_keras", "mask_zero_lengths"]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_LAYER_CLASSES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


# ---------------------------------------------------------------------------------------------------------
# helpers shared by both directions

def _kind_of(layer, where: str) -> str:
    # LSTM before RNN: neither subclasses the other, but be explicit about what each name means.
    if isinstance(layer, LSTM):
        return "lstm"
    if isinstance(layer, GRU):
        return "gru"
    if isinstance(layer, RNN):
        return "rnn"
    raise TypeError(f"{where}: layer is {type(layer).__name__}, expected an rnnext RNN, LSTM or GRU layer")


def _param_name(layer, k: int, d: int, what: str) -> str:
    """The layer's own parameter name ("kernel", or "l0.reverse.kernel" when stacked or bidirectional)."""
    if layer.num_layers > 1 or layer.bidirectional:
        return f"l{k}.{'forward' if d == 0 else 'reverse'}.{what}"
    return what


def _require_built(layer, where: str) -> None:
    if not layer.built:
        raise ValueError(f"{where}: the {type(layer).__name__} layer is not built yet (its input size is unknown); "
                         "call build(input_shape), pass input_size, or run a forward pass first")


def _assign(params: dict, name: str, value, where: str) -> None:
    """Copy `value` into the parameter's existing array (so nothing aliases the source's memory)."""
    target = params[name].value
    if value.shape != target.shape:  # the callers check shapes first; this guards their bookkeeping
        raise ValueError(f"{where}: {name} would get shape {value.shape}, expected {target.shape}")
    target[...] = value


def _swap_first_two_blocks(a):
    """[..., 3H] with the first two H-blocks exchanged: Keras GRU (z, r, h) <-> rnnext (r, z, n). Its own
    inverse. Returns a new array."""
    H = a.shape[-1] // 3
    return np.concatenate([a[..., H:2 * H], a[..., :H], a[..., 2 * H:]], axis=-1)


def _check_layer_kwargs(layer_kwargs: dict, where: str, derived) -> None:
    clash = sorted(set(layer_kwargs) & set(derived))
    if clash:
        raise ValueError(f"{where}: {', '.join(clash)} cannot be passed as layer options: they are taken from the "
                         "converted weights or named arguments")


# ---------------------------------------------------------------------------------------------------------
# PyTorch

def _import_torch(where: str):
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{where} needs PyTorch (pip install torch); rnnext itself does not depend on it") \
            from error
    return torch


# torch RNNBase.mode -> (rnnext kind, RNN activation)
_TORCH_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", None),
                "GRU": ("gru", None)}


def from_torch(module, *, dtype=None, return_sequences=True, batch_first=None, **layer_kwargs):
    """An rnnext RNN, LSTM or GRU layer computing the same function as `module` (torch.nn.RNN, LSTM or GRU), or
    for a torch.nn.Sequential (e.g. to_torch's TorchSequential) an rnnext Sequential (interop_torch.py; only
    `dtype` applies then).

    Every layer and direction is converted; a module without biases gives zero biases; the GRU becomes
    `GRU(reset_after=True)`. dtype: float32 or float64, None for the module's own (float64 stays float64, any
    other float type becomes float32). batch_first: None takes the module's. return_sequences defaults to True
    because a torch module returns the whole sequence. The layer gets the module's dropout and its
    train/eval mode. Other layer options (name, seed, return_state, stateful) go in `layer_kwargs`.
    The weights are copied. An LSTM with proj_size becomes LSTM(proj_size=...), `projection` = weight_hr^T.
    """
    where = "from_torch"
    torch = _import_torch(where)
    if isinstance(module, torch.nn.Sequential):
        if layer_kwargs or return_sequences is not True or batch_first is not None:
            raise ValueError(f"{where}: module is a torch.nn.Sequential, which takes only dtype; each layer's "
                             "return_sequences comes from its TorchRecurrent, batch_first from its torch module")
        from .interop_torch import sequential_from_torch
        return sequential_from_torch(module, dtype=dtype)
    if not isinstance(module, torch.nn.RNNBase) or getattr(module, "mode", None) not in _TORCH_MODES:
        raise TypeError(f"{where}: module is {type(module).__name__}, expected torch.nn.RNN, torch.nn.LSTM or "
                        "torch.nn.GRU")
    _check_layer_kwargs(layer_kwargs, where, ("units", "input_size", "num_layers", "bidirectional", "layer_dropout",
                                              "activation", "reset_after", "peephole", "coupled", "proj_size"))
    kind, activation = _TORCH_MODES[module.mode]
    first = module.weight_ih_l0
    if dtype is None:
        dtype = np.float64 if first.dtype == torch.float64 else np.float32
    dtype = check_dtype(where, dtype)
    batch_first = module.batch_first if batch_first is None else batch_first

    options = dict(input_size=module.input_size, num_layers=module.num_layers, bidirectional=module.bidirectional,
                   layer_dropout=float(module.dropout), return_sequences=return_sequences, batch_first=batch_first,
                   dtype=dtype, **layer_kwargs)
    if kind == "rnn":
        options["activation"] = activation
    elif kind == "gru":
        options["reset_after"] = True
    proj_size = getattr(module, "proj_size", 0)
    if proj_size:
        options["proj_size"] = proj_size
    layer = _LAYER_CLASSES[kind](module.hidden_size, **options)
    layer.train(module.training)

    def array(tensor):
        # Through float64 on the CPU: exact for every torch float type, and a copy of the module's memory.
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy().astype(dtype)

    H, G = module.hidden_size, _GATES[kind]
    params = dict(layer.named_parameters())
    for k in range(module.num_layers):
        for d in range(layer.num_directions):
            suffix = f"l{k}" + ("_reverse" if d == 1 else "")
            w_ih = array(getattr(module, f"weight_ih_{suffix}"))  # [G*H, I_k]
            w_hh = array(getattr(module, f"weight_hh_{suffix}"))  # [G*H, H]
            if module.bias:
                b_ih = array(getattr(module, f"bias_ih_{suffix}"))  # [G*H]
                b_hh = array(getattr(module, f"bias_hh_{suffix}"))  # [G*H]
            else:
                b_ih = b_hh = np.zeros(G * H, dtype=dtype)
            # the GRU's b_hn sits inside r * (h U_n + b_hn), so its two biases cannot be summed
            bias = np.stack([b_ih, b_hh]) if kind == "gru" else b_ih + b_hh
            _assign(params, _param_name(layer, k, d, "kernel"), w_ih.T, where)
            _assign(params, _param_name(layer, k, d, "recurrent_kernel"), w_hh.T, where)
            _assign(params, _param_name(layer, k, d, "bias"), bias, where)
            if proj_size:
                w_hr = array(getattr(module, f"weight_hr_{suffix}"))  # [P, H]
                _assign(params, _param_name(layer, k, d, "projection"), w_hr.T, where)
    return layer


def _check_torch_expressible(layer, where: str) -> str:
    kind = _kind_of(layer, where)
    _require_built(layer, where)
    if kind == "lstm" and (layer.peephole or layer.coupled):
        raise ValueError(f"{where}: LSTM with peephole={layer.peephole}, coupled={layer.coupled} has no "
                         "torch.nn.LSTM equivalent (torch has neither peepholes nor coupled gates)")
    if getattr(layer, "layer_norm", False):
        raise ValueError(f"{where}: {type(layer).__name__} with layer_norm=True has no torch.nn equivalent (torch "
                         "has no layer-normalised recurrent layer)")
    if kind == "gru" and not layer.reset_after:
        raise ValueError(f"{where}: GRU with reset_after=False has no torch.nn.GRU equivalent (torch applies the "
                         "reset gate after the recurrent product, as reset_after=True)")
    if kind == "rnn" and layer.activation not in ("tanh", "relu"):
        raise ValueError(f"{where}: RNN with activation={layer.activation!r} has no torch.nn.RNN equivalent "
                         "(nonlinearity is 'tanh' or 'relu')")
    return kind


def to_torch_state_dict(layer) -> dict:
    """A state dict (name -> torch tensor, copied) that `load_state_dict` of the equivalent torch module takes:
    torch.nn.RNN/LSTM/GRU(input_size, units, num_layers, bias=True, bidirectional=...), for example `to_torch`'s.

    LSTM/RNN biases go whole into `bias_ih_l{k}`, with `bias_hh_l{k}` zero (torch adds the two); the GRU's rows
    are (bias_ih, bias_hh). Raises ValueError for layers torch cannot express (peephole or coupled LSTM,
    reset_after=False GRU, sigmoid RNN) and ImportError without torch.
    """
    where = "to_torch_state_dict"
    kind = _check_torch_expressible(layer, where)  # before the import: the same refusal with or without torch
    torch = _import_torch(where)
    params = dict(layer.named_parameters())
    state = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            suffix = f"l{k}" + ("_reverse" if d == 1 else "")
            kernel = params[_param_name(layer, k, d, "kernel")].value  # [I_k, G*H]
            recurrent_kernel = params[_param_name(layer, k, d, "recurrent_kernel")].value  # [H, G*H]
            bias = params[_param_name(layer, k, d, "bias")].value
            if kind == "gru":
                b_ih, b_hh = bias[0], bias[1]
            else:
                b_ih, b_hh = bias, np.zeros_like(bias)
            # np.array(..., copy) so the tensors never share the layer's memory
            state[f"weight_ih_{suffix}"] = torch.from_numpy(np.array(kernel.T, order="C"))
            state[f"weight_hh_{suffix}"] = torch.from_numpy(np.array(recurrent_kernel.T, order="C"))
            state[f"bias_ih_{suffix}"] = torch.from_numpy(np.array(b_ih))
            state[f"bias_hh_{suffix}"] = torch.from_numpy(np.array(b_hh))
            if kind == "lstm" and layer.proj_size:
                projection = params[_param_name(layer, k, d, "projection")].value  # [H, P]
                state[f"weight_hr_{suffix}"] = torch.from_numpy(np.array(projection.T, order="C"))
    return state


def to_torch(layer):
    """The torch.nn.RNN / LSTM / GRU module equivalent to `layer`, with its weights (copied), batch_first,
    dropout (between stacked layers, as in both libraries) and train/eval mode. Same errors as
    to_torch_state_dict. For an rnnext Sequential: the equivalent interop_torch.TorchSequential."""
    where = "to_torch"
    torch = _import_torch(where)
    if isinstance(layer, Sequential):
        from .interop_torch import sequential_to_torch
        return sequential_to_torch(layer)
    kind = _check_torch_expressible(layer, where)
    for option in ("dropout", "recurrent_dropout", "weight_drop", "zoneout"):
        if layer.get_config()[option]:
            raise ValueError(f"{where}: {layer.name} has {option}={getattr(layer, option)!r}, which torch.nn."
                             f"{type(layer).__name__.replace('SimpleRNN', 'RNN')} does not have (its dropout acts "
                             "between stacked layers: layer_dropout here); set it to 0, or use to_torch_state_dict "
                             "for the weights")
    # torch warns about dropout with a single layer; there it is a no-op in both libraries anyway
    dropout = layer.layer_dropout if layer.num_layers > 1 else 0.0
    options = dict(num_layers=layer.num_layers, bias=True, batch_first=layer.batch_first, dropout=dropout,
                   bidirectional=layer.bidirectional,
                   dtype=torch.float64 if layer.dtype == np.float64 else torch.float32)
    if kind == "rnn":
        module = torch.nn.RNN(layer.input_size, layer.units, nonlinearity=layer.activation, **options)
    elif kind == "lstm":
        module = torch.nn.LSTM(layer.input_size, layer.units, proj_size=layer.proj_size, **options)
    else:
        module = torch.nn.GRU(layer.input_size, layer.units, **options)
    module.load_state_dict(to_torch_state_dict(layer))
    module.train(layer.training)
    return module


# ---------------------------------------------------------------------------------------------------------
# Keras

_KERAS_KINDS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn", "simplernn": "rnn", "simple_rnn": "rnn"}
_KERAS_GATE_NAMES = {"lstm": "4H", "gru": "3H", "rnn": "H"}


def _keras_bias_shape(kind, H, reset_after):
    if kind == "gru" and reset_after:
        return (2, 3 * H)
    return (_GATES[kind] * H,)


def from_keras_weights(kind, weights, *, units=None, bidirectional=False, reset_after=True, activation="tanh",
                       recurrent_activation="sigmoid", use_bias=True, **layer_kwargs):
    """An rnnext layer from a Keras recurrent layer's `get_weights()` list.

    kind: "lstm", "gru" or "rnn" ("simplernn"), case-insensitive. weights: `[kernel (I, G*H), recurrent_kernel
    (H, G*H), bias]` (no bias with use_bias=False, giving zero biases); with bidirectional=True the
    `Bidirectional` wrapper's list: the forward layer's arrays, then the backward layer's. The bias is (G*H,), or
    (2, 3H) for a GRU with reset_after=True (pass the Keras layer's reset_after: True since Keras 2.3/TF 2, False
    before). Keras GRU blocks z, r, h are reordered to rnnext's r, z, n; LSTM (i, f, c, o) and SimpleRNN need no
    reordering. units: None infers it from recurrent_kernel, else checked against it. activation: the RNN's
    ("tanh", "relu" or "sigmoid"); LSTM and GRU need "tanh" and recurrent_activation "sigmoid" (Keras 2.2 and
    earlier defaulted to "hard_sigmoid", which rnnext does not compute). Other layer options (return_sequences,
    batch_first, dtype, name, ...) go in `layer_kwargs`; dtype defaults to float64 for float64 weights, else
    float32. The arrays are copied.
    """
    where = "from_keras_weights"
    name = str(kind).lower() if isinstance(kind, str) else None
    if name not in _KERAS_KINDS:
        raise ValueError(f"{where}: kind is {kind!r}, expected one of 'lstm', 'gru', 'rnn' (or 'simplernn')")
    kind = _KERAS_KINDS[name]
    _check_layer_kwargs(layer_kwargs, where, ("input_size", "num_layers", "peephole", "coupled"))
    bidirectional = check_bool(where, "bidirectional", bidirectional)
    reset_after = check_bool(where, "reset_after", reset_after)
    use_bias = check_bool(where, "use_bias", use_bias)
    if kind == "rnn":
        if activation not in RNN._ACTIVATIONS:
            raise ValueError(f"{where}: activation is {activation!r}, expected one of {RNN._ACTIVATIONS} for a "
                             "SimpleRNN")
    else:
        if activation != "tanh":
            raise ValueError(f"{where}: activation is {activation!r}, but rnnext's {kind.upper()} computes 'tanh' "
                             "only")
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{where}: recurrent_activation is {recurrent_activation!r}, but rnnext's "
                             f"{kind.upper()} gates use 'sigmoid' only (Keras 2.2 and earlier defaulted to "
                             "'hard_sigmoid', a different function)")

    D = 2 if bidirectional else 1
    per_direction = 3 if use_bias else 2
    G, gate_text = _GATES[kind], _KERAS_GATE_NAMES[kind]
    bias_text = ("bias (2, 3H)" if kind == "gru" and reset_after else f"bias ({gate_text},)") if use_bias else None
    layout = ", ".join(filter(None, [f"kernel (I, {gate_text})", f"recurrent_kernel (H, {gate_text})", bias_text]))
    if not isinstance(weights, (list, tuple)) or len(weights) != D * per_direction:
        got = f"{len(weights)} arrays" if isinstance(weights, (list, tuple)) else f"a {type(weights).__name__}"
        which = "a Bidirectional Keras" if bidirectional else "a Keras"
        then = ", for the forward layer, then the same for the backward layer" if bidirectional else ""
        raise ValueError(f"{where}: weights is {got}, expected {D * per_direction} for {which} {kind.upper()} with "
                         f"use_bias={use_bias}: [{layout}]{then}")

    arrays = []
    for index, a in enumerate(weights):
        a = as_array(where, f"weights[{index}]", a)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{where}: weights[{index}] has dtype {a.dtype}, expected real numbers")
        arrays.append(a)
    roles = ["kernel", "recurrent_kernel", "bias"][:per_direction]

    def label(index):
        direction = ("forward " if index < per_direction else "backward ") if bidirectional else ""
        return f"weights[{index}] ({direction}{roles[index % per_direction]})"

    # sizes: H from the first recurrent_kernel (or units), I from the first kernel
    recurrent = arrays[1]
    if recurrent.ndim != 2:
        raise ValueError(f"{where}: {label(1)} has shape {recurrent.shape}, expected (H, {gate_text})")
    if units is None:
        H = recurrent.shape[0]
        if H < 1:
            raise ValueError(f"{where}: {label(1)} has shape {recurrent.shape}, expected (H, {gate_text}) with H >= 1")
    else:
        H = check_int(where, "units", units, 1)
    kernel = arrays[0]
    if kernel.ndim != 2 or kernel.shape[0] < 1:
        raise ValueError(f"{where}: {label(0)} has shape {kernel.shape}, expected (I, {gate_text}={G * H})")
    I = kernel.shape[0]
    expected = {"kernel": (I, G * H), "recurrent_kernel": (H, G * H),
                "bias": _keras_bias_shape(kind, H, reset_after)}
    letters = {"kernel": f"(I={I}, {gate_text}={G * H})", "recurrent_kernel": f"(H={H}, {gate_text}={G * H})",
               "bias": f"(2, 3H={3 * H})" if expected["bias"] == (2, 3 * H) else f"({gate_text}={G * H},)"}
    for index, a in enumerate(arrays):
        role = roles[index % per_direction]
        if a.shape != expected[role]:
            hint = ""
            if role == "bias" and kind == "gru":
                other = _keras_bias_shape(kind, H, not reset_after)
                if a.shape == other:
                    hint = (f"; a bias of shape {shape_text(other)} comes from a Keras GRU with "
                            f"reset_after={not reset_after}: pass reset_after={not reset_after}")
            raise ValueError(f"{where}: {label(index)} has shape {a.shape}, expected {letters[role]}{hint}")

    dtype = layer_kwargs.pop("dtype", None)
    if dtype is None:
        dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    dtype = check_dtype(where, dtype)
    options = dict(input_size=I, bidirectional=bidirectional, dtype=dtype, **layer_kwargs)
    if kind == "rnn":
        options["activation"] = activation
    elif kind == "gru":
        options["reset_after"] = reset_after
    layer = _LAYER_CLASSES[kind](H, **options)

    params = dict(layer.named_parameters())
    for d in range(D):
        own = arrays[d * per_direction:(d + 1) * per_direction]
        kernel, recurrent_kernel = own[0].astype(dtype), own[1].astype(dtype)
        bias = own[2].astype(dtype) if use_bias else np.zeros(expected["bias"], dtype=dtype)
        if kind == "gru":  # Keras z, r, h -> rnnext r, z, n
            kernel, recurrent_kernel, bias = (_swap_first_two_blocks(a) for a in (kernel, recurrent_kernel, bias))
        _assign(params, _param_name(layer, 0, d, "kernel"), kernel, where)
        _assign(params, _param_name(layer, 0, d, "recurrent_kernel"), recurrent_kernel, where)
        _assign(params, _param_name(layer, 0, d, "bias"), bias, where)
    return layer


def to_keras_weights(layer) -> list:
    """The list Keras's `set_weights()` takes for the equivalent Keras layer (copies):

    - RNN / LSTM / GRU: `[kernel, recurrent_kernel, bias]` of the Keras SimpleRNN / LSTM / GRU (GRU blocks
      reordered to Keras's z, r, h; bias (2, 3H) with reset_after=True, else (3H,)); a bidirectional layer gives
      the `Bidirectional` wrapper's list, forward layer first. num_layers > 1 is a ValueError (Keras stacks
      separate layers: convert those one by one), as are peephole and coupled LSTMs (no Keras equivalent).
    - Dense: `[kernel (in, out), bias (out,)]`. Embedding: `[embeddings (vocab_size, dim)]`. Dropout: `[]`.
    """
    where = "to_keras_weights"
    if isinstance(layer, Dense):
        _require_built(layer, where)
        return [layer.kernel.value.copy(), layer.bias.value.copy()]
    if isinstance(layer, Embedding):
        return [layer.embeddings.value.copy()]
    if isinstance(layer, Dropout):
        return []
    if not isinstance(layer, Recurrent):
        raise TypeError(f"{where}: layer is {type(layer).__name__}, expected an rnnext RNN, LSTM, GRU, Dense, "
                        "Embedding or Dropout layer")
    kind = _kind_of(layer, where)
    _require_built(layer, where)
    if layer.num_layers > 1:
        raise ValueError(f"{where}: the layer has num_layers={layer.num_layers}; a Keras recurrent layer holds one "
                         "layer (Keras stacks separate layers), so convert a num_layers=1 layer per Keras layer")
    if kind == "lstm" and (layer.peephole or layer.coupled):
        raise ValueError(f"{where}: LSTM with peephole={layer.peephole}, coupled={layer.coupled} has no Keras "
                         "LSTM equivalent")
    if getattr(layer, "layer_norm", False):
        raise ValueError(f"{where}: {type(layer).__name__} with layer_norm=True has no Keras equivalent (Keras has "
                         "no layer-normalised recurrent layer)")
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"{where}: LSTM with proj_size={layer.proj_size} has no Keras equivalent (Keras's LSTM has "
                         "no projection)")
    params = dict(layer.named_parameters())
    out = []
    for d in range(layer.num_directions):
        arrays = [params[_param_name(layer, 0, d, what)].value.copy()
                  for what in ("kernel", "recurrent_kernel", "bias")]
        if kind == "gru":  # rnnext r, z, n -> Keras z, r, h
            arrays = [_swap_first_two_blocks(a) for a in arrays]
        out.extend(arrays)
    return out


# Whole models, built on the layer converters above (so imported last: interop_models imports them from here).
from .interop_models import from_keras, mask_zero_lengths, to_keras  # noqa: E402
