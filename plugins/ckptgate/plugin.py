"""The pytest layer: options, parametrization by checkpoint, public fixtures, failure reports, summary.

Thin on purpose: every decision is made by the plain functions behind :class:`ckptgate.gate.Gate`.
Importing this module (which pytest does in every project where the plugin is installed) imports
neither torch nor the user's model code; nothing happens until a test asks for the ``checkpoint`` fixture.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from ckptgate import devices, discovery, pins, preselect, resultcache, scheduling, sharding
from ckptgate.baseline import BaselineError
from ckptgate.discovery import CheckpointRecord, Discovery
from ckptgate.forward import DEFAULT_INPUT_SHAPE, SHAPE_HELP, parse_forward_kwargs, parse_shape
from ckptgate.gate import Check, CheckFailed, Gate, GateSettings
from ckptgate.items import check_label, checkpoint_of
from ckptgate.pins import PinsError
from ckptgate.recovery.matching import DEFAULT_TOLERANCE_S, parse_offset
from ckptgate.recovery.recover import RecoverySettings, RecoveryTrace, default_wandb_dir, recover
from ckptgate.reporting import GateReporter, ReportSettings
from ckptgate.routes.factory import parse_factory_spec
from ckptgate.routes.lightning import parse_module_spec
from ckptgate.routes.protocol import SetupError, SpecError, locate_spec
from ckptgate.schema import SchemaChecker, SchemaFileError

GATE_KEY = pytest.StashKey[Gate]()
RECOVERY_INPUT = "ckptgate_recovery_notes"
REPORTER_KEY = pytest.StashKey[GateReporter]()
SETUP_OUTPUT = "ckptgate_setup_error"  # a worker's workeroutput: the route's code could not be imported
SETUP_FAILED_KEY = pytest.StashKey[bool]()
DEFAULT_OUTPUTS = "outputs"


class CkptgateDiscoveryWarning(pytest.PytestWarning):
    """Something under the outputs dir may hide checkpoints (unreadable folder, symlink loop, odd name)."""


def gate_failed(failure: CheckFailed, prefix: str = "") -> BaseException:
    """pytest's own failure, shown as the message alone (no traceback), carrying the root cause for reports;
    ``prefix`` marks a replayed outcome (``[cached] ``)."""
    error = pytest.fail.Exception(prefix + str(failure), pytrace=False)
    error.ckptgate_failure = failure  # type: ignore[attr-defined]
    return error


# -- options ---------------------------------------------------------------------------------------------
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from ckptgate import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ckptgate", "checkpoint gate (pytest-ckptgate)")

    def option(flag: str, ini: str, help: str, ini_type: str = "string", default: Any = None, **kw: Any) -> None:
        group.addoption(flag, dest=ini, default=None if ini_type != "linelist" else [], help=help, **kw)
        parser.addini(ini, help=help, type=ini_type, default=default)  # type: ignore[arg-type]

    def switch(flag: str, ini: str, help: str, ini_help: str = "") -> None:
        """An on/off option and its bool ini twin (read with :func:`_switch`)."""
        group.addoption(flag, dest=ini, action="store_true", default=None, help=help)
        parser.addini(ini, type="bool", default=False, help=ini_help or f"see {flag}")

    option(
        "--ckpt-outputs",
        "ckpt_outputs",
        f"outputs directory to search for checkpoints (see --ckpt-pattern; default: {DEFAULT_OUTPUTS})",
        default=DEFAULT_OUTPUTS,
        metavar="DIR",
    )
    option(
        "--ckpt-device",
        "ckpt_device",
        "devices for the forward check: auto (cpu, and cuda when a GPU is visible), cpu or cuda",
        default="auto",
        choices=devices.DEVICE_CHOICES,
    )
    option("--ckpt-schema", "ckpt_schema", "JSON Schema for the model section (default: bundled)", metavar="PATH")
    option(
        "--ckpt-lightning-module",
        "ckpt_lightning_module",
        "LightningModule class to rebuild each checkpoint with, as load_from_checkpoint does: "
        "Class(**hyper_parameters), the whole state_dict loaded strictly",
        metavar="MODULE:CLASS",
    )
    option(
        "--ckpt-model-factory",
        "ckpt_model_factory",
        "callable that builds a model from the model section (a DictConfig)",
        metavar="MODULE:CALLABLE",
    )
    option(
        "--ckpt-forward-kwarg",
        "ckpt_forward_kwargs",
        "keyword argument for every forward call, e.g. return_loss=false (value read as YAML; repeatable)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="NAME=VALUE",
    )
    option(
        "--ckpt-hparams-ignore",
        "ckpt_hparams_ignore",
        "key (or glob) that only trains the model, ignored when a config is compared with the checkpoint's "
        "hyper_parameters (repeatable; lr, optimizer, scheduler, batch_size... are ignored already)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="KEY",
    )
    option(
        "--ckpt-input-shape",
        "ckpt_input_shape",
        f"shape of the dummy forward input of a model without example_input_array, {SHAPE_HELP} (default: 1,3,64,64)",
        default=",".join(map(str, DEFAULT_INPUT_SHAPE)),
        metavar="N,C,H,W",
    )
    option(
        "--ckpt-target-allow",
        "ckpt_target_allow",
        "module prefix a config's _target_ may import from (repeatable; the factory's package is allowed)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="PREFIX",
    )
    option(
        "--ckpt-safe-globals",
        "ckpt_safe_globals",
        "extra module.Name a checkpoint's pickle may reference when loaded weights-only (repeatable)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="MODULE.NAME",
    )
    option(
        "--ckpt-wandb",
        "ckpt_wandb",
        "wandb folder with the runs' configs, for --fix (repeatable; default: wandb/ beside the outputs dir, else "
        "the rootdir; every wandb/ folder under the outputs dir is searched too)",
        ini_type="paths",
        default=[],
        action="append",
        metavar="DIR",
    )
    option(
        "--ckpt-time-tolerance",
        "ckpt_time_tolerance",
        "seconds a run's start may differ from its folder's timestamp when --fix matches them (default: 120)",
        default=str(int(DEFAULT_TOLERANCE_S)),
        metavar="SECONDS",
    )
    option(
        "--ckpt-utc-offset",
        "ckpt_utc_offsets",
        "UTC offset of the clock that named the run folders (e.g. +9), for --fix; those seen in the wandb runs "
        "are tried anyway (repeatable)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="HOURS",
    )
    option("--ckpt-report", "ckpt_report", "write a Markdown report of every checkpoint to PATH", metavar="PATH")
    option("--ckpt-json", "ckpt_json", "write the JSON report (schemas/report.schema.json) to PATH", metavar="PATH")
    option(
        "--ckpt-baseline",
        "ckpt_baseline",
        "baseline of known-unusable checkpoints: their failures are expected (strict xfail); new ones fail",
        metavar="FILE",
    )
    group.addoption(
        "--ckpt-baseline-update",
        dest="ckpt_baseline_update",
        action="store_true",
        help="rewrite the --ckpt-baseline file from this run (unusable in, usable out)",
    )
    option(
        "--ckpt-pins",
        "ckpt_pins",
        "pins of what each checkpoint computes (JSON): every forward check compares its outputs with the pin and "
        "fails on a drift; see --ckpt-pins-update",
        metavar="FILE",
    )
    group.addoption(
        "--ckpt-pins-update",
        dest="ckpt_pins_update",
        action="store_true",
        help="take the --ckpt-pins file's pins from this run's forward checks (nothing is compared)",
    )
    for name, default, what in (
        ("rtol", pins.DEFAULT_RTOL, "relative"),
        ("atol", pins.DEFAULT_ATOL, "absolute"),
    ):
        option(
            f"--ckpt-pin-{name}",
            f"ckpt_pin_{name}",
            f"{what} tolerance of a pin comparison (default: {default:g}; pins from another device or torch "
            f"version: {pins.CROSS_FACTOR:g}x)",
            default=str(default),
            metavar="TOL",
        )
    option(
        "--ckpt-select",
        "ckpt_select",
        "check only the checkpoints whose path (relative to the outputs dir) matches GLOB: `=`, spaces and any "
        "letters as they are, the way -k cannot (repeatable)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="GLOB",
    )
    option(
        "--ckpt-pattern",
        "ckpt_patterns",
        "file (or folder) name pattern of a checkpoint, e.g. '*.pt' (repeatable; an ini line may hold several: "
        "'*.ckpt *.pt *.pth'; default: *.ckpt)",
        ini_type="linelist",
        default=[],
        action="append",
        metavar="GLOB",
    )
    switch(
        "--ckpt-allow-empty",
        "ckpt_allow_empty",
        "an outputs dir without any checkpoint passes (by default it fails: a typo in a path is no green gate)",
    )
    group.addoption(
        "--ckpt-shard",
        dest="ckpt_shard",
        metavar="K/N",
        help="check only shard K of N (1-based), split by a stable hash of the checkpoint path",
    )
    group.addoption(
        "--fix",
        dest="ckpt_fix",
        action="store_true",
        help="recover missing configs from wandb runs, Hydra folders and stored hyperparameters; write a sidecar "
        "only when the weights load into the model it builds; then run the checks",
    )
    group.addoption(
        "--fix-dry-run",
        dest="ckpt_fix_dry_run",
        action="store_true",
        help="print what --fix would do, candidate by candidate; write nothing",
    )
    switch(
        "--ckpt-trust-pickle",
        "ckpt_trust_pickle",
        "load checkpoints with weights_only=False: lets a checkpoint's pickle RUN CODE; only for files you trust",
        "see --ckpt-trust-pickle (runs pickled code)",
    )
    resultcache.addoption(parser)  # --ckpt-cache / ckpt_cache
    preselect.addini(parser)  # ckpt_k_preselect


def _path(config: pytest.Config, name: str) -> Path | None:
    """A path option: relative to the invocation dir on the command line, to the ini file's dir in ini."""
    cli = config.getoption(name)
    if cli:
        return Path(config.invocation_params.dir, cli).resolve()
    ini = config.getini(name)
    if not ini:
        return None
    base = config.inipath.parent if config.inipath else config.rootpath
    return Path(base, ini).resolve()


def _paths(config: pytest.Config, name: str) -> list[Path]:
    """A repeatable path option: the command line's (relative to the invocation dir), else the ini's (``paths``
    ini options are relative to the ini file already)."""
    cli = config.getoption(name)
    if cli:
        return [Path(config.invocation_params.dir, value).resolve() for value in cli]
    return [Path(value).resolve() for value in config.getini(name) or ()]


def _value(config: pytest.Config, name: str) -> Any:
    cli = config.getoption(name)
    return cli if cli not in (None, []) else config.getini(name)


def checks_command(config: pytest.Config) -> str:
    """How the user ran the checks, for hints that say what to run next: ``pytest --pyargs ckptgate.checks``,
    ``pytest checks/``, or ``pytest`` (its testpaths)."""
    given = config.args_source == pytest.Config.ArgsSource.ARGS
    targets = [str(arg) for arg in config.args] if given else []
    shown = [*targets[:3], "..."] if len(targets) > 3 else targets
    return " ".join(["pytest", *(["--pyargs"] if config.getoption("pyargs", False) else []), *shown])


def _switch(config: pytest.Config, name: str) -> bool:
    """An on/off option: on when given on the command line or set in the ini."""
    return bool(config.getoption(name) or config.getini(name))


def _non_negative(config: pytest.Config, name: str, shown: str, expected: str) -> float:
    """A number option of 0 or more (a tolerance); anything else, inf and nan included, raises ValueError
    naming the option as ``shown``."""
    text = str(_value(config, name))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{shown} {text!r}: expected {expected}")
    return value


def route_options(config: pytest.Config) -> tuple[str | None, str | None]:
    """``(lightning_module, model_factory)``: one of them at most. A route named on the command line replaces
    the one the ini names (``--ckpt-lightning-module`` for one run of a project whose ini sets a factory)."""
    names = ("ckpt_lightning_module", "ckpt_model_factory")
    cli = [config.getoption(name) or None for name in names]
    chosen = cli if any(cli) else [config.getini(name) or None for name in names]
    if all(chosen):
        where = "on the command line" if any(cli) else "in your pytest ini"
        raise pytest.UsageError(
            f"--ckpt-lightning-module and --ckpt-model-factory are both set {where}: each builds every model, "
            "choose one (a LightningModule class, or a factory that receives the model section)"
        )
    return chosen[0], chosen[1]


def settings_from(config: pytest.Config) -> GateSettings:
    """Read and validate every option once; a bad value is a usage error naming the option."""
    device = _value(config, "ckpt_device") or "auto"
    if device not in devices.DEVICE_CHOICES:
        raise pytest.UsageError(f"ckpt_device = {device!r}: expected one of {', '.join(devices.DEVICE_CHOICES)}")
    module, factory = route_options(config)
    try:
        if factory:
            parse_factory_spec(factory)
            locate_spec(factory, "--ckpt-model-factory", "model factory", config.rootpath)
        if module:
            parse_module_spec(module)
            locate_spec(module, "--ckpt-lightning-module", "LightningModule", config.rootpath)
        shape = parse_shape(str(_value(config, "ckpt_input_shape")))
        forward_kwargs = parse_forward_kwargs(_value(config, "ckpt_forward_kwargs") or ())
        shard = sharding.parse(config.getoption("ckpt_shard")) if config.getoption("ckpt_shard") else None
        patterns = discovery.check_patterns(_value(config, "ckpt_patterns") or discovery.DEFAULT_PATTERNS)
        rtol, atol = (
            _non_negative(config, name, f"{name} / --{name.replace('_', '-')}", "a number, 0 or more, e.g. 1e-4")
            for name in ("ckpt_pin_rtol", "ckpt_pin_atol")
        )
    except (SpecError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    return GateSettings(
        outputs_dir=_path(config, "ckpt_outputs") or Path(config.rootpath, DEFAULT_OUTPUTS),
        rootdir=config.rootpath,
        device=device,
        schema_path=_path(config, "ckpt_schema"),
        model_factory=factory,
        lightning_module=module,
        input_shape=shape,
        forward_kwargs=tuple(forward_kwargs.items()),
        trust_pickle=_switch(config, "ckpt_trust_pickle"),
        target_allow=tuple(_value(config, "ckpt_target_allow") or ()),
        safe_globals=tuple(_value(config, "ckpt_safe_globals") or ()),
        hparams_ignore=tuple(_value(config, "ckpt_hparams_ignore") or ()),
        shard=shard,
        select=tuple(_value(config, "ckpt_select") or ()),
        patterns=patterns,
        pins_file=_path(config, "ckpt_pins"),
        pins_update=bool(config.getoption("ckpt_pins_update")),
        pin_rtol=rtol,
        pin_atol=atol,
        command=checks_command(config),
        allow_empty=_switch(config, "ckpt_allow_empty"),
    )


def check_usable(config: pytest.Config, settings: GateSettings) -> None:
    """Settings that parse but cannot work here are usage errors before anything runs."""
    if settings.pins_update and settings.pins_file is None:
        raise pytest.UsageError("--ckpt-pins-update needs --ckpt-pins FILE (or ckpt_pins in your ini)")
    if config.getoption("ckpt_fix") and config.getoption("ckpt_fix_dry_run"):
        raise pytest.UsageError("--fix and --fix-dry-run: choose one (--fix writes, --fix-dry-run writes nothing)")
    if settings.device == "cuda":
        reason = devices.cuda_unavailable_reason()
        if reason is not None:
            raise pytest.UsageError(f"--ckpt-device cuda: {reason}; use --ckpt-device auto or cpu")


def recovery_settings_from(config: pytest.Config, gate: Gate) -> RecoverySettings:
    try:
        tolerance = _non_negative(
            config, "ckpt_time_tolerance", "--ckpt-time-tolerance", "a number of seconds, 0 or more, e.g. 120"
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    given = _paths(config, "ckpt_wandb")
    for wandb_dir in given:
        if not wandb_dir.is_dir():
            raise pytest.UsageError(f"--ckpt-wandb {wandb_dir}: not a folder")
    default = default_wandb_dir(gate.settings.outputs_dir, gate.settings.rootdir)
    try:
        offsets = tuple(parse_offset(str(text)) for text in _value(config, "ckpt_utc_offsets") or ())
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    return RecoverySettings(
        wandb_dirs=tuple(given) or ((default,) if default is not None else ()),
        tolerance_s=tolerance,
        dry_run=bool(config.getoption("ckpt_fix_dry_run")),
        utc_offsets=offsets,
    )


def report_settings_from(config: pytest.Config) -> ReportSettings:
    settings = ReportSettings(
        markdown=_path(config, "ckpt_report"),
        json=_path(config, "ckpt_json"),
        baseline=_path(config, "ckpt_baseline"),
        baseline_update=bool(config.getoption("ckpt_baseline_update")),
    )
    if settings.baseline_update and settings.baseline is None:
        raise pytest.UsageError("--ckpt-baseline-update needs --ckpt-baseline FILE (or ckpt_baseline in your ini)")
    return settings


def pytest_configure(config: pytest.Config) -> None:
    settings = settings_from(config)
    check_usable(config, settings)
    gate = Gate(settings, hook=config.hook)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # the controller recovered before this worker started
        gate.recovery_notes.update(workerinput.get(RECOVERY_INPUT, {}))
    if settings.schema_path is not None:  # a broken user schema is reported once, at start-up
        try:
            gate._schema = SchemaChecker(settings.schema_path)
        except SchemaFileError as exc:
            raise pytest.UsageError(str(exc)) from None
    try:
        gate.pinned  # noqa: B018 - read once at start-up: a broken pins file is a usage error, not a verdict
    except PinsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[GATE_KEY] = gate
    try:
        reporter = GateReporter(config, gate, report_settings_from(config))
    except BaselineError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[REPORTER_KEY] = reporter
    config.pluginmanager.register(reporter, "ckptgate-reporter")
    scheduling.register(config)  # a checkpoint's checks back to back; a run's checkpoints on one xdist worker
    resultcache.register(config, gate)  # --ckpt-cache: replay outcomes of unchanged checkpoints
    preselect.register(config)  # -k: checks it deselects are never built
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config), "ckptgate-xdist")
    recovery_settings_from(config, gate)  # bad recovery options are usage errors, with --fix or without


def _fixing(config: pytest.Config) -> bool:
    return bool(config.getoption("ckpt_fix") or config.getoption("ckpt_fix_dry_run"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers: they must see the new sidecars
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or not _fixing(config):
        return
    gate = gate_of(config)
    if not gate.settings.outputs_dir.is_dir():
        return  # reported at collection, as without --fix
    settings = recovery_settings_from(config, gate)
    started = time.perf_counter()
    traces = recover(gate, settings, progress=_progress_line(config))
    reporter = config.stash[REPORTER_KEY]
    reporter.traces, reporter.recovery_mode = traces, "dry-run" if settings.dry_run else "fix"
    reporter.recovery_seconds = time.perf_counter() - started
    gate.recovery_notes.update(recovery_notes(traces))


def _progress_line(config: pytest.Config) -> Any:
    """``--fix``'s progress, rewritten in place on a terminal; nothing with ``-q`` or into a file or pipe."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is None or not terminal.isatty() or config.get_verbosity() < 0:
        return None

    def show(done: int, total: int, relpath: str) -> None:
        if done < total:
            terminal.rewrite(f"ckptgate --fix: tracing {done + 1}/{total} {relpath}"[:120], erase=True)
        else:
            terminal.rewrite("", erase=True)

    return show


def recovery_notes(traces: list[RecoveryTrace]) -> dict[str, str]:
    """What the config_present failure of a still-missing checkpoint says about recovery."""
    notes = {}
    for trace in traces:
        if trace.outcome == "would-write":
            notes[trace.relpath] = f"--fix would recover it: {trace.reason}"
        elif not trace.recovered:
            notes[trace.relpath] = f"--fix could not recover it: {trace.reason}"
    return notes


class _XdistHooks:
    """Registered only when pytest-xdist is active: hands the recovery outcome to each worker."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RECOVERY_INPUT] = dict(gate_of(self.config).recovery_notes)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker that could not import the route's code ran nothing: its message stops the session."""
        message = getattr(node, "workeroutput", {}).get(SETUP_OUTPUT)
        if message is not None:
            self.config.stash[REPORTER_KEY].summary.setup_error = message


_CONFIG_CHECKS = frozenset({Check.CONFIG_PRESENT.value, Check.CONFIG_SCHEMA.value})


def _builds(item: pytest.Item) -> bool:
    """Does running ``item`` build a model (so import the code a route option names)? A cuda check is left out:
    its checkpoint's weights check builds first, and on a machine without a GPU it only skips."""
    label = check_label(item)
    if checkpoint_of(item) is None or label in _CONFIG_CHECKS or label.endswith("[cuda]"):
        return False
    return not resultcache.replayed(item)


@pytest.hookimpl(trylast=True)  # after -k, the result cache and the baseline have marked the items
def pytest_collection_finish(session: pytest.Session) -> None:
    """Import the code ``--ckpt-model-factory`` or ``--ckpt-lightning-module`` names before any check runs, in
    each process that runs checks (not in the xdist controller, which builds nothing). A module that raises at
    import is a setting's fault: a usage error, once; under xdist the worker runs nothing and hands the message
    to the controller, which stops the session with it."""
    config = session.config
    if not any(_builds(item) for item in session.items):
        return
    try:
        gate_of(config).router.prepare(config.rootpath)
    except SetupError as exc:
        if not hasattr(config, "workerinput"):
            raise pytest.UsageError(exc.message) from None
        config.workeroutput[SETUP_OUTPUT] = exc.message  # type: ignore[attr-defined]
        session.shouldstop = "ckptgate: a setting cannot work, no check was run"
        config.stash[SETUP_FAILED_KEY] = True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> bool | None:
    """In a worker whose route code cannot be imported: run nothing (the session is stopping)."""
    return True if item.config.stash.get(SETUP_FAILED_KEY, False) else None


def gate_of(config: pytest.Config) -> Gate:
    """The session's :class:`Gate` (for plugins and conftest hooks that need the settings or caches)."""
    return config.stash[GATE_KEY]


# -- parametrization ---------------------------------------------------------------------------------
def _discovery(gate: Gate) -> Discovery:
    root = gate.settings.outputs_dir
    try:
        found = gate.discovery()
    except FileNotFoundError:
        pytest.fail(
            f"ckptgate: outputs directory {root} does not exist; pass --ckpt-outputs DIR or set "
            "`ckpt_outputs` in your pytest ini",
            pytrace=False,
        )
    except NotADirectoryError:
        pytest.fail(f"ckptgate: --ckpt-outputs {root} is a file, not a directory", pytrace=False)
    if not getattr(gate, "_warned", False):
        gate._warned = True  # type: ignore[attr-defined]
        for problem in found.problems:
            warnings.warn(CkptgateDiscoveryWarning(f"ckptgate discovery: {problem}"), stacklevel=1)
    return found


def empty_reason(gate: Gate) -> str:
    """Why nothing is checked, naming the folder, the patterns searched and the selection."""
    settings = gate.settings
    where = f"no checkpoint file ({', '.join(settings.patterns)}) under {settings.outputs_dir}"
    if settings.select and gate.discovered:
        where = f"none of the {gate.discovered} checkpoint(s) under {settings.outputs_dir} matches --ckpt-select "
        where += " ".join(settings.select)
    if settings.shard is not None:
        where += " in shard {}/{}".format(*settings.shard)
    return where


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "checkpoint" not in metafunc.fixturenames:
        return
    gate = gate_of(metafunc.config)
    found = _discovery(gate)
    if found.checkpoints:
        # Direct (not indirect) and function-scoped: pytest's reordering of a session-scoped parameter is
        # superlinear (seconds at 10k checkpoints) and an indirect one costs a `request` fixture per test;
        # ckptgate.scheduling groups each checkpoint's checks itself, in linear time.
        metafunc.parametrize(
            "checkpoint", found.checkpoints, ids=[record.relpath for record in found.checkpoints], scope="function"
        )
    else:
        reason = empty_reason(gate)
        if not gate.settings.allow_empty and not gate.selected:
            # a wrong path or glob must not give a green gate; an empty shard of a non-empty selection is fine
            pytest.fail(f"ckptgate: {reason}; pass --ckpt-allow-empty if an empty tree is fine", pytrace=False)
        metafunc.parametrize("checkpoint", [pytest.param(None, marks=pytest.mark.skip(reason=reason))], ids=["none"])
    if "ckpt_device" in metafunc.fixturenames:
        kinds = devices.device_kinds(gate.settings.device)
        metafunc.parametrize("ckpt_device", kinds, ids=list(kinds), indirect=True)


# -- fixtures ----------------------------------------------------------------------------------------
class GateRunner:
    """The pytest face of :class:`Gate`: the same stages, raising one-line test failures."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.settings = gate.settings

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except CheckFailed as exc:
            raise gate_failed(exc) from None

    def config(self, checkpoint: CheckpointRecord) -> Any:
        return self._call(self.gate.config, checkpoint)

    def validated(self, checkpoint: CheckpointRecord) -> Any:
        return self._call(self.gate.validated, checkpoint)

    def loaded(self, checkpoint: CheckpointRecord, device_kind: str = "cpu") -> Any:
        return self._call(self.gate.loaded, checkpoint, device_kind)

    def forward(self, checkpoint: CheckpointRecord, device_kind: str = "cpu") -> Any:
        return self._call(self.gate.forward, checkpoint, device_kind)

    def inputs(self, checkpoint: CheckpointRecord, device_kind: str = "cpu") -> Any:
        return self._call(lambda: self.gate.inputs(checkpoint, self.gate.loaded(checkpoint, device_kind)))


@pytest.fixture(scope="session")
def ckpt_gate(request: pytest.FixtureRequest) -> GateRunner:
    """The session's gate: run any stage for a checkpoint (``config``, ``validated``, ``loaded``, ``forward``)."""
    return GateRunner(gate_of(request.config))  # not via `pytestconfig`: one fixture less in every check


@pytest.fixture(scope="session")
def checkpoint(request: pytest.FixtureRequest) -> CheckpointRecord:
    """The :class:`~ckptgate.discovery.CheckpointRecord` under test; ckptgate parametrizes it."""
    if not hasattr(request, "param"):
        pytest.fail("the `checkpoint` fixture is parametrized by ckptgate; do not call it directly", pytrace=False)
    return request.param


@pytest.fixture
def ckpt_device(request: pytest.FixtureRequest, ckpt_gate: GateRunner) -> Any:
    """The ``torch.device`` of a forward check; cuda skips with a reason where no GPU is visible."""
    kind = getattr(request, "param", "cpu")
    if kind == "cuda":
        reason = devices.cuda_unavailable_reason()
        if reason is not None:
            if ckpt_gate.settings.device == "cuda":
                pytest.fail(f"--ckpt-device cuda was asked for, but {reason}", pytrace=False)
            pytest.skip(reason)
    return devices.resolve(kind)


@pytest.fixture
def ckpt_config(checkpoint: CheckpointRecord, ckpt_gate: GateRunner) -> Any:
    """The checkpoint's :class:`~ckptgate.configs.ResolvedConfig` (source, path, whole document)."""
    return ckpt_gate.config(checkpoint)


@pytest.fixture
def ckpt_model_config(checkpoint: CheckpointRecord, ckpt_gate: GateRunner) -> Any:
    """The validated model section as an ``omegaconf.DictConfig``, as a model factory receives it."""
    from omegaconf import OmegaConf

    return OmegaConf.create(ckpt_gate.validated(checkpoint).model)


@pytest.fixture
def ckpt_loaded(checkpoint: CheckpointRecord, ckpt_gate: GateRunner) -> Any:
    """The :class:`~ckptgate.gate.LoadedModel` on cpu: model, raw checkpoint dict and load report."""
    return ckpt_gate.loaded(checkpoint)


@pytest.fixture
def ckpt_model(ckpt_loaded: Any) -> Any:
    """The model with the checkpoint's weights loaded strictly, on cpu, in eval mode."""
    return ckpt_loaded.model


@pytest.fixture
def ckpt_state_dict(ckpt_loaded: Any) -> Any:
    """The checkpoint's raw ``state_dict`` (with the wrapper's ``model.`` prefix), read weights-only."""
    from ckptgate.loading import state_dict_of

    return state_dict_of(ckpt_loaded.checkpoint)


@pytest.fixture
def ckpt_input(checkpoint: CheckpointRecord, ckpt_gate: GateRunner) -> Any:
    """The forward input the gate uses for this checkpoint (on cpu)."""
    return ckpt_gate.inputs(checkpoint)


__all__ = ["GATE_KEY", "Check", "CkptgateDiscoveryWarning", "GateRunner", "gate_failed", "gate_of"]
