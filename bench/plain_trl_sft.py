"""The baseline of bench/sft_throughput.py: the SFT script a user would write by hand.

One process, no Ray: the embedded SmolLM2-135M-Instruct + a PEFT LoRA adapter, trained with
TRL's SFTTrainer on exactly the token rows rayft trains on (rayft.data.build.prepare), with
the settings of bench/configs/sft_bench.yaml. Like a rayft worker it then evaluates the
held-out rows once and saves the adapter, so wall times compare the same work.

Prints one JSON line: tokens_per_s (TRL's logged num_tokens / train_runtime, as rayft's
summary.json), train_runtime_s, global_step, time_to_first_step_s (process start -> end of
the first optimizer step), wall_s.
"""

import time

T0 = time.time()  # before any import, so start-up (imports, model load) counts

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "rayft" / "demo" / "extract_orders.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--logging-steps", type=int, default=5)
    p.add_argument("--no-finish", action="store_true", help="skip the final evaluate + save")
    a = p.parse_args()

    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from rayft.schema.sections import DataConfig
    from rayft.data.build import prepare
    from rayft.models.loader import resolve_model

    torch.set_num_threads(a.threads)
    path = resolve_model("builtin:smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = prepare(DataConfig(path=str(DATA), format="instruction", template="chat", max_length=256,
                              eval_split=60, seed=0), tokenizer)
    eval_set = data.eval.remove_columns(["prompt", "reference"])

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             bias="none", task_type=TaskType.CAUSAL_LM))

    class Clock(TrainerCallback):
        first_step_at = None
        num_tokens = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if self.first_step_at is None:
                self.first_step_at = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.num_tokens = float(logs["num_tokens"])

    out_dir = tempfile.mkdtemp(prefix="plain-trl-sft-")
    args = SFTConfig(
        output_dir=out_dir, learning_rate=a.lr, max_steps=a.steps,
        per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=a.batch_size,
        gradient_accumulation_steps=1, warmup_steps=0.1, weight_decay=0.0, lr_scheduler_type="cosine",
        max_grad_norm=1.0, optim="adamw_torch", seed=a.seed, data_seed=a.seed,
        logging_steps=a.logging_steps, logging_first_step=True, eval_strategy="no", save_strategy="no",
        use_cpu=True, bf16=False, fp16=False, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, max_length=None, dataset_num_proc=None,
    )
    clock = Clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=eval_set,
                         processing_class=tokenizer, callbacks=[clock])
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    if not a.no_finish:
        trainer.evaluate()
        trainer.model.save_pretrained(Path(out_dir) / "adapter")
        tokenizer.save_pretrained(Path(out_dir) / "adapter")
    print(json.dumps({
        "tokens_per_s": clock.num_tokens / runtime if runtime > 0 else None,
        "num_tokens": clock.num_tokens,
        "train_runtime_s": runtime,
        "global_step": trainer.state.global_step,
        "time_to_first_step_s": clock.first_step_at - T0 if clock.first_step_at else None,
        "train_loss": output.training_loss,
        "threads": torch.get_num_threads(),
        "wall_s": time.time() - T0,
    }), flush=True)


if __name__ == "__main__":
    main()
