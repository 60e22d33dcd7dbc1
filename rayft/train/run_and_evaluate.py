"""`rayft train` end to end: run the pipeline's stages, then (if `eval.enabled`) answer the
held-out rows with the base and the tuned model and write the run's report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rayft.config.load import LoadedConfig
from rayft.train.launch import RunResult, run_pipeline


@dataclass
class TrainOutcome:
    run: RunResult
    report: Path | None  # report.md, when evaluated


def train_and_evaluate(loaded: LoadedConfig, address: str | None = None, run_name: str | None = None,
                       started_at: float | None = None, force: bool = False) -> TrainOutcome:
    if loaded.pipeline.eval.enabled and loaded.pipeline.eval.benchmarks is not None:
        _check_benchmarks(loaded)  # a misspelt task fails now, not after the training
    run = run_pipeline(loaded, address=address, run_name=run_name, started_at=started_at, force=force)
    report = None
    if loaded.pipeline.eval.enabled:
        from rayft.eval.evaluate import evaluate_run

        report = evaluate_run(loaded, run.run_dir)
    else:  # training figures and plots only
        from rayft.eval.html_report import write_html_report

        write_html_report(Path(run.run_dir), loaded, None)
    return TrainOutcome(run, report)


def _check_benchmarks(loaded: LoadedConfig) -> None:
    import tempfile

    from rayft.eval.benchmarks import plan

    with tempfile.TemporaryDirectory(prefix="rayft-benchmarks-") as scratch:
        plan(loaded.pipeline.eval.benchmarks, Path(scratch))
