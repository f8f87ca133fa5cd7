"""What a training run reports: `History` (one row per epoch, the loss of every step, CSV and plot) and the
progress display of `fit` (a tqdm bar when tqdm is installed, else plain lines)."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

__all__ = ["History"]


class History:
    """What `fit` records: one row per epoch (`rows`) and the training loss of every step (`step_losses`).

    Each row holds `epoch` (1-based), `loss`, the training metrics, `val_loss` and `val_<metric>` when there
    is validation data, `lr` (the learning rate used during the epoch) and `seconds`. `history["val_loss"]`
    gives one column, like Keras' `history.history["val_loss"]`. An epoch cut short by fit's time limit also
    has `fraction`, the share of its batches trained. The flags say how the run ended: `stopped_early`,
    `interrupted` (Ctrl-C) and `time_limited` (not saved in checkpoints: a resumed run goes on).
    """

    def __init__(self):
        self.rows: list[dict] = []
        self.step_losses: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.interrupted = False
        self.time_limited = False

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list:
        if key not in self.columns:
            raise KeyError(f"History has no column {key!r}; columns are {self.columns}")
        return [row.get(key) for row in self.rows]

    @property
    def columns(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names.extend(k for k in row if k not in names)
        return names

    @property
    def last(self) -> dict:
        return dict(self.rows[-1]) if self.rows else {}

    def to_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "step_losses": list(self.step_losses),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "interrupted": self.interrupted}

    @classmethod
    def from_dict(cls, state: dict) -> "History":
        history = cls()
        history.rows = [dict(r) for r in state.get("rows", [])]
        history.step_losses = [float(v) for v in state.get("step_losses", [])]
        history.best_epoch = state.get("best_epoch")
        history.stopped_early = bool(state.get("stopped_early", False))
        history.interrupted = bool(state.get("interrupted", False))
        return history

    def to_csv(self, path) -> Path:
        """Write one line per epoch, with a header of all columns; missing values are empty cells."""
        path = Path(path)
        columns = self.columns
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
        return path

    def plot(self, path, title: str | None = None) -> Path:
        """Save a PNG: the loss (per step, and per epoch with validation) and one panel per metric.

        Needs matplotlib (`pip install 'rnnext[plot]'`); raises ImportError with that hint without it.
        """
        plt = pyplot()
        metric_names = [c for c in self.columns
                        if c not in ("epoch", "loss", "val_loss", "lr", "seconds") and not c.startswith("val_")]
        panels = 1 + len(metric_names)
        figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
        axes = axes[0]
        loss_axis = axes[0]
        if len(self.rows) <= 1 and self.step_losses:
            steps = np.arange(1, len(self.step_losses) + 1)
            loss_axis.plot(steps, self.step_losses, lw=0.6, alpha=0.5, label="train (per step)")
            window = max(1, len(self.step_losses) // 50)
            if window > 1:
                smooth = np.convolve(self.step_losses, np.ones(window) / window, mode="valid")
                loss_axis.plot(steps[window - 1:], smooth, label=f"train (mean of {window})")
            loss_axis.set_xlabel("step")
        else:
            epochs = self["epoch"]
            loss_axis.plot(epochs, self["loss"], marker="o", label="train")
            if "val_loss" in self.columns:
                loss_axis.plot(epochs, self["val_loss"], marker="o", label="validation")
            loss_axis.set_xlabel("epoch")
        loss_axis.set_ylabel("loss")
        loss_axis.legend()
        for axis, name in zip(axes[1:], metric_names):
            axis.plot(self["epoch"], self[name], marker="o", label="train")
            if f"val_{name}" in self.columns:
                axis.plot(self["epoch"], self[f"val_{name}"], marker="o", label="validation")
            axis.set_xlabel("epoch")
            axis.set_ylabel(name)
            axis.legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={_format_number(v)}" for k, v in self.last.items())
        return f"History({len(self.rows)} epochs, {len(self.step_losses)} steps; last: {last})"


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or an ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib, which is not installed: "
                          "pip install 'rnnext[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    return plt


def _csv_value(value):
    return repr(value) if isinstance(value, float) else value


def _format_number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A tqdm bar per epoch when tqdm is installed, else a plain line every `log_every` steps."""

    def __init__(self, enabled: bool, epochs: int, log_every: int | None):
        self.enabled, self.epochs, self.log_every = enabled, epochs, log_every
        self.bar = None
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.tqdm = tqdm
            except ImportError:
                pass

    def start_epoch(self, epoch: int, total: int | None, initial: int) -> None:
        self.epoch, self.total, self.started = epoch, total, time.perf_counter()
        self.every = self.log_every or (max(1, total // 10) if total else 100)
        if self.enabled and self.tqdm is not None:
            self.bar = self.tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{self.epochs}",
                                 unit="step", leave=False, dynamic_ncols=True)

    def update(self, step_in_epoch: int, running_loss: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step_in_epoch % 10 == 0 or step_in_epoch == self.total:
                self.bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
        elif step_in_epoch % self.every == 0:
            of = f"/{self.total}" if self.total else ""
            seconds = time.perf_counter() - self.started
            print(f"epoch {self.epoch + 1}/{self.epochs}  step {step_in_epoch}{of}  loss {running_loss:.4f}"
                  f"  ({seconds:.1f} s)", flush=True)

    def end_epoch(self, row: dict) -> None:
        self.close()
        self.write("  ".join([f"epoch {row['epoch']}/{self.epochs}:"] +
                             [f"{k} {_format_number(v)}" for k, v in row.items() if k != "epoch"]))

    def write(self, message: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.clear()
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
