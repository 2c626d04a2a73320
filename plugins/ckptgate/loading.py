"""Read a checkpoint without executing it, and load its weights strictly into a model.

``torch.load(weights_only=True, mmap=True)`` always; the only globals allowed beyond torch's own are the
harmless containers Lightning and Hydra checkpoints carry (OmegaConf configs in ``hyper_parameters``,
``argparse.Namespace``, paths). Before loading, the pickle is disassembled (nothing runs) so that a refusal
can name every global at once. ``--ckpt-trust-pickle`` is the explicit opt-out.

When the weights-only loader refuses a file, its refusal is what the message says (the global, the opcode, the
persistent id), whatever else is wrong with the file: a legacy file is called truncated only when
``pickletools.genops`` (which parses opcodes and runs nothing) runs off the end of its data at the opcode the
loader was reading when it stopped.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import mmap
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

from ckptgate.discovery import sharded_message
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
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked")
_PERSISTENT_ID = re.compile(r"persistent_load|persistent id")
_INVALID_PROTOCOL = re.compile(r"Invalid protocol version: ([^\n]{0,40})")
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first pickle of every legacy torch.save file (torch.serialization's)
# A legacy torch.save file is five pickles, then the tensors' bytes.
_LEGACY_PICKLES = ("magic number", "protocol version", "system info", "checkpoint object", "storage keys")
_ORDINALS = ("first", "second", "third", "fourth", "fifth")
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
    """ "zip" (torch>=1.6), "legacy" (a pickle stream, as torch.load reads any file that is not a zip) or raise
    with what the file really is."""
    if path.is_dir():  # a sharded checkpoint, or a folder named like a checkpoint
        raise CheckError(sharded_message(path))
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckError(f"cannot open: {exc.strerror or exc}") from None
    size = path.stat().st_size
    if not head:
        raise CheckError("is empty (0 bytes): an interrupted save or copy?")
    if size < _SMALLEST_CHECKPOINT and _ZIP_MAGIC.startswith(head):
        raise CheckError(f"is truncated: only {size} bytes, too few for any torch.save file")
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise CheckError(
                f"is a truncated or corrupt torch.save archive ({size:,} bytes; the zip's central directory is "
                "missing): an interrupted save or copy? Re-copy it from its source"
            )
        _check_archive(path, size)
        return "zip"
    # torch.load reads whatever is not a zip as a pickle stream: so does ckptgate, for a legacy file (protocol 2,
    # 0x80 first) and for anything else that parses as a pickle (a bare protocol-0 or -1 pickle), so that the
    # weights-only loader's refusal names what it refused.
    if head[0] == _PICKLE_PROTO or _starts_with_a_pickle(path):
        _refuse_polyglot(path)
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
        if len(parts) < 2:  # a zip that another tool wrote (a scanner's sample: data.pkl at the root)
            roots = [entry.filename for entry in entries if "/" not in entry.filename]
            shown = ", ".join(map(repr, roots[:3])) + (f", … ({len(roots)} in all)" if len(roots) > 3 else "")
            raise CheckError(
                f"refused to load: its zip has entries at its root, outside any archive folder: {shown} "
                f"(torch.save puts every record in one folder, such as `archive/`: not a torch.save archive). {refused}"
            )
        if parts[0] != folder:
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
                f"is a corrupt or crafted torch.save file: the archive has no `{record}` record for a "
                "tensor its pickle holds"
            )
        if numel * itemsize > sizes[record]:
            raise CheckError(
                f"is a corrupt or crafted torch.save file: the tensor data record `{record}` holds "
                f"{sizes[record]:,} bytes where its pickle needs {numel * itemsize:,}"
            )


def _explained(text: str) -> str | None:
    """What torch's message about a malformed archive means, or None when it is not one of those."""
    for pattern, meaning in _ARCHIVE_ERRORS:
        found = pattern.search(text)
        if found:
            return meaning.format(*found.groups())
    return None


def _readable(name: str) -> str:
    """A global as Python 3 names it, and as the pickle spells it where that differs (``commands.Popen`` is
    ``subprocess.Popen``; torch reports some names as written)."""
    python3 = _python3(name)
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


# ------------------------------------------------------------------------------ pickle streams, walked (nothing runs)

_CUT_SHORT = ("exhausted", "not enough data", "no newline found", "remain")  # genops' words for data that ran out
_WALK_LIMIT = 5_000_000  # opcodes (a few seconds): past it, a walk claims nothing
_SNIFF_LIMIT = 1_000_000  # opcodes read to decide whether a file that is neither zip nor 0x80 is a pickle
_STRINGS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
)
_INTS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
# Opcodes that push one value and pop nothing, and those that leave the stack as it is: with them, the walk
# follows which literal strings a STACK_GLOBAL or a BINPERSID takes (to name them; it decides nothing).
_PUSHES_ONE = _INTS | {
    "FLOAT",
    "BINFLOAT",
    "NONE",
    "NEWTRUE",
    "NEWFALSE",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
    "EMPTY_LIST",
    "EMPTY_TUPLE",
    "EMPTY_DICT",
    "EMPTY_SET",
    "MARK",
    "EXT1",
    "EXT2",
    "EXT4",
    "NEXT_BUFFER",
}
_KEEPS_STACK = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "READONLY_BUFFER"})
# What a pickle holds, by the opcode that made its value last.
_VALUE_WORDS = (
    (frozenset({"EMPTY_LIST", "LIST", "APPEND", "APPENDS"}), "a list"),
    (frozenset({"EMPTY_DICT", "DICT", "SETITEM", "SETITEMS"}), "a dict"),
    (frozenset({"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}), "a tuple"),
    (frozenset({"EMPTY_SET", "ADDITEMS", "FROZENSET"}), "a set"),
    (_STRINGS, "a string"),
    (_INTS, "a number"),
    (frozenset({"FLOAT", "BINFLOAT"}), "a float"),
    (frozenset({"NONE"}), "None"),
    (frozenset({"NEWTRUE", "NEWFALSE"}), "a bool"),
    (frozenset({"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}), "bytes"),
    (frozenset({"REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}), "an object"),
)


@dataclass
class _Walk:
    """A pickle stream as ``pickletools.genops`` parses it: opcodes and their arguments are read, nothing runs."""

    pickles: int = 0  # pickles read to their STOP
    started: int = 0  # offset where the last pickle it began starts
    cut: int | None = None  # offset of the opcode the data ends inside (the end of the data, between opcodes)
    cut_in: str = ""  # that opcode's name; "" when the data ends between opcodes
    junk: tuple[int, int] | None = None  # (offset, byte) where a byte is no pickle opcode
    malformed: str = ""  # an argument that is there but not valid, in genops' words
    first_at: dict[str, int] = field(default_factory=dict)  # each opcode's first offset
    globals: list[str] = field(default_factory=list)  # by GLOBAL and INST, and by STACK_GLOBAL from literal strings
    persistent: list[str] = field(default_factory=list)  # the persistent ids, repr'd where literal ("" otherwise)
    first_value: str = ""  # what the first pickle holds, in words
    finished: bool = True  # False when the walk stopped at its limit of opcodes


def _follow(walk: _Walk, name: str, arg: Any, tail: list[Any], memo: dict[int, Any]) -> list[Any]:
    """The last (at most two) values on the stack after ``name``, where they are literal strings (None where not)."""
    if name in _STRINGS:
        return [*tail[-1:], arg if isinstance(arg, str) else None]
    if name in ("GET", "BINGET", "LONG_BINGET"):
        return [*tail[-1:], memo.get(arg)]
    if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
        memo[arg if name != "MEMOIZE" else len(memo)] = tail[-1] if tail else None
        return tail
    if name in ("GLOBAL", "INST"):
        module, _, attribute = str(arg).partition(" ")
        walk.globals.append(f"{module}.{attribute}")
        return [*tail[-1:], None] if name == "GLOBAL" else [None]
    if name == "STACK_GLOBAL":
        if len(tail) == 2 and all(isinstance(value, str) for value in tail):
            walk.globals.append(f"{tail[0]}.{tail[1]}")
        return [None]
    if name == "PERSID":
        walk.persistent.append(repr(arg))
        return [None]
    if name == "BINPERSID":
        walk.persistent.append(repr(tail[-1]) if tail and isinstance(tail[-1], str) else "")
        return [None]
    if name in _KEEPS_STACK:
        return tail
    return [*tail[-1:], None] if name in _PUSHES_ONE else []


def _value_words(last: tuple[str, Any] | None, count: int) -> str:
    """What a pickle holds, from its last value-making opcode (and the number itself when it is all it holds)."""
    if last is None:
        return "nothing"
    name, arg = last
    if count == 1 and name in _INTS and isinstance(arg, int) and not isinstance(arg, bool):
        return f"the number {arg:#x}"
    return next((words for names, words in _VALUE_WORDS if name in names), "other data")


def _walk(stream: Any, pickles: int, limit: int = _WALK_LIMIT) -> _Walk:
    """Parse up to ``pickles`` pickles back to back from ``stream`` (``read``, ``readline``, ``tell``, ``seek``)."""
    walk = _Walk()
    memo: dict[int, Any] = {}
    tail: list[Any] = []
    seen = 0
    for index in range(pickles):
        at = walk.started = stream.tell()
        last: tuple[str, Any] | None = None
        values = 0
        try:
            for opcode, arg, pos in pickletools.genops(stream):
                seen += 1
                if seen > limit:
                    walk.finished = False
                    return walk
                name = opcode.name
                walk.first_at.setdefault(name, pos)
                tail = _follow(walk, name, arg, tail, memo)
                if name not in _KEEPS_STACK and name not in ("STOP", "MARK"):
                    last, values = (name, arg), values + 1
                at = stream.tell()
        except Exception as exc:  # genops raises ValueError (UnicodeDecodeError among them) and nothing else known
            words = str(exc)
            stream.seek(at)
            code = stream.read(1)
            if words.startswith("at position") and "unknown" in words and code:
                walk.junk = (at, code[0])
            elif isinstance(exc, ValueError) and any(part in words for part in _CUT_SHORT):
                opcode = pickletools.code2op.get(code.decode("latin-1")) if code else None
                walk.cut, walk.cut_in = at, opcode.name if opcode is not None else ""
            else:
                walk.malformed = f"{type(exc).__name__}: {first_line(words, 120)}"
            return walk
        walk.pickles += 1
        if index == 0:
            walk.first_value = _value_words(last, values)
    return walk


def _walk_file(path: Path, pickles: int, limit: int = _WALK_LIMIT) -> _Walk | None:
    """:func:`_walk` over a file, memory-mapped (an argument that claims gigabytes reads what is there)."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk(data, pickles, limit)
    except (OSError, ValueError):  # unreadable, or empty (nothing to map)
        return None


def _walk_data_pkl(path: Path) -> tuple[_Walk, str] | None:
    """:func:`_walk` over a torch.save archive's pickle record, and that record's name; None when unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            record = f"{archive.infolist()[0].filename.split('/', 1)[0]}/data.pkl"
            return _walk(io.BytesIO(archive.read(record)), 1), record
    except Exception:
        return None


_DOTTED = re.compile(r"[A-Za-z_][\w.]*\Z")


def _starts_with_a_pickle(path: Path) -> bool:
    """Whether a file that is neither a zip nor a protocol-2+ pickle is a pickle all the same (protocol 0 or 1):
    its first pickle parses to its STOP, or it names a global (a payload's first opcode) before it fails."""
    walk = _walk_file(path, 1, _SNIFF_LIMIT)
    if walk is None:
        return False
    if walk.pickles == 1 and len(walk.first_at) > 1:
        return True
    return any(_DOTTED.match(name) and "." in name.strip(".") for name in walk.globals)


def _python3(name: str) -> str:
    """A global as Python 3 names it: protocol-2 pickles spell modules the Python 2 way (``commands.Popen`` is
    ``subprocess.Popen``)."""
    import _compat_pickle

    module, _, attribute = name.rpartition(".")
    mapped = _compat_pickle.NAME_MAPPING.get((module, attribute))
    return ".".join(mapped) if mapped else f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attribute}"


def _torch_allowed() -> set[str]:
    """The globals torch's weights-only unpickler allows by itself (tensor rebuilders, storages, dtypes...)."""
    try:
        from torch import _weights_only_unpickler as unpickler

        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except Exception:  # private API: without it, more names are shown, none is allowed
        return set()


def _outside(walk: _Walk | None, allowed: Iterable[str], *, but: str = "") -> str:
    """``os.system (pickled as posix.system), builtins.eval``: the globals a walked pickle names beyond the
    allowlist (``but`` left out), for a refusal that names something else first; "" when none."""
    if walk is None:
        return ""
    permitted = set(allowed) | _torch_allowed() | {_python3(but)}
    found: list[str] = []
    for name in walk.globals:
        if _python3(name) not in permitted and name not in permitted and _readable(name) not in found:
            found.append(_readable(name))
    return ", ".join(found[:4]) + (f", … ({len(found)} in all)" if len(found) > 4 else "")


def _refuse_polyglot(path: Path) -> None:
    """Refuse a pickle that is a zip archive too: torch reads the pickle at its start, zip tools (and scanners)
    the archive at its end, so the file means two different things (a scanner-evasion trick)."""
    if not zipfile.is_zipfile(path):
        return
    count = _entry_count(path)
    names: list[str] = []
    if count is None or count <= MAX_ARCHIVE_ENTRIES:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception:  # end-record bytes among a legacy file's tensor data, not an archive
            return
        if not names:
            return
    shown = ", ".join(map(repr, names[:3])) + (", …" if len(names) > 3 else "") if names else f"{count:,} entries"
    named = _outside(_walk_file(path, len(_LEGACY_PICKLES)), HARMLESS_GLOBALS)
    raise CheckError(
        "refused to load: it is a pickle and a zip archive at once (a polyglot: torch reads the pickle at its "
        f"start, zip tools the archive after it, with the entries {shown})"
        + (f"; the pickle names {named}, outside the safe allowlist" if named else "")
        + ". Nothing in the file was executed"
    )


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


@contextlib.contextmanager
def _opened(path: Path, fmt: str) -> Iterator[Any]:
    """What torch.load is given: for a zip, a name it can open and memory-map (:func:`_torch_path`); for a pickle
    stream, an open file, whose position says where a failed load stopped reading."""
    if fmt == "zip":
        with _torch_path(path) as name:
            yield name
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CheckError(f"cannot open: {exc.strerror or exc}") from None
    with handle:
        yield handle


class _Failed(Exception):
    """torch.load's exception, with the offset its reader had reached (None when unknown)."""

    def __init__(self, exc: Exception, stopped: int | None) -> None:
        super().__init__(str(exc))
        self.exc, self.stopped = exc, stopped


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
    mapped = fmt == "zip"
    allowed = HARMLESS_GLOBALS + tuple(extra_safe_globals)
    try:
        with _opened(path, fmt) as source:
            try:
                if trust_pickle:
                    return torch.load(source, map_location=map_location, weights_only=False, mmap=mapped)
                name = Path(source) if isinstance(source, str) else path
                with torch.serialization.safe_globals(_safe_globals_for(name, fmt, allowed)):
                    return torch.load(source, map_location=map_location, weights_only=True, mmap=mapped)
            except CheckError:
                raise
            except Exception as exc:
                try:
                    stopped = None if isinstance(source, str) else source.tell()
                except Exception:
                    stopped = None
                raise _Failed(exc, stopped) from None
    except _Failed as failed:
        raise _failure(path, fmt, failed.exc, failed.stopped, allowed) from None


@dataclass(frozen=True)
class _Refusal:
    """What the weights-only unpickler refused, read from its message."""

    kind: str  # global | opcode | junk | persistent | other
    subject: str  # the global (as torch read it), or the opcode's name
    words: str  # torch's own sentence
    code: int = -1  # the opcode's byte
    blocked: str = ""  # the module torch blocks outright, for a global of it


def _loader_refusal(text: str) -> _Refusal | None:
    match = _UNPICKLER_ERROR.search(text)
    if match is None:
        return None
    words = first_line((match.group("reason") or match.group("blocked")).strip().rstrip("."))
    blocked = _BLOCKED_GLOBAL.search(words)
    if blocked:
        return _Refusal("global", blocked.group(1), words, blocked=blocked.group(2))
    unsupported = _UNSUPPORTED_GLOBAL.search(words)
    if unsupported:
        return _Refusal("global", unsupported.group(1), words)
    operand = _UNSUPPORTED_OPCODE.search(words)
    if operand:
        code = int(operand.group(1))
        opcode = pickletools.code2op.get(chr(code)) if code < 256 else None
        if opcode is None:
            return _Refusal("junk", "", words, code)
        return _Refusal("opcode", opcode.name, words, code)
    if _PERSISTENT_ID.search(words):
        return _Refusal("persistent", "", words)
    return _Refusal("other", "", words)


def _refusal_message(refusal: _Refusal, walk: _Walk | None, record: str, allowed: tuple[str, ...]) -> str:
    """One line: what the weights-only loader refused, named (with what else the pickle names beyond the
    allowlist), and that nothing ran."""

    def at(offset: int | None) -> str:
        return f", at offset {offset:,}{record}" if offset is not None else ""

    first_at = walk.first_at if walk is not None else {}
    named = ""
    if refusal.kind == "global":
        named = _global_named(refusal.subject, walk)
        why = f"whose module {refusal.blocked} torch blocks outright" if refusal.blocked else "which is not allowed"
        body = f"the global {_readable(named)}, {why}"
    elif refusal.kind == "opcode":
        what = ""
        if refusal.subject == "PERSID":  # protocol 0's persistent id: its argument is the id, as text
            pids = walk.persistent if walk is not None else []
            what = f": a persistent id {first_line(pids[0], 60)}" if pids else ": a persistent id"
        where = at(first_at.get(refusal.subject))
        body = f"the pickle opcode {refusal.subject} (0x{refusal.code:02x}{where}{what}), which it does not support"
    elif refusal.kind == "junk":
        where = at(walk.junk[0] if walk is not None and walk.junk and walk.junk[1] == refusal.code else None)
        body = (
            f"the byte 0x{refusal.code:02x}{where}, which is no pickle opcode (garbage where the pickle goes on: "
            "a corrupt or crafted file?)"
        )
    elif refusal.kind == "persistent":
        pids = [pid for pid in walk.persistent if pid] if walk is not None else []
        opcode = next((name for name in ("BINPERSID", "PERSID") if name in first_at), "BINPERSID")
        body = (
            f"a persistent id{' ' + first_line(pids[0], 60) if pids else ''} (pickle opcode {opcode}) that is not a "
            f"tensor storage torch can read: {refusal.words}"
        )
    else:
        body = refusal.words
    others = _outside(walk, allowed, but=named)
    also = f"; the pickle also names {others}, outside the safe allowlist" if others else ""
    return f"refused to load: the weights-only unpickler stopped at: {body}{also}. Nothing in the file was executed"


def _global_named(torch_name: str, walk: _Walk | None) -> str:
    """The global torch refused, as the pickle names it: torch maps Python 2 names to Python 3's and then drops
    ``builtins.`` (``GLOBAL eval.__call__`` is ``builtins.eval.__call__``), so the walk's names are matched."""
    for name in walk.globals if walk is not None else ():
        python3 = _python3(name)
        if torch_name in (name, python3) or python3 == f"builtins.{torch_name}":
            return name
    return torch_name if "." in torch_name else f"builtins.{torch_name}"


def _raised_in(exc: BaseException, function: str) -> bool:
    """Whether ``exc`` was raised inside a function of that name (torch's ``persistent_load``)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def _eof_like(exc: Exception) -> bool:
    """An error of a reader that ran out of data: EOF, or a byte or an integer read that was not there."""
    text = str(exc)
    return (
        isinstance(exc, (EOFError, struct.error))
        or (isinstance(exc, IndexError) and "out of range" in text)
        or "unexpected EOF" in text
    )


def _ran_off_the_end(walk: _Walk, exc: Exception, stopped: int | None, size: int) -> bool:
    """Whether a legacy file's load failed because the file ends inside its pickles: genops runs off the end
    at some opcode, and the loader had read into that opcode when it stopped (a GLOBAL whose name the cut
    shortened is refused: the cut is the reason), or tried to read past the end."""
    if walk.cut is None:
        return False
    if stopped is None:
        return _eof_like(exc)
    return stopped > walk.cut or (stopped >= size and _eof_like(exc))


def _truncated(path: Path, size: int, where: str) -> CheckError:
    return CheckError(
        f"is truncated: its data ends early ({size:,} bytes; {where}): an interrupted save or copy? Re-copy it "
        "from its source"
    )


def _failure(path: Path, fmt: str, exc: Exception, stopped: int | None, allowed: tuple[str, ...]) -> CheckError:
    """Why torch.load failed, in one line: the loader's refusal first (named), then what is wrong with the file."""
    text = str(exc)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    refusal = _loader_refusal(text)
    if refusal is None and _raised_in(exc, "persistent_load"):  # torch's own storage loader, given an odd id
        refusal = _Refusal("persistent", "", f"{type(exc).__name__}: {first_line(text, 120)}")
    walk: _Walk | None = None
    record = ""
    if fmt == "legacy":
        walk = _walk_file(path, len(_LEGACY_PICKLES))
        # An opcode the loader does not support is refused whatever follows it; anything else the loader says
        # about the opcode a cut shortened is the cut's doing.
        refused_outright = refusal is not None and refusal.kind in ("opcode", "junk")
        if (
            walk is not None
            and walk.cut is not None
            and not refused_outright
            and _ran_off_the_end(walk, exc, stopped, size)
        ):
            part = _LEGACY_PICKLES[min(walk.pickles, len(_LEGACY_PICKLES) - 1)]
            if walk.cut == walk.started:
                where = f"it ends before its {part} pickle, the {_ORDINALS[walk.pickles]} of five"
            else:
                inside = f"in a {walk.cut_in} opcode" if walk.cut_in else "before its STOP opcode"
                where = f"it ends inside its {part} pickle, {inside} at byte {walk.cut:,}"
            return _truncated(path, size, where)
    elif refusal is not None:
        walked = _walk_data_pkl(path)
        if walked is not None:
            walk, record = walked[0], f" of {walked[1]}"
    if refusal is not None:
        return CheckError(_refusal_message(refusal, walk, record, allowed))
    if "Invalid magic number" in text:
        head = b""
        with contextlib.suppress(OSError), path.open("rb") as handle:
            head = handle.read(4)
        holds = walk.first_value if walk is not None and walk.first_value else "other data"
        return CheckError(
            f"is not a PyTorch checkpoint (starts with bytes {head!r}, {size:,} bytes in all): it is a pickle with a "
            f"bad magic number: its first pickle holds {holds}, where torch.save writes the magic number "
            f"{MAGIC_NUMBER:#x} (a bare pickle, not a torch.save file?). Nothing in the file was executed"
        )
    protocol = _INVALID_PROTOCOL.search(text)
    if protocol:
        return CheckError(
            f"is not a torch.save file as written: its second pickle holds the protocol version {protocol.group(1)}, "
            "where torch.save writes 1001. Nothing in the file was executed"
        )
    if fmt == "legacy" and _eof_like(exc) and (walk is None or not walk.finished or walk.pickles >= 5):
        return _truncated(path, size, f"its five pickles are whole, its tensor data is not: {type(exc).__name__}")
    if fmt == "zip" and isinstance(exc, EOFError):
        return CheckError(
            "is a corrupt or crafted torch.save archive: its pickle record data.pkl ends before its STOP opcode "
            "(EOFError), inside a zip that is whole. Nothing in the file was executed"
        )
    meaning = _explained(text)
    if meaning is not None:
        return CheckError(
            f"is a corrupt or crafted torch.save file: {meaning} ({type(exc).__name__}: {first_line(text, 120)})"
        )
    return CheckError(f"cannot read the checkpoint: {type(exc).__name__}: {first_line(text)}")


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
