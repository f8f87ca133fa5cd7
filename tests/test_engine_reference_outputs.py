"""Pins the engine's output bits: every cell x option x dtype x lengths x shape of test_engine.py, forward and backward
at 1 and 2 threads, hashed and compared with tests/engine_reference_hashes.json, written by an earlier build.

A refactor of the engine that must not change a single result (issue 11, one time loop for every cell) is checked
by this test. Bits depend on the build: the instruction-set path in use (AVX-512 and AVX2 round differently, FMA
fuses products; build_info()["isa"]), the GEMM micro-kernel, the compiler and Eigen. The file holds one entry per
path with those facts (and, for a -march=native build, the processor's flags); the test skips, naming the
difference, on any other build. To pin a path's bits on purpose (after a change that is meant to alter results),
rerun once per path, leaving the other paths' entries as they are:
    RNNEXT_ISA=sse2 python tests/test_engine_reference_outputs.py --write   (and avx2, avx512, native)
"""
import argparse
import hashlib
import json
import pathlib

import numpy as np
import pytest

import rnnext

from conftest import (CASES, DTYPES, SHAPES, THREAD_SHAPES, backward_kwargs, forward_kwargs, forward_results,
                      make_douts, make_problem, mixed_lengths, run_backward, run_forward)

HASHES = pathlib.Path(__file__).with_name("engine_reference_hashes.json")

# Every shape of the engine-vs-twin and thread tests: N = 1 with 128-unit blocks and a remainder (H = 160, 330),
# multi-block batches that run on 2 threads (N = 48, H = 70), T*N > 256 rows (600), depth chunks (I = 530, H = 520).
REFERENCE_SHAPES = list(dict.fromkeys(SHAPES + THREAD_SHAPES))
THREADS = (1, 2)
# The upstream gradients that may be None, on one shape (the driver takes another path without dy).
ABSENT_SHAPE = (4, 3, 6, 37)
ABSENT = ("dy", "final-state")


def build_facts():
    """What the output bits depend on besides the source: the path in use, build_info's SIMD sets and GEMM kernel, the
    compiler, Eigen, and for a native build the processor's FMA / AVX2 / AVX-512 flags (Eigen's SIMD string is the
    same for AVX and AVX2+FMA). A portable path's bits do not depend on the processor that runs it."""
    info = rnnext.build_info()
    facts = {"isa": info["isa"], "simd": info["simd"], "gemm_kernel": info["gemm_kernel"],
             "compiler": info["compiler"], "eigen_version": info["eigen_version"]}
    if info["isa"] == "native":
        try:
            flags = set(pathlib.Path("/proc/cpuinfo").read_text().split())
        except OSError:
            flags = None
        facts["cpu_flags"] = None if flags is None else sorted(f for f in ("avx2", "fma", "avx512f") if f in flags)
    return facts


def read_reference():
    """{path: {"build": facts, "digests": {key: {name: digest}}}} from HASHES, empty when it is missing."""
    return json.loads(HASHES.read_text())["paths"] if HASHES.is_file() else {}


def digest(array):
    """The first 16 hex digits of SHA-256 over dtype, shape and raw bytes (NaN-safe: bits, not values)."""
    if array is None:
        return "None"
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def calls():
    """(key, case, dtype, shape, lengths, absent) for every pinned call pair."""
    for case in CASES:
        for dtype_name, dtype in DTYPES.items():
            for shape in REFERENCE_SHAPES:
                for with_lengths in (False, True):
                    lengths = mixed_lengths(shape[0], shape[1]) if with_lengths else None
                    key = "{}/{}/{}/T{}-N{}-I{}-H{}".format(case, dtype_name, "lengths" if with_lengths else "full",
                                                             *shape)
                    yield key, case, dtype, shape, lengths, None
            for absent in ABSENT:
                shape = ABSENT_SHAPE
                key = "{}/{}/lengths/T{}-N{}-I{}-H{}/no-{}".format(case, dtype_name, *shape, absent)
                yield key, case, dtype, shape, mixed_lengths(shape[0], shape[1]), absent


def outputs_of(case, dtype, shape, lengths, absent, threads):
    """{name: digest} of one forward and one backward call at `threads` threads. The backward gets the forward's
    cache, so a forward difference shows up in the forward's own names first."""
    params, options = make_problem(case, shape, dtype)
    douts = make_douts(case, shape, dtype)
    if absent == "dy":
        douts["y"] = None
    elif absent == "final-state":
        douts["h_n"] = None
        douts["c_n"] = None
    rnnext.set_num_threads(threads)
    outputs, cache = run_forward(rnnext, case, forward_kwargs(case, params, options, lengths))
    grads = run_backward(rnnext, case, backward_kwargs(case, params, options, lengths, douts, cache))
    named = {**forward_results(outputs, cache), **{f"d{k}": v for k, v in grads.items()}}
    return {name: digest(value) for name, value in sorted(named.items())}


def all_digests():
    """{key: {name: digest}}, one set for both thread counts: the engine promises identical bits for any count."""
    digests = {}
    for key, case, dtype, shape, lengths, absent in calls():
        by_threads = [outputs_of(case, dtype, shape, lengths, absent, threads) for threads in THREADS]
        if any(d != by_threads[0] for d in by_threads):
            raise SystemExit(f"{key}: outputs differ between {THREADS} threads; not writing a reference")
        digests[key] = by_threads[0]
    return digests


@pytest.fixture(scope="module")
def reference():
    facts = build_facts()
    saved = read_reference().get(facts["isa"])
    if saved is None:
        pytest.skip(f"{HASHES.name} has no entry for the {facts['isa']} path; write it with: "
                    f"RNNEXT_ISA={facts['isa']} python {pathlib.Path(__file__).name} --write")
    different = {k: (saved["build"].get(k), v) for k, v in facts.items() if saved["build"].get(k) != v}
    if different:
        pytest.skip("the reference bits were written by another build, so they may round differently: " +
                    "; ".join(f"{k} {old!r} there, {new!r} here" for k, (old, new) in different.items()))
    saved_threads = rnnext.get_num_threads()
    yield saved["digests"]
    rnnext.set_num_threads(saved_threads)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("case", CASES)
def test_engine_bits_match_the_reference_build(case, threads, reference):
    if threads > rnnext.max_num_threads():
        pytest.skip(f"{threads} threads exceed max_num_threads() = {rnnext.max_num_threads()}")
    lines, compared = [], 0
    for key, case_, dtype, shape, lengths, absent in calls():
        if case_ != case:
            continue
        expected = reference[key]
        actual = outputs_of(case, dtype, shape, lengths, absent, threads)
        compared += len(expected)
        if actual.keys() != expected.keys():
            lines.append(f"! {key}: outputs {sorted(actual)}, expected {sorted(expected)}")
            continue
        lines += [f"! {key} {name}: bits differ" for name in expected if actual[name] != expected[name]]
    assert compared > 0
    assert not lines, f"{case} at {threads} thread(s): {len(lines)} of {compared} outputs differ:\n" + \
        "\n".join(lines[:40])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {HASHES.name} from this build")
    args = parser.parse_args()
    if not args.write:
        parser.error("pass --write to overwrite the reference (run the test with pytest)")
    facts = build_facts()
    entries = read_reference()
    entries[facts["isa"]] = {"build": facts, "digests": all_digests()}
    # One line per call pair, so a change of bits shows up as a readable diff.
    body = ",\n".join(
        f'{json.dumps(path)}: {{"build": {json.dumps(entry["build"])}, "digests": {{\n' +
        ",\n".join(f"{json.dumps(key)}: {json.dumps(names)}" for key, names in entry["digests"].items()) + "}}"
        for path, entry in sorted(entries.items()))
    HASHES.write_text(f'{{"paths": {{\n{body}}}}}\n')
    digests = entries[facts["isa"]]["digests"]
    count = sum(len(names) for names in digests.values())
    print(f"wrote the {facts['isa']} entry of {HASHES}: {len(digests)} forward+backward call pairs, {count} outputs, "
          f"identical at {THREADS} threads")
