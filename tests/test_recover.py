"""ckptgate.recovery.recover: gather -> rank -> verify -> write, on small generated trees.

A sidecar is written only for a checkpoint with no config at all, only from a candidate whose model loads the
weights strictly, from the strongest evidence, never when equally strong proven candidates disagree; every
other file stays byte for byte as it was.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate import __version__, configs
from ckptgate.configs import AmbiguousConfig
from ckptgate.gate import Gate
from ckptgate.recovery import RecoverySettings, default_wandb_dir, recover
from ckptgate.recovery.evidence import Source, Tier
from ckptgate.recovery.recover import gather_sources, missing_configs, recover_one
from test_recovery_verify import Family, family_fixture, section

family = pytest.fixture(family_fixture, name="family")

STAMP = datetime(2025, 10, 17, 21, 54, 23)
RUN = "ocr_training-dbnet-unet-resnet18_tiny-unknown_training_20251017_215423"
BEST = f"{RUN}/checkpoints/best.ckpt"
WANDB_RUN = "run-20251017_215424-j8v6ba0v"
WANDB_LABEL = f"wandb {WANDB_RUN} (files/config.yaml)"


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def wandb_run(
    wandb_dir: Path,
    name: str,
    config: dict[str, Any],
    *,
    started_at: str | None = None,
    args: list[str] | None = None,
) -> Path:
    """A wandb run folder in the older config.yaml layout (``{desc, value}``), with metadata when given."""
    files = wandb_dir / name / "files"
    files.mkdir(parents=True)
    wrapped = {"wandb_version": 1, "_wandb": {"desc": None, "value": {"cli_version": "0.15.12"}}}
    wrapped.update({key: {"desc": None, "value": value} for key, value in config.items()})
    (files / "config.yaml").write_text(yaml.safe_dump(wrapped))
    metadata: dict[str, Any] = {"program": "train.py", "args": args or []}
    if started_at is not None:
        metadata["startedAt"] = started_at
    (files / "wandb-metadata.json").write_text(json.dumps(metadata))
    return files / "config.yaml"


class Tree:
    """``<tmp>/outputs`` + ``<tmp>/wandb``, checkpoints made by the family, and a gate over them."""

    def __init__(self, tmp_path: Path, family: Family) -> None:
        self.root, self.family = tmp_path, family
        self.outputs = tmp_path / "outputs"
        self.wandb = tmp_path / "wandb"
        self.outputs.mkdir()
        self.wandb.mkdir()

    def checkpoint(self, relpath: str = BEST, **kwargs: Any) -> Path:
        return self.family.checkpoint(self.outputs / relpath, **kwargs)

    def run(self, name: str = WANDB_RUN, model: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        config = {"model": model or section(), "preprocessing": {"size": [64, 64]}, "optimizer": {"lr": 0.01}}
        return wandb_run(self.wandb, name, config, **kwargs)

    def gate(self, **settings: Any) -> Gate:
        return self.family.gate(self.outputs, **settings)

    def settings(self, **kwargs: Any) -> RecoverySettings:
        found = default_wandb_dir(self.outputs, self.family.root)
        return RecoverySettings(wandb_dirs=(found,) if found else (), **kwargs)

    def recover(self, gate: Gate | None = None, **kwargs: Any) -> list[Any]:
        return recover(gate or self.gate(), self.settings(**kwargs))

    def recover_one(self, relpath: str = BEST, gate: Gate | None = None, **kwargs: Any) -> Any:
        gate = gate or self.gate()
        ckpt = gate.discovery().by_relpath()[relpath]
        return recover_one(gate, ckpt, gather_sources(self.outputs, (self.wandb,)), self.settings(**kwargs))

    def sidecar(self, relpath: str = BEST) -> Path:
        return (self.outputs / relpath).with_name(Path(relpath).name.removesuffix(".ckpt") + ".config.json")


@pytest.fixture
def tree(tmp_path: Path, family: Family) -> Tree:
    return Tree(tmp_path, family)


def written_only(before: dict[str, bytes], after: dict[str, bytes], *new: str) -> None:
    """Everything that was there is byte-identical; the only new files are ``new``."""
    assert {key: after[key] for key in before} == before
    assert sorted(set(after) - set(before)) == sorted(new)


# ------------------------------------------------------------------------------------------- written


def test_a_missing_config_is_recovered_from_the_run_that_started_with_the_folder(tree: Tree) -> None:
    tree.checkpoint()
    config_yaml = tree.run(started_at="2025-10-17T12:54:24.000000Z")
    tree.run("run-20251019_080000-far00000", section(note="far"))
    before = snapshot(tree.root)
    gate = tree.gate()
    started = datetime.now(timezone.utc).replace(microsecond=0)
    [trace] = tree.recover(gate)
    assert (trace.relpath, trace.outcome) == (BEST, "written")
    assert trace.recovered
    assert trace.reason == f"wrote best.config.json from {WANDB_LABEL} (timestamp)"
    assert [a.candidate.source.label for a in trace.attempts] == [WANDB_LABEL]
    written_only(before, snapshot(tree.root), f"outputs/{RUN}/checkpoints/best.config.json")

    document = json.loads(tree.sidecar().read_text("utf-8"))
    provenance = document.pop("_provenance")
    assert document == {"model": section(), "preprocessing": {"size": [64, 64]}}  # no optimizer, no _wandb
    assert provenance["tool"] == f"pytest-ckptgate {__version__}"
    assert started <= datetime.fromisoformat(provenance["written_at"]) <= datetime.now(timezone.utc)
    assert provenance["source"] == {
        "kind": "wandb",
        "file": f"../../../wandb/{WANDB_RUN}/files/config.yaml",  # relative to the sidecar's folder
        "run_id": "j8v6ba0v",
        "sha256": hashlib.sha256(config_yaml.read_bytes()).hexdigest(),
    }
    assert provenance["matched_by"] == ("timestamp: run started 1 s after the folder's timestamp 2025-10-17 21:54:23")
    assert provenance["verified"].startswith("4 tensors loaded strictly into factory")
    assert provenance["agreeing_sources"] == []

    # the gate sees it at once (recover clears the folder listings), and the checks pass with it
    ckpt = gate.discovery().by_relpath()[BEST]
    assert gate.config(ckpt).kind == "sidecar"
    fresh = tree.gate()
    assert fresh.validated(ckpt).model == section()
    assert fresh.loaded(ckpt).report.loaded == 4
    assert fresh.forward(ckpt).outputs
    assert missing_configs(fresh) == []
    assert tree.recover() == []  # a second run has nothing to do
    written_only(before, snapshot(tree.root), f"outputs/{RUN}/checkpoints/best.config.json")


def test_every_checkpoint_of_a_run_gets_its_own_sidecar(tree: Tree) -> None:
    for name in ("best", "best-v1", "last"):
        tree.checkpoint(f"{RUN}/checkpoints/{name}.ckpt")
    tree.run(started_at="2025-10-17T12:54:24Z")
    traces = tree.recover()
    assert [(t.relpath.rsplit("/", 1)[1], t.outcome) for t in traces] == [
        ("best-v1.ckpt", "written"),
        ("best.ckpt", "written"),
        ("last.ckpt", "written"),
    ]
    for name in ("best", "best-v1", "last"):
        assert tree.sidecar(f"{RUN}/checkpoints/{name}.ckpt").is_file()


def test_a_dry_run_writes_nothing(tree: Tree) -> None:
    tree.checkpoint()
    tree.run()
    before = snapshot(tree.root)
    [trace] = tree.recover(dry_run=True)
    assert trace.outcome == "would-write"
    assert trace.recovered
    assert trace.reason == f"would write best.config.json from {WANDB_LABEL} (timestamp)"
    assert snapshot(tree.root) == before
    assert not tree.sidecar().exists()
    assert any("verified: 4 tensors loaded strictly" in line for line in trace.lines())


def test_a_time_zone_offset_is_weaker_but_recovers(tree: Tree) -> None:
    """Folder named on a KST machine; the wandb folder and metadata in UTC (9 h earlier)."""
    tree.checkpoint()
    tree.run("run-20251017_125424-utcclock", started_at="2025-10-17T12:54:24Z")
    [trace] = tree.recover()  # no run shows the +9 zone: not tried, and the message says how to ask for it
    assert trace.outcome == "unrecoverable"
    assert trace.reason.endswith(
        "started 8 h 59 min before the folder's timestamp; if the folder names are local time at UTC+9, "
        "pass --ckpt-utc-offset +9)"
    )
    [trace] = tree.recover(utc_offsets=(9 * 3600,))
    assert trace.outcome == "written"
    provenance = json.loads(tree.sidecar().read_text())["_provenance"]
    assert provenance["matched_by"] == (
        "timestamp with a time-zone offset: run started 1 s after the folder's timestamp 2025-10-17 21:54:23 "
        "read as UTC+9"
    )


def test_a_hydra_folder_naming_the_run_folder_recovers_it(tree: Tree) -> None:
    tree.checkpoint()
    hydra = tree.outputs / "2025-10-19" / "08-00-00" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text(
        yaml.safe_dump({"width": 4, "model": {"name": "net", "width": "${width}"}, "preprocessing": {"size": [8]}})
    )
    (hydra / "overrides.yaml").write_text(f"- callbacks.model_checkpoint.dirpath=outputs/{RUN}/checkpoints\n")
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "written", trace.reason
    assert trace.reason == "wrote best.config.json from Hydra run 2025-10-19/08-00-00 (names the run folder)"
    written_only(before, snapshot(tree.root), f"outputs/{RUN}/checkpoints/best.config.json")
    document = json.loads(tree.sidecar().read_text())
    assert document["model"] == section()  # interpolation resolved
    assert document["_provenance"]["source"]["kind"] == "hydra"
    assert document["_provenance"]["source"]["file"] == "../../2025-10-19/08-00-00/.hydra/config.yaml"
    assert document["_provenance"]["source"]["run_id"] is None


def test_a_checkpoint_that_stores_its_hyper_parameters_has_a_config_and_is_left_alone(
    tree: Tree, lightning_ckpt: Path
) -> None:
    """Lightning's save_hyperparameters(DictConfig): the config is in the file, where load_from_checkpoint reads
    it; there is nothing to recover, even beside a wandb run that would load the weights too."""
    path = tree.outputs / BEST
    path.parent.mkdir(parents=True)
    shutil.copyfile(lightning_ckpt, path)
    tree.run(started_at="2025-10-17T12:54:24Z")
    before = snapshot(tree.root)
    gate = tree.gate(target_allow=("mymodels",))  # the stored `_target_` is informational: the factory builds
    assert tree.recover(gate) == []
    assert snapshot(tree.root) == before
    ckpt = gate.discovery().by_relpath()[BEST]
    assert gate.config(ckpt).kind == "checkpoint"
    assert gate.validated(ckpt).model == {"_target_": "mymodels.Net", "name": "net", "width": 4}
    assert gate.loaded(ckpt).report.prefix == "model."


# ---------------------------------------------------------------------------------- evidence strength


def test_a_checkpoint_whose_run_logs_disagree_is_recovered_by_its_weights(tree: Tree) -> None:
    """Two trainings logged into one run folder, checkpoints without hyperparameters: only the weights tell
    which log is whose. The checks call it ambiguous; --fix proves each log and writes the one that fits."""
    tree.checkpoint()
    logs = tree.outputs / RUN / "lightning_logs"
    for version, model in ((0, section()), (1, section(variant="b"))):
        (logs / f"version_{version}").mkdir(parents=True)
        (logs / f"version_{version}" / "config.yaml").write_text(yaml.safe_dump({"trainer": {}, "model": model}))
    gate = tree.gate()
    ckpt = gate.discovery().by_relpath()[BEST]
    with pytest.raises(AmbiguousConfig, match="2 run logs could be the config"):
        gate.find_config(ckpt)
    [trace] = tree.recover()
    assert trace.outcome == "written", trace.reason
    assert [(a.candidate.tier, a.verified) for a in trace.attempts] == [
        (Tier.IN_RUN_FOLDER, False),
        (Tier.IN_RUN_FOLDER, True),
    ] or [(a.candidate.tier, a.verified) for a in trace.attempts] == [
        (Tier.IN_RUN_FOLDER, True),
        (Tier.IN_RUN_FOLDER, False),
    ]
    chosen = json.loads(tree.sidecar().read_text())
    assert chosen["model"] == section() and chosen["_provenance"]["source"]["kind"] == "cli"
    assert "lightning_logs/version_0/config.yaml" in chosen["_provenance"]["source"]["file"]


def test_a_run_naming_the_folder_wins_over_one_that_started_with_it(tree: Tree) -> None:
    tree.checkpoint()
    tree.run("run-20251020_100000-named000", section(note="named"), args=[f"out_dir=outputs/{RUN}"])
    tree.run(model=section(note="timed"))
    [trace] = tree.recover()
    assert trace.outcome == "written"
    assert trace.reason == (
        "wrote best.config.json from wandb run-20251020_100000-named000 (files/config.yaml) (names the run folder)"
    )
    assert trace.skipped == 1
    assert json.loads(tree.sidecar().read_text())["model"]["note"] == "named"


def test_a_stronger_candidate_that_does_not_fit_gives_way_to_a_weaker_one_that_does(tree: Tree) -> None:
    tree.checkpoint()
    tree.run("run-20251020_100000-named000", section(variant="b"), args=[f"out_dir=outputs/{RUN}"])  # not these weights
    tree.run(started_at="2025-10-17T12:54:24Z")
    [trace] = tree.recover()
    assert trace.outcome == "written"
    assert [(a.candidate.tier, a.verified) for a in trace.attempts] == [
        (Tier.NAMES_FOLDER, False),
        (Tier.TIMESTAMP, True),
    ]
    assert json.loads(tree.sidecar().read_text())["_provenance"]["source"]["run_id"] == "j8v6ba0v"


def test_equally_strong_candidates_that_agree_are_not_ambiguous(tree: Tree) -> None:
    tree.checkpoint()
    tree.run("run-20251017_215426-second00")
    tree.run()  # 1 s: the closer one is chosen
    [trace] = tree.recover()
    assert trace.outcome == "written"
    assert trace.reason == f"wrote best.config.json from {WANDB_LABEL} (timestamp)"
    provenance = json.loads(tree.sidecar().read_text())["_provenance"]
    assert provenance["source"]["run_id"] == "j8v6ba0v"
    assert provenance["agreeing_sources"] == ["wandb run-20251017_215426-second00 (files/config.yaml)"]


def test_equally_strong_candidates_that_disagree_are_ambiguous_and_nothing_is_written(tree: Tree) -> None:
    tree.checkpoint()
    tree.run("run-20251017_215422-before00", section(note="one"))
    tree.run(model=section(note="two"))
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "ambiguous"
    assert not trace.recovered
    assert trace.reason == (
        "2 candidates fit the weights with different configs and equally strong evidence (timestamp): "
        f"wandb run-20251017_215422-before00 (files/config.yaml), {WANDB_LABEL}; "
        "nothing written, write the sidecar from the right one"
    )
    assert snapshot(tree.root) == before


# ------------------------------------------------------------------------------------- not recovered


def test_no_candidate_at_all_is_unrecoverable_with_the_nearest_run(tree: Tree) -> None:
    tree.checkpoint()
    tree.run("run-20251019_215423-twodays0")
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "unrecoverable"
    assert trace.attempts == []
    assert trace.reason == (
        "no stored hyper_parameters, and no wandb run, Hydra or LightningCLI folder holds or names its run folder "
        "or started within 120 s of 2025-10-17 21:54:23 (the nearest, wandb run-20251019_215423-twodays0 "
        "(files/config.yaml), started 2 d after the folder's timestamp)"
    )
    assert snapshot(tree.root) == before


def test_a_folder_without_a_timestamp_says_so(tree: Tree) -> None:
    relpath = "my_experiment/checkpoints/last.ckpt"
    tree.checkpoint(relpath)
    tree.run()
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "unrecoverable"
    assert trace.reason == (
        "no stored hyper_parameters, and no wandb run, Hydra or LightningCLI folder holds or names its run folder "
        "(and its folder name has no timestamp to match runs by)"
    )
    assert snapshot(tree.root) == before


def test_candidates_that_do_not_fit_are_never_written(tree: Tree) -> None:
    """The seed's trap: the config says one decoder, the weights are another's. No made-up default either."""
    tree.checkpoint()
    tree.run(model=section(variant="b"))
    tree.run("run-20251017_215500-wider000", section(width=8))
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "unrecoverable"
    assert trace.reason.startswith(f"2 candidate(s), none fits the weights; {WANDB_LABEL}: weights do not fit")
    assert "4 missing, 4 unexpected" in trace.reason
    assert [a.verified for a in trace.attempts] == [False, False]
    assert snapshot(tree.root) == before


def test_an_unreadable_checkpoint_is_unrecoverable_and_left_alone(tree: Tree) -> None:
    path = tree.checkpoint()
    path.write_bytes(path.read_bytes()[:300])  # an interrupted copy
    tree.run()
    before = snapshot(tree.root)
    [trace] = tree.recover()
    assert trace.outcome == "unrecoverable"
    assert trace.reason.startswith(f"the checkpoint itself cannot be read: {BEST} ")
    assert snapshot(tree.root) == before


def test_a_sidecar_that_appeared_meanwhile_stands(tree: Tree) -> None:
    tree.checkpoint()
    tree.run()
    gate = tree.gate()
    assert [c.relpath for c in missing_configs(gate)] == [BEST]
    tree.sidecar().write_text('{"model": {"name": "theirs"}}')  # another run was faster
    before = snapshot(tree.root)
    trace = tree.recover_one(gate=gate)
    assert trace.outcome == "exists"
    assert trace.recovered
    assert trace.reason == "best.config.json appeared meanwhile (another run?); left as it is"
    assert snapshot(tree.root) == before


def test_an_unwritable_folder_is_reported_and_nothing_is_lost(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptgate.recovery import write

    tree.checkpoint()
    tree.run()
    before = snapshot(tree.root)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(write.tempfile, "mkstemp", refused)
    [trace] = tree.recover()
    assert trace.outcome == "unwritable"
    assert not trace.recovered
    folder = tree.outputs / RUN / "checkpoints"
    assert trace.reason == (
        f"proven from {WANDB_LABEL} (timestamp), but cannot write best.config.json in {folder}: Permission denied"
    )
    assert snapshot(tree.root) == before


def test_a_read_only_folder_is_unwritable(tree: Tree) -> None:
    tree.checkpoint()
    tree.run()
    folder = tree.outputs / RUN / "checkpoints"
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a read-only folder is writable anyway")
        before = snapshot(tree.root)
        [trace] = tree.recover()
        assert trace.outcome == "unwritable"
        assert str(folder) in trace.reason
        assert snapshot(tree.root) == before
    finally:
        folder.chmod(0o755)


def test_a_config_json_cannot_hold_is_unwritable_not_a_crash(tree: Tree) -> None:
    """A source whose config holds bytes (a reader of another format may give them): verified, then refused by
    JSON; nothing half-written."""
    tree.checkpoint()
    config_yaml = tree.run()
    blob = {"model": section(), "preprocessing": {"blob": b"\x00\x01"}}
    source = Source(kind="wandb", label="a run", path=config_yaml, config=blob, started_local=STAMP)
    gate = tree.gate()
    before = snapshot(tree.root)
    trace = recover_one(gate, gate.discovery().by_relpath()[BEST], [source], tree.settings())
    assert trace.outcome == "unwritable"
    assert "cannot write best.config.json: the config is not JSON data" in trace.reason
    assert snapshot(tree.root) == before


# -------------------------------------------------------------------------------- only missing configs


def test_only_checkpoints_without_any_config_are_touched(tree: Tree) -> None:
    broken = f"{RUN}/checkpoints/best-v1.ckpt"
    valid = f"{RUN}/checkpoints/last.ckpt"
    tree.checkpoint()
    tree.checkpoint(broken)
    tree.checkpoint(valid)
    tree.sidecar(broken).write_text('{"model": {"name": "net", "width": ')  # broken: the user's to fix
    tree.sidecar(valid).write_text(json.dumps({"model": section(note="valid")}))
    hydra_run = tree.outputs / "hydra_20251015_101010"
    (hydra_run / ".hydra").mkdir(parents=True)
    (hydra_run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": section(note="hydra")}))
    tree.checkpoint("hydra_20251015_101010/checkpoints/last.ckpt")
    tree.run(started_at="2025-10-17T12:54:24Z")
    before = snapshot(tree.root)
    gate = tree.gate()
    assert [c.relpath for c in missing_configs(gate)] == [BEST]
    traces = tree.recover(gate)
    assert [(t.relpath, t.outcome) for t in traces] == [(BEST, "written")]
    written_only(before, snapshot(tree.root), f"outputs/{RUN}/checkpoints/best.config.json")


def test_nothing_missing_nothing_read(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    tree.checkpoint()
    tree.sidecar().write_text(json.dumps({"model": section()}))
    recover_module = importlib.import_module("ckptgate.recovery.recover")  # the package re-exports `recover`

    def no_gathering(*args: Any) -> list[Source]:
        raise AssertionError("sources gathered although no config is missing")

    monkeypatch.setattr(recover_module, "gather_sources", no_gathering)
    assert tree.recover() == []


def test_default_wandb_dir_beside_the_outputs_then_at_the_rootdir(tmp_path: Path) -> None:
    outputs = tmp_path / "project" / "outputs"
    rootdir = tmp_path / "root"
    outputs.mkdir(parents=True)
    rootdir.mkdir()
    assert default_wandb_dir(outputs, rootdir) is None
    (rootdir / "wandb").mkdir()
    assert default_wandb_dir(outputs, rootdir) == rootdir / "wandb"
    (outputs.parent / "wandb").mkdir()
    assert default_wandb_dir(outputs, rootdir) == outputs.parent / "wandb"


def test_trace_lines_tell_the_story(tree: Tree) -> None:
    tree.checkpoint()
    tree.run(model=section(variant="b"))
    [trace] = tree.recover()
    lines = trace.lines()
    assert lines[0] == BEST
    detail = "run started 1 s after the folder's timestamp 2025-10-17 21:54:23"
    assert lines[1] == f"  1. {WANDB_LABEL} [timestamp: {detail}]"
    assert lines[2].startswith("     rejected: weights do not fit")
    assert lines[-1].startswith("  => unrecoverable: 1 candidate(s), none fits the weights")


def test_recovered_configs_are_seen_by_resolution_right_away(tree: Tree) -> None:
    tree.checkpoint()
    tree.run()
    gate = tree.gate()
    ckpt = gate.discovery().by_relpath()[BEST]
    with pytest.raises(configs.ConfigNotFound):
        configs.resolve_config(ckpt, tree.outputs)  # fills the listing cache
    tree.recover(gate)
    assert configs.resolve_config(ckpt, tree.outputs).kind == "sidecar"


def test_started_times_in_metadata_are_used_when_the_folder_stamp_is_far(tree: Tree) -> None:
    """A wandb folder stamped by a skewed clock: the metadata's UTC start still ties it (as UTC)."""
    tree.checkpoint()
    started = (STAMP + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    tree.run("run-20251016_000000-skewed00", started_at=started)
    [trace] = tree.recover()
    assert trace.outcome == "written"
    provenance = json.loads(tree.sidecar().read_text())["_provenance"]
    assert provenance["matched_by"].endswith("read as UTC")


def test_unrecoverable_says_none_fits_the_weights_only_when_weights_were_tried(tree: Tree) -> None:
    tree.checkpoint()
    tree.run(model={"name": "net", "width": 4, "_target_": "os.system"})  # refused before anything is built
    [trace] = tree.recover()
    assert trace.outcome == "unrecoverable"
    assert trace.reason.startswith("1 candidate(s), each rejected before its weights were tried; wandb run-")
    assert "none fits the weights" not in trace.reason
    assert not trace.attempts[0].weights_tried
