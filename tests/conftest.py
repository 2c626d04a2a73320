"""Shared helpers for ckptgate's own tests.

Heavy libraries are imported here, once, before any in-process ``pytester`` run: pytester restores
``sys.modules`` after each inner run, and torch cannot be imported a second time in one process.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import omegaconf  # noqa: F401
import pytest
import torch
import yaml  # noqa: F401

# A model family of one tiny class that takes a single `cfg`, like real teams' models.
MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            width = int(cfg.width)
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 1))

        def forward(self, x):
            return {"logits": self.body(x)}


    def build(cfg):
        return Net(cfg)
    """
)


def model_section(width: int = 4, **extra: Any) -> dict[str, Any]:
    return {"_target_": "mymodels.Net", "name": "net", "width": width, **extra}


@pytest.fixture(scope="session")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning checkpoint of ``Net(width=4)`` wrapped as ``self.model``, hparams as a DictConfig."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    root = tmp_path_factory.mktemp("lightning")
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_SOURCE, "mymodels.py", "exec"), namespace)

    class Module(pl.LightningModule):
        def __init__(self, cfg: Any) -> None:
            super().__init__()
            self.save_hyperparameters(cfg)
            self.model = namespace["Net"](cfg.model)

        def training_step(self, batch: Any, _: int) -> Any:
            return self.model(batch[0])["logits"].pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    cfg = OmegaConf.create({"model": model_section(), "optimizer": {"lr": 0.01}})
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3, 8, 8)), batch_size=2)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Module(cfg), data)
    path = root / "lightning.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def gate_tree(pytester: pytest.Pytester, lightning_ckpt: Path) -> Callable[..., Path]:
    """Make checkpoints (copies of the real Lightning one) with optional sidecars under ``outputs/``."""
    pytester.makepyfile(mymodels=MODEL_SOURCE)
    pytester.makeini("[pytest]\nckpt_model_factory = mymodels:build\naddopts = -p no:cacheprovider\n")
    outputs = pytester.path / "outputs"
    outputs.mkdir(exist_ok=True)

    def add(relpath: str, config: dict[str, Any] | None = None, *, source: Path | None = None) -> Path:
        path = outputs / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source or lightning_ckpt, path)
        if config is not None:
            path.with_name(path.name.removesuffix(".ckpt") + ".config.json").write_text(json.dumps(config))
        return path

    return add


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo tree (outputs/ + wandb/), built once per session (per xdist worker) by real training."""
    import time

    from fixtures.demo_tree import ensure_demo_tree

    root = tmp_path_factory.mktemp("demo-session") / "demo"
    started = time.perf_counter()
    outputs = ensure_demo_tree(root)
    elapsed = time.perf_counter() - started
    assert outputs == root / "outputs"
    assert elapsed < 40, f"demo build took {elapsed:.1f} s"
    return root
