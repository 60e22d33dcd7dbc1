"""A reward model in use: load one (a scalar score head on a base, `AutoModelForSequenceClassification`
with `num_labels=1`, plus a PEFT `SEQ_CLS` adapter) and score text with it, for evaluation, preference
pairs and the RL stages' `stage:<name>` rewards. The `reward` stage (rayft.stages.reward) trains it."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from rayft.core.errors import ModelError


def is_reward_adapter(path: Path) -> bool:
    try:
        return json.loads((Path(path) / "adapter_config.json").read_text()).get("task_type") == "SEQ_CLS"
    except (OSError, json.JSONDecodeError):
        return False


def load_reward_model(path: str, model_cfg: Any, on_gpu: bool = False, pad_token_id: int | None = None) -> Any:
    """`AutoModelForSequenceClassification` with one output; `config.pad_token_id` set, because the
    score is read at the last non-padding token."""
    from transformers import AutoModelForSequenceClassification

    from rayft.models.loader import load_tokenizer, torch_dtype
    from rayft.models.quantization import quantized_load_kwargs

    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning  # "score.weight newly initialized"
    except ImportError:  # pragma: no cover - older TRL
        suppress_seqcls_warning = nullcontext
    try:
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=torch_dtype(model_cfg, on_gpu),
                attn_implementation=model_cfg.attn_implementation, trust_remote_code=model_cfg.trust_remote_code,
                **quantized_load_kwargs(model_cfg, on_gpu))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot load a sequence-classification model from {path}: {exc}") from None
    from rayft.models.tokens import fit_to_config

    fit_to_config(model, path, model_cfg)
    if pad_token_id is None:
        pad_token_id = load_tokenizer(path, model_cfg.trust_remote_code, model_cfg).pad_token_id
    model.config.pad_token_id = pad_token_id
    return model


class RewardScorer:
    """Scores texts with a reward model trained by a `reward` stage.

    `RewardScorer(run_dir / "reward")` (the stage directory) or its `adapter/` / `model/` folder;
    the base model is found from the stage's saved config (or the adapter's own record) unless
    `base_model_path` is given. Texts are scored as in training: EOS is appended when missing.
    """

    def __init__(self, stage_output_dir: str | Path, base_model_path: str | None = None, device: str | None = None,
                 batch_size: int = 16):
        import torch

        from rayft.schema.sections import ModelConfig
        from rayft.models.loader import load_tokenizer

        out = _output_folder(Path(stage_output_dir))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(str(out))
        model_cfg = ModelConfig(dtype="float32")
        if (out / "adapter_config.json").is_file():
            from peft import PeftModel

            base = base_model_path or _base_model_of(out)
            from rayft.models.tokens import fit_to_folder

            model = load_reward_model(base, model_cfg, pad_token_id=self.tokenizer.pad_token_id)
            model = PeftModel.from_pretrained(fit_to_folder(model, out), str(out))
        else:
            model = load_reward_model(str(out), model_cfg, pad_token_id=self.tokenizer.pad_token_id)
        self.model = model.to(self.device).eval()

    def score(self, texts: list[str]) -> list[float]:
        import torch

        eos = self.tokenizer.eos_token or ""
        texts = [t if t.endswith(eos) else t + eos for t in texts]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**batch.to(self.device)).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores

    def score_pairs(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Scores of prompt + completion (prompts as the stage's data templated them)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.score([p + c for p, c in zip(prompts, completions)])


def reward_model_fn(stage_output_dir: Path) -> Callable[..., list[float]]:
    """A reward function `f(prompts, completions, **row) -> scores` of a reward stage's model (the
    RL stages' `stage:<name>` rewards)."""
    scorer = RewardScorer(stage_output_dir)

    def score(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return scorer.score_pairs(prompts, completions)

    return score


def _output_folder(path: Path) -> Path:
    from rayft.records.rundir import stage_output

    if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return path
    found = stage_output(path)
    if found is None:
        raise ModelError(f"{path}: not a reward model (no adapter/ or model/ folder, no adapter_config.json)")
    return found


def _base_model_of(adapter_dir: Path) -> str:
    """The base of a stage's adapter: the model named in the stage's config.yaml (resolved on this
    machine), else the path PEFT recorded at training time."""
    from rayft.models.loader import resolve_model

    stage_config = adapter_dir.parent / "config.yaml"
    if stage_config.is_file():
        import yaml

        model = (yaml.safe_load(stage_config.read_text()) or {}).get("model") or {}
        if model.get("name"):
            return resolve_model(model["name"], model.get("revision"))
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not recorded:
        raise ModelError(f"{adapter_dir}: cannot tell the base model; pass base_model_path")
    return recorded
