"""The gate does the expensive work once: one read per checkpoint, one model per distinct model section."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import loading
from ckptgate.discovery import discover
from ckptgate.gate import Check, CheckFailed, Gate
from test_recovery_verify import Family, family_fixture, section

family = pytest.fixture(family_fixture, name="family")


def write(
    family: Family, outputs: Path, relpath: str, width: int = 4, seed: int = 0, config_width: int | None = None
) -> None:
    path = outputs / relpath
    family.checkpoint(path, width, seed=seed)
    sidecar = path.with_name(path.name.removesuffix(".ckpt") + ".config.json")
    sidecar.write_text(json.dumps({"model": section(config_width or width)}))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counted: Counter[str] = Counter()
    original = loading.read_checkpoint

    def counting(path: Path, **kwargs: Any) -> Any:
        counted[path.name if path.parent.name != "checkpoints" else f"{path.parent.parent.name}/{path.name}"] += 1
        return original(path, **kwargs)

    monkeypatch.setattr(loading, "read_checkpoint", counting)
    yield counted


def weights_of(model: Any) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def expected(family: Family, width: int, seed: int) -> dict[str, torch.Tensor]:
    return {key.removeprefix("model."): value for key, value in family.weights(width, seed=seed).items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_runs_checkpoints_share_one_model_and_each_gets_its_own_weights(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    for seed, kind in enumerate(("best", "last", "best-v1")):
        write(family, outputs, f"run_a/checkpoints/{kind}.ckpt", seed=seed)
    write(family, outputs, "run_b/checkpoints/best.ckpt", width=8, seed=7)
    gate = family.gate(outputs)
    found = discover(outputs).by_relpath()
    for seed, kind in enumerate(("best", "last", "best-v1")):
        loaded = gate.loaded(found[f"run_a/checkpoints/{kind}.ckpt"])
        assert same(weights_of(loaded.model), expected(family, 4, seed))
        gate.forward(found[f"run_a/checkpoints/{kind}.ckpt"])
    assert len(family.builds()) == gate.builds == 1
    gate.loaded(found["run_b/checkpoints/best.ckpt"])
    assert gate.builds == 2
    assert len(gate._built) == 1  # memory: one model deep
    # asked again after its model was given to others, a checkpoint is loaded again, with its own weights
    again = gate.loaded(found["run_a/checkpoints/best.ckpt"])
    assert same(weights_of(again.model), expected(family, 4, 0))
    assert gate.builds == 3


def test_each_checkpoint_is_read_once_for_all_its_checks(tmp_path: Path, family: Family, reads: Counter[str]) -> None:
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt")
    write(family, outputs, "run_a/checkpoints/last.ckpt", seed=1)
    gate = family.gate(outputs)
    for ckpt in discover(outputs).checkpoints:
        gate.config(ckpt)
        gate.validated(ckpt)
        gate.loaded(ckpt)
        gate.forward(ckpt)
        gate.loaded(ckpt)
    assert reads == {"run_a/best.ckpt": 1, "run_a/last.ckpt": 1}


def test_a_checkpoint_that_does_not_fit_leaves_the_shared_model_correct(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt", seed=0)
    write(family, outputs, "run_a/checkpoints/wrong.ckpt", width=8, config_width=4)  # its config says 4
    write(family, outputs, "run_a/checkpoints/last.ckpt", seed=2)
    gate = family.gate(outputs)
    found = discover(outputs).by_relpath()
    gate.loaded(found["run_a/checkpoints/best.ckpt"])
    with pytest.raises(CheckFailed) as failed:
        gate.loaded(found["run_a/checkpoints/wrong.ckpt"])
    assert failed.value.root.check is Check.WEIGHTS_LOAD and "shape-mismatched" in failed.value.root.message
    last = gate.loaded(found["run_a/checkpoints/last.ckpt"])
    assert same(weights_of(last.model), expected(family, 4, 2))
    assert gate.builds == 1


class _Relay:
    """A stand-in for pytest's hook relay, with a ``pytest_ckptgate_build_model`` implementation."""

    class _Caller:
        def __init__(self, impls: list[Any], result: Any = None) -> None:
            self.impls, self.result = impls, result

        def get_hookimpls(self) -> list[Any]:
            return self.impls

        def __call__(self, **kwargs: Any) -> Any:
            return self.result(**kwargs) if callable(self.result) else self.result

    def __init__(self, family: Family) -> None:
        from omegaconf import OmegaConf

        self.built: list[str] = []

        def build(config: Any, checkpoint: Any) -> Any:
            self.built.append(checkpoint.relpath)
            return family.module.Net(OmegaConf.create({"width": config.width}))

        self.pytest_ckptgate_build_model = self._Caller(["a conftest"], build)
        self.pytest_ckptgate_validate_config = self._Caller([], [])
        self.pytest_ckptgate_make_input = self._Caller([], None)
        self.pytest_ckptgate_forward_kwargs = self._Caller([], [])


def test_models_from_a_build_hook_are_never_reused(tmp_path: Path, family: Family) -> None:
    """The hook sees the checkpoint, so it may build differently for each: every checkpoint gets its own."""
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt")
    write(family, outputs, "run_a/checkpoints/last.ckpt", seed=1)
    relay = _Relay(family)
    gate = Gate(family.gate(outputs).settings, hook=relay)
    for ckpt in discover(outputs).checkpoints:
        gate.forward(ckpt)
    assert relay.built == ["run_a/checkpoints/best.ckpt", "run_a/checkpoints/last.ckpt"]
    assert not gate._built


def test_section_problems_are_worked_out_once_per_distinct_section(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt")
    write(family, outputs, "run_a/checkpoints/last.ckpt")
    gate = family.gate(outputs)
    checked: list[Any] = []
    original = gate.schema_checker.errors
    gate.schema_checker.errors = lambda section, base="$.model": checked.append(base) or original(section, base)  # type: ignore[method-assign]
    for ckpt in discover(outputs).checkpoints:
        gate.validated(ckpt)
    assert checked == ["$.model"]
    broken = {"name": "net", "width": 4, "_target_": "os.system"}
    assert gate.section_problems(broken, "$.model", None) == gate.section_problems(broken, "$.model", None)  # type: ignore[arg-type]
    assert any("os.system" in problem for problem in gate.section_problems(broken, "$.model", None))  # type: ignore[arg-type]


def test_a_failing_read_names_the_checkpoint(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt")
    (outputs / "run_a/checkpoints/best.ckpt").write_bytes(b"PK\x03\x04 truncated")
    gate = family.gate(outputs)
    with pytest.raises(CheckFailed, match=r"run_a/checkpoints/best\.ckpt"):
        gate.loaded(discover(outputs).checkpoints[0])


def test_a_section_that_cannot_be_keyed_is_built_every_time(tmp_path: Path, family: Family) -> None:
    outputs = tmp_path / "outputs"
    write(family, outputs, "run_a/checkpoints/best.ckpt")
    gate = family.gate(outputs)
    ckpt = discover(outputs).checkpoints[0]
    obj, state_dict, device = gate.read(ckpt)
    odd = {**section(), 1: "an int key beside str keys (YAML allows it)"}
    for _ in range(2):
        gate.build_loaded(ckpt, odd, obj, state_dict, device)
    assert gate.builds == 2 and not gate._built


def test_a_cpu_only_torch_is_recognised_without_importing_it() -> None:
    """So that a run whose every other check was replayed from --ckpt-cache skips cuda without torch's start-up."""
    import subprocess
    import sys

    code = (
        "import sys; from ckptgate import devices; "
        "print(devices.cuda_unavailable_reason()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    if torch.version.cuda is None and torch.version.hip is None:
        assert out == [
            "no CUDA GPU visible (torch.cuda.is_available() is False); this machine checks on cpu only",
            "False",
        ]
    else:  # a GPU build: only torch itself can tell
        assert out[1] == "True"
