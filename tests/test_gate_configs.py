"""The gate's config decisions that need the checkpoint itself: its stored hyper_parameters as the last source,
the run log that agrees with them among several, a config that contradicts them, and finite weights.

Trees are built with the one-class model family of ``test_recovery_verify`` (a factory route, the demo's
kind) and with real Lightning checkpoints; the LightningModule route's own cases are end to end in
``test_lightning_e2e.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from ckptgate import configs
from ckptgate.configs import AmbiguousConfig, ConfigNotFound
from ckptgate.gate import CheckFailed, Gate
from test_recovery_verify import Family, family_fixture, section

family = pytest.fixture(family_fixture, name="family")

RUN = "run_20251017_215423"
BEST = f"{RUN}/checkpoints/best.ckpt"


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hparams_log(outputs: Path, version: int, model: dict[str, Any], name: str = "hparams.yaml") -> Path:
    path = outputs / RUN / "lightning_logs" / f"version_{version}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"model": model, "optimizer": {"lr": 0.01 * (version + 1)}}))
    return path


def gate_for(family: Family, outputs: Path) -> tuple[Gate, Any]:
    configs.clear_cache()
    gate = family.gate(outputs)
    return gate, gate.discovery().by_relpath()[BEST]


def test_the_stored_hyper_parameters_are_the_config_of_a_checkpoint_with_no_file(
    tmp_path: Path, family: Family
) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST, hparams={"model": section(), "optimizer": {"lr": 0.1}})
    gate, ckpt = gate_for(family, outputs)
    resolved = gate.config(ckpt)
    assert (resolved.kind, resolved.path, resolved.label) == ("checkpoint", ckpt.path, f"{resolved.label}")
    assert resolved.label == f"hyper_parameters stored in the checkpoint {BEST}"
    assert gate.forward(ckpt).outputs[0][0] == "output['logits']"


def test_several_run_logs_the_one_that_agrees_with_the_checkpoint_wins_not_the_newest(
    tmp_path: Path, family: Family
) -> None:
    """Two trainings into one dirpath: the newer log (width 8) would build another model."""
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST, hparams={"model": section(width=4), "optimizer": {"lr": 0.01}})
    own = hparams_log(outputs, 0, section(width=4))
    hparams_log(outputs, 1, section(width=8))
    gate, ckpt = gate_for(family, outputs)
    resolved = gate.config(ckpt)
    assert resolved.path == own
    (note,) = resolved.notes
    assert note.startswith("chosen among 2 run logs") and "agrees with the checkpoint" in note
    assert gate.loaded(ckpt).report.loaded == 4


def test_run_logs_that_differ_only_in_training_keys_are_one_config(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST)  # no hyperparameters: nothing else could tell them apart
    hparams_log(outputs, 0, section(pretrained=True))
    newest = hparams_log(outputs, 1, section(pretrained=False))  # lr differs too (hparams_log)
    gate, ckpt = gate_for(family, outputs)
    assert gate.config(ckpt).path == newest


def test_run_logs_that_disagree_with_nothing_to_tell_them_apart_are_ambiguous(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST)
    hparams_log(outputs, 0, section(width=4))
    hparams_log(outputs, 1, section(width=8))
    before = snapshot(tmp_path)
    gate, ckpt = gate_for(family, outputs)
    with pytest.raises(AmbiguousConfig) as info:
        gate.find_config(ckpt)
    message = str(info.value)
    assert "2 run logs could be the config of" in message and "width: 8 vs 4" in message
    assert "stores no hyper_parameters" in message and "--fix" in message
    with pytest.raises(CheckFailed, match="2 run logs could be the config"):
        gate.config(ckpt)
    assert snapshot(tmp_path) == before


def test_run_logs_none_of_which_agrees_with_the_checkpoint_fail_naming_them(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST, hparams={"model": section(width=16)})
    hparams_log(outputs, 0, section(width=4))
    hparams_log(outputs, 1, section(width=8))
    gate, ckpt = gate_for(family, outputs)
    with pytest.raises(CheckFailed) as info:
        gate.config(ckpt)
    message = str(info.value)
    assert "none of the 2 run logs" in message and "width: 8 vs 16" in message
    assert "lightning_logs/version_0/hparams.yaml" in message


def test_a_config_that_contradicts_the_checkpoint_fails_the_weights_check_naming_both(
    tmp_path: Path, family: Family
) -> None:
    """Same shapes, another model: the weights would load; the stored hyperparameters say otherwise."""
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST, hparams={"model": section(act="relu"), "optimizer": {"lr": 0.1}})
    sidecar = outputs / RUN / "checkpoints" / "best.config.json"
    sidecar.write_text(json.dumps({"model": section(act="gelu", lr=3.0, pretrained=True)}))  # lr, pretrained: ignored
    gate, ckpt = gate_for(family, outputs)
    assert gate.validated(ckpt).resolved.kind == "sidecar"
    with pytest.raises(CheckFailed) as info:
        gate.loaded(ckpt)
    message = str(info.value)
    assert message.startswith("the config contradicts the checkpoint: sidecar ")
    assert "best.config.json and the hyper_parameters stored in the checkpoint" in message
    assert 'act: "gelu" vs "relu"' in message and "1 key(s)" in message
    assert gate.builds == 0  # decided before anything was built
    ignoring = Gate(gate.settings.__class__(**{**gate.settings.__dict__, "hparams_ignore": ("act",)}))
    assert ignoring.loaded(ckpt).report.loaded == 4


def test_a_broken_sidecar_beside_a_good_hydra_config_is_passed_over_and_reported(
    tmp_path: Path, family: Family
) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST)
    broken = outputs / RUN / "checkpoints" / "best.config.json"
    broken.write_text('{"model": {"name": "net", "width": ')
    hydra = outputs / RUN / ".hydra" / "config.yaml"
    hydra.parent.mkdir()
    hydra.write_text(yaml.safe_dump({"model": section()}))
    before = snapshot(tmp_path)
    gate, ckpt = gate_for(family, outputs)
    resolved = gate.config(ckpt)
    assert (resolved.kind, resolved.path) == ("hydra", hydra)
    (skipped,) = resolved.skipped
    assert skipped.startswith(f"passed over a broken sidecar: {RUN}/checkpoints/best.config.json: not valid JSON")
    assert gate.forward(ckpt)
    assert snapshot(tmp_path) == before


def test_non_finite_tensors_outside_the_model_fail_too(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    path = family.checkpoint(outputs / BEST, hparams={"model": section()})
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["ema.body.0.weight"] = torch.full((4, 3, 3, 3), float("nan"))
    checkpoint["state_dict"]["ema.n_averaged"] = torch.tensor(3)  # integers are not checked
    torch.save(checkpoint, path)
    gate, ckpt = gate_for(family, outputs)
    with pytest.raises(CheckFailed, match=r"^1 of 5 floating tensors .*: ema\.body\.0\.weight \(108 NaN of 108\)$"):
        gate.loaded(ckpt)


def test_a_checkpoint_without_any_config_says_what_it_holds(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / BEST, hparams={"lr": 0.1, "batch_size": 8})  # flat: no model section
    gate, ckpt = gate_for(family, outputs)
    with pytest.raises(ConfigNotFound) as info:
        gate.find_config(ckpt)
    message = str(info.value)
    assert message.startswith(f"no config found for {BEST}")
    assert "skipped the checkpoint's hyper_parameters ($.model:" in message
    assert "--ckpt-lightning-module" in message  # flat hyperparameters: a LightningModule's, perhaps
