"""The ``pytest_ckptgate_build_model`` hook: tried before any route, it may build or pass (return None).

It sees the checkpoint, not only the section, so the models it builds are never reused for another checkpoint.
"""

from __future__ import annotations

from typing import Any

from ckptgate.errors import CheckError, describe_exception
from ckptgate.routes.protocol import Section, check_module

HOW = "the pytest_ckptgate_build_model hook"


def implemented(hook: Any) -> bool:
    """Whether the relay has an implementation (a stand-in object with the method counts as one)."""
    caller = getattr(hook, "pytest_ckptgate_build_model", None)
    impls = getattr(caller, "get_hookimpls", None)
    return caller is not None and (impls is None or bool(impls()))


def try_hook(hook: Any, section: Section, checkpoint: Any) -> tuple[Any, str] | None:
    """The hook's model, or None when no implementation answered."""
    if not implemented(hook):
        return None
    from omegaconf import OmegaConf

    try:
        model = hook.pytest_ckptgate_build_model(config=OmegaConf.create(section.args), checkpoint=checkpoint)
    except Exception as exc:
        raise CheckError(f"building the model with {HOW} failed: {describe_exception(exc)}") from None
    return None if model is None else (check_module(model, HOW), HOW)
