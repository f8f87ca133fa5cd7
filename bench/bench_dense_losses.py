#!/usr/bin/env python
"""Time one Dense + softmax_cross_entropy training step (forward, loss and gradient, backward into the grad
buffers) on the engine against the NumPy versions it replaced (their twins in rnnext.reference), at the PTB and
char-LM output shapes, with 1 and 2 threads. Each setting runs in its own process, with the engine and OpenBLAS
at the same thread count; each is validated against the other before it is timed. Prints a markdown table.

    python bench/bench_dense_losses.py [--repeats 30]
"""
import os
import sys

# OPENBLAS_CORETYPE=Haswell (set by this environment) makes OpenBLAS skip its AVX-512 kernels, which would slow the
# NumPy side. OpenBLAS reads it when it loads, so it goes before numpy is imported, and only in this process tree.
os.environ.pop("OPENBLAS_CORETYPE", None)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

SHAPES = {"PTB (x [400, 200] @ [200, 10000])": (400, 200, 10000),
          "char-LM (x [2500, 128] @ [128, 65])": (2500, 128, 65)}
THREADS = (1, 2)


def step_functions(M, F, C):
    """(numpy_step, engine_step, check): one step each, writing into their own grad buffers."""
    import numpy as np

    from rnnext import _core, reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, F)).astype(np.float32)
    kernel = (rng.standard_normal((F, C)) / np.sqrt(F)).astype(np.float32)
    bias = np.zeros(C, np.float32)
    targets = rng.integers(0, C, size=M)
    grads = {side: (np.zeros_like(kernel), np.zeros_like(bias)) for side in ("numpy", "engine")}

    def step(module, side):
        dkernel, dbias = grads[side]
        logits = module.dense_forward(x, kernel, bias)
        loss, dlogits = module.softmax_cross_entropy(logits, targets)
        dx = module.dense_backward(dlogits, logits, x, kernel, "linear", dkernel, dbias)["x"]
        return loss, dx

    def check():
        (loss_np, dx_np), (loss_engine, dx_engine) = step(reference, "numpy"), step(_core, "engine")
        scale = float(np.abs(dx_np).max())
        assert abs(loss_np - loss_engine) <= 1e-5 * abs(loss_np), (loss_np, loss_engine)
        assert float(np.abs(dx_np - dx_engine).max()) <= 1e-5 * scale, "dx differs"
        for a, b in zip(*grads.values()):
            assert float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max()), "weight gradients differ"

    return (lambda: step(reference, "numpy")), (lambda: step(_core, "engine")), check


def median_ms(step, repeats):
    step()  # warm-up: first touches of the buffers, thread start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def worker(shape_name, threads, repeats):
    import rnnext

    rnnext.set_num_threads(threads)
    numpy_step, engine_step, check = step_functions(*SHAPES[shape_name])
    check()
    print(json.dumps({"numpy": median_ms(numpy_step, repeats), "engine": median_ms(engine_step, repeats)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per setting (the median is reported)")
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.repeats)
        return
    print("| shape | threads | NumPy step (ms) | engine step (ms) | NumPy / engine |")
    print("|---|---|---|---|---|")
    for shape_name in SHAPES:
        for threads in THREADS:
            env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
            out = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--worker", shape_name,
                                  str(threads)], env=env, check=True, capture_output=True, text=True).stdout
            numpy_ms, engine_ms = (json.loads(out)[side] for side in ("numpy", "engine"))
            print(f"| {shape_name} | {threads} | {numpy_ms:.2f} | {engine_ms:.2f} | {numpy_ms / engine_ms:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
