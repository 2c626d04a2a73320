"""Find every ``*.ckpt`` under an outputs directory, once, without ever crashing on the tree's oddities.

Symlink loops, unreadable folders and names that are not UTF-8 are facts about the tree, reported as
:class:`DiscoveryProblem` records next to the checkpoints; the walk goes on.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ckptgate.naming import CheckpointKind, parse_kind, parse_run_timestamp

CHECKPOINT_SUFFIX = ".ckpt"
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
    size: int  # bytes; 0 for a directory named *.ckpt
    mtime: float
    is_dir: bool = False  # DeepSpeed / distributed checkpoints are folders named *.ckpt
    symlink_target: str | None = None

    @property
    def stem(self) -> str:
        return self.path.name[: -len(CHECKPOINT_SUFFIX)] if self.path.name.endswith(".ckpt") else self.path.stem

    @property
    def size_mb(self) -> float:
        return self.size / 1e6


@dataclass(frozen=True)
class DiscoveryProblem:
    """Something under the outputs dir that could hide or mislabel checkpoints."""

    path: str  # relative to the outputs dir, posix (may contain escaped bytes)
    kind: str  # "symlink-loop" | "unreadable" | "broken-symlink" | "non-utf8-name" | "alias" | "not-a-file"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Discovery:
    """The result of one walk: checkpoints sorted by relpath, plus every problem met on the way."""

    root: Path
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    problems: list[DiscoveryProblem] = field(default_factory=list)

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


_kind_of = functools.lru_cache(maxsize=1024)(parse_kind)  # best.ckpt, last.ckpt... repeat in every run


def _record(path: Path, relpath: str, root: Path, st: os.stat_result, link: str | None) -> CheckpointRecord:
    run_dir, run_relpath, run_timestamp = _run_of(path.parent, root)
    is_dir = stat.S_ISDIR(st.st_mode)
    return CheckpointRecord(
        path=path,
        # Printable and UTF-8 (an id, a key, a word in messages that pytest-xdist must send between processes,
        # which refuses the surrogates a non-UTF-8 name decodes to); ``path`` keeps the real name.
        relpath=_display(relpath),
        run_dir=run_dir,
        run_relpath=run_relpath,
        run_timestamp=run_timestamp,
        kind=_kind_of(path.name),
        size=0 if is_dir else st.st_size,
        mtime=st.st_mtime,
        is_dir=is_dir,
        symlink_target=link,
    )


def discover(root: Path) -> Discovery:
    """Walk ``root`` (following directory symlinks, each real folder once) and record every checkpoint.

    Raises ``FileNotFoundError``/``NotADirectoryError`` only for ``root`` itself: that is a usage error.
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise FileNotFoundError(root)
    if not root.is_dir():
        raise NotADirectoryError(root)
    result = Discovery(root=root)
    root_stat = root.stat()
    root_key = (root_stat.st_dev, root_stat.st_ino)
    visited: dict[tuple[int, int], str] = {root_key: "."}
    # (absolute dir, relpath or "", (dev, ino) of it and its ancestors: a link to one of them is a loop)
    stack: list[tuple[Path, str, tuple[tuple[int, int], ...]]] = [(root, "", (root_key,))]
    # Symlinked folders wait until every real folder is scanned, so a checkpoint is always found under
    # its real path and an alias is reported as such, whatever the names sort like.
    deferred: list[tuple[Path, str, tuple[tuple[int, int], ...], str]] = []
    while stack or deferred:
        if not stack:
            path, child_rel, ancestry, link = deferred.pop(0)
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
            if entry.name.endswith(CHECKPOINT_SUFFIX):
                if is_dir or stat.S_ISREG(st.st_mode):
                    result.checkpoints.append(_record(Path(entry.path), child_rel, root, st, link))
                else:
                    result.problems.append(
                        DiscoveryProblem(
                            _display(child_rel), "not-a-file", "named *.ckpt but not a file (a FIFO, socket or device)"
                        )
                    )
                continue  # never descend into a folder named *.ckpt (DeepSpeed layout)
            if not is_dir or entry.name in _SKIP_DIRS:
                continue
            key = (st.st_dev, st.st_ino)
            if link is not None:
                deferred.append((Path(entry.path), child_rel, (*ancestry, key), link))
            elif key not in visited:  # a bind mount or hard-linked dir seen twice: scan once
                visited[key] = child_rel
                subdirs.append((Path(entry.path), child_rel, (*ancestry, key)))
        stack.extend(reversed(subdirs))
    result.checkpoints.sort(key=lambda c: c.relpath)
    result.problems.sort(key=lambda p: p.path)
    return result
