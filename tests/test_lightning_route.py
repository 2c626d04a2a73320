"""ckptgate.routes.lightning: a LightningModule rebuilt as ``load_from_checkpoint`` rebuilds it.

What it builds from (flat hyperparameters, LightningCLI's two config forms), the class (the option's, or the one
the config records, inside the allowed packages), the signature check (required, unknown, typed arguments, with
jsonargparse), the single-``cfg`` form of ``save_hyperparameters(cfg)``, and the build itself.
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate.configs import ResolvedConfig, find_model_key
from ckptgate.errors import CheckError
from ckptgate.routes import BuildContext, Router
from ckptgate.routes.lightning import LightningRoute
from ckptgate.routes.signature import plain_annotation
from omegaconf import DictConfig

MODULE = """
    import torch
    from omegaconf import DictConfig
    from lightning.pytorch import LightningModule


    class Lit(LightningModule):
        def __init__(self, channels: int = 4, depth: int = 2, act: str = "relu", lr: float = 0.01):
            super().__init__()
            self.save_hyperparameters()
            layers = [torch.nn.Conv2d(3, channels, 3, padding=1)]
            for _ in range(depth - 1):
                activation = torch.nn.GELU() if act == "gelu" else torch.nn.ReLU()
                layers += [activation, torch.nn.Conv2d(channels, channels, 1)]
            self.net = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)


    class LitChild(Lit):
        configured = 0

        def configure_model(self):
            LitChild.configured += 1


    class Other(LightningModule):
        def __init__(self, width: int = 2):
            super().__init__()
            self.layer = torch.nn.Linear(width, width)


    class Cfg(LightningModule):
        def __init__(self, cfg: DictConfig, verbose: bool = False):
            super().__init__()
            self.layer = torch.nn.Linear(int(cfg.model.width), 2)


    class Injected(LightningModule):
        def __init__(self, backbone: torch.nn.Module, scale: float = 1.0):
            super().__init__()
            self.backbone = backbone


    class Anything(LightningModule):
        def __init__(self, width: int = 2, **kwargs):
            super().__init__()
            self.layer = torch.nn.Linear(width, 2)
    """


@pytest.fixture
def lit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], tuple[str, Path]]]:
    """Write the module under a unique name into tmp_path (the rootdir); give (name, rootdir)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"ckg_lit_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    importlib.invalidate_caches()
    yield lambda: (name, tmp_path)
    sys.modules.pop(name, None)


def resolved(kind: str, data: dict[str, Any]) -> ResolvedConfig:
    return ResolvedConfig(kind, Path(f"/x/{kind}.yaml"), f"{kind}.yaml", data, find_model_key(data))


def context(rootdir: Path, *allowed: str, stored: Any = None) -> BuildContext:
    return BuildContext(None, rootdir, allowed, stored)


# -- what it builds from ---------------------------------------------------------------------------------------
def test_flat_hyperparameters_are_the_arguments_without_lightnings_own_keys() -> None:
    route = LightningRoute("pkg:Lit")
    data = {"channels": 4, "act": "gelu", "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    for kind in ("hparams", "checkpoint"):
        section = route.section(resolved(kind, data))
        assert (section.args, section.path, section.class_path) == ({"channels": 4, "act": "gelu"}, "$", None)
    recorded = route.section(resolved("checkpoint", {**data, "_class_path": "pkg.Lit"}))
    assert (recorded.class_path, recorded.class_path_at) == ("pkg.Lit", "$._class_path")


def test_lightningcli_configs_in_both_forms() -> None:
    route = LightningRoute(None)
    subclass = {"trainer": {}, "model": {"class_path": "pkg.Lit", "init_args": {"depth": 3}}}
    section = route.section(resolved("cli", subclass))
    assert (section.args, section.path, section.class_path) == ({"depth": 3}, "$.model.init_args", "pkg.Lit")
    plain = route.section(resolved("cli", {"trainer": {}, "model": {"depth": 3}}))
    assert (plain.args, plain.path, plain.class_path) == ({"depth": 3}, "$.model", None)
    with pytest.raises(CheckError, match=r"\$\.model\.init_args: expected a mapping"):
        route.section(resolved("cli", {"model": {"class_path": "pkg.Lit", "init_args": [1]}}))
    with pytest.raises(CheckError, match=r"has no `model` section.*LightningCLI"):
        route.section(resolved("cli", {"trainer": {}}))


def test_the_router_takes_a_recorded_class_only_when_no_option_names_one() -> None:
    subclass = resolved("cli", {"model": {"class_path": "pkg.Lit", "init_args": {}}})
    assert Router().choose(subclass).name == "lightning"
    assert Router().choose(resolved("sidecar", {"model": {"_target_": "pkg.Net"}})).name == "instantiate"
    assert Router(model_factory="pkg:build").choose(subclass).name == "factory"
    assert Router(lightning_module="pkg:Lit").choose(resolved("sidecar", {"model": {}})).name == "lightning"


# -- the signature check ----------------------------------------------------------------------------------------
def test_arguments_are_checked_against_the_signature_with_their_json_paths(lit: Callable[[], tuple[str, Path]]) -> None:
    name, root = lit()
    route = LightningRoute(f"{name}:Lit")

    def problems(args: dict[str, Any], kind: str = "hparams") -> list[str]:
        return route.problems(route.section(resolved(kind, args)), context(root))

    assert problems({"channels": 4, "depth": 3}) == []
    assert problems({"channels": 4, "bogus": 1}) == [
        "$.bogus: Lit.__init__ takes no argument `bogus` (it takes: channels, depth, act, lr)"
    ]
    (wrong,) = problems({"channels": "four"})
    assert wrong.startswith("$.channels: ") and "int" in wrong and "four" in wrong
    (nested,) = problems({"model": {"channels": [1, "x"]}}, kind="sidecar")
    assert nested.startswith("$.model.channels: ")


def test_required_untyped_and_injected_arguments(lit: Callable[[], tuple[str, Path]]) -> None:
    name, root = lit()
    injected = LightningRoute(f"{name}:Injected")
    section = injected.section(resolved("hparams", {"scale": 2.0}))
    assert injected.problems(section, context(root)) == [
        "$: missing the required argument `backbone` of Injected.__init__"
    ]
    # a module given as a class_path object is checked (and refused outside the allowed packages before import)
    given = {"backbone": {"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 2}}}
    assert injected.problems(injected.section(resolved("hparams", given)), context(root)) == []
    anything = LightningRoute(f"{name}:Anything")
    assert anything.problems(anything.section(resolved("hparams", {"width": 3, "extra": "ok"})), context(root)) == []


def test_hyperparameters_saved_from_one_cfg_object_are_that_argument(lit: Callable[[], tuple[str, Path]]) -> None:
    """``save_hyperparameters(cfg)``: hparams.yaml holds cfg's content; Lightning passes it as ``cfg``."""
    name, root = lit()
    route = LightningRoute(f"{name}:Cfg")
    section = route.section(resolved("hparams", {"model": {"width": 3}, "optimizer": {"lr": 0.1}}))
    assert route.problems(section, context(root)) == []
    model, how = route.build(section, context(root))
    assert model.layer.in_features == 3
    assert how.startswith(f"LightningModule {name}.Cfg")
    # the checkpoint's hparams_name says so even when the keys would fit another argument
    args = route.arguments(section, sys.modules[name].Cfg, {"hparams_name": "cfg"})
    assert isinstance(args["cfg"], DictConfig) and args["cfg"].model.width == 3


def test_plain_annotations_are_type_checked_and_classes_are_not() -> None:
    assert all(map(plain_annotation, (int, str, list[int], dict[str, float], int | None, tuple[int, ...])))
    assert not any(map(plain_annotation, (DictConfig, torch.nn.Module, Any, list[torch.nn.Module])))


# -- the class ------------------------------------------------------------------------------------------------
def test_a_recorded_class_must_be_a_subclass_of_the_options(lit: Callable[[], tuple[str, Path]]) -> None:
    name, root = lit()
    route = LightningRoute(f"{name}:Lit")
    child = route.section(resolved("cli", {"model": {"class_path": f"{name}.LitChild", "init_args": {"depth": 3}}}))
    model, _ = route.build(child, context(root, name))
    assert type(model).__name__ == "LitChild" and sys.modules[name].LitChild.configured == 1  # configure_model ran
    other = route.section(resolved("cli", {"model": {"class_path": f"{name}.Other", "init_args": {}}}))
    with pytest.raises(CheckError, match=rf"records the class '{name}.Other', which is not a subclass of {name}:Lit"):
        route.build(other, context(root, name))


def test_a_recorded_class_outside_the_allowed_packages_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "ckg_hostile_lit.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Lit: pass\n")
    route = LightningRoute(None)
    section = route.section(resolved("checkpoint", {"_class_path": "ckg_hostile_lit.Lit", "width": 2}))
    problems = route.problems(section, context(tmp_path, "torch.nn"))
    assert len(problems) == 1 and "outside the allowed module prefixes" in problems[0]
    assert "ckpt_target_allow = ckg_hostile_lit" in problems[0]
    with pytest.raises(CheckError, match="refused to build the model"):
        route.build(section, context(tmp_path, "torch.nn"))
    assert not marker.exists() and "ckg_hostile_lit" not in sys.modules


def test_no_class_anywhere_names_the_option(tmp_path: Path) -> None:
    route = LightningRoute(None)
    with pytest.raises(CheckError, match=re.escape("--ckpt-lightning-module pkg.module:Class")):
        route.build(route.section(resolved("hparams", {"width": 2})), context(tmp_path))


# -- building as load_from_checkpoint does -------------------------------------------------------------------------
def test_it_builds_what_load_from_checkpoint_builds(lit: Callable[[], tuple[str, Path]]) -> None:
    name, root = lit()
    route = LightningRoute(f"{name}:Lit")
    stored = {"channels": 5, "depth": 3, "act": "gelu", "lr": 0.1}
    model, _ = route.build(route.section(resolved("checkpoint", stored)), context(root))
    ours = model.state_dict()
    theirs = sys.modules[name].Lit(**stored).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert isinstance(model.net[1], torch.nn.GELU)
    assert route.loads_whole_state_dict()


def test_lightningcli_modules_are_built_by_jsonargparse_with_their_injected_objects(
    lit: Callable[[], tuple[str, Path]],
) -> None:
    name, root = lit()
    route = LightningRoute(f"{name}:Injected")
    args = {"backbone": {"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 3}}}
    stored = {"hyper_parameters": {**args, "_instantiator": "lightning.pytorch.cli.instantiate_module"}}
    model, _ = route.build(route.section(resolved("hparams", args)), context(root, "torch.nn", stored=stored))
    assert isinstance(model.backbone, torch.nn.Linear) and model.backbone.out_features == 3
