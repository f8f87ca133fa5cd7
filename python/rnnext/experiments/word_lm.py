"""Word-level language model on Penn Treebank: the "small" configuration of Zaremba, Sutskever & Vinyals (2014).

Embedding(10000, 200) + LSTM(200, 2 layers, stateful) + Dense(10000) applied at every step, trained with
SGD (lr 1, halved every epoch after the 4th), global-norm clipping at 5, weights uniform in [-0.1, 0.1],
20-step truncated BPTT over 20 streams, 13 epochs. The loss is summed over the 20 steps and averaged over
the batch, as in the paper's code, which is what makes lr = 1 the right size. The paper: test perplexity 114.5.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import rnnext

from .. import data as rdata
from .. import distributed, layers, optim
from ..models import Sequential
from .char_lm import ResumePoint, evaluate_lm, train_lm

__all__ = ["main", "build_parser", "parse_args", "build_model", "run"]


def build_model(vocab_size: int = 10_000, hidden: int = 200, num_layers: int = 2, zaremba_dropout: float = 0.0,
                init_scale: float = 0.1, seed=None, **lstm_options):
    """The Zaremba model; every weight (biases and the embedding too) drawn from uniform(-init_scale, init_scale).

    zaremba_dropout: Zaremba et al.'s, a fresh mask per element and step on the non-recurrent connections (the
    embedding's outputs, between the LSTM layers, before the softmax). lstm_options: the LSTM's own regularisers
    (dropout, recurrent_dropout, weight_drop, zoneout, layer_norm: docs/api.md), e.g. build_model(...,
    weight_drop=0.3). With layer_norm=True the normalisations' gains and shifts keep their start (1 and 0): a
    normalisation with gains near zero would switch its signal off."""
    stack = [layers.Embedding(vocab_size, hidden)]
    if zaremba_dropout:
        stack.append(layers.Dropout(zaremba_dropout))
    stack.append(layers.LSTM(hidden, num_layers=num_layers, layer_dropout=zaremba_dropout, return_sequences=True,
                             stateful=True, seed=seed, **lstm_options))
    if zaremba_dropout:
        stack.append(layers.Dropout(zaremba_dropout))
    stack.append(layers.Dense(vocab_size))
    model = Sequential(stack, name="ptb_lm")
    model.build((None,))
    if init_scale:
        rng = np.random.default_rng(seed)
        for name, param in model.named_parameters():
            if ".ln_" not in name:  # "<layer>.[l0.forward.]ln_..."
                param.value[...] = rng.uniform(-init_scale, init_scale, size=param.shape)
    return model


def build_parser(prog: str = "rnnext train word-lm") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Word-level LSTM language model on Penn Treebank with the "
                                "'small' configuration of Zaremba et al. 2014 (test perplexity 114.5 in the paper).")
    p.add_argument("--data", metavar="DIR", required=False, help="directory holding ptb.train.txt, ptb.valid.txt "
                   "and ptb.test.txt (required)")
    p.add_argument("--hidden", type=int, default=200, help="embedding size and LSTM units (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="stacked LSTM layers (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=20, help="BPTT steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=20, help="parallel streams (default: %(default)s)")
    p.add_argument("--eval-batch", type=int, default=10, help="streams for validation and test (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=13, help="epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (default: %(default)s)")
    p.add_argument("--lr-decay", type=float, default=0.5, help="lr factor per epoch after --decay-after "
                   "(default: %(default)s)")
    p.add_argument("--decay-after", type=int, default=4, help="epochs at the full lr (default: %(default)s)")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip (default: %(default)s)")
    p.add_argument("--init-scale", type=float, default=0.1, help="weights uniform in [-s, s] (default: %(default)s)")
    # -- regularisation (issue 15): Zaremba's dropout, and the LSTM's own masks (docs/api.md)
    p.add_argument("--zaremba-dropout", type=float, default=0.0, metavar="P", help="Zaremba et al.'s dropout on the "
                   "non-recurrent connections, a fresh mask per step (the paper's medium model uses 0.5; this flag "
                   "was --dropout before the LSTM's own masks existed) (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="P", help="the LSTM's dropout as Keras means it: one "
                   "mask per sequence (per BPTT chunk) on every LSTM layer's inputs (default: %(default)s)")
    p.add_argument("--recurrent-dropout", type=float, default=0.0, metavar="P", help="one mask per sequence on h "
                   "where it enters the recurrent product (default: %(default)s)")
    p.add_argument("--weight-drop", type=float, default=0.0, metavar="P", help="DropConnect on the recurrent "
                   "kernel, one mask per batch (AWD-LSTM) (default: %(default)s)")
    p.add_argument("--zoneout", type=float, nargs="+", default=[0.0], metavar="Z", help="zoneout rate of h and c, "
                   "or two rates: h, c (default: 0)")
    # --
    p.add_argument("--vocab-size", type=int, default=10_000, help="largest vocabulary, <unk> included "
                   "(default: %(default)s, all of PTB)")
    p.add_argument("--max-words", type=int, default=None, help="use only the first N training words (for quick runs)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="stop training after this many "
                   "seconds; the last epoch is cut short, then validated and tested")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--checkpoint", metavar="PATH", help="save model, vocabulary and optimizer state here every epoch")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--resume", metavar="PATH", help="continue from this checkpoint")
    p.add_argument("--log-every", type=int, default=200, help="print the training loss every N steps (0: never)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's default)")
    # -- issue 15: the regularising and normalising variants of the LSTM
    p.add_argument("--layer-norm", action="store_true", help="layer-normalised LSTM (LSTM(layer_norm=True))")
    distributed.add_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny preset for CI: 2,000 training words, 32 units, "
                   "vocabulary 200, 2 epochs")
    return p


def regularisers(args) -> dict:
    """The LSTM options of the regularisation flags."""
    if len(args.zoneout) not in (1, 2):
        raise ValueError(f"word-lm: --zoneout takes one rate or two (h, c), got {len(args.zoneout)}")
    zoneout = args.zoneout[0] if len(args.zoneout) == 1 else tuple(args.zoneout)
    return dict(dropout=args.dropout, recurrent_dropout=args.recurrent_dropout, weight_drop=args.weight_drop,
                zoneout=zoneout)


def run(args, log=print) -> dict:
    return distributed.run_experiment(_run, args, log)


def _run(args, log, parallel) -> dict:
    if args.data is None:
        raise ValueError("word-lm: --data DIR is required (a directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt)")
    if args.threads:
        rnnext.set_num_threads(args.threads)
    layers.seed(args.seed)  # weights and dropout masks of layers built without seed=
    t0 = time.perf_counter()
    splits = rdata.load_ptb(args.data)
    train_words = splits["train"][:args.max_words] if args.max_words else splits["train"]

    point = ResumePoint(args.resume)
    if args.resume:
        model, vocab = point.model, rdata.Vocabulary.from_dict(point.metadata["vocab"])
    else:
        vocab = rdata.Vocabulary.build(train_words, max_size=args.vocab_size, specials=("<unk>",))
        model = build_model(len(vocab), args.hidden, args.layers, args.zaremba_dropout, args.init_scale,
                            seed=args.seed, layer_norm=args.layer_norm, **regularisers(args))
    train = rdata.batchify(vocab.encode(train_words), args.batch)
    valid = rdata.batchify(vocab.encode(splits["valid"]), args.eval_batch)
    test = rdata.batchify(vocab.encode(splits["test"]), args.eval_batch)
    log(f"word-lm: PTB {args.data}: train {len(train_words):,} words, valid {len(splits['valid']):,}, "
        f"test {len(splits['test']):,}, vocabulary {len(vocab):,} (read in {time.perf_counter() - t0:.1f}s)")
    if distributed.is_root(parallel):
        model.summary()
    optimizer = optim.SGD(model.parameters(), lr=args.lr)
    point.restore_optimizer(optimizer)

    start = time.perf_counter()
    history = train_lm(model, train, valid, vocab_size=len(vocab), seq_len=args.seq_len, epochs=args.epochs,
                       optimizer=optimizer, clip=args.clip,
                       lr_factor=lambda epoch: args.lr_decay ** max(0, epoch + 1 - args.decay_after),
                       loss_scale="batch", time_limit_s=args.time_limit, log_every=args.log_every,
                       checkpoint_path=args.checkpoint, checkpoint_every=args.checkpoint_every,
                       metadata={"experiment": "word-lm", "vocab": vocab.to_dict(), "args": vars(args)}, log=log,
                       parallel=parallel, **point.train_lm_options)
    train_time = time.perf_counter() - start
    test_loss = evaluate_lm(model, test, args.seq_len, len(vocab), parallel)
    for record in history:
        record["train_ppl"] = math.exp(record["train_loss"])
        record["valid_ppl"] = math.exp(record["valid_loss"])
        log(f"epoch {record['epoch']} ({record['fraction']:.0%}): lr {record['lr']:.3g}  train ppl "
            f"{record['train_ppl']:.2f}  valid ppl {record['valid_ppl']:.2f}  {record['epoch_time_s']:.0f}s")
    result = {"history": history, "test_loss": test_loss, "test_ppl": math.exp(test_loss),
              "train_time_s": train_time, "wall_time_s": time.perf_counter() - t0, "model": model, "vocab": vocab}
    if history:
        result["valid_ppl"] = history[-1]["valid_ppl"]
    log(f"test perplexity {result['test_ppl']:.2f} (paper, small, 13 epochs: 114.5); training {train_time:.0f}s, "
        f"wall time {result['wall_time_s']:.0f}s")
    return result


def parse_args(argv=None, parser=None) -> argparse.Namespace:
    """Parse `argv` and apply the --quick preset."""
    args = (parser or build_parser()).parse_args(argv)
    if args.quick:
        args.max_words = args.max_words or 2_000
        args.hidden, args.vocab_size, args.epochs, args.log_every = 32, 200, 2, 0
        args.batch, args.eval_batch, args.seq_len = 4, 2, 10
    return args


def main(argv=None) -> int:
    """`rnnext train word-lm --data DIR [options]`; returns the exit status."""
    parser = build_parser()
    args = parse_args(argv, parser)
    if args.data is None:
        parser.error("--data DIR is required (a directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt)")
    run(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
