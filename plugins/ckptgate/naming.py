"""What folder and file names tell: run timestamps and checkpoint kinds.

Names are hints, never proof (a folder called ``pan_decoder`` may hold a ``unet``), so this module only
parses; it never decides whether a checkpoint is usable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

# 20251017_215423 (our runs, wandb), 2025-10-17_21-54-23 (Hydra's joined form), 20251017-215423.
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[_-](\d{2})(\d{2})(\d{2})(?!\d)")
_DASHED = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_T ](\d{2})[-:](\d{2})[-:](\d{2})(?!\d)")
# Hydra's default run dir is outputs/2025-10-17/21-54-23: a date folder holding a time folder.
_DATE_ONLY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME_ONLY = re.compile(r"^(\d{2})-(\d{2})-(\d{2})$")


def _datetime(parts: tuple[str, ...]) -> datetime | None:
    try:
        return datetime(*(int(p) for p in parts))  # type: ignore[misc]
    except ValueError:  # 20251399_999999 looks like a stamp but is not a date
        return None


def parse_timestamp(name: str) -> datetime | None:
    """The last valid ``YYYYMMDD_HHMMSS``-like stamp in one folder name (the run's start, naive)."""
    found: list[tuple[int, datetime]] = []
    for pattern in (_COMPACT, _DASHED):
        for match in pattern.finditer(name):
            stamp = _datetime(match.groups())
            if stamp is not None:
                found.append((match.start(), stamp))
    return max(found, key=lambda item: item[0])[1] if found else None


def parse_run_timestamp(run_parts: tuple[str, ...]) -> datetime | None:
    """The timestamp of a run folder given its path parts (relative to the outputs dir), innermost first.

    Looks at the run folder's own name, then Hydra's ``DATE/TIME`` two-level layout.
    """
    for index in range(len(run_parts) - 1, -1, -1):
        stamp = parse_timestamp(run_parts[index])
        if stamp is not None:
            return stamp
        time_match = _TIME_ONLY.match(run_parts[index])
        if time_match and index > 0:
            date_match = _DATE_ONLY.match(run_parts[index - 1])
            if date_match:
                stamp = _datetime(date_match.groups() + time_match.groups())
                if stamp is not None:
                    return stamp
    return None


# Lightning's ModelCheckpoint: "best", "best-v2", "last", "last-v1", "epoch=3-step=120", "epoch=03-val_loss=0.12-v1"
_VERSION = re.compile(r"^(?P<base>.*?)-v(?P<version>\d+)$")
# The value is one number: a looser class such as [-+0-9.eE]+ swallows the "-" before the next key
# ("epoch=3-step=120" would read epoch "3-" and lose the step).
_METRIC = re.compile(
    r"(?:^|[-_])(?P<key>[A-Za-z_][A-Za-z0-9_/.]*)=(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
)


@dataclass(frozen=True)
class CheckpointKind:
    """The role Lightning's naming gives a checkpoint file."""

    kind: str  # "best" | "last" | "epoch" | "other"
    version: int | None = None
    epoch: int | None = None
    step: int | None = None

    def describe(self) -> str:
        """Human label as a team's report writes it: "Best checkpoint v2", "Last checkpoint"."""
        label = {
            "best": "Best checkpoint",
            "last": "Last checkpoint",
            "epoch": "Epoch checkpoint",
            "other": "Checkpoint",
        }[self.kind]
        if self.kind == "epoch" and self.epoch is not None:
            label = f"Epoch {self.epoch} checkpoint"
            if self.step is not None:
                label += f" (step {self.step})"
        if self.version:
            label += f" v{self.version}"
        return label


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def parse_kind(filename: str) -> CheckpointKind:
    """Classify a checkpoint file name such as ``best-v2.ckpt`` or ``epoch=3-step=120.ckpt``."""
    stem = PurePosixPath(filename).stem if filename.endswith(".ckpt") else filename
    version = None
    match = _VERSION.match(stem)
    # A -vN counter; a run of thousands of digits is none (and int() would refuse it: ValueError).
    if match and len(match.group("version")) < 19:
        stem, version = match.group("base"), int(match.group("version"))
    lowered = stem.lower()
    if lowered in ("best", "last"):
        return CheckpointKind(lowered, version)
    metrics = {m.group("key"): m.group("value") for m in _METRIC.finditer(stem)}
    if "epoch" in metrics or "step" in metrics:
        return CheckpointKind("epoch", version, _int(metrics.get("epoch")), _int(metrics.get("step")))
    return CheckpointKind("other", version)
