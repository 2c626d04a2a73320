"""Reading wandb's binary run log (``run-<id>.wandb``) without wandb.

The samples in ``tests/data/wandb/`` were written by the real wandb 0.31.0 (see its README); their framing is
checked here with a few lines of independent de-framing, so the reader, the writer and the samples check
each other rather than themselves.
"""

from __future__ import annotations

import copy
import json
import os
import re
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from ckptgate.errors import CheckError
from ckptgate.recovery.wandb_log import WandbLog, WandbLogError, _fields, read_wandb_log
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.wandb_log_writer import (
    BLOCK_SIZE,
    FILE_HEADER,
    REMOVE,
    _config_items,
    _message,
    _record,
    _string,
    frame_records,
    write_offline_run,
    write_wandb_log,
)

DATA = Path(__file__).parent / "data" / "wandb"
SAMPLES = sorted(DATA.glob("offline-run-*/run-*.wandb"))
BIG = max(SAMPLES, key=lambda path: path.stat().st_size)
BIG_DATA = BIG.read_bytes()
RECORD_TYPES = {*range(2, 14), 17, 18, *range(20, 28), 100}
START = datetime(2025, 10, 17, 23, 6, 40, 123456, tzinfo=timezone.utc)


def expected(sample: Path) -> dict[str, Any]:
    return json.loads(sample.with_name(sample.name.replace(".wandb", ".expected.json")).read_text("utf-8"))


def sample_of(project: str) -> Path:
    (sample,) = [path for path in SAMPLES if expected(path)["project"] == project]
    return sample


SMALL = sample_of("ckptgate-nested")  # 3 KB, one block


def chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, type, payload) of each chunk of a well-formed log: an independent, minimal de-framer."""
    assert data[:7] == b":W&B\xe1\xbe\x00"
    offset = 7
    while offset < len(data):
        left = 32768 - offset % 32768
        if left < 7:
            assert data[offset : offset + left] == bytes(left)
            offset += left
            continue
        crc, size, kind = struct.unpack_from("<IHB", data, offset)
        payload = data[offset + 7 : offset + 7 + size]
        assert crc == zlib.crc32(bytes([kind]) + payload)
        yield offset, kind, payload
        offset += 7 + size


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(record offset, record end, payload) of each record."""
    found, parts, start = [], [], 0
    for offset, kind, payload in chunks(data):
        if kind in (1, 2):
            parts, start = [], offset
        parts.append(payload)
        if kind in (1, 4):
            found.append((start, offset + 7 + len(payload), b"".join(parts)))
    return found


def record_type(payload: bytes) -> int:
    return next(number for number, _, _, _ in _fields(payload, 0, len(payload)) if number in RECORD_TYPES)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A file path to overwrite freely (hypothesis runs many examples per test function)."""
    yield tmp_path_factory.mktemp("wandb_log") / "run-x.wandb"


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the real samples ----------------------------------------------------------------------------------------


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) >= 4
    kinds = {kind for _, kind, _ in chunks(BIG.read_bytes())}
    assert {1, 2, 3, 4} <= kinds, "the big sample must hold a record split into FIRST/MIDDLE/LAST chunks"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.parent.name)
def test_real_samples_give_exactly_the_expected_run(sample: Path) -> None:
    want = expected(sample)
    log = read_wandb_log(sample)
    assert log.run_id == want["run_id"] == sample.stem.removeprefix("run-")
    assert log.project == want["project"]
    assert log.start_time == datetime.fromisoformat(want["start_time"])
    assert log.start_time.tzinfo is not None and log.start_time.utcoffset() == timedelta(0)
    assert log.config == want["config"]
    assert log.records == want["records"] == len(records(sample.read_bytes()))
    assert (log.complete, log.problems) == (True, ())
    assert log.path == sample
    # wandb 0.31 offline writes no config.yaml: the log is the only place the config is
    assert not (sample.parent / "files" / "config.yaml").exists()


def test_config_updates_merge_as_wandb_core_does() -> None:
    """``config.update({"model": {"decoder": {"name": "fpn"}}}, allow_val_change=True)`` changes one leaf."""
    sample = sample_of("ckptgate-change")
    config = read_wandb_log(sample).config
    assert config["model"]["decoder"] == {
        "name": "fpn",
        "params": {"in_channels": [16, 24, 48], "inner_channels": 16, "out_channels": 16},
    }
    assert config["optimizer"] == {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}
    assert config["empty"] == {} and config["big"] == 2**70 and config["ratio"] is None


def test_flattened_keys_stay_literal() -> None:
    sample = sample_of("ckptgate-flat")
    assert read_wandb_log(sample).config == {
        "model.encoder.model_name": "mobilenetv3_small_050",
        "model/decoder/name": "unet",
        "model.head.params.k": 50,
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.parent.name)
def test_writer_frames_real_records_into_the_identical_file(sample: Path) -> None:
    data = sample.read_bytes()
    assert frame_records(payload for _, _, payload in records(data)) == data


def test_writer_lays_out_records_like_wandb_core(scratch: Path) -> None:
    """Same header, and records in Go protobuf's field order: num, control, _info, then the record itself."""
    scratch.unlink(missing_ok=True)
    written = write_wandb_log(scratch, run_id="abc", project="p", start_time=START, config={"a": 1}, updates=[{}])
    real, ours = SMALL.read_bytes(), written.read_bytes()
    assert ours[:7] == real[:7] == FILE_HEADER

    def layout(data: bytes) -> list[tuple[str, list[int]]]:
        out = []
        for _, _, payload in records(data):
            tags = [number for number, _, _, _ in _fields(payload, 0, len(payload))]
            kind = record_type(payload)
            assert tags[0] == 1 and tags[-1] == kind and set(tags[1:-1]) <= {16, 19, 200}
            out.append((kind, tags))
        return out

    real_layout, our_layout = layout(real), layout(ours)
    assert [kind for kind, _ in real_layout][:2] == [kind for kind, _ in our_layout][:2] == [21, 17]
    assert dict(real_layout)[17] == dict(our_layout)[17] == [1, 16, 200, 17]
    assert real_layout[-1][0] == our_layout[-1][0] == 18  # an exit record ends a finished run


# -- writer -> reader round trips ----------------------------------------------------------------------------

# Few key names, so that updates and removes hit the same paths (a key "a" and a nested_key ("a",) too).
NAMES = st.sampled_from(["model", "a", "b", "", "x.y", "_wandb"])
KEYS = NAMES | st.text(max_size=6)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12
)
CONFIGS = st.dictionaries(KEYS, VALUES, max_size=6)
PATHS = KEYS | st.lists(NAMES, min_size=1, max_size=3).map(tuple)
UPDATES = st.lists(st.dictionaries(PATHS, VALUES | st.just(REMOVE), max_size=4), max_size=4)


def oracle(config: dict[str, Any], updates: list[dict[Any, Any]]) -> dict[str, Any]:
    """wandb-core's config semantics on a flat {path: leaf} map, independent of the reader's nested dicts.

    An empty mapping is a leaf marker (the reader keeps ``{}`` where wandb-core drops it).
    """
    empty = object()
    flat: dict[tuple[str, ...], Any] = {}

    def under(path: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [key for key in flat if key[: len(path)] == path]

    def set_leaf(path: tuple[str, ...], value: Any) -> None:
        for key in under(path):
            del flat[key]
        for cut in range(1, len(path)):
            flat.pop(path[:cut], None)  # a leaf on the way becomes a mapping
        flat[path] = value

    def set_value(path: tuple[str, ...], value: Any) -> None:
        if not isinstance(value, dict):
            set_leaf(path, value)
            return
        flat.pop(path, None)  # a leaf (or an empty mapping) here becomes a mapping
        for cut in range(1, len(path)):
            flat.pop(path[:cut], None)
        if not value and not under(path):
            flat[path] = empty
        for key, item in value.items():
            set_value((*path, key), item)

    def apply(changes: dict[Any, Any]) -> None:
        paths = [(key if isinstance(key, tuple) else (key,), value) for key, value in changes.items()]
        for path, value in paths:
            if value is not REMOVE:
                set_value(path, json.loads(json.dumps(value)))
        for path, value in paths:
            if value is REMOVE:
                for key in under(path):
                    del flat[key]

    apply({"_wandb": {}, **config})
    for changes in updates:
        apply(changes)
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {} if value is empty else value
    tree.pop("_wandb", None)
    return tree


@settings(max_examples=200, deadline=None)
@given(config=CONFIGS, updates=UPDATES, extra=st.integers(0, 6), big=st.sampled_from([0, 0, 0, 40_000, 70_000]))
def test_round_trip_through_writer_and_reader(
    scratch: Path, config: dict[str, Any], updates: list[dict[Any, Any]], extra: int, big: int
) -> None:
    if big:  # a config record spread over two or three blocks
        config = {**config, "padding": "p" * big}
    scratch.unlink(missing_ok=True)
    write_wandb_log(
        scratch, run_id="r1", project="proj", start_time=START, config=config, updates=updates, extra_records=extra
    )
    log = read_wandb_log(scratch)
    assert (log.complete, log.problems) == (True, ())
    assert (log.run_id, log.project, log.start_time) == ("r1", "proj", START)
    assert log.records == 4 + len(updates) + 3 * extra
    assert log.config == oracle(config, updates)


SEMANTICS = [
    ("merge", {"m": {"a": 1, "b": 2}}, [{"m": {"a": 3}}], {"m": {"a": 3, "b": 2}}),
    ("leaf becomes mapping", {"m": 1}, [{("m", "a"): 2}], {"m": {"a": 2}}),
    ("mapping becomes leaf", {"m": {"a": 1}}, [{"m": 5}], {"m": 5}),
    ("nested key", {"m": {"a": {"b": 1}}}, [{("m", "a", "c"): [1]}], {"m": {"a": {"b": 1, "c": [1]}}}),
    ("remove prunes empty parents", {"m": {"a": {"b": 1}}, "k": 0}, [{("m", "a", "b"): REMOVE}], {"k": 0}),
    ("remove keeps siblings", {"m": {"a": 1, "b": 2}}, [{("m", "a"): REMOVE}], {"m": {"b": 2}}),
    ("remove a missing path", {"m": {"a": 1}}, [{("m", "x", "y"): REMOVE, "z": REMOVE}], {"m": {"a": 1}}),
    ("remove through a leaf", {"m": 1}, [{("m", "a"): REMOVE}], {"m": 1}),
    ("empty mapping kept", {"e": {}, "m": {"a": 1}}, [{"m": {}}], {"e": {}, "m": {"a": 1}}),
    ("empty mapping replaces a leaf", {"m": 1}, [{"m": {}}], {"m": {}}),
    ("flattened keys stay literal", {"model.encoder.name": "x"}, [{"a/b": 1}], {"model.encoder.name": "x", "a/b": 1}),
    ("_wandb removed", {"_wandb": {"x": 1}, "a": 1}, [{("_wandb", "y"): 2}], {"a": 1}),
    ("updates before removes", {}, [{"a": 1, ("a",): REMOVE, "b": 2}], {"b": 2}),
]


@pytest.mark.parametrize(("config", "updates", "want"), [case[1:] for case in SEMANTICS], ids=[c[0] for c in SEMANTICS])
def test_config_semantics(scratch: Path, config: dict[str, Any], updates: list[dict[Any, Any]], want: Any) -> None:
    scratch.unlink(missing_ok=True)
    write_wandb_log(scratch, run_id="r", project="p", start_time=START, config=config, updates=updates)
    assert read_wandb_log(scratch).config == oracle(config, updates) == want


def test_a_remove_written_before_an_update_still_applies_after_it(scratch: Path) -> None:
    """wandb-core applies a ConfigRecord's updates, then its removes, whatever their order on the wire."""
    remove = _message(2, _string(1, "a"))
    update = _message(1, _string(1, "a") + _string(16, "1"))
    data = frame_records([_record(1, 5, remove + update, stream_id="s", mailbox_slot=None)])
    assert read_wandb_log(put(scratch, data)).config == {}


def test_oracle_agrees_with_the_real_samples() -> None:
    """The test's oracle is itself checked against what real wandb wrote."""
    sample = sample_of("ckptgate-change")
    model = copy.deepcopy(expected(sample)["config"]["model"])
    model["decoder"]["name"] = "unet"
    updates = [{"model": {"decoder": {"name": "fpn"}}}]
    assert oracle({"model": model}, updates)["model"] == expected(sample)["config"]["model"]


@pytest.mark.parametrize("left", range(9))
def test_block_ends_with_padding_or_a_zero_length_first_chunk(scratch: Path, left: int) -> None:
    """A filler record (skipped unread, split over two blocks) ends ``left`` bytes before a block ends."""
    size = 2 * BLOCK_SIZE - left - 7 - 7 - 7  # less the file header and two chunk headers
    body_size = size - 1 - 3  # the history field's tag and 3-byte length
    filler = (
        b"\x12" + bytes([0x80 | body_size & 0x7F, 0x80 | body_size >> 7 & 0x7F, body_size >> 14]) + bytes(body_size)
    )
    config = _record(2, 5, _config_items({"a": {"b": 1}, ("a", "c"): [1]}), stream_id="s", mailbox_slot=None)
    run = _record(3, 17, _string(1, "id") + _string(3, "p"), stream_id="s", mailbox_slot=None)
    data = frame_records([filler, config, run])
    kinds = [(offset, kind, len(payload)) for offset, kind, payload in chunks(data)]
    assert kinds[1][0] + 7 + kinds[1][2] == 2 * BLOCK_SIZE - left
    if left == 7:
        assert kinds[2] == (2 * BLOCK_SIZE - 7, 2, 0)  # as wandb-core's writer does: an empty FIRST chunk
    elif left < 7:
        assert kinds[2][0] == 2 * BLOCK_SIZE and data[2 * BLOCK_SIZE - left : 2 * BLOCK_SIZE] == bytes(left)
    log = read_wandb_log(put(scratch, data))
    assert (log.complete, log.problems, log.records) == (True, (), 3)
    assert (log.run_id, log.project, log.config) == ("id", "p", {"a": {"b": 1, "c": [1]}})


def test_write_offline_run_makes_a_wandb_like_folder(tmp_path: Path) -> None:
    run_dir = write_offline_run(tmp_path, run_id="4tq4nu4d", project="p", start_time=START, config={"m": 1})
    assert run_dir.name == "offline-run-20251017_230639-4tq4nu4d"  # named one second before the start
    assert not (run_dir / "files" / "config.yaml").exists()
    log = read_wandb_log(run_dir / "run-4tq4nu4d.wandb")
    assert (log.run_id, log.config, log.complete) == ("4tq4nu4d", {"m": 1}, True)


# -- truncation and damage -----------------------------------------------------------------------------------


def check_truncated(path: Path, sample: Path, data: bytes, cut: int) -> None:
    if cut < 7:
        with pytest.raises(WandbLogError, match=re.escape(str(path))):
            read_wandb_log(put(path, data[:cut]))
        return
    log = read_wandb_log(put(path, data[:cut]))
    whole = records(data)
    done = [(start, end, payload) for start, end, payload in whole if end <= cut]
    clean = cut == 7 or cut in {end for _, end, _ in whole}
    assert log.complete is clean, (cut, log.problems)
    assert log.records == len(done)
    if not clean:
        assert any(f"truncated at byte {cut}" in problem for problem in log.problems), log.problems
    run_read = any(record_type(payload) == 17 for _, _, payload in done)
    assert (log.run_id is not None) is run_read
    last_config = max(end for _, end, payload in whole if record_type(payload) in (5, 17))
    if cut >= last_config:
        assert log.config == expected(sample)["config"]


def test_truncation_at_every_offset_of_a_real_sample(scratch: Path) -> None:
    data = SMALL.read_bytes()
    for cut in range(len(data) + 1):
        check_truncated(scratch, SMALL, data, cut)


@settings(max_examples=120, deadline=None)
@given(cut=st.integers(0, BIG.stat().st_size) | st.sampled_from([BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE + 3]))
def test_truncating_the_multi_block_sample_anywhere(scratch: Path, cut: int) -> None:
    check_truncated(scratch, BIG, BIG_DATA, cut)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_noticed_and_never_raises(scratch: Path, data: st.DataObject) -> None:
    raw = bytearray(SMALL.read_bytes())
    at = data.draw(st.integers(7, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    log = read_wandb_log(put(scratch, bytes(raw)))
    assert not log.complete and log.problems


def test_checksum_mismatch_is_noted_and_earlier_records_kept(scratch: Path) -> None:
    data = bytearray(SMALL.read_bytes())
    config_at = next(start for start, _, payload in records(bytes(data)) if record_type(payload) == 5)
    data[config_at] ^= 0xFF  # the config record's checksum
    log = read_wandb_log(put(scratch, bytes(data)))
    assert not log.complete
    assert log.problems[0] == f"checksum mismatch in block 0 (chunk at byte {config_at}); skipped the rest of the block"
    assert log.run_id == expected(SMALL)["run_id"] and "model" in log.config and "trainer" not in log.config


def test_damage_in_one_block_spares_the_records_of_later_blocks(scratch: Path) -> None:
    data = bytearray(BIG.read_bytes())
    data[200] ^= 0x01  # inside the run record's FIRST chunk, in block 0
    log = read_wandb_log(put(scratch, bytes(data)))
    assert not log.complete and len(log.problems) == 1 and "checksum mismatch in block 0" in log.problems[0]
    assert log.run_id is None  # the run record was lost ...
    assert log.config == {"model": {"head": {"params": {"k": 25}}}}  # ... the later update was not
    assert log.records == expected(BIG)["records"] - 1


def test_zero_filled_tail_is_noted(scratch: Path) -> None:
    log = read_wandb_log(put(scratch, SMALL.read_bytes() + bytes(100)))
    assert log.config == expected(SMALL)["config"]
    assert not log.complete and "zero bytes instead of a chunk" in log.problems[0]


def test_max_bytes_stops_reading(scratch: Path) -> None:
    data = BIG.read_bytes()
    log = read_wandb_log(put(scratch, data), max_bytes=BLOCK_SIZE)
    assert not log.complete and log.records == 1  # the header record; the run record continues past the limit
    assert log.problems[0] == f"stopped reading at max_bytes={BLOCK_SIZE} of {len(data)} bytes"
    assert read_wandb_log(scratch, max_bytes=len(data)).complete


# -- hostile input -------------------------------------------------------------------------------------------


def test_huge_declared_lengths_cost_nothing(scratch: Path) -> None:
    huge_field = b"\x08\x01\x8a\x01" + b"\xff" * 9 + b"\x01"  # Record{num 1, run: 2**64-1 bytes declared}
    huge_inner = b"\x08\x02\x8a\x01\x05" + b"\x22\xff\xff\xff\x7f"  # run{config: 268 MB declared} in 5 bytes
    long_varint = b"\x08" + b"\x80" * 20 + b"\x01"
    wrong_chunk = (0).to_bytes(4, "little") + (65535).to_bytes(2, "little") + b"\x01" + b"x" * 100
    data = frame_records([huge_field, huge_inner, long_varint]) + wrong_chunk
    tracemalloc.start()
    began = time.process_time()  # CPU time: a machine busy with other work does not make this slow
    log = read_wandb_log(put(scratch, data))
    elapsed = time.process_time() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2 and peak < 2_000_000
    assert log.records == 0 and not log.complete
    assert sum("not a valid protobuf Record" in problem for problem in log.problems) == 3
    assert any("declares 65535 bytes" in problem for problem in log.problems)


def test_many_damaged_blocks_give_a_bounded_list_of_problems(scratch: Path) -> None:
    log = read_wandb_log(put(scratch, FILE_HEADER + b"\x01" * (200 * BLOCK_SIZE)))
    assert not log.complete and len(log.problems) == 51
    assert log.problems[-1] == "... and 151 more problems"  # 200 damaged blocks and a cut-off chunk header


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=3000))
def test_header_then_anything_never_raises(scratch: Path, tail: bytes) -> None:
    log = read_wandb_log(put(scratch, FILE_HEADER + tail))
    assert isinstance(log, WandbLog) and log.complete == (not log.problems)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200).filter(lambda raw: not raw.startswith(FILE_HEADER)))
def test_random_bytes_are_not_a_wandb_log(scratch: Path, raw: bytes) -> None:
    with pytest.raises(WandbLogError, match=re.escape(str(scratch))):
        read_wandb_log(put(scratch, raw))


def test_not_a_wandb_log(tmp_path: Path) -> None:
    text = put(tmp_path / "config.yaml", b"model:\n  name: unet\n")
    with pytest.raises(WandbLogError, match=r"config\.yaml: not a wandb run log: it starts with b'model:"):
        read_wandb_log(text)
    archive = tmp_path / "run.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("run-x.wandb", SMALL.read_bytes())
    with pytest.raises(WandbLogError, match=r"run\.zip: not a wandb run log: it starts with b'PK"):
        read_wandb_log(archive)
    with pytest.raises(WandbLogError, match=r"empty\.wandb: empty file"):
        read_wandb_log(put(tmp_path / "empty.wandb", b""))
    with pytest.raises(WandbLogError, match="cut off inside the 7-byte wandb run log header"):
        read_wandb_log(put(tmp_path / "short.wandb", FILE_HEADER[:5]))
    with pytest.raises(WandbLogError, match="format version 1 is not supported"):
        read_wandb_log(put(tmp_path / "v1.wandb", FILE_HEADER[:6] + b"\x01" + SMALL.read_bytes()[7:]))
    with pytest.raises(WandbLogError, match=r"missing\.wandb: cannot read"):
        read_wandb_log(tmp_path / "missing.wandb")
    with pytest.raises(WandbLogError, match="not a regular file"):
        read_wandb_log(tmp_path)
    assert issubclass(WandbLogError, CheckError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "run-x.wandb"
    os.mkfifo(fifo)
    with pytest.raises(WandbLogError, match="not a regular file"):
        read_wandb_log(fifo)


def test_header_only_log_is_complete_and_empty(scratch: Path) -> None:
    log = read_wandb_log(put(scratch, FILE_HEADER))
    assert (log.run_id, log.project, log.start_time, log.config, log.records, log.complete) == (
        None,
        None,
        None,
        {},
        0,
        True,
    )


def test_bad_json_values_and_odd_timestamps_are_problems_not_errors(scratch: Path) -> None:
    bad_item = _message(1, _string(1, "bad") + _string(16, "{not json"))
    good_item = _message(1, _string(1, "good") + _string(16, "[1]"))
    far_future = _message(17, b"\x08" + b"\xff" * 8 + b"\x7f")  # start_time{seconds: 2**63-1}
    run = _string(1, "id") + _message(4, bad_item + good_item) + far_future
    deep = _message(1, _string(1, "deep") + _string(16, "[" * 100_000))
    data = frame_records(
        [_record(1, 17, run, stream_id="s", mailbox_slot=None), _record(2, 5, deep, stream_id="s", mailbox_slot=None)]
    )
    log = read_wandb_log(put(scratch, data))
    assert log.config == {"good": [1]} and log.run_id == "id" and log.start_time is None
    assert not log.complete and len(log.problems) == 3
    assert "out of range" in log.problems[0] and "config item 'bad'" in log.problems[1]
    assert "config item 'deep'" in log.problems[2] and "RecursionError" not in log.problems[2]
