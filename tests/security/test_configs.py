"""Configs cannot run arbitrary code: a hostile ``_target_`` (or an interpolation that would make one) fails the
schema check with a clear message before anything is imported or called, wherever the config comes from: a
sidecar (JSON or YAML), a Hydra folder, a logger's ``hparams.yaml``, or a wandb run that ``--fix`` considers.

"Nothing imported" is proven with a package that writes a marker when imported; "nothing called" with markers
the payloads would write and a spy on ``hydra.utils.instantiate``, which logs every target it is asked to build
(the control checkpoint shows the spy works). ``tests/test_targets.py`` keeps the unit rules of the allowlist.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate.targets import DEFAULT_ALLOWED

from conftest import model_section, wandb_run
from security import corpus
from security.conftest import fingerprint
from security.figures import record

CHECKS = ("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "-p", "no:cacheprovider")
NOTHING = "Nothing was imported."

KW_MODELS = textwrap.dedent(
    """
    import torch  # noqa: F401  (as model modules do: ``kwmodels.torch.save`` is then an attribute path)
    from omegaconf import OmegaConf

    from mymodels import Net


    class KwNet(Net):
        \"\"\"The same network, built from keyword arguments as hydra.utils.instantiate passes them.\"\"\"

        def __init__(self, **cfg):
            super().__init__(OmegaConf.create(cfg))
    """
)

SPY = textwrap.dedent(
    """
    import hydra.utils

    LOG = {log!r}
    _real = hydra.utils.instantiate


    def _spy(config, *args, **kwargs):
        with open(LOG, "a") as handle:
            handle.write(str(config.get("_target_")) + "\\n")
        return _real(config, *args, **kwargs)


    def pytest_configure(config):
        hydra.utils.instantiate = _spy


    def pytest_unconfigure(config):
        hydra.utils.instantiate = _real
    """
)


class Armed:
    """A pytester folder with an importable package that marks its own import, and the instantiate spy."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.path = pytester.path
        self.markers = pytester.path / "markers"
        self.markers.mkdir()
        self.evil = f"ckg_evil_{uuid.uuid4().hex[:8]}"
        package = pytester.path / self.evil
        package.mkdir()
        imported = self.markers / "evil_package_imported.marker"
        (package / "__init__.py").write_text(f"open({str(imported)!r}, 'w').close()\n\nclass Net:\n    pass\n")
        pytester.makepyfile(kwmodels=KW_MODELS)
        self.log = pytester.path / "instantiated.log"
        pytester.makeconftest(SPY.format(log=str(self.log)))

    def marker(self, name: str) -> Path:
        return self.markers / f"{name.replace('/', '_')}.marker"

    def fired(self) -> list[str]:
        return sorted(p.name for p in self.markers.glob("*.marker"))

    def instantiated(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def no_factory(self, pytester: pytest.Pytester, *allow: str) -> None:
        """Models built by hydra.utils.instantiate: no factory, only these prefixes allowed."""
        lines = "".join(f"    {prefix}\n" for prefix in allow)
        pytester.makeini(f"[pytest]\nckpt_target_allow =\n{lines}addopts = -p no:cacheprovider\n")


@pytest.fixture
def armed(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> Iterator[Armed]:
    """This module's own ``armed`` (the conftest's arms payload markers of checkpoints; this one a config tree)."""
    yield Armed(pytester)


def failures(result: pytest.RunResult) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            found[rep.nodeid.split("::", 1)[1]] = (rep.outcome, rep.longreprtext.strip() if rep.failed else "")
    return found


CONTROL = "control_20251016_101500/checkpoints/best.ckpt"
KW_SECTION = {"_target_": "kwmodels.KwNet", "name": "net", "width": 4}


def location_variants(armed: Armed, outputs: Path, add: Callable[..., Path]) -> dict[str, str]:
    """Hostile configs in every place a config is looked for; returns relpath -> fragment of the failure."""
    found: dict[str, str] = {}
    tag = armed.marker("yaml_tag")
    path = add("yaml_python_tag/checkpoints/best.ckpt")
    path.with_name("best.config.yaml").write_text(
        f"model:\n  _target_: kwmodels.KwNet\n  width: 4\n  hook: !!python/object/apply:os.system ['touch {tag}']\n"
    )
    found["yaml_python_tag/checkpoints/best.ckpt"] = "$.model.hook: a Python object tag that was not loaded"
    path = add("yaml_python_name/checkpoints/best.ckpt")
    path.with_name("best.config.yaml").write_text("model:\n  _target_: !!python/name:os.system\n  width: 4\n")
    found["yaml_python_name/checkpoints/best.ckpt"] = "$.model._target_: a Python object tag that was not loaded"
    add("hydra_run_20251017_120000/checkpoints/best.ckpt")
    hydra = outputs / "hydra_run_20251017_120000" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(yaml.safe_dump({"model": {"_target_": "os.system", "_args_": ["touch x"]}}))
    found["hydra_run_20251017_120000/checkpoints/best.ckpt"] = "`_target_` 'os.system' is refused"
    add("hparams_run/checkpoints/best.ckpt")
    logs = outputs / "hparams_run" / "lightning_logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "hparams.yaml").write_text(yaml.safe_dump({"model": {**KW_SECTION, "post": {"_target_": "builtins.eval"}}}))
    found["hparams_run/checkpoints/best.ckpt"] = "`_target_` 'builtins.eval' is refused"
    return found


def test_hostile_configs_fail_the_schema_check_before_any_import_or_call(
    pytester: pytest.Pytester,
    gate_tree: Callable[..., Path],
    armed: Armed,
    bare_lightning_ckpt: Path,
    record_property: Any,
) -> None:
    """Every hostile section of the corpus as a sidecar, plus hostile configs in the other places, in one
    session where models are built by ``hydra.utils.instantiate`` (no factory): the control is instantiated,
    nothing else is. (The control holds no hyper_parameters of its own for its sidecar to contradict.)"""
    good = gate_tree(CONTROL, {"model": KW_SECTION}, source=bare_lightning_ckpt)
    outputs = good.parents[2]
    expected: dict[str, str] = {}
    for name in corpus.hostile_sections():
        relpath = f"{name.replace('/', '_')}/checkpoints/best.ckpt"
        section, fragment = corpus.hostile_section(name, armed.marker(name), armed.evil)
        gate_tree(relpath, {"model": section})
        expected[relpath] = fragment
    expected.update(location_variants(armed, outputs, gate_tree))
    armed.no_factory(pytester, "kwmodels", "mymodels")

    result = pytester.runpytest(*CHECKS)

    assert "INTERNALERROR" not in result.stdout.str()
    found = failures(result)
    assert found[f"test_forward[{CONTROL}-cpu]"][0] == "passed"  # instantiate builds the allowed model
    refused = 0
    for relpath, fragment in expected.items():
        outcome, message = found[f"test_config_schema[{relpath}]"]
        assert found[f"test_config_present[{relpath}]"][0] == "passed", relpath
        assert outcome == "failed", relpath
        assert fragment in message, (relpath, fragment, message)
        first = message.splitlines()[0]
        assert "$.model" in first, first  # the first line names where, and why
        if "Python object tag" not in fragment and "dotted import path string" not in fragment:
            assert NOTHING in message, message
        assert found[f"test_weights_load[{relpath}]"][1].startswith(f"blocked by test_config_schema[{relpath}]")
        refused += 1
    assert armed.fired() == []
    others = [target for target in armed.instantiated() if target != "kwmodels.KwNet"]
    assert armed.instantiated() and others == []  # the spy saw the control built, and nothing else
    record(
        record_property,
        config_tried=len(expected),
        config_imported=len(armed.fired()) + len(others),
        config_refused=refused,
    )


def test_fix_refuses_hostile_wandb_configs_before_importing_anything(
    pytester: pytest.Pytester,
    gate_tree: Callable[..., Path],
    armed: Armed,
    bare_lightning_ckpt: Path,
    record_property: Any,
) -> None:
    """``--fix`` proves a candidate by building its model: the candidate's config goes through the same checks
    first, so a wandb run naming a hostile target is rejected before any import, and nothing is written."""
    hostile = {
        "evil_20251017_215423": ({**KW_SECTION, "_target_": f"{armed.evil}.Net"}, "is outside the allowed module"),
        "reach_20251018_101500": (
            {**KW_SECTION, "head": {"_target_": "kwmodels.torch.save", "_args_": [{}, str(armed.marker("save"))]}},
            "reaches `torch.save` through the allowed package `kwmodels`",
        ),
        "interp_20251019_101500": (  # wandb keeps what was logged: an interpolation stays one
            {
                **KW_SECTION,
                "extra": f"${{oc.create:{{_target_: builtins.open, _args_: ['{armed.marker('open')}', 'w']}}}}",
            },
            "is an interpolation that would be resolved only when the model is built",
        ),
        "refused_20251020_101500": ({**KW_SECTION, "_target_": "subprocess.Popen"}, "is refused"),
    }
    runs = {}
    for index, (folder, (section, _)) in enumerate(hostile.items()):
        gate_tree(f"{folder}/checkpoints/best.ckpt", source=bare_lightning_ckpt)
        stamp = folder.rsplit("_", 2)
        runs[folder] = f"run-{stamp[1]}_{int(stamp[2]) + 1:06d}-evil{index:04d}"
        wandb_run(pytester.path, runs[folder], {"model": section})
    gate_tree("good_20251021_101500/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    wandb_run(pytester.path, "run-20251021_101501-good0001", {"model": KW_SECTION})
    armed.no_factory(pytester, "kwmodels")
    before = fingerprint(pytester.path / "outputs")

    result = pytester.runpytest(*CHECKS, "--fix", "-k", "config_present")

    assert "INTERNALERROR" not in result.stdout.str()
    result.assert_outcomes(passed=1, failed=len(hostile))
    refused = 0
    for folder, (_, fragment) in hostile.items():
        result.stdout.fnmatch_lines([f"*{folder}/checkpoints/best.ckpt", "*unrecoverable: 1 candidate(s)*"])
        assert "config rejected before building: $.model" in result.stdout.str()
        line = next(line for line in result.stdout.lines if runs[folder] in line and "unrecoverable" in line)
        assert fragment in line, line
        assert not (pytester.path / "outputs" / folder / "checkpoints" / "best.config.json").exists()
        refused += 1
    written = pytester.path / "outputs" / "good_20251021_101500" / "checkpoints" / "best.config.json"
    assert json.loads(written.read_text())["model"] == KW_SECTION  # the control was proven and written
    after = fingerprint(pytester.path / "outputs")
    assert {k: v for k, v in after.items() if not k.endswith(b"best.config.json")} == before
    assert armed.fired() == []
    assert set(armed.instantiated()) == {"kwmodels.KwNet"}  # only while proving the control
    record(record_property, config_tried=len(hostile), config_imported=len(armed.fired()), config_refused=refused)


def test_the_factory_package_is_trusted_and_allowed_but_nothing_else(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], armed: Armed
) -> None:
    """The factory option is a user setting, trusted like the ini file it sits in: its package becomes an
    allowed prefix; a config cannot widen that (its ``_target_`` elsewhere is refused unimported)."""
    gate_tree("a/checkpoints/best.ckpt", {"model": model_section()})
    gate_tree("b/checkpoints/best.ckpt", {"model": model_section(_target_=f"{armed.evil}.Net")})
    result = pytester.runpytest(*CHECKS)
    found = failures(result)
    assert found["test_forward[a/checkpoints/best.ckpt-cpu]"][0] == "passed"
    outcome, message = found["test_config_schema[b/checkpoints/best.ckpt]"]
    assert outcome == "failed"
    shown = ", ".join((*DEFAULT_ALLOWED, "mymodels"))  # the standard namespaces come first, then the factory's
    assert f"`_target_` '{armed.evil}.Net' is outside the allowed module prefixes ({shown})" in message
    assert f"ckpt_target_allow = {armed.evil}`" in message  # the narrowest prefix: here, the package itself
    assert armed.fired() == []


def test_real_configs_name_torch_optimizers_and_pass_by_default(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], armed: Armed, bare_lightning_ckpt: Path
) -> None:
    """A real config carries its optimizer, scheduler and loss (``model.optimizer._target_: torch.optim.AdamW``,
    or LightningCLI's ``class_path``): the standard namespaces pass with nothing configured but the factory."""
    section = model_section(
        optimizer={"_target_": "torch.optim.AdamW", "lr": 0.001, "weight_decay": 0.0001},
        scheduler={"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.01, "total_steps": 100},
        loss={"_target_": "torch.nn.CTCLoss", "blank": 0, "zero_infinity": True},
        warmup={"class_path": "torch.optim.lr_scheduler.LinearLR", "init_args": {"start_factor": 0.1}},
    )
    gate_tree("real/checkpoints/best.ckpt", {"model": section}, source=bare_lightning_ckpt)

    found = failures(pytester.runpytest(*CHECKS))

    assert found["test_config_schema[real/checkpoints/best.ckpt]"] == ("passed", "")
    assert found["test_forward[real/checkpoints/best.ckpt-cpu]"] == ("passed", "")
    assert armed.fired() == []


# Hostile targets inside the standard namespaces, or reached through them, and LightningCLI's `class_path`:
# (name, section beside the model's own keys, fragment the schema failure must hold). `{marker}` is the file a
# call would write, `{evil}` the package whose import writes a marker.
DEFAULT_NAMESPACE_ABUSE: tuple[tuple[str, dict[str, Any], str], ...] = (
    (
        "fa3_imports_any_module",  # torch.nn.attention._fa3 imports the module a string names: {evil} here
        {"attn": {"_target_": "torch.nn.attention._fa3.register_flash_attention_fa3", "module_path": "{evil}"}},
        "`_target_` 'torch.nn.attention._fa3.register_flash_attention_fa3' is refused: `torch.nn.attention._fa3`",
    ),
    (
        "walk_to_torch_save",
        {"head": {"_target_": "torch.nn.modules.module.torch.save", "_args_": [{}, "{marker}"]}},
        "reaches `torch.save` through the allowed package `torch.nn`",
    ),
    (
        "global_forward_hook",
        {"hook": {"_target_": "torch.nn.modules.module.register_module_forward_hook", "hook": None}},
        "`torch.nn.modules.module.register_module_forward_hook` can run commands",
    ),
    (
        "class_path_refused",
        {"head": {"class_path": "os.system", "init_args": {"command": "touch {marker}"}}},
        "`class_path` 'os.system' is refused: `os` can run commands",
    ),
    (
        "class_path_outside",
        {"head": {"class_path": "{evil}.Net", "init_args": {}}},
        "`class_path` '{evil}.Net' is outside the allowed module prefixes",
    ),
    (
        "class_path_through_torch_nn",
        {"head": {"class_path": "torch.nn.functional.importlib.import_module", "init_args": {"name": "{evil}"}}},
        "reaches `importlib.import_module` through the allowed package `torch.nn`",
    ),
)


def test_hostile_targets_in_the_default_namespaces_are_refused_before_they_run(
    pytester: pytest.Pytester,
    gate_tree: Callable[..., Path],
    armed: Armed,
    bare_lightning_ckpt: Path,
    record_property: Any,
) -> None:
    """With models built by ``hydra.utils.instantiate`` (which builds nested targets first), the defaults admit
    torch.nn and torch.optim but none of their importers, global hooks or ways back into torch; a
    ``class_path`` is checked like a ``_target_``. Nothing is imported or called."""
    expected: dict[str, str] = {}
    for name, extra, fragment in DEFAULT_NAMESPACE_ABUSE:
        text = json.dumps({**KW_SECTION, **extra})
        text = text.replace("{marker}", str(armed.marker(name))).replace("{evil}", armed.evil)
        relpath = f"{name}/checkpoints/best.ckpt"
        gate_tree(relpath, {"model": json.loads(text)}, source=bare_lightning_ckpt)
        expected[relpath] = fragment.replace("{evil}", armed.evil)
    armed.no_factory(pytester, "kwmodels")

    found = failures(pytester.runpytest(*CHECKS))

    refused = 0
    for relpath, fragment in expected.items():
        outcome, message = found[f"test_config_schema[{relpath}]"]
        assert outcome == "failed", relpath
        assert fragment in message, (relpath, fragment, message)
        assert NOTHING in message, message
        refused += 1
    assert armed.fired() == []
    assert armed.instantiated() == []
    record(record_property, config_tried=len(expected), config_imported=len(armed.fired()), config_refused=refused)
