"""Pins (issue 17): what each checkpoint computes is recorded once and compared on every forward check.

The unit tests take fingerprints of real tensors; the session tests run the shipped checks on real Lightning
checkpoints and change, one at a time, the config (an activation that keeps every shape), the model code, a
constant below the tolerance, and the environment a pin was taken in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import baseline, pins, results

from conftest import REPO, model_section, wandb_run

CHECKS = ("--pyargs", "ckptgate.checks", "--ckpt-device", "cpu", "-p", "no:randomly")


def pin_of(outputs: dict[str, torch.Tensor], **changes: Any) -> pins.Pin:
    fields = {"device": "cpu", "torch": "2.13.0+cpu", "config": "c0", "model": "m.Net", "package": None, "input": "x"}
    return pins.Pin(outputs=pins.output_fingerprints(outputs.items()), **{**fields, **changes})


# -- the fingerprint and the comparison ---------------------------------------------------------------------
def test_a_relu_gelu_swap_drifts_and_the_same_pass_does_not() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 8, 16, 16)
    relu, gelu = pin_of({"logits": torch.relu(hidden)}), pin_of({"logits": torch.nn.functional.gelu(hidden)})

    assert pins.compare(relu, pin_of({"logits": torch.relu(hidden.clone())}), 1e-4, 1e-5).drift == ""
    drift = pins.compare(relu, gelu, 1e-4, 1e-5).drift
    assert drift.startswith(
        "computes something else than its pin (since the pin: config, model class, package, torch, device and "
        "input unchanged: the model's code or a library it calls): logits differs by up to "
    )
    assert drift.endswith("(tolerance rtol 0.0001, atol 1e-05); if that is intended, re-pin with --ckpt-pins-update")


def test_a_change_below_the_tolerance_passes_and_one_above_names_the_largest_difference() -> None:
    values = torch.linspace(-3, 3, 1000).reshape(1, 1000)
    pinned = pin_of({"out": values})

    assert pins.compare(pinned, pin_of({"out": values * (1 + 1e-7)}), 1e-4, 1e-5).drift == ""
    drift = pins.compare(pinned, pin_of({"out": values + 0.01}), 1e-4, 1e-5).drift
    assert "out differs by up to 0.01 " in drift


def test_shape_dtype_and_missing_outputs_are_drifts() -> None:
    base = pin_of({"a": torch.zeros(1, 4), "b": torch.ones(1, 2)})

    assert (
        "a is float32 [1, 5], pinned float32 [1, 4]"
        in pins.compare(base, pin_of({"a": torch.zeros(1, 5), "b": torch.ones(1, 2)}), 1e-4, 1e-5).drift
    )
    assert (
        "a is float64 [1, 4], pinned float32 [1, 4]"
        in pins.compare(
            base, pin_of({"a": torch.zeros(1, 4, dtype=torch.float64), "b": torch.ones(1, 2)}), 1e-4, 1e-5
        ).drift
    )
    gone = pins.compare(base, pin_of({"a": torch.zeros(1, 4), "c": torch.ones(1, 2)}), 1e-4, 1e-5).drift
    assert "b is gone" in gone and "c is new" in gone


def test_nan_outputs_never_agree_with_finite_pins() -> None:
    pinned = pin_of({"out": torch.ones(1, 8)})
    assert "out differs" in pins.compare(pinned, pin_of({"out": torch.full((1, 8), float("nan"))}), 1e-4, 1e-5).drift


def test_a_pin_from_another_torch_or_device_compares_with_the_wider_tolerance_and_says_so() -> None:
    values = torch.linspace(1, 2, 64).reshape(1, 64)
    pinned = pin_of({"out": values}, torch="2.5.1", device="cuda")
    close = pin_of({"out": values * (1 + 1e-3)})  # beyond 1e-4, within 100x of it

    assert pins.compare(pin_of({"out": values}), close, 1e-4, 1e-5).drift != ""
    result = pins.compare(pinned, close, 1e-4, 1e-5)
    assert result.cross and result.drift == ""
    far = pins.compare(pinned, pin_of({"out": values * 1.1}), 1e-4, 1e-5).drift
    assert "(tolerance rtol 0.01, atol 0.001 (pinned on another device or torch version: 100x the tolerances))" in far
    assert "(since the pin: torch 2.5.1 -> 2.13.0+cpu, device cuda -> cpu)" in far


def test_what_changed_since_the_pin_is_named() -> None:
    out = {"out": torch.ones(1, 3)}
    then = pin_of(out, config="aaa", package="litproj 0.1.0", input="input tensor [1, 3] float32")
    now = pin_of(out, config="bbb", package="litproj 0.2.0", input="input tensor [1, 3] float32")
    assert pins.changes(then, now) == "config aaa -> bbb, model package litproj 0.1.0 -> litproj 0.2.0"


def test_the_file_round_trips_sorted_and_bad_files_are_refused_without_being_touched(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    taken = {"b/last.ckpt": pin_of({"z": torch.ones(1, 2), "a": torch.zeros(1, 2)}), "a/best.ckpt": pin_of({})}
    results.write(pins.document(taken), path)
    document = json.loads(path.read_text())
    assert list(document["checkpoints"]) == ["a/best.ckpt", "b/last.ckpt"]
    assert list(document["checkpoints"]["b/last.ckpt"]["outputs"]) == ["a", "z"]
    assert pins.load(path) == taken
    assert pins.load(tmp_path / "absent.json") == {}

    for text, said in (
        ("{not json", "cannot read it as JSON"),
        ('{"format": "ckptgate-baseline", "version": 1}', "not a ckptgate pins file"),
        ('{"format": "ckptgate-pins", "version": 1, "checkpoints": {"a.ckpt": {"outputs": 3}}}', "a.ckpt is not a pin"),
    ):
        path.write_text(text)
        with pytest.raises(pins.PinsError, match=said):
            pins.load(path)
        assert path.read_text() == text


def test_an_update_keeps_pins_it_did_not_take_and_drops_those_of_deleted_files() -> None:
    old, new = pin_of({"o": torch.ones(1, 1)}), pin_of({"o": torch.zeros(1, 1)})
    previous = {"kept.ckpt": old, "gone.ckpt": old, "again.ckpt": old}
    assert pins.updated(previous, {"again.ckpt": new}, {"kept.ckpt", "again.ckpt"}) == {
        "kept.ckpt": old,
        "again.ckpt": new,
    }
    assert set(pins.updated(previous, {}, None)) == {"kept.ckpt", "gone.ckpt", "again.ckpt"}  # a shard: unknown


def test_merging_shards_refuses_a_checkpoint_pinned_two_ways() -> None:
    one, two = pin_of({"o": torch.ones(1, 1)}), pin_of({"o": torch.zeros(1, 1)})
    assert pins.merge([{"a": one}, {"b": two}, {"a": one}]) == {"a": one, "b": two}
    with pytest.raises(pins.PinsError, match="a is pinned differently in two of the files"):
        pins.merge([{"a": one}, {"a": two}])


# -- a session on real checkpoints ----------------------------------------------------------------------------
MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    SCALE = {scale}


    class Net(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            width = int(cfg.width)
            act = nn.GELU() if cfg.get("act", "relu") == "gelu" else nn.{code_act}()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), act, nn.Conv2d(width, 2, 1))

        def forward(self, x):
            return {{"logits": self.body(x) * SCALE}}


    def build(cfg):
        return Net(cfg)
    """
)


@pytest.fixture
def pinned_tree(pytester: pytest.Pytester, gate_tree: Callable[..., Path]) -> Callable[..., Any]:
    """Three checkpoints (two runs), a model whose code and config can change without changing a shape, and a
    function that runs the checks with ``--ckpt-pins pins.json`` and returns (result, statuses, report)."""
    for relpath in ("run_a/checkpoints/best.ckpt", "run_a/checkpoints/last.ckpt", "run_b/checkpoints/best.ckpt"):
        gate_tree(relpath, {"model": model_section(act="relu")})
    models(pytester)

    def run(*args: str) -> tuple[Any, dict[str, str], dict[str, Any]]:
        (pytester.path / "r.json").unlink(missing_ok=True)  # each run's own report, or none
        result = pytester.runpytest_subprocess(*CHECKS, "--ckpt-pins", "pins.json", "--ckpt-json", "r.json", *args)
        document = results.load(pytester.path / "r.json")
        statuses = {entry["path"]: f"{entry['status']} {entry['pin']}" for entry in document["checkpoints"]}
        return result, statuses, document

    return run


def models(pytester: pytest.Pytester, *, scale: str = "1.0", code_act: str = "ReLU") -> None:
    pytester.makepyfile(mymodels=MODELS.format(scale=scale, code_act=code_act))


def sidecar(pytester: pytest.Pytester, relpath: str, **section: Any) -> None:
    path = pytester.path / "outputs" / relpath
    path.with_name(path.name.removesuffix(".ckpt") + ".config.json").write_text(
        json.dumps({"model": model_section(**section)})
    )


ALL = ("run_a/checkpoints/best.ckpt", "run_a/checkpoints/last.ckpt", "run_b/checkpoints/best.ckpt")


def test_pins_are_taken_then_agree_run_after_run(pytester: pytest.Pytester, pinned_tree: Callable[..., Any]) -> None:
    result, statuses, _ = pinned_tree()  # no pins file yet: every checkpoint passes, listed as unpinned
    assert result.ret == pytest.ExitCode.OK
    assert statuses == dict.fromkeys(ALL, "usable unpinned")
    result.stdout.fnmatch_lines(["pins: 3 unpinned"])
    assert "## Unpinned Checkpoints" in _markdown(pytester)

    result, statuses, _ = pinned_tree("--ckpt-pins-update")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["pins: 3 updated", "wrote pins *pins.json (3 taken in this run, 3 in all)"])
    document = json.loads((pytester.path / "pins.json").read_text())
    assert list(document["checkpoints"]) == list(ALL)
    entry = document["checkpoints"][ALL[0]]
    assert entry["model"] == "mymodels.Net" and entry["device"] == "cpu" and entry["torch"] == torch.__version__
    assert entry["input"] == "input tensor [1, 3, 64, 64] float32 (--ckpt-input-shape)"
    assert entry["outputs"]["output['logits']"]["shape"] == [1, 2, 64, 64]

    result, statuses, document = pinned_tree()  # stable across runs, serial and under xdist
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert statuses == dict.fromkeys(ALL, "usable pinned")
    assert document["totals"]["pinned"] == 3 and document["totals"]["drifted"] == 0
    result, statuses, _ = pinned_tree("-n", "2")
    assert statuses == dict.fromkeys(ALL, "usable pinned")


def test_a_config_that_builds_the_same_shapes_but_another_model_drifts(
    pytester: pytest.Pytester, pinned_tree: Callable[..., Any]
) -> None:
    pinned_tree("--ckpt-pins-update")
    sidecar(pytester, "run_b/checkpoints/best.ckpt", act="gelu")  # loads strictly: same keys, same shapes

    result, statuses, document = pinned_tree()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert statuses == {ALL[0]: "usable pinned", ALL[1]: "usable pinned", ALL[2]: "unusable drifted"}
    cause = next(e for e in document["checkpoints"] if e["path"] == ALL[2])["root_cause"]
    assert cause["check"] == "forward"
    result.stdout.fnmatch_lines(
        [
            f"  UNUSABLE {ALL[2]}",
            "      forward: the file computes something else than its pin (since the pin: config *): output*logits* "
            "differs by up to *",
        ]
    )
    output = result.stdout.str()
    assert "pins: 2 pinned, 1 drifted" in output
    assert document["totals"]["drifted"] == 1


def test_model_code_that_changes_under_unchanged_checkpoints_drifts_everywhere_it_is_used(
    pytester: pytest.Pytester, pinned_tree: Callable[..., Any]
) -> None:
    pinned_tree("--ckpt-pins-update")
    before = (pytester.path / "pins.json").read_text()
    models(pytester, code_act="SiLU")  # a refactor that swaps the activation; every shape stays

    result, statuses, _ = pinned_tree("-n", "2")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert statuses == dict.fromkeys(ALL, "unusable drifted")
    result.stdout.fnmatch_lines(["*(since the pin: config, model class, package, torch, device and input unchanged: *"])
    assert (pytester.path / "pins.json").read_text() == before  # comparing never rewrites the pins

    result, statuses, _ = pinned_tree("--ckpt-pins-update")  # the change was intended: re-pin
    assert result.ret == pytest.ExitCode.OK and statuses == dict.fromkeys(ALL, "usable updated")
    assert pinned_tree()[1] == dict.fromkeys(ALL, "usable pinned")


def test_a_change_below_the_tolerance_passes(pytester: pytest.Pytester, pinned_tree: Callable[..., Any]) -> None:
    pinned_tree("--ckpt-pins-update")
    models(pytester, scale="1.0000001")
    result, statuses, _ = pinned_tree()
    assert result.ret == pytest.ExitCode.OK and statuses == dict.fromkeys(ALL, "usable pinned")

    models(pytester, scale="1.01")  # ... and a larger one, with a tolerance that admits it
    assert pinned_tree()[1] == dict.fromkeys(ALL, "unusable drifted")
    assert pinned_tree("--ckpt-pin-rtol", "0.05")[1] == dict.fromkeys(ALL, "usable pinned")


def test_pins_taken_with_another_torch_compare_with_the_wider_tolerance(
    pytester: pytest.Pytester, pinned_tree: Callable[..., Any]
) -> None:
    pinned_tree("--ckpt-pins-update")
    path = pytester.path / "pins.json"
    document = json.loads(path.read_text())
    for entry in document["checkpoints"].values():
        entry["torch"], entry["device"] = "2.4.0+cu121", "cuda"
    path.write_text(json.dumps(document))
    models(pytester, scale="1.001")  # beyond the same-machine tolerance, within 100x of it

    result, statuses, _ = pinned_tree()
    assert result.ret == pytest.ExitCode.OK and statuses == dict.fromkeys(ALL, "usable pinned")

    models(pytester, scale="1.5")
    result, statuses, _ = pinned_tree()
    assert statuses == dict.fromkeys(ALL, "unusable drifted")
    result.stdout.fnmatch_lines(["*(since the pin: torch 2.4.0+cu121 -> *, device cuda -> cpu)*100x the tolerances*"])


def test_the_result_cache_replays_only_while_the_pins_file_is_unchanged(
    pytester: pytest.Pytester, pinned_tree: Callable[..., Any]
) -> None:
    pytester.makeini("[pytest]\nckpt_model_factory = mymodels:build\n")  # the cache lives in pytest's cache
    pinned_tree("--ckpt-pins-update")
    assert pinned_tree("--ckpt-cache")[1] == dict.fromkeys(ALL, "usable pinned")
    result, _, _ = pinned_tree("--ckpt-cache")
    result.stdout.fnmatch_lines(["*replayed*"])

    path = pytester.path / "pins.json"  # another pin for one checkpoint: its forward check must run again
    document = json.loads(path.read_text())
    outputs = document["checkpoints"][ALL[0]]["outputs"]["output['logits']"]
    outputs["values"] = [value + 1.0 for value in outputs["values"]]
    path.write_text(json.dumps(document))
    assert pinned_tree("--ckpt-cache")[1][ALL[0]] == "unusable drifted"


def test_pin_settings_that_cannot_work_are_usage_errors(
    pytester: pytest.Pytester, gate_tree: Callable[..., Path]
) -> None:
    gate_tree("a/best.ckpt", {"model": model_section()})
    (pytester.path / "broken.json").write_text('{"format": "ckptgate-baseline"}')
    for args, said in (
        (("--ckpt-pins-update",), "*--ckpt-pins-update needs --ckpt-pins FILE*"),
        (("--ckpt-pins", "broken.json"), "*--ckpt-pins *broken.json: not a ckptgate pins file*"),
        (("--ckpt-pins", "p.json", "--ckpt-pin-rtol", "-1"), "*ckpt_pin_rtol / --ckpt-pin-rtol '-1': expected a*"),
    ):
        result = pytester.runpytest_subprocess(*CHECKS, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([said])
    assert (pytester.path / "broken.json").read_text() == '{"format": "ckptgate-baseline"}'
    assert not (pytester.path / "p.json").exists()


def test_shards_pin_into_their_own_files_and_merge(pytester: pytest.Pytester, pinned_tree: Callable[..., Any]) -> None:
    for shard in ("1/2", "2/2"):
        name = f"pins-{shard[0]}.json"
        pytester.runpytest_subprocess(*CHECKS, "--ckpt-shard", shard, "--ckpt-pins", name, "--ckpt-pins-update")
    from ckptgate.__main__ import main

    assert main(["merge-pins", "pins-1.json", "pins-2.json", "--out", "pins.json"]) == 0
    merged = json.loads((pytester.path / "pins.json").read_text())
    assert list(merged["checkpoints"]) == list(ALL)
    assert pinned_tree()[1] == dict.fromkeys(ALL, "usable pinned")


def _markdown(pytester: pytest.Pytester) -> str:
    from ckptgate import markdown

    return markdown.render(results.load(pytester.path / "r.json"))


# -- the demo's drift story (the README tells it) ------------------------------------------------------------
RESNET_BLOCK = "return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))"
DEMO_RESNET = "ocr_training-dbnet-fpn_decoder-resnet18_tiny-legacy_20251012_093000/checkpoints/"


def test_the_demo_names_exactly_the_checkpoints_a_refactor_of_its_model_code_changed(
    demo_root: Path, tmp_path: Path, checks: Any
) -> None:
    """Pin the demo; swap relu for gelu in the ResNet encoder's residual block (every shape stays, every
    checkpoint still loads strictly); the gate names the ResNet checkpoints, and only them."""
    code = tmp_path / "code" / "fixtures"  # the demo family's code, copied: the refactor happens in the copy
    code.mkdir(parents=True)
    for name in ("__init__.py", "demo_models.py", "demo_plugin.py"):
        shutil.copyfile(REPO / "fixtures" / name, code / name)
    pins_file = tmp_path / "pins.json"

    def run(*extra: str) -> Any:
        command, env, xml = checks.command(demo_root / "outputs", tmp_path, "--ckpt-pins", str(pins_file), *extra)
        env["PYTHONPATH"] = os.pathsep.join([str(code.parent), env["PYTHONPATH"]])
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return checks.result(done.stdout, done.returncode, xml)

    assert "pins: 7 updated" in run("--ckpt-pins-update").stdout
    pinned = set(json.loads(pins_file.read_text())["checkpoints"])
    source = (code / "demo_models.py").read_text()
    assert source.count(RESNET_BLOCK) == 1
    (code / "demo_models.py").write_text(source.replace(RESNET_BLOCK, RESNET_BLOCK.replace("F.relu", "F.gelu")))

    after = run()

    drifted = {
        name.removeprefix("test_forward[").removesuffix("-cpu]")
        for name, (outcome, message) in after.outcomes.items()
        if outcome == "failure" and "computes something else than its pin" in message
    }
    assert drifted == {DEMO_RESNET + "epoch=1-step=4.ckpt", DEMO_RESNET + "last.ckpt"} < pinned
    assert "pins: 5 pinned, 2 drifted" in after.stdout
    assert all(
        outcome == "passed"
        for name, (outcome, _) in after.outcomes.items()
        if "weights_load" in name and any(path in name for path in drifted)
    )  # they still load strictly: only what they compute changed


@pytest.mark.parametrize(
    ("load", "error"),
    [(pins.load, pins.PinsError), (baseline.load, baseline.BaselineError)],
    ids=["pins", "baseline"],
)
def test_a_kept_file_that_is_not_utf8_is_refused_by_name_and_left_alone(
    tmp_path: Path, load: Callable[[Path], Any], error: type[Exception]
) -> None:
    path = tmp_path / "kept.json"
    path.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(error, match=r"kept.json: cannot read it as JSON: 'utf-8' codec can't decode"):
        load(path)
    assert path.read_bytes() == b'{"format": "\xff"}'


def test_a_config_fix_recovers_is_pinned_only_once_the_user_asks(
    pytester: pytest.Pytester, pinned_tree: Callable[..., Any], gate_tree: Callable[..., Path]
) -> None:
    pinned_tree("--ckpt-pins-update")
    before = (pytester.path / "pins.json").read_text()
    gate_tree("exp_20251017_215423/checkpoints/best.ckpt")  # no config: --fix finds it in a wandb run
    wandb_run(pytester.path, "run-20251017_215424-j8v6ba0v", {"model": model_section(act="relu")})
    recovered = "exp_20251017_215423/checkpoints/best.ckpt"

    result, statuses, _ = pinned_tree("--fix")

    assert result.ret == pytest.ExitCode.OK
    assert statuses == {**dict.fromkeys(ALL, "usable pinned"), recovered: "usable unpinned"}
    assert (pytester.path / "pins.json").read_text() == before  # --fix wrote a sidecar, not a pin
