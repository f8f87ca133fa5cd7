#!/usr/bin/env python
"""Data-parallel throughput (issue 18): 2 MPI ranks x 1 engine thread against 1 process x 2 threads, for the PTB
small word LM and the char-LM, training through `char_lm.train_lm` (fit, stateful TBPTT, each rank owning a slice
of the streams), with 1 process x 1 thread for reference; plus the bytes each rank reduces per step and a paper estimate for K machines at 10 Gbit/s.

    python bench/bench_distributed.py [--steps 150] [--ptb DIR] [--text FILE]

Every setting runs in its own process (mpirun -n 2 for the ranks). A step's time is the interval between two
consecutive forward calls of the training loop (median over the steps after the first 5); the reduction time is
the median of DataParallel.reduce_gradients. The report is a markdown table; say how busy the machine was.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cells  # noqa: E402,F401  first: it unsets OPENBLAS_CORETYPE before NumPy loads (see its header)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WARMUP_STEPS = 5
LINK_BYTES_PER_S = 10e9 / 8  # 10 Gbit/s


def _timed(function, times):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        times.append((started, time.perf_counter()))
        return result
    return wrapper


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def child(args) -> None:
    """One setting: train `args.steps` windows and print the timings as JSON (rank 0)."""
    import numpy as np

    import rnnext
    from rnnext import data as rdata
    from rnnext import distributed, optim
    from rnnext.experiments import char_lm, word_lm

    rnnext.set_num_threads(args.threads)
    parallel = distributed.from_environment("fast")
    if args.workload == "ptb":
        words = rdata.load_ptb(args.ptb)["train"]
        vocab = rdata.Vocabulary.build(words, max_size=10_000, specials=("<unk>",))
        ids, batch, seq_len = vocab.encode(words), 20, 20
        model = word_lm.build_model(len(vocab), 200, 2, seed=0)
        optimizer, loss_scale = optim.SGD(model.parameters(), lr=1.0), "batch"
    else:
        ids, vocab = char_lm.encode_corpus(args.text, max_chars=2_000_000)
        batch, seq_len = 50, 50
        model = char_lm.build_model(len(vocab), "lstm", 2, 128, seed=0)
        optimizer, loss_scale = optim.RMSprop(model.parameters(), lr=2e-3, alpha=0.95), "mean"
    streams = rdata.batchify(np.asarray(ids), batch)[:, :args.steps * seq_len + 1]
    forwards, reductions = [], []
    model.forward = _timed(model.forward, forwards)
    if parallel is not None:
        parallel.reduce_gradients = _timed(parallel.reduce_gradients, reductions)
    char_lm.train_lm(model, streams, None, vocab_size=len(vocab), seq_len=seq_len, epochs=1, optimizer=optimizer,
                     clip=5.0, loss_scale=loss_scale, log_every=0, log=lambda *a: None, parallel=parallel)
    starts = [start for start, _ in forwards][WARMUP_STEPS:]
    step_s = _median([b - a for a, b in zip(starts, starts[1:])])
    if parallel is None or parallel.is_root:
        print(json.dumps({
            "step_s": step_s, "tokens_per_step": batch * seq_len, "steps": len(forwards),
            "reduce_s": _median([end - start for start, end in reductions][WARMUP_STEPS:]) if reductions else 0.0,
            "gradient_bytes": parallel.gradient_bytes if parallel is not None else
            sum(p.value.nbytes for p in model.parameters()),
            "parameters": sum(p.size for p in model.parameters())}))


def run_setting(args, workload, ranks, threads) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", "--workload", workload, "--threads",
               str(threads), "--steps", str(args.steps), "--ptb", str(args.ptb), "--text", str(args.text)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if ranks > 1:
        environment.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        command = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + command
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def estimate(machine, gradient_bytes, machines) -> float:
    """Tokens/s of `machines` machines like this one, each training the whole batch of the one-process run in its
    measured step time (weak scaling: the combined batch grows with K), joined by a ring Allreduce of the gradient
    buffer at 10 Gbit/s (2 (K-1)/K of it sent and received per machine, latency left out)."""
    communicate_s = 2 * (machines - 1) / machines * gradient_bytes / LINK_BYTES_PER_S
    return machines * machine["tokens_per_step"] / (machine["step_s"] + communicate_s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="training windows per setting (default: %(default)s)")
    p.add_argument("--ptb", type=Path, default=SHARED / "ptb", help="directory with ptb.train.txt")
    p.add_argument("--text", type=Path, default=SHARED / "tinyshakespeare.txt", help="char-LM text")
    p.add_argument("--workloads", default="ptb,char-lm")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    if shutil.which("mpirun") is None:
        raise SystemExit("bench_distributed: needs mpirun (Open MPI) and mpi4py")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)
    print("| workload | setting | median step | tokens/s | vs 1 rank x 2 threads | reduce per step | gradient buffer |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for workload in args.workloads.split(","):
        one = run_setting(args, workload, 1, 2)
        two = run_setting(args, workload, 2, 1)
        serial = run_setting(args, workload, 1, 1)
        results[workload] = (min(one, serial, key=lambda result: result["step_s"]), two)
        for name, result in (("1 rank x 2 threads", one), ("2 ranks x 1 thread", two), ("1 rank x 1 thread", serial)):
            tokens_s = result["tokens_per_step"] / result["step_s"]
            print(f"| {workload} | {name} | {result['step_s'] * 1e3:.1f} ms | {tokens_s:,.0f} | "
                  f"{one['step_s'] / result['step_s']:.2f} | {result['reduce_s'] * 1e3:.1f} ms | "
                  f"{result['gradient_bytes'] / 1e6:.2f} MB |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if "ptb" in results:
        machine, ranks = results["ptb"]
        print(f"\nPTB paper estimate at 10 Gbit/s: each machine trains batch 20 x 20 in "
              f"{machine['step_s'] * 1e3:.0f} ms (this machine's faster one-process setting), then a ring "
              f"Allreduce of {ranks['gradient_bytes'] / 1e6:.1f} MB")
        print("| machines | tokens/s | efficiency |")
        print("|---|---|---|")
        single = estimate(machine, ranks["gradient_bytes"], 1)
        for machines in (1, 2, 4, 8, 16, 64):
            tokens_s = estimate(machine, ranks["gradient_bytes"], machines)
            print(f"| {machines} | {tokens_s:,.0f} | {tokens_s / (machines * single):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
