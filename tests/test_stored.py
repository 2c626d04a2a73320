"""ckptgate.stored: a checkpoint's own ``hyper_parameters`` as its config, read weights-only as plain data.

They are the config ``load_from_checkpoint`` builds from, the last source the gate reads, and what every other
config of the checkpoint is compared with."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import torch
from ckptgate.discovery import CheckpointRecord, discover
from ckptgate.loading import read_checkpoint
from ckptgate.stored import plain, stored_config, stored_document
from lightning_fabric.utilities.data import AttributeDict  # what Lightning pickles
from omegaconf import OmegaConf

MODEL = {"_target_": "mymodels.Net", "name": "net", "width": 4}


def record_for(path: Path) -> CheckpointRecord:
    return discover(path.parent).by_relpath()[path.name]


def saved(tmp_path: Path, checkpoint: dict[str, Any], name: str = "run.ckpt") -> tuple[CheckpointRecord, Any]:
    """Save with torch, read back the safe way (weights-only), as recovery does."""
    path = tmp_path / name
    torch.save(checkpoint, path)
    return record_for(path), read_checkpoint(path)


def test_a_real_lightning_checkpoint_gives_its_model_section(lightning_ckpt: Path, tmp_path: Path) -> None:
    """Lightning's save_hyperparameters(DictConfig) + trainer.save_checkpoint, read back weights-only."""
    path = tmp_path / "best.ckpt"
    shutil.copyfile(lightning_ckpt, path)
    before = path.read_bytes()
    checkpoint = read_checkpoint(path)
    assert "pytorch-lightning_version" in checkpoint
    assert type(checkpoint["hyper_parameters"]).__name__ == "DictConfig"  # what Lightning stored
    ckpt = record_for(path)
    source = stored_config(ckpt, checkpoint)
    assert source is not None
    assert source.kind == "checkpoint"
    assert source.label == "hyper_parameters stored in the checkpoint best.ckpt"
    assert source.path == path
    assert source.data == {"model": MODEL, "optimizer": {"lr": 0.01}}
    assert source.model == MODEL
    assert json.loads(json.dumps(source.data)) == source.data  # plain data, as a sidecar holds it
    assert path.read_bytes() == before


def test_a_bare_lightning_checkpoint_has_none(bare_lightning_ckpt: Path) -> None:
    assert stored_config(record_for(bare_lightning_ckpt), read_checkpoint(bare_lightning_ckpt)) is None


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(argparse.Namespace(model=MODEL, lr=0.1), id="Namespace"),
        pytest.param({"model": MODEL, "lr": 0.1}, id="dict"),
        pytest.param(OmegaConf.create({"model": MODEL, "lr": 0.1}), id="DictConfig"),
        pytest.param({"model": OmegaConf.create(MODEL), "lr": 0.1}, id="dict-of-DictConfig"),
    ],
)
def test_every_form_lightning_saves_gives_the_section(tmp_path: Path, stored: Any) -> None:
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    source = stored_config(ckpt, checkpoint)
    assert source is not None
    assert source.data == {"model": MODEL, "lr": 0.1}
    assert source.model_key == "model"


@pytest.mark.parametrize("cls", [AttributeDict, dict], ids=["lightning", "as-the-loader-reads-it"])
def test_an_attribute_dict_gives_the_section(tmp_path: Path, cls: type) -> None:
    """As Lightning holds it in memory and as the weights-only loader reads it (a plain dict)."""
    path = tmp_path / "run.ckpt"
    path.touch()
    ckpt = record_for(path)
    source = stored_config(ckpt, {"state_dict": {}, "hyper_parameters": cls(model=MODEL, lr=0.1)})
    assert source is not None and source.data == {"model": MODEL, "lr": 0.1}
    wrapped = cls(cfg=OmegaConf.create({"model": MODEL, "preprocessing": {"size": [64, 64]}}))
    source = stored_config(ckpt, {"state_dict": {}, "hyper_parameters": wrapped})
    assert source is not None
    assert source.model_key == "cfg.model"
    assert source.model == MODEL


def test_a_section_saved_under_one_cfg_argument(tmp_path: Path) -> None:
    """``save_hyperparameters()`` on ``__init__(self, cfg)``: Lightning saves dict(hparams) = {"cfg": ...}."""
    stored = {"cfg": OmegaConf.create({"model": MODEL, "preprocessing": {"size": [64, 64]}})}
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    source = stored_config(ckpt, checkpoint)
    assert source is not None
    assert source.model_key == "cfg.model"
    assert source.data == {"cfg": {"model": MODEL, "preprocessing": {"size": [64, 64]}}}


def test_interpolations_are_resolved_and_flattened_keys_nested(tmp_path: Path) -> None:
    stored = OmegaConf.create({"width": 4, "model": {"name": "net", "width": "${width}"}, "model.extra.k": 50})
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    source = stored_config(ckpt, checkpoint)
    assert source is not None
    assert source.data["model"] == {"name": "net", "width": 4, "extra": {"k": 50}}


def test_an_interpolation_that_does_not_resolve_is_kept_as_written(tmp_path: Path) -> None:
    stored = OmegaConf.create({"model": {"name": "net", "width": "${nowhere}"}})
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    source = stored_config(ckpt, checkpoint)
    assert source is not None
    assert source.data["model"] == {"name": "net", "width": "${nowhere}"}


def test_paths_become_strings_so_the_proven_config_is_the_one_written(tmp_path: Path) -> None:
    """Lightning checkpoints may hold paths (the loader admits them); a JSON sidecar cannot."""
    stored = OmegaConf.create({"model": {"name": "net", "weights": Path("/w/a.pt")}})
    nested = {"model": {"name": "net", "files": [PurePosixPath("/w/b.pt")]}}
    for hparams in (stored, nested):
        ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": hparams})
        source = stored_config(ckpt, checkpoint)
        assert source is not None
        assert json.loads(json.dumps(source.data)) == source.data


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({"lr": 0.1, "batch_size": 8}, id="flat"),
        pytest.param({"model": "unet"}, id="model-not-a-section"),
        pytest.param({"a": {"model": {"name": "x"}}, "b": {"model": {"name": "y"}}}, id="two-wrappers"),
    ],
)
def test_flat_hyperparameters_are_a_config_without_a_model_section(tmp_path: Path, stored: Any) -> None:
    """A LightningModule's own arguments (``save_hyperparameters()``): its route builds from them, as they are."""
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    source = stored_config(ckpt, checkpoint)
    assert source is not None and source.data == stored and source.model_key is None


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({}, id="empty"),
        pytest.param(None, id="none"),
        pytest.param([{"model": MODEL}], id="list"),
        pytest.param("model: {name: net}", id="string"),
    ],
)
def test_nothing_that_is_not_a_mapping_of_arguments_is_a_config(tmp_path: Path, stored: Any) -> None:
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {}, "hyper_parameters": stored})
    before = ckpt.path.read_bytes()
    assert stored_config(ckpt, checkpoint) is None
    assert ckpt.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


@pytest.mark.parametrize("obj", [None, [], "text", 3, torch.zeros(2)])
def test_no_config_for_a_checkpoint_that_is_not_a_dict(tmp_path: Path, obj: Any) -> None:
    path = tmp_path / "odd.ckpt"
    path.touch()
    assert stored_config(record_for(path), obj) is None and stored_document(obj) is None


def test_a_checkpoint_without_hyper_parameters_has_none(tmp_path: Path) -> None:
    ckpt, checkpoint = saved(tmp_path, {"state_dict": {"w": torch.zeros(1)}, "epoch": 1})
    assert stored_config(ckpt, checkpoint) is None


def test_plain_turns_containers_into_plain_data() -> None:
    nested = OmegaConf.create({"a": [1, {"b": 2}], "c": "${a}"})
    value = {"x": nested, "y": (1, argparse.Namespace(z=AttributeDict(q=1)))}
    assert plain(value) == {"x": {"a": [1, {"b": 2}], "c": [1, {"b": 2}]}, "y": [1, {"z": {"q": 1}}]}
