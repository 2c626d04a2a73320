"""The security suite's figures: counted by the tests, summed for the run, printed at its end and checked again.

Tests hand their counts to :func:`record` (``record_property`` underneath, so the counts travel with the test
reports from pytest-xdist workers to the controller); the collector, registered by ``tests/conftest.py`` and
``tests/security/conftest.py`` in every process, sums them from the ``call`` reports and prints a
``ckptgate security figures`` section in the terminal summary. A figure that must be 0 and is not fails the
run even if the test that counted it was deselected from the failure list.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

PROPERTY = "ckptgate_security_figures"
PLUGIN_NAME = "ckptgate-security-figures"
MUST_BE_ZERO = ("payload_executed", "config_imported", "broken_crashed", "kill_partial", "kill_changed")

LINES = (
    (
        "payload",
        "payload variants: {payload_tried} tried, {payload_executed} executed (must be 0), {payload_reported} "
        "reported with the refused global, opcode or zip entry named; {payload_live} of them proven live by "
        "torch.load(weights_only=False)",
    ),
    (
        "config",
        "config variants: {config_tried} tried, {config_imported} imported or called (must be 0), "
        "{config_refused} refused before import",
    ),
    (
        "broken",
        "broken-file variants: {broken_tried} tried, {broken_crashed} crashed (must be 0), {broken_explained} "
        "explained on the right checkpoint; peak RSS of the -n 2 run {broken_peak_rss_mb} MB",
    ),
    (
        "kill",
        "kill points: {kill_tried} tried, {kill_partial} partial files (must be 0), {kill_changed} pre-existing "
        "files changed (must be 0), {kill_mid_recovery} mid-recovery, {kill_temporaries} temporary files left",
    ),
)


def record(record_property: Any, **counts: int) -> None:
    """Add to the run's figures: ``record(record_property, payload_tried=3, payload_executed=0)``."""
    record_property(PROPERTY, {key: int(value) for key, value in counts.items()})


class FiguresCollector:
    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":  # every phase's report carries the item's properties
            return
        for name, value in report.user_properties:
            if name == PROPERTY and isinstance(value, dict):
                for key, count in value.items():
                    if key == "broken_peak_rss_mb":
                        self.totals[key] = max(self.totals[key], count)
                    else:
                        self.totals[key] += count

    def lines(self) -> list[str]:
        found = []
        for family, template in LINES:
            if any(key.startswith(f"{family}_") for key in self.totals):
                found.append(template.format(**{key: self.totals.get(key, 0) for key in _keys(template)}))
        return found

    def violations(self) -> list[str]:
        return [f"{key} = {self.totals[key]}" for key in MUST_BE_ZERO if self.totals.get(key)]

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if hasattr(config, "workerinput") or not self.totals:
            return
        terminalreporter.write_sep("=", "ckptgate security figures")
        for line in self.lines():
            terminalreporter.write_line(line)
        for violation in self.violations():
            terminalreporter.write_line(f"FIGURE VIOLATED: {violation} (must be 0)", red=True)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.violations() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _keys(template: str) -> list[str]:
    import string

    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def register(config: pytest.Config) -> None:
    """Once per process, whichever conftest gets there first."""
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(FiguresCollector(), PLUGIN_NAME)
