"""`report.html`: one self-contained file (plots embedded as base64 PNG, no external assets) with
the config, each stage's training figures and plots, the base-vs-tuned table, reward-model
accuracy and the answers side by side. Opens from a laptop after copying just this file."""

from __future__ import annotations

import base64
import time
from html import escape
from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig, dump_yaml
from rayft.eval.report import _ci, pct_ci, vs_base_lines
from rayft.records.rundir import read_summary

EXAMPLES_SHOWN = 20
STAGE_FIGURES = ("status", "global_step", "train_loss", "eval_loss", "tokens_per_s", "time_to_first_step_s",
                 "wall_s", "eval_accuracy", "eval_margin", "heldout_accuracy", "heldout_margin", "eval_rewards/accuracies", "eval_rewards/margins", "reward_first",
                 "reward_last", "resumed_from_step")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 540px; margin: 0.3em; border: 1px solid #eee; }
.tag { background: #fde2e2; border-radius: 3px; padding: 0 0.3em; font-size: 0.8em; }
.ok { color: #1a7f37; } .miss { color: #b42318; }
"""


def write_html_report(out_dir: Path, loaded: LoadedConfig, comparison: Any | None) -> Path:
    cfg = loaded.pipeline
    parts = [f"<h1>rayft run <code>{escape(out_dir.name)}</code></h1>",
             f"<p>Base model <code>{escape(cfg.model.name)}</code>, adapter {escape(cfg.adapter.type)}; "
             f"written {escape(time.strftime('%Y-%m-%d %H:%M:%S %z'))}.</p>"]
    parts += _training_section(out_dir, loaded)
    if comparison is not None:
        parts += _comparison_section(comparison)
    extra = sorted(out_dir.glob("*.png"))  # e.g. a sweep's metric-per-trial plot
    if extra:
        parts += ["<h2>Plots</h2>", "<div>", *(_img(p, p.stem) for p in extra), "</div>"]
    parts += ["<h2>Config</h2>", f"<pre>{escape(dump_yaml(cfg))}</pre>"]
    html = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>rayft report: {escape(out_dir.name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    path = out_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def _training_section(out_dir: Path, loaded: LoadedConfig) -> list[str]:
    summaries = [(s.name, s.type, read_summary(out_dir / s.name)) for s in loaded.pipeline.stages]
    summaries = [(n, t, s) for n, t, s in summaries if s]
    if not summaries:
        return []
    keys = [k for k in STAGE_FIGURES if any(k in s for _, _, s in summaries)]
    rows = ["<h2>Training</h2>", "<table>", "<tr><th>stage</th><th>type</th>"
            + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr>"]
    for name, kind, s in summaries:
        rows.append(f"<tr><td>{escape(name)}</td><td>{escape(kind)}</td>"
                    + "".join(_cell(s.get(k)) for k in keys) + "</tr>")
    rows.append("</table>")
    for name, _, s in summaries:
        if s.get("error"):
            rows.append(f"<p class=\"miss\">{escape(name)} failed: {escape(str(s['error']))}</p>")
        plots = [Path(p) for p in s.get("plots") or [] if Path(p).is_file()]
        if plots:
            rows += [f"<h3>{escape(name)}</h3>", "<div>", *(_img(p, f"{name} {p.stem}") for p in plots), "</div>"]
    return rows


def _comparison_section(comparison: Any) -> list[str]:
    out = _answers_section(comparison) if comparison.answers else []
    if comparison.reward_models:
        out += ["<h2>Reward models on held-out pairs</h2>", "<table>",
                "<tr><th>reward model</th><th>pairs</th><th>accuracy % [95% interval]</th><th>mean margin</th></tr>"]
        out += [f"<tr><td>{escape(n)}</td>{_cell(r.get('n'))}<td class=\"num\">"
                f"{escape(pct_ci(r['accuracy'], r.get('accuracy_interval')))}</td>{_cell(r['margin'])}</tr>"
                for n, r in comparison.reward_models.items()]
        out.append("</table>")
        plots = [(n, Path(r["histogram"])) for n, r in comparison.reward_models.items()
                 if r.get("histogram") and Path(r["histogram"]).is_file()]
        if plots:
            out += ["<div>", *(_img(p, f"{n}: rewards of chosen and rejected answers") for n, p in plots), "</div>"]
    if comparison.benchmarks and comparison.benchmarks["rows"]:
        out += _benchmarks_section(comparison.benchmarks)
    for name, found in comparison.classifiers.items():
        out += [f"<h2>Classifier {escape(name)} on held-out rows</h2>", "<table>",
                "<tr><th>model</th><th>n</th><th>accuracy % [95% interval]</th><th>macro F1 %</th></tr>"]
        for label in ("base", "tuned"):
            f = found[label]
            out.append(f"<tr><td>{'base (untrained head)' if label == 'base' else 'tuned'}</td>{_cell(f['n'])}"
                       f"<td class=\"num\">{escape(pct_ci(f['accuracy'], f['accuracy_interval']))}</td>"
                       f"{_cell(_pct(f['macro_f1']), 1)}</tr>")
        out.append("</table>")
        out += ["<div>", *(_img(Path(found[l]["picture"]), f"{name} {l} confusion matrix") for l in ("base", "tuned")
                           if Path(found[l]["picture"]).is_file()), "</div>"]
    if comparison.arena:
        out += _arena_section(comparison.arena)
    out += [f"<p class=\"miss\">{escape(note)}</p>" for note in comparison.notes]
    return out


def _arena_section(arena: dict[str, Any]) -> list[str]:
    out = ["<h2>Arena</h2>", f"<p>{len(arena['ratings'])} models, {arena['prompts']} prompts, judge "
           f"{escape(arena['judge'])}, both orders per pair (a disagreement is a tie); Bradley-Terry ratings on the "
           f"Elo scale, {escape(arena['anchor'])} = 1000, 95% bootstrap intervals.</p>", "<table>",
           "<tr><th>model</th><th>rating</th><th>95% interval</th><th>wins</th><th>losses</th><th>ties</th></tr>"]
    for r in arena["ratings"]:
        interval = "-" if r["low"] is None else f"{r['low']:.0f} .. {r['high']:.0f}"
        out.append(f"<tr><td>{escape(r['model'])}</td>{_cell(round(r['rating']))}<td>{interval}</td>"
                   f"{_cell(r['wins'])}{_cell(r['losses'])}{_cell(r['ties'])}</tr>")
    out.append("</table>")
    if Path(arena["picture"]).is_file():
        out += ["<div>", _img(Path(arena["picture"]), "arena win rates"), "</div>"]
    return out


def _benchmarks_section(benchmarks: dict[str, Any]) -> list[str]:
    from rayft.eval.benchmarks import benchmark_caption, benchmark_table

    header, rows = benchmark_table(benchmarks)
    out = ["<h2>Benchmarks</h2>", f"<p>{escape(benchmark_caption(benchmarks))}</p>", "<table>",
           "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for cells in rows:
        out.append("<tr>" + "".join(f"<td class=\"{'miss' if 'FORGETTING' in c else 'num' if i > 1 else ''}\">"
                                    f"{escape(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
    out.append("</table>")
    return out


def _answers_section(comparison: Any) -> list[str]:
    out = [f"<h2>Held-out evaluation ({len(comparison.prompts)} examples)</h2>",
           "<p>Figures with their 95% bootstrap interval over the rows in brackets.</p>", "<table>",
           "<tr><th>model</th><th>n</th><th>exact match %</th><th>ROUGE-L %</th><th>BLEU</th><th>answer loss</th>"
           "<th>perplexity</th><th>DPO acc %</th><th>DPO margin</th><th>generation s</th><th>tags</th></tr>"]
    for r in comparison.metrics_table():
        tags = ", ".join(f"{k}: {v}" for k, v in r["tags"].items()) or "-"
        out.append(f"<tr><td>{escape(r['model'])}</td>{_cell(r['n'])}"
                   f"<td class=\"num\">{escape(pct_ci(r['exact_match'], _ci(r, 'exact_match')))}</td>"
                   f"<td class=\"num\">{escape(pct_ci(r['rouge_l'], _ci(r, 'rouge_l')))}</td>"
                   f"{_cell(r['bleu'], 1)}{_cell(r['loss'])}{_cell(r['perplexity'], 2)}"
                   f"<td class=\"num\">{escape(pct_ci(r['dpo_accuracy'], _ci(r, 'dpo_accuracy')))}</td>"
                   f"{_cell(r['dpo_margin'])}{_cell(r['gen_s'], 1)}<td>{escape(tags)}</td></tr>")
    out.append("</table>")
    out += [f"<p>{escape(line)}</p>" for line in vs_base_lines(comparison)]
    labels = list(comparison.answers)
    shown = min(EXAMPLES_SHOWN, len(comparison.prompts))
    out += [f"<h2>Answers side by side (first {shown})</h2>", "<table>",
            "<tr><th>#</th><th>question</th><th>reference</th>" + "".join(f"<th>{escape(l)}</th>" for l in labels)
            + "</tr>"]
    for i in range(shown):
        cells = []
        for label in labels:
            score = comparison.scores[label]["per_example"][i]
            mark = "ok" if score.get("exact_match") else "miss"
            tags = "".join(f" <span class=\"tag\">{escape(t)}</span>" for t in comparison.tags[label][i])
            cells.append(f"<td><span class=\"{mark}\">{escape(comparison.answers[label][i] or '(empty)')}</span>"
                         f"{_extracted(score, 'answer')}{tags}</td>")
        first = comparison.scores[labels[0]]["per_example"][i] if labels else {}
        out.append(f"<tr><td>{i + 1}</td><td><pre>{escape(_tail(comparison.prompts[i]))}</pre></td>"
                   f"<td>{escape(comparison.references[i])}{_extracted(first, 'reference_answer')}</td>"
                   f"{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _extracted(scores: dict[str, Any], key: str) -> str:
    """With eval.answer_pattern: the answer exact match compared, under the raw text."""
    if key not in scores:
        return ""
    found = "no answer found" if scores[key] is None else f"answer: {scores[key]}"
    return f"<br><small class=\"answer\">{escape(found)}</small>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def _cell(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{escape('-' if value is None else str(value))}</td>"
    if value != value:  # NaN
        return "<td class=\"num\">-</td>"
    text = str(value) if isinstance(value, int) else f"{value:.{digits}f}"
    return f"<td class=\"num\">{text}</td>"


def _pct(value: Any) -> Any:
    return None if value is None or value != value else round(100 * value, 1)


def _tail(prompt: str, limit: int = 300) -> str:
    text = prompt.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
