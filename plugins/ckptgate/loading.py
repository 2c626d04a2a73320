"""Read a checkpoint without executing it, and load its weights strictly into a model.

``torch.load(weights_only=True, mmap=True)`` always; the only globals allowed beyond torch's own are the
harmless containers Lightning and Hydra checkpoints carry (OmegaConf configs in ``hyper_parameters``,
``argparse.Namespace``, paths). Before loading, the pickle is disassembled (nothing runs) so that a refusal
can name every global at once. ``--ckpt-trust-pickle`` is the explicit opt-out.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import pickletools
import re
import struct
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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
_UNSUPPORTED_OPCODE = re.compile(r"Unsupported operand (\d+)")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")
# torch's own words for an archive whose records do not add up, and what they mean to someone with a file.
_ARCHIVE_ERRORS = (
    (re.compile(r"failed locating file (\S+): file not found"), "the archive has no `{0}` record"),
    (re.compile(r'Expected hasRecord\("([^"]+)"\)'), "the archive has no `{0}` record"),
    (
        re.compile(r"Trying to resize storage that is not resizable"),
        "a tensor's data record is shorter than the tensor it holds",
    ),
    (re.compile(r"storage has wrong byte size"), "a tensor's stored size does not match its data"),
    (
        re.compile(r"failed reading zip archive"),
        "its zip directory does not add up (a record runs past the end of the file, or overlaps another)",
    ),
)
# A torch.save archive holds one record per storage plus a handful; far more is a crafted central directory
# whose listing alone would cost memory.
MAX_ARCHIVE_ENTRIES = 200_000


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
        _check_archive(path, size)
        return "zip"
    if head[0] == _PICKLE_PROTO:
        return "legacy"
    raise CheckError(f"is not a PyTorch checkpoint (starts with bytes {head!r}, {size:,} bytes in all)")


def _entry_count(path: Path) -> int | None:
    """How many entries the zip's end record announces (read before listing them); None when unknown."""
    end_record = getattr(zipfile, "_EndRecData", None)  # the stdlib's own reader, zip64 included
    if end_record is None:
        return None
    try:
        with path.open("rb") as handle:
            found = end_record(handle)
    except Exception:
        return None
    return int(found[zipfile._ECD_ENTRIES_TOTAL]) if found else None


def _check_archive(path: Path, size: int) -> None:
    """Refuse a zip that is not a torch.save archive as written: its entries (:func:`_check_entries`), then
    its tensors' data records (:func:`_check_storages`), with the central directory parsed once."""
    count = _entry_count(path)
    if count is not None and count > MAX_ARCHIVE_ENTRIES:
        raise CheckError(
            f"refused to load: its zip directory announces {count:,} entries (a torch.save archive holds one per "
            f"tensor storage; the limit is {MAX_ARCHIVE_ENTRIES:,}). Nothing in the file was executed"
        )
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, a zip64 record that does not add up, an OSError...
        raise CheckError(
            f"is a truncated or corrupt torch.save archive ({size:,} bytes; its zip directory does not parse: "
            f"{type(exc).__name__}: {first_line(str(exc))}): an interrupted save or copy? Re-copy it from its source"
        ) from None
    with archive:
        _check_entries(archive.infolist())
        _check_storages(archive)


def _check_entries(entries: list[zipfile.ZipInfo]) -> None:
    """Refuse what ``torch.save`` never writes and zip readers may disagree about, from the central directory
    alone (nothing is decompressed or unpickled): duplicate names, entries outside the archive's one folder or
    with path-traversal names, compressed or encrypted entries, no ``data.pkl``."""
    if not entries:
        raise CheckError("is an empty zip archive, not a torch.save checkpoint")
    refused = "Nothing in the file was executed"
    folder = entries[0].filename.split("/", 1)[0]  # torch reads every record from the first entry's folder
    if any(entry.filename == f"{folder}/constants.pkl" for entry in entries):
        raise CheckError(
            "is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: ckptgate does not load "
            "TorchScript (loading it compiles the archive's code). Save the state_dict with torch.save to test it"
        )
    seen: set[str] = set()
    for entry in entries:
        name = entry.filename
        parts = name.split("/")
        if name in seen:
            raise CheckError(
                f"refused to load: its zip holds the entry {name!r} more than once; zip readers disagree on which "
                f"copy counts (a zip trick?). {refused}"
            )
        seen.add(name)
        if name.startswith("/") or ".." in re.split(r"[\\/]", name):  # torch never extracts; other tools may
            raise CheckError(
                f"refused to load: its zip has an entry with a path-traversal or absolute name {name!r}. {refused}"
            )
        if len(parts) < 2 or parts[0] != folder:
            raise CheckError(
                f"refused to load: its zip entry {name!r} lies outside the archive's folder {folder + '/'!r} "
                f"(torch.save puts every record in one folder: a second archive smuggled in?). {refused}"
            )
        if entry.flag_bits & 0x1:
            raise CheckError(f"refused to load: its zip entry {name!r} is encrypted. {refused}")
        if entry.compress_type != zipfile.ZIP_STORED:
            raise CheckError(
                f"is not a torch.save archive as written: its entry {name!r} is compressed (zip method "
                f"{entry.compress_type}), torch.save stores every record uncompressed so that it can be "
                "memory-mapped; re-zipped by another tool? Re-save it with torch.save"
            )
    if f"{folder}/data.pkl" not in seen:
        shown = ", ".join(sorted(seen)[:4]) + (", …" if len(seen) > 4 else "")
        raise CheckError(f"is a zip archive without {folder}/data.pkl, not a torch.save checkpoint (entries: {shown})")


class _Stub:
    """Whatever a pickle names while its storages are counted: no real global is imported or called."""

    qualified = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _StorageCounter(pickle.Unpickler):
    """Reads a torch.save pickle with every global replaced by a stub, to list the storages it claims:
    ``{key: (storage type, numel)}``. Nothing the pickle names is imported, nothing it calls runs."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.storages: dict[str, tuple[str, int]] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified not in self._classes:
            self._classes[qualified] = type("Stub", (_Stub,), {"qualified": qualified})
        return self._classes[qualified]

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage"):
            _, kind, key, _, numel = pid
            if isinstance(numel, int) and isinstance(key, (str, bytes)):
                name = key.decode("ascii", "replace") if isinstance(key, bytes) else key
                self.storages[name] = (getattr(kind, "qualified", ""), numel)
        return _Stub()


def _element_size(storage_type: str) -> int | None:
    """Bytes per element of a pickled storage type (``torch.FloatStorage``); None when unknown."""
    import torch

    name = storage_type.rpartition(".")[2]
    if name == "UntypedStorage":
        return 1
    try:  # torch's own table of pickled storage names (no attribute of torch is looked up by a name from the file)
        return torch._utils._element_size(torch.serialization.StorageType(name).dtype)
    except Exception:
        return None


def _check_storages(archive: zipfile.ZipFile) -> None:
    """Every tensor's data record must hold the bytes its pickle claims. Memory-mapped loading takes a
    record's offset and the claimed size without comparing them with the record's own: a record cut short
    (a damaged or crafted archive) would silently lend the bytes after it to the tensor."""
    entries = archive.infolist()
    folder = entries[0].filename.split("/", 1)[0]
    sizes = {entry.filename: entry.file_size for entry in entries}
    try:
        counter = _StorageCounter(archive.read(f"{folder}/data.pkl"))
        counter.load()
    except Exception:  # a pickle this reader cannot follow: the weights-only loader decides about it
        return
    for key, (storage_type, numel) in sorted(counter.storages.items()):
        itemsize = _element_size(storage_type)
        record = f"{folder}/data/{key}"
        if itemsize is None:
            continue
        if record not in sizes:
            raise CheckError(
                f"is a truncated, corrupt or crafted torch.save file: the archive has no `{record}` record for a "
                "tensor its pickle holds"
            )
        if numel * itemsize > sizes[record]:
            raise CheckError(
                f"is a truncated, corrupt or crafted torch.save file: the tensor data record `{record}` holds "
                f"{sizes[record]:,} bytes where its pickle needs {numel * itemsize:,}"
            )


def _explained(text: str) -> str | None:
    """What torch's message about a malformed archive means, or None when it is not one of those."""
    for pattern, meaning in _ARCHIVE_ERRORS:
        found = pattern.search(text)
        if found:
            return meaning.format(*found.groups())
    return None


def _named_opcode(reason: str) -> str:
    """``Unsupported operand 147`` -> ``Unsupported operand 147 (pickle opcode STACK_GLOBAL)``."""
    found = _UNSUPPORTED_OPCODE.search(reason)
    if found is None:
        return reason
    code = int(found.group(1))
    opcode = pickletools.code2op.get(chr(code)) if code < 256 else None
    name = opcode.name if opcode is not None else "unknown to pickle"
    return f"{reason} (pickle opcode {name})"


def _readable(name: str) -> str:
    """A global as Python 3 names it: protocol-2 pickles spell modules the Python 2 way (``commands.Popen`` is
    ``subprocess.Popen``), and torch reports them as written."""
    import _compat_pickle

    module, _, attribute = name.rpartition(".")
    mapped = _compat_pickle.NAME_MAPPING.get((module, attribute))
    python3 = ".".join(mapped) if mapped else f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attribute}"
    return name if python3 == name else f"{python3} (pickled as {name})"


def _refusal(names: Iterable[str]) -> CheckError:
    listed = ", ".join(sorted(_readable(name) for name in names))
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


_CUT_SHORT = ("exhausted", "not enough data", "no newline found", "remain")


def _legacy_cut_short(path: Path) -> bool:
    """Whether a legacy torch file ends inside one of its five pickles (magic number, protocol, system info,
    the object, the storage keys). Read with ``pickletools.genops``, which parses opcodes and runs nothing."""
    try:
        with path.open("rb") as handle:
            for _ in range(5):
                for _opcode in pickletools.genops(handle):
                    pass
    except ValueError as exc:
        return any(words in str(exc) for words in _CUT_SHORT)
    except Exception:
        return False
    return False


@contextlib.contextmanager
def _torch_path(path: Path) -> Iterator[str]:
    """A name torch's C++ reader can open: the path itself, or for a name that is not UTF-8 (torch encodes
    paths as UTF-8 and fails on it) the same file through ``/proc/self/fd`` (memory-mapping works there too)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield name
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CheckError(f"cannot open: {exc.strerror or exc}") from None
    try:
        proc = f"/proc/self/fd/{fd}"
        if not os.path.exists(proc):
            raise CheckError("has a name that is not valid UTF-8, which torch cannot open here: rename it")
        yield proc
    finally:
        os.close(fd)


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
        with _torch_path(path) as name:
            if trust_pickle:
                return torch.load(name, map_location=map_location, weights_only=False, mmap=mmap)
            allowed = HARMLESS_GLOBALS + tuple(extra_safe_globals)
            with torch.serialization.safe_globals(_safe_globals_for(Path(name), fmt, allowed)):
                return torch.load(name, map_location=map_location, weights_only=True, mmap=mmap)
    except CheckError:
        raise
    except Exception as exc:
        text = str(exc)
        if fmt == "legacy" and _legacy_cut_short(path):  # a cut can look like anything to the unpickler, even
            # a refused global (a GLOBAL whose name the cut shortened)
            raise CheckError(
                f"is truncated: its data ends early ({path.stat().st_size:,} bytes; it ends inside one of its "
                "pickles): an interrupted save or copy? Re-copy it from its source"
            ) from None
        match = _UNPICKLER_ERROR.search(text)
        if match:
            reason = _named_opcode((match.group("reason") or match.group("blocked")).strip().rstrip("."))
            unsupported = _UNSUPPORTED_GLOBAL.search(reason)
            if unsupported:  # torch's own sentence goes on about add_safe_globals: name the global, plainly
                name = unsupported.group(1)
                reason = f"the global {_readable(name if '.' in name else f'builtins.{name}')}, which is not allowed"
            raise CheckError(
                f"refused to load: the weights-only unpickler stopped at: {first_line(reason)}. Nothing in the "
                "file was executed"
            ) from None
        # A legacy file is one pickle stream read to its end: cut short, the unpickler runs off it as an
        # EOFError, or as an IndexError or struct.error where it reads a byte or an integer that is not there.
        ends_early = fmt == "legacy" and isinstance(exc, (IndexError, struct.error))
        if isinstance(exc, EOFError) or "unexpected EOF" in text or ends_early:
            raise CheckError(
                f"is truncated: its data ends early ({path.stat().st_size:,} bytes; {type(exc).__name__}): "
                "an interrupted save or copy? Re-copy it from its source"
            ) from None
        meaning = _explained(text)
        if meaning is not None:
            raise CheckError(
                f"is a truncated, corrupt or crafted torch.save file: {meaning} ({type(exc).__name__}: "
                f"{first_line(text, 120)})"
            ) from None
        raise CheckError(f"cannot read the checkpoint: {type(exc).__name__}: {first_line(text)}") from None


def state_dict_of(obj: Any) -> Mapping[str, Any]:
    """The weights: Lightning's ``state_dict`` entry, or the object itself when it is a plain state dict."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckError(f"holds a {type(obj).__name__}, not a checkpoint dict with a `state_dict`")
    try:  # a mapping rebuilt from an allowlisted class (an OmegaConf container) may hold anything
        inner = obj.get("state_dict")
        if isinstance(inner, Mapping):
            weights = inner
        elif obj and all(isinstance(value, torch.Tensor) for value in obj.values()):
            weights = obj
        else:
            keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
            raise CheckError(f"has no `state_dict` (top-level keys: {keys}); is it a Lightning checkpoint?")
        odd = [key for key in weights if not isinstance(key, str)]
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(
            f"holds a malformed {type(obj).__name__} that cannot be read as a checkpoint: "
            f"{type(exc).__name__}: {first_line(str(exc), 120)}"
        ) from None
    if odd:
        raise CheckError(
            f"has a `state_dict` with {len(odd)} key(s) that are not strings (first: {first_line(repr(odd[0]), 60)}): "
            "not a torch state dict"
        )
    return weights


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
    """A tensor's shape; None for anything else (an ``_extra_state`` value, or junk a crafted file holds)."""
    import torch

    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    try:
        shape = getattr(value, "shape", None)
        return tuple(int(n) for n in shape) if shape is not None else None
    except Exception:
        return None


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


class LoadError(CheckError):
    """The weights were tried against a built model and do not fit it (``--fix`` tells this from a candidate
    rejected before its weights were ever tried)."""


def load_weights(
    model: Any, state_dict: Mapping[str, Any], *, how: str = "the model", whole: bool = False
) -> LoadReport:
    """Load strictly into ``model``; raises ``CheckError`` listing missing/unexpected/mismatched keys.

    ``whole``: the model is the whole trained module (a LightningModule), so every key of the checkpoint must
    fit it as it is, no wrapper prefix stripped and nothing left aside."""
    model_state = model.state_dict()
    prefix = "" if whole else detect_prefix(state_dict, model_state)
    weights = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    ignored = tuple(sorted(key for key in state_dict if not key.startswith(prefix)))
    diff = compare(weights, model_state)
    shown_prefix = f"checkpoint prefix {prefix!r}" if prefix else "no checkpoint prefix"
    if not weights:
        raise LoadError(f"no weights to load: the checkpoint's state_dict is empty ({shown_prefix})")
    if not diff.ok:
        raise LoadError(f"weights do not fit {how} ({shown_prefix}): {diff.describe()}")
    try:
        model.load_state_dict(weights, strict=True)
    except Exception as exc:
        raise LoadError(f"load_state_dict into {how} failed: {type(exc).__name__}: {first_line(str(exc))}") from None
    return LoadReport(prefix, len(weights), ignored)


@dataclass(frozen=True)
class NonFinite:
    """A floating tensor of the checkpoint that holds NaN or Inf."""

    key: str
    nan: int
    inf: int
    numel: int

    def describe(self) -> str:
        parts = [f"{count} {name}" for count, name in ((self.nan, "NaN"), (self.inf, "Inf")) if count]
        return f"{self.key} ({' + '.join(parts)} of {self.numel})"


def non_finite(state_dict: Mapping[str, Any]) -> list[NonFinite]:
    """Every floating (or complex) tensor of a state dict that is not finite everywhere, EMA and buffers included:
    a diverged run saves NaN weights that load strictly, and an EMA copy is never touched by a forward pass."""
    import torch

    found = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()):
            continue
        # A sum is finite only where every element is: one pass without a mask, ~10x cheaper than isfinite().
        # all(); a sum that overflows (finite values) falls through to the exact count, which finds nothing.
        wide = torch.float32 if value.is_floating_point() and value.element_size() < 4 else None
        if not value.numel() or bool(torch.isfinite(value.sum(dtype=wide))):
            continue
        if not bool(torch.isfinite(value).all()):
            nan = int(torch.isnan(value).sum())
            found.append(NonFinite(str(key), nan, int((~torch.isfinite(value)).sum()) - nan, value.numel()))
    return found


def check_finite(state_dict: Mapping[str, Any]) -> None:
    """Raise naming the tensors that hold NaN or Inf (at most three, then how many more: one line)."""
    bad = non_finite(state_dict)
    if not bad:
        return
    import torch

    floating = sum(
        1
        for value in state_dict.values()
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())
    )
    shown = ", ".join(item.describe() for item in bad[:3]) + (f", … (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    raise CheckError(
        f"{len(bad)} of {floating} floating tensors in the state_dict hold non-finite values (diverged or corrupt "
        f"weights): {shown}"
    )
