"""Malicious checkpoints never execute: every hostile variant of the corpus is refused by name, runs nothing, and
the session goes on.

The corpus (``corpus.py``) is built here, at test time, into folders these tests own; every payload would only
touch a marker file. The positive control proves the payloads are live (plain ``torch.load(weights_only=False)``
runs them), so "no marker" under the gate is evidence. Unit tests cover each variant against
``ckptgate.loading.read_checkpoint``; one pytester session runs the whole corpus through the real plugin; one
``--fix`` session shows recovery reading hostile checkpoints (and crafted ``hyper_parameters``) refuses them too.
``tests/test_loading.py`` keeps the finer points of the loader (allowlist, safe globals, legacy format).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import loading
from ckptgate.errors import CheckError
from omegaconf import OmegaConf

from conftest import model_section
from security import corpus
from security.conftest import fingerprint, fired, fired_within, load_unsafely
from security.figures import record

CHECKS = ("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "-p", "no:cacheprovider")
NOTHING_RAN = "Nothing in the file was executed"


def marker_for(markers: Path, variant: str) -> Path:
    return markers / (re.sub(r"[^A-Za-z0-9]+", "_", variant) + ".marker")


def folder_for(variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@_-]+", "_", variant)


def build(variant: str, folder: Path, markers: Path, base: dict[str, Any]) -> tuple[Path, corpus.Built]:
    path = folder / f"{folder_for(variant)}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, corpus.build_payload(variant, path, marker_for(markers, variant), base)


def assert_named_refusal(message: str, built: corpus.Built) -> None:
    """One line, naming what was refused, saying that nothing ran (a structural refusal names the entry)."""
    assert "\n" not in message, message
    assert any(fragment in message for fragment in built.expect), (built.expect, message)
    if message.startswith("refused to load"):
        assert NOTHING_RAN in message, message


# ------------------------------------------------------------------------------------------------ unit


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("variant", corpus.PAYLOADS)
def test_each_payload_is_refused_by_name_and_never_runs(
    variant: str, tmp_path: Path, armed: Path, base_checkpoint: dict[str, Any]
) -> None:
    path, built = build(variant, tmp_path / "files", armed, base_checkpoint)
    before = path.read_bytes()
    with pytest.raises(CheckError) as info:
        loading.read_checkpoint(path)
    assert_named_refusal(info.value.message, built)
    time.sleep(0.01)  # a Popen payload would need a moment to touch its marker
    assert fired(armed) == []
    assert path.read_bytes() == before


def test_an_archive_announcing_too_many_entries_is_refused_before_it_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_checkpoint: dict[str, Any]
) -> None:
    """A crafted central directory of millions of entries would cost memory to list: the end record is read
    first (the limit is lowered here rather than writing 200,000 entries)."""
    path = tmp_path / "many.ckpt"
    path.write_bytes(corpus.archive_bytes(base_checkpoint))
    count = len(corpus.entries(path.read_bytes()))
    monkeypatch.setattr(loading, "MAX_ARCHIVE_ENTRIES", count - 1)
    listed: list[Any] = []
    monkeypatch.setattr(loading.zipfile.ZipFile, "infolist", lambda self: listed.append(self) or [])
    with pytest.raises(CheckError, match=rf"announces {count} entries .*limit is {count - 1}.*{NOTHING_RAN}"):
        loading.read_checkpoint(path)
    assert listed == []


# ----------------------------------------------------------------------------------- positive control


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_payloads_are_live_under_plain_pickle_loading(
    tmp_path: Path, armed: Path, base_checkpoint: dict[str, Any], record_property: Any
) -> None:
    """The positive control: what the gate refuses really runs when a checkpoint is loaded the unsafe way."""
    built = {variant: build(variant, tmp_path / "files", armed, base_checkpoint) for variant in corpus.PAYLOADS}
    done = load_unsafely((path for path, _ in built.values()), tmp_path, armed, timeout=120)
    expected = {marker_for(armed, v).name for v, (_, b) in built.items() if b.live}
    missing = sorted(expected - fired_within(armed, expected))
    paths = {marker_for(armed, v).name: str(path) for v, (path, _) in built.items()}
    said = [line for line in done.stdout.splitlines() if any(line.startswith(paths[m] + " ") for m in missing)]
    assert missing == [], f"payloads that did not run under torch.load(weights_only=False): {missing}; {said}"
    record(record_property, payload_live=len(expected))


# --------------------------------------------------------------------------------- end to end, one session


def outcomes(result: pytest.RunResult) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, message) from an in-process run's reports (call phase, or a failed setup)."""
    found: dict[str, tuple[str, str]] = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        name = rep.nodeid.split("::", 1)[1]
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            found[name] = (rep.outcome, rep.longreprtext.strip() if rep.failed else "")
    return found


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_whole_payload_corpus_through_the_plugin_in_one_session(
    pytester: pytest.Pytester,
    gate_tree: Callable[..., Path],
    armed: Path,
    base_checkpoint: dict[str, Any],
    record_property: Any,
) -> None:
    good = gate_tree("control_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    outputs = good.parents[2]
    expected: dict[str, corpus.Built] = {}
    for variant in corpus.PAYLOADS:
        folder = outputs / folder_for(variant) / "checkpoints"
        folder.mkdir(parents=True)
        expected[variant] = corpus.build_payload(
            variant, folder / "best.ckpt", marker_for(armed, variant), base_checkpoint
        )
        (folder / "best.config.json").write_text(json.dumps({"model": model_section()}))
    before = fingerprint(outputs)

    result = pytester.runpytest(*CHECKS)

    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the session completed: some checkpoints are unusable
    assert "INTERNALERROR" not in result.stdout.str()
    found = outcomes(result)
    control = "control_20251016_101500/checkpoints/best.ckpt"
    assert [found[f"test_{c}[{control}]"][0] for c in ("config_present", "config_schema", "weights_load")] == [
        "passed"
    ] * 3
    reported = 0
    for variant, built in expected.items():
        relpath = f"{folder_for(variant)}/checkpoints/best.ckpt"
        assert found[f"test_config_present[{relpath}]"][0] == "passed", variant
        assert found[f"test_config_schema[{relpath}]"][0] == "passed", variant
        outcome, message = found[f"test_weights_load[{relpath}]"]
        assert outcome == "failed", variant
        assert message.startswith(relpath + " "), message  # the right checkpoint's test names its file
        assert_named_refusal(message, built)
        forward_outcome, forward = found[f"test_forward[{relpath}-cpu]"]
        assert forward_outcome == "failed" and forward.startswith(f"blocked by test_weights_load[{relpath}]")
        reported += 1
    time.sleep(0.05)
    assert fired(armed) == []
    assert fingerprint(outputs) == before  # reading changed nothing
    record(
        record_property,
        payload_tried=len(expected),
        payload_executed=len(fired(armed)),
        payload_reported=reported,
    )


def test_trust_pickle_means_the_checkpoint_runs_its_code(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], armed: Path, base_checkpoint: dict[str, Any]
) -> None:
    """What the docs say about ``--ckpt-trust-pickle``, shown: the same file that is refused by default runs
    its payload when the option is given. (This is the opt-out, not a failure of the gate.)"""
    variant = "os.system@hyper_parameters.zip"
    good = gate_tree("run/checkpoints/best.ckpt", {"model": model_section()})
    corpus.build_payload(variant, good, marker_for(armed, variant), base_checkpoint)

    refused = pytester.runpytest(*CHECKS, "-k", "weights_load")
    refused.stdout.fnmatch_lines(["*refused to load*posix.system*Nothing in the file was executed*"])
    assert fired(armed) == []

    trusted = pytester.runpytest(*CHECKS, "-k", "weights_load", "--ckpt-trust-pickle")
    trusted.assert_outcomes(passed=1)
    assert fired(armed) == [marker_for(armed, variant).name]


# ------------------------------------------------------------------------------------------------ --fix


def deep_list(depth: int) -> list[Any]:
    node: list[Any] = []
    top = node
    for _ in range(depth - 1):
        child: list[Any] = []
        node.append(child)
        node = child
    return top


def crafted_hparams(base: dict[str, Any], kind: str) -> dict[str, Any]:
    """``hyper_parameters`` a crafted pickle can hold through the weights-only loader, each of which stopped
    ``--fix`` with an INTERNALERROR until recovery learnt to read them as no evidence."""
    ckpt = {key: value for key, value in base.items() if key != "hyper_parameters"}
    model = model_section()
    if kind == "cyclic":
        loop: list[Any] = []
        loop.append(loop)
        ckpt["hyper_parameters"] = {"model": {**model, "layers": loop}}
    elif kind == "deep":
        ckpt["hyper_parameters"] = {"model": {**model, "layers": deep_list(3000)}}
    elif kind == "broken_omegaconf":
        config = OmegaConf.create({"model": model})
        config.__dict__["_content"] = 5  # an OmegaConf container whose insides are not what it says
        ckpt["hyper_parameters"] = config
    elif kind == "int_state_dict_keys":
        ckpt["hyper_parameters"] = {"model": model}
        ckpt["state_dict"] = {**base["state_dict"], 7: torch.zeros(1)}
    else:
        raise ValueError(kind)
    return ckpt


CRAFTED = ("cyclic", "deep", "broken_omegaconf", "int_state_dict_keys")
FIX_PAYLOADS = (
    "os.system@hyper_parameters.zip",
    "builtins.exec@hyper_parameters.legacy",
    "hand.stack_global.runtime_names",
    "zip.duplicate_data_pkl.payload_last",
)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_fix_over_hostile_checkpoints_runs_nothing_writes_nothing_and_finishes(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path], armed: Path, base_checkpoint: dict[str, Any]
) -> None:
    outputs = gate_tree("control/checkpoints/best.ckpt", {"model": model_section()}).parents[2]
    for variant in FIX_PAYLOADS:
        folder = outputs / folder_for(variant) / "checkpoints"
        folder.mkdir(parents=True)
        corpus.build_payload(variant, folder / "best.ckpt", marker_for(armed, variant), base_checkpoint)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # torch.save pickles the deep list recursively
    try:
        for kind in CRAFTED:
            (outputs / f"crafted_{kind}").mkdir()
            torch.save(crafted_hparams(base_checkpoint, kind), outputs / f"crafted_{kind}" / "best.ckpt")
    finally:
        sys.setrecursionlimit(limit)
    before = fingerprint(outputs)

    result = pytester.runpytest(*CHECKS, "--fix", "-k", "config_present")

    text = result.stdout.str()
    assert "INTERNALERROR" not in text
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=len(FIX_PAYLOADS) + len(CRAFTED))
    for variant in FIX_PAYLOADS:
        result.stdout.fnmatch_lines(
            [f"*{folder_for(variant)}/checkpoints/best.ckpt", "*unrecoverable: the checkpoint itself cannot be read*"]
        )
    for kind in ("cyclic", "deep", "broken_omegaconf"):  # no evidence: nothing stored that can be read as a config
        result.stdout.fnmatch_lines([f"*crafted_{kind}/best.ckpt", "*unrecoverable: no stored hyper_parameters*"])
    result.stdout.fnmatch_lines(["*crafted_int_state_dict_keys/best.ckpt", "*key(s) that are not strings*"])
    time.sleep(0.05)
    assert fired(armed) == []
    assert fingerprint(outputs) == before  # nothing written, nothing changed
