"""Is the model section well-formed? A JSON Schema, compiled once per session.

The bundled schema (``schemas/model_config.schema.json``) demands only what any buildable section has: a
mapping whose ``_target_`` and ``class_path`` values, at any depth, are dotted import paths. A model
family's own shape and rules are its own: a schema passed with ``--ckpt-schema`` (which replaces the bundled
one) and the ``pytest_ckptgate_validate_config`` hook; ``fixtures/demo_model.schema.json`` and
``fixtures/demo_plugin.py`` are the demo family's. Every message starts with the JSON path of the offending
value (``$.model.decoder.params.in_channels: ...``), so a user can find it in a file of hundreds of lines.
"""

from __future__ import annotations

import json
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
