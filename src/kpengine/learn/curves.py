"""The training-curve PNG of a run: train and validation loss per epoch, the best epoch marked
(by validation loss, or by training loss for a run without a validation set)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kpengine.io.atomic import atomic_open  # noqa: E402


def plot_training_curve(path: str | Path, history: list[dict[str, float]], title: str = "") -> None:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    validated = all(h.get("val_loss") is not None for h in history)
    key = "val_loss" if validated else "train_loss"
    if validated:
        ax.plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="validation")
    best = min(range(len(history)), key=lambda i: history[i][key])
    ax.axvline(epochs[best], color="grey", ls=":", lw=1, label=f"best (epoch {epochs[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
