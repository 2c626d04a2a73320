"""``--ckpt-cache``: replay the outcome of a check whose inputs did not change since it last ran.

A re-run over thousands of unchanged checkpoints should cost what pytest costs, not what loading every
model costs. With ``--ckpt-cache`` (ini ``ckpt_cache = true``) each outcome of the shipped checks is kept
in pytest's cache folder (``.pytest_cache/d/ckptgate-results/``, one small JSON file per checkpoint) under
a fingerprint of everything it depends on; the next run replays it when the fingerprint is the same, and
runs the check when anything differs. The fingerprint:

* the checkpoint file: size, ``mtime_ns``, inode and ``ctime_ns`` (a copy, a rewrite, a ``touch``, even
  an in-place rewrite that restores the mtime, changes one of them);
* the config: the path and sha256 of every existing file config resolution may read for it, in the
  order it looks (a new sidecar that would now win counts as a change);
* the model code: the sha256 of the source files of the top-level package of the factory or of the
  LightningModule (or of the packages the config's ``_target_`` and ``class_path`` values name), of every
  plugin or conftest that implements a ckptgate hook, and of the schema;
* the tool: ckptgate's version and source files, torch's version, Python's, the gate's settings
  (device, input shape, allowlists, pickle trust), and for cuda outcomes the host and
  ``CUDA_VISIBLE_DEVICES``.

Replayed tests run no fixture and no check code: a cached pass passes with the properties it recorded
and ``ckpt_cached = true``; a cached failure fails with its message prefixed ``[cached]``. Only outcomes
of checks that ran are kept: a skip (no GPU) is never cached, nor an error of the test's own setup.
Checks written by users are never cached (their dependencies are unknown). ``--cache-clear`` (pytest's
own) forgets everything; ``--fix`` and ``--fix-dry-run`` bypass the cache. Code imported by the model
code from outside its own package is not part of the fingerprint: clear the cache when that changes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ckptgate
from ckptgate import configs, report, targets
from ckptgate.discovery import CheckpointRecord
from ckptgate.gate import Check, CheckFailed, Failure, Gate
from ckptgate.items import check_label, checkpoint_of

CACHE_DIR_NAME = "ckptgate-results"
FORMAT = 1
CACHED_PROPERTY = "ckpt_cached"
PREFIX = "[cached] "
SHIPPED_CHECKS = frozenset(check.test_name for check in Check)
_HOOKS = ("pytest_ckptgate_build_model", "pytest_ckptgate_validate_config", "pytest_ckptgate_make_input")
_RECORDED = pytest.StashKey[int]()  # how many user properties the item had when its call began
_REPLAY = pytest.StashKey[dict[str, Any]]()


def addoption(parser: pytest.Parser) -> None:
    """Called from ckptgate's ``pytest_addoption``."""
    help_text = (
        "replay the outcome of a check whose checkpoint, config, model code and settings did not change "
        "(kept in pytest's cache folder; --cache-clear forgets it)"
    )
    parser.getgroup("ckptgate").addoption(
        "--ckpt-cache", dest="ckpt_cache", action="store_true", default=None, help=help_text
    )
    parser.addini("ckpt_cache", type="bool", default=False, help=help_text)


def register(config: pytest.Config, gate: Gate) -> None:
    """Called from ckptgate's ``pytest_configure``: registers the cache when it is asked for."""
    if not (config.getoption("ckpt_cache") or config.getini("ckpt_cache")):
        return
    if config.getoption("ckpt_fix") or config.getoption("ckpt_fix_dry_run"):
        return  # recovery writes configs and explains failures: always check for real
    cache = getattr(config, "cache", None)
    if cache is None:
        raise pytest.UsageError("--ckpt-cache keeps outcomes in pytest's cache: remove -p no:cacheprovider")
    package_hash.cache_clear()  # source files are hashed once per session, never across sessions
    config.pluginmanager.register(ResultCache(config, gate, Path(cache.mkdir(CACHE_DIR_NAME))), "ckptgate-cache")


# -- fingerprints -------------------------------------------------------------------------------------
def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@functools.lru_cache(maxsize=256)
def package_hash(name: str, rootdir: Path | None = None) -> str | None:
    """sha256 over the source files of a top-level module or package, found without importing it: where
    Python finds it, else in the rootdir (where ckptgate imports model code from, see ``building``)."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is None and rootdir is not None:
            spec = importlib.machinery.PathFinder.find_spec(name, [str(rootdir)])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    locations = [Path(location) for location in spec.submodule_search_locations or []]
    if not locations:  # a single module: its content
        return _sha256(Path(spec.origin))
    digest = hashlib.sha256()  # a package: every source file's path inside it and content
    for location in locations:
        for path in sorted(location.rglob("*.py")):
            digest.update(f"{path.relative_to(location).as_posix()}\0{_sha256(path)}\0".encode())
    return digest.hexdigest()


def _hook_files(config: pytest.Config) -> list[str]:
    """The source files of every plugin and conftest implementing a ckptgate hook."""
    found = set()
    for name in _HOOKS:
        caller = getattr(config.hook, name, None)
        for impl in caller.get_hookimpls() if caller is not None else ():
            plugin = impl.plugin
            source = getattr(plugin, "__file__", None) or getattr(
                sys.modules.get(type(plugin).__module__), "__file__", None
            )
            if source:
                found.add(source)
    return sorted(found)


def session_fingerprint(config: pytest.Config, gate: Gate) -> dict[str, Any]:
    """Everything outside the checkpoint and its config that a check's outcome depends on."""
    import importlib.metadata  # here: tens of milliseconds to import, paid only with --ckpt-cache

    settings = gate.settings
    own = Path(ckptgate.__file__).parent
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    schema = settings.schema_path or own / "schemas" / "model_config.schema.json"
    spec = settings.lightning_module or settings.model_factory
    code_package = spec.split(":")[0].split(".")[0] if spec else None
    return {
        "ckptgate": [ckptgate.__version__, package_hash("ckptgate"), _sha256(_shipped_checks_file())],
        "python": platform.python_version(),
        "torch": torch_version,
        "settings": [
            str(settings.outputs_dir),
            settings.device,
            settings.model_factory,
            settings.lightning_module,
            [[name, repr(value)] for name, value in settings.forward_kwargs],
            list(settings.hparams_ignore),
            list(settings.input_shape),
            settings.trust_pickle,
            list(settings.allowed_targets),
            list(settings.safe_globals),
            # a forward outcome compared with (or took) a pin: replayed only while the pins file is unchanged
            [str(settings.pins_file), settings.pins_update, settings.pin_rtol, settings.pin_atol]
            if settings.pins_file is not None
            else None,
        ],
        "pins": _sha256(settings.pins_file) if settings.pins_file is not None else None,
        "schema": _sha256(Path(schema)),
        "factory": [code_package, package_hash(code_package, settings.rootdir)] if code_package else None,
        "hooks": {path: _sha256(Path(path)) for path in _hook_files(config)},
    }


def checkpoint_fingerprint(ckpt: CheckpointRecord, root: Path) -> dict[str, Any]:
    """The checkpoint's identity on disk, and every config file that may be resolved for it."""
    try:
        st = os.stat(ckpt.path)
        # ctime too: no tool can set it, so even an in-place rewrite that keeps size and mtime shows
        identity: list[int] | None = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    except OSError:
        identity = None
    sources = [[configs.display(path, root), _sha256(path)] for path in configs.source_files(ckpt, root)]
    return {"file": identity, "config": sources}


# -- the store ------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """What the cache knows about one checkpoint: its fingerprint and the outcome of each check label."""

    fingerprint: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, str | None] = field(default_factory=dict)  # `_target_` packages -> their hash

    def to_json(self, relpath: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "relpath": relpath,
            "fingerprint": self.fingerprint,
            "targets": self.targets,
            "results": self.results,
        }


class Store:
    """One JSON file per checkpoint, written atomically; unreadable or foreign files count as absent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, root: Path, relpath: str) -> Path:
        key = hashlib.sha256(f"{root}\0{relpath}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.directory / f"{key}.json"

    def read(self, root: Path, relpath: str) -> Entry | None:
        try:
            data = json.loads(self.path(root, relpath).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("relpath") != relpath:
            return None
        return Entry(data.get("fingerprint", {}), data.get("results", {}), data.get("targets", {}))

    def write(self, root: Path, relpath: str, entry: Entry) -> None:
        import tempfile

        path = self.path(root, relpath)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(entry.to_json(relpath), stream, ensure_ascii=False)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


# -- the pytest plugin ----------------------------------------------------------------------------------
@functools.cache
def _shipped_checks_file() -> Path:
    from ckptgate import checks

    return Path(checks.__file__).resolve().with_name("test_checkpoints.py")


class ResultCache:
    """Looks outcomes up at collection, replays them at run time, and records new ones at the end."""

    def __init__(self, config: pytest.Config, gate: Gate, directory: Path) -> None:
        self.config, self.gate, self.store = config, gate, Store(directory)
        self.root, self.rootdir = gate.settings.outputs_dir, gate.settings.rootdir
        self.session = session_fingerprint(config, gate)
        self.device_env = [platform.node(), os.environ.get("CUDA_VISIBLE_DEVICES")]
        self.entries: dict[str, Entry] = {}  # relpath -> what this run knows (read, then updated)
        self.changed: set[str] = set()
        self.replayed = 0
        self.recorded = 0
        self._shipped: dict[Path, bool] = {}

    # -- which tests, and their fingerprints
    def _cacheable(self, item: pytest.Item) -> CheckpointRecord | None:
        if getattr(item, "originalname", None) not in SHIPPED_CHECKS:
            return None
        shipped = self._shipped.get(item.path)
        if shipped is None:
            shipped = self._shipped[item.path] = Path(item.path).resolve() == _shipped_checks_file()
        return checkpoint_of(item) if shipped else None

    def _fingerprint(self, ckpt: CheckpointRecord) -> dict[str, Any]:
        return {"session": self.session, **checkpoint_fingerprint(ckpt, self.root)}

    def _entry(self, ckpt: CheckpointRecord) -> Entry:
        """This run's entry for a checkpoint: the stored one when its fingerprint still holds, else empty."""
        entry = self.entries.get(ckpt.relpath)
        if entry is None:
            fingerprint = self._fingerprint(ckpt)
            stored = self.store.read(self.root, ckpt.relpath)
            valid = (
                stored is not None
                and stored.fingerprint == fingerprint
                and all(package_hash(name, self.rootdir) == digest for name, digest in stored.targets.items())
            )
            entry = stored if valid and stored is not None else Entry(fingerprint)
            self.entries[ckpt.relpath] = entry
        return entry

    def _result(self, entry: Entry, label: str) -> dict[str, Any] | None:
        result = entry.results.get(label)
        if result is None:
            return None
        if _on_gpu(label) and result.get("device_env") != self.device_env:
            return None  # a GPU outcome from another machine (or other visible GPUs)
        return result

    # -- collection: mark what can be replayed
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            ckpt = self._cacheable(item)
            if ckpt is None:
                continue
            result = self._result(self._entry(ckpt), check_label(item))
            if result is not None:
                _replay_instead(item, result)

    # -- run time: remember what the test itself recorded, and its outcome
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        item.stash[_RECORDED] = len(item.user_properties)
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the report after ckptgate's reporter
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        rep = yield
        if call.when != "call" or _REPLAY in item.stash:
            return rep
        ckpt = self._cacheable(item)
        if ckpt is None:
            return rep
        failure = getattr(call.excinfo.value, "ckptgate_failure", None) if call.excinfo is not None else None
        if call.excinfo is None:
            result: dict[str, Any] = {"outcome": "passed"}
        elif isinstance(failure, CheckFailed):
            result = {
                "outcome": "failed",
                "check": failure.check.value,
                "root_check": failure.root.check.value,
                "root_message": failure.root.message,
            }
        else:
            return rep  # a skip, or something other than a check's verdict: never cached
        start = item.stash.get(_RECORDED, len(item.user_properties))
        # what the test itself recorded; the reporter's own properties are worked out again on replay
        skipped = report.GATE_PROPERTIES | {CACHED_PROPERTY}
        result["properties"] = [[name, value] for name, value in item.user_properties[start:] if name not in skipped]
        known = self.gate.known_config(ckpt)
        if known is not None:  # replayed runs resolve no config, and the reports still name its source
            result["properties"].append([report.CONFIG_SOURCE, known.describe()])
            if known.skipped:
                result["properties"].append([report.CONFIG_SKIPPED, "; ".join(known.skipped)])
        route = self.gate.known_route(ckpt)
        if route is not None:  # nor build a model: they still say how it was built
            result["properties"].append([report.MODEL_ROUTE, route])
        pin = dict(rep.user_properties).get(report.PIN)
        if pin is not None:  # nor compare with a pin: the key holds the pins file, so the status stands
            result["properties"].append([report.PIN, pin])
        label = check_label(item)
        if _on_gpu(label):
            result["device_env"] = self.device_env
        entry = self._entry(ckpt)
        entry.results[label] = result
        entry.targets.update(self._target_hashes(ckpt))
        self.changed.add(ckpt.relpath)
        self.recorded += 1
        return rep

    def _target_hashes(self, ckpt: CheckpointRecord) -> dict[str, str | None]:
        """The packages the config's ``_target_`` and ``class_path`` values name (the model code, without an
        option naming it), the ``_class_path`` of stored hyperparameters included."""
        config = self.gate.known_config(ckpt)
        found = targets.find_targets(config.data) if config is not None else []
        recorded = config.data.get("_class_path") if config is not None else None
        values = [target for _, target in found] + [recorded]
        names = {target.split(".")[0] for target in values if isinstance(target, str)}
        return {name: package_hash(name, self.rootdir) for name in sorted(names)}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and (CACHED_PROPERTY, "true") in report.user_properties:
            self.replayed += 1

    def pytest_sessionfinish(self) -> None:
        for relpath in sorted(self.changed):
            ondisk = self.store.read(self.root, relpath)
            entry = self.entries[relpath]
            if ondisk is not None and ondisk.fingerprint == entry.fingerprint:  # another worker's results
                entry.results = {**ondisk.results, **entry.results}
                entry.targets = {**ondisk.targets, **entry.targets}
            self.store.write(self.root, relpath, entry)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        terminalreporter.write_line(
            f"ckptgate --ckpt-cache: {self.replayed} check outcome(s) replayed for unchanged checkpoints "
            f"(marked {PREFIX.strip()} when they fail)"
        )


def _on_gpu(label: str) -> bool:
    """Whether a check label is a GPU outcome (``forward[cuda]``), which holds only on the machine it ran on."""
    return "[" in label and not label.endswith("[cpu]")


def replayed(item: pytest.Item) -> bool:
    """Will ``item`` replay a cached outcome instead of running (nothing built, nothing imported)?"""
    return _REPLAY in item.stash


def _replay_instead(item: pytest.Item, result: dict[str, Any]) -> None:
    """Make ``item`` replay ``result``: no fixture is set up, no check code runs.

    pytest's runner still drives the item (setup, call, teardown, reports, JUnit XML, xfail marks), so a
    replayed test looks like any other; only ``setup`` and ``runtest`` are replaced on this one item.
    """
    item.stash[_REPLAY] = result

    def replay() -> None:
        item.user_properties.extend((name, value) for name, value in result.get("properties", []))
        item.user_properties.append((CACHED_PROPERTY, "true"))
        if result["outcome"] == "failed":
            ckpt = checkpoint_of(item)
            root = Failure(Check(result["root_check"]), result["root_message"])
            failure = CheckFailed(Check(result["check"]), root, ckpt.relpath if ckpt else "")
            from ckptgate.plugin import gate_failed  # the plugin imports this module

            raise gate_failed(failure, prefix=PREFIX)

    item.setup = lambda: None  # type: ignore[method-assign]
    item.runtest = replay  # type: ignore[method-assign]
