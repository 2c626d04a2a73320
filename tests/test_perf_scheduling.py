"""Order and placement of the checks: a checkpoint's checks back to back, a run's checkpoints on one worker,
test ids untouched; and the config checks, which never open a checkpoint."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ckptgate.scheduling import checkpoint_id, run_of, work_units

from conftest import model_section

CHECKS = ("--pyargs", "ckptgate.checks")
ID = "src/checks/test_checkpoints.py::test_forward[run_a/checkpoints/best.ckpt-cpu]"


def test_checkpoint_ids_and_runs_are_read_from_node_ids() -> None:
    assert checkpoint_id(ID) == "run_a/checkpoints/best.ckpt"
    assert checkpoint_id("t.py::test_config_present[best.ckpt]") == "best.ckpt"
    assert checkpoint_id("t.py::test_other[x-1]") is None
    assert checkpoint_id("t.py::test_plain") is None
    assert checkpoint_id("dir.ckpt/t.py::test_plain") is None
    assert run_of("run_a/checkpoints/best.ckpt") == "run_a"
    assert run_of("run_a/best.ckpt") == "run_a"
    assert run_of("hydra/2025-10-17/21-54-23/checkpoints/last.ckpt") == "hydra/2025-10-17/21-54-23"
    assert run_of("best.ckpt") == "."


def test_work_units_group_a_run_and_cut_big_runs_for_balance() -> None:
    ids = [
        f"t.py::test_{check}[run_{run}/checkpoints/{kind}.ckpt]"
        for run in "ab"
        for kind in ("best", "last")
        for check in ("config_present", "weights_load")
    ] + ["t.py::test_unrelated"]
    units = work_units(ids, workers=1)
    assert len({units[i] for i in ids if "run_a" in i}) == 1
    assert len({units[i] for i in ids if "run_b" in i}) == 1
    assert units["t.py::test_unrelated"] == "t.py::test_unrelated"
    # one run of 100 checkpoints, two workers: cut into units of at most 8 (each checkpoint's checks together)
    big = [f"t.py::test_{check}[run/c{n:03d}.ckpt]" for n in range(100) for check in ("config_present", "forward")]
    units = work_units(big, workers=2)
    assert len(set(units.values())) == 13
    for n in range(100):
        present, forward = f"t.py::test_config_present[run/c{n:03d}.ckpt]", f"t.py::test_forward[run/c{n:03d}.ckpt]"
        assert units[present] == units[forward]
    # 3,000 runs of 3: packed into units of whole runs, about 16 for two workers
    many = [f"t.py::test_forward[r{r:04d}/checkpoints/{kind}.ckpt]" for r in range(3000) for kind in ("a", "b", "c")]
    units = work_units(many, workers=2)
    assert len(set(units.values())) in (16, 17)  # units of whole runs: up to 563 checkpoints, 561 here
    for r in range(3000):
        assert len({units[f"t.py::test_forward[r{r:04d}/checkpoints/{kind}.ckpt]"] for kind in "abc"}) == 1


def tree(gate_tree: Callable[..., Path]) -> None:
    for run in ("a_20251016_101500", "b_20251017_101500", "c_20251018_101500"):
        for kind in ("best", "last", "best-v1"):
            gate_tree(f"run_{run}/checkpoints/{kind}.ckpt", {"model": model_section()})


WHERE = """
import json, os


class Where:  # a plugin, not conftest hooks: those reach only the items under the conftest's folder
    def pytest_runtest_setup(self, item):
        worker = getattr(item.config, "workerinput", {}).get("workerid", "main")
        with open(os.path.join(os.environ["WHERE_DIR"], worker + ".jsonl"), "a") as out:
            out.write(json.dumps(item.nodeid) + "\\n")


def pytest_configure(config):
    config.pluginmanager.register(Where(), "where")


def pytest_sessionfinish(session):
    dsession = session.config.pluginmanager.getplugin("dsession")
    if dsession is not None and getattr(dsession, "sched", None) is not None:
        print("SCHEDULER", type(dsession.sched).__name__)
"""


@pytest.fixture
def where(pytester: pytest.Pytester, gate_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three runs of three checkpoints, and the folder where each process logs the tests it set up."""
    tree(gate_tree)
    pytester.makeconftest(WHERE)
    folder = pytester.mkdir("where")
    monkeypatch.setenv("WHERE_DIR", str(folder))
    return folder


def ran(folder: Path) -> dict[str, list[str]]:
    return {path.stem: [json.loads(line) for line in path.read_text().splitlines()] for path in folder.glob("*.jsonl")}


def test_a_checkpoints_checks_run_back_to_back(pytester: pytest.Pytester, where: Path) -> None:
    result = pytester.runpytest_subprocess(*CHECKS, "--ckpt-device", "cpu")
    result.assert_outcomes(passed=36)
    order = [checkpoint_id(nodeid) for nodeid in ran(where)["main"]]
    changes = [a for a, b in itertools.pairwise(order) if a != b]
    assert len(changes) == 8, order  # 9 checkpoints, each one stretch of 4 checks
    assert order[:4] == ["run_a_20251016_101500/checkpoints/best-v1.ckpt"] * 4


def test_under_xdist_a_runs_checkpoints_go_to_one_worker_and_ids_stay(pytester: pytest.Pytester, where: Path) -> None:
    result = pytester.runpytest_subprocess(*CHECKS, "-n", "2", "--ckpt-device", "cpu", "-s", "--junitxml", "out.xml")
    result.assert_outcomes(passed=36)
    result.stdout.fnmatch_lines(["*SCHEDULER RunGroupScheduling*"])
    workers = ran(where)
    assert set(workers) == {"gw0", "gw1"}
    for run in ("run_a", "run_b", "run_c"):
        assert sum(any(f"[{run}_" in nodeid for nodeid in ids) for ids in workers.values()) == 1, workers
    every = [nodeid for ids in workers.values() for nodeid in ids]
    assert len(every) == 36 and not any("@" in nodeid for nodeid in every)
    assert (
        'name="test_forward[run_a_20251016_101500/checkpoints/best.ckpt-cpu]"'
        in (pytester.path / "out.xml").read_text()
    )


@pytest.mark.parametrize("dist", ["load", "loadscope"])
def test_a_dist_mode_the_user_chose_is_kept(pytester: pytest.Pytester, where: Path, dist: str) -> None:
    result = pytester.runpytest_subprocess(*CHECKS, "-n", "2", "--dist", dist, "--ckpt-device", "cpu", "-s")
    result.assert_outcomes(passed=36)
    result.stdout.fnmatch_lines([f"*SCHEDULER {'LoadScheduling' if dist == 'load' else 'LoadScopeScheduling'}*"])


AUDIT = """
import sys

OPENED = []


def _audit(event, args):
    if event == "open" and args and str(args[0]).endswith(".ckpt"):
        OPENED.append(str(args[0]))
    elif event == "mmap.__new__":
        OPENED.append("mmap")


sys.addaudithook(_audit)


def pytest_sessionfinish(session):
    print("OPENED", len(OPENED), sorted(set(OPENED)))
    print("TORCH_IMPORTED", "torch" in sys.modules)
"""


def test_config_checks_open_no_checkpoint_file(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> None:
    """Every ``open`` (builtins, io, os.open) is audited: the config checks never open a ``.ckpt`` whose config is
    a file, nor mmap one; a checkpoint without any config file is read (its hyper_parameters are the last source).

    The checkpoints stay readable (unlike the chmod test in test_plugin.py), so an open would succeed and only
    the audit would show it; the same tree with the weights check included proves the audit sees opens.
    """
    tree(gate_tree)
    pytester.makeconftest(AUDIT)
    result = pytester.runpytest_subprocess(*CHECKS, "-k", "config_present or config_schema", "-s")
    result.assert_outcomes(passed=18)
    result.stdout.fnmatch_lines(["*OPENED 0 []*", "*TORCH_IMPORTED False*"])
    gate_tree("noconfig_20251019_101500/checkpoints/best.ckpt")
    result = pytester.runpytest_subprocess(*CHECKS, "-k", "config_present or config_schema", "-s")
    result.assert_outcomes(passed=18, failed=2)
    opened = next(line for line in result.outlines if "OPENED" in line)
    assert opened.count(".ckpt") == opened.count("noconfig_20251019_101500/checkpoints/best.ckpt") > 0, opened
    control = pytester.runpytest_subprocess(*CHECKS, "-k", "weights_load", "-s")
    control.stdout.fnmatch_lines(["*OPENED [1-9]*best*.ckpt*"])
