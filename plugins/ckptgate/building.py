"""Build the model a checkpoint's config describes: a hook, else a factory, else Hydra's instantiate.

Real teams' model classes often take a single ``cfg`` read by attribute
(``cfg.component_overrides.decoder.name``), so their ``_target_`` is informational and not
keyword-instantiable: the factory receives the model section as an ``omegaconf.DictConfig``, exactly what
those classes expect.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckptgate import targets
from ckptgate.errors import CheckError, describe_exception


class FactorySpecError(ValueError):
    """``--ckpt-model-factory`` is not of the form ``module:callable``: a usage error."""


def parse_factory_spec(spec: str) -> tuple[str, str]:
    module, sep, attribute = spec.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not sep or not module or not attribute or not all(part.isidentifier() for part in parts):
        raise FactorySpecError(
            f"--ckpt-model-factory {spec!r}: expected `module:callable`, e.g. `mypkg.models:build_model`"
        )
    return module, attribute


def ensure_importable_from(rootdir: Path) -> None:
    """Model code is imported from the rootdir too, as a user's ``python -c 'import mypkg'`` there would."""
    entry = str(rootdir)
    if entry not in sys.path:
        sys.path.append(entry)


def load_factory(spec: str, rootdir: Path) -> Callable[..., Any]:
    """Import ``module:callable``; errors say where Python looked."""
    module_name, attribute = parse_factory_spec(spec)
    ensure_importable_from(rootdir)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CheckError(
            f"cannot import model factory {spec!r} (--ckpt-model-factory / ckpt_model_factory): "
            f"{describe_exception(exc)}. It must be importable from the rootdir ({rootdir}), pytest's "
            "`pythonpath` ini option or PYTHONPATH."
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CheckError(f"model factory {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise CheckError(f"model factory {spec!r} is not callable (it is of type {type(target).__name__})")
    return target


def _check_module(model: Any, how: str) -> Any:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CheckError(f"{how} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(
    section: dict[str, Any],
    checkpoint: Any,
    *,
    hook: Any = None,
    factory: str | None = None,
    rootdir: Path,
    allowed: tuple[str, ...] = (),
) -> tuple[Any, str]:
    """The model for a model section, and a phrase saying how it was built (for messages)."""
    from omegaconf import OmegaConf

    def cfg() -> Any:  # a fresh copy each time: a factory may mutate what it is given
        return OmegaConf.create(section)

    if hook is not None:
        how = "the pytest_ckptgate_build_model hook"
        try:
            model = hook.pytest_ckptgate_build_model(config=cfg(), checkpoint=checkpoint)
        except Exception as exc:
            raise CheckError(f"building the model with {how} failed: {describe_exception(exc)}") from None
        if model is not None:
            return _check_module(model, how), how
    if factory:
        how = f"factory {factory}"
        function = load_factory(factory, rootdir)
        try:
            model = function(cfg())
        except Exception as exc:
            raise CheckError(f"building the model with {how} failed: {describe_exception(exc)}") from None
        return _check_module(model, how), how
    target = section.get("_target_")
    if not isinstance(target, str):
        raise CheckError(
            "cannot build a model: the model section has no `_target_`, no --ckpt-model-factory is set and no "
            "pytest_ckptgate_build_model hook answered. Set `ckpt_model_factory = mypkg.models:build_model` "
            "in your pytest ini (it receives the model section as a DictConfig)."
        )
    how = f"hydra.utils.instantiate({target})"
    ensure_importable_from(rootdir)
    refused = targets.resolved_errors(section, allowed, base="$.model")
    if refused:
        raise CheckError(f"refused to build the model: {refused[0]}")
    from hydra.utils import instantiate

    try:
        model = instantiate(cfg())
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ImportError):
            hint = (
                f"{target} must be importable from the rootdir ({rootdir}), pytest's `pythonpath` ini option "
                "or PYTHONPATH."
            )
        else:
            hint = (
                f"If {target} takes a single `cfg` argument, set --ckpt-model-factory (ckpt_model_factory) to a "
                "callable that receives the model section as a DictConfig."
            )
        raise CheckError(f"building the model with {how} failed: {describe_exception(cause)}. {hint}") from None
    return _check_module(model, how), how
