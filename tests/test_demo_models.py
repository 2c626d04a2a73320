"""The demo model family: every combination runs, components really differ, and its rules are exact.

The family's rules (``cross_field_errors``, ``validate_config``) are its own, not ckptgate's: they reach the gate
through the family's plugin (``fixtures/demo_plugin.py``), as a team's rules would."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from fixtures.demo_models import (
    DECODERS,
    ENCODER_CHANNELS,
    ENCODERS,
    DBNetLike,
    PANDecoder,
    ResNet18Tiny,
    UNetDecoder,
    build_model,
    cross_field_errors,
    model_section,
    validate_config,
)
from fixtures.demo_plugin import pytest_ckptgate_validate_config

COMBOS = list(itertools.product(sorted(ENCODERS), sorted(DECODERS)))
MAP_KEYS = {"prob_maps", "thresh_maps", "binary_maps"}


@pytest.mark.parametrize(("encoder", "decoder"), COMBOS)
def test_every_combination_builds_and_forwards(encoder: str, decoder: str) -> None:
    model = build_model(model_section(encoder, decoder)).eval()
    assert 1_000 < sum(p.numel() for p in model.parameters()) < 200_000
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert set(out) == MAP_KEYS
    for name, tensor in out.items():
        assert tensor.shape == (2, 1, 64, 64), name
        assert torch.isfinite(tensor).all(), name


def test_encoders_report_the_channels_they_produce() -> None:
    for name, make in ENCODERS.items():
        features = make()(torch.rand(1, 3, 64, 64))
        assert [f.shape[1] for f in features] == ENCODER_CHANNELS[name]
        assert [f.shape[-1] for f in features] == [32, 16, 8]  # strides 2, 4, 8


def test_dictconfig_is_read_by_attribute_and_plain_dicts_are_converted_by_the_factory() -> None:
    section = model_section("resnet18_tiny", "unet")
    assert isinstance(DBNetLike(OmegaConf.create(section)).encoder, ResNet18Tiny)
    with pytest.raises(AttributeError):  # like the seed team's model: a plain dict is not enough
        DBNetLike(section)  # type: ignore[arg-type]
    assert isinstance(build_model(section).decoder, UNetDecoder)
    assert isinstance(build_model({"model": section, "optimizer": {}}).decoder, UNetDecoder)


def test_interpolated_head_channels_resolve_against_the_full_config() -> None:
    section = model_section("mobilenetv3_small_050", "pan_decoder")
    section["head"]["params"]["in_channels"] = "${model.decoder.params.out_channels}"
    full = OmegaConf.create({"model": section})
    assert build_model(full.model).head.binarize[0][0].in_channels == 16


def test_component_overrides_replace_the_whole_section() -> None:
    unet = model_section("mobilenetv3_small_050", "unet")["decoder"]
    section = model_section("mobilenetv3_small_050", "pan_decoder", component_overrides={"decoder": unet})
    assert isinstance(build_model(section).decoder, UNetDecoder)
    section["component_overrides"] = {"decoder": None}
    assert isinstance(build_model(section).decoder, PANDecoder)
    section["component_overrides"] = {"encoder": {"model_name": "resnet18_tiny"}}
    assert isinstance(build_model(section).encoder, ResNet18Tiny)


def test_unet_weights_into_a_pan_decoder_give_missing_and_unexpected_keys() -> None:
    unet = build_model(model_section("mobilenetv3_small_050", "unet")).state_dict()
    pan = build_model(model_section("mobilenetv3_small_050", "pan_decoder"))
    result = pan.load_state_dict(unet, strict=False)
    assert result.missing_keys and result.unexpected_keys
    assert all(k.startswith("decoder.") for k in result.missing_keys + result.unexpected_keys)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        pan.load_state_dict(unet)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("encoder", {"model_name": "vit_huge"}), ("decoder", {"name": "segformer"}), ("head", {"name": "ctc"})],
)
def test_unknown_components_raise_naming_the_known_ones(field: str, bad: dict[str, Any]) -> None:
    section = model_section("mobilenetv3_small_050", "unet", **{field: bad})
    with pytest.raises(ValueError, match="known"):
        build_model(section)
    [message] = validate_config(section)
    key = "model_name" if field == "encoder" else "name"
    assert message.startswith(f"$.model.{field}.{key}: unknown {field}")
    assert "known" in message


@pytest.mark.parametrize(("encoder", "decoder"), COMBOS)
def test_valid_sections_have_no_errors(encoder: str, decoder: str) -> None:
    assert validate_config(model_section(encoder, decoder)) == []


def test_decoder_in_channels_must_match_the_encoder() -> None:
    section = model_section("mobilenetv3_small_050", "unet", decoder={"params": {"in_channels": [16, 24]}})
    assert validate_config(section) == [
        "$.model.decoder.params.in_channels: [16, 24] does not match the output channels [16, 24, 48] "
        "of encoder 'mobilenetv3_small_050'"
    ]


def test_head_in_channels_must_match_the_decoder() -> None:
    section = model_section("resnet18_tiny", "unet", head={"params": {"in_channels": 64}})
    assert validate_config(section) == [
        "$.model.head.params.in_channels: 64 does not match the decoder's out_channels 32 "
        "($.model.decoder.params.out_channels)"
    ]


def test_errors_point_into_component_overrides_when_they_are_in_effect() -> None:
    override = model_section("mobilenetv3_small_050", "unet")["decoder"]
    override["params"]["in_channels"] = [32, 64, 128]
    section = model_section("mobilenetv3_small_050", "pan_decoder", component_overrides={"decoder": override})
    [message] = validate_config(section)
    assert message.startswith("$.model.component_overrides.decoder.params.in_channels: [32, 64, 128]")


def test_missing_keys_and_wrong_types_are_reported() -> None:
    assert validate_config([]) == ["$.model: expected an object, got list"]  # type: ignore[arg-type]
    errors = validate_config({"encoder": "mobilenetv3_small_050"})
    assert errors == [
        "$.model.encoder: expected an object, got str",
        "$.model.decoder: expected an object, got nothing",
        "$.model.head: expected an object, got nothing",
    ]
    section = model_section("mobilenetv3_small_050", "unet")
    section["decoder"]["params"]["out_channels"] = True  # bool is not an int here
    section["head"]["params"]["k"] = "fifty"
    assert validate_config(section) == [
        "$.model.decoder.params.out_channels: expected a positive integer, got bool True",
        "$.model.head.params.k: expected a positive number, got 'fifty'",
    ]


def test_model_section_deep_merges_overrides() -> None:
    section = model_section("resnet18_tiny", "fpn_decoder", decoder={"params": {"inner_channels": 8}})
    assert section["decoder"] == {
        "name": "fpn_decoder",
        "params": {"in_channels": [32, 64, 128], "inner_channels": 8, "out_channels": 32},
    }
    assert model_section("resnet18_tiny", "fpn_decoder")["decoder"]["params"]["inner_channels"] == 32


# ------------------------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _assert_well_formed(errors: Any) -> None:
    assert isinstance(errors, list)
    for message in errors:
        assert isinstance(message, str)
        assert message.startswith("$.model")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_input_never_raises(value: Any) -> None:
    _assert_well_formed(validate_config(value))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(COMBOS),
    st.data(),
    json_values,
    st.booleans(),
)
def test_corrupting_one_field_of_a_valid_section_never_raises(
    combo: tuple[str, str], data: st.DataObject, value: Any, via_override: bool
) -> None:
    section = model_section(*combo)
    if via_override:
        section["component_overrides"] = {"decoder": section.pop("decoder")}
    path = data.draw(st.sampled_from(_paths(section)))
    _set(section, path, value)
    errors = validate_config(section)
    _assert_well_formed(errors)
    if path[-1] in ("model_name", "name") and not isinstance(value, str):
        assert errors, f"a non-string {path[-1]} must be reported"


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(ENCODERS)), st.lists(st.integers(1, 256), min_size=1, max_size=4))
def test_any_other_in_channels_is_reported_once(encoder: str, channels: list[int]) -> None:
    section = model_section(encoder, "unet", decoder={"params": {"in_channels": channels}})
    errors = validate_config(section)
    if channels == ENCODER_CHANNELS[encoder]:
        assert errors == []
    else:
        assert len(errors) == 1
        assert errors[0].startswith(f"$.model.decoder.params.in_channels: {channels} does not match")


# ------------------------------------------------------------------ stage wiring (cross-field rules)


def _valid() -> dict[str, Any]:
    return model_section("mobilenetv3_small_050", "unet")  # channels [16, 24, 48] -> 16 -> head 16


def test_consistent_channels_have_no_cross_field_errors() -> None:
    assert cross_field_errors(_valid()) == []
    section = model_section("mobilenetv3_small_050", "unet", encoder={"out_channels": [16, 24, 48]})
    assert cross_field_errors(section) == []


def test_encoder_out_vs_decoder_in() -> None:
    section = model_section("mobilenetv3_small_050", "unet", encoder={"out_channels": [16, 24, 40]})
    assert cross_field_errors(section) == [
        "$.model.decoder.params.in_channels: [16, 24, 48] does not match $.model.encoder.out_channels = [16, 24, 40]"
    ]


def test_decoder_out_vs_head_in() -> None:
    section = model_section("mobilenetv3_small_050", "unet", head={"params": {"in_channels": 32}})
    assert cross_field_errors(section) == [
        "$.model.head.params.in_channels: 32 does not match $.model.decoder.params.out_channels = 16"
    ]


def test_head_consumes_the_last_scale() -> None:
    section = model_section("mobilenetv3_small_050", "unet", decoder={"params": {"out_channels": [8, 16]}})
    assert cross_field_errors(section) == []
    section = model_section("mobilenetv3_small_050", "unet", decoder={"params": {"out_channels": [16, 8]}})
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
    section = model_section("mobilenetv3_small_050", "unet", encoder={"out_channels": [16, 24, 48]})
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


def _without(path: str) -> dict[str, Any]:
    section = _valid()
    *heads, last = path.split(".")
    node = section
    for head in heads:
        node = node[head]
    del node[last]
    return section


@pytest.mark.parametrize(
    "section",
    [
        _without("head.params.in_channels"),
        _without("decoder.params.out_channels"),
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
def test_no_cross_field_error_when_one_side_is_missing(section: Any) -> None:
    assert cross_field_errors(section) == []


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_cross_field_errors_never_crash(section: Any) -> None:
    for error in cross_field_errors(section):
        assert error.startswith("$.model.")


# ---------------------------------------------------------------------- the family's plugin (its hook)


def test_the_plugin_reports_the_wiring_first_as_the_gate_did() -> None:
    """The head that contradicts the decoder is reported once, in the wiring's words (the demo's bad_config)."""
    section = model_section("resnet18_tiny", "unet", head={"params": {"in_channels": 64}})
    assert pytest_ckptgate_validate_config(model_config=section, checkpoint=None) == [
        "$.model.head.params.in_channels: 64 does not match $.model.decoder.params.out_channels = 32"
    ]


def test_the_plugin_then_applies_what_only_the_family_knows() -> None:
    section = model_section("mobilenetv3_small_050", "unet", decoder={"params": {"in_channels": [16, 24, 40]}})
    assert cross_field_errors(section) == []  # no encoder out_channels in the config: nothing to compare
    assert pytest_ckptgate_validate_config(model_config=section, checkpoint=None) == [
        "$.model.decoder.params.in_channels: [16, 24, 40] does not match the output channels [16, 24, 48] "
        "of encoder 'mobilenetv3_small_050'"
    ]
    for encoder, decoder in COMBOS:
        assert pytest_ckptgate_validate_config(model_config=model_section(encoder, decoder), checkpoint=None) == []
