"""The engine's boundary against unusual but valid input and against impossible input: dtypes compared by value
(pickled, with metadata, either byte order), copies too large to allocate, unsigned lengths, thread counts.
Crash reproducers run in a subprocess, so a regression fails the test instead of killing the run."""
import copy
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import rnnext

from conftest import DTYPES, FUNCTIONS, assert_same_bits, call_results, requires_openmp, valid_kwargs


def array_names(kwargs):
    return [name for name, value in kwargs.items() if isinstance(value, np.ndarray) and value.dtype.kind == "f"]


def replace_arrays(kwargs, convert):
    """kwargs with every floating array (cache entries included) passed through `convert`."""
    out = {name: convert(value) if name in array_names(kwargs) else value for name, value in kwargs.items()}
    if "cache" in kwargs:
        out["cache"] = {key: convert(value) for key, value in kwargs["cache"].items()}
    return out


# Each yields an array equal in value to its input, in a dtype object that is not NumPy's canonical one.
EQUIVALENT_DTYPES = {
    "pickled": lambda a: pickle.loads(pickle.dumps(a)),
    "deepcopy": copy.deepcopy,
    "metadata": lambda a: a.astype(np.dtype(a.dtype, metadata={"unit": "volt"})),
    "native-order-spelled-out": lambda a: a.astype(a.dtype.newbyteorder("=")),
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "little-endian": lambda a: a.astype(a.dtype.newbyteorder("<")),
}


@pytest.mark.parametrize("how", EQUIVALENT_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_equivalent_dtypes_give_the_same_bits(fn, dtype, how):
    kwargs = valid_kwargs(fn, dtype=dtype)
    expected = call_results(fn, kwargs)
    converted = replace_arrays(kwargs, EQUIVALENT_DTYPES[how])
    assert all(np.array_equal(converted[name], kwargs[name]) for name in array_names(kwargs))
    assert_same_bits(call_results(fn, converted), expected, f"{fn} with {how} {np.dtype(dtype)} arrays")


def test_pickled_layer_runs():
    # The reproducer of the report: a model that went through pickle carries a pickled h0 inside.
    x = pickle.loads(pickle.dumps(np.ones((2, 5, 3), np.float32)))
    layer = rnnext.GRU(2, seed=0)
    expected = layer.forward(np.ones((2, 5, 3), np.float32))
    assert np.array_equal(layer.forward(x), expected)
    assert np.array_equal(copy.deepcopy(layer).forward(x), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.complex64], ids=["float16", "longdouble", "complex64"])
def test_other_floating_dtypes_are_refused(dtype):
    kwargs = valid_kwargs("rnn_forward", dtype=np.float32)
    kwargs["x"] = kwargs["x"].astype(dtype)
    with pytest.raises(TypeError, match=r"^rnn_forward: x has dtype \w+, expected float32 or float64$"):
        rnnext.rnn_forward(**kwargs)


def test_unaligned_input_is_copied():
    kwargs = valid_kwargs("lstm_forward", dtype=np.float32)
    x = kwargs["x"]
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:]
    unaligned = raw.view(np.float32).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    assert_same_bits(call_results("lstm_forward", {**kwargs, "x": unaligned}), call_results("lstm_forward", kwargs),
                     "lstm_forward with an unaligned x")


# A non-contiguous argument whose contiguous copy cannot be allocated (a broadcast view of 2**36 elements or more,
# 256 GiB in float32): MemoryError naming the argument, never a crash. One subprocess runs every case.
HUGE_COPY_SCRIPT = textwrap.dedent("""
    import numpy as np, rnnext
    def zeros(*shape):
        return np.zeros(shape, np.float32)
    def huge(*shape):
        return np.broadcast_to(np.float32(0), shape)
    def expect_memory_error(name, call):
        try:
            call()
        except MemoryError as error:
            assert f" {name} of shape " in str(error) and "could not be allocated" in str(error), str(error)
        else:
            raise AssertionError(f"no MemoryError for a huge {name}")
    cases = 0
    for cell, G in {"rnn": 1, "lstm": 4, "gru": 3}.items():
        forward, backward = getattr(rnnext, cell + "_forward"), getattr(rnnext, cell + "_backward")
        state = {"h0": zeros(1, 1), **({"c0": zeros(1, 1)} if cell == "lstm" else {})}
        weights = {"kernel": zeros(1, G), "recurrent_kernel": zeros(1, G),
                   "bias": zeros(2, G) if cell == "gru" else zeros(G)}
        no_gradients = {"dy": None, "dh_n": None, **({"dc_n": None} if cell == "lstm" else {}), "cache": {}}
        expect_memory_error("x", lambda: forward(x=huge(2**36, 1, 1), **state, **weights))
        expect_memory_error("x", lambda: backward(x=huge(2**36, 1, 1), **no_gradients, **weights))
        # a huge recurrent_kernel (H = 2**18) with every other argument small and valid
        H = 2**18
        weights = {"kernel": zeros(1, G * H), "recurrent_kernel": huge(H, G * H),
                   "bias": zeros(2, G * H) if cell == "gru" else zeros(G * H)}
        state = {"h0": zeros(1, H), **({"c0": zeros(1, H)} if cell == "lstm" else {})}
        cache = {"h": zeros(2, 1, H), "gates": zeros(1, 1, G * H),
                 **({"c": zeros(2, 1, H)} if cell == "lstm" else {}), **({"hn": zeros(1, 1, H)} if cell == "gru" else {})}
        expect_memory_error("recurrent_kernel", lambda: forward(x=zeros(1, 1, 1), **state, **weights))
        expect_memory_error("recurrent_kernel", lambda: backward(x=zeros(1, 1, 1), **{**no_gradients, "cache": cache},
                                                                 **weights))
        cases += 4
    print(cases, "cases")
""")


def test_huge_non_contiguous_argument_raises_memory_error():
    run = subprocess.run([sys.executable, "-c", HUGE_COPY_SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip() == "12 cases"


@pytest.mark.parametrize("fn", ["rnn_forward", "gru_backward"])
def test_unsigned_lengths_beyond_int64_are_reported_as_they_are(fn):
    kwargs = valid_kwargs(fn)
    N = kwargs["x"].shape[1]
    lengths = np.ones(N, np.uint64)
    lengths[1] = 2**63 + 5
    with pytest.raises(ValueError, match=rf"^{fn}: lengths\[1\] = 9223372036854775813 is out of range \[0, T=3\]$"):
        getattr(rnnext, fn)(**{**kwargs, "lengths": lengths})


def test_ragged_lengths_name_the_argument():
    kwargs = valid_kwargs("lstm_forward")
    with pytest.raises(TypeError, match=r"^lstm_forward: lengths is not an array of integers \[N\] \(ValueError"):
        rnnext.lstm_forward(**{**kwargs, "lengths": [[1], [1, 2]]})


# ---------------------------------------------------------------------------------------------------------
# threads: bounded, and one setting for the whole process

def test_thread_count_is_bounded():
    limit = rnnext.max_num_threads()
    assert limit >= 1
    for n in (0, -1, limit + 1, 40_000, 100_000, 2**31 - 1, 2**31, 2**70):
        with pytest.raises(ValueError, match=rf"^set_num_threads: n is {n}, expected 1 <= n <= {limit} "):
            rnnext.set_num_threads(n)
    for bad in (2.0, True, "2"):  # None is the default setting (test_thread_tuning.py)
        with pytest.raises(TypeError, match=r"^set_num_threads: n is <class '\w+'>, expected an int or None$"):
            rnnext.set_num_threads(bad)


def test_thread_limit_is_usable(restore_threads):
    # The largest accepted count must actually run (OpenMP creates that many threads at the next parallel call).
    script = textwrap.dedent("""
        import numpy as np, rnnext
        rnnext.set_num_threads(rnnext.max_num_threads())
        x = np.ones((3, 64, 16, 1), np.float32)[..., 0]
        H = 256
        y, h, cache = rnnext.rnn_forward(x, np.zeros((64, H), np.float32), np.full((16, H), 0.01, np.float32),
                                         np.full((H, H), 0.001, np.float32), np.zeros(H, np.float32))
        print(rnnext.get_num_threads(), float(y.sum()) > 0)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    expected = rnnext.max_num_threads() if rnnext.build_info()["openmp"] else 1
    assert run.stdout.split() == [str(expected), "True"]


@requires_openmp
def test_thread_count_is_process_wide(restore_threads):
    seen = []
    for n in (2, 1):
        rnnext.set_num_threads(n)
        thread = threading.Thread(target=lambda: seen.append(rnnext.get_num_threads()))
        thread.start()
        thread.join()
    assert seen == [2, 1], "a new Python thread does not see the thread count set in another"
    setter = threading.Thread(target=rnnext.set_num_threads, args=(2,))
    setter.start()
    setter.join()
    assert rnnext.get_num_threads() == 2, "a count set in another Python thread is not seen here"
