"""Issue 7, target 1: the config checks of 2,000 checkpoints cost at most 1.3x bare pytest.

A: ``pytest --pyargs ckptgate.checks -k "config_present or config_schema"`` on 2,000 fake checkpoints
   (a few bytes each: the config checks never read them) with sidecar configs.
B: a pytest file of 4,000 trivial tests (``test_config_present`` and ``test_config_schema`` over the same
   ids), run with the same plugins from the same folder;
C: a pytest file with the suite's four test functions as trivial tests over the same ids (10,000 items),
   run with the same ``-k``: pytest's own cost of the same command.
Wall times include start-up. That the config checks open no ``.ckpt`` file is proven by
``tests/test_perf_scheduling.py::test_config_checks_open_no_checkpoint_file``, not here.
"""

from __future__ import annotations

import re

from common import (
    BARE_PYTEST,
    GATE,
    Figure,
    Timed,
    alternate,
    bare_test_file,
    header,
    main,
    paired,
    ratio_figure,
    workdir,
)
from trees import fake_tree, layout

LIMIT = 1.3


def run(n: int = 2000, repeats: int = 3) -> list[Figure]:
    header(f"target 1: config checks of {n} checkpoints vs bare pytest")
    outputs = fake_tree(n)
    folder = workdir("config")
    relpaths = [relpath for relpath, _, _ in layout(n)]
    bare_test_file(folder, "test_bare_config", relpaths, ("config_present", "config_schema"))
    gate = Timed(
        "gate -k config",
        [*GATE, "--ckpt-outputs", str(outputs), "-q", "-k", "config_present or config_schema"],
        folder,
    )
    bare = Timed("bare pytest", [*BARE_PYTEST, "test_bare_config.py", "-q"], folder)
    bare_test_file(folder, "test_bare_suite", relpaths, ("config_present", "config_schema", "weights_load", "forward"))
    mirror = Timed(
        "bare suite -k config",
        [*BARE_PYTEST, "test_bare_suite.py", "-q", "-k", "config_present or config_schema"],
        folder,
    )
    alternate(gate, bare, mirror, repeats=repeats)
    passed = re.search(r"(\d+) passed", gate.stdout)
    assert passed and int(passed.group(1)) == 2 * n, gate.stdout[-2000:]
    ratio, ratio_mirror = paired(gate, bare), paired(gate, mirror)
    for command in (gate, bare, mirror):
        print(f"  {command.label:<22} {command.describe()}")
    print(f"  gate / bare {ratio:.2f}, gate / bare suite with the same -k {ratio_mirror:.2f} (limit {LIMIT})")
    return [
        ratio_figure(
            f"1. config checks, {n:,} checkpoints, vs a bare file of the {2 * n:,} tests they run",
            gate,
            bare,
            ratio,
            LIMIT,
        ),
        ratio_figure(
            f"1. the same, vs the bare suite ({5 * n:,} trivial items, same ids) run with the same `-k`",
            gate,
            mirror,
            ratio_mirror,
            LIMIT,
        ),
    ]


if __name__ == "__main__":
    main(run, __doc__, n=2000)
