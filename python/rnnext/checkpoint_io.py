"""Reading and writing the .npz files behind Sequential.save / rnnext.load, for files that may be hostile.

Reading: `CheckpointArchive` opens the zip directory and every member's .npy header without reading any
array data, and refuses, before anything is allocated from the file's say-so, whatever it cannot check:
- only stored (uncompressed) members, as np.savez writes them: a compressed member's real size is only known
  by decompressing it (a deflate bomb declares little and inflates a thousandfold);
- the members' bytes must be disjoint ranges inside the file, and each member must be exactly its .npy header
  plus shape x itemsize bytes. So the arrays a file can make the loader allocate add up to at most the file's
  own size: every element the file declares is backed by a distinct byte of it;
- no object (pickled) arrays, no structured dtypes, no member outside "header", "param/...", "optimizer/...".
`implied_weights` lets the loader compare the weights an architecture would allocate with the weights the
file holds before building the model (an Embedding declared with 2**33 rows is refused before it exists).

Writing: `write_atomically` writes a temporary file next to the target and renames it over the target. The
writer holds an exclusive flock on its temporary file until it is renamed or removed; the kernel drops the
lock when the process dies in any way, SIGKILL included, so a temporary file of ours that nobody holds locked
is the leftover of a dead writer, and the next save to the same path removes it. A lock, unlike a PID in the
name, cannot be fooled by PID reuse, nor by a writer in another PID namespace (a container) or on another NFS
client, whose PIDs this process cannot check. Temporary files of the earlier scheme (".<name>.<hex>.tmp", never locked) cannot be told apart from
a live save by an older rnnext, so they are left alone.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import uuid
import zipfile

import numpy as np

from . import layers as _layers

try:
    import fcntl
except ImportError:  # Windows: no flock, so no way to tell a stale temporary file from a live one
    fcntl = None

__all__ = ["CheckpointArchive", "Member", "write_atomically", "write_file_atomically", "remove_stale_temporaries",
           "json_depth", "implied_weights", "MAX_JSON_DEPTH", "MAX_LAYERS", "MIN_MEMBER_BYTES"]

# Deeper JSON than this is refused by save and load alike (the headers Sequential.save writes nest about 8 deep,
# training states about 10). A fixed limit makes the outcome independent of how deep the caller's stack is.
MAX_JSON_DEPTH = 100

# Sequential.add is linear in the layers already there, so building n layers is quadratic: more layers than
# this are refused by save and load alike (a recurrent stack rarely has more than a handful).
MAX_LAYERS = 1000

# The fewest bytes a member takes in the file: its zip local header (30) and directory entry (46) and a .npy
# header (64, padded to a multiple of 64), names not counted. Bounds the arrays a file can ask for.
MIN_MEMBER_BYTES = 30 + 46 + 64

_PREFIXES = ("param/", "optimizer/")
_NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_ALLOWED_KINDS = "biufU"  # numbers, booleans, and the header's unicode string
_TEMP_SUFFIX = re.compile(r"\.rnnext-save\.[0-9a-f]{12}\.tmp")  # fixed length, so the owning name is unambiguous


def _problem(path, text: str) -> ValueError:
    return ValueError(f"load: {path}: {text}")


class Member:
    """One .npy member, as its header declares it: `key` (name without ".npy"), `shape`, `dtype`."""

    def __init__(self, key: str, info: zipfile.ZipInfo, shape: tuple, dtype: np.dtype):
        self.key, self.info, self.shape, self.dtype = key, info, shape, dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class CheckpointArchive:
    """The checked directory of a checkpoint .npz: `members` {key: Member}, `file_size`; `read(key)` reads one
    array, `read_header()` the JSON header.

    Opening reads the zip directory, each member's local header and .npy header, and no array data. Every
    problem raises ValueError "load: <path>: ..." naming the member; a missing or unreadable file raises
    OSError as usual.
    """

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "rb")
        try:
            self._zip = self._open_zip()
            try:
                self.members = self._check_members()
            except BaseException:
                self._zip.close()
                raise
        except BaseException:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def _open_zip(self) -> zipfile.ZipFile:
        start = self._file.read(6)
        self._file.seek(0)
        if start == b"\x93NUMPY":
            raise _problem(self.path, "not a readable rnnext checkpoint (.npz): it holds a single .npy array, "
                                      "expected an .npz archive")
        try:
            return zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error, OverflowError,
                NotImplementedError) as error:
            # A random or truncated file lands here: its end has no zip directory.
            raise _problem(self.path, f"not a readable rnnext checkpoint (.npz): not a zip archive "
                                      f"({type(error).__name__}: {error})") from None

    def _check_members(self) -> dict:
        self.file_size = file_size = os.fstat(self._file.fileno()).st_size
        infos = self._zip.infolist()
        members = {}
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key is None or not (key == "header" or any(key.startswith(p) and len(key) > len(p)
                                                          for p in _PREFIXES)):
                raise _problem(self.path, f"unknown member {info.filename!r}: a checkpoint holds only "
                                          "'header.npy', 'param/<name>.npy' and 'optimizer/<key>.npy'")
            if key in members:
                raise _problem(self.path, f"member {info.filename!r} appears twice in the archive")
            members[key] = info
        for key, info in members.items():
            if info.flag_bits & 0x1:
                raise _problem(self.path, f"member {key!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise _problem(self.path, f"member {key!r} is compressed (method {info.compress_type}, "
                                          f"{info.compress_size} bytes declaring {info.file_size}); checkpoints are "
                                          "written uncompressed (np.savez), and a compressed member's real size "
                                          "cannot be checked without decompressing it")
        self._check_layout(sorted(members.values(), key=lambda info: info.header_offset), file_size)
        return {key: self._read_npy_header(key, info) for key, info in members.items()}

    def _check_layout(self, infos: list, file_size: int) -> None:
        """Each member's local header and data must lie inside the file, before the zip directory, and not
        overlap the next member: then the members' declared sizes add up to at most the file's size."""
        end_of_members = min(self._zip.start_dir, file_size)
        previous_end = 0
        for info in infos:
            key = info.filename[:-4]
            offset = info.header_offset
            if offset < previous_end or offset + zipfile.sizeFileHeader > end_of_members:
                raise _problem(self.path, f"member {key!r} starts at byte {offset}, outside the space left for "
                                          f"members (bytes {previous_end} to {end_of_members})")
            self._file.seek(offset)
            local = struct.unpack(zipfile.structFileHeader, self._file.read(zipfile.sizeFileHeader))
            if local[0] != zipfile.stringFileHeader:
                raise _problem(self.path, f"member {key!r}: no zip local header at byte {offset}")
            name_length, extra_length = local[10], local[11]
            previous_end = offset + zipfile.sizeFileHeader + name_length + extra_length + info.compress_size
            if previous_end > end_of_members:
                raise _problem(self.path, f"member {key!r} declares {info.file_size} bytes, which run past the "
                                          f"end of the member area (byte {end_of_members}); the file is truncated "
                                          "or its directory is wrong")

    def _read_npy_header(self, key: str, info: zipfile.ZipInfo) -> Member:
        try:
            with self._zip.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _NPY_VERSIONS:
                    raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
                shape, _fortran_order, dtype = _NPY_VERSIONS[version](member)
                header_length = member.tell()
        except (zipfile.BadZipFile, EOFError) as error:  # small members are read whole: the CRC fails here
            raise _problem(self.path, f"member {key!r} is damaged ({type(error).__name__}: {error})") from None
        except (ValueError, TypeError, SyntaxError, RecursionError, struct.error, NotImplementedError) as error:
            # NotImplementedError: zip features (flag bits) that zipfile does not read, such as patched data
            raise _problem(self.path, f"member {key!r} is not a readable .npy array ({error})") from None
        if dtype.hasobject:
            raise _problem(self.path, f"member {key!r} holds pickled objects (dtype {dtype}); checkpoints are "
                                      "read without pickle")
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _ALLOWED_KINDS \
                or dtype.itemsize == 0:
            raise _problem(self.path, f"member {key!r} has dtype {dtype}, expected numbers (or the header's "
                                      "string)")
        if any(not isinstance(size, int) or size < 0 for size in shape):
            raise _problem(self.path, f"member {key!r} declares shape {shape}, expected sizes >= 0")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - header_length
        if declared != held:
            raise _problem(self.path, f"member {key!r} declares shape {shape} of {dtype} ({declared} bytes) but "
                                      f"holds {held} bytes")
        return Member(key, info, tuple(shape), dtype)

    def read(self, key: str) -> np.ndarray:
        """The array of member `key`, read in full (its CRC is checked at the end of the member)."""
        member = self.members[key]
        try:
            with self._zip.open(member.info) as file:
                array = np.lib.format.read_array(file, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile, struct.error, NotImplementedError) as error:
            raise _problem(self.path, f"member {key!r} is damaged ({type(error).__name__}: {error})") from None
        if array.shape != member.shape or array.dtype != member.dtype:  # the file changed under us
            raise _problem(self.path, f"member {key!r} changed while it was read")
        return array

    def read_header(self) -> dict:
        """The JSON header, as a dict."""
        member = self.members.get("header")
        if member is None:
            raise _problem(self.path, "not an rnnext checkpoint (the archive has no 'header' entry)")
        if member.shape != () or member.dtype.kind != "U":
            raise _problem(self.path, f"member 'header' has shape {member.shape} and dtype {member.dtype}, "
                                      "expected a 0-d string")
        # Its size is bounded by the file's (see _check_layout); the parsed JSON takes a few times that.
        text = str(self.read("header")[()])
        try:
            header = json.loads(text)
        except RecursionError:
            raise _problem(self.path, f"the header JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as error:
            raise _problem(self.path, f"the header is not valid JSON ({error})") from None
        if json_depth(header) > MAX_JSON_DEPTH:
            raise _problem(self.path, f"the header JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if not isinstance(header, dict):
            raise _problem(self.path, f"the header is a JSON {type(header).__name__}, expected an object")
        return header


def json_depth(value) -> int:
    """How deep lists and dicts nest in `value` (a scalar: 0), found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


# ---------------------------------------------------------------------------------------------------------
# the weights an architecture implies, from its config alone

_RECURRENT = (_layers.RNN, _layers.LSTM, _layers.GRU, _layers.IndRNN, _layers.MinGRU, _layers.MinLSTM, _layers.SRU,
              _layers.QRNN)


def _class_of(spec: dict, classes: dict):
    name = spec.get("class")
    return classes.get(name) if isinstance(name, str) else None


def _positive_int(config: dict, key: str):
    """config[key] when validation.check_int(..., 1) would accept it, else None: the constructor will refuse it.
    A predicate, not a check: this only predicts what building the config will allocate."""
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _flag(config: dict, key: str, default: bool) -> bool:
    value = config.get(key, default)
    return bool(value) if value in (True, False) else default  # as validation.check_bool reads it


def _recurrent_weights(cls, config: dict, features):
    """(weights, arrays, output features) of a built-in recurrent layer; mirrors Recurrent.build, in closed form
    (num_layers may be 2**30 in a crafted file, so no loop over layers)."""
    H, inputs = _positive_int(config, "units"), _positive_int(config, "input_size") or features
    layers = _positive_int(config, "num_layers") if "num_layers" in config else 1
    if H is None or layers is None:
        return 0, 0, None  # the constructor refuses the config before allocating anything
    D = 2 if _flag(config, "bidirectional", False) else 1
    arrays = 3  # kernel, recurrent_kernel, bias
    recurrent = None  # the recurrent kernel's size, H * G * H unless the cell has another recurrent weight
    if cls in (_layers.MinGRU, _layers.MinLSTM):  # kernel and bias only (scan_cells.py)
        G = 2 if cls is _layers.MinGRU else 3
        bias, extra, recurrent, arrays = G * H, 0, 0, 2
    elif cls is _layers.IndRNN:  # kernel, recurrent_weight [H], bias
        G, bias, extra, recurrent = 1, H, 0, H
    elif cls is _layers.SRU:  # kernel [I, 3H] (I = H) or [I, 4H], recurrent_weight [2, H], bias [2, H]
        return _sru_weights(H, inputs, layers, D)
    elif cls is _layers.QRNN:  # kernel [K, I, 3H], bias [3H]
        K = _positive_int(config, "window") if "window" in config else 2
        if inputs is None or K is None:
            return 0, 0, None
        per_direction = K * 3 * H * (inputs + (layers - 1) * D * H) + layers * 3 * H
        return D * per_direction, D * layers * 2, D * H
    elif cls is _layers.LSTM:
        coupled = _flag(config, "coupled", False)
        G, bias = (3 if coupled else 4), (3 if coupled else 4) * H
        extra = (2 if coupled else 3) * H if _flag(config, "peephole", False) else 0
        arrays += 1 if extra else 0
    elif cls is _layers.GRU:
        G, bias, extra = 3, (2 if _flag(config, "reset_after", True) else 1) * 3 * H, 0
    else:
        G, bias, extra = 1, H, 0
    if inputs is None:
        return 0, 0, None  # not built: the loader refuses the model as not built
    # Per direction: the first layer's kernel reads the input, the others' read D*H; every layer has the rest.
    recurrent = H * G * H if recurrent is None else recurrent
    per_direction = inputs * G * H + (layers - 1) * D * H * G * H + layers * (recurrent + bias + extra)
    return D * per_direction, D * layers * arrays, D * H


def _sru_weights(H, inputs, layers, D):
    """_recurrent_weights for SRU, whose kernel has 3 blocks where a layer's input size is H and 4 elsewhere."""
    if inputs is None:
        return 0, 0, None

    def kernel(size):
        return size * (3 if size == H else 4) * H

    per_direction = kernel(inputs) + (layers - 1) * kernel(D * H) + layers * 4 * H
    return D * per_direction, D * layers * 3, D * H


def implied_weights(config, classes: dict) -> tuple:
    """(weights, weight arrays) that Sequential.from_config(config) will allocate, computed from the config
    without building anything. Exact for the built-in layers; layers from custom_objects count 0 (their sizes
    are their own code's business), and so do built-in layers whose input size comes from one of them and is
    not in their config: the result is then a lower bound, which still refuses what a file cannot back. A
    malformed config counts 0: building it fails before allocating."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return 0, 0
    specs = [spec if isinstance(spec, dict) and isinstance(spec.get("config"), dict) else None
             for spec in config["layers"]]
    input_shape = config.get("input_shape")
    features = None
    # Sequential builds layers from the model's input shape only when it is known: given, or fixed by the first
    # layer (an Embedding, or a recurrent layer with input_size); otherwise only layers with an input_size are.
    known = isinstance(input_shape, list) and bool(input_shape)
    if known:
        features = _positive_int({"size": input_shape[-1]}, "size")
    elif specs and specs[0] is not None:
        first = _class_of(specs[0], classes)
        known = first is _layers.Embedding or (first in _RECURRENT
                                               and _positive_int(specs[0]["config"], "input_size") is not None)
    weights = arrays = 0
    for spec in specs:
        if spec is None:
            break
        cls, layer_config = _class_of(spec, classes), spec["config"]
        if cls in _RECURRENT:
            layer_weights, layer_arrays, features = _recurrent_weights(cls, layer_config, features)
        elif cls is _layers.Embedding:
            vocab, dim = _positive_int(layer_config, "vocab_size"), _positive_int(layer_config, "dim")
            layer_weights, layer_arrays, features = (vocab * dim, 1, dim) if vocab and dim else (0, 0, None)
        elif cls is _layers.Dense:
            units, inputs = _positive_int(layer_config, "units"), _positive_int(layer_config, "input_size")
            inputs = inputs or features
            layer_weights, layer_arrays = ((inputs + 1) * units, 2) if units and inputs else (0, 0)
            features = units
        elif cls is _layers.Dropout:
            layer_weights = layer_arrays = 0
        else:
            layer_weights, layer_arrays, features = 0, 0, None  # a custom layer: its output size is unknown here
        weights, arrays = weights + layer_weights, arrays + layer_arrays
        if not known:
            features = None
    return weights, arrays


# ---------------------------------------------------------------------------------------------------------
# writing

def _temporary_path(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.rnnext-save.{uuid.uuid4().hex[:12]}.tmp")


def _same_file(name: str, descriptor: int) -> bool:
    try:
        by_name = os.lstat(name)
    except OSError:
        return False
    by_descriptor = os.fstat(descriptor)
    return stat.S_ISREG(by_name.st_mode) and (by_name.st_dev, by_name.st_ino) == (by_descriptor.st_dev,
                                                                                  by_descriptor.st_ino)


def _create_locked_temporary(path: str):
    """A new temporary file for `path`, open for writing and flock-ed. The lock is taken after the file is
    created, so a cleaner may remove the file in between; then the name no longer leads to our file, and we
    start again with a fresh name (the cleaner holds the lock while it checks and removes, so our blocking
    lock waits for it to finish)."""
    while True:
        temporary = _temporary_path(path)
        file = open(temporary, "xb")
        try:
            if fcntl is not None:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without locks: cleaners cannot lock it either, so they leave it alone
        except BaseException:
            file.close()
            _remove(temporary)
            raise
        if fcntl is None or _same_file(temporary, file.fileno()):
            return temporary, file
        file.close()


def remove_stale_temporaries(path: str) -> list:
    """Remove the temporary files that earlier saves to `path` left behind when their process died: ours by
    name, and locked by nobody. Returns the removed paths. Other files, and a live save's file, are left."""
    if fcntl is None:
        return []
    directory, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}"
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        if not (entry.startswith(prefix) and _TEMP_SUFFIX.fullmatch(entry, len(prefix))):
            continue
        candidate = os.path.join(directory, entry)
        try:
            descriptor = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone already, a symlink, or not ours to open
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a save in progress
            if _same_file(candidate, descriptor):
                os.unlink(candidate)
                removed.append(candidate)
        except OSError:
            pass  # e.g. no permission to remove it: not ours to insist on
        finally:
            os.close(descriptor)  # drops the lock
    return removed


def write_atomically(path: str, arrays: dict) -> None:
    """np.savez `arrays` to `path` atomically (see write_file_atomically)."""
    write_file_atomically(path, lambda file: np.savez(file, **arrays))


def write_file_atomically(path: str, write) -> None:
    """Call `write(file)` on a locked temporary file next to `path`, fsync it and rename it over `path`; on any
    failure (KeyboardInterrupt included) the temporary file is removed and `path` is left as it was. First
    removes what earlier killed saves to `path` left behind."""
    remove_stale_temporaries(path)
    temporary, file = _create_locked_temporary(path)
    try:
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            os.replace(temporary, path)  # renamed while still locked, so no cleaner ever sees it unlocked
    except BaseException:
        _remove(temporary)
        raise
    _sync_directory(os.path.dirname(os.path.abspath(path)))


def _remove(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _sync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); where directories cannot be opened, there is nothing to do."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
