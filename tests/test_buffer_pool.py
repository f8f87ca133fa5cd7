"""The buffer pool (cpp/rnnext/buffer_pool.h): large engine buffers and returned arrays are reused between calls,
proved by its counters; reused buffers never share memory with an array still alive; results do not depend on it;
its limit frees idle buffers."""
import threading

import numpy as np
import pytest

from rnnext import _core

from conftest import assert_same_bits

LARGE = (60, 32, 64, 128)  # float64: the cache's arrays and y are over the pool's 512 KiB


@pytest.fixture
def pool_limit():
    """Puts the pool's limit back to its default after the test."""
    saved = _core.buffer_pool_stats()["limit"]
    yield
    _core.set_buffer_pool_limit(saved)


def lstm_problem(seed=0, shape=LARGE):
    T, N, I, H = shape
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((T, N, I)), "h0": rng.standard_normal((N, H)), "c0": rng.standard_normal((N, H)),
            "kernel": 0.3 * rng.standard_normal((I, 4 * H)), "recurrent_kernel": 0.3 * rng.standard_normal((H, 4 * H)),
            "bias": 0.1 * rng.standard_normal(4 * H)}


def step(p):
    y, h_n, c_n, cache = _core.lstm_forward(**p)
    weights = {k: p[k] for k in ("kernel", "recurrent_kernel", "bias")}
    grads = _core.lstm_backward(np.ones_like(y), None, None, cache, p["x"], **weights)
    out = {"y": y, "h_n": h_n, "c_n": c_n, **{f"cache.{k}": v for k, v in cache.items()}, **grads}
    return {k: v for k, v in out.items() if v is not None}  # no peephole


def in_use():
    return _core.buffer_pool_stats()["in_use_buffers"]


def test_a_repeated_training_step_reuses_every_large_buffer(pool_limit):
    p = lstm_problem()
    alive = in_use()  # other tests' arrays
    step(p)  # the first step fills the pool with this shape's buffers
    before = _core.buffer_pool_stats()
    step(p)
    after = _core.buffer_pool_stats()
    assert after["allocated"] == before["allocated"], (before, after)
    assert after["reused"] >= before["reused"] + 5, (before, after)  # y, h, c, gates, dx at least
    assert after["in_use_buffers"] == before["in_use_buffers"] == alive


def test_results_are_the_same_bits_with_and_without_the_pool(pool_limit):
    p = lstm_problem()
    pooled = [step(p) for _ in range(2)]
    _core.set_buffer_pool_limit(0)
    unpooled = step(p)
    assert_same_bits(pooled[0], unpooled, "pool off")
    assert_same_bits(pooled[1], unpooled, "second pooled step")


def test_a_live_array_keeps_its_buffer(pool_limit):
    """A reused buffer comes only from an array NumPy has freed: arrays still alive keep their values."""
    first = step(lstm_problem(seed=1))
    kept = {k: v.copy() for k, v in first.items()}
    for seed in (2, 3):
        other = step(lstm_problem(seed=seed))
        for name, array in first.items():
            assert not np.shares_memory(array, other[name]), name
        del other
    assert_same_bits(first, kept, "an array alive through later calls")


def test_pooled_arrays_are_ordinary_arrays(pool_limit):
    p = lstm_problem()
    alive = in_use()
    y, *_ = _core.lstm_forward(**p, keep_cache=False)
    assert in_use() == alive + 1
    assert y.flags.c_contiguous and y.flags.writeable and y.dtype == np.float64 and y.shape == LARGE[:2] + (128,)
    y[...] = 1.0
    view = y[1:]
    del y
    assert in_use() == alive + 1, "a view keeps its base's buffer"
    assert np.all(view == 1.0)
    del view
    assert in_use() == alive


def test_the_limit_frees_idle_buffers_and_zero_keeps_none(pool_limit):
    p = lstm_problem()
    step(p)
    assert _core.buffer_pool_stats()["idle_bytes"] > 0
    _core.set_buffer_pool_limit(0)
    stats = _core.buffer_pool_stats()
    assert stats["idle_bytes"] == stats["idle_buffers"] == 0 and stats["limit"] == 0
    before = stats["allocated"]
    step(p)
    stats = _core.buffer_pool_stats()
    assert stats["idle_bytes"] == 0 and stats["allocated"] > before
    _core.set_buffer_pool_limit(3 << 20)
    step(p)
    assert 0 < _core.buffer_pool_stats()["idle_bytes"] <= 3 << 20


def test_a_bad_limit_is_named():
    with pytest.raises(ValueError, match=r"set_buffer_pool_limit: bytes is -1, expected >= 0"):
        _core.set_buffer_pool_limit(-1)


def test_calls_from_several_python_threads_share_the_pool(pool_limit):
    problems = [lstm_problem(seed=s) for s in range(4)]
    expected = [step(p) for p in problems]
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(3):
                results[k] = step(problems[k])
        except Exception as error:  # reported below: an exception in a thread would otherwise vanish
            errors.append(error)

    alive = in_use()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for k in range(4):
        assert_same_bits(results[k], expected[k], f"thread {k}")
    results.clear()
    assert in_use() == alive  # the expected results' buffers


def test_tracemalloc_sees_pooled_arrays_as_numpy_arrays(pool_limit):
    import tracemalloc
    p = lstm_problem()
    _core.lstm_forward(**p, keep_cache=False)  # the buffer of y is now idle in the pool
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        y, *_ = _core.lstm_forward(**p, keep_cache=False)
        held = tracemalloc.get_traced_memory()[0] - before
        del y
        released = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert held >= LARGE[0] * LARGE[1] * 128 * 8 > released
