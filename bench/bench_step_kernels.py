#!/usr/bin/env python
"""Time the end of a training step (optimizer update, gradient clipping, zero_grad) and the Embedding backward on
the PTB-small model (word-lm defaults: Embedding(10000, 200) + 2-layer LSTM(200) + Dense(10000), float32), the
NumPy code these replaced against the engine, at 1 and 2 engine threads. Prints medians; asserts nothing about speed.

    python bench/bench_step_kernels.py [--repeats 21]
"""
import os

# OPENBLAS_CORETYPE=Haswell (set by this environment) slows NumPy's BLAS, which the old clip_grad_norm used (np.dot).
# It is read when OpenBLAS loads, so it goes before numpy is imported.
os.environ.pop("OPENBLAS_CORETYPE", None)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import rnnext  # noqa: E402
from rnnext import _core, optim  # noqa: E402
from rnnext.experiments.word_lm import build_model  # noqa: E402


# The NumPy code of commit d8c7763 (before the engine took these over), kept here to be timed.
def numpy_sgd_step(params, lr):
    for param in params:
        param.value -= lr * param.grad


def numpy_adam_step(params, state, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    for index, param in enumerate(params):
        m, v = state.setdefault(index, (np.zeros_like(param.value), np.zeros_like(param.value)))
        m *= beta1
        m += (1 - beta1) * param.grad
        v *= beta2
        v += (1 - beta2) * param.grad * param.grad
        param.value -= lr / (1 - beta1**step) * m / (np.sqrt(v) / math.sqrt(1 - beta2**step) + eps)


def numpy_clip_grad_norm(params, max_norm):
    grads = [param.grad for param in params]
    squared = 0.0
    for grad in grads:
        flat = np.asarray(grad, dtype=np.float64).ravel()
        squared += float(np.dot(flat, flat))
    norm = math.sqrt(squared)
    factor = max_norm / (norm + 1e-6)
    if math.isfinite(norm) and factor < 1:
        for grad in grads:
            grad *= factor
    return norm


def numpy_zero_grad(params):
    for param in params:
        param.grad.fill(0)


def median_ms(function, prepare, repeats):
    """Median wall time of function() in ms, prepare() (untimed) before each call."""
    times = []
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed runs per figure (default: %(default)s)")
    args = parser.parse_args()

    model = build_model(10_000, 200, 2, seed=0)
    model.build((None,))  # input_shape without the batch axis: (T,) token ids
    params = model.parameters()
    rng = np.random.default_rng(0)
    gradients = [rng.standard_normal(p.shape).astype(np.float32) for p in params]  # norm ~2000: clipping scales
    values = [p.value.copy() for p in params]

    def fresh():
        for param, value, grad in zip(params, values, gradients):
            np.copyto(param.value, value)
            np.copyto(param.grad, grad)

    sgd = optim.SGD(params, lr=1.0)
    adam = optim.Adam(params, lr=1e-3)
    numpy_adam_state = {}
    engine = {
        "SGD step": lambda: sgd.step(),
        "Adam step": lambda: adam.step(),
        "clip_grad_norm(5)": lambda: optim.clip_grad_norm(params, 5.0),
        "zero_grad (model)": lambda: model.zero_grad(),
        "SGD + clip + zero_grad": lambda: (optim.clip_grad_norm(params, 5.0), sgd.step(), model.zero_grad()),
    }
    numpy = {
        "SGD step": lambda: numpy_sgd_step(params, 1.0),
        "Adam step": lambda: numpy_adam_step(params, numpy_adam_state, 1),
        "clip_grad_norm(5)": lambda: numpy_clip_grad_norm(params, 5.0),
        "zero_grad (model)": lambda: numpy_zero_grad(params),
        "SGD + clip + zero_grad": lambda: (numpy_clip_grad_norm(params, 5.0), numpy_sgd_step(params, 1.0),
                                           numpy_zero_grad(params)),
    }

    ids = rng.integers(0, 10_000, size=(20, 20))
    dy = rng.standard_normal((20, 20, 200)).astype(np.float32)
    table_grad = np.zeros((10_000, 200), np.float32)
    engine["Embedding backward [20, 20] ids"] = lambda: _core.embedding_backward(table_grad, dy, ids)
    numpy["Embedding backward [20, 20] ids"] = lambda: np.add.at(table_grad, ids.reshape(-1), dy.reshape(-1, 200))

    count = sum(p.size for p in params)
    print(f"PTB-small parameters: {len(params)} arrays, {count:,} float32 values; median of {args.repeats} runs, ms")
    print(f"numpy {np.__version__}, rnnext {rnnext.__version__}, OPENBLAS_CORETYPE unset\n")
    rows = {}
    for threads in (1, 2):
        rnnext.set_num_threads(threads)
        for name in engine:
            rows.setdefault(name, {})[threads] = median_ms(engine[name], fresh, args.repeats)
    print("| operation | NumPy (before) | engine, 1 thread | engine, 2 threads | NumPy / engine (1, 2 threads) |")
    print("|---|---|---|---|---|")
    for name in engine:
        before = median_ms(numpy[name], fresh, args.repeats)
        one, two = rows[name][1], rows[name][2]
        print(f"| {name} | {before:.3f} | {one:.3f} | {two:.3f} | {before / one:.1f}x, {before / two:.1f}x |")


if __name__ == "__main__":
    main()
