"""Find the config that goes with a checkpoint, in the order an inference pipeline would.

Order: sidecars beside the checkpoint (``<stem>.config.json``, ``.config.yaml``, ``.config.yml``,
``.resolved.config.json``), then the run's Hydra ``.hydra/config.yaml`` (resolved with OmegaConf), then a
Lightning logger's ``hparams.yaml``. A file that exists but is broken is reported, never skipped: falling
through to an older source would test a different config than the one the user wrote.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptgate.discovery import CheckpointRecord, printable
from ckptgate.documents import DocumentError, has_interpolation, read_document
from ckptgate.errors import CheckError, first_line

SIDECAR_SUFFIXES = (".config.json", ".config.yaml", ".config.yml", ".resolved.config.json")
HYDRA_CONFIG = (".hydra", "config.yaml")
HPARAMS = "hparams.yaml"
MODEL_KEY = "model"


class ConfigNotFound(CheckError):
    """No config anywhere we looked; lists every place."""


@dataclass(frozen=True)
class Candidate:
    """One place a config may be."""

    kind: str  # "sidecar" | "hydra" | "hparams"
    path: Path


@dataclass(frozen=True)
class ResolvedConfig:
    """The config a checkpoint will be tested with, and where it came from."""

    kind: str
    path: Path
    where: str  # path relative to the outputs dir (or absolute outside it), for messages
    data: dict[str, Any]  # the whole document, interpolations in the model section resolved
    model_key: str | None  # dotted location of the model section in ``data``; None when there is none
    notes: tuple[str, ...] = field(default=())

    @property
    def model(self) -> dict[str, Any] | None:
        if self.model_key is None:
            return None
        node: Any = self.data
        for part in self.model_key.split("."):
            node = node[part]
        return node

    def describe(self) -> str:
        section = f" ({self.model_key})" if self.model_key and self.model_key != MODEL_KEY else ""
        return f"{self.kind}: {self.where}{section}"


@functools.lru_cache(maxsize=8192)
def _names(directory: Path) -> frozenset[str]:
    """Names in a folder, listed once per session: many checkpoints share a folder."""
    try:
        return frozenset(os.listdir(directory))
    except OSError:
        return frozenset()


def clear_cache() -> None:
    """Forget folder listings (after ``--fix`` wrote sidecars)."""
    _names.cache_clear()


def _exists(path: Path) -> bool:
    return path.name in _names(path.parent)


def _folder_and_parents(folder: Path, root: Path) -> Iterator[Path]:
    """A checkpoint's folder and its parents, strictly inside the outputs dir."""
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        return
    for depth in range(len(parts), 0, -1):
        yield root.joinpath(*parts[:depth])


def _version_key(path: Path) -> tuple[int, str]:
    digits = path.parent.name.removeprefix("version_")
    return (int(digits) if digits.isdigit() else -1, str(path))


def candidates(ckpt: CheckpointRecord, root: Path) -> list[Candidate]:
    """Every place, in order, where this checkpoint's config may be (whether or not it exists)."""
    found = [Candidate("sidecar", ckpt.path.with_name(ckpt.stem + suffix)) for suffix in SIDECAR_SUFFIXES]
    return found + list(_folder_candidates(ckpt.path.parent, root))


@functools.lru_cache(maxsize=8192)
def _folder_candidates(folder: Path, root: Path) -> tuple[Candidate, ...]:
    """The Hydra and hparams places of a folder and its parents (shared by the checkpoints in it)."""
    ancestors = list(_folder_and_parents(folder, root))
    found = [Candidate("hydra", directory.joinpath(*HYDRA_CONFIG)) for directory in ancestors]
    return (*found, *(Candidate("hparams", directory / HPARAMS) for directory in ancestors))


def _logger_hparams(ckpt: CheckpointRecord, root: Path) -> list[Path]:
    """``hparams.yaml`` of loggers inside the run folder (``<run>/lightning_logs/version_N/``), newest first."""
    run = ckpt.run_dir
    if run == root or root not in run.parents:
        return []
    found: list[Path] = []
    for first in sorted(_names(run)):
        sub = run / first
        if first.startswith("version_"):
            if _exists(sub / HPARAMS):
                found.append(sub / HPARAMS)
            continue
        for second in sorted(_names(sub)):
            if second.startswith("version_") and _exists(sub / second / HPARAMS):
                found.append(sub / second / HPARAMS)
    return sorted(found, key=_version_key, reverse=True)


def source_files(ckpt: CheckpointRecord, root: Path) -> list[Path]:
    """Every existing file :func:`resolve_config` may read for ``ckpt``, in the order it looks: a file that
    appears, disappears or changes among these may change the config (``--ckpt-cache`` keys on them)."""
    folder, names = ckpt.path.parent, _names(ckpt.path.parent)
    found = [folder / (ckpt.stem + suffix) for suffix in SIDECAR_SUFFIXES if ckpt.stem + suffix in names]
    found += [candidate.path for candidate in _folder_candidates(folder, root) if _exists(candidate.path)]
    return found + _logger_hparams(ckpt, root)


def display(path: Path, root: Path) -> str:
    """A path for messages: relative to the outputs dir when inside it, printable and UTF-8 (a message crosses
    process boundaries under pytest-xdist, which refuses undecodable names; a newline would split it)."""
    try:
        shown = path.relative_to(root).as_posix()
    except ValueError:
        shown = str(path)
    return printable(shown)


def find_model_key(document: Mapping[str, Any]) -> str | None:
    """Where the model section is: top-level ``model``, or ``<key>.model`` for one wrapping key (``cfg``)."""
    if isinstance(document.get(MODEL_KEY), Mapping):
        return MODEL_KEY
    nested = [
        f"{key}.{MODEL_KEY}"
        for key, value in document.items()
        # a key holding a dot cannot wrap: ``a.b.model`` would be read as a -> b -> model
        if isinstance(key, str)
        and "." not in key
        and isinstance(value, Mapping)
        and isinstance(value.get(MODEL_KEY), Mapping)
    ]
    return nested[0] if len(nested) == 1 else None


def _section(document: Mapping[str, Any], model_key: str | None) -> Any:
    """The model section of a parsed document; None when it has none."""
    if model_key is None:
        return None
    node: Any = document
    for part in model_key.split("."):
        node = node[part]
    return node


def _resolve(document: dict[str, Any], model_key: str | None, where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Resolve OmegaConf interpolations: the model section must resolve; other sections may stay raw."""
    if not has_interpolation(document):
        return document, ()
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.create(document)
    except Exception as exc:  # omegaconf rejects some keys and values, and a malformed `${...}` at once
        key = getattr(exc, "full_key", None)
        reason = f"{type(exc).__name__}: {first_line(str(exc))}"
        inside = key is not None and model_key is not None and f"{key}.".startswith(f"{model_key}.")
        if key and not inside and not has_interpolation(_section(document, model_key)):
            # broken outside the model section, and the model needs nothing resolved: usable as written
            return document, (f"left unresolved: {reason}",)
        at = f" in `{key}`" if key else ""
        raise DocumentError(f"{where}: not a valid OmegaConf config{at}: {reason}") from None
    try:
        return OmegaConf.to_container(config, resolve=True), ()  # type: ignore[return-value]
    except Exception as whole:
        resolved: dict[str, Any] = OmegaConf.to_container(config, resolve=False)  # type: ignore[assignment]
        notes = (f"left unresolved: {type(whole).__name__}: {str(whole).splitlines()[0]}",)
    if model_key is not None:
        node = OmegaConf.select(config, model_key)
        try:
            section = OmegaConf.to_container(node, resolve=True)
        except Exception as exc:
            key = getattr(exc, "full_key", None) or model_key  # omegaconf names the offending value
            raise DocumentError(
                f"{where}: cannot resolve an interpolation in `{key}`: {str(exc).splitlines()[0]}"
            ) from None
        parent = resolved
        *heads, last = model_key.split(".")
        for part in heads:
            parent = parent[part]
        parent[last] = section
    return resolved, notes


def load_config(candidate: Candidate, root: Path) -> ResolvedConfig:
    """Read one candidate file into a :class:`ResolvedConfig`; raises ``DocumentError`` when broken."""
    where = display(candidate.path, root)
    document = read_document(candidate.path, where=where)
    if not isinstance(document, dict):
        raise DocumentError(f"{where}: expected a mapping at the top, found {type(document).__name__}")
    model_key = find_model_key(document)
    data, notes = _resolve(document, model_key, where)
    return ResolvedConfig(candidate.kind, candidate.path, where, data, model_key, notes)


def resolve_config(ckpt: CheckpointRecord, root: Path) -> ResolvedConfig:
    """The first config found for ``ckpt``; raises :class:`ConfigNotFound` listing every place looked."""
    folder, names = ckpt.path.parent, _names(ckpt.path.parent)
    for suffix in SIDECAR_SUFFIXES:  # the common case first, without a path object per place looked at
        if ckpt.stem + suffix in names:
            return load_config(Candidate("sidecar", folder / (ckpt.stem + suffix)), root)
    places = candidates(ckpt, root)
    hparams_found: list[Path] = []
    for candidate in places[len(SIDECAR_SUFFIXES) :]:
        if not _exists(candidate.path):
            continue
        if candidate.kind == "hparams":
            hparams_found.append(candidate.path)
            continue
        return load_config(candidate, root)
    looked = [display(candidate.path, root) for candidate in places]
    logger_files = _logger_hparams(ckpt, root)
    if ckpt.run_dir != root and root in ckpt.run_dir.parents:  # where _logger_hparams looks
        looked.append(f"{display(ckpt.run_dir, root)}/*/version_*/hparams.yaml")
    skipped: list[str] = []
    for path in [*hparams_found, *logger_files]:
        # hparams.yaml is Lightning's log of __init__ arguments, not a config file by intent:
        # one without a model section is no config, so the search goes on.
        resolved = load_config(Candidate("hparams", path), root)
        if resolved.model_key is not None:
            return resolved
        skipped.append(f"{resolved.where} (has no `model` section)")
    sidecar = display(ckpt.path.with_name(ckpt.stem + ".config.json"), root)
    lines = [
        f"no config found for {ckpt.relpath}; run pytest with --fix to recover it",
        "Re-run the same pytest command with --fix (e.g. `pytest checks/ --fix`) to recover it from wandb runs, "
        "Hydra folders or the checkpoint's hyper_parameters, each proven by loading the weights; or write "
        f"{sidecar} with a `model` section.",
        f"Looked in {len(looked)} places:",
    ]
    lines += [f"  {place}" for place in looked]
    lines += [f"  skipped {note}" for note in skipped]
    raise ConfigNotFound("\n".join(lines))
