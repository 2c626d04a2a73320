"""Read a checkpoint without executing it, and load its weights strictly into a model.

``torch.load(weights_only=True, mmap=True)`` always; the only globals allowed beyond torch's own are the
harmless containers Lightning and Hydra checkpoints carry (OmegaConf configs in ``hyper_parameters``,
``argparse.Namespace``, paths). Before loading, the pickle is disassembled (nothing runs) so that a refusal
can name every global at once. ``--ckpt-trust-pickle`` is the explicit opt-out.
"""

from __future__ import annotations

import importlib
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptgate.errors import CheckError, first_line

# Found in real Lightning 2.x checkpoints that saved OmegaConf/argparse hyperparameters, and in
# callback/loop states. Each is a data container whose unpickling runs no user code.
HARMLESS_GLOBALS: tuple[str, ...] = (
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.set",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.bytes",
    "collections.defaultdict",
    "collections.OrderedDict",
    "typing.Any",
    "argparse.Namespace",
    "pathlib.PosixPath",
    "pathlib.PurePosixPath",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Int64DType",
    "numpy.dtypes.Int32DType",
    "numpy.dtypes.BoolDType",
)

_ZIP_MAGIC = b"PK\x03\x04"
_SMALLEST_CHECKPOINT = 22  # the smallest zip (an end-of-central-directory record) has 22 bytes
_PICKLE_PROTO = 0x80
# torch words a refusal two ways: most as "WeightsUnpickler error: ...", but a global of a module it blocks
# outright (os, posix, nt, sys) as a bare "Trying to load unsupported GLOBAL posix.system whose module ...".
_UNPICKLER_ERROR = re.compile(
    r"WeightsUnpickler error:\s*(?P<reason>[^\n]+)|(?P<blocked>Trying to load unsupported GLOBAL [^\n]+)"
)


# Lightning's AttributeDict is a dict subclass; read as a plain dict it gives the same data without importing
# Lightning (seconds), and the weights-only unpickler fills only real dicts ("Can only SETITEMS for dict").
_STANDINS: dict[str, Any] = {name: dict for name in HARMLESS_GLOBALS if name.endswith(".AttributeDict")}
# Cheap to import; anything else (numpy) is resolved only when a checkpoint names it.
_EAGER_MODULES = frozenset({"builtins", "collections", "typing", "argparse", "pathlib", "omegaconf"})


def _resolve_global(name: str) -> Any | None:
    """The object a dotted global names, or None when its module is not installed."""
    if name in _STANDINS:
        return _STANDINS[name]
    module_name, _, attribute = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attribute, None)


def _file_format(path: Path) -> str:
    """ "zip" (torch>=1.6), "legacy" (old pickle stream) or raise with what the file really is."""
    if path.is_dir():
        raise CheckError(
            "is a directory, not a single-file checkpoint (a DeepSpeed or distributed checkpoint?); convert it "
            "with Lightning's `convert_zero_checkpoint_to_fp32_state_dict` to test it"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckError(f"cannot open: {exc.strerror or exc}") from None
    size = path.stat().st_size
    if not head:
        raise CheckError("is empty (0 bytes): an interrupted save or copy?")
    if size < _SMALLEST_CHECKPOINT and (_ZIP_MAGIC.startswith(head) or head[0] == _PICKLE_PROTO):
        raise CheckError(f"is truncated: only {size} bytes, too few for any torch.save file")
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise CheckError(
                f"is a truncated or corrupt torch.save archive ({size:,} bytes; the zip's central directory is "
                "missing): an interrupted save or copy? Re-copy it from its source"
            )
        return "zip"
    if head[0] == _PICKLE_PROTO:
        return "legacy"
    raise CheckError(f"is not a PyTorch checkpoint (starts with bytes {head!r}, {size:,} bytes in all)")


def _refusal(names: Iterable[str]) -> CheckError:
    listed = ", ".join(sorted(names))
    return CheckError(
        f"refused to load: its pickle names globals outside the safe allowlist: {listed}. Nothing in the file "
        "was executed. If you trust this file, allow them with `ckpt_safe_globals` in your pytest ini, or pass "
        "--ckpt-trust-pickle (which lets the pickle run code)"
    )


def _safe_globals_for(path: Path, fmt: str, allowed: tuple[str, ...]) -> list[tuple[Any, str]]:
    """(object, name) pairs to allow for this file; refuses up front, naming every unsafe global."""
    import torch

    names: list[str] | None = None
    if fmt == "zip":
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # opcodes the scanner does not know: the weights-only unpickler still decides
            names = None
    if names is None:  # legacy format or unscannable: offer the cheap harmless ones, torch enforces the rest
        names_known = False
        wanted = [
            n
            for n in allowed
            if n in _STANDINS
            or n.split(".")[0] in _EAGER_MODULES
            or n.split(".")[0] in sys.modules  # already imported (numpy, by torch): costs nothing
            or n not in HARMLESS_GLOBALS  # the user's own ckpt_safe_globals
        ]
    else:
        names_known = True
        wanted = list(names)
        if any(n.startswith("numpy.") for n in names):  # a numpy scalar also needs its dtype class, which
            # the scanner does not list; offer the harmless ones (skipped below when numpy lacks them)
            wanted += [n for n in allowed if n.startswith("numpy.dtypes.") and n not in wanted]
    refused = [name for name in wanted if name not in allowed]
    if refused:
        raise _refusal(refused)
    pairs = []
    for name in wanted:
        obj = _resolve_global(name)
        if obj is None:
            if names_known and name in names:
                raise CheckError(
                    f"needs {name} to unpickle its metadata, but that module is not installed here; install it"
                )
            continue
        pairs.append((obj, name))
    return pairs


def read_checkpoint(
    path: Path,
    *,
    map_location: Any = "cpu",
    trust_pickle: bool = False,
    extra_safe_globals: Iterable[str] = (),
) -> Any:
    """The object ``torch.save`` wrote, loaded weights-only (memory-mapped when the format allows)."""
    import torch

    fmt = _file_format(path)
    mmap = fmt == "zip"
    try:
        if trust_pickle:
            return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        allowed = HARMLESS_GLOBALS + tuple(extra_safe_globals)
        with torch.serialization.safe_globals(_safe_globals_for(path, fmt, allowed)):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except CheckError:
        raise
    except Exception as exc:
        text = str(exc)
        match = _UNPICKLER_ERROR.search(text)
        if match:
            reason = (match.group("reason") or match.group("blocked")).strip().rstrip(".")
            raise CheckError(
                f"refused to load: the weights-only unpickler stopped at: {reason}. Nothing in the file was executed"
            ) from None
        if isinstance(exc, EOFError) or "unexpected EOF" in text:
            raise CheckError(
                f"is truncated: its data ends early ({path.stat().st_size:,} bytes; {type(exc).__name__}): "
                "an interrupted save or copy? Re-copy it from its source"
            ) from None
        raise CheckError(f"cannot read the checkpoint: {type(exc).__name__}: {first_line(text)}") from None


def state_dict_of(obj: Any) -> Mapping[str, Any]:
    """The weights: Lightning's ``state_dict`` entry, or the object itself when it is a plain state dict."""
    import torch

    if isinstance(obj, Mapping):
        inner = obj.get("state_dict")
        if isinstance(inner, Mapping):
            return inner
        if obj and all(isinstance(value, torch.Tensor) for value in obj.values()):
            return obj
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        raise CheckError(f"has no `state_dict` (top-level keys: {keys}); is it a Lightning checkpoint?")
    raise CheckError(f"holds a {type(obj).__name__}, not a checkpoint dict with a `state_dict`")


def detect_prefix(checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> str:
    """The prefix the Lightning wrapper adds (``model.``, ``net._orig_mod.``...), found by key overlap."""
    model = set(model_keys)
    keys = list(checkpoint_keys)
    counts: Counter[str] = Counter()
    for key in keys:
        if key in model:
            counts[""] += 1
        dot = key.find(".")
        while dot != -1:
            if key[dot + 1 :] in model:
                counts[key[: dot + 1]] += 1
            dot = key.find(".", dot + 1)
    if counts:
        return max(counts.items(), key=lambda item: (item[1], -len(item[0])))[0]
    firsts = {key.split(".", 1)[0] for key in keys if "." in key}
    if len(firsts) == 1 and all("." in key for key in keys):  # nothing fits, but the wrapper is plain
        return firsts.pop() + "."
    return ""


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None


@dataclass
class KeyDiff:
    """How a checkpoint's weights and a model's parameters disagree."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        def listed(items: list[str]) -> str:
            more = f", … (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = [
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched keys"
        ]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {listed(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {listed(self.unexpected)}")
        if self.mismatched:
            shown = [
                f"{key}: checkpoint {list(ckpt) if ckpt else '?'} vs model {list(model) if model else '?'}"
                for key, ckpt, model in self.mismatched
            ]
            lines.append(f"  shape mismatch ({len(self.mismatched)}): {listed(shown)}")
        return "\n".join(lines)


def compare(weights: Mapping[str, Any], model_state: Mapping[str, Any]) -> KeyDiff:
    diff = KeyDiff()
    diff.missing = sorted(key for key in model_state if key not in weights)
    diff.unexpected = sorted(key for key in weights if key not in model_state)
    for key in sorted(set(weights) & set(model_state)):
        ckpt_shape, model_shape = _shape(weights[key]), _shape(model_state[key])
        if ckpt_shape != model_shape:
            diff.mismatched.append((key, ckpt_shape, model_shape))
    return diff


@dataclass(frozen=True)
class LoadReport:
    """What a successful strict load did."""

    prefix: str
    loaded: int
    ignored: tuple[str, ...]  # checkpoint keys outside the prefix (loss buffers, metrics of the wrapper)


def load_weights(model: Any, state_dict: Mapping[str, Any], *, how: str = "the model") -> LoadReport:
    """Load strictly into ``model``; raises ``CheckError`` listing missing/unexpected/mismatched keys."""
    model_state = model.state_dict()
    prefix = detect_prefix(state_dict, model_state)
    weights = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    ignored = tuple(sorted(key for key in state_dict if not key.startswith(prefix)))
    diff = compare(weights, model_state)
    shown_prefix = f"checkpoint prefix {prefix!r}" if prefix else "no checkpoint prefix"
    if not weights:
        raise CheckError(f"no weights to load: the checkpoint's state_dict is empty ({shown_prefix})")
    if not diff.ok:
        raise CheckError(f"weights do not fit {how} ({shown_prefix}): {diff.describe()}")
    try:
        model.load_state_dict(weights, strict=True)
    except Exception as exc:
        raise CheckError(f"load_state_dict into {how} failed: {type(exc).__name__}: {first_line(str(exc))}") from None
    return LoadReport(prefix, len(weights), ignored)
