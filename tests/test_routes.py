"""ckptgate.routes: the factory spec, importing it from the rootdir, the order hook > route, the choice of a
route, Hydra instantiate and the LightningModule route, with the errors a user sees when each way fails."""

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
from ckptgate.configs import ResolvedConfig
from ckptgate.errors import CheckError
from ckptgate.routes import BuildContext, Router, hook
from ckptgate.routes.factory import load_factory, parse_factory_spec
from ckptgate.routes.protocol import SetupError
from ckptgate.routes.protocol import SpecError as FactorySpecError
from omegaconf import DictConfig

SECTION: dict[str, Any] = {
    "_target_": "torch.nn.Linear",
    "in_features": 3,
    "out_features": 2,
    "component_overrides": {"decoder": {"name": "unet", "channels": [8, 16]}},
}


def build_model(
    section: dict[str, Any],
    checkpoint: Any,
    *,
    hook_relay: Any = None,
    factory: str | None = None,
    module: str | None = None,
    rootdir: Path,
    allowed: tuple[str, ...] = (),
) -> tuple[Any, str]:
    """What the gate does for a sidecar holding ``section``: the hook first, then the route the router picks."""
    resolved = ResolvedConfig("sidecar", rootdir / "x.config.json", "x.config.json", {"model": section}, "model")
    if factory:
        parse_factory_spec(factory)
    route = Router(module, factory).choose(resolved)
    part = route.section(resolved)
    hooked = hook.try_hook(hook_relay, part, checkpoint)
    return hooked if hooked is not None else route.build(part, BuildContext(checkpoint, rootdir, allowed))


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Writes ``source`` as a uniquely named module into tmp_path (the rootdir); returns its name.

    sys.path is restored by monkeypatch (load_factory appends the rootdir to it); the modules imported
    are dropped from sys.modules after the test.
    """
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"ckg_models_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


FACTORY_SOURCE = """
    import torch

    SEEN = []

    def build(cfg):
        SEEN.append(cfg)
        name = cfg.component_overrides.decoder.name  # read by attribute, like the seed team's model class
        cfg.component_overrides.decoder.name = "mutated by the factory"
        return torch.nn.Linear(cfg.in_features, cfg.out_features + (name == "unet"))

    class Net(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.layer = torch.nn.Linear(cfg.in_features, cfg.out_features)

        @classmethod
        def create(cls, cfg):
            return cls(cfg)

    def broken(cfg):
        raise ValueError("decoder 'unet' needs 2 channels")

    def not_a_module(cfg):
        return {"layer": torch.nn.Linear(1, 1)}

    NOT_CALLABLE = 42
"""


def _line_of(needle: str) -> int:
    """The 1-based line of FACTORY_SOURCE, as written to disk, that holds ``needle``."""
    lines = textwrap.dedent(FACTORY_SOURCE).splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


class Hook:
    """Stands in for ``config.hook`` (firstresult): records its calls, answers with ``result``."""

    def __init__(self, result: Any = None, mutate: bool = False, error: Exception | None = None) -> None:
        self.result, self.mutate, self.error = result, mutate, error
        self.calls: list[tuple[Any, Any]] = []

    def pytest_ckptgate_build_model(self, config: Any, checkpoint: Any) -> Any:
        self.calls.append((config, checkpoint))
        if self.mutate:
            config.component_overrides.decoder.name = "mutated by the hook"
        if self.error is not None:
            raise self.error
        return self.result


# -- parse_factory_spec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pkg.mod:fn", ("pkg.mod", "fn")),
        ("mod:Class.create", ("mod", "Class.create")),
        ("fixtures.demo_models:build_model", ("fixtures.demo_models", "build_model")),
        ("_private:_fn", ("_private", "_fn")),
    ],
)
def test_parse_factory_spec_accepts(spec: str, expected: tuple[str, str]) -> None:
    assert parse_factory_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "nocolon",
        ":x",
        "mod:",
        "mod:1bad",
        "os.system; rm",
        "",
        ":",
        "a:b:c",
        "pkg..mod:fn",
        "mod:fn()",
        "a b:c",
        "mod:fn;rm",
    ],
)
def test_parse_factory_spec_rejects(spec: str) -> None:
    with pytest.raises(FactorySpecError) as info:
        parse_factory_spec(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert "expected `module:callable`" in message
    assert "--ckpt-model-factory" in message
    assert isinstance(info.value, ValueError)  # a usage error, not a failing checkpoint


# -- load_factory -------------------------------------------------------------------------------------------


def test_load_factory_imports_from_the_rootdir(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    assert str(tmp_path) not in sys.path
    function = load_factory(f"{name}:build", tmp_path)
    assert function is sys.modules[name].build
    assert str(tmp_path) in sys.path
    load_factory(f"{name}:build", tmp_path)
    assert sys.path.count(str(tmp_path)) == 1  # added once
    assert load_factory(f"{name}:Net.create", tmp_path) == sys.modules[name].Net.create


def test_load_factory_missing_module(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    spec = "ckg_no_such_package.models:build"
    with pytest.raises(CheckError) as info:
        load_factory(spec, tmp_path)
    message = str(info.value)
    assert repr(spec) in message
    assert str(tmp_path) in message
    assert "PYTHONPATH" in message
    assert "ModuleNotFoundError" in message
    assert "ckg_no_such_package" not in sys.modules


def test_load_factory_module_that_fails_to_import(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module("import torch\n\nVALUE = 1 / 0\n")
    with pytest.raises(CheckError) as info:
        load_factory(f"{name}:build", tmp_path)
    assert "ZeroDivisionError" in str(info.value)
    assert f"{tmp_path / name}.py:3" in str(info.value)  # where the import broke


def test_load_factory_missing_attribute(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    with pytest.raises(CheckError, match=f"module '{name}' has no attribute 'make_model'"):
        load_factory(f"{name}:make_model", tmp_path)
    with pytest.raises(CheckError, match=r"has no attribute 'Net\.build'"):
        load_factory(f"{name}:Net.build", tmp_path)


def test_load_factory_not_callable(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    with pytest.raises(
        SetupError,
        match=rf"'{name}:NOT_CALLABLE' \(--ckpt-model-factory / ckpt_model_factory\) is not callable "
        r"\(it is of type int\)",
    ):
        load_factory(f"{name}:NOT_CALLABLE", tmp_path)


# -- build_model: the order hook > factory > instantiate ----------------------------------------------------


def test_hook_wins_and_the_factory_is_not_even_imported(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 7)
    hook = Hook(result=model)
    checkpoint = object()
    built, how = build_model(SECTION, checkpoint, hook_relay=hook, factory="ckg_never_imported:build", rootdir=tmp_path)
    assert built is model
    assert how == "the pytest_ckptgate_build_model hook"
    ((config, passed),) = hook.calls
    assert isinstance(config, DictConfig)
    assert config.component_overrides.decoder.name == "unet"
    assert passed is checkpoint
    assert "ckg_never_imported" not in sys.modules


def test_hook_returning_none_falls_through_to_a_fresh_config_for_the_factory(
    tmp_path: Path, write_module: Callable[[str], str]
) -> None:
    name = write_module(FACTORY_SOURCE)
    section = {**SECTION, "component_overrides": {"decoder": {"name": "unet", "channels": [8, 16]}}}
    original = repr(section)
    hook = Hook(result=None, mutate=True)
    built, how = build_model(section, None, hook_relay=hook, factory=f"{name}:build", rootdir=tmp_path)
    assert how == f"factory {name}:build"
    assert isinstance(built, torch.nn.Linear)
    assert (built.in_features, built.out_features) == (3, 3)  # the factory saw "unet", not the hook's edit
    (seen,) = sys.modules[name].SEEN
    assert isinstance(seen, DictConfig)
    assert seen is not hook.calls[0][0]
    assert hook.calls[0][0].component_overrides.decoder.name == "mutated by the hook"
    assert seen.component_overrides.decoder.name == "mutated by the factory"
    assert repr(section) == original  # neither mutation leaked into the section dict

    build_model(section, None, factory=f"{name}:build", rootdir=tmp_path)  # each call: a new copy
    first, second = sys.modules[name].SEEN
    assert first is not second
    assert second.component_overrides.decoder.name == "mutated by the factory"
    assert repr(section) == original


def test_hook_returning_a_non_module(tmp_path: Path) -> None:
    with pytest.raises(
        CheckError,
        match=re.escape("the pytest_ckptgate_build_model hook returned dict, not a torch.nn.Module"),
    ):
        build_model(SECTION, None, hook_relay=Hook(result={"w": 1}), rootdir=tmp_path)


def test_hook_raising(tmp_path: Path) -> None:
    hook = Hook(error=KeyError("decoder"))
    with pytest.raises(CheckError) as info:
        build_model(SECTION, None, hook_relay=hook, rootdir=tmp_path)
    message = str(info.value)
    assert message.startswith("building the model with the pytest_ckptgate_build_model hook failed: KeyError")
    assert f"{__file__}:" in message  # where it was raised


def test_factory_classmethod(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    built, how = build_model(SECTION, None, factory=f"{name}:Net.create", rootdir=tmp_path)
    assert type(built).__name__ == "Net"
    assert built.layer.out_features == 2
    assert how == f"factory {name}:Net.create"


def test_factory_raising_names_type_and_location(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    with pytest.raises(CheckError) as info:
        build_model(SECTION, None, factory=f"{name}:broken", rootdir=tmp_path)
    message = str(info.value)
    assert f"building the model with factory {name}:broken failed" in message
    assert "ValueError: decoder 'unet' needs 2 channels" in message
    assert f"{tmp_path / name}.py:{_line_of('raise ValueError')})" in message


def test_factory_returning_a_non_module(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    name = write_module(FACTORY_SOURCE)
    with pytest.raises(
        CheckError, match=re.escape(f"factory {name}:not_a_module returned dict, not a torch.nn.Module")
    ):
        build_model(SECTION, None, factory=f"{name}:not_a_module", rootdir=tmp_path)


def test_bad_factory_spec_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(FactorySpecError):
        build_model(SECTION, None, factory="nocolon", rootdir=tmp_path)


def test_missing_factory_module_is_a_check_error(tmp_path: Path, write_module: Callable[[str], str]) -> None:
    with pytest.raises(CheckError, match="cannot import model factory 'ckg_absent:build'"):
        build_model(SECTION, None, factory="ckg_absent:build", rootdir=tmp_path)


def test_instantiate_on_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    section = {"_target_": "torch.nn.Linear", "in_features": 5, "out_features": 4}
    built, how = build_model(section, None, hook_relay=Hook(result=None), rootdir=tmp_path, allowed=("torch.nn",))
    assert isinstance(built, torch.nn.Linear)
    assert built.weight.shape == (4, 5)
    assert how == "hydra.utils.instantiate(torch.nn.Linear)"
    assert section == {"_target_": "torch.nn.Linear", "in_features": 5, "out_features": 4}


def test_instantiate_of_a_single_cfg_class_suggests_a_factory(
    tmp_path: Path, write_module: Callable[[str], str]
) -> None:
    name = write_module(FACTORY_SOURCE)  # importable only from the rootdir: instantiate finds it there
    section = {**SECTION, "_target_": f"{name}.Net"}
    with pytest.raises(CheckError) as info:
        build_model(section, None, rootdir=tmp_path, allowed=(name,))
    message = str(info.value)
    assert f"hydra.utils.instantiate({name}.Net) failed: TypeError" in message
    assert "unexpected keyword argument" in message
    assert "--ckpt-model-factory" in message
    assert "ckpt_model_factory" in message


def test_instantiate_returning_a_non_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(CheckError, match=r"hydra.utils.instantiate\(collections.OrderedDict\) returned OrderedDict"):
        build_model({"_target_": "collections.OrderedDict", "a": 1}, None, rootdir=tmp_path, allowed=("collections",))


@pytest.mark.parametrize("section", [{}, {"in_features": 3}, {"_target_": 5}, {"_target_": None}])
def test_nothing_to_build_with(tmp_path: Path, section: dict[str, Any]) -> None:
    with pytest.raises(CheckError) as info:
        build_model(section, None, hook_relay=Hook(result=None), rootdir=tmp_path)
    message = str(info.value)
    assert "no `_target_`" in message
    assert "ckpt_model_factory" in message
    assert "pytest_ckptgate_build_model" in message


def test_an_allowed_name_that_is_really_something_else_is_refused_before_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mypkg`` is allowed, but ``mypkg.make`` is ``torch.save`` and ``mypkg.T.save`` reaches it through an
    import alias: what the object really is decides, just before Hydra would call it."""
    package = tmp_path / "aliaspkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch as T\nfrom torch import save as make\nfrom torch.nn import Linear\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "aliaspkg", raising=False)
    victim = tmp_path / "overwritten.bin"
    for target in ("aliaspkg.make", "aliaspkg.T.save"):
        section = {"_target_": target, "obj": {"x": 1}, "f": str(victim)}
        with pytest.raises(
            CheckError, match=rf"'{re.escape(target)}' is really 'torch.serialization.save', and `torch"
        ):
            build_model(section, None, rootdir=tmp_path, allowed=("aliaspkg",))
        assert not victim.exists()
    linear = {"_target_": "aliaspkg.Linear", "in_features": 2, "out_features": 3}
    with pytest.raises(CheckError, match=r"is really 'torch.nn.modules.linear.Linear', outside the allowed"):
        build_model(linear, None, rootdir=tmp_path, allowed=("aliaspkg",))
    model, how = build_model(linear, None, rootdir=tmp_path, allowed=("aliaspkg", "torch.nn"))
    assert isinstance(model, torch.nn.Linear) and how == "hydra.utils.instantiate(aliaspkg.Linear)"
