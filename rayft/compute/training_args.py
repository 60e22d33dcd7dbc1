"""Map rayft's `training` section onto transformers' TrainingArguments keywords.

Every stage's trainer config (SFTConfig, DPOConfig, ...) subclasses TrainingArguments, so one
mapping serves them all; a stage adds its own keywords on top.
"""

from __future__ import annotations

from typing import Any

from rayft.schema.sections import TrainingConfig


def precision_flags(precision: str, on_gpu: bool) -> dict[str, bool]:
    """fp32 on CPU; on GPU `auto` means bf16 where the card supports it."""
    if not on_gpu or precision == "fp32":
        return {"bf16": False, "fp16": False}
    if precision == "auto":
        import torch

        return {"bf16": torch.cuda.is_bf16_supported(), "fp16": False}
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_kwargs(cfg: TrainingConfig, *, output_dir: str, on_gpu: bool, has_eval: bool,
                    report_to: list[str] | None = None, run_name: str | None = None,
                    user_deepspeed: dict | None = None) -> dict[str, Any]:
    from rayft.compute.strategy import strategy_kwargs

    eval_every = cfg.eval_steps if has_eval else None
    kwargs = dict(
        output_dir=output_dir,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a share of the steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        # transformers 5.23 names it activation checkpointing; non-reentrant checkpointing needs no
        # inputs that require grad (LoRA's frozen embeddings) and marks DDP's buckets once per step.
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        use_cpu=not on_gpu,
        report_to=report_to or "none",  # set up by rayft.records.tracking (rank 0 only)
        run_name=run_name,
        disable_tqdm=True,  # workers print compact progress lines instead (rayft.records.progress)
        dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        **precision_flags(cfg.precision, on_gpu),
    )
    kwargs.update(strategy_kwargs(cfg, on_gpu, user_deepspeed))  # deepspeed / fsdp (rayft.compute.strategy)
    return kwargs


def elastic_grad_accum(grad_accum: int, max_workers: int, workers: int) -> int:
    """Accumulation steps that keep the global batch of `max_workers` x `grad_accum` on `workers`
    workers (the schema makes sure it divides: rayft.schema.scaling._check_elastic)."""
    total = grad_accum * max_workers
    if total % workers:
        raise ValueError(f"{workers} workers cannot keep a global batch of {total} micro-batches")
    return total // workers
