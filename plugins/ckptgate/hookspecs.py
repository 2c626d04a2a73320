"""Extension points a project's ``conftest.py`` (or a plugin) implements to teach the gate its models."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_ckptgate_build_model(config: Any, checkpoint: Any) -> Any:
    """Build the (untrained) ``torch.nn.Module`` for a checkpoint, or return None to let the next way try.

    :param config: what the route builds from, as an ``omegaconf.DictConfig`` (a fresh copy): the ``model``
        section, or a LightningModule's arguments with ``--ckpt-lightning-module``.
    :param checkpoint: the :class:`ckptgate.discovery.CheckpointRecord` being checked.

    Tried first; then the route the settings and config choose (``--ckpt-lightning-module``,
    ``--ckpt-model-factory``, a recorded ``class_path``, ``hydra.utils.instantiate`` on ``_target_``).
    """


@pytest.hookspec
def pytest_ckptgate_validate_config(model_config: dict[str, Any], checkpoint: Any) -> list[str] | None:
    """Return problems with a model section that a JSON Schema cannot express (cross-field rules of a
    model family), each starting with its JSON path (``$.model.decoder.params.in_channels: ...``).

    Every implementation is called; their lists are joined. Called only when the schema passed.
    """


@pytest.hookspec(firstresult=True)
def pytest_ckptgate_make_input(model: Any, config: Any, checkpoint: Any, device: Any) -> Any:
    """Return the forward-pass input for a checkpoint (a tensor, a tuple of args or a dict of kwargs),
    already on ``device``, or None for the default: a normal batch of ``--ckpt-input-shape``.

    :param config: the checkpoint's whole config as an ``omegaconf.DictConfig`` (preprocessing included).
    """


@pytest.hookspec
def pytest_ckptgate_forward_kwargs(model: Any, config: Any, checkpoint: Any) -> dict[str, Any] | None:
    """Return keyword arguments for the forward call (``{"return_loss": False}``), or None.

    Every implementation is called; their dicts are merged over ``ckpt_forward_kwargs`` (a key given twice
    by hooks is an error naming it).

    :param config: the checkpoint's whole config as an ``omegaconf.DictConfig``.
    """
