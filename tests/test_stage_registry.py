"""Adding a stage type is one module with one registration: the example in docs/architecture.md,
dropped into the stages package of a fresh interpreter, becomes a stage type of the schema, of the
JSON Schema and of the registry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def docs_example() -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```python\n# rayft/stages/sft_neftune.py\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its example of adding a stage"
    return block.group(1)


def test_the_docs_example_adds_a_stage_type(tmp_path):
    (tmp_path / "sft_neftune.py").write_text(docs_example())
    probe = f"""
import json, rayft.stages
rayft.stages.__path__.append({str(tmp_path)!r})  # a second folder of the same package
from rayft.config.load import json_schema, validate
from rayft.stages import get_stage
pipeline = validate({{"stages": [{{"type": "sft"}}, {{"type": "sft_neftune", "noise_alpha": 2}}]}})
print(json.dumps({{"noise_alpha": pipeline.stages[1].noise_alpha, "name": pipeline.stages[1].name,
                  "impl": type(get_stage("sft_neftune")).__name__,
                  "in_schema": "NEFTuneStage" in json.loads(json_schema())["$defs"]}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "noise_alpha": 2.0, "name": "sft_neftune", "impl": "NEFTuneImpl", "in_schema": True}


def test_builtin_stage_types_keep_their_order():
    from rayft.stages import stage_configs, stage_type

    assert [stage_type(c) for c in stage_configs()] == ["sft", "reward", "dpo", "orpo", "cpo", "kto", "grpo", "ppo", "classify"]
