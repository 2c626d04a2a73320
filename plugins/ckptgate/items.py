"""What a collected test is about: which checkpoint, and which check (shared by reports, cache, scheduling)."""

from __future__ import annotations

import pytest

from ckptgate.discovery import CheckpointRecord


def checkpoint_of(item: pytest.Item) -> CheckpointRecord | None:
    """The checkpoint a test is parametrized with, or None for tests that are not about one."""
    callspec = getattr(item, "callspec", None)
    record = callspec.params.get("checkpoint") if callspec is not None else None
    return record if isinstance(record, CheckpointRecord) else None


def check_label(item: pytest.Item) -> str:
    """``config_present``, ``forward[cpu]``, or a user's own ``my_check``: the reports' name for a test."""
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    device = callspec.params.get("ckpt_device") if callspec is not None else None
    return f"{name}[{device}]" if device else name


def label_device(label: str) -> str:
    """The device of a check label: ``cpu`` for ``forward[cpu]``, "" for a check that runs on none."""
    return label.partition("[")[2].removesuffix("]")
