"""PNG plots of a run (matplotlib, headless): loss and eval loss, learning rate, for preference
stages the chosen and rejected answers' log-probs, and for PPO the reward and KL per step. Each
plot is written only when its series exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rayft.core.plotting import finish, new_figure

Series = Sequence[Sequence[float]]  # [(step, value), ...]


def plot_training(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """The plots a stage's final metrics allow, as files in `out_dir`."""
    paths: list[Path] = []
    loss = metrics.get("loss_history") or []
    evals = metrics.get("eval_loss_history") or []
    if loss or evals:
        paths.append(_line_plot(out_dir / "loss.png", "loss", {"train loss": (loss, "-"), "eval loss": (evals, "o-")}))
    lr = metrics.get("lr_history") or []
    if lr:
        paths.append(_line_plot(out_dir / "lr.png", "learning rate", {"learning rate": (lr, "-")}))
    preference = metrics.get("preference_history") or []
    if preference:
        paths.append(_line_plot(out_dir / "logps.png", "log-prob of the answer (sum over tokens)", {
            "chosen": ([(h["step"], h["logps_chosen"]) for h in preference], "o-"),
            "rejected": ([(h["step"], h["logps_rejected"]) for h in preference], "o-")}))
    ppo = metrics.get("ppo_history") or []
    if ppo:
        reward = [(h["step"], h["reward"]) for h in ppo if "reward" in h]
        kl = [(h["step"], h["kl"]) for h in ppo if "kl" in h]
        paths.append(_line_plot(out_dir / "reward.png", "mean reward", {"reward": (reward, "o-")}))
        paths.append(_line_plot(out_dir / "kl.png", "KL to reference (nats / sequence)", {"KL": (kl, "o-")}))
    return paths


def _line_plot(path: Path, ylabel: str, series: dict[str, tuple[Series, str]]) -> Path:
    fig, ax = new_figure()
    for label, (points, style) in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len([s for s in series.values() if s[0]]) > 1:
        ax.legend()
    finish(fig, path)
    return path


def plot_reward_histogram(chosen: Sequence[float], rejected: Sequence[float], path: Path, title: str) -> Path:
    """A reward model's scores of the chosen and of the rejected answers of the same held-out pairs,
    overlaid on shared bins: the further apart, the better the model separates them."""
    import matplotlib.ticker
    import numpy as np

    values = np.asarray(list(chosen) + list(rejected), dtype=float)
    low, high = float(values.min()), float(values.max())
    bins = np.linspace(low, high if high > low else low + 1.0, 21)
    fig, ax = new_figure()
    ax.hist(chosen, bins=bins, alpha=0.6, label=f"chosen (mean {np.mean(chosen):.3f})", color="#1a7f37")
    ax.hist(rejected, bins=bins, alpha=0.6, label=f"rejected (mean {np.mean(rejected):.3f})", color="#b42318")
    ax.set_xlabel("reward")
    ax.set_ylabel("pairs")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(f"{title}: {len(chosen)} held-out pairs", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    finish(fig, path)
    return path


def plot_winrate(matrix: dict[str, dict[str, float | None]], order: Sequence[str], path: Path) -> Path:
    """The arena's win-rate matrix: how often the row's model beat the column's (ties count half),
    models in rating order."""
    import numpy as np

    size = len(order)
    values = np.array([[np.nan if matrix[r][c] is None else matrix[r][c] for c in order] for r in order], dtype=float)
    fig, ax = new_figure(max(4.0, 1.1 * size + 2), max(3.0, 0.9 * size + 1.5))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(size), labels=list(order), rotation=30, ha="right")
    ax.set_yticks(range(size), labels=list(order))
    for i in range(size):
        for j in range(size):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_xlabel("opponent")
    ax.set_title("win rate of the row's model (ties count half)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    finish(fig, path)
    return path


def plot_confusion(confusion: list[list[int]], names: Sequence[str], path: Path, title: str) -> Path:
    """A classifier's confusion matrix: rows the true label, columns the predicted one."""
    import numpy as np

    values = np.asarray(confusion, dtype=float)
    size = len(names)
    fig, ax = new_figure(max(3.5, 0.9 * size + 2), max(3.0, 0.8 * size + 1.5))
    image = ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(size), labels=list(names), rotation=30, ha="right")
    ax.set_yticks(range(size), labels=list(names))
    for i in range(size):
        for j in range(size):
            ax.text(j, i, f"{int(values[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if values[i, j] > values.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    finish(fig, path)
    return path
