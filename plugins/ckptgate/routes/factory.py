"""``--ckpt-model-factory module:callable``: the team's own function (or class) receives the model section.

Real teams' model classes often take a single ``cfg`` read by attribute (``cfg.component_overrides.decoder.name``),
so their ``_target_`` is informational and cannot be keyword-instantiated: the factory receives the model
section as an ``omegaconf.DictConfig``, exactly what those classes expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptgate.errors import CheckError, describe_exception
from ckptgate.routes.protocol import (
    BuildContext,
    ModelSectionRoute,
    Section,
    SetupError,
    check_module,
    import_spec,
    parse_spec,
)

OPTION = "--ckpt-model-factory / ckpt_model_factory"


def parse_factory_spec(spec: str) -> tuple[str, str]:
    return parse_spec(spec, "--ckpt-model-factory", "mypkg.models:build_model")


def load_factory(spec: str, rootdir: Path) -> Callable[..., Any]:
    """Import ``module:callable``; errors say where Python looked."""
    target = import_spec(spec, OPTION, "model factory", rootdir)
    if not callable(target):
        raise SetupError(f"model factory {spec!r} ({OPTION}) is not callable (it is of type {type(target).__name__})")
    return target


@dataclass(frozen=True)
class FactoryRoute(ModelSectionRoute):
    spec: str = ""
    name: str = "factory"
    hint: str = (
        "The factory is called with it; a LightningModule's flat arguments are built with "
        "--ckpt-lightning-module pkg.module:Class instead."
    )

    def build(self, section: Section, context: BuildContext) -> tuple[Any, str]:
        from omegaconf import OmegaConf

        how = f"factory {self.spec}"
        function = load_factory(self.spec, context.rootdir)
        try:
            model = function(OmegaConf.create(section.args))  # a fresh copy: a factory may mutate what it gets
        except Exception as exc:
            raise CheckError(f"building the model with {how} failed: {describe_exception(exc)}") from None
        return check_module(model, how), how
