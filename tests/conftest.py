"""Shared test configuration and helpers.

Configuration: the hypothesis profiles of the property tests (tests/test_properties_*.py) and a count of the
examples they ran, printed at the end of the session. Profiles, chosen with RNNEXT_HYPOTHESIS_PROFILE (default "ci"):
- "ci": reproducible (derandomize=True: the same examples on every run, no example database), no deadline (the
  tests never depend on speed), and max_examples sized so the property tests run >= 10,000 examples in about two
  minutes on a 2-core machine. Every property test scales its own count from this profile's max_examples (scaled).
- "slow": 20x the examples, still without a deadline, random (not derandomized) so each run explores new inputs;
  for a nightly or pre-release run: RNNEXT_HYPOTHESIS_PROFILE=slow python -m pytest tests/test_properties_*.py
- "dev": a quick smoke run (10x fewer examples than "ci").

Helpers: every helper, constant and fixture that more than one test module uses lives here, once. Test modules
import what they use with `from conftest import ...` (pytest puts tests/ on sys.path) and never import from
another test module; fixtures (torch, restore_threads, example_counter) need no import.
- comparisons: assert_close, assert_same_bits, relative_error, mentions, sigmoid
- the GIL: another_thread_ran_during
- finite differences: numerical_gradient
- engine problems (tests/test_engine*.py, test_properties_engine.py, test_reference.py): CASES, DTYPES, SHAPES,
  THREAD_SHAPES, RTOL, make_problem, make_douts, mixed_lengths, forward_kwargs, backward_kwargs, run_forward,
  run_backward, call_results, valid_kwargs, and for bad input get_argument, with_argument, raises ...
- recurrent layers: check_step_matches_sequence, STEP_TOL, check_rows_alone
- skips: the torch fixture, requires_openmp, shared_data
- tiny corpora for the experiments: write_tiny_ptb, write_tiny_reviews
"""
import collections
import csv
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import rnnext

# =========================================================================================================
# hypothesis profiles and the example count

# too_slow: the engine-vs-twin examples build several arrays per example and run the NumPy twin, which loops over
# time in Python; a few hundred ms for one example on a busy shared machine is expected, not a strategy problem.
_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
CI_MAX_EXAMPLES = 300
settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("slow", max_examples=20 * CI_MAX_EXAMPLES, **_COMMON)
settings.register_profile("dev", max_examples=CI_MAX_EXAMPLES // 10, derandomize=True, database=None, **_COMMON)
PROFILE = os.environ.get("RNNEXT_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def scaled(factor):
    """A property test's share of the profile's examples: `factor` times the profile's max_examples."""
    return settings(max_examples=max(1, int(settings.default.max_examples * factor)))


class ExampleCounter:
    """Counts the examples each property test ran to completion (all checks passed or the expected exception
    was seen); a test calls it once per example, at its end."""

    def __init__(self):
        self.counts = collections.Counter()
        self.started = None

    def __call__(self):
        caller = sys._getframe(1).f_code.co_name
        self.counts[caller] += 1


_COUNTER = ExampleCounter()


@pytest.fixture(scope="session")
def example_counter():
    if _COUNTER.started is None:
        _COUNTER.started = time.perf_counter()
    return _COUNTER


def pytest_report_header(config):
    return f"rnnext hypothesis profile: {PROFILE} (max_examples={settings.default.max_examples})"


def pytest_terminal_summary(terminalreporter):
    if not _COUNTER.counts:
        return
    total = sum(_COUNTER.counts.values())
    elapsed = time.perf_counter() - _COUNTER.started
    terminalreporter.section("property-test examples")
    for name, count in sorted(_COUNTER.counts.items()):
        terminalreporter.write_line(f"{count:7d}  {name}")
    terminalreporter.write_line(f"{total:7d}  examples in total ({PROFILE} profile), {elapsed:.1f} s from the first "
                                "property test to the end of the session")


# =========================================================================================================
# skips: optional dependencies, build options and data that may be absent

@pytest.fixture
def torch(monkeypatch):
    """torch, or the test is skipped. oneDNN is switched off for the test: creating its float32 RNN primitives takes
    ~0.5 s per shape on CPU, against milliseconds for ATen's own kernels, which compute the same function."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    return torch


requires_openmp = pytest.mark.skipif(not rnnext.build_info()["openmp"], reason="built without OpenMP: one thread only")


@pytest.fixture
def restore_threads():
    """Puts the engine's thread count back after the test, and its tuning (a count the test fixed is undone)."""
    saved, tuning = rnnext.get_num_threads(), rnnext._core.thread_tuning()
    yield
    rnnext.set_num_threads(None if tuning else saved)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(relative: str) -> Path:
    """Path of a real corpus file under shared/data, skipping the test when the shared data is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# =========================================================================================================
# comparisons: every tensor is reported by name, the failing ones marked with "!"

FLOAT_DTYPES = [np.float32, np.float64]
INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _difference(actual, expected, finite=False):
    """(max abs difference over entries finite in both, max |expected| there, ok-so-far message or None). Non-finite
    entries must be in the same places with the same values, or (finite=True) be absent from both."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return None, None, f"shape {a.shape}, expected {e.shape}"
    bad_a, bad_e = ~np.isfinite(a), ~np.isfinite(e)
    if finite and (bad_a.any() or bad_e.any()):
        return None, None, f"non-finite at {int(bad_a.sum())} entries, expected {int(bad_e.sum())} (none allowed)"
    if not np.array_equal(bad_a, bad_e) or not np.array_equal(a[bad_a], e[bad_e], equal_nan=True):
        return None, None, f"non-finite at {int(bad_a.sum())} entries, expected {int(bad_e.sum())} (same places)"
    finite_entries = ~bad_e
    return np.abs(a - e)[finite_entries].max(initial=0.0), np.abs(e[finite_entries]).max(initial=0.0), None


def _check_each(actual, expected, what, check, heading):
    """check(a, e) -> (ok, text) for each tensor name of `expected` (None must match None); one report lists
    every tensor, the failing ones marked with "!"."""
    assert set(actual) == set(expected), f"{what}: names {sorted(actual)}, expected {sorted(expected)}"
    lines, failed = [], False
    for name in sorted(expected):
        a, e = actual[name], expected[name]
        if a is None or e is None:
            ok, text = a is None and e is None, f"{type(a).__name__}, expected {type(e).__name__}"
        else:
            ok, text = check(a, e)
        lines.append(f"{' ' if ok else '!'} {name}: {text}")
        failed |= not ok
    assert not failed, f"{heading}:\n" + "\n".join(lines)


def assert_close(actual, expected, rtol, what, *, scale_floor=0.0, absolute=False, finite=False):
    """Each tensor of `actual` within rtol * scale of `expected`, where scale is max(its largest |expected| entry,
    scale_floor), or exactly 1 with absolute=True (rtol is then an absolute tolerance). NaN and inf must be in the
    same places, or with finite=True nowhere. Both are dicts keyed by tensor name (values may be None, which must
    match None), or two arrays, reported as `what`. Shapes must be equal (no broadcasting)."""
    if not isinstance(expected, dict):
        actual, expected = {what: actual}, {what: expected}

    def close(a, e):
        with np.errstate(invalid="ignore", over="ignore"):
            abs_err, scale, problem = _difference(a, e, finite)
        if problem is not None:
            return False, problem
        scale = 1.0 if absolute else max(scale, scale_floor)
        rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else np.inf)
        return rel <= rtol, f"max abs diff {abs_err:.3g}" + (
            "" if absolute else f", max |expected| {scale:.3g}, relative {rel:.3g}")

    _check_each(actual, expected, what, close, f"{what} ({'atol' if absolute else 'rtol'} {rtol:g})")


def assert_same_bits(actual, expected, what):
    """Each tensor of `actual` bit for bit equal to `expected` (same dtype and shape)."""
    def same(a, e):
        ok = a.dtype == e.dtype and a.shape == e.shape and a.tobytes() == e.tobytes()
        if a.dtype != e.dtype or a.shape != e.shape:
            return ok, f"(bitwise) {a.dtype}{a.shape}, expected {e.dtype}{e.shape}"
        abs_err, _, problem = _difference(a, e)
        return ok, "(bitwise) " + (problem or f"max abs diff {abs_err:.3g}")

    _check_each(actual, expected, what, same, what)


def relative_error(analytic, numeric):
    """max |analytic - numeric| relative to the largest entry of either (entries near zero are rounding noise when
    divided by themselves)."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), 1e-30)
    return np.max(np.abs(analytic - numeric)) / scale


def state_arrays(states):
    """The arrays of a recurrent layer's states structure, flattened in order (h, or h then c, per entry)."""
    return [a for entry in states for a in (entry if isinstance(entry, tuple) else (entry,))]


def weights(model):
    """Copies of a model's parameter values by name."""
    return {name: param.value.copy() for name, param in model.named_parameters()}


def mentions(message, name):
    """Whether `message` names the argument `name` as a word ("x" in "x has", not in "x_t" or "max")."""
    return re.search(r"(?<![\w'\[])" + re.escape(name) + r"(?![\w'\]])", message) is not None


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


# =========================================================================================================
# the GIL: whether an engine call lets another Python thread run.
# No clock is read. With a switch interval far longer than the test, a thread holding the GIL never hands it over on
# a timer: it lets go only where it blocks or where C code releases it. A second thread is woken right before the
# call and, once it has the GIL, makes one mark. A call that keeps the GIL therefore never sees a mark, at any size.
# A call that releases it sees one as soon as it lasts longer than the operating system takes to wake a thread, so
# the work grows until it does, up to a bound far beyond any machine's wake-up time.

def another_thread_ran_during(call):
    marks, woken, finished = [], threading.Event(), threading.Event()

    def mark_once():
        woken.wait()
        marks.append(True)
        finished.wait()

    waiter = threading.Thread(target=mark_once)
    waiter.start()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e6)
    try:
        woken.set()  # the waiter now waits for the GIL, which this thread keeps until `call` releases it
        call()
        marks_after_call = len(marks)
    finally:
        sys.setswitchinterval(switch_interval)
        finished.set()
        waiter.join()
    return marks_after_call == 1


# =========================================================================================================
# finite differences

# rnnext.gradcheck samples entries under a mean-reduced loss, whose gradients are ~10x smaller than those of the
# random-projection losses the full checks use: errors near 1e-7, so 1e-5 leaves margin.
GRADCHECK_TOL = 1e-5

def numerical_gradient(loss, array, eps=1e-6):
    """d loss() / d array by central differences, one entry at a time: each entry of `array` is moved by +-eps in
    place (and put back), so `loss`, which takes no arguments, must read `array` itself. In float64 with eps = 1e-6
    the truncation error is O(eps^2) ~ 1e-12 and the rounding error O(u * |loss| / eps) ~ 1e-10 for O(1) losses."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        loss_plus = loss()
        array[index] = original - eps
        loss_minus = loss()
        array[index] = original
        grad[index] = (loss_plus - loss_minus) / (2 * eps)
    return grad


# =========================================================================================================
# engine problems: one call of rnnext.{rnn,lstm,gru}_{forward,backward} or of its NumPy twin (rnnext.reference)

# Every cell x option; each entry is (cell, options). "peephole" is a test-side flag that adds a peephole array.
CASES = {
    "rnn-tanh": ("rnn", {"activation": "tanh"}),
    "rnn-relu": ("rnn", {"activation": "relu"}),
    "rnn-sigmoid": ("rnn", {"activation": "sigmoid"}),
    "lstm": ("lstm", {"coupled": False}),
    "lstm-peephole": ("lstm", {"coupled": False, "peephole": True}),
    "lstm-coupled": ("lstm", {"coupled": True}),
    "lstm-peephole-coupled": ("lstm", {"coupled": True, "peephole": True}),
    "gru-reset_after": ("gru", {"reset_after": True}),
    "gru-reset_before": ("gru", {"reset_after": False}),
}
DTYPES = {"float32": np.float32, "float64": np.float64}
FUNCTIONS = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward"]

# (T, N, I, H). The engine cuts H into blocks of 32 units (128 when N = 1; common.h unit_blocks): full blocks take
# a fixed-size pointwise path, the rest a run-time-size one, so H = 37, 70 and 33 leave a remainder block and
# (3, 1, 5, 160) has one full 128-unit block and a 32-unit rest; N = 1 and T = 1 are the degenerate batch and
# sequence; I != H everywhere so a transposed kernel cannot pass. (2, 48, 24, 70) is big enough for the engine to
# run its time loop on 2 threads (see THREAD_SHAPES). The last two cross the products' chunk sizes (gemm.h):
# T*N = 600 rows make three 256-row chunks and, as the depth of a weight gradient, two depth chunks; I = 530 and
# H = 520 make two depth chunks of the input and the in-loop products.
SHAPES = [(1, 1, 3, 5), (4, 1, 6, 37), (3, 5, 4, 70), (5, 4, 9, 13), (2, 3, 40, 33), (2, 48, 24, 70), (3, 1, 5, 160),
          (12, 50, 530, 40), (2, 13, 7, 520)]

# The engine runs its time loop on one thread while 2*N*H*G*H < 2e5 flops per step; both shapes are above that
# for every cell (G >= 1) and have at least 2 unit blocks. T*N = 240 and G*H up to 512 exceed Eigen's GEMM depth
# blocking (~150 here), so the products summing over them are cut into depth blocks, the place where a blocking that
# follows the thread count would show.
THREAD_SHAPES = [(5, 48, 24, 70), (4, 32, 16, 128), (4, 1, 16, 330)]  # the last: one sequence (128-unit blocks)

# Engine vs twin. The twin runs in float64 on the very values the engine got (float32 inputs are exact in float64),
# so the difference measures the engine's own rounding, not the sum of two implementations' rounding. A tensor is
# compared against its largest entry: entries near zero are rounding noise when divided by themselves.
# - float64: both sides sum the same O(H + I) products per step in different orders (Eigen GEMM blocking, the
#   engine's unit blocks); over these shapes the observed difference is <= 1e-15. 1e-10 leaves five orders of
#   margin, while a wrong term, sign or gate block shows up at 1e-3 or worse.
# - float32: Eigen's vectorised tanh and logistic approximations are accurate to a few ulp (~3e-7 relative), and the
#   weight gradients sum T*N rows in another order; the observed difference is <= 5e-7, so 1e-5 leaves 20x.
# Keyed by the scalar type (np.float32); index with np.dtype(...).type when holding a dtype.
RTOL = {np.float32: 1e-5, np.float64: 1e-10}


def cell_of(case):
    return CASES[case][0]


def gates_of(case):
    cell, options = CASES[case]
    return {"rnn": 1, "lstm": 3 if options.get("coupled") else 4, "gru": 3}[cell]


def make_problem(case, shape, dtype=np.float64, seed=0, scale=None):
    """Inputs of one case: (params, options). params holds exactly the differentiable arguments, by name.

    scale=None: weights at 0.5 / sqrt(fan-in) keep every pre-activation O(1), so no gate sits on a flat tail, where
    a derivative factor near 0 would hide a wrong term (x at 1, states and peepholes at 0.5, biases at 0.1). A
    number: every array is that number times standard normal draws."""
    T, N, I, H = shape
    cell, options = CASES[case]
    options = dict(options)
    with_peephole = options.pop("peephole", False)
    G = gates_of(case)
    rng = np.random.default_rng(seed)

    def draw(own_scale, *dims):
        return ((own_scale if scale is None else scale) * rng.standard_normal(dims)).astype(dtype)

    params = {"x": draw(1.0, T, N, I), "h0": draw(0.5, N, H)}
    if cell == "lstm":
        params["c0"] = draw(0.5, N, H)
    params["kernel"] = draw(0.5 / np.sqrt(max(I, 1)), I, G * H)  # I = 0: an empty kernel, whatever its scale
    params["recurrent_kernel"] = draw(0.5 / np.sqrt(H), H, G * H)
    params["bias"] = draw(0.1, 2, 3 * H) if cell == "gru" and options["reset_after"] else draw(0.1, G * H)
    if with_peephole:
        params["peephole"] = draw(0.5, 2 if options["coupled"] else 3, H)
    return params, options


def make_douts(case, shape, dtype, seed=1):
    """Random upstream gradients {"y", "h_n"[, "c_n"]}."""
    T, N, _, H = shape
    rng = np.random.default_rng(seed)
    douts = {"y": rng.standard_normal((T, N, H)).astype(dtype), "h_n": rng.standard_normal((N, H)).astype(dtype)}
    if cell_of(case) == "lstm":
        douts["c_n"] = rng.standard_normal((N, H)).astype(dtype)
    return douts


def mixed_lengths(T, N, shortest=0, also=()):
    """[N] lengths cycling through a middle length, `shortest` and T, then the lengths in `also` (unsorted on
    purpose). torch's packing rejects length 0: pass shortest=1 there."""
    pattern = [max(1, T // 2), shortest, T, *also]
    return np.array([pattern[n % len(pattern)] for n in range(N)], dtype=np.int64)


def forward_kwargs(case, params, options, lengths):
    names = ("x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "peephole")
    return {**{k: params[k] for k in names if k in params}, **options, "lengths": lengths}


def backward_kwargs(case, params, options, lengths, douts, cache):
    kw = {"dy": douts["y"], "dh_n": douts["h_n"]}
    if cell_of(case) == "lstm":
        kw["dc_n"] = douts["c_n"]
    kw["cache"] = cache
    names = ("x", "kernel", "recurrent_kernel", "bias", "peephole")
    return {**kw, **{k: params[k] for k in names if k in params}, **options, "lengths": lengths}


def run_forward(module, case, kwargs):
    """({"y", "h_n"[, "c_n"]}, cache) of the case's forward in `module` (rnnext or rnnext.reference)."""
    out = getattr(module, f"{cell_of(case)}_forward")(**kwargs)
    names = ("y", "h_n", "c_n") if cell_of(case) == "lstm" else ("y", "h_n")
    return dict(zip(names, out[:-1])), out[-1]


def run_backward(module, case, kwargs):
    return getattr(module, f"{cell_of(case)}_backward")(**kwargs)


def expected_grad_names(case):
    if cell_of(case) == "lstm":
        return {"x", "h0", "c0", "kernel", "recurrent_kernel", "bias", "peephole"}
    return {"x", "h0", "kernel", "recurrent_kernel", "bias"}


def as_float64(tree):
    """The same values in float64 (dicts of arrays, None kept)."""
    if isinstance(tree, dict):
        return {k: as_float64(v) for k, v in tree.items()}
    return None if tree is None else tree.astype(np.float64)


def forward_results(outputs, cache):
    """Forward outputs and cache entries in one dict, for comparing two engine calls."""
    return {**outputs, **{f"cache[{k!r}]": v for k, v in cache.items()}}


def call_results(fn, kwargs):
    """Everything rnnext.`fn`(**kwargs) returns, flattened into one dict of named arrays."""
    out = getattr(rnnext, fn)(**kwargs)
    if fn.endswith("backward"):
        return out
    names = ("y", "h_n", "c_n") if fn.startswith("lstm") else ("y", "h_n")
    return forward_results(dict(zip(names, out[:-1])), out[-1])


# T, N, I, H of the bad-input problems: small, with I != H and H not a multiple of 8.
BAD_SHAPE = (3, 4, 6, 9)
# The case each function is checked with: the LSTM with peepholes so that the peephole argument is exercised.
FUNCTION_CASE = {"rnn": "rnn-tanh", "lstm": "lstm-peephole", "gru": "gru-reset_after"}


def valid_kwargs(fn, dtype=np.float64, case=None, shape=BAD_SHAPE, seed=0, with_lengths=True):
    """Keyword arguments of one valid call of `fn` (backward: with the cache of the matching forward): the problem
    drawn with `seed`, the upstream gradients with seed + 1, mixed_lengths or (with_lengths=False) None."""
    cell, direction = fn.split("_")
    case = case or FUNCTION_CASE[cell]
    params, options = make_problem(case, shape, dtype, seed=seed)
    lengths = mixed_lengths(shape[0], shape[1]) if with_lengths else None
    kwargs = forward_kwargs(case, params, options, lengths)
    if direction == "forward":
        return kwargs
    _, cache = run_forward(rnnext, case, kwargs)
    return backward_kwargs(case, params, options, lengths, make_douts(case, shape, dtype, seed=seed + 1), cache)


# =========================================================================================================
# tiny corpora for the experiments (tests/test_lm_experiments.py, tests/test_distributed.py)

POSITIVE = ["great", "wonderful", "superb", "loved", "excellent", "brilliant"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "worst", "dull"]
FILLER = ["the", "film", "movie", "was", "plot", "actors", "and", "it", "story", "a", "<br />"]


def write_tiny_ptb(directory: Path, seed: int = 0) -> Path:
    """A PTB-format corpus from a small grammar, so there is structure to learn."""
    rng = np.random.default_rng(seed)
    subjects, verbs, objects = ["the cat", "a dog", "the man", "N people"], ["sees", "likes", "eats"], \
        ["the fish", "a ball", "<unk>", "the dog"]
    for split, lines in (("train", 600), ("valid", 60), ("test", 60)):
        sentences = [f" {subjects[rng.integers(4)]} {verbs[rng.integers(3)]} {objects[rng.integers(4)]} "
                     for _ in range(lines)]
        (directory / f"ptb.{split}.txt").write_text("\n".join(sentences) + "\n")
    return directory


def write_tiny_reviews(path: Path, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["label", "text"])
        for i in range(rows):
            label = i % 2
            words = list(rng.choice(FILLER, size=rng.integers(5, 30)))
            cue = POSITIVE if label else NEGATIVE
            for _ in range(2):
                words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(cue)))
            writer.writerow([label, " ".join(words)])
    return path


def get_argument(kwargs, name):
    """Argument `name` of a call's kwargs, cache entries named as "cache['h']"."""
    match = re.fullmatch(r"cache\['(\w+)'\]", name)
    return kwargs["cache"][match[1]] if match else kwargs[name]


def with_argument(kwargs, name, value):
    """A copy of kwargs with argument `name` (or a cache entry) replaced by `value`."""
    kwargs = dict(kwargs)
    match = re.fullmatch(r"cache\['(\w+)'\]", name)
    if match:
        kwargs["cache"] = {**kwargs["cache"], match[1]: value}
    else:
        kwargs[name] = value
    return kwargs


def raises(exception, fn, message, kwargs):
    """Calls rnnext.`fn`(**kwargs) expecting `exception` whose message is exactly "fn: message"."""
    with pytest.raises(exception, match="^" + re.escape(f"{fn}: {message}") + "$"):
        getattr(rnnext, fn)(**kwargs)


# =========================================================================================================
# recurrent layers: step() against the sequence forward (tests/test_layers.py, tests/test_scan_layers.py).
# The engine projects all T*N input rows with one GEMM in forward and N rows in step; Eigen's kernels may round the
# two differently in the last bit (measured: 0 at these sizes, up to 2 ulp at others), so the check allows a few
# ulps of the state's magnitude (<= 1).
STEP_TOL = {np.float32: 1e-6, np.float64: 1e-14}


def check_step_matches_sequence(layer, x, dtype):
    """layer (return_sequences and return_state, eval mode) stepped over x [N, T, I] gives its sequence forward."""
    sequence, final = layer(x)
    state = None
    for t in range(x.shape[1]):
        h_t, state = layer.step(x[:, t], state)
        assert h_t.dtype == dtype
        np.testing.assert_allclose(h_t, sequence[:, t], rtol=0, atol=STEP_TOL[dtype], err_msg=f"step {t}")
    for got, want in zip(state_arrays(state), state_arrays(final)):
        np.testing.assert_allclose(got, want, rtol=0, atol=STEP_TOL[dtype])


def check_rows_alone(layer, x, lengths, label):
    """Each row of x [N, T, I], run alone on its own prefix through `layer` (return_sequences and return_state, from
    zero states), gives the same outputs and final states as in the batch with `lengths`; outputs past a row's
    length are zero (a bidirectional layer's reverse direction starts from each row's last valid step)."""
    output, states = layer(x, lengths=lengths)
    for n, length in enumerate(lengths):
        assert np.all(output[n, length:] == 0)
        if length == 0:
            assert all(np.all(a[n] == 0) for a in state_arrays(states))
            continue
        alone, alone_states = layer(x[n:n + 1, :length])
        np.testing.assert_allclose(output[n, :length], alone[0], rtol=0, atol=1e-14, err_msg=f"{label} row {n}")
        for got, want in zip(state_arrays(states), state_arrays(alone_states)):
            np.testing.assert_allclose(got[n], want[0], rtol=0, atol=1e-14, err_msg=f"{label} row {n} states")


# ==================================================================================================