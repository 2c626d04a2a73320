"""ckptgate.configs: the config that goes with a checkpoint, found in the order inference would find it."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate import configs
from ckptgate.configs import (
    Candidate,
    ConfigNotFound,
    ResolvedConfig,
    SeveralConfigs,
    candidates,
    find_model_key,
    load_config,
    resolve_config,
    source_files,
)
from ckptgate.discovery import CheckpointRecord, discover
from ckptgate.documents import DocumentError
from ckptgate.errors import CheckError, first_line
from ckptgate.gate import CheckFailed
from test_recovery_verify import Family, family_fixture, section

family = pytest.fixture(family_fixture, name="family")

CKPT = "run_20251017_215423/checkpoints/best.ckpt"
MODEL = {"architecture_name": "dbnet", "encoder": {"model_name": "mobilenetv3_small_050"}}


@pytest.fixture(autouse=True)
def fresh_listing_cache() -> Iterator[None]:
    configs.clear_cache()
    yield
    configs.clear_cache()


def write(path: Path, data: str | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if isinstance(data, dict) else data, "utf-8")
    return path


def model_yaml(name: str) -> str:
    return f"model:\n  architecture_name: {name}\n  encoder:\n    model_name: mobilenetv3_small_050\n"


def record(root: Path, relpath: str = CKPT) -> CheckpointRecord:
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / relpath).touch()
    return discover(root).by_relpath()[relpath]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------- search order


def test_candidates_in_order(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    assert [(c.kind, c.path.relative_to(tmp_path).as_posix()) for c in candidates(ckpt, tmp_path)] == [
        ("sidecar", "run_20251017_215423/checkpoints/best.config.json"),
        ("sidecar", "run_20251017_215423/checkpoints/best.config.yaml"),
        ("sidecar", "run_20251017_215423/checkpoints/best.config.yml"),
        ("sidecar", "run_20251017_215423/checkpoints/best.resolved.config.json"),
        ("hydra", "run_20251017_215423/checkpoints/.hydra/config.yaml"),
        ("hydra", "run_20251017_215423/.hydra/config.yaml"),
        ("hydra", ".hydra/config.yaml"),  # the outputs dir itself may be the run's folder
        ("cli", "run_20251017_215423/checkpoints/config.yaml"),
        ("hparams", "run_20251017_215423/checkpoints/hparams.yaml"),
        ("cli", "run_20251017_215423/config.yaml"),
        ("hparams", "run_20251017_215423/hparams.yaml"),
        ("cli", "config.yaml"),
        ("hparams", "hparams.yaml"),
    ]


def test_candidates_never_leave_the_outputs_dir(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    write(tmp_path / ".hydra" / "config.yaml", model_yaml("outside"))  # above the outputs dir
    write(tmp_path / "hparams.yaml", model_yaml("outside"))
    ckpt = record(root, "best.ckpt")
    assert [c.path.relative_to(root).as_posix() for c in candidates(ckpt, root)] == [
        "best.config.json",
        "best.config.yaml",
        "best.config.yml",
        "best.resolved.config.json",
        ".hydra/config.yaml",
        "config.yaml",
        "hparams.yaml",
    ]
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, root)
    assert "Looked in 8 places:" in str(info.value)  # and the logger folders of the outputs dir itself
    assert "outside" not in str(info.value) and str(tmp_path / "hparams.yaml") not in str(info.value)


def test_search_order_source_by_source(tmp_path: Path) -> None:
    """Every source present; remove the winner each time and the next one in the order wins."""
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    sources = [
        write(run / "checkpoints" / "best.config.json", {"model": {**MODEL, "architecture_name": "json"}}),
        write(run / "checkpoints" / "best.config.yaml", model_yaml("yaml")),
        write(run / "checkpoints" / "best.config.yml", model_yaml("yml")),
        write(
            run / "checkpoints" / "best.resolved.config.json",
            {"model": {**MODEL, "architecture_name": "resolved"}},
        ),
        write(run / ".hydra" / "config.yaml", model_yaml("hydra")),
        write(run / "hparams.yaml", model_yaml("hparams")),
        write(run / "lightning_logs" / "version_0" / "hparams.yaml", model_yaml("logger")),
    ]
    expected = [
        ("sidecar", "json"),
        ("sidecar", "yaml"),
        ("sidecar", "yml"),
        ("sidecar", "resolved"),
        ("hydra", "hydra"),
        ("hparams", "hparams"),
        ("hparams", "logger"),
    ]
    for source, (kind, name) in zip(sources, expected, strict=True):
        configs.clear_cache()
        found = resolve_config(ckpt, tmp_path)
        assert (found.kind, found.path, found.model) == (kind, source, {**MODEL, "architecture_name": name})
        assert found.where == source.relative_to(tmp_path).as_posix()
        source.unlink()
    configs.clear_cache()
    with pytest.raises(ConfigNotFound):
        resolve_config(ckpt, tmp_path)


def test_hydra_config_of_the_nearest_ancestor(tmp_path: Path) -> None:
    relpath = "sweep/2025-10-17/21-54-23/lightning_logs/version_0/checkpoints/epoch=0-step=3.ckpt"
    ckpt = record(tmp_path, relpath)
    write(tmp_path / "sweep" / ".hydra" / "config.yaml", model_yaml("outer"))
    inner = write(tmp_path / "sweep/2025-10-17/21-54-23/.hydra/config.yaml", model_yaml("inner"))
    write(tmp_path / "sweep/2025-10-17/21-54-23/lightning_logs/version_0/hparams.yaml", model_yaml("hp"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.kind, found.path) == ("hydra", inner)
    assert found.model is not None and found.model["architecture_name"] == "inner"
    assert found.describe() == "hydra: sweep/2025-10-17/21-54-23/.hydra/config.yaml"


def test_hparams_of_an_ancestor_before_logger_folders(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "lightning_logs" / "version_3" / "hparams.yaml", model_yaml("logger"))
    ancestor = write(run / "hparams.yaml", model_yaml("ancestor"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.kind, found.path) == ("hparams", ancestor)


def test_logger_hparams_newest_version_first(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    for version in (0, 2, 10):
        write(run / "lightning_logs" / f"version_{version}" / "hparams.yaml", model_yaml(f"v{version}"))
    write(run / "lightning_logs" / "version_x" / "hparams.yaml", model_yaml("not-a-number"))

    with pytest.raises(SeveralConfigs) as info:  # several trainings: the gate chooses by the checkpoint
        resolve_config(ckpt, tmp_path)

    found = [resolved.path.parent.name for resolved in info.value.found]
    assert found == ["version_10", "version_2", "version_0", "version_x"]  # 10 > 2, not "10" < "2"


def test_several_run_logs_at_one_distance_are_left_to_the_gate(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    for version in (0, 1):
        write(run / "lightning_logs" / f"version_{version}" / "hparams.yaml", model_yaml("same"))
    with pytest.raises(SeveralConfigs) as info:
        resolve_config(ckpt, tmp_path)
    assert len(info.value.found) == 2  # configs.py does not judge: the gate compares what defines the model


def test_logger_hparams_directly_in_the_run_folder(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    direct = write(tmp_path / "run_20251017_215423" / "version_1" / "hparams.yaml", model_yaml("direct"))
    assert resolve_config(ckpt, tmp_path).path == direct


def test_hparams_without_model_section_is_skipped_and_mentioned(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "hparams.yaml", "lr: 0.001\nbatch_size: 8\n")
    write(run / "lightning_logs" / "version_1" / "hparams.yaml", "lr: 0.01\n")
    older = write(run / "lightning_logs" / "version_0" / "hparams.yaml", model_yaml("old"))

    found = resolve_config(ckpt, tmp_path)
    assert (found.kind, found.path) == ("hparams", older)

    older.unlink()
    configs.clear_cache()
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)
    message = str(info.value)
    assert "  skipped run_20251017_215423/hparams.yaml (has no `model` section)" in message
    assert "  skipped run_20251017_215423/lightning_logs/version_1/hparams.yaml (has no `model` section)" in message


def test_hparams_with_python_tags_still_gives_its_model(tmp_path: Path) -> None:
    """Lightning writes argparse.Namespace and paths as python tags; they must not hide the model."""
    ckpt = record(tmp_path)
    marker = tmp_path / "MARKER"
    write(
        tmp_path / "run_20251017_215423" / "hparams.yaml",
        f"args: !!python/object:argparse.Namespace {{lr: 0.1}}\n"
        f'hook: !!python/object/apply:os.system ["touch {marker}"]\n' + model_yaml("tagged"),
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {**MODEL, "architecture_name": "tagged"}
    assert found.data["hook"].startswith("<not loaded: YAML tag ")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("broken", "content", "fragment"),
    [
        ("best.config.json", '{"model": {"architecture_name": ', "not valid JSON"),
        ("best.config.yaml", "model: [unclosed\n", "not valid YAML"),
        ("best.config.json", "[1, 2]", "expected a mapping at the top, found list"),
        ("best.config.yml", "just a string\n", "expected a mapping at the top, found str"),
        ("best.config.json", "", "not valid JSON"),
    ],
)
def test_a_broken_sidecar_does_not_end_the_search_and_is_noted(
    tmp_path: Path, broken: str, content: str, fragment: str
) -> None:
    """A sidecar may be a half-written export: the next source is tried, and the note travels with the config
    used (it is reported on the checkpoint); with nothing else anywhere, the broken sidecar is the cause."""
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "checkpoints" / broken, content)
    later = write(run / "checkpoints" / "best.resolved.config.json", {"model": MODEL})  # a later, valid source
    write(run / ".hydra" / "config.yaml", model_yaml("hydra"))
    before = snapshot(tmp_path)

    found = resolve_config(ckpt, tmp_path)

    assert snapshot(tmp_path) == before  # nothing written, nothing lost
    assert (found.kind, found.path) == ("sidecar", later)
    (note,) = found.skipped
    assert note.startswith(f"passed over a broken sidecar: run_20251017_215423/checkpoints/{broken}: ")
    assert fragment in note
    later.unlink()
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).kind == "hydra"
    (run / ".hydra" / "config.yaml").unlink()
    configs.clear_cache()
    with pytest.raises(DocumentError) as info:
        resolve_config(ckpt, tmp_path)
    assert not isinstance(info.value, ConfigNotFound)
    assert str(info.value).startswith(f"run_20251017_215423/checkpoints/{broken}: ")
    assert fragment in str(info.value)
    assert (run / "checkpoints" / broken).read_text() == content  # the user's file is left as it was


def test_broken_hydra_config_is_reported_not_skipped(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml", "model:\n\tname: x\n")
    write(tmp_path / "run_20251017_215423" / "hparams.yaml", model_yaml("hparams"))
    with pytest.raises(DocumentError, match=r"^run_20251017_215423/\.hydra/config\.yaml: not valid YAML"):
        resolve_config(ckpt, tmp_path)


def test_broken_hparams_is_reported_not_skipped(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "lightning_logs" / "version_2" / "hparams.yaml", "model: {a: [}\n")
    write(run / "lightning_logs" / "version_1" / "hparams.yaml", model_yaml("older"))
    with pytest.raises(DocumentError, match=r"version_2/hparams\.yaml: not valid YAML"):
        resolve_config(ckpt, tmp_path)


def test_hydra_config_without_model_section_is_returned_not_skipped(tmp_path: Path) -> None:
    """Unlike hparams.yaml, a Hydra config is a config by intent: the missing section is its defect."""
    ckpt = record(tmp_path)
    hydra = write(tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml", "trainer: {max_epochs: 3}\n")
    write(tmp_path / "run_20251017_215423" / "hparams.yaml", model_yaml("hparams"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.path, found.model_key, found.model) == (hydra, None, None)


def test_listings_are_cached_until_cleared(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    with pytest.raises(ConfigNotFound):
        resolve_config(ckpt, tmp_path)
    sidecar = write(tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json", {"model": MODEL})
    with pytest.raises(ConfigNotFound):  # the folder listing from the first search is reused
        resolve_config(ckpt, tmp_path)
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).path == sidecar


def test_sidecar_of_a_symlinked_checkpoint_sits_beside_the_link(tmp_path: Path) -> None:
    record(tmp_path, "run/checkpoints/epoch=3-step=9.ckpt")
    (tmp_path / "run" / "checkpoints" / "best.ckpt").symlink_to("epoch=3-step=9.ckpt")
    ckpt = discover(tmp_path).by_relpath()["run/checkpoints/best.ckpt"]
    sidecar = write(tmp_path / "run" / "checkpoints" / "best.config.json", {"model": MODEL})
    assert resolve_config(ckpt, tmp_path).path == sidecar


# ---------------------------------------------------------------------------- a symlink's target


def linked(root: Path, link: str, target: str) -> CheckpointRecord:
    """``link`` -> ``target`` (relative, as teams write them), ``target`` a file under ``root``."""
    record(root, target)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(root / target, (root / link).parent), root / link)
    return discover(root).by_relpath()[link]


def test_a_symlink_kept_elsewhere_finds_its_config_beside_its_target(tmp_path: Path) -> None:
    ckpt = linked(tmp_path, "deploy/prod.ckpt", "run/checkpoints/epoch=2.ckpt")
    sidecar = write(tmp_path / "run" / "checkpoints" / "epoch=2.config.json", {"model": MODEL})

    found = resolve_config(ckpt, tmp_path)

    assert (found.kind, found.path, found.where) == ("sidecar", sidecar, "run/checkpoints/epoch=2.config.json")
    assert source_files(ckpt, tmp_path) == [sidecar]
    places = [(c.kind, c.path.relative_to(tmp_path).as_posix()) for c in candidates(ckpt, tmp_path)]
    assert places[:8] == [  # beside the link first, then beside its target
        ("sidecar", "deploy/prod.config.json"),
        ("sidecar", "deploy/prod.config.yaml"),
        ("sidecar", "deploy/prod.config.yml"),
        ("sidecar", "deploy/prod.resolved.config.json"),
        ("sidecar", "run/checkpoints/epoch=2.config.json"),
        ("sidecar", "run/checkpoints/epoch=2.config.yaml"),
        ("sidecar", "run/checkpoints/epoch=2.config.yml"),
        ("sidecar", "run/checkpoints/epoch=2.resolved.config.json"),
    ]
    assert ("hydra", "run/.hydra/config.yaml") in places and ("hparams", "run/hparams.yaml") in places
    assert len(places) == len(set(places))  # the outputs dir's own places once

    own = write(tmp_path / "deploy" / "prod.config.yaml", model_yaml("deployed"))
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).path == own  # beside the link wins
    assert source_files(ckpt, tmp_path) == [own, sidecar]


def test_a_symlinks_target_brings_its_run_folders_hydra_config_and_run_logs(tmp_path: Path) -> None:
    ckpt = linked(tmp_path, "deploy/prod.ckpt", "run/checkpoints/epoch=2.ckpt")
    logger = write(tmp_path / "run" / "lightning_logs" / "version_0" / "hparams.yaml", model_yaml("logger"))
    assert resolve_config(ckpt, tmp_path).path == logger
    hydra = write(tmp_path / "run" / ".hydra" / "config.yaml", model_yaml("hydra"))
    configs.clear_cache()
    found = resolve_config(ckpt, tmp_path)
    assert (found.kind, found.path) == ("hydra", hydra)
    assert source_files(ckpt, tmp_path) == [hydra, logger]


def test_a_chain_of_links_is_followed_link_by_link(tmp_path: Path) -> None:
    """``deploy/prod.ckpt`` -> Lightning's ``last.ckpt`` link -> ``epoch=3.ckpt``: each has its say, in order."""
    record(tmp_path, "run/checkpoints/epoch=3.ckpt")
    os.symlink("epoch=3.ckpt", tmp_path / "run" / "checkpoints" / "last.ckpt")
    (tmp_path / "deploy").mkdir()
    os.symlink("../run/checkpoints/last.ckpt", tmp_path / "deploy" / "prod.ckpt")
    ckpt = discover(tmp_path).by_relpath()["deploy/prod.ckpt"]
    newest = write(tmp_path / "run" / "checkpoints" / "epoch=3.config.json", {"model": MODEL})
    assert resolve_config(ckpt, tmp_path).path == newest
    last = write(tmp_path / "run" / "checkpoints" / "last.config.json", {"model": MODEL})
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).path == last


def test_a_broken_sidecar_beside_the_link_is_passed_over_for_the_targets(tmp_path: Path) -> None:
    ckpt = linked(tmp_path, "deploy/prod.ckpt", "run/checkpoints/best.ckpt")
    write(tmp_path / "deploy" / "prod.config.json", "{not json")
    sidecar = write(tmp_path / "run" / "checkpoints" / "best.config.json", {"model": MODEL})
    found = resolve_config(ckpt, tmp_path)
    assert found.path == sidecar
    (note,) = found.skipped
    assert note.startswith("passed over a broken sidecar: deploy/prod.config.json")


def test_a_symlink_out_of_the_outputs_dir_finds_only_sidecars_beside_its_target(tmp_path: Path) -> None:
    root, archive = tmp_path / "outputs", tmp_path / "archive"
    record(archive, "old_run/checkpoints/best.ckpt")
    write(archive / "old_run" / ".hydra" / "config.yaml", model_yaml("outside"))  # not the outputs dir's
    (root / "imported").mkdir(parents=True)
    os.symlink(archive / "old_run" / "checkpoints" / "best.ckpt", root / "imported" / "best.ckpt")
    ckpt = discover(root).by_relpath()["imported/best.ckpt"]

    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, root)
    looked = [line.strip() for line in str(info.value).splitlines() if line.startswith("  ")]
    assert f"{archive}/old_run/checkpoints/best.config.json" in looked
    assert not any("outside" in line or (".hydra" in line and str(archive) in line) for line in looked)

    sidecar = write(archive / "old_run" / "checkpoints" / "best.config.json", {"model": MODEL})
    configs.clear_cache()
    found = resolve_config(ckpt, root)
    assert (found.path, found.where) == (sidecar, str(sidecar))


def test_config_not_found_for_a_symlink_lists_the_targets_places(tmp_path: Path) -> None:
    ckpt = linked(tmp_path, "deploy/prod.ckpt", "run/checkpoints/best.ckpt")
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)
    looked = [line.strip() for line in str(info.value).splitlines() if line.startswith("  ")]
    assert looked[:5] == [
        "deploy/prod.config.json",
        "deploy/prod.config.yaml",
        "deploy/prod.config.yml",
        "deploy/prod.resolved.config.json",
        "run/checkpoints/best.config.json",
    ]
    assert looked[-2:] == ["deploy/*/version_*/{hparams,config}.yaml", "run/*/version_*/{hparams,config}.yaml"]
    assert len(looked) == len(set(looked))


# ---------------------------------------------------------------- --ckpt-outputs <run> or its parent

RUN_LAYOUTS = {
    "logger beside checkpoints/": ("lightning_logs/version_0/hparams.yaml", "hparams"),
    "CLI config beside checkpoints/": ("lightning_logs/version_0/config.yaml", "cli"),
    "hparams.yaml in the run": ("hparams.yaml", "hparams"),
    "Hydra run": (".hydra/config.yaml", "hydra"),
    "sidecar": ("checkpoints/best.config.yaml", "sidecar"),
}


@pytest.mark.parametrize("layout", sorted(RUN_LAYOUTS))
def test_pointing_at_one_run_finds_the_same_config_as_pointing_at_its_parent(tmp_path: Path, layout: str) -> None:
    relpath, kind = RUN_LAYOUTS[layout]
    run = tmp_path / "outputs" / "run_20251017_215423"
    text = model_yaml("net") if kind != "cli" else "trainer: {}\n" + model_yaml("net")
    expected = write(run / relpath, text)
    write(run / "lightning_logs" / "version_0" / "metrics.csv", "epoch\n")
    found = {}
    for root in (tmp_path / "outputs", run):
        configs.clear_cache()
        ckpt = record(root, f"{run.relative_to(root).as_posix()}/checkpoints/best.ckpt".removeprefix("./"))
        found[root] = resolve_config(ckpt, root)
        assert source_files(ckpt, root) == [expected]
    parent, alone = found.values()
    assert (parent.kind, parent.path) == (alone.kind, alone.path) == (kind, expected)
    assert parent.model == alone.model


def test_the_gate_judges_a_run_alike_from_the_run_or_its_parent(tmp_path: Path, family: Family) -> None:
    """``--ckpt-outputs <run>`` and ``--ckpt-outputs <parent>``: same verdicts, same config files."""
    outputs = tmp_path / "outputs"
    run = outputs / "run_20251017_215423"
    family.checkpoint(run / "checkpoints" / "best.ckpt")
    family.checkpoint(run / "checkpoints" / "last.ckpt", width=8)  # not the model its run's config builds
    logged = write(run / "lightning_logs" / "version_0" / "hparams.yaml", yaml.safe_dump({"model": section()}))
    judged = []
    for root in (outputs, run):
        configs.clear_cache()
        gate = family.gate(root)
        verdicts = {}
        for ckpt in gate.discovery().checkpoints:
            try:
                gate.forward(ckpt)
                verdict = "usable"
            except CheckFailed as exc:
                verdict = exc.root.check.value
            verdicts[ckpt.path] = (gate.config(ckpt).path, verdict)
        judged.append(verdicts)
    assert (
        judged[0]
        == judged[1]
        == {
            run / "checkpoints" / "best.ckpt": (logged, "usable"),
            run / "checkpoints" / "last.ckpt": (logged, "weights_load"),
        }
    )


# ------------------------------------------------------------------------------------ not found


def test_config_not_found_lists_every_place_and_points_to_fix(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    before = snapshot(tmp_path)

    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)

    error = info.value
    assert isinstance(error, CheckError)
    message = str(error)
    places = [c.path.relative_to(tmp_path).as_posix() for c in candidates(ckpt, tmp_path)]
    places.append("run_20251017_215423/*/version_*/{hparams,config}.yaml")
    assert f"Looked in {len(places)} places:" in message
    listed = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    assert listed == places
    assert "--fix" in message
    assert "run_20251017_215423/checkpoints/best.config.json" in message.splitlines()[1]
    assert snapshot(tmp_path) == before  # looking writes nothing


def test_config_not_found_first_line_stands_alone(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)
    line = str(info.value).splitlines()[0]
    assert first_line(str(info.value)) == line
    assert line == f"no config found for {CKPT}; run pytest with --fix to recover it"
    assert not line.rstrip().endswith(":")  # not a lead-in to the list below


# --------------------------------------------------------------------------------- model sections


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"model": {"name": "x"}}, "model"),
        ({"cfg": {"model": {"name": "x"}}, "trainer": {"max_epochs": 1}}, "cfg.model"),
        ({"model": {"name": "top"}, "cfg": {"model": {"name": "nested"}}}, "model"),
        ({"model": "dbnet", "cfg": {"model": {"name": "x"}}}, "cfg.model"),  # a name, not a section
        ({"a": {"model": {"name": "x"}}, "b": {"model": {"name": "y"}}}, None),  # ambiguous
        ({"cfg": {"inner": {"model": {"name": "x"}}}}, None),  # two wrappers deep: not searched
        ({"model": None}, None),
        ({"model": [1, 2]}, None),
        ({"my.cfg": {"model": {"name": "x"}}}, None),  # a dotted key cannot be a dotted path part
        ({1: {"model": {"name": "x"}}}, None),
        ({}, None),
    ],
)
def test_find_model_key(document: dict[Any, Any], expected: str | None) -> None:
    assert find_model_key(document) == expected


def test_wrapped_model_section_is_used(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "cfg:\n" + textwrap.indent(model_yaml("x"), "  "),
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model_key == "cfg.model"
    assert found.model == {**MODEL, "architecture_name": "x"}
    assert found.describe() == "hydra: run_20251017_215423/.hydra/config.yaml (cfg.model)"


def test_dotted_wrapper_key_is_no_model_section(tmp_path: Path) -> None:
    """``{"my.cfg": {"model": ...}}`` would otherwise give model_key "my.cfg.model", unreadable by .model."""
    ckpt = record(tmp_path)
    write(tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json", {"my.cfg": {"model": MODEL}})
    found = resolve_config(ckpt, tmp_path)
    assert (found.model_key, found.model) == (None, None)


def test_interpolations_in_the_model_section_are_resolved(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "data:\n  channels: 16\nmodel:\n  architecture_name: dbnet\n"
        "  head:\n    name: db_head\n    params: {in_channels: '${data.channels}', k: 50}\n"
        "  alias: ${.architecture_name}\n",
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {
        "architecture_name": "dbnet",
        "head": {"name": "db_head", "params": {"in_channels": 16, "k": 50}},
        "alias": "dbnet",
    }
    assert found.notes == ()


def test_unresolvable_interpolation_outside_the_model_is_noted(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "hydra:\n  run:\n    dir: ${hydra:runtime.output_dir}\n"
        "data:\n  channels: 16\nmodel:\n  architecture_name: dbnet\n  width: ${data.channels}\n",
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {"architecture_name": "dbnet", "width": 16}
    assert found.data["hydra"]["run"]["dir"] == "${hydra:runtime.output_dir}"  # left as written
    (note,) = found.notes
    assert note.startswith("left unresolved: ")
    assert "hydra" in note


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("${hydra:runtime.output_dir}", "model.encoder.weights"),
        ("${data.missing}", "model.encoder.weights"),
        ("${unclosed", "model.encoder.weights"),
    ],
)
def test_unresolvable_interpolation_inside_the_model_names_the_key(tmp_path: Path, value: str, key: str) -> None:
    ckpt = record(tmp_path)
    path = write(
        tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json",
        {"data": {}, "model": {"architecture_name": "dbnet", "encoder": {"name": "m", "weights": value}}},
    )
    before = path.read_bytes()

    with pytest.raises(DocumentError) as info:
        resolve_config(ckpt, tmp_path)

    message = str(info.value)
    assert message.startswith("run_20251017_215423/checkpoints/best.config.json: ")
    assert f"`{key}`" in message
    assert "\n" not in message
    assert path.read_bytes() == before


def test_unresolvable_interpolation_in_a_wrapped_model(tmp_path: Path) -> None:
    candidate = Candidate("sidecar", write(tmp_path / "c.config.json", {"cfg": {"model": {"x": ["${nope}"]}}}))
    with pytest.raises(DocumentError, match=r"^c\.config\.json: .*`cfg\.model\.x\[0\]`"):
        load_config(candidate, tmp_path)


def test_load_config_outside_the_root_names_the_absolute_path(tmp_path: Path) -> None:
    elsewhere = write(tmp_path / "elsewhere" / "c.config.json", {"model": MODEL})
    found = load_config(Candidate("sidecar", elsewhere), tmp_path / "outputs")
    assert found.where == str(elsewhere)
    assert isinstance(found, ResolvedConfig) and found.model == MODEL


@pytest.mark.parametrize("value", ["${unclosed", "${hydra:runtime.output_dir}", "${nope.nothing}"])
def test_broken_interpolation_outside_a_model_without_interpolations_is_noted(tmp_path: Path, value: str) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json",
        {"logging": {"dir": value}, "model": MODEL},
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == MODEL
    assert found.data["logging"]["dir"] == value
    (note,) = found.notes
    assert note.startswith("left unresolved: ")


def test_malformed_interpolation_elsewhere_blocks_a_model_that_needs_resolving(tmp_path: Path) -> None:
    """The model's own ${...} cannot resolve when OmegaConf refuses the document: an error, not raw text."""
    candidate = Candidate(
        "sidecar",
        write(
            tmp_path / "c.config.json",
            {"logging": {"dir": "${unclosed"}, "data": {"n": 3}, "model": {"name": "x", "n": "${data.n}"}},
        ),
    )
    with pytest.raises(DocumentError, match=r"^c\.config\.json: not a valid OmegaConf config in `logging\.dir`: "):
        load_config(candidate, tmp_path)
