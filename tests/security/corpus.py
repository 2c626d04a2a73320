"""The security suite's corpus: hostile checkpoints, hostile configs and broken files, built by code at test time.

Nothing here is stored as a live payload, and importing this module runs nothing: every builder writes one file
into a folder the test owns, and every payload only touches a marker file named after its variant in that folder.
The payloads are real: ``test_payloads.py`` loads each with ``torch.load(weights_only=False)`` in a subprocess and
watches the markers appear (the positive control), so "no marker appeared" under the gate means something.

Three families, each a list of variant names (the test ids) and one ``build`` function:

* :data:`PAYLOADS` - checkpoints whose pickle calls something when unpickled: ``__reduce__`` payloads of many
  kinds placed inside an otherwise normal Lightning checkpoint, in the zip and the legacy format; hand-assembled
  pickles (``STACK_GLOBAL`` over names built at runtime, ``INST``/``OBJ``, memo tricks); payloads in the legacy
  format's side pickles; zip tricks (duplicate ``data.pkl``, a second archive folder, path-traversal names, a
  compressed or "encrypted" payload, a pickle+zip polyglot).
* :data:`BROKEN_CHECKPOINTS` and :data:`BROKEN_CONFIGS` - files that are damaged, odd or huge, never hostile.
* :data:`HOSTILE_TARGETS` - model sections whose ``_target_`` (or an interpolation) would run or import code.
"""

from __future__ import annotations

import _compat_pickle
import copy
import importlib
import io
import logging
import os
import pickle
import pickletools
import runpy
import shlex
import shutil
import struct
import subprocess
import time
import timeit
import webbrowser
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# ------------------------------------------------------------------------------------------------ payloads


class Call:
    """Pickles as ``func(*args)``: the ``__reduce__`` an attacker writes. ``func`` may itself be a ``Call``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self, *args: Any) -> Any:  # pickle wants the reduce's function callable; it is never called here
        raise TypeError("a Call is only ever pickled")


def _script(marker: Path) -> Path:
    """A Python file that touches the marker when run (for runpy, and as a file to copy)."""
    path = marker.with_suffix(".py")
    path.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    return path


def _module(marker: Path) -> str:
    """An importable module (in the marker's folder: put it on sys.path to arm it) touching the marker."""
    name = "ckg_payload_" + "".join(c if c.isalnum() else "_" for c in marker.stem)
    (marker.parent / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    return name


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


# kind -> (marker -> payload object). Process runners, code evaluators, importers, file writers Hydra lets through.
KINDS: dict[str, Callable[[Path], Any]] = {
    "os.system": lambda m: Call(os.system, _touch(m)),
    "os.popen": lambda m: Call(os.popen, _touch(m)),
    "subprocess.Popen": lambda m: Call(subprocess.Popen, ["touch", str(m)]),
    "subprocess.call": lambda m: Call(subprocess.call, ["touch", str(m)]),
    "subprocess.run": lambda m: Call(subprocess.run, ["touch", str(m)]),
    "subprocess.check_output": lambda m: Call(subprocess.check_output, ["touch", str(m)]),
    "builtins.eval": lambda m: Call(eval, f"open({str(m)!r}, 'w').close()"),
    "builtins.exec": lambda m: Call(exec, f"import pathlib; pathlib.Path({str(m)!r}).touch()"),
    "builtins.open": lambda m: Call(open, str(m), "w"),
    "getattr-chain": lambda m: Call(Call(getattr, Call(__import__, "os"), "system"), _touch(m)),
    "runpy.run_path": lambda m: Call(runpy.run_path, str(_script(m))),
    "importlib.import_module": lambda m: Call(importlib.import_module, _module(m)),
    "webbrowser.open": lambda m: Call(webbrowser.open, str(m)),  # BROWSER=touch in the tests: no real browser
    "shutil.copyfile": lambda m: Call(shutil.copyfile, str(_script(m)), str(m)),
    "logging.FileHandler": lambda m: Call(logging.FileHandler, str(m)),
    "timeit.timeit": lambda m: Call(timeit.timeit, f"open({str(m)!r}, 'w').close()", "pass", time.perf_counter, 1),
    "pickle.loads": lambda m: Call(pickle.loads, pickle.dumps(Call(os.system, _touch(m)), protocol=2)),
    "torch.save": lambda m: Call(torch.save, {}, str(m)),
}

# Where a payload sits in an otherwise normal Lightning checkpoint.
PLACEMENTS = ("top", "hyper_parameters", "callbacks", "optimizer_states", "lr_schedulers", "loops", "state_dict")


def place(base: dict[str, Any], where: str, payload: Any) -> dict[str, Any]:
    """A deep copy of a real Lightning checkpoint dict with ``payload`` nested at ``where``."""
    ckpt = copy.deepcopy(base)
    if where == "top":
        ckpt["__payload__"] = payload
    elif where == "hyper_parameters":  # beside the real OmegaConf config, two levels down
        ckpt["hyper_parameters"] = {"cfg": ckpt.get("hyper_parameters"), "augment": {"ops": [payload]}}
    elif where == "callbacks":
        ckpt["callbacks"] = {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_path": payload, "best_k": {}}}
    elif where == "optimizer_states":
        ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] = payload
    elif where == "lr_schedulers":
        ckpt["lr_schedulers"] = [{"step_size": 1, "_get_lr_called_within_step": payload}]
    elif where == "loops":
        ckpt.setdefault("loops", {})["fit_loop"] = {"state_dict": {"evil": payload}}
    elif where == "state_dict":  # where a tensor should be
        ckpt["state_dict"]["model.body.0.weight_scale"] = payload
    else:
        raise ValueError(where)
    return ckpt


def pickled_globals(obj: Any) -> set[str]:
    """Every spelling a refusal may give the globals a protocol-2 pickle of ``obj`` holds (read from its
    opcodes, nothing loaded): as written (``__builtin__.eval``), Python 3's (``builtins.eval``), and torch's
    (``GLOBAL eval ``, builtins dropped)."""
    spellings: set[str] = set()
    for opcode, arg, _ in pickletools.genops(pickle.dumps(obj, protocol=2)):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ")
            py3 = _compat_pickle.NAME_MAPPING.get((module, name))
            py3_name = ".".join(py3) if py3 else f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"
            spellings |= {f"{module}.{name}", py3_name, f"GLOBAL {py3_name.removeprefix('builtins.')} "}
    return spellings


# --------------------------------------------------------------------------------- hand-assembled pickles


def _u(text: str) -> bytes:
    """BINUNICODE: a string pushed on the stack."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _runtime_str(text: str) -> bytes:
    """Ops that build ``text`` at runtime, as ``str(bytes([code points]), "ascii")``: the name never appears."""
    ints = b"".join(b"K" + bytes([c]) for c in text.encode())
    return _global("builtins", "str") + _global("builtins", "bytes") + b"](" + ints + b"e\x85R" + _u("ascii") + b"\x86R"


def _wrapped(payload_ops: bytes, *, keys: bytes = b"") -> bytes:
    """A protocol-2 pickle of ``{"epoch": 0, <keys>, "hyper_parameters": <payload>}``."""
    return b"\x80\x02}(" + _u("epoch") + b"K\x00" + keys + _u("hyper_parameters") + payload_ops + b"u."


def _hand_assembled(name: str, marker: Path) -> tuple[bytes, tuple[str, ...], bool]:
    """(pickle bytes, fragments the refusal names, live under a plain unpickler)."""
    cmd = _u(_touch(marker))
    if name == "stack_global.literal":
        return _wrapped(_u("posix") + _u("system") + b"\x93" + cmd + b"\x85R"), ("STACK_GLOBAL",), True
    if name == "stack_global.runtime_names":
        ops = _runtime_str("posix") + _runtime_str("system") + b"\x93" + cmd + b"\x85R"
        return _wrapped(ops), ("STACK_GLOBAL",), True
    if name == "stack_global.binget_memo":  # the module name is a dict key memoized earlier, fetched by BINGET
        keys = _u("posix") + b"q\x07" + b"K\x01"
        ops = b"h\x07" + _runtime_str("system") + b"\x93" + cmd + b"\x85R"
        return _wrapped(ops, keys=keys), ("STACK_GLOBAL",), True
    if name == "stack_global.memoize_proto4":
        ops = _u("posix") + b"\x94" + _u("system") + b"\x94\x93" + cmd + b"\x85R"
        return b"\x80\x04" + _wrapped(ops)[2:], ("MEMOIZE",), True
    if name == "inst.proto0":
        return _wrapped(b"(" + cmd + b"ios\nsystem\n"), ("INST",), True
    if name == "obj.proto1":
        return _wrapped(b"(" + _global("os", "system") + cmd + b"o"), ("os.system",), True
    if name == "global.py2_builtin_eval":
        expr = _u(f"open({str(marker)!r}, 'w').close()")
        return _wrapped(_global("__builtin__", "eval") + expr + b"\x85R"), ("builtins.eval", "GLOBAL eval "), True
    if name == "global.nt_system":
        return _wrapped(_global("nt", "system") + cmd + b"\x85R"), ("nt.system",), False  # no nt on Linux
    if name == "persid.not_a_storage":
        return _wrapped(_u("evil") + b"\x85Q"), ("persistent_load",), False
    if name == "ext1.copyreg_registry":
        return _wrapped(b"\x82\x01"), ("EXT1",), False
    raise ValueError(name)


HAND_ASSEMBLED = (
    "stack_global.literal",
    "stack_global.runtime_names",
    "stack_global.binget_memo",
    "stack_global.memoize_proto4",
    "inst.proto0",
    "obj.proto1",
    "global.py2_builtin_eval",
    "global.nt_system",
    "persid.not_a_storage",
    "ext1.copyreg_registry",
)

# ----------------------------------------------------------------------------------------------- zip tricks


def archive_bytes(obj: Any, *, protocol: int = 2) -> bytes:
    """``torch.save`` into memory: every record under ``archive/``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=protocol)
    return buffer.getvalue()


def entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info.filename)) for info in archive.infolist()]


def write_zip(path: Path, records: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": the point of some variants
        with zipfile.ZipFile(path, "w", method) as archive:
            for name, data in records:
                archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 10, 17, 21, 54, 24)), data, method)


def _set_encrypted_flag(path: Path, name: str) -> None:
    """Mark one entry as encrypted (bit 0 of its flags) in its local header and the central directory."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, flags_at, name_len_at, header in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = data.find(signature)
        while at != -1:
            length = struct.unpack_from("<H", data, at + name_len_at)[0]
            if bytes(data[at + header : at + header + length]) == encoded:
                data[at + flags_at] |= 0x01
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


ZIP_TRICKS = (
    "zip.duplicate_data_pkl.payload_last",
    "zip.duplicate_data_pkl.payload_first",
    "zip.second_archive.appended",
    "zip.second_archive.first",
    "zip.path_traversal.extra_entry",
    "zip.path_traversal.whole_archive",
    "zip.absolute_entry_name",
    "zip.payload_data_pkl.other_records_fine",
    "zip.compressed_payload",
    "zip.encrypted_flag",
    "polyglot.pickle_then_zip",
)

LEGACY_SIDE_PICKLES = ("legacy.magic_number_pickle", "legacy.sys_info_pickle", "legacy.storage_keys_pickle")


def _pickle_ends(data: bytes, count: int) -> list[int]:
    """Byte offsets where each of the first ``count`` pickles of a legacy torch file ends."""
    ends, start = [], 0
    for _ in range(count):
        for _opcode, _arg, position in pickletools.genops(io.BytesIO(data[start:])):
            last = position
        start += last + 1  # STOP is one byte
        ends.append(start)
    return ends


# ------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Built:
    """What a builder wrote and what the gate must say about it."""

    expect: tuple[str, ...]  # the one-line refusal names at least one of these
    live: bool = True  # torch.load(weights_only=False) runs it (checked by the positive control)


def payload_variants() -> list[str]:
    """Every hostile checkpoint, by name. Each kind sits in two placements (zip), every placement is used by
    several kinds, and every kind is in the legacy format too; a few go through protocol 4."""
    names = []
    for index, kind in enumerate(KINDS):
        for offset in (0, 3):
            names.append(f"{kind}@{PLACEMENTS[(index + offset) % len(PLACEMENTS)]}.zip")
        names.append(f"{kind}@{PLACEMENTS[(index + 5) % len(PLACEMENTS)]}.legacy")
    names += [f"{kind}@hyper_parameters.proto4" for kind in ("os.system", "builtins.exec", "subprocess.Popen")]
    names += [f"hand.{name}" for name in HAND_ASSEMBLED]
    return names + list(LEGACY_SIDE_PICKLES) + list(ZIP_TRICKS)


PAYLOADS = payload_variants()


def build_payload(name: str, path: Path, marker: Path, base: dict[str, Any]) -> Built:
    """Write the hostile checkpoint ``name`` at ``path``; its payload would touch ``marker``."""
    if "@" in name:
        kind, rest = name.split("@")
        where, fmt = rest.split(".")
        payload = KINDS[kind](marker)
        obj = place(base, where, payload)
        if fmt == "legacy":
            torch.save(obj, path, _use_new_zipfile_serialization=False)
        else:
            path.write_bytes(archive_bytes(obj, protocol=4 if fmt == "proto4" else 2))
        expect = ("FRAME",) if fmt == "proto4" else tuple(sorted(pickled_globals(payload)))
        return Built(expect)
    if name.startswith("hand."):
        data, expect, live = _hand_assembled(name.removeprefix("hand."), marker)
        records = [(n, data if n == "archive/data.pkl" else d) for n, d in entries(archive_bytes(base))]
        write_zip(path, records)
        return Built(expect, live)
    payload = KINDS["os.system"](marker)
    expect = tuple(sorted(pickled_globals(payload)))
    if name in LEGACY_SIDE_PICKLES:
        buffer = io.BytesIO()
        torch.save(base, buffer, _use_new_zipfile_serialization=False)
        data = buffer.getvalue()
        ends = _pickle_ends(data, 5)  # magic number, protocol, sys info, the object, storage keys
        index = {"legacy.magic_number_pickle": 0, "legacy.sys_info_pickle": 2, "legacy.storage_keys_pickle": 4}[name]
        start = ends[index - 1] if index else 0
        path.write_bytes(data[:start] + pickle.dumps(payload, protocol=2) + data[ends[index] :])
        return Built(expect)
    benign = entries(archive_bytes(base))
    evil = entries(archive_bytes(place(base, "hyper_parameters", payload)))
    evil_pkl = dict(evil)["archive/data.pkl"]
    if name == "zip.duplicate_data_pkl.payload_last":
        write_zip(path, [*benign, ("archive/data.pkl", evil_pkl)])
        return Built(("more than once",), live=False)  # which copy torch reads depends on its directory search
    if name == "zip.duplicate_data_pkl.payload_first":
        write_zip(path, [("archive/data.pkl", evil_pkl), *benign])
        return Built(("more than once",), live=False)
    if name == "zip.second_archive.appended":
        write_zip(path, [*benign, ("other/data.pkl", evil_pkl)])
        return Built(("'other/data.pkl' lies outside",), live=False)
    if name == "zip.second_archive.first":
        write_zip(path, [(n.replace("archive/", "other/", 1), d) for n, d in evil] + benign)
        return Built(("lies outside the archive's folder 'other/'",), live=False)
    if name == "zip.path_traversal.extra_entry":
        write_zip(path, [*benign, ("archive/../../evil.pkl", evil_pkl)])
        return Built(("path-traversal",), live=False)
    if name == "zip.path_traversal.whole_archive":
        write_zip(path, [("../../" + n, d) for n, d in evil])
        return Built(("path-traversal",), live=False)
    if name == "zip.absolute_entry_name":
        write_zip(path, [*benign, ("/tmp/evil/data.pkl", evil_pkl)])
        return Built(("absolute name",), live=False)
    if name == "zip.payload_data_pkl.other_records_fine":
        write_zip(path, [(n, evil_pkl if n == "archive/data.pkl" else d) for n, d in benign])
        return Built(expect)
    if name == "zip.compressed_payload":
        write_zip(path, evil, zipfile.ZIP_DEFLATED)
        return Built(("is compressed",))
    if name == "zip.encrypted_flag":
        write_zip(path, evil)
        _set_encrypted_flag(path, "archive/data.pkl")
        return Built(("encrypted",), live=False)
    if name == "polyglot.pickle_then_zip":  # a pickle first (torch takes the legacy path), a zip after it
        path.write_bytes(pickle.dumps(payload, protocol=2) + archive_bytes(place(base, "top", payload)))
        return Built(expect)
    raise ValueError(name)


# ------------------------------------------------------------------------------------------- broken files


@dataclass(frozen=True)
class Broken:
    """A broken file: where it goes (relative to ``outputs/``), the check that fails, what the reason says."""

    name: str
    relpath: str  # the checkpoint, relative to outputs/
    check: str  # config_present | weights_load | discovery (a warning: there is no file to test)
    expect: str
    write: Callable[[Path, dict[str, Any]], None] = field(repr=False)  # (outputs dir, context) -> None


def _copy(context: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(context["good"])
    return path


def _sidecar(context: dict[str, Any], path: Path, text: str | bytes, suffix: str = ".config.json") -> None:
    """A good checkpoint at ``path`` with a sidecar of the given content."""
    _copy(context, path)
    sidecar = path.with_name(path.name.removesuffix(".ckpt") + suffix)
    sidecar.write_bytes(text.encode() if isinstance(text, str) else text)


def _ckpt(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _with_sidecar(context: dict[str, Any], path: Path, data: bytes) -> None:
    """A broken checkpoint with a good sidecar: only the weights can fail."""
    _ckpt(path, data)
    path.with_name(path.name.removesuffix(".ckpt") + ".config.json").write_text(context["sidecar"])


def _saved(obj: Any) -> bytes:
    return archive_bytes(obj)


def _short_storage(context: dict[str, Any]) -> bytes:
    records = entries(context["good"])
    largest = max((n for n, _ in records if "/data/" in n), key=lambda n: len(dict(records)[n]))
    return _rezip([(n, d[:8] if n == largest else d) for n, d in records])


def _missing_storage(context: dict[str, Any]) -> bytes:
    records = entries(context["good"])
    first = next(n for n, _ in records if "/data/" in n)
    return _rezip([(n, d) for n, d in records if n != first])


def _rezip(records: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in records:
            archive.writestr(name, data)
    return buffer.getvalue()


def _record_past_eof(context: dict[str, Any]) -> bytes:
    """The zip directory claims a tensor record far longer than the file."""
    data = bytearray(context["good"])
    records = entries(context["good"])
    name = next(n for n, _ in records if "/data/" in n).encode()
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + length]) == name:
            struct.pack_into("<II", data, at + 20, 1 << 30, 1 << 30)
            local = struct.unpack_from("<I", data, at + 42)[0]
            struct.pack_into("<II", data, local + 18, 1 << 30, 1 << 30)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def _torchscript() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()


def _sparse(path: Path, head: bytes, size: int = 1 << 30) -> None:
    """``head`` then zeros up to ``size`` bytes, without writing them (a sparse file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size)


def _deep_json(depth: int) -> str:
    return '{"model": ' + "[" * depth + "]" * depth + "}"


def _deep_yaml_flow(depth: int) -> str:
    return "model: " + "[" * depth + "]" * depth + "\n"


def _deep_yaml_block(depth: int) -> str:
    return "model:\n  layers:\n  " + "- " * depth + "x\n"


ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    + ["model: {name: net, width: 4, layers: *i}"]
)


def _truncations(size: int) -> list[int]:
    """Cut points across a zip checkpoint: local header, data.pkl, tensor data, central directory, end record."""
    return sorted({3, 30, 200, size // 4, size // 2, (3 * size) // 4, size - 200, size - 23, size - 1})


def broken_files(good_size: int) -> list[Broken]:
    """Every broken checkpoint and config, with where it goes and what its failing check must say."""
    cp = "weights_load"
    cfg = "config_present"
    found: list[Broken] = [
        Broken(
            "ckpt.empty",
            "empty/best.ckpt",
            cp,
            "is empty (0 bytes)",
            lambda o, c: _with_sidecar(c, o / "empty/best.ckpt", b""),
        ),
    ]
    for cut in _truncations(good_size):
        name = f"ckpt.truncated_at_{cut}"
        found.append(
            Broken(
                name,
                f"truncated_{cut}/best.ckpt",
                cp,
                "truncated",
                lambda o, c, cut=cut: _with_sidecar(c, o / f"truncated_{cut}/best.ckpt", c["good"][:cut]),
            )
        )
    found += [
        Broken(
            "ckpt.legacy_truncated",
            "legacy_truncated/best.ckpt",
            cp,
            "truncated",
            lambda o, c: _with_sidecar(c, o / "legacy_truncated/best.ckpt", c["legacy"][: len(c["legacy"]) // 2]),
        ),
        Broken(
            "ckpt.text_file",
            "text/best.ckpt",
            cp,
            "not a PyTorch checkpoint",
            lambda o, c: _with_sidecar(c, o / "text/best.ckpt", b"epoch=3 step=120\n"),
        ),
        Broken(
            "ckpt.png_file",
            "png/best.ckpt",
            cp,
            "not a PyTorch checkpoint",
            lambda o, c: _with_sidecar(c, o / "png/best.ckpt", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ),
        Broken(
            "ckpt.zip_without_data_pkl",
            "plain_zip/best.ckpt",
            cp,
            "without notes/data.pkl",
            lambda o, c: _with_sidecar(c, o / "plain_zip/best.ckpt", _rezip([("notes/readme.txt", b"hi")])),
        ),
        Broken(
            "ckpt.state_dict_values_not_tensors",
            "not_tensors/best.ckpt",
            cp,
            "shape-mismatched keys",
            lambda o, c: _with_sidecar(
                c, o / "not_tensors/best.ckpt", _saved({"state_dict": dict.fromkeys(c["keys"], "not a tensor")})
            ),
        ),
        Broken(
            "ckpt.state_dict_keys_not_strings",
            "int_keys/best.ckpt",
            cp,
            "key(s) that are not strings",
            lambda o, c: _with_sidecar(c, o / "int_keys/best.ckpt", _saved({"state_dict": {0: torch.ones(1)}})),
        ),
        Broken(
            "ckpt.state_dict_a_list",
            "list_state/best.ckpt",
            cp,
            "has no `state_dict`",
            lambda o, c: _with_sidecar(c, o / "list_state/best.ckpt", _saved({"state_dict": [torch.ones(1)]})),
        ),
        Broken(
            "ckpt.a_bare_tensor",
            "bare_tensor/best.ckpt",
            cp,
            "holds a Tensor",
            lambda o, c: _with_sidecar(c, o / "bare_tensor/best.ckpt", _saved(torch.ones(3))),
        ),
        Broken(
            "ckpt.tensor_storage_too_short",
            "short_storage/best.ckpt",
            cp,
            "bytes where its pickle needs",
            lambda o, c: _with_sidecar(c, o / "short_storage/best.ckpt", _short_storage(c)),
        ),
        Broken(
            "ckpt.tensor_record_missing",
            "missing_storage/best.ckpt",
            cp,
            "record for a tensor its pickle holds",
            lambda o, c: _with_sidecar(c, o / "missing_storage/best.ckpt", _missing_storage(c)),
        ),
        Broken(
            "ckpt.record_past_end_of_file",
            "past_eof/best.ckpt",
            cp,
            "does not add up",
            lambda o, c: _with_sidecar(c, o / "past_eof/best.ckpt", _record_past_eof(c)),
        ),
        Broken(
            "ckpt.recompressed_archive",
            "deflated/best.ckpt",
            cp,
            "is compressed",
            lambda o, c: _with_sidecar(c, o / "deflated/best.ckpt", _rezip(entries(c["good"]), zipfile.ZIP_DEFLATED)),
        ),
        Broken(
            "ckpt.torchscript_archive",
            "torchscript/best.ckpt",
            cp,
            "TorchScript",
            lambda o, c: _with_sidecar(c, o / "torchscript/best.ckpt", c["torchscript"]),
        ),
        Broken(
            "ckpt.directory_named_ckpt",
            "deepspeed/best.ckpt",
            cp,
            "is a DeepSpeed sharded checkpoint",
            lambda o, c: _deepspeed(c, o / "deepspeed/best.ckpt"),
        ),
        Broken(
            "ckpt.unreadable",
            "unreadable_ckpt/best.ckpt",
            cp,
            "cannot open: Permission denied",
            lambda o, c: _copy_with_sidecar(c, o / "unreadable_ckpt/best.ckpt"),
        ),
        Broken(
            "ckpt.sparse_1GiB_of_zeros",
            "sparse_zeros/best.ckpt",
            cp,
            "not a PyTorch checkpoint",
            lambda o, c: _sparse_with_sidecar(c, o / "sparse_zeros/best.ckpt", b""),
        ),
        Broken(
            "ckpt.sparse_1GiB_after_a_checkpoint",
            "sparse_tail/best.ckpt",
            cp,
            "central directory is missing",
            lambda o, c: _sparse_with_sidecar(c, o / "sparse_tail/best.ckpt", c["good"]),
        ),
        Broken(
            "ckpt.non_utf8_folder_name",
            "run\\xff_20251017_215423/best.ckpt",  # as the id shows it
            cp,
            "is empty (0 bytes)",
            lambda o, c: _non_utf8(c, o),
        ),
        Broken(
            "ckpt.symlink_loop",
            "loop_ckpt/best.ckpt",
            "discovery",
            "symlink loop",
            lambda o, c: _symlink(o / "loop_ckpt/best.ckpt", "best.ckpt"),
        ),
        Broken(
            "ckpt.symlink_to_a_device",
            "device/best.ckpt",
            "discovery",
            "not a file",
            lambda o, c: _symlink(o / "device/best.ckpt", "/dev/zero"),
        ),
        Broken(
            "folder.symlink_loop",
            "loop_dir/up/best.ckpt",
            "discovery",
            "symlink loop",
            lambda o, c: _symlink(o / "loop_dir/up", ".."),
        ),
        # ---- configs beside a good checkpoint
        Broken(
            "cfg.not_json",
            "cfg_not_json/best.ckpt",
            cfg,
            "not valid JSON",
            lambda o, c: _sidecar(c, o / "cfg_not_json/best.ckpt", "{model: oops"),
        ),
        Broken(
            "cfg.empty",
            "cfg_empty/best.ckpt",
            cfg,
            "not valid JSON",
            lambda o, c: _sidecar(c, o / "cfg_empty/best.ckpt", ""),
        ),
        Broken(
            "cfg.not_utf8",
            "cfg_binary/best.ckpt",
            cfg,
            "not UTF-8 text",
            lambda o, c: _sidecar(c, o / "cfg_binary/best.ckpt", b'{"model": "\xff\xfe"}'),
        ),
        Broken(
            "cfg.json_10000_deep",
            "cfg_deep_json/best.ckpt",
            cfg,
            "nested too deeply",
            lambda o, c: _sidecar(c, o / "cfg_deep_json/best.ckpt", _deep_json(10_000)),
        ),
        Broken(
            "cfg.yaml_10000_deep_flow",
            "cfg_deep_yaml/best.ckpt",
            cfg,
            "nested too deeply",
            lambda o, c: _sidecar(c, o / "cfg_deep_yaml/best.ckpt", _deep_yaml_flow(10_000), ".config.yaml"),
        ),
        Broken(
            "cfg.yaml_10000_deep_block",
            "cfg_deep_block/best.ckpt",
            cfg,
            "nested too deeply",
            lambda o, c: _sidecar(c, o / "cfg_deep_block/best.ckpt", _deep_yaml_block(10_000), ".config.yaml"),
        ),
        Broken(
            "cfg.yaml_alias_bomb",
            "cfg_alias_bomb/best.ckpt",
            cfg,
            "alias bomb",
            lambda o, c: _sidecar(c, o / "cfg_alias_bomb/best.ckpt", ALIAS_BOMB, ".config.yaml"),
        ),
        Broken(
            "cfg.sparse_1GiB",
            "cfg_huge/best.ckpt",
            cfg,
            "is too large for a config",
            lambda o, c: _sparse_sidecar(c, o / "cfg_huge/best.ckpt"),
        ),
        Broken(
            "cfg.a_directory",
            "cfg_dir/best.ckpt",
            cfg,
            "not a regular file",
            lambda o, c: _sidecar_dir(c, o / "cfg_dir/best.ckpt"),
        ),
        Broken(
            "cfg.a_fifo",
            "cfg_fifo/best.ckpt",
            cfg,
            "not a regular file",
            lambda o, c: _sidecar_fifo(c, o / "cfg_fifo/best.ckpt"),
        ),
        Broken(
            "cfg.symlink_loop",
            "cfg_loop/best.ckpt",
            cfg,
            "Too many levels of symbolic links",
            lambda o, c: _sidecar_loop(c, o / "cfg_loop/best.ckpt"),
        ),
        Broken(
            "cfg.unreadable",
            "unreadable_cfg/best.ckpt",
            cfg,
            "cannot read: Permission denied",
            lambda o, c: _sidecar(c, o / "unreadable_cfg/best.ckpt", c["sidecar"]),
        ),
        Broken(
            "cfg.top_level_list",
            "cfg_list/best.ckpt",
            cfg,
            "expected a mapping at the top",
            lambda o, c: _sidecar(c, o / "cfg_list/best.ckpt", "[1, 2, 3]"),
        ),
        Broken(
            "cfg.hydra_alias_bomb",
            "hydra_bomb/checkpoints/best.ckpt",
            cfg,
            "alias bomb",
            lambda o, c: _hydra(c, o / "hydra_bomb/checkpoints/best.ckpt", ALIAS_BOMB),
        ),
        Broken(
            "cfg.hparams_10000_deep",
            "hparams_deep/checkpoints/best.ckpt",
            cfg,
            "nested too deeply",
            lambda o, c: _hparams(c, o / "hparams_deep/checkpoints/best.ckpt", _deep_yaml_flow(10_000)),
        ),
    ]
    return found


def _deepspeed(context: dict[str, Any], path: Path) -> None:
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"\x80\x02}q\x00.")
    path.with_name("best.config.json").write_text(context["sidecar"])


def _copy_with_sidecar(context: dict[str, Any], path: Path) -> None:
    _copy(context, path)
    path.with_name("best.config.json").write_text(context["sidecar"])


def _sparse_with_sidecar(context: dict[str, Any], path: Path, head: bytes) -> None:
    _sparse(path, head)
    path.with_name("best.config.json").write_text(context["sidecar"])


def _sparse_sidecar(context: dict[str, Any], path: Path) -> None:
    _copy(context, path)
    _sparse(path.with_name("best.config.json"), b'{"model": {')


def _sidecar_dir(context: dict[str, Any], path: Path) -> None:
    _copy(context, path)
    path.with_name("best.config.json").mkdir()


def _sidecar_fifo(context: dict[str, Any], path: Path) -> None:
    _copy(context, path)
    os.mkfifo(path.with_name("best.config.json"))


def _sidecar_loop(context: dict[str, Any], path: Path) -> None:
    _copy(context, path)
    path.with_name("best.config.json").symlink_to("best.config.json")


def _hydra(context: dict[str, Any], path: Path, text: str) -> None:
    _copy(context, path)
    hydra = path.parent.parent / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(text)


def _hparams(context: dict[str, Any], path: Path, text: str) -> None:
    _copy(context, path)
    logs = path.parent.parent / "lightning_logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "hparams.yaml").write_text(text)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def _non_utf8(context: dict[str, Any], outputs: Path) -> None:
    folder = os.path.join(os.fsencode(outputs), b"run\xff_20251017_215423")
    os.makedirs(folder)
    with open(os.path.join(folder, b"best.ckpt"), "wb"):
        pass
    with open(os.path.join(folder, b"best.config.json"), "w") as handle:
        handle.write(context["sidecar"])


# ------------------------------------------------------------------------------------------ hostile configs

# Named by a model section's `_target_`: each must fail the schema check before anything is imported or called.
HOSTILE_TARGETS = (
    "os.system",
    "posix.system",
    "nt.system",
    "subprocess.Popen",
    "subprocess.run",
    "subprocess.check_output",
    "builtins.eval",
    "builtins.exec",
    "builtins.open",
    "builtins.__import__",
    "io.open",
    "pathlib.Path.touch",
    "shutil.rmtree",
    "shutil.copyfile",
    "runpy.run_path",
    "importlib.import_module",
    "webbrowser.open",
    "pickle.loads",
    "marshal.loads",
    "ctypes.CDLL",
    "socket.create_connection",
    "timeit.timeit",
    "logging.FileHandler",
    "tempfile.mkstemp",
    "torch.save",
    "torch.load",
    "torch.hub.load",
    "torch.utils.cpp_extension.load_inline",
    "hydra.utils.instantiate",
    "hydra.utils.call",
)

# Sections that hide a refused target deeper, or outside the allowlist, or behind an interpolation.
# Each: (name, model section with {marker} and {evil} placeholders, fragment the message must hold)
HOSTILE_SECTIONS: tuple[tuple[str, Any, str], ...] = (
    ("evil_package_on_import", {"_target_": "{evil}.Net", "width": 4}, "is outside the allowed module prefixes"),
    ("lookalike_prefix", {"_target_": "mymodelsevil.Net", "width": 4}, "is outside the allowed module prefixes"),
    ("leading_space", {"_target_": " os.system", "width": 4}, "is outside the allowed module prefixes"),
    ("nested_in_model", {"_target_": "mymodels.Net", "width": 4, "decoder": {"_target_": "os.system"}}, "decoder"),
    (
        "nested_in_args_list",
        {"_target_": "mymodels.Net", "width": 4, "_args_": [{"_target_": "subprocess.Popen", "args": ["touch"]}]},
        "_args_[0]._target_",
    ),
    ("not_a_string", {"_target_": ["os", "system"], "width": 4}, "must be a dotted import path string"),
    (
        "through_an_allowed_package",
        {
            "_target_": "mymodels.Net",
            "width": 4,
            "head": {"_target_": "mymodels.torch.save", "_args_": [{}, "{marker}"]},
        },
        "reaches `torch.save` through the allowed package",
    ),
    ("dunder_attribute", {"_target_": "mymodels.__builtins__.get", "width": 4}, "private attribute `__builtins__`"),
    (
        "escaped_interpolation_builds_a_target",
        {
            "_target_": "mymodels.Net",
            "width": 4,
            "extra": "\\${oc.create:{_target_: builtins.open, _args_: ['{marker}', 'w']}}",
        },
        "is an interpolation that would be resolved only when the model is built",
    ),
    (
        "interpolation_resolved_to_a_target",
        {
            "_target_": "mymodels.Net",
            "width": 4,
            "extra": "${oc.create:{_target_: os.system, _args_: ['touch {marker}']}}",
        },
        "`_target_` 'os.system' is refused",
    ),
    (
        "escaped_interpolated_target",
        {"_target_": "\\${oc.env:CKG_TARGET,mymodels.Net}", "width": 4},
        "is an interpolation",
    ),
)


def hostile_sections() -> list[str]:
    return [f"target.{target}" for target in HOSTILE_TARGETS] + [f"section.{name}" for name, _, _ in HOSTILE_SECTIONS]


def hostile_section(name: str, marker: Path, evil: str) -> tuple[dict[str, Any], str]:
    """The model section of a hostile config, and the fragment its schema failure must hold."""
    if name.startswith("target."):
        target = name.removeprefix("target.")
        section = {"_target_": "mymodels.Net", "width": 4, "encoder": {"_target_": target, "_args_": [str(marker)]}}
        return section, f"`_target_` {target!r} is "
    wanted = name.removeprefix("section.")
    template, fragment = next((s, f) for n, s, f in HOSTILE_SECTIONS if n == wanted)

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return node.replace("{marker}", str(marker)).replace("{evil}", evil)
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return node

    return fill(template), fragment
