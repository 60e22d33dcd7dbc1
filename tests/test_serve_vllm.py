"""`serve.engine: vllm`, for real: `rayft serve` from .venv-vllm (vLLM's CPU build behind Ray Serve
LLM) on the embedded model, a merged model and a LoRA adapter, driven over HTTP on 127.0.0.1 by the
real `openai` client: the models list, chat and completions, streaming ending in `[DONE]`, the
adapter by name, and 4xx JSON errors for an unknown model, malformed JSON and an over-limit
`max_tokens`.

The adapter store is an S3 bucket, because Ray Serve LLM loads LoRA adapters only from object
stores; no cloud is reachable here, so the bucket is on moto's S3 server on 127.0.0.1 (a stand-in
for S3 itself, installed in .venv-vllm), reached through AWS_ENDPOINT_URL_S3 as a real S3-compatible
store (MinIO, Ceph) would be. The adapter is registered with `rayft serve register` (s3fs) and
served by vLLM from the bucket with no copy step.

Marked `vllm` and skipped unless `make setup-vllm` has built .venv-vllm (or RAYFT_VLLM_PYTHON names
its python): vLLM pins its own transformers, so it lives beside the main .venv, and CI does not
build it (about 3 minutes of set-up and 1.5 GB). `make test-vllm` runs it. The checks that need no
vLLM (what the config becomes) run in the main suite, in tests/test_serve_vllm_config.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO
from openai_contract import CHECKS, Served
from serve_helpers import QUESTION, S3Server, ServeProcess, free_port, train_adapter

VLLM_PYTHON = Path(os.environ.get("RAYFT_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python")).absolute()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    not VLLM_PYTHON.is_file(), reason=f"no vLLM environment at {VLLM_PYTHON} (build it with `make setup-vllm`)")]
MODEL = "smollm2-135m-instruct"
ANSWER = "Blue whales sing at dawn."
BUCKET = "rayft-adapters"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint on 127.0.0.1 (moto's server) with one bucket; yields the environment that
    points boto3 / s3fs at it."""
    server = S3Server(VLLM_PYTHON.parent, BUCKET, tmp_path_factory.mktemp("s3"))
    try:
        yield server.env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3):
    """`rayft serve` on the vllm engine in its own local Ray, adapters from the S3 bucket; one
    adapter ('whale', trained to answer QUESTION with ANSWER) registered by `rayft serve register`
    before the app starts, and the same adapter merged (`rayft merge`) as model 'merged'. Yields
    the app's base URL."""
    import subprocess

    from rayft.cli import main
    from rayft.models.loader import resolve_model

    tmp = tmp_path_factory.mktemp("vllm")
    store = f"s3://{BUCKET}/adapters"
    # lr 2e-3: the helper's default 1e-2 (for the tiny random model) makes the 135M model say "dawn. dawn. ..."
    adapter = train_adapter(resolve_model("builtin:smollm2-135m-instruct"), ANSWER, tmp / "whale", lr=2e-3, steps=30)
    registered = subprocess.run([str(VLLM_PYTHON), "-m", "rayft", "serve", "register", str(adapter), "--id", "whale",
                                 "--store", store], env={**os.environ, **s3}, capture_output=True, text=True,
                                timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    merged = tmp / "whale-merged"
    assert main(["merge", str(adapter), "--out", str(merged), "--base", "builtin:smollm2-135m-instruct"]) == 0
    port = free_port()
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:smollm2-135m-instruct"},
        "serve": {"engine": "vllm", "adapter_store": store,
                  "merged_models": [{"name": "merged", "path": str(merged)}],
                  "http": {"host": "127.0.0.1", "port": port},
                  # float32: the adapter was trained in float32 (vLLM on CPU defaults to bfloat16)
                  "vllm": {"max_model_len": 512, "cpu_kv_cache_gib": 1, "dtype": "float32"}}}))
    # Its own Ray with 4 logical CPUs: each engine (base, merged) holds a whole CPU, plus the ingress.
    server = ServeProcess(VLLM_PYTHON, config, tmp, tmp / "serve.log", ray_cpus=4, env=s3)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            assert server.process.poll() is None, server.log_tail()
            # Ready when both engines answer (the ingress lists the models before they have started).
            try:
                if all(requests.post(f"{url}/v1/completions", timeout=60, json={
                        "model": model, "prompt": "hi", "max_tokens": 1}).status_code == 200
                       for model in (MODEL, "merged")):
                    break
            except requests.RequestException:
                pass
            time.sleep(3)
        else:
            pytest.fail("the vllm app did not come up in 600 s:\n" + server.log_tail())
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(server):
    return Served(url=server, base=MODEL, merged="merged", adapter=f"{MODEL}:whale", question=QUESTION, answer=ANSWER,
                  too_many_tokens=100_000)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_openai_contract(check, served):
    check(served)


def test_completions_and_adapters_beyond_the_contract(served):
    """What the shared checks leave out: a completion's content, the adapter streamed, an unknown
    adapter of a known base (Ray Serve LLM fails its download: a 4xx, not a 500)."""
    import openai

    client = served.client()
    text = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in text.choices[0].text
    ask = [{"role": "user", "content": QUESTION}]
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=served.adapter, messages=ask, max_tokens=16, temperature=0, stream=True) if c.choices)
    assert streamed.strip().startswith(ANSWER)
    with pytest.raises(openai.APIStatusError) as unknown:
        client.chat.completions.create(model=f"{MODEL}:no-such-adapter", messages=ask, max_tokens=4)
    assert 400 <= unknown.value.status_code < 500
