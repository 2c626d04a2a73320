"""What every way of building a model has in common: the section it builds from, and one interface.

A route turns a resolved config into an untrained ``torch.nn.Module``. It says which part of the config it
builds from (:meth:`Route.section`), what it can check before anything is built (:meth:`Route.problems`),
and how it builds (:meth:`Route.build`). ``ckptgate.routes.choose`` picks one per config, in one place.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ckptgate.errors import CheckError, describe_exception

if TYPE_CHECKING:
    from ckptgate.configs import ResolvedConfig
    from ckptgate.discovery import CheckpointRecord


class SpecError(ValueError):
    """An option naming code (``module:attribute``) is malformed, or names nothing there: a usage error."""


class SetupError(CheckError):
    """The code a setting names cannot be imported or used: a fault of the session's settings, not of any
    checkpoint. The pytest layer stops the session on it (usage error) rather than fail every checkpoint."""


@dataclass(frozen=True)
class Section:
    """What a route builds a model from.

    ``args`` is the model section (factory, hook, instantiate) or the LightningModule's ``__init__`` arguments
    (lightning); ``path`` is where ``args`` sits in the config document, for messages (``$.model``,
    ``$.model.init_args``, ``$``); ``class_path`` is a class the config itself records (LightningCLI's
    ``class_path``, the ``_class_path`` of stored hyper_parameters), checked like a ``_target_``.
    """

    args: dict[str, Any]
    path: str
    class_path: str | None = None
    class_path_at: str | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a build may look at besides the section."""

    checkpoint: CheckpointRecord | None
    rootdir: Path
    allowed: tuple[str, ...] = ()
    stored: Mapping[str, Any] | None = field(default=None, repr=False)  # the object torch.save wrote, if read


class Route(Protocol):
    """One way of building a model from a config."""

    name: str  # "factory", "lightning", "instantiate": recorded with every verdict
    reusable: bool  # a model built from a section may serve every checkpoint with an equal section

    def section(self, resolved: ResolvedConfig) -> Section:
        """The part of the config this route builds from; raises ``CheckError`` when there is none."""
        ...

    def problems(self, section: Section, context: BuildContext) -> list[str]:
        """What is wrong with the section for this route, found before anything is built."""
        ...

    def build(self, section: Section, context: BuildContext) -> tuple[Any, str]:
        """The untrained model and a phrase saying how it was built (for every message)."""
        ...

    def prepare_weights(self, model: Any, stored: Any, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        """The weights to load into ``model`` (a route may let the model adapt them, as Lightning does)."""
        ...

    def loads_whole_state_dict(self) -> bool:
        """True when the model is the whole trained module: every key of the checkpoint must fit it."""
        ...


def parse_spec(spec: str, option: str, example: str) -> tuple[str, str]:
    """``module:attribute`` (``mypkg.models:build_model``); a malformed spec is a usage error naming the option
    and its form, spelled as the example spells it (``module:callable``, ``module:Class``)."""
    module, sep, attribute = spec.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not sep or not module or not attribute or not all(part.isidentifier() for part in parts):
        form = "module:Class" if example.rpartition(":")[2][:1].isupper() else "module:callable"
        raise SpecError(f"{option} {spec!r}: expected `{form}`, e.g. `{example}`")
    return module, attribute


def ensure_importable_from(rootdir: Path) -> None:
    """Model code is imported from the rootdir too, as a user's ``python -c 'import mypkg'`` there would."""
    entry = str(rootdir)
    if entry not in sys.path:
        sys.path.append(entry)


def import_spec(spec: str, option: str, what: str, rootdir: Path) -> Any:
    """Import what ``module:attribute`` names; errors say which option named it and where Python looked."""
    module_name, attribute = spec.partition(":")[::2]  # parsed when the option was read
    ensure_importable_from(rootdir)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise SetupError(
            f"cannot import {what} {spec!r} ({option}): {describe_exception(exc)}. It must be importable from the "
            f"rootdir ({rootdir}), pytest's `pythonpath` ini option or PYTHONPATH."
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SetupError(f"{what} {spec!r} ({option}): module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def locate_spec(spec: str, option: str, what: str, rootdir: Path) -> None:
    """Check, without importing anything (no model code, no torch), that ``module:attribute`` names a module
    Python can find and a name its source defines at the top; raises :class:`SpecError` naming the option.

    A typo in a setting is then one usage error at start-up, not a failure of every checkpoint. What only an
    import can tell (the module raises, a name made at run time) is left to the import, at the first build.
    """
    import ast
    import importlib.machinery

    module_name, attribute = spec.partition(":")[::2]
    where = [*sys.path, str(rootdir)]
    found = None
    for depth, part in enumerate(module_name.split(".")):
        try:
            found = importlib.machinery.PathFinder.find_spec(part if depth == 0 else f"{found.name}.{part}", where)
        except (ImportError, ValueError):
            found = None
        if found is None:
            if module_name in sys.modules:  # made by a plugin or conftest at run time: the import will tell
                return
            raise SpecError(
                f"{option} {spec!r}: no module {module_name!r} importable from the rootdir ({rootdir}), pytest's "
                "`pythonpath` ini option or PYTHONPATH"
            )
        where = list(found.submodule_search_locations or [])
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return  # a compiled or namespace module: the import will tell
    try:
        tree = ast.parse(Path(found.origin).read_text("utf-8"))
    except (OSError, SyntaxError, ValueError):
        return  # the import will say what is wrong with it, with its traceback
    first = attribute.split(".")[0]
    if first not in _top_level_names(tree):
        raise SpecError(
            f"{option} {spec!r}: module {module_name!r} ({found.origin}) defines no {first!r} at its top level (the "
            f"{what} the option names)"
        )


def _top_level_names(tree: Any) -> set[str] | frozenset[str]:
    """Names a module binds at its top level; everything (a wildcard) when it may bind any."""
    import ast

    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return _Everything()
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):  # conditional definitions
            nested = _top_level_names(ast.Module(body=_nested_body(node), type_ignores=[]))
            if isinstance(nested, _Everything):
                return nested
            names.update(nested)
    if "__getattr__" in names:
        return _Everything()
    return names


def _nested_body(node: Any) -> list[Any]:
    body = list(getattr(node, "body", []))
    body += getattr(node, "orelse", []) + getattr(node, "finalbody", [])
    for handler in getattr(node, "handlers", []):
        body += handler.body
    return body


class _Everything(frozenset):
    """A module with ``from x import *`` or ``__getattr__`` may define any name."""

    def __contains__(self, item: object) -> bool:
        return True


def check_module(model: Any, how: str) -> Any:
    """A route must give a ``torch.nn.Module``; anything else is the route's failure, named."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CheckError(f"{how} returned {type(model).__name__}, not a torch.nn.Module")
    return model


class ModelSectionRoute:
    """What the routes that build from the config's ``model`` section share: they check nothing beyond the
    schema, load the weights under the wrapper's prefix (``model.``), and leave the state dict as it is."""

    name: str
    reusable: bool = True  # built from the section alone: one model serves every checkpoint with that section
    hint: str = ""  # said when a config has no `model` section

    def section(self, resolved: ResolvedConfig) -> Section:
        return model_section(resolved, self.hint)

    def problems(self, section: Section, context: BuildContext) -> list[str]:
        return []

    def prepare_weights(self, model: Any, stored: Any, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        return state_dict

    def loads_whole_state_dict(self) -> bool:
        return False


def model_section(resolved: ResolvedConfig, hint: str) -> Section:
    """The document's ``model`` section (``model`` or ``<key>.model``): what factories and Hydra build from."""
    if resolved.model_key is None:
        keys = ", ".join(map(str, list(resolved.data)[:10])) or "none"
        raise CheckError(
            f"$.model: {resolved.where} has no `model` section (top-level keys: {keys}); inference needs one to "
            f"rebuild the network. {hint}"
        )
    section = resolved.model
    assert section is not None
    return Section(dict(section), f"$.{resolved.model_key}")
