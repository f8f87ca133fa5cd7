"""The course's NumPy listing of a simple RNN (Chollet, Deep Learning with Python, 1st ed., section 6.2),
reproduced with rnnext's RNN layer on the same weights, to show that the layer computes exactly that recurrence.

The listing, with its sizes (100 steps, 32 input features, 64 output features):

    state_t = np.zeros((output_features,))
    for input_t in inputs:                                   # inputs [timesteps, input_features]
        output_t = np.tanh(np.dot(W, input_t) + np.dot(U, state_t) + b)
        successive_outputs.append(output_t)
        state_t = output_t

W [64, 32] maps inputs to the state and U [64, 64] the state to itself, applied on the left of column vectors.
rnnext stores weights for row-major batches, `x @ kernel`, so the same model is kernel = W.T [32, 64],
recurrent_kernel = U.T [64, 64], bias = b. (The book ends with np.concatenate(successive_outputs, axis=0),
which flattens the outputs to [6400]; np.stack gives the intended [100, 64].)

The book draws every weight from np.random.random, uniform in [0, 1): the pre-activations are then around 40
and tanh saturates to exactly 1.0 after the first step, so agreement would prove little. The check therefore
runs twice: with the book's weights, and with centred weights scaled by 1/sqrt(fan-in), where the states stay
well inside tanh's range. The listing runs in float64; the layer in float32 (its default; the difference is
float32 rounding, about 1e-7 per operation, so a few 1e-7 after 100 steps) and in float64 (agreement to about
1e-15).
"""
from __future__ import annotations

import argparse

import numpy as np

from ..layers import RNN
from . import positive_int

# Largest difference accepted between the float64 listing and the layer, per layer dtype. float32: 100 steps
# of a contracting recurrence keep the error near the rounding of one step (~6e-8 relative on values <= 1)
# times a small factor; 1e-5 leaves a wide margin. float64: the same reasoning at 1.1e-16.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def numpy_listing(inputs, W, U, b) -> np.ndarray:
    """The course's loop, verbatim but for np.stack: inputs [timesteps, input_features] -> [timesteps,
    output_features]."""
    state_t = np.zeros((W.shape[0],))
    successive_outputs = []
    for input_t in inputs:
        output_t = np.tanh(np.dot(W, input_t) + np.dot(U, state_t) + b)
        successive_outputs.append(output_t)
        state_t = output_t
    return np.stack(successive_outputs, axis=0)


def rnnext_layer_outputs(inputs, W, U, b, dtype) -> np.ndarray:
    """The same recurrence through rnnext.layers.RNN with kernel = W.T, recurrent_kernel = U.T, bias = b."""
    layer = RNN(W.shape[0], return_sequences=True, input_size=W.shape[1], dtype=dtype)
    weights = dict(layer.named_parameters())
    weights["kernel"].value[...] = W.T
    weights["recurrent_kernel"].value[...] = U.T
    weights["bias"].value[...] = b
    return layer.forward(inputs[np.newaxis].astype(dtype))[0]  # a batch of one sequence


def make_weights(kind: str, timesteps: int, input_features: int, output_features: int, rng):
    """(inputs, W, U, b): the book's np.random.random draws, or centred ones scaled by 1/sqrt(fan-in)."""
    inputs = rng.random((timesteps, input_features))
    if kind == "book":
        return (inputs, rng.random((output_features, input_features)),
                rng.random((output_features, output_features)), rng.random((output_features,)))
    W = (rng.random((output_features, input_features)) - 0.5) * 2 * np.sqrt(3.0 / input_features)
    U = (rng.random((output_features, output_features)) - 0.5) * 2 * np.sqrt(3.0 / output_features)
    b = (rng.random((output_features,)) - 0.5) * 0.2
    return inputs, W, U, b


def run(args, log=print) -> dict:
    """Compare the listing with the layer for each weight kind and dtype; returns {(kind, dtype): max diff}.

    Raises AssertionError when a difference exceeds TOLERANCE."""
    rng = np.random.default_rng(args.seed)
    log(f"timesteps={args.timesteps}, input_features={args.input_features}, "
        f"output_features={args.output_features}, seed={args.seed}")
    differences = {}
    for kind in ("book", "centred"):
        inputs, W, U, b = make_weights(kind, args.timesteps, args.input_features, args.output_features, rng)
        expected = numpy_listing(inputs, W, U, b)
        saturated = float(np.mean(np.abs(expected) > 0.999))
        log(f"{kind} weights: outputs {expected.shape}, {saturated:.0%} of them saturated (|y| > 0.999)")
        for dtype in ("float32", "float64"):
            got = rnnext_layer_outputs(inputs, W, U, b, np.dtype(dtype))
            difference = float(np.max(np.abs(got.astype(np.float64) - expected)))
            differences[(kind, dtype)] = difference
            verdict = "ok" if difference <= TOLERANCE[dtype] else "TOO LARGE"
            log(f"  rnnext RNN layer, {dtype}: max |difference| = {difference:.3e} "
                f"(tolerance {TOLERANCE[dtype]:.0e}) {verdict}")
    failed = {key: value for key, value in differences.items() if value > TOLERANCE[key[1]]}
    if failed:
        raise AssertionError(f"numpy-rnn: the layer differs from the NumPy listing: {failed}")
    log("the rnnext layer reproduces the NumPy listing")
    return differences


def build_parser(prog: str = "rnnext train numpy-rnn") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Runs the course's NumPy simple-RNN listing and rnnext's "
                                "RNN layer on the same weights and checks that their outputs agree.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--timesteps", type=positive_int, default=100, help="steps of the input sequence")
    p.add_argument("--input-features", type=positive_int, default=32, help="size of each input vector")
    p.add_argument("--output-features", type=positive_int, default=64, help="size of the state and outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")
    return p


def main(argv=None) -> int:
    """`rnnext train numpy-rnn [options]`; returns 0, or 1 when the outputs disagree."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except AssertionError as error:
        print(error)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
