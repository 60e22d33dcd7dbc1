"""Reward model: a scalar score head on the base model, trained on preference pairs with TRL's
RewardTrainer (Bradley-Terry loss), plus `RewardScorer` to use the trained model from Python
and from the RL stages (`rewards: [stage:<name>]`).

The model is `AutoModelForSequenceClassification(num_labels=1)`; with LoRA the adapter is a PEFT
`SEQ_CLS` adapter, which saves the new `score` head beside the LoRA weights (modules_to_save), so
`adapter/` alone plus the base model rebuilds the scorer. A reward model is not a policy: the next
stage starts from the policy before it, and the reward stage itself starts from the base model
(a policy adapter from an earlier SFT stage belongs to a causal LM, not to a score head).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from rayft.errors import ModelError
from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class RewardStage(StageBase):
    type: Literal["reward"] = Field("reward", description="Reward model: a scalar head on the base, trained "
                                    "on preference pairs (TRL RewardTrainer).")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pull mean rewards towards 0 (TRL's auxiliary loss); null: off.")


@register(RewardStage)
class RewardImpl(StageImpl):
    produces_policy = False

    def starting_adapter(self, previous: Path | None) -> Path | None:
        """Only an earlier reward adapter (e.g. `adapter.init_from`) is continued; a policy is not."""
        return previous if previous is not None and is_reward_adapter(previous) else None

    def prepare_data(self, stage_cfg: RewardStage, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference

        # TRL's RewardTrainer drops pairs over max_length without a word; drop (and count) them here.
        return prepare_preference(stage_cfg.data, tokenizer, stage="reward", drop_too_long=True)

    def load_model(self, model_path: str, pipeline: Any, adapter_cfg: Any, on_gpu: bool) -> Any:
        from rayft.models.adapters import apply_adapter

        return apply_adapter(load_reward_model(model_path, pipeline.model, on_gpu), adapter_cfg, task_type="SEQ_CLS")

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(**ctx.training_args, center_rewards_coefficient=ctx.stage.center_rewards_coefficient,
                            max_length=ctx.stage.data.max_length, dataset_num_proc=None)
        # TRL logs accuracy / margin / min, mean, max reward; evaluate() returns them with the `eval_`
        # prefix, so `eval_accuracy` (share of held-out pairs scored chosen > rejected) reaches summary.json.
        return RewardTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                             processing_class=ctx.tokenizer)


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
    if pad_token_id is None:
        pad_token_id = load_tokenizer(path, model_cfg.trust_remote_code).pad_token_id
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
            model = load_reward_model(base, model_cfg, pad_token_id=self.tokenizer.pad_token_id)
            model = PeftModel.from_pretrained(model, str(out))
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
    from rayft.train.rundir import stage_output

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
