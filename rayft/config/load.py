"""The one config loader: YAML -> `--set a.b=c` overrides -> validated `Pipeline` -> dataset
registry entries filled in -> paths resolved (`load_pipeline`), for the CLI, sweeps and their
trials, the web UI and serving alike; and the explanation of what is wrong.

Errors name the dotted path of the bad field and, for a misspelled key, suggest the closest
valid one (`training.lrr: unknown key; did you mean 'lr'?`).
"""

from __future__ import annotations

import copy
import difflib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rayft.config.pipeline import Pipeline
from rayft.core.errors import ConfigError
from rayft.core.paths import resolve_path


@dataclass
class LoadedConfig:
    pipeline: Pipeline
    source: Path | None  # the YAML file, None for a config built in code
    raw: dict | None = None  # the mapping that was validated (overrides applied), before paths were resolved

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def stem(self) -> str:
        return self.source.stem if self.source else "run"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0.c=value` -> (['a','b','0','c'], value); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. training.lr=1e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set `value` at `path` inside nested dicts/lists, creating dicts on the way."""
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, where)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = [{"type": "sft"}] if part == "stages" else {}
            node = node[part]
        else:
            raise ConfigError(f"--set {'.'.join(path)}: '{where}' is not a section")
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, ".".join(path))] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {'.'.join(path)}: parent is not a section")


def _index(items: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise ConfigError(f"--set {where}: expected a list index below {len(items)}")
    return int(part)


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, ...)")
    return raw


def load_pipeline(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                  raw: dict | None = None, values: dict[str, Any] | None = None,
                  label: str | None = None) -> LoadedConfig:
    """Read, override and validate a config, then fill in `data.dataset` names from their registry
    and resolve relative paths against the config's folder.

    `source` is the YAML file; with `raw` (a mapping already read, e.g. from the web UI's form or a
    sweep's base config, never changed here) it only says where relative paths start. `overrides`
    are `--set` texts, `values` {dotted path: value} pairs (a sweep's sampled parameters); errors
    start with `label` (default: the file)."""
    path = Path(source).resolve() if source is not None else None
    raw = copy.deepcopy(raw) if raw is not None else (read_yaml(path) if path is not None else {})
    for text in overrides:
        apply_override(raw, *parse_override(text))
    for dotted, value in (values or {}).items():
        apply_override(raw, dotted.split("."), value)
    loaded = LoadedConfig(pipeline=validate(copy.deepcopy(raw), label or str(path or "config")), source=path, raw=raw)
    resolve_datasets(loaded)
    resolve_paths(loaded)
    return loaded


def validate(raw: dict, label: str = "config") -> Pipeline:
    try:
        return Pipeline.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, label)) from None


def with_values(pipeline: Pipeline, values: dict[str, Any], label: str = "config") -> Pipeline:
    """A new Pipeline: `pipeline` with `values` ({dotted path: value}) set, validated as a whole.
    `pipeline` itself is left as validated (callers that derive configs, e.g. PBT's segments,
    never change one in place)."""
    raw = pipeline.model_dump()
    for path, value in values.items():
        apply_override(raw, path.split("."), value)
    return validate(raw, label)


def resolve_datasets(loaded: LoadedConfig) -> None:
    """`data.dataset` names replaced by their registry entries (rayft.data.registry)."""
    from rayft.data.registry import fill_dataset

    sections = [("data", loaded.pipeline.data),
                *((f"stages.{i}.data", s.data) for i, s in enumerate(loaded.pipeline.stages))]
    for field, data in sections:
        if data.dataset is not None:
            fill_dataset(data, field, loaded.base_dir)


def resolve_paths(loaded: LoadedConfig) -> None:
    """Data paths resolved against the config file's folder (URIs and hf: specs kept)."""
    def resolve(p: str | None) -> str | None:
        return None if p is None else resolve_path(p, loaded.base_dir)

    for data in [loaded.pipeline.data, *(s.data for s in loaded.pipeline.stages)]:
        if isinstance(data.path, list):
            data.path = [resolve(p) for p in data.path]
        else:
            data.path = resolve(data.path)
        for source in data.sources:
            source.path = resolve(source.path)
        data.eval_path = resolve(data.eval_path)
    ev = loaded.pipeline.eval
    ev.models = {label: resolve(path) for label, path in ev.models.items()}
    ev.reward_model = resolve(ev.reward_model)
    if ev.arena is not None:  # folders and files; `base` and endpoints stay as they are
        ev.arena.models = {label: resolve(m) if isinstance(m, str) and m != "base" else m
                           for label, m in ev.arena.models.items()}
        ev.arena.prompts = resolve(ev.arena.prompts)
        ev.arena.judge.reward = resolve(ev.arena.judge.reward)
    if ev.benchmarks is not None:  # task files / folders and the offline data, not task names
        ev.benchmarks.data_dir = resolve(ev.benchmarks.data_dir)
        ev.benchmarks.tasks = [resolve(t) if t.endswith((".yaml", ".yml")) or (loaded.base_dir / t).is_dir() else t
                               for t in ev.benchmarks.tasks]
    gen = loaded.pipeline.generation
    if gen.vllm_python:
        gen.vllm_python = resolve(gen.vllm_python)
    if gen.teacher is not None:  # builtin: names and endpoints stay as they are
        teacher = gen.teacher
        teacher.prompts, teacher.adapter = resolve(teacher.prompts), resolve(teacher.adapter)
        if teacher.model and not teacher.model.startswith("builtin:") and (loaded.base_dir / teacher.model).exists():
            teacher.model = resolve(teacher.model)
    for training in [loaded.pipeline.training, *(s.training for s in loaded.pipeline.stages)]:
        if training.deepspeed.config_file:
            training.deepspeed.config_file = resolve(training.deepspeed.config_file)


def format_validation_error(err: ValidationError, label: str) -> str:
    problems: list[str] = []
    for e in err.errors():
        where, model = _walk(e["loc"])
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            allowed = list(model.model_fields) if model else []
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            msg = f"unknown key; did you mean '{hint[0]}'?" if hint else "unknown key"
            if allowed:
                msg += f" (valid keys: {', '.join(allowed)})"
        elif e["type"] == "union_tag_not_found":
            msg = "each stage needs a `type` (e.g. sft)"
        elif e["type"] == "union_tag_invalid":
            tag = str(e.get("input", {}).get("type") if isinstance(e.get("input"), dict) else "")
            tags = e.get("ctx", {}).get("expected_tags", "")
            hint = difflib.get_close_matches(tag, [t.strip(" '") for t in tags.split(",")], n=1)
            msg = f"unknown stage type '{tag}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
            msg += f" (known: {tags})"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
        problems.append(f"{where}: {msg}" if where else msg)
    problems = _drop_inherited(problems)
    head = f"{label}: invalid config ({len(problems)} problem{'s' * (len(problems) > 1)}):"
    return "\n".join([head, *(f"  {p}" for p in problems)])


def _drop_inherited(problems: list[str]) -> list[str]:
    """A bad top-level `training`/`data` field is copied into every stage; report it once."""
    top = set(problems)
    return [p for p in problems
            if not (p.startswith("stages.") and p.split(".", 2)[-1] in top)]


def _walk(loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """Dotted display path for a pydantic error location, and the model owning its last key.

    Pydantic puts a discriminated union's tag into the location (`stages.0.sft.training`);
    the display path drops it (`stages.0.training`).
    """
    model: Any = Pipeline
    shown: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            shown.append(str(part))
            continue
        if isinstance(model, dict):  # a union of stage models: this part is the tag
            model = model.get(part)
            continue
        if i == len(loc) - 1:
            shown.append(part)
            break
        shown.append(part)
        field = model.model_fields.get(part) if _is_model(model) else None
        model = _models_in(field.annotation) if field else None
    owner = model if _is_model(model) and loc and isinstance(loc[-1], str) else None
    return ".".join(shown), owner


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _models_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation; a {tag: model} dict for a union of stage models."""
    if _is_model(annotation):
        return annotation
    found = [m for m in (_models_in(a) for a in typing.get_args(annotation)) if m is not None]
    tagged = {m.model_fields["type"].default: m for m in found
              if _is_model(m) and "type" in m.model_fields}
    if tagged and typing.get_origin(annotation) is typing.Annotated:
        return tagged
    return found[0] if found else None


def dump_yaml(pipeline: Pipeline) -> str:
    return yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False)


def json_schema() -> str:
    schema = Pipeline.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rayft config"
    return json.dumps(schema, indent=2)
