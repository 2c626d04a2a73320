"""The report a team reads: which checkpoints can we use, and what do we do about the rest.

Rendered from the JSON report document (``results``), so it looks the same for one run and for merged
shards. GitHub-flavoured Markdown: tables escape ``|``, every cell stays on one line.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from ckptgate.report import short_cause
from ckptgate.results import PIN_TOTALS

MB = 1e6
CAUSE_LIMIT = 220


def _cell(text: Any, limit: int = CAUSE_LIMIT) -> str:
    """One table cell: one line, shortened, then escaped (a cut never leaves half an escape)."""
    value = " ".join(str(text).split())
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("\\", "\\\\").replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{_cell(text, 10_000)}{pad}{fence}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def _when(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not iso:
        return "unknown"
    return datetime.fromisoformat(iso).strftime(fmt)


def _long_date(day: datetime) -> str:
    return f"{day:%B} {day.day}, {day.year}"  # "October 17, 2025" (no platform-specific %-d)


def _run_date(entry: dict[str, Any]) -> str:
    """The day a checkpoint's run started (folder name), else the day the file was written."""
    stamp = entry["run_timestamp"] or entry["modified"]
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d") if stamp else "unknown date"


def _day_heading(day: str) -> str:
    if day == "unknown date":
        return "Unknown date"
    return _long_date(datetime.strptime(day, "%Y-%m-%d"))


def traceable(entry: dict[str, Any]) -> bool:
    """Whether ``--fix`` would trace this checkpoint: it has no config, or only run logs that disagree (a config
    that is there but broken is the user's to mend: ``--fix`` leaves it, and says nothing about it)."""
    cause = entry["root_cause"] or {}
    message = str(cause.get("message") or "")
    return cause.get("check") == "config_present" and (
        message.startswith("no config found") or " run logs could be the config of " in message
    )


def _size(size_bytes: int) -> str:
    """MB with one decimal; a small file with its significant digits, not ``0.0``."""
    mb = size_bytes / MB
    return f"{mb:.1f}" if mb >= 0.1 or not size_bytes else f"{mb:.2g}"


def _fix_cell(entry: dict[str, Any], recovery_mode: str | None) -> str:
    recovery = entry["recovery"]
    if recovery is None:
        if traceable(entry):
            return "not traced (run with `--fix-dry-run`)" if recovery_mode is None else "—"
        has_config = (entry["root_cause"] or {}).get("check") != "config_present"
        return "n/a (has a config)" if has_config else "n/a (its config file is broken: mend it)"
    outcome, chosen = recovery["outcome"], recovery["chosen"]
    if outcome in ("would-write", "written", "exists") and chosen:
        verb = {"would-write": "yes: from", "written": "recovered from", "exists": "recovered from"}[outcome]
        return f"{verb} {_cell(chosen, 120)}"
    return f"no ({outcome}): {_cell(recovery['reason'], 160)}"


def render(document: dict[str, Any]) -> str:
    totals = document["totals"]
    entries = document["checkpoints"]
    scanned = totals["scanned"]
    stamp = datetime.fromisoformat(document["generated_at"])
    generated = f"{_long_date(stamp)} {stamp:%H:%M} UTC"
    lines = ["# Unusable Checkpoints Report", ""]
    lines += [
        f"**Generated on:** {generated} by {document['tool']}  ",
        f"**Outputs directory:** {_code(document['outputs_dir'])}  ",
    ]
    if document["shards"]:
        lines.append(f"**Shards:** {', '.join(document['shards'])}  ")
    lines += [
        f"**Total checkpoints scanned:** {scanned}  ",
        f"**Usable checkpoints:** {totals['usable']} ({_percent(totals['usable'], scanned)})  ",
        f"**Unusable checkpoints:** {totals['unusable']} ({_percent(totals['unusable'], scanned)})"
        + (f", of which {totals['expected_unusable']} expected (baseline)" if totals["expected_unusable"] else ""),
    ]
    if totals["unchecked"]:
        lines[-1] += "  "
        lines.append(f"**Not checked in this run:** {totals['unchecked']}")
    if any(totals.get(status) for status in PIN_TOTALS):
        lines[-1] += "  "
        lines.append(
            f"**Pins:** {totals['pinned']} pinned, {totals['drifted']} drifted (compute something else than when "
            f"pinned), {totals['unpinned']} unpinned"
        )
    unusable = [entry for entry in entries if entry["status"] == "unusable"]
    lines += ["", "## Summary", ""]
    if unusable:
        by_cause: dict[str, int] = defaultdict(int)
        for entry in unusable:
            by_cause[(entry["root_cause"] or {}).get("check") or "unknown"] += 1
        lines += ["| Root cause (first failing check) | Checkpoints |", "|---|---:|"]
        lines += [f"| `{check}` | {count} |" for check, count in sorted(by_cause.items(), key=lambda kv: -kv[1])]
        if document["recovery"] is None and any(traceable(entry) for entry in unusable):
            lines += ["", "Checkpoints without a config may be recoverable: run with `--fix-dry-run` to trace them."]
    else:
        lines.append("Every checked checkpoint is usable.")
    lines += ["", "## Unusable Checkpoints", ""]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in unusable:
        groups[_run_date(entry)].append(entry)
    for day in sorted(groups, reverse=True):
        lines += [f"### {_day_heading(day)}", ""]
        lines += [
            "| Checkpoint Path | Size (MB) | Modified (UTC) | Type | Root cause | Recoverable with `--fix` |",
            "|---|---:|---|---|---|---|",
        ]
        for entry in sorted(groups[day], key=lambda e: e["path"]):
            cause = entry["root_cause"] or {"check": "unknown", "message": ""}
            message = short_cause(entry["path"], cause["message"])
            if entry["recovery"] is not None:  # what --fix found has its own column
                message = message.split("; --fix ", 1)[0]
            baseline = " (baseline)" if entry["baseline"] else ""
            lines.append(
                f"| {_code(entry['path'])} | {_size(entry['size_bytes'])} | {_when(entry['modified'])} | "
                f"{_cell(entry['type'])}{baseline} | `{cause['check']}`: {_cell(message)} | "
                f"{_fix_cell(entry, document['recovery'])} |"
            )
        lines.append("")
    if not unusable:
        lines += ["None.", ""]
    usable_count = totals.get("usable_files", totals["usable"])  # a file behind several names counts once
    unusable_count = totals.get("unusable_files", totals["unusable"])
    files = totals.get("files", scanned)
    lines += [
        "## Disk Space",
        "",
        f"- **Usable checkpoints:** {totals['usable_bytes'] / MB:.1f} MB across {usable_count} files",
        f"- **Unusable checkpoints:** {totals['unusable_bytes'] / MB:.1f} MB across {unusable_count} files",
        f"- **Total checkpoint storage:** {totals['total_bytes'] / MB:.1f} MB across {files} files",
        "",
    ]
    unpinned = [entry["path"] for entry in entries if entry.get("pin") == "unpinned"]
    if unpinned:
        lines += ["## Unpinned Checkpoints", "", "Checked with `--ckpt-pins`, with no pin yet (take one with "]
        lines[-1] += "`--ckpt-pins-update`):"
        lines += ["", *(f"- {_code(path)}" for path in unpinned), ""]
    usable = [entry for entry in entries if entry["status"] == "usable"]
    if usable:
        lines += [
            "<details>",
            f"<summary>Usable checkpoints ({len(usable)})</summary>",
            "",
            "| Checkpoint Path | Size (MB) | Type | Config |",
            "|---|---:|---|---|",
        ]
        for e in usable:
            config = _cell(e["config_source"] or "")
            lines.append(f"| {_code(e['path'])} | {_size(e['size_bytes'])} | {_cell(e['type'])} | {config} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)
