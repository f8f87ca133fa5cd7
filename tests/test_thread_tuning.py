"""The engine's thread tuning (cpp/rnnext/thread_tuner.h): unless set_num_threads fixes the count, each time loop and
large product times itself and runs on one thread or on all, whichever is faster now. The policy is tested by
construction, feeding a ThreadChooser made-up times (no clock); the engine's use of it by its results, which are
the same bits whatever counts the runs chose."""
import numpy as np
import pytest

import rnnext
from rnnext import _core
from conftest import assert_same_bits, requires_openmp


def run_calls(chooser, calls, seconds_per_step):
    """`calls` choices, each recorded with seconds_per_step[count]; returns the counts chosen."""
    chosen = []
    for _ in range(calls):
        threads = chooser.choose()
        chosen.append(threads)
        chooser.record(threads, seconds_per_step[threads])
    return chosen


def test_each_count_is_tried_three_times_first_in_turn():
    chooser = _core.ThreadChooser(2)
    assert run_calls(chooser, 6, {1: 1.0, 2: 1.0}) == [2, 1, 2, 1, 2, 1]
    assert chooser.tries(1) == chooser.tries(2) == 3


@pytest.mark.parametrize("ratio, interval", [(10.0, 450), (1.5, 25), (1.2, 10)])
def test_the_slower_count_is_explored_as_rarely_as_costs_two_percent(ratio, interval):
    # one thread faster by `ratio`: after the warm-up the chooser runs one thread, and two only every
    # ceil((ratio - 1) / 0.02) calls, which adds (ratio - 1) / interval <= 2% to the running time
    chooser = _core.ThreadChooser(2)
    run_calls(chooser, 6, {1: 1.0, 2: ratio})
    chosen = run_calls(chooser, 3 * interval, {1: 1.0, 2: ratio})
    explored = [call for call, threads in enumerate(chosen, 1) if threads == 2]
    assert explored == [interval, 2 * interval, 3 * interval]
    assert chooser.mean(1) == pytest.approx(1.0) and chooser.mean(2) == pytest.approx(ratio)


def test_a_very_slow_count_is_still_explored_every_4096_calls():
    chooser = _core.ThreadChooser(4)
    run_calls(chooser, 6, {1: 1.0, 4: 1000.0})
    chosen = run_calls(chooser, 4096, {1: 1.0, 4: 1000.0})
    assert chosen.count(4) == 1 and chosen[-1] == 4


def test_the_choice_follows_the_machine_when_the_other_count_becomes_faster():
    # two threads win at first; then another process takes a core and two threads become 5x slower than one:
    # the mean of two threads rises with each call and the chooser moves to one thread
    chooser = _core.ThreadChooser(2)
    run_calls(chooser, 6, {1: 1.0, 2: 0.6})
    assert run_calls(chooser, 20, {1: 1.0, 2: 0.6}).count(2) > 10
    chosen = run_calls(chooser, 40, {1: 1.0, 2: 5.0})
    assert chosen[-10:] == [1] * 10
    # and back: the core is free again, and the next explorations of two threads bring their mean down
    chosen = run_calls(chooser, 400, {1: 1.0, 2: 0.6})
    assert chosen[-10:].count(2) > 5


def test_one_candidate_is_never_timed():
    chooser = _core.ThreadChooser(1)
    assert run_calls(chooser, 5, {1: 1.0}) == [1] * 5
    with pytest.raises(ValueError, match="ThreadChooser: many is 0, expected >= 1"):
        _core.ThreadChooser(0)


def test_set_num_threads_fixes_the_count_and_none_restores_the_tuned_default(restore_threads):
    rnnext.set_num_threads(1)
    assert not _core.thread_tuning() and rnnext.get_num_threads() == 1
    rnnext.set_num_threads(None)
    assert _core.thread_tuning()
    assert rnnext.get_num_threads() == rnnext.build_info()["num_threads"] >= 1
    with pytest.raises(TypeError, match="expected an int or None"):
        rnnext.set_num_threads("2")


@requires_openmp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tuned_runs_give_the_bits_of_one_thread(dtype, restore_threads):
    # Thirty forward and backward calls under tuning run on counts the chooser picks (both counts in the warm-up
    # at least): every result is the one-thread result, bit for bit.
    rng = np.random.default_rng(0)
    T, N, I, H = 6, 40, 16, 96  # enough work per step for the loop to consider two threads
    x = rng.standard_normal((T, N, I)).astype(dtype)
    kernel = (rng.standard_normal((I, 4 * H)) * 0.1).astype(dtype)
    recurrent = (rng.standard_normal((H, 4 * H)) * 0.1).astype(dtype)
    bias = np.zeros(4 * H, dtype)
    h0 = c0 = np.zeros((N, H), dtype)

    def results():
        y, h, c, cache = _core.lstm_forward(x, h0, c0, kernel, recurrent, bias)
        grads = _core.lstm_backward(np.ones_like(y), None, None, cache, x, kernel, recurrent, bias)
        return {"y": y, "h": h, "c": c, **{f"d{name}": value for name, value in grads.items() if value is not None}}

    rnnext.set_num_threads(1)
    expected = results()
    rnnext.set_num_threads(None)
    for call in range(30):
        assert_same_bits(results(), expected, f"tuned call {call}")
