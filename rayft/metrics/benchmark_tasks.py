"""The benchmark tasks rayft ships for lm-evaluation-harness: MMLU, ARC, HellaSwag, TruthfulQA and
GSM8K read from local copies of their data (no hub), written as lm-eval task YAML files.

Each task is lm-eval's own definition (prompt, choices, target, metrics, filters) with the hub
dataset replaced by local files under one data folder (`eval.benchmarks.data_dir`), laid out as
below (docs/evaluation.md says where to get each file and its licence). Only the tasks whose files
exist are written; asking for one whose files are missing is a user error naming the file.

    <data_dir>/mmlu/test/<subject>_test.csv     question,A,B,C,D,answer (no header; Hendrycks' data.tar)
    <data_dir>/mmlu/dev/<subject>_dev.csv       few-shot examples (optional)
    <data_dir>/arc/ARC-Easy/test.jsonl          Hugging Face allenai/ai2_arc columns (+ train.jsonl)
    <data_dir>/arc/ARC-Challenge/test.jsonl
    <data_dir>/hellaswag/validation.jsonl       Rowan/hellaswag columns (+ train.jsonl)
    <data_dir>/truthfulqa/validation.jsonl      truthfulqa/truthful_qa `multiple_choice` columns
    <data_dir>/gsm8k/test.jsonl                 openai/gsm8k `main` columns (+ train.jsonl for few-shot)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PREFIX = "rayft_"
MMLU_GROUP = "rayft_mmlu"
MMLU_COLUMNS = ["question", "A", "B", "C", "D", "answer"]

_MMLU_TEXT = ("{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:")
_TRUTHFULQA_SHOTS = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\nA: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\nA: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\nA: The 1992 Olympics were held in Barcelona, Spain.")
_ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
_ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}


@dataclass(frozen=True)
class Benchmark:
    """One shipped benchmark: its task name(s), the files it reads and where to get them."""

    name: str
    files: tuple[str, ...]  # relative to data_dir; the first is the evaluated split
    source: str  # where to get the data, and its licence
    optional: tuple[str, ...] = ()  # few-shot splits


BENCHMARKS: dict[str, Benchmark] = {
    "rayft_mmlu": Benchmark("rayft_mmlu", ("mmlu/test/<subject>_test.csv",),
                            "https://people.eecs.berkeley.edu/~hendrycks/data.tar (MIT)", ("mmlu/dev/<subject>_dev.csv",)),
    "rayft_arc_easy": Benchmark("rayft_arc_easy", ("arc/ARC-Easy/test.jsonl",),
                                "Hugging Face allenai/ai2_arc, config ARC-Easy, exported to JSON lines (CC BY-SA 4.0)",
                                ("arc/ARC-Easy/train.jsonl",)),
    "rayft_arc_challenge": Benchmark("rayft_arc_challenge", ("arc/ARC-Challenge/test.jsonl",),
                                     "Hugging Face allenai/ai2_arc, config ARC-Challenge, exported to JSON lines "
                                     "(CC BY-SA 4.0)", ("arc/ARC-Challenge/train.jsonl",)),
    "rayft_hellaswag": Benchmark("rayft_hellaswag", ("hellaswag/validation.jsonl",),
                                 "Hugging Face Rowan/hellaswag, split validation, exported to JSON lines (MIT)",
                                 ("hellaswag/train.jsonl",)),
    "rayft_truthfulqa_mc1": Benchmark("rayft_truthfulqa_mc1", ("truthfulqa/validation.jsonl",),
                                      "Hugging Face truthfulqa/truthful_qa, config multiple_choice, exported to JSON "
                                      "lines (Apache-2.0)"),
    "rayft_gsm8k": Benchmark("rayft_gsm8k", ("gsm8k/test.jsonl",),
                             "https://github.com/openai/grade-school-math grade_school_math/data (MIT)",
                             ("gsm8k/train.jsonl",)),
}


@dataclass
class LocalTasks:
    """The task folder written for one data folder."""

    folder: Path
    names: set[str] = field(default_factory=set)  # every task and group name written
    missing: dict[str, str] = field(default_factory=dict)  # shipped name -> the file it lacks


def is_shipped(name: str) -> bool:
    return name.startswith(PREFIX)


def mmlu_subjects(data_dir: Path) -> list[str]:
    return sorted(p.name.removesuffix("_test.csv") for p in (data_dir / "mmlu" / "test").glob("*_test.csv"))


def write_local_tasks(data_dir: Path | None, folder: Path) -> LocalTasks:
    """Write the YAML of every shipped task whose data is under `data_dir` into `folder`."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    found = LocalTasks(folder)
    if data_dir is None:
        found.missing = {name: "eval.benchmarks.data_dir" for name in BENCHMARKS}
        return found
    data_dir = data_dir.resolve()
    subjects = mmlu_subjects(data_dir)
    for subject in subjects:
        name = f"{MMLU_GROUP}_{subject}"
        dev = data_dir / "mmlu" / "dev" / f"{subject}_dev.csv"
        files = {"test": str(data_dir / "mmlu" / "test" / f"{subject}_test.csv"), **({"dev": str(dev)} if dev.is_file() else {})}
        _write(folder, name, {
            "task": name, "task_alias": subject, "dataset_path": "csv",
            "dataset_kwargs": {"data_files": files, "column_names": MMLU_COLUMNS},
            "test_split": "test", **({"fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"}} if dev.is_file() else {}),
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "output_type": "multiple_choice", "doc_to_text": _MMLU_TEXT, "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer", "metric_list": [_ACC], "metadata": {"version": 1.0}})
        found.names.add(name)
    if subjects:
        _write(folder, MMLU_GROUP, {"group": MMLU_GROUP, "task": [f"{MMLU_GROUP}_{s}" for s in subjects],
                                    "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                                    "metadata": {"version": 1.0}})
        found.names.add(MMLU_GROUP)
    else:
        found.missing[MMLU_GROUP] = str(data_dir / BENCHMARKS[MMLU_GROUP].files[0])
    for level in ("easy", "challenge"):
        config = "ARC-Easy" if level == "easy" else "ARC-Challenge"
        _jsonl_task(found, data_dir, f"rayft_arc_{level}", {
            "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
            "metric_list": [_ACC, _ACC_NORM], "metadata": {"version": 1.0}}, f"arc/{config}")
    if _jsonl_task(found, data_dir, "rayft_hellaswag", {
            "output_type": "multiple_choice", "process_docs": "!function hellaswag_utils.process_docs",
            "doc_to_text": "{{query}}", "doc_to_target": "{{label}}", "doc_to_choice": "choices",
            "metric_list": [_ACC, _ACC_NORM], "metadata": {"version": 1.0}}, "hellaswag", split="validation"):
        import lm_eval.tasks

        shutil.copyfile(Path(lm_eval.tasks.__file__).parent / "hellaswag" / "utils.py", folder / "hellaswag_utils.py")
    _jsonl_task(found, data_dir, "rayft_truthfulqa_mc1", {
        "output_type": "multiple_choice", "num_fewshot": 0,
        "doc_to_text": "{{prompt_qa + '\\n\\nQ: ' + question + '\\nA:'}}".replace(
            "prompt_qa", _jinja_string(_TRUTHFULQA_SHOTS)),
        "doc_to_target": 0, "doc_to_choice": "{{mc1_targets.choices}}", "metric_list": [_ACC],
        "metadata": {"version": 2.0}}, "truthfulqa", split="validation", fewshot=False)
    _jsonl_task(found, data_dir, "rayft_gsm8k", {
        "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                         "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "repeats": 1, "num_fewshot": 5,
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                    {"function": "take_first"}]}],
        "metadata": {"version": 3.0}}, "gsm8k")
    return found


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _jsonl_task(found: LocalTasks, data_dir: Path, name: str, spec: dict[str, Any], sub: str,
                split: str = "test", fewshot: bool = True) -> bool:
    main = data_dir / sub / f"{split}.jsonl"
    if not main.is_file():
        found.missing[name] = str(main)
        return False
    train = data_dir / sub / "train.jsonl"
    files = {split: str(main), **({"train": str(train)} if fewshot and train.is_file() else {})}
    splits = {f"{split}_split" if split == "test" else "validation_split": split,
              **({"training_split": "train", "fewshot_split": "train"} if "train" in files else {})}
    _write(found.folder, name, {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                                **splits, **spec})
    found.names.add(name)
    return True


def _write(folder: Path, name: str, spec: dict[str, Any]) -> None:
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=10_000)
    # lm-eval's loader reads `!function module.name` tags; safe_dump would quote them as strings
    text = text.replace("'!function hellaswag_utils.process_docs'", "!function hellaswag_utils.process_docs")
    (folder / f"{name}.yaml").write_text(text)
