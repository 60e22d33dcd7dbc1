"""The web UI's "New run" form: form fields -> a rayft config (YAML), checked by the same schema as
`rayft train`, with the UI's own confinement rules (data only from the folders the UI was given,
runs only under its storage path)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rayft.core.errors import UserError

DEMO_DATASET = "demo: shop orders -> JSON (built in)"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass
class Form:
    """What the page's fields hold (strings and numbers as a person typed them)."""

    model: str = "builtin:smollm2-135m-instruct"
    dataset: str = DEMO_DATASET
    data_format: str = "auto"
    template: str = "chat"  # as the served model is asked (the Chat tab, any OpenAI client)
    stages: tuple[str, ...] = ("sft",)
    adapter: str = "lora"
    r: Any = 16
    alpha: Any = 32
    lr: Any = "1e-3"
    max_steps: Any = 40
    batch_size: Any = 4
    eval_steps: Any = 10
    max_length: Any = 256
    num_workers: Any = 1
    evaluate: bool = True


def demo_dataset() -> Path:
    from rayft.demo import __file__ as demo_init

    return Path(demo_init).parent / "extract_orders.jsonl"


def form_to_config(form: Form) -> dict[str, Any]:
    """The raw config the form describes. Values go in as typed (numbers parsed when they look like
    numbers), so the schema, not this function, says what is wrong with them."""
    dataset = str(demo_dataset()) if form.dataset == DEMO_DATASET else form.dataset
    raw: dict[str, Any] = {
        "model": {"name": form.model},
        "adapter": ({"type": form.adapter} if form.adapter in ("full", "ia3") else
                    {"type": "lora", "r": _number(form.r), "alpha": _number(form.alpha)}),
        "data": {"path": dataset, "format": form.data_format, "template": form.template,
                 "max_length": _number(form.max_length)},
        "training": {"lr": _number(form.lr), "max_steps": _number(form.max_steps),
                     "batch_size": _number(form.batch_size), "eval_steps": _number(form.eval_steps),
                     "logging_steps": 1},
        "scaling": {"num_workers": _number(form.num_workers), "resources_per_worker": {"CPU": 1}},
        "eval": {"enabled": bool(form.evaluate)},
    }
    if form.adapter == "qlora":  # LoRA on a 4-bit base (the page's radio offered it; the schema has no such type)
        raw["model"]["quantization"] = {"mode": "4bit"}
    if dataset == str(demo_dataset()):
        raw["data"]["eval_split"] = 60
        raw["eval"].update({"num_examples": 20, "max_new_tokens": 48})
    stages = list(form.stages or ())
    if stages != ["sft"]:
        raw["stages"] = [{"type": kind} for kind in stages]
    return raw


def to_yaml(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)


def check_config(text: str, allowed_data: list[Path], storage: Path):
    """Parse and validate YAML from the page. Returns (LoadedConfig, None) or (None, message); the
    message names the field, as `rayft train` would, or says which folder a path must be in."""
    from rayft.config.load import load_pipeline

    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return None, f"The YAML does not parse{where}: {getattr(exc, 'problem', None) or exc}"
    if not isinstance(raw, dict):
        return None, "The config must be a YAML mapping (model:, data:, training: ...)"
    if "storage" in raw and (raw.get("storage") or {}).get("path") not in (None, str(storage)):
        return None, f"storage.path: runs started from this page are written under {storage}; remove the field"
    raw = {**raw, "storage": {**(raw.get("storage") or {}), "path": str(storage)}}
    if "tune" in raw:
        return None, "tune: a sweep is started with `rayft tune`; this page starts training runs"
    try:
        loaded = load_pipeline(raw=raw, label="config")
    except UserError as exc:
        return None, str(exc)
    for where, path in data_paths(loaded.pipeline):
        problem = _outside(path, allowed_data)
        if problem:
            return None, f"{where}: {problem}"
    problem = _model_problem(loaded.pipeline.model.name, [*allowed_data, storage])
    if problem:
        return None, f"model.name: {problem}"
    return loaded, None


def _model_problem(name: str, allowed: list[Path]) -> str | None:
    """A builtin, or a local model folder inside the page's folders (a merged model under the
    storage path, a model copied into a data folder); this page reaches no hub."""
    if name.startswith("builtin:"):
        return None
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return (f"{name}: not a builtin model and no such local folder (this page reaches no model hub; "
                "see `rayft models` for the builtins)")
    if not _inside(folder.resolve(), [root for root in allowed if root.is_dir()]):
        return f"{name} is outside the folders this page may read ({', '.join(str(a) for a in allowed)})"
    return None


def data_paths(pipeline) -> list[tuple[str, Path | None]]:
    """(field, path) of every data file the config reads."""
    found = []
    for i, stage in enumerate(pipeline.stages):
        prefix = f"stages.{i}.data" if len(pipeline.stages) > 1 else "data"
        data = stage.data
        paths = data.path if isinstance(data.path, list) else [data.path]
        found += [(f"{prefix}.path", Path(p)) for p in paths if p]
        found += [(f"{prefix}.sources.{j}.path", Path(s.path)) for j, s in enumerate(data.sources) if s.path]
        if data.eval_path:
            found.append((f"{prefix}.eval_path", Path(data.eval_path)))
        if getattr(data, "dataset", None):
            found.append((f"{prefix}.dataset", None))
    return found


def _outside(path: Path | None, allowed: list[Path]) -> str | None:
    if path is None:
        return "this page takes data files, not registry names; put the dataset's file in data.path"
    if "://" in str(path) or str(path).startswith(("hf:", "hub:")):
        return "this page reads local files only (no hub or remote datasets)"
    real = path.expanduser().resolve()
    if not _inside(real, allowed):
        return f"{path} is outside the data folders this page may read ({', '.join(str(a) for a in allowed)})"
    if not real.is_file():
        return f"{path}: no such file"
    return None


def _inside(real: Path, roots: list[Path]) -> bool:
    """`real` (resolved) is one of `roots` or below one."""
    return any(real == root.resolve() or root.resolve() in real.parents for root in roots)


def check_run_name(name: str) -> str | None:
    if not RUN_NAME.match(name or ""):
        return "run name: letters, digits, '.', '_' and '-' only (at most 80), starting with a letter or digit"
    return None


def _number(value: Any) -> Any:
    """'1e-3' -> 0.001, '16' -> 16; anything else as typed (the schema names it if it is wrong)."""
    if isinstance(value, str):
        text = value.strip()
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
        return text
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
