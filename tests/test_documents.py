"""ckptgate.documents: config files are data, never code, and bounded in every direction."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate import documents
from ckptgate.documents import (
    UNLOADED_PREFIX,
    DocumentError,
    find_unloaded,
    has_interpolation,
    json_path,
    parse_document,
    read_document,
)
from ckptgate.errors import CheckError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# JSON-able data as a config holds it (no NaN: it is not equal to itself; no lone surrogates: not UTF-8).
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
JSONABLE = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)

# Pieces of YAML syntax, so that random documents reach tags, anchors, merges and explicit typing.
YAML_TOKENS = [
    *("a", "b", ":", ": ", " ", "  ", "\n", "\t", "- ", "-", "[", "]", "{", "}", ", ", "'", '"', "#", "~"),
    *("1", "1e9", "0x1f", "0o7", "1_000", "1:20", "-.5", ".inf", "yes", "2025-10-17", "=", "? ", "<<: "),
    *("&x ", "*x", "|\n", ">\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---\n", "...\n", "!local "),
    *("!!float ", "!!int ", "!!bool ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ", "!!binary "),
    *("!!str ", "!!null ", "!!map ", "!!seq ", "!!merge ", "!!value ", "!<tag:yaml.org,2002:int> "),
    *("!!python/object:os.system ", "!!python/object/apply:os.system ", "!!python/name:os.system "),
]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------- round trips


@given(JSONABLE)
def test_json_documents_round_trip(data: Any) -> None:
    assert parse_document(json.dumps(data), suffix=".json", where="x.json") == data


@given(JSONABLE)
def test_yaml_documents_round_trip(data: Any) -> None:
    assert parse_document(yaml.safe_dump(data), suffix=".yaml", where="x.yaml") == data


@given(st.text(max_size=200), st.sampled_from([".json", ".yaml"]))
def test_arbitrary_text_raises_nothing_but_document_error(text: str, suffix: str) -> None:
    try:
        parse_document(text, suffix=suffix, where="x")
    except DocumentError as exc:
        assert str(exc).startswith("x: ")


@settings(max_examples=300)
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=25).map("".join))
def test_yaml_syntax_soup_raises_nothing_but_document_error(text: str) -> None:
    try:
        parse_document(text, suffix=".yaml", where="soup.yaml")
    except DocumentError as exc:
        assert str(exc).startswith("soup.yaml: ")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(st.binary(max_size=200), st.sampled_from(["x.json", "x.yaml", "x.yml"]))
def test_arbitrary_file_bytes_raise_nothing_but_document_error(tmp_path: Path, raw: bytes, name: str) -> None:
    path = write(tmp_path / name, raw)
    try:
        read_document(path, where=name)
    except DocumentError as exc:
        assert str(exc).startswith(f"{name}: ")
    assert path.read_bytes() == raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("!!float abc", "ValueError"),
        ("!!int abc", "ValueError"),
        ("!!int ", "IndexError"),
        ("x: !!bool maybe", "KeyError"),
        ("x: " + "1" * 5000, "4300 digits"),
    ],
)
def test_explicit_tags_with_impossible_values_are_document_errors(text: str, fragment: str) -> None:
    with pytest.raises(DocumentError, match=r"^c\.yaml: not valid YAML: ") as info:
        parse_document(text, suffix=".yaml", where="c.yaml")
    assert fragment in str(info.value)


def test_integer_too_long_for_int_in_json_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match=r"^c.json: not valid JSON: ValueError: .*4300 digits"):
        parse_document('{"x": ' + "1" * 5000 + "}", suffix=".json", where="c.json")


def test_document_error_is_a_check_error() -> None:
    with pytest.raises(CheckError):
        parse_document("{", suffix=".json", where="x.json")


# ----------------------------------------------------------------------------------- untrusted YAML


def test_python_tags_load_as_inert_placeholders_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "MARKER"
    monkeypatch.chdir(tmp_path)
    text = f"""\
args: !!python/object:argparse.Namespace
  lr: 0.1
pwned: !!python/object/apply:os.system ["touch {marker}"]
also: !!python/object/new:os.system ["touch {marker}"]
fn: !!python/name:os.system
mod: !!python/module:os
path: !!python/object/apply:pathlib.PosixPath ["/tmp", "x"]
custom: !my_tag {{a: 1}}
blob: !!binary aGVsbG8=
tags: !!set {{a, b}}
model:
  name: dbnet
  layers: [1, 2]
"""
    hparams = write(tmp_path / "hparams.yaml", text)

    data = read_document(hparams)

    assert not marker.exists()
    assert data["model"] == {"name": "dbnet", "layers": [1, 2]}
    assert data["args"] == f"{UNLOADED_PREFIX}tag:yaml.org,2002:python/object:argparse.Namespace>"
    assert data["pwned"] == f"{UNLOADED_PREFIX}tag:yaml.org,2002:python/object/apply:os.system>"
    assert data["custom"] == f"{UNLOADED_PREFIX}!my_tag>"
    tagged = ["args", "pwned", "also", "fn", "mod", "path", "custom", "blob", "tags"]
    assert find_unloaded(data) == [f"$.{key}" for key in tagged]
    assert hparams.read_text("utf-8") == text
    # the payload is live: the loader PyYAML calls unsafe runs it (this is what the placeholder prevents)
    yaml.load(f'x: !!python/object/apply:os.system ["touch {marker}"]', Loader=yaml.UnsafeLoader)
    assert marker.exists()


def test_yaml_dates_stay_strings() -> None:
    data = parse_document(
        "day: 2025-10-17\nwhen: 2025-10-17 21:54:23\niso: 2025-10-17T21:54:23Z\ntagged: !!timestamp 2025-10-17\n",
        suffix=".yaml",
        where="c.yaml",
    )
    assert data == {
        "day": "2025-10-17",
        "when": "2025-10-17 21:54:23",
        "iso": "2025-10-17T21:54:23Z",
        "tagged": "2025-10-17",
    }
    json.dumps(data)  # JSON (and OmegaConf) accept the result


def test_yaml_keeps_other_implicit_types() -> None:
    data = parse_document("a: 1\nb: 1.5\nc: true\nd: null\ne: [x]\n", suffix=".yml", where="c.yml")
    assert data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": ["x"]}


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")  # 9**9 values in the end
    start = time.process_time()  # CPU time: a machine busy with other work does not make this slow
    with pytest.raises(DocumentError, match=r"^bomb.yaml: expands to more than 1,000,000 values"):
        parse_document("\n".join(lines), suffix=".yaml", where="bomb.yaml")
    assert time.process_time() - start < 5


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(DocumentError, match=r"^r\.yaml: "):
        parse_document("a: &a [*a]\n", suffix=".yaml", where="r.yaml")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_ten_thousand_levels_of_nesting_are_refused(suffix: str) -> None:
    with pytest.raises(DocumentError, match=r"^deep: nested too deeply to parse"):
        parse_document("[" * 10_000 + "]" * 10_000, suffix=suffix, where="deep")
    with pytest.raises(DocumentError, match=r"^deep: nested too deeply to parse"):
        parse_document('{"a": ' * 10_000 + "1" + "}" * 10_000, suffix=suffix, where="deep")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_nesting_beyond_max_depth_is_refused(suffix: str) -> None:
    depth = documents.MAX_DEPTH + 20
    with pytest.raises(DocumentError, match=rf"^deep: nested deeper than {documents.MAX_DEPTH} levels"):
        parse_document("[" * depth + "]" * depth, suffix=suffix, where="deep")
    ok = documents.MAX_DEPTH - 5
    assert parse_document("[" * ok + "]" * ok, suffix=suffix, where="deep") is not None


@pytest.mark.parametrize("leaf", ["1", ""])
def test_max_depth_is_exact(leaf: str) -> None:
    """Values at depth MAX_DEPTH are read; one level more is refused (a scalar or an empty list as the leaf)."""
    levels = documents.MAX_DEPTH if leaf else documents.MAX_DEPTH + 1
    assert parse_document("[" * levels + leaf + "]" * levels, suffix=".json", where="deep") is not None
    with pytest.raises(DocumentError, match="nested deeper than"):
        parse_document("[" * (levels + 1) + leaf + "]" * (levels + 1), suffix=".json", where="deep")


def test_node_limit_counts_every_value_and_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_NODES", 50)
    document = {"a": [1, 2, {"b": list(range(20))}], "c": list(range(23))}  # 1 + 2 + 3 + 1 + 20 + 23 = 50
    assert parse_document(json.dumps(document), suffix=".json", where="x") == document
    document["c"].append(23)
    with pytest.raises(DocumentError, match="expands to more than 50 values"):
        parse_document(json.dumps(document), suffix=".json", where="x")


def test_node_limit_applies_to_plain_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_NODES", 50)
    assert parse_document(json.dumps(list(range(40))), suffix=".json", where="x") == list(range(40))
    with pytest.raises(DocumentError, match="expands to more than 50 values"):
        parse_document(json.dumps(list(range(60))), suffix=".json", where="x")


# ---------------------------------------------------------------------------------------------- files


def test_read_document_json_and_yaml_by_suffix(tmp_path: Path) -> None:
    assert read_document(write(tmp_path / "a.config.json", '{"model": {"name": "x"}}')) == {"model": {"name": "x"}}
    assert read_document(write(tmp_path / "a.config.yaml", "model: {name: x}\n")) == {"model": {"name": "x"}}
    assert read_document(write(tmp_path / "a.config.yml", "model:\n  name: x\n")) == {"model": {"name": "x"}}
    # a .yaml file holding JSON is read as YAML, which accepts it; a .json file holding YAML is not JSON
    assert read_document(write(tmp_path / "b.yaml", '{"model": {"name": "x"}}')) == {"model": {"name": "x"}}
    with pytest.raises(DocumentError, match="not valid JSON"):
        read_document(write(tmp_path / "b.json", "model: {name: x}\n"))


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", b'\xef\xbb\xbf{"a": 1}')
    assert read_document(path) == {"a": 1}


def test_oversize_file_is_refused_without_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"model: {name: x}\n" + b"# padding\n" * 200
    path = write(tmp_path / "huge.config.yaml", content)
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1000)

    def no_read(self: Path) -> bytes:
        raise AssertionError(f"{self} was read although it is over the limit")

    monkeypatch.setattr(Path, "read_bytes", no_read)

    with pytest.raises(DocumentError) as info:
        read_document(path, where="run/huge.config.yaml")

    message = str(info.value)
    assert message.startswith("run/huge.config.yaml: ")
    assert "too large for a config" in message
    monkeypatch.undo()
    assert path.read_bytes() == content


def test_file_at_the_limit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b'{"a": "' + b"x" * 93 + b'"}'
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", len(content))
    assert read_document(write(tmp_path / "c.json", content)) == {"a": "x" * 93}


def test_non_utf8_bytes_are_a_document_error(tmp_path: Path) -> None:
    raw = b"model:\n  name: caf\xe9\n"  # latin-1
    path = write(tmp_path / "c.config.yaml", raw)
    with pytest.raises(DocumentError, match=r"^run/c.config.yaml: not UTF-8 text \(byte 18\)"):
        read_document(path, where="run/c.config.yaml")
    assert path.read_bytes() == raw


def test_binary_file_with_config_name_is_a_document_error(tmp_path: Path) -> None:
    path = write(tmp_path / "best.config.json", bytes(range(256)))
    with pytest.raises(DocumentError, match="not UTF-8 text"):
        read_document(path)


def test_unreadable_paths_are_document_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"^gone.yaml: cannot read: No such file or directory"):
        read_document(tmp_path / "gone.yaml", where="gone.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DocumentError, match=r"dir.yaml: not a regular file \(a folder, FIFO"):
        read_document(tmp_path / "dir.yaml")
    os.mkfifo(tmp_path / "pipe.yaml")  # reading a FIFO would block forever: refused from its stat alone
    with pytest.raises(DocumentError, match=r"pipe.yaml: not a regular file"):
        read_document(tmp_path / "pipe.yaml")
    # without `where`, the message names the path itself
    with pytest.raises(DocumentError, match=re.escape(str(tmp_path / "gone.yaml"))):
        read_document(tmp_path / "gone.yaml")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "model": {\n    "name": "x",\n  }\n}\n'
    path = write(tmp_path / "best.config.json", text)
    with pytest.raises(DocumentError) as info:
        read_document(path, where="run/best.config.json")
    assert str(info.value) == (
        "run/best.config.json: not valid JSON: Expecting property name enclosed in double quotes at line 4 column 3"
    )
    assert path.read_text("utf-8") == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model:\n  name: [1, 2\nhead: 3\n", "at line 3 column 5"),
        ("a: b: c\n", "mapping values are not allowed here at line 1 column 5"),
        ("a:\n  - 1\n - 2\n", "at line 3 column 2"),
        ("a: 'open\n", "at line 2 column 1"),
    ],
)
def test_invalid_yaml_names_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "best.config.yaml", text)
    with pytest.raises(DocumentError) as info:
        read_document(path, where="run/best.config.yaml")
    message = str(info.value)
    assert message.startswith("run/best.config.yaml: not valid YAML: ")
    assert message.endswith(expected)
    assert path.read_text("utf-8") == text


# -------------------------------------------------------------------------------------- json paths


def test_find_unloaded_gives_json_paths() -> None:
    placeholder = f"{UNLOADED_PREFIX}tag:yaml.org,2002:python/object:argparse.Namespace>"
    document = {
        "args": placeholder,
        "model": {"layers": [1, placeholder, {"deep": placeholder}], "name": "ok"},
        "my key": [placeholder],
        3: placeholder,
    }
    assert find_unloaded(document) == [
        "$.args",
        "$.model.layers[1]",
        "$.model.layers[2].deep",
        '$["my key"][0]',
        "$[3]",
    ]
    assert find_unloaded({"a": "fine", "b": [1, "<not loaded"]}) == []
    assert find_unloaded(placeholder) == ["$"]
    assert find_unloaded([placeholder], "$.model") == ["$.model[0]"]


def test_find_unloaded_on_parsed_yaml() -> None:
    data = parse_document(
        "cfg:\n  model:\n    opts: [!!python/tuple [1, 2]]\n  ns: !!python/object:argparse.Namespace {}\n",
        suffix=".yaml",
        where="h.yaml",
    )
    assert find_unloaded(data) == ["$.cfg.model.opts[0]", "$.cfg.ns"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("name", "$.name"),
        ("_target_", "$._target_"),
        ("in_channels", "$.in_channels"),
        (0, "$[0]"),
        (12, "$[12]"),
        ("my key", '$["my key"]'),
        ("a.b", '$["a.b"]'),
        ("1abc", '$["1abc"]'),
        ("", '$[""]'),
        ('q"uote', '$["q\\"uote"]'),
    ],
)
def test_json_path_examples(key: str | int, expected: str) -> None:
    assert json_path("$", key) == expected


def _parse_json_path(path: str) -> list[str | int]:
    """Split a path written by json_path back into keys (the test's own reader, not the module's)."""
    assert path.startswith("$")
    keys: list[str | int] = []
    index = 1
    decoder = json.JSONDecoder()
    while index < len(path):
        if path[index] == ".":
            end = index + 1
            while end < len(path) and path[end] not in ".[":
                end += 1
            keys.append(path[index + 1 : end])
            index = end
        else:
            assert path[index] == "["
            if path[index + 1] == '"':
                key, end = decoder.raw_decode(path, index + 1)
                keys.append(key)
            else:
                end = path.index("]", index)
                keys.append(int(path[index + 1 : end]))
            assert path[end] == "]"
            index = end + 1
    return keys


@given(st.lists(st.text(max_size=10) | st.integers(-5, 10**6), max_size=6))
def test_json_path_is_unambiguous(keys: list[str | int]) -> None:
    path = "$"
    for key in keys:
        path = json_path(path, key)
    assert _parse_json_path(path) == keys


@given(st.text(max_size=10))
def test_json_path_uses_dot_exactly_for_identifiers(key: str) -> None:
    written = json_path("$.model", key)
    assert written == (f"$.model.{key}" if key.isidentifier() else f"$.model[{json.dumps(key)}]")


# ----------------------------------------------------------------------------------- interpolations


def test_has_interpolation() -> None:
    assert has_interpolation({"a": {"b": ["x", "${a.c}"]}})
    assert has_interpolation("${oc.env:HOME}")
    assert not has_interpolation({"a": {"b": ["x", "$a", "{c}", 3]}, "k${x}": 1})  # keys are not values
    assert not has_interpolation(None)
