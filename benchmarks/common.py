"""What every benchmark shares: isolated pytest work folders, timed commands, A/B alternation, figures.

Each figure is a ratio of two commands timed in the same run: the commands alternate (A B A B ...) after
an untimed warm-up round, and their medians are compared, so slow phases of a noisy machine hit both.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trees import CACHE, HERE

REPO = HERE.parent
PYTHON = sys.executable
# hypothesis' pytest plugin imports hypothesis (~1 s) at the end of every run in this environment: left
# out on both sides, so that it does not dilute the ratios
# --basetemp: pytest otherwise deletes old /tmp/pytest-of-<user>/pytest-N folders at the end of a run that
# made one (every -n run does), seconds when other pytest runs on the machine left many behind
PYTEST = [
    PYTHON,
    "-m",
    "pytest",
    "-c",
    "pytest.ini",
    "--rootdir",
    ".",
    "-p",
    "no:hypothesispytest",
    "--basetemp",
    ".tmp",
]
GATE = [*PYTEST, "--pyargs", "ckptgate.checks"]
BARE_PYTEST = PYTEST
INI = {"ckpt_model_factory": "bench_models:build"}


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()}, Python {platform.python_version()}"
    return f"{cpus} cores ({model or platform.machine()}), {mem:.0f} GiB RAM, {system}"


def load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def workdir(name: str) -> Path:
    """A folder with its own ``pytest.ini`` (the repository's conftest, pyproject and addopts stay out)."""
    path = CACHE / "work" / name
    path.mkdir(parents=True, exist_ok=True)
    lines = ["[pytest]", *(f"{key} = {value}" for key, value in INI.items())]
    (path / "pytest.ini").write_text("\n".join(lines) + "\n")
    return path


def env(**extra: str) -> dict[str, str]:
    """The environment of every timed command: benchmarks/ importable (the model family, rss_plugin)."""
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def bare_test_file(folder: Path, name: str, relpaths: Sequence[str], checks: Sequence[str]) -> Path:
    """A pytest file of trivial tests with the shipped checks' names and ids (``forward`` on cpu and cuda)."""
    (folder / f"{name}.ids").write_text("\n".join(relpaths))
    lines = [
        "from pathlib import Path",
        "",
        "import pytest",
        "",
        f'IDS = Path(__file__).with_name("{name}.ids").read_text().split("\\n")',
    ]
    for check in checks:
        lines += ["", ""]
        if check == "forward":
            lines.append('@pytest.mark.parametrize("device", ["cpu", "cuda"])')
        lines.append('@pytest.mark.parametrize("ckpt", IDS, ids=IDS)')
        lines.append(f"def test_{check}(ckpt{', device' if check == 'forward' else ''}):")
        lines.append("    pass")
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Timed:
    """One command, run several times; its wall times (start-up included) are kept."""

    label: str
    command: list[str]
    cwd: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    ok_codes: tuple[int, ...] = (0,)
    walls: list[float] = field(default_factory=list)
    stdout: str = ""
    cache: str | None = None  # the name of its pytest cache folder; the label's by default

    def __post_init__(self) -> None:
        # Each pytest command keeps its own cache folder, as a project's repeated runs do. One folder shared
        # by every command of a benchmark held all their node ids (28,000 in target 1's), which each run
        # reads and rewrites: ~0.3 s added to both sides of a ratio, flattering it.
        if self.command[1:3] == ["-m", "pytest"]:
            name = re.sub(r"[^A-Za-z0-9]+", "-", self.cache or self.label).strip("-").lower()
            self.command = [*self.command, "-o", f"cache_dir=.pytest_cache/{name}"]

    def run(self) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            self.command, cwd=self.cwd, env=env(**self.extra_env), capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        if done.returncode not in self.ok_codes:
            raise SystemExit(
                f"{self.label}: exit {done.returncode}\n$ {shown(self.command)}\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-4000:]}"
            )
        self.walls.append(wall)
        self.stdout = done.stdout + done.stderr
        return wall

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def describe(self) -> str:
        runs = ", ".join(f"{w:.2f}" for w in self.walls)
        return f"{self.median:.2f} s (median of {len(self.walls)}: {runs})"


def alternate(*commands: Timed, repeats: int = 3, warmup: bool = True) -> None:
    """Run the commands in turn ``repeats`` times, after one untimed warm-up round."""
    if warmup:
        for command in commands:
            command.run()
            command.walls.clear()
    for _ in range(repeats):
        for command in commands:
            command.run()
            print(f"    {command.label}: {command.walls[-1]:.2f} s", flush=True)


def shown(command: Sequence[str]) -> str:
    """A command line as it can be pasted from the work folder (repository paths shortened)."""
    parts = []
    for part in command:
        part = "python" if part == PYTHON else part.replace(str(REPO) + "/", "")
        parts.append(f'"{part}"' if " " in part else part)
    return " ".join(parts)


@dataclass
class Figure:
    """One measured figure, its target and whether it is met, with the commands that reproduce it."""

    target: str
    figure: str
    met: bool | None  # None: informational
    commands: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        verdict = {True: "**met**", False: "**NOT met**", None: "(info)"}[self.met]
        return f"| {self.target} | {self.figure} | {verdict} |"


def ratio_figure(target: str, gate: Timed, floor: Timed, ratio: float, limit: float) -> Figure:
    """``gate s vs floor s = **ratio x** (limit)``: met when the ratio is within the limit."""
    figure = f"{gate.median:.2f} s vs {floor.median:.2f} s = **{ratio:.2f}x** (limit {limit}x)"
    return Figure(target, figure, ratio <= limit, [shown(gate.command), shown(floor.command)])


def main(run: Callable[[int, int], list[Figure]], doc: str, n: int) -> None:
    """The command line of a benchmark that runs alone: ``--n`` checkpoints, ``--repeats`` rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for figure in run(args.n, args.repeats):
        print(figure.markdown())


def header(title: str) -> None:
    print(f"\n== {title} ({load()}) ==", flush=True)


def paired(numerator: Timed, denominator: Timed) -> float:
    """The median of the per-round ratios: each round's two runs were close in time, so a slow phase of the
    machine (other processes) hits both; the median drops the rounds where it hit only one."""
    return statistics.median(a / b for a, b in zip(numerator.walls, denominator.walls, strict=True))


def paired_marginal(big: Timed, small: Timed, big_ref: Timed, small_ref: Timed) -> float:
    """The median over rounds of (big - small) / (big_ref - small_ref): per-item cost, start-up taken out."""
    rounds = zip(big.walls, small.walls, big_ref.walls, small_ref.walls, strict=True)
    return statistics.median((a - b) / (c - d) for a, b, c, d in rounds)
