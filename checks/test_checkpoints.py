"""Is each checkpoint usable for inference? Four checks, each a prerequisite of the next.

A check whose prerequisite failed fails too, with a one-line pointer to the root cause: it never skips,
so a CI gate that selects only ``-k forward`` still goes red.
"""

from __future__ import annotations

from typing import Any


def test_config_present(checkpoint: Any, ckpt_gate: Any) -> None:
    """A config is found: a sidecar beside the checkpoint, the run's Hydra folder, a logger's hparams.yaml,
    LightningCLI's config.yaml, or the hyper_parameters stored in the checkpoint itself.

    The source used is recorded on every test of the checkpoint (``config_source`` in JUnit XML)."""
    ckpt_gate.config(checkpoint)


def test_config_schema(checkpoint: Any, ckpt_gate: Any) -> None:
    """The model section fits the JSON Schema, the route's checks (a LightningModule's signature) and the family's
    rules, and names only allowed targets."""
    ckpt_gate.validated(checkpoint)


def test_weights_load(checkpoint: Any, ckpt_gate: Any, record_property: Any) -> None:
    """The weights (read weights-only) are finite, the config agrees with the checkpoint's own hyper_parameters,
    and the model built from it takes the weights strictly. Records how it was built (``model_route``)."""
    loaded = ckpt_gate.loaded(checkpoint)
    record_property("weights", loaded.describe())


def test_forward(checkpoint: Any, ckpt_device: Any, ckpt_gate: Any, record_property: Any) -> None:
    """One forward pass on a dummy batch gives finite, batch-sized tensors on this device."""
    result = ckpt_gate.forward(checkpoint, ckpt_device.type)
    record_property(f"forward_{ckpt_device.type}", result.describe())
