"""IMDB sentiment classification with the course's model and its variants.

The course model is `Embedding(10000, 32) + LSTM(32) + Dense(1, sigmoid)` on the first or last 500 tokens of
each review, trained with RMSprop (lr 1e-3), batch 128, 10 epochs, 20% of the training set held out for
validation. Here the Dense(1) gives a logit and the sigmoid lives in `binary_cross_entropy_with_logits`
(same model, 33 parameters, numerically safer). Reviews are padded after their end and the true lengths are
passed to the recurrent layers, which is Keras' masking: padding never reaches the state.
Variants (`--model`): simple-rnn, lstm, lstm-dropout, stacked-lstm (three LSTMs), bilstm, and
pretrained-embedding (a word LM trained on the training texts lends its embedding, frozen, to a classifier
trained on a small labelled set; compared with the same classifier trained from scratch).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import rnnext

from .. import data as rdata
from .. import distributed, layers, optim, train
from ..layer_base import inference_mode
from ..losses import binary_cross_entropy_with_logits
from ..models import Sequential
from .char_lm import train_lm

__all__ = ["main", "build_parser", "parse_args", "build_model", "run", "MODELS"]

MODELS = ("simple-rnn", "lstm", "lstm-dropout", "stacked-lstm", "bilstm", "pretrained-embedding")


def build_model(kind: str, num_words: int = 10_000, dim: int = 32, units: int = 32, seed=None,
                embedding_weights=None, freeze_embedding: bool = False):
    """The classifier for `--model kind`, built for integer ids `[N, T]`; the last layer is Dense(1) (a logit)."""
    if kind not in MODELS:
        raise ValueError(f"sentiment: model={kind!r}, expected one of {', '.join(MODELS)}")
    embedding = layers.Embedding(num_words, dim, weights=embedding_weights, trainable=not freeze_embedding)
    if kind == "simple-rnn":
        stack = [embedding, layers.SimpleRNN(units, seed=seed)]
    elif kind in ("lstm", "pretrained-embedding"):
        stack = [embedding, layers.LSTM(units, seed=seed)]
    elif kind == "lstm-dropout":
        stack = [embedding, layers.LSTM(units, dropout=0.2, seed=seed)]  # the course's LSTM(32, dropout=0.2), as Keras
    elif kind == "stacked-lstm":
        stack = [embedding,
                 layers.LSTM(units, return_sequences=True, seed=None if seed is None else seed + 1),
                 layers.LSTM(units, return_sequences=True, seed=None if seed is None else seed + 2),
                 layers.LSTM(units, seed=seed)]
    else:  # bilstm
        stack = [embedding, layers.LSTM(units, bidirectional=True, seed=seed)]
    stack.append(layers.Dense(1))
    model = Sequential(stack, name=kind.replace("-", "_"))
    model.build((None,))
    return model


# ---------------------------------------------------------------------------------------------------------
# batches

def _truncate(sequences, maxlen: int, truncating: str):
    """Keep the first (`post`) or last (`pre`, Keras' default) `maxlen` ids of each sequence."""
    if truncating == "pre":
        return [s[-maxlen:] if len(s) > maxlen else s for s in sequences]
    return [s[:maxlen] for s in sequences]


def padded_batches(sequences, labels, batch_size: int, shuffle: bool, rng, maxlen=None):
    """Yield `(x [B, T], lengths [B], labels [B])`, ids padded with 0 after each sequence's end.

    With `maxlen`, every batch is padded to `maxlen` steps (the course's fixed 500); otherwise to the
    longest sequence in the batch. Sequences must already be truncated.
    """
    order = rng.permutation(len(sequences)) if shuffle else np.arange(len(sequences))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = [sequences[i] for i in index]
        x, lengths = rdata.pad_sequences(batch, maxlen=maxlen or max(1, max(len(s) for s in batch)),
                                         padding="post", truncating="post", return_lengths=True)
        yield x.astype(np.int64), lengths, labels[index]


def _eval_batches(sequences, labels, batch_size: int):
    """Sorted by length so each batch is padded only to its own longest review (results do not depend on
    padding, since lengths are passed)."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = [sequences[i] for i in index]
        x, lengths = rdata.pad_sequences(batch, maxlen=max(1, max(len(s) for s in batch)), padding="post",
                                         truncating="post", return_lengths=True)
        yield x.astype(np.int64), lengths, labels[index]


def _at_least_one_step(lengths):
    return np.maximum(lengths, 1)  # an empty review still gets one (padding) step


def classifier_loss(output, y):
    """Binary cross-entropy of the logits `output [N, 1]` against 0/1 labels `y [N]`, for fit."""
    logits = output[:, 0]
    loss, dlogits = binary_cross_entropy_with_logits(logits, y.astype(logits.dtype))
    return loss, dlogits[:, None]


def evaluate(model, sequences, labels, batch_size: int = 256) -> tuple[float, float]:
    """`(loss, accuracy)` of the classifier on `sequences`, `labels`."""
    model.eval()
    total_loss, correct = 0.0, 0
    with inference_mode():
        for x, lengths, y in _eval_batches(sequences, labels, batch_size):
            logits = model.forward(x, lengths=_at_least_one_step(lengths))[:, 0]
            loss, _ = binary_cross_entropy_with_logits(logits, y.astype(logits.dtype), reduction="sum")
            total_loss += loss
            correct += int(np.sum((logits > 0) == (y == 1)))
    model.train()
    return total_loss / max(len(labels), 1), correct / max(len(labels), 1)


class _TrainingBatches:
    """fit's batch source: each epoch the training set shuffled into `(x, y, lengths)` batches, by length
    buckets (`bucket`) or padded to `maxlen`; its generators are saved in fit's checkpoints."""

    def __init__(self, sequences, labels, batch_size: int, maxlen: int, bucket: bool, seed):
        self.sequences, self.labels, self.batch_size, self.maxlen = sequences, labels, batch_size, maxlen
        self.rng = np.random.default_rng(seed)
        self.buckets = None
        if bucket:
            self.buckets = rdata.BucketIterator(sequences, labels, batch_size, bucket_width=max(1, maxlen // 20),
                                                shuffle=True, seed=seed, dtype="int64")

    def generators(self) -> dict:
        buckets = self.buckets.generators() if self.buckets is not None else {}
        return {"rng": self.rng, **{f"buckets.{name}": generator for name, generator in buckets.items()}}

    def __call__(self, epoch):
        batches = self.buckets if self.buckets is not None else padded_batches(
            self.sequences, self.labels, self.batch_size, True, self.rng, self.maxlen)
        for x, lengths, y in batches:
            yield x, y, _at_least_one_step(lengths)


def fit_classifier(model, train_seqs, train_labels, *, epochs, batch_size, lr, seed, maxlen, bucket,
                   valid=None, clip=0.0, time_limit_s=None, parallel=None):
    """RMSprop (Keras' defaults: rho 0.9), binary cross-entropy on the logit, through rnnext.train.fit (the
    time limit is checked after every epoch); returns per-epoch history."""
    optimizer = optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-7)
    val_batches = None
    if valid is not None:
        val_batches = [(x, y, _at_least_one_step(lengths)) for x, lengths, y in _eval_batches(*valid, 256)]
    history = train.fit(model, classifier_loss, optimizer,
                        _TrainingBatches(train_seqs, train_labels, batch_size, maxlen, bucket, seed), epochs,
                        val_batches=val_batches, clip_norm=clip or None, metrics=["accuracy"],
                        progress=True, time_limit_s=time_limit_s, time_limit_per="epoch", distributed=parallel)
    records = []
    for row in history.rows:
        record = {"epoch": row["epoch"], "train_loss": row["loss"], "train_acc": row["accuracy"],
                  "epoch_time_s": row["seconds"]}
        if valid is not None:
            record["valid_loss"], record["valid_acc"] = row["val_loss"], row["val_accuracy"]
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------------------
# data

def load_labelled(path):
    """`(texts, labels)` from an IMDB CSV / aclImdb split, a directory with rt-polarity.pos/.neg, or a UCI
    `sentence<TAB>label` file."""
    path = Path(path)
    if path.is_dir() and (path / "rt-polarity.pos").is_file():
        return rdata.load_polarity(path)
    if path.is_file() and path.suffix == ".txt":
        return rdata.load_labelled_sentences(path)
    loaded = rdata.load_imdb(path)
    if isinstance(loaded, dict):
        raise ValueError(f"sentiment: {path} is an aclImdb root; pass its train/ or test/ directory")
    return loaded


def _split(items, labels, fraction, rng):
    order = rng.permutation(len(labels))
    cut = int(round(len(labels) * (1 - fraction)))
    first, second = order[:cut], order[cut:]
    return ([items[i] for i in first], labels[first]), ([items[i] for i in second], labels[second])


# ---------------------------------------------------------------------------------------------------------
# pretrained embedding

def pretrain_embedding(sequences, num_words, dim, *, max_words, epochs, seed, time_limit_s, log=print,
                       parallel=None):
    """Train a word LM (Embedding(num_words, dim) + LSTM(dim) + Dense(num_words)) on the concatenated id
    sequences and return its embedding matrix `[num_words, dim]`."""
    stream = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences if len(s)])[:max_words]
    lm = Sequential([layers.Embedding(num_words, dim),
                     layers.LSTM(dim, return_sequences=True, stateful=True, seed=seed),
                     layers.Dense(num_words)], name="imdb_word_lm")
    lm.build((None,))
    batch = 32
    cut = int(len(stream) * 0.95)
    train = rdata.batchify(stream[:cut], batch)
    valid = rdata.batchify(stream[cut:], min(batch, max(1, (len(stream) - cut) // 4)))
    log(f"pretraining a word LM on {len(stream):,} words of the training texts")
    history = train_lm(lm, train, valid, vocab_size=num_words, seq_len=20, epochs=epochs,
                       optimizer=optim.Adam(lm.parameters(), lr=3e-3), clip=5.0, time_limit_s=time_limit_s,
                       log_every=0, log=log, parallel=parallel)
    log(f"word LM: valid perplexity {math.exp(history[-1]['valid_loss']):.1f}")
    return np.array(lm.layers[0].parameters()[0].value), history


# ---------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str = "rnnext train sentiment") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="IMDB sentiment with the course's Embedding(10000, 32) + "
                                "LSTM(32) + Dense(1, sigmoid) and its variants; prints model.summary() and the "
                                "test accuracy.")
    p.add_argument("--train", metavar="PATH", help="training reviews: a label,text CSV (.csv or .csv.gz) or an "
                   "aclImdb split directory (required)")
    p.add_argument("--test", metavar="PATH", help="test reviews, same formats (default: report validation only)")
    p.add_argument("--model", choices=MODELS, default="lstm", help="variant (default: %(default)s)")
    p.add_argument("--num-words", type=int, default=10_000, help="vocabulary: the most frequent words of the "
                   "training texts, ids as keras.datasets.imdb (default: %(default)s)")
    p.add_argument("--maxlen", type=int, default=500, help="tokens kept per review (default: %(default)s)")
    p.add_argument("--truncating", choices=("pre", "post"), default="pre", help="'pre' keeps the last --maxlen "
                   "tokens (Keras' default), 'post' the first (default: %(default)s)")
    p.add_argument("--bucket", action="store_true", help="batch reviews of similar length together and pad each "
                   "batch to its own longest review, instead of padding every review to --maxlen (faster)")
    p.add_argument("--dim", type=int, default=32, help="embedding size (default: %(default)s)")
    p.add_argument("--units", type=int, default=32, help="recurrent units (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: %(default)s)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate (default: %(default)s)")
    p.add_argument("--clip", type=float, default=0.0, help="global gradient-norm clip (0: off, as the course)")
    p.add_argument("--validation-split", type=float, default=0.2, help="fraction of the training reviews held "
                   "out for validation, as the course's validation_split (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=None, help="use only N training reviews (random subset)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="stop after the epoch that "
                   "crosses this many seconds")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g = p.add_argument_group("pretrained-embedding")
    g.add_argument("--labelled", metavar="PATH", help="small labelled set for the classifier: a directory with "
                   "rt-polarity.pos/.neg, a UCI sentence<TAB>label .txt, or a CSV (default: --labelled-size "
                   "reviews drawn from --train)")
    g.add_argument("--labelled-size", type=int, default=2000, help="examples in the small labelled set when "
                   "--labelled is not given (default: %(default)s)")
    g.add_argument("--lm-words", type=int, default=500_000, help="training words for the word LM "
                   "(default: %(default)s)")
    g.add_argument("--lm-epochs", type=int, default=1, help="word LM epochs (default: %(default)s)")
    g.add_argument("--lm-time-limit", type=float, default=None, metavar="SECONDS", help="cap the LM's training time")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's default)")
    distributed.add_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny preset for CI: maxlen 50, 8 units, 2 epochs, "
                   "vocabulary 500, 20,000 LM words")
    return p


def _sequences(texts, word_index, num_words):
    return rdata.texts_to_sequences(texts, word_index, num_words, **rdata.IMDB_CONVENTION)


def run(args, log=print) -> dict:
    return distributed.run_experiment(_run, args, log)


def _run(args, log, parallel) -> dict:
    if args.train is None:
        raise ValueError("sentiment: --train PATH is required (a label,text CSV or an aclImdb split directory)")
    if args.threads:
        rnnext.set_num_threads(args.threads)
    layers.seed(args.seed)  # weights and dropout masks of layers built without seed=
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    texts, labels = load_labelled(args.train)
    if args.max_train and args.max_train < len(labels):
        keep = np.sort(rng.permutation(len(labels))[:args.max_train])
        texts, labels = [texts[i] for i in keep], labels[keep]
    word_index = rdata.build_word_index(texts, num_words=args.num_words - rdata.IMDB_CONVENTION["index_from"])
    train_seqs = _truncate(_sequences(texts, word_index, args.num_words), args.maxlen, args.truncating)
    test = None
    if args.test:
        test_texts, test_labels = load_labelled(args.test)
        test = (_truncate(_sequences(test_texts, word_index, args.num_words), args.maxlen, args.truncating),
                test_labels)
    log(f"sentiment: {len(labels):,} training reviews ({labels.mean():.0%} positive), "
        f"{len(test[1]) if test else 0:,} test reviews, vocabulary {args.num_words:,}, mean length "
        f"{np.mean([len(s) for s in train_seqs]):.0f} tokens after truncation to {args.maxlen} "
        f"(read in {time.perf_counter() - t0:.1f}s)")
    common = dict(epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed, maxlen=args.maxlen,
                  bucket=args.bucket, clip=args.clip, time_limit_s=args.time_limit, parallel=parallel)
    result = {"model_name": args.model}
    start = time.perf_counter()

    if args.model == "pretrained-embedding":
        weights, lm_history = pretrain_embedding(train_seqs, args.num_words, args.dim, max_words=args.lm_words,
                                                 epochs=args.lm_epochs, seed=args.seed,
                                                 time_limit_s=args.lm_time_limit, log=log, parallel=parallel)
        result["lm_valid_ppl"] = math.exp(lm_history[-1]["valid_loss"])
        if args.labelled:
            small_texts, small_labels = load_labelled(args.labelled)
            small = (_truncate(_sequences(small_texts, word_index, args.num_words), args.maxlen, args.truncating),
                     small_labels)
        else:
            pick = rng.permutation(len(labels))[:args.labelled_size]
            small = ([train_seqs[i] for i in pick], labels[pick])
        if test is None:
            small, test = _split(small[0], small[1], 0.2, rng)
        log(f"small labelled set: {len(small[1]):,} examples; evaluated on {len(test[1]):,}")
        for name, pretrained in (("pretrained frozen embedding", True), ("from scratch", False)):
            model = build_model("lstm", args.num_words, args.dim, args.units, seed=args.seed,
                                embedding_weights=weights if pretrained else None, freeze_embedding=pretrained)
            log(f"--- {name} ---")
            if distributed.is_root(parallel):
                model.summary()
            history = fit_classifier(model, small[0], small[1], valid=None, **common)
            loss, accuracy = evaluate(model, *test)
            log(f"{name}: test accuracy {accuracy:.4f} (loss {loss:.4f})")
            result[name] = {"test_acc": accuracy, "test_loss": loss, "history": history}
        result["wall_time_s"] = time.perf_counter() - start
        return result

    valid = None
    train_part = (train_seqs, labels)
    if args.validation_split:
        train_part, valid = _split(train_seqs, labels, args.validation_split, rng)
    model = build_model(args.model, args.num_words, args.dim, args.units, seed=args.seed)
    if distributed.is_root(parallel):
        model.summary()
    history = fit_classifier(model, train_part[0], train_part[1], valid=valid, **common)
    result.update(history=history, train_time_s=time.perf_counter() - start, model=model)
    if test is not None:
        result["test_loss"], result["test_acc"] = evaluate(model, *test)
        log(f"test accuracy {result['test_acc']:.4f} (loss {result['test_loss']:.4f}) on {len(test[1]):,} reviews; "
            f"training {result['train_time_s']:.0f}s")
    return result


def parse_args(argv=None, parser=None) -> argparse.Namespace:
    """Parse `argv` and apply the --quick preset."""
    args = (parser or build_parser()).parse_args(argv)
    if args.quick:
        args.maxlen, args.units, args.dim, args.epochs, args.num_words = 50, 8, 8, 2, 500
        args.lm_words, args.labelled_size, args.batch = 20_000, min(args.labelled_size, 200), 32
    return args


def main(argv=None) -> int:
    """`rnnext train sentiment --train PATH [--test PATH] [options]`; returns the exit status."""
    parser = build_parser()
    args = parse_args(argv, parser)
    if args.train is None:
        parser.error("--train PATH is required (a label,text CSV, .csv.gz, or an aclImdb split directory)")
    run(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
