"""The checkpoint's own ``hyper_parameters`` (Lightning's ``save_hyperparameters``) as evidence.

Read from the object the safe, weights-only loader returned: OmegaConf containers become plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from ckptgate.discovery import CheckpointRecord
from ckptgate.documents import check_shape
from ckptgate.recovery.evidence import Source
from ckptgate.recovery.wandb_runs import unflatten


def plain(value: Any) -> Any:
    """OmegaConf containers, AttributeDicts and Namespaces as plain dicts and lists; paths as strings (a
    sidecar is JSON: the config proven must be the one written)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        try:
            return plain(OmegaConf.to_container(value, resolve=True))
        except Exception:  # an interpolation that does not resolve: keep what can be kept
            return plain(OmegaConf.to_container(value, resolve=False))
    if isinstance(value, PurePath):  # the weights-only loader admits paths (Lightning saves them)
        return str(value)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return plain(vars(value))
    return value


def source(ckpt: CheckpointRecord, checkpoint: Any) -> Source | None:
    """The stored hyperparameters as a source, when they hold a model section.

    They come from the file, through the weights-only loader: data only, but any shape a crafted pickle can
    build (a list that holds itself, 100,000 levels of nesting, an OmegaConf container with broken insides).
    What cannot be read as a bounded config is no evidence.
    """
    if not isinstance(checkpoint, Mapping):
        return None
    try:
        stored = checkpoint.get("hyper_parameters")
        if stored is None:
            return None
        config = plain(stored)
        if not isinstance(config, dict):
            return None
        config = unflatten(config)
        check_shape(config, "hyper_parameters")
    except Exception:  # RecursionError, DocumentError, whatever a malformed container raises
        return None
    found = Source(kind="checkpoint", label="hyper_parameters stored in the checkpoint", path=ckpt.path, config=config)
    return found if found.model_key is not None else None
