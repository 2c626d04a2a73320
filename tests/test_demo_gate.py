"""The shipped checks on the demo tree: every demo checkpoint gets exactly the verdict its case calls for."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from fixtures.demo_tree import demo_expectations

CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory, checks: Any) -> Any:
    return checks.run(demo_root / "outputs", tmp_path_factory.mktemp("demo-run"))


@pytest.mark.parametrize("case", demo_expectations(), ids=lambda case: case.relpath)
def test_each_demo_checkpoint_gets_its_expected_verdict(case: object, demo_run: Any) -> None:
    relpath = case.relpath  # type: ignore[attr-defined]
    by_check = demo_run.by_check(relpath)
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


def test_demo_summary_counts_match_the_answer_key(demo_run: Any) -> None:
    cases = demo_expectations()
    usable = sum(case.usable for case in cases)
    assert f"{len(cases)} checkpoint(s) checked: {usable} usable, {len(cases) - usable} unusable" in demo_run.stdout
    assert demo_run.returncode == pytest.ExitCode.TESTS_FAILED


def test_the_family_rule_reaches_the_gate_through_the_validate_hook(
    demo_root: Path, tmp_path: Path, checks: Any
) -> None:
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
    with_plugin = checks.run(tmp_path / "outputs", tmp_path)
    outcome, message = with_plugin.outcomes["test_config_schema[exp_20251020_090000/checkpoints/best.ckpt]"]
    assert outcome == "failure"
    assert "$.model.decoder.params.in_channels: [16, 24, 40]" in message
    without = checks.run(tmp_path / "outputs", tmp_path, "-p", "no:fixtures.demo_plugin")
    assert without.outcomes["test_config_schema[exp_20251020_090000/checkpoints/best.ckpt]"][0] == "passed"
    assert without.outcomes["test_weights_load[exp_20251020_090000/checkpoints/best.ckpt]"][0] == "failure"


def test_the_sample_report_in_examples_is_what_the_demo_renders(demo_root: Path, tmp_path: Path, checks: Any) -> None:
    """README links examples/demo-report.md: it must stay what the current code renders from the demo."""
    run = checks.run(demo_root / "outputs", tmp_path, "--fix-dry-run", "--ckpt-report", str(tmp_path / "r.md"))
    assert run.returncode == pytest.ExitCode.TESTS_FAILED

    def stable(text: str) -> list[str]:
        """Without what differs between two builds of the same demo: the generation time, where the tree
        lies, and byte sizes (the checkpoints hold their temporary build folder's path)."""
        skipped = ("**Generated on:**", "**Outputs directory:**")
        lines = [line for line in text.splitlines() if not line.startswith(skipped)]
        lines = [re.sub(r"\| [\d.]+ \|", "| N |", line) for line in lines]  # size cells
        return [re.sub(r"[\d,.]+ (MB|bytes)", r"N \1", line) for line in lines]

    committed = (REPO / "examples" / "demo-report.md").read_text()
    assert stable((tmp_path / "r.md").read_text()) == stable(committed), (
        "examples/demo-report.md is stale: regenerate it with "
        "`pytest checks/ --fix-dry-run --ckpt-report examples/demo-report.md`"
    )
