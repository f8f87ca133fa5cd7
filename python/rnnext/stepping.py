"""Stepping a recurrent layer one time step at a time (generation): `Recurrent.stepper(batch_size)` gives a
Stepper, which runs every layer of the stack in one engine call per step on weights packed when it was made."""
from __future__ import annotations

__all__ = ["Stepper", "LayerByLayer"]


class Stepper:
    """A recurrent layer stepped one time step at a time (see Recurrent.stepper): every layer of its stack in
    one engine call per step, on weights copied and packed when it was made."""

    def __init__(self, layer, engine, batch_size):
        self.layer, self.batch_size = layer, batch_size
        self._engine = engine

    def step(self, x_t, state=None):
        """x_t [batch_size, I] -> (h_t [batch_size, H], state), as Recurrent.step."""
        layer = self.layer
        where = f"{layer._where('step')} (stepper)"
        x_t = layer._step_input(where, x_t)
        N = self.batch_size
        if x_t.shape[0] != N:
            raise ValueError(f"{where}: x_t has shape {x_t.shape}, expected (N={N}, I={layer.input_size}): the "
                             f"stepper was made for batch_size={N}")
        if state is None:
            states = layer._zero_states(N, layer.num_layers)
        else:
            states = layer._states_from_api(state, N, "step", "state", allow_none_entries=False)
        h_t, new_states = self._engine.step(x_t, states)
        return h_t, layer._states_to_api(new_states)

    def advance(self, x_t, states=None):
        """`step` on the stepper's own form of the states, for loops of thousands of steps (generation): `states`
        as the last `advance` returned them (a list of one tuple per layer) or None for zeros, and x_t a
        contiguous [batch_size, I] array of the layer's dtype. Nothing is converted; the engine checks both."""
        if states is None:
            states = self.layer._zero_states(self.batch_size, self.layer.num_layers)
        return self._engine.step(x_t, states)


class LayerByLayer:
    """The stepper of a cell the engine has none for: each layer's cache-free forward with T = 1, in turn, on
    copies of the weights taken when it was made (as the engine's steppers keep theirs); `masks`: the engine
    masks of every step (zoneout's rates, for a layer stepped in evaluation)."""

    def __init__(self, layer, layer_weights, masks=None):
        self._forward = layer._engine_forward
        self._weights = [{name: _Frozen(param.value.copy()) for name, param in w.items()} for w in layer_weights]
        self._masks = masks

    def step(self, x, states):
        if not isinstance(states, (list, tuple)) or len(states) != len(self._weights):
            raise ValueError(f"states must be a list of {len(self._weights)} tuples (one per layer)")
        layer_input, new_states = x[None], []
        for state, w in zip(states, self._weights):
            y, final, _ = self._forward(layer_input, state, w, None, False, self._masks)
            new_states.append(final)
            layer_input = y
        return layer_input[0], new_states


class _Frozen:
    """A weight copy in the place of a Parameter (what _engine_forward reads: `.value`)."""

    def __init__(self, value):
        self.value = value
