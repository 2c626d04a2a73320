"""Read JSON and YAML config documents without trusting them.

Config files found beside checkpoints (and later in wandb runs) are data, never code: YAML's
``!!python/...`` tags are kept as inert placeholders (Lightning's ``hparams.yaml`` uses them for
``argparse.Namespace`` and paths, and one of them must not hide the rest of the file), documents are
bounded in bytes, nesting and expanded size (alias bombs), and dates stay strings so that OmegaConf and
JSON accept them.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ckptgate.errors import CheckError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 200
MAX_NODES = 1_000_000
UNLOADED_PREFIX = "<not loaded: YAML tag "


class DocumentError(CheckError):
    """A config file exists but cannot be read as a config."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings and turns Python tags into placeholders."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _placeholder(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    return f"{UNLOADED_PREFIX}{node.tag}>"


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _placeholder)
_ConfigLoader.add_multi_constructor("!", _placeholder)
_ConfigLoader.add_constructor("tag:yaml.org,2002:binary", lambda loader, node: f"{UNLOADED_PREFIX}{node.tag}>")
_ConfigLoader.add_constructor("tag:yaml.org,2002:set", lambda loader, node: f"{UNLOADED_PREFIX}{node.tag}>")
# An explicit `!!timestamp 2025-10-17` stays a string too (the implicit resolver is gone above).
_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def check_shape(document: Any, where: str) -> None:
    """Refuse documents that are too deep or expand to too many nodes (YAML aliases share subtrees)."""
    count = 1
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else ()
        if not children:
            continue
        if depth >= MAX_DEPTH:
            raise DocumentError(f"{where}: nested deeper than {MAX_DEPTH} levels; refusing to read it")
        count += len(children)
        if count > MAX_NODES:
            raise DocumentError(
                f"{where}: expands to more than {MAX_NODES:,} values (a YAML alias bomb?); refusing to read it"
            )
        # only containers go on the stack: a config's many scalars are counted, not visited
        stack.extend((child, depth + 1) for child in children if type(child) not in _SCALARS)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def parse_document(text: str, *, suffix: str, where: str) -> Any:
    """Parse JSON (``suffix == ".json"``) or YAML text; ``where`` names the file in error messages."""
    try:
        # _ConfigLoader is a SafeLoader subclass: yaml.load with it constructs plain data only.
        document = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_ConfigLoader)
    except RecursionError:
        raise DocumentError(f"{where}: nested too deeply to parse; refusing to read it") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"{where}: not valid YAML: {problem}{at}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # Explicit tags with values they cannot hold (`!!float abc`, an empty `!!int`, `!!bool maybe`) and
        # integers longer than int() accepts (sys.get_int_max_str_digits) surface as plain Python errors.
        kind = "JSON" if suffix == ".json" else "YAML"
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DocumentError(f"{where}: not valid {kind}: {type(exc).__name__}: {detail}") from None
    check_shape(document, where)
    return document


def read_document(path: Path, *, where: str | None = None) -> Any:
    """Read and parse one config file, bounded in size."""
    where = where or str(path)
    try:
        # One open, one fstat of what was opened, one read: nothing can be swapped in between a check and
        # the read, and O_NONBLOCK keeps a FIFO from blocking the open (fstat then refuses it).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DocumentError(f"{where}: not a regular file (a folder, FIFO, socket or device?)")
            if st.st_size > MAX_DOCUMENT_BYTES:
                raise DocumentError(
                    f"{where}: {st.st_size / 1e6:.1f} MB is too large for a config "
                    f"(limit {MAX_DOCUMENT_BYTES / 1e6:.0f} MB)"
                )
            raw = _read_at_most(fd, MAX_DOCUMENT_BYTES + 1, st.st_size)  # bounded: the file may grow meanwhile
        finally:
            os.close(fd)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentError(f"{where}: grew past {MAX_DOCUMENT_BYTES / 1e6:.0f} MB while being read")
    except OSError as exc:
        raise DocumentError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{where}: not UTF-8 text (byte {exc.start}); is it really a config file?") from None
    suffix = ".json" if path.name.endswith(".json") else ".yaml"
    return parse_document(text, suffix=suffix, where=where)


def _read_at_most(fd: int, limit: int, expected: int) -> bytes:
    """Up to ``limit`` bytes; the first read asks for the size fstat gave (and one more, to see growth)."""
    chunks, size, ask = [], 0, expected + 1
    while size < limit:
        chunk = os.read(fd, min(ask, limit - size))
        ask = 1 << 16
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def has_interpolation(document: Any) -> bool:
    """Whether any string holds an OmegaConf interpolation (only then is OmegaConf worth importing)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "${" in node:
                return True
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def find_unloaded(document: Any, path: str = "$") -> list[str]:
    """JSON paths of values that were Python-tagged YAML and were not loaded."""
    found: list[str] = []
    if isinstance(document, str) and document.startswith(UNLOADED_PREFIX):
        found.append(path)
    elif isinstance(document, Mapping):
        for key, value in document.items():
            found.extend(find_unloaded(value, json_path(path, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(find_unloaded(value, f"{path}[{index}]"))
    return found


def json_path(parent: str, key: Any) -> str:
    """Append one key to a JSON path: ``.key`` for identifiers, ``[0]`` for indexes, ``["a key"]`` otherwise."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    text = str(key)
    if text.isidentifier():
        return f"{parent}.{text}"
    return f"{parent}[{json.dumps(text)}]"
