"""Render the config reference in docs/config.md from the pydantic schema in `rayft.schema`:
one Markdown table per section (dotted name, type, default, constraints, description), written
between the markers by `--write PATH`; `--check PATH` exits 1 when it is stale (as the tests do)."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rayft.config.pipeline import Pipeline

BEGIN = "<!-- BEGIN generated: rayft/config/docs.py -->"
END = "<!-- END generated -->"
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"),
           ("min_length", "min length"), ("max_length", "max length"), ("pattern", "pattern"))


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def type_name(ann: Any) -> str:
    """A short name for an annotation: `int`, `"lora" | "full"`, `list[str] | null`."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is type(None):
        return "null"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if _is_model(ann):
        return "stage" if "type" in ann.model_fields else "section"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann))


def default_text(field: FieldInfo, in_stage: bool = False) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if _is_model(type(value)):  # a section: the stage's copy of a top-level one, or a sub-section
            return "top-level value" if in_stage else "see its fields"
        if isinstance(value, list) and value and all(_is_model(type(v)) for v in value):
            # the default stage list by type; other lists of sections (cluster.worker_groups) in full
            value = [{"type": v.type} if "type" in type(v).model_fields else v.model_dump() for v in value]
        return json.dumps(value)
    return "required" if field.is_required() else json.dumps(field.default)


def constraints_text(field: FieldInfo) -> str:
    return ", ".join(f"`{symbol} {getattr(meta, attr)}`" for meta in field.metadata
                     for attr, symbol in _BOUNDS if getattr(meta, attr, None) is not None)


def field_rows(model: type[BaseModel], prefix: str) -> list[str]:
    """Rows for the fields of `model`. A top-level section gets a table of its own; a section
    inside a stage is one row pointing at the top-level table of the same name."""
    rows = []
    in_stage = prefix.startswith("stages.")
    for name, field in model.model_fields.items():
        section = _is_model(field.annotation)
        if section and not in_stage and not prefix:
            continue  # a top-level section: it has a table of its own
        items = [a for a in typing.get_args(field.annotation) if _is_model(a)]
        nested = field.annotation if section and prefix and not in_stage else (items[0] if items else None)
        description = field.description or ""
        if section and in_stage:
            description = (f"Any field of [`{name}`](#{name}); keys set here override the top-level "
                           f"`{name}` for this stage only.")
        elif name == "stages" and not description:
            description = "The training stages, run in order; each starts from the previous one's output."
        cells = [f"`{prefix}{name}`", f"`{type_name(field.annotation)}`", f"`{default_text(field, in_stage)}`",
                 constraints_text(field), description]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        if nested is not None and name != "stages":  # a sub-section (data.dedup) or a list of them (data.sources)
            listed = typing.get_origin(field.annotation) is list  # data.sources[] (not an optional section)
            rows += field_rows(nested, f"{prefix}{name}{'[].' if listed else '.'}")
    return rows


def _table(rows: list[str]) -> list[str]:
    return ["| Field | Type | Default | Constraints | Description |", "|---|---|---|---|---|", *rows, ""]


def stage_models(ann: Any = None) -> list[type[BaseModel]]:
    """Every stage class in the `stages` union (one per stage `type`), in declaration order."""
    ann = Pipeline.model_fields["stages"].annotation if ann is None else ann
    own = [ann] if _is_model(ann) and "type" in ann.model_fields else []
    return own + [m for arg in typing.get_args(ann) for m in stage_models(arg)]


def render_config_reference() -> str:
    """The generated part of docs/config.md, as Markdown."""
    out = ["## Reference", "", "Generated from the schema in `rayft/schema/` by `rayft/config/docs.py`.", "",
           "### Top level", "", *_table(field_rows(Pipeline, ""))]
    for name, field in Pipeline.model_fields.items():
        if name == "stages":
            for stage in stage_models():
                kind = stage.model_fields["type"].default
                out += [f"### stages (type `{kind}`)", "", f"An entry of `stages` with `type: {kind}`.", "",
                        *_table(field_rows(stage, "stages.N."))]
        elif _is_model(field.annotation):
            out += [f"### {name}", "", *([field.description, ""] if field.description else []),
                    *_table(field_rows(field.annotation, f"{name}."))]
    return "\n".join(out).rstrip() + "\n"


def replace_generated(text: str, generated: str) -> str:
    """`text` with everything between the BEGIN and END markers replaced by `generated`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markers not found: the file needs {BEGIN!r} and, after it, {END!r}")
    return text[: start + len(BEGIN)] + "\n\n" + generated + "\n" + text[end:]


def is_up_to_date(path: str | Path) -> bool:
    text = Path(path).read_text(encoding="utf-8")
    return replace_generated(text, render_config_reference()) == text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayft.config.docs", description=__doc__.split(":\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="replace the generated part of PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 if the generated part of PATH is stale")
    args = parser.parse_args(argv)
    try:
        if args.write:
            text = replace_generated(Path(args.write).read_text(encoding="utf-8"), render_config_reference())
            Path(args.write).write_text(text, encoding="utf-8")
        elif args.check and not is_up_to_date(args.check):
            print(f"{args.check}: stale; run python -m rayft.config.docs --write {args.check}", file=sys.stderr)
            return 1
        elif not args.check:
            sys.stdout.write(render_config_reference())
    except (OSError, ValueError) as exc:
        print(f"rayft.config.docs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
