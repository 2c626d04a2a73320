"""LightningCLI runs as evidence: the ``config.yaml`` its ``SaveConfigCallback`` writes into the logger's folder.

A run log beside a checkpoint is already a config source for the gate; this module finds the others: a
training whose logs and checkpoints went to different folders (its ``ModelCheckpoint`` ``dirpath`` or its
``default_root_dir`` names the checkpoint's folder), and the run logs of a folder two trainings wrote into,
which only the weights can tell apart when the checkpoints store no hyperparameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ckptgate.configs import CLI_CONFIG, HYDRA_CONFIG, load_config
from ckptgate.configs import Candidate as ConfigCandidate
from ckptgate.documents import DocumentError
from ckptgate.recovery.evidence import Source, output_locations

# not entered: Hydra's own folder (hydra_runs reads it), wandb's (wandb_runs), checkpoint folders
_SKIPPED = frozenset({HYDRA_CONFIG[0], "wandb"})


def is_cli_config(document: object) -> bool:
    """A LightningCLI config records the trainer beside the module: ``trainer`` and a ``model`` mapping."""
    return isinstance(document, Mapping) and isinstance(document.get("model"), Mapping) and "trainer" in document


def find_cli_configs(root: Path) -> list[Path]:
    """Every ``config.yaml`` under ``root`` outside Hydra and wandb folders, without following links."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if CLI_CONFIG in files:
            found.append(Path(directory, CLI_CONFIG))
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED and not d.endswith(".ckpt"))
    return found


def sources(root: Path) -> list[Source]:
    """Every LightningCLI run config under ``root`` that could be read, as evidence."""
    found = []
    for config_file in find_cli_configs(root):
        try:
            resolved = load_config(ConfigCandidate("cli", config_file), root)
        except DocumentError:
            continue
        if not is_cli_config(resolved.data):
            continue
        found.append(
            Source(
                kind="cli",
                label=f"LightningCLI config {config_file.relative_to(root).as_posix()}",
                path=config_file,
                config=resolved.data,
                text=output_locations(resolved.data),
                notes=resolved.notes,
            )
        )
    return found
