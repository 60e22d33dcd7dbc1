"""docs/config.md follows the config schema: generated part up to date, every field documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from rayft.config import docs as config_docs
from rayft.config.pipeline import Pipeline

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _dotted_fields() -> list[str]:
    """Every documented name: top-level fields, `section.field`, and `stages.N.field` per stage type."""
    names = []
    for name, field in Pipeline.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names += [f"{name}.{sub}" for sub in section.model_fields]
        else:
            names.append(name)
    for stage in config_docs.stage_models():
        names += [f"stages.N.{sub}" for sub in stage.model_fields]
    return names


def test_config_doc_is_up_to_date():
    assert config_docs.is_up_to_date(DOC), (
        "docs/config.md is out of date with the schema (rayft/schema/); run "
        "`python -m rayft.config.docs --write docs/config.md`")


def test_every_field_of_every_section_is_documented():
    text = DOC.read_text(encoding="utf-8")
    names = _dotted_fields()
    assert {"run_name", "stages", "model.name", "data.path", "stages.N.type", "eval.top_p"} <= set(names)
    names += ["data.dedup.near", "data.dedup.threshold", "data.sources[].weight", "data.sources[].path"]
    missing = [n for n in names if f"| `{n}` |" not in text]
    assert not missing, f"fields missing from docs/config.md: {missing}"


def test_every_stage_type_has_a_table():
    text = config_docs.render_config_reference()
    kinds = [s.model_fields["type"].default for s in config_docs.stage_models()]
    assert "sft" in kinds
    for kind in kinds:
        assert f"### stages (type `{kind}`)" in text


def test_constraints_and_escaping_are_rendered():
    text = config_docs.render_config_reference()
    assert "| `adapter.r` | `int` | `16` | `>= 1`, `<= 1024` |" in text
    assert '`"lora" \\| "ia3" \\| "full"`' in text  # a `|` inside a table cell is escaped


def test_check_fails_when_stale_and_write_fixes_it(tmp_path, capsys):
    doc = tmp_path / "config.md"
    doc.write_text(f"# intro\n\n{config_docs.BEGIN}\nold table\n{config_docs.END}\n\ntail\n")
    assert config_docs.main(["--check", str(doc)]) == 1
    assert "stale" in capsys.readouterr().err
    assert config_docs.main(["--write", str(doc)]) == 0
    assert config_docs.main(["--check", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# intro\n") and text.endswith(f"{config_docs.END}\n\ntail\n")
    assert "old table" not in text and "`training.lr`" in text


def test_missing_markers_are_an_error(tmp_path):
    doc = tmp_path / "config.md"
    doc.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        config_docs.is_up_to_date(doc)
    assert config_docs.main(["--check", str(doc)]) == 2
