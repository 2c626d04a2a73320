"""Issue 17, target 6: pinning and comparing reuse the forward pass already done: on the benchmark tree, a run
with pins costs at most 1.05x the same run without.

Tree: target 3's, 100 genuine Lightning checkpoints of ~31 MB (``trees.real_tree``).

* once, untimed: the whole suite with ``--ckpt-pins pins.json --ckpt-pins-update`` (records a pin per
  checkpoint; the file must hold one entry per checkpoint);
* then alternated, in paired rounds after a warm-up round: the whole suite serial without pins, and the same
  with ``--ckpt-pins pins.json`` (each forward check compared with its pin; every one must be ``pinned``,
  none drifted). Both must give the same outcome per test.

The figure is the median of the per-round ratios (with pins / without).
"""

from __future__ import annotations

import argparse
import json
import re

from bench_full import outcomes
from common import GATE, Figure, Timed, alternate, header, paired, shown, workdir
from trees import real_tree

LIMIT = 1.05
ROUNDS = 5  # at least: the two sides differ by a few per cent at most


def _counts(stdout: str) -> dict[str, int]:
    """pytest's final line: ``400 passed, 100 skipped in 52.1s`` -> {"passed": 400, "skipped": 100}."""
    lines = [line for line in stdout.splitlines() if re.search(r"\d+ \w+.* in [\d.]+s", line)]
    assert lines, stdout[-2000:]
    return {word: int(count) for count, word in re.findall(r"(\d+) (\w+)", lines[-1].split(" in ")[0])}


def _pin_line(stdout: str) -> dict[str, int]:
    """The ckptgate summary's ``pins: 100 pinned`` (or ``pins: 98 pinned, 2 drifted``) as counts."""
    match = re.search(r"^pins: (.*)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return {status: int(count) for count, status in re.findall(r"(\d+) (\w+)", match.group(1))}


def run(n: int = 100, repeats: int = ROUNDS) -> list[Figure]:
    header(f"target 6: the whole suite with --ckpt-pins vs without, {n} real checkpoints, serial")
    outputs = real_tree(n)
    folder = workdir("pins")
    pins_file = folder / "pins.json"
    pins_file.unlink(missing_ok=True)

    def gate(label: str, xml: str, *extra: str) -> Timed:
        return Timed(label, [*GATE, "--ckpt-outputs", str(outputs), "-q", "--junitxml", xml, *extra], folder)

    update = gate(f"gate --ckpt-pins-update ({n})", "update.xml", "--ckpt-pins", str(pins_file), "--ckpt-pins-update")
    update.run()
    print(f"    {update.label}: {update.walls[-1]:.2f} s (untimed for the figure)", flush=True)
    recorded = json.loads(pins_file.read_text())["checkpoints"]
    assert len(recorded) == n, f"{pins_file}: {len(recorded)} pins for {n} checkpoints"
    assert _pin_line(update.stdout) == {"updated": n}, update.stdout[-2000:]

    plain = gate(f"gate serial ({n})", "plain.xml")
    pinned = gate(f"gate serial --ckpt-pins ({n})", "pinned.xml", "--ckpt-pins", str(pins_file))
    alternate(plain, pinned, repeats=repeats)

    for command in (plain, pinned):
        print(f"  {command.label:<32} {command.describe()}")
    counts = {command.label: _counts(command.stdout) for command in (plain, pinned)}
    status = _pin_line(pinned.stdout)
    same = (
        outcomes(folder / "plain.xml") == outcomes(folder / "pinned.xml")
        and counts[plain.label] == counts[pinned.label]
    )
    no_drift = status.get("pinned", 0) > 0 and set(status) == {"pinned"}
    ratio = paired(pinned, plain)
    met = ratio <= LIMIT and same and no_drift
    shown_counts = ", ".join(f"{count} {word}" for word, count in counts[plain.label].items())
    shown_pins = ", ".join(f"{count} {word}" for word, count in status.items())
    print(
        f"  with pins / without: {ratio:.3f}x (median of {repeats} paired rounds; limit {LIMIT}x); "
        f"same outcomes: {same} ({shown_counts}); pins: {shown_pins}; {len(recorded)} pins recorded"
    )
    print(f"  verdict: {'met' if met else 'NOT met'}", flush=True)
    return [
        Figure(
            f"6. whole suite with `--ckpt-pins` vs without ({n} real checkpoints, serial)",
            f"{pinned.median:.2f} s vs {plain.median:.2f} s = **{ratio:.3f}x** (limit {LIMIT}x, {repeats} paired "
            f"rounds); same outcomes: {same} ({shown_counts}); pins: {shown_pins}",
            met,
            [shown(update.command), shown(plain.command), shown(pinned.command)],
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=ROUNDS)
    args = parser.parse_args()
    for figure in run(args.n, args.repeats):
        print(figure.markdown())
