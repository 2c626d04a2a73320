"""ckptgate.schema and the bundled JSON Schema: is a model section well-formed, and where is it not?"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ckptgate.schema import BUNDLED_SCHEMA, SchemaChecker, SchemaFileError, cross_field_errors, load_schema
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema.validators import Draft202012Validator

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "plugins" / "ckptgate" / "schemas" / BUNDLED_SCHEMA

VALID: dict[str, Any] = {
    "_target_": "fixtures.demo_models.DBNetLike",
    "architecture_name": "dbnet",
    "encoder": {"model_name": "mobilenetv3_small_050", "pretrained": False},
    "decoder": {
        "name": "unet",
        "params": {"in_channels": [16, 24, 48], "inner_channels": 16, "out_channels": 16},
    },
    "head": {"name": "db_head", "params": {"in_channels": 16, "k": 50}},
}


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return SchemaChecker()


def changed(path: str, value: Any) -> dict[str, Any]:
    """VALID with one value replaced (``...`` deletes it); path is dotted."""
    section = copy.deepcopy(VALID)
    *heads, last = path.split(".")
    node = section
    for head in heads:
        node = node.setdefault(head, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return section


# ----------------------------------------------------------------------------------- bundled schema


def test_bundled_schema_is_a_valid_json_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert load_schema(None) == schema  # what the package ships is this file


def test_realistic_section_is_accepted(checker: SchemaChecker) -> None:
    assert checker.errors(VALID) == []


@pytest.mark.parametrize(
    "section",
    [
        {"name": "dbnet"},
        {"architecture": "dbnet"},
        {"_target_": "mypkg.Net"},
        {
            **VALID,
            "component_overrides": {"decoder": {"name": "unet", "params": {"in_channels": [16, 24, 48]}}},
        },
        {**VALID, "component_overrides": {}},
        {
            "name": "x",
            "backbone": {"_target_": "timm.create_model"},
            "neck": {"name": "fpn", "out_channels": 64},
        },
        {
            "name": "x",
            "decoder": {"name": "unet", "params": {"dropout": 0.5, "num_classes": 3, "custom": "free"}},
        },
        {"name": "x", "unknown_top_level_key": {"anything": [1, "two"]}},
    ],
)
def test_other_valid_sections_are_accepted(checker: SchemaChecker, section: dict[str, Any]) -> None:
    assert checker.errors(section) == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ([], ["$.model: [] is not of type 'object'"]),
        ("dbnet", ["$.model: 'dbnet' is not of type 'object'"]),
        (None, ["$.model: None is not of type 'object'"]),
        (
            {},
            [
                "$.model: needs one of `_target_`, `architecture`, `architecture_name`, `name`",
                "$.model: {} should be non-empty",
            ],
        ),
        (
            {"encoder": {"name": "resnet18"}},
            ["$.model: needs one of `_target_`, `architecture`, `architecture_name`, `name`"],
        ),
        (
            changed("_target_", "os system;"),
            ["$.model._target_: 'os system;' does not match '^[A-Za-z_][A-Za-z0-9_]*(\\\\.[A-Za-z_][A-Za-z0-9_]*)+$'"],
        ),
        (changed("_target_", "Net"), None),  # not dotted: no module to import it from
        (
            changed("decoder.params.in_channels", "abc"),
            ["$.model.decoder.params.in_channels: 'abc' is not of type 'integer'"],
        ),
        (
            changed("decoder.params.in_channels", 0),
            ["$.model.decoder.params.in_channels: 0 is less than the minimum of 1"],
        ),
        (
            changed("decoder.params.in_channels", [16, "x"]),
            ["$.model.decoder.params.in_channels[1]: 'x' is not of type 'integer'"],
        ),
        (
            changed("decoder.params.in_channels", []),
            ["$.model.decoder.params.in_channels: [] should be non-empty"],
        ),
        (
            changed("decoder.name", ...),
            ["$.model.decoder: needs one of `name`, `model_name`, `_target_`"],
        ),
        (
            changed("encoder.pretrained", "yes"),
            ["$.model.encoder.pretrained: 'yes' is not of type 'boolean'"],
        ),
        (changed("head.params.k", 0), ["$.model.head.params.k: 0 is less than or equal to the minimum of 0"]),
        (changed("decoder.params", [16]), ["$.model.decoder.params: [16] is not of type 'object'"]),
        (changed("name", "   "), None),
        (
            changed("component_overrides", {"decoder": {"params": {"in_channels": -1}}}),
            [
                "$.model.component_overrides.decoder: needs one of `name`, `model_name`, `_target_`",
                "$.model.component_overrides.decoder.params.in_channels: -1 is less than the minimum of 1",
            ],
        ),
        (
            changed("component_overrides", {"my decoder": {"name": 7}}),
            ["$.model.component_overrides[\"my decoder\"].name: 7 is not of type 'string'"],
        ),
    ],
)
def test_bad_sections_are_rejected_with_their_json_path(
    checker: SchemaChecker, section: Any, expected: list[str] | None
) -> None:
    errors = checker.errors(section)
    assert errors, "accepted a bad section"
    if expected is not None:
        assert errors == expected
    assert all(error.startswith("$.model") for error in errors)


def test_several_errors_are_all_reported_in_path_order(checker: SchemaChecker) -> None:
    section = changed("encoder.pretrained", "yes")
    section["decoder"]["params"]["in_channels"] = 0
    section["head"]["params"]["k"] = -1
    errors = checker.errors(section)
    assert [e.split(":")[0] for e in errors] == [
        "$.model.decoder.params.in_channels",
        "$.model.encoder.pretrained",
        "$.model.head.params.k",
    ]


def test_base_path_is_the_callers(checker: SchemaChecker) -> None:
    (error,) = checker.errors(changed("encoder.pretrained", 1), base="$.cfg.model")
    assert error == "$.cfg.model.encoder.pretrained: 1 is not of type 'boolean'"


KEYS = st.sampled_from(
    ["_target_", "name", "architecture_name", "encoder", "decoder", "head", "params", "in_channels", "k",
     "out_channels", "pretrained", "component_overrides", "model_name", "odd key"]
)  # fmt: skip
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=15,
)
PATH = re.compile(r'^\$\.model(\.[A-Za-z_]\w*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*: ')


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_every_message_starts_with_a_json_path(checker: SchemaChecker, section: Any) -> None:
    for error in checker.errors(section):
        assert PATH.match(error), error


# --------------------------------------------------------------------------------------- user schema


def test_user_schema_replaces_the_bundled_one(tmp_path: Path) -> None:
    path = tmp_path / "team.schema.json"
    path.write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["backbone_id"],
                "properties": {"backbone_id": {"type": "integer"}},
            }
        ),
        "utf-8",
    )
    checker = SchemaChecker(path)

    assert checker.schema_path == path
    assert checker.errors({"backbone_id": 3}) == []  # no _target_/name: fine for this schema
    assert checker.errors(VALID) == ["$.model: 'backbone_id' is a required property"]
    assert checker.errors({"backbone_id": "x"}) == ["$.model.backbone_id: 'x' is not of type 'integer'"]


def test_user_schema_of_an_older_draft(tmp_path: Path) -> None:
    path = tmp_path / "draft7.json"
    path.write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "maxProperties": 1}))
    assert SchemaChecker(path).errors({"a": 1, "b": 2}) == ["$.model: {'a': 1, 'b': 2} has too many properties"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"type": "object",', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "a JSON Schema must be an object"),
        ('{"type": 12}', "not a valid JSON Schema"),
        ('{"properties": {"x": {"minimum": "one"}}}', "not a valid JSON Schema"),
        ('{"type": "object", "required": "name"}', "not a valid JSON Schema"),
    ],
)
def test_unusable_user_schema_file_names_the_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "my.schema.json"
    path.write_text(content, "utf-8")

    with pytest.raises(SchemaFileError) as info:
        SchemaChecker(path)

    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert path.read_text("utf-8") == content


def test_missing_user_schema_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaFileError, match=r"^--ckpt-schema .*nope\.json: cannot read: No such file"):
        SchemaChecker(tmp_path / "nope.json")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n  "type": "object",\n  "properties": {,}\n}\n')
    with pytest.raises(SchemaFileError, match=r"not valid JSON: .* at line 3$"):
        load_schema(path)


# -------------------------------------------------------------------------------------- cross fields


def test_consistent_channels_have_no_cross_field_errors() -> None:
    assert cross_field_errors(VALID) == []
    section = changed("encoder.out_channels", [16, 24, 48])
    assert cross_field_errors(section) == []


def test_encoder_out_vs_decoder_in() -> None:
    section = changed("encoder.out_channels", [16, 24, 40])
    assert cross_field_errors(section) == [
        "$.model.decoder.params.in_channels: [16, 24, 48] does not match $.model.encoder.out_channels = [16, 24, 40]"
    ]


def test_decoder_out_vs_head_in() -> None:
    section = changed("head.params.in_channels", 32)
    assert cross_field_errors(section) == [
        "$.model.head.params.in_channels: 32 does not match $.model.decoder.params.out_channels = 16"
    ]


def test_head_consumes_the_last_scale() -> None:
    section = changed("decoder.params.out_channels", [8, 16])
    assert cross_field_errors(section) == []
    section = changed("decoder.params.out_channels", [16, 8])
    (error,) = cross_field_errors(section)
    assert error.startswith("$.model.head.params.in_channels: 16 does not match")


def test_channels_given_directly_on_the_component() -> None:
    section = {
        "name": "x",
        "encoder": {"name": "resnet", "params": {"out_channels": [64, 128]}},
        "decoder": {"name": "fpn", "in_channels": [64, 256], "out_channels": 32},
        "head": {"name": "h", "in_channels": 32},
    }
    assert cross_field_errors(section) == [
        "$.model.decoder.in_channels: [64, 256] does not match $.model.encoder.params.out_channels = [64, 128]"
    ]


def test_params_win_over_direct_keys() -> None:
    section = {
        "name": "x",
        "decoder": {"name": "u", "out_channels": 99, "params": {"out_channels": 16}},
        "head": {"name": "h", "params": {"in_channels": 16}},
    }
    assert cross_field_errors(section) == []


def test_component_overrides_apply_first() -> None:
    section = changed("encoder.out_channels", [16, 24, 48])
    section["decoder"]["params"]["in_channels"] = [1, 2, 3]  # replaced below, so not checked
    section["component_overrides"] = {
        "decoder": {"name": "unet", "params": {"in_channels": [16, 24, 40], "out_channels": 16}}
    }
    assert cross_field_errors(section) == [
        "$.model.component_overrides.decoder.params.in_channels: [16, 24, 40] does not match "
        "$.model.encoder.out_channels = [16, 24, 48]"
    ]
    section["component_overrides"]["decoder"]["params"]["in_channels"] = [16, 24, 48]
    assert cross_field_errors(section) == []
    section["component_overrides"]["head"] = {"name": "db_head", "params": {"in_channels": 8}}
    assert cross_field_errors(section) == [
        "$.model.component_overrides.head.params.in_channels: 8 does not match "
        "$.model.component_overrides.decoder.params.out_channels = 16"
    ]


def test_backbone_neck_head_chain() -> None:
    section = {
        "name": "x",
        "backbone": {"name": "r", "out_channels": [64, 128]},
        "neck": {"name": "fpn", "in_channels": [64, 128], "out_channels": 256},
        "head": {"name": "h", "in_channels": 128},
    }
    assert cross_field_errors(section, base="$.cfg.model") == [
        "$.cfg.model.head.in_channels: 128 does not match $.cfg.model.neck.out_channels = 256"
    ]


@pytest.mark.parametrize(
    "section",
    [
        changed("head.params.in_channels", ...),
        changed("decoder.params.out_channels", ...),
        {"name": "x", "encoder": {"name": "e", "out_channels": 3}},
        {"name": "x", "decoder": {"name": "d", "in_channels": 3}},
        {"name": "x", "encoder": "resnet18", "decoder": {"in_channels": 3}},
        {"name": "x", "encoder": {"out_channels": 3}, "decoder": None},
        {"name": "x", "component_overrides": "not a mapping", "encoder": {"out_channels": 3}},
        [],
        None,
        "dbnet",
    ],
)
def test_no_error_when_one_side_is_missing(section: Any) -> None:
    assert cross_field_errors(section) == []


@given(VALUES)
def test_cross_field_errors_never_crash(section: Any) -> None:
    for error in cross_field_errors(section):
        assert error.startswith("$.model.")
