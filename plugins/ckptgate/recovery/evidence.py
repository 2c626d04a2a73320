"""The records recovery works with: a source of a config, and a candidate (a source matched to a checkpoint).

Evidence has tiers. A stronger tier beats a weaker one; within a tier nothing is stronger, so two proven
candidates that disagree there are an ambiguity, reported, never guessed.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ckptgate.configs import find_model_key

# Top-level sections besides `model` that inference needs and that a recovered sidecar carries along.
INFERENCE_SECTIONS = ("preprocessing", "transforms", "postprocessing", "inference", "labels", "classes", "tokenizer")


# Keys whose value says where a run WROTE (checkpoints, logs, outputs). Only these count when a run "names"
# a checkpoint's folder: a fine-tuning run that merely reads `init_from: outputs/<run>/last.ckpt` does not.
OUTPUT_KEYS = frozenset(
    {
        "dirpath",
        "dir",
        "output_dir",
        "out_dir",
        "save_dir",
        "default_root_dir",
        "root_dir",
        "run_dir",
        "log_dir",
        "logdir",
        "exp_dir",
        "work_dir",
        "ckpt_dir",
        "checkpoint_dir",
        "checkpoints_dir",
        "checkpoint_path",
        "output_path",
        "save_path",
        "filepath",
    }
)


def _key_of(argument: str) -> str:
    """``callbacks.model_checkpoint.dirpath=...`` / ``--output_dir=...`` -> the last key segment."""
    key = argument.split("=", 1)[0].lstrip("-+~")
    return key.rsplit(".", 1)[-1].rsplit("/", 1)[-1].replace("-", "_")


def output_locations(config: Any, arguments: Any = ()) -> str:
    """Every value a run gives to an output-location key, in its config or on its command line, one per line.

    Command-line arguments count as ``key=value`` (Hydra overrides) or ``--key value`` pairs.
    """
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((key, v) for v in node)
        elif isinstance(node, str) and key in OUTPUT_KEYS:
            found.append(node)
    words = [str(a) for a in arguments] if isinstance(arguments, list | tuple) else []
    for index, word in enumerate(words):
        if "=" in word and _key_of(word) in OUTPUT_KEYS:
            found.append(word.split("=", 1)[1])
        elif word.startswith("--") and _key_of(word) in OUTPUT_KEYS and index + 1 < len(words):
            found.append(words[index + 1])
    return "\n".join(found)


class Tier(enum.IntEnum):
    """How strongly a source is tied to a checkpoint (lower is stronger)."""

    IN_RUN_FOLDER = 1  # the run's log lies inside the checkpoint's run folder (Hydra runs in its output dir)
    NAMES_FOLDER = 2  # the run's config or command line names the checkpoint's run folder
    TIMESTAMP = 3  # the run started within the tolerance of the folder's timestamp
    TIMESTAMP_OFFSET = 4  # the same after a whole-hour shift (folder names in local time, wandb in UTC)

    @property
    def label(self) -> str:
        return {
            Tier.IN_RUN_FOLDER: "inside the run folder",
            Tier.NAMES_FOLDER: "names the run folder",
            Tier.TIMESTAMP: "timestamp",
            Tier.TIMESTAMP_OFFSET: "timestamp with a time-zone offset",
        }[self]


def sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class Source:
    """One place a whole config was found: a wandb run, a Hydra run folder, or a checkpoint's hyperparameters."""

    kind: str  # "wandb" | "hydra" | "cli"
    label: str  # for people: "wandb run-20251017_215424-j8v6ba0v (files/config.yaml)"
    path: Path  # the file the config was read from
    config: dict[str, Any]
    run_id: str | None = None
    started_local: datetime | None = None  # naive, the training machine's clock (folder names)
    started_utc: datetime | None = None  # aware UTC (wandb metadata)
    text: str = ""  # where the run says it wrote (output-location values), to find a folder name in it
    notes: tuple[str, ...] = ()

    @property
    def model_key(self) -> str | None:
        return find_model_key(self.config)

    def sidecar_sections(self, sections: tuple[str, ...] = INFERENCE_SECTIONS) -> dict[str, Any] | None:
        """What a sidecar written from this source holds: ``model`` plus the inference sections beside it."""
        key = self.model_key
        if key is None:
            return None
        parent: dict[str, Any] = self.config
        for part in key.split(".")[:-1]:
            parent = parent[part]
        document = {"model": parent["model"]}
        document.update({name: parent[name] for name in sections if name in parent})
        return document


def content_key(document: dict[str, Any]) -> str:
    """Equal for two candidates that would write the same sidecar (they agree)."""
    return json.dumps(document, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """A source matched to one checkpoint, with how it matched."""

    source: Source
    tier: Tier
    detail: str  # "run started 1 s after the folder's timestamp 2025-10-17 21:54:23"
    distance_s: float = 0.0  # |time difference| left after the match, for ordering within a tier

    def describe(self) -> str:
        return f"{self.source.label}: {self.detail}"


@dataclass
class Attempt:
    """What verification said about one candidate."""

    candidate: Candidate
    verified: bool
    reason: str  # "weights load strictly (84 tensors), forward ok" or why not
    document: dict[str, Any] | None = field(default=None, repr=False)
    weights_tried: bool = False  # the config was built and the weights loaded into it (or tried)
