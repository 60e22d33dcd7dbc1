"""A policy's rollouts on vLLM engines (`generation.engine: vllm` for a `grpo` or `ppo` stage):
the training workers send the prompts of each batch to vLLM engine actors instead of running HF
`generate` themselves. `GRPORollouts` is TRL GRPOTrainer's `rollout_func`; rayft's PPO loop calls
`EngineSampler` directly (rayft.rl.ppo_trainer).

The policy's current LoRA weights reach the engines as a saved adapter: at the first rollout of a
new optimizer step, rank 0 saves the adapter (only the LoRA tensors, a few MB) to
`<stage>/rollout_adapters/step-N`, every worker waits for it, and the engines load it as a new
LoRA request (veRL sends only the LoRA tensors the same way). The folder of the step before is
removed once the new one is written. Each prompt gets one completion, sampled with its own seed
(the stage's seed, the step, the call and the prompt's place), so a rerun samples the same
completions; the sampled tokens' log-probabilities come back with them.

Runs in the Ray Train workers; the engines are Ray actors started by the driver
(rayft.train.rollout_engines) for the stage's lifetime, so this module only needs their handles.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable


class EngineSampler:
    """Completions of the current policy (a LoRA adapter saved per step) from vLLM engine actors."""

    def __init__(self, engines: list[Any], folder: Path, *, max_tokens: int, temperature: float, top_p: float = 1.0,
                 seed: int = 0) -> None:
        self.engines = list(engines)
        self.folder = Path(folder)
        self.max_tokens, self.temperature, self.top_p, self.seed = max_tokens, temperature, top_p, seed
        self.step: int | None = None
        self.calls = 0
        self.stats = {"rollouts": 0, "completions": 0, "adapters_saved": 0, "save_s": 0.0, "generate_s": 0.0}

    def policy_folder(self, step: int, save: Callable[[Path], None], main: bool, barrier: Callable[[], None]) -> str:
        """The folder of the policy's adapter at optimizer step `step`: saved once per step by the
        main worker (`save(folder)`), every worker waiting at `barrier` until it is there."""
        folder = self.folder / f"step-{step}"
        if step != self.step:
            started = time.time()
            if main:
                staging = self.folder / f".step-{step}.partial"
                shutil.rmtree(staging, ignore_errors=True)
                save(staging)
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
                if self.step is not None:
                    shutil.rmtree(self.folder / f"step-{self.step}", ignore_errors=True)
                self.stats["adapters_saved"] += 1
            barrier()
            self.stats["save_s"] += time.time() - started
            self.step = step
        return str(folder.resolve())

    def sample(self, prompt_ids: list[list[int]], adapter: str, step: int, stops: list[int]) -> list[dict[str, Any]]:
        """One completion per prompt, `{"ids": [...], "logprobs": [...], "finish": ...}`, in order."""
        import ray

        first = self.seed * 1_000_003 + step * 10_007 + self.calls * 1_009
        self.calls += 1
        requests = [{"ids": ids, "adapter": adapter, "n": 1, "seed": first + i, "temperature": self.temperature,
                     "top_p": self.top_p, "max_tokens": self.max_tokens, "stop_token_ids": stops, "logprobs": True}
                    for i, ids in enumerate(prompt_ids)]
        started = time.time()
        shards = [list(range(k, len(requests), len(self.engines))) for k in range(len(self.engines))]
        refs = [e.generate.remote([requests[i] for i in shard]) for e, shard in zip(self.engines, shards) if shard]
        answers: list[dict[str, Any]] = [{} for _ in requests]
        for shard, result in zip([s for s in shards if s], ray.get(refs)):
            for index, outs in zip(shard, result):
                answers[index] = outs[0]
        self.stats["generate_s"] += time.time() - started
        self.stats["rollouts"] += 1
        self.stats["completions"] += len(answers)
        return answers

    def summary(self) -> dict[str, Any]:
        """What summary.json records under `rollouts`."""
        return {"engine": "vllm", "engines": len(self.engines), **self.stats, "save_s": round(self.stats["save_s"], 2),
                "generate_s": round(self.stats["generate_s"], 2)}


class GRPORollouts(EngineSampler):
    """TRL GRPOTrainer's `rollout_func(prompts, trainer) -> {"prompt_ids", "completion_ids", "logprobs"}`:
    TRL repeats each prompt once per completion of its group, and each repeat is sampled once."""

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        from rayft.generation.hf import eos_ids

        accelerator = trainer.accelerator
        adapter = self.policy_folder(trainer.state.global_step,
                                     lambda folder: accelerator.unwrap_model(trainer.model).save_pretrained(folder),
                                     accelerator.is_main_process, accelerator.wait_for_everyone)
        prompt_ids = _prompt_ids(prompts, trainer.processing_class)
        answers = self.sample(prompt_ids, adapter, trainer.state.global_step,
                              eos_ids(trainer.model, trainer.processing_class))
        return {"prompt_ids": prompt_ids, "completion_ids": [a["ids"] for a in answers],
                "logprobs": [a["logprobs"] for a in answers]}


def _prompt_ids(prompts: list[Any], tokenizer: Any) -> list[list[int]]:
    """The prompts' token ids as TRL's own generation path makes them (chat template for
    conversational prompts, the tokenizer's special tokens for text)."""
    if prompts and isinstance(prompts[0], list):
        out = tokenizer.apply_chat_template(conversation=prompts, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
        return [list(ids) for ids in out["input_ids"]]
    return [list(ids) for ids in tokenizer(text=prompts)["input_ids"]]
