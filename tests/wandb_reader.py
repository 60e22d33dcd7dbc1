"""Read an offline W&B run back with wandb's own reader (wandb.sdk.internal.datastore, shipped up to
wandb 0.28: the test extra pins it) and its protobuf records: the run's name / group and every
history row's scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_offline_run(stage_dir: Path) -> dict[str, Any]:
    """The one offline run under `<stage>/wandb/`: {"name", "group", "project", "history": [rows]}."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    files = sorted(Path(stage_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline W&B run under {stage_dir}/wandb, found {files}"
    store = datastore.DataStore()
    store.open_for_scan(str(files[0]))
    run: dict[str, Any] = {"history": []}
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, project=record.run.project)
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.history.item})
    return run
