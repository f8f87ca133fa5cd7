"""Data-parallel training over MPI: K processes started by `mpirun -n K` train one model as one process would
on the combined batch (docs/api.md, "rnnext.distributed"). mpi4py is imported only when a DataParallel is
made, so the package still needs only NumPy.

Every step: each rank runs forward and backward on its rows of the batch, then one small Allreduce of a
status vector (errors, end of data, counts, loss and metric sums) and one reduction of all gradients in one
flat buffer, scaled so the sum is the gradient of the combined batch's loss.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
import zlib

import numpy as np

from .layer_base import batch_shard, inference_mode
from .metrics import Averages
from .step import (NonFiniteError, apply_update, backward_step, epoch_batches, forward, loss_kwargs, unpack_batch,
                   zero_grad)
from .validation import check_choice

__all__ = ["DataParallel", "RankError", "LocalShards", "from_environment", "from_option", "add_argument",
           "run_experiment", "is_root", "launched_rank", "launched_size", "shard_rows", "with_count", "MODES"]

MODES = ("fast", "deterministic")
OPTION_CHOICES = ("auto", "off", *MODES)
# What the common launchers (Open MPI, MPICH/Hydra and Intel MPI, MVAPICH) put in each process's environment.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_COUNTS = ("targets", "rows", "sum")


def _from_environment(names) -> int | None:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def launched_size() -> int:
    """How many processes the MPI launcher started (1 when not launched by one), without importing mpi4py."""
    return _from_environment(_SIZE_VARIABLES) or 1


def launched_rank() -> int:
    """This process's rank according to the MPI launcher (0 when not launched by one)."""
    return _from_environment(_RANK_VARIABLES) or 0


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError("rnnext.distributed needs mpi4py and an MPI library (Open MPI or MPICH): "
                          "pip install 'rnnext[mpi]'") from error
    return MPI


def shard_rows(rows: int, rank: int, size: int) -> slice:
    """The contiguous rows of `rows` that `rank` of `size` owns, as np.array_split cuts them: the first
    `rows % size` ranks get one more. Fixed for a given (rows, size), so a rank keeps the same streams."""
    base, extra = divmod(rows, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def with_count(loss_fn, count):
    """Say what `loss_fn`'s gradient is divided by, so that K shards add up to the combined batch's gradient.

    count: "targets" (the default for any loss: the counted targets, `sum(lengths)` for sequences with lengths,
    else `y.size`; right for every "mean" loss of rnnext.losses), "rows" (the batch size: a loss summed over
    time and averaged over rows), "sum" (a summed loss: the shards' gradients are added unscaled), or a
    function `count(y, lengths) -> number`. Returns `loss_fn` (the count is an attribute of it).
    """
    if not callable(count):
        check_choice("with_count", "count", count, _COUNTS)
    loss_fn.gradient_count = count
    return loss_fn


def _targets(y, lengths) -> float:
    # unpack_batch's default weight, without its floor of 1: an empty shard counts nothing
    return float(np.sum(lengths)) if lengths is not None and y.ndim >= 2 else float(y.size)


def _gradient_count(loss_fn, y, lengths):
    """The local denominator of loss_fn's gradient, or None for a summed loss."""
    count = getattr(loss_fn, "gradient_count", "targets")
    if callable(count):
        return float(count(y, lengths))
    return {"targets": lambda: _targets(y, lengths), "rows": lambda: float(y.shape[0]), "sum": lambda: None}[count]()


class LocalShards:
    """A batch source whose batches are already this rank's rows (fit and evaluate do not split them again),
    e.g. the windows over this rank's slice of the streams in stateful truncated BPTT."""

    def __init__(self, source):
        self.source = source

    def __call__(self, epoch):
        return epoch_batches(self.source, epoch, "fit")

    def generators(self) -> dict:
        method = getattr(self.source, "generators", None)
        return dict(method()) if callable(method) else {}


class RankError(RuntimeError):
    """Raised on the other ranks when one rank raised: names that rank and its exception; the traceback on
    that rank is in `remote_traceback`."""

    def __init__(self, rank: int, size: int, kind: str, message: str, remote_traceback: str = ""):
        super().__init__(f"rank {rank} of {size} raised {kind}: {message}")
        self.rank, self.kind, self.remote_traceback = rank, kind, remote_traceback


class _Failure:
    """An exception a rank met while preparing its part of a step, held until every rank knows of it."""

    def __init__(self, error: BaseException):
        self.error = error


# status vector of a step: [ended, failed, count, loss * count, weight, weight * metric...]
_ENDED, _FAILED, _COUNT, _LOSS, _WEIGHT = range(5)


class DataParallel:
    """K ranks of `comm` (default MPI.COMM_WORLD) training one model on the combined batch.

    mode: "fast" reduces gradients with Allreduce (the sum's order is MPI's, so the model equals the
    one-process model to rounding); "deterministic" gathers the gradients on rank 0, adds them in rank order
    and broadcasts the sum: bitwise the same on every run with the same K. Neither is bitwise the same as one
    process on the combined batch, whose weight-gradient GEMMs add rows in another order (docs/api.md).
    abort_timeout_s: how long a rank whose exception left `guard()` waits for the others to leave it too
    before it ends the whole job with MPI_Abort (a rank that raised alone would leave the others waiting).
    """

    def __init__(self, comm=None, mode: str = "fast", abort_timeout_s: float = 30.0):
        self.mode = check_choice("DataParallel", "mode", mode, MODES)
        self.MPI = _mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.exit_comm = self.comm.Dup()  # its own context, so the exit barrier never meets a step's collective
        self.abort_timeout_s = abort_timeout_s
        self.gradient_bytes = 0  # size of the flat gradient buffer each rank reduces per step
        self._buffers = {}

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DataParallel(rank {self.rank} of {self.size}, mode={self.mode!r})"

    # -- batches
    def rows(self, count: int) -> slice:
        return shard_rows(count, self.rank, self.size)

    def local_batch(self, source, batch, where: str):
        """(x, y, lengths, weight) of this rank from one batch of `source`: its rows of a whole batch, or the
        batch itself from LocalShards. An explicit dict "weight" stays with rank 0's rows."""
        x, y, lengths, weight = unpack_batch(batch, where)
        if isinstance(source, LocalShards):
            return x, y, lengths, _targets(y, lengths) if not _explicit_weight(batch) else weight
        if y.ndim == 0:
            raise ValueError(f"{where}: under MPI every batch is split by rows, but y has shape (), expected [N, ...]")
        rows = self.rows(y.shape[0])
        x, y = np.asarray(x)[rows], y[rows]
        lengths = None if lengths is None else lengths[rows]
        if _explicit_weight(batch):
            return x, y, lengths, weight if self.is_root else 0.0
        return x, y, lengths, _targets(y, lengths)

    def local_batches(self, source, iterator, where: str = "fit"):
        """This rank's batches of one epoch: local (x, y, lengths, weight), a _Failure instead of raising (the
        step tells every rank), and None for ever once the batches run out (every rank ends together)."""
        while True:
            try:
                batch = next(iterator, None)
                if batch is None:
                    break
                local = self.local_batch(source, batch, where)
            except Exception as error:  # noqa: BLE001 - handed to every rank by the step's status exchange
                yield _Failure(error)
                return
            yield local
        while True:
            yield None

    # -- the step
    def train_step(self, batch, model, loss_fn, optimizer, *, clip_norm, loss_lengths, guard, metrics):
        """One step over the combined batch: local forward and backward, the status exchange, the gradient
        reduction, then the same clip and update on every rank. Returns `(values, weight)` with the combined
        batch's loss and metrics, or None when every rank's batches have run out."""
        status = np.zeros(_WEIGHT + 1 + len(metrics))
        summed = False
        offset, total = self._shard_of(batch)
        try:
            if isinstance(batch, _Failure):
                raise batch.error
            if batch is None:
                status[_ENDED] = 1
            else:
                x, y, lengths, weight = batch
                count = _gradient_count(loss_fn, y, lengths)
                summed = count is None
                loss, output = 0.0, None
                if y.shape[0] == 0:  # a batch with fewer rows than ranks: this one adds nothing
                    _draw_masks_without_rows(model, x, lengths, total)
                    zero_grad(model, optimizer)
                else:
                    with batch_shard(offset, total):
                        loss, output = backward_step(model, loss_fn, optimizer, x, y, lengths, loss_lengths)
                status[_COUNT] = 1.0 if summed else count
                status[_LOSS] = loss * status[_COUNT]
                status[_WEIGHT] = weight if output is not None else 0.0
                for index, metric in enumerate(metrics.values()):
                    if output is not None:
                        status[_WEIGHT + 1 + index] = weight * metric(
                            output, y, **loss_kwargs(metric, output, y, lengths, loss_lengths))
        except Exception as error:  # noqa: BLE001 - every rank learns of it below
            status[_FAILED] = 1
            self._fail_together(self.allreduce(status), error)
        total = self.allreduce(status)
        self._fail_together(total, None)
        if total[_ENDED]:
            if total[_ENDED] != self.size:  # every rank sees the same total, so every rank raises
                raise ValueError(f"fit: the ranks' batch sources ended at different steps ({int(total[_ENDED])} "
                                 f"of {self.size} ranks had no batch left); a LocalShards source must give every "
                                 "rank the same number of batches")
            return None
        scale = 1.0 if summed else (status[_COUNT] / total[_COUNT] if total[_COUNT] else 0.0)
        self.reduce_gradients(optimizer.params, scale)
        loss = total[_LOSS] if summed else (total[_LOSS] / total[_COUNT] if total[_COUNT] else 0.0)
        if not math.isfinite(loss):
            raise NonFiniteError("loss", loss)
        apply_update(optimizer, clip_norm, guard)
        weight = float(total[_WEIGHT])
        values = {"loss": float(loss)}
        for index, name in enumerate(metrics):
            values[name] = float(total[_WEIGHT + 1 + index] / weight) if weight else 0.0
        return values, weight

    def _shard_of(self, batch) -> tuple:
        """(offset, total): where this rank's rows start in the combined batch of this step, and its row count.
        Every rank takes part (one that has ended or failed with no rows), so dropout masks can be drawn for the
        combined batch (layer_base.batch_shard)."""
        rows = batch[1].shape[0] if isinstance(batch, tuple) else 0
        counts = self.comm.allgather(rows)
        return sum(counts[:self.rank]), sum(counts)

    def reduce_gradients(self, params, scale: float) -> None:
        """Replace each trainable gradient by the sum over ranks of `scale` times it, in one flat buffer per
        dtype (one message per step for the usual single-dtype model)."""
        trainable = [param for param in params if param.trainable]
        for dtype in sorted({param.grad.dtype.str for param in trainable}):
            group = [param for param in trainable if param.grad.dtype.str == dtype]
            flat = self._buffer(dtype, sum(param.grad.size for param in group))
            offset, factor = 0, np.dtype(dtype).type(scale)
            for param in group:
                np.multiply(param.grad.reshape(-1), factor, out=flat[offset:offset + param.grad.size])
                offset += param.grad.size
            self._sum(flat)
            offset = 0
            for param in group:
                np.copyto(param.grad, flat[offset:offset + param.grad.size].reshape(param.grad.shape))
                offset += param.grad.size

    def _buffer(self, dtype: str, size: int) -> np.ndarray:
        if dtype not in self._buffers or self._buffers[dtype].size != size:
            self._buffers[dtype] = np.empty(size, dtype=dtype)
            self.gradient_bytes = sum(buffer.nbytes for buffer in self._buffers.values())
        return self._buffers[dtype]

    def _sum(self, flat: np.ndarray) -> None:
        if self.mode == "fast":
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            return
        gathered = np.empty((self.size, flat.size), dtype=flat.dtype) if self.is_root else None
        self.comm.Gather(flat, gathered, root=0)
        if self.is_root:
            np.copyto(flat, gathered[0])
            for rank in range(1, self.size):  # rank order, the same on every run
                flat += gathered[rank]
        self.comm.Bcast(flat, root=0)

    # -- small collectives
    def allreduce(self, values: np.ndarray) -> np.ndarray:
        total = np.empty_like(values)
        self.comm.Allreduce(values, total, op=self.MPI.SUM)
        return total

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a time limit, a Ctrl-C seen by one rank)."""
        return bool(self.allreduce(np.array([float(bool(flag))]))[0])

    def _fail_together(self, total: np.ndarray, error) -> None:
        """When any rank failed (total[_FAILED]), every rank raises: the failing ones their own exception, the
        others a RankError naming the first failing rank. Collective: every rank calls it with the same total."""
        if not total[_FAILED]:
            return
        report = None if error is None else (type(error).__name__, str(error), "".join(
            traceback.format_exception(type(error), error, error.__traceback__)))
        reports = self.comm.allgather(report)
        if error is not None:
            raise error
        rank = next(r for r, item in enumerate(reports) if item is not None)
        raise RankError(rank, self.size, *reports[rank])

    def collectively(self, function):
        """`function()` on every rank (a rank-local part of fit, such as starting an epoch's batches); an
        exception on any rank is raised on every rank. Returns this rank's result."""
        error, result = None, None
        try:
            result = function()
        except Exception as caught:  # noqa: BLE001 - raised on every rank below
            error = caught
        status = np.zeros(_WEIGHT + 1)
        status[_FAILED] = error is not None
        self._fail_together(self.allreduce(status), error)
        return result

    def run_on_root(self, function) -> None:
        """`function()` on rank 0 only (a checkpoint write); its exception is raised on every rank."""
        self.collectively(function if self.is_root else lambda: None)

    def reduce_sums(self, sums: np.ndarray, error=None) -> np.ndarray:
        """The sums over ranks of a float vector (evaluation totals); an exception on any rank is raised on all."""
        status = np.concatenate([np.zeros(_WEIGHT + 1), sums])
        status[_FAILED] = error is not None
        total = self.allreduce(status)
        self._fail_together(total, error)
        return total[_WEIGHT + 1:]

    def reduce_averages(self, averages, names: list, error=None):
        """The combined Averages of every rank's (weights, batches and the sums of `names`)."""
        local = [averages.weight, averages.batches, *(averages.sums.get(name, 0.0) for name in names)]
        total = self.reduce_sums(np.array(local, dtype=np.float64), error)
        return Averages({"weight": total[0], "batches": int(total[1]), "sums": dict(zip(names, total[2:]))})

    # -- start, states, checks
    def broadcast_start(self, model, optimizer, random_state) -> None:
        """Rank 0's weights, optimizer state and random generators on every rank, so all start the same."""
        for param in model.parameters():
            self.comm.Bcast(param.value, root=0)
        state = self.comm.bcast(optimizer.state_dict() if self.is_root else None, root=0)
        snapshot = self.comm.bcast(random_state.snapshot() if self.is_root else None, root=0)
        if not self.is_root:
            optimizer.load_state_dict(state)
            random_state.restore(snapshot)

    def gather_states(self, carried: list):
        """The combined batch's carried states on rank 0 (each rank's rows in rank order), None elsewhere."""
        gathered = self.comm.gather(carried, root=0)
        if not self.is_root:
            return None
        return [None if any(part[layer] is None for part in gathered) else
                _map_states(lambda *arrays: np.concatenate(arrays, axis=0), *(part[layer] for part in gathered))
                for layer in range(len(carried))]

    def local_states(self, carried: list) -> list:
        """This rank's rows of the combined batch's carried states (from a checkpoint written on any K)."""
        def rows(array):
            return np.ascontiguousarray(array[self.rows(array.shape[0])])
        return [None if states is None else _map_states(rows, states) for states in carried]

    def check_in_sync(self, model) -> None:
        """Raise on every rank if the ranks' weights differ (they must stay bitwise equal)."""
        checksum = 0
        for param in model.parameters():
            checksum = zlib.crc32(np.ascontiguousarray(param.value).view(np.uint8), checksum)
        checksums = self.comm.allgather(checksum)
        if len(set(checksums)) != 1:
            raise RuntimeError(f"rnnext.distributed: the ranks' weights differ (CRC-32 {checksums}); every rank "
                               "must build the same model and optimizer")

    def guard(self):
        """Context manager: an exception that leaves it on some rank but not on all ends the job."""
        return _AllOrAbort(self)


def _draw_masks_without_rows(model, x, lengths, total: int) -> None:
    """A rank without rows in a step still draws the step's dropout masks, as the first row of the combined batch,
    so its layers' generators stay in step with the other ranks': a forward on one row of zeros, kept nowhere."""
    if total == 0:
        return
    if any(getattr(layer, "stateful", False) for layer in getattr(model, "layers", [model])):
        raise ValueError("fit: a stateful model under MPI needs at least one row per rank in every batch "
                         f"(a batch of {total} rows cannot be split over every rank)")
    x = np.asarray(x)
    one_row = np.zeros((1,) + x.shape[1:], dtype=x.dtype)
    one_length = None if lengths is None else np.ones(1, dtype=np.asarray(lengths).dtype)
    with batch_shard(0, total), inference_mode():
        forward(model, one_row, one_length)


def _explicit_weight(batch) -> bool:
    return isinstance(batch, dict) and batch.get("weight") is not None


def _map_states(function, *per_rank):
    """`function` across the ranks' states of one layer, entry by entry (a list of arrays or of (h, c) tuples)."""
    mapped = []
    for entries in zip(*per_rank):
        if isinstance(entries[0], tuple):
            mapped.append(tuple(function(*parts) for parts in zip(*entries)))
        else:
            mapped.append(function(*entries))
    return mapped


class _AllOrAbort:
    """On an exception, wait (on a communicator of its own) for every rank to leave with one too: then the
    exception propagates as usual. A rank that raised alone prints it and ends the job with MPI_Abort."""

    def __init__(self, parallel: DataParallel):
        self.parallel = parallel

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if kind is None:
            return False
        parallel = self.parallel
        request = parallel.exit_comm.Ibarrier()
        deadline = time.monotonic() + parallel.abort_timeout_s
        while not request.Test():
            if time.monotonic() > deadline:
                print(f"rnnext.distributed: rank {parallel.rank} of {parallel.size} raised {kind.__name__}: {error}"
                      f"; the other ranks did not, so the job is aborted", file=sys.stderr, flush=True)
                parallel.comm.Abort(1)
            time.sleep(0.01)
        return False


def from_option(option: str = "auto"):
    """A DataParallel for the experiments' `--distributed` option: "auto" (fast mode when launched by an MPI
    launcher with more than one process, else None), "off" (None), "fast" or "deterministic"."""
    check_choice("--distributed", "option", option, OPTION_CHOICES)
    if option == "off":
        return None
    return from_environment() if option == "auto" else DataParallel(mode=option)


def is_root(parallel) -> bool:
    """True for one process (`parallel` None) and for rank 0: where the experiments print and sample."""
    return parallel is None or parallel.is_root


def run_experiment(run, args, log):
    """`run(args, log, parallel)` for an experiment's `--distributed` option: quiet on ranks other than 0, and
    an exception on one rank alone ends the job (DataParallel.guard)."""
    parallel = from_option(getattr(args, "distributed", "auto"))
    if parallel is None:
        return run(args, log, None)
    with parallel.guard():
        return run(args, log if parallel.is_root else _quiet, parallel)


def _quiet(*args, **kwargs) -> None:
    pass


def from_environment(mode: str = "fast"):
    """DataParallel over MPI.COMM_WORLD when launched by an MPI launcher with more than one process, else None."""
    return DataParallel(mode=mode) if launched_size() > 1 else None


def add_argument(parser) -> None:
    """The experiments' `--distributed` option."""
    parser.add_argument("--distributed", choices=OPTION_CHOICES, default="auto", help="data-parallel training over "
                        "MPI (launch with mpirun -n K): auto uses the fast mode when started by mpirun with K > 1; "
                        "deterministic adds the gradients in rank order (default: %(default)s)")
