"""Issue 7, target 5: with ``--ckpt-cache``, a re-run over an unchanged tree of 1,000 real checkpoints costs
at most 1.3x bare pytest with the same item count, and at most a tenth of the uncached run.

Tree: 1,000 genuine Lightning checkpoints of ~31 MB (``trees.real_tree``; ~31 GB, more than this
machine's page cache, so the uncached run reads from disk as a CI runner would).

* uncached: ``--ckpt-cache --cache-clear`` (every check runs, and the cache is filled), once;
* cached: ``--ckpt-cache`` again (4,000 outcomes replayed, the 1,000 cuda checks skip: no GPU);
* bare: a pytest file with the same 5,000 trivial items (four functions, forward on cpu and cuda).
The cached and bare runs alternate.
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
    shown,
    workdir,
)
from trees import layout, real_tree

BARE_LIMIT = 1.3
UNCACHED_SHARE = 0.1
CHECKS = ("config_present", "config_schema", "weights_load", "forward")


def run(n: int = 1000, repeats: int = 3) -> list[Figure]:
    header(f"target 5: re-run of {n} unchanged real checkpoints with --ckpt-cache")
    outputs = real_tree(n)
    folder = workdir("cache")
    bare_test_file(folder, "test_bare_suite", [relpath for relpath, _, _ in layout(n)], CHECKS)
    gate = [*GATE, "--ckpt-outputs", str(outputs), "-q", "--ckpt-cache"]
    # one pytest cache folder for both: the cached run replays what the uncached one stored
    uncached = Timed(f"gate, cache cleared ({n})", [*gate, "--cache-clear"], folder, cache="gate")
    cached = Timed(f"gate, cached ({n})", gate, folder, cache="gate")
    bare = Timed(f"bare pytest ({5 * n} items)", [*BARE_PYTEST, "test_bare_suite.py", "-q"], folder)
    alternate(uncached, repeats=1, warmup=False)
    print(f"    {uncached.label}: {uncached.walls[-1]:.2f} s", flush=True)
    alternate(cached, bare, repeats=repeats)
    replayed = re.search(r"(\d+) check outcome\(s\) replayed", cached.stdout)
    assert replayed and int(replayed.group(1)) == 4 * n, cached.stdout[-3000:]
    vs_bare = paired(cached, bare)
    vs_uncached = cached.median / uncached.median
    for command in (uncached, cached, bare):
        print(f"  {command.label:<34} {command.describe()}")
    print(f"  cached / bare {vs_bare:.2f} (limit {BARE_LIMIT})")
    print(f"  cached / uncached {vs_uncached:.3f} (limit {UNCACHED_SHARE})")
    return [
        ratio_figure(
            f"5. cached re-run, {n:,} unchanged real checkpoints, vs bare pytest ({5 * n:,} items)",
            cached,
            bare,
            vs_bare,
            BARE_LIMIT,
        ),
        Figure(
            f"5. cached re-run vs the uncached run ({n:,} real checkpoints)",
            f"{cached.median:.2f} s vs {uncached.median:.2f} s = **{vs_uncached:.3f}** (limit {UNCACHED_SHARE})",
            vs_uncached <= UNCACHED_SHARE,
            [shown(uncached.command), shown(cached.command)],
        ),
    ]


if __name__ == "__main__":
    main(run, __doc__, n=1000)
