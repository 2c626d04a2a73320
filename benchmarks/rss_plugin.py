"""A pytest plugin for the benchmarks (``-p rss_plugin``): what each checking process holds in memory.

Each process (the serial one, or each xdist worker; not the xdist controller) writes
``$CKPTGATE_RSS_DIR/<main|gw0|...>.txt`` with two numbers in KiB: its resident size once collection is
done and torch is imported (everything but the checks' own data), and its peak resident size at the end
(``ru_maxrss``). Their difference is what checking the checkpoints cost in memory.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

_BEFORE: list[int] = []


def _current_kib() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _checking(config: pytest.Config) -> bool:
    return bool(os.environ.get("CKPTGATE_RSS_DIR")) and not config.pluginmanager.hasplugin("dsession")


def pytest_collection_finish(session: pytest.Session) -> None:
    if _checking(session.config):
        import torch  # noqa: F401  (the checks import it first thing; counted in "before")

        _BEFORE.append(_current_kib())


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _checking(config) or not _BEFORE:
        return
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(os.environ["CKPTGATE_RSS_DIR"], f"{name}.txt").write_text(f"{_BEFORE[0]} {peak}")
