"""Broken files explain themselves: every broken checkpoint or config of the corpus gives a one-line reason on its
own checkpoint's test, and none crashes the session or an xdist worker, hangs, or costs memory on the scale of
the file it is about.

One end-to-end run puts the whole broken corpus (zero-byte, truncated, not-a-zip, crafted archives, a folder named
``x.ckpt``, unreadable files, symlink loops, a non-UTF-8 name, configs that are not JSON, 10,000 levels deep,
alias bombs, a 1 GiB sparse config...) under ``-n 2`` in a subprocess with a timeout, and measures the peak RSS
of its processes. Root reads every file whatever its mode, so "unreadable" is emulated: a conftest in that run
patches ``open`` (``builtins.open`` and ``io.open``, which ``pathlib`` and ``torch.load`` use, and ``os.open``) to raise
``PermissionError`` for the two files named ``unreadable_*``, in every process of the run.

Hypothesis generates truncation points of a real Lightning checkpoint, folder names (any bytes) and config
documents (any depth, either format) for the in-process tests below. ``tests/test_loading.py``,
``test_documents.py`` and ``test_discovery.py`` keep the unit cases of each reader.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from ckptgate.gate import CheckFailed, Gate, GateSettings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import MODEL_SOURCE, ChecksRunner, model_section, wandb_run
from security import corpus
from security.conftest import fingerprint
from security.figures import record

UNREADABLE = textwrap.dedent(
    """
    # Root reads every file whatever its mode: emulate unreadable files by refusing to open them, in-process.
    import builtins, errno, io, os

    _open, _os_open = builtins.open, os.open


    def _refuse(file):
        if not isinstance(file, int):
            name = os.fsdecode(os.fspath(file))
            if ("/unreadable_ckpt/" in name and name.endswith(".ckpt")) or (
                "/unreadable_cfg/" in name and name.endswith(".json")
            ):
                raise PermissionError(errno.EACCES, "Permission denied", name)


    def _refusing_open(file, *args, **kwargs):
        _refuse(file)
        return _open(file, *args, **kwargs)


    def _refusing_os_open(path, *args, **kwargs):
        _refuse(path)
        return _os_open(path, *args, **kwargs)


    builtins.open = io.open = _refusing_open
    os.open = _refusing_os_open
    """
)

# Runs pytest as its child and prints the peak RSS of the largest process of the run (pytest or a worker).
PEAK_RSS = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(f'CKG_PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}'); sys.exit(rc)"
)
CRASH_SIGNS = ("INTERNALERROR", "crashed", "node down", "Replacing crashed worker", "Traceback (most recent call")


class Context(dict):  # type: ignore[type-arg]
    """The builders' inputs; a short repr, for hypothesis' reports of failing examples."""

    def __repr__(self) -> str:
        return "<broken-file context>"


@pytest.fixture(scope="session")
def context(lightning_ckpt: Path) -> dict[str, Any]:
    """What the broken-file builders start from: the real Lightning checkpoint, as zip and legacy bytes."""
    good = lightning_ckpt.read_bytes()
    checkpoint = torch.load(lightning_ckpt, weights_only=False)
    legacy = io.BytesIO()
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    return Context(
        good=good,
        legacy=legacy.getvalue(),
        sidecar=json.dumps({"model": model_section()}),
        keys=list(checkpoint["state_dict"]),
        torchscript=script.getvalue(),
    )


def junit_id(check: str, relpath: str) -> str:
    """The test name pytest gives (non-ASCII escaped, as in JUnit XML)."""
    escaped = relpath.encode("unicode_escape").decode("ascii")
    return f"test_forward[{escaped}-cpu]" if check == "forward" else f"test_{check}[{escaped}]"


ORDER = ("config_present", "config_schema", "weights_load", "forward")


def test_the_broken_corpus_end_to_end_under_xdist_bounded_in_time_and_memory(
    pytester: pytest.Pytester, gate_tree: Any, context: dict[str, Any], record_property: Any
) -> None:
    gate_tree("control_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    outputs = pytester.path / "outputs"
    variants = corpus.broken_files(len(context["good"]))
    for variant in variants:
        variant.write(outputs, context)
    pytester.makeconftest(UNREADABLE)
    before = fingerprint(outputs)
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "pytest", "--pyargs", "ckptgate.checks"]
    command += ["-n", "2", "--ckpt-device", "cpu", "-p", "no:cacheprovider", "--junitxml", "out.xml", "-rw"]

    started = time.monotonic()
    result = pytester.run(*command, timeout=240)
    elapsed = time.monotonic() - started

    stdout = result.stdout.str()
    run = ChecksRunner.result(stdout, result.ret, pytester.path / "out.xml")
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, stdout[-3000:]
    crashes = [sign for sign in CRASH_SIGNS if sign in stdout]
    assert all(
        outcome == "passed" for outcome, _ in run.by_check("control_20251016_101500/checkpoints/best.ckpt").values()
    )
    explained, wrong = 0, []
    for variant in variants:
        if variant.check == "discovery":  # no file to test: a warning names it, the walk goes on
            shown = (
                variant.relpath.rsplit("/best.ckpt", 1)[0] if variant.name == "folder.symlink_loop" else variant.relpath
            )
            ok = re.search(rf"{re.escape(shown)}: [^\n]*{variant.expect}", stdout) is not None
            ok = ok and not any(name.startswith(f"test_config_present[{variant.relpath}") for name in run.outcomes)
        else:
            failing = ORDER.index(variant.check)
            found = {check: run.outcomes.get(junit_id(check, variant.relpath), ("missing", "")) for check in ORDER}
            outcome, message = found[variant.check]
            first = message.strip().splitlines()[0] if message.strip() else ""
            ok = (
                outcome == "failure"
                and variant.expect in first
                and all(found[check][0] == "passed" for check in ORDER[:failing])
                and all(
                    found[check][0] == "failure" and "blocked by" in found[check][1] for check in ORDER[failing + 1 :]
                )
            )
        explained += ok
        if not ok:
            wrong.append(variant.name)
    peak_kb = int(re.search(r"CKG_PEAK_RSS_KB=(\d+)", stdout).group(1))  # type: ignore[union-attr]
    record(
        record_property,
        broken_tried=len(variants),
        broken_crashed=len(crashes),
        broken_explained=explained,
        broken_peak_rss_mb=peak_kb // 1024,
    )
    assert crashes == [], stdout[-3000:]
    assert wrong == [], (wrong, stdout[-6000:])
    assert fingerprint(outputs) == before  # nothing read was changed, nothing written
    # Bounded: the giants (1 GiB files, a 10**9-node alias bomb, 10,000 levels) cost neither time nor memory.
    assert elapsed < 120, elapsed
    assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb // 1024} MB"


# ------------------------------------------------------------------------- hypothesis, in process


def gate_over(outputs: Path) -> Gate:
    return Gate(GateSettings(outputs_dir=outputs, rootdir=outputs.parent, device="cpu", model_factory="mymodels:build"))


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``mymodels.py`` (the factory's module) for in-process gates."""
    folder = tmp_path_factory.mktemp("family")
    (folder / "mymodels.py").write_text(MODEL_SOURCE)
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), legacy=st.booleans())
def test_a_lightning_checkpoint_truncated_anywhere_fails_weights_load_in_one_line(
    tmp_path: Path, family: Path, context: dict[str, Any], data: st.DataObject, legacy: bool
) -> None:
    whole = context["legacy" if legacy else "good"]
    cut = data.draw(st.integers(min_value=1, max_value=len(whole) - 1), label="cut")
    root = tmp_path / f"t{time.perf_counter_ns()}"
    outputs = root / "outputs"
    (outputs / "run" / "checkpoints").mkdir(parents=True)
    path = outputs / "run" / "checkpoints" / "best.ckpt"
    path.write_bytes(whole[:cut])
    path.with_name("best.config.json").write_text(context["sidecar"])
    gate = gate_over(outputs)
    sys.path.insert(0, str(family))
    try:
        (ckpt,) = gate.discovery().checkpoints
        with pytest.raises(CheckFailed) as info:
            gate.loaded(ckpt)
    finally:
        sys.path.remove(str(family))
    assert info.value.is_root and info.value.check.value == "weights_load"
    message = info.value.message
    assert "\n" not in message and message.startswith("run/checkpoints/best.ckpt ")
    assert "truncated" in message or "corrupt" in message, message
    assert path.read_bytes() == whole[:cut]


NAME_BYTES = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\x00" not in b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAME_BYTES.filter(lambda b: b not in (b".", b"..")))
def test_any_folder_name_gives_a_printable_one_line_reason_on_its_checkpoint(tmp_path: Path, name: bytes) -> None:
    outputs = tmp_path / f"o{time.perf_counter_ns()}"
    folder = os.path.join(os.fsencode(outputs), name)
    os.makedirs(folder)
    with open(os.path.join(folder, b"best.ckpt"), "wb"):
        pass  # zero bytes
    gate = gate_over(outputs)
    (ckpt,) = gate.discovery().checkpoints
    with pytest.raises(CheckFailed) as info:
        gate.config(ckpt)
    first = info.value.message.splitlines()[0]
    assert "no config found for" in first
    # the id is printable UTF-8 text (what a terminal, JUnit XML and pytest-xdist's channel take), odd bytes
    # escaped; the path keeps the real name
    assert ckpt.relpath.isprintable() and ckpt.relpath.encode("utf-8") and ckpt.relpath.endswith("/best.ckpt")
    assert os.fsencode(ckpt.path).endswith(b"/" + name + b"/best.ckpt")
    assert first.isprintable() and first.encode("utf-8")
    assert all(str(problem).isprintable() for problem in gate.discovery().problems)


def nested(depth: int, leaf: Any, kind: str) -> Any:
    node = leaf
    for _ in range(depth):
        node = [node] if kind == "list" else {"a": node}
    return node


def nested_json(depth: int, kind: str) -> str:
    """The JSON text of ``nested(depth, 1, kind)``, written without recursion: from Python 3.12 the C encoder
    has its own recursion limit that ``sys.setrecursionlimit`` does not raise (``json.dumps`` failed at 9,972)."""
    opening, closing = ("[", "]") if kind == "list" else ('{"a": ', "}")
    return opening * depth + "1" + closing * depth


# No explain phase: after a failure it re-runs examples under a tracer, which slows the parser ~8-fold and
# fails the CPU-time bound on examples that pass without it (seen on Python 3.12), hiding the real failure.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[phase for phase in Phase if phase is not Phase.explain],
)
@given(
    depth=st.one_of(st.integers(0, 260), st.integers(900, 12_000)),
    kind=st.sampled_from(["list", "dict"]),
    suffix=st.sampled_from([".config.json", ".config.yaml"]),
    flow=st.booleans(),
)
def test_a_config_of_any_depth_is_read_or_refused_in_one_line_and_quickly(
    tmp_path: Path, depth: int, kind: str, suffix: str, flow: bool
) -> None:
    outputs = tmp_path / f"c{time.perf_counter_ns()}" / "outputs"
    (outputs / "run").mkdir(parents=True)
    (outputs / "run" / "best.ckpt").write_bytes(b"")
    if suffix.endswith("json"):
        outline = json.dumps({"model": {**model_section(), "layers": "LAYERS"}})
        text = outline.replace('"LAYERS"', nested_json(depth, kind))
    else:
        document = {"model": {**model_section(), "layers": nested(depth, 1, kind)}}
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, depth * 3 + 500))  # to write it; reading runs at the normal limit
        try:  # block style indents every level: past a few hundred, only flow style stays small
            text = yaml.safe_dump(document, default_flow_style=flow or depth > 300, width=10**9)
        finally:
            sys.setrecursionlimit(limit)
    (outputs / "run" / f"best{suffix}").write_text(text)
    gate = gate_over(outputs)
    (ckpt,) = gate.discovery().checkpoints
    started = time.process_time()  # CPU time: a machine busy with other work does not make this slow
    try:
        valid = gate.validated(ckpt)
    except CheckFailed as exc:
        first = exc.root.message.splitlines()[0]  # config_present's own failure (validated points to it)
        assert first.startswith(f"run/best{suffix}: ") and "nested" in first, exc.root.message
        assert depth >= 190, exc.root.message  # only depth is wrong with these documents
    else:
        assert depth <= 200 and valid.model["width"] == 4
    assert time.process_time() - started < 5


def test_odd_names_under_xdist_and_fix_neither_crash_a_worker_nor_lose_the_real_name(
    pytester: pytest.Pytester, gate_tree: Any, bare_lightning_ckpt: Path, context: dict[str, Any]
) -> None:
    """A checkpoint whose folder and file names are not UTF-8 is recovered by ``--fix`` (the sidecar gets the
    real bytes name) and checked under ``-n 2``; one whose name holds a newline fails in one line. Names used to
    reach pytest-xdist's channel undecoded, which refuses them and took the whole session down."""
    gate_tree("control_20251016_101500/checkpoints/best.ckpt", {"model": model_section()})
    outputs = os.fsencode(pytester.path / "outputs")
    folder = os.path.join(outputs, b"run\xfe_20251017_215423", b"checkpoints")
    os.makedirs(folder)
    with open(os.path.join(folder, b"be\xffst.ckpt"), "wb") as handle:
        handle.write(bare_lightning_ckpt.read_bytes())
    wandb_run(pytester.path, "run-20251017_215424-abcd1234", {"model": model_section()})
    odd = pytester.path / "outputs" / "new\nline_20251018_101500"
    odd.mkdir()
    (odd / "best.ckpt").write_bytes(b"")
    (odd / "best.config.json").write_text(context["sidecar"])
    before = fingerprint(pytester.path / "outputs")

    result = pytester.runpytest_subprocess(
        "--pyargs",
        "ckptgate.checks",
        "-n",
        "2",
        "--fix",
        "--ckpt-device",
        "cpu",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        "out.xml",
        timeout=180,
    )

    stdout = result.stdout.str()
    assert not [sign for sign in CRASH_SIGNS if sign in stdout], stdout[-3000:]
    run = ChecksRunner.result(stdout, result.ret, pytester.path / "out.xml")
    recovered = "run\\xfe_20251017_215423/checkpoints/be\\xffst.ckpt"  # its id (pytest escapes the backslashes)
    assert [run.outcomes[junit_id(check, recovered)][0] for check in ORDER] == ["passed"] * 4
    assert os.path.exists(os.path.join(folder, b"be\xffst.config.json"))  # the real name, not the escaped one
    outcome, message = run.outcomes[junit_id("weights_load", "new\\nline_20251018_101500/best.ckpt")]
    assert outcome == "failure" and "is empty (0 bytes)" in message.strip().splitlines()[0]
    after = fingerprint(pytester.path / "outputs")
    assert set(after) - set(before) == {b"run\xfe_20251017_215423/checkpoints/be\xffst.config.json"}
    assert {k: v for k, v in after.items() if k in before} == before
