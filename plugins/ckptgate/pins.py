"""Pins: what each checkpoint computes, recorded once and compared on every forward check.

A strict load proves that the weights fit the architecture; it does not prove that the model still computes
what it computed when it was validated. A config that builds the same shapes with another activation, or a
refactor of the model code under unchanged checkpoints, loads and runs finitely, and is wrong. A pin is a
fingerprint of the forward check's own outputs (the same seeded input and keyword arguments): per output
tensor its shape, dtype, a few robust statistics and its values at fixed positions. ``--ckpt-pins FILE``
compares each forward check against it; ``--ckpt-pins-update`` records it.

The file is one reviewable JSON document, sorted, one entry per checkpoint path (like the baseline), with
the environment the pin was taken in (torch version, device), the config's hash and the model's package
version, so that a drift says what changed since. A pin taken on another device or torch version is compared
with :data:`CROSS_FACTOR` times the tolerances: kernels differ there in the last bits, never by a relu.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptgate.results import read_kept

FORMAT = "ckptgate-pins"
VERSION = 1
DEFAULT_RTOL = 1e-4  # CPU float32 on one machine: repeated runs agree far closer; a relu/gelu swap differs by 1e-1
DEFAULT_ATOL = 1e-5
CROSS_FACTOR = 100.0  # pins from another device or torch version: 100x both tolerances (1e-2, 1e-3 by default)
POSITIONS = 16  # values kept per output tensor, evenly spread over its flattened elements
STATISTICS = ("mean", "std", "abs_mean", "min", "max")

PINNED, UNPINNED, DRIFTED, UPDATED = "pinned", "unpinned", "drifted", "updated"


class PinsError(Exception):
    """The pins file is unreadable or not a pins file: a usage error naming the file."""


# -- the fingerprint ------------------------------------------------------------------------------------
def tensor_fingerprint(tensor: Any) -> dict[str, Any]:
    """Shape, dtype, statistics and values at fixed positions of one output tensor (computed in float64 on the
    CPU, so a pin taken on a GPU compares with one taken on a CPU)."""
    import torch

    flat = tensor.detach().to("cpu").flatten()
    values = flat.to(torch.complex128 if flat.is_complex() else torch.float64)
    if values.is_complex():
        values = torch.view_as_real(values).flatten()
    count = values.numel()
    positions = sorted({round(i * (count - 1) / max(POSITIONS - 1, 1)) for i in range(min(count, POSITIONS))})
    stats: dict[str, float] = {}
    if count:
        stats = {
            "mean": values.mean().item(),
            "std": values.std(correction=0).item(),
            "abs_mean": values.abs().mean().item(),
            "min": values.min().item(),
            "max": values.max().item(),
        }
    return {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "stats": stats,
        "positions": positions,
        "values": [values[p].item() for p in positions],
    }


def output_fingerprints(tensors: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{output path: fingerprint}`` of the forward outputs (paths as the forward check names them)."""
    return {path: tensor_fingerprint(tensor) for path, tensor in tensors}


def config_hash(data: Any) -> str:
    """A stable hash of the config the model was built from (keys sorted; what JSON cannot spell, as text)."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_version(model: Any) -> str | None:
    """``litproj 0.3.1``: the installed distribution of the model class's top-level package, when there is one
    (a model kept in the repository, not installed, has none: then a code change shows only as a drift)."""
    return _distribution_version(type(model).__module__.split(".")[0])


@functools.lru_cache(maxsize=64)
def _distribution_version(top: str) -> str | None:
    if top in sys.stdlib_module_names or top in ("torch", "builtins"):
        return None
    for dist in _distributions().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    """Top-level package -> distributions: read once per process (it scans every installed package, ~70 ms)."""
    return importlib.metadata.packages_distributions()


@dataclass(frozen=True)
class Pin:
    """One checkpoint's pin: its outputs' fingerprints and what they were taken with."""

    outputs: dict[str, dict[str, Any]]
    device: str  # "cpu" | "cuda"
    torch: str
    config: str  # config_hash of the resolved config
    model: str  # the model's class, dotted
    package: str | None  # package_version of the model's code
    input: str  # forward.describe_input: what the model was given

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "device": self.device,
            "input": self.input,
            "model": self.model,
            "package": self.package,
            "torch": self.torch,
            "outputs": {path: self.outputs[path] for path in sorted(self.outputs)},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pin:
        outputs = data["outputs"]
        if not isinstance(outputs, Mapping) or not all(isinstance(v, Mapping) for v in outputs.values()):
            raise TypeError("outputs must map output paths to fingerprints")
        return cls(
            outputs={str(k): dict(v) for k, v in outputs.items()},
            device=str(data["device"]),
            torch=str(data["torch"]),
            config=str(data["config"]),
            model=str(data["model"]),
            package=None if data.get("package") is None else str(data["package"]),
            input=str(data.get("input", "")),
        )


# -- comparing ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """How a forward pass compares with its pin: ``drift`` is empty when it agrees within tolerance."""

    drift: str
    cross: bool  # compared across devices or torch versions, with the wider tolerance


def _numbers(fingerprint: Mapping[str, Any]) -> list[tuple[str, float]]:
    named = [(name, float(fingerprint["stats"][name])) for name in STATISTICS if name in fingerprint["stats"]]
    return named + [
        (f"value at {p}", float(v)) for p, v in zip(fingerprint["positions"], fingerprint["values"], strict=True)
    ]


def _difference(pinned: Mapping[str, Any], now: Mapping[str, Any], rtol: float, atol: float) -> str | None:
    """Why one output differs from its pin beyond tolerance, or None."""
    if pinned["shape"] != now["shape"] or pinned["dtype"] != now["dtype"]:
        return f"is {now['dtype']} {now['shape']}, pinned {pinned['dtype']} {pinned['shape']}"
    if pinned["positions"] != now["positions"]:
        return "was fingerprinted at other positions (the pins file was edited?)"
    worst_abs, worst_rel, where, beyond = 0.0, 0.0, "", False
    for (name, then), (_, value) in zip(_numbers(pinned), _numbers(now), strict=True):
        if math.isnan(then) and math.isnan(value):
            continue
        gap = abs(value - then)
        if math.isnan(gap) or gap > atol + rtol * abs(then):
            beyond = True
        if math.isnan(gap) or gap > worst_abs:
            worst_abs, where = gap, name
        worst_rel = max(worst_rel, gap / abs(then) if then else (math.inf if gap else 0.0))
    if not beyond:
        return None
    return f"differs by up to {worst_abs:.3g} (relative {worst_rel:.3g}, at its {where})"


def compare(pin: Pin, now: Pin, rtol: float, atol: float) -> Comparison:
    """Compare a forward pass with its pin; the drift message names the outputs, the largest absolute and
    relative differences, the tolerance and what changed since the pin was taken."""
    cross = (pin.device, pin.torch) != (now.device, now.torch)
    if cross:
        rtol, atol = rtol * CROSS_FACTOR, atol * CROSS_FACTOR
    problems = []
    for path in sorted(set(pin.outputs) | set(now.outputs)):
        if path not in now.outputs:
            problems.append(f"{path} is gone")
        elif path not in pin.outputs:
            problems.append(f"{path} is new")
        else:
            why = _difference(pin.outputs[path], now.outputs[path], rtol, atol)
            if why is not None:
                problems.append(f"{path} {why}")
    if not problems:
        return Comparison("", cross)
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more outputs" if len(problems) > 3 else "")
    across = " (pinned on another device or torch version: 100x the tolerances)" if cross else ""
    return Comparison(
        f"computes something else than its pin (since the pin: {changes(pin, now)}): {shown} (tolerance rtol "
        f"{rtol:g}, atol {atol:g}{across}); if that is intended, re-pin with --ckpt-pins-update",
        cross,
    )


def changes(pin: Pin, now: Pin) -> str:
    """What differs between the pin's record and now; when nothing recorded did, the model code did."""
    found = []
    for label, then, value in (
        ("config", pin.config, now.config),
        ("model class", pin.model, now.model),
        ("model package", pin.package, now.package),
        ("torch", pin.torch, now.torch),
        ("device", pin.device, now.device),
        ("input", pin.input, now.input),
    ):
        if then != value:
            found.append(f"{label} {then or 'unknown'} -> {value or 'unknown'}")
    if found:
        return ", ".join(found)
    return "config, model class, package, torch, device and input unchanged: the model's code or a library it calls"


# -- the file -------------------------------------------------------------------------------------------
def load(path: Path) -> dict[str, Pin]:
    """The pins of a file; an absent file holds none (the first ``--ckpt-pins-update`` creates it)."""
    document = read_kept(path, (FORMAT, VERSION, "pins file"), "--ckpt-pins", "--ckpt-pins-update", PinsError)
    if document is None:
        return {}
    pins: dict[str, Pin] = {}
    for relpath, entry in (document.get("checkpoints") or {}).items():
        try:
            pins[relpath] = Pin.from_json(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PinsError(
                f"--ckpt-pins {path}: the entry of {relpath} is not a pin ({type(exc).__name__}: {exc}); "
                "re-create it with --ckpt-pins-update"
            ) from None
    return pins


def document(pins: Mapping[str, Pin]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "checkpoints": {relpath: pins[relpath].to_json() for relpath in sorted(pins)},
    }


def updated(previous: Mapping[str, Pin], taken: Mapping[str, Pin], existing: set[str] | None) -> dict[str, Pin]:
    """The pins after an update: this run's replace their checkpoints' old ones; checkpoints this run did not
    pin keep theirs (a ``-k`` run, a shard or an unusable checkpoint must not lose its pin), except those whose
    file is gone (``existing``: every checkpoint path; None when unknown, as in a shard)."""
    kept = {relpath: pin for relpath, pin in previous.items() if existing is None or relpath in existing}
    return {**kept, **taken}


def merge(documents: Iterable[Mapping[str, Pin]]) -> dict[str, Pin]:
    """The pins of several shards' files in one; a checkpoint pinned differently in two files is refused."""
    merged: dict[str, Pin] = {}
    for pins in documents:
        for relpath, pin in pins.items():
            if relpath in merged and merged[relpath] != pin:
                raise PinsError(f"{relpath} is pinned differently in two of the files: pin it again in one run")
            merged[relpath] = pin
    return merged
