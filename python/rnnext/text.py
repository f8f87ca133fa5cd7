"""Text for recurrent models: reading files (UTF-8 by default, BOM and CRLF handled), the corpus loaders (PTB,
IMDB, sentence polarity, UCI labelled sentences) and word indices with Keras' conventions. rnnext.data
exports all of it.

Text is always returned with LF line endings and without a BOM; loaders never edit the text otherwise.
"""
from __future__ import annotations

import csv
import gzip
import math
import re
import types
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .validation import check_int

__all__ = [
    "read_text", "iter_text_chunks",
    "load_ptb", "load_imdb", "load_polarity", "load_labelled_sentences",
    "tokenize", "build_word_index", "texts_to_sequences", "IMDB_CONVENTION",
]


# ---------------------------------------------------------------------------------------------------------
# reading text

def _require_file(path, who: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: no such file: {path}")
    return path


def _decode_error(path: Path, encoding: str, error: UnicodeDecodeError) -> ValueError:
    """For whole-file reads, where the decoder's offset is the offset in the file."""
    return ValueError(f"{path}: not valid {encoding} ({error.reason} at byte {error.start})")


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path, encoding: str = "utf-8") -> str:
    """Whole file as str, with a leading BOM removed and CRLF / CR turned into LF."""
    path = _require_file(path, "read_text")
    try:
        # newline="" so that this and iter_text_chunks translate line endings the same way, in one place
        with open(path, encoding=encoding, newline="") as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise _decode_error(path, encoding, error) from None
    return _normalize_newlines(text.removeprefix("\ufeff"))


def iter_text_chunks(path, chunk_size: int = 1 << 20, encoding: str = "utf-8") -> Iterator[str]:
    """Stream a text file as non-empty str chunks of at most `chunk_size` characters, without reading it whole.

    The concatenation of the chunks equals `read_text(path, encoding)`: the BOM is removed, and a CR ending one
    chunk is yielded as LF at once while an LF starting the next is dropped, so a CRLF split between reads
    still gives one LF. Multi-byte characters are never split (the incremental decoder sees to that).
    The path and chunk size are checked at the call, not at the first `next`.
    """
    path = _require_file(path, "iter_text_chunks")
    chunk_size = check_int("iter_text_chunks", "chunk_size", chunk_size, 1)
    return _text_chunks(path, chunk_size, encoding)


def _text_chunks(path: Path, chunk_size: int, encoding: str):
    after_cr = False  # the previous chunk ended in CR, already yielded as LF: an LF starting this one is its pair
    first = True
    try:
        # newline="" turns off Python's newline translation, so CRLF is handled here, the same way as read_text
        with open(path, encoding=encoding, newline="") as f:
            while chunk := f.read(chunk_size):
                if first:
                    chunk = chunk.removeprefix("\ufeff")
                    first = False
                if after_cr and chunk.startswith("\n"):
                    chunk = chunk[1:]
                after_cr = chunk.endswith("\r")
                text = _normalize_newlines(chunk)
                if text:
                    yield text
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid {encoding} ({error.reason})") from None


def _lines(text: str) -> list[str]:
    """Split on LF only (not `str.splitlines`, which also breaks at U+0085, U+2028, ...); a final LF ends
    the last line rather than starting an empty one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------------------------------------------------
# corpora

PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


def load_ptb(directory) -> dict[str, list[str]]:
    """Penn Treebank (Mikolov's files): `{"train", "valid", "test"}` -> word list with `"<eos>"` after each line.

    Same tokens as PyTorch's word_language_model (`line.split() + ["<eos>"]`): 929,589 in train, 10,000 types.
    """
    directory = Path(directory)
    missing = [name for name in PTB_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"load_ptb: {directory} lacks {', '.join(missing)} "
                                f"(expected {', '.join(PTB_FILES.values())})")
    splits = {}
    for split, name in PTB_FILES.items():
        words = []
        for line in _lines(read_text(directory / name)):
            words.extend(line.split())
            words.append("<eos>")
        splits[split] = words
    return splits


def _parse_label(text: str, where: str) -> int:
    label = text.strip()
    if label not in ("0", "1"):
        raise ValueError(f"{where}: label {text!r}, expected 0 or 1")
    return int(label)


def _imdb_review_key(path: Path):
    """aclImdb files are `{id}_{rating}.txt`: order by id (numerically) so the order matches the CSV exports."""
    stem = path.stem.split("_")[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, path.name)


def _load_imdb_split(directory: Path) -> tuple[list[str], np.ndarray]:
    reviews = [(path, 1) for path in (directory / "pos").glob("*.txt")]
    reviews += [(path, 0) for path in (directory / "neg").glob("*.txt")]
    # by id, and pos before neg within an id, like imdb_*_subset.csv and imdb_train.csv.gz
    reviews.sort(key=lambda item: (_imdb_review_key(item[0]), -item[1]))
    texts = [read_text(path) for path, _ in reviews]
    return texts, np.array([label for _, label in reviews], dtype=np.int64)


def _is_imdb_split(directory: Path) -> bool:
    return (directory / "pos").is_dir() and (directory / "neg").is_dir()


def _load_label_text_csv(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    texts, labels = [], []
    try:
        # utf-8-sig tolerates a BOM; newline="" lets the csv module see quoted fields' own line breaks
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            last_line = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:
                    raise ValueError(f"{path}, line {last_line + 1}: malformed CSV ({error})") from None
                except UnicodeDecodeError as error:
                    raise ValueError(f"{path}, near line {last_line + 1}: not valid utf-8 ({error.reason})") from None
                line, last_line = last_line + 1, reader.line_num
                if not row:
                    continue  # blank line
                if line == 1 and [field.strip().lower() for field in row] == ["label", "text"]:
                    continue
                if len(row) != 2:
                    raise ValueError(f"{path}, line {line}: {len(row)} columns, expected 2 (label,text)")
                labels.append(_parse_label(row[0], f"{path}, line {line}"))
                texts.append(row[1])
    except (gzip.BadGzipFile, EOFError) as error:
        raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    return texts, np.array(labels, dtype=np.int64)


def load_imdb(path):
    """IMDB reviews (Maas et al. 2011) as `(texts, labels)`, labels int64 1 = positive, 0 = negative.

    `path` may be
    - a `label,text` CSV, optionally gzip-compressed (`.gz`), with an optional `label,text` header;
    - an aclImdb split directory holding `pos/*.txt` and `neg/*.txt`: that split (`unsup/` is ignored);
    - the aclImdb root holding `train/` and/or `test/` split directories: a dict `{split: (texts, labels)}`.
    Directory reviews are ordered by file id, pos before neg within an id, the order of the CSV exports.
    """
    path = Path(path)
    if path.is_file():
        return _load_label_text_csv(path)
    if not path.is_dir():
        raise FileNotFoundError(f"load_imdb: no such file or directory: {path}")
    if _is_imdb_split(path):
        return _load_imdb_split(path)
    splits = {name: _load_imdb_split(path / name) for name in ("train", "test") if _is_imdb_split(path / name)}
    if not splits:
        raise FileNotFoundError(f"load_imdb: {path} has neither pos/ and neg/ nor train/ or test/ holding them")
    return splits


def load_polarity(directory) -> tuple[list[str], np.ndarray]:
    """Pang & Lee sentence polarity v1.0: `rt-polarity.pos` then `.neg`, 5331 each; labels 1 then 0.

    The files are Windows-1252, where byte 0x85 is an ellipsis, so they are split on LF only.
    """
    directory = Path(directory)
    names = ("rt-polarity.pos", "rt-polarity.neg")
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"load_polarity: {directory} lacks {', '.join(missing)} (expected {', '.join(names)})")
    positive = _lines(read_text(directory / names[0], encoding="cp1252"))
    negative = _lines(read_text(directory / names[1], encoding="cp1252"))
    labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
    return positive + negative, labels


def load_labelled_sentences(path) -> tuple[list[str], np.ndarray]:
    """UCI Sentiment Labelled Sentences (`sentence<TAB>label` per line), as `(sentences, labels)`.

    Each line is split on its last TAB with no quote handling (imdb_labelled.txt has unbalanced quotes) and
    lines end at LF only (it also holds U+0085). Sentences are kept as written, trailing spaces included.
    """
    path = _require_file(path, "load_labelled_sentences")
    sentences, labels = [], []
    for number, line in enumerate(_lines(read_text(path)), start=1):
        sentence, tab, label = line.rpartition("\t")
        if not tab:
            raise ValueError(f"{path}, line {number}: no TAB, expected 'sentence<TAB>label'")
        labels.append(_parse_label(label, f"{path}, line {number}"))
        sentences.append(sentence)
    return sentences, np.array(labels, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# word indices (Keras conventions)

_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
# a word is letters/digits/underscore with inner apostrophes kept ("don't"); any other non-space is its own token
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks of `text`: `<br />` tags become spaces, each punctuation mark is a token.

    `"Great film!<br /><br />Don't miss it."` -> `["great", "film", "!", "don't", "miss", "it", "."]`.
    """
    text = _BREAK_TAG.sub(" ", text)
    if lower:
        text = text.lower()
    return _TOKEN.findall(text)


# keras.datasets.imdb.load_data defaults; `texts_to_sequences(..., **IMDB_CONVENTION)` follows its id layout
IMDB_CONVENTION = types.MappingProxyType({"start_char": 1, "oov_char": 2, "index_from": 3})


def build_word_index(texts: Iterable[str], num_words: int | None = None, lower: bool = True) -> dict[str, int]:
    """Rank the words of `texts`: `{word: rank}`, rank 1 = most frequent, ties by first appearance.

    Same as Keras' `Tokenizer.word_index` (and `imdb.get_word_index`): 0 is never a rank, it is left for
    padding. With `num_words`, only ranks `1 .. num_words-1` are kept, which is exactly the set of words
    Keras' `Tokenizer(num_words).texts_to_sequences` emits, so ids fit `Embedding(num_words, ...)`.
    """
    _require_texts(texts, "build_word_index")
    counts = Counter()
    for text in texts:
        counts.update(tokenize(text, lower=lower))
    words = sorted(counts, key=lambda w: -counts[w])  # stable: ties stay in order of first appearance
    if num_words is not None:
        words = words[:check_int("build_word_index", "num_words", num_words, 1) - 1]
    return {word: rank for rank, word in enumerate(words, start=1)}


def texts_to_sequences(texts: Iterable[str], word_index: dict[str, int], num_words: int | None = None, *,
                       start_char: int | None = None, oov_char: int | None = None, index_from: int = 0,
                       lower: bool = True) -> list[list[int]]:
    """Id lists for `texts` (tokenized with `tokenize`): word -> `word_index[word] + index_from`.

    Words missing from `word_index`, or whose id would be `>= num_words`, become `oov_char`, or are dropped
    when `oov_char is None`; `start_char`, when given, begins every sequence. 0 never occurs (padding).
    - defaults: Keras `Tokenizer(num_words).texts_to_sequences` (id = rank, 1 = most frequent, rare dropped);
    - `oov_char=1, index_from=1`: Keras `Tokenizer(num_words, oov_token=...)` (1 = OOV, 2 = most frequent);
    - `**IMDB_CONVENTION` (1 = start, 2 = OOV, 3 unused, most frequent = 4): `keras.datasets.imdb.load_data`.
    With `num_words` every id is `< num_words`, so `Embedding(num_words, ...)` accepts the padded result.
    """
    _require_texts(texts, "texts_to_sequences")
    index_from = check_int("texts_to_sequences", "index_from", index_from, 0)
    for name, special in (("start_char", start_char), ("oov_char", oov_char)):
        if special is not None and not 1 <= special <= index_from:
            raise ValueError(f"texts_to_sequences: {name}={special}, expected 1 <= {name} <= index_from={index_from} "
                             f"so it cannot collide with padding (0) or a word id (>= index_from + 1)")
    if start_char is not None and start_char == oov_char:
        raise ValueError(f"texts_to_sequences: start_char and oov_char are both {start_char}, expected different ids")
    limit = math.inf if num_words is None else check_int("texts_to_sequences", "num_words", num_words, 1)
    # the final id of every indexed word, worked out once, so the loop over tokens is a dict lookup
    final_id = {word: rank + index_from if rank + index_from < limit else oov_char
                for word, rank in word_index.items()}
    start = [] if start_char is None else [start_char]
    sequences = []
    for text in texts:
        ids = [final_id.get(word, oov_char) for word in tokenize(text, lower=lower)]
        if oov_char is None:
            ids = [i for i in ids if i is not None]
        sequences.append(start + ids)
    return sequences


# ---------------------------------------------------------------------------------------------------------
# argument checks

def _require_texts(texts, who: str) -> None:
    # a lone str would be read as a list of one-character texts
    if isinstance(texts, str):
        raise TypeError(f"{who}: texts is a str, expected a list of str")
