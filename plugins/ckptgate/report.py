"""Turn per-test reports into per-checkpoint verdicts: usable or not, and the one root cause.

Works from what every test report carries in ``user_properties`` (``ckpt``, ``ckpt_check``,
``ckpt_root_check``, ``ckpt_root_cause``), so the same code serves serial runs and the xdist controller,
which only sees reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CKPT = "ckpt"
CHECK = "ckpt_check"
ROOT_CHECK = "ckpt_root_check"
ROOT_CAUSE = "ckpt_root_cause"
CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")


@dataclass
class CheckpointVerdict:
    """Everything the run learned about one checkpoint."""

    relpath: str
    outcomes: dict[str, str] = field(default_factory=dict)  # "forward[cpu]" -> passed/failed/skipped/error
    root_check: str | None = None
    root_cause: str | None = None

    @property
    def usable(self) -> bool:
        values = self.outcomes.values()
        return "passed" in values and not any(v in ("failed", "error") for v in values)

    def note_root(self, check: str, cause: str) -> None:
        """Keep the earliest root cause in check order (reports arrive in any order under xdist)."""
        rank = CHECK_ORDER.index(check) if check in CHECK_ORDER else len(CHECK_ORDER)
        current = CHECK_ORDER.index(self.root_check) if self.root_check in CHECK_ORDER else len(CHECK_ORDER) + 1
        if self.root_check is None or rank < current:
            self.root_check, self.root_cause = check, cause


@dataclass
class Summary:
    """Collects verdicts from test reports."""

    verdicts: dict[str, CheckpointVerdict] = field(default_factory=dict)

    def add(self, properties: Iterable[tuple[str, Any]], when: str, outcome: str, nodeid: str) -> None:
        props = dict(properties)
        relpath = props.get(CKPT)
        if relpath is None:
            return
        verdict = self.verdicts.setdefault(relpath, CheckpointVerdict(relpath))
        check = str(props.get(CHECK, nodeid))
        if when == "call" or outcome != "passed":
            state = "error" if (when != "call" and outcome == "failed") else outcome
            previous = verdict.outcomes.get(check)
            if previous not in ("failed", "error"):
                verdict.outcomes[check] = state
        if props.get(ROOT_CHECK):
            verdict.note_root(str(props[ROOT_CHECK]), str(props.get(ROOT_CAUSE, "")))

    @property
    def usable(self) -> list[CheckpointVerdict]:
        return [v for v in self.sorted() if v.usable]

    @property
    def unusable(self) -> list[CheckpointVerdict]:
        return [v for v in self.sorted() if not v.usable and any(o in ("failed", "error") for o in v.outcomes.values())]

    def sorted(self) -> list[CheckpointVerdict]:
        return [self.verdicts[key] for key in sorted(self.verdicts)]

    def lines(self, verbose: bool = False) -> list[str]:
        if not self.verdicts:
            return []
        usable, unusable = self.usable, self.unusable
        total = len(self.verdicts)
        lines = [f"{total} checkpoint(s) checked: {len(usable)} usable, {len(unusable)} unusable"]
        for verdict in unusable:
            cause = (verdict.root_cause or "").replace(f" for {verdict.relpath}", "")  # the path is on the line above
            if cause.startswith(verdict.relpath + " "):
                cause = "the file " + cause.removeprefix(verdict.relpath + " ")
            lines.append(f"  UNUSABLE {verdict.relpath}")
            lines.append(f"      {verdict.root_check}: {cause}")
        if verbose:
            lines += [f"  usable   {verdict.relpath}" for verdict in usable]
        return lines
