"""The Lightning projects builder writes what its answer key says: real Lightning files, read here with plain
torch/yaml code and Lightning's own ``load_from_checkpoint``, independently of the plugin.

The projects are built once per session (seconds of real training, both Lightning flavours).
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from fixtures import demo_tree
from fixtures.lightning_projects import (
    CLI_PLAIN_NO_SAVE,
    CLI_SUBCLASS_NO_SAVE,
    CONTRADICTION,
    FLAVOURS,
    LIGHTNING,
    PACKAGE,
    PROJECTS,
    PYTORCH_LIGHTNING,
    RERUN_ACT,
    RERUN_DEPTH,
    SCENARIOS,
    TWO_LOGGERS,
    ProjectCheckpoint,
    build_lightning_projects,
    demo_lightning_expectations,
    imported_package,
    package_sources,
    write_package,
)

EXPECTED = demo_lightning_expectations()
CHECKS = ("config_present", "config_schema", "weights_load", "forward")
SOURCES = ("hparams", "cli", "checkpoint", "sidecar")
CLI_KEYS = ("_class_path", "_instantiator")  # what LightningCLI adds to hyper_parameters


def by(scenario: str, **fields: Any) -> list[ProjectCheckpoint]:
    return [c for c in EXPECTED if c.scenario == scenario and all(getattr(c, k) == v for k, v in fields.items())]


def ids(cases: list[ProjectCheckpoint]) -> list[str]:
    return [f"{c.project}/{c.relpath}" for c in cases]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)  # our own files


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def model_kwargs(case: ProjectCheckpoint, root: Path) -> dict[str, Any]:
    """The model's constructor arguments from the config the key names, as a correct gate reads them."""
    if case.config_source == "checkpoint":
        found = dict(load(case.path(root))["hyper_parameters"])
    elif case.config_source == "hparams":
        path = case.config_path(root) or case.path(root).parent.parent / "hparams.yaml"
        found = read_yaml(path)
    elif case.config_source == "cli":
        model = read_yaml(case.config_path(root))["model"]
        found = model["init_args"] if "class_path" in model else model
    else:
        raise AssertionError(case.config_source)
    return {k: v for k, v in found.items() if k not in CLI_KEYS}


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("lightning-projects")
    started = time.perf_counter()
    records = build_lightning_projects(built)
    elapsed = time.perf_counter() - started
    assert records == EXPECTED
    assert elapsed < 30, f"the Lightning projects took {elapsed:.1f} s to build"
    return built


@contextlib.contextmanager
def model_class(root: Path, case: ProjectCheckpoint) -> Iterator[Any]:
    """The record's LightningModule class, imported from its own project root (both are named ``litproj``,
    and LightningCLI's checkpoints name their class by import path: it must stay importable while used)."""
    recorded = (case.stored_hparams or {}).get("_class_path")  # LightningCLI's subclass mode names the class
    name = recorded.rsplit(".", 1)[1] if recorded else case.lightning_module.split(":")[1]
    with imported_package(case.project_root(root)) as pkg:
        yield getattr(pkg.model, name)


# -------------------------------------------------------------------------------- the key (no build)


def test_key_covers_every_scenario_and_both_flavours() -> None:
    assert sorted({c.scenario for c in EXPECTED}) == sorted(SCENARIOS) == list("abcdefghi")
    assert {c.flavour for c in by("a")} == set(FLAVOURS)
    for flavour in FLAVOURS:  # each flavour really exercised: plain Trainer runs and LightningCLI runs
        scenarios = {c.scenario for c in EXPECTED if c.flavour == flavour}
        assert {"a", "c", "d"} <= scenarios and len(scenarios) >= 5, (flavour, scenarios)
    for letter, runs in SCENARIOS.items():
        for flavour, run in runs:
            assert by(letter, flavour=flavour), (letter, flavour)
            assert all(c.relpath.startswith(f"{run}/") for c in by(letter, flavour=flavour))


def test_key_records_are_consistent() -> None:
    assert len({(c.project, c.relpath) for c in EXPECTED}) == len(EXPECTED)
    assert sorted(EXPECTED, key=lambda c: (c.project, c.relpath)) == EXPECTED
    for c in EXPECTED:
        assert c.project == PROJECTS[c.flavour]
        assert c.usable == (c.failing_check is None) == (not c.reason), c
        assert c.failing_check in (None, *CHECKS) and c.failing_check_without_kwargs in (None, *CHECKS)
        assert all(word == word.lower() for word in (*c.reason, *c.reason_without_kwargs)), c
        assert c.config_source in SOURCES, c
        assert c.relpath.endswith(".ckpt") and c.case
        module, _, name = c.lightning_module.partition(":")
        assert module == f"{PACKAGE}.model" and name in ("LitNet", "LitNoSave", "LitEMA", "LitLoss")
        assert bool(c.forward_kwargs) == (c.failing_check_without_kwargs is not None)
        # the CLI's keys are recorded exactly when LightningCLI trained it
        assert (c.stored_hparams is not None and "_instantiator" in c.stored_hparams) == (
            c.scenario in "cdg" and c.stored_hparams is not None
        )


def test_matches_is_case_insensitive_and_needs_every_word() -> None:
    (nan,) = by("g", usable=False)
    assert nan.matches("weights_load: ema.module.0.weight has 162 NaN values")
    assert not nan.matches("net.0.weight has 162 NaN values")
    (loss,) = by("h")
    assert not loss.matches("forward raised an error", without_kwargs=True)
    assert loss.matches("TypeError: criterion() missing 1 required positional argument: 'target'", without_kwargs=True)


def test_package_sources_differ_only_in_the_lightning_import_lines() -> None:
    new, old = package_sources(LIGHTNING), package_sources(PYTORCH_LIGHTNING)
    assert sorted(new) == sorted(old) == ["__init__.py", "cli.py", "data.py", "model.py"]
    assert "import lightning.pytorch as pl" in new["model.py"] and "pytorch_lightning" not in new["model.py"]
    assert "import pytorch_lightning as pl" in old["model.py"] and "lightning.pytorch" not in old["model.py"]
    assert "from lightning.pytorch.cli import LightningCLI" in new["cli.py"]
    assert "from pytorch_lightning.cli import LightningCLI" in old["cli.py"]
    for name in new:
        differing = [(a, b) for a, b in zip(new[name].splitlines(), old[name].splitlines(), strict=True) if a != b]
        assert all("import" in a and "import" in b for a, b in differing), differing
    with pytest.raises(ValueError, match="flavour"):
        package_sources("lightning")


def test_imported_package_puts_back_what_it_found(tmp_path: Path) -> None:
    write_package(tmp_path / "one", LIGHTNING)
    path_before, sentinel = list(sys.path), object()
    sys.modules[PACKAGE] = sentinel  # type: ignore[assignment]
    try:
        with imported_package(tmp_path / "one") as pkg:
            assert Path(pkg.model.__file__).parent == tmp_path / "one" / PACKAGE
            assert sys.modules[PACKAGE] is not sentinel
        assert sys.modules[PACKAGE] is sentinel
        assert not any(name.startswith(f"{PACKAGE}.") for name in sys.modules)
        assert sys.path == path_before
        assert not list((tmp_path / "one").rglob("__pycache__"))
    finally:
        del sys.modules[PACKAGE]


def test_build_refuses_a_folder_that_already_holds_a_project(tmp_path: Path) -> None:
    (tmp_path / PROJECTS[PYTORCH_LIGHTNING]).mkdir()
    with pytest.raises(FileExistsError):
        build_lightning_projects(tmp_path)
    assert not (tmp_path / PROJECTS[LIGHTNING]).exists()


def test_the_demo_tree_builds_these_projects() -> None:
    assert demo_tree.demo_lightning_expectations is demo_lightning_expectations
    assert demo_tree.BUILDER_VERSION >= 3
    assert demo_tree.build_lightning_projects is build_lightning_projects


# ------------------------------------------------------------------------------ the built projects


def test_files_are_where_the_records_say(root: Path) -> None:
    for flavour, name in PROJECTS.items():
        package = root / name / PACKAGE
        assert sorted(p.name for p in package.glob("*.py")) == ["__init__.py", "cli.py", "data.py", "model.py"]
        assert (package / "model.py").read_text() == package_sources(flavour)["model.py"]
        outputs = root / name / "outputs"
        found = sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*.ckpt"))
        assert found == [c.relpath for c in EXPECTED if c.project == name]
    for case in EXPECTED:
        assert case.path(root).is_file(), case.relpath
        if case.config_file is not None:
            assert case.config_path(root).is_file(), case.config_file  # type: ignore[union-attr]


@pytest.mark.parametrize("case", EXPECTED, ids=ids(EXPECTED))
def test_stored_hyper_parameters_are_what_the_record_claims(root: Path, case: ProjectCheckpoint) -> None:
    checkpoint = load(case.path(root))
    assert set(checkpoint["state_dict"]) and checkpoint["pytorch-lightning_version"]
    if case.stored_hparams is None:
        assert "hyper_parameters" not in checkpoint
    else:
        assert dict(checkpoint["hyper_parameters"]) == case.stored_hparams
    # a gate reads it without running its pickle: everything in it is weights-only loadable
    assert torch.load(case.path(root), map_location="cpu", weights_only=True).keys() == checkpoint.keys()


@pytest.mark.parametrize("case", [c for c in EXPECTED if c.usable], ids=ids([c for c in EXPECTED if c.usable]))
def test_usable_ones_fit_their_config_and_not_the_class_defaults(root: Path, case: ProjectCheckpoint) -> None:
    state = load(case.path(root))["state_dict"]
    with model_class(root, case) as cls:
        model = cls(**model_kwargs(case, root))
        defaults = cls()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(model.example_input_array, **case.forward_kwargs)
    logits = out["logits"] if isinstance(out, dict) else out
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    # every run used non-default hyperparameters: a gate that ignored the config would not load them
    with pytest.raises(RuntimeError, match=r"size mismatch|Missing key|Unexpected key"):
        defaults.load_state_dict(state, strict=True)


STORED = [c for c in EXPECTED if c.stored_hparams is not None]


@pytest.mark.parametrize("case", STORED, ids=ids(STORED))
def test_lightnings_own_loader_rebuilds_them(root: Path, case: ProjectCheckpoint) -> None:
    """``Class.load_from_checkpoint``: Class(**hyper_parameters), then a strict load of the whole module."""
    with model_class(root, case) as cls:
        model = cls.load_from_checkpoint(case.path(root), map_location="cpu")
    stored = {k: v for k, v in case.stored_hparams.items() if k not in CLI_KEYS}  # type: ignore[union-attr]
    assert {k: model.hparams[k] for k in stored} == stored
    model.eval()
    with torch.no_grad():
        out = model(model.example_input_array, **case.forward_kwargs)
    logits = out["logits"] if isinstance(out, dict) else out
    assert torch.isfinite(logits).all()  # the contradiction (i) and NaN EMA (g) ones too: only a gate tells


def test_flat_layout_writes_the_loggers_hparams_yaml(root: Path) -> None:
    for case in by("a"):
        assert case.config_file == case.relpath.split("/checkpoints/")[0] + "/hparams.yaml"
        assert read_yaml(case.config_path(root)) == case.stored_hparams  # type: ignore[arg-type]


def test_two_loggers_write_two_identical_hparams_files_and_checkpoint_into_the_first(root: Path) -> None:
    (case,) = by("b")
    run = case.outputs(root) / TWO_LOGGERS
    assert read_yaml(run / "csv_a/version_0/hparams.yaml") == read_yaml(run / "csv_b/version_0/hparams.yaml")
    assert read_yaml(run / "csv_a/version_0/hparams.yaml") == case.stored_hparams
    assert case.relpath == f"{TWO_LOGGERS}/csv_a/version_0/checkpoints/epoch=0-step=3.ckpt"
    assert not (run / "csv_b/version_0/checkpoints").exists()


def test_cli_subclass_mode_records_class_path_and_init_args(root: Path) -> None:
    for case in by("c"):
        config_text = case.config_path(root).read_text()  # type: ignore[union-attr]
        assert config_text.startswith(f"# {case.flavour}==")
        model = yaml.safe_load(config_text)["model"]
        assert model == {"class_path": case.lightning_module.replace(":", "."), "init_args": model_kwargs(case, root)}
        assert model["init_args"] == {"channels": 6, "depth": 2, "act": "gelu", "lr": 0.01}
    (saved,) = by("c", lightning_module="litproj.model:LitNet")
    assert saved.stored_hparams["_class_path"] == "litproj.model.LitNet"  # type: ignore[index]
    hparams = read_yaml(saved.path(root).parent.parent / "hparams.yaml")
    # the logger's copy drops _class_path but keeps _instantiator: LitNet(**hparams.yaml) would fail
    assert "_class_path" not in hparams and hparams["_instantiator"] == f"{saved.flavour}.cli.instantiate_module"


def test_cli_plain_mode_records_the_arguments_directly(root: Path) -> None:
    for case in by("d"):
        model = read_yaml(case.config_path(root))["model"]  # type: ignore[arg-type]
        assert model == {"channels": 3, "depth": 3, "act": "relu", "lr": 0.01}
    (saved,) = by("d", lightning_module="litproj.model:LitNet")
    assert read_yaml(saved.path(root).parent.parent / "hparams.yaml") == saved.stored_hparams


def test_modules_without_saved_hyperparameters_leave_no_config_but_config_yaml(root: Path) -> None:
    (subclass,) = by("c", lightning_module="litproj.model:LitNoSave")
    (plain,) = by("d", lightning_module="litproj.model:LitNoSave")
    assert subclass.relpath.startswith(CLI_SUBCLASS_NO_SAVE) and plain.relpath.startswith(CLI_PLAIN_NO_SAVE)
    # CSVLogger writes no hparams.yaml for a module without hyperparameters; TensorBoardLogger writes {}
    assert not (subclass.path(root).parent.parent / "hparams.yaml").exists()
    assert (plain.path(root).parent.parent / "hparams.yaml").read_text().strip() == "{}"
    for case in (subclass, plain):
        assert "hyper_parameters" not in load(case.path(root))


def test_reruns_into_one_dirpath_keep_each_runs_files_apart(root: Path) -> None:
    """Run 2 writes -v1 names beside run 1's files (last.ckpt is not overwritten: last-v1.ckpt) and its own
    version_1/hparams.yaml: the newest hparams.yaml is not the config of every checkpoint in the folder."""
    for letter, run, key in (("e", RERUN_ACT, "act"), ("f", RERUN_DEPTH, "depth")):
        cases = by(letter)
        first = {Path(c.relpath).name for c in cases if c.run_version == 0}
        assert {Path(c.relpath).name for c in cases if c.run_version == 1} == {
            name.replace(".ckpt", "-v1.ckpt") for name in first
        }
        assert "last.ckpt" in first
        values = set()
        for case in cases:
            stored = load(case.path(root))["hyper_parameters"]
            assert case.config_file == f"{run}/lightning_logs/version_{case.run_version}/hparams.yaml"
            own = read_yaml(case.config_path(root))  # type: ignore[arg-type]
            assert own == dict(stored) == case.stored_hparams
            assert Path(case.relpath).stem.endswith("-v1") == (case.run_version == 1)
            values.add((case.run_version, stored[key]))
        assert len(values) == 2, values  # one value per run: relu/gelu, depth 2/3
        assert not (cases[0].outputs(root) / run / "lightning_logs" / "version_2").exists()
    e0 = by("e", run_version=0)
    assert {c.stored_hparams["act"] for c in e0} == {"relu"}  # type: ignore[index]
    assert {c.stored_hparams["act"] for c in by("e", run_version=1)} == {"gelu"}  # type: ignore[index]


def test_depth_reruns_differ_in_shapes(root: Path) -> None:
    first, second = (load(by("f", run_version=v)[0].path(root))["state_dict"] for v in (0, 1))
    assert set(second) - set(first)  # a third conv layer
    assert first.keys() != second.keys()


def test_nan_ema_is_only_in_the_ema_tensors(root: Path) -> None:
    (poisoned,) = by("g", usable=False)
    (intact,) = by("g", usable=True)
    state = load(poisoned.path(root))["state_dict"]
    ema = {k: v for k, v in state.items() if k.startswith("ema.")}
    assert {k for k, v in ema.items() if not v.is_floating_point()} == {"ema.n_averaged"}
    assert int(ema["ema.n_averaged"]) > 0
    assert all(v.isnan().all() for v in ema.values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for k, v in state.items() if not k.startswith("ema."))
    assert all(torch.isfinite(v).all() for v in load(intact.path(root))["state_dict"].values())
    # it loads strictly and its forward pass is finite: only a look at the weights finds it
    with model_class(root, poisoned) as cls:
        model = cls(**model_kwargs(poisoned, root))
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.isfinite(model(model.example_input_array)).all()


def test_loss_model_needs_its_forward_kwargs(root: Path) -> None:
    (case,) = by("h")
    assert case.forward_kwargs == {"return_loss": False} and case.failing_check_without_kwargs == "forward"
    with model_class(root, case) as cls:
        model = cls.load_from_checkpoint(case.path(root), map_location="cpu")
    with pytest.raises(TypeError) as raised:
        model(model.example_input_array)
    assert case.matches(str(raised.value), without_kwargs=True)
    frames = traceback.extract_tb(raised.tb)
    assert Path(frames[-1].filename) == root / case.project / PACKAGE / "model.py"  # from inside the user's code
    out = model(model.example_input_array, **case.forward_kwargs)
    assert set(out) == {"logits"}
    assert not (case.path(root).parent.parent / "hparams.yaml").exists()  # no logger: only the stored config


def test_contradiction_file_is_run_es_gelu_hparams_and_the_checkpoint_stores_relu(
    root: Path,
) -> None:
    (case,) = by("i")
    outputs = case.outputs(root)
    config = read_yaml(case.config_path(root))  # type: ignore[arg-type]
    assert config == read_yaml(outputs / RERUN_ACT / "lightning_logs/version_1/hparams.yaml")
    stored = dict(load(case.path(root))["hyper_parameters"])
    assert {k for k in config if config[k] != stored.get(k)} == {"act"} and stored["act"] == "relu"
    assert {"act", "gelu", "relu"} <= set(case.reason)
    assert [p.relative_to(outputs).as_posix() for p in (outputs / CONTRADICTION).rglob("*.yaml")] == [case.config_file]
    # built from the file (gelu), the weights load strictly: only comparing with the stored relu shows it
    with model_class(root, case) as cls:
        model = cls(**config)
    model.load_state_dict(load(case.path(root))["state_dict"], strict=True)
