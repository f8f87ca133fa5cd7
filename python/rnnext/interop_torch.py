"""Whole models between rnnext and PyTorch: a Sequential is a `TorchSequential`, a torch.nn.Sequential whose
forward also takes `lengths`. rnnext.interop.from_torch / to_torch dispatch here for Sequential models; this
module imports torch, so import it only when torch is installed.

    stack = rnnext.interop.to_torch(model)          # TorchSequential(Embedding, TorchRecurrent(LSTM), Linear, ...)
    y = stack(ids, lengths=torch.tensor(lengths))   # packs the sequences as rnnext's lengths do
    model = rnnext.interop.from_torch(stack)

A torch recurrent module returns (output, states), which nn.Sequential cannot chain, so each one is wrapped in
`TorchRecurrent(module, return_sequences)`: the whole padded output, or as rnnext gives it for
return_sequences=False the top layer's final h (directions side by side). A Dense with an activation becomes
nn.Linear followed by nn.Sigmoid / nn.Tanh / nn.ReLU / nn.Softmax(dim=-1), and from_torch folds such a pair back.
"""
from __future__ import annotations

import numpy as np
import torch

from . import interop
from .layers import Dense, Dropout, Embedding, Recurrent
from .models import Sequential

__all__ = ["TorchRecurrent", "TorchSequential", "sequential_from_torch", "sequential_to_torch"]

_ACTIVATION_MODULES = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class TorchRecurrent(torch.nn.Module):
    """A torch.nn.RNN / LSTM / GRU as one step of a TorchSequential: forward(x, lengths=None) returns the padded
    outputs (zero past each row's length) with return_sequences, else the top layer's final h [N, D*H]."""

    def __init__(self, module, return_sequences=True):
        super().__init__()
        if not isinstance(module, torch.nn.RNNBase):
            raise TypeError(f"TorchRecurrent: module is {type(module).__name__}, expected torch.nn.RNN, LSTM or GRU")
        self.module = module
        self.return_sequences = bool(return_sequences)

    def forward(self, x, lengths=None):
        steps = x.shape[1] if self.module.batch_first else x.shape[0]
        if lengths is not None:  # torch's packing needs every length >= 1
            x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths).cpu(),
                                                        batch_first=self.module.batch_first, enforce_sorted=False)
        output, state = self.module(x)
        if self.return_sequences:
            if lengths is not None:
                output, _ = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=self.module.batch_first,
                                                                   total_length=steps)
            return output
        h_n = state[0] if isinstance(self.module, torch.nn.LSTM) else state
        directions = 2 if self.module.bidirectional else 1
        return torch.cat(list(h_n[-directions:]), dim=1)

    def extra_repr(self) -> str:
        return f"return_sequences={self.return_sequences}"


class TorchSequential(torch.nn.Sequential):
    """torch.nn.Sequential whose forward(x, lengths=None) hands `lengths` to its TorchRecurrent steps."""

    def forward(self, x, lengths=None):
        for step in self:
            x = step(x, lengths) if isinstance(step, TorchRecurrent) else step(x)
        return x


def sequential_to_torch(model) -> TorchSequential:
    """The TorchSequential computing what `model` does, with copies of its weights and its modes."""
    where = "to_torch"
    if not model.built:
        raise ValueError(f"{where}: the model is not built; pass input_shape, call build() or run one forward pass")
    steps = []
    for layer in model.layers:
        label = f"layer {layer.name!r} ({type(layer).__name__})"
        if isinstance(layer, Embedding):
            embedding = torch.nn.Embedding(layer.vocab_size, layer.dim, padding_idx=layer.padding_idx,
                                           dtype=_torch_dtype(layer.dtype))
            with torch.no_grad():
                embedding.weight.copy_(torch.from_numpy(layer.embeddings.value))
            embedding.weight.requires_grad_(layer.embeddings.trainable)
            steps.append(embedding)
        elif isinstance(layer, Recurrent):
            if layer.stateful:
                raise ValueError(f"{where}: {label} is stateful; a torch module carries no states between calls")
            try:
                steps.append(TorchRecurrent(interop.to_torch(layer), layer.return_sequences))
            except ValueError as error:
                raise ValueError(f"{where}: {label}: {error}") from None
        elif isinstance(layer, Dense):
            linear = torch.nn.Linear(layer.input_size, layer.units, dtype=_torch_dtype(layer.dtype))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.kernel.value.T))
                linear.bias.copy_(torch.from_numpy(layer.bias.value))
            steps.append(linear)
            if layer.activation == "softmax":
                steps.append(torch.nn.Softmax(dim=-1))
            elif layer.activation in _ACTIVATION_MODULES:
                steps.append(_ACTIVATION_MODULES[layer.activation]())
        elif isinstance(layer, Dropout):
            steps.append(torch.nn.Dropout(layer.rate))
        else:
            raise ValueError(f"{where}: {label} has no torch equivalent; to_torch converts Embedding, RNN, LSTM, "
                             "GRU, Dense and Dropout")
    stack = TorchSequential(*steps)
    stack.train(model.training)
    return stack


def _torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def _numpy_dtype(array):
    return np.float64 if array.dtype == np.float64 else np.float32


def _activation_of(step):
    """The rnnext Dense activation a torch activation module computes, or None."""
    if isinstance(step, torch.nn.Softmax):
        return "softmax" if step.dim == -1 else None
    for name, cls in _ACTIVATION_MODULES.items():
        if type(step) is cls:
            return name
    return None


def sequential_from_torch(stack, dtype=None) -> Sequential:
    """The rnnext Sequential computing what `stack` (a torch.nn.Sequential of nn.Embedding, TorchRecurrent,
    nn.Linear with an optional activation module after it, nn.Dropout) computes, with copies of its weights."""
    where = "from_torch"
    layers, steps, position = [], list(stack), 0
    while position < len(steps):
        step = steps[position]
        label = f"step {position} ({type(step).__name__})"
        if isinstance(step, torch.nn.Embedding):
            if layers:
                raise ValueError(f"{where}: {label}: an Embedding is converted only as the first step")
            table = step.weight.detach().cpu().numpy()
            layers.append(Embedding(step.num_embeddings, step.embedding_dim, padding_idx=step.padding_idx,
                                    weights=table, trainable=step.weight.requires_grad,
                                    dtype=dtype or _numpy_dtype(table)))
        elif isinstance(step, TorchRecurrent):
            layers.append(interop.from_torch(step.module, dtype=dtype, return_sequences=step.return_sequences))
        elif isinstance(step, torch.nn.RNNBase):
            raise ValueError(f"{where}: {label}: a bare torch recurrent module returns (output, states), which the "
                             "next step cannot take; wrap it: rnnext.interop_torch.TorchRecurrent(module, "
                             "return_sequences=...)")
        elif isinstance(step, torch.nn.Linear):
            activation = None
            if position + 1 < len(steps) and _activation_of(steps[position + 1]) is not None:
                position += 1
                activation = _activation_of(steps[position])
            kernel = step.weight.detach().cpu().numpy().T
            dense = Dense(step.out_features, activation=activation, input_size=step.in_features,
                          dtype=dtype or _numpy_dtype(kernel))
            dense.kernel.value[...] = kernel
            dense.bias.value[...] = 0 if step.bias is None else step.bias.detach().cpu().numpy()
            layers.append(dense)
        elif isinstance(step, torch.nn.Dropout):
            layers.append(Dropout(step.p))
        else:
            raise ValueError(f"{where}: {label} has no rnnext equivalent; from_torch converts nn.Embedding, "
                             "TorchRecurrent, nn.Linear (with a Sigmoid, Tanh, ReLU or Softmax(dim=-1) after it) "
                             "and nn.Dropout")
        position += 1
    model = Sequential(layers)
    model.train(stack.training)
    return model
