"""Hydra run folders as evidence: ``.hydra/config.yaml`` (+ ``overrides.yaml``) anywhere under the outputs dir.

A Hydra folder that is an ancestor of a checkpoint is already a config source for the gate; this module
finds the others: Hydra's own ``outputs/DATE/TIME/`` folders of runs that saved their checkpoints
elsewhere, matched by the folder they name or by time.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from ckptgate.configs import Candidate as ConfigCandidate
from ckptgate.configs import load_config
from ckptgate.documents import DocumentError, read_document
from ckptgate.naming import parse_run_timestamp
from ckptgate.recovery.evidence import Source, output_locations

HYDRA_DIR = ".hydra"


def find_hydra_dirs(root: Path) -> list[Path]:
    """Run folders (parents of ``.hydra/config.yaml``) under ``root``, without following links."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if os.path.basename(directory) == HYDRA_DIR and "config.yaml" in files:
            found.append(Path(directory).parent)
            subdirs[:] = []
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.endswith(".ckpt"))
    return sorted(found)


def sources(root: Path) -> list[Source]:
    """Every Hydra run folder under ``root`` whose config could be read, as evidence."""
    found = []
    for run in find_hydra_dirs(root):
        config_file = run / HYDRA_DIR / "config.yaml"
        try:
            resolved = load_config(ConfigCandidate("hydra", config_file), root)
        except DocumentError:
            continue
        overrides: Any = []  # ["callbacks.model_checkpoint.dirpath=outputs/exp/checkpoints", ...]
        hydra_config: Any = {}
        with contextlib.suppress(DocumentError):
            overrides = read_document(run / HYDRA_DIR / "overrides.yaml")
        with contextlib.suppress(DocumentError):
            hydra_config = read_document(run / HYDRA_DIR / "hydra.yaml")
        relative = run.relative_to(root)
        found.append(
            Source(
                kind="hydra",
                label=f"Hydra run {relative.as_posix()}",
                path=config_file,
                config=resolved.data,
                started_local=parse_run_timestamp(relative.parts),
                text=output_locations([resolved.data, hydra_config], overrides if isinstance(overrides, list) else ()),
                notes=resolved.notes,
            )
        )
    return found
