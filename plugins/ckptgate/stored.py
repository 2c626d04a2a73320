"""The checkpoint's own ``hyper_parameters`` (Lightning's ``save_hyperparameters``), as a config.

Read from the object the safe, weights-only loader returned: OmegaConf containers, AttributeDicts and
Namespaces become plain data. They are the last config source (``load_from_checkpoint`` builds from them),
and what every other config of the checkpoint is compared with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from ckptgate.configs import ResolvedConfig, find_model_key
from ckptgate.discovery import CheckpointRecord
from ckptgate.documents import check_shape

KIND = "checkpoint"


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


def stored_document(checkpoint: Any) -> dict[str, Any] | None:
    """The stored hyperparameters as plain data; None when there are none (or they are empty).

    They come from the file, through the weights-only loader: data only, but any shape a crafted pickle can
    build (a list that holds itself, 100,000 levels of nesting, an OmegaConf container with broken insides).
    What cannot be read as a bounded config is no config.
    """
    from ckptgate.recovery.wandb_runs import unflatten

    if not isinstance(checkpoint, Mapping):
        return None
    try:
        stored = checkpoint.get("hyper_parameters")
        if stored is None:
            return None
        config = plain(stored)
        if not isinstance(config, dict) or not config:
            return None
        config = unflatten(config)
        check_shape(config, "hyper_parameters")
    except Exception:  # RecursionError, DocumentError, whatever a malformed container raises
        return None
    return config


def stored_config(ckpt: CheckpointRecord, checkpoint: Any) -> ResolvedConfig | None:
    """The stored hyperparameters as the config the checkpoint carries itself."""
    data = stored_document(checkpoint)
    if data is None:
        return None
    return ResolvedConfig(KIND, ckpt.path, ckpt.relpath, data, find_model_key(data))
