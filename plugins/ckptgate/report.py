"""Turn per-test reports into per-checkpoint verdicts: usable or not, and the one root cause.

Works from what every test report carries in ``user_properties`` (``ckpt``, ``ckpt_check``,
``ckpt_root_check``, ``ckpt_root_cause``, ``config_source``, ``model_route``), so the same code serves serial
runs and the xdist controller, which only sees reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CKPT = "ckpt"
CHECK = "ckpt_check"
ROOT_CHECK = "ckpt_root_check"
ROOT_CAUSE = "ckpt_root_cause"
CONFIG_SOURCE = "config_source"
CONFIG_SKIPPED = "config_skipped"  # broken config files passed over to reach the one used
SETUP_ERROR = "ckpt_setup_error"  # the settings' fault (code an option names cannot be used): no verdict
MODEL_ROUTE = "model_route"
PIN = "ckpt_pin"  # a forward check's comparison with its pin: pins.PINNED, UNPINNED, DRIFTED or UPDATED
PIN_TAKEN = "ckpt_pin_taken"  # with --ckpt-pins-update: the pin this forward check took (JSON text)
SIZE_MB = "ckpt_size_mb"
RUN = "ckpt_run"
GATE_PROPERTIES = frozenset(  # the reporter's own
    {CKPT, CHECK, ROOT_CHECK, ROOT_CAUSE, CONFIG_SOURCE, CONFIG_SKIPPED, MODEL_ROUTE, SETUP_ERROR, SIZE_MB, RUN, PIN}
)
CHECK_ORDER = ("config_present", "config_schema", "weights_load", "forward")
FAILED = frozenset({"failed", "error"})
BAD = FAILED | {"xfailed"}  # xfailed: expected unusable (in the baseline)
GOOD = frozenset({"passed", "xpassed"})  # xpassed: listed in the baseline, but it passes now


def check_rank(check: str) -> int:
    """Position of a check (``forward[cpu]`` counts as ``forward``); a user's own checks come last."""
    base = check.split("[", 1)[0]
    return CHECK_ORDER.index(base) if base in CHECK_ORDER else len(CHECK_ORDER)


@dataclass
class CheckpointVerdict:
    """Everything the run learned about one checkpoint."""

    relpath: str
    outcomes: dict[str, str] = field(default_factory=dict)  # "forward[cpu]" -> an outcome_of() value
    root_check: str | None = None
    root_cause: str | None = None
    config_source: str | None = None
    model_route: str | None = None  # "LightningModule pkg.Lit (built as load_from_checkpoint does)"
    config_skipped: str | None = None  # "passed over a broken sidecar: ..."
    pins: dict[str, str] = field(default_factory=dict)  # "forward[cpu]" -> its comparison with the pin

    @property
    def pin(self) -> str | None:
        """The checkpoint's pin status: drifted if any device drifted, else updated, pinned, unpinned."""
        for status in ("drifted", "updated", "pinned", "unpinned"):
            if status in self.pins.values():
                return status
        return None

    @property
    def usable(self) -> bool:
        values = self.outcomes.values()
        return bool(GOOD.intersection(values)) and not BAD.intersection(values)

    @property
    def unusable(self) -> bool:
        return bool(BAD.intersection(self.outcomes.values()))

    @property
    def in_baseline(self) -> bool:
        """Every failure of this checkpoint was expected (an xfail from the baseline)."""
        values = set(self.outcomes.values())
        return "xfailed" in values and not values & FAILED

    def note_root(self, check: str, cause: str) -> None:
        """Keep the earliest root cause in check order (reports arrive in any order under xdist)."""
        if self.root_check is None or check_rank(check) < check_rank(self.root_check):
            self.root_check, self.root_cause = check, cause


def short_cause(relpath: str, cause: str) -> str:
    """A root cause shown next to its checkpoint's path, without repeating the path."""
    cause = cause.replace(f" for {relpath}", "")
    if cause.startswith(relpath + " "):
        cause = "the file " + cause.removeprefix(relpath + " ")
    return cause


def outcome_of(report: Any) -> str:
    """passed / failed / error (a failure outside the test body) / skipped / xfailed / xpassed."""
    if getattr(report, "wasxfail", None) is not None and report.outcome == "skipped":
        return "xfailed"
    if report.outcome == "failed" and report.when != "call":
        return "error"
    if report.outcome == "failed" and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "xpassed"  # a test failure for the gate (the baseline must shrink), but the check passed
    return str(report.outcome)


@dataclass
class Summary:
    """Collects verdicts from test reports."""

    verdicts: dict[str, CheckpointVerdict] = field(default_factory=dict)
    setup_error: str | None = None  # the settings' fault, met by some check: then no checkpoint is judged

    def add(self, properties: Iterable[tuple[str, Any]], when: str, outcome: str, nodeid: str) -> None:
        """``outcome`` as :func:`outcome_of` gives it."""
        props = dict(properties)
        if props.get(SETUP_ERROR):
            self.setup_error = str(props[SETUP_ERROR])
        relpath = props.get(CKPT)
        if relpath is None:
            return
        verdict = self.verdicts.setdefault(relpath, CheckpointVerdict(relpath))
        check = str(props.get(CHECK, nodeid))
        # a passed setup or teardown says nothing yet; a failure is never overwritten by a later phase
        if (when == "call" or outcome != "passed") and verdict.outcomes.get(check) not in FAILED:
            verdict.outcomes[check] = outcome
        if props.get(ROOT_CHECK):
            verdict.note_root(str(props[ROOT_CHECK]), str(props.get(ROOT_CAUSE, "")))
        if props.get(CONFIG_SOURCE):
            verdict.config_source = str(props[CONFIG_SOURCE])
        if props.get(MODEL_ROUTE):
            verdict.model_route = str(props[MODEL_ROUTE])
        if props.get(CONFIG_SKIPPED):
            verdict.config_skipped = str(props[CONFIG_SKIPPED])
        if props.get(PIN):
            verdict.pins[check] = str(props[PIN])

    @property
    def usable(self) -> list[CheckpointVerdict]:
        return [v for v in self.sorted() if v.usable]

    @property
    def unusable(self) -> list[CheckpointVerdict]:
        return [v for v in self.sorted() if v.unusable]

    def sorted(self) -> list[CheckpointVerdict]:
        return [self.verdicts[key] for key in sorted(self.verdicts)]

    def lines(self, verbose: bool = False) -> list[str]:
        if self.setup_error is not None:  # a setting's fault says nothing about any checkpoint
            return [f"stopped: no checkpoint was judged, a setting cannot work: {self.setup_error}"]
        if not self.verdicts:
            return []
        usable, unusable = self.usable, self.unusable
        expected = sum(v.in_baseline for v in unusable)
        baseline = f" ({expected} expected, in the baseline)" if expected else ""
        lines = [
            f"{len(self.verdicts)} checkpoint(s) checked: {len(usable)} usable, {len(unusable)} unusable{baseline}"
        ]
        pinned = [verdict.pin for verdict in self.verdicts.values() if verdict.pin]
        if pinned:
            counts = {status: pinned.count(status) for status in ("pinned", "drifted", "unpinned", "updated")}
            lines.append("pins: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count))
        for verdict in unusable:
            cause = short_cause(verdict.relpath, verdict.root_cause or "")  # the path is on the line above
            tag = "BASELINE" if verdict.in_baseline else "UNUSABLE"
            lines.append(f"  {tag} {verdict.relpath}")
            lines.append(f"      {verdict.root_check}: {cause}")
        for verdict in self.sorted():  # a broken file beside a checkpoint is news whatever its verdict
            if verdict.config_skipped:
                lines.append(f"  NOTE     {verdict.relpath}: {verdict.config_skipped}")
        if verbose:
            for verdict in usable:
                source = verdict.config_source or "config source not recorded"
                route = f"; built by {verdict.model_route}" if verdict.model_route else ""
                lines.append(f"  usable   {verdict.relpath}  ({source}{route})")
        return lines
