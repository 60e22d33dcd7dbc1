"""Serving throughput of the rayft Serve app on the tiny model, all in one process and Ray session:

1. requests/s and p50/p99 latency at concurrency 1, 4 and 16, with dynamic batching and without
   (the same app redeployed with `serve.batching.enabled: false`), in alternating rounds;
2. adapters: cold load time of an adapter, and the cost of switching among 20 adapters (and 2)
   vs sending everything to one, at concurrency 1 and 16.

Requests are chat completions through the real `openai` client (AsyncOpenAI) over HTTP on 127.0.0.1,
greedy, a fixed number of new tokens. Writes bench/results/serve_throughput.json and its section
of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/serve_throughput.py [--rounds 1] [--max-tokens 32]
        [--model builtin:smollm2-135m-instruct --skip-adapters --section serve_throughput_embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from docs_section import write_section  # noqa: E402
from serve_helpers import QUESTION, free_port  # noqa: E402

CONCURRENCY = (1, 4, 16)
REQUESTS = {1: 20, 4: 48, 16: 160}


def random_adapters(model_path: str, folder: Path, count: int) -> list[Path]:
    """`count` LoRA adapters with random (non-zero) weights: switching cost does not depend on what
    an adapter learned, only on its shapes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(count):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(folder / f"a{i:02d}")
        out.append(folder / f"a{i:02d}")
    return out


def app_args(model_path: str, store: Path, batching: bool, max_adapters: int = 20, batch_wait: float = 0.05) -> dict:
    return {"model": {"name": model_path}, "serve": {
        "model_name": "tiny",  # the name clients use, whichever model is served
        "adapter_store": str(store), "max_adapters_per_replica": max_adapters,
        "auth": {"api_keys_env": None},
        "batching": {"enabled": batching, "max_batch_size": 16, "batch_wait_timeout_s": batch_wait},
        "replicas": {"num_replicas": 1, "num_cpus": 1, "torch_threads": 1, "max_ongoing_requests": 64,
                     "ingress_num_cpus": 0.1}}}


def cpu_seconds() -> float:
    """CPU time used so far by this process and all its descendants (the local Ray cluster: proxy,
    ingress, model replica), alive now; less sensitive to other load on the machine than wall time."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def load(url: str, total: int, concurrency: int, models: list[str], max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    gate, latencies, errors, kinds = asyncio.Semaphore(concurrency), [], 0, {}

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            started = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model=models[i % len(models)], messages=[{"role": "user", "content": f"{QUESTION} {i % 7}"}],
                    max_tokens=max_tokens, temperature=0)
                latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - counted, by kind
                errors += 1
                kind = f"{type(exc).__name__}: {str(exc)[:120]}"
                kinds[kind] = kinds.get(kind, 0) + 1

    started, cpu = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    await client.close()
    done = len(latencies)
    latencies = sorted(latencies) or [float("nan")]  # all failed: no latency to report
    return {"error_kinds": kinds, "requests": total, "concurrency": concurrency, "errors": errors, "wall_s": wall,
            "cpu_s": cpu, "requests_per_cpu_s": done / cpu if cpu else None, "rps": done / wall,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def deploy(args: dict) -> None:
    from ray import serve

    from rayft.serve.app import build_app

    serve.run(build_app(args), name="bench", route_prefix="/")


def stats(url: str, model: str | None = None) -> dict:
    import requests

    return requests.get(url + "/v1/stats", params={"model": model} if model else None, timeout=120).json()


def batching_rounds(url: str, model_path: str, store: Path, rounds: int, max_tokens: int, batch_wait: float) -> dict:
    runs: dict[str, dict[int, list[dict]]] = {"batching": {c: [] for c in CONCURRENCY},
                                              "no batching": {c: [] for c in CONCURRENCY}}
    batch_stats: list[dict] = []
    for _ in range(rounds):
        for mode in runs:
            deploy(app_args(model_path, store, batching=mode == "batching", batch_wait=batch_wait))
            asyncio.run(load(url, 8, 4, ["tiny"], max_tokens))  # warm-up
            for c in CONCURRENCY:
                result = asyncio.run(load(url, REQUESTS[c], c, ["tiny"], max_tokens))
                result["load_avg_1m"] = os.getloadavg()[0]
                runs[mode][c].append(result)
                print(f"{mode:12s} c={c:2d}: {result['rps']:.1f} req/s  p50 {result['p50_ms']:.0f} ms  "
                      f"p99 {result['p99_ms']:.0f} ms  {result['requests_per_cpu_s']:.2f} req/CPU-s  "
                      f"errors {result['errors']}", flush=True)
            if mode == "batching":
                batch_stats.append(stats(url))
    return {**runs, "batch_stats": batch_stats}


def adapter_runs(url: str, model_path: str, store: Path, ids: list[str], max_tokens: int) -> dict:
    deploy(app_args(model_path, store, batching=True, max_adapters=len(ids)))
    asyncio.run(load(url, 8, 4, ["tiny"], max_tokens))
    first = [asyncio.run(load(url, 1, 1, [i], max_tokens)) for i in ids]  # first request each
    failed = {kind: n for r in first for kind, n in r["error_kinds"].items()}
    if failed:  # e.g. the store is not where the app looks: no figure is better than a wrong one
        raise SystemExit(f"serve_throughput: first requests to the adapters failed: {failed}")
    cold = [r["p50_ms"] for r in first]
    warm = [asyncio.run(load(url, 1, 1, [ids[0]], max_tokens))["p50_ms"] for _ in range(10)]
    load_s = stats(url, ids[-1])["adapter_load_seconds"]
    out = {"cold_first_request_ms": cold, "warm_request_ms": warm, "adapter_load_s": load_s, "runs": {}}
    for label, models in (("one adapter", ids[:1]), ("2 adapters alternating", ids[:2]),
                          (f"{len(ids)} adapters round-robin", ids)):
        for c in (1, 16):
            result = asyncio.run(load(url, REQUESTS[c], c, models, max_tokens))
            out["runs"][f"{label} @ c={c}"] = result
            print(f"{label:28s} c={c:2d}: {result['rps']:.1f} req/s  p50 {result['p50_ms']:.0f} ms  "
                  f"p99 {result['p99_ms']:.0f} ms  errors {result['errors']}", flush=True)
    deploy(app_args(model_path, store, batching=True, max_adapters=4))  # 20 adapters, 4 slots: LRU thrash
    for c in (1, 16):
        result = asyncio.run(load(url, REQUESTS[c], c, ids, max_tokens))
        out["runs"][f"{len(ids)} adapters round-robin, 4 per replica (LRU reloads) @ c={c}"] = result
        print(f"20 adapters, 4 slots c={c:2d}: {result['rps']:.1f} req/s  p50 {result['p50_ms']:.0f} ms  "
              f"p99 {result['p99_ms']:.0f} ms", flush=True)
    out["lru_stats"] = stats(url, ids[-1])
    return out


def engine_batching(model_path: str, max_tokens: int, repeats: int = 3) -> dict:
    """The model-level effect alone (no HTTP, no Serve): 16 requests as 16 generate calls vs one
    batched call, in this process with 1 torch thread; wall and CPU time of this process."""
    import torch

    from rayft.serve.engine import GenerationEngine
    from rayft.serve.protocol import GenRequest

    torch.set_num_threads(1)
    engine = GenerationEngine(model_path, threads=1)
    requests = [GenRequest(engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{QUESTION} {i % 7}"}], tokenize=False, add_generation_prompt=True),
        max_tokens, temperature=0) for i in range(16)]
    engine.generate(requests[:2])  # warm-up
    out = {}
    for label, batches in (("one at a time", [[r] for r in requests]), ("batch of 16", [requests])):
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                engine.generate(batch)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        out[label] = {"rps": 16 / statistics.median(walls), "requests_per_cpu_s": 16 / statistics.median(cpus)}
        print(f"engine {label}: {out[label]['rps']:.1f} req/s, {out[label]['requests_per_cpu_s']:.1f} req/CPU-s", flush=True)
    return out


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def render(data: dict, command: str) -> str:
    b, nb = data["batching"]["batching"], data["batching"]["no batching"]
    model = data.get("model", "builtin:tiny-random")
    title = "tiny model" if model == "builtin:tiny-random" else model.removeprefix("builtin:")
    what = ("the 2-layer `builtin:tiny-random` model (the HTTP path costs more than the model)"
            if model == "builtin:tiny-random" else f"`{model}` (the model is most of the cost)")
    lines = [f"## Serving throughput (Ray Serve app, {title}, CPU)", "",
             f"The rayft Serve app (1 model replica with 1 CPU and 1 torch thread, 1 ingress replica) serving "
             f"{what}; chat completions through the `openai` client over HTTP on "
             f"127.0.0.1, greedy, {data['max_tokens']} new tokens each. Batching: `@serve.batch` with max_batch_size 16, "
             f"batch_wait_timeout_s {data.get('batch_wait', 0.01)}; no batching: the same app redeployed with `serve.batching.enabled: false`, "
             f"in the same process. Medians over {data['rounds']} round(s).", "",
             "| concurrency | batching req/s | no batching req/s | ratio | batching p50 / p99 ms | no batching p50 / p99 ms "
             "| batching req/CPU-s | no batching req/CPU-s | ratio per CPU-s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in CONCURRENCY:
        rb, rn = median_of(b[c], "rps"), median_of(nb[c], "rps")
        cb, cn = median_of(b[c], "requests_per_cpu_s"), median_of(nb[c], "requests_per_cpu_s")
        lines.append(f"| {c} | {rb:.1f} | {rn:.1f} | {rb / rn:.2f}x | {median_of(b[c], 'p50_ms'):.0f} / "
                     f"{median_of(b[c], 'p99_ms'):.0f} | {median_of(nb[c], 'p50_ms'):.0f} / {median_of(nb[c], 'p99_ms'):.0f} "
                     f"| {cb:.2f} | {cn:.2f} | {cb / cn:.2f}x |")
    ratio16 = median_of(b[16], "rps") / median_of(nb[16], "rps")
    cpu16 = median_of(b[16], "requests_per_cpu_s") / median_of(nb[16], "requests_per_cpu_s")
    errors = sum(r["errors"] for mode in (b, nb) for rs in mode.values() for r in rs)
    batch = data["batching"].get("batch_stats", [{}])[-1]
    lines += ["", f"- target >= 3x requests/s at concurrency 16 with batching: {'met' if ratio16 >= 3 else 'NOT met'} "
              f"({ratio16:.2f}x wall-clock; {cpu16:.2f}x per CPU-second); failed requests in all runs: {errors}",
              "- req/CPU-s = completed requests / CPU seconds used meanwhile by this process and its descendants "
              "(the client, Ray, Serve's proxy, the ingress and the model replica): the figure least distorted by other "
              "processes sharing the machine",
              f"- batches formed (batching run, whole deployment life): {batch.get('batches')} batches, mean size "
              f"{batch.get('mean_batch_size', 0):.1f}, largest {batch.get('max_batch_size_seen')}", ""]
    e = data["engine"]
    lines += ["", f"The model-level effect alone (`GenerationEngine.generate` in one process, 1 torch thread, no HTTP or "
              f"Serve): 16 requests as one batch vs one at a time: "
              f"{e['batch of 16']['rps'] / e['one at a time']['rps']:.2f}x requests/s "
              f"({e['one at a time']['rps']:.1f} -> {e['batch of 16']['rps']:.1f}), "
              f"{e['batch of 16']['requests_per_cpu_s'] / e['one at a time']['requests_per_cpu_s']:.2f}x per CPU-second. "
              "The gap between this and the app's ratio is the per-request cost of the HTTP proxy, the ingress and "
              "the client, which batching does not reduce.", ""]
    if "adapters" in data:
        lines += _adapter_lines(data)
    lines += [f"- machine: {os.cpu_count()} CPU cores, `{platform.platform()}`, Python {platform.python_version()}; "
              f"1-minute load average during the runs {min(data['load_avgs']):.1f}..{max(data['load_avgs']):.1f}",
              f"- date: {data['date']}", f"- command: `{command}`",
              f"- raw figures: `bench/results/{data.get('section', 'serve_throughput')}.json`"]
    return "\n".join(lines)


def _adapter_lines(data: dict) -> list[str]:
    a = data["adapters"]
    cold, warm = statistics.median(a["cold_first_request_ms"]), statistics.median(a["warm_request_ms"])
    lines = ["### Adapters: cold load and switching", "",
              f"20 LoRA adapters (r 16, all linear layers, random weights) registered in the store. Cold load "
              f"(`load_adapter` onto the replica's base model): median {1000 * statistics.median(a['adapter_load_s']):.0f} ms "
              f"(max {1000 * max(a['adapter_load_s']):.0f} ms); first request to a not-yet-loaded adapter: median "
              f"{cold:.0f} ms vs {warm:.0f} ms for a loaded one (concurrency 1).", "",
              "| requests | concurrency | req/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|---|"]
    for label, r in a["runs"].items():
        name, _, c = label.rpartition(" @ c=")
        lines.append(f"| {name} | {c} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")
    one16 = a["runs"]["one adapter @ c=16"]["rps"]
    many16 = a["runs"]["20 adapters round-robin @ c=16"]["rps"]
    lines += ["", f"- 20 adapters vs one at concurrency 16: {many16 / one16:.2f}x the requests/s. Requests for "
              "different adapters share one generation (PEFT's mixed batch; docs/serving.md), so the batch is not "
              "split; what remains is the LoRA product run once per distinct adapter of the batch, on its rows.",
              f"- with only 4 adapter slots per replica, round-robin over 20 reloads an adapter on most switches "
              f"(LRU: {a['lru_stats'].get('adapter_loads')} loads, {a['lru_stats'].get('adapter_evictions')} evictions "
              "on the replica)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-wait", type=float, default=0.05,
                        help="serve.batching.batch_wait_timeout_s of the batching runs (the rayft default)")
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--model", default="builtin:tiny-random", help="the served model")
    parser.add_argument("--skip-adapters", action="store_true", help="only the batching part")
    parser.add_argument("--section", default="serve_throughput",
                        help="docs section and bench/results/<section>.json to write")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the docs section from bench/results/serve_throughput.json without measuring")
    args = parser.parse_args()
    if args.render_only:
        data = json.loads((ROOT / "bench" / "results" / f"{args.section}.json").read_text())
        for mode in ("batching", "no batching"):
            data["batching"][mode] = {int(c): runs for c, runs in data["batching"][mode].items()}
        write_section(ROOT / "docs" / "benchmarks.md", args.section, render(data, data.get(
            "command", "RAYFT_HOME=... .venv/bin/python bench/serve_throughput.py")))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray
    from ray import serve

    from rayft.models.loader import resolve_model
    from rayft.serve.store import LocalAdapterStore

    model_path = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="rayft-serve-bench-"))
    store = LocalAdapterStore(work / "store")
    ids = [] if args.skip_adapters else [
        store.register(p, p.name).id for p in random_adapters(model_path, work / "adapters", args.adapters)]
    engine = engine_batching(model_path, args.max_tokens)
    port = free_port()
    ray.init(num_cpus=2, logging_level="ERROR", include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        url = f"http://127.0.0.1:{port}"
        data = {"model": args.model, "section": args.section, "max_tokens": args.max_tokens,
                "rounds": args.rounds, "engine": engine, "batch_wait": args.batch_wait,
                "batching": batching_rounds(url, model_path, work / "store", args.rounds, args.max_tokens,
                                            args.batch_wait)}
        if ids:
            data["adapters"] = adapter_runs(url, model_path, work / "store", ids, args.max_tokens)
        data["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    finally:
        serve.shutdown()
        ray.shutdown()
    data["load_avgs"] = [r["load_avg_1m"] for mode in ("batching", "no batching")
                         for rs in data["batching"][mode].values() for r in rs]
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    command = "RAYFT_HOME=... .venv/bin/python bench/serve_throughput.py" + (
        f" --rounds {args.rounds}" if args.rounds != 1 else "") + (
        f" --max-tokens {args.max_tokens}" if args.max_tokens != 32 else "") + (
        f" --batch-wait {args.batch_wait}" if args.batch_wait != 0.05 else "") + (
        f" --model {args.model}" if args.model != "builtin:tiny-random" else "") + (
        " --skip-adapters" if args.skip_adapters else "") + (
        f" --section {args.section}" if args.section != "serve_throughput" else "")
    data["command"] = command
    (ROOT / "bench" / "results" / f"{args.section}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    body = render(data, command)
    write_section(ROOT / "docs" / "benchmarks.md", args.section, body)
    print(body)


if __name__ == "__main__":
    main()
