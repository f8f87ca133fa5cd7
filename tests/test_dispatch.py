"""The instruction-set dispatcher (rnnext._dispatch): which path it picks from a processor's features, RNNEXT_ISA
accepted or refused with a message that says why, build_info's path fields, and every path this processor runs
against the NumPy twins and across thread counts."""
import os
import subprocess
import sys

import pytest

import rnnext
from rnnext import _core, _cpu, _dispatch, reference

from conftest import (CASES, DTYPES, RTOL, THREAD_SHAPES, as_float64, assert_close, assert_same_bits, backward_kwargs,
                      forward_kwargs, make_douts, make_problem, mixed_lengths, run_backward, run_forward)

X86 = ("sse2", "avx2", "avx512")
NONE = {}
HASWELL = dict.fromkeys(_dispatch.REQUIREMENTS["avx2"], True)
SKYLAKE_X = dict.fromkeys(_dispatch.REQUIREMENTS["avx512"], True)


@pytest.mark.parametrize("features, best", [(NONE, "sse2"), (HASWELL, "avx2"), (SKYLAKE_X, "avx512"),
                                            ({**HASWELL, "fma": False}, "sse2"),
                                            ({**SKYLAKE_X, "avx512vl": False}, "avx2"),
                                            ({**HASWELL, "movbe": False, "avx512f": True}, "sse2")])
def test_the_best_path_is_the_highest_whose_features_are_all_present(features, best):
    assert _dispatch.choose(X86, features) == best
    assert _dispatch.choose(X86, features, "") == best
    assert _dispatch.choose(X86, features, "auto") == best
    assert _dispatch.runnable(X86, features) == list(X86[:X86.index(best) + 1])


def test_a_lower_path_can_be_forced_and_a_higher_one_is_refused_naming_the_missing_features():
    assert _dispatch.choose(X86, SKYLAKE_X, "sse2") == "sse2"
    assert _dispatch.choose(X86, SKYLAKE_X, " AVX2 ") == "avx2"
    with pytest.raises(ImportError, match=r"RNNEXT_ISA='avx512' needs processor features that this one lacks: "
                                          r"avx512f, avx512bw, avx512cd, avx512dq, avx512vl \(paths it runs: sse2, avx2\)"):
        _dispatch.choose(X86, HASWELL, "avx512")
    with pytest.raises(ImportError, match=r"RNNEXT_ISA='avx2' needs .*: avx, avx2, .*movbe \(paths it runs: sse2\)"):
        _dispatch.choose(X86, NONE, "avx2")


@pytest.mark.parametrize("requested", ["avx3", "native", "neon", "sse4"])
def test_a_path_the_build_lacks_is_refused_listing_the_ones_it_has(requested):
    with pytest.raises(ImportError, match=rf"RNNEXT_ISA='{requested}' is not a path of this build: expected one of "
                                          r"sse2, avx2, avx512, or 'auto'"):
        _dispatch.choose(X86, SKYLAKE_X, requested)


def test_single_path_builds_load_their_path():
    assert _dispatch.choose(["neon"], NONE) == "neon"
    assert _dispatch.choose(["native"], NONE, "native") == "native"
    with pytest.raises(ImportError, match="is not a path of this build: expected one of native,"):
        _dispatch.choose(["native"], HASWELL, "avx2")


def test_build_info_names_the_path_in_use_and_the_compiled_ones():
    info = rnnext.build_info()
    assert info["isas"] == list(_cpu.compiled)
    assert info["isa"] in info["isas"]
    expected = _dispatch.choose(_cpu.compiled, _cpu.features(), os.environ.get(_dispatch.ENV))
    assert info["isa"] == expected
    assert set(_cpu.features()) <= set(_dispatch.REQUIREMENTS["avx512"])
    if info["isa"] in ("avx2", "avx512"):
        assert {"avx2", "fma"} <= set(info["target_isa"])
        assert info["gemm_kernel"]["float32"].startswith("rnnext AVX")
    if info["isa"] == "sse2":
        assert info["target_isa"] == [] and info["gemm_kernel"]["float32"] == "Eigen GEBP"


def test_core_re_exports_every_public_name_of_the_chosen_extension():
    engine = _dispatch.load_path(rnnext.build_info()["isa"])
    public = {name for name in vars(engine) if not name.startswith("_")}
    assert public == {name for name in vars(_core) if not name.startswith("_")}
    assert all(getattr(_core, name) is getattr(engine, name) for name in public)


def import_with(isa):
    """(return code, output) of importing rnnext in a fresh interpreter with RNNEXT_ISA=isa."""
    env = {**os.environ, _dispatch.ENV: isa}
    done = subprocess.run([sys.executable, "-c", "import rnnext; print(rnnext.build_info()['isa'])"], env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_the_environment_variable_forces_each_path_the_processor_runs():
    for path in _dispatch.runnable(_cpu.compiled, _cpu.features()):
        code, output = import_with(path)
        assert code == 0 and output.strip() == path, output


def test_the_environment_variable_is_refused_at_import_for_a_path_the_processor_lacks():
    lacking = [p for p in _cpu.compiled if _dispatch.missing_features(p, _cpu.features())]
    for path in lacking + ["avx3"]:
        code, output = import_with(path)
        assert code != 0
        assert f"ImportError: rnnext: RNNEXT_ISA='{path}'" in output, output


def runnable_engines():
    return [_dispatch.load_path(path) for path in _dispatch.runnable(_cpu.compiled, _cpu.features())]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES)
def test_every_runnable_path_matches_the_twins_and_is_independent_of_threads(case, dtype):
    shape = THREAD_SHAPES[0]  # several unit blocks, so two threads split the work
    params, options = make_problem(case, shape, dtype)
    douts = make_douts(case, shape, dtype)
    lengths = mixed_lengths(shape[0], shape[1])
    params64, douts64 = as_float64(params), as_float64(douts)
    twin_out, twin_cache = run_forward(reference, case, forward_kwargs(case, params64, options, lengths))
    twin_grads = run_backward(reference, case, backward_kwargs(case, params64, options, lengths, douts64, twin_cache))
    for engine in runnable_engines():
        isa = engine.build_info()["isa"]
        saved_threads = engine.get_num_threads()
        by_threads = {}
        for threads in (1, 2) if engine.max_num_threads() >= 2 else (1,):  # a build without OpenMP has one
            engine.set_num_threads(threads)
            out, cache = run_forward(engine, case, forward_kwargs(case, params, options, lengths))
            grads = run_backward(engine, case, backward_kwargs(case, params, options, lengths, douts, cache))
            by_threads[threads] = {**out, **grads}
        engine.set_num_threads(saved_threads)
        assert_close(out, twin_out, RTOL[dtype], f"{isa} path: {case} forward outputs")
        assert_close(grads, twin_grads, RTOL[dtype], f"{isa} path: {case} gradients")
        for threads, results in by_threads.items():
            assert_same_bits(results, by_threads[1], f"{isa} path: {case} at {threads} threads against 1")
