"""Data for recurrent models: synthetic echo data, vocabularies, LM and padded batches; the text readers, corpus
loaders and word indices of rnnext.text are exported here too.

Batches here are batch-major, `x [N, T]` (row n is one sequence), as in Keras and PyTorch `batch_first`; the
engine is time-major, so pass `x.T` (or one-hot it first) to `rnnext.rnn_forward` and friends. `lengths [N]`
follows docs/conventions.md: step `t` of row `n` is valid when `t < lengths[n]`.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np

from .text import (IMDB_CONVENTION, build_word_index, iter_text_chunks, load_imdb, load_labelled_sentences,
                   load_polarity, load_ptb, read_text, texts_to_sequences, tokenize)
from .validation import check_choice, check_int

__all__ = [
    "echo_data", "echo_batches", "echo_epochs", "echo_reference_losses",
    "Vocabulary",
    "batchify", "lm_batches",
    "pad_sequences", "BucketIterator",
    "read_text", "iter_text_chunks",
    "load_ptb", "load_imdb", "load_polarity", "load_labelled_sentences",
    "tokenize", "build_word_index", "texts_to_sequences", "IMDB_CONVENTION",
]


# ---------------------------------------------------------------------------------------------------------
# echo data (r2rt, "Recurrent Neural Networks in Tensorflow I", 2016)

def _echo_probability(x_lag3, x_lag8):
    """P(Y_t = 1) given X_{t-3} and X_{t-8}: the single definition both the generator and the losses use."""
    return 0.5 + 0.5 * x_lag3 - 0.25 * x_lag8


def echo_data(size: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Return `(X, Y)`, two int64 arrays `[size]` of 0/1: X i.i.d. Bernoulli(0.5), Y depends on X_{t-3}, X_{t-8}.

    `seed` is anything `numpy.random.default_rng` accepts, including a Generator (which is then advanced).
    As in r2rt's `gen_data`, which indexes `X[t-3]` with Python's negative indices, the first steps look back
    into the end of the stream (a circular shift), so every Y_t has exactly the same distribution.
    """
    size = check_int("echo_data", "size", size, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=size, dtype=np.int64)
    p_one = _echo_probability(np.roll(x, 3), np.roll(x, 8))
    y = (rng.random(size) < p_one).astype(np.int64)
    return x, y


def echo_batches(X, Y, batch_size: int, num_steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(x, y)` windows `[batch_size, num_steps]` in state-carrying order (r2rt's `gen_batch`).

    The stream is cut into `batch_size` contiguous chunks, row i holding chunk i (the tail that does not fill
    a row is dropped); window k holds steps `[k*num_steps, (k+1)*num_steps)` of every row, so the final state
    of window k is the right initial state for window k+1. A partial last window is dropped. The windows are
    views into one reshaped copy of the stream.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 1 or X.shape != Y.shape:
        raise ValueError(f"echo_batches: X and Y must be 1-D of equal length, got shapes {X.shape} and {Y.shape}")
    batch_size = check_int("echo_batches", "batch_size", batch_size, 1)
    num_steps = check_int("echo_batches", "num_steps", num_steps, 1)
    row_length = len(X) // batch_size
    num_windows = row_length // num_steps
    if num_windows == 0:
        raise ValueError(f"echo_batches: {len(X)} steps give rows of {row_length} steps with batch_size={batch_size}, "
                         f"expected at least num_steps={num_steps}")
    data_x = X[:batch_size * row_length].reshape(batch_size, row_length)
    data_y = Y[:batch_size * row_length].reshape(batch_size, row_length)
    # arguments are checked above, before the first next(), so mistakes surface where the call is made
    return ((data_x[:, k * num_steps:(k + 1) * num_steps], data_y[:, k * num_steps:(k + 1) * num_steps])
            for k in range(num_windows))


def echo_epochs(n_epochs: int, size: int, batch_size: int, num_steps: int, seed=None):
    """Yield `n_epochs` generators of `echo_batches`, each over freshly drawn echo data (r2rt's `gen_epochs`).

    One Generator made from `seed` draws all epochs, so the epochs differ from each other but the whole run
    is reproducible.
    """
    n_epochs = check_int("echo_epochs", "n_epochs", n_epochs, 0)
    rng = np.random.default_rng(seed)
    for _ in range(n_epochs):
        X, Y = echo_data(size, rng)
        yield echo_batches(X, Y, batch_size, num_steps)


def _bernoulli_entropy(p: float) -> float:
    """Entropy in nats of a Bernoulli(p); 0 log 0 = 0."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


def echo_reference_losses() -> dict[str, float]:
    """Expected cross-entropies (nats) of the best predictor that sees none, one or both of the dependencies.

    Computed from `_echo_probability` over the four equally likely values of (X_{t-3}, X_{t-8}):
    `"none"` predicts the marginal P(Y=1) (0.6616), `"t-3"` conditions on X_{t-3} only (0.5192),
    `"t-3 and t-8"` conditions on both (0.4544). A model that reaches `"t-3"` has learned the first echo.
    """
    cases = [(lag3, lag8) for lag3 in (0, 1) for lag8 in (0, 1)]  # each with probability 1/4
    p = {case: _echo_probability(*case) for case in cases}
    marginal = sum(p.values()) / 4
    given_lag3 = {lag3: (p[(lag3, 0)] + p[(lag3, 1)]) / 2 for lag3 in (0, 1)}
    return {
        "none": _bernoulli_entropy(marginal),
        "t-3": sum(_bernoulli_entropy(q) for q in given_lag3.values()) / 2,
        "t-3 and t-8": sum(_bernoulli_entropy(q) for q in p.values()) / 4,
    }


# ---------------------------------------------------------------------------------------------------------
# vocabulary

class Vocabulary:
    """A fixed list of tokens (characters or words); a token's id is its position in the list.

    Unknown tokens encode to the id of `unk_token` when the vocabulary contains it, else `encode` raises
    KeyError. `to_dict`/`from_dict` give a JSON-able form for checkpoints.
    """

    def __init__(self, tokens: Iterable[str], unk_token: str = "<unk>"):
        self._id_to_token = list(tokens)
        self._token_to_id = {}
        for i, token in enumerate(self._id_to_token):
            if not isinstance(token, str):
                raise TypeError(f"Vocabulary: token {i} is {type(token).__name__} {token!r}, expected str")
            if token in self._token_to_id:
                raise ValueError(f"Vocabulary: token {token!r} appears twice (ids {self._token_to_id[token]} and {i})")
            self._token_to_id[token] = i
        self.unk_token = unk_token

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int | None = None, min_freq: int = 1,
              specials: Sequence[str] = ("<unk>",), order: str = "frequency", unk_token: str = "<unk>"):
        """Count `tokens` and keep the specials first, then the counted tokens.

        `order="frequency"`: descending count, ties in order of first appearance (as Keras' Tokenizer);
        `order="sorted"`: lexicographic (as char-rnn / nanoGPT `sorted(set(text))`).
        Tokens seen fewer than `min_freq` times are dropped; `max_size` caps the whole vocabulary, specials
        included, so `len(vocab) <= max_size`. A special that also occurs in the data (PTB's `<unk>`) is kept
        once, in its special position.
        """
        check_choice("Vocabulary.build", "order", order, ("frequency", "sorted"))
        min_freq = check_int("Vocabulary.build", "min_freq", min_freq, 1)
        specials = list(specials)
        if max_size is not None:
            max_size = check_int("Vocabulary.build", "max_size", max_size, 0)
            if max_size < len(specials):
                raise ValueError(f"Vocabulary.build: max_size={max_size} is smaller than the {len(specials)} specials")
        counts = Counter(tokens)  # insertion-ordered, so the stable sort below breaks ties by first appearance
        special_set = set(specials)
        kept = [t for t, c in counts.items() if c >= min_freq and t not in special_set]
        if order == "frequency":
            kept.sort(key=lambda t: -counts[t])
        else:
            kept.sort()
        if max_size is not None:
            kept = kept[:max_size - len(specials)]
        return cls(specials + kept, unk_token=unk_token)

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = (), order: str = "sorted"):
        """Character vocabulary of `text`; by default the sorted distinct characters, no specials."""
        return cls.build(text, specials=specials, order=order)

    def __len__(self) -> int:
        return len(self._id_to_token)

    def __contains__(self, token) -> bool:
        return token in self._token_to_id

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._id_to_token == other._id_to_token and self.unk_token == other.unk_token

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self._id_to_token[:5])
        return f"Vocabulary({len(self)} tokens: {head}{', ...' if len(self) > 5 else ''})"

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._id_to_token)

    def token_to_id(self, token: str) -> int:
        """Id of `token`; KeyError naming the token if absent (no `<unk>` fallback here)."""
        try:
            return self._token_to_id[token]
        except KeyError:
            raise KeyError(f"Vocabulary: token {token!r} is not in the vocabulary") from None

    def id_to_token(self, index: int) -> str:
        """Token with id `index`; IndexError unless `0 <= index < len(self)`."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"Vocabulary: id {index} out of range, expected 0 <= id < {len(self)}")
        return self._id_to_token[index]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of `tokens` as int64 `[len]`. A str is iterated by character, so pass a list of words."""
        unk_id = self._token_to_id.get(self.unk_token)
        lookup = self._token_to_id
        if unk_id is not None:
            ids = [lookup.get(t, unk_id) for t in tokens]
        else:
            try:
                ids = [lookup[t] for t in tokens]
            except KeyError as error:
                raise KeyError(f"Vocabulary.encode: token {error.args[0]!r} is not in the vocabulary and "
                               f"{self.unk_token!r} is not either") from None
        return np.array(ids, dtype=np.int64)

    def decode(self, ids) -> list[str]:
        """Tokens of `ids` (any integer array-like); IndexError naming the first id out of range."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        bad = (ids < 0) | (ids >= len(self))
        if bad.any():
            raise IndexError(f"Vocabulary.decode: id {ids[bad][0]} out of range, expected 0 <= id < {len(self)}")
        return [self._id_to_token[i] for i in ids.tolist()]

    def to_dict(self) -> dict:
        """JSON-able form: `{"tokens": [...], "unk_token": ...}`."""
        return {"tokens": list(self._id_to_token), "unk_token": self.unk_token}

    @classmethod
    def from_dict(cls, state: dict):
        """Inverse of `to_dict`."""
        if not isinstance(state, dict) or not isinstance(state.get("tokens"), list):
            raise ValueError("Vocabulary.from_dict: expected a dict with a list under 'tokens'")
        unk_token = state.get("unk_token", "<unk>")
        if not isinstance(unk_token, str):
            raise ValueError(f"Vocabulary.from_dict: 'unk_token' is {unk_token!r}, expected str")
        return cls(state["tokens"], unk_token=unk_token)


# ---------------------------------------------------------------------------------------------------------
# language-model batches (Zaremba et al. 2014; PyTorch examples/word_language_model)

def batchify(ids, batch_size: int) -> np.ndarray:
    """Cut a 1-D id stream into `[batch_size, L]`, row i = contiguous chunk i, `L = len(ids) // batch_size`.

    The remainder is dropped. PyTorch's `batchify` returns the transpose `[L, batch_size]`.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"batchify: ids has shape {ids.shape}, expected 1-D")
    batch_size = check_int("batchify", "batch_size", batch_size, 1)
    row_length = len(ids) // batch_size
    if row_length == 0:
        raise ValueError(f"batchify: {len(ids)} ids cannot fill {batch_size} rows")
    return ids[:batch_size * row_length].reshape(batch_size, row_length)


def lm_batches(data, num_steps: int, drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(x, y)` windows `[N, num_steps]` of `data [N, L]`: `x = data[:, s:s+k]`, `y = data[:, s+1:s+k+1]`.

    Windows start at s = 0, num_steps, 2*num_steps, ... so each continues the previous one (carry the state).
    The last window is shorter when `L - 1` is not a multiple of `num_steps` (PyTorch's `get_batch`);
    `drop_last=True` skips it instead (Zaremba's `ptb_iterator`). Windows are views into `data`.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"lm_batches: data has shape {data.shape}, expected 2-D [N, L] (see batchify)")
    num_steps = check_int("lm_batches", "num_steps", num_steps, 1)
    if data.shape[1] < 2:
        raise ValueError(f"lm_batches: data has {data.shape[1]} columns, expected at least 2 (input and target)")
    num_targets = data.shape[1] - 1
    end = num_targets - num_targets % num_steps if drop_last else num_targets
    return _lm_windows(data, num_steps, end)


def _lm_windows(data: np.ndarray, num_steps: int, end: int):
    for start in range(0, end, num_steps):
        stop = min(start + num_steps, end)
        yield data[:, start:stop], data[:, start + 1:stop + 1]


# ---------------------------------------------------------------------------------------------------------
# padding and bucketing

def _sample_shape(sequences: list) -> tuple:
    """Shape of one step, taken from the first non-empty sequence (as Keras does)."""
    for s in sequences:
        if len(s):
            return np.asarray(s).shape[1:]
    return ()


def pad_sequences(sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre",
                  truncating: str = "pre", value=0, return_lengths: bool = False):
    """Pad (and truncate) sequences to one array `[N, maxlen, *step_shape]`, as keras' `pad_sequences`.

    `maxlen=None` uses the longest sequence. `truncating="pre"` keeps the last `maxlen` steps, `"post"` the
    first; `padding="pre"` puts `value` before the sequence, `"post"` after. With `return_lengths=True` also
    returns int64 `lengths [N]`, each sequence's length after truncation (meaningful with `padding="post"`).
    Beyond Keras: no sequences give shape `(0, maxlen or 0)` and `maxlen=0` gives width 0 (Keras raises).
    """
    check_choice("pad_sequences", "padding", padding, ("pre", "post"))
    check_choice("pad_sequences", "truncating", truncating, ("pre", "post"))
    sequences = list(sequences)
    for i, s in enumerate(sequences):
        if not hasattr(s, "__len__"):
            raise ValueError(f"pad_sequences: sequences[{i}] is {type(s).__name__}, expected a sequence")
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    maxlen = check_int("pad_sequences", "maxlen", maxlen, 0)
    step_shape = _sample_shape(sequences)
    x = np.full((len(sequences), maxlen) + step_shape, value, dtype=dtype)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for i, s in enumerate(sequences):
        kept = s[max(len(s) - maxlen, 0):] if truncating == "pre" else s[:maxlen]
        if len(kept) == 0:
            continue
        kept = np.asarray(kept, dtype=dtype)
        if kept.shape[1:] != step_shape:
            raise ValueError(f"pad_sequences: sequences[{i}] has steps of shape {kept.shape[1:]}, "
                             f"expected {step_shape} like the first non-empty sequence")
        lengths[i] = len(kept)
        if padding == "post":
            x[i, :len(kept)] = kept
        else:
            x[i, maxlen - len(kept):] = kept
    return (x, lengths) if return_lengths else x


class BucketIterator:
    """Batches of sequences of similar length, padded after the end: yields `(x [B, T], lengths [B], labels [B])`.

    Sequences are grouped into buckets, either by length (`bucket_width`: lengths 0..w-1, w..2w-1, ...) or into
    `num_buckets` groups of equal size after sorting by length; give exactly one. Batches never mix buckets, so
    `T` (the longest sequence in the batch) wastes little padding. With `shuffle=True` each pass over the
    iterator shuffles the order inside every bucket and the order of the batches, from one Generator made
    from `seed`; with `shuffle=False` batches come in increasing length. Every example appears exactly once
    per pass, except that `drop_last=True` drops each bucket's final incomplete batch.
    """

    def __init__(self, sequences, labels, batch_size: int, *, bucket_width: int | None = None,
                 num_buckets: int | None = None, shuffle: bool = True, seed=None, drop_last: bool = False,
                 dtype="int32", value=0):
        self._sequences = [np.asarray(s, dtype=dtype) for s in sequences]
        self._labels = np.asarray(labels)
        if self._labels.ndim == 0 or len(self._labels) != len(self._sequences):
            raise ValueError(f"BucketIterator: labels has shape {self._labels.shape}, "
                             f"expected ({len(self._sequences)}, ...) to match sequences")
        self.batch_size = check_int("BucketIterator", "batch_size", batch_size, 1)
        if (bucket_width is None) == (num_buckets is None):
            raise ValueError("BucketIterator: give exactly one of bucket_width and num_buckets")
        self._step_shape = _sample_shape(self._sequences)
        for i, s in enumerate(self._sequences):
            if len(s) and s.shape[1:] != self._step_shape:
                raise ValueError(f"BucketIterator: sequences[{i}] has steps of shape {s.shape[1:]}, "
                                 f"expected {self._step_shape}")
        self._lengths = np.array([len(s) for s in self._sequences], dtype=np.int64)
        by_length = np.argsort(self._lengths, kind="stable")
        if bucket_width is not None:
            bucket_width = check_int("BucketIterator", "bucket_width", bucket_width, 1)
            bucket_of = self._lengths[by_length] // bucket_width
            cuts = np.flatnonzero(np.diff(bucket_of)) + 1
            self._buckets = np.split(by_length, cuts)
        else:
            num_buckets = check_int("BucketIterator", "num_buckets", num_buckets, 1)
            self._buckets = [b for b in np.array_split(by_length, num_buckets) if len(b)]
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.dtype = dtype
        self.value = value
        self._rng = np.random.default_rng(seed)

    def generators(self) -> dict:
        """The generator the shuffling draws from (rnnext.train.fit saves and restores it); named after the
        attribute, as training checkpoints have always named it."""
        return {"_rng": self._rng}

    def __len__(self) -> int:
        """Batches per pass."""
        if self.drop_last:
            return sum(len(b) // self.batch_size for b in self._buckets)
        return sum(-(-len(b) // self.batch_size) for b in self._buckets)

    def _batch_indices(self) -> list[np.ndarray]:
        batches = []
        for bucket in self._buckets:
            order = self._rng.permutation(bucket) if self.shuffle else bucket
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in self._rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for batch in self._batch_indices():
            lengths = self._lengths[batch]
            x = np.full((len(batch), int(lengths.max())) + self._step_shape, self.value, dtype=self.dtype)
            for row, i in enumerate(batch):
                x[row, :lengths[row]] = self._sequences[i]
            yield x, lengths, self._labels[batch]
