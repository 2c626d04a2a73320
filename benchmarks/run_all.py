"""Run every benchmark of issue 7 (and issue 17's target 6) and write the figures into ``benchmarks/RESULTS.md``.

    python benchmarks/run_all.py            # all targets (under 10 minutes once the trees are built)
    python benchmarks/run_all.py --only 1 2 # some of them

The trees are built on first use under ``benchmarks/.cache/`` (gitignored): ~3 GB for 100 real
checkpoints, ~31 GB for the 1,000 of target 5 (a few minutes, once). The figures replace the section
between the ``<!-- figures -->`` markers of RESULTS.md; the notes around it are kept.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import bench_cache
import bench_collect
import bench_config
import bench_full
import bench_pins
from common import HERE, Figure, load, machine

RESULTS = HERE / "RESULTS.md"
START, END = "<!-- figures -->", "<!-- /figures -->"


def render(figures: list[Figure], started: datetime.datetime, seconds: float, targets: list[str]) -> str:
    lines = [
        START,
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}; {load()} at the end; "
        f"`python benchmarks/run_all.py{' --only ' + ' '.join(targets) if targets else ''}` took {seconds:.0f} s.",
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
        *(figure.markdown() for figure in figures),
        "",
        "Commands (run from the benchmark's work folder `benchmarks/.cache/work/<name>/`, with `benchmarks/` on "
        "`PYTHONPATH`; each is alternated with the others of its figure after a warm-up round):",
        "",
    ]
    for figure in figures:
        lines.append(f"- {figure.target}:")
        lines += [f"  - `{command}`" for command in figure.commands]
    lines.append(END)
    return "\n".join(lines)


def write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmarks (issue 7)\n\n{START}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    RESULTS.write_text(before + section + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["1", "2", "3", "4", "5", "6"], default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave RESULTS.md alone")
    args = parser.parse_args()
    wanted = set(args.only) or {"1", "2", "3", "4", "5", "6"}
    started, clock = datetime.datetime.now(datetime.UTC), time.perf_counter()
    figures: list[Figure] = []
    if "1" in wanted:
        figures += bench_config.run(repeats=args.repeats)
    if "2" in wanted:
        figures += bench_collect.run(repeats=args.repeats)
    if wanted & {"3", "4"}:
        figures += bench_full.run(repeats=args.repeats)
    if "5" in wanted:
        figures += bench_cache.run(repeats=args.repeats)
    if "6" in wanted:  # a few per cent to resolve: never fewer than bench_pins.ROUNDS paired rounds
        figures += bench_pins.run(repeats=max(args.repeats, bench_pins.ROUNDS))
    section = render(figures, started, time.perf_counter() - clock, sorted(args.only))
    print("\n" + section)
    if not args.no_write:
        write(section)
        print(f"\nwrote {Path(RESULTS).relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
