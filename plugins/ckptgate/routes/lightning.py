"""A LightningModule, rebuilt the way ``Class.load_from_checkpoint`` rebuilds it: ``Class(**hparams)``.

The arguments are the checkpoint's own ``hyper_parameters``, a logger's ``hparams.yaml`` (flat, as
``save_hyperparameters()`` records them), or LightningCLI's ``config.yaml`` (``model: {class_path,
init_args}`` in subclass mode, the arguments themselves under ``model:`` otherwise). The class is the one
``--ckpt-lightning-module`` names, or the ``class_path`` the config records (inside the allowed packages; a
subclass of the option's class when both are given). The whole ``state_dict`` must then fit the module
strictly, so EMA, SWA and auxiliary submodules count, as they do for Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptgate import targets
from ckptgate.errors import CheckError, describe_exception
from ckptgate.routes import signature
from ckptgate.routes.protocol import BuildContext, Section, SetupError, check_module, import_spec, parse_spec

OPTION = "--ckpt-lightning-module / ckpt_lightning_module"
# Keys Lightning adds to a LightningCLI module's hyperparameters: not arguments of the module.
LIGHTNING_KEYS = ("_instantiator", "_class_path")
# Whole-run documents whose arguments are the module's own (flat ``save_hyperparameters``).
FLAT_KINDS = ("hparams", "checkpoint")
# The base classes whose hooks do nothing: a hook defined only there is not the user's.
_LIGHTNING_MODULES = ("lightning.pytorch.", "pytorch_lightning.", "lightning.fabric.", "lightning_fabric.")


def parse_module_spec(spec: str) -> tuple[str, str]:
    return parse_spec(spec, "--ckpt-lightning-module", "mypkg.models:LitModel")


def dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _overridden(model: Any, hook: str) -> bool:
    """True when ``hook`` is defined by the user's class, not only by Lightning's base classes."""
    for klass in type(model).__mro__:
        if hook in vars(klass):
            return not klass.__module__.startswith(_LIGHTNING_MODULES)
    return False


@dataclass
class LightningRoute:
    """``spec`` is ``--ckpt-lightning-module``; None when the class comes from the config's ``class_path``."""

    spec: str | None
    name: str = "lightning"
    reusable: bool = True
    _classes: dict[str, type] = field(default_factory=dict, repr=False)

    # -- what it builds from ----------------------------------------------------------------------------
    def section(self, resolved: Any) -> Section:
        data = resolved.data
        if resolved.kind in FLAT_KINDS:  # Lightning's own record of __init__'s arguments
            args = {key: value for key, value in data.items() if key not in LIGHTNING_KEYS}
            recorded = data.get("_class_path")
            return Section(args, "$", recorded if isinstance(recorded, str) else None, "$._class_path")
        if resolved.model_key is None:
            keys = ", ".join(map(str, list(data)[:10])) or "none"
            raise CheckError(
                f"$.model: {resolved.where} has no `model` section (top-level keys: {keys}); a LightningModule is "
                "built from the arguments under `model:` (LightningCLI's config.yaml), or from a logger's flat "
                "hparams.yaml or the checkpoint's hyper_parameters"
            )
        model, base = resolved.model, f"$.{resolved.model_key}"
        if isinstance(model.get("class_path"), str):  # LightningCLI's subclass mode
            init = model.get("init_args") or {}
            if not isinstance(init, Mapping):
                raise CheckError(f"{base}.init_args: expected a mapping of arguments, found {type(init).__name__}")
            return Section(dict(init), f"{base}.init_args", model["class_path"], f"{base}.class_path")
        if isinstance(model.get("_target_"), str):  # a Hydra-style section naming the module
            rest = {name: value for name, value in model.items() if name != "_target_"}
            return Section(rest, base, model["_target_"], f"{base}._target_")
        return Section(dict(model), base)

    # -- which class --------------------------------------------------------------------------------------
    def module_class(self, section: Section, context: BuildContext) -> type:
        base = self._option_class(context) if self.spec else None
        if section.class_path is None:
            if base is None:
                raise CheckError(
                    "cannot build the LightningModule: the config records no class_path; set --ckpt-lightning-module "
                    "pkg.module:Class (ckpt_lightning_module)"
                )
            return base
        recorded = self._recorded_class(section, context)
        if base is not None and not issubclass(recorded, base):
            if (section.class_path_at or "").endswith("._target_"):  # a Hydra section naming a network
                raise CheckError(
                    f"{section.class_path_at}: the model section builds {section.class_path!r}, not a subclass of "
                    f"{self.spec}: it describes the network, not the LightningModule's arguments. Build such "
                    "configs with --ckpt-model-factory (a callable that receives the model section)"
                )
            raise CheckError(
                f"{section.class_path_at}: the config records the class {section.class_path!r}, which is not a "
                f"subclass of {self.spec} ({OPTION}); the config belongs to another model"
            )
        return recorded

    def _option_class(self, context: BuildContext) -> type:
        return self.option_class(context.rootdir)

    def option_class(self, rootdir: Path) -> type:
        """The class ``--ckpt-lightning-module`` names, imported once."""
        assert self.spec is not None
        cls = self._classes.get(self.spec)
        if cls is None:
            cls = import_spec(self.spec, OPTION, "LightningModule", rootdir)
            if not isinstance(cls, type):
                raise SetupError(
                    f"LightningModule {self.spec!r} ({OPTION}) is not a class (it is a {type(cls).__name__})"
                )
            self._classes[self.spec] = cls
        return cls

    def _recorded_class(self, section: Section, context: BuildContext) -> type:
        """The class a config names, after its real definition is checked against the allowed packages."""
        path = section.class_path
        assert path is not None
        found = targets.Target(section.class_path_at or "$.class_path", path)
        refused = targets.name_errors(found, context.allowed) or targets.defined_errors(found, context.allowed)
        if refused:
            raise CheckError(f"refused to build the model: {refused[0]}")
        try:
            cls = targets.resolve(path)
        except Exception as exc:
            raise CheckError(
                f"{section.class_path_at}: cannot import the recorded class {path!r}: {describe_exception(exc)}. It "
                f"must be importable from the rootdir ({context.rootdir}), pytest's `pythonpath` ini option or "
                "PYTHONPATH."
            ) from None
        if not isinstance(cls, type):
            raise CheckError(f"{section.class_path_at}: {path!r} is not a class")
        return cls

    # -- checks before building ---------------------------------------------------------------------------
    def problems(self, section: Section, context: BuildContext) -> list[str]:
        try:
            cls = self.module_class(section, context)
        except SetupError:
            raise
        except CheckError as exc:
            return [exc.message]
        args = self.arguments(section, cls, None)
        return signature.problems(cls, args, section.path, cls.__qualname__)

    def arguments(self, section: Section, cls: type, stored: Mapping[str, Any] | None) -> dict[str, Any]:
        """``__init__``'s keyword arguments, as Lightning's ``_load_state`` makes them: hyperparameters saved from a
        single object (``save_hyperparameters(cfg)``) are passed as that one argument."""
        named, varkw = signature.parameters(cls)
        name = stored.get("hparams_name") if isinstance(stored, Mapping) else None
        if not (isinstance(name, str) and name in named):
            name = self._single_argument(section.args, named, varkw)
        if name is None:
            return dict(section.args)
        from omegaconf import OmegaConf

        return {name: OmegaConf.create(dict(section.args))}

    @staticmethod
    def _single_argument(args: Mapping[str, Any], named: dict[str, Any], varkw: bool) -> str | None:
        """``hparams.yaml`` of ``save_hyperparameters(cfg)`` is ``cfg``'s content: when the keys are not the
        arguments and exactly one argument is required, the whole mapping is that argument."""
        if varkw or all(key in named for key in args):
            return None
        required = [name for name, parameter in named.items() if parameter.default is parameter.empty]
        return required[0] if len(required) == 1 and required[0] not in args else None

    # -- building -----------------------------------------------------------------------------------------
    def build(self, section: Section, context: BuildContext) -> tuple[Any, str]:
        cls = self.module_class(section, context)
        how = f"LightningModule {dotted(cls)} (built as load_from_checkpoint does)"
        kwargs = self.arguments(section, cls, context.stored)
        named, varkw = signature.parameters(cls)
        if not varkw:  # Lightning drops what __init__ does not take
            kwargs = {key: value for key, value in kwargs.items() if key in named}
        try:
            model = self._instantiate(cls, kwargs, section, context)
            if _overridden(model, "configure_model"):
                model.configure_model()
        except CheckError:
            raise
        except Exception as exc:
            raise CheckError(f"building the model as {how} failed: {describe_exception(exc)}") from None
        return check_module(model, how), how

    @staticmethod
    def _instantiate(cls: type, kwargs: dict[str, Any], section: Section, context: BuildContext) -> Any:
        """LightningCLI modules (their hyperparameters record its ``_instantiator``) are built by jsonargparse,
        which also builds the nested ``class_path`` objects they were given; others by ``cls(**kwargs)``."""
        stored_hparams = context.stored.get("hyper_parameters") if isinstance(context.stored, Mapping) else None
        recorded = stored_hparams.get("_instantiator") if isinstance(stored_hparams, Mapping) else None
        nested = any(isinstance(value, Mapping) and "class_path" in value for value in kwargs.values())
        if recorded is None and not nested:
            return cls(**kwargs)
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "module", fail_untyped=False)
        parsed = parser.parse_object({"module": kwargs})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
        return instantiate(parsed).module

    def prepare_weights(self, model: Any, stored: Any, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        """Lightning calls ``on_load_checkpoint`` before loading (a module may rename keys there); on a copy."""
        if not isinstance(stored, Mapping) or not _overridden(model, "on_load_checkpoint"):
            return state_dict
        copy = {**stored, "state_dict": dict(state_dict)}
        try:
            model.on_load_checkpoint(copy)
        except Exception as exc:
            raise CheckError(f"{type(model).__name__}.on_load_checkpoint failed: {describe_exception(exc)}") from None
        return copy["state_dict"]

    def loads_whole_state_dict(self) -> bool:
        return True
