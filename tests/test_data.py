"""Tests for rnnext.data: synthetic cases written to tmp_path, then the real corpora in shared/data when present."""
from __future__ import annotations

import csv
import gzip
import json
import math

from pathlib import Path

import numpy as np
import pytest

from rnnext.data import (
    IMDB_CONVENTION, BucketIterator, Vocabulary, batchify, build_word_index, echo_batches, echo_data,
    echo_epochs, echo_reference_losses, iter_text_chunks, lm_batches, load_imdb, load_labelled_sentences,
    load_polarity, load_ptb, pad_sequences, read_text, texts_to_sequences, tokenize,
)

from conftest import shared_data


# ---------------------------------------------------------------------------------------------------------
# echo data

def test_echo_data_is_binary_reproducible_and_int():
    X, Y = echo_data(1000, seed=3)
    assert X.shape == Y.shape == (1000,)
    assert X.dtype == Y.dtype == np.int64
    assert set(np.unique(X)) <= {0, 1} and set(np.unique(Y)) <= {0, 1}
    X2, Y2 = echo_data(1000, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)


def test_echo_data_conditional_probabilities_match_the_spec():
    X, Y = echo_data(200_000, seed=0)
    lag3, lag8 = np.roll(X, 3), np.roll(X, 8)  # r2rt's wrap-around at the start
    assert abs(X.mean() - 0.5) < 0.01
    for a in (0, 1):
        for b in (0, 1):
            expected = 0.5 + 0.5 * a - 0.25 * b
            empirical = Y[(lag3 == a) & (lag8 == b)].mean()
            assert abs(empirical - expected) < 0.01, \
                f"P(Y=1 | X[t-3]={a}, X[t-8]={b}) = {empirical}, expected {expected}"


def _entropy(p):
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def test_echo_reference_losses_exact():
    losses = echo_reference_losses()
    # r2rt's published values; the exact "t-3 and t-8" value is 0.454454..., which r2rt quotes as 0.4544
    assert losses["none"] == pytest.approx(0.6616, abs=1e-4)
    assert losses["t-3"] == pytest.approx(0.5192, abs=1e-4)
    assert losses["t-3 and t-8"] == pytest.approx(0.4544, abs=1e-4)
    # closed forms: the marginal P(Y=1) = 0.625; given X[t-3] it is 0.875 or 0.375; given both 1, .75, .5, .25
    assert losses["none"] == pytest.approx(_entropy(0.625), abs=1e-15)
    assert losses["t-3"] == pytest.approx((_entropy(0.875) + _entropy(0.375)) / 2, abs=1e-15)
    assert losses["t-3 and t-8"] == pytest.approx((2 * _entropy(0.75) + _entropy(0.5)) / 4, abs=1e-15)


def test_echo_reference_losses_match_empirical_cross_entropy():
    X, Y = echo_data(200_000, seed=1)
    p = 0.5 + 0.5 * np.roll(X, 3) - 0.25 * np.roll(X, 8)
    eps = 1e-12
    empirical = -np.mean(Y * np.log(p + eps) + (1 - Y) * np.log(1 - p + eps))
    assert empirical == pytest.approx(echo_reference_losses()["t-3 and t-8"], abs=0.01)


def test_echo_batches_carry_state_across_windows():
    X, Y = np.arange(103), np.arange(103) + 1000
    windows = list(echo_batches(X, Y, batch_size=4, num_steps=6))
    assert len(windows) == (103 // 4) // 6  # rows of 25 steps -> 4 full windows, the partial one is dropped
    for x, y in windows:
        assert x.shape == y.shape == (4, 6)
    rows_x = np.concatenate([x for x, _ in windows], axis=1)
    rows_y = np.concatenate([y for _, y in windows], axis=1)
    expected = np.arange(100).reshape(4, 25)[:, :24]  # row i = contiguous chunk i
    np.testing.assert_array_equal(rows_x, expected)
    np.testing.assert_array_equal(rows_y, expected + 1000)


def test_echo_batches_errors():
    with pytest.raises(ValueError, match="num_steps"):
        echo_batches(np.zeros(10), np.zeros(10), batch_size=2, num_steps=6)
    with pytest.raises(ValueError, match="equal length"):
        echo_batches(np.zeros(10), np.zeros(9), batch_size=2, num_steps=2)
    with pytest.raises(ValueError, match="batch_size"):
        echo_batches(np.zeros(10), np.zeros(10), batch_size=0, num_steps=2)


def test_echo_epochs_draw_fresh_reproducible_data():
    def collect(seed):
        return [[x.copy() for x, _ in epoch] for epoch in echo_epochs(3, 200, batch_size=5, num_steps=10, seed=seed)]

    run = collect(7)
    assert len(run) == 3 and all(len(epoch) == 4 for epoch in run)
    assert not np.array_equal(run[0][0], run[1][0])
    again = collect(7)
    for epoch, epoch_again in zip(run, again):
        for x, x_again in zip(epoch, epoch_again):
            np.testing.assert_array_equal(x, x_again)


# ---------------------------------------------------------------------------------------------------------
# vocabulary

def test_vocabulary_build_orders_specials_then_frequency_then_first_appearance():
    tokens = "b a c a b d a".split()  # a:3, b:2, c:1, d:1 (c seen before d)
    vocab = Vocabulary.build(tokens)
    assert vocab.tokens == ["<unk>", "a", "b", "c", "d"]
    assert Vocabulary.build(tokens, order="sorted", specials=()).tokens == ["a", "b", "c", "d"]
    assert Vocabulary.build(tokens, min_freq=2).tokens == ["<unk>", "a", "b"]
    assert Vocabulary.build(tokens, max_size=3).tokens == ["<unk>", "a", "b"]
    assert Vocabulary.build(tokens, specials=("<pad>", "<unk>")).tokens == ["<pad>", "<unk>", "a", "b", "c", "d"]
    # a special that also occurs in the data is kept once
    assert Vocabulary.build(["<unk>", "x", "<unk>"]).tokens == ["<unk>", "x"]


def test_vocabulary_encode_decode_and_lookup():
    vocab = Vocabulary.build("the cat the dog".split())
    ids = vocab.encode(["the", "dog", "bird"])
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [1, 3, 0])
    assert vocab.decode(ids) == ["the", "dog", "<unk>"]
    assert len(vocab) == 4 and "cat" in vocab and "bird" not in vocab
    assert vocab.token_to_id("cat") == 2 and vocab.id_to_token(2) == "cat"
    with pytest.raises(KeyError, match="bird"):
        vocab.token_to_id("bird")
    with pytest.raises(IndexError, match="4"):
        vocab.id_to_token(4)
    with pytest.raises(IndexError, match="-1"):
        vocab.decode([0, -1])


def test_vocabulary_without_unk_raises_naming_the_token():
    vocab = Vocabulary.build("a b".split(), specials=())
    with pytest.raises(KeyError, match="'z'"):
        vocab.encode(["a", "z"])


def test_vocabulary_round_trips_through_json():
    vocab = Vocabulary.build("x y y z".split(), specials=("<pad>", "<unk>"))
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    np.testing.assert_array_equal(restored.encode(["y", "q"]), vocab.encode(["y", "q"]))
    with pytest.raises(ValueError, match="tokens"):
        Vocabulary.from_dict({"ids": []})
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(["a", "a"])


def test_vocabulary_from_text_is_sorted_characters():
    vocab = Vocabulary.from_text("hello\n")
    assert vocab.tokens == ["\n", "e", "h", "l", "o"]
    assert "".join(vocab.decode(vocab.encode("hole"))) == "hole"


# ---------------------------------------------------------------------------------------------------------
# language-model batches

def test_batchify_rows_are_contiguous_chunks():
    data = batchify(np.arange(23), 4)
    np.testing.assert_array_equal(data, np.arange(20).reshape(4, 5))
    with pytest.raises(ValueError, match="1-D"):
        batchify(np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="cannot fill"):
        batchify(np.arange(3), 4)


def test_lm_batches_shift_targets_and_keep_a_short_last_window():
    data = np.arange(24).reshape(2, 12)  # 11 targets per row
    windows = list(lm_batches(data, 4))
    assert [x.shape for x, _ in windows] == [(2, 4), (2, 4), (2, 3)]
    for x, y in windows:
        np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in windows], axis=1), data[:, :-1])
    dropped = list(lm_batches(data, 4, drop_last=True))
    assert [x.shape for x, _ in dropped] == [(2, 4), (2, 4)]
    with pytest.raises(ValueError, match="2-D"):
        lm_batches(np.arange(5), 2)
    with pytest.raises(ValueError, match="num_steps"):
        lm_batches(data, 0)


# ---------------------------------------------------------------------------------------------------------
# padding and bucketing

SEQS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], []]


@pytest.mark.parametrize("padding, truncating, expected", [
    ("pre", "pre", [[0, 1, 2, 3], [0, 0, 4, 5], [7, 8, 9, 10], [0, 0, 0, 0]]),
    ("pre", "post", [[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9], [0, 0, 0, 0]]),
    ("post", "pre", [[1, 2, 3, 0], [4, 5, 0, 0], [7, 8, 9, 10], [0, 0, 0, 0]]),
    ("post", "post", [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9], [0, 0, 0, 0]]),
])
def test_pad_sequences_matches_keras(padding, truncating, expected):
    x = pad_sequences(SEQS, maxlen=4, padding=padding, truncating=truncating)
    assert x.dtype == np.int32
    np.testing.assert_array_equal(x, expected)


def test_pad_sequences_defaults_value_dtype_and_lengths():
    np.testing.assert_array_equal(pad_sequences([[1], [2, 3]]), [[0, 1], [2, 3]])
    x = pad_sequences([[1.5], [2.5, 3.5]], dtype="float32", padding="post", value=-1.0)
    np.testing.assert_array_equal(x, np.array([[1.5, -1.0], [2.5, 3.5]], dtype=np.float32))
    x, lengths = pad_sequences(SEQS, maxlen=4, padding="post", return_lengths=True)
    np.testing.assert_array_equal(lengths, [3, 2, 4, 0])
    assert lengths.dtype == np.int64
    features = pad_sequences([np.ones((2, 3)), np.ones((1, 3))], dtype="float64", padding="post")
    assert features.shape == (2, 2, 3) and features[1, 1].sum() == 0


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="padding"):
        pad_sequences(SEQS, padding="middle")
    with pytest.raises(ValueError, match="truncating"):
        pad_sequences(SEQS, truncating="both")
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_sequences([[1, 2], 3])
    with pytest.raises(ValueError, match=r"sequences\[1\] has steps of shape"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])


def _random_sequences(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 50, size=rng.integers(1, 40)) for _ in range(n)]


@pytest.mark.parametrize("buckets", [{"bucket_width": 5}, {"num_buckets": 4}])
def test_bucket_iterator_covers_every_example_once_with_correct_lengths(buckets):
    sequences = _random_sequences(103, seed=0)
    iterator = BucketIterator(sequences, np.arange(103), batch_size=8, seed=1, **buckets)
    seen = []
    for x, lengths, labels in iterator:
        assert x.shape == (len(labels), lengths.max())
        for row, i in enumerate(labels):
            assert lengths[row] == len(sequences[i])
            np.testing.assert_array_equal(x[row, :lengths[row]], sequences[i])
            assert not x[row, lengths[row]:].any()  # padded after the end with 0
        if "bucket_width" in buckets:
            assert len(set(lengths // 5)) == 1
        seen.extend(labels.tolist())
    assert sorted(seen) == list(range(103))
    assert len(iterator) == sum(1 for _ in iterator)


def test_bucket_iterator_shuffles_reproducibly_and_sorts_without_shuffle():
    sequences = _random_sequences(50, seed=2)

    def order(**kwargs):
        return [labels.tolist() for _, _, labels in BucketIterator(sequences, np.arange(50), 6, num_buckets=3,
                                                                     **kwargs)]

    assert order(seed=5) == order(seed=5)
    assert order(seed=5) != order(seed=6)
    plain = [i for batch in order(shuffle=False) for i in batch]
    assert [len(sequences[i]) for i in plain] == sorted(len(s) for s in sequences)
    iterator = BucketIterator(sequences, np.arange(50), 6, num_buckets=3, seed=5)
    assert [b[2].tolist() for b in iterator] != [b[2].tolist() for b in iterator]  # new shuffle each pass


def test_bucket_iterator_drop_last_and_errors():
    sequences = [[1] * n for n in range(1, 11)]
    iterator = BucketIterator(sequences, np.arange(10), 3, num_buckets=1, drop_last=True, shuffle=False)
    assert len(iterator) == 3 and all(len(labels) == 3 for _, _, labels in iterator)
    with pytest.raises(ValueError, match="exactly one"):
        BucketIterator(sequences, np.arange(10), 3)
    with pytest.raises(ValueError, match="exactly one"):
        BucketIterator(sequences, np.arange(10), 3, bucket_width=2, num_buckets=2)
    with pytest.raises(ValueError, match="labels"):
        BucketIterator(sequences, np.arange(9), 3, num_buckets=2)
    with pytest.raises(ValueError, match="batch_size"):
        BucketIterator(sequences, np.arange(10), 0, num_buckets=2)


# ---------------------------------------------------------------------------------------------------------
# reading text

def test_read_text_strips_bom_and_normalizes_line_endings(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffuno\r\ndos\rtres\ncuatro ñ\r\n".encode("utf-8"))
    assert read_text(path) == "uno\ndos\ntres\ncuatro ñ\n"


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_text(tmp_path / "absent.txt")
    bad = tmp_path / "latin.txt"
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match="latin.txt.*utf-8"):
        read_text(bad)
    assert read_text(bad, encoding="latin-1") == "café"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 7, 64])
def test_iter_text_chunks_equals_whole_read(tmp_path, chunk_size):
    path = tmp_path / "mixed.txt"
    # CRLFs and lone CRs at every offset, multi-byte characters, a BOM, and a final CR
    text = "\ufeffa\r\nbé\r\r\n€\rx\r\n\r\nyz\n🙂\r"
    path.write_bytes(text.encode("utf-8"))
    chunks = list(iter_text_chunks(path, chunk_size))
    assert all(chunks) and all(len(c) <= chunk_size for c in chunks)
    assert "".join(chunks) == read_text(path) == "a\nbé\n\n€\nx\n\nyz\n🙂\n"


def test_iter_text_chunks_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        iter_text_chunks(tmp_path / "absent.txt", 10)
    (tmp_path / "ok.txt").write_text("x")
    with pytest.raises(ValueError, match="chunk_size"):
        iter_text_chunks(tmp_path / "ok.txt", 0)


# ---------------------------------------------------------------------------------------------------------
# corpora (synthetic)

def test_load_ptb_appends_eos_per_line(tmp_path):
    for name, body in [("ptb.train.txt", " a b <unk>\n c\n"), ("ptb.valid.txt", " a\n"), ("ptb.test.txt", " b c\n\n")]:
        (tmp_path / name).write_text(body)
    ptb = load_ptb(tmp_path)
    assert ptb == {"train": ["a", "b", "<unk>", "<eos>", "c", "<eos>"], "valid": ["a", "<eos>"],
                   "test": ["b", "c", "<eos>", "<eos>"]}


def test_load_ptb_missing_file_names_the_expected_files(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a\n")
    with pytest.raises(FileNotFoundError, match="ptb.valid.txt, ptb.test.txt"):
        load_ptb(tmp_path)


def _write_review(directory: Path, split: str, polarity: str, name: str, text: str):
    folder = directory / split / polarity
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_load_imdb_directory_layouts(tmp_path):
    root = tmp_path / "aclImdb"
    _write_review(root, "train", "pos", "10_9.txt", "ten pos")
    _write_review(root, "train", "pos", "2_8.txt", "two pos")
    _write_review(root, "train", "neg", "2_1.txt", "two neg")
    _write_review(root, "train", "unsup", "0_0.txt", "ignored")
    _write_review(root, "test", "neg", "0_3.txt", "zero neg")
    _write_review(root, "test", "pos", "0_7.txt", "zero pos, “quoted” <br />")
    splits = load_imdb(root)
    assert set(splits) == {"train", "test"}
    texts, labels = splits["train"]
    assert texts == ["two pos", "two neg", "ten pos"]  # by id, numerically; pos before neg
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert labels.dtype == np.int64
    texts, labels = load_imdb(root / "test")
    assert texts == ["zero pos, “quoted” <br />", "zero neg"]
    np.testing.assert_array_equal(labels, [1, 0])


def test_load_imdb_csv_and_gzip(tmp_path):
    rows = [("1", 'He said "great", twice'), ("0", "line one, still one"), ("1", "  spaces\tand tab ")]
    plain = tmp_path / "reviews.csv"
    with open(plain, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        writer.writerow(["label", "text"])
        for label, text in rows:
            f.write(f'{label},"{text.replace(chr(34), chr(34) * 2)}"\n')
    packed = tmp_path / "reviews.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        texts, labels = load_imdb(path)
        assert texts == [text for _, text in rows]
        np.testing.assert_array_equal(labels, [1, 0, 1])
    headless = tmp_path / "headless.csv"
    headless.write_text("0,bad\n1,good\n")
    assert load_imdb(headless)[0] == ["bad", "good"]


@pytest.mark.parametrize("body, line, what", [
    ('label,text\n1,"fine"\n2,"no such label"\n', 3, "label '2'"),
    ('label,text\n1,"fine"\n0,"a","b"\n', 3, "3 columns"),
    ('label,text\n1,"spans\ntwo lines"\nx\n', 4, "1 columns"),
])
def test_load_imdb_csv_malformed_rows_name_the_line(tmp_path, body, line, what):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=rf"bad.csv, line {line}: {what}"):
        load_imdb(path)


def test_load_imdb_missing_unrecognized_or_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        load_imdb(tmp_path / "absent")
    (tmp_path / "fake.csv.gz").write_bytes(b"label,text\n1,not compressed\n")
    with pytest.raises(ValueError, match="fake.csv.gz: not a valid gzip"):
        load_imdb(tmp_path / "fake.csv.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="pos/ and neg/"):
        load_imdb(tmp_path / "empty")


def test_load_polarity_reads_cp1252_and_splits_on_lf_only(tmp_path):
    # 0x85 is an ellipsis in cp1252 but a line break (NEL) to str.splitlines after a latin-1 decode
    (tmp_path / "rt-polarity.pos").write_bytes(b"good \x85 really\ncaf\xe9 fine\n")
    (tmp_path / "rt-polarity.neg").write_bytes(b"bad\n")
    texts, labels = load_polarity(tmp_path)
    assert texts == ["good … really", "café fine", "bad"]
    np.testing.assert_array_equal(labels, [1, 1, 0])
    (tmp_path / "rt-polarity.neg").unlink()
    with pytest.raises(FileNotFoundError, match="rt-polarity.neg"):
        load_polarity(tmp_path)


def test_load_labelled_sentences_splits_on_last_tab_without_quoting(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text('"masterpieces.  \t1\nA\ttab inside\u0085 here.\t0\n"unbalanced\t1\n', encoding="utf-8")
    sentences, labels = load_labelled_sentences(path)
    assert sentences == ['"masterpieces.  ', "A\ttab inside\u0085 here.", '"unbalanced']
    np.testing.assert_array_equal(labels, [1, 0, 1])


@pytest.mark.parametrize("body, line, what", [
    ("ok\t1\nno tab here\n", 2, "no TAB"),
    ("ok\t1\nbad\tx\n", 2, "label 'x'"),
])
def test_load_labelled_sentences_malformed_line(tmp_path, body, line, what):
    path = tmp_path / "s.txt"
    path.write_text(body)
    with pytest.raises(ValueError, match=rf"s.txt, line {line}: {what}"):
        load_labelled_sentences(path)
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        load_labelled_sentences(tmp_path / "absent.txt")


# ---------------------------------------------------------------------------------------------------------
# tokenizer and Keras-style word indices

def test_tokenize_strips_breaks_and_splits_punctuation():
    assert tokenize("Great film!<br /><br />Don't miss it...") == \
        ["great", "film", "!", "don't", "miss", "it", ".", ".", "."]
    assert tokenize("Señor (a)  B<br>c", lower=False) == ["Señor", "(", "a", ")", "B", "c"]


TEXTS = ["the cat sat", "the dog sat on the mat", "a cat!"]  # the:3, cat:2, sat:2, then by first appearance


def test_build_word_index_ranks_like_keras_tokenizer():
    index = build_word_index(TEXTS)
    assert list(index.items())[:4] == [("the", 1), ("cat", 2), ("sat", 3), ("dog", 4)]
    assert 0 not in index.values()
    assert build_word_index(TEXTS, num_words=4) == {"the": 1, "cat": 2, "sat": 3}


def test_texts_to_sequences_conventions():
    index = build_word_index(TEXTS)
    # Tokenizer(num_words=4): ids < 4, rarer and unknown words dropped
    assert texts_to_sequences(["the dog sat", "zebra"], index, num_words=4) == [[1, 3], []]
    # Tokenizer(oov_token=...): 1 = OOV, most frequent = 2
    assert texts_to_sequences(["the zebra"], index, oov_char=1, index_from=1) == [[2, 1]]
    # keras.datasets.imdb: 1 = start, 2 = OOV, most frequent = 4, ids < num_words
    assert texts_to_sequences(["the cat dog zebra"], index, num_words=7, **IMDB_CONVENTION) == [[1, 4, 5, 2, 2]]
    with pytest.raises(ValueError, match="oov_char"):
        texts_to_sequences(["x"], index, oov_char=2, index_from=0)
    with pytest.raises(ValueError, match="both 1"):
        texts_to_sequences(["x"], index, start_char=1, oov_char=1, index_from=1)
    with pytest.raises(TypeError, match="list of str"):
        texts_to_sequences("the cat", index)
    with pytest.raises(TypeError, match="list of str"):
        build_word_index("the cat")


# ---------------------------------------------------------------------------------------------------------
# the real corpora in shared/data

def test_real_tinyshakespeare_has_65_characters():
    text = read_text(shared_data("tinyshakespeare.txt"))
    assert len(Vocabulary.from_text(text)) == 65


def test_real_ptb_counts():
    ptb = load_ptb(shared_data("ptb"))
    assert len(ptb["train"]) == 929_589
    vocab = Vocabulary.build(ptb["train"], specials=())
    assert len(vocab) == 10_000 and "<eos>" in vocab and "<unk>" in vocab
    assert len(Vocabulary.build(ptb["train"])) == 10_000  # the default <unk> special is PTB's own <unk>
    # every valid/test word is in the train vocabulary, so <unk> is never needed as a fallback
    assert set(ptb["valid"]) <= set(vocab.tokens) and set(ptb["test"]) <= set(vocab.tokens)
    x, y = next(lm_batches(batchify(vocab.encode(ptb["train"]), 20), 35))
    assert x.shape == y.shape == (20, 35)


def test_real_polarity_counts():
    texts, labels = load_polarity(shared_data("sentiment"))
    assert len(texts) == 10_662 and labels.sum() == 5331
    assert not any("\n" in t or "\r" in t for t in texts)


@pytest.mark.parametrize("name", ["imdb_labelled.txt", "amazon_cells_labelled.txt", "yelp_labelled.txt"])
def test_real_labelled_sentences_have_1000_rows(name):
    sentences, labels = load_labelled_sentences(shared_data(f"sentiment/{name}"))
    assert len(sentences) == 1000 and labels.sum() == 500


def test_real_imdb_subset_and_embedding_ids():
    texts, labels = load_imdb(shared_data("sentiment/imdb_train_subset.csv"))
    assert len(texts) == 2500 and labels.sum() == 1250
    np.testing.assert_array_equal(labels[:4], [1, 0, 1, 0])
    index = build_word_index(texts)
    x = pad_sequences(texts_to_sequences(texts, index, num_words=10_000, **IMDB_CONVENTION), maxlen=200)
    assert x.shape == (2500, 200) and 0 <= x.min() and x.max() < 10_000  # fits Embedding(10000, 32)


def test_real_imdb_full_train():
    texts, labels = load_imdb(shared_data("sentiment/imdb_train.csv.gz"))
    assert len(texts) == 25_000 and labels.sum() == 12_500


def test_real_cervantes_has_no_bom_or_cr_after_read_text():
    path = shared_data("cervantes.txt")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    text = read_text(path)
    assert text.startswith("The Project Gutenberg eBook") and "\r" not in text
    assert "".join(iter_text_chunks(path, 1 << 16)) == text
