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
from pathlib import Path
from typing import Any

from ckptgate import building, configs, devices, forward, loading, schema, sharding, targets
from ckptgate.discovery import CheckpointRecord, Discovery, discover
from ckptgate.documents import find_unloaded
from ckptgate.errors import CheckError, describe_exception, first_line


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
    input_shape: tuple[int, ...] = forward.DEFAULT_INPUT_SHAPE
    trust_pickle: bool = False
    target_allow: tuple[str, ...] = ()
    safe_globals: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None  # (K, N): only the checkpoints of shard K of N

    @property
    def allowed_targets(self) -> tuple[str, ...]:
        """User prefixes plus the factory's top-level package (its own code is trusted already)."""
        allowed = list(self.target_allow)
        if self.model_factory:
            allowed.append(self.model_factory.split(":")[0].split(".")[0])
        return tuple(dict.fromkeys(allowed))


@dataclass(frozen=True)
class ValidConfig:
    """A config whose model section passed the schema and cross-field checks."""

    resolved: configs.ResolvedConfig
    model: dict[str, Any]


@dataclass
class LoadedModel:
    """A model with the checkpoint's weights loaded strictly, on one device."""

    model: Any
    checkpoint: Any  # the object torch.save wrote (memory-mapped tensors)
    report: loading.LoadReport
    how: str  # how the model was built, for messages
    device: Any

    def describe(self) -> str:
        ignored = f"; ignored {len(self.report.ignored)} keys outside it" if self.report.ignored else ""
        prefix = f"prefix {self.report.prefix!r}" if self.report.prefix else "no prefix"
        return f"{self.report.loaded} tensors loaded strictly into {self.how} ({prefix}{ignored})"


@dataclass
class _BuiltModel:
    """A model built for one model section on one device, reused by the checkpoints that share the section."""

    model: Any
    how: str


_MISSING = object()


@dataclass
class Gate:
    """One process's view of the outputs tree; cheap results are kept, models only for the latest ones."""

    settings: GateSettings
    hook: Any = None  # pytest's hook relay (``config.hook``), or None outside pytest
    keep_models: int = 2  # cpu + cuda of the checkpoint under test: memory stays one model deep
    keep_built: int = 1  # built models kept for reuse, per device: the latest model section's
    recovery_notes: dict[str, str] = field(default_factory=dict)  # relpath -> what --fix found
    _discovery: Discovery | None = field(default=None, repr=False)
    _schema: schema.SchemaChecker | None = field(default=None, repr=False)
    _outcomes: dict[tuple[str, Check, str], Any] = field(default_factory=dict, repr=False)
    _models: OrderedDict[tuple[str, str], LoadedModel] = field(default_factory=OrderedDict, repr=False)
    _built: OrderedDict[tuple[str, str], _BuiltModel] = field(default_factory=OrderedDict, repr=False)
    _problems: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    builds: int = field(default=0, repr=False)  # models built so far (for tests and benchmarks)

    def __post_init__(self) -> None:
        configs.clear_cache()  # folder listings are per session: files change between sessions

    # -- discovery ------------------------------------------------------------------------------------
    def discovery(self) -> Discovery:
        """The checkpoints this process checks (this shard's, with --ckpt-shard), found once."""
        if self._discovery is None:
            found = discover(self.settings.outputs_dir)
            if self.settings.shard is not None:
                index, count = self.settings.shard
                found.checkpoints = [c for c in found.checkpoints if sharding.shard_of(c.relpath, count) == index]
            self._discovery = found
        return self._discovery

    def known_config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig | None:
        """The config this process already resolved for ``ckpt`` (for reports), without resolving it."""
        outcome = self._outcomes.get((ckpt.relpath, Check.CONFIG_PRESENT, ""))
        return outcome if isinstance(outcome, configs.ResolvedConfig) else None

    @property
    def schema_checker(self) -> schema.SchemaChecker:
        if self._schema is None:
            self._schema = schema.SchemaChecker(self.settings.schema_path)
        return self._schema

    # -- memoized stages ------------------------------------------------------------------------------
    def _stage(self, ckpt: CheckpointRecord, check: Check, device: str, run: Any) -> Any:
        key = (ckpt.relpath, check, device)
        outcome = self._outcomes.get(key, _MISSING)
        if outcome is _MISSING:
            try:
                outcome = run()
            except CheckFailed as exc:  # a prerequisite failed: remember its root cause
                outcome = exc.root
            except CheckError as exc:
                outcome = Failure(check, exc.message)
            self._outcomes[key] = outcome
        if isinstance(outcome, Failure):
            raise CheckFailed(check, outcome, ckpt.relpath)
        return outcome

    def config(self, ckpt: CheckpointRecord) -> configs.ResolvedConfig:
        """Stage 1: a config document was found and read."""

        def run() -> configs.ResolvedConfig:
            try:
                return configs.resolve_config(ckpt, self.settings.outputs_dir)
            except configs.ConfigNotFound as exc:
                note = self.recovery_notes.get(ckpt.relpath)
                if note is None:
                    raise
                _, _, details = exc.message.partition("\n")
                raise configs.ConfigNotFound(f"no config found for {ckpt.relpath}; {note}\n{details}") from None

        return self._stage(ckpt, Check.CONFIG_PRESENT, "", run)

    def validated(self, ckpt: CheckpointRecord) -> ValidConfig:
        """Stage 2: the model section exists, fits the schema and the cross-field rules, names safe targets."""

        def run() -> ValidConfig:
            resolved = self.config(ckpt)
            if resolved.model_key is None:
                keys = ", ".join(map(str, list(resolved.data)[:10])) or "none"
                raise CheckError(
                    f"$.model: {resolved.where} has no `model` section (top-level keys: {keys}); inference "
                    "needs one to rebuild the network"
                )
            section = resolved.model
            assert section is not None
            errors = self.section_problems(section, f"$.{resolved.model_key}", ckpt)
            if len(errors) == 1:
                raise CheckError(f"{resolved.where}: {errors[0]}")
            if errors:
                shown = "\n  ".join(errors[:20])
                more = f"\n  … and {len(errors) - 20} more" if len(errors) > 20 else ""
                raise CheckError(
                    f"{resolved.where}: {len(errors)} problems in the model section, first: {errors[0]}\n"
                    f"  {shown}{more}"
                )
            return ValidConfig(resolved, section)

        return self._stage(ckpt, Check.CONFIG_SCHEMA, "", run)

    def section_problems(self, section: Any, base: str, ckpt: CheckpointRecord) -> list[str]:
        """Everything wrong with a model section, before anything is imported: unloaded YAML objects,
        targets outside the allowlist, schema errors, then cross-field and family rules."""
        errors = self._generic_problems(section, base)
        if not errors:  # a family's rules assume the generic ones hold
            errors = self._hook_validation(section, ckpt)
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
        if not errors:  # cross-field rules assume a well-typed section
            errors += schema.cross_field_errors(section, base)
        if key is not None:
            if len(self._problems) >= 4096:  # bounded: thousands of distinct sections stay cheap to keep
                self._problems.clear()
            self._problems[key] = tuple(errors)
        return errors

    def _hook_validation(self, section: dict[str, Any], ckpt: CheckpointRecord) -> list[str]:
        if self.hook is None:
            return []
        try:
            results = self.hook.pytest_ckptgate_validate_config(model_config=section, checkpoint=ckpt)
        except Exception as exc:
            return [f"pytest_ckptgate_validate_config hook raised {describe_exception(exc)}"]
        return [str(message) for result in results for message in (result or [])]

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
            self._keep(ckpt, device_kind, self._load(ckpt, valid, device_kind))
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
        else:  # read once: the weights the cpu check read (memory-mapped) are copied to the device
            source = self.loaded(ckpt, "cpu")
            obj, state_dict, device = source.checkpoint, loading.state_dict_of(source.checkpoint), None
            try:
                device = devices.resolve(device_kind)
            except CheckError as exc:
                raise CheckError(f"{ckpt.relpath} {exc.message}") from None
        return self.build_loaded(ckpt, valid.model, obj, state_dict, device)

    def read(self, ckpt: CheckpointRecord, device_kind: str = "cpu") -> tuple[Any, Any, Any]:
        """The checkpoint's object and weights, read weights-only onto the device; errors name the file."""
        devices.configure_torch()
        device = devices.resolve(device_kind)
        try:
            obj = loading.read_checkpoint(
                ckpt.path,
                map_location=device,
                trust_pickle=self.settings.trust_pickle,
                extra_safe_globals=self.settings.safe_globals,
            )
            return obj, loading.state_dict_of(obj), device
        except CheckError as exc:
            raise CheckError(f"{ckpt.relpath} {exc.message}") from None

    def build_loaded(
        self, ckpt: CheckpointRecord, section: dict[str, Any], obj: Any, state_dict: Any, device: Any
    ) -> LoadedModel:
        """Build the model a section describes (or reuse the one built for the same section) and load the
        weights into it strictly."""
        built = self._model_for(section, ckpt, device)
        report = loading.load_weights(built.model, state_dict, how=f"the model built by {built.how}")
        built.model.eval()
        return LoadedModel(built.model, obj, report, built.how, device)

    def _model_for(self, section: dict[str, Any], ckpt: CheckpointRecord, device: Any) -> _BuiltModel:
        """The model for a section on a device: the one built last for the same section when there is one.

        A reused model is about to receive other weights, so whatever still refers to it as another
        checkpoint's loaded model is forgotten (asked again, that checkpoint is loaded again). Models from
        a ``pytest_ckptgate_build_model`` hook are never reused: the hook sees the checkpoint, not only the
        section, and may build differently for each.
        """
        try:
            key = (json.dumps(section, sort_keys=True, default=repr), str(device))
            reusable = not self._build_hook_implemented()
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
        model, how = building.build_model(
            section,
            ckpt,
            hook=self.hook,
            factory=self.settings.model_factory,
            rootdir=self.settings.rootdir,
            allowed=self.settings.allowed_targets,
        )
        self.builds += 1
        try:
            model = model.to(device)
        except Exception as exc:
            raise CheckError(f"moving the model to {device} failed: {describe_exception(exc)}") from None
        built = _BuiltModel(model, how)
        if reusable and self.keep_built > 0:
            self._built[key] = built
        return built

    def _forget_built(self, key: tuple[str, str]) -> None:
        self._forget_loaded(self._built.pop(key).model)

    def _forget_loaded(self, model: Any) -> None:
        """Forget every checkpoint loaded into ``model``: it is about to hold other weights, or be dropped."""
        for loaded_key in [k for k, loaded in self._models.items() if loaded.model is model]:
            del self._models[loaded_key]

    def _build_hook_implemented(self) -> bool:
        return self.hook is not None and bool(self.hook.pytest_ckptgate_build_model.get_hookimpls())

    def inputs(self, ckpt: CheckpointRecord, loaded: LoadedModel, config: dict[str, Any] | None = None) -> Any:
        """The forward input: a ``pytest_ckptgate_make_input`` hook's, else a dummy batch of the set shape."""
        if self.hook is not None and self.hook.pytest_ckptgate_make_input.get_hookimpls():
            from omegaconf import OmegaConf

            data = config if config is not None else self.validated(ckpt).resolved.data
            try:
                custom = self.hook.pytest_ckptgate_make_input(
                    model=loaded.model, config=OmegaConf.create(data), checkpoint=ckpt, device=loaded.device
                )
            except Exception as exc:
                raise CheckError(f"pytest_ckptgate_make_input hook raised {describe_exception(exc)}") from None
            if custom is not None:
                return custom
        return forward.dummy_input(self.settings.input_shape, loaded.device)

    def forward(self, ckpt: CheckpointRecord, device_kind: str = "cpu") -> forward.ForwardReport:
        """Stage 4: one forward pass gives finite, batch-sized tensors."""

        def run() -> forward.ForwardReport:
            loaded = self.loaded(ckpt, device_kind)
            return forward.run_forward(loaded.model, self.inputs(ckpt, loaded), loaded.device)

        return self._stage(ckpt, Check.FORWARD, device_kind, run)
