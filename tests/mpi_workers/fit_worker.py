"""Worker of tests/test_distributed.py: trains a small model one way (one process, K ranks under mpirun, or one
process emulating K ranks) and writes the final weights from rank 0 to --out (.npz).

Scenarios: "lengths" (an LSTM over padded sequences with lengths, per-token loss, batches of 7, 5 and 1 rows, so
the ranks' shards hold different numbers of tokens and the last one leaves rank 1 empty; --dropout adds dropout), "tbptt" (a stateful
LSTM language model trained by char_lm.train_lm, whose streams each rank owns a slice of) and "windows" (the
same model through rnnext.tbptt's two functions).
"""
import argparse
import functools
import sys

import numpy as np

from rnnext import distributed, layers, optim, tbptt, train
from rnnext.experiments.char_lm import train_lm
from rnnext.losses import softmax_cross_entropy
from rnnext.models import Sequential
from rnnext.step import apply_update, backward_step, unpack_batch

CLASSES, FEATURES, STEPS, VOCAB = 5, 3, 6, 7


def lengths_model(dropout=0.0):
    """With dropout: a Dropout on the inputs and two LSTM layers with dropout between them and recurrent dropout
    inside, whose masks under MPI must be the ones one process draws for the combined batch."""
    stack = [layers.LSTM(6, return_sequences=True, dtype=np.float64, seed=1),
             layers.Dense(CLASSES, dtype=np.float64, seed=2)]
    if dropout:
        stack = [layers.Dropout(dropout, seed=3),
                 layers.LSTM(6, num_layers=2, layer_dropout=dropout, recurrent_dropout=dropout, return_sequences=True,
                             dtype=np.float64, seed=1),
                 stack[1]]
    model = Sequential(stack)
    model.build((None, FEATURES))
    return model


def lengths_batches(epoch):
    rng = np.random.default_rng([7, epoch])
    batches = []
    for rows in (7, 5, 1):
        x = rng.standard_normal((rows, STEPS, FEATURES))
        lengths = rng.integers(1, STEPS + 1, size=rows)
        y = rng.integers(0, CLASSES, size=(rows, STEPS))
        batches.append((x, y, lengths))
    return batches


def tbptt_model():
    model = Sequential([layers.Embedding(VOCAB, 4, dtype=np.float64, seed=3),
                        layers.LSTM(5, return_sequences=True, stateful=True, dtype=np.float64, seed=4),
                        layers.Dense(VOCAB, dtype=np.float64, seed=5)])
    model.build((None,))
    return model


def tbptt_streams():
    ids = np.random.default_rng(11).integers(0, VOCAB, size=5 * 23)
    return ids.reshape(5, 23), ids[:5 * 9].reshape(5, 9)  # 5 streams: 3 on rank 0, 2 on rank 1


def emulate(args, model):
    """One process doing what K deterministic ranks do: K replicas, each on its rows, gradients scaled by
    count_k / count and added in rank order, the same update on every replica."""
    replicas = [model] + [lengths_model() for _ in range(args.emulate - 1)]
    for replica in replicas[1:]:
        for mine, theirs in zip(replica.parameters(), model.parameters()):
            np.copyto(mine.value, theirs.value)
    optimizers = [optim.Adam(replica.parameters(), lr=0.05) for replica in replicas]
    for epoch in range(args.epochs):
        for batch in lengths_batches(epoch):
            x, y, lengths, _ = unpack_batch(batch, "emulate")
            shards = [distributed.shard_rows(len(y), rank, args.emulate) for rank in range(args.emulate)]
            counts = [float(np.sum(lengths[rows])) for rows in shards]
            summed = None
            for replica, opt, rows, count in zip(replicas, optimizers, shards, counts):
                if rows.stop > rows.start:
                    backward_step(replica, softmax_cross_entropy, opt, x[rows], y[rows], lengths[rows])
                else:
                    replica.zero_grad()
                scaled = np.concatenate([p.grad.ravel() * (count / sum(counts)) for p in replica.parameters()])
                summed = scaled if summed is None else summed + scaled
            for replica, opt in zip(replicas, optimizers):
                offset = 0
                for param in replica.parameters():
                    np.copyto(param.grad, summed[offset:offset + param.size].reshape(param.shape))
                    offset += param.size
                apply_update(opt, clip_norm=1.0)


class FailingLoss:
    """softmax_cross_entropy that raises on one rank at one step (--fail-rank, --fail-step)."""

    def __init__(self, rank, fail_rank, fail_step):
        self.rank, self.fail_rank, self.fail_step, self.calls = rank, fail_rank, fail_step, 0

    def __call__(self, output, y, lengths=None):
        self.calls += 1
        if self.rank == self.fail_rank and self.calls == self.fail_step:
            raise ValueError(f"deliberate failure on rank {self.rank}")
        return softmax_cross_entropy(output, y, lengths=lengths)


class SchedulerFailingOnRank:
    """A scheduler whose step raises on one rank after epoch 1: an error in a rank-local part of fit that no
    exchange carries to the other ranks."""

    def __init__(self, rank, fail_rank):
        self.rank, self.fail_rank = rank, fail_rank

    def step(self):
        if self.rank == self.fail_rank:
            raise RuntimeError(f"deliberate failure of the scheduler on rank {self.rank}")


class SourceFailingOnRank:
    """The lengths batches, except that building epoch 1's raises on one rank (before any step of it)."""

    def __init__(self, rank, fail_rank):
        self.rank, self.fail_rank = rank, fail_rank

    def __call__(self, epoch):
        if epoch == 1 and self.rank == self.fail_rank:
            raise OSError(f"deliberate failure of the batch source on rank {self.rank}")
        return lengths_batches(epoch)


def run(args, parallel):
    rank = parallel.rank if parallel is not None else 0
    if args.scenario == "lengths":
        model = lengths_model(args.dropout)
        if args.emulate:
            emulate(args, model)
            return model, None
        loss = softmax_cross_entropy
        if args.reduction == "sum":  # the shards' gradients add up unscaled
            loss = distributed.with_count(functools.partial(softmax_cross_entropy, reduction="sum"), "sum")
        source = lengths_batches
        if args.fail_rank is not None:
            loss = FailingLoss(rank, args.fail_rank, args.fail_step)
        if args.fail_source_rank is not None:
            source = SourceFailingOnRank(rank, args.fail_source_rank)
        scheduler = None if args.fail_scheduler_rank is None else SchedulerFailingOnRank(rank, args.fail_scheduler_rank)
        history = train.fit(model, loss, optim.Adam(model.parameters(), lr=0.05), source, args.epochs,
                            val_batches=lengths_batches(99), clip_norm=1.0, metrics=["accuracy"], progress=False,
                            scheduler=scheduler, distributed=parallel)
        return model, history.rows
    if args.scenario == "windows":  # rnnext.tbptt's functions over all the streams at once
        model = tbptt_model()
        streams, _ = tbptt_streams()
        x, y = streams[:, :-1], streams[:, 1:]
        optimizer = optim.SGD(model.parameters(), lr=0.5)
        if args.style == "tf":
            losses = tbptt.tbptt_tensorflow_style(model, softmax_cross_entropy, optimizer, x, y, 4, clip_norm=5.0,
                                                  distributed=parallel)
        else:
            losses = tbptt.tbptt_k1_k2(model, softmax_cross_entropy, optimizer, x, y, 2, 5, clip_norm=5.0,
                                       distributed=parallel)
        return model, losses
    model = tbptt_model()
    if args.resume:
        from rnnext.models import load_checkpoint
        model = load_checkpoint(args.resume).model
    train_data, valid_data = tbptt_streams()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    history = train_lm(model, train_data, valid_data, vocab_size=VOCAB, seq_len=4, epochs=args.epochs,
                       optimizer=optimizer, clip=5.0, loss_scale=args.loss_scale, log_every=0,
                       checkpoint_path=args.checkpoint, resume=args.resume, time_limit_s=args.time_limit,
                       log=lambda *a: None, parallel=parallel)
    return model, history


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", choices=("lengths", "tbptt", "windows"), required=True)
    p.add_argument("--style", choices=("tf", "k1k2"), default="tf", help="windows: which rnnext.tbptt function")
    p.add_argument("--distributed", choices=distributed.OPTION_CHOICES, default="off")
    p.add_argument("--emulate", type=int, default=0, help="one process emulating K deterministic ranks")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--loss-scale", choices=("mean", "batch"), default="mean", help="tbptt: char-lm's or word-lm's")
    p.add_argument("--dropout", type=float, default=0.0, help="lengths: dropout on the inputs and between layers")
    p.add_argument("--reduction", choices=("mean", "sum"), default="mean", help="lengths: the loss's reduction")
    p.add_argument("--checkpoint")
    p.add_argument("--resume")
    p.add_argument("--time-limit", type=float)
    p.add_argument("--fail-rank", type=int)
    p.add_argument("--fail-step", type=int, default=2)
    p.add_argument("--fail-source-rank", type=int)
    p.add_argument("--fail-scheduler-rank", type=int)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    parallel = distributed.from_option(args.distributed)
    if parallel is not None:
        parallel.abort_timeout_s = 3.0
    try:
        model, history = run(args, parallel)
    except Exception as error:
        rank = parallel.rank if parallel is not None else 0
        print(f"worker rank {rank}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    if parallel is None or parallel.is_root:
        weights = {name: param.value for name, param in model.named_parameters()}
        np.savez(args.out, **weights, history=np.array(repr(history)))
    if parallel is not None:  # every rank's weights, to check that the ranks agree
        np.savez(f"{args.out}.rank{parallel.rank}.npz",
                 **{name: param.value for name, param in model.named_parameters()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
