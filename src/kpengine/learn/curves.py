"""The training-curve PNG of a run (train and validation loss per epoch)."""

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
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="validation")
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    ax.axvline(epochs[best], color="grey", ls=":", lw=1, label=f"best (epoch {epochs[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
