"""The kinds of file three public pickle scanners test themselves on, generated here, each with the class of
message it must get, and none of them running anything.

picklescan (``tests/init_data_files.py``), modelscan (``tests/test_modelscan.py``) and fickling
(``test/test_polyglot.py``, ``test_bypasses.py``, ``test_crashes.py``) build their samples with scripts. We read
those for the *classes* of file they make and wrote our own generators: nothing of theirs is copied, nothing is
stored, every file is built in the test's temporary folder, and every payload would only touch a marker file
there. The classes, and what the gate must say (the message is one line; "truncated" only for a real cut):

* bare pickles (no zip, no torch.save framing) of protocols 0 to 5 whose ``__reduce__`` calls ``os.system``,
  ``os.popen``, ``builtins.eval``/``exec``, ``subprocess.Popen``, ``webbrowser.open``, ``runpy._run_code`` or
  ``pickle.loads``: the refused global as Python 3 spells it (protocols 0-3), or the opcode ``FRAME`` that
  protocols 4 and 5 begin with, and the global beside it;
* pickles the weights-only unpickler stops at an opcode it does not support: one file for every opcode of
  ``pickletools`` that torch refuses (probed with torch's own unpickler), and payloads hand-assembled around
  ``INST``, ``STACK_GLOBAL`` (literal names, names behind memo decoys, a dotted name), a nested ``pickle.loads``:
  the opcode named;
* persistent ids (``PERSID``, ``BINPERSID`` of a string, a tuple, an int) in bare pickles, a legacy file and a
  torch zip: "persistent id" named;
* bad magic numbers (a bare pickle of plain data, a legacy file whose first pickle is another number), a wrong
  protocol version, garbage bytes where the pickle goes on;
* zips with entries at their root (``data.pkl``, ``data.txt``, renamed in the local header, a broken CRC,
  several, "encrypted") and with several folders: the entry named;
* polyglots: a pickle (payload, protocol 0, or a whole legacy torch file) with a zip after it is refused as
  both; a zip with a pickle after it loads as the zip (torch never reads the pickle), junk before a zip is not
  a checkpoint;
* real truncations: a torch.save zip cut at nine points, a legacy file cut inside and before each of its five
  pickles and in its tensor data, bare pickles cut inside a GLOBAL (torch refuses the shortened name: the cut
  is the reason) and before their STOP.

The positive control loads every live sample with plain ``torch.load(weights_only=False)`` in a subprocess and
watches its marker appear.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import os
import pickle
import pickletools
import re
import runpy
import struct
import subprocess
import time
import warnings
import webbrowser
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import loading
from ckptgate.errors import CheckError

from conftest import model_section
from security import corpus
from security.conftest import fired, fired_within, load_unsafely
from security.figures import record

NOTHING_RAN = "Nothing in the file was executed"
REFUSED = "refused to load: "

# ---------------------------------------------------------------------------------------------- our assembler


def u(text: str) -> bytes:
    """BINUNICODE (an opcode the weights-only unpickler supports): a string pushed on the stack."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def short_u(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4; the weights-only unpickler refuses it)."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL, protocol 0's way of naming a callable."""
    return b"c" + f"{module}\n{name}\n".encode()


PROTO2 = b"\x80\x02"
TUPLE1, TUPLE2, REDUCE, STOP, BINPERSID = b"\x85", b"\x86", b"R", b".", b"Q"


def touch(marker: Path) -> str:
    return f"touch '{marker}'"


def python_touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


# --------------------------------------------------------------------------------------------- the samples


@dataclass(frozen=True)
class Sample:
    """One generated file and what the gate must say about it."""

    data: bytes
    kind: str  # the class of message: a key of CLASSES
    fragments: tuple[str, ...] = ()  # each must be in the message
    live: bool = False  # plain torch.load(weights_only=False) runs its payload (the positive control checks)


# kind -> (words every message of the class holds, a refusal: says that nothing ran)
CLASSES: dict[str, tuple[str, bool]] = {
    "global": (REFUSED, True),
    "opcode": (f"{REFUSED}the weights-only unpickler stopped at: the pickle opcode ", True),
    "persistent": ("persistent id", True),
    "junk": ("which is no pickle opcode", True),
    "zip_root": (f"{REFUSED}its zip has entries at its root, outside any archive folder: ", True),
    "zip_folders": ("lies outside the archive's folder", True),
    "bad_magic": ("it is a pickle with a bad magic number", True),
    "protocol_version": ("protocol version", True),
    "polyglot": (f"{REFUSED}it is a pickle and a zip archive at once", True),
    "not_a_checkpoint": ("is not a PyTorch checkpoint (starts with bytes", False),
    "truncated": ("truncated", False),
    "loads": ("", False),
}


class Call:
    """Pickles as ``func(*args)``: the ``__reduce__`` the scanners' samples are made of."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# name -> (callable, marker -> its arguments). Each touches the marker when called.
REDUCERS: dict[str, tuple[Any, Callable[[Path], tuple[Any, ...]]]] = {
    "os.system": (os.system, lambda m: (touch(m),)),
    "os.popen": (os.popen, lambda m: (touch(m),)),
    "builtins.eval": (eval, lambda m: (python_touch(m),)),
    "builtins.exec": (exec, lambda m: (python_touch(m),)),
    "subprocess.Popen": (subprocess.Popen, lambda m: (["touch", str(m)],)),
    "webbrowser.open": (webbrowser.open, lambda m: (str(m),)),  # BROWSER=touch: no browser is started
    "runpy._run_code": (runpy._run_code, lambda m: (python_touch(m), {})),
    "pickle.loads": (pickle.loads, lambda m: (pickle.dumps(Call(os.system, touch(m)), protocol=2),)),
}


def python3_name(func: Any) -> str:
    """How Python 3 spells the global a pickle of ``func`` names (``os.system`` is ``posix.system``)."""
    return f"{func.__module__}.{func.__qualname__}"


def first_global(data: bytes) -> str:
    """The Python 3 name of a protocol 0-3 pickle's first GLOBAL: protocols 0-2 write Python 2's names
    (``__builtin__.eval``, ``commands.Popen``, ``pickle.loads`` for ``_pickle.loads``), which Python 3 maps back."""
    arg = next(arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL")
    module, name = arg.split(" ", 1)
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def reducer(name: str, marker: Path) -> Call:
    func, args = REDUCERS[name]
    return Call(func, *args(marker))


def bare_pickle(name: str, protocol: int, marker: Path) -> Sample:
    func = REDUCERS[name][0]
    data = pickle.dumps(reducer(name, marker), protocol=protocol)
    spelled = python3_name(func)
    if protocol >= 4:  # FRAME comes first: the opcode is what the loader stops at, the global is named beside it
        assert data[2:3] == b"\x95", data[:3]
        return Sample(data, "opcode", ("the pickle opcode FRAME (0x95", f"also names {spelled}"), live=True)
    return Sample(data, "global", (f"the global {first_global(data)}",), live=True)


# every opcode's argument, shortest valid form (pickletools' argument descriptors)
ARGUMENTS = {
    "uint1": b"\x01",
    "uint2": b"\x01\x00",
    "int4": b"\x01\x00\x00\x00",
    "uint4": b"\x01\x00\x00\x00",
    "uint8": b"\x01" + bytes(7),
    "stringnl": b"'a'\n",
    "stringnl_noescape": b"a\n",
    "stringnl_noescape_pair": b"collections\nOrderedDict\n",
    "string1": b"\x01a",
    "string4": b"\x01\x00\x00\x00a",
    "bytes1": b"\x01a",
    "bytes4": b"\x01\x00\x00\x00a",
    "bytes8": b"\x01" + bytes(7) + b"a",
    "bytearray8": b"\x01" + bytes(7) + b"a",
    "unicodestringnl": b"a\n",
    "unicodestring1": b"\x01a",
    "unicodestring4": b"\x01\x00\x00\x00a",
    "unicodestring8": b"\x01" + bytes(7) + b"a",
    "decimalnl_short": b"1\n",
    "decimalnl_long": b"1L\n",
    "floatnl": b"1.5\n",
    "float8": struct.pack(">d", 1.5),
    "long1": b"\x01\x01",
    "long4": b"\x01\x00\x00\x00\x01",
}


def opcode_sample_data(opcode: pickletools.OpcodeInfo) -> bytes:
    """Protocol 2, then the opcode with a valid argument, then STOP."""
    argument = ARGUMENTS[opcode.arg.name] if opcode.arg is not None else b""
    return PROTO2 + opcode.code.encode("latin-1") + argument + STOP


def torch_refuses(opcode: pickletools.OpcodeInfo) -> bool:
    """Whether torch's own weights-only unpickler stops at the opcode (the ground truth of the class)."""
    from torch import _weights_only_unpickler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _weights_only_unpickler.load(io.BytesIO(opcode_sample_data(opcode)))
        except pickle.UnpicklingError as exc:
            return f"Unsupported operand {opcode.code.encode('latin-1')[0]}" in str(exc)
        except Exception:
            return False
    return False


UNSUPPORTED = [op for op in pickletools.opcodes if op.name not in ("PROTO", "STOP") and torch_refuses(op)]


def unsupported_opcode(name: str) -> Sample:
    opcode = next(op for op in UNSUPPORTED if op.name == name)
    return Sample(opcode_sample_data(opcode), "opcode", (f"the pickle opcode {name} (0x{ord(opcode.code):02x}",))


def hand_assembled(name: str, marker: Path) -> Sample:
    """Payloads assembled opcode by opcode, as the scanners' CTF and bypass samples are (ours, not theirs)."""
    cmd = u(touch(marker))
    if name == "inst.os_system":  # INST names and calls at once
        return Sample(PROTO2 + b"(" + cmd + b"ios\nsystem\n" + STOP, "opcode", ("INST", "os.system"), live=True)
    if name == "obj.os_system":  # OBJ takes its class from a GLOBAL before it: the GLOBAL is refused first
        return Sample(PROTO2 + b"(" + glob("os", "system") + cmd + b"o" + STOP, "global", ("os.system",), True)
    if name == "stack_global.literal":
        data = PROTO2 + u("os") + u("system") + b"\x93" + cmd + TUPLE1 + REDUCE + STOP
        return Sample(data, "opcode", ("STACK_GLOBAL", "also names os.system"), live=True)
    if name == "stack_global.memo_decoys":  # names put in the memo among decoys, fetched by BINGET
        memo = u("torch") + b"q\x00" + u("os") + b"q\x01" + u("LongStorage") + b"q\x02" + u("system") + b"q\x03"
        data = PROTO2 + memo + b"h\x01h\x03\x93" + cmd + TUPLE1 + REDUCE + STOP
        return Sample(data, "opcode", ("STACK_GLOBAL", "also names os.system"), live=True)
    if name == "stack_global.protocol0_put_get":  # text opcodes: UNICODE, PUT, POP, GET, then STACK_GLOBAL
        memo = b"Vos\np1\n0Vsystem\np2\n0Vtorch\np3\n0"
        data = memo + b"g1\ng2\n\x93(V" + touch(marker).encode() + b"\ntR."
        return Sample(data, "opcode", ("the pickle opcode UNICODE", "also names os.system"), live=True)
    if name == "stack_global.dotted_name":  # protocol 4 resolves "eval.__call__" attribute by attribute
        data = b"\x80\x04" + u("builtins") + u("eval.__call__") + b"\x93" + u(python_touch(marker)) + TUPLE1
        return Sample(data + REDUCE + STOP, "opcode", ("STACK_GLOBAL", "builtins.eval.__call__"), live=True)
    if name == "stack_global.short_strings":  # protocol 4 as Python writes it by hand: SHORT_BINUNICODE first
        data = b"\x80\x04" + short_u("os") + b"\x94" + short_u("system") + b"\x94\x93" + short_u(touch(marker))
        data += TUPLE1 + REDUCE + STOP
        return Sample(data, "opcode", ("SHORT_BINUNICODE", "also names os.system"), live=True)
    if name == "global.dotted_name":  # GLOBAL of "eval.__call__" in protocol 5: torch names it without builtins.
        data = b"\x80\x05" + glob("builtins", "eval.__call__") + u(python_touch(marker)) + TUPLE1 + REDUCE + STOP
        return Sample(data, "global", ("the global builtins.eval.__call__",), live=True)
    if name == "global.nested_pickle_loads":  # pickle.loads of a pickle carried as BINBYTES
        inner = pickle.dumps(Call(os.system, touch(marker)), protocol=2)
        data = b"\x80\x05" + glob("pickle", "loads") + b"B" + struct.pack("<I", len(inner)) + inner
        return Sample(data + TUPLE1 + REDUCE + STOP, "global", ("the global pickle.loads",), live=True)
    if name == "global.then_type_confused_stack_global":  # runs, then breaks (a scanner crash sample)
        data = b"\x80\x04" + glob("os", "system") + u(touch(marker)) + TUPLE1 + REDUCE + b"0"
        data += b"J\x2a\x00\x00\x00\x94" + u("os") + b"\x94h\x00h\x01\x93K\x42" + STOP
        return Sample(data, "global", ("the global os.system",), live=True)
    if name == "global.sour_pickle_chain":  # getattr/compile/eval chain of the classic talk, protocol 0
        code = f"{python_touch(marker)}"
        data = (
            glob("__builtin__", "compile") + b"(S'" + code.encode() + b"'\nS''\nS'exec'\ntRp0\n0"
            + glob("__builtin__", "eval") + b"(g0\ntR."
        )  # fmt: skip
        return Sample(data, "global", ("the global builtins.compile",), live=True)
    raise ValueError(name)


HAND_ASSEMBLED = (
    "inst.os_system",
    "obj.os_system",
    "stack_global.literal",
    "stack_global.memo_decoys",
    "stack_global.protocol0_put_get",
    "stack_global.dotted_name",
    "stack_global.short_strings",
    "global.dotted_name",
    "global.nested_pickle_loads",
    "global.then_type_confused_stack_global",
    "global.sour_pickle_chain",
)


def persistent(name: str) -> Sample:
    if name == "persid.text":  # protocol 0: the id is the opcode's own text argument
        return Sample(b"Pevil\n" + STOP, "persistent", ("the pickle opcode PERSID", "a persistent id 'evil'"))
    if name == "binpersid.string":
        return Sample(PROTO2 + u("evil") + BINPERSID + STOP, "persistent", ("BINPERSID", "'evil'"))
    if name == "binpersid.tuple":
        return Sample(PROTO2 + u("evil") + b"K\x01" + TUPLE2 + BINPERSID + STOP, "persistent", ("BINPERSID",))
    if name == "binpersid.int":
        return Sample(PROTO2 + b"K\x07" + BINPERSID + STOP, "persistent", ("BINPERSID",))
    if name == "binpersid.storage_tuple_in_a_bare_pickle":
        storage = b"(" + u("storage") + glob("torch", "FloatStorage") + u("0") + u("cpu") + b"K\x01t"
        return Sample(PROTO2 + storage + BINPERSID + STOP, "persistent", ("BINPERSID",))
    raise ValueError(name)


PERSISTENT = (
    "persid.text",
    "binpersid.string",
    "binpersid.tuple",
    "binpersid.int",
    "binpersid.storage_tuple_in_a_bare_pickle",
)

# ---------------------------------------------------------------------------------------- torch.save files


def state() -> dict[str, Any]:
    return {"state_dict": {"model.w": torch.arange(64, dtype=torch.float32)}, "epoch": 1}


def legacy_bytes(obj: Any = None) -> bytes:
    buffer = io.BytesIO()
    torch.save(state() if obj is None else obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def pickle_ends(data: bytes, count: int = 5) -> list[int]:
    """Where each of a legacy file's first ``count`` pickles ends."""
    return corpus._pickle_ends(data, count)


def with_pickle(data: bytes, index: int, replacement: bytes) -> bytes:
    """A legacy file with its ``index``-th pickle (0: magic number ... 4: storage keys) replaced."""
    ends = pickle_ends(data)
    start = ends[index - 1] if index else 0
    return data[:start] + replacement + data[ends[index] :]


def torch_zip(data_pkl: bytes | None = None) -> bytes:
    """A torch.save archive, its data.pkl replaced when given."""
    records = corpus.entries(corpus.archive_bytes(state()))
    if data_pkl is not None:
        records = [(n, data_pkl if n.endswith("/data.pkl") else d) for n, d in records]
    return zip_of(records)


def zip_of(records: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in records:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 10, 17, 21, 54, 24)), data)
    return buffer.getvalue()


def encrypted(data: bytes, name: str) -> bytes:
    """The entry ``name`` flagged as encrypted (bit 0 of its flags), in its local header and the directory."""
    raw = bytearray(data)
    for signature, flags_at, name_len_at, header in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = raw.find(signature)
        while at != -1:
            length = struct.unpack_from("<H", raw, at + name_len_at)[0]
            if bytes(raw[at + header : at + header + length]) == name.encode():
                raw[at + flags_at] |= 0x01
            at = raw.find(signature, at + 4)
    return bytes(raw)


def payload_p4(marker: Path) -> bytes:
    return pickle.dumps(reducer("builtins.eval", marker), protocol=4)


def payload_p2(marker: Path) -> bytes:
    return pickle.dumps(reducer("os.system", marker), protocol=2)


def zips(name: str, marker: Path) -> Sample:
    evil = payload_p4(marker)
    if name == "zip.root.data_pkl":  # the scanners' "malicious1.zip": one pickle at the zip's root
        return Sample(zip_of([("data.pkl", evil)]), "zip_root", ("'data.pkl'",))
    if name == "zip.root.data_txt":  # the same under another extension
        return Sample(zip_of([("data.txt", evil)]), "zip_root", ("'data.txt'",))
    if name == "zip.root.renamed_in_the_local_header":  # the directory and the local header disagree
        data = zip_of([("data.pkl", evil)]).replace(b"data.pkl", b"datap.kl", 1)
        return Sample(data, "zip_root", ("'data.pkl'",))
    if name == "zip.root.crc_mismatch":  # the record's bytes changed after the zip was written
        data = zip_of([("data.pkl", evil)])
        return Sample(data.replace(b"open(", b"oPen(", 1), "zip_root", ("'data.pkl'",))
    if name == "zip.root.beside_a_torch_archive":
        records = [*corpus.entries(torch_zip()), ("data.pkl", evil)]
        return Sample(zip_of(records), "zip_root", ("'data.pkl'",))
    if name == "zip.root.before_a_torch_archive":
        records = [("data.pkl", evil), *corpus.entries(torch_zip())]
        return Sample(zip_of(records), "zip_root", ("'data.pkl'",))
    if name == "zip.root.several":
        records = [(f"part{i}.pkl", evil) for i in range(5)]
        return Sample(zip_of(records), "zip_root", ("'part0.pkl', 'part1.pkl', 'part2.pkl', … (5 in all)",))
    if name == "zip.root.encrypted":  # a password-protected zip, as far as its flags say
        return Sample(encrypted(zip_of([("data.pkl", evil)]), "data.pkl"), "zip_root", ("'data.pkl'",))
    if name == "zip.folders.second_archive_after":
        records = [*corpus.entries(torch_zip()), ("other/data.pkl", evil)]
        return Sample(
            zip_of(records), "zip_folders", ("'other/data.pkl' lies outside the archive's folder 'archive/'",)
        )
    if name == "zip.folders.two_archives":
        records = [(n.replace("archive/", "a/", 1), d) for n, d in corpus.entries(torch_zip())]
        records += [(n.replace("archive/", "b/", 1), d) for n, d in corpus.entries(torch_zip(evil))]
        return Sample(zip_of(records), "zip_folders", ("'b/data.pkl' lies outside the archive's folder 'a/'",))
    if name == "zip.torch_layout.payload_protocol_2":  # a torch.save archive whose data.pkl is a payload
        data = torch_zip(payload_p2(marker))
        return Sample(data, "global", ("posix.system", "outside the safe allowlist"), live=True)
    if name == "zip.torch_layout.payload_protocol_4":
        data = torch_zip(evil)
        return Sample(data, "opcode", ("FRAME", "of archive/data.pkl", "also names builtins.eval"), live=True)
    if name == "zip.torch_layout.string_persistent_id":
        data = torch_zip(PROTO2 + u("evil") + BINPERSID + STOP)
        return Sample(data, "persistent", ("BINPERSID", "'evil'"))
    if name == "zip.torch_layout.int_persistent_id":  # passes the unpickler, fails torch's storage loader
        return Sample(torch_zip(PROTO2 + b"K\x07" + BINPERSID + STOP), "persistent", ("BINPERSID",))
    raise ValueError(name)


ZIPS = (
    "zip.root.data_pkl",
    "zip.root.data_txt",
    "zip.root.renamed_in_the_local_header",
    "zip.root.crc_mismatch",
    "zip.root.beside_a_torch_archive",
    "zip.root.before_a_torch_archive",
    "zip.root.several",
    "zip.root.encrypted",
    "zip.folders.second_archive_after",
    "zip.folders.two_archives",
    "zip.torch_layout.payload_protocol_2",
    "zip.torch_layout.payload_protocol_4",
    "zip.torch_layout.string_persistent_id",
    "zip.torch_layout.int_persistent_id",
)


def legacy(name: str, marker: Path) -> Sample:
    whole = legacy_bytes()
    if name == "legacy.intact":
        return Sample(whole, "loads")
    if name == "legacy.protocol_version_1002":
        return Sample(with_pickle(whole, 1, pickle.dumps(1002, protocol=2)), "protocol_version", ("1002",))
    if name == "legacy.magic_number_12345":
        return Sample(with_pickle(whole, 0, pickle.dumps(12345, protocol=2)), "bad_magic", ("the number 0x3039",))
    if name == "legacy.magic_number_made_by_eval":  # picklescan's "magic bypass", our own: eval returns it
        magic = Call(eval, f"{python_touch(marker)} or {loading.MAGIC_NUMBER:#x}")
        data = with_pickle(whole, 0, pickle.dumps(magic, protocol=2))
        return Sample(data, "global", ("the global builtins.eval",), live=True)
    if name == "legacy.payload_in_the_object":
        data = legacy_bytes({**state(), "hyper_parameters": reducer("os.system", marker)})
        return Sample(data, "global", ("the global posix.system",), live=True)
    if name == "legacy.payload_in_the_storage_keys":
        return Sample(with_pickle(whole, 4, payload_p2(marker)), "global", ("the global posix.system",), live=True)
    if name == "legacy.garbage_for_its_object":
        return Sample(with_pickle(whole, 3, PROTO2 + b"\xff\xfe\xfd" + STOP), "junk", ("the byte 0xff",))
    if name == "legacy.int_persistent_id":  # torch's legacy storage loader is given an int
        return Sample(with_pickle(whole, 3, PROTO2 + b"K\x07" + BINPERSID + STOP), "persistent", ("BINPERSID",))
    raise ValueError(name)


LEGACY = (
    "legacy.intact",
    "legacy.protocol_version_1002",
    "legacy.magic_number_12345",
    "legacy.magic_number_made_by_eval",
    "legacy.payload_in_the_object",
    "legacy.payload_in_the_storage_keys",
    "legacy.garbage_for_its_object",
    "legacy.int_persistent_id",
)

BAD_MAGIC = {  # bare pickles of plain data: the loader reads them, and they are not torch's magic number
    "bare.list_protocol_1": (["a", "b", "c"], 1, "a list"),
    "bare.list_protocol_2": (["a", "b", "c"], 2, "a list"),
    "bare.dict_protocol_3": ({"a": 1}, 3, "a dict"),
    "bare.string_protocol_2": ("weights", 2, "a string"),
    "bare.number_protocol_2": (7, 2, "the number 0x7"),
    "bare.float_protocol_3": (1.5, 3, "a float"),
    "bare.none_protocol_2": (None, 2, "None"),
}


def polyglot(name: str, marker: Path) -> Sample:
    if name == "polyglot.payload_pickle_then_torch_zip":
        data = payload_p2(marker) + torch_zip()
        return Sample(data, "polyglot", ("'archive/data.pkl'", "the pickle names posix.system"), live=True)
    if name == "polyglot.protocol0_payload_then_zip":
        data = pickle.dumps(reducer("builtins.eval", marker), protocol=0) + zip_of([("data.pkl", b"x")])
        return Sample(data, "polyglot", ("'data.pkl'", "the pickle names builtins.eval"), live=True)
    if name == "polyglot.legacy_file_then_zip_payload":  # torch reads the intact legacy file; zip tools the zip
        data = legacy_bytes() + torch_zip(payload_p2(marker))
        return Sample(data, "polyglot", ("'archive/data.pkl'",))
    if name == "polyglot.torch_zip_then_payload_pickle":  # torch reads the zip; the pickle after it never runs
        return Sample(torch_zip() + payload_p2(marker), "loads")
    if name == "polyglot.junk_then_torch_zip":  # fickling's "random string before a zip"
        return Sample(b"Kz8Qm2Lp0Xv7Rt4Ws1Yb" + torch_zip(), "not_a_checkpoint", ("b'Kz8Q'",))
    raise ValueError(name)


POLYGLOTS = (
    "polyglot.payload_pickle_then_torch_zip",
    "polyglot.protocol0_payload_then_zip",
    "polyglot.legacy_file_then_zip_payload",
    "polyglot.torch_zip_then_payload_pickle",
    "polyglot.junk_then_torch_zip",
)

ZIP_CUTS = ("4", "30", "200", "1/4", "1/2", "3/4", "-200", "-22", "-1")


def cut_zip(where: str) -> Sample:
    whole = torch_zip()
    size = len(whole)
    cut = size * int(where[0]) // int(where[2]) if "/" in where else int(where) % size
    return Sample(whole[:cut], "truncated", (f"{cut:,} bytes",))


LEGACY_CUTS = (
    *(f"before_pickle_{index}" for index in (2, 3, 4, 5)),
    *(f"inside_pickle_{index}" for index in (1, 2, 3, 4, 5)),
    "in_the_tensor_data",
    "one_byte_short",
)


def cut_legacy(where: str) -> Sample:
    whole = legacy_bytes()
    ends = pickle_ends(whole)
    starts = [0, *ends[:-1]]
    if where.startswith("before_pickle_"):
        index = int(where[-1]) - 1
        words = f"it ends before its {loading._LEGACY_PICKLES[index]} pickle"
        return Sample(whole[: starts[index]], "truncated", (words,))
    if where.startswith("inside_pickle_"):
        index = int(where[-1]) - 1
        cut = (starts[index] + ends[index]) // 2
        return Sample(whole[:cut], "truncated", (f"it ends inside its {loading._LEGACY_PICKLES[index]} pickle",))
    cut = (ends[-1] + len(whole)) // 2 if where == "in_the_tensor_data" else len(whole) - 1
    return Sample(whole[:cut], "truncated", ("its five pickles are whole, its tensor data is not",))


def cut_bare(name: str, marker: Path) -> Sample:
    if name == "bare_cut.inside_its_global":  # torch refuses the shortened name "__builtin__.ev": a cut
        data = pickle.dumps(reducer("builtins.eval", marker), protocol=2)
        at = data.index(b"eval") + 2
        return Sample(data[:at], "truncated", ("in a GLOBAL opcode at byte 2",))
    if name == "bare_cut.inside_its_module_name":
        data = pickle.dumps(reducer("subprocess.Popen", marker), protocol=3)
        return Sample(data[: data.index(b"subproc") + 4], "truncated", ("in a GLOBAL opcode",))
    if name == "bare_cut.before_its_stop":
        return Sample(pickle.dumps(["a", "b"], protocol=2)[:-1], "truncated", ("before its STOP opcode",))
    raise ValueError(name)


BARE_CUTS = ("bare_cut.inside_its_global", "bare_cut.inside_its_module_name", "bare_cut.before_its_stop")
NOT_CHECKPOINTS = {  # files the scanners keep that are no pickle at all
    "other.png_header": (b"\x89PNG\r\n\x1a\n" + bytes(24), "b'\\x89PNG'"),
    "other.bad_utf8_global": (b"cmod\n\xf8\n", "b'cmod'"),
}


def names() -> list[str]:
    """Every sample, by name (the test ids); built only when its test runs."""
    found = [f"bare.{kind}.protocol_{p}" for kind in REDUCERS for p in range(6)]
    found += [f"opcode.{op.name}" for op in UNSUPPORTED] + [f"hand.{name}" for name in HAND_ASSEMBLED]
    found += list(PERSISTENT) + list(BAD_MAGIC) + list(ZIPS) + list(LEGACY) + list(POLYGLOTS)
    found += list(NOT_CHECKPOINTS)
    found += [f"cut.zip_at_{where}" for where in ZIP_CUTS] + [f"cut.legacy_{where}" for where in LEGACY_CUTS]
    return found + list(BARE_CUTS)


SAMPLES = names()


def build(name: str, marker: Path) -> Sample:
    """The sample ``name``; its payload, if any, would touch ``marker``."""
    if name.startswith("bare.") and name not in BAD_MAGIC:
        reducer_name, protocol = name.removeprefix("bare.").rsplit(".protocol_", 1)
        return bare_pickle(reducer_name, int(protocol), marker)
    if name.startswith("opcode."):
        return unsupported_opcode(name.removeprefix("opcode."))
    if name.startswith("hand."):
        return hand_assembled(name.removeprefix("hand."), marker)
    if name in PERSISTENT:
        return persistent(name)
    if name in BAD_MAGIC:
        value, protocol, words = BAD_MAGIC[name]
        return Sample(pickle.dumps(value, protocol=protocol), "bad_magic", (f"its first pickle holds {words},",))
    if name in ZIPS:
        return zips(name, marker)
    if name in LEGACY:
        return legacy(name, marker)
    if name in POLYGLOTS:
        return polyglot(name, marker)
    if name in NOT_CHECKPOINTS:
        data, head = NOT_CHECKPOINTS[name]
        return Sample(data, "not_a_checkpoint", (head,))
    if name.startswith("cut.zip_at_"):
        return cut_zip(name.removeprefix("cut.zip_at_"))
    if name.startswith("cut.legacy_"):
        return cut_legacy(name.removeprefix("cut.legacy_"))
    return cut_bare(name, marker)


def marker_for(markers: Path, name: str) -> Path:
    return markers / (re.sub(r"[^A-Za-z0-9]+", "_", name) + ".marker")


def write(name: str, folder: Path, markers: Path) -> tuple[Path, Sample]:
    sample = build(name, marker_for(markers, name))
    path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".ckpt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sample.data)
    return path, sample


def check_message(message: str, sample: Sample) -> list[str]:
    """What is wrong with ``message`` for ``sample`` (empty: right)."""
    words, refusal = CLASSES[sample.kind]
    wrong = [f"not one line: {message!r}"] if "\n" in message else []
    if words not in message:
        wrong.append(f"no {words!r}")
    wrong += [f"no {fragment!r}" for fragment in sample.fragments if fragment not in message]
    if refusal and NOTHING_RAN not in message:
        wrong.append(f"no {NOTHING_RAN!r}")
    if sample.kind != "truncated" and "truncated" in message:
        wrong.append("says truncated, and the file is whole")
    return wrong


# ---------------------------------------------------------------------------------------------- the tests


def test_the_sample_classes_are_all_there() -> None:
    """Figures of the generated corpus: if torch ever supports an opcode it refuses now, the opcode family
    shrinks, and this says so rather than passing on fewer files."""
    kinds: dict[str, int] = {}
    for name in SAMPLES:
        kinds[name.split(".", 1)[0]] = kinds.get(name.split(".", 1)[0], 0) + 1
    assert len(UNSUPPORTED) >= 34, [op.name for op in UNSUPPORTED]  # 34 with torch 2.13
    assert {"FRAME", "STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ_EX", "PERSID", "MEMOIZE"} <= {
        op.name for op in UNSUPPORTED
    }
    assert kinds["bare"] == len(REDUCERS) * 6 + len(BAD_MAGIC)
    assert len(SAMPLES) == len(set(SAMPLES)) >= 150, len(SAMPLES)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", SAMPLES)
def test_each_scanner_sample_gets_its_class_of_message_and_runs_nothing(
    name: str, tmp_path: Path, armed: Path, record_property: Any
) -> None:
    path, sample = write(name, tmp_path / "files", armed)
    message = ""
    try:
        loading.read_checkpoint(path)
    except CheckError as exc:
        message = exc.message
    wrong = check_message(message, sample) if sample.kind != "loads" else ([f"refused: {message}"] if message else [])
    time.sleep(0.01)  # a Popen or popen payload would need a moment to touch its marker
    executed = fired(armed)
    record(
        record_property,
        scanner_tried=1,
        scanner_executed=len(executed),
        scanner_right=int(not wrong),
        scanner_truncated=int(sample.kind == "truncated"),
    )
    assert wrong == [], (message, wrong)
    assert executed == []
    assert path.read_bytes() == sample.data  # reading changed nothing


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_live_samples_run_their_payload_under_plain_torch_load(
    tmp_path: Path, armed: Path, record_property: Any
) -> None:
    """The positive control: what the gate refuses without running really runs when loaded the unsafe way."""
    built = {name: write(name, tmp_path / "files", armed) for name in SAMPLES}
    live = {name: path for name, (path, sample) in built.items() if sample.live}
    done = load_unsafely(live.values(), tmp_path, armed, timeout=180)
    expected = {marker_for(armed, name).name for name in live}
    missing = sorted(expected - fired_within(armed, expected))
    assert missing == [], (missing, done.stdout[-3000:])
    # the samples that are not live stay so under the unsafe load too (zip entries torch never reads...)
    assert set(fired(armed)) == expected
    assert len(live) >= 66, len(live)  # 66 with torch 2.13 on Python 3.11
    record(record_property, scanner_live=len(live))


def test_a_cut_is_told_from_a_refusal_only_by_where_the_data_ends(tmp_path: Path) -> None:
    """The same refused payload, whole and cut one byte into its second pickle: refused, then truncated. Before,
    a bare pickle (one pickle where torch.save writes five) was called truncated."""
    data = pickle.dumps(Call(eval, "1"), protocol=2)
    whole, cut = tmp_path / "whole.ckpt", tmp_path / "cut.ckpt"
    whole.write_bytes(data)
    cut.write_bytes(data + b"\x80")  # a second pickle begun and not finished: this file does end early
    with pytest.raises(CheckError, match=rf"^{REFUSED}the weights-only unpickler stopped at: the global builtins"):
        loading.read_checkpoint(whole)
    with pytest.raises(CheckError) as info:
        loading.read_checkpoint(cut)
    assert "the global builtins.eval" in info.value.message  # the loader stopped in the first pickle: refused


# ------------------------------------------------------------------------------ one session, through the plugin

CHECKS = ("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "-p", "no:cacheprovider", "-k", "weights_load")
ONE_OF_EACH = (
    "bare.os.system.protocol_2",
    "bare.builtins.eval.protocol_5",
    "opcode.EXT2",
    "binpersid.string",
    "bare.list_protocol_2",
    "zip.root.data_pkl",
    "zip.folders.two_archives",
    "legacy.protocol_version_1002",
    "polyglot.payload_pickle_then_torch_zip",
    "cut.legacy_inside_pickle_4",
    "cut.zip_at_1/2",
)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_one_of_each_class_through_the_plugin(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], armed: Path
) -> None:
    """The messages reach ``test_weights_load`` of the right checkpoint as one line; the session goes on."""
    outputs = gate_tree("control_20251016_101500/checkpoints/best.ckpt", {"model": model_section()}).parents[2]
    expected: dict[str, Sample] = {}
    for name in ONE_OF_EACH:
        folder = outputs / re.sub(r"[^A-Za-z0-9._-]+", "_", name) / "checkpoints"
        folder.mkdir(parents=True)
        sample = build(name, marker_for(armed, name))
        (folder / "best.ckpt").write_bytes(sample.data)
        (folder / "best.config.json").write_text(json.dumps({"model": model_section()}))
        expected[f"{folder.parent.name}/checkpoints/best.ckpt"] = sample

    result = pytester.runpytest(*CHECKS)

    assert "INTERNALERROR" not in result.stdout.str()
    found = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        if rep.when == "call":
            found[rep.nodeid.split("[", 1)[1].rstrip("]")] = (rep.outcome, rep.longreprtext.strip())
    assert found["control_20251016_101500/checkpoints/best.ckpt"][0] == "passed"
    for relpath, sample in expected.items():
        outcome, message = found[relpath]
        assert outcome == "failed" and message.startswith(relpath + " "), (relpath, message)
        assert check_message(message, sample) == [], (relpath, message)
    time.sleep(0.05)
    assert fired(armed) == []
