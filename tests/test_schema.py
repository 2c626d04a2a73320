"""ckptgate.schema, the bundled JSON Schema and the demo family's own: is a model section well-formed, and where
is it not?

The bundled schema demands only what any buildable section has (a mapping; every ``_target_``/``class_path``
a dotted import path); the demo family's shape is its own schema (``fixtures/demo_model.schema.json``), passed
with ``--ckpt-schema`` as a team passes theirs. The demo family's cross-field rules are tested with the family
(``tests/test_demo_models.py``)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ckptgate.schema import BUNDLED_SCHEMA, SchemaChecker, SchemaFileError, load_schema
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema.validators import Draft202012Validator

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "plugins" / "ckptgate" / "schemas" / BUNDLED_SCHEMA
DEMO_SCHEMA = REPO / "fixtures" / "demo_model.schema.json"
TARGET_PATTERN = "'^[A-Za-z_][A-Za-z0-9_]*(\\\\.[A-Za-z_][A-Za-z0-9_]*)+$'"  # as jsonschema's message spells it

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
    """The bundled schema."""
    return SchemaChecker()


@pytest.fixture(scope="module")
def demo_checker() -> SchemaChecker:
    """The demo family's own schema, as ``--ckpt-schema fixtures/demo_model.schema.json`` loads it."""
    return SchemaChecker(DEMO_SCHEMA)


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
    assert schema["$id"].endswith("/model_config.schema.json")
    assert "description" in schema and "description" in schema["$defs"]["target"]


@pytest.mark.parametrize(
    "section",
    [
        pytest.param({"channels": 4, "depth": 2}, id="plain-flat"),  # the plain project
        pytest.param({}, id="empty"),  # a LightningModule without arguments builds from it
        pytest.param({"class_path": "mypkg.models.Net", "init_args": {"channels": 4, "depth": 2}}, id="lightning-cli"),
        pytest.param(
            {
                "class_path": "mypkg.models.Net",
                "init_args": {"backbone": {"class_path": "torchvision.models.resnet18", "init_args": {}}},
            },
            id="lightning-cli-nested",
        ),
        pytest.param({"_target_": "mypkg.Net"}, id="hydra"),
        pytest.param(VALID, id="demo-family"),
        pytest.param({"name": "   ", "encoder": "resnet18", "decoder": {"params": {"in_channels": "abc"}}}, id="free"),
        pytest.param({"head": {"in_channels": 64}, "decoder": {"out_channels": 32}}, id="wiring-is-a-family-rule"),
        pytest.param({"layers": [{"_target_": "torch.nn.Linear", "in_features": 4}, 3, "x", None]}, id="list"),
        pytest.param({"odd key": {"anything": [1, "two"]}, "target": "not checked", "classpath": 7}, id="other-keys"),
    ],
)
def test_any_buildable_section_is_accepted(checker: SchemaChecker, section: dict[str, Any]) -> None:
    assert checker.errors(section) == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ([], ["$.model: [] is not of type 'object'"]),
        ("dbnet", ["$.model: 'dbnet' is not of type 'object'"]),
        (None, ["$.model: None is not of type 'object'"]),
        (changed("_target_", "os system;"), [f"$.model._target_: 'os system;' does not match {TARGET_PATTERN}"]),
        ({"_target_": "Net"}, [f"$.model._target_: 'Net' does not match {TARGET_PATTERN}"]),  # no module to import
        ({"_target_": 7}, ["$.model._target_: 7 is not of type 'string'"]),
        ({"_target_": {"_target_": "a.b"}}, ["$.model._target_: {'_target_': 'a.b'} is not of type 'string'"]),
        ({"class_path": "Net", "init_args": {}}, [f"$.model.class_path: 'Net' does not match {TARGET_PATTERN}"]),
        ({"class_path": None}, ["$.model.class_path: None is not of type 'string'"]),
        (
            {"class_path": "mypkg.Net", "init_args": {"backbone": {"class_path": "resnet 18"}}},
            [f"$.model.init_args.backbone.class_path: 'resnet 18' does not match {TARGET_PATTERN}"],
        ),
        (
            {"name": "x", "decoder": {"params": {"block": {"_target_": ""}}}},
            [f"$.model.decoder.params.block._target_: '' does not match {TARGET_PATTERN}"],
        ),
        (
            {"layers": [{"_target_": "torch.nn.Linear"}, {"_target_": ["torch.nn.ReLU"]}]},
            ["$.model.layers[1]._target_: ['torch.nn.ReLU'] is not of type 'string'"],
        ),
        (
            {"my block": [[{"class_path": "x.y z"}]]},
            [f"$.model[\"my block\"][0][0].class_path: 'x.y z' does not match {TARGET_PATTERN}"],
        ),
    ],
)
def test_malformed_targets_are_rejected_with_their_json_path(
    checker: SchemaChecker, section: Any, expected: list[str]
) -> None:
    assert checker.errors(section) == expected


def test_bundled_schema_reports_every_malformed_target_in_path_order(checker: SchemaChecker) -> None:
    section = {"z": {"_target_": "a"}, "_target_": "b", "init_args": [{"class_path": 1}]}
    assert [e.split(":")[0] for e in checker.errors(section)] == [
        "$.model._target_",
        "$.model.init_args[0].class_path",
        "$.model.z._target_",
    ]
    (error,) = checker.errors({"_target_": "b"}, base="$.cfg.model")
    assert error.startswith("$.cfg.model._target_: 'b' does not match")


FREE_KEYS = st.text(max_size=6).filter(lambda key: key not in ("_target_", "class_path"))
FREE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FREE_KEYS, inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(FREE_KEYS, FREE, max_size=5))
def test_a_mapping_that_names_no_target_is_always_accepted(checker: SchemaChecker, section: dict[str, Any]) -> None:
    assert checker.errors(section) == []


# ------------------------------------------------------------------------ the demo family's own schema


def test_demo_schema_is_a_valid_json_schema_and_keeps_the_bundled_rule() -> None:
    schema = json.loads(DEMO_SCHEMA.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    bundled = json.loads(SCHEMA_FILE.read_text("utf-8"))
    assert schema["$id"] != bundled["$id"]
    # a team's schema replaces the bundled one: the demo's keeps its rule, word for word
    assert schema["$ref"] == bundled["$ref"] == "#/$defs/value"
    for name in ("target", "value"):
        assert {k: v for k, v in schema["$defs"][name].items() if k != "description"} == {
            k: v for k, v in bundled["$defs"][name].items() if k != "description"
        }


def test_realistic_section_is_accepted(demo_checker: SchemaChecker) -> None:
    assert demo_checker.errors(VALID) == []


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
def test_other_valid_sections_are_accepted(demo_checker: SchemaChecker, section: dict[str, Any]) -> None:
    assert demo_checker.errors(section) == []


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
            {"channels": 4, "depth": 2},  # a plain project's section: fine for ckptgate, not for this family
            ["$.model: needs one of `_target_`, `architecture`, `architecture_name`, `name`"],
        ),
        (
            changed("_target_", "os system;"),
            [f"$.model._target_: 'os system;' does not match {TARGET_PATTERN}"],
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
        (
            changed("decoder.params.block", {"class_path": "Block"}),  # the bundled rule, at any depth
            [f"$.model.decoder.params.block.class_path: 'Block' does not match {TARGET_PATTERN}"],
        ),
    ],
)
def test_bad_sections_are_rejected_with_their_json_path(
    demo_checker: SchemaChecker, section: Any, expected: list[str] | None
) -> None:
    errors = demo_checker.errors(section)
    assert errors, "accepted a bad section"
    if expected is not None:
        assert errors == expected
    assert all(error.startswith("$.model") for error in errors)


def test_several_errors_are_all_reported_in_path_order(demo_checker: SchemaChecker) -> None:
    section = changed("encoder.pretrained", "yes")
    section["decoder"]["params"]["in_channels"] = 0
    section["head"]["params"]["k"] = -1
    errors = demo_checker.errors(section)
    assert [e.split(":")[0] for e in errors] == [
        "$.model.decoder.params.in_channels",
        "$.model.encoder.pretrained",
        "$.model.head.params.k",
    ]


def test_base_path_is_the_callers(demo_checker: SchemaChecker) -> None:
    (error,) = demo_checker.errors(changed("encoder.pretrained", 1), base="$.cfg.model")
    assert error == "$.cfg.model.encoder.pretrained: 1 is not of type 'boolean'"


KEYS = st.sampled_from(
    ["_target_", "class_path", "init_args", "name", "architecture_name", "encoder", "decoder", "head", "params",
     "in_channels", "k", "out_channels", "pretrained", "component_overrides", "model_name", "odd key"]
)  # fmt: skip
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=15,
)
PATH = re.compile(r'^\$\.model(\.[A-Za-z_]\w*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*: ')


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_every_message_starts_with_a_json_path(
    checker: SchemaChecker, demo_checker: SchemaChecker, section: Any
) -> None:
    for error in checker.errors(section) + demo_checker.errors(section):
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
