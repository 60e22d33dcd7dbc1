"""What the preference and RL stages share about their reference model: with LoRA it is the
policy's own base weights (no second model), and the frozen `ref` adapter copy TRL adds is not
part of a stage's output."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def check_shared_reference(trainer: Any, adapter_type: str) -> None:
    """With an adapter (LoRA, IA3) the reference shares the policy's base weights: no second model is loaded."""
    if adapter_type != "full" and trainer.ref_model is not None:
        raise RuntimeError("expected the reference to share the LoRA policy's base weights (ref_model=None); "
                           "TRL loaded a second model")


def drop_reference_copy(staging: Path) -> None:
    """PEFT saves every adapter of a model; the frozen `ref` copy TRL adds is not part of the output."""
    ref = Path(staging) / "ref"
    if (ref / "adapter_config.json").is_file():
        shutil.rmtree(ref)
