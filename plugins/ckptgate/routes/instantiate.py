"""No option set: ``hydra.utils.instantiate`` on the model section's ``_target_``, inside the allowed packages.

The by-name target check ran at validation; just before the call, what each ``_target_`` really is (its
``__module__``) must lie inside the allowed prefixes too (:func:`ckptgate.targets.resolved_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ckptgate import targets
from ckptgate.errors import CheckError, describe_exception
from ckptgate.routes.protocol import BuildContext, ModelSectionRoute, Section, check_module, ensure_importable_from

NO_ROUTE = (
    "cannot build a model: the model section has no `_target_`, no pytest_ckptgate_build_model hook answered, and "
    "no route is set. For a LightningModule set `ckpt_lightning_module = mypkg.models:LitModel` in your pytest ini "
    "(built as load_from_checkpoint builds it); for a model class that takes the model section, set "
    "`ckpt_model_factory = mypkg.models:build_model` (it receives the section as a DictConfig)."
)


@dataclass(frozen=True)
class InstantiateRoute(ModelSectionRoute):
    name: str = "instantiate"
    hint: str = (
        "If the checkpoint's hyperparameters are a LightningModule's arguments, set --ckpt-lightning-module "
        "pkg.module:Class."
    )

    def build(self, section: Section, context: BuildContext) -> tuple[Any, str]:
        target = section.args.get("_target_")
        if not isinstance(target, str):
            raise CheckError(NO_ROUTE)
        how = f"hydra.utils.instantiate({target})"
        ensure_importable_from(context.rootdir)
        refused = targets.resolved_errors(section.args, context.allowed, base=section.path)
        if refused:
            raise CheckError(f"refused to build the model: {refused[0]}")
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        try:
            model = instantiate(OmegaConf.create(section.args))
        except Exception as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, ImportError):
                hint = (
                    f"{target} must be importable from the rootdir ({context.rootdir}), pytest's `pythonpath` ini "
                    "option or PYTHONPATH."
                )
            else:
                hint = (
                    f"If {target} takes a single `cfg` argument, set --ckpt-model-factory (ckpt_model_factory) to "
                    f"a callable that receives the model section as a DictConfig; if it is a LightningModule, set "
                    f"--ckpt-lightning-module (ckpt_lightning_module)."
                )
            raise CheckError(f"building the model with {how} failed: {describe_exception(cause)}. {hint}") from None
        return check_module(model, how), how
