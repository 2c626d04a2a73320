"""Prove a candidate config: the model it builds must load the checkpoint's weights strictly and run forward.

The same gate code as the checks (schema and target allowlist before any import, build, strict load,
forward on cpu), so a config written by ``--fix`` passes the checks by construction. Non-finite outputs do
not reject a config: they come from the weights (a diverged run), and the forward check reports them.
"""

from __future__ import annotations

from typing import Any

from ckptgate.configs import ResolvedConfig, find_model_key
from ckptgate.discovery import CheckpointRecord
from ckptgate.errors import CheckError, describe_exception, first_line
from ckptgate.gate import ValidConfig
from ckptgate.loading import LoadError
from ckptgate.recovery.evidence import Attempt, Candidate, content_key


class Verifier:
    """Verifies candidates for one checkpoint; the checkpoint is read once, equal documents proven once."""

    def __init__(self, gate: Any, ckpt: CheckpointRecord, checkpoint: Any, state_dict: Any, device: Any) -> None:
        self.gate, self.ckpt = gate, ckpt
        self.checkpoint, self.state_dict, self.device = checkpoint, state_dict, device
        self._proven: dict[str, tuple[bool, str, bool]] = {}

    def attempt(self, candidate: Candidate) -> Attempt:
        document = candidate.source.sidecar_sections()
        if document is None:
            return Attempt(candidate, False, "its config has no `model` section")
        key = content_key(document)
        if key not in self._proven:
            self._proven[key] = self._prove(document)
        verified, reason, weights_tried = self._proven[key]
        return Attempt(candidate, verified, reason, document, weights_tried)

    def _prove(self, document: dict[str, Any]) -> tuple[bool, str, bool]:
        """The document as the sidecar it would become: checked, built and loaded by the gate's own code.
        Returns whether it is proven, why, and whether the weights were tried at all."""
        sidecar = self.ckpt.path.with_name(self.ckpt.stem + ".config.json")
        resolved = ResolvedConfig("sidecar", sidecar, sidecar.name, document, find_model_key(document))
        try:
            route, section = self.gate.section_of(resolved)
        except CheckError as exc:
            return False, f"config rejected before building: {first_line(exc.message)}", False
        problems = self.gate.section_problems(section, section.path, self.ckpt, route)
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            return False, f"config rejected before building: {problems[0]}{more}", False
        valid = ValidConfig(resolved, route, section)
        try:
            self.gate.check_agreement(self.ckpt, valid, self.checkpoint)
            loaded = self.gate.build_loaded(self.ckpt, valid, self.checkpoint, self.state_dict, self.device)
        except LoadError as exc:
            return False, exc.message.splitlines()[0], True
        except CheckError as exc:  # contradicts the stored hyperparameters, or the model cannot be built
            return False, exc.message.splitlines()[0], False
        try:
            report = self.gate.run_forward(self.ckpt, loaded, document)
        except CheckError as exc:
            if "non-finite" not in exc.message:
                return False, exc.message.splitlines()[0], True
            return True, f"{loaded.describe()}; forward runs (its outputs are not finite: the weights are bad)", True
        except Exception as exc:  # a hook or model failing in an unexpected way
            return False, f"forward pass failed: {describe_exception(exc)}", True
        return True, f"{loaded.describe()}; forward ok ({len(report.outputs)} output tensors)", True
