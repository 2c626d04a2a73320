"""The gate's data flow for one checkpoint: resolve config -> validate -> build -> load -> forward.

Each stage runs at most once per checkpoint (and device) per process and remembers its outcome, so
every check can be asked in any order, on any xdist worker, and gives the same answer. A stage whose
prerequisite failed fails with a pointer to that root cause instead of running.

The expensive work is done once: a checkpoint is read once per process (the cuda check copies the
weights the cpu check read), and a model is built once per distinct model section and device, then
reused for every checkpoint that shares the section (a run's best/last/best-vN): loading strictly
replaces every parameter and buffer, so the reused model holds exactly the new checkpoint's weights.
"""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ckptgate import agreement, configs, devices, forward, loading, offline, pins, schema, sharding, stored, targets
from ckptgate.discovery import CheckpointRecord, Discovery, discover, sharded_message
from ckptgate.documents import find_unloaded
from ckptgate.errors import CheckError, describe_exception, first_line
from ckptgate.routes import BuildContext, Route, Router, Section
from ckptgate.routes import hook as hook_route
from ckptgate.routes.protocol import SetupError


class Check(str, enum.Enum):
    """The checks, in dependency order; the value names the test function ``test_<value>``."""

    CONFIG_PRESENT = "config_present"
    CONFIG_SCHEMA = "config_schema"
    WEIGHTS_LOAD = "weights_load"
    FORWARD = "forward"

    @property
    def test_name(self) -> str:
        return f"test_{self.value}"


@dataclass(frozen=True)
class Failure:
    """Why a check failed for a checkpoint: the root cause of every later failure too."""

    check: Check
    message: str
    setup: bool = False  # the settings' fault (code an option names cannot be used), not the checkpoint's


class CheckFailed(CheckError):
    """A check failed, either itself (``root.check == check``) or because an earlier one did."""

    def __init__(self, check: Check, root: Failure, relpath: str) -> None:
        self.check, self.root, self.relpath = check, root, relpath
        if root.check is check:
            text = root.message
        else:
            text = f"blocked by {root.check.test_name}[{relpath}]: {first_line(root.message)}"
        super().__init__(text)

    @property
    def is_root(self) -> bool:
        return self.root.check is self.check


@dataclass(frozen=True)
class GateSettings:
    """Everything the gate needs to know, already validated (see ``plugin.settings_from``)."""

    outputs_dir: Path
    rootdir: Path
    device: str = "auto"
    schema_path: Path | None = None
    model_factory: str | None = None
    lightning_module: str | None = None  # pkg.mod:Class, built as load_from_checkpoint builds it
    input_shape: tuple[int, ...] = forward.DEFAULT_INPUT_SHAPE
    forward_kwargs: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs passed to every forward call
    trust_pickle: bool = False
    target_allow: tuple[str, ...] = ()
    safe_globals: tuple[str, ...] = ()
    hparams_ignore: tuple[str, ...] = ()  # more keys that only train the model (see agreement.DEFAULT_IGNORED)
    shard: tuple[int, int] | None = None  # (K, N): only the checkpoints of shard K of N
    select: tuple[str, ...] = ()  # globs on the relative path: only the checkpoints matching one
    allow_empty: bool = False  # an outputs dir without checkpoints passes
    patterns: tuple[str, ...] = ("*.ckpt",)  # file (or folder) names that are checkpoints
    pins_file: Path | None = None  # --ckpt-pins: what each checkpoint computes, compared on every forward check
    pins_update: bool = False  # --ckpt-pins-update: take the pins (nothing is compared)
    pin_rtol: float = pins.DEFAULT_RTOL
    pin_atol: float = pins.DEFAULT_ATOL
    command: str = "pytest"  # how the checks were run (`pytest --pyargs ckptgate.checks`), for hints

    @property
    def fix_hint(self) -> str:
        """What recovers a missing config, in the user's own command."""
        return f"run `{self.command} --fix` to recover it"

    @property
    def allowed_targets(self) -> tuple[str, ...]:
        """The standard constructor namespaces, the user's prefixes, and the packages of the factory and of the
        LightningModule (their own code is trusted already)."""
        allowed = [*targets.DEFAULT_ALLOWED, *self.target_allow]
        for spec in (self.model_factory, self.lightning_module):
            if spec:
                allowed.append(spec.split(":")[0].split(".")[0])
        return tuple(dict.fromkeys(allowed))

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        return agreement.DEFAULT_IGNORED + self.hparams_ignore


@dataclass(frozen=True)
class ValidConfig:
    """A config whose model section passed the schema, target and route checks."""

    resolved: configs.ResolvedConfig
    route: Route
    section: Section

    @property
    def model(self) -> dict[str, Any]:
        """What the model is built from: the model section, or a LightningModule's arguments."""
        return self.section.args


@dataclass
class LoadedModel:
    """A model with the checkpoint's weights loaded strictly, on one device."""

    model: Any
    checkpoint: Any  # the object torch.save wrote (memory-mapped tensors)
    report: loading.LoadReport
    how: str  # how the model was built, for messages
    device: Any
    route: str = ""  # the route that built it ("lightning", "factory", "instantiate", "hook")

    def describe(self) -> str:
        ignored = f"; ignored {len(self.report.ignored)} keys outside it" if self.report.ignored else ""
        prefix = f"prefix {self.report.prefix!r}" if self.report.prefix else "no prefix"
        return f"{self.report.loaded} tensors loaded strictly into {self.how} ({prefix}{ignored})"


@dataclass
class _BuiltModel:
    """A model built for one model section on one device, reused by the checkpoints that share the section."""

    model: Any
    how: str
    route: str


_MISSING = object()


@dataclass
class Gate:
    """One process's view of the outputs tree; cheap results are kept, models only for the latest ones."""

    settings: GateSettings
    hook: Any = None  # pytest's hook relay (``config.hook``), or None outside pytest
    keep_models: int = 2  # cpu + cuda of the checkpoint under test: memory stays one model deep
    keep_built: int = 1  # built models kept for reuse, per device: the latest model section's
    recovery_notes: dict[str, str] = field(default_factory=dict)  # relpath -> what --fix found
    router: Router = field(init=False, repr=False)
    _discovery: Discovery | None = field(default=None, repr=False)
    _schema: schema.SchemaChecker | None = field(default=None, repr=False)
    _outcomes: dict[tuple[str, Check, str], Any] = field(default_factory=dict, repr=False)
    _models: OrderedDict[tuple[str, str], LoadedModel] = field(default_factory=OrderedDict, repr=False)
    _built: OrderedDict[tuple[str, str], _BuiltModel] = field(default_factory=OrderedDict, repr=False)
    _problems: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    _last_read: tuple[str, Any] | None = field(default=None, repr=False)  # (relpath, what read() returned)
    _routes_used: dict[str, str] = field(default_factory=dict, repr=False)  # relpath -> how it was built
    _setup: Failure | None = field(default=None, repr=False)  # the settings' fault, once met: every later check
    _pins: dict[str, pins.Pin] | None = field(default=None, repr=False)  # the pins file's, read once
    pin_status: dict[str, str] = field(default_factory=dict, repr=False)  # "relpath@device" -> pins.PINNED...
    pins_taken: dict[str, pins.Pin] = field(default_factory=dict, repr=False)  # "relpath@device" -> this run's
    builds: int = field(default=0, repr=False)  # models built so far (for tests and benchmarks)
    discovered: int = field(default=0, repr=False)  # checkpoints under the outputs dir, before selection
    selected: int = field(default=0, repr=False)  # of them, matching --ckpt-select (before sharding)

    def __post_init__(self) -> None:
        configs.clear_cache()  # folder listings are per session: files change between sessions
        self.router = Router(self.settings.lightning_module, self.settings.model_factory)

    # -- discovery ------------------------------------------------------------------------------------
    def discovery(self) -> Discovery:
        """The checkpoints this process checks (this shard's, with --ckpt-shard), found once."""
        if self._discovery is None:
            found = discover(self.settings.outputs_dir, self.settings.patterns)
            self.discovered = len(found.checkpoints)
            if self.settings.select:
                globs = self.settings.select
                found.checkpoints = [c for c in found.checkpoints if any(fnmatchcase(c.relpath, g) for g in globs)]
            self.selected = len(found.checkpoints)
            if self.settings.shard is not None:
                index, count = self.settings.shard
                found.checkpoints = [c for c in found.checkpoints if sharding.shard_of(c.relpath, count) == index]
            self._discovery = found
        return self._discovery

    def known_config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig | None:
        """The config this process already resolved for ``ckpt`` (for reports), without resolving it."""
        outcome = self._outcomes.get((ckpt.relpath, Check.CONFIG_PRESENT, ""))
        return outcome if isinstance(outcome, configs.ResolvedConfig) else None

    def known_route(self, ckpt: CheckpointRecord) -> str | None:
        """How this process built the model of ``ckpt`` (``LightningModule pkg.Lit (...)``), if it did."""
        return self._routes_used.get(ckpt.relpath)

    @property
    def schema_checker(self) -> schema.SchemaChecker:
        if self._schema is None:
            self._schema = schema.SchemaChecker(self.settings.schema_path)
        return self._schema

    # -- memoized stages ------------------------------------------------------------------------------
    def _stage(self, ckpt: CheckpointRecord, check: Check, device: str, run: Any) -> Any:
        key = (ckpt.relpath, check, device)
        outcome = self._outcomes.get(key, _MISSING)
        if outcome is _MISSING and self._setup is not None and check is not Check.CONFIG_PRESENT:
            outcome = self._setup  # the code a setting names cannot be used: nothing to try again
        if outcome is _MISSING:
            try:
                outcome = run()
            except CheckFailed as exc:  # a prerequisite failed: remember its root cause
                outcome = exc.root
            except SetupError as exc:
                outcome = self._setup = Failure(check, exc.message, setup=True)
            except CheckError as exc:
                outcome = Failure(check, exc.message)
            self._outcomes[key] = outcome
        if isinstance(outcome, Failure):
            raise CheckFailed(check, outcome, ckpt.relpath)
        return outcome

    def config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig:
        """Stage 1: a config was found and read (a file around the checkpoint, or its own hyperparameters)."""

        def run() -> configs.ResolvedConfig:
            try:
                return self.find_config(ckpt)
            except (configs.ConfigNotFound, configs.AmbiguousConfig) as exc:
                note = self.recovery_notes.get(ckpt.relpath)
                if note is None and isinstance(exc, configs.ConfigNotFound) and not exc.hint:
                    note = self.settings.fix_hint  # in the command the user ran
                raise exc if note is None else exc.with_hint(note) from None

        return self._stage(ckpt, Check.CONFIG_PRESENT, "", run)

    def find_config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig:
        """The config of ``ckpt``, not remembered (``--fix`` asks which checkpoints have none): the files around
        it (:func:`ckptgate.configs.resolve_config`), else the hyperparameters stored in it. Among several run
        logs that could be its config, the one that agrees with the checkpoint's own hyperparameters."""
        try:
            return configs.resolve_config(
                ckpt, self.settings.outputs_dir, usable=lambda found: self.unbuildable(found) is None
            )
        except configs.SeveralConfigs as several:
            definitions = [self.definition(resolved) for resolved in several.found]
            return agreement.choose(
                several.found,
                definitions,
                lambda: self.stored_definition(ckpt),
                relpath=ckpt.relpath,
                stem=ckpt.stem,
                command=self.settings.command,
            )
        except configs.ConfigNotFound as missing:
            try:
                own = self.stored_config(ckpt)
            except CheckError as exc:
                raise missing.with_hint(
                    f"and its own hyper_parameters cannot be read: the file {first_line(exc.message, 160)}"
                ) from None
            why = "none stored" if own is None else self.unbuildable(own)
            if why is not None:
                hint = self.settings.fix_hint
                raise missing.with_hint(hint, f"the checkpoint's hyper_parameters ({why})") from None
            assert own is not None
            return own

    def stored_config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig | None:
        """The checkpoint's own ``hyper_parameters`` as a config (reads the checkpoint, weights-only)."""
        return stored.stored_config(ckpt, self.read(ckpt)[0])

    def section_of(self, resolved: configs.ResolvedConfig) -> tuple[Route, Section]:
        """The route that builds from ``resolved``, and what it builds from (``CheckError`` when nothing)."""
        route = self.router.choose(resolved)
        return route, route.section(resolved)

    def unbuildable(self, resolved: configs.ResolvedConfig) -> str | None:
        """Why no model can be built from ``resolved`` (an empty ``hparams.yaml``, no `model` section for a
        factory), or None: a run log counts as a config only when a model can be built from it."""
        try:
            _, section = self.section_of(resolved)
        except CheckError as exc:
            return first_line(exc.message)
        return None if section.args or section.class_path else "no arguments"

    def definition(self, resolved: configs.ResolvedConfig, route: Route | None = None) -> dict[str, Any]:
        """The keys of ``resolved`` that define the model, as ``route`` (else the router's) builds from it."""
        section = route.section(resolved) if route is not None else self.section_of(resolved)[1]
        return agreement.definition(section.args, section.class_path, self.settings.ignored_keys)

    def stored_definition(self, ckpt: CheckpointRecord) -> dict[str, Any] | None:
        """What the checkpoint's stored hyperparameters say defines its model; None when they say nothing."""
        own = self.stored_config(ckpt)
        return None if own is None or self.unbuildable(own) is not None else self.definition(own)

    def validated(self, ckpt: CheckpointRecord) -> ValidConfig:
        """Stage 2: the model section exists, fits the schema, the route's checks (a LightningModule's signature)
        and the family's rules, and names safe targets."""

        def run() -> ValidConfig:
            return self.validate(self.config(ckpt), ckpt)

        return self._stage(ckpt, Check.CONFIG_SCHEMA, "", run)

    def validate(self, resolved: configs.ResolvedConfig, ckpt: CheckpointRecord | None) -> ValidConfig:
        """``resolved`` checked for building, or ``CheckError`` listing every problem (each with its JSON path)."""
        route, section = self.section_of(resolved)
        errors = self.section_problems(section, section.path, ckpt, route)
        if len(errors) == 1:
            raise CheckError(f"{resolved.where}: {errors[0]}")
        if errors:
            shown = "\n  ".join(errors[:20])
            more = f"\n  … and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise CheckError(
                f"{resolved.where}: {len(errors)} problems in the model section, first: {errors[0]}\n  {shown}{more}"
            )
        return ValidConfig(resolved, route, section)

    def section_problems(
        self, section: Section | dict[str, Any], base: str, ckpt: CheckpointRecord | None, route: Route | None = None
    ) -> list[str]:
        """Everything wrong with a model section, before anything is imported: unloaded YAML objects, targets
        outside the allowlist, schema errors; then the route's own checks and the family's rules."""
        if not isinstance(section, Section):
            section = Section(section, base)
        errors = self._generic_problems(section.args, base)
        if section.class_path is not None:  # the class a config records, beside its arguments
            found = targets.Target(section.class_path_at or "$.class_path", section.class_path)
            errors += targets.name_errors(found, self.settings.allowed_targets)
        if not errors:
            errors = (route or self.router.default()).problems(section, self._context(ckpt))
        if not errors:  # a family's rules assume the generic ones hold
            errors = self._hook_validation(section.args, ckpt)
        return errors

    def _generic_problems(self, section: Any, base: str) -> list[str]:
        """The problems any section has by itself: worked out once per distinct section (a run's best, last
        and best-vN share one), not per checkpoint. The family hook sees the checkpoint: never remembered."""
        try:
            key: tuple[str, str] | None = (json.dumps(section, sort_keys=True), base)
        except (TypeError, ValueError):  # not plain data (an unloaded YAML object): checked every time
            key = None
        known = self._problems.get(key) if key is not None else None
        if known is not None:
            return list(known)
        errors = [f"{path}: a Python object tag that was not loaded" for path in find_unloaded(section, base)]
        errors += targets.target_errors(section, self.settings.allowed_targets, base=base)
        errors += self.schema_checker.errors(section, base)
        if key is not None:
            if len(self._problems) >= 4096:  # bounded: thousands of distinct sections stay cheap to keep
                self._problems.clear()
            self._problems[key] = tuple(errors)
        return errors

    def _hook_validation(self, section: dict[str, Any], ckpt: CheckpointRecord | None) -> list[str]:
        if self.hook is None:
            return []
        try:
            results = self.hook.pytest_ckptgate_validate_config(model_config=section, checkpoint=ckpt)
        except Exception as exc:
            return [f"pytest_ckptgate_validate_config hook raised {describe_exception(exc)}"]
        return [str(message) for result in results for message in (result or [])]

    def _context(self, ckpt: CheckpointRecord | None, obj: Any = None) -> BuildContext:
        return BuildContext(ckpt, self.settings.rootdir, self.settings.allowed_targets, obj)

    def loaded(self, ckpt: CheckpointRecord, device_kind: str = "cpu") -> LoadedModel:
        """Stage 3: the model is built and the weights load strictly (on ``device_kind``)."""
        cached = self._models.get((ckpt.relpath, device_kind))
        if cached is not None:
            self._models.move_to_end((ckpt.relpath, device_kind))
            return cached
        # cuda is reached from the forward check; its failures are that check's, after cpu loaded fine.
        check = Check.WEIGHTS_LOAD if device_kind == "cpu" else Check.FORWARD

        def run() -> bool:
            valid = self.validated(ckpt)
            loaded = self._keep(ckpt, device_kind, self._load(ckpt, valid, device_kind))
            self._routes_used[ckpt.relpath] = loaded.how
            return True

        self._stage(ckpt, check, f"load@{device_kind}", run)
        cached = self._models.get((ckpt.relpath, device_kind))
        if cached is None:  # succeeded earlier, evicted since: load again (cannot fail differently)
            valid = self.validated(ckpt)
            cached = self._keep(ckpt, device_kind, self._load(ckpt, valid, device_kind))
        return cached

    def _keep(self, ckpt: CheckpointRecord, device_kind: str, loaded: LoadedModel) -> LoadedModel:
        self._models[(ckpt.relpath, device_kind)] = loaded
        while len(self._models) > self.keep_models:
            self._models.popitem(last=False)
        return loaded

    def _load(self, ckpt: CheckpointRecord, valid: ValidConfig, device_kind: str) -> LoadedModel:
        if device_kind == "cpu":
            obj, state_dict, device = self.read(ckpt, device_kind)
            loading.check_finite(state_dict)
            self.check_agreement(ckpt, valid, obj)
        else:  # read once: the weights the cpu check read (memory-mapped) are copied to the device
            source = self.loaded(ckpt, "cpu")
            obj, state_dict, device = source.checkpoint, loading.state_dict_of(source.checkpoint), None
            try:
                device = devices.resolve(device_kind)
            except CheckError as exc:
                raise CheckError(f"{ckpt.relpath} {exc.message}") from None
        return self.build_loaded(ckpt, valid, obj, state_dict, device)

    def check_agreement(self, ckpt: CheckpointRecord, valid: ValidConfig, obj: Any) -> None:
        """A config found beside the checkpoint must say what the checkpoint itself says about the model."""
        own = stored.stored_config(ckpt, obj) if valid.resolved.kind != stored.KIND else None
        if own is None:
            return
        try:
            theirs = self.definition(own, valid.route)
        except CheckError:  # its hyperparameters are not this route's kind of config: nothing to compare
            return
        why = agreement.contradiction(valid.resolved, self.definition(valid.resolved, valid.route), theirs)
        if why is not None:
            raise CheckError(why)

    def read(self, ckpt: CheckpointRecord, device_kind: str = "cpu") -> tuple[Any, Any, Any]:
        """The checkpoint's object and weights, read weights-only onto the device; errors name the file. The last
        checkpoint read is kept: its config, its hyperparameters and its weights are asked for one after another."""
        key = f"{ckpt.relpath}@{device_kind}"
        if self._last_read is not None and self._last_read[0] == key:
            return self._last_read[1]
        if ckpt.is_dir:  # a sharded checkpoint: what its files are is the verdict (it is not loaded)
            raise CheckError(f"{ckpt.relpath} {sharded_message(ckpt)}")
        devices.configure_torch()
        device = devices.resolve(device_kind)
        try:
            obj = loading.read_checkpoint(
                ckpt.path,
                map_location=device,
                trust_pickle=self.settings.trust_pickle,
                extra_safe_globals=self.settings.safe_globals,
            )
            result = (obj, loading.state_dict_of(obj), device)
        except CheckError as exc:
            raise CheckError(f"{ckpt.relpath} {exc.message}") from None
        self._last_read = (key, result)
        return result

    def build_loaded(
        self,
        ckpt: CheckpointRecord,
        section: ValidConfig | Section | dict[str, Any],
        obj: Any,
        state_dict: Any,
        device: Any,
    ) -> LoadedModel:
        """Build the model a section describes (or reuse the one built for the same section) and load the
        weights into it strictly."""
        if isinstance(section, ValidConfig):
            route, section = section.route, section.section
        else:
            route = self.router.default()
            section = section if isinstance(section, Section) else Section(section, "$.model")
        built = self._model_for(route, section, ckpt, obj, device)
        weights = route.prepare_weights(built.model, obj, state_dict) if built.route == route.name else state_dict
        whole = built.route == route.name and route.loads_whole_state_dict()
        report = loading.load_weights(built.model, weights, how=f"the model built by {built.how}", whole=whole)
        built.model.eval()
        return LoadedModel(built.model, obj, report, built.how, device, built.route)

    def _model_for(self, route: Route, section: Section, ckpt: CheckpointRecord, obj: Any, device: Any) -> _BuiltModel:
        """The model for a section on a device: the one built last for the same section when there is one.

        A reused model is about to receive other weights, so whatever still refers to it as another
        checkpoint's loaded model is forgotten (asked again, that checkpoint is loaded again). Models from
        a ``pytest_ckptgate_build_model`` hook are never reused: the hook sees the checkpoint, not only the
        section, and may build differently for each.
        """
        try:
            text = json.dumps([route.name, section.class_path, section.args], sort_keys=True, default=repr)
            key = (text, str(device))
            reusable = route.reusable and not hook_route.implemented(self.hook)
        except (TypeError, ValueError):  # keys that do not sort (1 and "a" side by side): build every time
            key, reusable = ("", str(device)), False
        built = self._built.get(key) if reusable else None
        if built is not None:
            self._built.move_to_end(key)
            self._forget_loaded(built.model)
            return built
        same_device = [k for k in self._built if k[1] == key[1]]  # least recently used first
        for old in same_device[: max(0, len(same_device) + 1 - self.keep_built)]:
            self._forget_built(old)  # before building the next: memory stays one model deep
        # building never downloads: a model that asks for pretrained weights fails with that reason, offline
        model, how, by = offline.build_offline(lambda: self._build(route, section, ckpt, obj))
        self.builds += 1
        try:
            model = model.to(device)
        except Exception as exc:
            raise CheckError(f"moving the model to {device} failed: {describe_exception(exc)}") from None
        built = _BuiltModel(model, how, by)
        if reusable and self.keep_built > 0:
            self._built[key] = built
        return built

    def _build(self, route: Route, section: Section, ckpt: CheckpointRecord, obj: Any) -> tuple[Any, str, str]:
        """The hook's model when it answers, else the route's; how it was built; and by which route."""
        import torch

        torch.manual_seed(forward.SEED)  # an example_input_array made at __init__ is the same input every run
        hooked = hook_route.try_hook(self.hook, section, ckpt)
        if hooked is not None:
            return (*hooked, "hook")
        return (*route.build(section, self._context(ckpt, obj)), route.name)

    def _forget_built(self, key: tuple[str, str]) -> None:
        self._forget_loaded(self._built.pop(key).model)

    def _forget_loaded(self, model: Any) -> None:
        """Forget every checkpoint loaded into ``model``: it is about to hold other weights, or be dropped."""
        for loaded_key in [k for k, loaded in self._models.items() if loaded.model is model]:
            del self._models[loaded_key]

    def inputs(self, ckpt: CheckpointRecord, loaded: LoadedModel, config: dict[str, Any] | None = None) -> Any:
        """The forward input (see :meth:`forward_input`)."""
        return self.forward_input(ckpt, loaded, config)[0]

    def forward_input(
        self, ckpt: CheckpointRecord, loaded: LoadedModel, config: dict[str, Any] | None = None
    ) -> tuple[Any, str]:
        """The forward input and where it came from: a ``pytest_ckptgate_make_input`` hook's, else the model's
        ``example_input_array`` (Lightning's convention), else a dummy batch of ``--ckpt-input-shape``."""
        if self.hook is not None and self.hook.pytest_ckptgate_make_input.get_hookimpls():
            try:
                custom = self.hook.pytest_ckptgate_make_input(
                    model=loaded.model, config=self._whole_config(ckpt, config), checkpoint=ckpt, device=loaded.device
                )
            except Exception as exc:
                raise CheckError(f"pytest_ckptgate_make_input hook raised {describe_exception(exc)}") from None
            if custom is not None:
                return custom, forward.FROM_HOOK
        return forward.default_input(loaded.model, self.settings.input_shape, loaded.device)

    def forward_kwargs(
        self, ckpt: CheckpointRecord, loaded: LoadedModel, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of the forward call: ``ckpt_forward_kwargs``, then what the hooks add."""
        kwargs = dict(self.settings.forward_kwargs)
        if self.hook is None or not self.hook.pytest_ckptgate_forward_kwargs.get_hookimpls():
            return kwargs
        try:
            results = self.hook.pytest_ckptgate_forward_kwargs(
                model=loaded.model, config=self._whole_config(ckpt, config), checkpoint=ckpt
            )
        except Exception as exc:
            raise CheckError(f"pytest_ckptgate_forward_kwargs hook raised {describe_exception(exc)}") from None
        from_hooks: dict[str, Any] = {}
        for result in results:
            for key, value in (result or {}).items():
                if key in from_hooks:
                    raise CheckError(
                        f"forward keyword argument {key!r} is given by two pytest_ckptgate_forward_kwargs hooks"
                    )
                from_hooks[key] = value
        return {**kwargs, **from_hooks}

    def _whole_config(self, ckpt: CheckpointRecord, config: dict[str, Any] | None) -> Any:
        from omegaconf import OmegaConf

        return OmegaConf.create(config if config is not None else self.validated(ckpt).resolved.data)

    def run_forward(
        self,
        ckpt: CheckpointRecord,
        loaded: LoadedModel,
        config: dict[str, Any] | None = None,
        *,
        fingerprint: bool = False,
    ) -> forward.ForwardReport:
        """One forward pass of a loaded model with the input and keyword arguments the settings and hooks give."""
        inputs, origin = self.forward_input(ckpt, loaded, config)
        kwargs = self.forward_kwargs(ckpt, loaded, config)
        return forward.run_forward(loaded.model, inputs, loaded.device, kwargs, origin=origin, fingerprint=fingerprint)

    def forward(self, ckpt: CheckpointRecord, device_kind: str = "cpu") -> forward.ForwardReport:
        """Stage 4: one forward pass gives finite, batch-sized tensors (and, with pins, computes what it did)."""

        def run() -> forward.ForwardReport:
            loaded = self.loaded(ckpt, device_kind)
            result = self.run_forward(ckpt, loaded, fingerprint=self.settings.pins_file is not None)
            if result.fingerprints is not None:
                self.check_pin(ckpt, device_kind, loaded, result)
            return result

        return self._stage(ckpt, Check.FORWARD, device_kind, run)

    # -- pins -----------------------------------------------------------------------------------------
    @property
    def pinned(self) -> dict[str, pins.Pin]:
        """The pins file's pins (none without ``--ckpt-pins`` or before the first update)."""
        if self._pins is None:
            self._pins = pins.load(self.settings.pins_file) if self.settings.pins_file is not None else {}
        return self._pins

    def check_pin(
        self, ckpt: CheckpointRecord, device_kind: str, loaded: LoadedModel, result: forward.ForwardReport
    ) -> None:
        """Compare this forward pass with the checkpoint's pin (raises the drift), or, with
        ``--ckpt-pins-update``, keep it as the new pin."""
        assert result.fingerprints is not None
        model = type(loaded.model)
        now = pins.Pin(
            outputs=result.fingerprints,
            device=device_kind,
            torch=devices.torch_version(),
            config=pins.config_hash(self.validated(ckpt).resolved.data),
            model=f"{model.__module__}.{model.__qualname__}",
            package=pins.package_version(loaded.model),
            input=result.input,
        )
        key = f"{ckpt.relpath}@{device_kind}"
        self.pins_taken[key] = now
        pin = self.pinned.get(ckpt.relpath)
        if self.settings.pins_update:
            self.pin_status[key] = pins.UPDATED
        elif pin is None:
            self.pin_status[key] = pins.UNPINNED
        else:
            comparison = pins.compare(pin, now, self.settings.pin_rtol, self.settings.pin_atol)
            self.pin_status[key] = pins.DRIFTED if comparison.drift else pins.PINNED
            if comparison.drift:
                raise CheckError(f"{ckpt.relpath} {comparison.drift}")
