"""Issue 7, targets 3 and 4: the full checks cost at most 1.25x the unavoidable work; ``-n 2`` is as fast
as this machine allows; peak memory per worker does not grow with the number of checkpoints.

Tree: 100 genuine Lightning checkpoints of ~31 MB (``trees.real_tree``), three per run folder, and a
10-checkpoint subset of it (hard links). Commands, alternated:

* gate serial and ``-n 2`` (``pytest --pyargs ckptgate.checks``, every check, cpu; cuda skips);
* ``bare_check.py``: safe ``torch.load`` (weights_only, mmap), build, strict ``load_state_dict``, one
  forward per checkpoint; ``--reuse`` builds one model per distinct config instead (the floor);
* ``bare_check.py --halves``: two bare processes at once, one thread each, on halves of the tree
  (the speedup two processes can reach on this machine).

Per-checkpoint cost is the marginal one, (wall(100) - wall(10)) / 90: start-up taken out of both sides.
Peak RSS per worker comes from ``rss_plugin`` (``ru_maxrss`` in each worker).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from common import GATE, HERE, PYTHON, Figure, Timed, alternate, header, main, paired, paired_marginal, shown, workdir
from trees import layout, real_tree, subset

COST_LIMIT = 1.25
SPEEDUP_GOAL = 1.7
MACHINE_SHARE = 0.9


def outcomes(xml: Path) -> dict[str, str]:
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        found[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return found


def rss(folder: Path) -> dict[str, tuple[float, float]]:
    """(resident before the checks, peak) in MiB per checking process, from the files rss_plugin wrote."""
    found = {}
    for path in sorted(folder.glob("*.txt")):
        before, peak = (int(value) / 1024 for value in path.read_text().split())
        found[path.stem] = (before, peak)
    return found


def run(n: int = 100, small_n: int = 10, repeats: int = 3) -> list[Figure]:
    header(f"targets 3 and 4: full checks of {n} real checkpoints")
    outputs = real_tree(n)
    small = subset(outputs, [relpath for relpath, _, _ in layout(small_n)], f"real-{n}-first-{small_n}")
    folder = workdir("full")
    bare_script = str(HERE / "bare_check.py")

    def gate(label: str, tree: Path, rss: str, *extra: str) -> Timed:
        rss_dir = folder / "rss" / rss
        rss_dir.mkdir(parents=True, exist_ok=True)
        for old in rss_dir.glob("*.txt"):
            old.unlink()
        command = [*GATE, "--ckpt-outputs", str(tree), "-p", "rss_plugin", "-q", "--junitxml", f"{rss}.xml", *extra]
        return Timed(label, command, folder, {"CKPTGATE_RSS_DIR": str(rss_dir)})

    serial = gate(f"gate serial ({n})", outputs, "serial-big")
    parallel = gate(f"gate -n 2 ({n})", outputs, "parallel-big", "-n", "2")
    small_serial = gate(f"gate serial ({small_n})", small, "serial-small")
    small_parallel = gate(f"gate -n 2 ({small_n})", small, "parallel-small", "-n", "2")
    bare = Timed(f"bare ({n})", [PYTHON, bare_script, str(outputs)], folder)
    bare_reuse = Timed(f"bare --reuse ({n})", [PYTHON, bare_script, str(outputs), "--reuse"], folder)
    small_bare = Timed(f"bare ({small_n})", [PYTHON, bare_script, str(small)], folder)
    small_bare_reuse = Timed(f"bare --reuse ({small_n})", [PYTHON, bare_script, str(small), "--reuse"], folder)
    halves = Timed(f"bare halves ({n})", [PYTHON, bare_script, str(outputs), "--halves"], folder)
    halves_reuse = Timed(
        f"bare halves --reuse ({n})", [PYTHON, bare_script, str(outputs), "--halves", "--reuse"], folder
    )
    commands = [serial, bare, bare_reuse, parallel, halves, halves_reuse, small_serial, small_bare, small_bare_reuse]
    alternate(*commands, small_parallel, repeats=repeats)

    def marginal(big: Timed, little: Timed) -> float:
        return (big.median - little.median) / (n - small_n)

    for command in (*commands, small_parallel):
        print(f"  {command.label:<28} {command.describe()}")
    gate_each, bare_each, reuse_each = (
        marginal(serial, small_serial),
        marginal(bare, small_bare),
        marginal(bare_reuse, small_bare_reuse),
    )
    cost = paired_marginal(serial, small_serial, bare, small_bare)
    cost_reuse = paired_marginal(serial, small_serial, bare_reuse, small_bare_reuse)
    total = paired(serial, bare)
    print(
        f"  per checkpoint (marginal): gate {gate_each * 1e3:.1f} ms, bare {bare_each * 1e3:.1f} ms "
        f"({cost:.2f}x), bare --reuse {reuse_each * 1e3:.1f} ms ({cost_reuse:.2f}x); whole runs {total:.2f}x"
    )

    speedup = paired(serial, parallel)
    # the speed-up per checkpoint, start-up on both sides taken out: what a tree much larger than this one
    # would see (informative; the verdict is on whole runs, as the issue words it)
    per_checkpoint = paired_marginal(serial, small_serial, parallel, small_parallel)
    bare_speedups = {"bare": paired(bare, halves), "bare --reuse": paired(bare_reuse, halves_reuse)}
    machine_limit = max(bare_speedups.values())
    same = outcomes(folder / "serial-big.xml") == outcomes(folder / "parallel-big.xml")
    parallel_ok = same and (speedup >= SPEEDUP_GOAL or speedup >= MACHINE_SHARE * machine_limit)
    shown_bare = ", ".join(f"{name} {value:.2f}x" for name, value in bare_speedups.items())
    print(
        f"  -n 2 speedup {speedup:.2f}x (per checkpoint, start-up out: {per_checkpoint:.2f}x); two bare one-thread "
        f"processes on halves: {shown_bare}; same outcomes: {same}"
    )

    memory = {
        size: {**rss(folder / "rss" / f"serial-{size}"), **rss(folder / "rss" / f"parallel-{size}")}
        for size in ("small", "big")
    }
    largest = max(p.stat().st_size for p in outputs.rglob("*.ckpt")) / 2**20
    model = _model_mib()
    added = {size: {name: peak - before for name, (before, peak) in found.items()} for size, found in memory.items()}
    for size, count in (("small", small_n), ("big", n)):
        shown_rss = ", ".join(
            f"{name} {before:.0f} -> {peak:.0f} (+{peak - before:.0f})" for name, (before, peak) in memory[size].items()
        )
        print(f"  RSS MiB before the checks -> peak, {count} checkpoints: {shown_rss}")
    bound = largest + model
    worst_small, worst_big = max(added["small"].values()), max(added["big"].values())
    bare_added = {count: _bare_added(command) for count, command in ((small_n, small_bare_reuse), (n, bare_reuse))}
    print(
        f"  bare --reuse (one checkpoint and one model at a time): +{bare_added[small_n]:.0f} MiB ({small_n}), "
        f"+{bare_added[n]:.0f} MiB ({n}); checkpoint {largest:.0f} MiB + model {model:.0f} MiB = {bound:.0f} MiB"
    )
    # bounded: no growth with the number of checkpoints, and no more than the bare script holding one
    # checkpoint and one model at a time (torch's allocator and kernels' buffers come on top of both)
    memory_ok = worst_big - worst_small <= 0.5 * largest and worst_big <= 1.1 * bare_added[n] + 5
    figures = [
        Figure(
            f"3. full checks per checkpoint vs bare script ({n} real ~{largest:.0f} MB checkpoints, serial)",
            f"marginal {gate_each * 1e3:.1f} ms vs {bare_each * 1e3:.1f} ms = **{cost:.2f}x** (limit {COST_LIMIT}x); "
            f"vs the build-once-per-config floor {reuse_each * 1e3:.1f} ms: {cost_reuse:.2f}x; whole runs "
            f"(start-up included) {serial.median:.2f} s vs {bare.median:.2f} s = {total:.2f}x",
            cost <= COST_LIMIT,
            [shown(serial.command), shown(bare.command), shown(bare_reuse.command), shown(small_serial.command)],
        ),
        Figure(
            f"4. `-n 2` vs serial ({n} real checkpoints, 2 cores)",
            f"{serial.median:.2f} s / {parallel.median:.2f} s = **{speedup:.2f}x** (per checkpoint, start-up out: "
            f"{per_checkpoint:.2f}x); two bare one-thread processes on "
            f"halves: {shown_bare} (machine limit; need {MACHINE_SHARE} of it = "
            f"{MACHINE_SHARE * machine_limit:.2f}x, or {SPEEDUP_GOAL}x); same outcomes: {same}",
            parallel_ok,
            [
                shown(parallel.command),
                shown(halves.command),
                shown(halves_reuse.command),
                shown(small_parallel.command),
            ],
        ),
        Figure(
            f"4. peak RSS per worker added by the checks, {small_n} vs {n} checkpoints",
            f"{small_n}: {_mib(added['small'])}; {n}: {_mib(added['big'])} (serial: main; -n 2: gw0, gw1); the bare "
            f"script, one checkpoint and one model at a time: +{bare_added[small_n]:.0f} / +{bare_added[n]:.0f} MiB; "
            f"largest checkpoint {largest:.0f} MiB + one model {model:.0f} MiB = {bound:.0f} MiB",
            memory_ok,
            [shown(serial.command), shown(parallel.command)],
        ),
    ]
    return figures


def _bare_added(command: Timed) -> float:
    """MiB the bare script's peak is above its resident size after the imports (from its last line)."""
    match = re.search(r"RSS KiB (\d+) -> (\d+)", command.stdout)
    assert match, command.stdout[-500:]
    return (int(match.group(2)) - int(match.group(1))) / 1024


def _mib(values: dict[str, float]) -> str:
    return ", ".join(f"{name} +{value:.0f} MiB" for name, value in values.items())


def _model_mib() -> float:
    """The size of one model's parameters and buffers (what a built model holds)."""
    import sys

    from omegaconf import OmegaConf

    sys.path.insert(0, str(HERE))
    from bench_models import build, model_section

    model = build(OmegaConf.create(model_section(0)))
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20


if __name__ == "__main__":
    main(lambda n, repeats: run(n, repeats=repeats), __doc__, n=100)
