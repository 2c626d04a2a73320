"""The shipped checks on the demo tree: every demo checkpoint gets exactly the verdict its case calls for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.demo_tree import demo_expectations

CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")
REPO = Path(__file__).resolve().parents[1]


DEMO_OPTIONS = (
    "-p",
    "fixtures.demo_plugin",
    "--ckpt-model-factory",
    "fixtures.demo_models:build_model",
    "--ckpt-device",
    "cpu",
    "-p",
    "no:cacheprovider",
)


@dataclass
class DemoRun:
    stdout: str
    returncode: int
    outcomes: dict[str, tuple[str, str]]  # test name -> (passed/failure/error/skipped, message)


def run_checks(outputs: Path, workdir: Path, *extra: str) -> DemoRun:
    """The shipped checks in a fresh pytest process, as a user runs them; outcomes read from JUnit XML."""
    xml = workdir / "junit.xml"
    command = [sys.executable, "-m", "pytest", "--pyargs", "ckptgate.checks", "--ckpt-outputs", str(outputs)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [*command, *DEMO_OPTIONS, *extra, "--junitxml", str(xml)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "") + "\n" + (child.text or "")
        outcomes[case.get("name", "")] = (outcome, message)
    return DemoRun(done.stdout, done.returncode, outcomes)


@pytest.fixture(scope="module")
def demo_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return run_checks(demo_root / "outputs", tmp_path_factory.mktemp("demo-run"))


@pytest.mark.parametrize("case", demo_expectations(), ids=lambda case: case.relpath)
def test_each_demo_checkpoint_gets_its_expected_verdict(case: object, demo_run: DemoRun) -> None:
    outcomes = demo_run.outcomes
    relpath = case.relpath  # type: ignore[attr-defined]
    by_check = {
        "config_present": outcomes[f"test_config_present[{relpath}]"],
        "config_schema": outcomes[f"test_config_schema[{relpath}]"],
        "weights_load": outcomes[f"test_weights_load[{relpath}]"],
        "forward": outcomes[f"test_forward[{relpath}-cpu]"],
    }
    if case.usable:  # type: ignore[attr-defined]
        assert {check: outcome for check, (outcome, _) in by_check.items()} == dict.fromkeys(CHECK_ORDER, "passed")
        return
    failing = case.failing_check  # type: ignore[attr-defined]
    index = CHECK_ORDER.index(failing)
    for check in CHECK_ORDER[:index]:
        assert by_check[check][0] == "passed", check
    outcome, message = by_check[failing]
    assert outcome == "failure"
    assert case.reason.lower() in message.lower()  # type: ignore[attr-defined]
    for check in CHECK_ORDER[index + 1 :]:
        later, pointer = by_check[check]
        assert later == "failure", f"{check} must fail, not skip or pass, when {failing} failed"
        assert pointer.removeprefix("Failed: ").startswith(f"blocked by test_{failing}[{relpath}]: ")


def test_demo_summary_counts_match_the_answer_key(demo_run: DemoRun) -> None:
    cases = demo_expectations()
    usable = sum(case.usable for case in cases)
    assert f"{len(cases)} checkpoint(s) checked: {usable} usable, {len(cases) - usable} unusable" in demo_run.stdout
    assert demo_run.returncode == pytest.ExitCode.TESTS_FAILED


def test_the_family_rule_reaches_the_gate_through_the_validate_hook(demo_root: Path, tmp_path: Path) -> None:
    """Decoder in_channels that contradict the encoder's channels (known only by its name) fail the schema
    check with the demo plugin, and are caught only later, by the weights, without it."""
    run = next(c for c in demo_expectations() if c.config_source == "sidecar" and c.relpath.endswith("/best.ckpt"))
    source = demo_root / "outputs" / run.relpath
    target = tmp_path / "outputs" / "exp_20251020_090000" / "checkpoints" / "best.ckpt"
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    config = json.loads(source.with_name(source.name.removesuffix(".ckpt") + ".config.json").read_text())
    config["model"]["decoder"]["params"]["in_channels"] = [16, 24, 40]
    target.with_name("best.config.json").write_text(json.dumps(config))
    with_plugin = run_checks(tmp_path / "outputs", tmp_path)
    outcome, message = with_plugin.outcomes["test_config_schema[exp_20251020_090000/checkpoints/best.ckpt]"]
    assert outcome == "failure"
    assert "$.model.decoder.params.in_channels: [16, 24, 40]" in message
    without = run_checks(tmp_path / "outputs", tmp_path, "-p", "no:fixtures.demo_plugin")
    assert without.outcomes["test_config_schema[exp_20251020_090000/checkpoints/best.ckpt]"][0] == "passed"
    assert without.outcomes["test_weights_load[exp_20251020_090000/checkpoints/best.ckpt]"][0] == "failure"
