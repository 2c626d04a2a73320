"""Read a run's config out of wandb's binary run log, ``run-<id>.wandb``, without the wandb package.

Current wandb versions running offline write no ``files/config.yaml``: the config lives only in the run log
that wandb-core writes (``core/internal/transactionlog`` over ``core/pkg/leveldb`` in the wandb repository).
The format, checked against wandb 0.31.0's source and against logs it wrote (``tests/data/wandb/``):

* a 7-byte file header: ``:W&B``, the magic ``0xBEE1`` little-endian (``e1 be``), format version ``0``;
* then LevelDB's log format over 32 KiB blocks counted from the start of the file (so the first block holds
  the file header and 32761 bytes of chunks). Each chunk has a 7-byte header: checksum (uint32 LE), payload
  length (uint16 LE), chunk type (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST), then the payload. A chunk never crosses
  a block boundary; when fewer than 7 bytes are left in a block they are zero padding;
* the checksum is plain CRC-32 (IEEE, ``zlib.crc32``) of the type byte and the payload, not LevelDB's masked
  CRC-32C: wandb-core opens its logs with ``CRCAlgoIEEE``, as the old Python writer (``zlib.crc32``) did;
* each record is one protobuf ``Record`` (``wandb/proto/wandb_internal.proto``). We decode only what a config
  needs: ``Record.run`` (17) -> ``RunRecord`` {run_id 1, project 3, config 4, start_time 17 (Timestamp
  {seconds 1, nanos 2})} and ``Record.config`` (5) -> ``ConfigRecord`` {update 1, remove 2}, each a
  ``ConfigItem`` {key 1, nested_key 2 (repeated), value_json 16}. Every other record (history, summary,
  output, stats, telemetry...) is skipped by its field tag; its payload is never decoded.

The config is rebuilt the way wandb-core builds the config it uploads (``core/internal/runconfig``): items are
applied in log order, updates before removes within a record; an item's path is its ``nested_key`` when set,
else ``[key]`` (a flattened key such as ``"model.encoder.name"`` stays one literal key); a JSON object value is
merged into what is already there (so ``config.update({"model": {"decoder": {"name": "fpn"}}},
allow_val_change=True)`` changes one leaf and keeps the rest of ``model``: the server-side view, not the SDK's
shallow one); any other value replaces the node; a remove deletes the node and then any parents it left empty.
One deliberate difference: an empty object (``{}``) is kept as an empty mapping, where wandb-core drops it,
because a model config may need the key to exist. wandb's own ``_wandb`` key is removed at the end.

Checksums are verified with ``zlib.crc32`` (C speed; no pure-Python CRC needed). The reader streams the file
block by block, checks every declared length against what remains, never follows a length it has not checked,
and reads at most ``max_bytes``; damage is reported in ``problems`` (and ``complete=False``) with whatever was
read before and after it, the way LevelDB recovers: the rest of a damaged block is skipped and reading resumes
at the next record that starts in a later block.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ckptgate.errors import CheckError

__all__ = ["WandbLog", "WandbLogError", "read_wandb_log"]

FILE_HEADER = b":W&B" + (0xBEE1).to_bytes(2, "little") + b"\x00"
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# Field numbers from wandb/proto/wandb_internal.proto.
_RECORD_CONFIG = 5
_RECORD_RUN = 17
# Every member of Record's `record_type` oneof: one of them is the record's type.
_RECORD_TYPES = frozenset((*range(2, 14), 17, 18, *range(20, 28), 100))
_WANTED_TYPES = frozenset((_RECORD_CONFIG, _RECORD_RUN))
_RUN_ID, _RUN_PROJECT, _RUN_CONFIG, _RUN_START_TIME = 1, 3, 4, 17
_CONFIG_UPDATE, _CONFIG_REMOVE = 1, 2
_ITEM_KEY, _ITEM_NESTED_KEY, _ITEM_VALUE_JSON = 1, 2, 16
_TIMESTAMP_SECONDS, _TIMESTAMP_NANOS = 1, 2
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5

_CHUNK_HEADER = struct.Struct("<IHB")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_PROBLEMS = 50  # a badly damaged file must not produce an unbounded list of notes


class WandbLogError(CheckError):
    """The file is not a wandb run log (bad header) or cannot be read at all."""


@dataclass(frozen=True)
class WandbLog:
    """What a wandb run log says about its run; ``problems`` lists any damage met while reading it."""

    path: Path
    run_id: str | None
    project: str | None
    start_time: datetime | None  # timezone-aware UTC, from RunRecord.start_time
    config: dict[str, Any]  # the final config; values JSON-decoded; without wandb's `_wandb`
    records: int  # records read (every type), not counting damaged ones
    complete: bool  # False when anything was cut off, damaged or skipped (see problems)
    problems: tuple[str, ...]


def read_wandb_log(path: Path, *, max_bytes: int = 512 * 1024 * 1024) -> WandbLog:
    """Read the run id, project, start time and final config out of a ``run-<id>.wandb`` file.

    Raises :class:`WandbLogError` only when the file cannot be read or is not a wandb run log at all; a
    truncated or damaged log gives what could be read, with ``complete=False`` and the damage in ``problems``.
    At most ``max_bytes`` of the file are read.
    """
    if max_bytes < len(FILE_HEADER):
        raise ValueError(f"max_bytes must be at least {len(FILE_HEADER)}, got {max_bytes}")
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO swapped in for the log must not block the open; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise WandbLogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        handle = os.fdopen(fd, "rb", buffering=0) if regular else None
    except OSError as exc:
        os.close(fd)
        raise WandbLogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if handle is None:
        os.close(fd)
        raise WandbLogError(f"{path}: not a regular file (a folder, FIFO, socket or device?)")
    try:
        with handle:
            return _Reader(path, handle, max_bytes, info.st_size).read()
    except OSError as exc:
        raise WandbLogError(f"{path}: cannot read: {exc.strerror or exc}") from None


class _Malformed(Exception):
    """A protobuf message that does not parse."""


class _Reader:
    """One pass over one log: framing (blocks, chunks, fragments), then the records that carry config."""

    def __init__(self, path: Path, handle: BinaryIO, max_bytes: int, size: int) -> None:
        self.path = path
        self.handle = handle
        self.max_bytes = max_bytes
        self.size = size
        self.problems: list[str] = []
        self.dropped_problems = 0
        self.run_id: str | None = None
        self.project: str | None = None
        self.start_time: datetime | None = None
        self.config: dict[str, Any] = {}
        self.records = 0

    def note(self, problem: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.dropped_problems += 1

    def read(self) -> WandbLog:
        first = self._read_block(0)
        self._check_header(first)
        for offset, payload in self._records(first):
            if payload is None:  # a record of a type we do not need, skipped by its first chunk
                self.records += 1
                continue
            try:
                self._apply_record(payload, offset)
            except _Malformed as exc:
                self.note(f"record at byte {offset} is not a valid protobuf Record ({exc}); skipped")
                continue
            self.records += 1
        self.config.pop("_wandb", None)
        if self.dropped_problems:
            self.problems.append(f"... and {self.dropped_problems} more problems")
        return WandbLog(
            path=self.path,
            run_id=self.run_id,
            project=self.project,
            start_time=self.start_time,
            config=self.config,
            records=self.records,
            complete=not self.problems,
            problems=tuple(self.problems),
        )

    # -- framing -------------------------------------------------------------------------------------------

    def _read_block(self, start: int) -> bytes:
        """The block at file offset ``start``: BLOCK_SIZE bytes, fewer only at the end of the file or the limit."""
        want = min(BLOCK_SIZE, self.max_bytes - start)
        parts: list[bytes] = []
        got = 0
        while got < want:
            part = self.handle.read(want - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _check_header(self, first: bytes) -> None:
        head = first[: len(FILE_HEADER)]
        if not head:
            raise WandbLogError(f"{self.path}: empty file, not a wandb run log (those start with {FILE_HEADER!r})")
        if head == FILE_HEADER:
            return
        if head[:6] == FILE_HEADER[:6] and len(head) == len(FILE_HEADER):
            raise WandbLogError(
                f"{self.path}: wandb run log format version {head[6]} is not supported (only version 0 is known)"
            )
        if head != FILE_HEADER:
            if FILE_HEADER.startswith(head):
                raise WandbLogError(
                    f"{self.path}: only {len(head)} bytes, cut off inside the 7-byte wandb run log header"
                )
            raise WandbLogError(
                f"{self.path}: not a wandb run log: it starts with {first[:16]!r}, not the header {FILE_HEADER!r}"
            )

    def _records(self, first: bytes) -> Iterator[tuple[int, bytes | None]]:
        """Yield ``(file offset, payload)`` per complete record; payload None for a record skipped unread.

        Follows LevelDB's recovery rules: on a damaged chunk the rest of its block is skipped and reading
        resumes at the next FULL or FIRST chunk.
        """
        parts: list[bytes] | None = None  # fragments of the record being assembled
        skipping = False  # the record being assembled is of a type we do not need: count it, keep nothing
        started = 0  # file offset of that record
        resyncing = False  # after damage: continuation chunks of the lost record are expected, not news
        cut_chunk: int | None = None  # offset of a chunk cut off by the end of the data
        block, base, pos = first, 0, len(FILE_HEADER)
        while True:
            length = len(block)
            while BLOCK_SIZE - pos >= CHUNK_HEADER_SIZE and pos < length:  # else: trailer, or end of data
                at = base + pos
                if length - pos < CHUNK_HEADER_SIZE:
                    cut_chunk = at  # a chunk header cut off by the end of the data
                    break
                checksum, size, kind = _CHUNK_HEADER.unpack_from(block, pos)
                end = pos + CHUNK_HEADER_SIZE + size
                damage = None
                if checksum == 0 and size == 0 and kind == 0:
                    damage = f"zero bytes instead of a chunk at byte {at} (block {base // BLOCK_SIZE})"
                elif end > BLOCK_SIZE:
                    damage = f"chunk at byte {at} declares {size} bytes, past the end of block {base // BLOCK_SIZE}"
                elif end > length:
                    cut_chunk = at  # a chunk payload cut off by the end of the data
                    break
                elif zlib.crc32(block[pos + CHUNK_HEADER_SIZE - 1 : end]) != checksum:
                    damage = f"checksum mismatch in block {base // BLOCK_SIZE} (chunk at byte {at})"
                elif kind not in (FULL, FIRST, MIDDLE, LAST):
                    damage = f"unknown chunk type {kind} at byte {at}"
                if damage is not None:
                    if parts is not None or skipping:
                        damage += f"; lost the record that started at byte {started}"
                    self.note(damage + "; skipped the rest of the block")
                    parts, skipping, resyncing = None, False, True
                    break
                payload = block[pos + CHUNK_HEADER_SIZE : end]
                pos = end
                if kind in (FULL, FIRST):
                    if parts is not None or skipping:
                        self.note(f"record at byte {started} has no last chunk before byte {at}; dropped it")
                    resyncing = False
                    if kind == FULL:
                        parts, skipping = None, False
                        yield at, payload
                    else:
                        started = at
                        skipping = _peek_record_type(payload) not in (None, *_WANTED_TYPES)
                        parts = None if skipping else [payload]
                    continue
                # MIDDLE or LAST
                if parts is None and not skipping:
                    if not resyncing:
                        self.note(f"chunk at byte {at} continues a record that never started; skipped it")
                    continue
                if parts is not None:
                    parts.append(payload)
                if kind == LAST:
                    record = None if skipping else b"".join(parts or ())
                    parts, skipping = None, False
                    yield started, record
            end_of_data = base + length
            if length < BLOCK_SIZE or end_of_data >= self.max_bytes:
                break  # a short block is the last one
            base = end_of_data
            block, pos = self._read_block(base), 0
            if not block:
                break
        self._note_end(end_of_data, cut_chunk, started if parts is not None or skipping else None)

    def _note_end(self, end_of_data: int, cut_chunk: int | None, open_record: int | None) -> None:
        """Say how reading stopped when that was not at a clean end of the log."""
        limited = end_of_data >= self.max_bytes and self.size > self.max_bytes
        if limited:
            self.note(f"stopped reading at max_bytes={self.max_bytes} of {self.size} bytes")
        stop = f"{'reading stopped' if limited else 'truncated'} at byte {end_of_data}"
        if open_record is not None:
            self.note(f"{stop}: the record that started at byte {open_record} is incomplete")
        elif cut_chunk is not None:
            self.note(f"{stop}: the chunk at byte {cut_chunk} is incomplete")

    # -- records -------------------------------------------------------------------------------------------

    def _apply_record(self, payload: bytes, offset: int) -> None:
        """Apply a Record's run or config part; parse everything first so a malformed record changes nothing."""
        runs: list[tuple[str | None, str | None, datetime | None, list[_Change]]] = []
        changes: list[list[_Change]] = []
        for number, wire, start, end in _fields(payload, 0, len(payload)):
            if wire != _WIRE_BYTES:
                continue
            if number == _RECORD_RUN:
                runs.append(self._parse_run(payload, start, end))
            elif number == _RECORD_CONFIG:
                changes.append(_parse_config(payload, start, end))
        for run_id, project, start_time, config in runs:
            self.run_id = self.run_id or run_id
            self.project = self.project or project
            self.start_time = self.start_time or start_time
            self._apply_changes(config, offset)
        for change in changes:
            self._apply_changes(change, offset)

    def _parse_run(
        self, buf: bytes, start: int, end: int
    ) -> tuple[str | None, str | None, datetime | None, list[_Change]]:
        run_id = project = None
        start_time = None
        config: list[_Change] = []
        for number, wire, a, b in _fields(buf, start, end):
            if wire != _WIRE_BYTES:
                continue
            if number == _RUN_ID:
                run_id = _text(buf, a, b) or None
            elif number == _RUN_PROJECT:
                project = _text(buf, a, b) or None
            elif number == _RUN_CONFIG:
                config.extend(_parse_config(buf, a, b))
            elif number == _RUN_START_TIME:
                start_time = self._parse_timestamp(buf, a, b)
        return run_id, project, start_time, config

    def _parse_timestamp(self, buf: bytes, start: int, end: int) -> datetime | None:
        seconds = nanos = 0
        for number, wire, value, _ in _fields(buf, start, end):
            if wire == _WIRE_VARINT and number == _TIMESTAMP_SECONDS:
                seconds = _signed64(value)
            elif wire == _WIRE_VARINT and number == _TIMESTAMP_NANOS:
                nanos = _signed64(value)
        if seconds == 0 and nanos == 0:
            return None
        try:
            return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
        except OverflowError:
            self.note(f"run start time {seconds}s {nanos}ns is out of range; ignored it")
            return None

    def _apply_changes(self, changes: list[_Change], offset: int) -> None:
        # wandb-core applies a record's updates first, then its removes.
        for path, value_json in changes:
            if value_json is None:
                continue
            try:
                value = json.loads(value_json)
            except (ValueError, RecursionError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.note(f"config item {_dotted(path)!r} in the record at byte {offset} is not JSON ({reason})")
                continue
            _set_path(self.config, path, value)
        for path, value_json in changes:
            if value_json is None:
                _remove_path(self.config, path)


# A config change: (path, JSON text) for an update, (path, None) for a remove.
_Change = tuple[tuple[str, ...], "str | None"]


def _parse_config(buf: bytes, start: int, end: int) -> list[_Change]:
    changes: list[_Change] = []
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _WIRE_BYTES or number not in (_CONFIG_UPDATE, _CONFIG_REMOVE):
            continue
        key = ""
        nested: list[str] = []
        value_json = ""
        for item_number, item_wire, c, d in _fields(buf, a, b):
            if item_wire != _WIRE_BYTES:
                continue
            if item_number == _ITEM_KEY:
                key = _text(buf, c, d)
            elif item_number == _ITEM_NESTED_KEY:
                nested.append(_text(buf, c, d))
            elif item_number == _ITEM_VALUE_JSON:
                value_json = _text(buf, c, d)
        path = tuple(nested) if nested else (key,)
        changes.append((path, value_json if number == _CONFIG_UPDATE else None))
    return changes


# -- protobuf wire format ----------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("a varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("a varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field number, wire type, a, b)`` over ``buf[pos:end]``.

    For a varint, ``a`` is its value; for a length-delimited or fixed-size field, ``buf[a:b]`` is its bytes.
    Every length is checked against what remains of the enclosing message before it is used.
    """
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _WIRE_VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == _WIRE_BYTES:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise _Malformed(f"field {number} declares {size} bytes but only {end - pos} remain")
            yield number, wire, pos, pos + size
            pos += size
        elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
            size = 8 if wire == _WIRE_FIXED64 else 4
            if size > end - pos:
                raise _Malformed(f"field {number} runs past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
        else:  # 3/4 are proto2 groups, 6/7 do not exist: none occur in wandb's proto3 messages
            raise _Malformed(f"field {number} has wire type {wire}")


def _peek_record_type(first_chunk: bytes) -> int | None:
    """The Record type (its oneof field number) if the first chunk of a record shows it, else None.

    wandb-core (Go protobuf) writes a Record's plain fields (num, control, uuid, _info) before its oneof, so
    the type tag comes within the first few dozen bytes; its payload need not be in this chunk.
    """
    pos, end = 0, len(first_chunk)
    try:
        while pos < end:
            key, pos = _varint(first_chunk, pos, end)
            number, wire = key >> 3, key & 7
            if number in _RECORD_TYPES and wire == _WIRE_BYTES:
                return number
            if wire == _WIRE_VARINT:
                _, pos = _varint(first_chunk, pos, end)
            elif wire == _WIRE_BYTES:
                size, pos = _varint(first_chunk, pos, end)
                pos += size
            elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
                pos += 8 if wire == _WIRE_FIXED64 else 4
            else:
                return None
    except _Malformed:
        return None
    return None


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(buf: bytes, start: int, end: int) -> str:
    return buf[start:end].decode("utf-8", errors="replace")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


# -- config tree (wandb-core's runconfig semantics) ----------------------------------------------------------


def _subtree(node: dict[str, Any], key: str) -> dict[str, Any]:
    """``node[key]`` as a mapping, replacing a leaf (or creating it) when it is not one."""
    child = node.get(key)
    if not isinstance(child, dict):
        child = {}
        node[key] = child
    return child


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path``; a mapping is merged into what is there, anything else replaces it."""
    node = tree
    for key in path[:-1]:
        node = _subtree(node, key)
    if not isinstance(value, dict):
        node[path[-1]] = value
        return
    pending = [(_subtree(node, path[-1]), value)]
    while pending:  # iterative: a deeply nested value must not exhaust the stack
        target, source = pending.pop()
        for key, item in source.items():
            if isinstance(item, dict):
                pending.append((_subtree(target, key), item))
            else:
                target[key] = item


def _remove_path(tree: dict[str, Any], path: tuple[str, ...]) -> None:
    """Delete the node at ``path``, then every parent that this left empty."""
    chain = [tree]
    for key in path[:-1]:
        child = chain[-1].get(key)
        if not isinstance(child, dict):
            return
        chain.append(child)
    if path[-1] not in chain[-1]:
        return
    del chain[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if chain[depth]:
            break
        del chain[depth - 1][path[depth - 1]]
