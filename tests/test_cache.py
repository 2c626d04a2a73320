"""``--ckpt-cache``: unchanged checkpoints replay their outcomes; anything that changed is checked again."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from ckptgate import resultcache

from conftest import GPU, model_section

CHECKS = ("--pyargs", "ckptgate.checks")
GOOD = "good_20251016_101500/checkpoints/best.ckpt"
BAD = "wide_20251018_023219/checkpoints/best.ckpt"
# The outcomes of the two: with a GPU the cuda forward check runs (the bad one's fails) and is replayed like
# any other; without one it skips, and a skip is never cached.
OUTCOMES = {"passed": 6 + GPU, "failed": 2 + GPU, "skipped": 0 if GPU else 2}
REPLAYED = 10 if GPU else 8


def skipped_cuda(relpath: str) -> set[str]:
    """The check of ``relpath`` that is never replayed on this machine: its cuda skip, decided each run."""
    return set() if GPU else {f"test_forward[{relpath}-cuda]"}


@pytest.fixture
def cached_tree(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> Callable[..., dict[str, dict[str, str]]]:
    """A usable and an unusable checkpoint, and a runner returning {test id: {outcome, cached, message}}."""
    gate_tree(GOOD, {"model": model_section()})
    gate_tree(BAD, {"model": model_section(width=8)})
    # pytest's cache is what --ckpt-cache keeps its outcomes in: no `-p no:cacheprovider` here
    pytester.makeini("[pytest]\nckpt_model_factory = mymodels:build\n")

    def run(*args: str, cache: bool = True) -> dict[str, dict[str, str]]:
        xml = pytester.path / "junit.xml"
        result = pytester.runpytest(*CHECKS, *(["--ckpt-cache"] if cache else []), "--junitxml", str(xml), *args)
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
        return junit(xml)

    return run


def junit(xml: Path) -> dict[str, dict[str, str]]:
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        found[case.get("name", "")] = {"outcome": outcome, "cached": props.get("ckpt_cached", ""), "message": message}
    return found


def cached(results: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, result in results.items() if result["cached"] == "true"}


def of(relpath: str, results: dict[str, dict[str, str]]) -> set[str]:
    return {name for name in results if f"[{relpath}" in name}


def test_an_unchanged_tree_replays_every_outcome_that_ran(cached_tree: Callable[..., dict]) -> None:
    first = cached_tree()
    assert not cached(first)
    second = cached_tree()
    assert {name: r["outcome"] for name, r in second.items()} == {name: r["outcome"] for name, r in first.items()}
    # every check that ran is replayed; a cuda skip (no GPU) is never cached: it is decided each run
    assert cached(second) == set(second) - skipped_cuda(GOOD) - skipped_cuda(BAD)
    assert second[f"test_forward[{GOOD}-cuda]"]["outcome"] == ("passed" if GPU else "skipped")
    failure = second[f"test_weights_load[{BAD}]"]
    assert failure["outcome"] == "failure"
    assert failure["message"].startswith("Failed: [cached] weights do not fit")
    blocked = second[f"test_forward[{BAD}-cpu]"]["message"]
    assert blocked.startswith("Failed: [cached] blocked by test_weights_load[")


def test_replayed_outcomes_keep_their_properties_and_verdicts(
    pytester: pytest.Pytester, cached_tree: Callable[..., dict]
) -> None:
    cached_tree()
    xml = pytester.path / "second.xml"
    result = pytester.runpytest(*CHECKS, "--ckpt-cache", "--junitxml", str(xml))
    result.stdout.fnmatch_lines(
        [
            f"*--ckpt-cache: {REPLAYED} check outcome(s) replayed*",
            "*2 checkpoint(s) checked: 1 usable, 1 unusable*",
            f"*UNUSABLE {BAD}",
            "*weights_load: weights do not fit*",
        ]
    )
    props = {
        p.get("name"): p.get("value")
        for case in ET.parse(xml).getroot().iter("testcase")
        if case.get("name") == f"test_config_present[{GOOD}]"
        for p in case.iter("property")
    }
    assert props["config_source"].startswith("sidecar: good_20251016_101500/checkpoints/best.config.json")
    assert props["ckpt_cached"] == "true"


def test_replayed_outcomes_name_the_config_source_without_junit(
    pytester: pytest.Pytester, cached_tree: Callable[..., dict]
) -> None:
    """The JSON and Markdown reports take the source from the reports, not from JUnit item properties."""
    pytester.runpytest(*CHECKS, "--ckpt-cache")  # recorded without --junitxml
    report = pytester.path / "report.json"
    result = pytester.runpytest(*CHECKS, "--ckpt-cache", "--ckpt-json", str(report))
    result.stdout.fnmatch_lines([f"*--ckpt-cache: {REPLAYED} check outcome(s) replayed*"])
    entries = {entry["path"]: entry for entry in json.loads(report.read_text())["checkpoints"]}
    assert entries[GOOD]["config_source"].startswith("sidecar: good_20251016_101500/checkpoints/best.config.json")


@pytest.mark.parametrize(
    "change",
    [
        "touch",  # a new mtime
        "replace",  # a new file in its place (same bytes, new inode)
        "rewrite_keeping_mtime",  # the same size and mtime, rewritten in place
    ],
)
def test_a_changed_checkpoint_is_checked_again(
    cached_tree: Callable[..., dict], pytester: pytest.Pytester, change: str
) -> None:
    cached_tree()
    path = pytester.path / "outputs" / GOOD
    if change == "touch":
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif change == "replace":
        shutil.copyfile(path, pytester.path / "copy.ckpt")
        os.replace(pytester.path / "copy.ckpt", path)
    else:
        before = path.stat()
        data = bytearray(path.read_bytes())
        with path.open("r+b") as handle:
            handle.write(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    second = cached_tree()
    assert not cached(second) & of(GOOD, second), "the changed checkpoint was replayed"
    assert of(BAD, second) - cached(second) == skipped_cuda(BAD), "the unchanged one was checked again"


@pytest.mark.parametrize("change", ["edit", "new_sidecar_that_wins", "delete"])
def test_a_changed_config_is_checked_again(
    cached_tree: Callable[..., dict], pytester: pytest.Pytester, change: str
) -> None:
    cached_tree()
    folder = (pytester.path / "outputs" / BAD).parent
    sidecar = folder / "best.config.json"
    if change == "edit":  # the fix: the wide checkpoint's real width
        sidecar.write_text(json.dumps({"model": model_section(width=4)}))
    elif change == "new_sidecar_that_wins":  # a ``.config.json`` wins over a ``.config.yaml``: write that order
        sidecar.rename(folder / "best.config.yaml")
        (folder / "best.config.json").write_text(json.dumps({"model": model_section(width=4)}))
    else:
        sidecar.unlink()
    second = cached_tree()
    assert not cached(second) & of(BAD, second)
    expected = "passed" if change != "delete" else "failure"
    assert second[f"test_weights_load[{BAD}]"]["outcome"] == expected
    assert of(GOOD, second) - cached(second) == skipped_cuda(GOOD)


def test_changed_model_code_is_checked_again(cached_tree: Callable[..., dict], pytester: pytest.Pytester) -> None:
    cached_tree()
    models = pytester.path / "mymodels.py"
    models.write_text(models.read_text() + "\n# a change to the model code\n")
    assert not cached(cached_tree())


KW_MODELS = """
from torch import nn


class Net(nn.Module):
    def __init__(self, name, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 1))

    def forward(self, x):
        return {"logits": self.body(x)}
"""


def test_changed_target_code_is_checked_again(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    """Without a factory, the model code is the package the section's `_target_` names."""
    gate_tree(GOOD, {"model": model_section(_target_="kwmodels.Net")})
    models = pytester.makepyfile(kwmodels=KW_MODELS)
    pytester.makeini("[pytest]\nckpt_target_allow = kwmodels\n")

    def run() -> dict[str, dict[str, str]]:
        xml = pytester.path / "junit.xml"
        result = pytester.runpytest(*CHECKS, "--ckpt-cache", "--junitxml", str(xml))
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        return junit(xml)

    first = run()
    assert first[f"test_forward[{GOOD}-cpu]"]["outcome"] == "passed"
    assert cached(run()) == of(GOOD, first) - skipped_cuda(GOOD)
    models.write_text(models.read_text() + "\n# a change to the model code\n")
    assert not cached(run())


def test_cache_clear_and_no_option_replay_nothing(cached_tree: Callable[..., dict]) -> None:
    cached_tree()
    assert not cached(cached_tree(cache=False))
    assert not cached(cached_tree("--cache-clear"))
    assert cached(cached_tree())


def test_a_run_that_replays_everything_imports_no_torch(
    pytester: pytest.Pytester, cached_tree: Callable[..., dict]
) -> None:
    cached_tree()
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            print("TORCH_IMPORTED", "torch" in sys.modules)
        """
    )
    result = pytester.runpytest_subprocess(*CHECKS, "--ckpt-cache", "-s", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*TORCH_IMPORTED False*", f"*{REPLAYED} check outcome(s) replayed*"])
    result.assert_outcomes(**OUTCOMES)


def test_cache_needs_the_cacheprovider(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    gate_tree(GOOD, {"model": model_section()})  # its ini turns the cacheprovider off
    result = pytester.runpytest(*CHECKS, "--ckpt-cache")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-cache keeps outcomes in pytest's cache: remove -p no:cacheprovider*"])


def test_ini_switches_it_on(pytester: pytest.Pytester, cached_tree: Callable[..., dict]) -> None:
    pytester.makeini("[pytest]\nckpt_model_factory = mymodels:build\nckpt_cache = true\n")
    cached_tree(cache=False)
    assert cached(cached_tree(cache=False))


def test_fix_bypasses_the_cache(cached_tree: Callable[..., dict]) -> None:
    cached_tree()
    assert not cached(cached_tree("--fix-dry-run"))


def test_the_store_ignores_foreign_and_broken_files(tmp_path: Path) -> None:
    store = resultcache.Store(tmp_path)
    entry = resultcache.Entry({"file": [1, 2, 3, 4]}, {"config_present": {"outcome": "passed"}})
    store.write(tmp_path / "outputs", "a/best.ckpt", entry)
    assert store.read(tmp_path / "outputs", "a/best.ckpt") == entry
    assert store.read(tmp_path / "elsewhere", "a/best.ckpt") is None
    store.path(tmp_path / "outputs", "a/best.ckpt").write_text("{not json")
    assert store.read(tmp_path / "outputs", "a/best.ckpt") is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_cache_works_under_xdist(pytester: pytest.Pytester, cached_tree: Callable[..., dict]) -> None:
    """Each worker looks outcomes up and records its own; the controller counts what was replayed."""
    first = pytester.runpytest_subprocess(*CHECKS, "--ckpt-cache", "-n", "2")
    first.assert_outcomes(**OUTCOMES)
    second = pytester.runpytest_subprocess(*CHECKS, "--ckpt-cache", "-n", "2")
    second.assert_outcomes(**OUTCOMES)
    second.stdout.fnmatch_lines([f"*--ckpt-cache: {REPLAYED} check outcome(s) replayed*", "*2 checkpoint(s) checked*"])
