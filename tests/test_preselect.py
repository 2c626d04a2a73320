"""`-k` applied while checks are parametrized (ckptgate.preselect): pytest's selection, fewer items built."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from ckptgate import preselect

from conftest import ONLY_OUR_PLUGINS, model_section

# Another plugin's collection hooks turn pre-selection off by design: these runs load ours only.
CHECKS = ("--pyargs", "ckptgate.checks", *ONLY_OUR_PLUGINS)
# Checkpoint paths that -k expressions can hit by substring: a run named after a config sweep, a "forward"
# in a file name, upper case.
CHECKPOINTS = (
    "config_sweep_20250101_000000/checkpoints/best.ckpt",
    "config_sweep_20250101_000000/checkpoints/last.ckpt",
    "unet_20250102_000000/checkpoints/Forward-Best.ckpt",
    "unet_20250102_000000/checkpoints/epoch=3.ckpt",
)
USER_CHECK = """
import pytest

@pytest.mark.parametrize("n", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_mine(checkpoint, n):
    assert checkpoint.relpath
"""
EXPRESSIONS = (
    "CONFIG",  # the shipped checks' names, and a run folder's
    "not config",
    "forward and cpu",
    "weights or cuda",
    "best and not forward",  # a checkpoint's name, case-insensitively
    "config_schema[config_sweep",  # across the function's name and the id
    "test_checkpoints.py and schema",  # the module's name
    "slow",  # a mark of one parameter set
    "mine and 2",
    "nothing_matches_this",
)


@pytest.fixture
def tree(pytester: pytest.Pytester) -> Path:
    """Checkpoints that are never read (collection only), a sidecar each, and a user's own parametrized check."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nmarkers = slow\nckpt_target_allow = mymodels\n")
    pytester.makepyfile(test_user=USER_CHECK)
    outputs = pytester.path / "outputs"
    for relpath in CHECKPOINTS:
        path = outputs / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"never read")
        path.with_name(path.stem + ".config.json").write_text(json.dumps({"model": model_section()}))
    return outputs


def collected(pytester: pytest.Pytester, *args: str) -> tuple[list[str], int, pytest.RunResult]:
    """The node ids a run selects, how many items it built, and the run."""
    result = pytester.runpytest(*CHECKS, "test_user.py", "--ckpt-outputs", "outputs", "--collect-only", "-q", *args)
    ids = [line for line in result.outlines if "::" in line]
    deselected = re.search(r"(\d+) deselected", result.stdout.str())
    return ids, len(ids) + (int(deselected.group(1)) if deselected else 0), result


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_same_checks_are_selected_as_without_preselection(
    pytester: pytest.Pytester, tree: Path, expression: str
) -> None:
    with_it, built_with, _ = collected(pytester, "-k", expression)
    without, built_without, _ = collected(pytester, "-k", expression, "-o", f"{preselect.INI}=false")
    assert with_it == without
    assert built_without == 5 * len(CHECKPOINTS) + 2 * len(CHECKPOINTS)  # five shipped checks, two of the user's
    # every parameter set -k selects is built, plus one witness per function at most
    assert len(with_it) <= built_with <= len(with_it) + 5


def test_a_narrow_k_builds_only_what_it_selects_and_says_so(pytester: pytest.Pytester, tree: Path) -> None:
    ids, built, result = collected(pytester, "-k", "config_present")
    assert len(ids) == len(CHECKPOINTS)
    assert built == len(CHECKPOINTS) + 4  # and one witness for each other function: three shipped, test_mine
    assert "left" not in result.stdout.str()  # -q: no header line
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "outputs", "--collect-only", "-k", "config_present")
    result.stdout.fnmatch_lines(["ckptgate: -k left 13 of 20 checks unbuilt (ckpt_k_preselect = true)"])


def test_selected_checks_run_as_usual_under_xdist(pytester: pytest.Pytester, tree: Path) -> None:
    result = pytester.runpytest(
        *CHECKS, "--ckpt-outputs", "outputs", "-k", "config_present or config_schema", "-n", "2"
    )
    result.assert_outcomes(passed=2 * len(CHECKPOINTS))


def test_a_conftest_that_marks_checks_turns_preselection_off(pytester: pytest.Pytester, tree: Path) -> None:
    """A hook of the user's may give some checks a marker that -k names: every check is built, -k sees it."""
    pytester.makeconftest(
        """
        def pytest_collection_modifyitems(items):
            for item in items:
                if "last.ckpt" in item.nodeid:
                    item.add_marker("slow")
        """
    )
    ids, built, _ = collected(pytester, "-k", "slow and not mine")
    assert built == 7 * len(CHECKPOINTS)
    assert ids and all("last.ckpt" in nodeid for nodeid in ids)
    assert len(ids) == 5
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "outputs", "--collect-only", "-k", "slow", "-v")
    result.stdout.fnmatch_lines(["ckptgate: -k pre-selection off (collection hooks of *conftest.py): every check*"])


def test_names_added_after_building_stop_the_run_instead_of_losing_checks(
    pytester: pytest.Pytester, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a known plugin to mark checks after they are built, the witness shows it: a usage error, no test run."""
    pytester.makeconftest(
        """
        def pytest_collection_modifyitems(items):
            for item in items:
                if item.originalname == "test_forward":
                    item.add_marker("gpu")
        """
    )
    monkeypatch.setattr(preselect, "KNOWN_MODIFIERS", (*preselect.KNOWN_MODIFIERS, "conftest"))
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "outputs", "-k", "gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ckptgate pre-selected checks by -k*test_forward*`-o ckpt_k_preselect=false`*"])
    assert not result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    # and the way out works: every forward check is selected
    ids, _, _ = collected(pytester, "-k", "gpu", "-o", f"{preselect.INI}=false")
    assert len(ids) == 2 * len(CHECKPOINTS)


# What pytest-benchmark 5.2's collection hook does (pytest_benchmark/plugin.py), under its module's name.
FAKE_BENCHMARK = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--benchmark-skip", action="store_true", default=False)
    parser.addoption("--benchmark-only", action="store_true", default=False)


def pytest_collection_modifyitems(config, items):
    skip_bench = pytest.mark.skip(reason="Skipping benchmark (--benchmark-skip active).")
    skip_other = pytest.mark.skip(reason="Skipping non-benchmark (--benchmark-only active).")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            if config.getoption("benchmark_skip"):
                item.add_marker(skip_bench)
        elif config.getoption("benchmark_only"):
            item.add_marker(skip_other)
"""


def test_pytest_benchmark_leaves_preselection_on_unless_its_options_mark_checks(
    pytester: pytest.Pytester, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.mkpydir("pytest_benchmark") / "plugin.py").write_text(FAKE_BENCHMARK)
    pytester.syspathinsert()
    # Where the real pytest-benchmark is installed, this process has imported it: the runs would load it, not
    # the stand-in (and under xdist it refuses --benchmark-only).
    for name in [name for name in sys.modules if name.partition(".")[0] == "pytest_benchmark"]:
        monkeypatch.delitem(sys.modules, name)
    plugin = ("-p", "pytest_benchmark.plugin")
    ids, built, _ = collected(pytester, *plugin, "-k", "config_present")
    assert len(ids) == len(CHECKPOINTS) and built == len(CHECKPOINTS) + 4  # as without the plugin
    # --benchmark-only marks every check `skip`, a name -k sees: every check is built, and -k selects as usual
    expression = ("--benchmark-only", "-k", "skip and config")
    with_it, built_with, run = collected(pytester, *plugin, *expression)
    assert run.ret == pytest.ExitCode.OK, run.stderr.str()  # not the witness's usage error
    without, _, _ = collected(pytester, *plugin, *expression, "-o", f"{preselect.INI}=false")
    # every check of the two config_sweep checkpoints, the two config checks of the other two
    assert with_it == without and len(with_it) == 2 * 7 + 2 * 2
    assert built_with == 7 * len(CHECKPOINTS)
    result = pytester.runpytest(*CHECKS, "--ckpt-outputs", "outputs", "--collect-only", "-v", *plugin, *expression)
    result.stdout.fnmatch_lines(["ckptgate: -k pre-selection off (collection hooks of pytest_benchmark.plugin)*"])
