"""Issue 7, target 2: discovery plus collection of 100, 1,000 and 10,000 checkpoints costs at most 1.3x
bare pytest collecting the same items, and grows linearly.

A: ``pytest --pyargs ckptgate.checks --collect-only`` on N fake checkpoints (5 items each: four checks,
   forward on cpu and cuda).
B: ``pytest --collect-only`` of a file with the same four test functions parametrized over the same
   ids (5 items per id), from the same folder with the same plugins.
Per-checkpoint cost: wall / N, and the marginal cost (wall(N) - wall(100)) / (N - 100), which has the
start-up taken out. Discovery alone (the walk) is timed in-process too, per checkpoint.
"""

from __future__ import annotations

import argparse
import time

from common import BARE_PYTEST, GATE, Figure, Timed, alternate, bare_test_file, header, paired, shown, workdir
from trees import fake_tree, layout

LIMIT = 1.3
SIZES = (100, 1000, 10000)
CHECKS = ("config_present", "config_schema", "weights_load", "forward")


def discovery_seconds(outputs: object) -> float:
    from ckptgate.discovery import discover

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        discover(outputs)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - started)
    return best


def run(sizes: tuple[int, ...] = SIZES, repeats: int = 3) -> list[Figure]:
    header(f"target 2: collection of {', '.join(map(str, sizes))} checkpoints vs bare pytest")
    rows = []
    for n in sizes:
        outputs = fake_tree(n)
        folder = workdir(f"collect-{n}")
        bare_test_file(folder, "test_bare_suite", [relpath for relpath, _, _ in layout(n)], CHECKS)
        gate = Timed(
            f"gate --collect-only ({n})", [*GATE, "--ckpt-outputs", str(outputs), "--collect-only", "-qq"], folder
        )
        bare = Timed(
            f"bare --collect-only ({n})", [*BARE_PYTEST, "test_bare_suite.py", "--collect-only", "-qq"], folder
        )
        alternate(gate, bare, repeats=repeats)
        assert f"{5 * n}" in gate.stdout and f"{5 * n}" in bare.stdout, (gate.stdout[-500:], bare.stdout[-500:])
        rows.append((n, gate, bare, discovery_seconds(outputs)))
    figures = []
    first_n, first_gate, first_bare, _ = rows[0]
    print(
        f"  {'N':>6} {'gate s':>8} {'bare s':>8} {'ratio':>6} {'gate ms/ckpt':>13} {'marginal gate':>14} "
        f"{'marginal bare':>14} {'discovery us/ckpt':>18}"
    )
    worst = 0.0
    for n, gate, bare, walk in rows:
        ratio = paired(gate, bare)
        worst = max(worst, ratio)
        if n > first_n:
            marginal_gate = (gate.median - first_gate.median) / (n - first_n) * 1e3
            marginal_bare = (bare.median - first_bare.median) / (n - first_n) * 1e3
            marginal = f"gate {marginal_gate:.3f} ms, bare {marginal_bare:.3f} ms"
        else:
            marginal = "-"
        print(
            f"  {n:>6} {gate.median:>8.2f} {bare.median:>8.2f} {ratio:>6.2f} {gate.median / n * 1e3:>13.3f} "
            f"{marginal:>29} {walk / n * 1e6:>18.1f}"
        )
        figures.append(
            Figure(
                f"2. collection of {n:,} checkpoints ({5 * n:,} items) vs bare pytest",
                f"{gate.median:.2f} s vs {bare.median:.2f} s = **{ratio:.2f}x**; {gate.median / n * 1e3:.2f} ms per "
                f"checkpoint (bare {bare.median / n * 1e3:.2f}); marginal {marginal}; discovery "
                f"{walk / n * 1e6:.0f} µs per checkpoint",
                ratio <= LIMIT,
                [shown(gate.command), shown(bare.command)],
            )
        )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for figure in run(tuple(args.sizes), args.repeats):
        print(figure.markdown())
