"""``--fix``: gather evidence -> rank -> verify -> write, for every checkpoint that has no config.

A config is written only when the model it builds loads the checkpoint's weights strictly; among proven
candidates the strongest evidence wins, and when equally strong ones disagree nothing is written. Nothing
is ever made up or filled with defaults, and no existing file is touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ckptgate import __version__, configs, stored
from ckptgate.discovery import CheckpointRecord, printable
from ckptgate.errors import CheckError, describe_exception
from ckptgate.recovery import cli_runs, hydra_runs, matching, wandb_runs
from ckptgate.recovery.evidence import Attempt, Source, content_key, sha256_of
from ckptgate.recovery.verify import Verifier
from ckptgate.recovery.write import write_sidecar

MAX_CANDIDATES = 20  # per checkpoint: bounds the time a crowded wandb folder can cost


@dataclass(frozen=True)
class RecoverySettings:
    wandb_dirs: tuple[Path, ...] = ()  # searched besides every wandb/ folder under the outputs dir
    tolerance_s: float = matching.DEFAULT_TOLERANCE_S
    dry_run: bool = False
    utc_offsets: tuple[int, ...] = ()  # seconds; zones the user says folder names use, besides those observed


@dataclass
class RecoveryTrace:
    """What recovery found and decided for one checkpoint."""

    relpath: str
    sidecar: Path
    outcome: str  # "written" | "would-write" | "exists" | "ambiguous" | "unrecoverable" | "unwritable"
    reason: str  # one line, for the config_present failure and the summary
    attempts: list[Attempt] = field(default_factory=list)
    skipped: int = 0  # weaker candidates not verified once a stronger one was proven

    @property
    def recovered(self) -> bool:
        return self.outcome in ("written", "would-write", "exists")

    def lines(self) -> list[str]:
        lines = [self.relpath]
        for index, attempt in enumerate(self.attempts, 1):
            verdict = "verified" if attempt.verified else "rejected"
            tier = attempt.candidate.tier.label
            lines.append(f"  {index}. {attempt.candidate.source.label} [{tier}: {attempt.candidate.detail}]")
            lines.append(f"     {verdict}: {attempt.reason}")
        if self.skipped:
            lines.append(f"  ({self.skipped} weaker candidate(s) not tried)")
        lines.append(f"  => {self.outcome}: {self.reason}")
        return lines


def default_wandb_dir(outputs_dir: Path, rootdir: Path) -> Path | None:
    """``wandb/`` beside the outputs dir, else at the rootdir."""
    for candidate in (outputs_dir.parent / "wandb", rootdir / "wandb"):
        if candidate.is_dir():
            return candidate
    return None


def wandb_folders_under(outputs_dir: Path) -> list[Path]:
    """Every ``wandb/`` folder inside the outputs dir: Hydra runs training in its run folder, so wandb writes
    ``outputs/<run>/wandb``. Not entered: wandb folders themselves, hidden folders, links."""
    found = []
    for folder, subfolders, _ in os.walk(outputs_dir):
        if "wandb" in subfolders:
            found.append(Path(folder, "wandb"))
        subfolders[:] = sorted(name for name in subfolders if name != "wandb" and not name.startswith("."))
    return found


def gather_sources(outputs_dir: Path, wandb_dirs: tuple[Path, ...] | list[Path] = ()) -> list[Source]:
    """Every wandb run (in the given folders and in every ``wandb/`` under the outputs dir), Hydra folder and
    LightningCLI run config that holds a config (read once per session)."""
    folders = {path.resolve(): path for path in [*wandb_dirs, *wandb_folders_under(outputs_dir)] if path.is_dir()}
    found = [source for folder in folders.values() for source in wandb_runs.sources(folder)]
    return found + hydra_runs.sources(outputs_dir) + cli_runs.sources(outputs_dir)


def missing_configs(gate: Any) -> list[CheckpointRecord]:
    """Checkpoints with no config anywhere, their own hyperparameters included, or only run logs that disagree
    and that nothing in the checkpoint tells apart (a broken config file is the user's to fix, not ours)."""
    missing = []
    for ckpt in gate.discovery().checkpoints:
        try:
            gate.find_config(ckpt)
        except (configs.ConfigNotFound, configs.AmbiguousConfig):
            missing.append(ckpt)
        except CheckError:
            continue
    return missing


def provenance(chosen: Attempt, agreeing: list[Attempt], sidecar: Path) -> dict[str, Any]:
    """Where the sidecar came from; paths relative to the sidecar's own folder, so they survive a move of
    the whole tree and do not depend on where pytest was started."""
    source = chosen.candidate.source
    return {
        "tool": f"pytest-ckptgate {__version__}",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "kind": source.kind,
            "file": os.path.relpath(source.path, sidecar.parent),
            "run_id": source.run_id,
            "sha256": sha256_of(source.path),
        },
        "matched_by": f"{chosen.candidate.tier.label}: {chosen.candidate.detail}",
        "verified": chosen.reason,
        "agreeing_sources": [a.candidate.source.label for a in agreeing if a is not chosen],
    }


def recover_one(
    gate: Any,
    ckpt: CheckpointRecord,
    sources: list[Source],
    settings: RecoverySettings,
    offsets: set[int] | None = None,
) -> RecoveryTrace:
    sidecar = ckpt.path.with_name(ckpt.stem + ".config.json")

    def trace(outcome: str, reason: str, attempts: list[Attempt] | None = None, skipped: int = 0) -> RecoveryTrace:
        return RecoveryTrace(ckpt.relpath, sidecar, outcome, printable(reason), attempts or [], skipped)

    try:
        checkpoint, state_dict, device = gate.read(ckpt, "cpu")
    except CheckError as exc:
        return trace("unrecoverable", f"the checkpoint itself cannot be read: {exc.message.splitlines()[0]}")
    if offsets is None:
        offsets = matching.observed_offsets(sources, settings.tolerance_s) | set(settings.utc_offsets)
    candidates = matching.rank(ckpt, sources, settings.tolerance_s, offsets)[:MAX_CANDIDATES]
    if not candidates:
        own = stored.stored_config(ckpt, checkpoint)
        kept = "no stored hyper_parameters" if own is None else "its stored hyper_parameters build no model"
        clues = [f"{kept}, and no wandb run, Hydra or LightningCLI folder holds or names its run folder"]
        if ckpt.run_timestamp is None:
            clues.append("(and its folder name has no timestamp to match runs by)")
        else:
            clues.append(f"or started within {settings.tolerance_s:.0f} s of {ckpt.run_timestamp:%Y-%m-%d %H:%M:%S}")
            near = matching.nearest(ckpt, sources, settings.tolerance_s)
            if near:
                clues.append(f"({near})")
        return trace("unrecoverable", " ".join(clues))
    verifier = Verifier(gate, ckpt, checkpoint, state_dict, device)
    attempts: list[Attempt] = []
    best_tier = None
    for candidate in candidates:
        if best_tier is not None and candidate.tier > best_tier:
            break  # a stronger candidate is proven: weaker evidence cannot change the decision
        attempt = verifier.attempt(candidate)
        attempts.append(attempt)
        if attempt.verified and best_tier is None:
            best_tier = candidate.tier
    skipped = len(candidates) - len(attempts)
    verified = [a for a in attempts if a.verified]
    if not verified:
        tried = [a for a in attempts if a.weights_tried]
        first = (tried or attempts)[0]
        if tried:
            early = len(attempts) - len(tried)
            verdict = f"{len(attempts)} candidate(s), none fits the weights" + (
                f" ({early} rejected before their weights were tried)" if early else ""
            )
        else:
            verdict = f"{len(attempts)} candidate(s), each rejected before its weights were tried"
        return trace("unrecoverable", f"{verdict}; {first.candidate.source.label}: {first.reason}", attempts)
    top = [a for a in verified if a.candidate.tier == best_tier]
    documents = {content_key(a.document or {}) for a in top}
    if len(documents) > 1:
        labels = ", ".join(a.candidate.source.label for a in top)
        return trace(
            "ambiguous",
            f"{len(top)} candidates fit the weights with different configs and equally strong evidence "
            f"({top[0].candidate.tier.label}): {labels}; nothing written, write the sidecar from the right one",
            attempts,
            skipped,
        )
    chosen = top[0]
    agreeing = [a for a in verified if content_key(a.document or {}) == content_key(chosen.document or {})]
    origin = f"from {chosen.candidate.source.label} ({chosen.candidate.tier.label})"
    if settings.dry_run:
        return trace("would-write", f"would write {sidecar.name} {origin}", attempts, skipped)
    document = {**(chosen.document or {}), "_provenance": provenance(chosen, agreeing, sidecar)}
    try:
        written = write_sidecar(sidecar, document)
    except CheckError as exc:
        return trace("unwritable", f"proven {origin}, but {exc.message}", attempts, skipped)
    if not written:
        return trace("exists", f"{sidecar.name} appeared meanwhile (another run?); left as it is", attempts, skipped)
    return trace("written", f"wrote {sidecar.name} {origin}", attempts, skipped)


def recover(
    gate: Any, settings: RecoverySettings, progress: Callable[[int, int, str], None] | None = None
) -> list[RecoveryTrace]:
    """Recover every missing config; returns one trace per checkpoint that had none. ``progress(done, total,
    relpath)`` is told before each checkpoint is traced (and once at the end, with ``done == total``)."""
    missing = missing_configs(gate)
    if not missing:
        return []
    sources = gather_sources(gate.settings.outputs_dir, settings.wandb_dirs)
    offsets = matching.observed_offsets(sources, settings.tolerance_s) | set(settings.utc_offsets)
    traces = []
    for done, ckpt in enumerate(missing):
        if progress is not None:
            progress(done, len(missing), ckpt.relpath)
        traces.append(_recover_guarded(gate, ckpt, sources, settings, offsets))
    if progress is not None:
        progress(len(missing), len(missing), "")
    configs.clear_cache()  # the checks must see the sidecars just written
    return traces


def _recover_guarded(
    gate: Any, ckpt: CheckpointRecord, sources: list[Source], settings: RecoverySettings, offsets: set[int]
) -> RecoveryTrace:
    """One checkpoint's recovery. Recovery runs at session start, before any test: an unexpected error there
    (the user's model code failing oddly, a file crafted to break a reader) would abort the whole session, so
    it becomes this checkpoint's "unrecoverable" outcome instead, with its cause; nothing is written."""
    try:
        return recover_one(gate, ckpt, sources, settings, offsets)
    except Exception as exc:
        sidecar = ckpt.path.with_name(ckpt.stem + ".config.json")
        reason = printable(f"recovery failed: {describe_exception(exc)}")
        return RecoveryTrace(ckpt.relpath, sidecar, "unrecoverable", reason)
