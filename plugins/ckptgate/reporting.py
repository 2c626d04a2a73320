"""What a run tells people and CI: per-checkpoint verdicts in the terminal, JUnit properties, the Markdown
and JSON reports, and the baseline that makes the gate adoptable on a repository that is already red.

One :class:`GateReporter` is registered per pytest config (as pytest's own reporters are). Under xdist it
works in the controller from the reports the workers send, so its output is the same as a serial run's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ckptgate import baseline, markdown, pins, report, results
from ckptgate.errors import first_line
from ckptgate.gate import CheckFailed, Gate
from ckptgate.items import check_label, checkpoint_of, label_device
from ckptgate.report import CHECK, CKPT, PIN_TAKEN, outcome_of


@dataclass(frozen=True)
class ReportSettings:
    markdown: Path | None = None
    json: Path | None = None
    baseline: Path | None = None
    baseline_update: bool = False


def recovery_lines(traces: list[Any], *, detailed: bool) -> list[str]:
    if not traces:
        return ["every checkpoint has a config: nothing to recover"]
    counts: dict[str, int] = {}
    for trace in traces:
        counts[trace.outcome] = counts.get(trace.outcome, 0) + 1
    shown = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    lines = [f"{len(traces)} checkpoint(s) without a config: {shown}"]
    for trace in traces:
        lines += trace.lines() if detailed else [f"  {trace.relpath}", f"    {trace.outcome}: {trace.reason}"]
    return lines


class GateReporter:
    """Collects verdicts from test reports and turns them into everything a person or CI reads."""

    def __init__(self, config: pytest.Config, gate: Gate, settings: ReportSettings) -> None:
        self.config, self.gate, self.settings = config, gate, settings
        self.summary = report.Summary()
        self.traces: list[Any] | None = None  # set by --fix / --fix-dry-run
        self.recovery_seconds = 0.0
        self.recovery_mode: str | None = None
        self.expected = baseline.load(settings.baseline) if settings.baseline else {}
        self.pins_taken: dict[str, pins.Pin] = {}  # --ckpt-pins-update: relpath -> this run's pin
        self.written: list[str] = []
        self.errors: list[str] = []
        # Only JUnit XML reads item properties: without it, a passed test's teardown report stays bare (under
        # xdist, one message less to send and decode per test).
        self.junit = bool(getattr(config.option, "xmlpath", None))

    @property
    def controller(self) -> bool:
        return not hasattr(self.config, "workerinput")

    # -- baseline: expected-unusable checkpoints become strict xfails ------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if not self.expected or self.settings.baseline is None:
            return
        for item in items:
            record = checkpoint_of(item)
            entry = self.expected.get(record.relpath) if record is not None else None
            if entry is None:
                continue
            expectation = baseline.expectation(entry, check_label(item), self.settings.baseline)
            if expectation is not None:
                strict, reason = expectation
                item.add_marker(pytest.mark.xfail(strict=strict, reason=reason))

    # -- per-test: checkpoint, check, root cause and JUnit properties ------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        rep = yield
        record = checkpoint_of(item)
        # A passed setup or teardown says nothing about the checkpoint: left bare, it costs nothing to
        # report, and under xdist nothing to send to the controller (two of every three reports).
        if record is None or (rep.passed and rep.when != "call"):
            return rep
        label = check_label(item)
        # For the verdicts: the report says which checkpoint and check it belongs to, and the root cause.
        props = rep.user_properties
        props += [(report.CKPT, record.relpath), (report.CHECK, label)]
        failure = getattr(call.excinfo.value, "ckptgate_failure", None) if call.excinfo is not None else None
        root: list[tuple[str, Any]] = []
        if isinstance(failure, CheckFailed):
            root = [
                (report.ROOT_CHECK, failure.root.check.value),
                (report.ROOT_CAUSE, first_line(failure.root.message)),
            ]
            if failure.root.setup:
                root.append((report.SETUP_ERROR, first_line(failure.root.message, 1000)))
        elif call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
            cause = str(call.excinfo.value).strip() or call.excinfo.exconly()  # a user's check, or a fixture
            root = [(report.ROOT_CHECK, label), (report.ROOT_CAUSE, first_line(cause))]
        props += root
        known = self.gate.known_config(record) if rep.when == "call" else None
        if known is not None:
            props.append((report.CONFIG_SOURCE, known.describe()))
            if known.skipped:
                props.append((report.CONFIG_SKIPPED, "; ".join(known.skipped)))
        route = self.gate.known_route(record) if rep.when == "call" else None
        if route is not None:
            props.append((report.MODEL_ROUTE, route))
        if rep.when == "call" and self.gate.settings.pins_file is not None:
            props += self._pin_properties(record, label)
        if self.junit:  # JUnit XML reads the item's properties when the test ends: once per test
            recorded = {name for name, _ in item.user_properties}
            if report.CKPT not in recorded:
                item.user_properties += [
                    (report.CKPT, record.relpath),
                    (report.CHECK, label),
                    (report.SIZE_MB, f"{record.size_mb:.1f}"),
                    (report.RUN, record.run_relpath),
                ]
            item.user_properties += [prop for prop in props[2:] if prop not in item.user_properties]
        return rep

    def _pin_properties(self, record: Any, label: str) -> list[tuple[str, Any]]:
        """A forward check's pin status, and with ``--ckpt-pins-update`` the pin it took (for the controller)."""
        key = f"{record.relpath}@{label_device(label)}"
        status = self.gate.pin_status.get(key)
        if status is None:
            return []
        taken = self.gate.pins_taken.get(key) if self.gate.settings.pins_update else None
        found: list[tuple[str, Any]] = [(report.PIN, status)]
        return found + ([(report.PIN_TAKEN, json.dumps(taken.to_json()))] if taken is not None else [])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.summary.add(report.user_properties, report.when or "call", outcome_of(report), report.nodeid)
        props = dict(report.user_properties)
        taken = props.get(PIN_TAKEN)
        if taken is not None:
            relpath, device = props[CKPT], label_device(props[CHECK])
            if relpath not in self.pins_taken or device == "cpu":  # a CPU pin is the reference
                self.pins_taken[relpath] = pins.Pin.from_json(json.loads(taken))

    # -- files at the end of the session --------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.controller and self.summary.setup_error is not None:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR  # a setting's fault: not a verdict on checkpoints
            return
        wanted = self.settings.markdown or self.settings.json or self.settings.baseline_update
        if not self.controller or not (wanted or self.gate.settings.pins_update):
            return
        try:
            checkpoints = self.gate.discovery().checkpoints
        except (FileNotFoundError, NotADirectoryError):
            checkpoints = []
        try:
            if self.gate.settings.pins_update and self.gate.settings.pins_file is not None:
                self._write_pins(checkpoints)
            if self.settings.baseline_update and self.settings.baseline is not None:
                existing = {c.relpath for c in checkpoints} if self.gate.settings.shard is None else None
                kept = baseline.update(self.settings.baseline, self.expected, self.summary, existing)
                self.written.append(f"baseline {self.settings.baseline} ({len(kept['checkpoints'])} checkpoints)")
            document = results.build(
                self.summary,
                checkpoints,
                outputs_dir=_shown(self.gate.settings.outputs_dir, self.config.rootpath),
                traces=self.traces,
                baseline=self.expected,
                shard="{}/{}".format(*self.gate.settings.shard) if self.gate.settings.shard else None,
                recovery_mode=self.recovery_mode,
            )
            if self.settings.json is not None:
                results.write(document, self.settings.json)
                self.written.append(f"JSON report {self.settings.json}")
            if self.settings.markdown is not None:
                results.write_text(self.settings.markdown, markdown.render(document))
                self.written.append(f"Markdown report {self.settings.markdown}")
        except OSError as exc:
            self.errors.append(f"ckptgate: could not write {exc.filename or 'a report'}: {exc.strerror or exc}")
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _write_pins(self, checkpoints: list[Any]) -> None:
        """``--ckpt-pins-update``: this run's pins replace their checkpoints' old ones; the others stay."""
        path = self.gate.settings.pins_file
        assert path is not None
        partial = self.gate.settings.shard is not None or bool(self.gate.settings.select)
        existing = None if partial else {c.relpath for c in checkpoints}
        kept = pins.updated(self.gate.pinned, self.pins_taken, existing)
        results.write(pins.document(kept), path)
        self.written.append(f"pins {path} ({len(self.pins_taken)} taken in this run, {len(kept)} in all)")

    # -- terminal: after pytest's short test summary, before its final line -----------------------------
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Iterator[None]:
        result = yield
        if not self.controller:
            return result
        if self.traces is not None:
            dry_run = self.recovery_mode == "dry-run"
            terminalreporter.write_sep("=", "ckptgate --fix-dry-run (nothing written)" if dry_run else "ckptgate --fix")
            lines = recovery_lines(self.traces, detailed=dry_run or self.config.get_verbosity() > 0)
            lines[0] += f" (in {self.recovery_seconds:.1f} s, before the checks)"
            for line in lines:
                terminalreporter.write_line(line)
        if self.summary.verdicts or self.summary.setup_error or self.written or self.errors:
            terminalreporter.write_sep("=", "ckptgate")
            for line in self.summary.lines(verbose=self.config.get_verbosity() > 0):
                terminalreporter.write_line(line)
            for line in self.written:
                terminalreporter.write_line(f"wrote {line}")
            for line in self.errors:
                terminalreporter.write_line(line, red=True)
        return result


def _shown(path: Path, rootdir: Path) -> Path:
    """Paths inside the rootdir as relative ones: a committed or shared report names no home folders."""
    try:
        return path.relative_to(rootdir)
    except ValueError:
        return path
