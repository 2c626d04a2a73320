"""Find every checkpoint under an outputs directory, once, without ever crashing on the tree's oddities.

A checkpoint is a file whose name matches one of the patterns (``*.ckpt`` unless told otherwise: ``*.pt``,
``*.pth``...), or a folder whose name matches and whose contents are a sharded checkpoint: DeepSpeed's
(``latest``, ``zero_to_fp32.py``, ``<tag>/*_model_states.pt`` and ``*_optim_states.pt``) or
torch.distributed's (``.metadata`` and ``*.distcp`` shards, plus Lightning's ``meta.pt`` when Lightning's
FSDP or ModelParallel strategy wrote it). Such a folder is one checkpoint, inspected without loading anything
(see :class:`ShardedCheckpoint`); any other folder is entered like every folder, whatever its name.

Symlink loops, unreadable folders, names that are not UTF-8 and sharded checkpoints no pattern names are facts
about the tree, reported as :class:`DiscoveryProblem` records next to the checkpoints; the walk goes on.
"""

from __future__ import annotations

import bisect
import errno
import fnmatch
import functools
import json
import os
import pickletools
import re
import shlex
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path, PurePath

from ckptgate.naming import CheckpointKind, parse_kind, parse_run_timestamp

CHECKPOINT_SUFFIX = ".ckpt"
DEFAULT_PATTERNS = ("*.ckpt",)
# Lightning writes checkpoints into a folder with this name inside the run folder.
CHECKPOINT_FOLDERS = frozenset({"checkpoints", "ckpts", "ckpt"})
_SKIP_DIRS = frozenset({".git", "__pycache__"})


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint file and what its location tells about it."""

    path: Path  # absolute, as found (symlinks not resolved: the name is the user's)
    relpath: str  # posix path relative to the outputs dir: the stable test id, made printable (see printable)
    run_dir: Path  # the run folder: the parent of checkpoints/, or the file's own folder
    run_relpath: str  # the run folder relative to the outputs dir, posix; "." at the top
    run_timestamp: datetime | None
    kind: CheckpointKind
    size: int  # bytes; for a sharded checkpoint, of all the files in its folder
    mtime: float  # for a sharded checkpoint, its newest file's
    is_dir: bool = False  # a sharded checkpoint: a folder (see ``shards``)
    symlink_target: str | None = None  # what the link says (os.readlink), when the checkpoint is a symlink
    suffix: str = ""  # the extension the matching pattern names (".ckpt", ".pth.tar"); "" when it names none
    shards: ShardedCheckpoint | None = None  # what a sharded checkpoint's folder holds, inspected at discovery
    # the relpath of another checkpoint that is the same file on disk (a symlink, a hard link), else None:
    # disk totals count each file once; each name still gets its own verdict
    same_file_as: str | None = None

    @property
    def stem(self) -> str:
        """The name without its checkpoint extension: ``best`` for ``best.ckpt`` and ``best.pt``; sidecars are
        ``<stem>.config.json``."""
        return stem_of(self.path.name, self.suffix)

    @property
    def layout(self) -> str | None:
        """``"deepspeed"`` or ``"distributed"`` for a sharded checkpoint, None for a single file."""
        return self.shards.layout if self.shards is not None else None

    @property
    def size_mb(self) -> float:
        return self.size / 1e6


@dataclass(frozen=True)
class DiscoveryProblem:
    """Something under the outputs dir that could hide or mislabel checkpoints."""

    path: str  # relative to the outputs dir, posix (may contain escaped bytes)
    # "symlink-loop" | "unreadable" | "broken-symlink" | "non-utf8-name" | "alias" | "not-a-file"
    # | "not-a-checkpoint" (a folder named like a checkpoint, neither sharded nor holding one)
    # | "sharded-unmatched" (a sharded checkpoint in a folder no pattern names: not checked)
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Discovery:
    """The result of one walk: checkpoints sorted by relpath, plus every problem met on the way."""

    root: Path
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    problems: list[DiscoveryProblem] = field(default_factory=list)
    patterns: tuple[str, ...] = DEFAULT_PATTERNS  # the names searched

    def by_relpath(self) -> dict[str, CheckpointRecord]:
        return {c.relpath: c for c in self.checkpoints}


def printable(text: str) -> str:
    """A one-line, printable, UTF-8 form of a path that may hold undecodable bytes (kept as surrogates, shown
    as ``\\xff``) or control characters (a newline in a name, shown as ``\\n``), as pytest escapes ids."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_display = printable


def _is_surrogate_escaped(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def run_dir_of(path: Path, root: Path) -> Path:
    """The run folder of a checkpoint: skip Lightning's ``checkpoints/`` folder, never leave ``root``."""
    return _run_folder(path.parent, root)


def _run_folder(folder: Path, root: Path) -> Path:
    """The run folder of the checkpoints in ``folder``."""
    return folder.parent if folder.name in CHECKPOINT_FOLDERS and folder != root else folder


@functools.lru_cache(maxsize=4096)
def _run_of(folder: Path, root: Path) -> tuple[Path, str, datetime | None]:
    """Run folder, its relpath and its timestamp for the checkpoints in ``folder``: worked out once per
    folder, not per checkpoint (tens of thousands of checkpoints are collected in a few seconds)."""
    run_dir = _run_folder(folder, root)
    run_parts = run_dir.relative_to(root).parts if run_dir != root else ()
    return run_dir, _display("/".join(run_parts) or "."), parse_run_timestamp(run_parts)


_kind_of = functools.lru_cache(maxsize=1024)(parse_kind)  # best, last... repeat in every run


# -- names --------------------------------------------------------------------------------------------------
def check_patterns(patterns: Iterable[str] | str) -> tuple[str, ...]:
    """The checkpoint name patterns, validated and without repeats: case-sensitive fnmatch patterns on file and
    folder names (``*.ckpt``, ``*.pt``, ``model_*.pth``). An item holding spaces is several patterns
    (``"*.pt *.pth"``, as one ini line gives them). Raises ``ValueError`` for a pattern that names a path or for
    no pattern at all: a setting that cannot work."""
    found: list[str] = []
    for item in [patterns] if isinstance(patterns, str) else patterns:
        for pattern in str(item).split():
            if "/" in pattern or os.sep in pattern:
                raise ValueError(
                    f"checkpoint pattern {pattern!r} holds a path: patterns match file and folder names "
                    "(e.g. '*.pt'); to check only some folders, use --ckpt-select with a glob on the path"
                )
            if pattern not in found:
                found.append(pattern)
    if not found:
        raise ValueError("no checkpoint pattern given: expected file name patterns such as '*.ckpt' or '*.pt'")
    return tuple(found)


@functools.lru_cache(maxsize=256)
def pattern_suffix(pattern: str) -> str:
    """The extension a pattern names after its last wildcard (``.ckpt`` for ``*.ckpt``, ``.pth.tar`` for
    ``*.pth.tar``), stripped from a matching name to give its stem; "" when it names none."""
    tail = re.split(r"[*?\[\]]", pattern)[-1]
    return tail if len(tail) > 1 and tail.startswith(".") and tail != pattern else ""


def stem_of(name: str, suffix: str = "") -> str:
    """A checkpoint name without its extension: ``suffix`` (the matching pattern's) when the name ends with
    it, else ``.ckpt``, else the last ``.ext`` (``best.pt`` -> ``best``)."""
    for ending in (suffix, CHECKPOINT_SUFFIX):
        if ending and name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return PurePath(name).stem


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    each = tuple(re.compile(fnmatch.translate(pattern)) for pattern in patterns)
    return re.compile("|".join(f"(?:{regex.pattern})" for regex in each)), each


def matching_pattern(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first of ``patterns`` that ``name`` matches, or None."""
    anyone, each = _matcher(patterns)
    if anyone.match(name) is None:
        return None
    if len(patterns) == 1:
        return patterns[0]
    return next(pattern for pattern, regex in zip(patterns, each, strict=True) if regex.match(name))


# -- sharded checkpoints ------------------------------------------------------------------------------------
DEEPSPEED = "deepspeed"
DISTRIBUTED = "distributed"
_DS_LATEST = "latest"  # DeepSpeed's save_checkpoint: the tag of the newest save, as text
_DS_SCRIPT = "zero_to_fp32.py"  # copied beside the tags when ZeRO is on
# mp_rank_00_model_states.pt; zero_pp_rank_N_mp_rank_00_model_states.pt (ZeRO-3); layer_01-model_states.pt
_DS_MODEL = re.compile(r"[_-]model_states\.pt$")
_DS_OPTIM = re.compile(r"[_-]optim_states\.pt$")  # [bf16_]zero_pp_rank_N_mp_rank_00_optim_states.pt: per dp rank
_DS_RANKED = re.compile(
    r"^(?P<prefix>.*?)zero_pp_rank_(?P<dp>\d+)_mp_rank_(?P<mp>\d+)_(?P<what>model|optim)_states\.pt$"
)
_DS_MP_MODEL = re.compile(r"^mp_rank_(?P<mp>\d+)_model_states\.pt$")
LIGHTNING_DEEPSPEED_TAG = "checkpoint"  # the tag Lightning's DeepSpeedStrategy.save_checkpoint writes
_DCP_INDEX = re.compile(r"^(?:__\d+)?\.metadata$")  # torch.distributed.checkpoint's (per-rank without collectives)
_DCP_SHARD = re.compile(r"^__(?P<rank>\d+)_(?P<index>\d+)\.distcp$")
_DCP_SUFFIX = ".distcp"
LIGHTNING_META = "meta.pt"  # Lightning's FSDP/ModelParallel strategies: the checkpoint but its tensors (torch.save)
_MAX_LATEST = 4096  # bytes of a `latest` file read
_MAX_INDEX = 64 * 2**20  # a .metadata larger than this is not scanned for the shard names it lists
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_LISTED = 5  # missing or unreadable files named in a message
_SHARD_ENDINGS = (_DCP_SUFFIX, ".metadata", "_states.pt")  # what any shard file's name ends with


@dataclass(frozen=True)
class ShardedCheckpoint:
    """What a sharded checkpoint's folder holds, found by listing it and reading file heads, nothing loaded.

    Paths are posix, relative to the checkpoint's folder (``checkpoint/mp_rank_00_model_states.pt``).
    """

    layout: str  # "deepspeed" | "distributed"
    # DeepSpeed: the *_model_states.pt files; torch.distributed: the *.distcp shards (model and optimizer)
    model_files: tuple[str, ...]
    optimizer_files: tuple[str, ...]  # DeepSpeed: the *_optim_states.pt ZeRO shards; torch.distributed: ()
    metadata: tuple[str, ...]  # what describes the shards, present: latest, zero_to_fp32.py / .metadata, meta.pt
    missing: tuple[str, ...]  # files the layout needs that the folder lacks, each with why when it is not obvious
    unreadable: tuple[str, ...]  # "file (why)": present but empty, unreadable, truncated or not what it must be
    tag: str | None = None  # DeepSpeed: the folder of the shards (`latest` names it); None when they lie at the top
    lightning: bool = False  # written by Lightning (meta.pt; DeepSpeed's tag "checkpoint")
    size: int = 0  # bytes of every file in the folder and its subfolders one level down
    mtime: float = 0.0  # the newest file's

    @property
    def ok(self) -> bool:
        """Every file the layout needs is there, non-empty and readable."""
        return not self.missing and not self.unreadable

    @property
    def shard_files(self) -> tuple[str, ...]:
        return self.model_files + self.optimizer_files

    def describe(self) -> str:
        """``a DeepSpeed sharded checkpoint written by Lightning (tag `checkpoint`: 1 model-states file and 2
        ZeRO optimizer shards``, without the closing parenthesis (the caller says how they are)."""
        by = " written by Lightning" if self.lightning else ""
        if self.layout == DEEPSPEED:
            model, optim = len(self.model_files), len(self.optimizer_files)
            counts = f"{_count(model, 'model-states file')} and {_count(optim, 'ZeRO optimizer shard')}"
            return f"a DeepSpeed sharded checkpoint{by} (" + (f"tag `{self.tag}`: {counts}" if self.tag else counts)
        by = by or " without Lightning's meta.pt"
        files = [*self.metadata, _count(len(self.model_files), ".distcp shard")]
        listed = ", ".join(files[:-1]) + f" and {files[-1]}" if len(files) > 1 else files[0]
        return f"a torch.distributed (FSDP) sharded checkpoint{by} ({listed}"

    def problems(self) -> list[str]:
        """What makes it unusable whatever loads it: missing and unreadable files, a few of each named."""
        found = []
        for label, names in (("missing", self.missing), ("unreadable", self.unreadable)):
            if names:
                more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
                found.append(f"{label} {', '.join(names[:_LISTED])}{more}")
        return found

    def message(self, path: Path, stem: str, suffix: str = "") -> str:
        """The weights check's verdict on this checkpoint (it is not loaded): what is wrong with its files, or
        that sharded checkpoints are not loaded yet and the command that makes one file of it."""
        if not self.ok:
            return f"is {self.describe()}) that cannot be used: {'; '.join(self.problems())}"
        out = path.with_name(f"{stem}.consolidated{suffix or CHECKPOINT_SUFFIX}")
        return (
            f"is {self.describe()}, all present and readable): sharded checkpoints are not loaded yet; convert it "
            f"into one file and check that: {self.convert_command(path, out)}"
        )

    def convert_command(self, path: Path, out: Path) -> str:
        """A shell command that writes the checkpoint at ``path`` as one file at ``out``."""
        if self.layout == DEEPSPEED:
            # Lightning's converter reads the tag from `latest`; a tag folder alone gets one written beside it
            folder = path if self.tag is not None else path.parent
            program = (
                "from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict as "
                f"convert; convert({json.dumps(_shown(folder))}, {json.dumps(_shown(out))})"
            )
            latest = (
                ""
                if self.tag is not None
                else f"echo {shlex.quote(path.name)} > {shlex.quote(_shown(folder / _DS_LATEST))} && "
            )
            return f"{latest}python -c {shlex.quote(program)}"
        if self.lightning:
            module = "lightning.fabric.utilities.consolidate_checkpoint"
            return f"python -m {module} {shlex.quote(_shown(path))} --output_file {shlex.quote(_shown(out))}"
        module = "torch.distributed.checkpoint.format_utils dcp_to_torch"
        return f"python -m {module} {shlex.quote(_shown(path))} {shlex.quote(_shown(out))}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _shown(path: Path) -> str:
    """A path for a command: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def sharded_message(checkpoint: CheckpointRecord | Path) -> str:
    """What the weights check says of a checkpoint that is a folder (a record discovery made, or a path): its
    :meth:`ShardedCheckpoint.message`, or why the folder is no checkpoint at all."""
    if isinstance(checkpoint, CheckpointRecord):
        path, stem, suffix, shards = checkpoint.path, checkpoint.stem, checkpoint.suffix, checkpoint.shards
    else:
        path, stem, suffix, shards = checkpoint, stem_of(checkpoint.name), "", None
    shards = shards if shards is not None else inspect_sharded(path)
    if shards is None:
        return (
            "is a folder that is neither a DeepSpeed nor a torch.distributed sharded checkpoint (no latest, "
            "zero_to_fp32.py, *_model_states.pt, .metadata or *.distcp in it)"
        )
    return shards.message(path, stem, suffix)


@dataclass(frozen=True)
class _Entry:
    is_dir: bool
    is_file: bool
    size: int
    mtime: float


def _listing(folder: Path) -> dict[str, _Entry]:
    """A folder's entries, symlinks followed; raises ``OSError`` when it cannot be listed."""
    found = {}
    with os.scandir(folder) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                found[entry.name] = _Entry(False, False, 0, 0.0)
                continue
            is_file = stat.S_ISREG(st.st_mode)
            found[entry.name] = _Entry(stat.S_ISDIR(st.st_mode), is_file, st.st_size if is_file else 0, st.st_mtime)
    return found


def _sharded_kind(files: Iterable[str]) -> str | None:
    """The layout whose shards lie among these file names: a torch.distributed checkpoint folder or a DeepSpeed
    tag folder (the shards' own folder), else None."""
    names = list(files)
    if any(name.endswith(_DCP_SUFFIX) or _DCP_INDEX.match(name) for name in names):
        return DISTRIBUTED
    if any(_DS_MODEL.search(name) or _DS_OPTIM.search(name) for name in names):
        return DEEPSPEED
    return None


def _is_shard_file(name: str, layout: str) -> bool:
    if layout == DEEPSPEED:
        return bool(_DS_MODEL.search(name) or _DS_OPTIM.search(name))
    return name.endswith(_DCP_SUFFIX) or bool(_DCP_INDEX.match(name)) or name == LIGHTNING_META


def inspect_sharded(folder: Path) -> ShardedCheckpoint | None:
    """The sharded checkpoint a folder holds, by its contents (nothing is loaded), or None when it is none.

    torch.distributed (Lightning's FSDP and ModelParallel strategies, ``torch.distributed.checkpoint.save``):
    ``.metadata`` (or ``__0.metadata``) and ``__<rank>_<n>.distcp`` shards, and ``meta.pt`` when Lightning wrote
    it. DeepSpeed (Lightning's DeepSpeedStrategy, ``engine.save_checkpoint``): ``latest`` naming a tag folder
    (``checkpoint`` for Lightning), ``zero_to_fp32.py``, and in the tag folder ``*_model_states.pt`` and the ZeRO
    ``*_optim_states.pt`` shards; or a tag folder itself.
    """
    try:
        entries = _listing(folder)
    except OSError:
        return None
    files = {name for name, entry in entries.items() if entry.is_file}
    kind = _sharded_kind(files)
    if kind == DISTRIBUTED or LIGHTNING_META in files:
        return _distributed(folder, entries)
    if kind == DEEPSPEED:
        return _deepspeed(folder, entries, None, entries)
    tags: dict[str, dict[str, _Entry]] = {}
    for name in sorted(name for name, entry in entries.items() if entry.is_dir):
        try:
            inside = _listing(folder / name)
        except OSError:
            continue
        if _sharded_kind(name for name, entry in inside.items() if entry.is_file) == DEEPSPEED:
            tags[name] = inside
    latest = _DS_LATEST in files and entries[_DS_LATEST].size <= _MAX_LATEST
    if tags or _DS_SCRIPT in files or (latest and _read_tag(folder / _DS_LATEST) in entries):
        return _deepspeed(folder, entries, tags, None)
    return None


def _read_tag(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            text = handle.read(_MAX_LATEST).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and "/" not in text and "\n" not in text else None


def _totals(folder: Path, entries: dict[str, _Entry]) -> tuple[int, float]:
    """Bytes and newest mtime of the files in ``folder`` and in its subfolders one level down."""
    size, mtime = 0, 0.0
    for name, entry in entries.items():
        if entry.is_dir:
            try:
                inner = _listing(folder / name)
            except OSError:
                continue
            size += sum(e.size for e in inner.values() if e.is_file)
            mtime = max([mtime, *(e.mtime for e in inner.values() if e.is_file)])
        elif entry.is_file:
            size, mtime = size + entry.size, max(mtime, entry.mtime)
    return size, mtime


def _deepspeed(
    folder: Path, entries: dict[str, _Entry], tags: dict[str, dict[str, _Entry]] | None, own: dict[str, _Entry] | None
) -> ShardedCheckpoint:
    """A DeepSpeed folder: a save dir (``latest``, tag folders: ``tags``), or a tag folder itself (``own``)."""
    missing: list[str] = []
    unreadable: list[str] = []
    metadata = [name for name in (_DS_LATEST, _DS_SCRIPT) if name in entries and entries[name].is_file]
    tag: str | None = None
    shards = own
    if own is None:
        assert tags is not None
        if _DS_LATEST in metadata:
            tag = _read_tag(folder / _DS_LATEST)
            if tag is None:
                unreadable.append(f"{_DS_LATEST} (does not name a tag folder)")
        elif len(tags) == 1:
            tag = next(iter(tags))
            missing.append(f"{_DS_LATEST} (names the tag folder `{tag}`: DeepSpeed and Lightning's converter read it)")
        else:
            which = f"which of {', '.join(sorted(tags))} is the checkpoint" if tags else "it names the tag folder"
            missing.append(f"{_DS_LATEST} ({which})")
        if tag is not None:
            shards = tags.get(tag)
            if shards is None and entries.get(tag, _Entry(False, False, 0, 0)).is_dir:
                shards = {}  # the tag folder holds no shard
            elif shards is None:
                missing.append(f"{tag}/ (the tag folder `latest` names)")
    model: list[str] = []
    optim: list[str] = []
    if shards is not None:
        prefix = f"{tag}/" if tag is not None else ""
        names = sorted(name for name, entry in shards.items() if entry.is_file)
        model = [name for name in names if _DS_MODEL.search(name)]
        optim = [name for name in names if _DS_OPTIM.search(name)]
        if not model:
            missing.append(
                f"{prefix}mp_rank_00_model_states.pt (or zero_pp_rank_0_mp_rank_00_model_states.pt under ZeRO-3)"
            )
        if not optim and _DS_SCRIPT in metadata:
            missing.append(f"{prefix}*_optim_states.pt (the ZeRO shards that hold the fp32 weights)")
        missing += [prefix + name for name in _deepspeed_gaps(model + optim)]
        base = folder / tag if tag is not None else folder
        for name in model + optim:
            why = _unreadable(base / name, torch_file=True)
            if why:
                unreadable.append(f"{prefix}{name} ({why})")
        model = [prefix + name for name in model]
        optim = [prefix + name for name in optim]
    size, mtime = _totals(folder, entries)
    return ShardedCheckpoint(
        DEEPSPEED,
        tuple(model),
        tuple(optim),
        tuple(metadata),
        tuple(missing),
        tuple(unreadable),
        tag=tag,
        lightning=tag == LIGHTNING_DEEPSPEED_TAG,
        size=size,
        mtime=mtime,
    )


def _deepspeed_gaps(names: list[str]) -> list[str]:
    """Shards missing from a numbering: ranks run from 0 to the highest seen, the ZeRO-3 model files and the
    optimizer shards of one model-parallel rank count as many data-parallel ranks, model files as many
    model-parallel ranks."""
    ranked: dict[tuple[str, str, str], set[int]] = {}
    ranks_of_mp: dict[int, int] = {}
    plain: set[int] = set()
    width = 2
    for name in names:
        match = _DS_RANKED.match(name)
        if match:
            ranked.setdefault((match["prefix"], match["mp"], match["what"]), set()).add(int(match["dp"]))
            mp = int(match["mp"])
            ranks_of_mp[mp] = max(ranks_of_mp.get(mp, 0), int(match["dp"]) + 1)
        elif match := _DS_MP_MODEL.match(name):
            plain.add(int(match["mp"]))
            width = len(match["mp"])
    gaps = [f"mp_rank_{mp:0{width}d}_model_states.pt" for mp in range(max(plain, default=-1) + 1) if mp not in plain]
    for (prefix, mp, what), ranks in sorted(ranked.items()):
        count = ranks_of_mp[int(mp)]
        gaps += [f"{prefix}zero_pp_rank_{dp}_mp_rank_{mp}_{what}_states.pt" for dp in range(count) if dp not in ranks]
    return gaps


def _distributed(folder: Path, entries: dict[str, _Entry]) -> ShardedCheckpoint:
    files = {name for name, entry in entries.items() if entry.is_file}
    shards = sorted(name for name in files if name.endswith(_DCP_SUFFIX))
    index = sorted(name for name in files if _DCP_INDEX.match(name))
    if ".metadata" in index:
        index = [".metadata"]
    missing: list[str] = []
    unreadable: list[str] = []
    if not index:
        missing.append(".metadata (torch.distributed.checkpoint's index of the shards: nothing loads without it)")
    named: set[str] | None = set() if index else None
    for name in index:
        why, listed = _index_shards(folder / name)
        if why:
            unreadable.append(f"{name} ({why})")
        if listed is None:
            named = None
        elif named is not None:
            named |= listed
    if named:
        missing += [f"{name} (listed in {index[0]})" for name in sorted(named - set(shards))]
    else:  # no index to read: the shards' own numbering, ranks 0 to the highest seen
        ranks = {int(match["rank"]) for match in map(_DCP_SHARD.match, shards) if match}
        missing += [f"__{rank}_0{_DCP_SUFFIX}" for rank in range(max(ranks, default=-1) + 1) if rank not in ranks]
    if not shards and not missing:
        missing.append(f"*{_DCP_SUFFIX} (the shards)")
    for name in shards:
        why = _unreadable(folder / name, torch_file=False)
        if why:
            unreadable.append(f"{name} ({why})")
    lightning = LIGHTNING_META in files
    if lightning:
        why = _unreadable(folder / LIGHTNING_META, torch_file=True)
        if why:
            unreadable.append(f"{LIGHTNING_META} ({why})")
    size, mtime = _totals(folder, entries)
    return ShardedCheckpoint(
        DISTRIBUTED,
        tuple(shards),
        (),
        (*index, *([LIGHTNING_META] if lightning else [])),
        tuple(missing),
        tuple(unreadable),
        lightning=lightning,
        size=size,
        mtime=mtime,
    )


def _index_shards(path: Path) -> tuple[str | None, set[str] | None]:
    """Why a torch.distributed ``.metadata`` cannot be read (or None), and the shard files it lists (None when
    they cannot be known). Its pickle opcodes are scanned for file names, never executed."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)", None
        if size > _MAX_INDEX:
            return None, None  # too large to scan here: the shards' numbering is checked instead
        listed: set[str] = set()
        with path.open("rb") as handle:
            for _opcode, argument, _position in pickletools.genops(handle):
                if isinstance(argument, str) and argument.endswith(_DCP_SUFFIX) and "/" not in argument:
                    listed.add(argument)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}", None
    except Exception as exc:  # pickletools' ValueError for a truncated stream or an unknown opcode, and others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"not a whole pickle as torch.distributed.checkpoint writes it: {reason}", None
    return None, listed


def _unreadable(path: Path, torch_file: bool) -> str | None:
    """Why a shard file cannot serve, read from its head and (for a torch.save zip) its end record, or None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not head:
        return "empty, 0 bytes"
    if torch_file and head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return f"truncated or corrupt: {size:,} bytes and no zip central directory"
    if torch_file and not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTO:
        return f"not a torch.save file: starts with {head!r}"
    return None


# -- the walk -----------------------------------------------------------------------------------------------
def _record(
    path: Path,
    relpath: str,
    root: Path,
    st: os.stat_result,
    link: str | None,
    suffix: str,
    shards: ShardedCheckpoint | None = None,
) -> CheckpointRecord:
    run_dir, run_relpath, run_timestamp = _run_of(path.parent, root)
    return CheckpointRecord(
        path=path,
        # Printable and UTF-8 (an id, a key, a word in messages that pytest-xdist must send between processes,
        # which refuses the surrogates a non-UTF-8 name decodes to); ``path`` keeps the real name.
        relpath=_display(relpath),
        run_dir=run_dir,
        run_relpath=run_relpath,
        run_timestamp=run_timestamp,
        kind=_kind_of(stem_of(path.name, suffix)),
        size=shards.size if shards is not None else st.st_size,
        mtime=(shards.mtime or st.st_mtime) if shards is not None else st.st_mtime,
        is_dir=shards is not None,
        symlink_target=link,
        suffix=suffix,
        shards=shards,
    )


def _mark_same_files(records: list[CheckpointRecord], keys: list[tuple[int, int]]) -> list[CheckpointRecord]:
    """Records of one file on disk (symlinks to it, hard links) point at one of them, the real name first."""
    groups: dict[tuple[int, int], list[CheckpointRecord]] = {}
    for record, key in zip(records, keys, strict=True):
        groups.setdefault(key, []).append(record)
    marked = []
    for record, key in zip(records, keys, strict=True):
        group = groups[key]
        first = min(group, key=lambda c: (c.symlink_target is not None, c.relpath)) if len(group) > 1 else record
        marked.append(record if first is record else replace(record, same_file_as=first.relpath))
    return marked


def discover(root: Path, patterns: Iterable[str] = DEFAULT_PATTERNS) -> Discovery:
    """Walk ``root`` (following directory symlinks, each real folder once) and record every checkpoint: each
    file whose name matches one of ``patterns`` (see :func:`check_patterns`), and each folder whose name matches
    and that holds a sharded checkpoint (see :func:`inspect_sharded`); a matching folder that holds none is
    entered like any other.

    Raises ``FileNotFoundError``/``NotADirectoryError`` only for ``root`` itself: that is a usage error; and
    ``ValueError`` for patterns that cannot work.
    """
    patterns = check_patterns(patterns)
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise FileNotFoundError(root)
    if not root.is_dir():
        raise NotADirectoryError(root)
    result = Discovery(root=root, patterns=patterns)
    anyone = _matcher(patterns)[0]
    keys: list[tuple[int, int]] = []  # (st_dev, st_ino) of each checkpoint, in the order of result.checkpoints
    named: list[tuple[str, str]] = []  # folders named like checkpoints, entered: (relpath, pattern)
    root_stat = root.stat()
    root_key = (root_stat.st_dev, root_stat.st_ino)
    visited: dict[tuple[int, int], str] = {root_key: "."}
    # (absolute dir, relpath or "", (dev, ino) of it and its ancestors: a link to one of them is a loop)
    stack: list[tuple[Path, str, tuple[tuple[int, int], ...]]] = [(root, "", (root_key,))]
    # Symlinked folders wait until every real folder is scanned, so a checkpoint is always found under
    # its real path and an alias is reported as such, whatever the names sort like.
    deferred: list[tuple[Path, str, tuple[tuple[int, int], ...], str, str | None]] = []
    while stack or deferred:
        if not stack:
            path, child_rel, ancestry, link, pattern = deferred.pop(0)
            key = ancestry[-1]
            if key in ancestry[:-1]:
                result.problems.append(
                    DiscoveryProblem(
                        _display(child_rel), "symlink-loop", f"symlink loop -> {_display(link)}; not followed"
                    )
                )
            elif key in visited:
                result.problems.append(
                    DiscoveryProblem(
                        _display(child_rel),
                        "alias",
                        f"symlink to {_display(visited[key])}, already scanned there; not scanned twice",
                    )
                )
            else:
                visited[key] = child_rel
                stack.append((path, child_rel, ancestry))
                if pattern is not None:
                    named.append((child_rel, pattern))
            continue
        directory, rel, ancestry = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.problems.append(
                DiscoveryProblem(_display(rel or "."), "unreadable", f"cannot list folder: {exc.strerror}")
            )
            continue
        # the shards of a sharded checkpoint in a folder no pattern names: not checkpoints one by one
        unnamed = None
        if any(entry.name.endswith(_SHARD_ENDINGS) for entry in entries):  # cheap: names only, then files
            unnamed = _sharded_kind(entry.name for entry in entries if _is_file(entry))
        if unnamed is not None:
            result.problems.append(_unmatched(directory, rel, unnamed, patterns))
        subdirs: list[tuple[Path, str, tuple[tuple[int, int], ...]]] = []
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if _is_surrogate_escaped(entry.name):
                result.problems.append(
                    DiscoveryProblem(
                        _display(child_rel),
                        "non-utf8-name",
                        "name is not valid UTF-8; shown with escaped bytes (rename it to keep ids stable)",
                    )
                )
            link = None
            try:
                if entry.is_symlink():
                    link = os.readlink(entry.path)
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                if link is not None:
                    kind, message = "broken-symlink", f"broken symlink -> {_display(link)}"
                    if exc.errno == errno.ELOOP:  # a link to itself, or a cycle of links
                        kind, message = "symlink-loop", f"symlink loop -> {_display(link)}"
                    result.problems.append(DiscoveryProblem(_display(child_rel), kind, message))
                else:
                    result.problems.append(
                        DiscoveryProblem(_display(child_rel), "unreadable", f"cannot stat: {exc.strerror}")
                    )
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            pattern = None if anyone.match(entry.name) is None else matching_pattern(entry.name, patterns)
            if pattern is not None and unnamed is not None and _is_shard_file(entry.name, unnamed):
                pattern = None  # reported with its folder above
            if pattern is not None:
                suffix = pattern_suffix(pattern)
                shards = inspect_sharded(Path(entry.path)) if is_dir else None
                if stat.S_ISREG(st.st_mode) or shards is not None:
                    result.checkpoints.append(_record(Path(entry.path), child_rel, root, st, link, suffix, shards))
                    keys.append((st.st_dev, st.st_ino))
                    continue  # a sharded checkpoint's folder is one checkpoint: never entered
                if not is_dir:
                    result.problems.append(
                        DiscoveryProblem(
                            _display(child_rel),
                            "not-a-file",
                            f"named {pattern} but not a file (a FIFO, socket or device)",
                        )
                    )
                    continue
            if not is_dir or entry.name in _SKIP_DIRS:
                continue
            key = (st.st_dev, st.st_ino)
            if link is not None:
                deferred.append((Path(entry.path), child_rel, (*ancestry, key), link, pattern))
            elif key not in visited:  # a bind mount or hard-linked dir seen twice: scan once
                visited[key] = child_rel
                subdirs.append((Path(entry.path), child_rel, (*ancestry, key)))
                if pattern is not None:
                    named.append((child_rel, pattern))
        stack.extend(reversed(subdirs))
    order = sorted(range(len(keys)), key=lambda index: result.checkpoints[index].relpath)
    result.checkpoints = _mark_same_files([result.checkpoints[i] for i in order], [keys[i] for i in order])
    result.problems += _named_but_empty(named, [c.relpath for c in result.checkpoints])
    result.problems.sort(key=lambda p: p.path)
    return result


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink loop: reported where the walk meets it
        return False


def _unmatched(directory: Path, rel: str, layout: str, patterns: tuple[str, ...]) -> DiscoveryProblem:
    """A sharded checkpoint whose folder no pattern names: said, never checked shard by shard."""
    what = "DeepSpeed" if layout == DEEPSPEED else "torch.distributed"
    folder, where = directory, ""
    if rel and layout == DEEPSPEED and (directory.parent / _DS_LATEST).is_file():
        # a tag folder: the checkpoint is the folder that holds `latest`
        folder, rel_folder = directory.parent, rel.rpartition("/")[0]
        where = f" (the tag folder of {_display(folder.name)}/)" if rel_folder else " (a tag folder)"
    else:
        rel_folder = rel
    if not rel_folder:
        return DiscoveryProblem(
            _display(rel or "."),
            "sharded-unmatched",
            f"the outputs dir itself is a {what} sharded checkpoint{where}: not checked, and its shard files are not "
            "checkpoints by themselves; point --ckpt-outputs at the folder that holds it",
        )
    return DiscoveryProblem(
        _display(rel),
        "sharded-unmatched",
        f"a {what} sharded checkpoint{where} whose folder name matches none of the patterns "
        f"({' '.join(patterns)}): not checked, and its shard files are not checkpoints by themselves; add a "
        f"pattern that matches {_display(folder.name)!r} to check it",
    )


def _named_but_empty(named: list[tuple[str, str]], relpaths: list[str]) -> list[DiscoveryProblem]:
    """Folders named like checkpoints that are no sharded checkpoint and hold none: said, not hidden."""
    problems = []
    for rel, pattern in named:
        prefix = _display(rel) + "/"
        index = bisect.bisect_left(relpaths, prefix)
        if index == len(relpaths) or not relpaths[index].startswith(prefix):
            problems.append(
                DiscoveryProblem(
                    _display(rel),
                    "not-a-checkpoint",
                    f"a folder named like a checkpoint ({pattern}) that is neither a DeepSpeed nor a "
                    "torch.distributed sharded checkpoint and holds no checkpoint: nothing in it was checked",
                )
            )
    return problems
