"""Tiny end-to-end runs of the char-lm, word-lm and sentiment experiments: the loss must fall, checkpoints must
generate and resume exactly (the experiments train through rnnext.train.fit), and the command-line entry points
must accept their --quick presets."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from rnnext import data as rdata
from rnnext.experiments import char_lm, sentiment, word_lm
from rnnext.models import load_checkpoint
from rnnext.optim import RMSprop

from conftest import SHARED_DATA, shared_data, weights, write_tiny_ptb, write_tiny_reviews


def quiet(*args, **kwargs):
    pass


def char_args(**overrides):
    args = char_lm.build_parser().parse_args([])
    args.max_chars, args.layers, args.hidden, args.seq_len, args.batch = 6000, 1, 32, 16, 8
    args.epochs, args.log_every, args.sample_length, args.lr = 3, 0, 0, 1e-2
    args.decay_after = 100
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# ---------------------------------------------------------------------------------------------------------
# char-lm

def test_builtin_corpus_is_deterministic_and_capped():
    first, second = char_lm.builtin_corpus(5000), char_lm.builtin_corpus(5000)
    assert first == second
    assert len(first) == 5000
    assert "import" in char_lm.builtin_corpus(200_000)


def test_char_lm_loss_falls_on_builtin_corpus():
    result = char_lm.run(char_args(), log=quiet)
    history = result["history"]
    assert len(history) == 3
    # uniform guessing over the vocabulary costs log(V) nats; three short epochs must beat it clearly
    assert history[-1]["valid_loss"] < history[0]["valid_loss"], [h["valid_loss"] for h in history]
    assert history[-1]["valid_loss"] < 0.8 * np.log(result["vocab_size"])
    assert result["valid_bpc"] == pytest.approx(result["valid_loss"] / np.log(2))


def test_char_lm_text_file_with_bom_crlf_and_embedding(tmp_path):
    path = tmp_path / "abc.txt"
    text = "the cat sat on the mat. " * 200
    path.write_bytes(b"\xef\xbb\xbf" + text.replace(". ", ".\r\n").encode("utf-8"))
    result = char_lm.run(char_args(data=str(path), embedding=8, cell="gru", epochs=4), log=quiet)
    assert "\ufeff" not in result["vocab"] and "\r" not in result["vocab"]
    losses = [h["valid_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] and losses[-1] < 1.5, losses


def test_char_lm_checkpoint_generate_and_resume(tmp_path, capsys):
    checkpoint = tmp_path / "char.npz"
    result = char_lm.run(char_args(epochs=1, checkpoint=str(checkpoint), cell="lstm"), log=quiet)
    assert checkpoint.is_file()
    vocab = result["vocab"]

    argv = [str(checkpoint), "--prime", "def ", "--length", "120", "--temperature", "0.8", "--seed", "3"]
    capsys.readouterr()  # drop the training run's summary
    assert char_lm.generate_main(argv) == 0
    first = capsys.readouterr().out
    assert char_lm.generate_main(argv) == 0
    assert capsys.readouterr().out == first, "same seed, same text"
    sample = first[len("def "):-1]  # prime printed first, newline last
    assert first.startswith("def ") and len(sample) == 120
    assert set(sample) <= set(vocab.tokens)

    # step() generation agrees with the sequence forward: each greedy character is the forward's argmax
    model = result["model"]
    greedy = char_lm.generate(model, vocab, 20, prime="def ", temperature=0.0)
    ids = vocab.encode("def " + greedy)[None, :]
    model.eval()
    model.reset_states()
    logits = model.forward(char_lm.model_inputs(model, ids, len(vocab)))
    model.reset_states()
    model.train()
    assert "".join(vocab.decode(logits[0, 3:-1].argmax(-1))) == greedy

    resumed = char_lm.run(char_args(epochs=2, resume=str(checkpoint), checkpoint=str(checkpoint)), log=quiet)
    # fit's checkpoint holds the history: the resumed run reports epoch 1 as trained before, then epoch 2
    assert [h["epoch"] for h in resumed["history"]] == [1, 2], "resumes after the saved epoch"
    assert resumed["history"][0]["valid_loss"] == result["history"][0]["valid_loss"]


def test_char_lm_generate_rejects_unknown_prime(tmp_path):
    checkpoint = tmp_path / "char.npz"
    char_lm.run(char_args(epochs=1, checkpoint=str(checkpoint), max_chars=3000), log=quiet)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        char_lm.generate_main([str(checkpoint), "--prime", "\u2603", "--length", "5"])


def test_char_lm_main_quick(capsys):
    assert char_lm.main(["--quick", "--sample-length", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and "sample" in out


# ---------------------------------------------------------------------------------------------------------
# char-lm trains through rnnext.train.fit: exact resume, checkpoints written before that, time limit, NaN guard

def test_char_lm_resume_is_exact(tmp_path):
    """One epoch, then a resumed second one, gives the very weights of two epochs in one go (dropout and the
    lr schedule included)."""
    options = dict(dropout=0.1, embedding=8, lr_decay=0.5, decay_after=1, seed=5)
    straight = char_lm.run(char_args(epochs=2, **options), log=quiet)
    checkpoint = str(tmp_path / "c.npz")
    char_lm.run(char_args(epochs=1, checkpoint=checkpoint, **options), log=quiet)
    resumed = char_lm.run(char_args(epochs=2, resume=checkpoint, checkpoint=checkpoint, **options), log=quiet)
    expected, got = weights(straight["model"]), weights(resumed["model"])
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in straight["history"]] == [1e-2, 5e-3]
    assert resumed["history"][-1]["valid_loss"] == straight["history"][-1]["valid_loss"]


def test_char_lm_checkpoint_written_before_fit_still_resumes(tmp_path):
    """A checkpoint in the format char-lm wrote before it trained through fit (epoch and batch in the metadata,
    no training state) continues at its epoch with its weights and optimizer state."""
    checkpoint = tmp_path / "new.npz"
    first = char_lm.run(char_args(epochs=1, checkpoint=str(checkpoint)), log=quiet)
    loaded = load_checkpoint(checkpoint)
    old = tmp_path / "old.npz"
    metadata = {key: loaded.metadata[key] for key in ("experiment", "vocab", "args")}
    optimizer = RMSprop(first["model"].parameters(), lr=1e-2, alpha=0.95)
    optimizer.load_state_dict(loaded.optimizer_state)
    first["model"].save(old, optimizer=optimizer,
                        metadata={**metadata, "epoch": 1, "batch": 0, "history": first["history"]})
    resumed = char_lm.run(char_args(epochs=2, resume=str(old)), log=quiet)
    assert [h["epoch"] for h in resumed["history"]] == [2]
    assert resumed["history"][0]["lr"] == 1e-2


def test_char_lm_time_limit_cuts_the_epoch(tmp_path):
    """A limit of 0 s is reached after the first step on any machine: that epoch is validated and reported
    with the fraction of it that was trained, and its checkpoint continues it."""
    lines = []
    checkpoint = str(tmp_path / "t.npz")
    result = char_lm.run(char_args(epochs=2, time_limit=0.0, checkpoint=checkpoint), log=lines.append)
    history = result["history"]
    windows = len(list(rdata.lm_batches(np.zeros((8, 5700 // 8)), 16)))
    assert len(history) == 1 and history[0]["fraction"] == round(1 / windows, 4)
    assert np.isfinite(history[0]["valid_loss"])
    assert any("time limit of 0s reached during epoch 1" in line for line in lines)
    resumed = char_lm.run(char_args(epochs=1, resume=checkpoint), log=quiet)
    assert [h["epoch"] for h in resumed["history"]] == [1, 1] and resumed["history"][1]["fraction"] == 1.0


def test_char_lm_nan_guard_reaches_the_experiment(monkeypatch):
    """fit's guard: a non-finite loss (here the third step's, made so) stops the run with the step named."""
    calls = {"n": 0}
    real_loss = char_lm.softmax_cross_entropy

    def loss_that_breaks(logits, targets, **options):
        calls["n"] += 1
        loss, grad = real_loss(logits, targets, **options)
        return (float("nan") if calls["n"] == 3 else loss), grad

    monkeypatch.setattr(char_lm, "softmax_cross_entropy", loss_that_breaks)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 1, step 3 of the epoch"):
        char_lm.run(char_args(epochs=1), log=quiet)


# ---------------------------------------------------------------------------------------------------------
# word-lm

def test_word_lm_loss_falls_on_tiny_ptb(tmp_path):
    args = word_lm.parse_args(["--data", str(write_tiny_ptb(tmp_path)), "--quick"])
    args.max_words, args.epochs, args.hidden, args.batch, args.lr = None, 6, 32, 8, 1.0
    result = word_lm.run(args, log=quiet)
    ppl = [h["valid_ppl"] for h in result["history"]]
    # 15 types: uniform guessing is perplexity 15; the grammar's own perplexity is exp(ln 48 / 7) = 1.7
    assert ppl[-1] < ppl[0] and ppl[-1] < 6, ppl
    assert [round(h["lr"], 6) for h in result["history"]] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]
    assert np.isfinite(result["test_ppl"]) and result["test_ppl"] < 6


def test_word_lm_learning_rate_schedule_and_init(tmp_path):
    model = word_lm.build_model(50, hidden=8, num_layers=2, seed=0)
    for param in model.parameters():
        assert np.abs(param.value).max() <= 0.1
    args = word_lm.parse_args(["--data", str(write_tiny_ptb(tmp_path)), "--quick"])
    args.epochs, args.decay_after = 3, 1
    result = word_lm.run(args, log=quiet)
    assert [h["lr"] for h in result["history"]] == pytest.approx([1.0, 0.5, 0.25])


def test_word_lm_main_requires_data():
    with pytest.raises(SystemExit):
        word_lm.main(["--quick"])


# ---------------------------------------------------------------------------------------------------------
# sentiment

def sentiment_args(train, test, **overrides):
    args = sentiment.parse_args(["--train", str(train), "--test", str(test), "--quick"])
    args.maxlen, args.units, args.dim, args.epochs, args.num_words, args.batch = 40, 8, 8, 6, 100, 16
    args.lr, args.lm_words, args.labelled_size = 1e-2, 5000, 120
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.fixture(scope="module")
def tiny_reviews(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reviews")
    return write_tiny_reviews(directory / "train.csv", 320, 0), write_tiny_reviews(directory / "test.csv", 100, 1)


@pytest.mark.parametrize("kind", ["lstm", "simple-rnn"])
def test_sentiment_learns_tiny_reviews(tiny_reviews, kind, capsys):
    result = sentiment.run(sentiment_args(*tiny_reviews, model=kind), log=print)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0], losses
    assert result["test_acc"] >= 0.8, result["test_acc"]
    out = capsys.readouterr().out
    assert "Dense" in out and " 9" in out  # Dense(1) on 8 units: 9 parameters


@pytest.mark.parametrize("kind", ["lstm-dropout", "stacked-lstm", "bilstm"])
def test_sentiment_variants_run_with_buckets(tiny_reviews, kind):
    result = sentiment.run(sentiment_args(*tiny_reviews, model=kind, epochs=2, bucket=True, truncating="post"),
                           log=quiet)
    assert len(result["history"]) == 2 and 0 <= result["test_acc"] <= 1
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"] + 0.05


def test_sentiment_course_model_has_the_course_parameter_counts():
    model = sentiment.build_model("lstm")
    counts = [layer.count_params() for layer in model.layers]
    assert counts == [320_000, 8_320, 33]  # Embedding(10000, 32), LSTM(32), Dense(1)
    simple = sentiment.build_model("simple-rnn")
    assert [layer.count_params() for layer in simple.layers] == [320_000, 2_080, 33]


def test_sentiment_pretrained_embedding(tiny_reviews):
    result = sentiment.run(sentiment_args(*tiny_reviews, model="pretrained-embedding", epochs=3), log=quiet)
    for name in ("pretrained frozen embedding", "from scratch"):
        assert 0 <= result[name]["test_acc"] <= 1
    assert np.isfinite(result["lm_valid_ppl"])


def test_sentiment_on_real_imdb_subset():
    subset = shared_data("sentiment/imdb_train_subset.csv")
    args = sentiment_args(subset, SHARED_DATA / "sentiment" / "imdb_test_subset.csv", max_train=400, epochs=2,
                          num_words=2000, maxlen=100, units=8, bucket=True, validation_split=0.0, lr=5e-3)
    result = sentiment.run(args, log=quiet)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0], losses
    assert 0.4 <= result["test_acc"] <= 1


def test_parsers_document_every_option():
    for parser in (char_lm.build_parser(), char_lm.build_generate_parser(), word_lm.build_parser(),
                   sentiment.build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


def test_sentiment_lstm_dropout_is_the_course_keras_layer():
    """The course's LSTM(32, dropout=0.2): Keras's per-sequence input mask, no extra layers or parameters."""
    model = sentiment.build_model("lstm-dropout")
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "LSTM", "Dense"]
    assert model.layers[1].dropout == 0.2 and model.layers[1].recurrent_dropout == 0.0
    assert [layer.count_params() for layer in model.layers] == [320_000, 8_320, 33]


@pytest.mark.parametrize("flags", [["--dropout", "0.2", "--recurrent-dropout", "0.2"], ["--weight-drop", "0.3"],
                                   ["--zoneout", "0.1", "0.05"], ["--zaremba-dropout", "0.3"]])
def test_word_lm_regularisation_flags(tmp_path, flags):
    args = word_lm.parse_args(["--data", str(write_tiny_ptb(tmp_path)), "--quick", *flags])
    args.epochs, args.max_words = 3, None
    result = word_lm.run(args, log=quiet)
    lstm = result["model"].layers[2 if "--zaremba-dropout" in flags else 1]
    expected = dict(word_lm.regularisers(args))
    assert {key: getattr(lstm, key) for key in expected} == expected
    ppl = [h["valid_ppl"] for h in result["history"]]
    assert ppl[-1] < ppl[0] and np.isfinite(result["test_ppl"]), ppl
