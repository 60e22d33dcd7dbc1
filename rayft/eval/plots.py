"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """loss.png: training loss (and eval loss when evaluated during training) per step."""
    loss = metrics.get("loss_history") or []
    evals = metrics.get("eval_loss_history") or []
    if not loss and not evals:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if loss:
        ax.plot([s for s, _ in loss], [v for _, v in loss], label="train loss")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
