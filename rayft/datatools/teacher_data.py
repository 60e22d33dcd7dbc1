"""`rayft data generate CONFIG --out FILE`: a teacher model writes training data.

The teacher (`generation.teacher`: a local model on the config's generation engine, or an
OpenAI-compatible endpoint) answers instructions -- from a file, or the questions of the config's
data rows -- or first writes new instructions from them as seed examples (self-instruct) and then
answers those. Output rows are rayft's `prompt_completion` format, each with its provenance
(teacher, engine, sampling settings, seed).

Nothing is lost and nothing half-written is kept: every generated row goes to a journal beside the
output (`FILE.partial.jsonl`, whole lines, flushed and synced per chunk); a killed run, rerun with
the same command, reads the journal and continues with the next chunk (a line cut by the kill is
discarded). Bad teacher output (empty, cut at max_new_tokens, not matching answer_pattern, refused
by the endpoint) is counted and dropped; the kept rows then pass the config's data.filters and
dedup, and FILE is written at once at the end, with the counts in FILE.stats.json. Every
instruction asked for lands in exactly one count.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from rayft.core.errors import UserError
from rayft.data.readers import Row
from rayft.datatools.pair_builder import write_jsonl_atomic
from rayft.records.rundir import write_json_atomic

INSTRUCTION_REQUEST = ("Here are examples of instructions a user gave an AI assistant:\n\n{examples}\n\nWrite one new "
                       "instruction of the same kind, on a different subject. Reply with the instruction only.")
DROP_REASONS = ("empty", "cut_at_limit", "wrong_format", "rejected_by_endpoint")


def generate_data(loaded: Any, out: str | Path, *, limit: int | None = None, restart: bool = False) -> dict[str, Any]:
    from rayft.datatools.teachers import open_teacher

    cfg = loaded.pipeline
    teacher_cfg = cfg.generation.teacher
    if teacher_cfg is None:
        raise UserError("generation.teacher: `rayft data generate` needs a teacher section (docs/generation.md)")
    out = Path(out).expanduser().resolve()
    journal_path = out.with_name(out.name + ".partial.jsonl")
    _refuse_inputs(cfg, teacher_cfg, out)
    seeds = _seed_instructions(cfg, teacher_cfg)
    if not teacher_cfg.self_instruct:
        seeds = seeds[:limit]  # with self_instruct, --limit caps the new instructions
    if restart and journal_path.exists():
        journal_path.unlink()
    if out.exists() and not journal_path.exists():
        raise UserError(f"--out: {out} exists; choose another file or remove it (it is never overwritten)")
    started = time.time()
    teacher = open_teacher(cfg)
    settings = {**teacher.describe(), **teacher_cfg.model_dump(exclude={"chunk_rows", "concurrency"}),
                "limit": limit, "seed_instructions": len(seeds)}
    journal = Journal(journal_path, settings)
    counts: dict[str, Any] = {}
    try:
        if teacher_cfg.self_instruct:
            asked = limit or teacher_cfg.self_instruct.num_instructions
            questions, counts["instructions"] = _new_instructions(teacher, teacher_cfg, journal, seeds, asked, cfg)
            if not questions:
                raise UserError(f"generation.teacher.self_instruct: no new instruction kept of {asked} asked "
                                f"({json.dumps(counts['instructions'])}); a reply whose first line did not end "
                                "within self_instruct.max_new_tokens is dropped: raise it, or give more varied seed "
                                "instructions, and rerun with --restart")
        else:
            questions = seeds
        records = _answers(teacher, teacher_cfg, journal, questions)
    finally:
        teacher.close()
    rows, counts["answers"] = _kept_rows(records, questions, cfg, settings)
    if not rows:
        raise UserError(f"generation.teacher: no row kept of {len(questions)} instruction(s), nothing written "
                        f"({json.dumps(counts)}); an answer cut at max_new_tokens is dropped: raise "
                        f"generation.teacher.max_new_tokens, or loosen answer_pattern / data.filters, and rerun "
                        f"with --restart")
    write_jsonl_atomic(out, rows)
    stats = {"out": str(out), "written": len(rows), **counts, "output_tokens": sum(r["tokens"] for r in records),
             "provenance": {k: v for k, v in settings.items() if v is not None},
             "seconds": round(time.time() - started, 1)}
    write_json_atomic(out.with_name(out.name + ".stats.json"), stats)
    journal_path.unlink()
    print(f"rayft: {json.dumps({k: v for k, v in stats.items() if k != 'provenance'})}", flush=True)
    return stats


class Journal:
    """Generated records, appended as whole lines; the first line holds the settings they were made with."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.done = path, {"instruction": {}, "answer": {}}
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        raw = path.read_bytes() if path.exists() else b""
        whole = raw[:raw.rfind(b"\n") + 1]  # a line cut by a kill lacks its newline
        if len(whole) < len(raw):
            os.truncate(path, len(whole))  # drop only the torn tail before appending
        complete = [json.loads(line) for line in whole.decode("utf-8").splitlines() if line]
        if not complete:  # no journal, or killed before its first line was whole
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            self.append([{"fingerprint": fingerprint, "settings": settings}])
            return
        if complete[0].get("fingerprint") != fingerprint:
            raise UserError(f"{path}: a journal of an earlier run with other settings; rerun with --restart to "
                            "discard it, or restore the settings it was made with")
        for record in complete[1:]:
            self.done[record["phase"]][record["i"]] = record
        print(f"rayft: continuing from {path}: {len(self.done['instruction'])} instructions and "
              f"{len(self.done['answer'])} answers already written", flush=True)

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            if "phase" in record:
                self.done[record["phase"]][record["i"]] = record


def _run_chunks(teacher: Any, teacher_cfg: Any, journal: Journal, phase: str, requests: list[Any],
                check: Any, max_new_tokens: int, temperature: float, stop: list[str]) -> list[dict[str, Any]]:
    """Generate the requests not yet in the journal, chunk by chunk; the records in request order."""
    todo = [i for i in range(len(requests)) if i not in journal.done[phase]]
    for start in range(0, len(todo), teacher_cfg.chunk_rows):
        chunk = todo[start:start + teacher_cfg.chunk_rows]
        gens = teacher.answer([requests[i] for i in chunk], first=chunk[0], seed=teacher_cfg.seed,
                              max_new_tokens=max_new_tokens, temperature=temperature, top_p=teacher_cfg.top_p,
                              stop=stop)
        journal.append([{"phase": phase, "i": i, "seed": teacher_cfg.seed + i, "tokens": g.new_tokens,
                         **check(g)} for i, g in zip(chunk, gens)])
        print(f"rayft: {phase}s {len(journal.done[phase])}/{len(requests)}", flush=True)
    return [journal.done[phase][i] for i in range(len(requests))]


def _verdict(gen: Any, pattern: re.Pattern | None) -> dict[str, Any]:
    from rayft.datatools.teachers import Rejected

    if isinstance(gen, Rejected):
        return {"status": "rejected_by_endpoint", "text": gen.text}
    if not gen.text.strip():
        return {"status": "empty", "text": gen.text}
    if gen.hit_max_tokens:
        return {"status": "cut_at_limit", "text": gen.text}
    if pattern is not None and not pattern.search(gen.text):
        return {"status": "wrong_format", "text": gen.text}
    return {"status": "ok", "text": gen.text}


def _new_instructions(teacher: Any, teacher_cfg: Any, journal: Journal, seeds: list[str], asked: int,
                      cfg: Any) -> tuple[list[str], dict[str, int]]:
    """Self-instruct: `asked` new instructions, each from examples drawn at random (seeded) from the seeds;
    copies of a seed or of an earlier new instruction are dropped by the data pipeline's dedup."""
    options = teacher_cfg.self_instruct
    k = min(options.examples_per_prompt, len(seeds))
    requests = []
    for i in range(asked):
        drawn = random.Random(teacher_cfg.seed * 1_000_003 + i).sample(seeds, k)
        examples = "\n".join(f"{n}. {' '.join(text.split())}" for n, text in enumerate(drawn, start=1))
        requests.append([{"role": "user", "content": INSTRUCTION_REQUEST.format(examples=examples)}])

    def check(gen: Any) -> dict[str, Any]:
        if gen.hit_max_tokens and "\n" in gen.text.strip():  # the first line, the instruction, was finished
            gen = type(gen)(gen.text, gen.new_tokens, False)
        verdict = _verdict(gen, None)
        if verdict["status"] == "ok":
            verdict["text"] = _one_instruction(gen.text)
            if not verdict["text"]:
                verdict["status"] = "wrong_format"
        return verdict

    records = _run_chunks(teacher, teacher_cfg, journal, "instruction", requests, check, options.max_new_tokens,
                          options.temperature, [])
    counts = {"asked": asked, **{r: sum(x["status"] == r for x in records) for r in DROP_REASONS}}
    from rayft.data.dedup import dedup_as_configured

    ok = [Row({"text": x["text"]}, f"instruction:#{x['i']}") for x in records if x["status"] == "ok"]
    known = [Row({"text": s}, f"seed:#{i}") for i, s in enumerate(seeds)]
    deduped = dedup_as_configured(known + ok, lambda row: row.data["text"], cfg.data, exact=True)
    kept = [row.data["text"] for row in deduped.kept if row.origin.startswith("instruction:")]
    counts.update(duplicates=len(ok) - len(kept), kept=len(kept))
    return kept, counts


def _one_instruction(text: str) -> str:
    """The instruction in a reply: its first non-empty line, without numbering, a label or quotes."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = re.sub(r"^(\d+[.)]\s*|[-*]\s+|(new\s+)?instruction\s*:\s*)", "", line, flags=re.IGNORECASE).strip()
    return line.strip('"“”').strip()


def _answers(teacher: Any, teacher_cfg: Any, journal: Journal, questions: list[str]) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": teacher_cfg.system}] if teacher_cfg.system else []
    requests = [[*system, {"role": "user", "content": q}] for q in questions]
    pattern = re.compile(teacher_cfg.answer_pattern, re.DOTALL) if teacher_cfg.answer_pattern else None
    return _run_chunks(teacher, teacher_cfg, journal, "answer", requests, lambda g: _verdict(g, pattern),
                       teacher_cfg.max_new_tokens, teacher_cfg.temperature, teacher_cfg.stop)


def _kept_rows(records: list[dict[str, Any]], questions: list[str], cfg: Any,
               settings: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Good answers through data.filters and dedup (on the instruction), as output rows; the counts."""
    from rayft.data.dedup import dedup_as_configured
    from rayft.data.filters import apply_filters, count_by_filter

    teacher_cfg = cfg.generation.teacher
    counts: dict[str, Any] = {"questions": len(questions), **{r: sum(x["status"] == r for x in records)
                                                              for r in DROP_REASONS}}
    good = [Row({"turns": [(questions[x["i"]], x["text"])], "system": teacher_cfg.system}, f"answer:#{x['i']}")
            for x in records if x["status"] == "ok"]
    filtered_rows, dropped = apply_filters(good, cfg.data.filters)
    deduped = dedup_as_configured(filtered_rows, lambda row: row.data["turns"][0][0], cfg.data)
    counts.update(filtered=count_by_filter(dropped), duplicates=len(deduped.removed), written=len(deduped.kept))
    by_index = {x["i"]: x for x in records}
    sampling = {k: settings[k] for k in ("max_new_tokens", "temperature", "top_p")}
    rows = []
    for row in deduped.kept:
        index = int(row.origin.split("#")[1])
        question, answer = row.data["turns"][0]
        rows.append({**({"system": teacher_cfg.system} if teacher_cfg.system else {}), "prompt": question,
                     "completion": answer, "provenance": {**{k: settings[k] for k in ("teacher", "adapter", "endpoint", "engine")
                                                             if settings.get(k)},
                                       **({"instruction": "self-instruct"} if settings.get("self_instruct") else {}),
                                                          **sampling, "seed": by_index[index]["seed"]}})
    assert counts["questions"] == sum(counts[r] for r in DROP_REASONS) + len(dropped) + counts["duplicates"] + \
        counts["written"], counts
    return rows, counts


def _seed_instructions(cfg: Any, teacher_cfg: Any) -> list[str]:
    """The instructions to answer (or, with self_instruct, to learn from): the prompts file, else the
    first user turn of every row of the config's data (its answers unused)."""
    if teacher_cfg.prompts:
        from rayft.data.prompt_files import read_prompt_file

        return read_prompt_file(Path(teacher_cfg.prompts), "generation.teacher.prompts")
    from rayft.data.build import collect

    collected = collect(cfg.data)
    found = [e["turns"][0][0] for e in collected.train + collected.eval if e.get("turns")]
    if not found:
        raise UserError("generation.teacher.prompts: none given, and the config's data rows hold no question")
    return found


def _refuse_inputs(cfg: Any, teacher_cfg: Any, out: Path) -> None:
    sources = [teacher_cfg.prompts] if teacher_cfg.prompts else [s.path for s in cfg.data.source_list()]
    written = (out, out.with_name(out.name + ".partial.jsonl"), out.with_name(out.name + ".stats.json"))
    for source in sources:
        if source and not str(source).startswith("hf:") and Path(source).resolve() in written:
            raise UserError(f"--out: {out} is one of the input files; input files are never modified")
