"""Where and when each check runs: a checkpoint's checks back to back, a run's checkpoints on one worker.

The gate gives the same outcomes in any order (each stage is remembered per checkpoint), so none of
this is about correctness; it is about doing the expensive work once:

* **Order.** Every check of one checkpoint runs back to back, checkpoints in collection order (so the
  checkpoints of one run folder are neighbours): the checkpoint is read once, its model stays loaded from
  ``test_weights_load`` to ``test_forward``, and the next checkpoint of the run reuses the built model.
  pytest would do this itself for a session-scoped parameter, but its reordering costs seconds on
  tens of thousands of items; grouping by key is linear.
* **Workers.** Under pytest-xdist, when the user did not choose a ``--dist`` mode (plain ``-n N``), the
  plugin supplies the scheduler: ``--dist load`` balancing, except that a run folder's checkpoints form
  one unit of work and go to one worker (large runs are cut into a few units so that workers stay
  balanced). Test ids are untouched, unlike ``--dist loadgroup``, which appends ``@group`` to them.
  An explicit ``--dist`` (``load``, ``loadscope``...) is always honoured.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import pytest

from ckptgate.discovery import CHECKPOINT_FOLDERS, CHECKPOINT_SUFFIX
from ckptgate.items import checkpoint_of

MIN_UNIT = 8  # checkpoints: a run's best, last and best-vN are never cut apart


def register(config: pytest.Config) -> None:
    """Called from ckptgate's ``pytest_configure``."""
    config.pluginmanager.register(Scheduling(config), "ckptgate-scheduling")


def group_by_checkpoint(items: list[pytest.Item]) -> list[pytest.Item]:
    """Each checkpoint's items moved to where its first item is; everything else keeps its place."""
    first: dict[str, int] = {}
    keys = []
    for index, item in enumerate(items):
        record = checkpoint_of(item)
        keys.append(index if record is None else first.setdefault(record.relpath, index))
    order = sorted(range(len(items)), key=keys.__getitem__)  # stable: a checkpoint's checks keep their order
    return [items[index] for index in order]


def checkpoint_id(nodeid: str) -> str | None:
    """The checkpoint relpath in a check's node id (``...::test_forward[run/checkpoints/best.ckpt-cpu]``)."""
    name = nodeid.rpartition("::")[2]
    start = name.find("[")
    if start == -1 or not name.endswith("]"):
        return None
    end = name.rfind(CHECKPOINT_SUFFIX, start)
    return name[start + 1 : end + len(CHECKPOINT_SUFFIX)] if end != -1 else None


def run_of(relpath: str) -> str:
    """The run folder of a checkpoint relpath, as discovery names it (``run_x`` for ``run_x/checkpoints/a.ckpt``)."""
    parent = PurePosixPath(relpath).parent
    if parent.name in CHECKPOINT_FOLDERS:
        parent = parent.parent
    return str(parent)


def work_units(nodeids: Sequence[str], workers: int) -> dict[str, str]:
    """The unit of work of every node id; anything that is not a checkpoint's check is its own unit.

    A checkpoint's checks are never split, nor a run folder's checkpoints unless the run is large against a
    worker's share. Neighbouring runs are packed into units of up to ``limit`` checkpoints, ``limit`` being
    an eighth of a worker's share: few enough units that workers rarely wait for the controller, enough
    that they finish together.
    """
    checkpoints: dict[str, str | None] = {nodeid: checkpoint_id(nodeid) for nodeid in nodeids}
    runs: dict[str, list[str]] = {}  # run -> its checkpoints, in collection order
    for relpath in dict.fromkeys(relpath for relpath in checkpoints.values() if relpath is not None):
        runs.setdefault(run_of(relpath), []).append(relpath)
    total = sum(len(members) for members in runs.values())
    limit = max(MIN_UNIT, math.ceil(total / (8 * max(1, workers))))
    unit_of: dict[str, str] = {}
    number, size = 0, 0
    for members in runs.values():
        for start in range(0, len(members), limit):  # a run larger than a unit is cut
            piece = members[start : start + limit]
            if size and size + len(piece) > limit:
                number, size = number + 1, 0
            unit_of.update((relpath, f"ckptgate-unit:{number}") for relpath in piece)
            size += len(piece)
    return {nodeid: nodeid if relpath is None else unit_of[relpath] for nodeid, relpath in checkpoints.items()}


class Scheduling:
    """The pytest plugin: item order everywhere, and the xdist scheduler where the user left the choice to us."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)  # after anything that reorders (pytest-randomly): group what it left
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items[:] = group_by_checkpoint(items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        scheduling = _run_group_scheduling() if _dist_left_to_us(config) else None
        return scheduling(config, log) if scheduling is not None else None  # None: xdist's own --dist load


def _dist_left_to_us(config: pytest.Config) -> bool:
    """True for ``-n N`` alone: xdist turned ``--dist no`` into ``load`` itself; the user chose nothing."""
    chosen = getattr(config, "known_args_namespace", None)  # the command line as given, before xdist's defaults
    if chosen is None:
        return False
    given = getattr(chosen, "dist", "no") != "no" or getattr(chosen, "distload", False)
    return config.getoption("dist", "no") == "load" and not given


@functools.cache
def _run_group_scheduling() -> type | None:
    """The scheduler class (built on first use: xdist is imported only when it runs the session); None
    when this pytest-xdist's load-by-scope scheduler lacks the methods it refines."""
    from xdist.scheduler import LoadScopeScheduling

    refined = ("_split_scope", "_assign_work_unit", "mark_test_complete", "schedule", "_reschedule")
    if not all(hasattr(LoadScopeScheduling, name) for name in refined):
        return None

    class RunGroupScheduling(LoadScopeScheduling):
        """xdist's load-by-scope scheduling, with ckptgate's units of work as the scopes."""

        def __init__(self, config: pytest.Config, log: Any = None) -> None:
            super().__init__(config, log)
            self._units: dict[str, str] = {}
            self._positions: dict[Any, dict[str, int]] = {}
            self._left: dict[tuple[Any, str], int] = {}  # (worker, unit) -> its checks not done yet

        def schedule(self) -> None:
            if self.collection is None and self.registered_collections:
                collection = next(iter(self.registered_collections.values()))
                self._units = work_units(collection, len(self.nodes))
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return self._units.get(nodeid, nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # as LoadScopeScheduling's, with the node's positions looked up in a dict: its list.index()
            # is quadratic, minutes for tens of thousands of items
            scope, work_unit = self.workqueue.popitem(last=False)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            positions = self._positions.get(node)
            if positions is None:
                positions = self._positions[node] = {
                    nodeid: index for index, nodeid in enumerate(self.registered_collections[node])
                }
            pending = [positions[nodeid] for nodeid, done in work_unit.items() if not done]
            self._left[(node, scope)] = len(pending)
            node.send_runtest_some(pending)

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            # as LoadScopeScheduling's, and a unit is forgotten once done: its bookkeeping otherwise walks
            # every unit a worker ever had at the end of each test, quadratic on tens of thousands of items
            nodeid = self.registered_collections[node][item_index]
            scope = self._split_scope(nodeid)
            self.assigned_work[node][scope][nodeid] = True
            left = self._left[(node, scope)] = self._left.get((node, scope), 1) - 1
            if left <= 0:
                del self._left[(node, scope)], self.assigned_work[node][scope]
            self._reschedule(node)

    return RunGroupScheduling
