"""The language-model experiments train through rnnext.train.fit: exact resume, old checkpoints, time limit."""
import numpy as np
import pytest

from rnnext import data as rdata
from rnnext.experiments import char_lm
from rnnext.models import load_checkpoint
from rnnext.optim import RMSprop

from test_lm_experiments import char_args, quiet


def weights(model):
    return {name: param.value.copy() for name, param in model.named_parameters()}


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
