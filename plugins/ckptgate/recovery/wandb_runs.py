"""wandb run folders as evidence: ``wandb/run-YYYYMMDD_HHMMSS-<id>/`` and ``offline-run-...``.

A run's config comes from ``files/config.yaml`` when wandb wrote one (older layout: every top-level key
``{desc: ..., value: ...}`` under ``wandb_version: 1``; newer: ``{value: ...}``), else from the binary
``run-<id>.wandb`` log (current wandb offline writes no config.yaml). Keys logged flattened
(``model.encoder.model_name``, ``model/encoder/model_name``) are nested back; wandb's ``_wandb`` block is
dropped. ``files/wandb-metadata.json`` gives the start time in UTC, the program and its arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ckptgate.documents import DocumentError, read_document
from ckptgate.errors import CheckError
from ckptgate.naming import parse_timestamp
from ckptgate.recovery.evidence import Source, output_locations

RUN_FOLDER = re.compile(r"^(?P<offline>offline-)?run-(?P<stamp>\d{8}_\d{6})-(?P<id>[A-Za-z0-9]+)$")
WANDB_KEYS = frozenset({"_wandb", "wandb_version"})


@dataclass(frozen=True)
class WandbRun:
    """One wandb run folder and what it says about the run."""

    path: Path
    run_id: str
    offline: bool
    started_local: datetime | None  # from the folder name: the training machine's local clock
    started_utc: datetime | None  # from wandb-metadata.json (or the log): UTC
    config: dict[str, Any]
    config_file: Path | None  # files/config.yaml or run-<id>.wandb; None when neither held a config
    metadata: dict[str, Any]
    problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = merge(node[last], value)
    else:
        node[last] = value


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` over ``base`` (new dict; nested dicts merged, everything else replaced)."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = dict(value) if isinstance(value, Mapping) else value
    return result


def unflatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Nest keys logged flattened (``a.b.c`` or ``a/b/c``) back into sections; nested keys stay as they are.

    Plain keys are applied first, flattened ones after, shallower before deeper, so ``model.encoder.name``
    refines ``model`` (and ``a.b.c`` refines ``a.b``) whatever order the keys were logged in.
    """
    result: dict[str, Any] = {}
    flattened: list[tuple[list[str], Any]] = []
    for key, value in config.items():
        text = str(key)
        parts = [part for part in re.split(r"[./]", text) if part] if isinstance(key, str) else [text]
        if len(parts) > 1:
            flattened.append((parts, value))
        else:
            _set_path(result, [text], unflatten(value) if isinstance(value, Mapping) else value)
    for parts, value in sorted(flattened, key=lambda item: len(item[0])):  # stable: same depth keeps order
        _set_path(result, parts, unflatten(value) if isinstance(value, Mapping) else value)
    return result


def unwrap_config_yaml(document: Any) -> dict[str, Any]:
    """A wandb ``config.yaml`` as the run's plain config: values unwrapped, ``_wandb`` dropped, keys nested."""
    if not isinstance(document, Mapping):
        return {}
    plain: dict[str, Any] = {}
    for key, entry in document.items():
        if key in WANDB_KEYS:
            continue
        if isinstance(entry, Mapping) and "value" in entry and set(entry) <= {"value", "desc"}:
            plain[key] = entry["value"]
        else:  # not wrapped: a config.yaml written by hand, or an unknown layout
            plain[key] = entry
    return unflatten(plain)


def _parse_utc(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)  # wandb records UTC


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = read_document(path)
    except DocumentError:
        return {}
    return data if isinstance(data, dict) else {}


def read_run(path: Path) -> WandbRun | None:
    """One run folder; None when the folder name is not a wandb run's."""
    match = RUN_FOLDER.match(path.name)
    if match is None:
        return None
    run_id = match.group("id")
    files = path / "files"
    metadata = _read_json(files / "wandb-metadata.json")
    problems: list[str] = []
    config: dict[str, Any] = {}
    config_file: Path | None = None
    started_utc = _parse_utc(metadata.get("startedAt"))
    config_yaml = files / "config.yaml"
    if config_yaml.is_file():
        try:
            config = unwrap_config_yaml(read_document(config_yaml))
            config_file = config_yaml
        except DocumentError as exc:
            problems.append(exc.message)
    if not config:
        log = path / f"run-{run_id}.wandb"
        if log.is_file():
            from ckptgate.recovery.wandb_log import read_wandb_log

            try:
                parsed = read_wandb_log(log)
            except CheckError as exc:
                problems.append(exc.message)
            else:
                config = unflatten(parsed.config)
                config_file = log if config else None
                started_utc = started_utc or parsed.start_time
                problems.extend(parsed.problems)
    return WandbRun(
        path=path,
        run_id=run_id,
        offline=bool(match.group("offline")),
        started_local=parse_timestamp(match.group("stamp")),
        started_utc=started_utc,
        config=config,
        config_file=config_file,
        metadata=metadata,
        problems=tuple(problems),
    )


def find_runs(wandb_dir: Path) -> Iterator[WandbRun]:
    """Every run folder directly under ``wandb_dir`` (``latest-run`` and other links are skipped)."""
    try:
        names = sorted(os.listdir(wandb_dir))
    except OSError:
        return
    for name in names:
        path = wandb_dir / name
        if path.is_symlink() or not path.is_dir():
            continue
        run = read_run(path)
        if run is not None:
            yield run


def searchable_text(run: WandbRun) -> str:
    """Where a run says it wrote: output-location values of its config and command line (see evidence)."""
    return output_locations(run.config, run.metadata.get("args") or ())


def sources(wandb_dir: Path) -> list[Source]:
    """Every run under ``wandb_dir`` that holds a config, as evidence."""
    found = []
    for run in find_runs(wandb_dir):
        if not run.config or run.config_file is None:
            continue
        where = run.config_file.relative_to(run.path).as_posix()
        found.append(
            Source(
                kind="wandb",
                label=f"wandb {run.name} ({where})",
                path=run.config_file,
                config=run.config,
                run_id=run.run_id,
                started_local=run.started_local,
                started_utc=run.started_utc,
                text=searchable_text(run),
                notes=run.problems,
            )
        )
    return found
