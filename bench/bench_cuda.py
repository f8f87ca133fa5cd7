#!/usr/bin/env python
"""Time rnnext's CUDA engine (rnnext._cuda) against torch.nn.LSTM and torch.nn.GRU with cuDNN on the same GPU, in
one run: forward + backward at T = 100, N in {32, 128, 512}, H in {256, 512, 1024} (I = H), float32.

Each size is validated first (rnnext on the GPU against torch on the GPU, same weights, bench_cells' tolerances),
then timed. rnnext's engine takes and returns NumPy arrays, so its time includes the copies to and from the GPU;
torch is timed twice: with its tensors resident on the GPU (cuDNN's own speed) and with the same copies as rnnext
(NumPy in, NumPy gradients out). TF32 is off on both sides (rnnext's cuBLAS products stay float32). The report
is a markdown table with medians, TFLOP/s (the GEMM flops of bench_cells' count) and the ratios; --json writes
every figure. Needs a GPU, a CUDA build of rnnext (docs/cuda.md) and torch with CUDA. See bench/README.md.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cells import (TOLERANCES, compare, make_problem, pass_flops, time_it,  # noqa: E402
                         weights_from_torch)

CELLS = ("lstm", "gru")


def rnnext_call(cuda_engine, cell, p):
    """Forward + backward (dy given, dh_n = None) through rnnext._cuda: NumPy in, NumPy out."""
    x, K, R, b = p["x"], p["kernel"], p["recurrent_kernel"], p["bias"]
    if cell == "lstm":
        y, h_n, c_n, cache = cuda_engine.lstm_forward(x, p["h0"], p["c0"], K, R, b)
        return {"y": y, "h_n": h_n, "c_n": c_n}, cuda_engine.lstm_backward(p["dy"], None, None, cache)
    y, h_n, cache = cuda_engine.gru_forward(x, p["h0"], K, R, b, reset_after=True)
    return {"y": y, "h_n": h_n}, cuda_engine.gru_backward(p["dy"], None, cache)


def torch_gpu_module(cell, I, H, seed):
    """A torch module with torch's own initialisation (a nonzero bias_hh included) moved to the GPU, and its weights
    in rnnext's layout."""
    import torch

    torch.manual_seed(seed)
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)  # time-major, as rnnext
    weights = weights_from_torch(m, cell)
    return m.cuda(), weights


def torch_gpu_inputs(cell, p):
    """x, initial state and dy on the GPU; x and the state require grad so torch computes dx, dh0 (dc0)."""
    import torch

    def on_gpu(name, grad=False):
        return torch.from_numpy(p[name]).cuda().requires_grad_(grad)

    t = {"x": on_gpu("x", True), "dy": on_gpu("dy")}
    h0 = torch.from_numpy(p["h0"])[None].cuda().requires_grad_(True)
    t["hx"] = (h0, torch.from_numpy(p["c0"])[None].cuda().requires_grad_(True)) if cell == "lstm" else h0
    return t


def torch_step(m, t):
    """One forward + backward on resident tensors, gradients assigned fresh (as rnnext's are)."""
    for leaf in [*m.parameters(), t["x"], *(t["hx"] if isinstance(t["hx"], tuple) else (t["hx"],))]:
        leaf.grad = None
    y, state = m(t["x"], t["hx"])
    y.backward(t["dy"])
    return y, state


def torch_results(m, cell, t):
    """Outputs and gradients of one torch step, as NumPy arrays in rnnext's names and layouts."""
    import numpy as np

    def host(tensor):
        return tensor.detach().cpu().numpy()

    y, state = torch_step(m, t)
    h0, c0 = t["hx"] if cell == "lstm" else (t["hx"], None)
    out = {"y": host(y), "h_n": host(state[0][0] if cell == "lstm" else state[0])}
    grads = {"x": host(t["x"].grad), "h0": host(h0.grad[0]), "kernel": host(m.weight_ih_l0.grad).T,
             "recurrent_kernel": host(m.weight_hh_l0.grad).T}
    if cell == "lstm":
        out["c_n"], grads["c0"] = host(state[1][0]), host(c0.grad[0])
        grads["bias"] = host(m.bias_ih_l0.grad)
    else:
        grads["bias"] = np.stack([host(m.bias_ih_l0.grad), host(m.bias_hh_l0.grad)])
    return out, grads


def measure(cuda_engine, cell, T, N, H, seconds, seed):
    import torch

    dtype = "float32"
    p = make_problem(cell, T, N, H, H, dtype, seed)
    m, weights = torch_gpu_module(cell, H, H, seed)
    q = dict(p, **weights)
    check = compare("rnnext cuda", rnnext_call(cuda_engine, cell, q), "torch cuDNN",
                    torch_results(m, cell, torch_gpu_inputs(cell, q)))
    tol = TOLERANCES[dtype]
    if not (check["forward"] <= tol["forward"] and check["grads"] <= tol["grads"]):
        sys.exit(f"VALIDATION FAILED for {cell} T={T} N={N} H={H}: {check}; nothing was timed for it")

    resident = torch_gpu_inputs(cell, q)

    def torch_resident():
        torch_step(m, resident)
        torch.cuda.synchronize()

    def torch_with_copies():
        torch_results(m, cell, torch_gpu_inputs(cell, q))  # NumPy in, NumPy out, like rnnext's engine
        torch.cuda.synchronize()

    times = {"rnnext": time_it(lambda: rnnext_call(cuda_engine, cell, q), seconds),
             "torch": time_it(torch_resident, seconds),
             "torch+copies": time_it(torch_with_copies, seconds)}
    flops = pass_flops(cell, T, N, H, H, "fwd+bwd")
    return {"cell": cell, "T": T, "N": N, "I": H, "H": H, "dtype": dtype, "validation": check,
            "times": times, "tflops": {k: flops / v["median"] / 1e12 for k, v in times.items()}}


def table(results):
    lines = ["| cell | N | H | rnnext (ms) | torch cuDNN (ms) | torch + copies (ms) | rnnext TFLOP/s | "
             "rnnext / torch | rnnext / (torch + copies) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = {k: v["median"] for k, v in r["times"].items()}
        lines.append(f"| {r['cell']} | {r['N']} | {r['H']} | {1e3 * t['rnnext']:.2f} | {1e3 * t['torch']:.2f} | "
                     f"{1e3 * t['torch+copies']:.2f} | {r['tflops']['rnnext']:.1f} | "
                     f"{t['rnnext'] / t['torch']:.2f} | {t['rnnext'] / t['torch+copies']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128, 512], help="N values")
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 512, 1024], help="H values (I = H)")
    ap.add_argument("--steps", type=int, default=100, help="T")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args(argv)

    import torch

    import rnnext
    from rnnext import cuda

    if not cuda.available() or not torch.cuda.is_available():
        sys.exit(f"bench_cuda needs a GPU seen by both rnnext and torch: rnnext says {cuda.cuda_info()}, "
                 f"torch.cuda.is_available() is {torch.cuda.is_available()}")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    info = {"rnnext_cuda": cuda.cuda_info(), "rnnext": rnnext.build_info(), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "gpu": torch.cuda.get_device_name(0),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
    print(f"# bench_cuda: {info['gpu']}, torch {info['torch']} (cuDNN {info['cudnn']}), rnnext._cuda "
          f"{info['rnnext_cuda']['cuda_runtime']} / cuBLAS {info['rnnext_cuda']['cublas']}; T={args.steps}, "
          f"float32, TF32 off; median of {args.seconds:g} s per figure", flush=True)
    results = []
    for cell in args.cells:
        for N in args.batch:
            for H in args.hidden:
                result = measure(cuda._cuda, cell, args.steps, N, H, args.seconds, args.seed)
                v = result["validation"]
                print(f"  {cell} N={N} H={H}: validated (forward {v['forward']:.1e}, grads {v['grads']:.1e}); "
                      f"rnnext {1e3 * result['times']['rnnext']['median']:.2f} ms, torch "
                      f"{1e3 * result['times']['torch']['median']:.2f} ms", flush=True)
                results.append(result)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
