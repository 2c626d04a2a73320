"""ckptgate.loading on real files: Lightning checkpoints, plain and legacy state dicts, malicious pickles,
broken files; and the key matching of a strict load (prefix detection, diffs, what is copied).

Nothing here relies on hand-made dicts where a real ``torch.save`` / ``Trainer.save_checkpoint`` can make
the file: the allowlist is only proven by what the libraries really write.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import os
import pathlib
import pickle
import pickletools
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate import loading
from ckptgate.errors import CheckError
from ckptgate.loading import (
    HARMLESS_GLOBALS,
    KeyDiff,
    LoadReport,
    compare,
    detect_prefix,
    load_weights,
    read_checkpoint,
    state_dict_of,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

# -- helpers ----------------------------------------------------------------------------------------------


def _net() -> torch.nn.Module:
    """The inner model of every checkpoint here: parameters and buffers (BatchNorm), 9 state_dict keys."""
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _save(obj: Any, path: Path, *, legacy: bool = False, protocol: int = 2) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    return path


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: Any) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Payload:
    """Pickles as ``func(*args)``: what an attacker puts in ``hyper_parameters``."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _pickled_globals(obj: Any) -> list[tuple[str, str]]:
    """The globals a protocol-2 pickle of ``obj`` holds, read from its opcodes (nothing loaded): each as
    (name in the pickle, Python 3 name). Protocol 2 writes Python 2 module names (``__builtin__.eval``,
    ``commands.call``); a message may show either spelling."""
    found = []
    for opcode, arg, _ in pickletools.genops(pickle.dumps(obj, protocol=2)):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ")
            found.append((f"{module}.{name}", f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"))
    return found


# -- (a) a real Lightning checkpoint ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Trained 2 steps by a real ``pl.Trainer`` and saved by ``trainer.save_checkpoint``; built once."""
    pl = pytest.importorskip("pytorch_lightning")
    from fixtures.demo_training import fit_and_save

    class Wrapper(pl.LightningModule):
        def __init__(self, cfg: DictConfig, args: argparse.Namespace, out_dir: Path, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = _net()
            self.register_buffer("class_weights", torch.tensor([1.0, 2.0]))  # a wrapper-level buffer

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            (x,) = batch
            return (self.model(x) * self.class_weights).pow(2).mean()

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]

    torch.manual_seed(0)
    cfg = OmegaConf.create(
        {"_target_": "mypkg.Net", "component_overrides": {"decoder": {"name": "unet", "ch": [8, 16]}}}
    )
    wrapper = Wrapper(cfg, argparse.Namespace(seed=7, name="exp"), Path("runs/exp1"))
    initial = _snapshot(wrapper.model)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)
    path = tmp_path_factory.mktemp("lightning") / "epoch=0-step=2.ckpt"
    trainer = fit_and_save(wrapper, data, path, steps=2)
    assert trainer.global_step == 2
    trained = _snapshot(wrapper.model)
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)  # the steps really trained
    return {"path": path, "weights": trained, "bytes": path.read_bytes()}


def test_lightning_checkpoint_needs_the_allowlist_and_it_covers_everything(
    lightning_ckpt: dict[str, Any],
) -> None:
    path = lightning_ckpt["path"]
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    # What Lightning really stores beyond torch's defaults: our allowlist must be exactly what is needed.
    assert {
        "omegaconf.dictconfig.DictConfig",
        "argparse.Namespace",
        f"pathlib.{type(Path()).__name__}",
    } <= unsafe
    assert unsafe <= set(HARMLESS_GLOBALS), unsafe - set(HARMLESS_GLOBALS)
    with pytest.raises(pickle.UnpicklingError):  # plain weights-only loading refuses it...
        torch.load(path, weights_only=True)
    obj = read_checkpoint(path)  # ...ours loads it, with no extra options
    assert {
        "state_dict",
        "hyper_parameters",
        "epoch",
        "global_step",
        "optimizer_states",
        "lr_schedulers",
    } <= set(obj)
    assert obj["global_step"] == 2
    hp = obj["hyper_parameters"]
    assert isinstance(hp["cfg"], DictConfig)
    assert hp["cfg"].component_overrides.decoder.name == "unet"
    assert isinstance(hp["cfg"].component_overrides.decoder.ch, ListConfig)
    assert hp["args"] == argparse.Namespace(seed=7, name="exp")
    assert isinstance(hp["out_dir"], pathlib.PurePath)
    assert hp["out_dir"] == Path("runs/exp1")
    assert hp["lr"] == 0.1
    assert path.read_bytes() == lightning_ckpt["bytes"]  # reading changed nothing


def test_lightning_state_dict_loads_strictly_with_model_prefix(lightning_ckpt: dict[str, Any]) -> None:
    weights = state_dict_of(read_checkpoint(lightning_ckpt["path"]))
    assert all(key.startswith("model.") for key in weights if key != "class_weights")
    model = _net()
    report = load_weights(model, weights)
    assert report == LoadReport(prefix="model.", loaded=9, ignored=("class_weights",))
    _assert_same(lightning_ckpt["weights"], model.state_dict())  # values really copied


def test_zip_checkpoints_are_memory_mapped_and_weights_only(
    lightning_ckpt: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    read_checkpoint(lightning_ckpt["path"])
    assert len(calls) == 1
    assert calls[0]["mmap"] is True
    assert calls[0]["weights_only"] is True
    assert calls[0]["map_location"] == "cpu"


def test_legacy_files_are_weights_only_without_mmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save({"state_dict": _net().state_dict()}, tmp_path / "old.ckpt", legacy=True)
    calls: list[dict[str, Any]] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    read_checkpoint(path)
    assert [(c["weights_only"], c["mmap"]) for c in calls] == [(True, False)]  # mmap needs the zip format


# -- (b) plain state dicts and (c) legacy format -----------------------------------------------------------


def test_plain_state_dict_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = _net()
    path = _save(source.state_dict(), tmp_path / "weights.pt")
    weights = state_dict_of(read_checkpoint(path))
    target = _net()
    report = load_weights(target, weights)
    assert report == LoadReport(prefix="", loaded=9, ignored=())
    _assert_same(_snapshot(source), target.state_dict())


def test_legacy_format_lightning_checkpoint_still_loads_weights_only(
    lightning_ckpt: dict[str, Any], tmp_path: Path
) -> None:
    obj = read_checkpoint(lightning_ckpt["path"])
    path = _save(obj, tmp_path / "legacy.ckpt", legacy=True)
    assert path.read_bytes()[:1] == b"\x80" and not path.read_bytes().startswith(b"PK")
    again = read_checkpoint(path)
    assert isinstance(again["hyper_parameters"]["cfg"], DictConfig)
    assert again["hyper_parameters"]["args"].seed == 7
    model = _net()
    assert load_weights(model, state_dict_of(again)).prefix == "model."
    _assert_same(lightning_ckpt["weights"], model.state_dict())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_numpy_scalars_in_hyperparameters_load(tmp_path: Path, legacy: bool) -> None:
    np = pytest.importorskip("numpy")
    obj = {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": np.float64(0.5), "n": np.int64(3)}}
    loaded = read_checkpoint(_save(obj, tmp_path / "np.ckpt", legacy=legacy))
    assert loaded["hyper_parameters"] == {"lr": 0.5, "n": 3}


# -- (d) malicious pickles: refused, named, never run --------------------------------------------------------

PAYLOADS = {
    "os.system": lambda marker: _Payload(os.system, (f"touch {marker}",)),
    "builtins.eval": lambda marker: _Payload(eval, (f"open({str(marker)!r}, 'w').close()",)),
    "subprocess.call": lambda marker: _Payload(subprocess.call, (["touch", str(marker)],)),
    "subprocess.Popen": lambda marker: _Payload(subprocess.Popen, (["touch", str(marker)],)),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_pickle_is_refused_by_name_and_never_executed(tmp_path: Path, kind: str, legacy: bool) -> None:
    marker = tmp_path / "MARKER"
    payload = PAYLOADS[kind](marker)
    ((held, held_py3),) = _pickled_globals(payload)  # e.g. posix.system, __builtin__.eval, commands.call
    assert held_py3.endswith(kind.rsplit(".", 1)[1])
    obj = {
        "state_dict": {"model.w": torch.zeros(3)},
        "hyper_parameters": {"cfg": {"decoder": [payload]}},
        "epoch": 0,
    }
    path = _save(obj, tmp_path / "evil.ckpt", legacy=legacy)
    assert not marker.exists()
    with pytest.raises(CheckError) as info:
        read_checkpoint(path)
    message = str(info.value)
    # zip: our scan names it (py3 spelling); legacy: torch's unpickler names it (it drops "builtins.")
    spellings = {held, held_py3, f"GLOBAL {held_py3.removeprefix('builtins.')} "}
    assert any(spelling in message for spelling in spellings), message
    assert "Nothing in the file was executed" in message
    assert message.startswith("refused to load")
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_in_protocol_4_is_refused_too(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "MARKER"
    obj = {"hyper_parameters": PAYLOADS["os.system"](marker)}
    path = _save(obj, tmp_path / "evil4.ckpt", legacy=legacy, protocol=4)  # STACK_GLOBAL, unscannable
    with pytest.raises(CheckError, match="Nothing in the file was executed"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.fixture
def box_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A benign user class in a real importable module (unique name), removed from sys.modules after."""
    name = f"ckg_box_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            """
            class Box:
                def __init__(self, value):
                    self.value = value
            """
        )
    )
    monkeypatch.syspath_prepend(str(folder))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_custom_class_refused_by_default_allowed_by_name_or_trust(
    tmp_path: Path, box_module: Any, legacy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{box_module.__name__}.Box"
    path = _save(
        {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"box": box_module.Box([1, 2])}},
        tmp_path / "box.ckpt",
        legacy=legacy,
    )
    # As in a real run: the class's module is importable but not imported yet.
    del sys.modules[box_module.__name__]
    with pytest.raises(CheckError) as info:
        read_checkpoint(path)
    assert name in str(info.value)
    assert "Nothing in the file was executed" in str(info.value)
    assert box_module.__name__ not in sys.modules  # refusing imported nothing

    allowed = read_checkpoint(path, extra_safe_globals=[name])
    box = allowed["hyper_parameters"]["box"]
    assert f"{type(box).__module__}.{type(box).__qualname__}" == name
    assert box.value == [1, 2]

    calls: list[dict[str, Any]] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    trusted = read_checkpoint(path, trust_pickle=True)
    assert trusted["hyper_parameters"]["box"].value == [1, 2]
    assert calls[-1]["weights_only"] is False
    assert calls[-1]["mmap"] is (not legacy)


def test_extra_safe_globals_do_not_widen_to_other_globals(tmp_path: Path, box_module: Any) -> None:
    marker = tmp_path / "MARKER"
    obj = {"box": box_module.Box(1), "evil": PAYLOADS["os.system"](marker)}
    path = _save(obj, tmp_path / "mixed.ckpt")
    with pytest.raises(CheckError) as info:
        read_checkpoint(path, extra_safe_globals=[f"{box_module.__name__}.Box"])
    assert "posix.system" in str(info.value) or "nt.system" in str(info.value)
    assert f"{box_module.__name__}.Box" not in str(info.value)  # only the refused one is named
    assert not marker.exists()


# -- (e) files that are not checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("zip") / "small.ckpt"
    torch.save({"state_dict": {"w": torch.arange(256, dtype=torch.float32)}, "epoch": 3}, path)
    return path.read_bytes()


def _check_error(path: Path) -> str:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(CheckError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message  # one line
    if before is not None:
        assert path.read_bytes() == before  # the file is left exactly as it was
    return message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    assert "empty" in _check_error(path)


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "deepspeed.ckpt"
    path.mkdir()
    (path / "checkpoint").mkdir()
    assert "is a folder that is neither a DeepSpeed nor a torch.distributed sharded checkpoint" in _check_error(path)
    assert (path / "checkpoint").is_dir()


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot open" in _check_error(tmp_path / "gone.ckpt")


@pytest.mark.parametrize("cut", [4, 30, 200, -200, -22, -1])
def test_truncated_zip(tmp_path: Path, small_zip: bytes, cut: int) -> None:
    path = tmp_path / "cut.ckpt"
    path.write_bytes(small_zip[:cut])
    message = _check_error(path)
    assert "truncated" in message
    assert f"{len(small_zip[:cut]):,} bytes" in message


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_truncated_zip_at_any_offset_says_truncated(tmp_path: Path, small_zip: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=4, max_value=len(small_zip) - 1), label="cut")
    path = tmp_path / "cut.ckpt"
    path.write_bytes(small_zip[:cut])
    assert "truncated" in _check_error(path)


@pytest.mark.parametrize("cut", [20, 100, -1])
def test_truncated_legacy_file(tmp_path: Path, cut: int) -> None:
    data = _save({"state_dict": {"w": torch.arange(256.0)}}, tmp_path / "full.ckpt", legacy=True).read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[:cut])
    assert "truncated" in _check_error(path)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file\n", b"\x00\x01\x02\x03" * 10, b"GIF89a....", b'{"state_dict": {}}'],
    ids=["text", "binary", "gif", "json"],
)
def test_not_a_checkpoint(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(data)
    message = _check_error(path)
    assert "not a PyTorch checkpoint" in message
    assert repr(data[:4]) in message


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for index in range(20):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
        if data[0] == 0x80 or data.startswith(b"PK"):
            continue
        path = tmp_path / f"random{index}.ckpt"
        path.write_bytes(data)
        assert "not a PyTorch checkpoint" in _check_error(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@given(head=st.sampled_from([b"\x80", b"PK\x03\x04", b""]), body=st.binary(min_size=0, max_size=300))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_give_a_check_error_or_load_never_anything_else(tmp_path: Path, head: bytes, body: bytes) -> None:
    path = tmp_path / "fuzz.ckpt"
    path.write_bytes(head + body)
    try:
        read_checkpoint(path)
    except CheckError as exc:
        assert str(exc)
        assert "\n" not in str(exc)


# -- (f) state_dict_of --------------------------------------------------------------------------------------


def test_state_dict_of_lightning_plain_and_junk() -> None:
    inner = {"model.w": torch.ones(1)}
    assert state_dict_of({"state_dict": inner, "epoch": 1}) is inner
    plain = {"w": torch.ones(1), "b": torch.zeros(1)}
    assert state_dict_of(plain) is plain

    with pytest.raises(CheckError, match=r"has no `state_dict` \(top-level keys: epoch, model\)"):
        state_dict_of({"epoch": 1, "model": "resnet"})
    with pytest.raises(CheckError, match="has no `state_dict`"):
        state_dict_of({})
    with pytest.raises(CheckError, match="has no `state_dict`"):
        state_dict_of({"state_dict": [1, 2]})
    with pytest.raises(CheckError, match="holds a list, not a checkpoint dict"):
        state_dict_of([torch.ones(1)])
    with pytest.raises(CheckError, match="holds a Tensor"):
        state_dict_of(torch.ones(3))
    with pytest.raises(CheckError, match="holds a NoneType"):
        state_dict_of(None)


# -- detect_prefix ------------------------------------------------------------------------------------------


def test_detect_prefix_cases() -> None:
    model = ["0.weight", "0.bias", "1.weight"]
    assert detect_prefix([f"model.{k}" for k in model], model) == "model."
    assert detect_prefix(model, model) == ""
    assert detect_prefix([f"net._orig_mod.{k}" for k in model], model) == "net._orig_mod."
    # wrapper-level keys outside the prefix do not change the answer
    assert detect_prefix([*(f"model.{k}" for k in model), "loss.weight", "metric.total"], model) == "model."


def test_detect_prefix_ties_prefer_the_shortest() -> None:
    assert detect_prefix(["ab.cd.w", "x.v"], ["w", "v"]) == "x."
    assert detect_prefix(["x.v", "ab.cd.w"], ["w", "v"]) == "x."


def test_detect_prefix_fallback_when_nothing_matches() -> None:
    assert detect_prefix(["model.a", "model.b.c"], ["x", "y"]) == "model."  # one plain wrapper
    assert detect_prefix(["model.a", "ema.b"], ["x"]) == ""
    assert detect_prefix(["model.a", "top"], ["x"]) == ""
    assert detect_prefix([], ["x"]) == ""


SEGMENTS = st.sampled_from(["a", "b", "w", "0", "1", "weight", "bias", "model", "net", "_orig_mod"])
DOTTED = st.lists(SEGMENTS, min_size=1, max_size=4).map(".".join)


@given(
    model_keys=st.sets(DOTTED, min_size=1, max_size=12),
    prefix=st.lists(SEGMENTS, min_size=0, max_size=3).map(lambda parts: "".join(f"{p}." for p in parts)),
)
@settings(max_examples=300, deadline=None)
def test_detect_prefix_recovers_any_prefix(model_keys: set[str], prefix: str) -> None:
    checkpoint_keys = [prefix + key for key in sorted(model_keys)]
    assert detect_prefix(checkpoint_keys, model_keys) == prefix


@given(
    model_keys=st.sets(DOTTED, min_size=2, max_size=12),
    prefix=st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda parts: "".join(f"{p}." for p in parts)),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_detect_prefix_with_a_key_missing_still_gives_a_loadable_prefix(
    model_keys: set[str], prefix: str, data: st.DataObject
) -> None:
    dropped = data.draw(st.sampled_from(sorted(model_keys)))
    checkpoint_keys = [prefix + key for key in sorted(model_keys) if key != dropped]
    found = detect_prefix(checkpoint_keys, model_keys)

    # Whatever it picks fits at least as many checkpoint keys as the true prefix does.
    def fitting(p: str) -> int:
        return sum(k.startswith(p) and k[len(p) :] in model_keys for k in checkpoint_keys)

    assert fitting(found) >= fitting(prefix) == len(checkpoint_keys)


# -- compare / KeyDiff / load_weights ------------------------------------------------------------------


def test_compare_and_describe() -> None:
    model_state = {f"layer{i}.weight": torch.zeros(2, 2) for i in range(8)}
    weights = {f"layer{i}.weight": torch.zeros(2, 2) for i in range(1, 8)}  # layer0 missing
    weights["layer3.weight"] = torch.zeros(3, 2)
    weights.update({f"extra{i}": torch.zeros(1) for i in range(7)})
    diff = compare(weights, model_state)
    assert not diff.ok
    assert diff.missing == ["layer0.weight"]
    assert diff.unexpected == [f"extra{i}" for i in range(7)]
    assert diff.mismatched == [("layer3.weight", (3, 2), (2, 2))]
    text = diff.describe()
    lines = text.splitlines()
    assert lines[0] == "1 missing, 7 unexpected, 1 shape-mismatched keys"
    assert lines[1] == "  missing (1): layer0.weight"
    assert lines[2] == "  unexpected (7): extra0, extra1, extra2, extra3, extra4, … (+2 more)"
    assert lines[3] == "  shape mismatch (1): layer3.weight: checkpoint [3, 2] vs model [2, 2]"
    assert "extra5" not in text
    assert compare(model_state, model_state).ok
    assert KeyDiff().ok and KeyDiff().describe() == "0 missing, 0 unexpected, 0 shape-mismatched keys"
    assert "… (+5 more)" in KeyDiff(missing=list("abcdefgh")).describe(limit=3)


def test_compare_shape_of_non_tensor() -> None:
    diff = compare({"w": 3.0}, {"w": torch.zeros(2)})
    assert diff.mismatched == [("w", None, (2,))]
    assert "checkpoint ? vs model [2]" in diff.describe()


@pytest.fixture
def trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {f"model.{k}": v for k, v in _snapshot(_net()).items()}


def _fails_and_leaves_model_untouched(weights: dict[str, Any], how: str = "the model") -> str:
    torch.manual_seed(4)
    model = _net()
    before = _snapshot(model)
    with pytest.raises(CheckError) as info:
        load_weights(model, weights, how=how)
    _assert_same(before, model.state_dict())  # nothing was copied into the model
    return str(info.value)


def test_load_weights_copies_values_and_reports(trained: dict[str, torch.Tensor]) -> None:
    model = _net()
    extra = {"loss_fn.pos_weight": torch.ones(1), "train_acc.total": torch.tensor(5)}
    report = load_weights(model, {**trained, **extra})
    assert report == LoadReport("model.", 9, ("loss_fn.pos_weight", "train_acc.total"))
    _assert_same({k.removeprefix("model."): v for k, v in trained.items()}, model.state_dict())


def test_load_weights_missing_keys(trained: dict[str, torch.Tensor]) -> None:
    weights = {k: v for k, v in trained.items() if not k.startswith("model.1.")}
    message = _fails_and_leaves_model_untouched(weights, how="the model built by factory f")
    assert "weights do not fit the model built by factory f (checkpoint prefix 'model.')" in message
    assert "5 missing, 0 unexpected, 0 shape-mismatched keys" in message
    assert "missing (5): 1.bias, 1.num_batches_tracked, 1.running_mean, 1.running_var, 1.weight" in message


def test_load_weights_unexpected_keys(trained: dict[str, torch.Tensor]) -> None:
    weights = {**trained, **{f"model.head{i}.weight": torch.zeros(1) for i in range(7)}}
    message = _fails_and_leaves_model_untouched(weights)
    assert "0 missing, 7 unexpected, 0 shape-mismatched keys" in message
    assert "unexpected (7): head0.weight, head1.weight, head2.weight, head3.weight, head4.weight" in message
    assert "(+2 more)" in message


def test_load_weights_shape_mismatch(trained: dict[str, torch.Tensor]) -> None:
    weights = {**trained, "model.3.weight": torch.zeros(5, 8), "model.3.bias": torch.zeros(5)}
    message = _fails_and_leaves_model_untouched(weights)
    assert "0 missing, 0 unexpected, 2 shape-mismatched keys" in message
    assert "3.weight: checkpoint [5, 8] vs model [2, 8]" in message
    assert "3.bias: checkpoint [5] vs model [2]" in message


def test_load_weights_empty_state_dict_is_an_error() -> None:
    message = _fails_and_leaves_model_untouched({})
    assert "no weights to load" in message and "empty" in message


def test_load_weights_plain_keys_do_not_mix_with_a_prefix() -> None:
    model = _net()
    plain = _snapshot(_net())
    report = load_weights(model, plain)
    assert report.prefix == "" and report.ignored == ()
    _assert_same(plain, model.state_dict())


def test_load_state_dict_failure_is_a_check_error(trained: dict[str, torch.Tensor]) -> None:
    model = _net()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("device mismatch\nsecond line")

    model.load_state_dict = broken  # type: ignore[method-assign]
    with pytest.raises(CheckError, match=r"^load_state_dict into the model failed: RuntimeError: device mismatch$"):
        load_weights(model, trained)


def test_a_filled_lightning_attribute_dict_reads_as_a_plain_dict(tmp_path: Path) -> None:
    from pytorch_lightning.utilities.parsing import AttributeDict

    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": AttributeDict(model={"name": "n"}, lr=0.1)}, path)
    loaded = read_checkpoint(path)
    assert loaded["hyper_parameters"] == {"model": {"name": "n"}, "lr": 0.1}
    assert type(loaded["hyper_parameters"]) is dict


def test_allowlist_names_resolve_or_are_standins() -> None:
    """Every allowlisted name either resolves to the object a pickle would name, or is a dict stand-in."""
    for name in HARMLESS_GLOBALS:
        obj = loading._resolve_global(name)
        if name.endswith(".AttributeDict"):
            assert obj is dict
        elif name.split(".")[0] in ("builtins", "collections", "typing", "argparse", "pathlib", "omegaconf"):
            assert obj is not None, name


# -- every floating tensor must be finite ---------------------------------------------------------------------
def test_non_finite_names_each_tensor_with_its_counts_and_nothing_else() -> None:
    from ckptgate.loading import NonFinite, check_finite, non_finite

    state = {
        "model.w": torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]),
        "ema.w": torch.full((3,), float("nan"), dtype=torch.bfloat16),
        "z": torch.tensor([1 + 1j, complex("nan")]),
        "big": torch.full((10,), 3e38),  # its sum overflows: finite values are not flagged
        "half": torch.full((4,), 60000.0, dtype=torch.float16),  # summed wide, not in float16
        "steps": torch.tensor(7),  # integers: never checked
        "empty": torch.zeros(0),
    }
    assert non_finite(state) == [
        NonFinite("model.w", 1, 2, 4),
        NonFinite("ema.w", 3, 0, 3),
        NonFinite("z", 1, 0, 2),
    ]
    with pytest.raises(CheckError) as info:
        check_finite(state)
    assert str(info.value) == (
        "3 of 6 floating tensors in the state_dict hold non-finite values (diverged or corrupt weights): "
        "model.w (1 NaN + 2 Inf of 4), ema.w (3 NaN of 3), z (1 NaN of 2)"
    )
    check_finite({"big": state["big"], "half": state["half"], "steps": state["steps"]})
