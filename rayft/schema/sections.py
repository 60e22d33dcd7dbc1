"""The sections of the config that every run has: `model`, `adapter`, `data`, `training`,
`scaling`, `storage`, `eval`, `tracking`. Top-level `data` and `training` are defaults that a
stage may override field by field (rayft.config.pipeline merges them before validation).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from rayft.schema.base import Strict, compile_regex
from rayft.schema.filters import FilterConfig
from rayft.schema.arena import ArenaConfig
from rayft.schema.benchmarks import BenchmarksConfig
from rayft.schema.scaling import DeepSpeedOptions, FSDPOptions, QuantizationConfig

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


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
    add_special_tokens: list[str] = Field(
        default_factory=list, description="Tokens to add to the tokenizer as special tokens (never split), e.g. "
        "[\"[SOS]\", \"[SEP]\"]; the embeddings are resized, and with LoRA the new rows (and tied output rows) "
        "are trained and saved with the adapter. `data.template: chatml` adds <|im_start|> / <|im_end|> itself. "
        "Tokens the tokenizer has already are reused, not added.")
    pad_token: str | None = Field(
        None, description="The padding token, e.g. `<pad>` (added when the tokenizer lacks it); default: the "
        "tokenizer's own, else its EOS token.")

    @field_validator("add_special_tokens")
    @classmethod
    def _distinct_tokens(cls, value: list[str]) -> list[str]:
        if any(not t or t != t.strip() for t in value):
            raise ValueError("a token is empty or has spaces around it")
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value

    @field_validator("pad_token")
    @classmethod
    def _pad_is_a_token(cls, value: str | None) -> str | None:
        if value is not None and (not value or value != value.strip()):
            raise ValueError("empty, or has spaces around it")
        return value


class AdapterConfig(Strict):
    type: Literal["lora", "ia3", "full"] = Field(
        "lora", description="`lora`: train a PEFT LoRA adapter; `ia3`: a PEFT IA3 adapter (learned scaling "
        "vectors: far fewer weights than LoRA; `r`, `alpha`, `dropout` do not apply); `full`: train every weight."
    )
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="`all-linear` or a list of module names, e.g. [q_proj, v_proj]."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train (PEFT `bias`).")
    feedforward_modules: list[str] | None = Field(
        None, description="IA3: which of target_modules are feed-forward layers (scaled on their input, the "
        "others on their output); default: PEFT's choice for the architecture (Llama: down_proj, with target "
        "modules k_proj, v_proj, down_proj when target_modules is `all-linear`).")
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


# The registered row formats (rayft.data.formats.FORMATS; a test keeps the two in step) and `auto`.
RowFormatName = Literal["auto", "instruction", "qa", "chat", "sharegpt", "text", "prompt_completion",
                        "preference", "preference_implicit"]


class SourceConfig(Strict):
    path: str = Field(description="A file, a folder of files, or `hf:<dataset>[:<split>]` (a `datasets` "
                      "load spec; needs the dataset in the local cache or a reachable hub).")
    weight: float = Field(1.0, gt=0, description="Mixing weight: 2 repeats the source twice, 0.5 takes a "
                          "seeded half of it.")
    format: RowFormatName | None = Field(
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
    dataset: str | None = Field(
        None, description="A dataset named in the dataset registry (instead of `path`): its path, format, "
        "columns and held-out file, where this section does not set them.")
    registry: str | None = Field(
        None, description="The dataset registry file for `dataset` (default: datasets.yaml beside the config).")
    format: RowFormatName = Field(
        "auto",
        description="Row format: `instruction` (instruction/input/output), `qa` (question/answer), "
        "`chat` (messages), `sharegpt` (conversations: from/value), `text` (raw text), `prompt_completion`, `preference` (prompt/chosen/rejected), "
        "`preference_implicit` (chosen/rejected transcripts sharing the prompt); "
        "`auto` detects from the columns.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map rayft's column names to yours, e.g. {question: prompt_text, answer: reply}.",
    )
    template: str = Field(
        "auto",
        description="`auto`, `alpaca`, `qa`, `chat` (the tokenizer's chat template), `chatml` (ChatML, its two "
        "tokens added to the tokenizer when missing: for a base model without a chat template), `none`, or a "
        "template string with {placeholders} for the row's fields.",
    )
    max_length: int = Field(512, ge=8, description="Maximum tokens per example.")
    truncation_side: Literal["right", "left"] = Field(
        "right", description="Cut long examples at the end (`right`) or the start (`left`); counted in the stats.")
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt tokens.")
    train_on: Literal["all_turns", "last_turn"] = Field(
        "all_turns", description="Multi-turn rows: the loss on every assistant turn, or on the last one only "
        "(earlier turns are context).")
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
    filters: list[FilterConfig] = Field(default_factory=list, description="Drop rows by what they say "
                                        "(phrases, a regex, length, repetition), before dedup and the split; "
                                        "each drop counted under its filter (docs/data.md).")
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
        given = [name for name, value in (("path", self.path), ("sources", self.sources), ("dataset", self.dataset))
                 if value]
        if len(given) > 1:
            raise ValueError(f"give one of `path`, `sources` or `dataset`, not {' and '.join(given)}")
        return self

    def source_list(self) -> list[SourceConfig]:
        """`sources`, or `path` (one or more) as sources of weight 1."""
        if self.sources:
            return self.sources
        paths = [self.path] if isinstance(self.path, str) else list(self.path or [])
        return [SourceConfig(path=p) for p in paths]


class BestCheckpoint(Strict):
    metric: str = Field("eval_loss", description="An evaluation metric the stage reports: eval_loss, a reward "
                        "model's eval_accuracy, DPO's eval_rewards/accuracies, ... (the `eval_` prefix may be left out).")
    mode: Literal["min", "max"] = Field("min", description="`min`: lower is better (losses); `max`: higher is better.")

    @property
    def key(self) -> str:
        """The metric as the Trainer reports it at evaluation (`eval_` prefixed)."""
        return self.metric if self.metric.startswith("eval_") else f"eval_{self.metric}"


class EarlyStopping(Strict):
    patience: int = Field(3, ge=1, description="Stop after this many evaluations without an improvement.")
    min_delta: float = Field(0.0, ge=0, description="The smallest change of the metric that counts as an improvement.")


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
        True, description="Recompute each layer's activations in backward instead of keeping them: much less "
        "memory for about a quarter more compute. On by default, as in TRL's trainers; CPU and GPU workers alike "
        "(PPO's own loop does not checkpoint).")
    strategy: Literal["ddp", "deepspeed", "fsdp"] = Field(
        "ddp", description="`ddp`: every worker holds the whole model; `deepspeed`: ZeRO sharding (see "
        "training.deepspeed); `fsdp`: PyTorch FSDP2 through transformers (see training.fsdp). See docs/scaling.md.")
    deepspeed: DeepSpeedOptions = Field(default_factory=DeepSpeedOptions, description="With strategy: deepspeed.")
    fsdp: FSDPOptions = Field(default_factory=FSDPOptions, description="With strategy: fsdp.")
    best: BestCheckpoint | None = Field(
        None, description="Publish the stage's best evaluated weights instead of its last: `{metric: eval_loss, mode: "
        "min}` (needs eval_steps and held-out rows); summary.json says which step they came from. See docs/stages.md.")
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop the stage after `patience` evaluations without an improvement of best.metric "
        "(eval_loss, lower is better, when `best` is not set); it counts as completed. Needs eval_steps.")

    def selection(self) -> BestCheckpoint | None:
        """The metric that best-checkpoint selection and early stopping watch (None: neither is on)."""
        if self.best is None and self.early_stopping is None:
            return None
        return self.best or BestCheckpoint()


class ScalingConfig(Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one process each); with `min_workers`, the "
                             "most a stage grows to. An elastic range in one field: `2-4` or `{min: 2, max: 4}`.")
    min_workers: int | None = Field(
        None, ge=1, description="Elastic worker count: a stage starts with what the cluster can give (at least "
        "this many), grows to num_workers as nodes join and shrinks as they leave, resuming from its last "
        "checkpoint each time; the global batch is kept (training.grad_accum x num_workers / the workers it has). "
        "DDP only. null: exactly num_workers.")
    elastic_check_s: float = Field(60.0, gt=0, description="Elastic: how often Ray considers growing a healthy "
                                   "worker group (seconds).")
    checkpoint_on_preemption: bool = Field(
        True, description="When Ray announces that a worker's node will go (a drain with reason preemption: a "
        "spot reclaim, `ray drain-node`, a KubeRay pod's preStop hook), save a checkpoint at every step boundary "
        "until it is gone, so the restart redoes no step; and when a worker process gets SIGTERM (what Kubernetes "
        "sends a pod), save at the next step boundary, then let it exit (within 25 s).")
    max_preemptions: int = Field(-1, ge=-1, description="Restarts after a node preemption, counted apart from "
                                 "max_failures (-1: no limit).")
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

    @model_validator(mode="before")
    @classmethod
    def _worker_range(cls, raw: Any) -> Any:
        """`num_workers: 2-4` or `{min: 2, max: 4}` is `min_workers: 2, num_workers: 4`."""
        if not isinstance(raw, dict):
            return raw
        value = raw.get("num_workers")
        low = high = None
        if isinstance(value, str) and "-" in value:
            low, _, high = value.partition("-")
        elif isinstance(value, dict) and set(value) <= {"min", "max"}:
            low, high = value.get("min"), value.get("max")
        if high is None:
            return raw
        try:
            low, high = int(low), int(high)
        except (TypeError, ValueError):
            raise ValueError(f"num_workers: '{value}' is not a worker range such as 2-4 or {{min: 2, max: 4}}") from None
        if "min_workers" in raw:
            raise ValueError("num_workers: a range already says min_workers; set one or the other")
        return {**raw, "num_workers": high, "min_workers": low}

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "ScalingConfig":
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"min_workers: {self.min_workers} is more than num_workers ({self.num_workers}), the most "
                             "a stage grows to")
        return self

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None and self.min_workers < self.num_workers

    def fewest_workers(self) -> int:
        """What a stage needs to start: min_workers when elastic, else num_workers."""
        return self.min_workers if self.elastic else self.num_workers


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
    benchmarks: BenchmarksConfig | None = Field(
        None, description="Standard benchmarks through lm-evaluation-harness for the base and every tuned model "
        "(docs/evaluation.md), e.g. `{tasks: [rayft_mmlu], data_dir: data/benchmarks, limit: 100}`.")
    generate: bool = Field(True, description="Answer the held-out rows (false: benchmarks and reward scores only).")
    arena: ArenaConfig | None = Field(None, description="`rayft eval arena CONFIG`: many models, one Bradley-Terry "
                                      "ranking (docs/evaluation.md).")
    answer_pattern: str | None = Field(
        None, description="Benchmark-style exact match: a regex whose first group is the answer (e.g. "
        "`#### (\\S+)` for GSM8K, `The answer is (.+)`), applied to reference and generation alike; a "
        "generation it does not match scores 0, a reference it does not match is its own answer. "
        "ROUGE-L and BLEU stay on the whole texts.")
    normalize: list[Literal["numbers", "squad", "lowercase", "strip"]] = Field(
        default_factory=lambda: ["squad"], description="Exact-match normalisation steps (applied in the order "
        "numbers, squad, lowercase, strip): `numbers` (\"1,000\" == \"1000\", \"3.50\" == \"3.5\"), `squad` "
        "(lowercase, no punctuation or articles), `lowercase`, `strip` (whitespace, trailing full stop).")

    @field_validator("answer_pattern")
    @classmethod
    def _pattern_has_a_group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if compile_regex(value).groups < 1:
            raise ValueError("needs a group around the answer, e.g. '#### (\\S+)'")
        return value


class MLflowConfig(Strict):
    tracking_uri: str = Field(description="MLflow tracking URI, e.g. `file:///shared/mlruns` or "
                              "`http://mlflow:5000`.")
    experiment: str = Field("rayft", description="MLflow experiment name.")


class WandbConfig(Strict):
    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); default: the account's own.")
    name: str | None = Field(None, description="Run name prefix; each stage's W&B run is `<name>/<stage>` "
                             "(default: `<run directory>/<stage>`).")
    group: str | None = Field(None, description="W&B group; default: the run directory's name, so a pipeline's "
                              "stages group together (a sweep's trials: the sweep's name).")
    tags: list[str] = Field(default_factory=list, description="W&B tags on every stage's run.")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="`online` needs WANDB_API_KEY (or `wandb login`) on the workers' nodes; `offline` "
        "writes each stage's run under `<stage>/wandb/` for a later `wandb sync`; `disabled` logs nothing.")


class TrackingConfig(Strict):
    tensorboard: bool = Field(True, description="TensorBoard event files in each stage's tensorboard/ folder.")
    mlflow: MLflowConfig | None = Field(None, description="Also log params and per-step metrics to MLflow "
                                        "(rank 0 of each stage; one MLflow run per stage).")
    wandb: WandbConfig | None = Field(None, description="Also log params and per-step metrics to Weights & "
                                      "Biases (rank 0 of each stage; one W&B run per stage, a sweep's trials grouped; "
                                      "needs `pip install rayft[wandb]`).")
