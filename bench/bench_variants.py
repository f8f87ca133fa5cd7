#!/usr/bin/env python
"""Time the training step (forward with cache + backward) of the issue-15 cell variants against the plain cell in
the same run: the layer-normalised LSTM (also against a plain-PyTorch LN-LSTM, haste's LayerNormLSTMScript written
with torch ops), the layer-normalised GRU, and the LSTM with projection (also against torch.nn.LSTM(proj_size)). Each variant is validated
first (the engine against its NumPy twin at a small size, torch's LSTMP against the engine at the timed size).
Prints one markdown table of medians and ratios to the plain rnnext cell of the same family.

    python bench/bench_variants.py --threads 2 [--N 32 --H 256 --T 100 --I 256 --proj 128 --seconds 3] [--masks]

--masks also times the variants whose kernels take the regularisers' masks (issue 15) under all of them at once
(dropout, recurrent dropout, weight-drop and zoneout at 0.25 each, drawn as the layers draw them in training).

--step times one step of a 2-layer stack instead (the char-LM's generation shape: N=1, I=65, H=128), the
engine's stepper against stepping layer by layer with each layer's one-step forward, for the plain and the
layer-normalised LSTM and GRU and the LSTM with projection.
"""
import argparse
import os
import statistics
import time

import numpy as np

import rnnext
from rnnext import _core
from rnnext.reference import layer_norm_cells, projection_cells
from rnnext.stepping import LayerByLayer


def problem(T, N, I, H, P, seed=0):
    """float32 arguments of the three engine forwards (shared x, kernel and bias)."""
    rng = np.random.default_rng(seed)

    def draw(*s, scale=0.1):
        return (scale * rng.standard_normal(s)).astype(np.float32)

    base = {"x": draw(T, N, I, scale=1.0), "kernel": draw(I, 4 * H), "bias": draw(4 * H)}
    plain = {**base, "h0": draw(N, H), "c0": draw(N, H), "recurrent_kernel": draw(H, 4 * H)}
    layer_norm = {**plain, "ln_input_gamma": 1 + draw(4 * H), "ln_recurrent_gamma": 1 + draw(4 * H),
                  "ln_cell_gamma": 1 + draw(H), "ln_cell_beta": draw(H)}
    projected = {**base, "h0": draw(N, P), "c0": draw(N, H), "recurrent_kernel": draw(P, 4 * H),
                 "projection": draw(H, P)}
    gru = {"x": base["x"], "h0": plain["h0"], "kernel": draw(I, 3 * H), "recurrent_kernel": draw(H, 3 * H),
           "bias": draw(2, 3 * H)}
    layer_norm_gru = {**gru, "ln_input_gamma": 1 + draw(3 * H), "ln_recurrent_gamma": 1 + draw(3 * H)}
    return {"lstm": plain, "layer_norm_lstm": layer_norm, "projected_lstm": projected, "gru": gru,
            "layer_norm_gru": layer_norm_gru}


STATES = {"lstm": 2, "layer_norm_lstm": 2, "projected_lstm": 2, "gru": 1, "layer_norm_gru": 1}
PLAIN = {"lstm": "lstm", "layer_norm_lstm": "lstm", "projected_lstm": "lstm", "gru": "gru", "layer_norm_gru": "gru"}


def engine_step(name, p, masks=None):
    """One forward with cache and one backward from a gradient on y, through rnnext._core."""
    forward, backward = getattr(_core, f"{name}_forward"), getattr(_core, f"{name}_backward")
    extra = {} if masks is None else {"masks": masks}
    y, *_, cache = forward(**p, **extra)
    weights = {k: v for k, v in p.items() if k not in ("x", "h0", "c0")}
    return backward(np.ones_like(y), *[None] * STATES[name], cache, p["x"], **weights, **extra)


# The variants whose kernels take the masks, with their gate blocks and zoneout keys.
MASKED = {"layer_norm_lstm": (4, ("zoneout_h", "zoneout_c")), "layer_norm_gru": (3, ("zoneout_h",)),
          "projected_lstm": (4, ("zoneout_h", "zoneout_c"))}
MASK_RATE = 0.25


def all_masks(name, p, seed=17):
    """Every regulariser's mask at MASK_RATE, as the layers draw them in training (docs/api.md)."""
    T, N, I = p["x"].shape
    S = p["h0"].shape[1]  # h's width: P with a projection
    H = p["c0"].shape[1] if "c0" in p else S
    G, zoneout_keys = MASKED[name]
    rng = np.random.default_rng(seed)

    def dropout(*shape):
        return ((rng.random(shape) >= MASK_RATE) / (1 - MASK_RATE)).astype(np.float32)

    masks = {"input": dropout(N, I), "state": dropout(N, S), "weight": dropout(S, G * H)}
    masks.update({key: (rng.random((T, N, S if key == "zoneout_h" else H)) < MASK_RATE).astype(np.float32)
                  for key in zoneout_keys})
    return masks


def validate_engine(name, module, with_masks=False):
    """The engine's forward and gradients against the twin's at a small size (the tests do this thoroughly)."""
    p = problem(6, 4, 8, 40, 12, seed=1)[name]
    extra = {"masks": all_masks(name, p)} if with_masks else {}
    y, *_, cache = getattr(_core, f"{name}_forward")(**p, **extra)
    y_ref, *_, cache_ref = getattr(module, f"{name}_forward")(**p, **extra)
    weights = {k: v for k, v in p.items() if k not in ("x", "h0", "c0")}
    none = [None] * STATES[name]
    grads = getattr(_core, f"{name}_backward")(np.ones_like(y), *none, cache, p["x"], **weights, **extra)
    grads_ref = getattr(module, f"{name}_backward")(np.ones_like(y), *none, cache_ref, p["x"], **weights, **extra)
    worst = max(np.abs(y - y_ref).max(), *(np.abs(grads[k] - grads_ref[k]).max() / max(1, np.abs(grads_ref[k]).max())
                                          for k in grads_ref))
    assert worst < 1e-4, f"{name}: engine and twin differ by {worst:g}"
    return worst


def torch_layer_norm_lstm(torch, p):
    """haste's LayerNormLSTMScript (frameworks/pytorch/layer_norm_lstm.py) on torch tensors: the plain-Python
    LN-LSTM a PyTorch user writes. Returns the tensors to differentiate and a step function."""
    F = torch.nn.functional
    t = {k: torch.from_numpy(v.copy()).requires_grad_(k not in ("h0", "c0")) for k, v in p.items()}
    H = t["h0"].shape[1]

    def step():
        x = t["x"]
        Wx = F.layer_norm(x @ t["kernel"], (4 * H,), weight=t["ln_input_gamma"])
        h, c, ys = t["h0"], t["c0"], []
        for step_input in Wx:
            v = F.layer_norm(h @ t["recurrent_kernel"], (4 * H,), weight=t["ln_recurrent_gamma"]) + step_input + t["bias"]
            i, f, g, o = v.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), weight=t["ln_cell_gamma"], bias=t["ln_cell_beta"]))
            ys.append(h)
        y = torch.stack(ys)
        for tensor in t.values():
            tensor.grad = None
        y.backward(torch.ones_like(y))

    return step


def torch_lstmp(torch, p):
    """torch.nn.LSTM(proj_size) with the engine's weights, validated against the engine's forward."""
    T, N, I = p["x"].shape
    H, P = p["projection"].shape
    module = torch.nn.LSTM(I, H, proj_size=P)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["kernel"].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["recurrent_kernel"].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["bias"]))
        module.bias_hh_l0.zero_()
        module.weight_hr_l0.copy_(torch.from_numpy(p["projection"].T.copy()))
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    state = (torch.from_numpy(p["h0"])[None], torch.from_numpy(p["c0"])[None])
    with torch.no_grad():
        y_torch, _ = module(x, state)
    difference = float(np.abs(y_torch.numpy() - _core.projected_lstm_forward(**p)[0]).max())
    assert difference < 1e-4, f"torch LSTMP and the engine differ by {difference:g}"

    def step():
        module.zero_grad()
        y, _ = module(x, state)
        y.backward(torch.ones_like(y))

    return step


def interleaved_medians(fns, seconds, rounds):
    """(median seconds, samples) of each function, sampled in `rounds` rounds that visit every function in turn
    (about seconds / rounds each per round): a machine that slows down for a while slows every row alike, so the
    ratios between rows hold better than with each row timed in one block."""
    for fn in fns:
        fn()  # warm-up: first-touch of buffers, lazy initialisation
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, samples in zip(fns, times):
            start = time.perf_counter()
            while not samples or time.perf_counter() - start < seconds / rounds:
                begin = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - begin)
    return [(statistics.median(samples), len(samples)) for samples in times]


def step_table(seconds, rounds, steps=100):
    """Median time of one step of a 2-layer stack (N=1, I=65, H=128): engine stepper against layer by layer."""
    print(f"one step of a 2-layer stack, N=1 I=65 H=128, float32, {rnnext.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| cell | engine stepper us | layer by layer us | ratio |")
    print("|---|---:|---:|---:|")
    x = np.random.default_rng(0).standard_normal((1, 65)).astype(np.float32)
    variants = [("LSTM", rnnext.LSTM, {}), ("LN-LSTM", rnnext.LSTM, {"layer_norm": True}),
                ("LSTMP (P=64)", rnnext.LSTM, {"proj_size": 64}), ("GRU", rnnext.GRU, {}),
                ("LN-GRU", rnnext.GRU, {"layer_norm": True})]
    for name, cell, options in variants:
        layer = cell(128, num_layers=2, input_size=65, seed=0, **options)
        weights = [w[0] for w in layer._weights]
        states = layer._zero_states(1, layer.num_layers)
        runs = []
        for stepper in (layer._engine_stepper(weights, 1), LayerByLayer(layer, weights)):
            def run(stepper=stepper):
                for _ in range(steps):
                    stepper.step(x, states)
            runs.append(run)
        times = [median / steps * 1e6 for median, _ in interleaved_medians(runs, seconds, rounds)]
        print(f"| {name} | {times[0]:.1f} | {times[1]:.1f} | {times[1] / times[0]:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--I", type=int, default=256)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--proj", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="sampling time of each row")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all rows (see interleaved_medians)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--masks", action="store_true",
                        help="also time the variants that take the fused masks under all of them")
    parser.add_argument("--step", action="store_true", help="time one generation step instead (see above)")
    args = parser.parse_args()

    rnnext.set_num_threads(args.threads)
    if args.step:
        step_table(args.seconds, args.rounds)
        return
    for name, module in (("layer_norm_lstm", layer_norm_cells), ("layer_norm_gru", layer_norm_cells),
                         ("projected_lstm", projection_cells)):
        validate_engine(name, module)
        if args.masks and name in MASKED:
            validate_engine(name, module, with_masks=True)
    problems = problem(args.T, args.N, args.I, args.H, args.proj)
    timed = []  # (variant, framework, function)
    for name in ("lstm", "layer_norm_lstm", "projected_lstm", "gru", "layer_norm_gru"):
        timed.append((name, "rnnext", lambda name=name: engine_step(name, problems[name])))
    if args.masks:
        for name in MASKED:
            masks = all_masks(name, problems[name])
            timed.append((name, "rnnext, all masks", lambda name=name, masks=masks: engine_step(name, problems[name], masks)))
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        torch.backends.mkldnn.enabled = False  # ATen's own kernels, as the tests use
        timed.append(("layer_norm_lstm", "torch (Python LN-LSTM)", torch_layer_norm_lstm(torch, problems["layer_norm_lstm"])))
        timed.append(("projected_lstm", "torch.nn.LSTM(proj_size)", torch_lstmp(torch, problems["projected_lstm"])))
    medians = interleaved_medians([fn for _, _, fn in timed], args.seconds, args.rounds)
    rows = [(name, framework, *median) for (name, framework, _), median in zip(timed, medians)]

    engine = {name: seconds for name, framework, seconds, _ in rows if framework == "rnnext"}
    print(f"training step (forward with cache + backward), float32, T={args.T} N={args.N} I={args.I} H={args.H} "
          f"P={args.proj}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}\n")
    print("| variant | framework | median ms | samples | / plain rnnext cell | / rnnext variant |")
    print("|---|---|---:|---:|---:|---:|")
    for name, framework, seconds, samples in rows:
        print(f"| {name} | {framework} | {seconds * 1e3:.1f} | {samples} | {seconds / engine[PLAIN[name]]:.2f} | "
              f"{seconds / engine[name]:.2f} |")


if __name__ == "__main__":
    main()
