"""The real Serve app on 127.0.0.1, driven by the real `openai` client (and `requests` for raw HTTP):
the tiny random model as base, two LoRA adapters trained in-process to answer differently, a merged
model, hot-swap, LRU eviction, auth, every bad-input case, a bounded load test and a replica killed
under load. One app is deployed for the module (through the same path as `rayft serve FILE`); the
replica-kill test redeploys it with 2 model replicas."""

from __future__ import annotations

import asyncio
import json
import random
import time

import openai
import pytest
import requests
import yaml

from openai_contract import CHECKS, Served
from serve_helpers import QUESTION, free_port, train_adapter

pytestmark = pytest.mark.ray
KEY = "test-key-0123456789"
ANSWERS = {"alpha": "apples are red", "beta": "bananas grow in bunches"}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_path):
    root = tmp_path_factory.mktemp("adapters")
    return {name: train_adapter(tiny_model_path, answer, root / name, seed=i)
            for i, (name, answer) in enumerate(ANSWERS.items())}


def _app_args(tiny_model_path, store, merged=None, replicas=1, max_adapters=2):
    return {
        "model": {"name": tiny_model_path},
        "serve": {
            "model_name": "tiny", "adapter_store": str(store), "max_adapters_per_replica": max_adapters,
            "merged_models": [{"name": "tiny-alpha-merged", "path": str(merged)}] if merged else [],
            "auth": {"api_keys": [KEY], "api_keys_env": None},
            "limits": {"max_tokens": 32, "default_max_tokens": 8, "max_n": 2, "max_body_bytes": 4096,
                       "max_prompt_tokens": 200},
            "batching": {"enabled": True, "max_batch_size": 16, "batch_wait_timeout_s": 0.05},
            "replicas": {"num_replicas": replicas, "num_cpus": 0.5, "torch_threads": 1, "ingress_num_cpus": 0.1},
        },
    }


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory, tiny_model_path, adapters):
    from ray import serve

    from rayft.cli import main
    from rayft.serve.app import run_from_config

    work = tmp_path_factory.mktemp("serve")
    store = work / "store"
    for name, path in adapters.items():
        assert main(["serve", "register", str(path), "--id", name, "--store", str(store)]) == 0
    merged = work / "merged"
    assert main(["merge", str(adapters["alpha"]), "--out", str(merged), "--base", tiny_model_path]) == 0
    port = free_port()
    config = work / "app.yaml"
    config.write_text(yaml.safe_dump({
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "rayft-test", "route_prefix": "/", "import_path": "rayft.serve.app:build_app",
                          "args": _app_args(tiny_model_path, store, merged)}]}))
    url = run_from_config(str(config), block=False)
    assert url == f"http://127.0.0.1:{port}"
    yield {"url": url, "store": store, "adapters": adapters, "args": _app_args(tiny_model_path, store, merged)}
    serve.shutdown()


@pytest.fixture()
def client(app):
    return openai.OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _chat(client, model, **kw):
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                         max_tokens=8, temperature=0, **kw)
    return out.choices[0].message.content


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_openai_contract(check, app):
    """The checks tests/test_serve_vllm.py runs on vLLM, on rayft's engine."""
    check(Served(url=app["url"], base="tiny", merged="tiny-alpha-merged", adapter="alpha", question=QUESTION,
                 answer=ANSWERS["alpha"], too_many_tokens=100, api_key=KEY))


def test_models_listed(client):
    ids = {m.id for m in client.models.list().data}
    assert {"tiny", "tiny-alpha-merged", "alpha", "beta"} <= ids


def test_base_and_two_adapters_answer_differently(client, tiny_tokenizer):
    answers = {model: _chat(client, model) for model in ("tiny", "alpha", "beta")}
    assert answers["alpha"].startswith("apples are red")
    assert answers["beta"].startswith("bananas grow")
    assert len(set(answers.values())) == 3
    prompt = tiny_tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                                add_generation_prompt=True)
    completion = client.completions.create(model="beta", prompt=prompt, max_tokens=8, temperature=0)
    assert completion.choices[0].text == answers["beta"]
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens == 8
    two = client.completions.create(model="alpha", prompt=[prompt, prompt], max_tokens=8, temperature=0)
    assert [c.text for c in two.choices] == [answers["alpha"]] * 2


def test_requests_for_different_adapters_share_one_generation(client, app):
    """Concurrent requests for the base and two adapters reach one Serve batch, which Serve splits
    per adapter; rayft runs the parts as one generation (PEFT's mixed batch), and every answer is
    the one its model gives alone."""
    models = ["tiny", "alpha", "beta"] * 4
    alone = {model: _chat(client, model) for model in set(models)}

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)
        outs = await asyncio.gather(*(aclient.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0)
            for model in models))
        await aclient.close()
        return [o.choices[0].message.content for o in outs]

    assert asyncio.run(together()) == [alone[m] for m in models]
    assert _stats(app)["max_models_in_a_batch"] >= 2, _stats(app)


def test_merged_model_answers_like_its_adapter(client):
    assert _chat(client, "tiny-alpha-merged") == _chat(client, "alpha")


def test_a_teacher_endpoint_writes_training_data(app, tmp_path, monkeypatch):
    """`rayft data generate` with the served adapter as the teacher, over HTTP: the row it answers
    as trained is written with its provenance; an answer cut at max_new_tokens, an answer not
    matching answer_pattern and a prompt the server refuses (over its max_prompt_tokens: a 4xx)
    are each counted and dropped (the tiny adapter never says EOS: a stop string ends its answer); every instruction lands in one count; the prompts file is untouched."""
    from rayft.cli import main

    monkeypatch.setenv("TEACHER_KEY", KEY)
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": QUESTION}, {"prompt": "Name a fruit, please."}, {"prompt": "word " * 400}, {"prompt": QUESTION + " "}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = prompts.read_bytes()
    config = tmp_path / "teacher.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "builtin:tiny-random"}, "generation": {"teacher": {
        "endpoint": app["url"] + "/v1", "endpoint_model": "alpha", "api_key_env": "TEACHER_KEY",
        "prompts": str(prompts), "max_new_tokens": 12, "stop": [" red"], "answer_pattern": "apples|^[^a]*$",
        "concurrency": 2}}}))
    out = tmp_path / "taught.jsonl"
    assert main(["data", "generate", str(config), "--out", str(out)]) == 0
    stats = json.loads(out.with_name("taught.jsonl.stats.json").read_text())["answers"]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[0]["prompt"] == QUESTION and written[0]["completion"] == "apples are"  # ended by the stop string
    assert written[0]["provenance"] == {"teacher": "alpha", "endpoint": app["url"] + "/v1", "engine": "endpoint",
                                        "max_new_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    assert stats["rejected_by_endpoint"] == 1  # the 400-word prompt
    assert stats["duplicates"] == 1  # the same question with a trailing space, answered alike
    assert [r["prompt"] for r in written] == [QUESTION, "Name a fruit, please."]  # alpha says apples to all
    assert stats["questions"] == 4 == sum(stats[k] for k in ("empty", "cut_at_limit", "wrong_format",
                                                             "rejected_by_endpoint", "duplicates", "written"))
    assert prompts.read_bytes() == before and not out.with_name("taught.jsonl.partial.jsonl").exists()
    assert main(["data", "generate", str(config), "--out", str(out)]) == 2  # never overwritten
    # The base model's random tokens (no readable text, or cut at the limit, or not "apples..."): every
    # answer dropped with its reason in the journal, nothing written, exit 2.
    raw = yaml.safe_load(config.read_text())
    raw["generation"]["teacher"].update(endpoint_model="tiny", stop=[], answer_pattern="^apples")
    config.write_text(yaml.safe_dump(raw))
    assert main(["data", "generate", str(config), "--out", str(tmp_path / "base.jsonl")]) == 2
    assert not (tmp_path / "base.jsonl").exists()
    journal = [json.loads(line) for line in (tmp_path / "base.jsonl.partial.jsonl").read_text().splitlines()[1:]]
    assert len(journal) == 4 and all(r["status"] in ("empty", "cut_at_limit", "wrong_format", "rejected_by_endpoint")
                                     for r in journal)


def test_streaming_chat_and_completion(client, app):
    full = _chat(client, "alpha")
    chunks = list(client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": QUESTION}],
                                                 max_tokens=8, temperature=0, stream=True))
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="Hello", max_tokens=6, temperature=0, stream=True))
    assert text == client.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0).choices[0].text
    raw = requests.post(app["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                     json={"model": "beta", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4,
                           "temperature": 0, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_adapter_registered_while_running_is_served_and_replaced(client, app):
    from rayft.serve.store import LocalAdapterStore

    store = LocalAdapterStore(app["store"])
    with pytest.raises(openai.NotFoundError):
        _chat(client, "gamma")
    store.register(app["adapters"]["beta"], "gamma")
    assert "gamma" in {m.id for m in client.models.list().data}
    assert _chat(client, "gamma") == _chat(client, "beta")
    store.register(app["adapters"]["alpha"], "gamma")  # a new version under the same id, no restart
    assert _chat(client, "gamma") == _chat(client, "alpha")


def _stats(app, model=None) -> dict:
    return requests.get(app["url"] + "/v1/stats", params={"model": model} if model else None,
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()


def test_lru_eviction(client, app):
    from rayft.serve.store import LocalAdapterStore

    store = LocalAdapterStore(app["store"])
    store.register(app["adapters"]["alpha"], "delta")
    for model in ("alpha", "beta", "delta"):  # 3 adapters on a replica that holds 2
        _chat(client, model)
    stats = _stats(app, "delta")
    held = {key.split("@")[0] for key in stats["adapters_loaded"]}
    assert held == {"beta", "delta"}, stats
    assert stats["adapter_evictions"] >= 1 and stats["adapter_deletions"] >= 1
    assert _chat(client, "alpha").startswith("apples are red")  # reloaded after its eviction


def test_auth(app):
    models = app["url"] + "/v1/models"
    for headers in ({}, {"Authorization": "Bearer wrong-key-000"}, {"Authorization": KEY}):
        r = requests.get(models, headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(models, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    assert requests.get(app["url"] + "/healthz", timeout=30).json() == {"status": "ok"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=app["url"] + "/v1", api_key="nope-nope-nope", max_retries=0).models.list()


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
BAD = [
    ("malformed json", "POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [', 400, None),
    ("not an object", "POST", "/v1/completions", b"[1, 2]", 400, None),
    ("max_tokens wrong type", "POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": "5"}, 400,
     "max_tokens"),
    ("temperature wrong type", "POST", "/v1/chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature"),
    ("messages missing", "POST", "/v1/chat/completions", {"model": "tiny"}, 400, "messages"),
    ("bad role", "POST", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "x", "content": "y"}]},
     400, "messages.0.role"),
    ("prompt token ids", "POST", "/v1/completions", {"model": "tiny", "prompt": [1, 2, 3]}, 400, "prompt"),
    ("unknown model", "POST", "/v1/chat/completions", {**CHAT, "model": "no-such-adapter"}, 404, "model"),
    ("traversal id", "POST", "/v1/chat/completions", {**CHAT, "model": "../alpha"}, 400, "model"),
    ("absolute path id", "POST", "/v1/completions", {"model": "/etc", "prompt": "x"}, 400, "model"),
    ("nested traversal id", "POST", "/v1/completions", {"model": "alpha/../../x", "prompt": "x"}, 400, "model"),
    ("oversized body", "POST", "/v1/completions", {"model": "tiny", "prompt": "x" * 5000}, 413, None),
    ("max_tokens over limit", "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 33}, 400, "max_tokens"),
    ("negative max_tokens", "POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": -1}, 400,
     "max_tokens"),
    ("n over limit", "POST", "/v1/chat/completions", {**CHAT, "n": 3}, 400, "n"),
    ("prompt too long", "POST", "/v1/completions", {"model": "tiny", "prompt": "word " * 300}, 400, "prompt"),
    ("too many prompts", "POST", "/v1/completions", {"model": "tiny", "prompt": ["a"] * 17}, 400, "prompt"),
    ("unknown route", "GET", "/v1/nothing", None, 404, None),
    ("wrong method", "GET", "/v1/chat/completions", None, 405, None),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_a_4xx_openai_error(app, case):
    _, method, path, body, status, param = case
    content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    r = requests.request(method, app["url"] + path, data=content, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        _chat(client, "missing-adapter")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=100)


async def _load(url: str, total: int, concurrency: int, models: list[str], on_done=None) -> list[str]:
    """`total` chat requests at `concurrency`; returns the error of each failed one."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    gate, errors, done = asyncio.Semaphore(concurrency), [], [0]

    async def one(i: int) -> None:
        async with gate:
            try:
                out = await client.chat.completions.create(
                    model=models[i % len(models)], messages=[{"role": "user", "content": f"{QUESTION} {i}"}],
                    max_tokens=4, temperature=0)
                assert out.choices[0].message.content is not None
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}")
            done[0] += 1
            if on_done:
                on_done(done[0])

    await asyncio.gather(*(one(i) for i in range(total)))
    await client.close()
    return errors


def test_concurrent_requests_join_the_next_batch(app):
    """16 clients, each sending its next request a little after its previous answer (a round trip
    longer than nothing, as over a network): requests arriving while a batch generates must wait and
    form the next batch together. Ray Serve alone forms each batch on arrival and queues it behind the
    running one, which gave batches of mean size ~1.3 under such load; rayft gates admission."""
    before = _stats(app, "tiny")
    rng = random.Random(0)

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)

        async def one_client(c: int) -> None:
            for i in range(4):
                await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"{QUESTION} {c} {i}"}],
                    max_tokens=16, temperature=0)
                await asyncio.sleep(rng.uniform(0.01, 0.08))

        await asyncio.gather(*(one_client(c) for c in range(16)))
        await client.close()

    asyncio.run(run())
    after = _stats(app, "tiny")
    batches = after["batches"] - before["batches"]
    requests_ = after["mean_batch_size"] * after["batches"] - before["mean_batch_size"] * before["batches"]
    assert round(requests_) == 64, (before, after)
    print(f"mean batch size {requests_ / batches:.1f} over {batches} batches")
    assert requests_ / batches >= 5, f"mean batch size {requests_ / batches:.1f} over {batches} batches"


def test_load_500_requests_at_concurrency_16_has_no_errors(app):
    errors = asyncio.run(_load(app["url"], 500, 16, ["tiny", "alpha"]))
    assert errors == []
    # Concurrent requests were batched, and beyond 5 at once: Ray Serve's default cap of 5 in-flight
    # requests per replica would otherwise hold the rest in front of the ingress.
    assert _stats(app)["max_batch_size_seen"] > 5, _stats(app)


def test_replica_killed_during_load_recovers(app, capsys):
    """Two model replicas; one is killed (ray.kill) mid-load. The ingress re-sends a request whose
    replica died (documented in docs/serving.md); the client does not retry (max_retries=0)."""
    import ray
    from ray import serve

    from rayft.serve.app import build_app

    args = {**app["args"], "serve": {**app["args"]["serve"], "merged_models": []}}
    args["serve"]["replicas"] = {**args["serve"]["replicas"], "num_replicas": 2}
    serve.run(build_app(args), name="rayft-test", route_prefix="/")
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == "serve" and "model-tiny" in a["name"] and "REPLICA" in a["name"]]
    assert len(replicas) == 2, replicas
    client = openai.OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)
    _chat(client, "alpha")  # loads alpha on one of the two fresh replicas
    time.sleep(2)  # the replica reports its adapters to the Serve controller, which tells the routers
    holders = {_stats(app, "alpha")["replica"] for _ in range(6)}
    assert len(holders) == 1, "requests for an adapter go to the replica that holds it"
    assert any(k.startswith("alpha@") for k in _stats(app, "alpha")["adapters_loaded"])
    killed = []

    def kill_once(done: int) -> None:
        if done == 40 and not killed:
            ray.kill(ray.get_actor(replicas[0]["name"], namespace="serve"), no_restart=True)
            killed.append(time.time())

    total = 200
    errors = asyncio.run(_load(app["url"], total, 8, ["tiny", "alpha", "beta"], on_done=kill_once))
    assert killed
    with capsys.disabled():
        print(f"\nreplica killed during load: {len(errors)}/{total} failed requests ({100 * len(errors) / total:.1f}%)"
              + (f"; first: {errors[0]}" if errors else ""))
    assert len(errors) <= total * 0.01
    deadline = time.time() + 120
    while time.time() < deadline:  # Serve replaces the killed replica
        status = serve.status().applications["rayft-test"]
        if status.status == "RUNNING" and status.deployments["model-tiny"].replica_states.get("RUNNING") == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the app did not get back to 2 running replicas: {serve.status()}")
    assert asyncio.run(_load(app["url"], 20, 4, ["alpha"])) == []
