"""Regenerate the real wandb offline-run samples in this folder (run with a venv that has wandb, NOT ours).

    python3 -m venv /tmp/wandbvenv && /tmp/wandbvenv/bin/pip install wandb
    /tmp/wandbvenv/bin/python tests/data/wandb/make_samples.py /tmp/wsamples

Each run is made offline (WANDB_MODE=offline) under <out>/wandb/offline-run-.../; copy the run folders you
want to keep here. Each ``run-<id>.expected.json`` holds the run id, project, start time and record count as
wandb's own ``wandb_internal_pb2.Record`` decodes them, and the config written out by hand from the calls
below with wandb-core's merge rules (see README.md); what this script prints is the SDK's view, which differs
for updates of nested values.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MODEL = {
    "_target_": "fixtures.demo_models.DBNetLike",
    "architecture_name": "dbnet",
    "encoder": {"model_name": "mobilenetv3_small_050", "pretrained": False},
    "decoder": {"name": "unet", "params": {"in_channels": [16, 24, 48], "inner_channels": 16, "out_channels": 16}},
    "head": {"name": "db_head", "params": {"in_channels": 16, "k": 50}},
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(out))
    import wandb

    print("wandb", wandb.__version__)

    # 1. a nested config with a model section, then an update that adds keys
    run = wandb.init(
        project="ckptgate-nested",
        config={"model": MODEL, "preprocessing": {"image_size": [64, 64]}, "optimizer": {"lr": 0.001}},
    )
    run.config.update({"trainer": {"max_epochs": 3, "precision": "32"}, "seed": 7})
    for step in range(2):
        run.log({"loss": 1.0 / (step + 1), "epoch": step})
    print("nested", run.id, json.dumps(dict(run.config)))
    run.finish()

    # 2. flattened keys, as some loggers write them
    run = wandb.init(
        project="ckptgate-flat",
        config={
            "model.encoder.model_name": "mobilenetv3_small_050",
            "model/decoder/name": "unet",
            "model.head.params.k": 50,
        },
    )
    run.log({"loss": 0.5})
    print("flat", run.id, json.dumps(dict(run.config)))
    run.finish()

    # 3. updates that change existing values (allow_val_change), attribute and item assignment
    run = wandb.init(
        project="ckptgate-change",
        config={"model": MODEL, "optimizer": {"lr": 0.001, "momentum": 0.9}, "batch_size": 8, "tags": ["a"]},
    )
    run.config.update({"optimizer": {"lr": 0.01, "weight_decay": 0.0001}, "batch_size": 16}, allow_val_change=True)
    run.config.update({"model": {"decoder": {"name": "fpn"}}}, allow_val_change=True)
    run.config.epochs = 5
    run.config["notes"] = "nan-and-unicode ✓"
    run.config.update({"ratio": float("nan"), "big": 2**70, "empty": {}, "none": None})
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1)})
    print("change", run.id, json.dumps(dict(run.config)))
    run.finish()

    # 4. a config too large for one 32 KiB block: its record is split into FIRST/MIDDLE/LAST chunks
    run = wandb.init(
        project="ckptgate-big",
        config={"model": MODEL, "class_names": [f"c{i:05d}" for i in range(8000)]},
    )
    run.config.update({"model": {"head": {"params": {"k": 25}}}}, allow_val_change=True)
    for step in range(40):
        run.log({"loss": 1.0 / (step + 1), "lr": 0.001})
    print("big", run.id, json.dumps({k: v for k, v in dict(run.config).items() if k != "class_names"}))
    run.finish()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wsamples"))
