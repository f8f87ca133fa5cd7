"""What `fit` saves beside the weights so that `resume=True` continues exactly: the random generators a run
draws from, the states stateful layers carry, and reading a training checkpoint back (with errors that name
it when its training state is damaged).

The generators come from an explicit protocol, not from searching objects: a model, a layer or a batch
source that draws random numbers has a method `generators()` returning `{name: numpy Generator}`
(`Layer`, `Sequential` and `rnnext.data.BucketIterator` have one). A batch source without it should derive
its randomness from the epoch it is called with (`np.random.default_rng([seed, epoch])`), which resumes
exactly too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layer_base
from .models import load_checkpoint

TRAIN_STATE_FORMAT = "rnnext.train/1"  # metadata["train_state"]["format"] of a training checkpoint
_DEFAULT_GENERATOR = "rnnext.layers._default_generator"  # the name checkpoints have always used for it


def _generators(owner) -> dict:
    method = getattr(owner, "generators", None)
    return dict(method()) if callable(method) else {}


class RandomState:
    """The NumPy Generators that a run draws from, split into the model's (dropout, and rnnext's default
    generator) and the data sources' (plus NumPy's legacy global RNG), with JSON-able snapshots.

    Resuming in the middle of an epoch restores the data generators to their state at the start of the epoch,
    replays the batches already trained on, and then restores the model generators to their state at the
    checkpoint: so shuffling and dropout masks both continue exactly.
    """

    def __init__(self, model, sources):
        self.model = {f"model.{name}": g for name, g in _generators(model).items()}
        self.model[_DEFAULT_GENERATOR] = layer_base.default_generator()
        self.data = {f"data{i}.{name}": g for i, source in enumerate(sources)
                     for name, g in _generators(source).items()}

    def snapshot(self) -> dict:
        legacy = np.random.get_state()
        return {
            "model": {name: g.bit_generator.state for name, g in self.model.items()},
            "data": {name: g.bit_generator.state for name, g in self.data.items()},
            "numpy_legacy": [legacy[0], legacy[1].tolist(), int(legacy[2]), int(legacy[3]), float(legacy[4])],
        }

    def restore(self, state: dict, parts=("model", "data")) -> None:
        for part in parts:
            generators = getattr(self, part)
            for name, saved in state.get(part, {}).items():
                if name in generators:
                    generators[name].bit_generator.state = saved
        legacy = state.get("numpy_legacy")
        if "data" in parts and legacy:
            np.random.set_state((legacy[0], np.asarray(legacy[1], dtype=np.uint32), legacy[2], legacy[3], legacy[4]))


def seed_everything(seed: int) -> None:
    """Seed NumPy's legacy global RNG and rnnext's default generator (used by layers built without seed=)."""
    np.random.seed(seed % 2**32)
    layer_base.seed(seed)


# ---------------------------------------------------------------------------------------------------------
# carried states of stateful layers

def stateful_layers(model) -> list:
    layers = getattr(model, "layers", None)
    layers = list(layers) if layers is not None else [model]
    return [layer for layer in layers if getattr(layer, "stateful", False)]


def copy_carried_states(model) -> list:
    """Copies of the states each stateful layer carries to its next call (None where it carries none yet)."""
    return [layer.states for layer in stateful_layers(model)]


def set_carried_states(model, carried: list) -> None:
    for layer, states in zip(stateful_layers(model), carried):
        layer.states = states


def states_to_json(carried: list) -> list:
    """Carried states as nested lists (exact: float32 and float64 values survive the round trip through JSON)."""
    return [None if states is None else
            [{"pair": isinstance(s, tuple), "arrays": [a.tolist() for a in (s if isinstance(s, tuple) else (s,))],
              "dtype": str((s[0] if isinstance(s, tuple) else s).dtype)} for s in states]
            for states in carried]


def states_from_json(saved: list) -> list:
    carried = []
    for states in saved:
        if states is None:
            carried.append(None)
            continue
        entries = []
        for entry in states:
            arrays = [np.asarray(a, dtype=entry["dtype"]) for a in entry["arrays"]]
            entries.append(tuple(arrays) if entry["pair"] else arrays[0])
        carried.append(entries)
    return carried


# ---------------------------------------------------------------------------------------------------------
# reading a training checkpoint back

def read_checkpoint(path: Path):
    """(weights {name: array}, metadata dict, optimizer state dict or None) of a checkpoint."""
    checkpoint = load_checkpoint(path)
    weights = {name: param.value for name, param in checkpoint.model.named_parameters()}
    return weights, checkpoint.metadata, checkpoint.optimizer_state


def assign_weights(model, weights: dict, path: Path) -> None:
    named = dict(model.named_parameters())
    missing = [name for name in named if name not in weights]
    if missing:
        raise ValueError(f"checkpoint {path} has no weights for {missing}; was it saved from another model?")
    for name, param in named.items():
        value = np.asarray(weights[name])
        if value.shape != param.value.shape:
            raise ValueError(f"checkpoint {path}: {name!r} has shape {value.shape}, expected {param.value.shape}")
        np.copyto(param.value, value)


def best_path(path: Path) -> Path:
    """Where fit keeps the weights of the best epoch beside checkpoint `path` (restore_best_weights)."""
    return path.with_name(path.stem + ".best" + (path.suffix or ".npz"))


def train_state(metadata, path: Path) -> dict:
    """fit's state from a checkpoint's metadata, with the carried states as arrays again."""
    state = (metadata or {}).get("train_state")
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"fit: {path} is not a training checkpoint written by rnnext.train.fit (resume=True "
                         "needs one); use rnnext.load for a plain saved model")
    with malformed_train_state(path):
        carried = state.get("carried_states")
        return {**state, "carried_states": None if carried is None else states_from_json(carried)}


class malformed_train_state:
    """Turns what a damaged or crafted training state makes the resume code raise into a ValueError naming the
    checkpoint (the weights and optimizer state were checked by load_checkpoint already)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, (KeyError, TypeError, ValueError, IndexError, AttributeError,
                                                  OverflowError)):
            raise ValueError(f"fit: {self.path}: the training state (metadata['train_state']) is malformed "
                             f"({kind.__name__}: {error})") from None
        return False
