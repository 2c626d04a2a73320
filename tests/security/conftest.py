"""Fixtures of the security suite: the base Lightning checkpoint the corpus builds on, a folder for markers,
and the figures collector (also registered by ``tests/conftest.py``, so that an xdist controller, which never
imports this file, prints the figures of ``pytest tests/ -n 2`` too)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import pythonpath
from security.figures import register


def pytest_configure(config: pytest.Config) -> None:
    register(config)


@pytest.fixture(scope="session")
def base_checkpoint(lightning_ckpt: Path) -> dict[str, Any]:
    """The real Lightning checkpoint of ``tests/conftest.py`` as a dict (our own file: loaded with pickle)."""
    return torch.load(lightning_ckpt, weights_only=False)


@pytest.fixture
def armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder for payload markers, armed: modules a payload would import are importable from it, and
    ``webbrowser`` would run ``touch`` (not a browser). Yields the folder; the test asserts it holds no marker."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.syspath_prepend(str(markers))
    monkeypatch.setenv("BROWSER", "touch")
    before = set(sys.modules)
    yield markers
    for name in set(sys.modules) - before:  # a payload module imported by a failing test: do not leak it
        if name.startswith("ckg_payload_"):
            del sys.modules[name]


# The positive controls' loader: each file given is loaded the unsafe way, as a user's own torch.load would.
_UNSAFE_LOAD = textwrap.dedent(
    """
    import sys, time, warnings
    import torch

    warnings.simplefilter("ignore")
    for path in sys.argv[1:]:
        try:
            torch.load(path, weights_only=False)
        except BaseException as exc:  # many payloads break the load after they ran; said, for a miss
            print(path, "->", type(exc).__name__, str(exc)[:300].replace("\\n", " "))
    time.sleep(0.5)
    """
)


def load_unsafely(paths: Iterable[Path], cwd: Path, markers: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Every file loaded with plain ``torch.load(weights_only=False)`` in a subprocess (the positive controls:
    what the gate refuses really runs that way); a ``webbrowser.open`` payload runs ``touch``, no browser."""
    env = {"PYTHONPATH": pythonpath(markers), "BROWSER": "touch", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _UNSAFE_LOAD, *map(str, paths)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def fired_within(markers: Path, expected: set[str], seconds: float = 10) -> set[str]:
    """The markers fired once ``expected`` all are, or ``seconds`` passed (a Popen payload needs a moment)."""
    deadline = time.monotonic() + seconds
    while not expected <= set(fired(markers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return set(fired(markers))


def fired(markers: Path) -> list[str]:
    """The markers payloads created (nothing else in the folder ends with .marker)."""
    return sorted(p.name for p in markers.glob("*.marker"))


def fingerprint(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: file content hash (size, blocks and mtime for sparse giants: reading 1 GiB of
    holes proves nothing), symlink target, or folder. Bytes names kept as they are."""
    found: dict[str, Any] = {}
    top = os.fsencode(root)
    for directory, subdirs, files in os.walk(top):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            key = os.path.relpath(path, top)
            info = os.lstat(path)
            if os.path.islink(path):
                found[key] = ("link", os.readlink(path))
            elif name in subdirs:
                found[key] = ("dir",)
            elif not stat.S_ISREG(info.st_mode):
                found[key] = ("special", info.st_mode)
            elif info.st_size > 64 << 20:
                found[key] = ("sparse", info.st_size, info.st_blocks, info.st_mtime_ns)
            else:
                with open(path, "rb") as handle:
                    found[key] = ("file", hashlib.sha256(handle.read()).hexdigest())
    return found
