"""Is the model section well-formed? A JSON Schema, then the cross-field rules a schema cannot express.

The bundled schema (``schemas/model_config.schema.json``) is replaceable with ``--ckpt-schema``. Every
message starts with the JSON path of the offending value (``$.model.decoder.params.in_channels: ...``),
so a user can find it in a file of hundreds of lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from ckptgate.documents import json_path

BUNDLED_SCHEMA = "model_config.schema.json"


class SchemaFileError(Exception):
    """The schema file itself is unusable: a usage error, reported once at start-up."""


def load_schema(path: Path | None) -> dict[str, Any]:
    """The user's schema at ``path``, or the bundled one; checked against its own metaschema."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if path is None:
        text = resources.files("ckptgate").joinpath("schemas", BUNDLED_SCHEMA).read_text("utf-8")
        where = f"bundled {BUNDLED_SCHEMA}"
    else:
        where = str(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise SchemaFileError(f"--ckpt-schema {path}: cannot read: {exc.strerror or exc}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(schema, dict):
        raise SchemaFileError(f"{where}: a JSON Schema must be an object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise SchemaFileError(f"{where}: not a valid JSON Schema: {exc.message}") from None
    return schema


def _where(error: Any, base: str) -> str:
    """The error's JSON path spelled like every other message of ours (``$.model._target_``)."""
    where = base
    for key in error.absolute_path:
        where = json_path(where, key)
    return where


def _format(error: Any, base: str) -> str:
    from jsonschema.exceptions import best_match

    where = _where(error, base)
    if error.validator in ("anyOf", "oneOf") and error.context:
        alternatives = error.validator_value
        if all(set(alt) == {"required"} for alt in alternatives):
            names = ", ".join(f"`{name}`" for alt in alternatives for name in alt["required"])
            return f"{where}: needs one of {names}"
        # The alternative whose own `type` fits the value says what is wrong with it (0 is below the
        # minimum, not "not an array"; [16, "x"] has a bad item, not "not an integer").
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [
            subs
            for subs in branches.values()
            if not any(sub.validator == "type" and not sub.relative_path for sub in subs)
        ]
        deepest = best_match(fitting[0] if len(fitting) == 1 else error.context)
        return f"{_where(deepest, base)}: {deepest.message}"
    return f"{where}: {error.message}"


class SchemaChecker:
    """A compiled validator for model sections: built once per session, used for every checkpoint."""

    def __init__(self, schema_path: Path | None = None) -> None:
        self.schema_path = schema_path
        self.schema = load_schema(schema_path)

    @cached_property
    def _validator(self) -> Any:
        from jsonschema.validators import validator_for

        cls = validator_for(self.schema)
        return cls(self.schema, format_checker=cls.FORMAT_CHECKER)

    def errors(self, section: Any, base: str = "$.model") -> list[str]:
        found = sorted(self._validator.iter_errors(section), key=lambda e: (list(map(str, e.absolute_path)), e.message))
        return [_format(error, base) for error in found]


def _effective(section: Mapping[str, Any], name: str) -> tuple[Any, str]:
    """A component after ``component_overrides`` is applied, and the JSON path it came from."""
    overrides = section.get("component_overrides")
    if isinstance(overrides, Mapping) and isinstance(overrides.get(name), Mapping):
        return overrides[name], f"component_overrides.{name}"
    return section.get(name), name


def _channels(component: Any, key: str, where: str) -> tuple[Any, str] | None:
    if not isinstance(component, Mapping):
        return None
    params = component.get("params")
    if isinstance(params, Mapping) and key in params:
        return params[key], f"{where}.params.{key}"
    if key in component:
        return component[key], f"{where}.{key}"
    return None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def cross_field_errors(section: Any, base: str = "$.model") -> list[str]:
    """Channel counts that must agree between stages, where the config states both sides.

    ``encoder.out_channels`` must equal ``decoder.in_channels`` and ``decoder.out_channels`` must equal
    ``head.in_channels`` (each may sit under ``params``; ``component_overrides`` applies first). A model
    family that knows more (an encoder's channels from its name) adds rules through the
    ``pytest_ckptgate_validate_config`` hook.
    """
    if not isinstance(section, Mapping):
        return []
    errors: list[str] = []
    for upstream, downstream in (("encoder", "decoder"), ("backbone", "neck"), ("decoder", "head"), ("neck", "head")):
        up, up_where = _effective(section, upstream)
        down, down_where = _effective(section, downstream)
        produced = _channels(up, "out_channels", up_where)
        consumed = _channels(down, "in_channels", down_where)
        if produced is None or consumed is None:
            continue
        (out_value, out_at), (in_value, in_at) = produced, consumed
        # A multi-scale decoder consumes the whole list; a head consumes the last scale.
        expected = _as_list(out_value) if isinstance(in_value, list) else _as_list(out_value)[-1:]
        if _as_list(in_value) != expected:
            errors.append(f"{base}.{in_at}: {in_value!r} does not match {base}.{out_at} = {out_value!r}")
    return errors
