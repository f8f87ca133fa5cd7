#!/usr/bin/env python
"""Time whole training steps of the experiments' models, and text generation, for rnnext and PyTorch (CPU).

Workloads (issue 12): the IMDB course model, the char-LM, PTB small, and the model of PyTorch issue #94457;
each step is what `rnnext.train.fit` runs (forward, loss, zero_grad, backward, clip, update, NaN guard) and its
torch equivalent with the same shapes, optimizer and clipping. Generation: the char-LM model sampling one
character per call at temperature 0.8. Every framework and thread setting runs in fresh processes (three each by
default, the settings in turn, their medians' median reported: one process alone can be 40% off); the report
is one markdown table of medians and ratios. rnnext's "default" column changes no setting at all (the engine's
and NumPy's own thread defaults), which is what a user gets. See bench/README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cells  # noqa: E402  first: it unsets OPENBLAS_CORETYPE before NumPy loads (see its header)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402

WORKLOADS = {
    # name: (title, shapes); vocab V, embedding E (0: one-hot input), units H, layers L, outputs C, batch N, steps T
    "imdb": ("IMDB course model: Embedding(10000,32)+LSTM(32)+Dense(1), RMSprop",
             dict(V=10000, E=32, H=32, L=1, C=1, N=128, T=500, optimizer="rmsprop", lr=1e-3, clip=None)),
    "char-lm": ("char-LM: one-hot(65)+2-layer LSTM(128)+Dense(65), RMSprop, clip 5",
                dict(V=65, E=0, H=128, L=2, C=65, N=50, T=50, optimizer="rmsprop", lr=2e-3, clip=5.0)),
    "ptb-small": ("PTB small: Embedding(10000,200)+2-layer LSTM(200)+Dense(10000), SGD, clip 5",
                  dict(V=10000, E=200, H=200, L=2, C=10000, N=20, T=20, optimizer="sgd", lr=1.0, clip=5.0)),
    "torch-94457": ("Embedding(10000,32)+LSTM(100)+Dense(1), Adam lr 0.01 (PyTorch issue #94457)",
                    dict(V=10000, E=32, H=100, L=1, C=1, N=256, T=500, optimizer="adam", lr=0.01, clip=None)),
}
QUICK = dict(N=4, T=8)  # --quick: the same models on tiny batches
GENERATION = dict(V=65, E=0, H=128, L=2, C=65, temperature=0.8, length=100)
SETTINGS = [("torch", 1), ("torch", 2), ("rnnext", 1), ("rnnext", 2), ("rnnext", None)]  # None: no setting


def batch_arrays(shape, seed):
    """The inputs and targets of one training step, as NumPy arrays both frameworks take."""
    import numpy as np

    rng = np.random.default_rng(seed)
    N, T, V = shape["N"], shape["T"], shape["V"]
    ids = rng.integers(0, V, size=(N, T))
    if shape["C"] == 1:  # a sentiment classifier: one label per sequence
        return ids, rng.integers(0, 2, size=N).astype(np.float32)
    return ids, rng.integers(0, shape["C"], size=(N, T))


# ---------------------------------------------------------------------------------------------------------
# rnnext

def rnnext_step(shape, seed):
    """One `fit` step of the workload's model, as a function of no arguments."""
    import numpy as np

    from rnnext import layers, optim
    from rnnext.experiments.char_lm import lm_loss
    from rnnext.experiments.sentiment import classifier_loss
    from rnnext.models import Sequential
    from rnnext.step import WeightGuard, train_step

    sequence_model = shape["C"] > 1
    stack = [layers.Embedding(shape["V"], shape["E"], seed=seed)] if shape["E"] else []
    stack.append(layers.LSTM(shape["H"], num_layers=shape["L"], return_sequences=sequence_model,
                             stateful=sequence_model, seed=seed + 1))
    stack.append(layers.Dense(shape["C"], seed=seed + 2))
    model = Sequential(stack)
    model.build((None,) if shape["E"] else (None, shape["V"]))
    params = model.parameters()
    optimizer = {"rmsprop": lambda: optim.RMSprop(params, lr=shape["lr"], alpha=0.95 if sequence_model else 0.9),
                 "sgd": lambda: optim.SGD(params, lr=shape["lr"]),
                 "adam": lambda: optim.Adam(params, lr=shape["lr"])}[shape["optimizer"]]()
    ids, y = batch_arrays(shape, seed)
    x = ids if shape["E"] else np.eye(shape["V"], dtype=np.float32)[ids]
    loss_fn = lm_loss("batch" if shape["optimizer"] == "sgd" else "mean") if sequence_model else classifier_loss
    guard = WeightGuard(optimizer.params)
    return lambda: train_step(model, loss_fn, optimizer, x, y, clip_norm=shape["clip"], guard=guard)


def rnnext_generation(seed):
    """Seconds per character of char_lm.generate with the char-LM model (one-hot input, one char per step)."""
    import time

    from rnnext import data
    from rnnext.experiments import char_lm

    g = GENERATION
    model = char_lm.build_model(g["V"], "lstm", g["L"], g["H"], embedding=g["E"], seed=seed)
    vocab = data.Vocabulary([chr(33 + i) for i in range(g["V"] - 1)] + ["\n"], unk_token=None)

    def per_char():
        started = time.perf_counter()
        char_lm.generate(model, vocab, g["length"], temperature=g["temperature"], seed=seed)
        return (time.perf_counter() - started) / g["length"]
    return per_char


# ---------------------------------------------------------------------------------------------------------
# torch

def torch_step(shape, seed):
    import torch

    torch.manual_seed(seed)
    sequence_model = shape["C"] > 1

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(shape["V"], shape["E"]) if shape["E"] else None
            self.lstm = torch.nn.LSTM(shape["E"] or shape["V"], shape["H"], num_layers=shape["L"], batch_first=True)
            self.dense = torch.nn.Linear(shape["H"], shape["C"])
            self.state = None

        def forward(self, x):
            h = self.embedding(x) if self.embedding is not None else x
            out, state = self.lstm(h, self.state)
            if sequence_model:  # truncated BPTT: the state carries over, detached, as rnnext's stateful layers do
                self.state = tuple(s.detach() for s in state)
                return self.dense(out)
            return self.dense(out[:, -1])

    model = Model()
    params = list(model.parameters())
    optimizer = {"rmsprop": lambda: torch.optim.RMSprop(params, lr=shape["lr"], alpha=0.95 if sequence_model else 0.9),
                 "sgd": lambda: torch.optim.SGD(params, lr=shape["lr"]),
                 "adam": lambda: torch.optim.Adam(params, lr=shape["lr"])}[shape["optimizer"]]()
    ids, y = batch_arrays(shape, seed)
    ids = torch.from_numpy(ids)
    x = ids if shape["E"] else torch.nn.functional.one_hot(ids, shape["V"]).float()
    y = torch.from_numpy(y)

    def step():
        output = model(x)
        if not sequence_model:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(output[:, 0], y)
        elif shape["optimizer"] == "sgd":  # Zaremba: summed over time, averaged over rows
            loss = torch.nn.functional.cross_entropy(output.reshape(-1, shape["C"]), y.reshape(-1),
                                                     reduction="sum") / shape["N"]
        else:
            loss = torch.nn.functional.cross_entropy(output.reshape(-1, shape["C"]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        if shape["clip"] is not None:
            torch.nn.utils.clip_grad_norm_(params, shape["clip"])
        optimizer.step()
        return float(loss)
    return step


def torch_generation(seed):
    import time

    import torch

    torch.manual_seed(seed)
    g = GENERATION
    lstm = torch.nn.LSTM(g["V"], g["H"], num_layers=g["L"], batch_first=True)
    dense = torch.nn.Linear(g["H"], g["V"])
    generator = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def per_char():
        started = time.perf_counter()
        state, token = None, g["V"] - 1
        for _ in range(g["length"]):
            x = torch.nn.functional.one_hot(torch.tensor([[token]]), g["V"]).float()
            out, state = lstm(x, state)
            probs = torch.softmax(dense(out[0, -1]) / g["temperature"], dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        return (time.perf_counter() - started) / g["length"]
    return per_char


# ---------------------------------------------------------------------------------------------------------
# workers and the report

# Steps run before timing, in every setting alike: with no thread setting the engine's tuner alternates one thread
# and all threads for the first 2 * kWarmUpTries = 6 calls of each shape (thread_tuner.h), and the #94457 model's
# few steps in a measurement would otherwise time that warm-up rather than what a training run gets.
WARM_UP_STEPS = 8


def worker(job):
    bench_cells.settle_allocator()
    framework, threads = job["framework"], job["threads"]
    if threads is not None:
        if framework == "torch":
            import torch

            torch.set_num_threads(threads)
        else:
            import rnnext

            rnnext.set_num_threads(threads)
    if job["workload"] == "generation":
        per_char = (torch_generation if framework == "torch" else rnnext_generation)(job["seed"])
        per_char()  # warm-up
        samples = sorted(per_char() for _ in range(job["repeats"]))
        return {"median": samples[len(samples) // 2], "samples": len(samples)}
    shape = dict(WORKLOADS[job["workload"]][1], **(QUICK if job["quick"] else {}))
    step = (torch_step if framework == "torch" else rnnext_step)(shape, job["seed"])
    for _ in range(0 if job["quick"] else WARM_UP_STEPS):
        step()
    return bench_cells.time_it(step, job["seconds"])


def run_job(job):
    """The job's result in a fresh process, with `others`: the share of the CPUs other processes used meanwhile."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--keep-openblas-coretype"]
    meter = bench_cells.OtherLoad().start()
    process = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True)
    others = meter.stop()
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        sys.exit(f"worker failed (exit {process.returncode}) on {job}\n{process.stdout}\n{process.stderr}")
    return dict(json.loads(lines[-1][len("RESULT "):]), others=others)


def setting_name(framework, threads):
    return f"{framework} {'default' if threads is None else f'{threads}t'}"


def report(results, args, info, settings):
    ms = bench_cells.fmt_ms
    names = [setting_name(*s) for s in settings]
    with_torch = any(framework == "torch" for framework, _ in settings)
    ratios = ["torch/rnnext 1t", "torch/rnnext 2t"] if with_torch else []
    lines = ["# rnnext vs PyTorch: training steps and generation", "",
             f"`{shlex.join(['bench/bench_models.py'] + (args.argv or []))}`; {info}", "",
             f"Median over {args.processes} processes of each one's median ms per training step (per character for "
             "generation); ratio = PyTorch time / rnnext time at "
             "the same thread count (above 1: rnnext is faster); default/1t = rnnext with no thread setting "
             "against rnnext at 1 thread (at most 1 is the target). * marks a time measured while other processes "
             f"used more than {100 * bench_cells.BUSY_LIMIT:.0f}% of the CPUs.", "",
             "| workload | " + " | ".join(names + ratios + ["rnnext default/1t"]) + " |",
             "|---|" + "---:|" * (len(names) + len(ratios) + 1)]
    for workload in list(args.workloads) + (["generation"] if args.generation else []):
        row = {name: results[(workload, name)]["median"] for name in names}
        title = "char-LM generation, per character (N=1, temperature 0.8)" if workload == "generation" \
            else WORKLOADS[workload][0]
        marks = {n: " *" if bench_cells.busy(results[(workload, n)]) else "" for n in names}
        cells = [ms(row[n]) + marks[n] for n in names]
        if with_torch:
            cells += [f"{row['torch 1t'] / row['rnnext 1t']:.2f}", f"{row['torch 2t'] / row['rnnext 2t']:.2f}"]
        cells.append(f"{row['rnnext default'] / row['rnnext 1t']:.2f}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if "ptb-small" in args.workloads:
        shape = dict(WORKLOADS["ptb-small"][1], **(QUICK if args.quick else {}))
        words = shape["N"] * shape["T"]
        rates = ", ".join(f"{name} {words / results[('ptb-small', name)]['median']:,.0f}" for name in names)
        lines += ["", f"PTB small training, words/s (N*T = {words} words per step): {rates}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--no-generation", dest="generation", action="store_false", help="skip the generation row")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement (default: 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=4, T=8, 0.05 s per measurement")
    parser.add_argument("--processes", type=int, default=None,
                        help="fresh processes per setting and workload, their medians' median reported (default: "
                             "3, or 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown-out", metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--keep-openblas-coretype", action="store_true",
                        help="do not unset OPENBLAS_CORETYPE (see bench/README.md)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.worker:
        sys.stdout.write("RESULT " + json.dumps(worker(json.loads(sys.stdin.read()))) + "\n")
        return 0
    seconds = 0.05 if args.quick else args.seconds
    settings = SETTINGS if importlib.util.find_spec("torch") else [s for s in SETTINGS if s[0] != "torch"]
    if settings is not SETTINGS:
        print("torch is not installed: rnnext alone", file=sys.stderr)
    if args.processes is None:
        args.processes = 1 if args.quick else 3
    processes = args.processes
    results = {}
    for workload in list(args.workloads) + (["generation"] if args.generation else []):
        # Each setting in `processes` fresh processes, the settings in turn: the same work has been measured
        # up to 40% apart in two processes (generation, where every setting runs the same single-threaded code).
        runs = {setting_name(*s): [] for s in settings}
        for _ in range(processes):
            for framework, threads in settings:
                job = {"framework": framework, "threads": threads, "workload": workload, "seed": args.seed,
                       "seconds": seconds, "quick": args.quick, "repeats": 3 if args.quick else 15}
                runs[setting_name(framework, threads)].append(run_job(job))
        for name, measured in runs.items():
            medians = [m["median"] for m in measured]
            others = [m["others"] for m in measured if m.get("others") is not None]
            results[(workload, name)] = {"median": statistics.median(medians), "others": max(others, default=None)}
            print(f"{workload:12s} {name:15s} {bench_cells.fmt_ms(results[(workload, name)]['median'])} ms "
                  f"(processes: {', '.join(bench_cells.fmt_ms(m) for m in medians)})", file=sys.stderr, flush=True)
    info = (f"{bench_cells.cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"OPENBLAS_CORETYPE {'kept' if not bench_cells._CORETYPE_POPPED else 'unset'}")
    text = report(results, args, info, settings)
    sys.stdout.write(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
