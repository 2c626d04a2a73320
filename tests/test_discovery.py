"""ckptgate.discovery: every checkpoint under outputs/, once, whatever the tree holds."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from ckptgate.discovery import (
    CheckpointRecord,
    Discovery,
    DiscoveryProblem,
    _display,
    discover,
    run_dir_of,
)
from ckptgate.naming import CheckpointKind


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def problems(found: Discovery) -> dict[str, DiscoveryProblem]:
    return {p.path: p for p in found.problems}


def discover_bounded(root: Path, seconds: float = 10.0) -> Discovery:
    """discover() in a thread, so that a walk that loops forever fails the test instead of hanging it."""
    box: list[Discovery | BaseException] = []

    def walk() -> None:
        try:
            box.append(discover(root))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=walk, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"discover() still walking after {seconds} s (a symlink loop followed?)"
    (result,) = box
    if isinstance(result, BaseException):
        raise result
    return result


# ------------------------------------------------------------------------------------------ layouts


def test_nested_runs_and_their_run_folders(tmp_path: Path) -> None:
    touch(tmp_path / "dbnet_20251017_215423" / "checkpoints" / "best.ckpt", b"12345")
    touch(tmp_path / "exp" / "sweep" / "trial_1" / "checkpoints" / "last-v2.ckpt", b"1")
    touch(tmp_path / "loose" / "model.ckpt", b"1")
    touch(tmp_path / "top.ckpt", b"1")
    touch(tmp_path / "checkpoints" / "best.ckpt", b"1")  # a checkpoints/ folder at the top

    found = discover(tmp_path)

    assert found.root == tmp_path
    assert found.problems == []
    by = found.by_relpath()
    assert sorted(by) == [
        "checkpoints/best.ckpt",
        "dbnet_20251017_215423/checkpoints/best.ckpt",
        "exp/sweep/trial_1/checkpoints/last-v2.ckpt",
        "loose/model.ckpt",
        "top.ckpt",
    ]
    run = by["dbnet_20251017_215423/checkpoints/best.ckpt"]
    assert run.path == tmp_path / "dbnet_20251017_215423" / "checkpoints" / "best.ckpt"
    assert run.run_dir == tmp_path / "dbnet_20251017_215423"  # checkpoints/ skipped
    assert run.run_relpath == "dbnet_20251017_215423"
    assert run.run_timestamp == datetime(2025, 10, 17, 21, 54, 23)
    assert run.kind == CheckpointKind("best")
    assert run.stem == "best"
    assert (run.size, run.size_mb) == (5, 5e-6)

    nested = by["exp/sweep/trial_1/checkpoints/last-v2.ckpt"]
    assert (nested.run_relpath, nested.run_dir) == ("exp/sweep/trial_1", tmp_path / "exp/sweep/trial_1")
    assert nested.kind == CheckpointKind("last", 2)
    assert nested.run_timestamp is None

    loose = by["loose/model.ckpt"]  # no checkpoints/ folder: the file's own folder is the run
    assert (loose.run_relpath, loose.run_dir) == ("loose", tmp_path / "loose")
    # at the top, the run folder is the outputs dir itself, never above it
    assert (by["top.ckpt"].run_relpath, by["top.ckpt"].run_dir) == (".", tmp_path)
    assert (by["checkpoints/best.ckpt"].run_relpath, by["checkpoints/best.ckpt"].run_dir) == (".", tmp_path)


@pytest.mark.parametrize("folder", ["checkpoints", "ckpts", "ckpt"])
def test_run_dir_of_skips_the_checkpoint_folder_but_never_leaves_root(tmp_path: Path, folder: str) -> None:
    assert run_dir_of(tmp_path / "run" / folder / "best.ckpt", tmp_path) == tmp_path / "run"
    assert run_dir_of(tmp_path / "run" / "best.ckpt", tmp_path) == tmp_path / "run"
    assert run_dir_of(tmp_path / folder / "best.ckpt", tmp_path) == tmp_path
    assert run_dir_of(tmp_path / "best.ckpt", tmp_path) == tmp_path


def test_lightning_default_layout(tmp_path: Path) -> None:
    touch(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=3.ckpt", b"abc")
    touch(tmp_path / "lightning_logs" / "version_0" / "hparams.yaml", b"model: {}\n")

    (record,) = discover(tmp_path).checkpoints

    assert record.relpath == "lightning_logs/version_0/checkpoints/epoch=0-step=3.ckpt"
    assert record.run_relpath == "lightning_logs/version_0"
    assert record.run_dir == tmp_path / "lightning_logs" / "version_0"
    assert record.kind == CheckpointKind("epoch", None, 0, 3)
    assert record.stem == "epoch=0-step=3"
    assert record.run_timestamp is None


def test_hydra_default_layout_takes_its_timestamp_from_two_levels(tmp_path: Path) -> None:
    touch(tmp_path / "2025-10-17" / "21-54-23" / "checkpoints" / "best.ckpt")

    (record,) = discover(tmp_path).checkpoints

    assert record.relpath == "2025-10-17/21-54-23/checkpoints/best.ckpt"
    assert record.run_relpath == "2025-10-17/21-54-23"
    assert record.run_timestamp == datetime(2025, 10, 17, 21, 54, 23)


def test_folder_named_ckpt_is_recorded_and_not_descended(tmp_path: Path) -> None:
    sharded = tmp_path / "run" / "checkpoints" / "best.ckpt"  # DeepSpeed writes folders named *.ckpt
    touch(sharded / "checkpoint" / "mp_rank_00_model_states.pt", b"x" * 100)
    touch(sharded / "inner.ckpt", b"x")

    found = discover(tmp_path)

    (record,) = found.checkpoints
    assert record.relpath == "run/checkpoints/best.ckpt"
    assert record.is_dir is True
    assert record.size == 0
    assert record.run_relpath == "run"
    assert found.problems == []


def test_sizes_and_mtimes(tmp_path: Path) -> None:
    small = touch(tmp_path / "a" / "best.ckpt", b"x" * 3)
    big = touch(tmp_path / "b" / "best.ckpt", b"x" * 2_500_000)
    os.utime(small, (1_700_000_000, 1_700_000_000))
    os.utime(big, (1_600_000_000.5, 1_600_000_000.5))

    by = discover(tmp_path).by_relpath()

    assert (by["a/best.ckpt"].size, by["a/best.ckpt"].mtime) == (3, 1_700_000_000)
    assert (by["b/best.ckpt"].size, by["b/best.ckpt"].mtime) == (2_500_000, 1_600_000_000.5)
    assert by["b/best.ckpt"].size_mb == pytest.approx(2.5)


def test_only_ckpt_files_and_skipped_folders(tmp_path: Path) -> None:
    touch(tmp_path / "run" / "checkpoints" / "best.ckpt")
    touch(tmp_path / "run" / "checkpoints" / "best.ckpt.tmp")
    touch(tmp_path / "run" / "model.pt")
    touch(tmp_path / "run" / "notes.ckpt.txt")
    touch(tmp_path / ".git" / "objects" / "stale.ckpt")
    touch(tmp_path / "pkg" / "__pycache__" / "x.ckpt")

    assert [c.relpath for c in discover(tmp_path).checkpoints] == ["run/checkpoints/best.ckpt"]


def test_order_is_sorted_and_deterministic(tmp_path: Path) -> None:
    names = [
        "z/best.ckpt",
        "a/b/last.ckpt",
        "a/best.ckpt",
        "B/best.ckpt",
        "a-b/best.ckpt",
        "m/epoch=1-step=2.ckpt",
    ]
    for name in reversed(names):
        touch(tmp_path / name)
    os.symlink("nowhere", tmp_path / "zz_broken")
    os.symlink("nowhere", tmp_path / "aa_broken")

    first, second = discover(tmp_path), discover(tmp_path)

    relpaths = [c.relpath for c in first.checkpoints]
    assert relpaths == sorted(names)
    assert first.checkpoints == second.checkpoints
    assert [p.path for p in first.problems] == ["aa_broken", "zz_broken"]
    assert first.problems == second.problems


def test_relative_root_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "outputs" / "run" / "best.ckpt")
    monkeypatch.chdir(tmp_path)

    found = discover(Path("outputs"))

    assert found.root == tmp_path / "outputs"
    (record,) = found.checkpoints
    assert record.path == tmp_path / "outputs" / "run" / "best.ckpt"
    assert record.path.is_absolute() and record.run_dir.is_absolute()


def test_outputs_dir_missing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope")
    os.symlink("nowhere", tmp_path / "dangling")
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "dangling")


def test_outputs_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    touch(tmp_path / "outputs", b"not a folder")
    with pytest.raises(NotADirectoryError):
        discover(tmp_path / "outputs")
    assert (tmp_path / "outputs").read_bytes() == b"not a folder"


def test_empty_outputs_dir(tmp_path: Path) -> None:
    found = discover(tmp_path)
    assert (found.checkpoints, found.problems) == ([], [])


# ----------------------------------------------------------------------------------------- symlinks


def test_symlinked_checkpoint_file_is_kept_with_its_target(tmp_path: Path) -> None:
    real = touch(tmp_path / "run" / "checkpoints" / "epoch=3-step=9.ckpt", b"x" * 7)
    os.symlink("epoch=3-step=9.ckpt", tmp_path / "run" / "checkpoints" / "best.ckpt")
    outside = touch(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "weights.ckpt", b"y" * 11)
    (tmp_path / "imported").mkdir()
    os.symlink(outside, tmp_path / "imported" / "last.ckpt")

    found = discover(tmp_path)

    by = found.by_relpath()
    assert sorted(by) == [
        "imported/last.ckpt",
        "run/checkpoints/best.ckpt",
        "run/checkpoints/epoch=3-step=9.ckpt",
    ]
    link = by["run/checkpoints/best.ckpt"]
    assert link.symlink_target == "epoch=3-step=9.ckpt"
    assert link.path == tmp_path / "run" / "checkpoints" / "best.ckpt"  # the user's name, not resolved
    assert link.kind == CheckpointKind("best")
    assert (link.size, link.mtime) == (7, real.stat().st_mtime)  # the target's
    assert by["run/checkpoints/epoch=3-step=9.ckpt"].symlink_target is None
    assert by["imported/last.ckpt"].symlink_target == str(outside)
    assert by["imported/last.ckpt"].size == 11
    assert found.problems == []


@pytest.mark.parametrize("alias_name", ["aaa_alias", "zzz_alias"])
def test_symlinked_folder_alias_is_scanned_once_under_its_real_path(tmp_path: Path, alias_name: str) -> None:
    touch(tmp_path / "mmm_real" / "checkpoints" / "best.ckpt")
    os.symlink("mmm_real", tmp_path / alias_name)

    found = discover_bounded(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["mmm_real/checkpoints/best.ckpt"]
    problem = problems(found)[alias_name]
    assert problem.kind == "alias"
    assert "mmm_real" in problem.message and "not scanned twice" in problem.message
    assert str(problem) == f"{alias_name}: {problem.message}"


def test_symlinked_folder_outside_root_is_scanned_under_its_link_name(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    outside = tmp_path / "archive"
    touch(outside / "run" / "checkpoints" / "best.ckpt", b"z")
    root.mkdir()
    os.symlink(outside, root / "old_runs")
    os.symlink(outside, root / "zz_second_link")

    found = discover_bounded(root)

    (record,) = found.checkpoints
    assert record.relpath == "old_runs/run/checkpoints/best.ckpt"
    assert record.run_dir == root / "old_runs" / "run"
    assert record.run_relpath == "old_runs/run"
    assert [(p.path, p.kind) for p in found.problems] == [("zz_second_link", "alias")]


def test_symlink_to_an_ancestor_is_a_reported_loop_not_a_hang(tmp_path: Path) -> None:
    touch(tmp_path / "run" / "checkpoints" / "best.ckpt")
    os.symlink("..", tmp_path / "run" / "up")
    os.symlink(tmp_path, tmp_path / "run" / "checkpoints" / "root_again")

    found = discover_bounded(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["run/checkpoints/best.ckpt"]
    by = problems(found)
    assert {path: p.kind for path, p in by.items()} == {
        "run/checkpoints/root_again": "symlink-loop",
        "run/up": "symlink-loop",
    }
    assert by["run/up"].message == "symlink loop -> ..; not followed"


def test_self_referencing_and_cyclic_links_are_loops(tmp_path: Path) -> None:
    touch(tmp_path / "run" / "best.ckpt")
    os.symlink("self.ckpt", tmp_path / "self.ckpt")
    os.symlink("ping", tmp_path / "pong")
    os.symlink("pong", tmp_path / "ping")

    found = discover_bounded(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["run/best.ckpt"]
    assert {p.path: p.kind for p in found.problems} == {
        "ping": "symlink-loop",
        "pong": "symlink-loop",
        "self.ckpt": "symlink-loop",
    }
    assert "self.ckpt" in problems(found)["self.ckpt"].message


def test_broken_link_is_reported(tmp_path: Path) -> None:
    touch(tmp_path / "run" / "checkpoints" / "last.ckpt")
    os.symlink("epoch=9-step=99.ckpt", tmp_path / "run" / "checkpoints" / "best.ckpt")  # deleted by top_k

    found = discover(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["run/checkpoints/last.ckpt"]
    (problem,) = found.problems
    assert (problem.path, problem.kind) == ("run/checkpoints/best.ckpt", "broken-symlink")
    assert problem.message == "broken symlink -> epoch=9-step=99.ckpt"


def test_broken_link_with_undecodable_target_has_a_printable_message(tmp_path: Path) -> None:
    os.symlink(b"gone\xff.ckpt", os.path.join(os.fsencode(tmp_path), b"best.ckpt"))

    (problem,) = discover(tmp_path).problems

    assert problem.kind == "broken-symlink"
    assert problem.message == "broken symlink -> gone\\xff.ckpt"
    str(problem).encode("utf-8")  # printable: no lone surrogates


# ----------------------------------------------------------------------------------- odd folders/names


def test_unreadable_folder_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    touch(tmp_path / "locked" / "checkpoints" / "best.ckpt")
    touch(tmp_path / "open" / "checkpoints" / "best.ckpt")
    locked = tmp_path / "locked"
    locked.chmod(0)
    try:
        readable_anyway = True
        try:
            os.listdir(locked)
        except PermissionError:
            readable_anyway = False
        if readable_anyway:
            pytest.skip(
                f"euid {os.geteuid()} (root: {os.geteuid() == 0}) can still list a chmod 000 folder, so "
                "no folder is unreadable here; test_unreadable_folder_simulated covers the handling"
            )
        found = discover(tmp_path)
    finally:
        locked.chmod(0o755)

    assert [c.relpath for c in found.checkpoints] == ["open/checkpoints/best.ckpt"]
    (problem,) = found.problems
    assert (problem.path, problem.kind) == ("locked", "unreadable")
    assert "cannot list folder" in problem.message
    assert (tmp_path / "locked" / "checkpoints" / "best.ckpt").exists()  # nothing touched


def test_non_utf8_name_is_found_reported_and_printable(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.makedirs(os.path.join(base, b"run\xff", b"checkpoints"))
    fd = os.open(os.path.join(base, b"run\xff", b"checkpoints", b"best.ckpt"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"1234")
    os.close(fd)
    touch(tmp_path / "plain" / "best.ckpt")

    found = discover(tmp_path)

    by = found.by_relpath()
    assert len(by) == 2
    odd = next(c for c in found.checkpoints if c.relpath != "plain/best.ckpt")
    # found, with a path that opens the real file
    assert os.fsencode(odd.path) == os.path.join(base, b"run\xff", b"checkpoints", b"best.ckpt")
    assert odd.path.read_bytes() == b"1234"
    assert odd.size == 4
    assert odd.kind == CheckpointKind("best")
    assert odd.run_dir == odd.path.parent.parent
    # its id prints with the byte escaped
    assert _display(odd.relpath) == "run\\xff/checkpoints/best.ckpt"
    _display(odd.relpath).encode("utf-8")
    (problem,) = found.problems
    assert (problem.path, problem.kind) == ("run\\xff", "non-utf8-name")
    assert "not valid UTF-8" in problem.message
    str(problem).encode("utf-8")


def test_display_leaves_valid_names_alone() -> None:
    assert _display("run/é/best.ckpt") == "run/é/best.ckpt"
    assert _display("a\udcffb") == "a\\xffb"


def test_record_is_frozen() -> None:
    record = CheckpointRecord(
        path=Path("/o/x.ckpt"),
        relpath="x.ckpt",
        run_dir=Path("/o"),
        run_relpath=".",
        run_timestamp=None,
        kind=CheckpointKind("other"),
        size=1,
        mtime=0.0,
    )
    with pytest.raises(AttributeError):
        record.size = 2  # type: ignore[misc]
    assert (record.stem, record.is_dir, record.symlink_target) == ("x", False, None)


def test_unreadable_folder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same case where permissions cannot produce it (root): listing one folder fails with EACCES."""
    touch(tmp_path / "locked" / "checkpoints" / "best.ckpt")
    touch(tmp_path / "open" / "checkpoints" / "best.ckpt")
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    found = discover(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["open/checkpoints/best.ckpt"]
    (problem,) = found.problems
    assert (problem.path, problem.kind) == ("locked", "unreadable")
    assert problem.message == "cannot list folder: Permission denied"


def test_unreadable_root_is_a_problem_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def scandir(path: os.PathLike[str]) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", scandir)

    found = discover(tmp_path)

    assert found.checkpoints == []
    assert [(p.path, p.kind) for p in found.problems] == [(".", "unreadable")]


def test_a_fifo_named_ckpt_is_reported_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "pipe.ckpt")
    (tmp_path / "run" / "best.ckpt").write_bytes(b"x")
    found = discover(tmp_path)
    assert [c.relpath for c in found.checkpoints] == ["run/best.ckpt"]
    assert [(p.path, p.kind) for p in found.problems] == [("run/pipe.ckpt", "not-a-file")]
