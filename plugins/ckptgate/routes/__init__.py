"""How a checkpoint's model is built: one route per config, chosen in :meth:`Router.choose`, in this order.

0. a ``pytest_ckptgate_build_model`` hook, tried before any route (it may pass by returning None);
1. ``--ckpt-lightning-module pkg.mod:Class``: the LightningModule, as ``load_from_checkpoint`` builds it
   (:mod:`ckptgate.routes.lightning`);
2. ``--ckpt-model-factory pkg.mod:callable``: the team's factory, called with the model section
   (:mod:`ckptgate.routes.factory`);
3. neither, and the config records a class (LightningCLI's ``class_path``, the ``_class_path`` of stored
   hyperparameters): that LightningModule, inside the allowed packages;
4. neither: ``hydra.utils.instantiate`` on the model section's ``_target_`` (:mod:`ckptgate.routes.instantiate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptgate.routes import hook
from ckptgate.routes.factory import FactoryRoute, load_factory
from ckptgate.routes.instantiate import InstantiateRoute
from ckptgate.routes.lightning import FLAT_KINDS, LightningRoute
from ckptgate.routes.protocol import BuildContext, Route, Section

__all__ = ["BuildContext", "Route", "Router", "Section", "hook"]


def records_class(resolved: Any) -> bool:
    """Does the config name its LightningModule itself (LightningCLI)?"""
    if resolved.kind in FLAT_KINDS:
        return isinstance(resolved.data.get("_class_path"), str)
    model = resolved.model
    return isinstance(model, Mapping) and isinstance(model.get("class_path"), str)


@dataclass
class Router:
    """The session's routes (built once: they keep imported classes), and the one place that picks one."""

    lightning_module: str | None = None
    model_factory: str | None = None
    _routes: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._routes = {
            "option": LightningRoute(self.lightning_module) if self.lightning_module else None,
            "factory": FactoryRoute(self.model_factory) if self.model_factory else None,
            "recorded": LightningRoute(None),
            "instantiate": InstantiateRoute(),
        }

    def prepare(self, rootdir: Path) -> None:
        """Import the code the route option names, before any check: a module that cannot be imported (it
        raises, a name it makes at run time is missing) is the session's fault, raised as ``SetupError`` once
        rather than met by every check."""
        if self.model_factory:
            load_factory(self.model_factory, rootdir)
        if self.lightning_module:
            self._routes["option"].option_class(rootdir)

    def choose(self, resolved: Any) -> Route:
        """The route for one config: an option given wins; else the class the config records; else Hydra."""
        if not self._routes["option"] and not self._routes["factory"] and records_class(resolved):
            return self._routes["recorded"]
        return self.default()

    def default(self) -> Route:
        """The route for a bare model section (no config around it to record a class)."""
        return self._routes["option"] or self._routes["factory"] or self._routes["instantiate"]
