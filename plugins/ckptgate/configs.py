"""Find the config that goes with a checkpoint, in the order an inference pipeline would.

Order: sidecars beside the checkpoint (``<stem>.config.json``, ``.config.yaml``, ``.config.yml``,
``.resolved.config.json``), then the run's Hydra ``.hydra/config.yaml`` (resolved with OmegaConf), then the
run's logs: a Lightning logger's ``hparams.yaml`` and LightningCLI's ``config.yaml`` (``SaveConfigCallback``),
nearest first. The checkpoint's own ``hyper_parameters`` come last; the gate reads them (this module never
opens a checkpoint). A broken sidecar is passed over with a note; any other broken file is reported, never
skipped in favour of an older one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptgate.discovery import CheckpointRecord, printable, run_dir_of, stem_of
from ckptgate.documents import DocumentError, has_interpolation, read_document
from ckptgate.errors import CheckError, first_line

SIDECAR_SUFFIXES = (".config.json", ".config.yaml", ".config.yml", ".resolved.config.json")
HYDRA_CONFIG = (".hydra", "config.yaml")
HPARAMS = "hparams.yaml"
CLI_CONFIG = "config.yaml"  # LightningCLI's SaveConfigCallback: the whole run config
LOG_FILES = (("cli", CLI_CONFIG), ("hparams", HPARAMS))  # the whole run config first
MODEL_KEY = "model"
KIND_LABELS = {
    "sidecar": "sidecar",
    "hydra": "Hydra config",
    "hparams": "logger's hparams.yaml",
    "cli": "LightningCLI config.yaml",
    "checkpoint": "hyper_parameters stored in the checkpoint",
}


class ConfigNotFound(CheckError):
    """No config anywhere we looked; the message lists every place, and what may still recover it."""

    def __init__(self, relpath: str, looked: tuple[str, ...], skipped: tuple[str, ...], hint: str = "") -> None:
        self.relpath, self.looked, self.skipped, self.hint = relpath, looked, skipped, hint
        lines = [
            f"no config found for {relpath}; " + (hint or "run pytest with --fix to recover it"),
            "--fix recovers a config from wandb runs, Hydra folders or run logs, "
            "each proven by loading the weights; or write "
            f"{relpath.removesuffix('.ckpt')}.config.json with a `model` section.",
            f"Looked in {len(looked)} places:",
            *(f"  {place}" for place in looked),
            *(f"  skipped {note}" for note in skipped),
        ]
        super().__init__("\n".join(lines))

    def with_hint(self, hint: str, *skipped: str) -> ConfigNotFound:
        return ConfigNotFound(self.relpath, self.looked, self.skipped + skipped, hint)


class AmbiguousConfig(CheckError):
    """Run logs beside a checkpoint disagree, and nothing in the checkpoint says which is its own: only its
    weights can tell (``--fix`` proves each by a strict load)."""

    def with_hint(self, hint: str) -> AmbiguousConfig:
        return AmbiguousConfig(f"{self.message}; {hint}")


class SeveralConfigs(CheckError):
    """Several run logs at the same distance from a checkpoint could be its config (trainings into one dirpath)."""

    def __init__(self, found: tuple[ResolvedConfig, ...]) -> None:
        self.found = found
        super().__init__(f"{len(found)} run logs could be the config: " + ", ".join(r.where for r in found))


@dataclass(frozen=True)
class Candidate:
    """One place a config may be."""

    kind: str  # "sidecar" | "hydra" | "hparams" | "cli"
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
    skipped: tuple[str, ...] = field(default=())  # broken sidecars passed over to reach this one: reported

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

    @property
    def label(self) -> str:
        """For messages: ``LightningCLI config.yaml lightning_logs/version_0/config.yaml``."""
        return f"{KIND_LABELS.get(self.kind, self.kind)} {self.where}"


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
    _link_targets.cache_clear()


def _exists(path: Path) -> bool:
    return path.name in _names(path.parent)


def _folder_and_parents(folder: Path, root: Path) -> Iterator[Path]:
    """A checkpoint's folder and its parents up to the outputs dir itself (it may be one run's folder: pointing
    ``--ckpt-outputs`` at a run finds the same configs as pointing at its parent)."""
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        return
    for depth in range(len(parts), -1, -1):
        yield root.joinpath(*parts[:depth])


def _version_key(path: Path) -> tuple[int, str]:
    digits = path.parent.name.removeprefix("version_")
    return (int(digits) if digits.isdigit() else -1, str(path))


_Place = tuple[Path, str, Path | None]  # (folder, stem, run folder: None outside the outputs dir)


def _places(ckpt: CheckpointRecord, root: Path) -> tuple[_Place, ...]:
    """Where a checkpoint lies: its own folder, then, for a symlink, each target's (beside the link first)."""
    own = (ckpt.path.parent, ckpt.stem, ckpt.run_dir)
    if ckpt.symlink_target is None:
        return (own,)
    return (own, *(place for place in _link_targets(ckpt.path, root, ckpt.suffix) if place[:2] != own[:2]))


@functools.lru_cache(maxsize=4096)
def _link_targets(link: Path, root: Path, suffix: str) -> tuple[_Place, ...]:
    """The files a symlinked checkpoint leads to, link by link (``deploy/prod.ckpt`` -> Lightning's ``last.ckpt``
    -> ``epoch=3.ckpt``): folder, stem and run folder of each, spelled under ``root`` when inside it; the run
    folder is None outside it (no Hydra folder or run log is looked for there, only sidecars)."""
    real_root = Path(os.path.realpath(root))
    found: list[_Place] = []
    current = link
    for _ in range(40):  # the kernel's own limit on a chain of links
        try:
            target = os.readlink(current)
        except OSError:  # not a link: the file itself, reached
            break
        real_parent = os.path.realpath(current.parent)
        joined = os.path.join(real_parent, target)
        folder, name = Path(os.path.realpath(os.path.dirname(joined))), os.path.basename(joined)
        if not name:
            break
        inside: Path | None = current.parent  # a link to a file beside it (Lightning's last.ckpt): as spelled
        if str(folder) != real_parent:
            try:
                inside = root.joinpath(*folder.relative_to(real_root).parts)
            except ValueError:
                inside = None
        if inside is not None and (inside == root or root in inside.parents):
            found.append((inside, stem_of(name, suffix), run_dir_of(inside / name, root)))
        else:
            inside = inside or folder
            found.append((inside, stem_of(name, suffix), None))
        current = inside / name
    return tuple(found)


def candidates(ckpt: CheckpointRecord, root: Path) -> list[Candidate]:
    """Every place, in order, where this checkpoint's config may be (whether or not it exists): sidecars beside
    it, then (a symlink) beside each target; then the Hydra and run-log places of its folder and of each
    target's folder inside the outputs dir."""
    places = _places(ckpt, root)
    found = [
        Candidate("sidecar", folder / (stem + suffix)) for folder, stem, _ in places for suffix in SIDECAR_SUFFIXES
    ]
    for folder, _, run in places:
        if run is not None:
            found += _folder_candidates(folder, root)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=8192)
def _folder_candidates(folder: Path, root: Path) -> tuple[Candidate, ...]:
    """The Hydra and run-log places of a folder and its parents (shared by the checkpoints in it)."""
    ancestors = list(_folder_and_parents(folder, root))
    found = [Candidate("hydra", directory.joinpath(*HYDRA_CONFIG)) for directory in ancestors]
    for directory in ancestors:
        found += [Candidate(kind, directory / name) for kind, name in LOG_FILES]
    return tuple(found)


def _logger_files(ckpt: CheckpointRecord, root: Path) -> list[Candidate]:
    """Run logs inside the run folder (``<run>/lightning_logs/version_N/``), newest version first: where a
    checkpoint saved to an explicit ``dirpath`` finds the logs of the training that wrote it."""
    return _run_logger_files(ckpt.run_dir, root)


def _run_logger_files(run: Path, root: Path) -> list[Candidate]:
    """:func:`_logger_files` of a run folder."""
    if run != root and root not in run.parents:
        return []
    found: list[Candidate] = []
    for first in sorted(_names(run)):
        sub = run / first
        inside = [sub / name for name in sorted(_names(sub)) if name.startswith("version_")]
        versions = [sub] if first.startswith("version_") else inside
        for version in versions:
            found += [Candidate(kind, version / name) for kind, name in LOG_FILES if _exists(version / name)]
    return sorted(found, key=lambda c: (_version_key(c.path), c.kind == "cli"), reverse=True)


def source_files(ckpt: CheckpointRecord, root: Path) -> list[Path]:
    """Every existing file :func:`resolve_config` may read for ``ckpt``, in the order it looks: a file that
    appears, disappears or changes among these may change the config (``--ckpt-cache`` keys on them)."""
    places = _places(ckpt, root)
    found = [folder / (stem + suffix) for folder, stem, _ in places for suffix in SIDECAR_SUFFIXES]
    found = [path for path in found if _exists(path)]
    for folder, _, run in places:
        if run is not None:
            found += [candidate.path for candidate in _folder_candidates(folder, root) if _exists(candidate.path)]
    for _, _, run in places:
        if run is not None:
            found += [candidate.path for candidate in _run_logger_files(run, root)]
    return list(dict.fromkeys(found))


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


def _log_levels(ckpt: CheckpointRecord, root: Path) -> list[list[Candidate]]:
    """Run logs by how close they are to the checkpoint: each folder from the checkpoint's up to the outputs
    dir, then every logger version of the run folder together (several trainings into one ``dirpath``); for a
    symlink, then the same for each target inside the outputs dir, each file once."""
    found: list[list[Candidate]] = []
    seen: set[Path] = set()
    for folder, _, run in _places(ckpt, root):
        if run is None:
            continue
        levels: dict[Path, list[Candidate]] = {}
        for candidate in _folder_candidates(folder, root):
            if candidate.kind != "hydra" and candidate.path not in seen and _exists(candidate.path):
                levels.setdefault(candidate.path.parent, []).append(candidate)
        loggers = [candidate for candidate in _run_logger_files(run, root) if candidate.path not in seen]
        found += [*levels.values(), loggers]
        seen.update(candidate.path for level in found for candidate in level)
    return found


def has_model_section(resolved: ResolvedConfig) -> bool:
    return resolved.model_key is not None


def resolve_config(
    ckpt: CheckpointRecord, root: Path, usable: Callable[[ResolvedConfig], bool] = has_model_section
) -> ResolvedConfig:
    """The config of ``ckpt`` from the files around it, in the order an inference pipeline looks.

    A sidecar that cannot be read is skipped with a note (the next source may hold the config; the note is
    reported on the checkpoint); a Hydra config that cannot be read fails. Run logs (``hparams.yaml``,
    LightningCLI's ``config.yaml``) count when ``usable`` says the model can be built from them: the nearest
    folder with such a file wins, and several at one level raise :class:`SeveralConfigs` for the caller to
    choose by the checkpoint's own hyperparameters. Raises :class:`ConfigNotFound` listing every place looked.
    """
    broken: list[DocumentError] = []
    for folder, stem, _ in _places(ckpt, root):  # beside the checkpoint, then beside a symlink's target
        names = _names(folder)
        for suffix in SIDECAR_SUFFIXES:  # the common case first, without a path object per place looked at
            if stem + suffix in names:
                try:
                    found = load_config(Candidate("sidecar", folder / (stem + suffix)), root)
                except DocumentError as exc:
                    broken.append(exc)
                    continue
                return with_notes(found, broken)
    places = candidates(ckpt, root)
    for candidate in places:
        if candidate.kind == "hydra" and _exists(candidate.path):
            return with_notes(load_config(candidate, root), broken)
    skipped: list[str] = []
    for level in _log_levels(ckpt, root):
        accepted = []
        for candidate in level:
            resolved = load_config(candidate, root)
            if usable(resolved):
                accepted.append(resolved)
            else:
                skipped.append(f"{resolved.where} ({_why_not(resolved)})")
        if len(accepted) == 1:
            return with_notes(accepted[0], broken)
        if accepted:
            raise SeveralConfigs(tuple(with_notes(r, broken) for r in accepted))
    if broken:  # nothing else holds a config: the broken sidecar is the cause
        raise broken[0]
    looked = [display(candidate.path, root) for candidate in places]
    for _, _, run in _places(ckpt, root):
        if run is not None and (run == root or root in run.parents):  # where _run_logger_files looks
            looked.append(f"{display(run, root)}/*/version_*/{{hparams,config}}.yaml")
    looked = list(dict.fromkeys(looked))
    raise ConfigNotFound(ckpt.relpath, tuple(looked), tuple(skipped))


def with_notes(resolved: ResolvedConfig, broken: list[DocumentError]) -> ResolvedConfig:
    """``resolved``, noting the broken sidecars that were passed over to reach it."""
    if not broken:
        return resolved
    skipped = tuple(f"passed over a broken sidecar: {first_line(exc.message)}" for exc in broken)
    return dataclasses.replace(resolved, skipped=skipped + resolved.skipped)


def _why_not(resolved: ResolvedConfig) -> str:
    if not resolved.data:
        return "empty: the module did not call save_hyperparameters"
    return "no arguments the model can be built from" if resolved.model_key is not None else "has no `model` section"
