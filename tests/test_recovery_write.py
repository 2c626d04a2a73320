"""ckptgate.recovery.write: a recovered sidecar is written atomically, never over anything, safely under races.

The name only ever points at a complete file: killed at any point, a writer leaves no sidecar or a whole one.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ckptgate.errors import CheckError
from ckptgate.recovery import write
from ckptgate.recovery.write import write_sidecar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DOC = {"model": {"name": "net", "width": 4, "label": "réseau ✓"}, "_provenance": {"tool": "pytest-ckptgate"}}
FORK = multiprocessing.get_context("fork")


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def temporaries(folder: Path) -> list[str]:
    return [name for name in listing(folder) if name.endswith(".tmp")]


def as_written(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------- basics


def test_writes_valid_json_readable_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "best.config.json"
    assert write_sidecar(path, DOC) is True
    assert json.loads(path.read_text("utf-8")) == DOC
    assert "réseau ✓" in path.read_text("utf-8")  # not \u-escaped
    assert path.read_bytes().endswith(b"}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert listing(tmp_path) == ["best.config.json"]  # no temporary file left


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(document=st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_document_round_trips(tmp_path: Path, document: dict[str, Any]) -> None:
    folder = tmp_path / f"d{time.perf_counter_ns()}"
    folder.mkdir()
    assert write_sidecar(folder / "x.config.json", document) is True
    assert json.loads((folder / "x.config.json").read_text("utf-8")) == document
    assert listing(folder) == ["x.config.json"]


@pytest.mark.parametrize(
    "existing",
    [b"", b"{not json", b'{"model": {"name": "theirs"}}\n', bytes(range(256))],
    ids=["empty", "broken", "valid", "binary"],
)
def test_never_overwrites_an_existing_file(tmp_path: Path, existing: bytes) -> None:
    path = tmp_path / "best.config.json"
    path.write_bytes(existing)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert write_sidecar(path, DOC) is False
    assert path.read_bytes() == existing
    assert path.stat().st_mtime == 1_000_000_000
    assert listing(tmp_path) == ["best.config.json"]


def test_never_replaces_a_dangling_link_or_a_folder(tmp_path: Path) -> None:
    link = tmp_path / "best.config.json"
    link.symlink_to(tmp_path / "nowhere.json")
    assert write_sidecar(link, DOC) is False
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "nowhere.json")
    assert not (tmp_path / "nowhere.json").exists()
    folder = tmp_path / "last.config.json"
    folder.mkdir()
    assert write_sidecar(folder, DOC) is False
    assert folder.is_dir() and listing(folder) == []
    assert temporaries(tmp_path) == []


def test_a_file_appearing_between_the_check_and_the_link_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the hard link closes: another run writes the name after our existence check."""
    path = tmp_path / "best.config.json"
    real_link = os.link

    def link_after_the_other_run(src: Any, dst: Any) -> None:
        Path(dst).write_text("theirs")
        real_link(src, dst)

    monkeypatch.setattr(write.os, "link", link_after_the_other_run)
    assert write_sidecar(path, DOC) is False
    assert path.read_text() == "theirs"
    assert listing(tmp_path) == ["best.config.json"]


# --------------------------------------------------------------------------------------------- races


def test_concurrent_threads_one_content_wins_whole(tmp_path: Path) -> None:
    path = tmp_path / "best.config.json"
    documents = [{"writer": index, "pad": str(index) * 200_000} for index in range(8)]
    barrier = threading.Barrier(len(documents))
    results: list[bool | None] = [None] * len(documents)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = write_sidecar(path, documents[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(documents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and results.count(False) == len(documents) - 1
    winner = results.index(True)
    assert path.read_bytes() == as_written(documents[winner])
    assert listing(tmp_path) == ["best.config.json"]


def _race(path: str, index: int, barrier: Any, results: Any) -> None:
    document = {"writer": index, "pad": chr(ord("a") + index) * 300_000}
    barrier.wait()
    results[index] = 1 if write_sidecar(Path(path), document) else 0


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_processes_one_content_wins_whole(tmp_path: Path, round_: int) -> None:
    workers = 4
    path = tmp_path / f"best-v{round_}.config.json"
    barrier = FORK.Barrier(workers)
    results = FORK.Array("i", [-1] * workers)
    processes = [FORK.Process(target=_race, args=(str(path), index, barrier, results)) for index in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)
    assert [process.exitcode for process in processes] == [0] * workers
    outcome = list(results)
    assert sorted(outcome) == [0, 0, 0, 1], outcome
    winner = outcome.index(1)
    assert path.read_bytes() == as_written({"writer": winner, "pad": chr(ord("a") + winner) * 300_000})
    assert listing(tmp_path) == [path.name]


# ------------------------------------------------------------------------------------ killed writers

# Steps of a write, in order, at which the writer is killed (SIGKILL: no finally, no cleanup).
KILL_POINTS = (
    "after-mkstemp",
    "mid-write",
    "before-fsync",
    "before-chmod",
    "before-link",
    "after-link",
    "before-unlink",
    "after-unlink",
)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_child(path: Path, document: dict[str, Any], point: str, fraction: float) -> None:
    """In a forked child: instrument the write's steps, die at ``point``. Never returns."""
    signal.alarm(10)  # a child stuck on a lock inherited from the fork dies of SIGALRM: the test fails, not hangs
    try:
        real = {name: getattr(os, name) for name in ("fsync", "chmod", "link", "unlink", "fdopen")}
        real_mkstemp = write.tempfile.mkstemp

        def mkstemp(*args: Any, **kwargs: Any) -> Any:
            result = real_mkstemp(*args, **kwargs)
            if point == "after-mkstemp":
                _die()
            return result

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = real["fdopen"](fd, *args, **kwargs)
            if point == "mid-write":
                original = handle.write

                def partial(data: bytes) -> int:
                    original(data[: int(len(data) * fraction)])
                    handle.flush()
                    _die()
                    return 0

                handle.write = partial
            return handle

        def before(step: str, name: str) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if point == step:
                    _die()
                return real[name](*args, **kwargs)

            return wrapper

        def link(src: Any, dst: Any) -> None:
            if point == "before-link":
                _die()
            real["link"](src, dst)
            if point == "after-link":
                _die()

        def unlink(target: Any, *args: Any, **kwargs: Any) -> None:
            if point == "before-unlink":
                _die()
            real["unlink"](target, *args, **kwargs)
            if point == "after-unlink":
                _die()

        write.tempfile.mkstemp = mkstemp  # type: ignore[assignment]
        os.fdopen = fdopen  # type: ignore[assignment]
        os.fsync = before("before-fsync", "fsync")
        os.chmod = before("before-chmod", "chmod")
        os.link = link
        os.unlink = unlink
        write_sidecar(path, document)
        os._exit(0)
    except BaseException:
        os._exit(3)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(point=st.sampled_from(KILL_POINTS), fraction=st.floats(0, 1))
def test_a_writer_killed_at_any_step_leaves_no_sidecar_or_a_whole_one(
    tmp_path: Path, point: str, fraction: float
) -> None:
    folder = tmp_path / f"k{time.perf_counter_ns()}"
    folder.mkdir()
    (folder / "best.ckpt").write_bytes(b"weights")
    path = folder / "best.config.json"
    document = {**DOC, "pad": "p" * 50_000}
    pid = os.fork()
    if pid == 0:
        _killed_child(path, document, point, fraction)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at {point}"
    if point in ("after-link", "before-unlink", "after-unlink"):
        assert path.read_bytes() == as_written(document)
    else:
        assert not os.path.lexists(path)
    assert (folder / "best.ckpt").read_bytes() == b"weights"
    # a leftover temporary file (SIGKILL runs no cleanup) never blocks the next run
    assert write_sidecar(path, {"second": True}) is (point not in ("after-link", "before-unlink", "after-unlink"))
    assert json.loads(path.read_text("utf-8")) in (document, {"second": True})


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(delay=st.floats(0, 0.03))
def test_a_writer_killed_by_its_parent_at_a_random_time(tmp_path: Path, delay: float) -> None:
    folder = tmp_path / f"t{time.perf_counter_ns()}"
    folder.mkdir()
    path = folder / "best.config.json"
    document = {"model": {"name": "net"}, "pad": ["x" * 1000] * 3000}  # ~3 MB: the write takes a while
    pid = os.fork()
    if pid == 0:
        try:
            write_sidecar(path, document)
        finally:
            os._exit(0)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if os.path.lexists(path):
        assert path.read_bytes() == as_written(document)
    assert all(name == path.name or name.endswith(".tmp") for name in listing(folder))


# ------------------------------------------------------------------------------------------- failures


def test_a_read_only_folder_is_a_clear_error_and_nothing_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "best.ckpt").write_bytes(b"weights")
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a read-only folder is writable anyway")
        with pytest.raises(CheckError, match=r"cannot write best\.config\.json in .*run/checkpoints"):
            write_sidecar(folder / "best.config.json", DOC)
        assert listing(folder) == ["best.ckpt"]
        assert (folder / "best.ckpt").read_bytes() == b"weights"
    finally:
        folder.chmod(0o755)


def test_a_refused_temporary_file_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-only case where root cannot feel it: creating the temporary file is refused."""
    (tmp_path / "best.ckpt").write_bytes(b"weights")

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(write.tempfile, "mkstemp", refused)
    with pytest.raises(CheckError) as info:
        write_sidecar(tmp_path / "best.config.json", DOC)
    assert info.value.message == f"cannot write best.config.json in {tmp_path}: Permission denied"
    assert listing(tmp_path) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"weights")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write.os, "fsync", full)
    with pytest.raises(CheckError, match=r"cannot write best\.config\.json in .*: No space left on device"):
        write_sidecar(tmp_path / "best.config.json", DOC)
    assert listing(tmp_path) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"


def test_a_refused_link_names_the_path_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"weights")

    def refused(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(write.os, "link", refused)
    with pytest.raises(CheckError, match=re.escape(f"cannot write {tmp_path / 'best.config.json'}: Permission denied")):
        write_sidecar(tmp_path / "best.config.json", DOC)
    assert listing(tmp_path) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()], ids=["bytes", "set", "object"])
def test_a_document_json_cannot_hold_is_a_clear_error(tmp_path: Path, value: Any) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"weights")
    with pytest.raises(CheckError, match=r"cannot write best\.config\.json: the config is not JSON data"):
        write_sidecar(tmp_path / "best.config.json", {"model": {"name": "net", "odd": value}})
    assert listing(tmp_path) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"


@pytest.mark.parametrize("code", [errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP])
def test_without_hard_links_the_name_is_created_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(write.os, "link", no_links)
    path = tmp_path / "best.config.json"
    assert write_sidecar(path, DOC) is True
    assert path.read_bytes() == as_written(DOC)
    assert listing(tmp_path) == ["best.config.json"]
    # still never over an existing file, even when it appears after the existence check
    other = tmp_path / "last.config.json"
    monkeypatch.setattr(write.os.path, "lexists", lambda _: False)
    other.write_text("theirs")
    assert write_sidecar(other, DOC) is False
    assert other.read_text() == "theirs"


def test_without_hard_links_a_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    calls = []
    real_fsync = os.fsync

    def fsync_fails_second_time(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the first is the temporary file's, the second the exclusive file's
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    (tmp_path / "best.ckpt").write_bytes(b"weights")
    monkeypatch.setattr(write.os, "link", no_links)
    monkeypatch.setattr(write.os, "fsync", fsync_fails_second_time)
    with pytest.raises(CheckError, match="Input/output error"):
        write_sidecar(tmp_path / "best.config.json", DOC)
    assert listing(tmp_path) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"
