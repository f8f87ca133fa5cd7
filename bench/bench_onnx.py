#!/usr/bin/env python
"""rnnext.onnx.export against onnxruntime (CPU): the max differences of every exported model variant on a random
batch with random lengths, then inference time of the course LSTM model (Embedding(10000,32)+LSTM(32)+Dense(1),
T=500) in onnxruntime against rnnext's forward, at N=1 and N=128, both in this process. See bench/README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cells  # noqa: E402  first: it unsets OPENBLAS_CORETYPE before NumPy loads (see its header)

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import rnnext  # noqa: E402
import rnnext.onnx  # noqa: E402

CELLS = {
    "rnn-tanh": lambda **kw: rnnext.RNN(16, activation="tanh", **kw),
    "rnn-relu": lambda **kw: rnnext.RNN(16, activation="relu", **kw),
    "rnn-sigmoid": lambda **kw: rnnext.RNN(16, activation="sigmoid", **kw),
    "lstm": lambda **kw: rnnext.LSTM(16, **kw),
    "lstm-peephole": lambda **kw: rnnext.LSTM(16, peephole=True, **kw),
    "lstm-coupled": lambda **kw: rnnext.LSTM(16, coupled=True, **kw),
    "lstm-coupled-peephole": lambda **kw: rnnext.LSTM(16, coupled=True, peephole=True, **kw),
    "gru-reset_after": lambda **kw: rnnext.GRU(16, reset_after=True, **kw),
    "gru-reset_before": lambda **kw: rnnext.GRU(16, reset_after=False, **kw),
}


def course_model(extra=()):
    return rnnext.Sequential([rnnext.Embedding(10000, 32, seed=0), *extra, rnnext.Dense(1, activation="sigmoid",
                                                                                      seed=2)],
                             input_shape=(500,))


def variants():
    """(name, model) for every recurrent variant (1 or 2 layers, one or both directions, under a Dense) and the
    course's three models, with weights drawn from N(0, 0.5^2) so that biases and peepholes count too."""
    rng = np.random.default_rng(0)
    for cell, make in CELLS.items():
        for num_layers in (1, 2):
            for bidirectional in (False, True):
                layer = make(input_size=8, num_layers=num_layers, bidirectional=bidirectional,
                             return_sequences=True)
                yield f"{cell} L={num_layers} D={2 if bidirectional else 1}", randomized(
                    rnnext.Sequential([layer, rnnext.Dense(3)]), rng)
    yield "course LSTM", randomized(course_model([rnnext.LSTM(32, seed=1)]), rng)
    yield "course Bi-LSTM", randomized(course_model([rnnext.LSTM(32, bidirectional=True, seed=1),
                                                     rnnext.Dropout(0.5)]), rng)
    yield "course stacked LSTM", randomized(course_model([rnnext.LSTM(32, return_sequences=True, seed=1),
                                                          rnnext.LSTM(32, seed=3)]), rng)


def randomized(model, rng):
    for param in model.parameters():
        param.value[...] = 0.5 * rng.standard_normal(param.value.shape)
    return model


def differences(directory, batch, steps):
    print("differences: max |onnxruntime - rnnext| / max(1, max |rnnext|) (rnnext.onnx.check)\n")
    print("| exported model | y | final states |")
    print("|---|---|---|")
    worst = 0.0
    for name, model in variants():
        path = os.path.join(directory, "model.onnx")
        rnnext.onnx.export(model, path, lengths=True, states=True)
        fixed_length = model.input_shape[0] is not None  # the course models: their own T=500
        found = rnnext.onnx.check(model, path, batch=batch, steps=None if fixed_length else steps, seed=1)
        states = max(value for key, value in found.items() if key != "y")
        worst = max(worst, found["y"], states)
        print(f"| {name} | {found['y']:.2g} | {states:.2g} |")
    print(f"\nlargest difference over all models: {worst:.2g}\n")
    return worst


def timing(directory, threads, seconds):
    import onnxruntime

    model = course_model([rnnext.LSTM(32, seed=1)]).eval()
    path = os.path.join(directory, "course.onnx")
    rnnext.onnx.export(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rnnext.set_num_threads(threads)
    print(f"course LSTM model, T=500, {threads} thread(s) each, median ms per call (bench_cells.time_it, "
          f"about {seconds:g} s each):\n")
    print("| N | onnxruntime ms | rnnext forward ms | onnxruntime / rnnext |")
    print("|---|---|---|---|")
    for N in (1, 128):
        ids = np.random.default_rng(N).integers(0, 10000, size=(N, 500))
        difference = np.max(np.abs(session.run(None, {"x": ids})[0] - model.forward(ids)))
        if difference > 1e-5:
            sys.exit(f"validation failed at N={N}: max difference {difference:.3g}")
        ours = 1e3 * bench_cells.time_it(lambda: model.forward(ids), seconds)["median"]
        theirs = 1e3 * bench_cells.time_it(lambda: session.run(None, {"x": ids}), seconds)["median"]
        print(f"| {N} | {theirs:.2f} | {ours:.2f} | {theirs / ours:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime's and rnnext's threads (default 2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one measurement (default 2 s)")
    parser.add_argument("--batch", type=int, default=8, help="rows of the random batch of the differences")
    parser.add_argument("--steps", type=int, default=20, help="steps of the random batch (the course models take their own T=500)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    with tempfile.TemporaryDirectory() as directory:
        differences(directory, args.batch, args.steps)
        timing(directory, args.threads, args.seconds)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
