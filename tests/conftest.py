"""Shared helpers for ckptgate's own tests.

Heavy libraries are imported here, once, before any in-process ``pytester`` run: pytester restores
``sys.modules`` after each inner run, and torch cannot be imported a second time in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import omegaconf  # noqa: F401
import pytest
import torch
import yaml

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


def wandb_run(root: Path, name: str, config: dict, *, started_utc: str | None = None) -> Path:
    """A wandb run folder in the newer layout (every key ``{value: ...}``), as wandb writes it online."""
    files = root / "wandb" / name / "files"
    files.mkdir(parents=True)
    body = {"_wandb": {"value": {"cli_version": "0.19.1"}}} | {key: {"value": value} for key, value in config.items()}
    (files / "config.yaml").write_text(yaml.safe_dump(body))
    if started_utc:
        (files / "wandb-metadata.json").write_text(json.dumps({"startedAt": started_utc, "program": "train.py"}))
    return files / "config.yaml"


# Whether the cuda variant of the forward check runs here (it skips with a reason on a machine without a
# GPU, as in CI): gate runs' expected outcomes depend on it.
GPU = torch.cuda.is_available()
# -p no:NAME for each pytest plugin installed beside the ones these tests are written for (a machine image
# may bring pytest-benchmark, anyio, pytest-cov...): for the inner runs whose result depends on which
# plugins' hooks are loaded.
OUR_PLUGINS = {"ckptgate", "xdist", "xdist.looponfail", "hypothesispytest", "randomly"}
FOREIGN_PLUGINS = sorted({plugin.name for plugin in entry_points(group="pytest11")} - OUR_PLUGINS)
ONLY_OUR_PLUGINS = tuple(arg for name in FOREIGN_PLUGINS for arg in ("-p", f"no:{name}"))


def pythonpath(*first: Path) -> str:
    """``PYTHONPATH`` for a subprocess: ``first``, then whatever makes ckptgate and its dependencies importable
    here (an install may rely on PYTHONPATH, as a machine image with packages in a side folder does)."""
    return os.pathsep.join(p for p in (*map(str, first), os.environ.get("PYTHONPATH")) if p)


def model_section(width: int = 4, **extra: Any) -> dict[str, Any]:
    return {"_target_": "mymodels.Net", "name": "net", "width": width, **extra}


def pytest_configure(config: pytest.Config) -> None:
    """The security suite's figures are printed by the process that prints the summary: under xdist that is
    the controller, which imports this conftest but never ``tests/security/conftest.py``."""
    from security.figures import register

    register(config)


@pytest.fixture(scope="session")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning checkpoint of ``Net(width=4)`` wrapped as ``self.model``, hparams as a DictConfig."""
    from omegaconf import OmegaConf

    from fixtures.demo_training import WrappedModel, fit_and_save

    root = tmp_path_factory.mktemp("lightning")
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_SOURCE, "mymodels.py", "exec"), namespace)
    cfg = OmegaConf.create({"model": model_section(), "optimizer": {"lr": 0.01}})
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3, 8, 8)), batch_size=2)
    path = root / "lightning.ckpt"
    fit_and_save(WrappedModel(cfg, namespace["Net"]), data, path, steps=2)
    return path


@pytest.fixture
def gate_tree(pytester: pytest.Pytester, bare_lightning_ckpt: Path) -> Callable[..., Path]:
    """Make checkpoints (copies of the real Lightning one, without stored hyper_parameters: a checkpoint that
    stores them carries its config) with optional sidecars under ``outputs/``."""
    pytester.makepyfile(mymodels=MODEL_SOURCE)
    pytester.makeini("[pytest]\nckpt_model_factory = mymodels:build\naddopts = -p no:cacheprovider\n")
    outputs = pytester.path / "outputs"
    outputs.mkdir(exist_ok=True)

    def add(relpath: str, config: dict[str, Any] | None = None, *, source: Path | None = None) -> Path:
        path = outputs / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source or bare_lightning_ckpt, path)
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


@pytest.fixture(scope="session")
def bare_lightning_ckpt(lightning_ckpt: Path) -> Path:
    """The same checkpoint as a team that never called ``save_hyperparameters`` has it: no config inside."""
    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    for key in ("hyper_parameters", "hparams_name", "hparams_type"):
        checkpoint.pop(key, None)
    path = lightning_ckpt.with_name("bare.ckpt")
    torch.save(checkpoint, path)
    return path


# ------------------------------------------------------------------ the shipped checks in a subprocess

REPO = Path(__file__).resolve().parents[1]
CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")
DEMO_SCHEMA = REPO / "fixtures" / "demo_model.schema.json"
# The demo family as a team sets up its own: its plugin (cross-field rules), its factory and its schema. The
# schema is passed as one `--ckpt-schema=PATH` word: pytest picks its rootdir (and ini file) from the free
# words of the command line before ckptgate's options are known, and a separate PATH inside this repository
# would root the run here, under our pyproject.toml and conftest.py.
DEMO_OPTIONS = (
    "-p",
    "fixtures.demo_plugin",
    "--ckpt-model-factory",
    "fixtures.demo_models:build_model",
    f"--ckpt-schema={DEMO_SCHEMA}",
    "--ckpt-device",
    "cpu",
    "-p",
    "no:cacheprovider",
)


@dataclass
class DemoRun:
    stdout: str
    returncode: int
    outcomes: dict[str, tuple[str, str]]  # test name -> (passed/failure/error/skipped, message)
    recorded: dict[str, dict[str, str]] = field(default_factory=dict)  # test name -> its JUnit properties

    def properties(self, name: str) -> dict[str, str]:
        return self.recorded.get(name, {})

    def by_check(self, relpath: str) -> dict[str, tuple[str, str]]:
        """The four checks of one checkpoint (cpu forward), by check name."""
        return {
            "config_present": self.outcomes[f"test_config_present[{relpath}]"],
            "config_schema": self.outcomes[f"test_config_schema[{relpath}]"],
            "weights_load": self.outcomes[f"test_weights_load[{relpath}]"],
            "forward": self.outcomes[f"test_forward[{relpath}-cpu]"],
        }


class ChecksRunner:
    """The shipped checks in a fresh pytest process, as a user runs them; outcomes read from JUnit XML."""

    timeout = 300

    def command(self, outputs: Path, workdir: Path, *extra: str) -> tuple[list[str], dict[str, str], Path]:
        """The command line, environment and JUnit XML path of one run (for ``subprocess.Popen``)."""
        xml = workdir / "junit.xml"
        command = [sys.executable, "-m", "pytest", "--pyargs", "ckptgate.checks", "--ckpt-outputs", str(outputs)]
        env = {**os.environ, "PYTHONPATH": pythonpath(REPO)}
        return [*command, *DEMO_OPTIONS, *extra, "--junitxml", str(xml)], env, xml

    def run(self, outputs: Path, workdir: Path, *extra: str) -> DemoRun:
        command, env, xml = self.command(outputs, workdir, *extra)
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=self.timeout)
        return self.result(done.stdout, done.returncode, xml)

    @staticmethod
    def result(stdout: str, returncode: int, xml: Path) -> DemoRun:
        if not xml.exists():
            raise AssertionError(f"pytest exited {returncode} without a JUnit report:\n{stdout[-3000:]}")
        outcomes: dict[str, tuple[str, str]] = {}
        recorded: dict[str, dict[str, str]] = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = child.tag, child.get("message", "") + "\n" + (child.text or "")
            outcomes[case.get("name", "")] = (outcome, message)
            recorded[case.get("name", "")] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        return DemoRun(stdout, returncode, outcomes, recorded)


@pytest.fixture(scope="session")
def checks() -> ChecksRunner:
    """Runs the shipped checks (``--pyargs ckptgate.checks``) with the demo family in a subprocess."""
    return ChecksRunner()
