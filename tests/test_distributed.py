"""rnnext.distributed: K MPI ranks train the model one process trains on the combined batch.

The MPI tests launch `mpirun -n 2` on tests/mpi_workers/fit_worker.py (skipped without mpirun or mpi4py) and
compare the weights the runs write. What is asserted is what holds by construction:
- deterministic mode is bitwise the same on every run, on every rank, and bitwise the same as one process
  that computes each rank's shard in turn and adds the scaled gradients in rank order (the worker's --emulate);
- against one process on the combined batch it agrees to rounding only: that process's weight-gradient GEMMs
  add the rows of both shards in one blocked sum, the ranks add two partial sums, so the bits differ;
- with one rank, the machinery adds no arithmetic: bitwise the same as plain fit.
Every subprocess has a timeout, so a hang fails the test instead of blocking CI.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnext import distributed

from conftest import assert_close, assert_same_bits, write_tiny_ptb, write_tiny_reviews

WORKER = Path(__file__).parent / "mpi_workers" / "fit_worker.py"
TIMEOUT_S = 240  # generous for a shared 2-core machine; a run takes a few seconds
# float64 models, a dozen steps: one process and two ranks differ by a few ulps of the weights (measured
# 3e-16); 1e-12 leaves room for other BLAS/compilers without letting a wrong count (a factor ~0.4) through.
ROUNDING = 1e-12


def _mpi_available() -> bool:
    if shutil.which("mpirun") is None:
        return False
    probe = subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True)
    return probe.returncode == 0


requires_mpi = pytest.mark.skipif(not _mpi_available(), reason="needs mpirun and mpi4py (pip install 'rnnext[mpi]')")


def _mpirun(ranks: int) -> list:
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    # Open MPI refuses more ranks than cores unless told, and refuses root without the environment below
    return ["mpirun", "-n", str(ranks)] + (["--oversubscribe"] if "Open MPI" in version else [])


def _environment() -> dict:
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMP_NUM_THREADS": "1"}


def run_worker(tmp_path, name, *options, ranks=None, check=True):
    """Run the worker (one process when ranks is None); returns ({name: weight} of rank 0, with the history
    under "history", and the completed process)."""
    out = tmp_path / f"{name}.npz"
    command = [sys.executable, str(WORKER), *options, "--out", str(out)]
    if ranks is not None:
        command = _mpirun(ranks) + command
    completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=_environment())
    if check:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return dict(np.load(out)), completed
    return None, completed


def rank_weights(tmp_path, name, rank):
    return dict(np.load(tmp_path / f"{name}.npz.rank{rank}.npz"))


def weights(run):
    return {name: value for name, value in run.items() if name != "history"}


def assert_rounding_close(actual, expected, what):
    assert_close(weights(actual), weights(expected), ROUNDING, what, absolute=True)


# ---------------------------------------------------------------------------------------------------------
# without MPI: the pieces that need no launcher

def test_shard_rows_cut_like_array_split():
    for rows in range(0, 12):
        for size in range(1, 5):
            slices = [distributed.shard_rows(rows, rank, size) for rank in range(size)]
            expected = np.array_split(np.arange(rows), size)
            assert [list(range(rows))[s] for s in slices] == [list(part) for part in expected], (rows, size)


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_batch_shards_draw_the_combined_batch_masks(batch_axis):
    from rnnext.layer_base import batch_shard, dropout_mask
    shape = [4, 5, 3]
    shape[batch_axis] = 7
    whole = dropout_mask(np.random.default_rng(5), tuple(shape), 0.4, np.float64, batch_axis=batch_axis)
    parts, generators = [], []
    for rank in range(3):
        rows = distributed.shard_rows(7, rank, 3)
        local = list(shape)
        local[batch_axis] = rows.stop - rows.start
        rng = np.random.default_rng(5)
        with batch_shard(rows.start, 7):
            parts.append(dropout_mask(rng, tuple(local), 0.4, np.float64, batch_axis=batch_axis))
        generators.append(rng.bit_generator.state)
    assert_same_bits({"mask": np.concatenate(parts, axis=batch_axis)}, {"mask": whole}, "three shards vs one batch")
    assert generators[0] == generators[1] == generators[2]
    with pytest.raises(RuntimeError, match="rows 6..7 of a combined batch of 7"), batch_shard(6, 7):
        dropout_mask(np.random.default_rng(5), (2, 3), 0.4, np.float64)


def test_with_count_names_the_argument():
    with pytest.raises(ValueError, match="with_count: count is 'tokens', expected one of"):
        distributed.with_count(lambda output, y: (0.0, output), "tokens")


def test_from_option_off_and_bad_values(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.delenv("PMI_SIZE", raising=False)
    monkeypatch.delenv("MV2_COMM_WORLD_SIZE", raising=False)
    assert distributed.from_option("off") is None
    assert distributed.from_option("auto") is None  # not launched by mpirun
    with pytest.raises(ValueError, match="--distributed: option is 'fastest'"):
        distributed.from_option("fastest")


def test_launcher_environment_is_read(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK", raising=False)
    assert (distributed.launched_size(), distributed.launched_rank()) == (4, 3)


def test_the_package_imports_without_mpi4py():
    code = "import sys, rnnext, rnnext.distributed, rnnext.train; assert 'mpi4py' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=TIMEOUT_S).returncode == 0


def test_data_parallel_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r"rnnext\[mpi\]"):
        distributed.DataParallel()


# ---------------------------------------------------------------------------------------------------------
# two ranks against one process

@requires_mpi
def test_deterministic_lengths_model_is_the_rank_order_sum_and_the_combined_batch_to_rounding(tmp_path):
    # batches of 7, 5 and 1 rows with random lengths: rank 0 gets 4, 3 and 1 rows, rank 1 3, 2 and none, so the
    # ranks count different numbers of tokens every step, and in the last rank 1 has no rows at all
    one, _ = run_worker(tmp_path, "one", "--scenario", "lengths")
    emulated, _ = run_worker(tmp_path, "emulated", "--scenario", "lengths", "--emulate", "2")
    two, _ = run_worker(tmp_path, "two", "--scenario", "lengths", "--distributed", "deterministic", ranks=2)
    assert_same_bits(weights(two), weights(emulated), "2 ranks vs the rank-order emulation")
    assert_same_bits(rank_weights(tmp_path, "two", 1), weights(two), "rank 1 vs rank 0")
    assert_rounding_close(two, one, "2 ranks (deterministic) vs 1 process")
    # the loss, accuracy and validation metrics of the combined batches, reduced across ranks
    history_one, history_two = (ast.literal_eval(str(run["history"])) for run in (one, two))
    for row_one, row_two in zip(history_one, history_two):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-12), key


@requires_mpi
def test_deterministic_stateful_tbptt_is_reproducible_and_the_combined_batch_to_rounding(tmp_path):
    # 5 streams: rank 0 owns 3 and rank 1 owns 2 for the whole run, their carried states stay on their rank
    for scale in ("mean", "batch"):
        options = ("--scenario", "tbptt", "--loss-scale", scale)
        one, _ = run_worker(tmp_path, f"one-{scale}", *options)
        first, _ = run_worker(tmp_path, f"a-{scale}", *options, "--distributed", "deterministic", ranks=2)
        again, _ = run_worker(tmp_path, f"b-{scale}", *options, "--distributed", "deterministic", ranks=2)
        assert_same_bits(weights(again), weights(first), f"{scale}: two deterministic runs")
        assert_rounding_close(first, one, f"{scale}: 2 ranks (deterministic) vs 1 process")


@requires_mpi
@pytest.mark.parametrize("style", ["tf", "k1k2"])
def test_tbptt_functions_under_two_ranks_are_the_combined_streams_to_rounding(tmp_path, style):
    one, _ = run_worker(tmp_path, "one", "--scenario", "windows", "--style", style)
    two, _ = run_worker(tmp_path, "two", "--scenario", "windows", "--style", style, "--distributed",
                        "deterministic", ranks=2)
    assert_rounding_close(two, one, f"{style}: 2 ranks vs 1 process")
    losses_one, losses_two = (ast.literal_eval(str(run["history"])) for run in (one, two))
    assert losses_two == pytest.approx(losses_one, rel=1e-12)


@requires_mpi
def test_fast_mode_equals_one_process_to_1e_6(tmp_path):
    one, _ = run_worker(tmp_path, "one", "--scenario", "lengths")
    fast, _ = run_worker(tmp_path, "fast", "--scenario", "lengths", "--distributed", "fast", ranks=2)
    assert_close(weights(fast), weights(one), 1e-6, "2 ranks (fast) vs 1 process", absolute=True)
    assert_same_bits(rank_weights(tmp_path, "fast", 1), weights(fast), "rank 1 vs rank 0")


@requires_mpi
def test_a_summed_loss_adds_the_shards_gradients_unscaled(tmp_path):
    one, _ = run_worker(tmp_path, "one", "--scenario", "lengths", "--reduction", "sum")
    two, _ = run_worker(tmp_path, "two", "--scenario", "lengths", "--reduction", "sum", "--distributed",
                        "deterministic", ranks=2)
    assert_rounding_close(two, one, "summed loss: 2 ranks vs 1 process")


@requires_mpi
@pytest.mark.parametrize("mode", distributed.MODES)
def test_dropout_under_two_ranks_draws_the_masks_of_one_process(tmp_path, mode):
    # Dropout on the inputs and between two LSTM layers: each rank draws the combined batch's masks and keeps its
    # rows, and rank 1 still draws in the last step, where it has no rows, so the runs agree to rounding. Masks
    # drawn per rank would differ in about half of their entries (rate 0.5) and move the weights by ~1e-2.
    options = ("--scenario", "lengths", "--dropout", "0.5")
    one, _ = run_worker(tmp_path, "one", *options)
    two, _ = run_worker(tmp_path, "two", *options, "--distributed", mode, ranks=2)
    tolerance = ROUNDING if mode == "deterministic" else 1e-6
    assert_close(weights(two), weights(one), tolerance, f"{mode}: 2 ranks with dropout vs 1 process", absolute=True)
    assert_same_bits(rank_weights(tmp_path, "two", 1), weights(two), "rank 1 vs rank 0")


@requires_mpi
def test_one_rank_is_bitwise_plain_fit(tmp_path):
    one, _ = run_worker(tmp_path, "one", "--scenario", "lengths")
    single, _ = run_worker(tmp_path, "single", "--scenario", "lengths", "--distributed", "deterministic", ranks=1)
    assert_same_bits(weights(single), weights(one), "1 rank vs plain fit")


# ---------------------------------------------------------------------------------------------------------
# checkpoints

@requires_mpi
@pytest.mark.parametrize("first_ranks, then_ranks", [(2, None), (None, 2)])
def test_checkpoint_resumes_on_another_number_of_ranks(tmp_path, first_ranks, then_ranks):
    # --time-limit 0 stops after the first step of epoch 1: the checkpoint holds the carried states of all
    # five streams (gathered from the ranks), which the resumed run splits again for its own ranks
    straight, _ = run_worker(tmp_path, "straight", "--scenario", "tbptt")
    checkpoint = str(tmp_path / "checkpoint.npz")
    common = ("--scenario", "tbptt", "--distributed", "deterministic")
    run_worker(tmp_path, "cut", *common, "--time-limit", "0", "--checkpoint", checkpoint, ranks=first_ranks)
    resumed, _ = run_worker(tmp_path, "resumed", *common, "--resume", checkpoint, "--checkpoint",
                            str(tmp_path / "later.npz"), ranks=then_ranks)
    assert_rounding_close(resumed, straight, f"{first_ranks or 1} ranks then {then_ranks or 1} vs straight")


# ---------------------------------------------------------------------------------------------------------
# failures end the job

def failed_run_output(tmp_path, *options) -> str:
    """stdout and stderr of a two-rank run of the lengths scenario that must fail."""
    _, completed = run_worker(tmp_path, "failed", "--scenario", "lengths", "--distributed", "fast", *options,
                              ranks=2, check=False)
    assert completed.returncode != 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


@requires_mpi
@pytest.mark.parametrize("failing, reports", [
    (1, ["worker rank 0: RankError: rank 1 of 2 raised ValueError: deliberate failure on rank 1"]),
    (0, ["worker rank 0: ValueError: deliberate failure on rank 0",
         "worker rank 1: RankError: rank 0 of 2 raised ValueError"]),
])
def test_a_rank_that_raises_in_a_step_stops_every_rank_and_rank_0_reports_it(tmp_path, failing, reports):
    output = failed_run_output(tmp_path, "--fail-rank", str(failing))
    for report in reports:
        assert report in output, output


@requires_mpi
def test_a_batch_source_failing_on_one_rank_is_reported_by_rank_0(tmp_path):
    # rank 1's source fails to start epoch 2: the epoch's start is exchanged like a step
    output = failed_run_output(tmp_path, "--fail-source-rank", "1")
    assert ("worker rank 0: RankError: rank 1 of 2 raised OSError: deliberate failure of the batch source on "
            "rank 1") in output, output


@requires_mpi
def test_a_rank_that_raises_alone_outside_the_exchanges_aborts_the_job(tmp_path):
    # rank 1's scheduler raises after epoch 1 while rank 0 goes on to the next epoch: rank 1 waits
    # abort_timeout_s (3 s in the worker) for the others, then reports and calls MPI_Abort
    output = failed_run_output(tmp_path, "--fail-scheduler-rank", "1")
    assert ("rank 1 of 2 raised RuntimeError: deliberate failure of the scheduler on rank 1; the other ranks did "
            "not, so the job is aborted") in output, output


# ---------------------------------------------------------------------------------------------------------
# the experiments under mpirun

@requires_mpi
def test_experiments_run_under_mpirun_and_print_once(tmp_path):
    rnnext_cli = [sys.executable, "-m", "rnnext", "train"]
    runs = {
        "char-lm": ["char-lm", "--quick", "--sample-length", "20", "--checkpoint", str(tmp_path / "c.npz")],
        "word-lm": ["word-lm", "--quick", "--data", str(write_tiny_ptb(tmp_path))],
        "sentiment": ["sentiment", "--quick", "--train", str(write_tiny_reviews(tmp_path / "train.csv", 120, 0)),
                      "--test", str(write_tiny_reviews(tmp_path / "test.csv", 40, 1))],
    }
    for name, options in runs.items():
        completed = subprocess.run(_mpirun(2) + rnnext_cli + options, capture_output=True, text=True,
                                   timeout=TIMEOUT_S, env=_environment())
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert completed.stdout.count("Total params") == 1, f"{name}: rank 1 printed too\n{completed.stdout}"
    assert (tmp_path / "c.npz").is_file()


@requires_mpi
def test_an_error_on_every_rank_is_reported_once_by_rank_0(tmp_path):
    missing = tmp_path / "no-such-corpus"
    command = _mpirun(2) + [sys.executable, "-m", "rnnext", "train", "word-lm", "--quick", "--data", str(missing)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=_environment())
    assert completed.returncode != 0
    assert completed.stderr.count("rnnext: error:") == 1, completed.stderr
    assert "no-such-corpus" in completed.stderr
