"""ckptgate.discovery: every checkpoint under outputs/, once, whatever the tree holds."""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import torch
from ckptgate import results
from ckptgate.discovery import (
    CheckpointRecord,
    Discovery,
    DiscoveryProblem,
    _display,
    check_patterns,
    discover,
    pattern_suffix,
    run_dir_of,
    sharded_message,
    stem_of,
)
from ckptgate.naming import CheckpointKind

from conftest import model_section


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


def test_a_folder_named_like_a_checkpoint_is_entered_like_any_folder(tmp_path: Path) -> None:
    """A run folder named ``run_x.ckpt/`` is no checkpoint: the checkpoints inside it are found and checked."""
    touch(tmp_path / "run_x.ckpt" / "checkpoints" / "best.ckpt", b"x" * 3)
    touch(tmp_path / "run_x.ckpt" / "checkpoints" / "last.ckpt", b"x")
    touch(tmp_path / "run_x.ckpt" / "lightning_logs" / "version_0" / "hparams.yaml", b"model: {}\n")

    found = discover(tmp_path)

    assert [(c.relpath, c.run_relpath, c.is_dir) for c in found.checkpoints] == [
        ("run_x.ckpt/checkpoints/best.ckpt", "run_x.ckpt", False),
        ("run_x.ckpt/checkpoints/last.ckpt", "run_x.ckpt", False),
    ]
    assert found.checkpoints[0].run_dir == tmp_path / "run_x.ckpt"
    assert found.problems == []


def test_a_folder_named_like_a_checkpoint_that_holds_none_is_reported(tmp_path: Path) -> None:
    (tmp_path / "run" / "empty.ckpt").mkdir(parents=True)
    touch(tmp_path / "run" / "notes.ckpt" / "README.md", b"not a checkpoint")
    touch(tmp_path / "run" / "best.ckpt", b"x")

    found = discover(tmp_path)

    assert [c.relpath for c in found.checkpoints] == ["run/best.ckpt"]
    assert [(p.path, p.kind) for p in found.problems] == [
        ("run/empty.ckpt", "not-a-checkpoint"),
        ("run/notes.ckpt", "not-a-checkpoint"),
    ]
    assert "neither a DeepSpeed nor a torch.distributed sharded checkpoint" in found.problems[0].message


def deepspeed_folder(path: Path, *, dp: int = 2, tag: str = "checkpoint", zero3: bool = False) -> Path:
    """A DeepSpeed checkpoint as Lightning's DeepSpeedStrategy saves it to ``path`` (tag ``checkpoint``), with
    real torch.save files for shards."""
    shards = path / tag
    shards.mkdir(parents=True)
    (path / "latest").write_text(tag)
    (path / "zero_to_fp32.py").write_text("# DeepSpeed's consolidation script\n")
    models = [f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in range(dp)] if zero3 else []
    for name in models or ["mp_rank_00_model_states.pt"]:
        torch.save({"module": None, "epoch": 1}, shards / name)
    for rank in range(dp):
        torch.save(
            {"optimizer_state_dict": {"zero_stage": 3 if zero3 else 2}},
            shards / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
        )
    return path


def dcp_folder(path: Path, *, lightning: bool = True) -> Path:
    """A real torch.distributed checkpoint (``.metadata`` + ``*.distcp``), with Lightning's ``meta.pt`` as its FSDP
    and ModelParallel strategies write it."""
    import torch.distributed.checkpoint as dcp

    path.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is unavailable or uninitialized": one process here
        dcp.save({"model": {"w": torch.ones(3, 3)}, "optimizer_0": {"step": torch.zeros(1)}}, checkpoint_id=path)
    if lightning:
        torch.save({"epoch": 1, "hyper_parameters": {"width": 4}}, path / "meta.pt")
    return path


def test_a_deepspeed_folder_is_one_checkpoint_with_its_layout(tmp_path: Path) -> None:
    sharded = deepspeed_folder(tmp_path / "run" / "checkpoints" / "epoch=3-step=40.ckpt")
    touch(sharded / "inner.ckpt", b"x")  # never looked at: the folder is one checkpoint

    found = discover(tmp_path)

    (record,) = found.checkpoints
    assert found.problems == []
    assert (record.relpath, record.run_relpath, record.stem) == (
        "run/checkpoints/epoch=3-step=40.ckpt",
        "run",
        "epoch=3-step=40",
    )
    assert (record.is_dir, record.layout, record.kind) == (True, "deepspeed", CheckpointKind("epoch", None, 3, 40))
    shards = record.shards
    assert shards is not None and shards.ok
    assert (shards.tag, shards.lightning) == ("checkpoint", True)
    assert shards.model_files == ("checkpoint/mp_rank_00_model_states.pt",)
    assert shards.optimizer_files == (
        "checkpoint/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "checkpoint/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
    )
    assert shards.metadata == ("latest", "zero_to_fp32.py")
    assert record.size == sum(p.stat().st_size for p in sharded.rglob("*") if p.is_file())
    assert record.mtime == max(p.stat().st_mtime for p in sharded.rglob("*") if p.is_file())
    message = sharded_message(record)
    assert message.startswith(
        "is a DeepSpeed sharded checkpoint written by Lightning (tag `checkpoint`: 1 model-states file and 2 ZeRO "
        "optimizer shards, all present and readable): sharded checkpoints are not loaded yet; convert it into one "
        "file and check that: python -c 'from lightning.pytorch.utilities.deepspeed import "
        "convert_zero_checkpoint_to_fp32_state_dict as convert; convert("
    )
    assert f'"{sharded}", "{sharded.with_name("epoch=3-step=40.consolidated.ckpt")}")' in message
    assert sharded_message(record.path) == message  # from the path alone, as the weights check has it


def test_a_deepspeed_folder_with_missing_or_broken_shards_says_which(tmp_path: Path) -> None:
    sharded = deepspeed_folder(tmp_path / "best.ckpt", dp=3, zero3=True)
    (sharded / "checkpoint" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    model = sharded / "checkpoint" / "zero_pp_rank_2_mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:100])  # an interrupted copy
    (sharded / "checkpoint" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"")

    (record,) = discover(tmp_path).checkpoints

    shards = record.shards
    assert shards is not None and not shards.ok
    assert shards.missing == ("checkpoint/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",)
    assert shards.unreadable == (
        "checkpoint/zero_pp_rank_0_mp_rank_00_model_states.pt (empty, 0 bytes)",
        "checkpoint/zero_pp_rank_2_mp_rank_00_model_states.pt (truncated or corrupt: 100 bytes and no zip central "
        "directory)",
    )
    assert sharded_message(record) == (
        "is a DeepSpeed sharded checkpoint written by Lightning (tag `checkpoint`: 3 model-states files and 2 ZeRO "
        "optimizer shards) that cannot be used: missing checkpoint/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt; "
        "unreadable checkpoint/zero_pp_rank_0_mp_rank_00_model_states.pt (empty, 0 bytes), "
        "checkpoint/zero_pp_rank_2_mp_rank_00_model_states.pt (truncated or corrupt: 100 bytes and no zip central "
        "directory)"
    )


def test_a_deepspeed_folder_without_latest_or_shards_is_still_one_checkpoint(tmp_path: Path) -> None:
    no_latest = deepspeed_folder(tmp_path / "a.ckpt", dp=1, tag="global_step7")
    (no_latest / "latest").unlink()
    (tmp_path / "b.ckpt").mkdir()
    (tmp_path / "b.ckpt" / "zero_to_fp32.py").write_text("#")  # the save began, nothing else came
    (tmp_path / "b.ckpt" / "latest").write_text("checkpoint")

    by = discover(tmp_path).by_relpath()

    a, b = by["a.ckpt"].shards, by["b.ckpt"].shards
    assert a is not None and b is not None
    assert (a.tag, a.lightning, a.missing) == (
        "global_step7",
        False,
        ("latest (names the tag folder `global_step7`: DeepSpeed and Lightning's converter read it)",),
    )
    assert b.missing == ("checkpoint/ (the tag folder `latest` names)",)
    assert b.model_files == b.optimizer_files == ()
    assert "that cannot be used: missing checkpoint/ (the tag folder `latest` names)" in sharded_message(by["b.ckpt"])


def test_a_deepspeed_tag_folder_named_like_a_checkpoint_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw DeepSpeed (no Lightning) saved into ``checkpoints/global_step5.pt/``: the shards at its top."""
    shards = tmp_path / "run" / "checkpoints" / "global_step5.pt"
    shards.mkdir(parents=True)
    torch.save({"module": None}, shards / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, shards / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    monkeypatch.chdir(tmp_path)

    (record,) = discover(tmp_path, patterns=["*.pt"]).checkpoints

    assert (record.relpath, record.layout, record.stem) == (
        "run/checkpoints/global_step5.pt",
        "deepspeed",
        "global_step5",
    )
    assert record.shards is not None and record.shards.ok and record.shards.tag is None
    assert record.shards.model_files == ("mp_rank_00_model_states.pt",)
    assert sharded_message(record).endswith(
        "convert it into one file and check that: echo global_step5.pt > run/checkpoints/latest && python -c 'from "
        "lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict as convert; "
        'convert("run/checkpoints", "run/checkpoints/global_step5.consolidated.pt")\''
    )


def test_a_torch_distributed_folder_is_one_checkpoint_with_its_layout(tmp_path: Path) -> None:
    sharded = dcp_folder(tmp_path / "run" / "checkpoints" / "last.ckpt")
    plain = dcp_folder(tmp_path / "run" / "checkpoints" / "best.ckpt", lightning=False)

    found = discover(tmp_path)

    assert found.problems == []
    by = found.by_relpath()
    record = by["run/checkpoints/last.ckpt"]
    assert (record.is_dir, record.layout, record.stem, record.kind) == (
        True,
        "distributed",
        "last",
        CheckpointKind("last"),
    )
    shards = record.shards
    assert shards is not None and shards.ok and shards.lightning
    assert shards.model_files == tuple(sorted(p.name for p in sharded.glob("*.distcp"))) == ("__0_0.distcp",)
    assert shards.metadata == (".metadata", "meta.pt")
    assert record.size == sum(p.stat().st_size for p in sharded.iterdir())
    assert sharded_message(record) == (
        "is a torch.distributed (FSDP) sharded checkpoint written by Lightning (.metadata, meta.pt and 1 .distcp "
        "shard, all present and readable): sharded checkpoints are not loaded yet; convert it into one file and "
        f"check that: python -m lightning.fabric.utilities.consolidate_checkpoint {sharded} --output_file "
        f"{sharded.with_name('last.consolidated.ckpt')}"
    )
    other = by["run/checkpoints/best.ckpt"]
    assert other.shards is not None and other.shards.ok and not other.shards.lightning
    assert sharded_message(other).startswith(
        "is a torch.distributed (FSDP) sharded checkpoint without Lightning's meta.pt (.metadata and 1 .distcp shard, "
        "all present and readable)"
    )
    assert sharded_message(other).endswith(
        f"python -m torch.distributed.checkpoint.format_utils dcp_to_torch {plain} "
        f"{plain.with_name('best.consolidated.ckpt')}"
    )


def test_a_torch_distributed_folder_names_the_shards_its_metadata_lists(tmp_path: Path) -> None:
    sharded = dcp_folder(tmp_path / "a.ckpt")
    (sharded / "__0_0.distcp").rename(sharded / "__1_0.distcp")  # not the shard the index lists
    cut = dcp_folder(tmp_path / "b.ckpt")
    index = (cut / ".metadata").read_bytes()
    (cut / ".metadata").write_bytes(index[: len(index) // 2])
    (tmp_path / "c.ckpt").mkdir()
    (tmp_path / "c.ckpt" / "meta.pt").write_bytes(b"")  # Lightning's rank 0 wrote an empty meta.pt, nothing else

    by = discover(tmp_path).by_relpath()

    a, b, c = (by[f"{name}.ckpt"].shards for name in "abc")
    assert a is not None and b is not None and c is not None
    assert (a.missing, a.unreadable) == (("__0_0.distcp (listed in .metadata)",), ())
    assert b.missing == ()  # the index cannot be read; the shards' numbering is whole
    (why,) = b.unreadable
    assert why.startswith(".metadata (not a whole pickle as torch.distributed.checkpoint writes it: ")
    assert c.layout == "distributed" and c.missing == (
        ".metadata (torch.distributed.checkpoint's index of the shards: nothing loads without it)",
    )
    assert c.unreadable == ("meta.pt (empty, 0 bytes)",)
    assert "that cannot be used: missing .metadata" in sharded_message(by["c.ckpt"])


@pytest.mark.parametrize("layout", ["deepspeed", "distributed"])
def test_a_symlink_to_a_sharded_folder_is_a_checkpoint_of_the_same_files(tmp_path: Path, layout: str) -> None:
    real = tmp_path / "run" / "checkpoints" / "epoch=3-step=40.ckpt"
    deepspeed_folder(real) if layout == "deepspeed" else dcp_folder(real)
    (real.parent / "last.ckpt").symlink_to("epoch=3-step=40.ckpt", target_is_directory=True)

    found = discover(tmp_path)

    by = found.by_relpath()
    link = by["run/checkpoints/last.ckpt"]
    assert (link.layout, link.symlink_target, link.size) == (
        layout,
        "epoch=3-step=40.ckpt",
        by["run/checkpoints/epoch=3-step=40.ckpt"].size,
    )
    assert link.same_file_as == "run/checkpoints/epoch=3-step=40.ckpt"
    assert by["run/checkpoints/epoch=3-step=40.ckpt"].same_file_as is None
    assert found.problems == []


def test_sharded_checkpoints_no_pattern_names_are_reported_and_their_shards_never_checked_alone(tmp_path: Path) -> None:
    deepspeed_folder(tmp_path / "run" / "checkpoints" / "best.ckpt")
    dcp_folder(tmp_path / "run" / "step_100")
    touch(tmp_path / "run" / "export.pt", b"x")

    found = discover(tmp_path, patterns=("*.pt",))

    assert [c.relpath for c in found.checkpoints] == ["run/export.pt"]  # not mp_rank_00_model_states.pt, meta.pt
    by = problems(found)
    assert {path: p.kind for path, p in by.items()} == {
        "run/checkpoints/best.ckpt/checkpoint": "sharded-unmatched",
        "run/step_100": "sharded-unmatched",
    }
    assert by["run/checkpoints/best.ckpt/checkpoint"].message == (
        "a DeepSpeed sharded checkpoint (the tag folder of best.ckpt/) whose folder name matches none of the "
        "patterns (*.pt): not checked, and its shard files are not checkpoints by themselves; add a pattern that "
        "matches 'best.ckpt' to check it"
    )
    assert "torch.distributed sharded checkpoint whose folder name" in by["run/step_100"].message
    assert "matches 'step_100'" in by["run/step_100"].message


def test_the_gate_checks_checkpoints_inside_a_folder_named_like_one_and_gives_a_sharded_folder_one_verdict(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("run_x.ckpt/checkpoints/best.ckpt", {"model": model_section()})
    gate_tree("run_x.ckpt/checkpoints/last.ckpt", {"model": model_section()})
    sharded = deepspeed_folder(pytester.path / "outputs" / "ds_run" / "checkpoints" / "last.ckpt")
    (sharded.parent / "last.config.json").write_text(json.dumps({"model": model_section()}))

    result = pytester.runpytest("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "--ckpt-json", "r.json")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    by_path = {entry["path"]: entry for entry in results.load(pytester.path / "r.json")["checkpoints"]}
    assert {path: entry["status"] for path, entry in by_path.items()} == {
        "ds_run/checkpoints/last.ckpt": "unusable",
        "run_x.ckpt/checkpoints/best.ckpt": "usable",
        "run_x.ckpt/checkpoints/last.ckpt": "usable",
    }
    assert by_path["run_x.ckpt/checkpoints/best.ckpt"]["config_source"] == (
        "sidecar: run_x.ckpt/checkpoints/best.config.json"
    )
    deepspeed = by_path["ds_run/checkpoints/last.ckpt"]
    assert deepspeed["config_source"] == "sidecar: ds_run/checkpoints/last.config.json"
    assert deepspeed["root_cause"]["check"] == "weights_load"  # one verdict for the folder, never loaded
    message = deepspeed["root_cause"]["message"]
    assert message.startswith("ds_run/checkpoints/last.ckpt is a DeepSpeed sharded checkpoint written by Lightning")
    assert "sharded checkpoints are not loaded yet; convert it into one file" in message
    assert deepspeed["size_bytes"] == sum(p.stat().st_size for p in sharded.rglob("*") if p.is_file())


@pytest.mark.parametrize("layout", ["deepspeed", "distributed"])
def test_an_outputs_dir_that_is_itself_a_sharded_checkpoint_says_so(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "best.ckpt"
    deepspeed_folder(root) if layout == "deepspeed" else dcp_folder(root)

    found = discover(root, patterns=("*.pt",))

    assert found.checkpoints == []
    (problem,) = found.problems
    assert (problem.path, problem.kind) == ("checkpoint" if layout == "deepspeed" else ".", "sharded-unmatched")
    assert "the outputs dir itself is a" in problem.message
    assert "point --ckpt-outputs at the folder that holds it" in problem.message


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


def test_patterns_find_every_name_a_team_saves(tmp_path: Path) -> None:
    touch(tmp_path / "run" / "checkpoints" / "best.pt", b"x")
    touch(tmp_path / "run" / "checkpoints" / "last-v1.pth", b"x")
    touch(tmp_path / "run" / "checkpoints" / "model_best.pth.tar", b"x")
    touch(tmp_path / "run" / "checkpoints" / "epoch=2-step=9.ckpt", b"x")
    touch(tmp_path / "run" / "checkpoints" / "best.config.json", b"{}")
    touch(tmp_path / "run" / "checkpoints" / "best.pt.tmp", b"x")

    found = discover(tmp_path, patterns=["*.pt *.pth", "*.pth.tar"])  # one ini line of two, and another

    assert found.patterns == ("*.pt", "*.pth", "*.pth.tar")
    by = found.by_relpath()
    assert sorted(by) == [
        "run/checkpoints/best.pt",
        "run/checkpoints/last-v1.pth",
        "run/checkpoints/model_best.pth.tar",
    ]
    assert [(c.stem, c.suffix, c.kind) for c in found.checkpoints] == [
        ("best", ".pt", CheckpointKind("best")),
        ("last-v1", ".pth", CheckpointKind("last", 1)),
        ("model_best", ".pth.tar", CheckpointKind("other")),
    ]
    assert all(c.run_relpath == "run" for c in found.checkpoints)
    assert [c.relpath for c in discover(tmp_path).checkpoints] == ["run/checkpoints/epoch=2-step=9.ckpt"]


def test_patterns_that_cannot_work_are_refused() -> None:
    assert check_patterns("*.pt  *.pth") == ("*.pt", "*.pth")
    assert check_patterns(["*.ckpt", "*.ckpt"]) == ("*.ckpt",)
    with pytest.raises(ValueError, match="holds a path: patterns match file and folder names"):
        check_patterns(["checkpoints/*.pt"])
    with pytest.raises(ValueError, match="no checkpoint pattern given"):
        check_patterns(["  "])
    with pytest.raises(ValueError, match="no checkpoint pattern given"):
        discover(Path("."), patterns=())


@pytest.mark.parametrize(
    ("pattern", "name", "suffix", "stem"),
    [
        ("*.ckpt", "best-v2.ckpt", ".ckpt", "best-v2"),
        ("*.pt", "best.pt", ".pt", "best"),
        ("*.pth.tar", "checkpoint.pth.tar", ".pth.tar", "checkpoint"),
        ("model_*", "model_7.bin", "", "model_7"),
        ("best.pt", "best.pt", "", "best"),
        ("*.[pP][tT]", "last.PT", "", "last"),
        ("*.ckpt", "epoch=0.5-step=3.ckpt", ".ckpt", "epoch=0.5-step=3"),
    ],
)
def test_the_stem_strips_what_the_pattern_names(pattern: str, name: str, suffix: str, stem: str) -> None:
    assert pattern_suffix(pattern) == suffix
    assert stem_of(name, suffix) == stem


def test_each_file_is_one_file_however_many_names_lead_to_it(tmp_path: Path) -> None:
    real = touch(tmp_path / "run" / "checkpoints" / "epoch=2-step=9.ckpt", b"x" * 7)
    (tmp_path / "deploy").mkdir()
    os.symlink("../run/checkpoints/epoch=2-step=9.ckpt", tmp_path / "deploy" / "prod.ckpt")
    os.symlink("prod.ckpt", tmp_path / "deploy" / "a_staging.ckpt")  # a link to a link
    os.link(real, tmp_path / "run" / "checkpoints" / "copy.ckpt")
    outside = touch(tmp_path.parent / f"{tmp_path.name}_archive" / "old.ckpt", b"y")
    os.symlink(outside, tmp_path / "deploy" / "old.ckpt")

    by = discover(tmp_path).by_relpath()

    assert {relpath: record.same_file_as for relpath, record in by.items()} == {
        "deploy/a_staging.ckpt": "run/checkpoints/copy.ckpt",
        "deploy/old.ckpt": None,  # one name of a file outside: counted once already
        "deploy/prod.ckpt": "run/checkpoints/copy.ckpt",
        "run/checkpoints/copy.ckpt": None,  # the real names first, then by path
        "run/checkpoints/epoch=2-step=9.ckpt": "run/checkpoints/copy.ckpt",
    }
    assert {record.size for relpath, record in by.items() if relpath != "deploy/old.ckpt"} == {7}


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
    assert found.problems[0].message == "named *.ckpt but not a file (a FIFO, socket or device)"


def test_the_patterns_option_and_its_ini_twin_choose_what_the_gate_checks(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """``--ckpt-pattern`` (repeatable) and ``ckpt_patterns`` (an ini line of several) reach discovery: a team's
    ``.pt`` and ``.pth`` exports are checked, their sidecars found by the stem the pattern leaves."""
    gate_tree("run/checkpoints/best.ckpt", {"model": model_section()})
    export = gate_tree("run/export/model.pt", None)
    export.with_name("model.config.json").write_text(json.dumps({"model": model_section()}))
    gate_tree("run/export/weights.pth", None)  # no config of its own: unusable

    def statuses(*args: str) -> dict[str, str]:
        pytester.runpytest("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "--ckpt-json", "r.json", *args)
        return {e["path"]: e["status"] for e in results.load(pytester.path / "r.json")["checkpoints"]}

    assert statuses() == {"run/checkpoints/best.ckpt": "usable"}
    assert statuses("--ckpt-pattern", "*.pt") == {"run/export/model.pt": "usable"}
    both = {"run/export/model.pt": "usable", "run/export/weights.pth": "unusable"}
    assert statuses("--ckpt-pattern", "*.pt", "--ckpt-pattern", "*.pth") == both
    pytester.makeini(
        "[pytest]\nckpt_model_factory = mymodels:build\naddopts = -p no:cacheprovider\nckpt_patterns = *.ckpt *.pt\n"
    )
    assert statuses() == {"run/checkpoints/best.ckpt": "usable", "run/export/model.pt": "usable"}


def test_a_pattern_that_names_a_path_is_a_usage_error(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("run/checkpoints/best.ckpt", {"model": model_section()})

    result = pytester.runpytest("--pyargs", "ckptgate.checks", "--ckpt-pattern", "run/*.ckpt")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*checkpoint pattern 'run/*.ckpt' holds a path*--ckpt-select*"])
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()
