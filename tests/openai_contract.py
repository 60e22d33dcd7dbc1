"""The OpenAI-compatible HTTP contract every serving engine keeps, as checks run against a live app
with the real `openai` client: models list, chat and completions, streaming ending in `[DONE]`, a
LoRA adapter by name, a merged model, and 4xx JSON errors for an unknown model, malformed JSON and an
over-limit `max_tokens`. tests/test_serve_app.py runs them on rayft's engine, tests/test_serve_vllm.py
on vLLM (Ray Serve LLM): one suite, both engines.

A module runs them all with

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_openai_contract(check, served): check(served)

where the `served` fixture returns a `Served` describing its app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import openai
import pytest
import requests


@dataclass(frozen=True)
class Served:
    url: str
    base: str  # the base model's name
    merged: str  # a merged model's name
    adapter: str  # an adapter's name as clients give it
    question: str  # the adapter was trained to answer this (chat template) with `answer`
    answer: str
    too_many_tokens: int  # a max_tokens the app refuses
    api_key: str = "unused"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key, max_retries=0, timeout=120)

    def chat(self, model: str, max_tokens: int = 12) -> str:
        out = self.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": self.question}], max_tokens=max_tokens, temperature=0)
        return out.choices[0].message.content

    def post(self, path: str, body: bytes) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=body, timeout=120, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})


def models_are_listed(s: Served) -> None:
    assert {s.base, s.merged, s.adapter} <= {m.id for m in s.client().models.list().data}


def chat_and_completions_answer(s: Served) -> None:
    client = s.client()
    for model in (s.base, s.merged, s.adapter):
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is 2 + 2?"}],
                                              max_tokens=8, temperature=0)
        assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
        assert chat.choices[0].message.content and 0 < chat.usage.completion_tokens <= 8
    text = client.completions.create(model=s.base, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert text.object == "text_completion" and text.choices[0].text
    assert text.usage.prompt_tokens > 0 and 0 < text.usage.completion_tokens <= 6


def streaming_ends_with_done(s: Served) -> None:
    whole = s.chat(s.adapter, max_tokens=8)
    chunks = list(s.client().chat.completions.create(
        model=s.adapter, messages=[{"role": "user", "content": s.question}], max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    raw = s.post("/v1/completions", json.dumps({"model": s.base, "prompt": "One, two,", "max_tokens": 6,
                                                "temperature": 0, "stream": True}).encode())
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["choices"] is not None for e in events[:-1])


def the_adapter_answers_as_trained(s: Served) -> None:
    assert s.chat(s.adapter).strip().startswith(s.answer)
    assert not s.chat(s.base).strip().startswith(s.answer)


def the_merged_model_answers_like_its_adapter(s: Served) -> None:
    assert s.chat(s.merged) == s.chat(s.adapter)


def bad_requests_get_4xx_json_errors(s: Served) -> None:
    client = s.client()
    with pytest.raises(openai.APIStatusError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)
    assert 400 <= unknown.value.status_code < 500
    with pytest.raises(openai.APIStatusError) as too_long:
        client.completions.create(model=s.base, prompt="hi", max_tokens=s.too_many_tokens)
    assert 400 <= too_long.value.status_code < 500
    malformed = s.post("/v1/chat/completions", b'{"model": ')
    assert 400 <= malformed.status_code < 500 and isinstance(malformed.json(), dict)


CHECKS = [models_are_listed, chat_and_completions_answer, streaming_ends_with_done, the_adapter_answers_as_trained,
          the_merged_model_answers_like_its_adapter, bad_requests_get_4xx_json_errors]
