"""The plugin end to end with pytester: real Lightning checkpoints, the shipped checks, real options."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import DEMO_SCHEMA, GPU, model_section, wandb_run

CHECKS = ("--pyargs", "ckptgate.checks")


# A usable checkpoint's outcomes here: its cuda forward check runs where a GPU is visible, and skips elsewhere.
USABLE = {"passed": 5, "skipped": 0} if GPU else {"passed": 4, "skipped": 1}
NO_GPU = "no CUDA GPU visible: the cuda variant of the forward check is skipped here, and tested where a GPU is"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*CHECKS, "-rA", *args)


def outcomes_by_id(result: pytest.RunResult) -> dict[str, str]:
    """test id (``test_forward[x-cpu]``) -> PASSED/FAILED/SKIPPED/ERROR, from the in-process run's reports."""
    found: dict[str, str] = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        name = rep.nodeid.split("::", 1)[1]
        if rep.when == "call":
            found[name] = rep.outcome.upper()
        elif rep.outcome != "passed":
            found[name] = "SKIPPED" if rep.skipped else ("ERROR" if rep.when == "setup" else found.get(name, "ERROR"))
    return found


def test_usable_checkpoint_passes_every_check_and_ids_are_relative_paths(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("run_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    result = run(pytester)
    result.assert_outcomes(**USABLE)
    assert outcomes_by_id(result) == {
        "test_config_present[run_20251016_101500/checkpoints/best.ckpt]": "PASSED",
        "test_config_schema[run_20251016_101500/checkpoints/best.ckpt]": "PASSED",
        "test_weights_load[run_20251016_101500/checkpoints/best.ckpt]": "PASSED",
        "test_forward[run_20251016_101500/checkpoints/best.ckpt-cpu]": "PASSED",
        "test_forward[run_20251016_101500/checkpoints/best.ckpt-cuda]": "PASSED" if GPU else "SKIPPED",
    }
    result.stdout.fnmatch_lines([*([] if GPU else ["*no CUDA GPU visible*"]), "*1 checkpoint(s) checked: 1 usable*"])


def test_missing_config_fails_every_check_with_a_pointer_to_the_root_cause(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("exp_20251017_215423/checkpoints/last.ckpt")
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*no config found for exp_20251017_215423/checkpoints/last.ckpt; run `pytest --pyargs ckptgate.checks "
            "--fix` to recover it",
            "*exp_20251017_215423/checkpoints/last.config.json*",
            "*exp_20251017_215423/.hydra/config.yaml*",
            "*blocked by test_config_present[[]exp_20251017_215423/checkpoints/last.ckpt[]]: no config found*",
        ]
    )
    # Grouped by checkpoint with its root cause, after pytest's own summary.
    result.stdout.fnmatch_lines(
        [
            "*= ckptgate =*",
            "*1 checkpoint(s) checked: 0 usable, 1 unusable",
            "*UNUSABLE exp_20251017_215423/checkpoints/last.ckpt",
            "*config_present: no config found*",
        ]
    )


def test_selecting_only_forward_still_fails_when_the_config_is_missing(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """A `-k forward` CI gate must not go green because an earlier check would have failed."""
    gate_tree("exp/checkpoints/best.ckpt")
    result = run(pytester, "-k", "forward and cpu")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    ("options", "encoder", "expected"),
    [
        pytest.param(
            (),
            {"class_path": "resnet 18", "init_args": {}},
            "*$.model.encoder.class_path: 'resnet 18' does not match *",
            id="bundled-schema",
        ),
        pytest.param(
            (f"--ckpt-schema={DEMO_SCHEMA}",),  # one word: a free path in this repository would root the run here
            {"name": "x", "params": {"in_channels": "abc"}},
            "*$.model.encoder.params.in_channels: 'abc' is not of type 'integer'*",
            id="family-schema",
        ),
    ],
)
def test_schema_errors_name_the_json_path(
    pytester: pytest.Pytester,
    gate_tree: Callable[..., Path],
    options: tuple[str, ...],
    encoder: dict[str, Any],
    expected: str,
) -> None:
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section(encoder=encoder)})
    result = run(pytester, "--ckpt-device", "cpu", *options)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([expected])
    result.stdout.fnmatch_lines(["*test_weights_load*", "*blocked by test_config_schema*"])


@pytest.mark.parametrize(
    "section",
    [
        pytest.param({"width": 4, "depth": 2}, id="plain"),
        pytest.param({"width": 4, "head": {"in_channels": 64}, "decoder": {"out_channels": 32}}, id="free-keys"),
    ],
)
def test_a_plain_project_is_usable_with_the_bundled_schema(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path, section: dict[str, Any]
) -> None:
    """No `name`, no `_target_`, no encoder/decoder shape: what any factory builds from is a valid section; the
    demo family's shape and wiring rules are its own, not the product's. (The checkpoint stores no
    hyper_parameters: its own would name a `_target_` this sidecar does not.)"""
    gate_tree("exp/checkpoints/best.ckpt", {"model": section}, source=bare_lightning_ckpt)
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("value", "check", "expected"),
    [
        pytest.param(
            "\\${data.width}",  # escaped: the sidecar's model section holds `${data.width}` itself
            "config_schema",
            "*$.model.width: '${data.width}' is an interpolation that would be resolved only when the model is built*",
            id="left-in-the-section",
        ),
        pytest.param("${data.width}", "config_present", "*`model.width`*", id="does-not-resolve"),
    ],
)
def test_an_unresolved_interpolation_in_the_model_section_is_refused(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], value: str, check: str, expected: str
) -> None:
    """The bundled schema lets any value through; the interpolation is refused by the target check (or when
    the config is read), with the key it sits at, before anything is built."""
    gate_tree("exp/checkpoints/best.ckpt", {"model": {"width": value}})
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=1 if check == "config_schema" else 0, failed=3 if check == "config_schema" else 4)
    assert outcomes_by_id(result)[f"test_{check}[exp/checkpoints/best.ckpt]"] == "FAILED"
    result.stdout.fnmatch_lines([expected])
    result.stdout.fnmatch_lines([f"*blocked by test_{check}*"])


def test_target_outside_the_allowlist_fails_before_anything_is_imported(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    marker = pytester.path / "IMPORTED"
    pytester.makepyfile(evilmod=f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section(_target_="evilmod.Net")})
    result = run(pytester, "--ckpt-device", "cpu")
    result.stdout.fnmatch_lines(
        [
            "*`_target_` 'evilmod.Net' is outside the allowed module prefixes (torch.optim, "
            "torch.optim.lr_scheduler, torch.nn, mymodels)*"
        ]
    )
    assert not marker.exists()


def test_weights_that_do_not_fit_list_the_keys(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section(width=8)})
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*weights do not fit the model built by factory mymodels:build (checkpoint prefix 'model.'): "
            "0 missing, 0 unexpected, 3 shape-mismatched keys*",
            "*body.0.weight: checkpoint [[]4, 3, 3, 3[]] vs model [[]8, 3, 3, 3[]]*",
        ]
    )


def test_nan_weights_fail_the_weights_check_naming_the_tensors_ema_included(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], lightning_ckpt: Path
) -> None:
    """A diverged run's weights load strictly; an EMA copy beside the model is never touched by a forward pass.
    Every floating tensor of the state_dict must be finite."""
    import torch

    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    checkpoint["state_dict"]["model.body.2.bias"].fill_(float("nan"))
    torch.save(checkpoint, pytester.path / "diverged.ckpt")
    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    checkpoint["state_dict"]["ema.body.0.weight"] = torch.full((4, 3, 3, 3), float("inf"))
    torch.save(checkpoint, pytester.path / "ema.ckpt")
    gate_tree("exp/checkpoints/last.ckpt", {"model": model_section()}, source=pytester.path / "diverged.ckpt")
    gate_tree("exp/checkpoints/ema.ckpt", {"model": model_section()}, source=pytester.path / "ema.ckpt")
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines(
        [
            "*UNUSABLE exp/checkpoints/ema.ckpt",
            "*weights_load: 1 of 5 floating tensors in the state_dict hold non-finite values (diverged or corrupt "
            "weights): ema.body.0.weight (108 Inf of 108)",
            "*UNUSABLE exp/checkpoints/last.ckpt",
            "*weights_load: 1 of 4 floating tensors * model.body.2.bias (2 NaN of 2)",
        ]
    )


def test_a_pickle_payload_is_refused_named_and_never_run(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], lightning_ckpt: Path
) -> None:
    import torch

    marker = pytester.path / "PWNED"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    checkpoint["callbacks"] = {"ModelCheckpoint": {"best_model_path": Payload()}}
    evil = pytester.path / "evil.ckpt"
    torch.save(checkpoint, evil)
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section()}, source=evil)
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*refused to load*posix.system*Nothing in the file was executed*"])
    assert not marker.exists()


@pytest.mark.skipif(GPU, reason="a CUDA GPU is visible here: test_cuda_asked_for_runs_the_forward_check_on_the_gpu")
def test_cuda_asked_for_on_a_machine_without_one_is_a_usage_error(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """A setting that cannot work here is the run's fault, said once: not a failure of every checkpoint."""
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section()})
    result = run(pytester, "--ckpt-device", "cuda", "-k", "forward")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-device cuda: no CUDA GPU visible*; use --ckpt-device auto or cpu"])
    assert "PASSED" not in result.stdout.str() and "FAILED" not in result.stdout.str()


@pytest.mark.skipif(not GPU, reason=NO_GPU)
def test_cuda_asked_for_runs_the_forward_check_on_the_gpu(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """The same code path as on cpu, the device aside: the weights and the input on the GPU, or torch refuses."""
    gate_tree("exp/checkpoints/best.ckpt", {"model": model_section()})
    xml = pytester.path / "junit.xml"
    result = run(pytester, "--ckpt-device", "cuda", "--junitxml", str(xml))
    assert outcomes_by_id(result) == {
        "test_config_present[exp/checkpoints/best.ckpt]": "PASSED",
        "test_config_schema[exp/checkpoints/best.ckpt]": "PASSED",
        "test_weights_load[exp/checkpoints/best.ckpt]": "PASSED",
        "test_forward[exp/checkpoints/best.ckpt-cuda]": "PASSED",
    }
    described = [p.get("value") for p in ET.parse(xml).getroot().iter("property") if p.get("name") == "forward_cuda"]
    assert described == ["1 output tensor(s) on cuda:0: output['logits'] [1, 2, 64, 64]"]


def test_device_cpu_collects_no_cuda_variant(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    result = pytester.runpytest(*CHECKS, "--collect-only", "-q", "--ckpt-device", "cpu")
    result.stdout.fnmatch_lines(["*test_forward[[]a/best.ckpt-cpu[]]"])
    result.stdout.no_fnmatch_line("*-cuda]*")


def test_conftest_hooks_build_validate_and_feed_the_model(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """A user's conftest builds the model, adds a family rule and supplies the input: no factory needed."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nckpt_target_allow = mymodels\n")
    pytester.makeconftest(
        """
        import torch
        import mymodels
        calls = []

        def pytest_ckptgate_build_model(config, checkpoint):
            calls.append(("build", checkpoint.relpath, config.width))
            return mymodels.Net(config)

        def pytest_ckptgate_validate_config(model_config, checkpoint):
            if model_config["width"] > 6:
                return [f"$.model.width: {model_config['width']} is too wide for this family"]

        def pytest_ckptgate_make_input(model, config, checkpoint, device):
            calls.append(("input", config.model.width))
            return torch.zeros(3, 3, 8, 8, device=device)

        def pytest_sessionfinish(session):
            print("CALLS", calls)
        """
    )
    gate_tree("ok/best.ckpt", {"model": model_section()})
    gate_tree("wide/best.ckpt", {"model": model_section(width=8)})
    result = run(pytester, "--ckpt-device", "cpu", "-s")
    result.stdout.fnmatch_lines(["*$.model.width: 8 is too wide for this family*"])
    result.stdout.fnmatch_lines(["*CALLS [[]('build', 'ok/best.ckpt', 4), ('input', 4)[]]"])
    assert outcomes_by_id(result)["test_forward[ok/best.ckpt-cpu]"] == "PASSED"
    assert outcomes_by_id(result)["test_config_schema[wide/best.ckpt]"] == "FAILED"


def test_hydra_instantiate_is_used_when_no_factory_or_hook(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    import torch

    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nckpt_target_allow = torch.nn\n")
    linear = torch.nn.Linear(4, 2)
    weights = pytester.path / "linear.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in linear.state_dict().items()}}, weights)
    config = {"model": {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2}}
    gate_tree("lin/best.ckpt", config, source=weights)
    result = run(pytester, "--ckpt-device", "cpu", "--ckpt-input-shape", "5,4")
    result.assert_outcomes(passed=4)


def test_bad_options_are_usage_errors(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    result = pytester.runpytest(*CHECKS, "--ckpt-model-factory", "not a spec")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-model-factory 'not a spec': expected `module:callable`*"])
    result = pytester.runpytest(*CHECKS, "--ckpt-input-shape", "1,x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-input-shape '1,x': expected positive integers like 1,3,64,64*"])
    (pytester.path / "schema.json").write_text("{not json")
    result = pytester.runpytest(*CHECKS, "--ckpt-schema", "schema.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*schema.json: not valid JSON*"])


def test_route_options_are_one_at_a_time_and_the_command_line_replaces_the_ini(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """gate_tree's ini names a factory: a LightningModule given on the command line replaces it for one run;
    both given in one place is a usage error, and so is a malformed spec or forward keyword argument."""
    gate_tree("a/best.ckpt", {"model": model_section()})
    result = pytester.runpytest(*CHECKS, "--ckpt-lightning-module", "mymodels:Net", "--ckpt-model-factory", "m:b")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-lightning-module and --ckpt-model-factory are both set on the command*"])
    result = pytester.runpytest(*CHECKS, "--ckpt-lightning-module", "mymodels.Net")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-lightning-module 'mymodels.Net': expected `module:Class`*"])
    result = pytester.runpytest(*CHECKS, "--ckpt-forward-kwarg", "return-loss=false")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-forward-kwarg 'return-loss=false': the key must be a Python identifier*"])
    # the command line's LightningModule replaces the ini's factory: the whole state_dict must fit the module
    # as it is (the factory's route would have matched it under the wrapper's `model.` prefix)
    result = run(pytester, "--ckpt-lightning-module", "mymodels:Net", "-k", "weights", "--ckpt-device", "cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*weights do not fit the model built by LightningModule mymodels.Net (built as load_from_checkpoint "
            "does) (no checkpoint prefix): 4 missing, 4 unexpected*"
        ]
    )


def test_the_verdict_says_how_the_model_was_built_and_which_file_was_passed_over(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    ckpt = gate_tree("run_20251016_101500/checkpoints/best.ckpt")
    ckpt.with_name("best.config.json").write_text('{"model": ')
    hydra = pytester.path / "outputs" / "run_20251016_101500" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(json.dumps({"model": model_section()}))
    result = run(pytester, "--ckpt-device", "cpu", "--junitxml", "out.xml", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*1 checkpoint(s) checked: 1 usable, 0 unusable",
            "*NOTE     run_20251016_101500/checkpoints/best.ckpt: passed over a broken sidecar: "
            "run_20251016_101500/checkpoints/best.config.json: not valid JSON*",
            "*usable   run_20251016_101500/checkpoints/best.ckpt  (hydra: run_20251016_101500/.hydra/config.yaml; "
            "built by factory mymodels:build)",
        ]
    )
    properties = {
        prop.get("name"): prop.get("value")
        for case in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
        if case.get("name", "").startswith("test_weights_load")
        for prop in case.iter("property")
    }
    assert properties["model_route"] == "factory mymodels:build"
    assert properties["config_skipped"].startswith("passed over a broken sidecar: ")


def test_missing_or_empty_outputs_dir_is_never_green(pytester: pytest.Pytester) -> None:
    """A typo in a CI path, or a folder of exports with another suffix: the gate checked nothing, it says so and
    fails, unless the user says an empty tree is fine."""
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "nowhere")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ckptgate: outputs directory *nowhere does not exist; pass --ckpt-outputs DIR*"])
    (pytester.path / "empty").mkdir()
    (pytester.path / "empty" / "model.pt").write_bytes(b"not searched")
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "empty")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*ckptgate: no checkpoint file (*.ckpt) under *empty; pass --ckpt-allow-empty if an empty tree is fine"]
    )
    result.stdout.fnmatch_lines(["*= 1 error in *"])  # one collection error, not one failure per check
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "empty", "--ckpt-allow-empty", "-rs")
    result.stdout.fnmatch_lines(["*no checkpoint file (*.ckpt) under *empty*"])
    assert result.ret == pytest.ExitCode.OK


def test_select_chooses_checkpoints_by_path_the_way_k_cannot(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    for relpath in ("run a/epoch=3-step=9.ckpt", "run a/epoch=4-step=12.ckpt", "ünï/best.ckpt"):
        gate_tree(relpath, {"model": model_section()})
    result = run(pytester, "--ckpt-device", "cpu", "--ckpt-select", "run a/epoch=3*", "--ckpt-select", "ünï/*")
    assert sorted(name for name in outcomes_by_id(result) if name.startswith("test_config_present")) == [
        r"test_config_present[\xfcn\xef/best.ckpt]",  # pytest escapes the id; the selection is by the real name
        "test_config_present[run a/epoch=3-step=9.ckpt]",
    ]
    result.assert_outcomes(passed=8)
    result = run(pytester, "--ckpt-select", "run b/*")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*none of the 3 checkpoint(s) under *outputs matches --ckpt-select run b/[*]*"])


@pytest.mark.parametrize("parallel", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_factory_that_cannot_be_imported_is_the_settings_fault_not_the_checkpoints(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], parallel: tuple[str, ...]
) -> None:
    """The module exists (no typo a start-up check could see) but fails when imported: one usage error before any
    check runs, said once, and no checkpoint is called unusable for it. Under xdist the workers import it (the
    controller builds nothing) and the controller stops the session with their message."""
    for run_folder in ("a", "b", "c"):
        gate_tree(f"{run_folder}/best.ckpt", {"model": model_section()})
    pytester.makepyfile(
        gpumodels="raise ImportError('this module needs the CUDA build of a kernel')\ndef build(cfg): ...\n"
    )
    result = pytester.runpytest_subprocess(
        *CHECKS,
        "--ckpt-model-factory",
        "gpumodels:build",
        "--ckpt-target-allow",
        "mymodels",
        "-p",
        "no:randomly",
        *parallel,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = (
        "cannot import model factory 'gpumodels:build' (--ckpt-model-factory / ckpt_model_factory): ImportError: "
        "this module needs the CUDA build of a kernel"
    )
    output = result.stdout.str() + result.stderr.str()
    if parallel:
        result.stdout.fnmatch_lines(
            ["*= ckptgate =*", f"stopped: no checkpoint was judged, a setting cannot work: {said}*"]
        )
    else:
        result.stderr.fnmatch_lines([f"ERROR: {said}*"])
    assert output.count(said) == 1, output
    assert "no tests ran" in output  # nothing ran: not a config check, not a load
    assert "UNUSABLE" not in output and "checkpoint(s) checked" not in output and "PASSED" not in output


def test_a_module_class_that_cannot_be_imported_stops_before_any_check(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    pytester.makepyfile(litbroken="import nosuchpackage_ckptgate\nclass Lit: ...\n")

    result = pytester.runpytest_subprocess(*CHECKS, "--ckpt-lightning-module", "litbroken:Lit", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot import LightningModule 'litbroken:Lit' (--ckpt-lightning-module*"])
    assert "no tests ran" in result.stdout.str()


def test_config_checks_alone_never_import_the_route_code(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """``-k config_present`` builds nothing: a module that only a build needs is not imported, nor blamed."""
    gate_tree("a/best.ckpt", {"model": model_section()})
    pytester.makepyfile(gpumodels="raise ImportError('needs CUDA')\ndef build(cfg): ...\n")

    result = pytester.runpytest_subprocess(
        *CHECKS, "--ckpt-model-factory", "gpumodels:build", "--ckpt-target-allow", "mymodels", "-k", "config_present"
    )

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


def test_options_that_cannot_mean_anything_are_usage_errors(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    for args, said in (
        (("--ckpt-input-shape", "1"), "*--ckpt-input-shape '1': 1 value(s); expected N,C,H,W*"),
        (("--ckpt-input-shape", "1,2,3,4,5,6"), "*--ckpt-input-shape '1,2,3,4,5,6': 6 value(s)*"),
        (("--fix", "--fix-dry-run"), "*--fix and --fix-dry-run: choose one*"),
        (("--ckpt-time-tolerance", "-5"), "*--ckpt-time-tolerance '-5': expected a number of seconds, 0 or more*"),
        (("--ckpt-model-factory", "mymodels:buidl"), "*defines no 'buidl' at its top level*"),
        (("--ckpt-model-factory", "mymodelz:build"), "*no module 'mymodelz' importable from the rootdir*"),
        (("--ckpt-lightning-module", "mymodels:Nett"), "*defines no 'Nett' at its top level*"),
    ):
        result = pytester.runpytest(*CHECKS, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([said])
        assert "checkpoint(s) checked" not in result.stdout.str()  # no checkpoint blamed for a setting
    result = pytester.runpytest(*CHECKS, "--ckpt-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_user_schema_replaces_the_bundled_one(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    schema = {"type": "object", "required": ["width", "depth"]}
    (pytester.path / "schema.json").write_text(json.dumps(schema))
    gate_tree("a/best.ckpt", {"model": model_section()})
    result = run(pytester, "--ckpt-schema", "schema.json", "-k", "schema")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*$.model: 'depth' is a required property*"])


def test_discovery_problems_are_warnings_not_crashes(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    (pytester.path / "outputs" / "a" / "loop").symlink_to(pytester.path / "outputs")
    result = run(pytester, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*CkptgateDiscoveryWarning: ckptgate discovery: a/loop: symlink loop*"])


def test_config_source_is_recorded_in_junit_xml(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    run(pytester, "--ckpt-device", "cpu", "--junitxml", "out.xml")
    xml = (pytester.path / "out.xml").read_text()
    assert '<property name="config_source" value="sidecar: a/best.config.json" />' in xml
    assert '<property name="ckpt" value="a/best.ckpt" />' in xml


def test_user_checks_reuse_the_public_fixtures(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    gate_tree("b/best.ckpt")
    pytester.makepyfile(
        test_mine="""
        import torch

        def test_head_width(checkpoint, ckpt_model_config, ckpt_model, ckpt_state_dict, ckpt_input):
            assert ckpt_model_config.width == 4
            assert not ckpt_model.training
            assert "model.body.0.weight" in ckpt_state_dict
            assert ckpt_input.shape == (1, 3, 64, 64)
        """
    )
    result = pytester.runpytest("test_mine.py", "-rA")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_head_width[[]b/best.ckpt[]]*", "*no config found*"])


def junit_outcomes(path: Path) -> dict[str, str]:
    """testcase name -> passed/failed/skipped/error, from a JUnit XML file (works for subprocess runs)."""
    import xml.etree.ElementTree as ET

    found: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        found[case.get("name", "")] = outcome
    return found


def mixed_tree(gate_tree: Callable[..., Path], pytester: pytest.Pytester, lightning_ckpt: Path) -> None:
    import torch

    gate_tree("good_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    gate_tree("good_20251016_101500/checkpoints/last.ckpt", {"model": model_section()})
    gate_tree("noconfig_20251017_215423/checkpoints/best.ckpt")
    gate_tree("wide_20251018_023219/checkpoints/best.ckpt", {"model": model_section(width=8)})
    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    checkpoint["state_dict"]["model.body.0.weight"].fill_(float("inf"))
    torch.save(checkpoint, pytester.path / "inf.ckpt")
    gate_tree("diverged/last.ckpt", {"model": model_section()}, source=pytester.path / "inf.ckpt")


def test_xdist_gives_the_same_outcomes_as_a_serial_run(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], lightning_ckpt: Path
) -> None:
    mixed_tree(gate_tree, pytester, lightning_ckpt)
    serial = pytester.runpytest_subprocess(*CHECKS, "--junitxml", "serial.xml")
    parallel = pytester.runpytest_subprocess(*CHECKS, "-n", "2", "--junitxml", "parallel.xml")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    expected = junit_outcomes(pytester.path / "serial.xml")
    assert len(expected) == 5 * 5
    assert junit_outcomes(pytester.path / "parallel.xml") == expected
    assert expected["test_forward[diverged/last.ckpt-cpu]"] == "failure"
    assert expected["test_weights_load[good_20251016_101500/checkpoints/last.ckpt]"] == "passed"
    # The controller prints the same per-checkpoint verdicts as a serial run.
    for result in (serial, parallel):
        result.stdout.fnmatch_lines(
            [
                "*5 checkpoint(s) checked: 2 usable, 3 unusable",
                "*UNUSABLE diverged/last.ckpt",
                "*weights_load: 1 of 4 floating tensors in the state_dict hold non-finite values*",
                "*UNUSABLE noconfig_20251017_215423/checkpoints/best.ckpt",
                "*config_present: no config found*",
                "*UNUSABLE wide_20251018_023219/checkpoints/best.ckpt",
                "*weights_load: weights do not fit*",
            ]
        )


def test_config_checks_import_no_torch_and_open_no_checkpoint(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], lightning_ckpt: Path
) -> None:
    """A checkpoint whose config is a file is never opened by the config checks (a tree of thousands is checked
    at the speed of its config files); only one without any config file is read, for its own hyper_parameters."""
    mixed_tree(gate_tree, pytester, lightning_ckpt)
    missing = pytester.path / "outputs" / "noconfig_20251017_215423" / "checkpoints" / "best.ckpt"
    missing.rename(pytester.path / "aside.ckpt")
    for ckpt in (pytester.path / "outputs").rglob("*.ckpt"):
        ckpt.chmod(0)  # any attempt to open one would fail the run loudly
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            print("TORCH_IMPORTED", "torch" in sys.modules)
        """
    )
    result = pytester.runpytest_subprocess(*CHECKS, "-k", "config_present or config_schema", "-s")
    result.stdout.fnmatch_lines(["*TORCH_IMPORTED False*"])
    result.assert_outcomes(passed=8)
    (pytester.path / "aside.ckpt").rename(missing)
    result = pytester.runpytest_subprocess(*CHECKS, "-k", "config_present or config_schema", "-s")
    result.assert_outcomes(passed=8, failed=2)
    result.stdout.fnmatch_lines(["*no config found for noconfig_*", "*the checkpoint's hyper_parameters (none stored)"])


def test_runs_against_another_project_with_its_own_model_package(pytester: pytest.Pytester) -> None:
    """The installed plugin, no files copied: a src-layout package found through pytest's `pythonpath`."""
    import torch

    package = pytester.path / "src" / "teammodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("from torch import nn\n\ndef build(cfg):\n    return nn.Linear(cfg.features, 3)\n")
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        pythonpath = ["src"]
        ckpt_outputs = "runs"
        ckpt_model_factory = "teammodels.nets:build"
        ckpt_input_shape = "2,5"
        """
    )
    target = pytester.path / "runs" / "exp_20251015_231508" / "checkpoints"
    target.mkdir(parents=True)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in torch.nn.Linear(5, 3).state_dict().items()}},
        target / "best.ckpt",
    )
    (target / "best.config.yaml").write_text("model:\n  name: linear\n  features: 5\n")
    result = pytester.runpytest_subprocess(*CHECKS, "-p", "no:cacheprovider")
    result.assert_outcomes(**USABLE)


def test_a_non_utf8_checkpoint_name_is_checked_with_a_printable_id(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path
) -> None:
    gate_tree("good/best.ckpt", {"model": model_section()})
    run_dir = os.path.join(os.fsencode(pytester.path / "outputs"), b"run\xff_20251017_215423")
    os.makedirs(run_dir)
    with open(bare_lightning_ckpt, "rb") as source, open(os.path.join(run_dir, b"best.ckpt"), "wb") as target:
        target.write(source.read())
    result = run(pytester, "--ckpt-device", "cpu", "--junitxml", "out.xml")
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines(["*CkptgateDiscoveryWarning*run\\xff_20251017_215423: name is not valid UTF-8*"])
    # the id shows the byte as an escape (ids and messages must stay UTF-8: pytest-xdist sends them)
    result.stdout.fnmatch_lines(["*UNUSABLE run\\xff_20251017_215423/best.ckpt", "*no config found*"])
    xml = (pytester.path / "out.xml").read_text()  # the report stays well-formed
    assert "test_config_present[run\\\\xff_20251017_215423/best.ckpt]" in xml


def test_a_fifo_named_like_a_checkpoint_or_a_sidecar_neither_blocks_nor_crashes(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    ckpt = gate_tree("run/best.ckpt")
    os.mkfifo(ckpt.with_name("best.config.json"))
    os.mkfifo(ckpt.with_name("pipe.ckpt"))
    result = run(pytester, "--ckpt-device", "cpu", "-k", "config_present")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*run/best.config.json: not a regular file*"])
    result.stdout.fnmatch_lines(["*run/pipe.ckpt: named [*].ckpt but not a file*"])


def test_fix_writes_a_proven_sidecar_and_the_same_session_tests_it(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path
) -> None:
    ckpt = gate_tree("exp_20251017_215423/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    source = wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section(), "seed": 1})
    wandb_run(pytester.path, "run-20251017_215425-other001", {"model": model_section(width=8)})
    result = run(pytester, "--fix", "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*= ckptgate --fix =*", "*written: wrote best.config.json from wandb run-20251017_215424-j8v6ba0v*"]
    )
    written = json.loads(ckpt.with_name("best.config.json").read_text())
    assert written["model"] == model_section()
    assert "seed" not in written  # only what inference needs
    assert written["_provenance"]["source"]["file"] == "../../../wandb/run-20251017_215424-j8v6ba0v/files/config.yaml"
    assert written["_provenance"]["source"]["run_id"] == "j8v6ba0v"
    import hashlib

    assert written["_provenance"]["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_fix_shows_its_progress_on_a_terminal_and_its_time_in_its_summary(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("exp_20251017_215423/checkpoints/best.ckpt")
    wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section()})
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_configure(config):
            config.pluginmanager.get_plugin("terminalreporter").isatty = lambda: True  # as on a terminal
        """
    )
    result = run(pytester, "--fix-dry-run", "--ckpt-device", "cpu")
    assert "ckptgate --fix: tracing 1/1 exp_20251017_215423/checkpoints/best.ckpt" in result.stdout.str()
    result.stdout.fnmatch_lines(["1 checkpoint(s) without a config: 1 would-write (in *.* s, before the checks)"])
    quiet = run(pytester, "--fix-dry-run", "--ckpt-device", "cpu", "-q")
    assert "tracing 1/1" not in quiet.stdout.str()  # -q: no progress
    (pytester.path / "conftest.py").unlink()
    piped = pytester.runpytest_subprocess(*CHECKS, "--fix-dry-run", "--ckpt-device", "cpu")
    assert "tracing" not in piped.stdout.str()  # not a terminal: no progress


def test_fix_finds_the_wandb_run_hydra_keeps_in_the_run_folder(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    """Hydra changes into the run folder, so wandb writes `outputs/<run>/wandb`: no timestamp to match (the
    folder's name has none), no wandb/ at the root; the run lies in the checkpoint's run folder."""
    ckpt = gate_tree("ocr_training/checkpoints/best.ckpt")
    run_folder = pytester.path / "outputs" / "ocr_training"
    wandb_run(run_folder, "offline-run-20251017_215424-j8v6ba0v", {"model": model_section()})
    wandb_run(pytester.path / "outputs" / "other_run", "run-20251017_215424-other000", {"model": model_section()})
    result = run(pytester, "--fix", "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*written: wrote best.config.json from wandb offline-run-20251017_215424-j8v6ba0v (files/config.yaml) "
            "(inside the run folder)"
        ]
    )
    written = json.loads(ckpt.with_name("best.config.json").read_text())
    assert written["_provenance"]["matched_by"] == (
        "inside the run folder: it lies in the checkpoint's run folder "
        "(wandb/offline-run-20251017_215424-j8v6ba0v/files/config.yaml)"
    )


def test_fix_dry_run_writes_nothing_and_the_failure_says_what_fix_would_do(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path
) -> None:
    ckpt = gate_tree("exp_20251017_215423/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section()})
    result = run(pytester, "--fix-dry-run", "--ckpt-device", "cpu")
    result.assert_outcomes(failed=4)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["best.ckpt"]
    result.stdout.fnmatch_lines(
        [
            "*ckptgate --fix-dry-run (nothing written)*",
            "*1. wandb run-20251017_215424-j8v6ba0v (files/config.yaml) [[]timestamp: run started 1 s after*",
            "*verified: * tensors loaded strictly*",
            "*=> would-write: would write best.config.json*",
        ]
    )
    result.stdout.fnmatch_lines(["*no config found for *best.ckpt; --fix would recover it: would write*"])


def test_fix_under_xdist_recovers_once_and_workers_report_why_it_failed(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path
) -> None:
    gate_tree("good_20251017_215423/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    gate_tree("lost_20251015_231508/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section()})
    result = pytester.runpytest_subprocess(*CHECKS, "--fix", "-n", "2", "--ckpt-device", "cpu")
    result.assert_outcomes(passed=4, failed=4)
    assert result.stdout.str().count("= ckptgate --fix =") == 1
    result.stdout.fnmatch_lines(
        [
            "*no config found for lost_20251015_231508/checkpoints/best.ckpt; --fix could not recover it: no stored "
            "hyper_parameters*started 1 d 22 h 39 min after*"
        ]
    )


def test_fix_options_are_validated(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    result = pytester.runpytest(*CHECKS, "--fix", "--ckpt-time-tolerance", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-time-tolerance 'soon': expected a number of seconds*"])
    result = pytester.runpytest(*CHECKS, "--fix", "--ckpt-wandb", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-wandb *nowhere: not a folder*"])


def test_hints_name_the_command_the_user_ran(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    """A project that copied the checks into its own folder is told to run that folder, not `--pyargs`."""
    gate_tree("exp_20251017_215423/checkpoints/last.ckpt")
    pytester.mkdir("gatechecks").joinpath("test_gate.py").write_text(
        "from ckptgate.checks.test_checkpoints import *  # noqa: F403\n"
    )

    result = pytester.runpytest("gatechecks", "--ckpt-device", "cpu", "-k", "config_present")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*; run `pytest gatechecks --fix` to recover it"])
    assert "--pyargs" not in result.stdout.str()
