"""``--fix`` end to end on copies of the demo tree: the shipped checks in a subprocess, as a user runs them.

Every case of the answer key (``fix_outcome``, ``fix_source``, ``fix_tier``, ``fix_reason``,
``usable_after_fix``) is checked against the printed trace, the sidecars written and their provenance, and
the verdicts of the checks that run right after recovery in the same session. Recovery must never touch an
existing file: every test hashes the whole tree (outputs/ and wandb/) before and after. The session's demo
tree itself is never modified: each run works on its own copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.demo_tree import (
    AMBIGUOUS,
    NO_CONFIG,
    NO_CONFIG_WANDB,
    PREPROCESSING,
    STORED,
    UNRECOVERABLE,
    WRITTEN,
    DemoCheckpoint,
    demo_expectations,
)

EXPECTED = demo_expectations()
FIX_CASES = [c for c in EXPECTED if c.fix_outcome is not None]
WRITTEN_CASES = [c for c in FIX_CASES if c.fix_outcome == WRITTEN]
FAILED_CASES = [c for c in FIX_CASES if c.fix_outcome != WRITTEN]
CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")
OUTCOMES = ("written", "would-write", "exists", "ambiguous", "unrecoverable", "unwritable")
_OUTCOME_LINE = re.compile(rf"^(?:=> )?({'|'.join(OUTCOMES)}): (.*)$")
_FIX_HEADER = re.compile(r"^=+ ckptgate --fix")


def _ids(case: DemoCheckpoint) -> str:
    return case.relpath


def _sidecar_relpath(case: DemoCheckpoint) -> str:
    """Where ``--fix`` writes a checkpoint's config, relative to the demo root."""
    return "outputs/" + case.relpath.removesuffix(".ckpt") + ".config.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative POSIX path) with its SHA-256."""
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def parse_traces(stdout: str) -> dict[str, tuple[str, str]]:
    """The ``--fix`` section of pytest's output: checkpoint relpath -> (outcome, reason).

    Reads both forms: the short one (``  relpath`` / ``    outcome: reason``) and the detailed one of
    ``--fix-dry-run`` and ``-v`` (``relpath``, its attempts, ``  => outcome: reason``).
    """
    relpaths = {c.relpath for c in EXPECTED}
    traces: dict[str, tuple[str, str]] = {}
    inside, current = False, None
    for line in stdout.splitlines():
        if line.startswith("="):
            inside = bool(_FIX_HEADER.match(line))
            current = None
            continue
        if not inside:
            continue
        stripped = line.strip()
        if stripped in relpaths:
            assert stripped not in traces, f"{stripped} traced twice"
            current = stripped
            continue
        found = _OUTCOME_LINE.match(stripped)
        if current is not None and found:
            traces[current] = (found.group(1), found.group(2))
            current = None
    return traces


@dataclass
class FixRun:
    root: Path
    before: dict[str, str]
    after: dict[str, str]
    run: Any  # conftest.DemoRun
    traces: dict[str, tuple[str, str]]

    @property
    def added(self) -> set[str]:
        return set(self.after) - set(self.before)

    def changed(self) -> list[str]:
        """Files that existed before and are gone or differ now."""
        return [name for name, digest in self.before.items() if self.after.get(name) != digest]


def fresh_copy(source: Path, base: Path) -> Path:
    root = base / "demo"
    shutil.copytree(source, root, symlinks=True)
    return root


def fix_run(checks: Any, root: Path, workdir: Path, *extra: str) -> FixRun:
    workdir.mkdir(parents=True, exist_ok=True)
    before = snapshot(root)
    run = checks.run(root / "outputs", workdir, *extra)
    assert "INTERNALERROR" not in run.stdout, run.stdout[-3000:]
    return FixRun(root, before, snapshot(root), run, parse_traces(run.stdout))


def _fix_headers(stdout: str) -> int:
    return sum(bool(_FIX_HEADER.match(line)) for line in stdout.splitlines())


@pytest.fixture(scope="module")
def dry(demo_root: Path, tmp_path_factory: pytest.TempPathFactory, checks: Any) -> FixRun:
    base = tmp_path_factory.mktemp("fix-dry")
    return fix_run(checks, fresh_copy(demo_root, base), base / "work", "--fix-dry-run", "-k", "test_config_present")


@pytest.fixture(scope="module")
def fixed(demo_root: Path, tmp_path_factory: pytest.TempPathFactory, checks: Any) -> FixRun:
    base = tmp_path_factory.mktemp("fix")
    return fix_run(checks, fresh_copy(demo_root, base), base / "work", "--fix")


# ------------------------------------------------------------------------------------------- dry run


def test_dry_run_changes_and_adds_nothing(dry: FixRun) -> None:
    assert dry.after == dry.before
    assert _fix_headers(dry.run.stdout) == 1
    assert "ckptgate --fix-dry-run (nothing written)" in dry.run.stdout


@pytest.mark.parametrize("case", FIX_CASES, ids=_ids)
def test_dry_run_names_each_outcome_and_source(dry: FixRun, case: DemoCheckpoint) -> None:
    outcome, reason = dry.traces[case.relpath]
    message = dry.run.outcomes[f"test_config_present[{case.relpath}]"][1]
    if case.fix_outcome == WRITTEN:
        assert outcome == "would-write"
        assert case.fix_source in reason and f"({case.fix_tier})" in reason, reason  # type: ignore[operator]
        assert "--fix would recover it: would write" in message
    else:
        assert outcome == case.fix_outcome
        assert case.fix_reason in reason, reason  # type: ignore[operator]
        assert "--fix could not recover it: " in message


def test_dry_run_traces_exactly_the_checkpoints_without_a_config(dry: FixRun) -> None:
    assert sorted(dry.traces) == sorted(c.relpath for c in FIX_CASES)
    for case in FIX_CASES:  # and they still fail: nothing was written
        assert dry.run.outcomes[f"test_config_present[{case.relpath}]"][0] == "failure"


# ------------------------------------------------------------------------------------------------ --fix


@pytest.mark.parametrize("case", FIX_CASES, ids=_ids)
def test_fix_outcome_and_source_per_checkpoint(fixed: FixRun, case: DemoCheckpoint) -> None:
    outcome, reason = fixed.traces[case.relpath]
    assert outcome == case.fix_outcome, reason
    if case.fix_outcome == WRITTEN:
        assert case.fix_source in reason and f"({case.fix_tier})" in reason, reason  # type: ignore[operator]
        assert _sidecar_relpath(case) in fixed.added
    else:
        assert case.fix_reason in reason, reason  # type: ignore[operator]
        assert _sidecar_relpath(case) not in fixed.after


def test_fix_traces_exactly_the_checkpoints_without_a_config(fixed: FixRun) -> None:
    assert sorted(fixed.traces) == sorted(c.relpath for c in FIX_CASES)
    assert _fix_headers(fixed.run.stdout) == 1
    counts = {outcome: sum(c.fix_outcome == outcome for c in FIX_CASES) for outcome in (AMBIGUOUS, UNRECOVERABLE)}
    line = (
        f"{len(FIX_CASES)} checkpoint(s) without a config: {counts[AMBIGUOUS]} ambiguous, "
        f"{counts[UNRECOVERABLE]} unrecoverable, {len(WRITTEN_CASES)} written"
    )
    assert line in fixed.run.stdout


@pytest.mark.parametrize("case", EXPECTED, ids=_ids)
def test_after_fix_each_checkpoint_gets_its_verdict_in_the_same_session(fixed: FixRun, case: DemoCheckpoint) -> None:
    by_check = fixed.run.by_check(case.relpath)
    if case.usable_after_fix:
        assert {check: outcome for check, (outcome, _) in by_check.items()} == dict.fromkeys(CHECK_ORDER, "passed")
        return
    failing = case.failing_check
    index = CHECK_ORDER.index(failing)  # type: ignore[arg-type]
    assert all(by_check[check][0] == "passed" for check in CHECK_ORDER[:index])
    outcome, message = by_check[failing]  # type: ignore[index]
    assert outcome == "failure"
    assert case.reason.lower() in message.lower()  # type: ignore[union-attr]
    if case.fix_outcome is not None:  # the recovery's own reason, where the user looks first
        assert f"--fix could not recover it: {fixed.traces[case.relpath][1][:60]}" in message
        assert case.fix_reason in message  # type: ignore[operator]
    for check in CHECK_ORDER[index + 1 :]:
        assert by_check[check][0] == "failure", check


def test_after_fix_the_summary_counts_the_recovered_checkpoints_as_usable(fixed: FixRun) -> None:
    usable = sum(c.usable_after_fix for c in EXPECTED)
    line = f"{len(EXPECTED)} checkpoint(s) checked: {usable} usable, {len(EXPECTED) - usable} unusable"
    assert line in fixed.run.stdout
    assert fixed.run.returncode == pytest.ExitCode.TESTS_FAILED


def test_fix_changes_no_existing_file_and_adds_only_the_proven_sidecars(fixed: FixRun) -> None:
    assert fixed.changed() == []
    assert fixed.added == {_sidecar_relpath(c) for c in WRITTEN_CASES}


@pytest.mark.parametrize("case", WRITTEN_CASES, ids=_ids)
def test_written_sidecar_is_complete_json_with_its_provenance(fixed: FixRun, case: DemoCheckpoint) -> None:
    sidecar = json.loads((fixed.root / _sidecar_relpath(case)).read_text(encoding="utf-8"))
    assert set(sidecar) == {"model", "preprocessing", "_provenance"}
    assert sidecar["preprocessing"] == PREPROCESSING  # the inference sections travel with the model
    provenance = sidecar["_provenance"]
    assert provenance["tool"].startswith("pytest-ckptgate ")
    assert provenance["matched_by"].startswith(f"{case.fix_tier}: ")
    assert "loaded strictly" in provenance["verified"]
    source = provenance["source"]
    # the file is named relative to the sidecar's own folder: it survives moving the tree, whatever
    # folder pytest was started from
    sidecar_dir = (fixed.root / _sidecar_relpath(case)).parent
    source_file = Path(os.path.normpath(sidecar_dir / source["file"]))
    assert not Path(source["file"]).is_absolute()
    assert source_file.is_file(), source
    in_tree = source_file.relative_to(fixed.root).as_posix()
    assert source["sha256"] == _sha256(source_file)
    if case.fix_tier == STORED:
        assert (source["kind"], source["run_id"]) == ("checkpoint", None)
        assert source_file == fixed.root / "outputs" / case.relpath
        return
    assert case.fix_source in in_tree  # type: ignore[operator]
    if in_tree.startswith("wandb/"):
        assert source["kind"] == "wandb"
        assert source["run_id"] == in_tree.split("/")[1].rsplit("-", 1)[1]
        if source_file.name == "config.yaml":  # the model section is the run's, untouched
            raw = yaml.safe_load(source_file.read_text())
            assert sidecar["model"] == raw["model"]["value"]
    else:
        assert (source["kind"], source["run_id"]) == ("hydra", None)
        assert in_tree.startswith("outputs/") and in_tree.endswith("/.hydra/config.yaml")


# --------------------------------------------------------------------------------- idempotent, parallel


def test_a_second_fix_writes_nothing_and_changes_nothing(fixed: FixRun, tmp_path: Path, checks: Any) -> None:
    again = fix_run(checks, fresh_copy(fixed.root, tmp_path), tmp_path / "work", "--fix", "-k", "test_config_present")
    assert again.after == again.before == fixed.after
    assert again.traces == {c.relpath: fixed.traces[c.relpath] for c in FAILED_CASES}


def test_fix_under_xdist_recovers_once_with_the_serial_outcomes(
    demo_root: Path, fixed: FixRun, tmp_path: Path, checks: Any
) -> None:
    parallel = fix_run(checks, fresh_copy(demo_root, tmp_path), tmp_path / "work", "--fix", "-n", "2")
    assert _fix_headers(parallel.run.stdout) == 1  # printed by the controller, recovered by it alone
    assert parallel.traces == fixed.traces
    assert {name: o for name, (o, _) in parallel.run.outcomes.items()} == {
        name: o for name, (o, _) in fixed.run.outcomes.items()
    }
    assert parallel.changed() == [] and parallel.added == fixed.added
    for name in parallel.added:
        ours, theirs = (json.loads((run.root / name).read_text()) for run in (parallel, fixed))
        for document in (ours, theirs):
            del document["_provenance"]["written_at"]
        assert ours == theirs, name


def test_two_concurrent_fix_processes_write_each_sidecar_once_and_whole(
    demo_root: Path, tmp_path: Path, checks: Any
) -> None:
    root = fresh_copy(demo_root, tmp_path)
    before = snapshot(root)
    procs = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        command, env, xml = checks.command(root / "outputs", workdir, "--fix", "-k", "test_config_present")
        log = (workdir / "stdout.txt").open("w")
        procs.append((subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT), log, xml))
    traces = []
    for proc, log, xml in procs:
        returncode = proc.wait(timeout=checks.timeout)
        log.close()
        run = checks.result(Path(log.name).read_text(), returncode, xml)
        assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:]
        traces.append(parse_traces(run.stdout))
    after = snapshot(root)
    assert [name for name, digest in before.items() if after.get(name) != digest] == []
    assert set(after) - set(before) == {_sidecar_relpath(c) for c in WRITTEN_CASES}
    assert not [p for p in root.rglob(".*.tmp")], "a temporary file was left behind"
    for case in WRITTEN_CASES:
        sidecar = json.loads((root / _sidecar_relpath(case)).read_text(encoding="utf-8"))
        assert set(sidecar) == {"model", "preprocessing", "_provenance"}
        outcomes = [t[case.relpath][0] for t in traces if case.relpath in t]
        # the one that linked it first wrote it; the other found it (then: no trace) or lost the race
        assert outcomes.count("written") == 1 and set(outcomes) <= {"written", "exists"}, outcomes
    for case in FAILED_CASES:
        assert [t[case.relpath][0] for t in traces] == [case.fix_outcome] * 2


# ----------------------------------------------------------------------------------------- unwritable


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` unwritable: mode 0o555, and for root (whom modes do not stop) the immutable attribute."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):
            chattr = shutil.which("chattr")
            done = subprocess.run([chattr, "+i", str(folder)], capture_output=True) if chattr else None
            immutable = done is not None and done.returncode == 0
            if not immutable or _can_create(folder):
                pytest.skip("running as root: a 0o555 folder stays writable, and chattr +i is not available here")
        yield
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _can_create(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_an_unwritable_checkpoint_folder_is_reported_not_a_crash(demo_root: Path, tmp_path: Path, checks: Any) -> None:
    root = fresh_copy(demo_root, tmp_path)
    folder = root / "outputs" / NO_CONFIG / "checkpoints"
    with read_only(folder):
        run = fix_run(checks, root, tmp_path / "work", "--fix", "-k", "test_config_present")
    assert run.run.returncode == pytest.ExitCode.TESTS_FAILED
    assert run.changed() == []
    blocked = [c for c in WRITTEN_CASES if c.relpath.startswith(f"{NO_CONFIG}/")]
    assert len(blocked) == 2
    assert run.added == {_sidecar_relpath(c) for c in WRITTEN_CASES if c not in blocked}
    for case in blocked:
        outcome, reason = run.traces[case.relpath]
        assert outcome == "unwritable"
        assert f"proven from wandb {NO_CONFIG_WANDB}" in reason and "cannot write" in reason, reason
        message = run.run.outcomes[f"test_config_present[{case.relpath}]"][1]
        assert "--fix could not recover it: proven from" in message
    for case in FIX_CASES:
        if case not in blocked:
            assert run.traces[case.relpath][0] == case.fix_outcome
