"""ckptgate.recovery.verify: a candidate config is proven only by the weights (build, strict load, forward).

Also holds the tiny model family that ``test_recover.py`` builds its trees with.
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import configs
from ckptgate.discovery import CheckpointRecord, discover
from ckptgate.gate import Gate, GateSettings
from ckptgate.recovery.evidence import Candidate, Source, Tier
from ckptgate.recovery.verify import Verifier

# A model family of one class taking a single `cfg` (read by attribute), like real teams' models. `variant`
# changes the submodule names (weights of one variant give missing + unexpected keys in the other), `width`
# the shapes; `boom` fails in forward. `build` counts its calls.
FAMILY_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    BUILDS = []


    class Net(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            width = int(cfg.width)
            self.variant = str(cfg.get("variant", "a"))
            if self.variant == "b":
                self.stem = nn.Conv2d(3, width, 3, padding=1)
                self.head = nn.Conv2d(width, 2, 1)
            else:
                self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 1))

        def forward(self, x):
            if self.variant == "boom":
                raise RuntimeError("this variant cannot run")
            if self.variant == "b":
                return {"logits": self.head(torch.relu(self.stem(x)))}
            return {"logits": self.body(x)}


    def build(cfg):
        BUILDS.append(cfg.get("note"))
        return Net(cfg)
    """
)


def section(width: int = 4, **extra: Any) -> dict[str, Any]:
    return {"name": "net", "width": width, **extra}


@dataclass
class Family:
    """A model package written to ``root`` under a unique name, importable from there."""

    name: str
    root: Path

    @property
    def factory(self) -> str:
        return f"{self.name}:build"

    @property
    def module(self) -> Any:
        return importlib.import_module(self.name)

    def builds(self) -> list[Any]:
        return self.module.BUILDS

    def weights(self, width: int = 4, variant: str = "a", *, seed: int = 0, nan: bool = False) -> dict[str, Any]:
        from omegaconf import OmegaConf

        torch.manual_seed(seed)
        net = self.module.Net(OmegaConf.create({"width": width, "variant": variant}))
        state = {f"model.{key}": value for key, value in net.state_dict().items()}
        if nan:
            state = {key: torch.full_like(value, float("nan")) for key, value in state.items()}
        return state

    def checkpoint(self, path: Path, width: int = 4, *, hparams: Any = None, **kwargs: Any) -> Path:
        """A Lightning-shaped checkpoint (``state_dict`` under ``model.``, optional ``hyper_parameters``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "state_dict": self.weights(width, **kwargs),
            "epoch": 1,
            "global_step": 4,
            "pytorch-lightning_version": "2.6.6",
        }
        if hparams is not None:
            data["hyper_parameters"] = hparams
        torch.save(data, path)
        return path

    def gate(self, outputs: Path, **settings: Any) -> Gate:
        settings.setdefault("model_factory", self.factory)
        return Gate(GateSettings(outputs_dir=outputs, rootdir=self.root, **settings))


def family_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Family]:
    """A fresh family per test (its own module name: imports never leak between tests)."""
    root = tmp_path / "code"
    root.mkdir()
    name = f"ckg_family_{uuid.uuid4().hex[:12]}"
    (root / f"{name}.py").write_text(FAMILY_SOURCE)
    monkeypatch.setattr(sys, "path", [*sys.path, str(root)])  # restored after the test
    configs.clear_cache()
    yield Family(name, root)
    configs.clear_cache()
    for module in [m for m in sys.modules if m.startswith(("ckg_family_", "ckg_evil_"))]:
        del sys.modules[module]


family = pytest.fixture(family_fixture, name="family")


def record(outputs: Path, relpath: str) -> CheckpointRecord:
    return discover(outputs).by_relpath()[relpath]


def wandb_source(label: str, config: dict[str, Any], path: Path | None = None) -> Source:
    return Source(kind="wandb", label=label, path=path or Path("/nowhere") / label, config=config)


def candidate(source: Source, tier: Tier = Tier.TIMESTAMP) -> Candidate:
    return Candidate(source, tier, "run started 1 s after the folder's timestamp")


def verifier(gate: Gate, ckpt: CheckpointRecord) -> Verifier:
    checkpoint, state_dict, device = gate.read(ckpt, "cpu")
    return Verifier(gate, ckpt, checkpoint, state_dict, device)


RELPATH = "exp_20251017_215423/checkpoints/best.ckpt"


@pytest.fixture
def outputs(tmp_path: Path, family: Family) -> Iterator[Path]:
    """One checkpoint; after the test, the outputs tree must be exactly as it was (verifying writes nothing)."""
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / RELPATH)
    before = snapshot(outputs)
    yield outputs
    assert snapshot(outputs) == before


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- tests


def test_a_matching_config_is_proven(family: Family, outputs: Path) -> None:
    gate = family.gate(outputs)
    ckpt = record(outputs, RELPATH)
    config = {"model": section(), "preprocessing": {"size": [64, 64]}, "optimizer": {"lr": 0.1}}
    attempt = verifier(gate, ckpt).attempt(candidate(wandb_source("wandb run-a", config)))
    assert attempt.verified, attempt.reason
    assert attempt.reason == (
        f"4 tensors loaded strictly into factory {family.factory} (prefix 'model.'); forward ok (1 output tensors)"
    )
    assert attempt.document == {"model": section(), "preprocessing": {"size": [64, 64]}}  # not the optimizer


def test_a_config_whose_model_does_not_fit_is_rejected_with_counts(family: Family, outputs: Path) -> None:
    gate = family.gate(outputs)
    check = verifier(gate, record(outputs, RELPATH))
    other_names = check.attempt(candidate(wandb_source("wandb run-b", {"model": section(variant="b")})))
    assert not other_names.verified
    assert "weights do not fit" in other_names.reason
    assert "4 missing, 4 unexpected, 0 shape-mismatched keys" in other_names.reason
    wider = check.attempt(candidate(wandb_source("wandb run-w", {"model": section(width=8)})))
    assert not wider.verified
    assert "0 missing, 0 unexpected, 3 shape-mismatched keys" in wider.reason


def test_a_target_outside_the_allowlist_is_rejected_before_anything_is_imported(
    family: Family, outputs: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "IMPORTED"
    evil = f"ckg_evil_{uuid.uuid4().hex[:12]}"
    (family.root / f"{evil}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "from torch import nn\n"
        "class Net(nn.Conv2d):\n    def __init__(self, **kw):\n        super().__init__(3, 2, 1)\n"
    )
    # no factory: the target would be instantiated by Hydra, i.e. imported, were it not refused first
    gate = family.gate(outputs, model_factory=None, target_allow=(family.name,))
    check = verifier(gate, record(outputs, RELPATH))
    for target in (f"{evil}.Net", "os.system", "builtins.open"):
        attempt = check.attempt(candidate(wandb_source("wandb run-x", {"model": section(_target_=target)})))
        assert not attempt.verified
        assert attempt.reason.startswith("config rejected before building: $.model._target_: `_target_`")
        assert f"{target!r}" in attempt.reason and "Nothing was imported" in attempt.reason
    assert not marker.exists()
    assert evil not in sys.modules
    assert family.builds() == []


def test_non_finite_outputs_do_not_reject_a_config(family: Family, tmp_path: Path) -> None:
    """Diverged weights load fine into the right model: the config is right, the forward check says the rest."""
    outputs = tmp_path / "outputs"
    family.checkpoint(outputs / RELPATH, nan=True)
    before = snapshot(outputs)
    attempt = verifier(family.gate(outputs), record(outputs, RELPATH)).attempt(
        candidate(wandb_source("wandb run-a", {"model": section()}))
    )
    assert attempt.verified, attempt.reason
    assert "forward runs (its outputs are not finite: the weights are bad)" in attempt.reason
    assert snapshot(outputs) == before


def test_a_forward_pass_that_fails_rejects_the_config(family: Family, outputs: Path) -> None:
    attempt = verifier(family.gate(outputs), record(outputs, RELPATH)).attempt(
        candidate(wandb_source("wandb run-a", {"model": section(variant="boom")}))
    )
    assert not attempt.verified
    assert "forward pass on cpu failed" in attempt.reason and "this variant cannot run" in attempt.reason


def test_identical_documents_are_proven_once(family: Family, outputs: Path) -> None:
    check = verifier(family.gate(outputs), record(outputs, RELPATH))
    same = {"model": section(note="x")}
    first = check.attempt(candidate(wandb_source("wandb run-1", same)))
    second = check.attempt(candidate(wandb_source("wandb run-2", {"model": section(note="x")}, Path("/b"))))
    third = check.attempt(candidate(wandb_source("Hydra run 2", {"model": section(note="x")}), Tier.NAMES_FOLDER))
    assert family.builds() == ["x"]  # one build for three candidates with the same document
    assert [a.verified for a in (first, second, third)] == [True, True, True]
    assert first.reason == second.reason == third.reason
    assert second.candidate.source.label == "wandb run-2"  # each attempt keeps its own candidate
    different = check.attempt(candidate(wandb_source("wandb run-3", {"model": section(note="y")})))
    assert different.verified
    assert family.builds() == ["x", "y"]
    rejected = {"model": section(variant="b")}
    check.attempt(candidate(wandb_source("wandb run-4", rejected)))
    again = check.attempt(candidate(wandb_source("wandb run-5", rejected)))
    assert not again.verified and family.builds() == ["x", "y", None]  # a failure is remembered too


def test_a_config_without_a_model_section_is_rejected_without_building(family: Family, outputs: Path) -> None:
    attempt = verifier(family.gate(outputs), record(outputs, RELPATH)).attempt(
        candidate(wandb_source("wandb run-a", {"optimizer": {"lr": 0.1}, "seed": 3}))
    )
    assert not attempt.verified
    assert attempt.reason == "its config has no `model` section"
    assert attempt.document is None
    assert family.builds() == []


def test_schema_problems_reject_before_building(family: Family, outputs: Path) -> None:
    bad = {"model": {"name": "", "width": 4, "decoder": {"class_path": "not a class"}, "head": {"class_path": 3}}}
    attempt = verifier(family.gate(outputs), record(outputs, RELPATH)).attempt(
        candidate(wandb_source("wandb run-a", bad))
    )
    assert not attempt.verified
    assert attempt.reason.startswith("config rejected before building: $.model")
    assert re.search(r"\(\+\d+ more\)$", attempt.reason)  # the first problem, and how many others
    assert family.builds() == []


def test_a_model_section_under_a_wrapping_key_is_proven(family: Family, outputs: Path) -> None:
    config = {"cfg": {"model": section(), "preprocessing": {"size": [32, 32]}}, "seed": 1}
    attempt = verifier(family.gate(outputs), record(outputs, RELPATH)).attempt(
        candidate(wandb_source("hyper_parameters", config))
    )
    assert attempt.verified, attempt.reason
    assert attempt.document == {"model": section(), "preprocessing": {"size": [32, 32]}}
