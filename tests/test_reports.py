"""Reports and the CI gate: Markdown, JSON (+ schema), JUnit properties, baseline, shards and their merge."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate import markdown, results, sharding
from ckptgate.__main__ import main as ckptgate_main
from hypothesis import given
from hypothesis import strategies as st

from conftest import model_section, wandb_run

CHECKS = ("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mixed(pytester: pytest.Pytester, gate_tree: Callable[..., Path], lightning_ckpt: Path) -> Path:
    """Two usable checkpoints, one without a config, one whose weights do not fit, one truncated."""
    gate_tree("good_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    gate_tree("good_20251016_101500/checkpoints/last.ckpt", {"model": model_section()})
    gate_tree("lost_20251017_215423/checkpoints/best.ckpt")
    gate_tree("wide_20251018_023219/checkpoints/best-v2.ckpt", {"model": model_section(width=8)})
    broken = gate_tree("cut_20251018_023219/checkpoints/last.ckpt", {"model": model_section()})
    broken.write_bytes(lightning_ckpt.read_bytes()[:4000])
    return pytester.path / "outputs"


def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row as GitHub splits it: a pipe preceded by an odd number of backslashes
    is part of its cell."""
    cells, current, index = [], "", 0
    while index < len(line):
        char = line[index]
        if char == "\\" and index + 1 < len(line):
            current += line[index : index + 2]
            index += 2
            continue
        if char == "|":
            cells.append(current)
            current = ""
        else:
            current += char
        index += 1
    cells.append(current)
    return [cell.strip() for cell in cells[1:-1]]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every Markdown table row."""
    return [split_row(line) for line in text.splitlines() if line.startswith("|")]


def test_markdown_and_json_reports_say_which_checkpoints_are_usable_and_why(
    pytester: pytest.Pytester, mixed: Path
) -> None:
    result = pytester.runpytest(*CHECKS, "--ckpt-report", "out/report.md", "--ckpt-json", "out/report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*wrote JSON report *report.json", "*wrote Markdown report *report.md"])
    document = results.load(pytester.path / "out" / "report.json")  # validated against the bundled schema
    assert document["totals"] | {"usable_bytes": 0, "unusable_bytes": 0, "total_bytes": 0} == {
        "scanned": 5,
        "usable": 2,
        "unusable": 3,
        "unchecked": 0,
        "expected_unusable": 0,
        "usable_bytes": 0,
        "unusable_bytes": 0,
        "total_bytes": 0,
        "files": 5,
        "usable_files": 2,
        "unusable_files": 3,
        "pinned": 0,
        "drifted": 0,
        "unpinned": 0,
    }
    by_path = {entry["path"]: entry for entry in document["checkpoints"]}
    lost = by_path["lost_20251017_215423/checkpoints/best.ckpt"]
    assert lost["status"] == "unusable"
    assert lost["root_cause"]["check"] == "config_present"
    assert lost["checks"] == {
        "config_present": "failed",
        "config_schema": "failed",
        "weights_load": "failed",
        "forward[cpu]": "failed",
    }
    assert lost["recovery"] is None  # not traced in this run
    good = by_path["good_20251016_101500/checkpoints/best.ckpt"]
    assert good["config_source"] == "sidecar: good_20251016_101500/checkpoints/best.config.json"
    assert (good["type"], good["kind"], good["run"]) == ("Best checkpoint", "best", "good_20251016_101500")
    assert by_path["wide_20251018_023219/checkpoints/best-v2.ckpt"]["type"] == "Best checkpoint v2"
    assert good["size_bytes"] == (mixed / good["path"]).stat().st_size
    assert document["totals"]["unusable_bytes"] == sum(
        (mixed / path).stat().st_size for path, entry in by_path.items() if entry["status"] == "unusable"
    )

    text = (pytester.path / "out" / "report.md").read_text()
    assert "**Total checkpoints scanned:** 5" in text
    assert "**Usable checkpoints:** 2 (40.0%)" in text
    assert "**Unusable checkpoints:** 3 (60.0%)" in text
    # grouped by the date of their run, newest first
    assert text.index("### October 18, 2025") < text.index("### October 17, 2025")
    assert "good_20251016" not in text.split("## Disk Space")[0]  # usable ones are not in the unusable list
    rows = table_rows(text)
    header = rows[rows.index(next(r for r in rows if r[0] == "Checkpoint Path"))]
    assert header == [
        "Checkpoint Path",
        "Size (MB)",
        "Modified (UTC)",
        "Type",
        "Root cause",
        "Recoverable with `--fix`",
    ]
    lost_row = next(r for r in rows if "lost_20251017" in r[0])
    assert len(lost_row) == len(header)  # renders as a table on GitHub: no stray pipes
    assert lost_row[3] == "Best checkpoint"
    assert lost_row[4] == "`config_present`: no config found; run `pytest --pyargs ckptgate.checks --fix` to recover it"
    assert lost_row[5] == "not traced (run with `--fix-dry-run`)"
    assert "- **Unusable checkpoints:**" in text and "across 3 files" in text


def test_the_json_report_carries_the_recovery_trace(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], bare_lightning_ckpt: Path
) -> None:
    gate_tree("lost_20251017_215423/checkpoints/best.ckpt", source=bare_lightning_ckpt)
    wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section()})
    pytester.runpytest(*CHECKS, "--fix-dry-run", "--ckpt-json", "r.json", "--ckpt-report", "r.md")
    document = results.load(pytester.path / "r.json")
    assert document["recovery"] == "dry-run"
    [entry] = document["checkpoints"]
    recovery = entry["recovery"]
    assert recovery["outcome"] == "would-write"
    assert recovery["chosen"] == "wandb run-20251017_215424-j8v6ba0v (files/config.yaml)"
    [candidate] = recovery["candidates"]
    assert candidate["verified"] and candidate["evidence"] == "timestamp" and candidate["run_id"] == "j8v6ba0v"
    row = next(r for r in table_rows((pytester.path / "r.md").read_text()) if "lost_" in r[0])
    assert row[4] == "`config_present`: no config found"
    assert row[5] == "yes: from wandb run-20251017_215424-j8v6ba0v (files/config.yaml)"


def test_junit_xml_carries_per_checkpoint_properties(pytester: pytest.Pytester, mixed: Path) -> None:
    import xml.etree.ElementTree as ET

    pytester.runpytest(*CHECKS, "--junitxml", "junit.xml")
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    props = {
        p.get("name"): p.get("value")
        for p in cases["test_forward[good_20251016_101500/checkpoints/best.ckpt-cpu]"].iter("property")
    }
    size = (mixed / "good_20251016_101500/checkpoints/best.ckpt").stat().st_size
    assert props["ckpt"] == "good_20251016_101500/checkpoints/best.ckpt"
    assert props["ckpt_size_mb"] == f"{size / 1e6:.1f}"
    assert props["ckpt_run"] == "good_20251016_101500"
    assert props["config_source"] == "sidecar: good_20251016_101500/checkpoints/best.config.json"
    lost = {
        p.get("name"): p.get("value")
        for p in cases["test_weights_load[lost_20251017_215423/checkpoints/best.ckpt]"].iter("property")
    }
    assert lost["ckpt_root_check"] == "config_present"
    assert lost["ckpt_root_cause"].startswith("no config found for lost_20251017_215423")


def test_an_unwritable_report_path_is_an_error_exit_not_a_silent_success(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("good/best.ckpt", {"model": model_section()})
    (pytester.path / "blocked").write_text("a file where a folder should be")
    result = pytester.runpytest(*CHECKS, "--ckpt-json", "blocked/r.json")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["*ckptgate: could not write *"])


# -- baseline ---------------------------------------------------------------------------------------------
def test_a_baseline_lets_a_red_repository_adopt_the_gate(
    pytester: pytest.Pytester, mixed: Path, gate_tree: Callable[..., Path]
) -> None:
    first = pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json", "--ckpt-baseline-update")
    assert first.ret == pytest.ExitCode.TESTS_FAILED  # the truth is still reported while recording it
    recorded = json.loads((pytester.path / "baseline.json").read_text())
    assert recorded["format"] == "ckptgate-baseline"
    assert {path: entry["check"] for path, entry in recorded["checkpoints"].items()} == {
        "cut_20251018_023219/checkpoints/last.ckpt": "weights_load",
        "lost_20251017_215423/checkpoints/best.ckpt": "config_present",
        "wide_20251018_023219/checkpoints/best-v2.ckpt": "weights_load",
    }

    green = pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json")
    assert green.ret == pytest.ExitCode.OK
    green.assert_outcomes(passed=8 + 2 + 2, xfailed=4 + 2 + 2)
    green.stdout.fnmatch_lines(["*5 checkpoint(s) checked: 2 usable, 3 unusable (3 expected, in the baseline)*"])

    # a new unusable checkpoint fails the gate
    gate_tree("new_20251020_100000/checkpoints/best.ckpt")
    red = pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json")
    assert red.ret == pytest.ExitCode.TESTS_FAILED
    red.stdout.fnmatch_lines(["*UNUSABLE new_20251020_100000/checkpoints/best.ckpt"])
    (mixed / "new_20251020_100000").joinpath("checkpoints", "best.config.json").write_text(
        json.dumps({"model": model_section()})
    )

    # a listed checkpoint that became usable fails strictly, asking to shrink the baseline
    (mixed / "lost_20251017_215423/checkpoints/best.config.json").write_text(json.dumps({"model": model_section()}))
    better = pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json", "-rf")
    assert better.ret == pytest.ExitCode.TESTS_FAILED
    better.stdout.fnmatch_lines(["*XPASS(strict)*listed in the baseline baseline.json*--ckpt-baseline-update*"])

    # a listed checkpoint that got worse (now fails an earlier check) fails too
    (mixed / "wide_20251018_023219/checkpoints/best-v2.config.json").write_text("{broken")
    worse = pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json", "-k", "wide")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.assert_outcomes(failed=2, xfailed=2)  # config_present and the blocked schema check

    # updating shrinks it: usable ones leave, the worse one is re-recorded, deleted files leave
    (mixed / "cut_20251018_023219/checkpoints/last.ckpt").unlink()
    pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json", "--ckpt-baseline-update")
    updated = json.loads((pytester.path / "baseline.json").read_text())["checkpoints"]
    assert {path: entry["check"] for path, entry in updated.items()} == {
        "wide_20251018_023219/checkpoints/best-v2.ckpt": "config_present"
    }
    assert pytester.runpytest(*CHECKS, "--ckpt-baseline", "baseline.json").ret == pytest.ExitCode.OK


def test_a_partial_run_does_not_empty_the_baseline(pytester: pytest.Pytester, mixed: Path) -> None:
    pytester.runpytest(*CHECKS, "--ckpt-baseline", "b.json", "--ckpt-baseline-update")
    before = json.loads((pytester.path / "b.json").read_text())
    pytester.runpytest(*CHECKS, "--ckpt-baseline", "b.json", "--ckpt-baseline-update", "-k", "good")
    assert json.loads((pytester.path / "b.json").read_text()) == before


def test_bad_baseline_and_shard_options_are_usage_errors(pytester: pytest.Pytester, mixed: Path) -> None:
    (pytester.path / "b.json").write_text('{"format": "something else"}')
    for args, message in [
        (("--ckpt-baseline", "b.json"), "*--ckpt-baseline *b.json: not a ckptgate baseline*"),
        (("--ckpt-baseline-update",), "*--ckpt-baseline-update needs --ckpt-baseline FILE*"),
        (("--ckpt-shard", "5/4"), "*--ckpt-shard '5/4': expected K/N with 1 <= K <= N*"),
        (("--ckpt-shard", "two"), "*--ckpt-shard 'two': expected K/N*"),
    ]:
        result = pytester.runpytest(*CHECKS, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])
    assert (pytester.path / "b.json").read_text() == '{"format": "something else"}'  # untouched


# -- shards -----------------------------------------------------------------------------------------------
@given(st.lists(st.text(min_size=1, max_size=40), unique=True, max_size=60), st.integers(1, 7))
def test_shards_partition_the_checkpoints(relpaths: list[str], count: int) -> None:
    shards = [[p for p in relpaths if sharding.shard_of(p, count) == k] for k in range(1, count + 1)]
    assert sorted(p for shard in shards for p in shard) == sorted(relpaths)
    assert all(sharding.shard_of(p, count) == sharding.shard_of(p, count) for p in relpaths)


def test_shard_assignment_is_stable_across_processes() -> None:
    """Not Python's randomised hash: the same path lands in the same shard on every CI machine."""
    paths = "('a/best.ckpt', 'b/last.ckpt', 'r\\xff.ckpt')"
    code = f"from ckptgate import sharding; print([sharding.shard_of(p, 4) for p in {paths}])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str([sharding.shard_of(p, 4) for p in ("a/best.ckpt", "b/last.ckpt", "r\xff.ckpt")])


def test_merged_shard_reports_have_the_totals_of_an_unsharded_run(
    pytester: pytest.Pytester, mixed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.runpytest(*CHECKS, "--ckpt-json", "all.json", "--ckpt-report", "all.md")
    for k in (1, 2, 3):
        result = pytester.runpytest(*CHECKS, "--ckpt-shard", f"{k}/3", "--ckpt-json", f"s{k}.json")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)
    shards = [results.load(pytester.path / f"s{k}.json") for k in (1, 2, 3)]
    assert sorted(e["path"] for s in shards for e in s["checkpoints"]) == sorted(
        e["path"] for e in results.load(pytester.path / "all.json")["checkpoints"]
    )  # each checkpoint in exactly one shard
    code = ckptgate_main(
        [
            "merge",
            *(str(pytester.path / f"s{k}.json") for k in (1, 2, 3)),
            "--json",
            str(pytester.path / "m.json"),
            "--markdown",
            str(pytester.path / "m.md"),
        ]
    )
    assert code == 1  # some checkpoint is unusable: the gate's meaning
    merged, unsharded = results.load(pytester.path / "m.json"), results.load(pytester.path / "all.json")
    assert merged["totals"] == unsharded["totals"]
    assert merged["shards"] == ["1/3", "2/3", "3/3"]
    assert [(e["path"], e["status"], e["root_cause"]) for e in merged["checkpoints"]] == [
        (e["path"], e["status"], e["root_cause"]) for e in unsharded["checkpoints"]
    ]
    assert "5 checkpoint(s) from 3 report(s) (1/3, 2/3, 3/3): 2 usable, 3 unusable" in capsys.readouterr().out
    assert table_rows((pytester.path / "m.md").read_text()) == table_rows((pytester.path / "all.md").read_text())


def test_merge_refuses_reports_that_disagree_or_are_not_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {
        "path": "a/best.ckpt",
        "run": "a",
        "run_timestamp": None,
        "kind": "best",
        "type": "Best checkpoint",
        "size_bytes": 1,
        "modified": None,
        "status": "usable",
        "checks": {"config_present": "passed"},
        "root_cause": None,
        "config_source": None,
        "recovery": None,
        "baseline": False,
    }

    def report(status: str, shard: str) -> dict[str, Any]:
        checkpoints = [entry | {"status": status}]
        return {
            "format": "ckptgate-report",
            "version": 1,
            "tool": "t",
            "generated_at": "2026-01-01T00:00:00+00:00",
            "outputs_dir": "outputs",
            "shards": [shard],
            "recovery": None,
            "totals": results.totals(checkpoints),
            "checkpoints": checkpoints,
        }

    (tmp_path / "a.json").write_text(json.dumps(report("usable", "1/2")))
    (tmp_path / "b.json").write_text(json.dumps(report("unusable", "2/2")))
    (tmp_path / "c.json").write_text('{"format": "nope"}')
    assert ckptgate_main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "a/best.ckpt is in two shards with different results" in capsys.readouterr().err
    assert ckptgate_main(["merge", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    assert "c.json: not a ckptgate report" in capsys.readouterr().err
    assert ckptgate_main(["merge", str(tmp_path / "a.json"), "--json", str(tmp_path / "o.json")]) == 0
    assert results.load(tmp_path / "o.json")["totals"]["usable"] == 1


# -- disk totals ------------------------------------------------------------------------------------------
def entry(path: str, status: str, size: int, same_file_as: str | None = None) -> dict[str, Any]:
    found = {"path": path, "status": status, "size_bytes": size, "baseline": False, "same_file_as": same_file_as}
    return found if same_file_as is not None else {k: v for k, v in found.items() if k != "same_file_as"}


def test_totals_count_each_file_once_and_each_name_as_a_checkpoint() -> None:
    entries = [
        entry("deploy/prod.ckpt", "usable", 100, "run/checkpoints/epoch=2.ckpt"),
        entry("run/checkpoints/epoch=2.ckpt", "usable", 100),
        entry("run/checkpoints/last.ckpt", "unusable", 100, "run/checkpoints/epoch=2.ckpt"),  # its own verdict
        entry("run/checkpoints/best.ckpt", "unusable", 7),  # an entry of a report written before same_file_as
    ]
    assert results.totals(entries) == {
        "scanned": 4,
        "usable": 2,
        "unusable": 2,
        "unchecked": 0,
        "expected_unusable": 0,
        "usable_bytes": 100,
        "unusable_bytes": 107,  # a file with a usable and an unusable name is in both
        "total_bytes": 107,
        "files": 2,
        "usable_files": 1,
        "unusable_files": 2,
        "pinned": 0,
        "drifted": 0,
        "unpinned": 0,
    }
    # shards split the names of one file: each shard counts it, the merge once
    alone = results.totals(entries[:1])
    assert (alone["total_bytes"], alone["files"]) == (100, 1)


def test_a_file_reached_by_several_names_is_counted_once_and_each_name_judged(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    outputs = pytester.path / "outputs"
    real = gate_tree("run_20251016_101500/checkpoints/epoch=2.ckpt", {"model": model_section()})
    (outputs / "deploy").mkdir()
    os.symlink("../run_20251016_101500/checkpoints/epoch=2.ckpt", outputs / "deploy" / "prod.ckpt")
    os.link(real, real.with_name("copy.ckpt"))  # a hard link, no config of its own
    other = gate_tree("run_20251017_215423/checkpoints/best.ckpt", {"model": model_section()})

    pytester.runpytest(*CHECKS, "--ckpt-json", "r.json")

    document = results.load(pytester.path / "r.json")
    by_path = {e["path"]: e for e in document["checkpoints"]}
    assert {path: (e["status"], e["same_file_as"]) for path, e in by_path.items()} == {
        "deploy/prod.ckpt": ("usable", "run_20251016_101500/checkpoints/copy.ckpt"),
        "run_20251016_101500/checkpoints/copy.ckpt": ("unusable", None),
        "run_20251016_101500/checkpoints/epoch=2.ckpt": ("usable", "run_20251016_101500/checkpoints/copy.ckpt"),
        "run_20251017_215423/checkpoints/best.ckpt": ("usable", None),
    }
    beside_target = "sidecar: run_20251016_101500/checkpoints/epoch=2.config.json"
    assert by_path["deploy/prod.ckpt"]["config_source"] == beside_target  # the link's config, beside its target
    assert by_path["run_20251016_101500/checkpoints/copy.ckpt"]["root_cause"]["check"] == "config_present"
    size, other_size = real.stat().st_size, other.stat().st_size
    totals = document["totals"]
    assert (totals["scanned"], totals["usable"], totals["unusable"], totals["files"]) == (4, 3, 1, 2)
    assert totals["total_bytes"] == size + other_size
    assert (totals["usable_bytes"], totals["unusable_bytes"]) == (size + other_size, size)


# -- markdown cells ---------------------------------------------------------------------------------------
@given(st.text(max_size=80))
def test_markdown_cells_never_break_a_table_row(text: str) -> None:
    cell = markdown._cell(text)
    assert "\n" not in cell and "\r" not in cell
    assert len(split_row(f"| {cell} | x |")) == 2


# -- the CI recipe ----------------------------------------------------------------------------------------
def test_the_ci_recipe_parses_and_uses_only_real_options(pytester: pytest.Pytester) -> None:
    workflow = yaml.safe_load((REPO / "examples" / "github-actions-checkpoint-gate.yml").read_text())
    commands = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    options = {token.split("=")[0] for command in commands for token in command.split() if token.startswith("--")}
    help_text = pytester.runpytest("--help").stdout.str()
    pytest_options = {o for o in options if o.startswith(("--ckpt", "--fix"))}
    expected = {"--ckpt-outputs", "--ckpt-shard", "--ckpt-baseline", "--ckpt-pins", "--ckpt-json", "--fix-dry-run"}
    assert pytest_options >= expected
    for option in pytest_options:
        assert re.search(rf"^\s+{re.escape(option)}\b", help_text, re.M), f"{option} is not a real option"
    shards = workflow["jobs"]["gate"]["strategy"]["matrix"]["shard"]
    assert workflow["env"]["SHARDS"] == len(shards) and shards == list(range(1, len(shards) + 1))
    merge = next(command for command in commands if "python -m ckptgate merge" in command)
    assert "--json" in merge and "--markdown" in merge
    with pytest.raises(SystemExit) as exit_info:
        ckptgate_main(["merge", "--help"])
    assert exit_info.value.code == 0


def test_the_report_suggests_fix_dry_run_only_where_fix_would_trace_and_shows_small_sizes() -> None:
    from ckptgate.markdown import _fix_cell, _size, traceable

    def entry(check: str, message: str) -> dict[str, Any]:
        return {"root_cause": {"check": check, "message": message}, "recovery": None}

    missing = entry("config_present", "no config found; run pytest with --fix to recover it")
    ambiguous = entry("config_present", "2 run logs could be the config of a/best.ckpt and they disagree (...)")
    broken = entry("config_present", "a/best.config.json: not valid JSON: Expecting value at line 1")
    weights = entry("weights_load", "weights do not fit the model built by factory m:b")
    assert [traceable(e) for e in (missing, ambiguous, broken, weights)] == [True, True, False, False]
    assert _fix_cell(missing, None) == "not traced (run with `--fix-dry-run`)"
    assert _fix_cell(broken, None) == "n/a (its config file is broken: mend it)"
    assert _fix_cell(weights, None) == "n/a (has a config)"
    assert [_size(n) for n in (0, 2_000, 31_400_000)] == ["0.0", "0.002", "31.4"]
