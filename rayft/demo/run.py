"""`rayft demo`: train the shipped demo config, then compare base and tuned on held-out rows."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def run_demo(overrides: list[str], started_at: float | None = None, config_path: str | None = None) -> dict:
    from rayft.config.load import load_pipeline
    from rayft.train.run_and_evaluate import train_and_evaluate

    started_at = started_at or time.time()
    loaded = load_pipeline(config_path or DEMO_CONFIG, overrides)
    cfg = loaded.pipeline
    how = {"lora": "LoRA", "ia3": "IA3", "full": "full"}[cfg.adapter.type]
    print(f"rayft demo: {how} fine-tuning {cfg.model.name} on {cfg.scaling.num_workers} Ray worker(s) to extract "
          f"orders as JSON", flush=True)
    loaded.pipeline.eval.enabled = True
    outcome = train_and_evaluate(loaded, started_at=started_at)
    result, report = outcome.run, outcome.report
    scores = __import__("json").loads((result.run_dir / "eval.json").read_text())["metrics"]
    by_model = {row["model"]: row for row in scores}
    tuned = next(label for label in by_model if label != "base")
    print(f"rayft demo: exact match {100 * by_model['base']['exact_match']:.1f}% (base) -> "
          f"{100 * by_model[tuned]['exact_match']:.1f}% (tuned); ROUGE-L {100 * by_model['base']['rouge_l']:.1f}% -> "
          f"{100 * by_model[tuned]['rouge_l']:.1f}%", flush=True)
    print(f"rayft demo: report {report}  ({time.time() - started_at:.0f} s in all)", flush=True)
    return by_model
