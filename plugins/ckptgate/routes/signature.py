"""Does a config fit a class's ``__init__``? Required arguments, unknown ones, and types as annotated.

Required and unknown arguments come from ``inspect.signature`` (jsonargparse treats an untyped required
argument as optional); types are checked by jsonargparse, as LightningCLI checks its configs, for the
parameters whose annotations describe plain data. A parameter annotated with a class (``DictConfig``, a
``torch.nn.Module`` to inject) is checked only when its value names a ``class_path``: jsonargparse would
otherwise demand one where Lightning passes the value as it is.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from ckptgate.documents import json_path
from ckptgate.errors import first_line

_PLAIN = (int, float, str, bool, bytes, type(None), list, tuple, dict, set, frozenset, pathlib.Path, pathlib.PurePath)
_GENERIC_ORIGINS = {
    list,
    tuple,
    dict,
    set,
    frozenset,
    typing.Union,
    types.UnionType,
    collections.abc.Sequence,
    collections.abc.Mapping,
    collections.abc.Iterable,
}


def parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """``__init__``'s named parameters (self, ``*args`` and ``**kwargs`` left out) and whether it takes ``**kwargs``."""
    try:
        found = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}, True  # no signature to check against: anything goes, as Lightning would pass it
    named = {}
    varkw = False
    for index, (name, parameter) in enumerate(found.items()):
        if index == 0 and name in ("self", "cls"):
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            varkw = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = parameter
    return named, varkw


def plain_annotation(annotation: Any) -> bool:
    """True for annotations jsonargparse checks as data: builtins, enums, paths and typing constructs of them."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return False
    if isinstance(annotation, type):
        return issubclass(annotation, _PLAIN) or issubclass(annotation, enum.Enum)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin in _GENERIC_ORIGINS:
        return all(arg is Ellipsis or plain_annotation(arg) for arg in typing.get_args(annotation))
    return False


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # a forward reference that does not resolve: check what can be checked without types
        return {}


def _names_class(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_path" in value


def problems(cls: type, args: Mapping[str, Any], base: str, label: str) -> list[str]:
    """Every way ``args`` does not fit ``cls.__init__``, each message starting with its JSON path."""
    named, varkw = parameters(cls)
    errors = [
        f"{base}: missing the required argument `{name}` of {label}.__init__"
        for name, parameter in named.items()
        if parameter.default is inspect.Parameter.empty and name not in args
    ]
    if not varkw:
        errors += [
            f"{json_path(base, key)}: {label}.__init__ takes no argument `{key}` "
            f"(it takes: {', '.join(named) or 'none'})"
            for key in args
            if key not in named
        ]
    hints = _hints(cls)
    checked = {
        name
        for name in named
        if name in args and (plain_annotation(hints.get(name, inspect.Parameter.empty)) or _names_class(args[name]))
    }
    if checked and not errors:
        errors += _typed(cls, {name: args[name] for name in checked}, set(named) - checked, base)
    return errors


def _typed(cls: type, args: dict[str, Any], skip: set[str], base: str) -> list[str]:
    """jsonargparse's verdict on the typed arguments (it also checks nested ``class_path`` objects)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_class_arguments(cls, "module", skip=skip, fail_untyped=False)
        parser.parse_object({"module": args}, defaults=False)
    except Exception as exc:
        return [_jsonargparse_message(str(exc), base)]
    return []


def _jsonargparse_message(text: str, base: str) -> str:
    """``Parser key "module.channels": Expected a <class 'int'>. Got value: abc`` as ``$.channels: ...``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else text
    where = base
    if head.startswith('Parser key "module.'):
        key = head[len('Parser key "module.') :].split('"', 1)[0]
        for part in key.split("."):
            where = json_path(where, part)
        detail = " ".join(lines[1:]) or head
    else:
        detail = head
    detail = detail.replace("<class '", "").replace("'>", "")
    return f"{where}: {first_line(detail, 200)}"
