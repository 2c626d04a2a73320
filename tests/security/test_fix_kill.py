"""``--fix`` loses nothing: a real ``pytest --fix`` process, killed with SIGKILL at points hypothesis picks during
recovery, leaves every sidecar either absent or whole, and every file that was there byte for byte as it was.

The kill points are "after the k-th sidecar appeared, plus a delay" (k and the delay drawn by hypothesis), so
they land inside recovery rather than in Python's start-up: a conftest in the run imports torch and then
signals that recovery is about to start. Between kills the tree is reset to its first state (the sidecars the
killed run wrote are removed, its temporary files are left, as a crash leaves them); a last, unkilled run then
recovers everything over those leftovers, with the sidecars the first, calibrating run wrote.

The single-process steps of a write (every syscall of ``write_sidecar``) are killed one by one in
``tests/test_recovery_write.py``; two ``--fix`` runs racing on one tree, and a read-only folder (``chattr +i``,
since root ignores modes), are in ``tests/test_fix_demo.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from conftest import MODEL_SOURCE, model_section, pythonpath, wandb_run
from security.conftest import fingerprint
from security.figures import record

READY = textwrap.dedent(
    """
    import os
    import pathlib


    def pytest_configure(config):
        import torch  # noqa: F401  imported before the signal: the kill window is recovery, not start-up

        pathlib.Path(os.environ["CKG_READY"]).touch()
    """
)
FROM_WANDB = 8  # bare checkpoints matched to a wandb run by their folder's timestamp


@dataclass
class Tree:
    """A small outputs tree, the command that runs ``--fix`` over it, and what a finished run writes."""

    root: Path
    initial: dict[bytes, Any] = field(default_factory=dict)
    expected: dict[bytes, Any] = field(default_factory=dict)  # sidecar -> its JSON, written_at dropped
    seconds_to_first: float = 1.0  # from the signal to the first sidecar: reading sources, verifying
    seconds_per_sidecar: float = 0.1  # then, between two sidecars

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def start(self) -> tuple[subprocess.Popen[bytes], Path]:
        ready = self.root / f"ready-{time.perf_counter_ns()}"
        command = [sys.executable, "-m", "pytest", "--pyargs", "ckptgate.checks", "--fix", "-k", "config_present"]
        command += ["--ckpt-outputs", "outputs", "--ckpt-device", "cpu", "-p", "no:cacheprovider", "-q"]
        env = {**os.environ, "CKG_READY": str(ready), "PYTHONPATH": pythonpath(self.root)}
        process = subprocess.Popen(
            command,
            cwd=self.root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill reaches it and nothing else
        )
        return process, ready

    def sidecars(self) -> list[Path]:
        return sorted(self.outputs.rglob("*.config.json"))

    def new_files(self) -> dict[bytes, Any]:
        now = fingerprint(self.outputs)
        return {key: value for key, value in now.items() if key not in self.initial}

    def reset(self) -> None:
        """Back to the first state, temporary leftovers of killed writers kept (as a crash leaves them)."""
        for path in self.sidecars():
            if os.fsencode(path.relative_to(self.outputs)) not in self.initial:
                path.unlink()


def wait_for(condition: Any, timeout: float, step: float = 0.001) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def content(path: Path) -> Any:
    document = json.loads(path.read_text("utf-8"))
    del document["_provenance"]["written_at"]
    return document


def is_temporary(name: bytes) -> bool:
    base = os.path.basename(name)
    return base.startswith(b".") and base.endswith(b".tmp") and b".config.json." in base


@pytest.fixture
def tree(tmp_path: Path, lightning_ckpt: Path, bare_lightning_ckpt: Path) -> Tree:
    root = tmp_path
    (root / "mymodels.py").write_text(MODEL_SOURCE)
    (root / "pytest.ini").write_text("[pytest]\nckpt_model_factory = mymodels:build\n")
    (root / "conftest.py").write_text(READY)
    outputs = root / "outputs"
    for index in range(FROM_WANDB):
        day = 10 + index
        folder = outputs / f"bare{index}_202510{day}_101500" / "checkpoints"
        folder.mkdir(parents=True)
        shutil.copyfile(bare_lightning_ckpt, folder / "best.ckpt")
        wandb_run(root, f"run-202510{day}_101501-bare{index:04d}", {"model": model_section()})
    usable = outputs / "usable_20251001_101500" / "checkpoints"  # has its config: must stay as it is
    usable.mkdir(parents=True)
    shutil.copyfile(lightning_ckpt, usable / "best.ckpt")
    (usable / "best.config.json").write_text(json.dumps({"model": model_section()}))
    found = Tree(root, initial=fingerprint(outputs))

    process, ready = found.start()  # calibration: a whole run, the sidecars' appearances timed
    assert wait_for(ready.exists, 120, 0.01), "the --fix run never got to recovery"
    started, seen = time.monotonic(), [time.monotonic()]
    while process.poll() is None and len(seen) <= FROM_WANDB:
        if len(found.sidecars()) - 1 >= len(seen):
            seen.append(time.monotonic())
        time.sleep(0.001)
    assert process.wait(timeout=180) == pytest.ExitCode.OK
    written = [p for p in found.sidecars() if os.fsencode(p.relative_to(outputs)) not in found.initial]
    assert len(written) == FROM_WANDB
    found.expected = {os.fsencode(p.relative_to(outputs)): content(p) for p in written}
    found.seconds_to_first = max(seen[1] - started, 0.01) if len(seen) > 1 else 1.0
    found.seconds_per_sidecar = max((seen[-1] - seen[1]) / max(len(seen) - 2, 1), 0.005) if len(seen) > 2 else 0.1
    assert not [name for name in found.new_files() if is_temporary(name)]
    found.reset()
    return found


@dataclass
class Tally:
    tried: int = 0
    partial: int = 0
    changed: int = 0
    mid_recovery: int = 0
    temporaries: int = 0
    problems: list[str] = field(default_factory=list)


def kill_and_inspect(tree: Tree, tally: Tally, after: int, delay: float) -> None:
    """Start ``--fix``, kill it once ``after`` sidecars exist plus ``delay`` of a sidecar's time, inspect."""
    process, ready = tree.start()
    try:
        assert wait_for(ready.exists, 120, 0.005), "the --fix run never got to recovery"
        wait_for(lambda: len(tree.sidecars()) - 1 >= after, 60)  # the usable checkpoint's sidecar is there already
        time.sleep(delay * (tree.seconds_per_sidecar if after else tree.seconds_to_first))
    finally:
        # Not reaped yet, so the group id is still ours even if it finished first (a kill point after the end).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    tally.tried += 1
    new = tree.new_files()
    now = fingerprint(tree.outputs)
    changed = [key for key, value in tree.initial.items() if now.get(key) != value]
    tally.changed += len(changed)
    sidecars = [key for key in new if key.endswith(b".config.json")]
    for key in sidecars:
        try:
            whole = content(tree.outputs / os.fsdecode(key)) == tree.expected[key]
        except (ValueError, KeyError, TypeError):
            whole = False
        if not whole:
            tally.partial += 1
            tally.problems.append(os.fsdecode(key))
    tally.temporaries = sum(is_temporary(key) for key in new)
    others = [key for key in new if not key.endswith(b".config.json") and not is_temporary(key)]
    tally.mid_recovery += 0 < len(sidecars) < len(tree.expected)
    tree.reset()
    assert changed == [] and others == [], (changed, others)
    assert tally.problems == [], tally.problems


KILLS = 8


def test_fix_killed_at_random_points_leaves_no_partial_sidecar_and_changes_nothing(
    tree: Tree, record_property: Any
) -> None:
    tally = Tally()

    @settings(max_examples=KILLS, deadline=None, phases=[Phase.generate], database=None)
    @given(after=st.integers(0, FROM_WANDB - 1), delay=st.floats(0, 1.2))
    def killed_at(after: int, delay: float) -> None:
        kill_and_inspect(tree, tally, after, delay)

    try:
        killed_at()
    finally:
        record(
            record_property,
            kill_tried=tally.tried,
            kill_partial=tally.partial,
            kill_changed=tally.changed,
            kill_mid_recovery=tally.mid_recovery,
            kill_temporaries=tally.temporaries,
        )
    assert tally.tried == KILLS and tally.partial == 0 and tally.changed == 0

    # Then a whole run over what the killed ones left: temporary files never block, nothing differs.
    process, _ = tree.start()
    assert process.wait(timeout=180) == pytest.ExitCode.OK
    written = {os.fsencode(p.relative_to(tree.outputs)): p for p in tree.sidecars()}
    assert {key: content(written[key]) for key in tree.expected} == tree.expected
    now = fingerprint(tree.outputs)
    assert all(now.get(key) == value for key, value in tree.initial.items())
