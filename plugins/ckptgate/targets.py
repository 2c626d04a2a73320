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


def target_errors(section: Any, allowed: Iterable[str], *, base: str = "$") -> list[str]:
    """Messages for every ``_target_`` outside the allowed prefixes; [] when all are allowed."""
    allowed = tuple(prefix for prefix in allowed if prefix)
    errors: list[str] = []
    for where, target in find_targets(section, base):
        if not isinstance(target, str):
            errors.append(f"{where}: `_target_` must be a dotted import path string, found {type(target).__name__}")
            continue
        refused = next((prefix for prefix in ALWAYS_REFUSED if matches(target, prefix)), None)
        if refused is not None:
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
    return errors
