"""The dataset registry file (`datasets.yaml`): names for datasets, so a config says
`data: {dataset: hh-harmless}` instead of repeating a path, format and column mapping.

```yaml
datasets:
  hh-harmless:
    path: data/hh_harmless.jsonl        # a file, folder or `hf:<dataset>`; relative to this file
    format: preference_implicit
    description: Anthropic HH-RLHF harmless-base pairs, as shipped
  alpaca-gpt4:
    path: hf:vicgalle/alpaca-gpt4
    split: train
    columns: {instruction: instruction, output: output}
```
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rayft.schema.base import Strict
from rayft.schema.sections import RowFormatName


class DatasetEntry(Strict):
    path: str | list[str] = Field(description="A jsonl/json/csv/parquet file, a folder, `hf:<dataset>`, or a list; "
                                  "relative paths resolve against the registry file's folder.")
    format: RowFormatName = Field("auto", description="The rows' format (as `data.format`).")
    columns: dict[str, str] = Field(default_factory=dict, description="Column mapping (as `data.columns`).")
    split: str | None = Field(None, description="For an `hf:` path: the split to read (`train`, `test[:10%]`).")
    eval_path: str | None = Field(None, description="Held-out rows of this dataset (as `data.eval_path`).")
    description: str = Field("", description="What the dataset is, for `rayft data datasets`.")

    @model_validator(mode="after")
    def _split_only_for_hub(self) -> "DatasetEntry":
        paths = [self.path] if isinstance(self.path, str) else self.path
        if self.split is not None and not all(p.startswith("hf:") for p in paths):
            raise ValueError("`split` is for `hf:` paths; a file's rows are split with data.eval_split")
        return self


class DatasetRegistry(Strict):
    datasets: dict[str, DatasetEntry] = Field(description="Dataset name -> where and how to read it.")
