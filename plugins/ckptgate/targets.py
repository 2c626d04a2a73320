"""Which ``_target_`` import paths a config may name, decided before anything is imported.

Hydra's own blocklist (hydra-core 1.3.8) stops ``os.system`` and friends but lets through callables that
write files (``builtins.open``, ``torch.save``, ``shutil.copyfile``...). A checkpoint's config is data from
disk, so we allow only module prefixes the user trusts (their model packages, the factory's package) and
refuse a few that never build a model even when a prefix would admit them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ckptgate.documents import json_path

# Never a model, whatever the allowlist says: process, file, import and network machinery.
ALWAYS_REFUSED = (
    "builtins",
    "os",
    "sys",
    "subprocess",
    "shutil",
    "importlib",
    "runpy",
    "pickle",
    "marshal",
    "ctypes",
    "socket",
    "webbrowser",
    "io",
    "pathlib",
    "code",
    "codeop",
    "pty",
    "timeit",
    "tempfile",
    "logging",
    "multiprocessing",
    "torch.save",
    "torch.load",
    "torch.hub",
    "torch.jit.load",
    "torch.serialization",
    # reachable when a user allows all of `torch`: compile and import C++ from strings, run shell
    # commands (collect_env.run), unpickle archives, start processes
    "torch.utils.cpp_extension",
    "torch.utils.collect_env",
    "torch.package",
    "torch.multiprocessing",
    "torch.utils.model_zoo",  # torch.hub under another name: downloads, then loads
    "hydra.utils.get_method",
    "hydra.utils.get_class",
    "hydra.utils.get_object",
    "hydra.utils.instantiate",
    "hydra.utils.call",
)


def matches(dotted: str, prefix: str) -> bool:
    """``prefix`` covers ``dotted`` on whole segments: ``pkg`` covers ``pkg.m.C`` but not ``pkgevil.C``."""
    return dotted == prefix or dotted.startswith(prefix + ".")


def find_targets(section: Any, path: str = "$") -> list[tuple[str, Any]]:
    """Every ``_target_`` value in a config tree, with its JSON path (Hydra instantiates nested ones too)."""
    found: list[tuple[str, Any]] = []
    if isinstance(section, Mapping):
        for key, value in section.items():
            child = json_path(path, key)
            if key == "_target_":
                found.append((child, value))
            else:
                found.extend(find_targets(value, child))
    elif isinstance(section, list):
        for index, value in enumerate(section):
            found.extend(find_targets(value, f"{path}[{index}]"))
    return found


def find_interpolations(section: Any, path: str = "$") -> list[tuple[str, str]]:
    """Every string value in a config tree that holds an OmegaConf interpolation (``${...}``), with its path
    (``_target_`` values are left to :func:`target_errors`, which refuses them by name)."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, section)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            if "${" in node:
                found.append((where, node))
        elif isinstance(node, Mapping):
            stack.extend(
                (json_path(where, key), value) for key, value in reversed(list(node.items())) if key != "_target_"
            )
        elif isinstance(node, list):
            stack.extend((f"{where}[{index}]", value) for index, value in reversed(list(enumerate(node))))
    return found


def target_errors(section: Any, allowed: Iterable[str], *, base: str = "$") -> list[str]:
    """Messages for every ``_target_`` outside the allowed prefixes; [] when all are allowed.

    A string that still holds an interpolation is refused too: the model is built from an OmegaConf copy of
    the section, which resolves it then, after this check (``${oc.create:{_target_: builtins.open, ...}}``
    left by an escaped ``\\${`` in a sidecar, or unresolved in a wandb config, would call what it names).
    """
    allowed = tuple(prefix for prefix in allowed if prefix)
    errors: list[str] = []
    for where, text in find_interpolations(section, base):
        shown = text if len(text) <= 80 else text[:79] + "…"
        errors.append(
            f"{where}: {shown!r} is an interpolation that would be resolved only when the model is built, after "
            "the `_target_` check (a resolver such as oc.create can make a `_target_` there); write the value "
            "itself in the config. Nothing was imported."
        )
    for where, target in find_targets(section, base):
        if not isinstance(target, str):
            errors.append(f"{where}: `_target_` must be a dotted import path string, found {type(target).__name__}")
            continue
        refused = next((prefix for prefix in ALWAYS_REFUSED if matches(target, prefix)), None)
        if "${" in target:
            errors.append(
                f"{where}: `_target_` {target!r} is an interpolation: what it names would be known only when the "
                "model is built, after this check. Nothing was imported."
            )
        elif refused is not None:
            errors.append(
                f"{where}: `_target_` {target!r} is refused: `{refused}` can run commands, import code or "
                "touch files, and never builds a model. Nothing was imported."
            )
        elif not any(matches(target, prefix) for prefix in allowed):
            shown = ", ".join(allowed) if allowed else "none configured"
            top = target.split(".")[0]
            errors.append(
                f"{where}: `_target_` {target!r} is outside the allowed module prefixes ({shown}). "
                f"Nothing was imported. If you trust it, add `ckpt_target_allow = {top}` to your pytest ini "
                f"or pass --ckpt-target-allow {top}."
            )
        else:
            errors.extend(_through_an_attribute(where, target, allowed))
    return errors


def _through_an_attribute(where: str, target: str, allowed: tuple[str, ...]) -> list[str]:
    """Refuse an allowed target that walks out of its package by attribute: Hydra resolves ``mypkg.torch.save``
    as ``getattr(mypkg, "torch").save`` when ``mypkg`` does ``import torch``, so a refused module reached
    below an allowed prefix is refused too, and so is a dunder (``mypkg.__builtins__``). Only the part below
    the longest allowed prefix is looked at: allowing ``mypkg.io`` by name admits a module of your own."""
    prefix = max((p for p in allowed if matches(target, p)), key=len)
    rest = target[len(prefix) :].lstrip(".").split(".") if target != prefix else []
    dunder = next((segment for segment in rest if segment.startswith("__")), None)
    if dunder is not None:
        return [
            f"{where}: `_target_` {target!r} goes through the private attribute `{dunder}`, which never builds "
            "a model. Nothing was imported."
        ]
    for index in range(len(rest)):
        below = ".".join(rest[index:])
        refused = next((p for p in ALWAYS_REFUSED if matches(below, p)), None)
        if refused is not None:
            module = ".".join([prefix, *rest[: index + 1]])
            return [
                f"{where}: `_target_` {target!r} reaches `{below}` through the allowed package `{prefix}` (a "
                f"module it imports?), and `{refused}` is refused: it can run commands, import code or touch "
                f"files. Nothing was imported. If `{module}` is a module of your own, allow it by name "
                f"(ckpt_target_allow = {module})."
            ]
    return []


def _resolve(target: str) -> Any:
    """What a dotted path names: the longest importable module, then attributes (as Hydra resolves it)."""
    import importlib

    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def resolved_errors(section: Any, allowed: Iterable[str], *, base: str = "$") -> list[str]:
    """After the by-name check, just before instantiation: what each ``_target_`` really is must be defined
    under an allowed prefix too. ``mypkg.make = torch.save`` or ``import torch as T`` (``mypkg.T.save``)
    pass any check of the name; the object's own ``__module__`` does not lie that way.

    Imports only modules under the allowed prefixes (the by-name check ran first); a target that cannot be
    resolved is left to Hydra, which reports it.
    """
    allowed = tuple(prefix for prefix in allowed if prefix)
    errors: list[str] = []
    for where, target in find_targets(section, base):
        if not isinstance(target, str):
            continue
        try:
            obj = _resolve(target)
        except (ImportError, AttributeError):
            continue
        module = getattr(obj, "__module__", None)
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
        defined = f"{module}.{name}" if module else ""
        refused = next((p for p in ALWAYS_REFUSED if module and (matches(module, p) or matches(defined, p))), None)
        if not module or refused is not None or not any(matches(module, prefix) for prefix in allowed):
            really = f"{where}: `_target_` {target!r} is really {defined or type(obj).__name__!r}"
            if refused is not None:
                errors.append(f"{really}, and `{refused}` is refused: it never builds a model. Nothing was called.")
            else:
                errors.append(
                    f"{really}, outside the allowed module prefixes. Nothing was called. If you trust it, allow its "
                    f"module (ckpt_target_allow = {module or target})."
                )
    return errors
