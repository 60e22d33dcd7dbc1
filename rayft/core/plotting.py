"""Matplotlib figures, headless (the Agg backend): made and saved the same way everywhere rayft draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(width: float = 6, height: float = 3.5) -> tuple[Any, Any]:
    """A (figure, axes) pair on the Agg backend, 100 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def finish(fig: Any, path: Path | None = None) -> Any:
    """Lay the figure out, write it to `path` (its folder made) when given, and release pyplot's
    hold on it (a returned figure can still be drawn, e.g. by Gradio)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    plt.close(fig)
    return fig
