#!/usr/bin/env python
"""Time the elementwise-recurrence cells (IndRNN, MinGRU, MinLSTM, SRU, QRNN of width 2) against rnnext's own LSTM and GRU of the
same hidden size and against torch.nn.LSTM / GRU, in one process and one run, at bench_cells.py's grid.

Each new cell is validated against its NumPy twin (rnnext.reference) at every size before it is timed. The table
gives the median forward+backward time, GFLOP/s, and next to each other the cell's time ratio to our GRU and its
flop ratio to our GRU; the issue's target is time <= 1.25 x GRU time x flop ratio. The timing, thread and torch
helpers are bench_cells.py's. See bench/README.md.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cells  # noqa: E402  (it also unsets OPENBLAS_CORETYPE for this process, before numpy loads)

# Multiply-adds per row and step of each cell's products at input size I and hidden size H (the elementwise scan is
# not counted, as bench_cells counts no pointwise gate math): the flops of a forward are 2 * T * N * these.
MULTIPLY_ADDS = {
    "lstm": lambda I, H: 4 * H * (I + H),
    "gru": lambda I, H: 3 * H * (I + H),
    "indrnn": lambda I, H: I * H,
    "mingru": lambda I, H: 2 * I * H,
    "minlstm": lambda I, H: 3 * I * H,
    "sru": lambda I, H: 3 * I * H,  # I = H: the highway adds x itself, kernel [I, 3H]
    "qrnn": lambda I, H: 2 * 3 * I * H,  # width 2: two taps of [I, 3H]
}
NEW_CELLS = ("indrnn", "mingru", "minlstm", "sru", "qrnn")
TARGET = 1.25  # the bound on time / (GRU time x flop ratio)
TOLERANCE = 1e-4  # float32 engine vs twin, as bench_cells.TOLERANCES (max |diff| relative to max(1, max |twin|))


def fwd_bwd_flops(cell, T, N, I, H):
    return 3 * 2 * T * N * MULTIPLY_ADDS[cell](I, H)  # backward: two products per forward product


def scan_problem(cell, T, N, I, H, seed):
    """The arguments of one forward of a new cell (float32, torch-like init ranges) and its dy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = 1 / H ** 0.5
    blocks = {"indrnn": 1, "mingru": 2, "minlstm": 3, "sru": 3, "qrnn": 3}[cell]
    p = {"x": rng.uniform(-1, 1, (T, N, I)), "h0": rng.uniform(-0.5, 0.5, (N, H))}
    if cell in ("sru", "qrnn"):
        p["c0"] = rng.uniform(-0.5, 0.5, (N, H))
    if cell == "qrnn":
        p["x0"] = rng.uniform(-1, 1, (N, I))  # the previous input, for the second tap
    p["kernel"] = rng.uniform(-k, k, (2, I, 3 * H) if cell == "qrnn" else (I, blocks * H))
    if cell == "indrnn":
        p["recurrent_weight"] = rng.uniform(0, 1, H)
    if cell == "sru":
        p["recurrent_weight"] = rng.uniform(-k, k, (2, H))
    p["bias"] = rng.uniform(-k, k, (2, H) if cell == "sru" else (blocks * H,))
    dy = rng.standard_normal((T, N, H))
    return {name: a.astype(np.float32) for name, a in p.items()}, dy.astype(np.float32)


def scan_call(mod, cell, p, dy):
    """Forward, then backward with dy and no gradient on the final state; returns (outputs, grads)."""
    out = getattr(mod, f"{cell}_forward")(**p)
    weights = {name: a for name, a in p.items() if name not in ("h0", "c0")}  # x (and QRNN's x0) and weights
    finals = [None] * (len(out) - 2)  # dh_n (and dc_n, and QRNN's dx_n)
    grads = getattr(mod, f"{cell}_backward")(dy, *finals, out[-1], **weights)
    return {"y": out[0], "h_n": out[1]}, grads


def validate(cell, N, I, H, seed):
    """Worst engine-vs-twin difference of a short problem (T=3) at this size; exits when over TOLERANCE."""
    import numpy as np

    import rnnext
    import rnnext.reference as reference

    p, dy = scan_problem(cell, 3, N, I, H, seed)
    engine, twin = scan_call(rnnext, cell, p, dy), scan_call(reference, cell, p, dy)
    worst = max(float(np.max(np.abs(a[k] - b[k])) / max(1.0, float(np.max(np.abs(b[k])))))
                for a, b in zip(engine, twin) for k in b)
    if not worst <= TOLERANCE:
        sys.exit(f"VALIDATION FAILED for {cell} N={N} H={H}: engine vs twin {worst:.2e} > {TOLERANCE:g}")
    return worst


def timed_calls(T, N, I, H, seed, with_torch):
    """{framework/cell: fwd+bwd call} for one size."""
    import rnnext

    calls = {}
    for peer in ("lstm", "gru"):
        p = bench_cells.make_problem(peer, T, N, I, H, "float32", seed)
        calls[f"rnnext {peer}"] = (lambda p=p, peer=peer: bench_cells.engine_call(rnnext, peer, p, True))
        if with_torch:
            m = bench_cells.torch_module(peer, I, H, "float32")
            bench_cells.torch_load(m, peer, p)
            t = bench_cells.torch_tensors(peer, p)
            calls[f"torch {peer}"] = (lambda m=m, t=t: bench_cells.torch_call(m, t, True))
    for cell in NEW_CELLS:
        p, dy = scan_problem(cell, T, N, I, H, seed)
        calls[f"rnnext {cell}"] = (lambda p=p, dy=dy, cell=cell: scan_call(rnnext, cell, p, dy))
    return calls


def sequential_medians(calls, seconds):
    """({name: median seconds}, {name: other load}): each call timed on its own by bench_cells.time_it."""
    times, loads = {}, {}
    for name, call in calls.items():
        meter = bench_cells.OtherLoad().start()
        times[name] = bench_cells.time_it(call, seconds)["median"]
        loads[name] = meter.stop()
    return times, loads


def interleaved_medians(calls, rounds):
    """As sequential_medians, but in `rounds` rounds that call every model once each, so that on a shared machine
    every model meets the same other load and the ratios stay fair; other load is over all rounds."""
    import gc
    import statistics
    import time

    for call in calls.values():  # warm-up: allocations and first-call costs
        call()
    samples = {name: [] for name in calls}
    meter = bench_cells.OtherLoad().start()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    load = meter.stop()
    return {name: statistics.median(s) for name, s in samples.items()}, {name: load for name in calls}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32, 128], help="N values")
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512], help="H values (I = H)")
    ap.add_argument("--steps", type=int, default=100, help="T")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats-seconds", type=float, default=1.0, help="target seconds per measurement")
    ap.add_argument("--rounds", type=int, default=0, help="time the models interleaved, one call each per round, "
                    "for this many rounds (for a shared machine: every model sees the same load); 0: one after "
                    "another with bench_cells.time_it")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
    for framework in ("rnnext",) + (("torch",) if with_torch else ()):
        bench_cells.set_threads(framework, args.threads)

    T = args.steps
    mode = f"interleaved, {args.rounds} rounds" if args.rounds else "one model after another"
    print(f"# Elementwise-recurrence cells, forward+backward, T={T}, I=H, float32, {args.threads} threads, "
          f"one process, {mode}\n")
    print(f"CPU: {bench_cells.cpu_model()}; load average before: {os.getloadavg()[0]:.2f}\n")
    print("| N | H | model | median ms | GFLOP/s | time / our GRU | flops / our GRU | time / (GRU time x flop "
          "ratio) | other load |")
    print("|---|---|---|---|---|---|---|---|---|")
    misses = []
    for N in args.batch:
        for H in args.hidden:
            I = H
            checks = {cell: validate(cell, N, I, H, args.seed) for cell in NEW_CELLS}
            sys.stderr.write(f"validated N={N} H={H}: " + ", ".join(f"{c} {e:.1e}" for c, e in checks.items()) + "\n")
            calls = timed_calls(T, N, I, H, args.seed, with_torch)
            times, loads = interleaved_medians(calls, args.rounds) if args.rounds else sequential_medians(
                calls, args.repeats_seconds)
            for name, seconds in times.items():
                sys.stderr.write(f"  N={N} H={H} {name}: {seconds * 1e3:.1f} ms\n")
            gru_time, gru_flops = times["rnnext gru"], fwd_bwd_flops("gru", T, N, I, H)
            for name, seconds in times.items():
                cell = name.split()[1]
                flops = fwd_bwd_flops(cell, T, N, I, H)
                time_ratio, flop_ratio = seconds / gru_time, flops / gru_flops
                target = ""
                if name.startswith("rnnext") and cell in NEW_CELLS:
                    score = time_ratio / flop_ratio
                    target = f"{score:.2f}" + ("" if score <= TARGET else " (over 1.25)")
                    if score > TARGET and N >= 32 and H >= 256:
                        misses.append(f"{cell} N={N} H={H}: {score:.2f}")
                load = "-" if loads[name] is None else f"{100 * loads[name]:.0f}%"
                print(f"| {N} | {H} | {name} | {seconds * 1e3:.2f} | {flops / seconds / 1e9:.1f} | "
                      f"{time_ratio:.3f} | {flop_ratio:.3f} | {target} | {load} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("Target (N >= 32, H >= 256): time <= 1.25 x GRU time x flop ratio; "
          + ("met everywhere." if not misses else "missed at " + "; ".join(misses) + "."))


if __name__ == "__main__":
    main()
