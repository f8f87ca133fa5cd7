"""Character-level language model (char-rnn): RNN/LSTM/GRU (or IndRNN, MinGRU, MinLSTM, SRU, QRNN) on any text
file, or on the Python stdlib's source.

Reports validation loss in nats and bits per character, samples with a temperature and a priming string,
saves checkpoints (model + vocabulary in the metadata) and resumes from them. `generate_main` is the
`rnnext generate CHECKPOINT` command: it steps the recurrent layer one character at a time (O(1) per char).
The training loop here (stateful truncated BPTT over `batchify`-ed streams) is shared with `word_lm`.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import rnnext

from .. import data as rdata
from .. import distributed, layers, optim, train
from ..layer_base import inference_mode
from ..losses import softmax_cross_entropy
from ..models import Sequential
from ..sampling import check_sampling, sample_checked
from ..models import load_checkpoint as _load_checkpoint

__all__ = ["main", "generate_main", "build_parser", "parse_args", "build_generate_parser", "builtin_corpus",
           "encode_corpus", "build_model", "run", "generate", "train_lm", "evaluate_lm"]

CELLS = ("rnn", "lstm", "gru", "indrnn", "mingru", "minlstm", "sru", "qrnn")


# ---------------------------------------------------------------------------------------------------------
# corpus

def builtin_corpus(max_chars: int = 1_000_000) -> str:
    """Source of the Python standard library: the `.py` files next to `os.py`, sorted by name, concatenated
    and cut at `max_chars`. Every Python installation has it, so no download is needed (the text differs
    slightly between Python versions)."""
    directory = Path(os.__file__).resolve().parent
    pieces, total = [], 0
    for path in sorted(directory.glob("*.py")):
        try:
            text = rdata.read_text(path)
        except (ValueError, OSError):  # a file that is not UTF-8: skip it rather than fail
            continue
        pieces.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not pieces:
        raise FileNotFoundError(f"builtin_corpus: no .py files found in {directory}")
    return "".join(pieces)[:max_chars]


def encode_corpus(path=None, encoding: str = "utf-8", max_chars: int | None = None, vocab=None,
                  chunk_size: int = 1 << 20):
    """Return `(ids, vocab)`: the text as a 1-D integer array and its character Vocabulary (sorted chars).

    A file is streamed twice with `iter_text_chunks` (count, then encode chunk by chunk), so only the id
    array (1 or 2 bytes a char) is ever held whole. `path=None` uses `builtin_corpus(max_chars)`.
    With `vocab` given, characters outside it are an error naming the first one.
    """
    def chunks():
        if path is None:
            text = builtin_corpus(max_chars or 1_000_000)
            for start in range(0, len(text), chunk_size):
                yield text[start:start + chunk_size]
            return
        seen = 0
        for chunk in rdata.iter_text_chunks(path, chunk_size=chunk_size, encoding=encoding):
            if max_chars is not None and seen + len(chunk) > max_chars:
                chunk = chunk[:max_chars - seen]
            seen += len(chunk)
            if chunk:
                yield chunk
            if max_chars is not None and seen >= max_chars:
                return

    if vocab is None:
        counts = Counter()
        for chunk in chunks():
            counts.update(chunk)
        if not counts:
            raise ValueError(f"char-lm: {path or 'the built-in corpus'} is empty")
        vocab = rdata.Vocabulary(sorted(counts), unk_token="<unk>")
    dtype = np.uint8 if len(vocab) <= 256 else np.uint16 if len(vocab) <= 65536 else np.int32
    lookup = {token: i for i, token in enumerate(vocab.tokens)}
    parts = []
    for chunk in chunks():
        try:
            parts.append(np.fromiter((lookup[c] for c in chunk), dtype=dtype, count=len(chunk)))
        except KeyError as error:
            raise ValueError(f"char-lm: character {error.args[0]!r} is not in the checkpoint's vocabulary") from None
    return np.concatenate(parts), vocab


# ---------------------------------------------------------------------------------------------------------
# model

def recurrent_class(cell: str):
    return {"rnn": layers.RNN, "lstm": layers.LSTM, "gru": layers.GRU, "indrnn": layers.IndRNN, "mingru": layers.MinGRU,
            "minlstm": layers.MinLSTM, "sru": layers.SRU, "qrnn": layers.QRNN}[cell]


def build_model(vocab_size: int, cell: str = "lstm", num_layers: int = 2, hidden: int = 128,
                embedding: int = 0, dropout: float = 0.0, seed=None, name: str = "char_lm"):
    """`[Embedding(V, E)] [Dropout] cell(H, num_layers, return_sequences, stateful) [Dropout] Dense(V)`.

    `embedding=0` feeds one-hot vectors (as char-rnn does) instead of an Embedding layer; see `model_inputs`.
    The output layer gives logits (the softmax is in the loss). `seed` fixes every layer's weights and dropout
    masks: the recurrent layer draws from `seed`, the others from `seed + 1`, `seed + 2`, ...
    """
    if cell not in CELLS:
        raise ValueError(f"char-lm: cell={cell!r}, expected one of {', '.join(CELLS)}")
    other_seeds = itertools.count(seed + 1) if seed is not None else itertools.repeat(None)
    stack = []
    if embedding:
        stack.append(layers.Embedding(vocab_size, embedding, seed=next(other_seeds)))
    if dropout and embedding:
        stack.append(layers.Dropout(dropout, seed=next(other_seeds)))
    stack.append(recurrent_class(cell)(hidden, num_layers=num_layers, layer_dropout=dropout, return_sequences=True,
                                       stateful=True, seed=seed))
    if dropout:
        stack.append(layers.Dropout(dropout, seed=next(other_seeds)))
    stack.append(layers.Dense(vocab_size, seed=next(other_seeds)))
    model = Sequential(stack, name=name)
    model.build((None,) if embedding else (None, vocab_size))
    return model


def is_one_hot(model) -> bool:
    """True when the model takes one-hot vectors (no Embedding layer first)."""
    return not isinstance(model.layers[0], layers.Embedding)


def model_inputs(model, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """What the model's first layer takes for integer `ids [N, T]`: the ids, or one-hot float32 `[N, T, V]`."""
    if is_one_hot(model):
        return np.eye(vocab_size, dtype=np.float32)[ids]
    return ids.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------------------
# training through rnnext.train.fit, shared with word_lm and sentiment's pretraining

def lm_loss(loss_scale: str):
    """The loss for fit: its value is always the mean cross-entropy per token (what the history reports);
    its gradient is that of the mean (`"mean"`) or of the sum over time averaged over rows (`"batch"`,
    Zaremba et al.)."""
    def loss(logits, targets):
        if loss_scale == "mean":
            return softmax_cross_entropy(logits, targets)
        total, dlogits = softmax_cross_entropy(logits, targets, reduction="sum")
        n, t = targets.shape
        dlogits /= n
        return total / (n * t), dlogits
    # under MPI the shards' gradients add up to the combined batch's: divided by its tokens or its rows
    return distributed.with_count(loss, "targets" if loss_scale == "mean" else "rows")


class _Windows:
    """The windows of `lm_batches` over the stream `data [N, L]` as the model takes them, with a length (fit
    shows progress against it and reports the fraction of an epoch a time limit cut short)."""

    def __init__(self, model, data, seq_len: int, vocab_size: int, skip: int = 0):
        self.model, self.data, self.seq_len, self.vocab_size, self.skip = model, data, seq_len, vocab_size, skip

    def __len__(self) -> int:
        return max(0, -(-(self.data.shape[1] - 1) // self.seq_len) - self.skip)

    def __iter__(self):
        for index, (x, y) in enumerate(rdata.lm_batches(self.data, self.seq_len)):
            if index >= self.skip:
                yield model_inputs(self.model, x, self.vocab_size), y


def lm_batch_source(model, data: np.ndarray, seq_len: int, vocab_size: int, skip_first_epoch: int = 0):
    """fit's batch source over the stream `data [N, L]`: the windows of `lm_batches` in order, every epoch;
    the first `skip_first_epoch` windows of epoch 0 are left out (a run continued from an old checkpoint)."""
    return lambda epoch: _Windows(model, data, seq_len, vocab_size, skip_first_epoch if epoch == 0 else 0)


def evaluate_lm(model, data: np.ndarray, seq_len: int, vocab_size: int, parallel=None) -> float:
    """Mean cross-entropy per token (nats) over the stream `data [N, L]`, state carried across windows; with
    `parallel` (a DataParallel) each rank evaluates its streams and the sums are reduced."""
    model.eval()
    model.reset_states()
    total, count, failure = 0.0, 0, None
    try:
        with inference_mode():
            for x, y in rdata.lm_batches(_local_streams(parallel, data, "the evaluation data")[0], seq_len):
                logits = model.forward(model_inputs(model, x, vocab_size))
                loss, _ = softmax_cross_entropy(logits, y, reduction="sum")
                total += loss
                count += y.size
    except Exception as error:  # noqa: BLE001 - under MPI every rank raises it (reduce_sums)
        if parallel is None:
            raise
        failure = error
    finally:
        model.reset_states()
        model.train()
    if parallel is not None:
        total, count = parallel.reduce_sums(np.array([total, count], dtype=np.float64), failure)
    return total / max(count, 1)


def _local_streams(parallel, data, what: str):
    """This rank's fixed slice of the streams `data [N, L]` (all of them for one process), so carried states
    stay local; in a LocalShards source, so fit does not split its windows again."""
    if parallel is None:
        return data, lambda source: source
    if data.shape[0] < parallel.size:
        raise ValueError(f"{what} has {data.shape[0]} streams, fewer than the {parallel.size} MPI ranks; use a "
                         "larger --batch or fewer ranks")
    return data[parallel.rows(data.shape[0])], distributed.LocalShards


def train_lm(model, train_data, valid_data, *, vocab_size, seq_len, epochs, optimizer, clip=5.0,
             lr_factor=None, loss_scale="mean", time_limit_s=None, log_every=100, checkpoint_path=None,
             checkpoint_every=0, resume=None, metadata=None, start_epoch=0, start_batch=0, log=print,
             parallel=None):
    """Stateful truncated BPTT over `train_data [N, L]` (one window of `seq_len` after the other, the state
    carried, gradients cut at window boundaries) with rnnext.train.fit: validation at the end of every epoch,
    checkpoints (`checkpoint_path`, every epoch, every `checkpoint_every` steps, on Ctrl-C) that `resume`
    continues exactly, the NaN guard, and a time limit checked after every step (the epoch is then cut short
    and validated).

    `lr_factor(e)` (0-based epoch) scales the optimizer's lr in epoch e (rnnext.optim.LambdaLR).
    `start_epoch`, `start_batch`: where a run continued from a checkpoint without fit's training state starts.
    `parallel`: an rnnext.distributed.DataParallel; each rank then owns a fixed slice of the streams.
    Returns the history, a list of dicts per epoch (epoch, fraction, lr, train_loss, valid_loss, epoch_time_s,
    elapsed_s), the epochs of the checkpoint resumed from included.
    """
    scheduler = None
    if lr_factor is not None:
        scheduler = optim.LambdaLR(optimizer, lambda epoch: lr_factor(epoch + start_epoch))
    loss_fn = lm_loss(loss_scale)
    valid = None
    train_data, wrap = _local_streams(parallel, train_data, "the training data")
    if valid_data is not None:
        valid_data, _ = _local_streams(parallel, valid_data, "the validation data")
        valid = wrap(lm_batch_source(model, valid_data, seq_len, vocab_size))
    train_batches = wrap(lm_batch_source(model, train_data, seq_len, vocab_size, start_batch))
    history = train.fit(model, loss_fn, optimizer, train_batches,
                        epochs - start_epoch, val_batches=valid, clip_norm=clip or None, scheduler=scheduler,
                        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every or None,
                        resume=resume or False, metadata=metadata, progress=bool(log_every),
                        log_every=log_every or None, stateful_reset="epoch", time_limit_s=time_limit_s,
                        distributed=parallel)
    records, elapsed = [], 0.0
    for row in history.rows:
        elapsed += row["seconds"]
        records.append({"epoch": row["epoch"] + start_epoch, "fraction": row.get("fraction", 1.0), "lr": row["lr"],
                        "train_loss": row["loss"], "valid_loss": row.get("val_loss", float("nan")),
                        "epoch_time_s": row["seconds"], "elapsed_s": elapsed})
    if history.time_limited:
        log(f"time limit of {time_limit_s:.0f}s reached during epoch {records[-1]['epoch']}")
    return records


# ---------------------------------------------------------------------------------------------------------
# checkpoints

class ResumePoint:
    """Where `--resume PATH` continues: a checkpoint written by fit continues exactly (fit reads its training
    state); one written before training went through fit (its metadata has only "epoch" and "batch")
    continues from there with its weights and optimizer state, as it always did. `ResumePoint(None)`: a
    fresh run."""

    def __init__(self, path):
        self.path, self.model, self.metadata, self._optimizer_state = path, None, {}, None
        if path is not None:
            self.model, self.metadata, self._optimizer_state = load_checkpoint(path)
        self.exact = path is not None and "train_state" in self.metadata

    def restore_optimizer(self, optimizer) -> None:
        """The optimizer state of an old checkpoint (fit restores its own), keeping the lr the options set."""
        if self._optimizer_state and not self.exact:
            lr = optimizer.lr
            optimizer.load_state_dict(self._optimizer_state)
            optimizer.lr = lr  # the schedule sets the lr of every epoch from the base lr

    @property
    def train_lm_options(self) -> dict:
        if self.exact:
            return {"resume": self.path}
        return {"start_epoch": int(self.metadata.get("epoch", 0)), "start_batch": int(self.metadata.get("batch", 0))}


def load_checkpoint(path):
    """`(model, metadata, optimizer_state)` from a `model.save` file (optimizer_state None when absent)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    checkpoint = _load_checkpoint(path)
    return checkpoint.model, checkpoint.metadata or {}, checkpoint.optimizer_state


# ---------------------------------------------------------------------------------------------------------
# generation

def generate(model, vocab, length: int, prime="", temperature: float = 1.0, seed=None, *, top_k=None,
             top_p=None):
    """Sample `length` characters after `prime`, one `step()` per character with the state carried.

    The prime is fed through the network first (its characters must be in the vocabulary); with no prime
    the first input is a newline if the vocabulary has one, else its first character. `temperature`
    divides the logits (lower: more conservative); 0 takes the most likely character (greedy); `top_k` and
    `top_p` restrict each draw to the k most likely characters or to the nucleus of mass p (rnnext.sampling).
    A list of primes generates one text per prime in one batch (a list back); each row is primed with its own
    prime and draws from the generator in row order, so a batch of one gives what a lone prime gives.
    """
    rng = np.random.default_rng(seed)
    temperature, top_k, top_p = check_sampling("generate", temperature, top_k, top_p)
    primes = [prime] if isinstance(prime, str) else list(prime)
    if not primes or not all(isinstance(p, str) for p in primes):
        raise ValueError(f"generate: prime is {prime!r}, expected a str or a non-empty list of str")
    missing = sorted({c for p in primes for c in p if c not in vocab})
    if missing:
        raise ValueError(f"generate: prime contains characters not in the vocabulary: {missing}")
    default_start = "\n" if "\n" in vocab else vocab.tokens[0]
    starts = [[vocab.token_to_id(c) for c in (p or default_start)] for p in primes]

    stack = model.layers
    embedding = None if is_one_hot(model) else stack[0]
    rnn_index = next(i for i, layer in enumerate(stack) if hasattr(layer, "step"))
    rnn, head = stack[rnn_index], stack[rnn_index + 1:]
    eye = np.eye(len(vocab), dtype=np.float32)
    rows = len(starts)
    stepper = rnn.stepper(rows)  # the weights packed once for the whole text

    def advance(token_ids, state, active):
        """Logits [N, V] after feeding token_ids [N]; rows not `active` keep their state (a shorter prime)."""
        x_t = eye[token_ids] if embedding is None else embedding.forward(token_ids[:, None])[:, 0, :]
        x_t = np.ascontiguousarray(x_t, dtype=rnn.dtype)
        h_t, new_state = stepper.advance(x_t, state)
        if state is not None and not active.all():
            new_state = [tuple(np.where(active[:, None], n, o) for n, o in zip(new, old))
                         for new, old in zip(new_state, state)]
        out = h_t
        for layer in head:
            out = layer.forward(out)
        return out.astype(np.float64), new_state

    lengths = np.array([len(s) for s in starts])
    out = [[] for _ in range(rows)]
    was_training = model.training
    model.eval()
    try:
        with inference_mode():
            logits, state = np.zeros((rows, len(vocab))), None
            for t in range(lengths.max()):
                active = t < lengths
                ids = np.array([s[min(t, len(s) - 1)] for s in starts], dtype=np.int64)
                step_logits, state = advance(ids, state, active)
                logits[active] = step_logits[active]  # each row's logits after its own last prime character
            for _ in range(length):
                ids = sample_checked(logits, rng, temperature, top_k, top_p)
                for row, token_id in enumerate(ids):
                    out[row].append(vocab.id_to_token(int(token_id)))
                logits, state = advance(ids, state, np.ones(rows, dtype=bool))
    finally:
        model.train(was_training)
    texts = ["".join(chars) for chars in out]
    return texts[0] if isinstance(prime, str) else texts


# ---------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str = "rnnext train char-lm") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Character-level language model (char-rnn style): "
                                "trains on a text file, reports validation loss in nats and bits per character, "
                                "samples text and saves checkpoints.")
    p.add_argument("--data", metavar="PATH", help="text file to train on (default: the built-in corpus, the "
                   "Python standard library's own .py source, capped by --max-chars)")
    p.add_argument("--encoding", default="utf-8", help="encoding of --data (default: %(default)s); a BOM and CRLF "
                   "line endings are handled")
    p.add_argument("--max-chars", type=int, default=None, help="use at most this many characters of the text "
                   "(default: all of --data, 1,000,000 of the built-in corpus)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="final fraction of the text held out for "
                   "validation (default: %(default)s)")
    p.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="stacked recurrent layers (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=128, help="units per recurrent layer (default: %(default)s)")
    p.add_argument("--embedding", type=int, default=0, help="embedding size; 0 feeds one-hot characters as "
                   "char-rnn does (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout between layers (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=50, help="BPTT window in characters (default: %(default)s)")
    p.add_argument("--batch", type=int, default=50, help="parallel streams per batch (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training text (default: %(default)s)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="stop training after this "
                   "many seconds (the current epoch is validated and checkpointed)")
    p.add_argument("--optimizer", choices=("rmsprop", "adam", "sgd"), default="rmsprop",
                   help="optimizer (default: %(default)s, alpha 0.95, as char-rnn)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default: %(default)s)")
    p.add_argument("--lr-decay", type=float, default=0.97, help="multiply the lr by this every epoch after "
                   "--decay-after (default: %(default)s)")
    p.add_argument("--decay-after", type=int, default=10, help="epochs at the full lr (default: %(default)s)")
    p.add_argument("--clip", type=float, default=5.0, help="clip the global gradient norm (0: off; default: "
                   "%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed: weights, dropout, sampling (default: %(default)s)")
    p.add_argument("--checkpoint", metavar="PATH", help="save model, vocabulary and optimizer state here "
                   "(.npz) at the end of every epoch, every --checkpoint-every steps and on Ctrl-C")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (0: only per epoch)")
    p.add_argument("--resume", metavar="PATH", help="continue training from this checkpoint (its architecture "
                   "and vocabulary; the other options still apply)")
    p.add_argument("--log-every", type=int, default=100, help="print the training loss every N steps (0: never)")
    p.add_argument("--sample-length", type=int, default=300, help="characters to sample after training "
                   "(0: none; default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
    p.add_argument("--prime", default="", help="text that starts the sample")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's default)")
    distributed.add_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny preset for CI and smoke tests: 20,000 characters, "
                   "1 layer of 32 units, seq-len 20, batch 8, 1 epoch")
    return p


def _apply_quick(args) -> None:
    args.max_chars = args.max_chars or 20_000
    args.layers, args.hidden, args.seq_len, args.batch, args.epochs = 1, 32, 20, 8, 1
    args.log_every = 0
    args.sample_length = min(args.sample_length, 100)


def _make_optimizer(name, params, lr):
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, alpha=0.95)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    return optim.SGD(params, lr=lr)


def run(args, log=print) -> dict:
    """Train as `args` says (a namespace from `build_parser`); returns a summary dict of the results."""
    return distributed.run_experiment(_run, args, log)


def _run(args, log, parallel) -> dict:
    if args.threads:
        rnnext.set_num_threads(args.threads)
    if args.seed is not None:
        np.random.seed(args.seed)
        layers.seed(args.seed)  # weights and dropout masks of layers built without seed=
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction={args.val_fraction}, expected 0 < f < 1")

    vocab, point = None, ResumePoint(None)
    if args.resume:
        point = ResumePoint(args.resume)
        model, vocab = point.model, rdata.Vocabulary.from_dict(point.metadata["vocab"])
    t0 = time.perf_counter()
    ids, vocab = encode_corpus(args.data, args.encoding, args.max_chars, vocab=vocab)
    split = int(len(ids) * (1 - args.val_fraction))
    train_ids, valid_ids = ids[:split], ids[split:]
    if len(valid_ids) < 2 * args.batch or len(train_ids) < args.batch * (args.seq_len + 1):
        raise ValueError(f"char-lm: {len(ids)} characters are too few for batch {args.batch} and seq-len "
                         f"{args.seq_len} (validation gets {len(valid_ids)})")
    train_data = rdata.batchify(train_ids, args.batch)
    valid_data = rdata.batchify(valid_ids, args.batch)
    source = args.data or "built-in corpus (Python stdlib source)"
    log(f"char-lm: {source}: {len(ids):,} chars, vocabulary {len(vocab)}, train {len(train_ids):,}, "
        f"valid {len(valid_ids):,} (read in {time.perf_counter() - t0:.1f}s)")

    if not args.resume:
        model = build_model(len(vocab), args.cell, args.layers, args.hidden, args.embedding, args.dropout,
                            seed=args.seed)
    if distributed.is_root(parallel):
        model.summary()
    optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr)
    point.restore_optimizer(optimizer)
    metadata = {"experiment": "char-lm", "vocab": vocab.to_dict(),
                "args": {k: v for k, v in vars(args).items() if k != "func"}}

    start = time.perf_counter()
    history = train_lm(model, train_data, valid_data, vocab_size=len(vocab), seq_len=args.seq_len,
                       epochs=args.epochs, optimizer=optimizer, clip=args.clip,
                       lr_factor=lambda epoch: args.lr_decay ** max(0, epoch + 1 - args.decay_after),
                       time_limit_s=args.time_limit, log_every=args.log_every, checkpoint_path=args.checkpoint,
                       checkpoint_every=args.checkpoint_every, metadata=metadata, log=log, parallel=parallel,
                       **point.train_lm_options)
    wall = time.perf_counter() - start
    result = {"chars": len(ids), "vocab_size": len(vocab), "history": history, "wall_time_s": wall}
    if history:
        valid = history[-1]["valid_loss"]
        result.update(valid_loss=valid, valid_bpc=valid / math.log(2), train_loss=history[-1]["train_loss"])
        log(f"validation loss {valid:.4f} nats/char = {valid / math.log(2):.4f} bits/char; "
            f"wall time {wall:.1f}s")
    if args.sample_length and distributed.is_root(parallel):
        sample = generate(model, vocab, args.sample_length, args.prime, args.temperature, seed=args.seed)
        result["sample"] = sample
        log(f"--- sample (temperature {args.temperature}) ---\n{args.prime}{sample}\n---")
    result["model"] = model
    result["vocab"] = vocab
    return result


def parse_args(argv=None) -> argparse.Namespace:
    """Parse `argv` and apply the --quick preset."""
    args = build_parser().parse_args(argv)
    if args.quick:
        _apply_quick(args)
    return args


def main(argv=None) -> int:
    """`rnnext train char-lm [options]`; returns the exit status."""
    run(parse_args(argv))
    return 0


def build_generate_parser(prog: str = "rnnext generate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Generate text from a char-lm checkpoint, one character "
                                "per step with the recurrent state carried.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint saved by `rnnext train char-lm --checkpoint`")
    p.add_argument("--prime", action="append", help="text fed to the model before sampling (printed before the "
                   "sample); give it several times for one sample per prime, generated together in one batch")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy "
                   "(default: %(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="draw only from the K most likely characters")
    p.add_argument("--top-p", type=float, default=None, help="draw only from the most likely characters whose "
                   "probabilities add up to P (nucleus sampling)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: fresh each run)")
    return p


def generate_main(argv=None) -> int:
    """`rnnext generate CHECKPOINT --prime ... --temperature 0.8 --length 500`; prints prime + sample, one per
    --prime (a blank line between samples)."""
    args = build_generate_parser().parse_args(argv)
    if args.length < 0:
        raise ValueError(f"--length={args.length}, expected >= 0")
    model, metadata, _ = load_checkpoint(args.checkpoint)
    if "vocab" not in metadata:
        raise ValueError(f"{args.checkpoint}: no vocabulary in the checkpoint's metadata (not a char-lm checkpoint)")
    vocab = rdata.Vocabulary.from_dict(metadata["vocab"])
    primes = args.prime or [""]
    texts = generate(model, vocab, args.length, primes, args.temperature, seed=args.seed, top_k=args.top_k,
                     top_p=args.top_p)
    sys.stdout.write("\n".join(prime + text + "\n" for prime, text in zip(primes, texts)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
