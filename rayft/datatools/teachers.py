"""The teacher of `rayft data generate`: a local model (on the config's generation engine, hf or
vLLM) or an OpenAI-compatible endpoint. Each answers chat messages with one Generation per request;
request `i` of a call starting at `first` is seeded `seed + first + i` (the hf engine, which samples a
whole batch from one generator, seeds each chunk instead: said in the provenance)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rayft.core.errors import UserError
from rayft.generation.hf import Generation

Messages = list[dict[str, str]]


class Rejected(Generation):
    """A request the endpoint refused (a 4xx answer): dropped and counted, never retried."""


def cut_at_stop(gen: Generation, stop: list[str]) -> Generation:
    """A local engine's answer ended before the first stop string, as an endpoint ends it."""
    found = [gen.text.find(s) for s in stop if s and s in gen.text]
    if not found:
        return gen
    return Generation(gen.text[:min(found)].strip(), gen.new_tokens, False)


def open_teacher(cfg: Any) -> LocalTeacher | EndpointTeacher:
    teacher = cfg.generation.teacher
    if teacher.endpoint:
        return EndpointTeacher(teacher)
    return LocalTeacher(cfg)


class LocalTeacher:
    def __init__(self, cfg: Any) -> None:
        from rayft.generation.vllm_pool import chosen_engine
        from rayft.models.loader import load_tokenizer, resolve_model

        teacher = cfg.generation.teacher
        self.cfg, self.name = cfg, teacher.model or cfg.model.name
        self.path = resolve_model(self.name, cfg.model.revision if teacher.model is None else None)
        self.adapter = teacher.adapter
        self.engine = chosen_engine(cfg.generation)
        self.tokenizer = load_tokenizer(self.path, cfg.model.trust_remote_code, cfg.model)
        self._pool: Any = None
        self._model: Any = None

    def describe(self) -> dict[str, Any]:
        return {"teacher": self.name, **({"adapter": self.adapter} if self.adapter else {}), "engine": self.engine}

    def render(self, messages: Messages) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"

    def answer(self, requests: list[Messages], *, first: int, seed: int, max_new_tokens: int, temperature: float,
               top_p: float, stop: list[str]) -> list[Generation]:
        return [cut_at_stop(g, stop) for g in self._answer(requests, first=first, seed=seed,
                                                            max_new_tokens=max_new_tokens, temperature=temperature,
                                                            top_p=top_p)]

    def _answer(self, requests: list[Messages], *, first: int, seed: int, max_new_tokens: int, temperature: float,
                top_p: float) -> list[Generation]:
        prompts = [self.render(m) for m in requests]
        sampling = {"do_sample": temperature > 0, "temperature": temperature or 1.0, "top_p": top_p}
        if self.engine == "vllm":
            return [g[0] for g in self._vllm().answer(self.tokenizer, prompts, adapter=self.adapter, seed=seed + first,
                                                       max_new_tokens=max_new_tokens, **sampling)]
        from transformers import set_seed

        from rayft.generation.hf import generate

        set_seed(seed + first)
        return generate(self._hf(), self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        batch_size=self.cfg.eval.batch_size, **sampling)

    def _vllm(self) -> Any:
        if self._pool is None:
            from rayft.generation.vllm_pool import VLLMPool

            self._pool = VLLMPool(self.path, self.cfg.model, self.cfg.generation, [self.adapter] if self.adapter else [])
        return self._pool

    def _hf(self) -> Any:
        if self._model is None:
            import torch

            from rayft.models.adapters import load_for_inference

            self._model = load_for_inference(self.path, self.cfg.model, self.adapter, on_gpu=torch.cuda.is_available())
        return self._model

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class EndpointTeacher:
    """Chat completions from an OpenAI-compatible API, `concurrency` requests in flight."""

    def __init__(self, teacher: Any) -> None:
        import openai

        key = os.environ.get(teacher.api_key_env, "") if teacher.api_key_env else "none"
        if teacher.api_key_env and not key:
            raise UserError(f"generation.teacher.api_key_env: {teacher.api_key_env} is not set")
        self.teacher = teacher
        self.client = openai.OpenAI(base_url=teacher.endpoint, api_key=key, max_retries=3, timeout=600)

    def describe(self) -> dict[str, Any]:
        return {"teacher": self.teacher.endpoint_model, "endpoint": self.teacher.endpoint, "engine": "endpoint"}

    def answer(self, requests: list[Messages], *, first: int, seed: int, max_new_tokens: int, temperature: float,
               top_p: float, stop: list[str]) -> list[Generation]:
        def ask(index: int) -> Generation:
            import openai

            try:
                reply = self.client.chat.completions.create(
                    model=self.teacher.endpoint_model, messages=requests[index], max_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p if temperature else 1.0, seed=seed + first + index,
                    **({"stop": stop} if stop else {}))
            except openai.APIStatusError as exc:
                if 400 <= exc.status_code < 500 and exc.status_code not in (401, 403, 404, 429):
                    return Rejected(f"{exc.status_code}: {str(exc)[:200]}", 0, False)
                raise UserError(f"generation.teacher.endpoint: {self.teacher.endpoint} answered {exc.status_code} "
                                f"({str(exc)[:300]}); rerun the same command to continue where it stopped") from None
            except openai.APIConnectionError as exc:
                raise UserError(f"generation.teacher.endpoint: cannot reach {self.teacher.endpoint} ({exc}); rerun "
                                "the same command to continue where it stopped") from None
            choice = reply.choices[0]
            tokens = reply.usage.completion_tokens if reply.usage else 0
            return Generation((choice.message.content or "").strip(), tokens, choice.finish_reason == "length")

        with ThreadPoolExecutor(self.teacher.concurrency) as pool:
            return list(pool.map(ask, range(len(requests))))

    def close(self) -> None:
        self.client.close()
