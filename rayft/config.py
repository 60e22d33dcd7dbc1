"""The schema of rayft's one YAML file (pydantic v2; unknown keys are errors).

A run is a `Pipeline`: the base `model`, an `adapter` (LoRA or full fine-tuning), `data`,
an ordered list of `stages`, and the `training` / `scaling` / `storage` / `eval` settings.
Top-level `data` and `training` are defaults; a stage may override any of their fields
(`stages: [{type: sft, training: {lr: 1e-4}}]`), and the merged result is validated as a whole,
so an error in an override still names its full dotted path.

Loading, `--set` overrides and error messages live in `rayft.config_io`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayft.config_scale import DeepSpeedOptions, FSDPOptions, QuantizationConfig, check_scaling
from rayft.tune.config import TuneConfig
from rayft.serve.config import ServeConfig
from rayft.cluster.config import ClusterConfig

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    name: str = Field(
        DEFAULT_MODEL,
        description="`builtin:<name>` (see `rayft models`), a local Hugging Face model directory, "
        "or a hub id (needs a reachable hub).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; `auto` is bfloat16 on GPU workers and float32 on CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; flash_attention_2 needs a GPU and the flash-attn package.")
    trust_remote_code: bool = Field(False, description="Allow model code shipped with a hub model.")
    revision: str | None = Field(None, description="Hub revision (hub ids only).")
    quantization: QuantizationConfig | None = Field(
        None, description="Load the base quantized with bitsandbytes and train LoRA on top (QLoRA): `4bit` "
        "(NF4, double quant), `8bit`, or a section (see model.quantization.*). null: unquantized.")


class AdapterConfig(Strict):
    type: Literal["lora", "full"] = Field(
        "lora", description="`lora`: train a PEFT LoRA adapter; `full`: train every weight."
    )
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="`all-linear` or a list of module names, e.g. [q_proj, v_proj]."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train (PEFT `bias`).")
    init_from: str | None = Field(
        None, description="Start from an existing PEFT adapter directory instead of a fresh one."
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return v


class DedupConfig(Strict):
    exact: bool = Field(True, description="Drop rows whose normalised text repeats an earlier row.")
    near: bool = Field(False, description="Also drop near-duplicates (MinHash LSH, datasketch).")
    threshold: float = Field(0.85, gt=0, le=1, description="Estimated Jaccard similarity of word "
                             "5-grams at or above which a row is a near-duplicate.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed).")


class SourceConfig(Strict):
    path: str = Field(description="A file, a folder of files, or `hf:<dataset>[:<split>]` (a `datasets` "
                      "load spec; needs the dataset in the local cache or a reachable hub).")
    weight: float = Field(1.0, gt=0, description="Mixing weight: 2 repeats the source twice, 0.5 takes a "
                          "seeded half of it.")
    format: Literal["auto", "instruction", "qa", "chat", "text", "prompt_completion", "preference"] | None = Field(
        None, description="This source's format (default: data.format).")
    columns: dict[str, str] = Field(default_factory=dict, description="Column mapping for this source "
                                    "(merged over data.columns).")


class DataConfig(Strict):
    path: str | list[str] | None = Field(
        None, description="A jsonl/json/csv/parquet file, a folder of them, `hf:<dataset>[:<split>]`, or a "
        "list of these. Relative paths are resolved against the config file's directory.",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Several sources mixed with weights (instead of `path`).")
    format: Literal["auto", "instruction", "qa", "chat", "text", "prompt_completion", "preference"] = Field(
        "auto",
        description="Row format: `instruction` (instruction/input/output), `qa` (question/answer), "
        "`chat` (messages), `text` (raw text), `prompt_completion`, `preference` (prompt/chosen/rejected); "
        "`auto` detects from the columns.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map rayft's column names to yours, e.g. {question: prompt_text, answer: reply}.",
    )
    template: str = Field(
        "auto",
        description="`auto`, `alpaca`, `qa`, `chat` (the tokenizer's chat template), `none`, or a "
        "template string with {placeholders} for the row's fields.",
    )
    max_length: int = Field(512, ge=8, description="Maximum tokens per example.")
    truncation_side: Literal["right", "left"] = Field(
        "right", description="Cut long examples at the end (`right`) or the start (`left`); counted in the stats.")
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt tokens.")
    add_eos: bool = Field(True, description="Append EOS so the tuned model learns to stop.")
    packing: bool = Field(False, description="Pack several training examples per row (up to max_length), "
                          "isolated by a block-diagonal causal mask; eval rows stay unpacked.")
    eval_path: str | None = Field(None, description="A separate held-out file (else split).")
    eval_split: float = Field(
        0.1, ge=0, description="Held-out share (< 1) or count (>= 1) taken from `path`."
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="Bad rows (invalid JSON, missing field, wrong type, empty answer, not UTF-8): `fail` "
        "lists every one (file:line and reason); `skip` drops them and counts them by reason.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal, before the split.")
    max_rows: int | None = Field(None, ge=1, description="Use only the first N training rows (after the split).")
    seed: int = Field(42, description="Seed of the held-out split.")

    @field_validator("eval_split")
    @classmethod
    def _whole_count(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("a count (>= 1) must be a whole number; a share must be < 1")
        return v

    @model_validator(mode="after")
    def _path_or_sources(self) -> "DataConfig":
        if self.path is not None and self.sources:
            raise ValueError("give either `path` or `sources`, not both")
        return self

    def source_list(self) -> list[SourceConfig]:
        """`sources`, or `path` (one or more) as sources of weight 1."""
        if self.sources:
            return self.sources
        paths = [self.path] if isinstance(self.path, str) else list(self.path or [])
        return [SourceConfig(path=p) for p in paths]


class TrainingConfig(Strict):
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (when max_steps is -1).")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 uses `epochs`.")
    batch_size: int = Field(8, ge=1, description="Per-worker micro-batch size.")
    eval_batch_size: int | None = Field(None, ge=1, description="Per-worker eval batch size (default: batch_size).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the steps spent warming up the lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optim: str = Field("adamw_torch", description="A transformers optimizer name (e.g. adamw_torch, adafactor).")
    seed: int = Field(42, description="Seed of model init, dropout and data order.")
    logging_steps: int = Field(10, ge=1, description="Log (and print progress) every N steps.")
    eval_steps: int | None = Field(None, ge=1, description="Eval loss every N steps (null: once, at the end).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (null: no intermediate checkpoints).")
    save_total_limit: int = Field(2, ge=1, description="Keep the last K checkpoints.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="`auto`: bf16 on GPU when supported, fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save memory (GPU workers only; ignored on CPU).")
    strategy: Literal["ddp", "deepspeed", "fsdp"] = Field(
        "ddp", description="`ddp`: every worker holds the whole model; `deepspeed`: ZeRO sharding (see "
        "training.deepspeed); `fsdp`: PyTorch FSDP2 through transformers (see training.fsdp). See docs/scaling.md.")
    deepspeed: DeepSpeedOptions = Field(default_factory=DeepSpeedOptions, description="With strategy: deepspeed.")
    fsdp: FSDPOptions = Field(default_factory=FSDPOptions, description="With strategy: fsdp.")


class ScalingConfig(Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one process each).")
    use_gpu: bool = Field(False, description="One GPU per worker (unless resources_per_worker says otherwise).")
    resources_per_worker: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1},
        description="Ray resources per worker, e.g. {CPU: 4, GPU: 1}.",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement group strategy for the workers.")
    max_failures: int = Field(0, ge=-1, description="Restarts after a worker failure (-1: no limit).")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per CPU worker (default: its CPU resources)."
    )


class StorageConfig(Strict):
    path: str = Field("runs", description="Where run directories go (shared storage on a cluster).")


class EvalConfig(Strict):
    enabled: bool = Field(True, description="After training, answer held-out rows with the base and the "
                          "tuned model and write report.md (`rayft eval` does it on demand).")
    num_examples: int = Field(50, ge=1, description="Held-out rows to generate answers for.")
    max_new_tokens: int = Field(64, ge=1, description="Generation length limit per answer.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together.")
    compare_base: bool = Field(True, description="Also answer with the base model, side by side.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    models: dict[str, str] = Field(
        default_factory=dict, description="More models to evaluate, label -> path: a PEFT adapter folder, a "
        "merged / full HF model folder, or a run's stage folder (e.g. runs/x/sft). With `rayft eval CONFIG` "
        "these are the models compared with the base.")
    perplexity: bool = Field(True, description="Teacher-forced loss and perplexity of each model on the "
                             "held-out answers (answer tokens only).")
    reward_model: str | None = Field(
        None, description="A reward stage's folder (or its adapter/model): on preference data, its pairwise "
        "accuracy (chosen scored above rejected) is reported.")
    dpo_beta: float = Field(0.1, gt=0, description="beta of the implicit DPO reward beta * (log p_model - "
                            "log p_base) reported per model on preference data.")
    num_workers: int = Field(1, ge=1, description="Ray workers to spread generation over (1: in this process).")


class MLflowConfig(Strict):
    tracking_uri: str = Field(description="MLflow tracking URI, e.g. `file:///shared/mlruns` or "
                              "`http://mlflow:5000`.")
    experiment: str = Field("rayft", description="MLflow experiment name.")


class TrackingConfig(Strict):
    tensorboard: bool = Field(True, description="TensorBoard event files in each stage's tensorboard/ folder.")
    mlflow: MLflowConfig | None = Field(None, description="Also log params and per-step metrics to MLflow "
                                        "(rank 0 of each stage; one MLflow run per stage).")


class StageBase(Strict):
    name: str | None = Field(None, description="Directory name of the stage (default: its type).")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataConfig = Field(default_factory=DataConfig)


class SFTStage(StageBase):
    type: Literal["sft"] = Field("sft", description="Supervised fine-tuning (TRL SFTTrainer).")


class RewardStage(StageBase):
    type: Literal["reward"] = Field("reward", description="Reward model: a scalar head on the base, trained "
                                    "on preference pairs (TRL RewardTrainer).")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pull mean rewards towards 0 (TRL's auxiliary loss); null: off.")


class DPOStage(StageBase):
    type: Literal["dpo"] = Field("dpo", description="Direct Preference Optimization (TRL DPOTrainer); the "
                                 "reference is the base with the adapter disabled.")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                       "aot", "apo_zero", "apo_down", "discopop", "sigmoid_norm"] = Field(
        "sigmoid", description="DPO loss variant (TRL names).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed label noise (robust/cDPO).")


class ORPOStage(StageBase):
    type: Literal["orpo"] = Field("orpo", description="Odds-Ratio Preference Optimization (TRL experimental); "
                                  "no reference model.")
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (lambda in the paper).")


class CPOStage(StageBase):
    type: Literal["cpo"] = Field("cpo", description="Contrastive Preference Optimization (TRL experimental).")
    beta: float = Field(0.1, gt=0, description="Temperature of the preference loss.")
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field("sigmoid", description="CPO loss variant.")
    cpo_alpha: float = Field(1.0, ge=0, description="Weight of the NLL (behaviour-cloning) term.")
    simpo_gamma: float = Field(0.5, description="Target reward margin for loss_type simpo.")


class KTOStage(StageBase):
    type: Literal["kto"] = Field("kto", description="Kahneman-Tversky Optimization (TRL KTOTrainer): preference "
                                 "pairs are unpaired into desirable / undesirable completions.")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of desirable (chosen) completions.")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of undesirable (rejected) completions.")


class GRPOStage(StageBase):
    type: Literal["grpo"] = Field("grpo", description="Group Relative Policy Optimization (TRL GRPOTrainer): "
                                  "sampled completions scored by reward functions.")
    rewards: list[str] = Field(
        min_length=1, description="Reward sources, summed: `module:function` (a Python function "
        "`f(prompts, completions, **row) -> list[float]`) or `stage:<name>` (a reward model trained by an "
        "earlier stage of this pipeline).")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, description="Tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    beta: float = Field(0.0, ge=0, description="KL coefficient against the reference (0: no reference needed).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("dapo", description="Loss aggregation.")


class PPOStage(StageBase):
    type: Literal["ppo"] = Field("ppo", description="Proximal Policy Optimization (rayft's own, TRL has none): "
                                 "rollouts, reward, KL to the reference, value-head critic, GAE, clipped losses.")
    rewards: list[str] = Field(
        min_length=1, description="Reward sources, summed: `module:function` (`f(prompts, completions, **row) "
        "-> list[float]`) or `stage:<name>` (a reward model trained by an earlier stage).")
    max_new_tokens: int = Field(32, ge=1, description="Tokens per rollout completion.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling mass.")
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty against the reference (adapter off); "
                           "the starting value when `kl_target` is set.")
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive KL control (Ziegler et al. 2019): after each step the coefficient moves "
        "towards keeping the sequence KL near this many nats. null: `kl_coef` stays fixed.")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL: sequences over which the coefficient may "
                            "change by about e^0.2 (larger: slower).")
    gamma: float = Field(1.0, gt=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="Lambda of GAE.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clipping.")
    clip_range_value: float = Field(0.2, gt=0, description="Value clipping around the rollout's values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(4, ge=1, description="Sequences per PPO minibatch (per worker).")
    whiten_advantages: bool = Field(True, description="Normalise advantages to zero mean, unit variance.")
    reference: Literal["shared", "copy"] = Field(
        "shared", description="`shared`: the reference runs on the policy's own base weights (adapter "
        "disabled, or the starting adapter kept frozen); `copy`: a separate frozen model (needed for "
        "adapter.type full; twice the memory).")


# New stage types join this union (one class each) and the registry in rayft.stages.
StageConfig = Annotated[Union[SFTStage, RewardStage, DPOStage, ORPOStage, CPOStage, KTOStage, GRPOStage, PPOStage],
                        Field(discriminator="type")]


class Pipeline(Strict):
    """One rayft run: a base model and an ordered list of training stages."""

    run_name: str | None = Field(
        None, description="Run directory name; default `<config name>-<timestamp>`. Naming a run "
        "lets a re-run skip its completed stages.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    stages: list[StageConfig] = Field(
        default_factory=lambda: [SFTStage()], min_length=1,
        description="Ordered training stages; each starts from the previous stage's output.")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneConfig | None = Field(None, description="A Ray Tune sweep (`rayft tune`): search space, metric, "
                                    "scheduler, search algorithm. `rayft train` ignores it. See docs/tune.md.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`rayft serve`: the OpenAI-compatible "
                               "Ray Serve app for this model, its adapters and merged models.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Kubernetes (KubeRay) settings "
                                   "for `rayft k8s render`; local runs ignore them.")

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, raw: Any) -> Any:
        """Fill each stage's `training` / `data` from the top level, stage keys winning."""
        if not isinstance(raw, dict):
            return raw
        if "stages" not in raw:
            raw = {**raw, "stages": [{"type": "sft"}]}
        if not isinstance(raw["stages"], list):
            return raw
        merged = []
        for stage in raw["stages"]:
            if isinstance(stage, dict):
                stage = dict(stage)
                for section in ("training", "data"):
                    base, own = raw.get(section) or {}, stage.get(section) or {}
                    if isinstance(base, dict) and isinstance(own, dict):
                        stage[section] = {**base, **own}
            merged.append(stage)
        return {**raw, "stages": merged}

    @model_validator(mode="after")
    def _unique_stage_names(self) -> "Pipeline":
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage.name is None:
                stage.name = stage.type if stage.type not in seen else f"{stage.type}{i}"
            if stage.name in seen:
                raise ValueError(f"stages.{i}.name: '{stage.name}' is used by an earlier stage")
            seen.add(stage.name)
        return self

    @model_validator(mode="after")
    def _search_paths_exist(self) -> "Pipeline":
        """Every `tune.search_space` path names a field that a trial may change."""
        from rayft.tune.space import check_path

        problems = [p for p in (check_path(path, type(self)) for path in (self.tune.search_space if self.tune else {}))
                    if p]
        if problems:
            raise ValueError("tune.search_space: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _batch_shapes(self) -> "Pipeline":
        """Batch constraints of the group / unpaired stages, caught before any worker starts."""
        for i, stage in enumerate(self.stages):
            problem = check_group_batches(self, i)
            if problem:
                raise ValueError(problem)
            if stage.type == "kto" and stage.training.batch_size < 2:
                raise ValueError(f"stages.{i}.training.batch_size: KTO estimates its KL term within a batch, "
                                 f"so each worker needs at least 2 rows (got {stage.training.batch_size})")
        return self

    @model_validator(mode="after")
    def _scaling_combinations(self) -> "Pipeline":
        problem = check_scaling(self)  # rayft.config_scale: strategy / precision / quantization
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _reward_stages_exist(self) -> "Pipeline":
        for i, stage in enumerate(self.stages):
            for spec in getattr(stage, "rewards", None) or []:
                name = spec[len("stage:"):] if spec.startswith("stage:") else None
                earlier = {s.name: s.type for s in self.stages[:i]}
                if name is not None and earlier.get(name) != "reward":
                    raise ValueError(f"stages.{i}.rewards: '{spec}' names no earlier `reward` stage of this "
                                     f"pipeline (earlier stages: {', '.join(earlier) or 'none'})")
        return self


def check_group_batches(pipeline: Pipeline, index: int) -> str | None:
    """GRPO scores completions in groups of `num_generations`, so every global batch (train, and
    eval when there is held-out data) must hold whole groups. None when fine, else the message."""
    stage = pipeline.stages[index]
    if stage.type != "grpo":
        return None
    workers, t, g = pipeline.scaling.num_workers, stage.training, stage.num_generations
    train = t.batch_size * workers * t.grad_accum
    if train % g:
        return (f"stages.{index}.num_generations: GRPO needs the global batch (training.batch_size {t.batch_size} "
                f"x scaling.num_workers {workers} x training.grad_accum {t.grad_accum} = {train}) to be divisible "
                f"by num_generations ({g}); change training.batch_size or stages.{index}.num_generations")
    has_eval = stage.data.eval_path is not None or stage.data.eval_split > 0
    eval_batch = (t.eval_batch_size or t.batch_size) * workers
    if has_eval and eval_batch % g:
        return (f"stages.{index}.num_generations: GRPO needs the global eval batch (training.eval_batch_size "
                f"{t.eval_batch_size or t.batch_size} x scaling.num_workers {workers} = {eval_batch}) to be "
                f"divisible by num_generations ({g}); change training.eval_batch_size or set data.eval_split: 0")
    return None
