#!/usr/bin/env python
"""Time rnnext's LSTM, GRU and tanh RNN against the NumPy twin (rnnext.reference) and torch.nn on the CPU.

Each size is validated (outputs and gradients) before it is timed; the report is one markdown table per cell
with median times, GFLOP/s, the share of the machine's GEMM ceiling (the best rate of one large square product,
rnnext's own and torch.mm, measured in the same run) and the ratio of each peer to rnnext. With --variants, the
regularisers' masks (dropout, recurrent dropout, weight-drop, zoneout; issue 15) are timed too, validated
against the twin with the same masks, each as rows of their own with the ratio to the plain cell. See
bench/README.md.
"""
import os
import sys

# OPENBLAS_CORETYPE=Haswell (set by this environment) makes OpenBLAS skip its AVX-512 kernels, which slows the
# NumPy twin. It is read once, when OpenBLAS loads, so it has to go before numpy is imported anywhere.
# Workers get --keep-openblas-coretype so that they inherit this process's decision instead of making their own.
_CORETYPE_BEFORE = os.environ.get("OPENBLAS_CORETYPE")
_CORETYPE_POPPED = "--keep-openblas-coretype" not in sys.argv and _CORETYPE_BEFORE is not None
if _CORETYPE_POPPED:
    del os.environ["OPENBLAS_CORETYPE"]

import argparse  # noqa: E402  (everything below comes after the environment fix on purpose)
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

CELLS = {"lstm": 4, "gru": 3, "rnn": 1}  # cell -> G, the number of gate blocks
CELL_TITLES = {"lstm": "LSTM", "gru": "GRU (reset_after=True)", "rnn": "RNN (tanh)"}
FRAMEWORKS = ("rnnext", "torch", "numpy")
PASSES = ("fwd", "fwd+bwd")
MIN_SAMPLES, MAX_SAMPLES = 3, 20

# Tolerances for the validation step. Forward: max |difference| of y, h_n (and c_n); the brief asks for ~1e-4
# in float32, and the outputs are bounded by 1 so this is also a relative bound. Gradients are sums over T*N
# rows, so they are compared relative to the largest entry of the reference gradient (floored at 1); float32
# accumulation over 12,800 rows in a different order gives about 1e-6 here, 1e-4 leaves room without hiding
# a wrong formula (those give O(1) errors).
TOLERANCES = {"float32": {"forward": 1e-4, "grads": 1e-4}, "float64": {"forward": 1e-10, "grads": 1e-10}}


# The regularisers timed with --variants, at one rate each (every cell here has all of them).
VARIANT_RATE = 0.25
VARIANTS = ("dropout", "recurrent-dropout", "weight-drop", "zoneout", "all")


def variants_of(cell, variants):
    return list(variants)


def variant_masks(cell, variant, T, N, I, H, dtype, seed):
    """The engine masks of one variant, drawn as the layers draw them in training (docs/api.md)."""
    import numpy as np

    if variant is None:
        return None
    rng = np.random.default_rng(seed + 17)
    keep = 1 - VARIANT_RATE

    def dropout(shape):
        return ((rng.random(shape) >= VARIANT_RATE) / keep).astype(dtype)

    masks = {}
    if variant in ("dropout", "all"):
        masks["input"] = dropout((N, I))
    if variant in ("recurrent-dropout", "all"):
        masks["state"] = dropout((N, H))
    if variant in ("weight-drop", "all"):
        masks["weight"] = dropout((H, CELLS[cell] * H))
    if variant in ("zoneout", "all"):
        for key in ("zoneout_h", "zoneout_c") if cell == "lstm" else ("zoneout_h",):
            masks[key] = (rng.random((T, N, H)) < VARIANT_RATE).astype(dtype)
    return masks


def forward_flops(cell, T, N, I, H):
    """Multiply-adds of the two GEMMs per step, counted as 2 flops; the pointwise gate math is not counted."""
    return 2 * T * N * (I + H) * CELLS[cell] * H


def pass_flops(cell, T, N, I, H, which):
    # The backward does two GEMMs per forward GEMM (gradient w.r.t. the input and w.r.t. the weights).
    return forward_flops(cell, T, N, I, H) * (3 if which == "fwd+bwd" else 1)


# ---------------------------------------------------------------------------------------------------------
# problems: the same numbers for every framework (same seed), in rnnext's layout

def make_problem(cell, T, N, I, H, dtype, seed):
    """x [T,N,I], h0/c0 [N,H], kernel [I,G*H], recurrent_kernel [H,G*H], bias [G*H] (GRU [2,3H]), dy [T,N,H]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    G = CELLS[cell]
    k = 1 / math.sqrt(H)  # torch's default init range, so the gates sit where they do in practice

    def uniform(shape, scale):
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    p = {
        "x": uniform((T, N, I), 1.0),
        "h0": uniform((N, H), 0.5),
        "kernel": uniform((I, G * H), k),
        "recurrent_kernel": uniform((H, G * H), k),
        "bias": uniform((2, 3 * H) if cell == "gru" else (G * H,), k),
        "dy": rng.standard_normal((T, N, H)).astype(dtype),
    }
    if cell == "lstm":
        p["c0"] = uniform((N, H), 0.5)
    return p


def engine_call(mod, cell, p, backward, masks=None):
    """Forward (and backward with dy, dh_n = None) through rnnext or its twin; both have the same signatures."""
    x, K, R, b = p["x"], p["kernel"], p["recurrent_kernel"], p["bias"]
    grads = None
    if cell == "lstm":
        y, h_n, c_n, cache = mod.lstm_forward(x, p["h0"], p["c0"], K, R, b, masks=masks)
        out = {"y": y, "h_n": h_n, "c_n": c_n}
        if backward:
            grads = mod.lstm_backward(p["dy"], None, None, cache, x, K, R, b, masks=masks)
    elif cell == "gru":
        y, h_n, cache = mod.gru_forward(x, p["h0"], K, R, b, reset_after=True, masks=masks)
        out = {"y": y, "h_n": h_n}
        if backward:
            grads = mod.gru_backward(p["dy"], None, cache, x, K, R, b, reset_after=True, masks=masks)
    else:
        y, h_n, cache = mod.rnn_forward(x, p["h0"], K, R, b, activation="tanh", masks=masks)
        out = {"y": y, "h_n": h_n}
        if backward:
            grads = mod.rnn_backward(p["dy"], None, cache, x, K, R, b, activation="tanh", masks=masks)
    return out, grads


# ---------------------------------------------------------------------------------------------------------
# torch: modules built from rnnext-layout weights and back

def torch_module(cell, I, H, dtype):
    import torch

    if cell == "lstm":
        m = torch.nn.LSTM(I, H)  # batch_first=False: time-major, as rnnext
    elif cell == "gru":
        m = torch.nn.GRU(I, H)  # torch's GRU is the reset_after=True variant
    else:
        m = torch.nn.RNN(I, H, nonlinearity="tanh")
    return m.to(getattr(torch, dtype))


def torch_load(m, cell, p):
    """Put rnnext-layout weights into a torch module: the inverse of weights_from_torch (bias_hh = 0 except GRU)."""
    import torch

    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(p["kernel"].T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(p["recurrent_kernel"].T.copy()))
        if cell == "gru":
            m.bias_ih_l0.copy_(torch.from_numpy(p["bias"][0]))
            m.bias_hh_l0.copy_(torch.from_numpy(p["bias"][1]))
        else:
            m.bias_ih_l0.copy_(torch.from_numpy(p["bias"]))
            m.bias_hh_l0.zero_()


def weights_from_torch(m, cell):
    """kernel = weight_ih.T, recurrent_kernel = weight_hh.T, bias = bias_ih + bias_hh (GRU: stack of the two)."""
    import numpy as np

    def arr(t):
        return t.detach().numpy()

    w = {
        "kernel": np.ascontiguousarray(arr(m.weight_ih_l0).T),
        "recurrent_kernel": np.ascontiguousarray(arr(m.weight_hh_l0).T),
    }
    if cell == "gru":
        w["bias"] = np.ascontiguousarray(np.stack([arr(m.bias_ih_l0), arr(m.bias_hh_l0)]))
    else:
        w["bias"] = arr(m.bias_ih_l0) + arr(m.bias_hh_l0)
    return w


def torch_tensors(cell, p):
    """x, initial state and dy as torch tensors; x and the state require grad so torch computes dx, dh0 (dc0)
    as rnnext's backward does."""
    import torch

    t = {k: torch.from_numpy(p[k]).clone() for k in ("x", "dy")}
    t["x"].requires_grad_(True)
    h0 = torch.from_numpy(p["h0"])[None].clone().requires_grad_(True)  # torch wants [layers=1, N, H]
    if cell == "lstm":
        c0 = torch.from_numpy(p["c0"])[None].clone().requires_grad_(True)
        t["hx"] = (h0, c0)
    else:
        t["hx"] = h0
    return t


def torch_call(m, t, backward):
    import torch

    if not backward:
        with torch.no_grad():
            return m(t["x"], t["hx"])
    # Fresh gradients every call, as rnnext returns (assigns) them; accumulating into .grad would add a pass.
    for leaf in [*m.parameters(), t["x"], *(t["hx"] if isinstance(t["hx"], tuple) else (t["hx"],))]:
        leaf.grad = None
    y, _ = m(t["x"], t["hx"])
    y.backward(t["dy"])
    return y


def torch_results(m, cell, t):
    """Outputs and gradients of one torch forward+backward, in rnnext's names and layouts."""
    import numpy as np

    y, state = m(t["x"], t["hx"])
    y.backward(t["dy"])
    out = {"y": y.detach().numpy()}
    if cell == "lstm":
        out["h_n"], out["c_n"] = state[0][0].detach().numpy(), state[1][0].detach().numpy()
        h0, c0 = t["hx"]
    else:
        out["h_n"], h0, c0 = state[0].detach().numpy(), t["hx"], None
    grads = {
        "x": t["x"].grad.numpy(),
        "h0": h0.grad[0].numpy(),
        "kernel": m.weight_ih_l0.grad.numpy().T,
        "recurrent_kernel": m.weight_hh_l0.grad.numpy().T,
    }
    if c0 is not None:
        grads["c0"] = c0.grad[0].numpy()
    if cell == "gru":
        grads["bias"] = np.stack([m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy()])
    else:
        grads["bias"] = m.bias_ih_l0.grad.numpy()  # = bias_hh's grad: the bias enters as a sum
    return out, grads


# ---------------------------------------------------------------------------------------------------------
# validation

def compare(name_a, a, name_b, b):
    """Worst forward difference (absolute) and worst gradient difference (relative to max|b|, floored at 1)."""
    import numpy as np

    fwd = max(((float(np.max(np.abs(a[0][k] - b[0][k]))), k) for k in b[0]), default=(0.0, "-"))
    grads = max(
        ((float(np.max(np.abs(a[1][k] - b[1][k])) / max(1.0, float(np.max(np.abs(b[1][k]))))), k) for k in b[1]
         if b[1][k] is not None),  # peephole: None without peepholes
        default=(0.0, "-"),
    )
    return {"pair": f"{name_a} vs {name_b}", "forward": fwd[0], "forward_worst": fwd[1],
            "grads": grads[0], "grads_worst": grads[1]}


def validate(cell, T, N, I, H, dtype, seed, with_torch, variants=()):
    """rnnext against the twin (also under each variant's masks), and against torch with weights converted from a
    torch-initialised module."""
    import rnnext
    import rnnext.reference as reference

    p = make_problem(cell, T, N, I, H, dtype, seed)
    engine = engine_call(rnnext, cell, p, backward=True)
    checks = [compare("rnnext", engine, "numpy twin", engine_call(reference, cell, p, backward=True))]
    for variant in variants_of(cell, variants):
        masks = variant_masks(cell, variant, T, N, I, H, dtype, seed)
        checks.append(compare(f"rnnext {variant}", engine_call(rnnext, cell, p, True, masks),
                              f"numpy twin {variant}", engine_call(reference, cell, p, True, masks)))
    if with_torch:
        import torch

        torch.manual_seed(seed)
        m = torch_module(cell, I, H, dtype)  # torch's own init, including a nonzero bias_hh
        q = dict(p, **weights_from_torch(m, cell))
        checks.append(compare("rnnext", engine_call(rnnext, cell, q, backward=True),
                              "torch", torch_results(m, cell, torch_tensors(cell, q))))
    return checks


def check_validation(cell, size, dtype, checks, log):
    tol = TOLERANCES[dtype]
    bad = [c for c in checks if not (c["forward"] <= tol["forward"] and c["grads"] <= tol["grads"])]
    for c in checks:
        log(f"  validated {cell} N={size['N']} H={size['H']}: {c['pair']}: forward max|diff| {c['forward']:.1e} "
            f"({c['forward_worst']}), grads max rel diff {c['grads']:.1e} ({c['grads_worst']})")
    if bad:
        lines = [f"VALIDATION FAILED for {cell} T={size['T']} N={size['N']} I={size['I']} H={size['H']} {dtype} "
                 f"(tolerance forward {tol['forward']:.0e}, grads {tol['grads']:.0e}); nothing was timed for it:"]
        lines += [f"  {c['pair']}: forward {c['forward']:.3e} ({c['forward_worst']}), "
                  f"grads {c['grads']:.3e} ({c['grads_worst']})" for c in bad]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.exit(1)


# ---------------------------------------------------------------------------------------------------------
# timing

def time_it(fn, seconds):
    """Median seconds per call of fn().

    Warm up, estimate the cost of a call, then take between MIN_SAMPLES and MAX_SAMPLES samples so that the
    measurement lasts about `seconds`; a sample is the mean over `inner` back-to-back calls, inner > 1 only for
    calls so short that MAX_SAMPLES single calls would not fill the time.
    """
    warm_start = time.perf_counter()
    calls = 0
    while calls < 2 or (time.perf_counter() - warm_start < 0.2 * seconds and calls < MAX_SAMPLES):
        t0 = time.perf_counter()
        fn()
        estimate = time.perf_counter() - t0  # the last warm-up call: allocations and page faults are behind us
        calls += 1
    n_samples = min(MAX_SAMPLES, max(MIN_SAMPLES, math.ceil(seconds / estimate)))
    inner = max(1, int(seconds / (n_samples * estimate)))
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n_samples):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
    finally:
        gc.enable()
    # Spread: interquartile range where there are enough samples for quartiles to mean something.
    low, high = statistics.quantiles(samples, n=4)[::2] if len(samples) >= 5 else (min(samples), max(samples))
    return {"median": statistics.median(samples), "low": low, "high": high, "min": min(samples),
            "max": max(samples), "samples": len(samples), "inner": inner}


def set_threads(framework, threads):
    """Thread count for the framework about to be timed; NumPy's BLAS is limited in every case (the twin and the
    problem set-up use it)."""
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(limits=threads, user_api="blas")  # stays in force: no context manager
    if framework == "rnnext":
        import rnnext

        rnnext.set_num_threads(threads)
    elif framework == "torch":
        import torch

        torch.set_num_threads(threads)


def measure(framework, cell, size, dtype, seed, threads, seconds, variant=None):
    """Time the forward and the forward+backward of one framework at one size (rnnext and the twin: under the
    masks of `variant`, or none)."""
    set_threads(framework, threads)
    p = make_problem(cell, size["T"], size["N"], size["I"], size["H"], dtype, seed)
    masks = variant_masks(cell, variant, size["T"], size["N"], size["I"], size["H"], dtype, seed)
    if framework == "torch":
        m = torch_module(cell, size["I"], size["H"], dtype)
        torch_load(m, cell, p)
        t = torch_tensors(cell, p)
        calls = {"fwd": lambda: torch_call(m, t, False), "fwd+bwd": lambda: torch_call(m, t, True)}
    else:
        import rnnext
        import rnnext.reference

        mod = rnnext if framework == "rnnext" else rnnext.reference
        calls = {"fwd": lambda: engine_call(mod, cell, p, False, masks),
                 "fwd+bwd": lambda: engine_call(mod, cell, p, True, masks)}
    result = {which: time_it(calls[which], seconds) for which in PASSES}
    if framework == "rnnext":
        import rnnext

        # build_info() alone does not change when the engine is rebuilt from edited sources; the file does
        # (the extension of the instruction-set path in use, which rnnext._core re-exports)
        core = rnnext._core._engine.__file__
        result["build_info"] = dict(rnnext.build_info(), core_file=core, core_mtime=os.path.getmtime(core))
    return result


# ---------------------------------------------------------------------------------------------------------
# the ceiling: what a cell's products could reach at best on this machine, today

CEILING_SIZE, CEILING_SIZE_QUICK = 2048, 256  # n of the square product C [n, n] = A [n, n] . B [n, n]


def measure_ceiling(framework, n, dtype, threads, seconds):
    """GFLOP/s (best and median sample) of one square product: rnnext's own GEMM (dense_forward, linear, zero
    bias: the engine's packed operands and micro-kernel, the packing of B included) or torch.mm; checked against
    NumPy in float64 first. The best sample is the rate the machine allows when nothing disturbs it."""
    import numpy as np

    set_threads(framework, threads)
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (n, n)).astype(dtype) for _ in range(2))
    if framework == "rnnext":
        from rnnext import _core

        zeros = np.zeros(n, dtype)
        product = lambda: _core.dense_forward(a, b, zeros)  # noqa: E731
    else:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        product = lambda: torch.mm(ta, tb)  # noqa: E731
    expected = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(np.asarray(product()) - expected)) / np.max(np.abs(expected)))
    if not error <= TOLERANCES[dtype]["forward"]:
        raise SystemExit(f"ceiling: {framework}'s {n}x{n} product differs from NumPy's by {error:.1e} (relative)")
    timing = time_it(product, seconds)
    flops = 2.0 * n ** 3
    return {"n": n, "error": error, "best": flops / timing["min"] / 1e9, "median": flops / timing["median"] / 1e9}


def ceiling_rate(ceiling):
    """The limit a row is read against: the higher best rate of rnnext's GEMM and torch.mm."""
    return max(r["best"] for r in ceiling.values())


# ---------------------------------------------------------------------------------------------------------
# other load: on a small shared machine, the one thing that silently ruins a table

BUSY_LIMIT = 0.10  # rows measured while other processes used more than this share of all CPUs are marked


class OtherLoad:
    """Share of the machine's CPU time used by processes other than this benchmark (and its finished workers)
    between start() and stop(): busy time from /proc/stat (steal included) minus this process tree's own."""

    def __init__(self):
        self.ok = os.path.exists("/proc/stat")

    @staticmethod
    def _sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: idle and iowait are the idle time
        busy = sum(fields[:8]) - fields[3] - fields[4]
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return busy / os.sysconf("SC_CLK_TCK"), own, time.perf_counter()

    def start(self):
        if self.ok:
            self.begin = self._sample()
        return self

    def stop(self):
        """Others' CPU seconds divided by the CPU seconds the machine had (None where /proc/stat is missing)."""
        if not self.ok:
            return None
        end = self._sample()
        others = (end[0] - self.begin[0]) - (end[1] - self.begin[1])
        return max(0.0, others) / ((end[2] - self.begin[2]) * (os.cpu_count() or 1))


def wait_quiet(max_seconds, window=0.5):
    """Wait (at most max_seconds) for a window in which other processes use under BUSY_LIMIT of the CPUs."""
    deadline = time.perf_counter() + max_seconds
    while True:
        meter = OtherLoad().start()
        time.sleep(window)
        others = meter.stop()
        if others is None or others < BUSY_LIMIT or time.perf_counter() > deadline:
            return others is None or others < BUSY_LIMIT


# ---------------------------------------------------------------------------------------------------------
# environment description for the header

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info(threads, want_torch):
    info = {"python": platform.python_version(), "cpu": cpu_model(), "cpus": os.cpu_count()}
    import numpy

    import rnnext

    rnnext.set_num_threads(threads)
    info["rnnext"] = rnnext.build_info()
    info["rnnext_built"] = datetime.datetime.fromtimestamp(os.path.getmtime(rnnext._core.__file__)).astimezone() \
        .isoformat(timespec="seconds")
    info["numpy"] = numpy.__version__
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "threading_layer",
                                                "num_threads", "filepath")}
                        for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = None
    if want_torch:
        try:
            import torch

            torch.set_num_threads(threads)
            info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                             "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}
        except ImportError as e:
            info["torch"] = {"error": str(e)}
    return info


# ---------------------------------------------------------------------------------------------------------
# workers: one job per process, so each framework runs with only its own thread pools loaded and warm

def settle_allocator():
    """Put glibc malloc in the state a long-running process reaches, whatever ran before.

    glibc serves blocks above its mmap threshold (128 KiB at start) with fresh mmaps, and raises the threshold to
    the size of the largest mmapped block freed so far (up to 32 MiB), trimming the heap when more than twice that
    is free at its top. A fresh process that calls an engine returning ~20 MB of arrays per call therefore hands
    the pages back to the OS after every call and takes thousands of page faults per call (25% of the time at
    N=32, H=128), while a process that once freed a big array does not. Freeing one 30 MiB block up front gives
    every worker, and --same-process, the same steady state. Blocks over 32 MiB are mmapped fresh every call
    in any process; that cost is real and stays in the numbers."""
    import numpy as np

    block = np.empty(30 << 20, np.uint8)
    del block


def worker_main():
    settle_allocator()
    job = json.loads(sys.stdin.read())
    if job["kind"] == "info":
        result = environment_info(job["threads"], job["torch"])
    elif job["kind"] == "ceiling":
        result = measure_ceiling(job["framework"], job["n"], job["dtype"], job["threads"], job["seconds"])
    elif job["kind"] == "validate":
        set_threads("rnnext", job["threads"])
        if job["torch"]:
            set_threads("torch", job["threads"])
        s = job["size"]
        result = validate(job["cell"], s["T"], s["N"], s["I"], s["H"], job["dtype"], job["seed"], job["torch"],
                          job["variants"])
    else:
        result = measure(job["framework"], job["cell"], job["size"], job["dtype"], job["seed"], job["threads"],
                         job["seconds"], job.get("variant"))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def run_worker(job):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--keep-openblas-coretype"]
    proc = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(f"worker failed (exit {proc.returncode}) on job {job}\n--- stdout\n{proc.stdout}"
                         f"--- stderr\n{proc.stderr}")
        sys.exit(proc.returncode or 1)
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------------------------------------
# report

def fmt_ms(seconds):
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def header(args, info, mode, command, load, others, ceiling):
    G = ", ".join(f"{CELL_TITLES[c].split()[0]} {CELLS[c]}" for c in CELLS)
    if _CORETYPE_POPPED:
        coretype = (f"was `{_CORETYPE_BEFORE}`; unset for this run and its workers "
                    f"(`--keep-openblas-coretype` keeps it)")
    elif _CORETYPE_BEFORE is not None:
        coretype = f"`{_CORETYPE_BEFORE}`, kept (`--keep-openblas-coretype`)"
    else:
        coretype = "not set"
    if info.get("blas"):
        blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernels, {b['threading_layer']}, "
                         f"{b['num_threads']} threads)" for b in info["blas"])
    else:
        blas = "threadpoolctl not installed: BLAS threads not limited, kernels unknown"
    t = info.get("torch")
    if t is None:
        torch_line = "not measured (`--no-torch`)"
    elif "error" in t:
        torch_line = f"not importable ({t['error']})"
    else:
        torch_line = f"{t['version']}, {t['threads']} threads, oneDNN (mkldnn) {'on' if t['mkldnn'] else 'off'}"
    lines = [
        "## rnnext cell benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- CPU: {info['cpu']}, {info['cpus']} logical CPUs; Python {info['python']}",
        f"- rnnext: {json.dumps(info['rnnext'])}; extension file dated {info['rnnext_built']}",
        f"- torch: {torch_line}",
        f"- numpy: {info['numpy']}; BLAS: {blas}",
        f"- OPENBLAS_CORETYPE: {coretype}",
        f"- threads: {args.threads} for rnnext{', torch' if t and 'error' not in t else ''} and NumPy's BLAS",
        "- other processes: " + ("unknown (no /proc/stat)" if others is None else
                                 f"used {100 * others:.1f}% of the machine's CPU time during the run")
        + f"; load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end",
        f"- mode: {mode}",
        f"- ceiling (`of ceiling` column = rnnext GFLOP/s / the higher best rate): one {args.dtype} "
        f"{next(iter(ceiling.values()))['n']}³ product, {args.threads} threads, best sample (median): "
        + "; ".join(f"{CEILING_NAMES[fw]} {r['best']:.1f} GFLOP/s ({r['median']:.1f})"
                    + (" *" if busy(r) else "") for fw, r in ceiling.items()),
        f"- sizes: T={args.steps}, I=H, {args.dtype}; forward flops = 2·T·N·(I+H)·G·H ({G}); "
        "fwd+bwd counted as 3× the forward flops (the backward does two GEMMs per forward GEMM); "
        "pointwise gate math not counted",
        f"- times: median ms per call over 3–20 samples filling ~{args.repeats_seconds:g} s after a warm-up "
        "(a sample averages several calls when one call is very short); fwd+bwd = forward, then backward with a "
        "random dy and dh_n = None (torch: `y.backward(dy)` with x and the initial state requiring grad); "
        "forward-only in torch runs under `torch.no_grad()`",
        "- ratios: peer time / rnnext time, so > 1 means rnnext is faster",
        "- validated before timing: rnnext's outputs and gradients against the NumPy twin"
        + (" and torch (torch-initialised weights converted to rnnext's layout)" if t and "error" not in t else ""),
    ]
    return "\n".join(lines)


def busy(result):
    return result.get("others") is not None and result["others"] > BUSY_LIMIT


CEILING_NAMES = {"rnnext": "rnnext's GEMM (`_core.dense_forward`)", "torch": "torch.mm"}


def cell_table(cell, args, sizes, results, validation, frameworks, ceiling):
    cols = ["N", "H", "pass", "rnnext ms", "rnnext GFLOP/s", "of ceiling"]
    for fw in frameworks[1:]:
        cols += [f"{fw} ms", f"{fw} GFLOP/s", f"{fw}/rnnext"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join(":---" if c == "pass" else "---:" for c in cols) + "|"]
    noisy = []
    for s in sizes:
        key = (cell, s["N"], s["H"])
        for which in PASSES:
            flops = pass_flops(cell, s["T"], s["N"], s["I"], s["H"], which)
            base = results[key]["rnnext"][which]["median"]
            row = [str(s["N"]), str(s["H"]), which]
            for fw in frameworks:
                r = results[key][fw][which]
                row += [fmt_ms(r["median"]) + (" *" if busy(results[key][fw]) else ""),
                        f"{flops / r['median'] / 1e9:.1f}"]
                if fw == "rnnext":
                    row.append(f"{100 * flops / r['median'] / 1e9 / ceiling_rate(ceiling):.0f}%")
                if fw != "rnnext":
                    row.append(f"{r['median'] / base:.2f}")
                if (r["high"] - r["low"]) / r["median"] > 0.10:
                    spread = 50 * (r["high"] - r["low"]) / r["median"]
                    noisy.append(f"{fw} N={s['N']} H={s['H']} {which} ±{spread:.0f}%")
            rows.append("| " + " | ".join(row) + " |")
    worst = {}
    for checks in validation[cell]:
        for c in checks:
            w = worst.setdefault(c["pair"], [0.0, 0.0])
            w[0], w[1] = max(w[0], c["forward"]), max(w[1], c["grads"])
    notes = ["Validation (worst over sizes): " + "; ".join(
        f"{pair}: forward max|diff| {f:.1e}, grads max rel diff {g:.1e}" for pair, (f, g) in worst.items()) + "."]
    marked = [f"{fw} N={s['N']} H={s['H']} ({100 * results[(cell, s['N'], s['H'])][fw]['others']:.0f}%)"
              for s in sizes for fw in frameworks if busy(results[(cell, s["N"], s["H"])][fw])]
    if marked:
        notes.append(f"\\* measured while other processes used over {100 * BUSY_LIMIT:.0f}% of the machine's CPU "
                     "time: " + "; ".join(marked) + ". Those times are not trustworthy; rerun when the machine is "
                     "quiet.")
    if noisy:
        notes.append("Noisy (half the spread over 5% of the median; spread = interquartile range, or max − min "
                     "with fewer than 5 samples): " + "; ".join(noisy) + ".")
    title = f"### {CELL_TITLES[cell]}, T={args.steps}, I=H, {args.dtype}, {args.threads} threads"
    return "\n".join([title, "", *rows, "", *notes, *variant_table(cell, args, sizes, results)])


def variant_table(cell, args, sizes, results):
    """The rows of the regularisers (--variants): rnnext's time under each variant's masks and its ratio to the
    plain cell's, both from this run (the issue's target: at most 1.3x)."""
    variants = variants_of(cell, args.variants)
    if not variants:
        return []
    rows = ["| N | H | pass | variant | rnnext ms | x plain |", "|---:|---:|:---|:---|---:|---:|"]
    for s in sizes:
        timed = results[(cell, s["N"], s["H"])]
        for which in PASSES:
            base = timed["rnnext"][which]["median"]
            for variant in variants:
                r = timed[f"rnnext+{variant}"]
                rows.append(f"| {s['N']} | {s['H']} | {which} | {variant} | {fmt_ms(r[which]['median'])}"
                            f"{' *' if busy(r) else ''} | {r[which]['median'] / base:.2f} |")
    return ["", f"Regularisers (masks at rate {VARIANT_RATE}; 'all' = every mask at once), validated against the "
            "twin with the same masks:", "", *rows]


# ---------------------------------------------------------------------------------------------------------
# driver

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32, 128], help="N values")
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512], help="H values (I = H)")
    ap.add_argument("--steps", type=int, default=100, help="T")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-numpy", action="store_true", help="skip timing the NumPy twin (it is still validated)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch (timing and validation)")
    ap.add_argument("--repeats-seconds", type=float, default=None,
                    help="target seconds per measurement (default 1, or 0.05 with --quick)")
    ap.add_argument("--variants", nargs="*", choices=VARIANTS, default=[],
                    help="also time rnnext under these regularisers' masks (issue 15), e.g. --variants "
                         + " ".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="tiny grid for a CI smoke run: T=10, N=2, H=16")
    ap.add_argument("--same-process", action="store_true",
                    help="measure every framework in this one process instead of a worker process each")
    ap.add_argument("--keep-openblas-coretype", action="store_true",
                    help="leave OPENBLAS_CORETYPE as the environment set it")
    ap.add_argument("--busy-retries", type=int, default=2,
                    help="measure again (after waiting for a quiet moment) when other processes used over 10%% of "
                         "the CPUs during a measurement; rows still busy are marked")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="seconds to wait for a quiet moment before each such retry")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown-out", metavar="FILE", help="also write the report to FILE")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.hidden = 10, [2], [16]
    if args.repeats_seconds is None:
        args.repeats_seconds = 0.05 if args.quick else 1.0
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main()

    def log(msg):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    want_torch = not args.no_torch
    if want_torch:
        try:
            import importlib.util

            want_torch = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            want_torch = False
        if not want_torch:
            log("torch is not installed: measuring rnnext and the NumPy twin only")
    frameworks = ["rnnext"] + (["torch"] if want_torch else []) + ([] if args.no_numpy else ["numpy"])
    if args.same_process:
        settle_allocator()
        mode = ("same process: every framework timed in this one process, one after the other (rnnext and "
                "torch share the one libgomp loaded first; MKL's and OpenBLAS's pools stay alive beside it)")

        def job(j):
            if j["kind"] == "info":
                return environment_info(j["threads"], j["torch"])
            if j["kind"] == "ceiling":
                return measure_ceiling(j["framework"], j["n"], j["dtype"], j["threads"], j["seconds"])
            if j["kind"] == "validate":
                s = j["size"]
                return validate(j["cell"], s["T"], s["N"], s["I"], s["H"], j["dtype"], j["seed"], j["torch"],
                                j["variants"])
            return measure(j["framework"], j["cell"], j["size"], j["dtype"], j["seed"], j["threads"], j["seconds"],
                           j.get("variant"))
    else:
        mode = ("separate processes: each framework's measurements for each size run in a fresh worker "
                "process, so only that framework's thread pools exist while it is timed")
        job = run_worker

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    common = {"threads": args.threads, "dtype": args.dtype, "seed": args.seed}
    info = job({"kind": "info", "torch": want_torch, **common})
    if want_torch and "error" in info.get("torch", {}):
        log(f"torch does not import ({info['torch']['error']}): measuring rnnext and the NumPy twin only")
        want_torch = False
        frameworks.remove("torch")
    if _CORETYPE_POPPED:
        log(f"OPENBLAS_CORETYPE={_CORETYPE_BEFORE} unset for this benchmark and its workers "
            "(--keep-openblas-coretype keeps it)")

    results, validation = {}, {cell: [] for cell in args.cells}
    sizes = [{"T": args.steps, "N": N, "I": H, "H": H} for N in args.batch for H in args.hidden]
    builds = set()
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    whole_run = OtherLoad().start()

    def measured(spec, label):
        """Runs a timing job, again (after waiting for a quiet moment) while other processes were busy during it."""
        for attempt in range(args.busy_retries + 1):
            if attempt:
                quiet = wait_quiet(args.quiet_wait)
                log(f"  other processes were busy: measuring {label} again "
                    f"(attempt {attempt + 1}{'' if quiet else ', machine still busy'})")
            meter = OtherLoad().start()
            r = job(spec)
            r["others"] = meter.stop()
            if not busy(r):
                break
        return r

    ceiling = {}
    for fw in [f for f in frameworks if f in CEILING_NAMES]:
        n = CEILING_SIZE_QUICK if args.quick else CEILING_SIZE
        ceiling[fw] = measured({"kind": "ceiling", "framework": fw, "n": n, "seconds": args.repeats_seconds,
                                **common}, f"the ceiling ({fw})")
        log(f"  ceiling: {fw} {n}x{n} product: best {ceiling[fw]['best']:.1f} GFLOP/s, median "
            f"{ceiling[fw]['median']:.1f}")
    for cell in args.cells:
        for s in sizes:
            checks = job({"kind": "validate", "cell": cell, "size": s, "torch": want_torch, "variants": args.variants,
                          **common})
            check_validation(cell, s, args.dtype, checks, log)
            validation[cell].append(checks)
            key = (cell, s["N"], s["H"])
            results[key] = {}
            for fw in frameworks:
                r = measured({"kind": "time", "framework": fw, "cell": cell, "size": s,
                              "seconds": args.repeats_seconds, **common}, f"{cell} N={s['N']} H={s['H']} {fw}")
                results[key][fw] = r
                if fw == "rnnext":
                    builds.add(json.dumps(r["build_info"], sort_keys=True))
                log(f"  timed {cell} N={s['N']} H={s['H']} {fw}: fwd {fmt_ms(r['fwd']['median'])} ms, "
                    f"fwd+bwd {fmt_ms(r['fwd+bwd']['median'])} ms  [{time.perf_counter() - started:.0f} s]"
                    + (f"  OTHER PROCESSES USED {100 * r['others']:.0f}% OF THE CPUS" if busy(r) else ""))
            for variant in variants_of(cell, args.variants):
                r = measured({"kind": "time", "framework": "rnnext", "cell": cell, "size": s, "variant": variant,
                              "seconds": args.repeats_seconds, **common}, f"{cell} N={s['N']} H={s['H']} {variant}")
                results[key][f"rnnext+{variant}"] = r
                log(f"  timed {cell} N={s['N']} H={s['H']} rnnext {variant}: fwd+bwd "
                    f"{fmt_ms(r['fwd+bwd']['median'])} ms ({r['fwd+bwd']['median'] / results[key]['rnnext']['fwd+bwd']['median']:.2f}x plain)")

    parts = [header(args, info, mode, command, (load_start, os.getloadavg()[0]), whole_run.stop(), ceiling)]
    if len(builds) > 1:
        parts.append("**Warning: rnnext.build_info() changed during the run (the engine was rebuilt); "
                     "the rows mix engine builds.** Seen: " + "; ".join(sorted(builds)))
    for cell in args.cells:
        parts.append(cell_table(cell, args, sizes, results, validation, frameworks, ceiling))
    report = "\n\n".join(parts) + "\n"
    sys.stdout.write(report)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(report)
        log(f"report written to {args.markdown_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
