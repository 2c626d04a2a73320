"""The machine-readable result of a gate run: one JSON document, versioned, that shards merge into.

Everything a team reads (the Markdown report) is rendered from this document, so a merged report of N
shards and the report of an unsharded run are produced by the same code from the same data. The format
is described by ``schemas/report.schema.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ckptgate import __version__
from ckptgate.discovery import CheckpointRecord
from ckptgate.report import CheckpointVerdict, Summary

FORMAT = "ckptgate-report"
VERSION = 1
SCHEMA = "report.schema.json"


class ReportError(Exception):
    """A report file that cannot be read or merged."""


def _iso(timestamp: float | datetime | None) -> str | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime):
        return timestamp.isoformat()
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _recovery(trace: Any) -> dict[str, Any]:
    return {
        "outcome": trace.outcome,
        "reason": trace.reason,
        "candidates": [
            {
                "source": attempt.candidate.source.label,
                "kind": attempt.candidate.source.kind,
                "run_id": attempt.candidate.source.run_id,
                "evidence": attempt.candidate.tier.label,
                "match": attempt.candidate.detail,
                "verified": attempt.verified,
                "reason": attempt.reason,
            }
            for attempt in trace.attempts
        ],
        "chosen": next((a.candidate.source.label for a in trace.attempts if a.verified), None)
        if trace.recovered
        else None,
    }


def _status(verdict: CheckpointVerdict | None) -> str:
    if verdict is None or not verdict.outcomes:
        return "unchecked"
    if verdict.usable:
        return "usable"
    if verdict.unusable:
        return "unusable"
    return "unchecked"  # only skipped checks (e.g. -k cuda on a machine without one)


def checkpoint_entry(
    ckpt: CheckpointRecord, verdict: CheckpointVerdict | None, trace: Any | None, baseline: bool
) -> dict[str, Any]:
    return {
        "path": ckpt.relpath,
        "run": ckpt.run_relpath,
        "run_timestamp": _iso(ckpt.run_timestamp),
        "kind": ckpt.kind.kind,
        "type": ckpt.kind.describe(),
        "size_bytes": ckpt.size,
        "same_file_as": ckpt.same_file_as,
        "modified": _iso(ckpt.mtime),
        "status": _status(verdict),
        "checks": dict(sorted((verdict.outcomes if verdict else {}).items())),
        "root_cause": {"check": verdict.root_check, "message": verdict.root_cause}
        if verdict and verdict.root_check
        else None,
        "config_source": verdict.config_source if verdict else None,
        "model_route": verdict.model_route if verdict else None,
        "pin": verdict.pin if verdict else None,
        "config_skipped": verdict.config_skipped if verdict else None,
        "recovery": _recovery(trace) if trace is not None else None,
        "baseline": baseline,
    }


def _file(entry: dict[str, Any]) -> str:
    """The file on disk an entry is: names that are one file (a symlink, a hard link) say which other name."""
    return entry.get("same_file_as") or entry["path"]  # absent in reports written before it


PIN_TOTALS = ("pinned", "drifted", "unpinned")


def totals(checkpoints: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts of checkpoints (each name its own verdict) and bytes on disk (each file once, however many names
    lead to it: a file with a usable and an unusable name counts in both ``usable_bytes`` and
    ``unusable_bytes``, once in ``total_bytes``)."""
    entries = list(checkpoints)

    def files(status: str | None = None) -> dict[str, int]:
        return {_file(e): e["size_bytes"] for e in entries if status is None or e["status"] == status}

    def size(status: str | None = None) -> int:
        return sum(files(status).values())

    counts = {status: sum(entry["status"] == status for entry in entries) for status in ("usable", "unusable")}
    return {
        "scanned": len(entries),
        "usable": counts["usable"],
        "unusable": counts["unusable"],
        "unchecked": len(entries) - counts["usable"] - counts["unusable"],
        "expected_unusable": sum(entry["status"] == "unusable" and entry["baseline"] for entry in entries),
        "usable_bytes": size("usable"),
        "unusable_bytes": size("unusable"),
        "total_bytes": size(),
        "files": len(files()),  # distinct files on disk behind the checkpoints scanned
        "usable_files": len(files("usable")),
        "unusable_files": len(files("unusable")),
        # pins (--ckpt-pins): checkpoints whose forward checks agreed with their pins, drifted, had none
        **{status: sum(entry.get("pin") == status for entry in entries) for status in PIN_TOTALS},
    }


def build(
    summary: Summary,
    checkpoints: list[CheckpointRecord],
    *,
    outputs_dir: Path,
    traces: list[Any] | None = None,
    baseline: Iterable[str] = (),
    shard: str | None = None,
    recovery_mode: str | None = None,
) -> dict[str, Any]:
    """The report document of one run (or one shard)."""
    by_trace = {trace.relpath: trace for trace in traces or []}
    expected = set(baseline)
    entries = [
        checkpoint_entry(ckpt, summary.verdicts.get(ckpt.relpath), by_trace.get(ckpt.relpath), ckpt.relpath in expected)
        for ckpt in checkpoints
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "tool": f"pytest-ckptgate {__version__}",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "outputs_dir": str(outputs_dir),
        "shards": [shard] if shard else [],
        "recovery": recovery_mode,
        "totals": totals(entries),
        "checkpoints": entries,
    }


def write(document: dict[str, Any], path: Path) -> None:
    """A JSON document (a report, the baseline), written atomically."""
    write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write atomically (a temporary file beside it, then a rename): a CI job reading the artifact never sees
    half a file, and two processes writing it leave one whole version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def read_kept(
    path: Path, kind: tuple[str, int, str], option: str, update: str, error: type[Exception]
) -> dict[str, Any] | None:
    """A file the user keeps between runs (the baseline, the pins): its JSON object, or None when it does not
    exist yet. ``kind`` is (format, version, what it is called); a file that cannot be read or is of another
    kind raises ``error`` naming the option, the file and the option that creates one."""
    fmt, version, noun = kind
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{option} {path}: cannot read it as JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != fmt or document.get("version") != version:
        raise error(
            f"{option} {path}: not a ckptgate {noun} (expected format {fmt!r}, version {version}); create one with "
            f"{update}"
        )
    return document


def schema() -> dict[str, Any]:
    return json.loads(resources.files("ckptgate").joinpath("schemas", SCHEMA).read_text("utf-8"))


def load(path: Path) -> dict[str, Any]:
    """A report written by :func:`write`, checked against the schema."""
    from jsonschema import Draft202012Validator

    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read a ckptgate JSON report: {exc}") from None
    errors = sorted(Draft202012Validator(schema()).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise ReportError(f"{path}: not a ckptgate report (version {VERSION}): {first.json_path}: {first.message}")
    return document


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from shard reports: the same checkpoints and totals as an unsharded run would give."""
    if not documents:
        raise ReportError("nothing to merge")
    outputs = {document["outputs_dir"] for document in documents}
    entries: dict[str, dict[str, Any]] = {}
    for document in documents:
        for entry in document["checkpoints"]:
            previous = entries.get(entry["path"])
            if previous is not None and previous["status"] != entry["status"]:
                raise ReportError(
                    f"{entry['path']} is in two shards with different results ({previous['status']} and "
                    f"{entry['status']}): were the shards run with the same --ckpt-shard N?"
                )
            if previous is None or entry["status"] != "unchecked":
                entries[entry["path"]] = entry
    shards = sorted({shard for document in documents for shard in document["shards"]})
    merged = [entries[path] for path in sorted(entries)]
    return {
        "format": FORMAT,
        "version": VERSION,
        "tool": f"pytest-ckptgate {__version__}",
        "generated_at": max(document["generated_at"] for document in documents),
        "outputs_dir": outputs.pop() if len(outputs) == 1 else " + ".join(sorted(outputs)),
        "shards": shards,
        "recovery": next((d["recovery"] for d in documents if d.get("recovery")), None),
        "totals": totals(merged),
        "checkpoints": merged,
    }
