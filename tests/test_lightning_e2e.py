"""The gate on real Lightning projects, run as their users run it: from the project's root, one option.

The projects are written and trained by ``fixtures/lightning_projects.py`` the way Lightning's docs teach
(flat ``save_hyperparameters``, LightningCLI in both modes with and without saved hyperparameters, two
loggers, two trainings into one ``dirpath``, EMA, a forward that needs keyword arguments), with both
``lightning.pytorch`` and ``pytorch_lightning``. Every checkpoint must get the verdict of the answer key, with
the config file it names, built by the LightningModule route.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from conftest import ONLY_OUR_PLUGINS, REPO, ChecksRunner, DemoRun, pythonpath
from fixtures.lightning_projects import ProjectCheckpoint, demo_lightning_expectations

CHECKS = ("config_present", "config_schema", "weights_load", "forward")
KEY = demo_lightning_expectations()
SCENARIOS = sorted({(c.project, c.relpath.split("/", 1)[0]) for c in KEY})


def gate(project_root: Path, outputs: str, *options: str) -> DemoRun:
    """``pytest --pyargs ckptgate.checks`` from the project's root, as its user runs it (options as ``--x=v``
    words: a free path word would make pytest root the run elsewhere)."""
    xml = project_root.parent / f"junit-{project_root.name}-{outputs.replace('/', '_')}-{len(options)}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "ckptgate.checks",
        f"--ckpt-outputs={outputs}",
        "--ckpt-device=cpu",
        "-p",
        "no:cacheprovider",
        *ONLY_OUR_PLUGINS,
        *options,
        f"--junitxml={xml}",
    ]
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO)}
    done = subprocess.run(command, cwd=project_root, env=env, capture_output=True, text=True, timeout=300)
    return ChecksRunner.result(done.stdout, done.returncode, xml)


def checks_of(run: DemoRun, relpath: str) -> dict[str, tuple[str, str]]:
    return {check: run.outcomes[f"test_{check}[{relpath}{'-cpu' if check == 'forward' else ''}]"] for check in CHECKS}


def assert_verdicts(run: DemoRun, records: Iterable[ProjectCheckpoint], scenario: str, *, plain: bool) -> None:
    """Each checkpoint's checks pass up to the one the key says fails, with the cause it names."""
    for record in records:
        relpath = record.relpath.removeprefix(f"{scenario}/")
        failing = record.failing_check if not plain else record.failing_check_without_kwargs
        words = record.reason if not plain else record.reason_without_kwargs
        seen = checks_of(run, relpath)
        for check in CHECKS:
            outcome, message = seen[check]
            if failing is None or CHECKS.index(check) < CHECKS.index(failing):
                assert outcome == "passed", f"{record.relpath} {check}: {message}\n{run.stdout[-2000:]}"
            elif check == failing:
                assert outcome == "failure", f"{record.relpath} {check} should fail ({record.case})"
                assert all(word in message.lower() for word in words), f"{record.relpath}: {message}"
            else:  # later checks are blocked, never skipped
                assert outcome == "failure" and "blocked by" in message, (record.relpath, check, message)


@pytest.fixture(scope="module")
def projects(demo_root: Path) -> Path:
    """The demo's Lightning projects (``<demo>/lightning``, ``<demo>/lightning-pl``), built once per session."""
    return demo_root


@pytest.mark.parametrize(("project", "scenario"), SCENARIOS, ids=[f"{p}:{s}" for p, s in SCENARIOS])
def test_every_checkpoint_gets_its_own_verdict(projects: Path, project: str, scenario: str) -> None:
    records = [c for c in KEY if c.project == project and c.relpath.startswith(f"{scenario}/")]
    module = records[0].lightning_module
    kwargs = [f"--ckpt-forward-kwarg={k}={str(v).lower()}" for k, v in records[0].forward_kwargs.items()]
    run = gate(projects / project, f"outputs/{scenario}", f"--ckpt-lightning-module={module}", *kwargs, "-v")
    assert_verdicts(run, records, scenario, plain=False)
    for record in records:
        relpath = record.relpath.removeprefix(f"{scenario}/")
        properties = run.properties(f"test_weights_load[{relpath}]")
        if record.config_file is not None and record.usable:
            expected = record.config_file.removeprefix(f"{scenario}/")
            assert properties["config_source"] == f"{record.config_source}: {expected}", record.relpath
        elif record.config_source is not None and record.usable:
            assert properties["config_source"].startswith(f"{record.config_source}: "), record.relpath
        if record.usable:
            assert properties["model_route"].startswith("LightningModule litproj.model."), properties
            assert "built as load_from_checkpoint does" in properties["model_route"]
    assert run.returncode == (0 if all(r.usable for r in records) else 1), run.stdout[-2000:]


def test_a_forward_that_needs_keyword_arguments_fails_without_them_and_says_why(projects: Path) -> None:
    (record,) = [c for c in KEY if c.forward_kwargs]
    scenario = record.relpath.split("/", 1)[0]
    run = gate(projects / record.project, f"outputs/{scenario}", f"--ckpt-lightning-module={record.lightning_module}")
    assert_verdicts(run, [record], scenario, plain=True)
    _, message = checks_of(run, record.relpath.removeprefix(f"{scenario}/"))["forward"]
    assert "example_input_array" in message  # the input it was given
    assert "litproj/model.py" in message  # the user's frame, not torch's
    assert "ckpt_forward_kwargs" in message  # the option that changes it
