"""The terminal table and `report.md` of a run's base-vs-tuned comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig
from rayft.records.rundir import read_summary

EXAMPLES_SHOWN = 5


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def pct_ci(value: Any, interval: Any) -> str:
    """A share in % with its 95% interval: `42.0 [35.1, 49.0]`."""
    text = _pct(value)
    if text != "-" and interval and interval[0] is not None:
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return text


def num_ci(value: Any, interval: Any, digits: int = 4) -> str:
    text = _num(value, digits)
    if text != "-" and interval and interval[0] is not None:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def _ci(row: dict[str, Any], key: str) -> Any:
    found = (row.get("intervals") or {}).get(key)
    return [found["low"], found["high"]] if isinstance(found, dict) else found


def vs_base_lines(comparison: Any) -> list[str]:
    """One line per tuned model: its change against base on the same rows, with the paired 95%
    interval, and whether that interval excludes zero."""
    names = {"exact_match": "exact match", "rouge_l": "ROUGE-L"}
    lines = []
    for row in comparison.metrics_table():
        parts = [f"{names[k]} {100 * d['mean_diff']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                 f"{' (beyond resampling noise)' if d['excludes_zero'] else ' (within noise)'}"
                 for k, d in (row.get("vs_base") or {}).items()]
        if parts:
            lines.append(f"{row['model']} vs base on the same {row['n']} rows: " + "; ".join(parts))
    return lines


def print_comparison(comparison: Any, examples: int = 3) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    if comparison.answers:
        _print_answers(console, comparison, examples)
    if comparison.reward_models:
        table = Table(title="reward models on held-out pairs (chosen should score above rejected)")
        for col in ("reward model", "pairs", "accuracy %", "mean margin"):
            table.add_column(col, justify="left" if col == "reward model" else "right")
        for name, r in comparison.reward_models.items():
            table.add_row(name, str(r.get("n", "-")), pct_ci(r["accuracy"], r.get("accuracy_interval")),
                          _num(r["margin"]))
        console.print(table)
    if comparison.benchmarks and comparison.benchmarks["rows"]:
        from rayft.eval.benchmarks import benchmark_table

        header, rows = benchmark_table(comparison.benchmarks)
        table = Table(title="benchmarks (lm-evaluation-harness, %, change against base)")
        for col in header:
            table.add_column(col, justify="left" if col in ("task", "metric") else "right")
        for cells in rows:
            table.add_row(*cells)
        console.print(table)
    for name, found in comparison.classifiers.items():
        table = Table(title=f"classifier {name} on {found['tuned']['n']} held-out rows")
        for col in ("model", "accuracy % [95% interval]", "macro F1 %"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for label in ("base", "tuned"):
            table.add_row("base (untrained head)" if label == "base" else "tuned",
                          pct_ci(found[label]["accuracy"], found[label]["accuracy_interval"]), _pct(found[label]["macro_f1"]))
        console.print(table)
    if comparison.arena:
        arena = comparison.arena
        table = Table(title=f"arena: {arena['battles']} judged pairs, judge {arena['judge']} (Elo scale, "
                            f"{arena['anchor']} = 1000)")
        for col in ("model", "rating", "95% interval", "wins", "losses", "ties"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in arena["ratings"]:
            table.add_row(r["model"], f"{r['rating']:.0f}", _interval(r), str(r["wins"]), str(r["losses"]), str(r["ties"]))
        console.print(table)
    for note in comparison.notes:
        console.print(f"rayft: {note}", markup=False)


def _print_answers(console: Any, comparison: Any, examples: int) -> None:
    from rich.table import Table

    table = Table(title="held-out evaluation (higher is better)")
    for col in ("model", "n", "exact match %", "ROUGE-L %", "BLEU", "loss", "ppl", "DPO acc %", "gen s", "tags"):
        table.add_column(col, justify="left" if col in ("model", "tags") else "right")
    for row in comparison.metrics_table():
        table.add_row(row["model"], str(row["n"]), pct_ci(row["exact_match"], _ci(row, "exact_match")),
                      pct_ci(row["rouge_l"], _ci(row, "rouge_l")),
                      "-" if row["bleu"] is None else f"{row['bleu']:.1f}", _num(row["loss"], 3),
                      _num(row["perplexity"], 1), _pct(row["dpo_accuracy"]), f"{row['gen_s']:.0f}",
                      ", ".join(f"{k}:{v}" for k, v in row["tags"].items()) or "-")
    console.print(table)
    for line in vs_base_lines(comparison):
        console.print(f"rayft: {line}", markup=False)
    labels = list(comparison.answers)
    for i in range(min(examples, len(comparison.prompts))):
        side = Table(show_header=True, title=f"example {i + 1}", title_justify="left", width=118)
        side.add_column("who", style="bold", width=10)
        side.add_column("answer", overflow="fold")
        side.add_row("question", _question(comparison.prompts[i]))
        side.add_row("reference", comparison.references[i])
        for label in labels:
            side.add_row(label, comparison.answers[label][i] or "(empty)")
        console.print(side)


def _question(prompt: str, limit: int = 300) -> str:
    """The end of the templated prompt: where the actual question is."""
    text = prompt.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def write_report(run_dir: Path, loaded: LoadedConfig, comparison: Any) -> Path:
    lines = [f"# rayft run `{run_dir.name}`", "", f"Base model: `{loaded.pipeline.model.name}`; "
             f"adapter: {loaded.pipeline.adapter.type}.", ""]
    summaries = {stage.name: read_summary(run_dir / stage.name) for stage in loaded.pipeline.stages}
    if any(summaries.values()):
        lines += ["## Training", "", "| stage | status | steps | train loss | eval loss | tokens/s | wall s |",
                  "|---|---|---|---|---|---|---|"]
    for stage in loaded.pipeline.stages:
        s = summaries[stage.name]
        if s is None:
            continue
        lines.append(f"| {stage.name} | {s.get('status', '-')} | {s.get('global_step', '-')} | "
                     f"{_num(s.get('train_loss'))} | {_num(s.get('eval_loss'))} | {_num(s.get('tokens_per_s'), 0)} | "
                     f"{_num(s.get('wall_s'), 0)} |")
    for stage in loaded.pipeline.stages:
        for plot in (summaries[stage.name] or {}).get("plots") or []:
            if Path(plot).is_file():
                lines += ["", f"![{stage.name} {Path(plot).stem}]({_relative(plot, run_dir)})"]
    if comparison.answers:
        lines += _answers_section(comparison)
    if comparison.reward_models:
        lines += ["", "## Reward models on held-out pairs", "",
                  "| reward model | pairs | accuracy % [95% interval] | mean margin [95% interval] |", "|---|---|---|---|"]
        lines += [f"| {name} | {r.get('n', '-')} | {pct_ci(r['accuracy'], r.get('accuracy_interval'))} | "
                  f"{num_ci(r['margin'], r.get('margin_interval'))} |" for name, r in comparison.reward_models.items()]
        lines += [f"\n![{name} rewards of chosen and rejected answers]({_relative(r['histogram'], run_dir)})"
                  for name, r in comparison.reward_models.items() if r.get("histogram")]
    if comparison.benchmarks and comparison.benchmarks["rows"]:
        lines += _benchmarks_section(comparison.benchmarks)
    for name, found in comparison.classifiers.items():
        lines += classifier_section(name, found, run_dir)
    if comparison.arena:
        lines += _arena_section(comparison.arena, run_dir)
    if comparison.notes:
        lines += ["", *(f"- {note}" for note in comparison.notes)]
    lines += ["", "All figures (answers, per-example scores, tags, reward scores per pair): `eval.json`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _answers_section(comparison: Any) -> list[str]:
    table = comparison.metrics_table()
    scored = next((r["scored_n"] for r in table if r.get("scored_n")), None)
    lines = ["", f"## Held-out evaluation ({len(comparison.prompts)} examples generated"
             + (f", {scored} scored teacher-forced" if scored else "") + ")", "",
             "Figures with their 95% bootstrap interval over the rows in brackets.", "",
             "| model | n | exact match % | ROUGE-L % | BLEU | answer loss | perplexity | DPO acc % | DPO margin "
             "| generation s | tags |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        tags = ", ".join(f"{k}: {v}" for k, v in row["tags"].items()) or "-"
        lines.append(f"| {row['model']} | {row['n']} | {pct_ci(row['exact_match'], _ci(row, 'exact_match'))} | "
                     f"{pct_ci(row['rouge_l'], _ci(row, 'rouge_l'))} | {_num(row['bleu'], 1)} | "
                     f"{num_ci(row['loss'], _ci(row, 'loss'))} | {_num(row['perplexity'], 2)} | "
                     f"{pct_ci(row['dpo_accuracy'], _ci(row, 'dpo_accuracy'))} | {_num(row['dpo_margin'])} | "
                     f"{row['gen_s']} | {tags} |")
    lines += ["", *(f"- {line}" for line in vs_base_lines(comparison))]
    lines += ["", "## Examples", ""]
    for i in range(min(EXAMPLES_SHOWN, len(comparison.prompts))):
        first = next(iter(comparison.scores.values()))["per_example"][i]
        lines += [f"### Example {i + 1}", "", "```text", _question(comparison.prompts[i]), "```", "",
                  f"- **reference**: `{comparison.references[i]}`{_extracted(first, 'reference_answer')}"]
        lines += [f"- **{label}**: `{answers[i]}`{_extracted(comparison.scores[label]['per_example'][i], 'answer')}"
                  for label, answers in comparison.answers.items()]
        lines.append("")
    return lines


def _interval(row: dict[str, Any]) -> str:
    return "-" if row["low"] is None else f"{row['low']:.0f} .. {row['high']:.0f}"


def classifier_section(name: str, found: dict[str, Any], run_dir: Path) -> list[str]:
    gain = found["vs_base"]
    lines = ["", f"## Classifier `{name}` on held-out rows", "",
             f"{found['tuned']['n']} held-out rows, labels {', '.join(found['labels'])}. The base model's head is "
             f"untrained (initialised as training started): it is the floor, not a classifier.", "",
             "| model | accuracy % [95% interval] | macro F1 % |", "|---|---|---|"]
    for label in ("base", "tuned"):
        f = found[label]
        lines.append(f"| {'base (untrained head)' if label == 'base' else 'tuned'} | "
                     f"{pct_ci(f['accuracy'], f['accuracy_interval'])} | {_pct(f['macro_f1'])} |")
    lines += ["", f"Tuned minus base accuracy: {100 * gain['mean_diff']:+.1f} points [{100 * gain['low']:+.1f}, "
              f"{100 * gain['high']:+.1f}] ({'beyond' if gain['excludes_zero'] else 'within'} resampling noise).", "",
              *(f"![{name} {label} confusion matrix]({_relative(found[label]['picture'], run_dir)})"
                for label in ("base", "tuned"))]
    return lines


def _arena_section(arena: dict[str, Any], run_dir: Path) -> list[str]:
    lines = ["", "## Arena", "", f"{len(arena['ratings'])} models answered the same {arena['prompts']} prompts; "
             f"{arena['judge']} judged every pair in both orders (a disagreement is a tie): {arena['battles']} "
             f"verdicts. Bradley-Terry ratings on the Elo scale ({arena['anchor']} = 1000, 400 points = 10:1 odds), "
             f"95% intervals from {arena['bootstrap']} bootstrap resamples of the verdicts.", "",
             "| model | rating | 95% interval | wins | losses | ties |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rating']:.0f} | {_interval(r)} | {r['wins']} | {r['losses']} | {r['ties']} |"
              for r in arena["ratings"]]
    lines += ["", f"![arena win rates]({_relative(arena['picture'], run_dir)})"]
    return lines


def _benchmarks_section(benchmarks: dict[str, Any]) -> list[str]:
    from rayft.eval.benchmarks import benchmark_caption, benchmark_table

    header, rows = benchmark_table(benchmarks)
    return ["", "## Benchmarks", "", benchmark_caption(benchmarks), "", "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header), *("| " + " | ".join(cells) + " |" for cells in rows)]


def _extracted(scores: dict[str, Any], key: str) -> str:
    """With eval.answer_pattern: the answer exact match compared, beside the raw text."""
    if key not in scores:
        return ""
    return " -> no answer found" if scores[key] is None else f" -> answer `{scores[key]}`"


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and value == value else "-"


def _relative(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
