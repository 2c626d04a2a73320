"""Adopting the gate on a repository that is already red: known-unusable checkpoints are expected.

A baseline file lists checkpoints with the first check they fail. Those checks (and the later ones) of
those checkpoints become strict xfails: they do not fail the gate, a NEW unusable checkpoint does, and a
listed one that passes now is an XPASS(strict) failure that says to shrink the baseline
(``--ckpt-baseline-update``). A checkpoint that gets worse (fails an earlier check) fails too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptgate import results
from ckptgate.report import CHECK_ORDER, Summary, check_rank

FORMAT = "ckptgate-baseline"
VERSION = 1


class BaselineError(Exception):
    """The baseline file is unreadable or not a baseline: a usage error naming the file."""


@dataclass(frozen=True)
class Expected:
    """One baseline entry: the first check expected to fail, and why it failed when recorded."""

    check: str
    cause: str = ""


def load(path: Path) -> dict[str, Expected]:
    """The entries of a baseline file; an absent file is an empty baseline (the first update creates it)."""
    kind = (FORMAT, VERSION, "baseline")
    document = results.read_kept(path, kind, "--ckpt-baseline", "--ckpt-baseline-update", BaselineError)
    if document is None:
        return {}
    entries: dict[str, Expected] = {}
    for relpath, entry in (document.get("checkpoints") or {}).items():
        check = entry.get("check") if isinstance(entry, dict) else None
        if check not in CHECK_ORDER:
            raise BaselineError(
                f"--ckpt-baseline {path}: {relpath}: `check` must be one of {', '.join(CHECK_ORDER)}, got {check!r}"
            )
        entries[relpath] = Expected(check, str(entry.get("cause", "")))
    return entries


def expectation(entry: Expected, check: str, path: Path) -> tuple[bool, str] | None:
    """Whether a check of a listed checkpoint is expected to fail: (strict, reason), or None if it must pass.

    Our own checks from the recorded one on are strict xfails; a user's own checks are plain xfails (they
    may or may not depend on the broken stage).
    """
    rank = check_rank(check)
    if rank < check_rank(entry.check):
        return None
    reason = (
        f"listed in the baseline {path.name} as unusable ({entry.check}: {entry.cause or 'no cause recorded'}); "
        "if it passes now, run with --ckpt-baseline-update to shrink the baseline"
    )
    return rank < len(CHECK_ORDER), reason


def update(path: Path, previous: dict[str, Expected], summary: Summary, existing: set[str] | None) -> dict[str, Any]:
    """Rewrite the baseline from this run: unusable checkpoints in, usable ones out; checkpoints this run
    did not check keep their entries (a ``-k`` run or a shard must not empty it), and entries of files
    that no longer exist leave (``existing``: every checkpoint path; None when unknown, as in a shard)."""
    entries = {relpath: entry for relpath, entry in previous.items() if existing is None or relpath in existing}
    for verdict in summary.sorted():
        if verdict.unusable and verdict.root_check:
            check = verdict.root_check.split("[", 1)[0]
            if check in CHECK_ORDER:
                entries[verdict.relpath] = Expected(check, verdict.root_cause or "")
        elif verdict.usable:
            entries.pop(verdict.relpath, None)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoints": {
            relpath: {"check": entries[relpath].check, "cause": entries[relpath].cause} for relpath in sorted(entries)
        },
    }
    results.write(document, path)
    return document
