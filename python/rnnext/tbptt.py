"""r2rt's two styles of truncated backpropagation through time over long streams ("Styles of Truncated
Backpropagation", 2016): TensorFlow-style windows, and true BPTT(k1, k2) (Williams and Peng 1990)."""
from __future__ import annotations

import contextlib

import numpy as np

from .step import NonFiniteError, WeightGuard, forward, train_step
from .train_state import copy_carried_states, set_carried_states
from .validation import check_int

__all__ = ["tbptt_tensorflow_style", "tbptt_k1_k2"]


class _CarryStates:
    """Make every recurrent layer of `model` stateful for the duration, starting from zero states, and put the
    `stateful` flags (and the carried states of layers that were not stateful) back afterwards."""

    def __init__(self, model):
        self.layers = [layer for layer in (getattr(model, "layers", None) or [model]) if hasattr(layer, "stateful")]
        if not self.layers:
            raise ValueError(f"truncated BPTT: {type(model).__name__} has no recurrent layer to carry states")

    def __enter__(self):
        self.flags = [layer.stateful for layer in self.layers]
        for layer in self.layers:
            layer.stateful = True
            layer.reset_states()
        return self

    def __exit__(self, *exc):
        for layer, flag in zip(self.layers, self.flags):
            layer.stateful = flag
            if not flag:
                layer.reset_states()
        return False


def _check_stream(x, y, where: str, distributed):
    """The streams as arrays; under MPI this rank's fixed slice of them (its rows), so its states stay local."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.ndim < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"{where}: x has shape {x.shape} and y {y.shape}, expected batch-first streams "
                         "[N, L, ...] with the same N and L")
    if distributed is None:
        return x, y
    if x.shape[0] < distributed.size:
        raise ValueError(f"{where}: x has {x.shape[0]} streams, fewer than the {distributed.size} MPI ranks")
    rows = distributed.rows(x.shape[0])
    return x[rows], y[rows]


def _guard(distributed):
    # under MPI, an exception on one rank alone ends the job instead of leaving the others waiting
    return contextlib.nullcontext() if distributed is None else distributed.guard()


def _window_step(model, loss_fn, optimizer, x, y, clip_norm, guard, distributed) -> float:
    """One update on a window: train_step, or under MPI the step of the combined streams of all ranks."""
    if distributed is None:
        return train_step(model, loss_fn, optimizer, x, y, clip_norm=clip_norm, guard=guard)[0]
    values, _ = distributed.train_step((x, y, None, float(y.size)), model, loss_fn, optimizer, clip_norm=clip_norm,
                                       loss_lengths=None, guard=guard, metrics={})
    return values["loss"]


def tbptt_tensorflow_style(model, loss_fn, optimizer, x, y, num_steps: int, *, clip_norm=None,
                           distributed=None) -> list[float]:
    """TensorFlow-style truncated BPTT over one long batch of streams `x [N, L, ...]`, targets `y [N, L, ...]`.

    The streams are cut into consecutive windows of `num_steps` (the last one may be shorter); each window is
    one training step: forward from the state the previous window ended in, loss on every step of the window,
    backward within the window only, update. So the error at the last step of a window flows back
    `num_steps - 1` steps but the error at its first step flows back none; r2rt gives this as the reason an
    RNN trained with num_steps=5 does not learn the echo at lag 8 (docs/results.md: with 16 units it does,
    from the state carried across windows). Cost per time step: one forward and one backward
    step. Stateful layers give the same thing across `fit` batches; this function runs from zero states and
    leaves the layers' `stateful` flags as they were. `model` must output every step (`return_sequences=True`).
    Returns the loss of every window. With `distributed` (an rnnext.distributed.DataParallel; every rank passes
    all the streams), each rank trains its fixed slice of the streams and every update is the combined one.
    """
    where = "tbptt_tensorflow_style"
    x, y = _check_stream(x, y, where, distributed)
    num_steps = check_int(where, "num_steps", num_steps, minimum=1)
    losses = []
    guard = WeightGuard(optimizer.params)
    with _CarryStates(model), _guard(distributed):
        for start in range(0, x.shape[1], num_steps):
            window = slice(start, start + num_steps)
            try:
                loss = _window_step(model, loss_fn, optimizer, x[:, window], y[:, window], clip_norm, guard,
                                    distributed)
            except NonFiniteError as error:
                raise FloatingPointError(f"{where}: non-finite {error.what} in the window starting at step "
                                         f"{start}; the weights are those from before it") from None
            losses.append(loss)
    return losses


def tbptt_k1_k2(model, loss_fn, optimizer, x, y, k1: int, k2: int, *, clip_norm=None,
                distributed=None) -> list[float]:
    """True truncated BPTT(k1, k2) (Williams and Peng 1990; r2rt's "true" style) over streams `x [N, L, ...]`.

    Every `k1` steps (at t = k1, 2*k1, ..., and at L) there is one update, whose loss is that of the steps
    since the previous update, each backpropagated through the `k2` steps before t: the layers run forward
    from their state at `s = t - k2` over `x[:, s:t]`, the loss of the last `k1` outputs is differentiated
    (dy is zero on the earlier ones), and backward runs over the whole window. With `k1 = 1, k2 = n`, every
    error flows back the full `n` steps, which TensorFlow-style windows give only to the last step of each.
    `k2 >= k1` is required (otherwise some errors would not reach their own inputs).

    The state at the next window's start, `t + k1 - k2`, is found by running the layers forward from the
    state at `s` over `x[:, s:s+k1]` (with the updated weights); when k1 = k2 it is simply the window's final
    state, so `tbptt_k1_k2(..., k, k)` gives exactly `tbptt_tensorflow_style(..., k)`.
    Cost per time step: (k1 + k2) / k1 forward steps and k2 / k1 backward steps (TF style: 1 and 1), so
    k1 = 1, k2 = n costs about n times as much as TF-style windows of n. Memory holds one k2-step window.
    `model` must output every step (`return_sequences=True`); it starts from zero states, and its layers'
    `stateful` flags are left as they were. Returns the loss of every update. `distributed`: as in
    `tbptt_tensorflow_style`.
    """
    where = "tbptt_k1_k2"
    x, y = _check_stream(x, y, where, distributed)
    k1 = check_int(where, "k1", k1, minimum=1)
    k2 = check_int(where, "k2", k2, minimum=1)
    if k2 < k1:
        raise ValueError(f"{where}: k2={k2} < k1={k1}; each update must backpropagate at least the k1 steps "
                         "whose losses it uses")
    length = x.shape[1]
    losses = []
    guard = WeightGuard(optimizer.params)
    with _CarryStates(model), _guard(distributed):
        anchor, anchor_states = 0, copy_carried_states(model)  # states at step `anchor` (zeros at 0)
        previous = 0
        while previous < length:
            t = min(previous + k1, length)
            start = max(0, t - k2)
            if start > anchor:  # advance the saved state from `anchor` to `start`, forward only
                set_carried_states(model, anchor_states)
                forward(model, x[:, anchor:start], None)
                anchor, anchor_states = start, copy_carried_states(model)
            set_carried_states(model, anchor_states)
            scored = t - previous  # the last `scored` outputs of the window carry loss

            def window_loss(output, targets, scored=scored):
                loss, dscored = loss_fn(output[:, -scored:], targets[:, -scored:])
                doutput = np.zeros_like(output)
                doutput[:, -scored:] = dscored
                return loss, doutput
            window_loss.gradient_count = getattr(loss_fn, "gradient_count", "targets")  # for the MPI step

            try:
                loss = _window_step(model, window_loss, optimizer, x[:, start:t], y[:, start:t], clip_norm, guard,
                                    distributed)
            except NonFiniteError as error:
                raise FloatingPointError(f"{where}: non-finite {error.what} in the update at step {t}; the "
                                         "weights are those from before it") from None
            losses.append(loss)
            if max(0, min(t + k1, length) - k2) == t:
                # the next window starts where this one ended (k1 = k2): its final states are the right ones
                anchor, anchor_states = t, copy_carried_states(model)
            previous = t
    return losses
