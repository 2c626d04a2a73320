"""The demo tree is what its answer key says: real Lightning files, and each case fails for its stated reason.

The tree is built once per session (a few seconds of real training). The answer key is checked here with
plain torch/omegaconf code, independently of the plugin, so the plugin's own tests can trust it.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from fixtures import demo_tree
from fixtures.demo_models import build_model, model_section, validate_config
from fixtures.demo_tree import (
    AMBIGUOUS,
    BAD_CONFIG,
    BASELINE,
    DETACHED,
    DIVERGED,
    HYDRA_ELSEWHERE,
    K_SWEEP,
    K_SWEEP_OTHER_WANDB,
    K_SWEEP_WANDB,
    LEGACY_HYDRA,
    LYING_NAME,
    LYING_NAME_WANDB,
    NAMES_FOLDER,
    NO_CONFIG,
    NO_CONFIG_WANDB,
    NOTEBOOK,
    PLAIN_LIGHTNING,
    STAMP_NAME,
    SWEEP_A,
    SWEEP_A_WANDB,
    SWEEP_B,
    SWEEP_B_WANDB,
    TIME_ZONE,
    TIME_ZONE_WANDB,
    TIMESTAMP,
    TIMESTAMP_OFFSET,
    TRUNCATED,
    TRUNCATED_WANDB,
    TRUNCATED_WANDB_LOG,
    UNRECOVERABLE,
    UNTRACED,
    UNTRACED_NEAREST_WANDB,
    WANDB_RUNS,
    WRITTEN,
    DemoCheckpoint,
    demo_expectations,
    ensure_demo_tree,
)

EXPECTED = demo_expectations()
SIDECAR_SUFFIXES = (".config.json", ".config.yaml", ".config.yml", ".resolved.config.json")
# what Lightning's checkpoints may hold besides tensors; anything else showing up is a finding
ALLOWED_GLOBAL_PREFIXES = ("omegaconf.", "builtins.", "collections.", "typing.")
LIGHTNING_KEYS = {
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
}


@pytest.fixture(scope="session")
def outputs(demo_root: Path) -> Path:
    return demo_root / "outputs"


def _resolve_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """weights_only loading that admits the globals the checkpoint declares, if they are plain data."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    unexpected = [n for n in names if not n.startswith(ALLOWED_GLOBAL_PREFIXES)]
    assert not unexpected, f"{path.name} pickles {unexpected}"
    with torch.serialization.safe_globals([_resolve_global(n) for n in names]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}


def _model_from(model_cfg: Any, ckpt_path: Path) -> torch.nn.Module:
    model = build_model(model_cfg)
    model.load_state_dict(_weights(load_checkpoint(ckpt_path)))  # strict
    return model.eval()


def _forward(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(torch.rand(1, 3, 64, 64))


def _sidecar(ckpt: Path) -> Path | None:
    for suffix in SIDECAR_SUFFIXES:
        candidate = ckpt.with_name(ckpt.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def _read_sidecar(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def _cases(**match: Any) -> list[DemoCheckpoint]:
    return [c for c in EXPECTED if all(getattr(c, k) == v for k, v in match.items())]


RUN_LABELS = {
    BASELINE: "baseline",
    LEGACY_HYDRA: "hydra",
    PLAIN_LIGHTNING: "lightning_logs",
    NO_CONFIG: "no_config",
    LYING_NAME: "lying_name",
    TRUNCATED: "truncated",
    BAD_CONFIG: "bad_config",
    DIVERGED: "diverged",
    SWEEP_A: "sweep_a",
    SWEEP_B: "sweep_b",
    K_SWEEP: "k_sweep",
    UNTRACED: "untraced",
    TIME_ZONE: "time_zone",
    DETACHED: "detached",
    NOTEBOOK: "notebook",
}
TOLERANCE = timedelta(seconds=120)  # --fix's default


def _ids(case: DemoCheckpoint) -> str:
    run, _, rest = case.relpath.partition("/")
    return f"{RUN_LABELS[run]}/{rest.rsplit('/', 1)[-1]}"


def _kst_folder_time(relpath: str) -> datetime:
    stamp = relpath.split("/", 1)[0][-15:]
    return datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=timezone(timedelta(hours=9)))


# ------------------------------------------------------------------------------------ the answer key


def test_answer_key_covers_every_case_once() -> None:
    assert len({c.relpath for c in EXPECTED}) == len(EXPECTED) == 24
    checks = {c.failing_check for c in EXPECTED}
    assert checks == {None, "config_present", "config_schema", "weights_load"}  # NaN weights: weights_load
    assert {c.config_source for c in EXPECTED if c.usable} == {"sidecar", "hydra", "hparams", "checkpoint"}
    for c in EXPECTED:
        assert c.usable == (c.failing_check is None) == (c.reason is None)


def test_answer_key_gives_every_fix_case_and_only_to_checkpoints_without_a_config() -> None:
    assert {c.fix_outcome for c in EXPECTED} == {None, WRITTEN, AMBIGUOUS, UNRECOVERABLE}
    assert {c.fix_tier for c in EXPECTED} == {None, NAMES_FOLDER, TIMESTAMP, TIMESTAMP_OFFSET}
    for c in EXPECTED:
        assert (c.fix_outcome is None) == (c.config_source is not None), c.relpath
        assert (c.fix_outcome is None) or (c.failing_check == "config_present"), c.relpath
        if c.fix_outcome is None:
            assert (c.fix_source, c.fix_tier, c.fix_reason) == (None, None, None)
            assert c.usable_after_fix == c.usable, c.relpath
        elif c.fix_outcome == WRITTEN:
            assert c.fix_source and c.fix_tier and c.fix_reason is None and c.usable_after_fix, c.relpath
        else:
            assert c.fix_reason and c.fix_source is None and c.fix_tier is None, c.relpath
            assert not c.usable_after_fix, c.relpath


def test_tree_holds_exactly_the_expected_checkpoints(outputs: Path, demo_root: Path) -> None:
    found = sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*.ckpt"))
    assert found == [c.relpath for c in EXPECTED]
    assert sorted(p.name for p in (demo_root / "wandb").iterdir()) == sorted(WANDB_RUNS)


def test_written_cases_name_sources_that_exist(demo_root: Path) -> None:
    sources = {c.fix_source for c in EXPECTED if c.fix_outcome == WRITTEN}
    wandb_runs = {p.name for p in (demo_root / "wandb").iterdir()}
    logs = {p.name for p in (demo_root / "wandb").glob("*/run-*.wandb")}
    for source in sources - {"hyper_parameters stored"}:
        assert source in wandb_runs | logs or (demo_root / "outputs" / source / ".hydra").is_dir(), source


@pytest.mark.parametrize("case", [c for c in EXPECTED if c.relpath.split("/", 1)[0] != TRUNCATED], ids=_ids)
def test_checkpoints_are_real_lightning_checkpoints(outputs: Path, case: DemoCheckpoint) -> None:
    path = outputs / case.relpath
    assert zipfile.is_zipfile(path)
    ckpt = load_checkpoint(path)
    assert set(ckpt) >= LIGHTNING_KEYS
    assert ckpt["pytorch-lightning_version"] == metadata.version("pytorch-lightning")
    assert ckpt["global_step"] >= 1
    assert ckpt["state_dict"] and all(k.startswith("model.") for k in ckpt["state_dict"])
    assert ckpt["optimizer_states"][0]["state"], "a real optimizer step happened"
    if "hyper_parameters" in ckpt:  # save_hyperparameters(cfg) stores the DictConfig itself
        assert isinstance(ckpt["hyper_parameters"], DictConfig)
        assert ckpt["hparams_type"] is DictConfig
        assert ckpt["hparams_name"] == "cfg"
        assert set(ckpt["hyper_parameters"]) >= {"model", "optimizer", "preprocessing"}


def test_file_times_follow_the_folder_timestamps(outputs: Path) -> None:
    for case in EXPECTED:
        started = _kst_folder_time(case.relpath)
        written = datetime.fromtimestamp((outputs / case.relpath).stat().st_mtime, tz=timezone.utc)
        assert started <= written <= started + timedelta(hours=3), case.relpath


# ------------------------------------------------------------------------------------- usable cases


@pytest.mark.parametrize("case", _cases(config_source="sidecar", usable=True), ids=_ids)
def test_sidecar_checkpoints_load_strictly_and_forward(outputs: Path, case: DemoCheckpoint) -> None:
    path = outputs / case.relpath
    sidecar = _sidecar(path)
    assert sidecar is not None
    config = _read_sidecar(sidecar)
    assert set(config) == {"model", "preprocessing"}
    assert config["preprocessing"]["image_size"] == [64, 64]
    assert validate_config(config["model"]) == []
    out = _forward(_model_from(config["model"], path))
    assert all(torch.isfinite(t).all() for t in out.values())


def test_baseline_sidecars_come_in_json_and_yaml_with_the_same_content(outputs: Path) -> None:
    folder = outputs / BASELINE / "checkpoints"
    names = sorted(p.name for p in folder.glob("*.config.*"))
    assert names == ["best-v1.config.yaml", "best.config.json", "last.config.json"]
    assert _read_sidecar(folder / "best-v1.config.yaml") == _read_sidecar(folder / "best.config.json")


@pytest.mark.parametrize("case", _cases(config_source="hydra"), ids=_ids)
def test_hydra_checkpoints_need_their_interpolations_resolved(outputs: Path, case: DemoCheckpoint) -> None:
    path = outputs / case.relpath
    assert _sidecar(path) is None
    hydra_dir = path.parent.parent / ".hydra"
    raw = yaml.safe_load((hydra_dir / "config.yaml").read_text())
    assert raw["model"]["head"]["params"]["in_channels"] == "${model.decoder.params.out_channels}"
    assert "- model/decoder=fpn_decoder" in (hydra_dir / "overrides.yaml").read_text()
    assert yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]["job"]["name"] == "train"
    assert "hyper_parameters" not in load_checkpoint(path)
    composed = OmegaConf.load(hydra_dir / "config.yaml")
    with pytest.raises(Exception, match="hydra"):  # the whole config needs Hydra's resolver ...
        OmegaConf.to_container(composed, resolve=True)
    model_cfg = OmegaConf.to_container(composed.model, resolve=True)  # ... the model section does not
    assert validate_config(model_cfg) == []  # type: ignore[arg-type]
    assert all(torch.isfinite(t).all() for t in _forward(_model_from(model_cfg, path)).values())


def test_plain_lightning_checkpoint_has_the_loggers_hparams_yaml(outputs: Path) -> None:
    [case] = _cases(config_source="hparams")
    path = outputs / case.relpath
    assert case.relpath.startswith(f"{PLAIN_LIGHTNING}/lightning_logs/version_0/checkpoints/epoch=0-step=3")
    hparams = yaml.safe_load((path.parent.parent / "hparams.yaml").read_text())
    assert hparams["model"]["decoder"]["name"] == "pan_decoder"
    assert (path.parent.parent / "metrics.csv").exists()
    ckpt = load_checkpoint(path)
    assert OmegaConf.to_container(ckpt["hyper_parameters"]) == hparams
    _model_from(hparams["model"], path)


# ----------------------------------------------------------------------------------- unusable cases


@pytest.mark.parametrize("case", [c for c in EXPECTED if c.relpath.startswith(NO_CONFIG)], ids=_ids)
def test_no_config_anywhere_but_the_wandb_run_holds_the_true_one(
    outputs: Path, demo_root: Path, case: DemoCheckpoint
) -> None:
    path = outputs / case.relpath
    run = outputs / NO_CONFIG
    assert _sidecar(path) is None
    assert not list(run.rglob("*.yaml")) and not list(run.rglob("*.json"))
    assert "hyper_parameters" not in load_checkpoint(path)
    files = demo_root / "wandb" / NO_CONFIG_WANDB / "files"
    config = yaml.safe_load((files / "config.yaml").read_text())
    assert "wandb_version" not in config and set(config["_wandb"]) == {"value"}  # the newer layout
    assert all(set(v) == {"value"} for v in config.values())
    started = json.loads((files / "wandb-metadata.json").read_text())["startedAt"]
    # the folder says 21:54:23 local time; wandb recorded 12:54:24 UTC: one second later
    utc = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert utc.replace(microsecond=0) - _kst_folder_time(case.relpath) == timedelta(seconds=1)
    assert "val/hmean" in json.loads((files / "wandb-summary.json").read_text())
    _model_from(config["model"]["value"], path)  # the wandb config is the one it was trained with


@pytest.mark.parametrize("case", _cases(failing_check="weights_load"), ids=_ids)
def test_weights_load_failures(outputs: Path, demo_root: Path, case: DemoCheckpoint) -> None:
    path = outputs / case.relpath
    sidecar = _read_sidecar(_sidecar(path))  # type: ignore[arg-type]
    assert validate_config(sidecar["model"]) == []  # the config itself looks fine
    if case.relpath.startswith(TRUNCATED):
        intact = (outputs / BASELINE / "checkpoints" / "best.ckpt").stat().st_size  # same model family
        assert 0.4 * intact < path.stat().st_size < 0.6 * intact
        assert not zipfile.is_zipfile(path)
        with pytest.raises(RuntimeError, match=f"(?i){case.reason}"):
            torch.load(path, map_location="cpu", weights_only=True)
        return
    if case.relpath.startswith(DIVERGED):
        return  # test_diverged_run_has_nan_weights_and_outputs
    assert case.relpath.startswith(LYING_NAME)
    assert sidecar["model"]["decoder"]["name"] == "pan_decoder"
    assert "component_overrides" not in sidecar["model"]
    weights = _weights(load_checkpoint(path))
    assert any(k.startswith("decoder.up_blocks.") for k in weights)  # unet weights
    result = build_model(sidecar["model"]).load_state_dict(weights, strict=False)
    assert result.missing_keys and result.unexpected_keys
    with pytest.raises(RuntimeError, match=f"(?i){case.reason}"):  # reasons match case-insensitively
        build_model(sidecar["model"]).load_state_dict(weights)
    # the old-layout wandb config is the true one: decoder says pan_decoder, the override builds a unet
    config = yaml.safe_load((demo_root / "wandb" / LYING_NAME_WANDB / "files" / "config.yaml").read_text())
    assert config["wandb_version"] == 1
    assert set(config["model"]) == {"desc", "value"}
    true_model = config["model"]["value"]
    assert true_model["decoder"]["name"] == "pan_decoder"
    assert true_model["component_overrides"]["decoder"]["name"] == "unet"
    _model_from(true_model, path)


def test_schema_invalid_sidecar_fails_only_the_cross_field_check(outputs: Path) -> None:
    [case] = _cases(failing_check="config_schema")
    path = outputs / case.relpath
    assert case.relpath.startswith(BAD_CONFIG)
    errors = validate_config(_read_sidecar(_sidecar(path))["model"])  # type: ignore[arg-type]
    assert len(errors) == 1 and case.reason in errors[0]  # type: ignore[operator]
    assert errors[0].startswith("$.model.head.params.in_channels:")
    _model_from(model_section("resnet18_tiny", "unet"), path)  # the weights themselves are fine


def test_diverged_run_has_nan_weights_and_outputs(outputs: Path) -> None:
    [case] = [c for c in _cases(failing_check="weights_load") if c.relpath.startswith(DIVERGED)]
    path = outputs / case.relpath
    ckpt = load_checkpoint(path)
    floats = [t for t in ckpt["state_dict"].values() if t.is_floating_point()]
    assert sum(int(torch.isnan(t).sum()) for t in floats) > 0.9 * sum(t.numel() for t in floats)
    model = _model_from(_read_sidecar(_sidecar(path))["model"], path)  # type: ignore[arg-type]
    assert not any(torch.isfinite(t).all() for t in _forward(model).values())


# ---------------------------------------------------------------------------------- the --fix cases


def _wandb_files(demo_root: Path, run: str) -> Path:
    return demo_root / "wandb" / run / "files"


def _wandb_config(demo_root: Path, run: str) -> dict[str, Any]:
    """A run's config.yaml, values unwrapped (both layouts), wandb's own keys dropped."""
    raw = yaml.safe_load((_wandb_files(demo_root, run) / "config.yaml").read_text())
    return {k: v["value"] for k, v in raw.items() if k not in ("_wandb", "wandb_version")}


def _started_utc(demo_root: Path, run: str) -> datetime:
    started = json.loads((_wandb_files(demo_root, run) / "wandb-metadata.json").read_text())["startedAt"]
    return datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _named_at(run: str) -> datetime:
    """The naive time in a wandb run folder's name (the clock of the machine that ran it)."""
    return datetime.strptime(run.split("-")[-2], "%Y%m%d_%H%M%S")


def _fits(model_cfg: Any, ckpt: Path) -> bool:
    try:
        _model_from(model_cfg, ckpt)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("case", [c for c in EXPECTED if c.fix_outcome is not None], ids=_ids)
def test_fix_cases_have_no_config_anywhere_a_resolver_looks(outputs: Path, case: DemoCheckpoint) -> None:
    path = outputs / case.relpath
    assert _sidecar(path) is None
    for folder in [p for p in path.parents if outputs in p.parents]:
        assert not (folder / ".hydra").exists() and not (folder / "hparams.yaml").exists(), folder
    # a checkpoint that carries its hyperparameters has a config (load_from_checkpoint reads them there)
    assert "hyper_parameters" not in load_checkpoint(path)


def test_lying_name_best_v2_came_after_the_migration_and_its_wandb_run_fits(outputs: Path, demo_root: Path) -> None:
    folder = outputs / LYING_NAME / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.config.json")) == [
        "best-v1.config.json",
        "best.config.json",
        "last.config.json",
    ]
    best_v2 = folder / "best-v2.ckpt"
    written = datetime.fromtimestamp(best_v2.stat().st_mtime, tz=timezone(timedelta(hours=9)))
    assert written.strftime("%Y-%m-%d %H:%M:%S") == "2025-10-18 04:23:25"  # as in the seed report
    assert load_checkpoint(best_v2)["global_step"] == 3  # Lightning's own -v2, between best-v1 and best
    true_model = _wandb_config(demo_root, LYING_NAME_WANDB)["model"]
    assert true_model["decoder"]["name"] == "pan_decoder"  # what the folder name was made from ...
    _model_from(true_model, best_v2)  # ... while component_overrides builds the unet the weights need
    assert not _fits(_read_sidecar(folder / "best.config.json")["model"], best_v2)


def test_truncated_runs_intact_last_has_its_config_only_in_the_offline_binary_log(
    outputs: Path, demo_root: Path
) -> None:
    last = outputs / TRUNCATED / "checkpoints" / "last.ckpt"
    assert zipfile.is_zipfile(last)
    run = demo_root / "wandb" / TRUNCATED_WANDB
    # exactly what wandb 0.31 leaves offline (tests/data/wandb/): no config.yaml, no metadata, no summary
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "files/output.log",
        "files/requirements.txt",
        "logs/debug-internal.log",
        "logs/debug.log",
        TRUNCATED_WANDB_LOG,
    ]
    true_model = model_section("mobilenetv3_small_050", "unet")
    as_logged = json.dumps(true_model, separators=(",", ":")).encode()  # wandb stores value_json compactly
    data = (run / TRUNCATED_WANDB_LOG).read_bytes()
    assert data.startswith(b":W&B\xe1\xbe\x00") and as_logged in data
    for other in run.rglob("*"):
        if other.is_file() and other.name != TRUNCATED_WANDB_LOG:
            assert b"mobilenetv3_small_050" not in other.read_bytes(), other
    _model_from(true_model, last)


@pytest.mark.parametrize(
    ("folder", "own", "other"), [(SWEEP_A, SWEEP_A_WANDB, SWEEP_B_WANDB), (SWEEP_B, SWEEP_B_WANDB, SWEEP_A_WANDB)]
)
def test_sweep_checkpoints_fit_only_their_own_run_though_both_are_close_in_time(
    outputs: Path, demo_root: Path, folder: str, own: str, other: str
) -> None:
    path = outputs / folder / "checkpoints" / "best.ckpt"
    stamp = _kst_folder_time(f"{folder}/")
    for run in (own, other):
        assert abs(_started_utc(demo_root, run) - stamp) <= timedelta(seconds=4)
        assert abs(_named_at(run) - stamp.replace(tzinfo=None)) <= timedelta(seconds=4)
    _model_from(_wandb_config(demo_root, own)["model"], path)
    assert not _fits(_wandb_config(demo_root, other)["model"], path)


def test_k_sweep_runs_differ_only_in_k_and_both_fit(outputs: Path, demo_root: Path) -> None:
    path = outputs / K_SWEEP / "checkpoints" / "last.ckpt"
    ours, twin = _wandb_config(demo_root, K_SWEEP_WANDB), _wandb_config(demo_root, K_SWEEP_OTHER_WANDB)
    assert (ours["model"]["head"]["params"]["k"], twin["model"]["head"]["params"]["k"]) == (50, 30)
    twin["model"]["head"]["params"]["k"] = 50
    assert twin == ours
    for run in (K_SWEEP_WANDB, K_SWEEP_OTHER_WANDB):
        assert timedelta(0) <= _started_utc(demo_root, run) - _kst_folder_time(f"{K_SWEEP}/") <= timedelta(seconds=3)
        _model_from(_wandb_config(demo_root, run)["model"], path)


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt"])
def test_untraced_checkpoints_have_no_run_within_the_tolerance_in_any_clock(
    outputs: Path, demo_root: Path, name: str
) -> None:
    path = outputs / UNTRACED / "checkpoints" / name
    stamp = _kst_folder_time(f"{UNTRACED}/")
    local = stamp.replace(tzinfo=None)
    for run in WANDB_RUNS:
        assert abs(_named_at(run) - local) > TOLERANCE, run
        for hours in range(-14, 15):
            offset = timedelta(hours=hours)
            if (_wandb_files(demo_root, run) / "wandb-metadata.json").exists():
                started = _started_utc(demo_root, run).replace(tzinfo=None)
                assert abs(started + offset - local) > TOLERANCE, (run, hours)
        assert UNTRACED not in "".join(p.read_text() for p in (_wandb_files(demo_root, run)).glob("*"))
    # the nearest run, 22 minutes later, trained the same architecture: only evidence may decide, not fit
    assert _started_utc(demo_root, UNTRACED_NEAREST_WANDB) - stamp == timedelta(minutes=22, seconds=27.431288)
    _model_from(_wandb_config(demo_root, UNTRACED_NEAREST_WANDB)["model"], path)


def test_time_zone_run_is_named_in_utc_and_its_outputs_folder_in_kst(outputs: Path, demo_root: Path) -> None:
    path = outputs / TIME_ZONE / "checkpoints" / "last.ckpt"
    stamp = _kst_folder_time(f"{TIME_ZONE}/")
    started = _started_utc(demo_root, TIME_ZONE_WANDB)
    assert started.replace(microsecond=0) - stamp == timedelta(seconds=1)  # the same instant, give or take
    assert _named_at(TIME_ZONE_WANDB) == started.replace(microsecond=0, tzinfo=None)  # the box's clock is UTC
    assert stamp.replace(tzinfo=None) - _named_at(TIME_ZONE_WANDB) == timedelta(hours=9, seconds=-1)
    _model_from(_wandb_config(demo_root, TIME_ZONE_WANDB)["model"], path)


def test_detached_checkpoints_hydra_run_is_elsewhere_and_names_its_folder(outputs: Path) -> None:
    path = outputs / DETACHED / "checkpoints" / "last.ckpt"
    hydra_dir = outputs / HYDRA_ELSEWHERE / ".hydra"
    assert sorted(p.name for p in hydra_dir.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    composed = OmegaConf.load(hydra_dir / "config.yaml")
    dirpath = f"outputs/{DETACHED}/checkpoints"
    assert composed.callbacks.model_checkpoint.dirpath == dirpath
    assert f"callbacks.model_checkpoint.dirpath={dirpath}" in yaml.safe_load((hydra_dir / "overrides.yaml").read_text())
    hydra = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
    assert hydra["runtime"]["output_dir"].endswith(f"/outputs/{HYDRA_ELSEWHERE}")
    _model_from(OmegaConf.to_container(composed.model, resolve=True), path)


def test_notebook_checkpoint_sits_in_its_run_folder_and_carries_its_config(outputs: Path) -> None:
    path = outputs / NOTEBOOK / "last.ckpt"
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    ckpt = load_checkpoint(path)
    assert ckpt["hparams_name"] == "cfg"
    _model_from(OmegaConf.to_container(ckpt["hyper_parameters"].model), path)


# ----------------------------------------------------------------------------- ensure_demo_tree / CLI


def test_ensure_does_not_rebuild_a_current_tree(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = demo_root / STAMP_NAME
    before = stamp.stat()

    def forbidden(root: Path) -> list[DemoCheckpoint]:
        raise AssertionError("rebuilt a current tree")

    monkeypatch.setattr(demo_tree, "build_demo_tree", forbidden)
    assert ensure_demo_tree(demo_root) == demo_root / "outputs"
    assert stamp.stat().st_mtime_ns == before.st_mtime_ns and stamp.stat().st_ino == before.st_ino


def test_cli_prints_the_table_without_rebuilding(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_tree, "build_demo_tree", None)
    assert demo_tree.main([str(demo_root)]) == 0
    out = capsys.readouterr().out
    assert all(c.relpath in out for c in EXPECTED)
    assert "config_present" in out and "ready in" in out


def _fake_builder(calls: list[Path], delay: float = 0.0) -> Callable[[Path], list[DemoCheckpoint]]:
    def build(root: Path) -> list[DemoCheckpoint]:
        calls.append(root)
        time.sleep(delay)
        (root / "outputs").mkdir(parents=True)
        (root / "outputs" / "new.txt").write_text("new")
        return []

    return build


def test_stale_tree_is_replaced_and_nothing_is_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "demo"
    (root / "outputs").mkdir(parents=True)
    (root / "outputs" / "old.txt").write_text("old")
    (root / STAMP_NAME).write_text(json.dumps({"builder_version": 0}))
    calls: list[Path] = []
    monkeypatch.setattr(demo_tree, "build_demo_tree", _fake_builder(calls))
    assert ensure_demo_tree(root) == root / "outputs"
    assert len(calls) == 1 and calls[0] != root
    assert sorted(p.name for p in (root / "outputs").iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
    ensure_demo_tree(root)
    assert len(calls) == 1


def test_failed_build_leaves_the_old_tree_and_no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "demo"
    (root / "outputs").mkdir(parents=True)

    def broken(staging: Path) -> list[DemoCheckpoint]:
        (staging / "outputs").mkdir()
        raise RuntimeError("training crashed")

    monkeypatch.setattr(demo_tree, "build_demo_tree", broken)
    with pytest.raises(RuntimeError, match="training crashed"):
        ensure_demo_tree(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
    assert (root / "outputs").is_dir()


def test_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "demo"
    calls: list[Path] = []
    monkeypatch.setattr(demo_tree, "build_demo_tree", _fake_builder(calls, delay=0.3))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo_tree(root))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [root / "outputs"] * 4
    assert (root / "outputs" / "new.txt").read_text() == "new"
