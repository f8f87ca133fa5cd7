#!/usr/bin/env python
"""Paired timing in one process: the installed build's extension for one instruction-set path against an extension
file of another build (e.g. a -march=native one), fwd+bwd calls alternated so that a busy machine's load falls on
both alike. One thread, float32, T = 100, I = 256. Prints a markdown table; the issue-14 figures came from
    python bench/compare_builds.py OTHER_VENV/lib/python3.11/site-packages/rnnext/_core_native*.so --path avx2
(the extension classes are module-local, so two builds can share the process)."""
import argparse
import importlib.util
import statistics
import time

import numpy as np

from rnnext import _dispatch

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
T, I = 100, 256


def load_file(path):
    """The engine extension in `path`, imported under its own module name (rnnext._core_<isa>)."""
    name = "rnnext." + path.rsplit("/", 1)[-1].split(".", 1)[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problem(cell, N, H):
    rng = np.random.default_rng(0)
    G = GATES[cell]

    def draw(*shape, scale=0.1):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    kwargs = dict(x=draw(T, N, I, scale=1.0), h0=draw(N, H), kernel=draw(I, G * H), recurrent_kernel=draw(H, G * H),
                  bias=draw(2, 3 * H) if cell == "gru" else draw(G * H))
    if cell == "lstm":
        kwargs["c0"] = draw(N, H)
    return kwargs


def forward_backward(engine, cell, kwargs):
    out = getattr(engine, f"{cell}_forward")(**kwargs)
    weights = {k: v for k, v in kwargs.items() if k not in ("h0", "c0")}
    final_cell_state = {"dc_n": None} if cell == "lstm" else {}
    getattr(engine, f"{cell}_backward")(np.ones_like(out[0]), None, **final_cell_state, cache=out[-1], **weights)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="the other build's extension file (_core_<isa>*.so)")
    ap.add_argument("--path", default=None, help="this build's path (default: the one rnnext chooses)")
    ap.add_argument("--cells", nargs="+", choices=list(GATES), default=list(GATES))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--seconds", type=float, default=3.0, help="per row, at least 5 pairs")
    args = ap.parse_args()
    mine, other = _dispatch.load_path(args.path), load_file(args.other)
    names = [engine.build_info()["isa"] for engine in (mine, other)]
    for engine in (mine, other):
        engine.set_num_threads(1)
    print(f"| cell | N | H | {names[0]} fwd+bwd ms (median) | {names[1]} ms | ratio of medians | "
          f"median of paired ratios (quartiles), pairs |")
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for N in args.batch:
            for H in args.hidden:
                kwargs = problem(cell, N, H)
                for engine in (mine, other):
                    forward_backward(engine, cell, kwargs)  # warm up
                times = ([], [])
                deadline = time.perf_counter() + args.seconds
                while time.perf_counter() < deadline or len(times[0]) < 5:
                    for engine, samples in zip((mine, other), times):
                        start = time.perf_counter()
                        forward_backward(engine, cell, kwargs)
                        samples.append(time.perf_counter() - start)
                ratios = [a / b for a, b in zip(*times)]
                low, middle, high = statistics.quantiles(ratios, n=4)
                medians = [statistics.median(samples) for samples in times]
                print(f"| {cell} | {N} | {H} | {1e3 * medians[0]:.3g} | {1e3 * medians[1]:.3g} | "
                      f"{medians[0] / medians[1]:.3f} | {middle:.3f} ({low:.2f}-{high:.2f}), {len(ratios)} |",
                      flush=True)


if __name__ == "__main__":
    main()
