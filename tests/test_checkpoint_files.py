"""Checkpoint files against hostile input (issue 10, items 6 and 7).

Loading: crafted files of every kind the issue probed end in ValueError "load: <path>: <problem>" naming the
member, refused from what the file declares before its data is read (so a declared 2**40-element member, a
2**33-row Embedding or a deflate bomb never allocates or inflates anything). A checkpoint written before the
hardening still loads. Saving: a failed or interrupted save leaves no temporary file, and a later save removes
what a killed one left behind, but nothing else.
"""
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnext import checkpoint_io, models
from rnnext.layers import GRU, LSTM, RNN, Dense, Dropout, Embedding, Layer, LAYER_CLASSES
from rnnext.models import Sequential, load, load_checkpoint
from rnnext.optim import Adam

DATA = Path(__file__).parent / "data"


def small_model(seed=0):
    return Sequential([Embedding(5, 2, seed=seed), LSTM(3, seed=seed + 1), Dense(1, seed=seed + 2)],
                      input_shape=(4,))


def trained_optimizer(model):
    optimizer = Adam(model.parameters(), lr=0.01)
    ids = np.arange(8).reshape(2, 4) % 5
    model.zero_grad()
    y = model.forward(ids)
    model.backward(np.ones_like(y))
    optimizer.step()
    return optimizer


@pytest.fixture
def saved(tmp_path):
    """(path, arrays, header) of a valid checkpoint with Adam state; tests rewrite `path` from the parts."""
    path = tmp_path / "m.npz"
    model = small_model()
    model.save(path, optimizer=trained_optimizer(model), metadata={"note": "valid"})
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return path, arrays, json.loads(str(arrays["header"]))


def write_npz(path, arrays, header=None):
    arrays = dict(arrays)
    if header is not None:
        arrays["header"] = np.array(json.dumps(header))
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def npy_bytes(array=None, *, header=None, data=b""):
    """An .npy member: of `array`, or with the header dict text `header` over the raw `data`."""
    if array is not None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=True)
        return buffer.getvalue()
    text = header.encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip of {name: bytes} written as given (names used verbatim, ".npy" included)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def members_of(arrays):
    return {f"{key}.npy": npy_bytes(value) for key, value in arrays.items()}


def refused(path, match, **kwargs):
    with pytest.raises(ValueError, match=match) as error:
        load(path, **kwargs)
    assert str(error.value).startswith(f"load: {path}: "), str(error.value)
    return str(error.value)


# ---------------------------------------------------------------------------------------------------------
# what loads

def test_a_checkpoint_written_before_the_hardening_still_loads():
    # Written by rnnext at commit edb1af8 (Embedding frozen, LSTM float32, Dense float64, Adam after 2 steps).
    path = DATA / "checkpoint_v1_edb1af8.npz"
    with np.load(DATA / "checkpoint_v1_edb1af8.expected.npz", allow_pickle=False) as archive:
        expected = {key: archive[key] for key in archive.files}
    checkpoint = load_checkpoint(path)
    model = checkpoint.model
    assert model.metadata == {"written_by": "rnnext edb1af8", "epoch": 2}
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "LSTM", "Dense"]
    assert not model.layers[0].embeddings.trainable
    for name, param in model.named_parameters():
        assert param.value.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(param.value, expected[name], err_msg=name)
    assert checkpoint.optimizer_class == "Adam" and int(checkpoint.optimizer_state["step"]) == 2
    optimizer = Adam(Sequential.from_config(model.get_config()).parameters())
    model = load(path, optimizer=optimizer)
    for index in range(1, 6):
        np.testing.assert_array_equal(optimizer.state[f"m.{index}"], expected[f"optimizer:m.{index}"])


def test_round_trip_with_every_optimizer_member(saved):
    path, arrays, _ = saved
    model = small_model()
    optimizer = Adam(model.parameters())
    loaded = load(path, optimizer=optimizer)
    assert loaded.metadata == {"note": "valid"} and optimizer.step_count == 1


# ---------------------------------------------------------------------------------------------------------
# crafted files, by kind (the closing note of issue 10 counts these)

@pytest.mark.parametrize("member, header", [
    ("param/dense.kernel", "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"),
    ("param/dense.kernel", "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1099511627776), }"),
    ("header", "{'descr': '<U268435456', 'fortran_order': False, 'shape': (), }"),
    ("optimizer/m.1", "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"),
], ids=["weight-2**40", "weight-3x2**40", "header-2**28-chars", "optimizer-2**40"])
def test_huge_declared_member_shape(saved, member, header):
    path, arrays, _ = saved
    members = members_of(arrays)
    members[f"{member}.npy"] = npy_bytes(header=header, data=b"\0" * 12)
    write_zip(path, members)
    refused(path, rf"member '{member}' declares shape .* bytes\) but holds 12 bytes")


@pytest.mark.parametrize("change", [
    lambda model: model["layers"][0]["config"].update(vocab_size=2**33, dim=8),
    lambda model: model.update(input_shape=[None, 2**40], layers=[{"class": "LSTM", "config": {"units": 3}}]),
    lambda model: model["layers"][1]["config"].update(num_layers=2**30),
    lambda model: model["layers"][2]["config"].update(units=2**45),
    lambda model: model["layers"].append({"class": "Dense", "config": {"units": 2**20, "input_size": 2**20}}),
    lambda model: model["layers"][1]["config"].update(units=1, num_layers=200),
], ids=["embedding-2**33", "input-2**40", "num_layers-2**30", "dense-2**45", "extra-dense-2**40",
        "600-arrays"])
def test_huge_architecture_is_refused_before_building(saved, change, monkeypatch):
    path, arrays, header = saved
    change(header["model"])
    write_npz(path, arrays, header)
    monkeypatch.setattr(Sequential, "from_config", None)  # must not be reached: building would allocate
    refused(path, r"the architecture implies [\d,]+ weights in [\d,]+ arrays \(at least [\d,]+ bytes\), more "
                  r"than the whole file \([\d,]+ bytes\) holds")


def test_implied_weights_are_exact_for_built_in_layers():
    models = [
        Sequential([Embedding(10, 4), LSTM(5, bidirectional=True, num_layers=3, return_sequences=True),
                    Dropout(0.2), GRU(3, reset_after=False, return_sequences=True), Dense(2)], input_shape=(7,)),
        Sequential([LSTM(4, input_size=3, peephole=True, coupled=True, num_layers=2), Dense(1)]),
        Sequential([LSTM(4, peephole=True, bidirectional=True, return_sequences=True), GRU(2, input_size=8),
                    Dense(3)], input_shape=(None, 6)),
        Sequential([Dense(4, input_size=3), RNN(2, return_sequences=True, num_layers=2), Dense(1)],
                   input_shape=(5, 3)),
        Sequential([Dense(4, input_size=3), Dense(2, input_size=4)]),
    ]
    for model in models:
        implied = checkpoint_io.implied_weights(model.get_config(), LAYER_CLASSES)
        assert implied == (model.count_params(), len(model.parameters()))
        # Saved configs carry every input_size; without them the sizes flow from the model's input shape.
        config = model.get_config()
        for spec in config["layers"][1:]:
            spec["config"].pop("input_size", None)
        if config["input_shape"] is not None:
            assert checkpoint_io.implied_weights(config, LAYER_CLASSES) == implied


def test_implied_weights_are_a_lower_bound_with_custom_layers():
    class Twice(Layer):
        def compute_output_shape(self, input_shape):
            return tuple(input_shape[:-1]) + (2 * input_shape[-1],)

    model = Sequential([Embedding(10, 4), Twice(), LSTM(3)], input_shape=(5,))
    classes = {**LAYER_CLASSES, "Twice": Twice}
    config = model.get_config()
    assert checkpoint_io.implied_weights(config, classes) == (model.count_params(), 4)  # the LSTM says I=8
    config["layers"][2]["config"]["input_size"] = None
    assert checkpoint_io.implied_weights(config, classes) == (10 * 4, 1)  # the LSTM's size is Twice's business


def test_too_many_layers(saved, tmp_path, monkeypatch):
    path, arrays, header = saved
    header["model"]["layers"][1:1] = [{"class": "Dropout", "config": {"rate": 0.0}}] * 1001
    write_npz(path, arrays, header)
    refused(path, r"the architecture has 1004 layers, more than the 1000 rnnext saves and loads")
    monkeypatch.setattr(models, "MAX_LAYERS", 2)  # save refuses what load would: shown on a small model
    with pytest.raises(ValueError, match="^Sequential.save: the model has 3 layers, more than the 2"):
        small_model().save(tmp_path / "x.npz")


@pytest.mark.parametrize("depth, why", [(100_000, "recursion"), (150, "limit")])
def test_deep_json_nesting(saved, depth, why):
    path, arrays, header = saved
    text = json.dumps(header)
    nested = "[" * depth + "]" * depth
    arrays["header"] = np.array(text[:-1] + ', "metadata": ' + nested + "}")  # the later key wins
    write_npz(path, arrays)
    refused(path, "the header JSON nests deeper than 100 levels")


def test_save_refuses_metadata_that_load_would_refuse(tmp_path):
    deep = []
    for _ in range(120):
        deep = [deep]
    with pytest.raises(ValueError, match="^Sequential.save: metadata nests deeper than 99 levels"):
        small_model().save(tmp_path / "m.npz", metadata={"deep": deep})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("state, problem", [
    ({"bit_generator": "PCG64", "state": {"state": 2**200, "inc": 1}, "has_uint32": 0, "uinteger": 0},
     "OverflowError"),
    ({"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0}, "Error"),
    ({"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 0}}, "ValueError"),
    ({"bit_generator": "PCG64"}, "Error"),
    ("PCG64", "TypeError"),
], ids=["2**200", "negative", "other-generator", "no-state", "a-string"])
def test_bad_generator_state(saved, state, problem):
    path, arrays, header = saved
    header["generators"]["lstm"] = state
    write_npz(path, arrays, header)
    refused(path, rf"the generator state of layer 'lstm' is invalid \(\w*{problem}")


def test_generator_state_for_an_unknown_layer(saved):
    path, arrays, header = saved
    header["generators"]["ghost"] = header["generators"]["lstm"]
    write_npz(path, arrays, header)
    refused(path, r"header 'generators' has entries for \['dense', 'embedding', 'ghost', 'lstm'\]")


@pytest.fixture(scope="module")
def bomb():
    """A .npy member of 16 MiB of zeros, which deflates to about 16 KiB."""
    array = np.zeros(4 * 2**20, dtype=np.float32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.npy", "w") as member:
            np.lib.format.write_array(member, array)
    with zipfile.ZipFile(buffer) as archive:
        info = archive.getinfo("bomb.npy")
        assert info.file_size > 1000 * info.compress_size  # it is a bomb
        return archive.read("bomb.npy")


@pytest.mark.parametrize("name, match", [
    ("junk.npy", r"unknown member 'junk.npy'"),
    ("param/dense.kernel.npy", r"member 'param/dense.kernel' is compressed \(method 8, \d+ bytes declaring 16777344"),
    ("header.npy", r"member 'header' is compressed"),
])
def test_deflate_bomb_is_refused_without_inflating_it(saved, bomb, monkeypatch, name, match):
    path, arrays, _ = saved
    members = members_of(arrays)
    with zipfile.ZipFile(path, "w") as archive:
        for member_name, data in members.items():
            if member_name != name:
                archive.writestr(member_name, data)
        archive.writestr(name, bomb, compress_type=zipfile.ZIP_DEFLATED)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, member, *a, **k: opened.append(getattr(member, "filename", member))
                        or real_open(self, member, *a, **k))
    refused(path, match)
    assert opened == []  # refused from the directory alone: nothing was read, let alone inflated


@pytest.mark.parametrize("extra, match", [
    ({"extra.npy": np.zeros(2, np.float32)}, r"unknown member 'extra.npy'"),
    ({"README.txt": b"hello"}, r"unknown member 'README.txt'"),
    ({"param/dense.ghost.npy": np.zeros(2, np.float32)},
     r"weights for parameters the architecture does not have: \['dense.ghost'\]"),
    ({"optimizer/ghost.npy": np.zeros((), np.float64)},
     r"optimizer state members \['ghost'\] are not in the header's keys"),
    ({"param/.npy": np.zeros(2, np.float32)}, r"unknown member 'param/.npy'"),
], ids=["top-level", "not-npy", "weight", "optimizer", "empty-name"])
def test_unknown_member(saved, extra, match):
    path, arrays, _ = saved
    members = members_of(arrays)
    for name, value in extra.items():
        members[name] = value if isinstance(value, bytes) else npy_bytes(value)
    write_zip(path, members)
    refused(path, match)


def test_duplicate_member(saved):
    path, arrays, _ = saved
    members = members_of(arrays)
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
            archive.writestr("param/dense.bias.npy", npy_bytes(np.ones(1, np.float32)))
    refused(path, r"member 'param/dense.bias.npy' appears twice")


@pytest.mark.parametrize("version, match", [
    (True, r"header 'version' is True, expected the integer 1"),
    ("1", r"header 'version' is '1', expected the integer 1"),
    (1.0, r"header 'version' is 1.0, expected the integer 1"),
    (None, r"header 'version' is None, expected the integer 1"),
    (2, r"checkpoint version 2 is not supported; this rnnext reads version 1"),
    (0, r"checkpoint version 0 is not supported"),
])
def test_wrong_version(saved, version, match):
    path, arrays, header = saved
    header["version"] = version
    write_npz(path, arrays, header)
    refused(path, match)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.float64, ">f4", np.complex64, np.bool_])
def test_weights_of_another_dtype_are_refused_not_cast(saved, dtype):
    path, arrays, header = saved
    arrays["param/lstm.kernel"] = arrays["param/lstm.kernel"].astype(dtype)
    write_npz(path, arrays)
    found = np.dtype(dtype)
    message = refused(path, r"weight 'lstm.kernel' has shape \(2, 12\) and dtype .*, expected \(2, 12\) float32"
                      if found.kind != "c" else r"member 'param/lstm.kernel' has dtype complex64, expected numbers")
    assert str(found) in message


@pytest.mark.parametrize("shape", [(12, 2), (2, 12, 1), (), (0,), (2, 11)])
def test_wrong_weight_shape(saved, shape):
    path, arrays, _ = saved
    arrays["param/lstm.kernel"] = np.zeros(shape, np.float32)
    write_npz(path, arrays)
    refused(path, re.escape(f"weight 'lstm.kernel' has shape {shape} and dtype float32, expected (2, 12) float32"))


@pytest.mark.parametrize("key, value, match", [
    ("m.1", np.zeros((3, 3), np.float32), r"optimizer state 'm.1' has shape \(3, 3\) and dtype float32, "
                                          r"expected \(2, 12\) float32 \(parameter 'lstm.kernel'\)"),
    ("m.1", np.zeros((2, 12), np.float16), r"optimizer state 'm.1' has shape \(2, 12\) and dtype float16"),
    ("lr", np.zeros(2**10), r"optimizer state 'lr' has shape \(1024,\), expected a number"),
    ("m.99", np.zeros(3), r"optimizer state 'm.99' has shape \(3,\), expected a number"),
    ("lr", np.array("0.1"), r"optimizer state 'lr' has dtype <U3, expected numbers"),
])
def test_bad_optimizer_state(saved, key, value, match):
    path, arrays, header = saved
    arrays[f"optimizer/{key}"] = value
    if key not in header["optimizer"]["keys"]:
        header["optimizer"]["keys"].append(key)
    write_npz(path, arrays, header)
    refused(path, match)


@pytest.mark.parametrize("entry, match", [
    ("Adam", r"header 'optimizer' is malformed"),
    ({"class": "Adam", "params": "lstm.kernel", "keys": []}, r"header 'optimizer' is malformed"),
    ({"class": "Adam", "params": ["ghost"], "keys": []}, r"the optimizer refers to unknown parameters \['ghost'\]"),
])
def test_malformed_optimizer_entry(saved, entry, match):
    path, arrays, header = saved
    header["optimizer"] = entry
    write_npz(path, arrays, header)
    refused(path, match)


def test_random_bytes(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    message = refused(path, r"not a readable rnnext checkpoint \(.npz\): not a zip archive")
    assert "pickle" not in message


@pytest.mark.parametrize("cut", [0, 1, 100, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_file(saved, cut):
    path, _, _ = saved
    data = path.read_bytes()
    end = cut if isinstance(cut, int) else int(len(data) * cut)
    path.write_bytes(data[:end])
    refused(path, r"not a readable rnnext checkpoint \(.npz\): not a zip archive")


def test_a_zip_directory_whose_members_run_past_the_file(saved):
    # The central directory is intact but the members before it are cut out: the offsets point past the end.
    path, _, _ = saved
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        start = archive.start_dir
    path.write_bytes(data[:200] + data[start:])
    refused(path, r"member '[\w/.]+' (starts at byte|: no zip local header|declares)|not a zip archive")


def test_corrupted_weight_bytes_fail_the_crc(saved):
    path, arrays, _ = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("param/lstm.recurrent_kernel.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # inside the array data
    path.write_bytes(bytes(data))
    refused(path, r"member 'param/lstm.recurrent_kernel' is damaged \(BadZipFile: Bad CRC-32 for file "
                  r"'param/lstm.recurrent_kernel.npy'\)")


def test_overlapping_members_are_refused(saved):
    # Two directory entries pointing at the same bytes (how non-recursive zip bombs multiply their size).
    path, _, _ = saved
    with zipfile.ZipFile(path) as archive:
        start = archive.start_dir
        kernel = archive.getinfo("param/dense.kernel.npy")
    data = bytearray(path.read_bytes())
    entry = data.index(b"param/dense.bias.npy", start) - 46  # a central directory entry: 46 bytes, then the name
    assert data[entry:entry + 4] == b"PK\x01\x02"
    data[entry + 42:entry + 46] = kernel.header_offset.to_bytes(4, "little")  # its local header's offset
    path.write_bytes(bytes(data))
    refused(path, r"member 'param/dense.(bias|kernel)' starts at byte \d+, outside the space left for members")


def test_a_single_npy_instead_of_an_npz(tmp_path):
    path = tmp_path / "m.npz"
    with open(path, "wb") as file:
        np.save(file, np.zeros(3, np.float32))
    refused(path, r"it holds a single .npy array, expected an .npz archive")


@pytest.mark.parametrize("member", ["param/dense.bias", "header", "optimizer/lr"])
def test_pickled_object_arrays_are_refused_unread(saved, member, monkeypatch):
    path, arrays, _ = saved
    arrays[member] = np.array([{"a": 1}, None], dtype=object)
    members = members_of(arrays)  # written with allow_pickle=True, as an attacker would
    write_zip(path, members)
    monkeypatch.setattr(np.lib.format, "read_array", None)  # no member's data is read, pickled or not
    refused(path, rf"member '{member}' holds pickled objects \(dtype object\); checkpoints are read without pickle")


@pytest.mark.parametrize("member, match", [
    ("header", r"not an rnnext checkpoint \(the archive has no 'header' entry\)"),
    ("param/lstm.bias", r"weights missing for \['lstm.bias'\]"),
    ("optimizer/m.1", r"optimizer state missing for keys \['m.1'\]"),
])
def test_missing_member(saved, member, match):
    path, arrays, _ = saved
    del arrays[member]
    write_npz(path, arrays)
    refused(path, match)


@pytest.mark.parametrize("header, match", [
    (np.array(["a", "b"]), r"member 'header' has shape \(2,\) and dtype <U1, expected a 0-d string"),
    (np.float32(1), r"member 'header' has shape \(\) and dtype float32, expected a 0-d string"),
    (np.array("{not json"), r"the header is not valid JSON"),
    (np.array("[1, 2]"), r"the header is a JSON list, expected an object"),
    (np.array('{"format": "rnnext-checkpoint", "version": 1, "model": {}, "extra": 1}'),
     r"the header has unknown entries \['extra'\]"),
])
def test_malformed_header(saved, header, match):
    path, arrays, _ = saved
    arrays["header"] = header
    write_npz(path, arrays)
    refused(path, match)


def test_encrypted_member_flag(saved):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    entry = bytes(data).find(b"PK\x01\x02")
    data[entry + 8] |= 0x1  # general purpose flag bit 0 of the first central directory entry
    path.write_bytes(bytes(data))
    refused(path, r"member '[\w/.]+' is encrypted")


def test_random_damage_ends_in_value_errors_naming_the_path(saved):
    """Flipped bytes and cuts anywhere in a valid file: loading gives a checkpoint or ValueError, nothing else."""
    path, _, _ = saved
    original = path.read_bytes()
    rng = np.random.default_rng(10)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(200):
        data = bytearray(original)
        for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[position] = int(rng.integers(0, 256))
        if trial % 5 == 0:
            data = data[:int(rng.integers(0, len(data)))]
        path.write_bytes(bytes(data))
        try:
            load(path)
            outcomes["loaded"] += 1
        except ValueError as error:
            assert str(error).startswith(f"load: {path}: "), str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_missing_and_unreadable_files_stay_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# saving: temporary files

STALE = ".m.npz.rnnext-save.0123456789ab.tmp"
LOOKALIKES = [
    ".m.npz.0123456789ab.tmp",                          # the earlier scheme: maybe a live save by an older rnnext
    ".m.npz.rnnext-save.0123456789ab.tmp.bak",
    ".m.npz.rnnext-save.0123456789AB.tmp",
    ".m.npz.rnnext-save.0123456789a.tmp",
    ".other.npz.rnnext-save.0123456789ab.tmp",          # another path's
    ".mm.npz.rnnext-save.0123456789ab.tmp",
    ".m.npz.x.rnnext-save.0123456789ab.tmp",            # path "m.npz.x"'s
    "m.npz.rnnext-save.0123456789ab.tmp",
]


def temporaries(directory):
    return sorted(name for name in os.listdir(directory) if ".rnnext-save." in name)


def test_a_save_removes_stale_temporaries_of_its_path_only(tmp_path):
    for name in [STALE] + LOOKALIKES:
        (tmp_path / name).write_bytes(b"PK\x03\x04 left by a killed save")
    small_model().save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz"] + LOOKALIKES)
    assert load(tmp_path / "m.npz").count_params() == small_model().count_params()


def test_a_save_leaves_a_locked_temporary_alone(tmp_path):
    live = tmp_path / STALE
    with open(live, "wb") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # as a save in progress holds it (another open file: a conflict)
        small_model().save(tmp_path / "m.npz")
        assert live.exists()
    small_model().save(tmp_path / "m.npz")
    assert not live.exists()


def test_a_save_does_not_follow_a_symlink_named_like_a_temporary(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, tmp_path / STALE)
    small_model().save(tmp_path / "m.npz")
    assert victim.read_bytes() == b"keep" and os.path.islink(tmp_path / STALE)


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "Ctrl-C"])
def test_a_failed_save_removes_its_temporary(tmp_path, monkeypatch, failure):
    path = tmp_path / "m.npz"
    small_model(seed=1).save(path)
    before = path.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        assert len(temporaries(tmp_path)) == 1
        raise failure

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(type(failure)):
        small_model(seed=2).save(path)
    assert os.listdir(tmp_path) == ["m.npz"] and path.read_bytes() == before


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from rnnext.layers import Embedding, LSTM, Dense
    from rnnext.models import Sequential

    path = sys.argv[1]
    model = Sequential([Embedding(5, 2, seed=0), LSTM(3, seed=1), Dense(1, seed=2)], input_shape=(4,))
    model.save(path)
    real_savez = np.savez

    def savez_then_wait(file, **arrays):
        real_savez(file, **arrays)  # the whole archive written, not yet renamed
        print("temporary written", flush=True)
        sys.stdin.read()  # blocks until the parent kills us

    np.savez = savez_then_wait
    Sequential([Embedding(5, 2, seed=7), LSTM(3, seed=8), Dense(1, seed=9)], input_shape=(4,)).save(path)
""")


def test_a_save_cleans_up_after_a_save_killed_by_sigkill(tmp_path):
    path = tmp_path / "m.npz"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "temporary written\n"  # the kill point, by construction
        [left] = temporaries(tmp_path)
        # While the child lives, its save is in progress: another save must leave its file alone.
        small_model(seed=3).save(tmp_path / "m.npz")
        assert temporaries(tmp_path) == [left]
        os.remove(path)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert temporaries(tmp_path) == [left]  # what the issue found: nothing removes it by itself
    # ... until the next save to the same path, which writes its own file intact.
    model = small_model(seed=4)
    model.save(path)
    assert os.listdir(tmp_path) == ["m.npz"]
    loaded = load(path)
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(a.value, b.value, err_msg=name)


HEADER_VALUES = [None, True, 0, -1, 2**70, 1.5, float("nan"), float("inf"), "x", [], {}, [1], {"a": 1}, "float16",
                 "object"]


def test_any_header_value_replaced_ends_in_a_checkpoint_or_a_value_error(saved):
    """Every entry of a valid header (the architecture's included) swapped for values of other types and sizes:
    a sample of 150 of the pairs, each loaded or refused with ValueError, never another exception."""
    path, arrays, header = saved

    def places(value, where=()):
        yield where
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            yield from places(child, where + (key,))

    cases = [(where, value) for where in places(header) if where for value in HEADER_VALUES]
    rng = np.random.default_rng(6)
    for index in rng.choice(len(cases), size=150, replace=False):
        where, value = cases[index]
        changed = json.loads(json.dumps(header))
        target = changed
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        write_npz(path, arrays, changed)
        try:
            load(path)
        except ValueError as error:
            assert str(error).startswith(f"load: {path}: "), (where, value, str(error))
