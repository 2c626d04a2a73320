"""Which import paths a config may name (``_target_``, ``class_path``), decided before anything is imported.

Hydra's own blocklist (hydra-core 1.3.8) stops ``os.system`` and friends but lets through callables that
write files (``builtins.open``, ``torch.save``, ``shutil.copyfile``...). A checkpoint's config is data from
disk, so we allow only module prefixes the user trusts (their model packages, the factory's package, and the
standard constructor namespaces of :data:`DEFAULT_ALLOWED`) and refuse a few that never build a model even
when a prefix would admit them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ckptgate.documents import json_path

# Allowed whatever the user configures: real configs name their optimizer and scheduler here
# (``model.optimizer._target_: torch.optim.AdamW``). The refusals below still win inside them.
DEFAULT_ALLOWED = ("torch.optim", "torch.optim.lr_scheduler", "torch.nn")

# The keys that name something to import and call: Hydra's ``_target_``, and jsonargparse's / LightningCLI's
# ``class_path`` (``{class_path: pkg.mod.Class, init_args: {...}}``).
TARGET_KEYS = ("_target_", "class_path")

# Never a model, whatever the allowlist says: process, file, import and network machinery.
ALWAYS_REFUSED = (
    "builtins",
    "os",
    "posix",  # os's C half: posix.system is os.system
    "nt",
    "sys",
    "subprocess",
    "shutil",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",  # where pickle.loads really lives
    "marshal",
    "ctypes",
    "socket",
    "webbrowser",
    "io",
    "_io",  # where io.FileIO really lives
    "pathlib",
    "code",
    "codeop",
    "pty",
    "timeit",
    "tempfile",
    "logging",
    "multiprocessing",
    # download, unpack to disk, unpickle (shelve), import or run what a string or file names
    "urllib",
    "http",
    "ftplib",
    "tarfile",
    "zipfile",
    "shelve",
    "pkgutil",  # pkgutil.resolve_name imports anything
    "pydoc",  # pydoc.locate imports anything
    "zipimport",
    "site",  # site.addsitedir runs the `import` lines of a folder's .pth files
    "cProfile",  # cProfile.run, pdb.run, doctest.testfile: run a string or a file as code
    "pdb",
    "doctest",
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
    "torch.ops",  # torch.ops.load_library(path) dlopens any shared library
    "torch.classes",  # torch.classes.load_library, the same
    "torch.distributed",  # opens sockets (init_process_group), runs functions on peers (rpc), launches processes
    # inside the default namespaces (audit of torch 2.13's torch/nn and torch/optim). These import the module a
    # string names (register_flash_attention_fa3(module_path=...), lazy_deprecated_import(new_module=...)) or
    # swap the attention kernels of the whole process; torch's other private names are refused by PRIVATE_REFUSED
    "torch.nn.attention._fa3",
    "torch.nn.attention._fa4",
    "torch.nn.attention._registry",
    "torch.nn.attention.register_flash_attention_impl",  # the same functions, re-exported with a public name
    "torch.nn.attention.activate_flash_attention_impl",
    "torch.nn.attention.restore_flash_attention_impl",
    "torch.nn.utils._deprecation_utils",
    # ... and these hook every module (optimizer) of the process: one config would change how every later
    # checkpoint's forward runs
    "torch.nn.modules.module.register_module_forward_pre_hook",
    "torch.nn.modules.module.register_module_forward_hook",
    "torch.nn.modules.module.register_module_backward_hook",
    "torch.nn.modules.module.register_module_full_backward_pre_hook",
    "torch.nn.modules.module.register_module_full_backward_hook",
    "torch.nn.modules.module.register_module_buffer_registration_hook",
    "torch.nn.modules.module.register_module_module_registration_hook",
    "torch.nn.modules.module.register_module_parameter_registration_hook",
    "torch.optim.optimizer.register_optimizer_step_pre_hook",
    "torch.optim.optimizer.register_optimizer_step_post_hook",
    # Lightning's loaders unpickle whatever file they are given (weights_only=False for a trusted checkpoint);
    # `mypkg.LitModel.load_from_checkpoint` reaches them from any LightningModule
    "lightning.pytorch.core.module.LightningModule.load_from_checkpoint",
    "lightning.pytorch.core.datamodule.LightningDataModule.load_from_checkpoint",
    "lightning.pytorch.core.saving",
    "lightning.fabric.utilities.cloud_io",
    "pytorch_lightning.core.module.LightningModule.load_from_checkpoint",
    "pytorch_lightning.core.datamodule.LightningDataModule.load_from_checkpoint",
    "pytorch_lightning.core.saving",
    "lightning_fabric.utilities.cloud_io",
    "hydra.utils.get_method",
    "hydra.utils.get_class",
    "hydra.utils.get_object",
    "hydra.utils.instantiate",
    "hydra.utils.call",
)

# Packages whose private names (a segment starting with `_`) are refused below them: torch keeps its code
# generators and loaders there (torch._inductor.codecache.PyCodeCache.load runs a source string, torch._ops
# loads shared libraries, torch.testing._internal runs shell commands), hydra its resolver (hydra._internal:
# `hydra.utils.call` is really hydra._internal.instantiate._instantiate2.instantiate). Never a model.
PRIVATE_REFUSED = ("torch", "hydra")

# Where a C kernel says it was defined is private; where torch exposes it is its home for the checks
# (``torch.nn.functional.gelu`` says ``torch._C._nn``, ``torch.tanh`` says ``torch._VariableFunctionsClass``).
# Each holds only tensor kernels.
NATIVE_HOMES = {
    "torch._C._nn": "torch.nn.functional",
    "torch._C._special": "torch.special",
    "torch._C._linalg": "torch.linalg",
    "torch._C._fft": "torch.fft",
}
NATIVE_CLASSES = {"torch": "_VariableFunctionsClass."}  # home -> the qualname prefix its kernels carry

# Why a refused prefix is refused, said after its name ("`os` can run commands...").
LISTED_WHY = "can run commands, import code or touch files, and never builds a model"
PRIVATE_WHY = "is a private part of its package, home of importers, code generators and loaders; never a model"


class Target(NamedTuple):
    """One import path a config names: its JSON path (ending in its key) and the value found there."""

    path: str
    value: Any

    @property
    def key(self) -> str:
        """``_target_`` or ``class_path``: which spelling the config used, for messages."""
        return self.path.rsplit(".", 1)[-1]


def matches(dotted: str, prefix: str) -> bool:
    """``prefix`` covers ``dotted`` on whole segments: ``pkg`` covers ``pkg.m.C`` but not ``pkgevil.C``."""
    return dotted == prefix or dotted.startswith(prefix + ".")


def refused_prefix(dotted: str) -> str | None:
    """What refuses ``dotted`` whatever is allowed: its entry of ALWAYS_REFUSED, or its first private part
    below a package of PRIVATE_REFUSED (``torch._inductor``); None when nothing does."""
    return _listed(dotted) or _private(dotted)


def _listed(dotted: str) -> str | None:
    return next((prefix for prefix in ALWAYS_REFUSED if matches(dotted, prefix)), None)


def _private(dotted: str) -> str | None:
    """``torch._inductor`` for ``torch._inductor.codecache.X`` (and for ``torch.nn.modules.module.torch._inductor.X``,
    torch reached again by attribute); None for a public name or another package."""
    parts = dotted.split(".")
    if parts[0] not in PRIVATE_REFUSED:
        return None
    index = next((i for i, part in enumerate(parts[1:], 1) if part.startswith("_")), None)
    if index is None:
        return None
    owner = max(i for i in range(index) if parts[i] in PRIVATE_REFUSED)
    return ".".join(parts[owner : index + 1])


def _why(refused: str) -> str:
    return LISTED_WHY if refused in ALWAYS_REFUSED else PRIVATE_WHY


def narrowest_prefix(target: str) -> str:
    """The prefix that admits ``target`` and nothing beside it: its module path (``torch.optim`` for
    ``torch.optim.AdamW``), so a hint never invites allowing a whole top-level package."""
    return target.rpartition(".")[0] or target


def find_targets(section: Any, path: str = "$") -> list[Target]:
    """Every ``_target_`` and ``class_path`` value in a config tree, with its JSON path (Hydra and jsonargparse
    instantiate nested ones too)."""
    found: list[Target] = []
    if isinstance(section, Mapping):
        for key, value in section.items():
            child = json_path(path, key)
            if key in TARGET_KEYS:
                found.append(Target(child, value))
            else:
                found.extend(find_targets(value, child))
    elif isinstance(section, list):
        for index, value in enumerate(section):
            found.extend(find_targets(value, f"{path}[{index}]"))
    return found


def find_interpolations(section: Any, path: str = "$") -> list[tuple[str, str]]:
    """Every string value in a config tree that holds an OmegaConf interpolation (``${...}``), with its path
    (``_target_`` and ``class_path`` values are left to :func:`target_errors`, which refuses them by name)."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, section)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            if "${" in node:
                found.append((where, node))
        elif isinstance(node, Mapping):
            stack.extend(
                (json_path(where, key), value) for key, value in reversed(list(node.items())) if key not in TARGET_KEYS
            )
        elif isinstance(node, list):
            stack.extend((f"{where}[{index}]", value) for index, value in reversed(list(enumerate(node))))
    return found


def target_errors(section: Any, allowed: Iterable[str], *, base: str = "$") -> list[str]:
    """Messages for every ``_target_`` / ``class_path`` outside the allowed prefixes; [] when all are allowed.

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
    for found in find_targets(section, base):
        errors.extend(name_errors(found, allowed))
    return errors


def name_errors(found: Target, allowed: Iterable[str]) -> list[str]:
    """What is wrong with one target's name ([] when it is allowed), decided without importing anything.
    For a target found outside a section: ``name_errors(Target("$._class_path", path), allowed)``."""
    allowed = tuple(prefix for prefix in allowed if prefix)
    where, target, key = found.path, found.value, found.key
    if not isinstance(target, str):
        return [f"{where}: `{key}` must be a dotted import path string, found {type(target).__name__}"]
    if "${" in target:
        return [
            f"{where}: `{key}` {target!r} is an interpolation: what it names would be known only when the model "
            "is built, after this check. Nothing was imported."
        ]
    refused = refused_prefix(target)
    if refused is not None:
        return [f"{where}: `{key}` {target!r} is refused: `{refused}` {_why(refused)}. Nothing was imported."]
    if not any(matches(target, prefix) for prefix in allowed):
        shown = ", ".join(allowed) if allowed else "none configured"
        narrow = narrowest_prefix(target)
        return [
            f"{where}: `{key}` {target!r} is outside the allowed module prefixes ({shown}). Nothing was imported. "
            f"If you trust it, add `ckpt_target_allow = {narrow}` to your pytest ini or pass "
            f"--ckpt-target-allow {narrow}."
        ]
    return _through_an_attribute(found, allowed)


def _through_an_attribute(found: Target, allowed: tuple[str, ...]) -> list[str]:
    """Refuse an allowed target that walks out of its package by attribute: Hydra resolves ``mypkg.torch.save``
    as ``getattr(mypkg, "torch").save`` when ``mypkg`` does ``import torch``, so a refused module reached
    below an allowed prefix is refused too, and so is a dunder (``mypkg.__builtins__``). Only the part below
    the longest allowed prefix is looked at: allowing ``mypkg.io`` by name admits a module of your own."""
    where, target, key = found.path, found.value, found.key
    prefix = max((p for p in allowed if matches(target, p)), key=len)
    rest = target[len(prefix) :].lstrip(".").split(".") if target != prefix else []
    dunder = next((segment for segment in rest if segment.startswith("__")), None)
    if dunder is not None:
        return [
            f"{where}: `{key}` {target!r} goes through the private attribute `{dunder}`, which never builds "
            "a model. Nothing was imported."
        ]
    for index in range(len(rest)):
        below = ".".join(rest[index:])
        refused = refused_prefix(below)
        if refused is not None:
            module = ".".join([prefix, *rest[: index + 1]])
            return [
                f"{where}: `{key}` {target!r} reaches `{below}` through the allowed package `{prefix}` (a "
                f"module it imports?), and `{refused}` is refused: it {_why(refused)}. Nothing was imported. If "
                f"`{module}` is a module of your own, allow it by name (ckpt_target_allow = {module})."
            ]
    return []


def resolve(target: str) -> Any:
    """What a dotted path names, resolved as Hydra resolves it (``hydra._internal.utils._locate``): import the
    first segment, then take attributes, importing a submodule only where an attribute is missing."""
    import importlib
    from types import ModuleType

    parts = target.split(".")
    if not all(parts):
        raise ImportError(f"{target!r} is not a dotted import path")
    obj: Any = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], 2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if not isinstance(obj, ModuleType):
                raise
            obj = importlib.import_module(".".join(parts[:index]))
    return obj


def resolved_errors(section: Any, allowed: Iterable[str], *, base: str = "$") -> list[str]:
    """After the by-name check, just before instantiation: what each target really is must be defined under an
    allowed prefix too. ``mypkg.make = torch.save`` or ``import torch as T`` (``mypkg.T.save``) pass any
    check of the name; the object's own ``__module__`` does not lie that way.

    Imports only modules under the allowed prefixes (the by-name check ran first); a target that cannot be
    resolved is left to the builder (Hydra, jsonargparse), which reports it.
    """
    return [error for found in find_targets(section, base) for error in defined_errors(found, allowed)]


def defined_errors(found: Target, allowed: Iterable[str]) -> list[str]:
    """:func:`resolved_errors` for one target: [] when it is defined inside the allowed prefixes, or cannot be
    resolved. Run :func:`name_errors` first: this imports what the name names."""
    if not isinstance(found.value, str):
        return []
    try:
        obj = resolve(found.value)
    except Exception:  # anything an import can raise: the builder imports it again and reports it
        return []
    allowed = tuple(prefix for prefix in allowed if prefix)
    home, defined = _where_defined(obj)
    refused = (refused_prefix(home) or refused_prefix(defined)) if home else None
    if home and refused is None and any(matches(home, prefix) for prefix in allowed):
        return []
    really = f"{found.path}: `{found.key}` {found.value!r} is really {defined or type(obj).__name__!r}"
    if refused is not None:
        return [f"{really}, and `{refused}` is refused: it {_why(refused)}. Nothing was called."]
    return [
        f"{really}, outside the allowed module prefixes. Nothing was called. If you trust it, allow its module "
        f"(ckpt_target_allow = {home or narrowest_prefix(found.value)})."
    ]


def _where_defined(obj: Any) -> tuple[str | None, str]:
    """The module an object says it was defined in and its full dotted name there (a C kernel's public home,
    see NATIVE_HOMES); (None, "") for an object that names no module."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or not module:
        return None, ""
    name = str(getattr(obj, "__qualname__", getattr(obj, "__name__", "")))
    home = NATIVE_HOMES.get(module, module)
    kernels = NATIVE_CLASSES.get(home)
    return home, f"{home}.{name.removeprefix(kernels) if kernels else name}"
