"""ckptgate.forward: the input shape option, the dummy batch, and what a forward pass must produce."""

from __future__ import annotations

import json
import linecache
import os
import re
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ckptgate import forward as forward_module
from ckptgate.errors import CheckError, first_line, shown_path, traceback_frames, user_frame
from ckptgate.forward import (
    DEFAULT_INPUT_SHAPE,
    FROM_EXAMPLE,
    FROM_HOOK,
    FROM_SHAPE,
    ForwardReport,
    default_input,
    describe_input,
    dummy_input,
    example_input,
    looks_like_input_mismatch,
    parse_forward_kwargs,
    parse_shape,
    run_forward,
    to_device,
)
from hypothesis import given, settings
from hypothesis import strategies as st

CPU = torch.device("cpu")

# -- parse_shape --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1,3,64,64", (1, 3, 64, 64)),
        ("2x3x8x8", (2, 3, 8, 8)),
        ("4,7", (4, 7)),
        (" 2, 3 ,5 ", (2, 3, 5)),
        ("2x3,4", (2, 3, 4)),
    ],
)
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", " ", ",", "a,b", "1,0,3", "1,-3", "1.5,3", "1;3", "1X3", "x", "3,,?"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_shape(text)
    message = str(info.value)
    assert message.startswith(f"--ckpt-input-shape {text!r}:")
    assert "positive integers like 1,3,64,64" in message


@given(
    shape=st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=5),
    separator=st.sampled_from([",", "x", ", "]),
)
@settings(max_examples=100, deadline=None)
def test_parse_shape_round_trips(shape: list[int], separator: str) -> None:
    assert parse_shape(separator.join(map(str, shape))) == tuple(shape)


@pytest.mark.parametrize("text", ["4", "64", "1,2,3,4,5,6"])
def test_parse_shape_wants_a_batch_size_and_one_samples_shape(text: str) -> None:
    """The help promises N,C,H,W (or another batch of 2 to 5 values): a lone size or six values mean nothing."""
    with pytest.raises(ValueError) as info:
        parse_shape(text)
    assert str(info.value).startswith(f"--ckpt-input-shape {text!r}: {len(text.split(','))} value(s); expected N,C,H,W")


def test_default_shape_is_an_image_batch_of_one() -> None:
    assert parse_shape("1,3,64,64") == DEFAULT_INPUT_SHAPE


# -- dummy_input --------------------------------------------------------------------------------------------


def test_dummy_input_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first = dummy_input((2, 3, 8, 8), CPU)
    second = dummy_input([2, 3, 8, 8], "cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.shape == (2, 3, 8, 8)
    assert first.dtype == torch.float32
    assert first.device == CPU
    assert torch.equal(first, second)
    assert not torch.equal(first, dummy_input((2, 3, 8, 8), CPU, seed=1))
    assert torch.equal(dummy_input((2, 3, 8, 8), CPU, seed=1), dummy_input((2, 3, 8, 8), CPU, seed=1))
    assert first.std() > 0.5  # standard normal, not zeros


# -- run_forward ---------------------------------------------------------------------------------------------


class Probe(torch.nn.Module):
    """Returns ``make(*args, **kwargs)`` and records the mode it ran in."""

    def __init__(self, make: Callable[..., Any]) -> None:
        super().__init__()
        self.make = make
        self.layer = torch.nn.Linear(4, 3)
        self.seen: list[dict[str, Any]] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(
            {
                "training": self.training,
                "inference_mode": torch.is_inference_mode_enabled(),
                "grad": torch.is_grad_enabled(),
                "args": args,
                "kwargs": kwargs,
            }
        )
        return self.make(*args, **kwargs)


def _x(batch: int = 2) -> torch.Tensor:
    return dummy_input((batch, 4), CPU)


def _fails(output: Any, batch: int = 2) -> str:
    model = Probe(lambda x: output)
    with pytest.raises(CheckError) as info:
        run_forward(model, _x(batch), CPU)
    assert len(model.seen) == 1
    return str(info.value)


def test_runs_in_eval_mode_under_inference_mode() -> None:
    model = Probe(lambda x: x * 2)
    model.train()
    report = run_forward(model, _x(), CPU)
    ((seen),) = model.seen
    assert seen["training"] is False
    assert seen["inference_mode"] is True
    assert seen["grad"] is False
    assert model.training is False
    assert report == ForwardReport("cpu", (("output", (2, 4)),))
    assert report.describe() == "1 output tensor(s) on cpu: output [2, 4]"


def test_uses_the_model_weights() -> None:
    model = torch.nn.Linear(4, 3)
    report = run_forward(model, _x(), CPU)
    assert report.outputs == (("output", (2, 3)),)


def test_dict_tuple_list_and_nested_outputs() -> None:
    def make(x: torch.Tensor) -> Any:
        return {
            "logits": x,
            "maps": (x[:, :1], [x.sum(dim=1), {"aux": x.long()}]),
            "mask": x > 0,
        }

    report = run_forward(Probe(make), _x(), CPU)
    assert report.outputs == (
        ("output['logits']", (2, 4)),
        ("output['maps'][0]", (2, 1)),
        ("output['maps'][1][0]", (2,)),
        ("output['maps'][1][1]['aux']", (2, 4)),
        ("output['mask']", (2, 4)),
    )
    assert report.describe().startswith("5 output tensor(s) on cpu: output['logits'] [2, 4], ")
    assert run_forward(Probe(lambda x: [x, x]), _x(), CPU).outputs == (
        ("output[0]", (2, 4)),
        ("output[1]", (2, 4)),
    )


def test_nan_and_inf_are_counted() -> None:
    out = torch.zeros(2, 5)
    out[0, :3] = float("nan")
    out[1, 0] = float("inf")
    out[1, 1] = float("-inf")
    message = _fails({"prob": out})
    assert message == (
        "forward pass on cpu: output['prob'] has 5 non-finite values (3 NaN, 2 Inf) out of 10: "
        "diverged or corrupt weights?"
    )


def test_nan_inside_a_tuple_is_found() -> None:
    message = _fails((torch.zeros(2, 2), torch.full((2, 3), float("nan"))))
    assert "output[1] has 6 non-finite values (6 NaN, 0 Inf)" in message
    assert "output[0]" not in message


def test_complex_nan_is_found() -> None:
    out = torch.zeros(2, 2, dtype=torch.complex64)
    out[0, 0] = complex(float("nan"), 0)
    assert "1 non-finite values (1 NaN, 0 Inf)" in _fails(out)


def test_output_not_batch_sized() -> None:
    message = _fails({"logits": torch.zeros(3, 4)}, batch=2)
    assert "output['logits'] has shape [3, 4], not batch-sized (batch 2)" in message


def test_zero_dim_output() -> None:
    message = _fails(torch.tensor(0.5))
    assert "output has shape [], not batch-sized (batch 2)" in message


@pytest.mark.parametrize(("leaf", "kind"), [(None, "NoneType"), ("logits", "str"), (3, "int"), (object(), "object")])
def test_non_tensor_leaves(leaf: Any, kind: str) -> None:
    message = _fails({"logits": torch.zeros(2, 4), "extra": leaf})
    assert f"output['extra'] is a {kind}, not a tensor or a dict of tensors" in message
    assert "logits" not in message


def test_no_tensor_output() -> None:
    assert _fails({}) == "forward pass on cpu: the model returned no tensors"
    assert _fails([]) == "forward pass on cpu: the model returned no tensors"
    assert "output is a NoneType" in _fails(None)


def test_many_problems_are_shortened_but_counted() -> None:
    message = _fails([None] * 8)
    assert message.startswith("forward pass on cpu: output[0] is a NoneType")
    shown = message.count("is a NoneType")
    assert 1 <= shown <= 5
    if shown < 8:
        assert message.endswith(f"(+{8 - shown} more problems)")
    assert "\n" not in message


def test_model_that_raises() -> None:
    def boom(x: torch.Tensor) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x4 and 3x5)")

    with pytest.raises(CheckError) as info:
        run_forward(Probe(boom), _x(), torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("forward pass on cpu failed: RuntimeError: mat1 and mat2 shapes")
    assert re.search(r"\(at \S*test_forward\.py:\d+ in test_model_that_raises\.<locals>\.boom\); ", message)


def test_dict_inputs_are_keyword_arguments() -> None:
    model = Probe(lambda image, mask: image * mask)
    inputs = {"image": _x(3), "mask": torch.ones(3, 4)}
    report = run_forward(model, inputs, CPU)
    assert report.outputs == (("output", (3, 4)),)
    assert set(model.seen[0]["kwargs"]) == {"image", "mask"}
    assert model.seen[0]["args"] == ()


def test_tuple_inputs_are_positional_arguments() -> None:
    model = Probe(lambda image, scale: image * scale)
    report = run_forward(model, (_x(5), 2.0), CPU)
    assert report.outputs == (("output", (5, 4)),)
    assert len(model.seen[0]["args"]) == 2
    assert model.seen[0]["args"][1] == 2.0


def test_batch_comes_from_the_first_batched_input() -> None:
    model = Probe(lambda scale, image: image)
    assert run_forward(model, (torch.tensor(2.0), _x(4)), CPU).outputs == (("output", (4, 4)),)
    with pytest.raises(CheckError, match=r"not batch-sized \(batch 4\)"):
        run_forward(Probe(lambda image, other: other), {"image": _x(4), "other": _x(3)}, CPU)


def test_inputs_without_a_batched_tensor() -> None:
    model = Probe(lambda **kwargs: torch.zeros(1))
    with pytest.raises(CheckError, match="the forward input holds no batched tensor"):
        run_forward(model, {"scale": 2.0, "flag": torch.tensor(True)}, CPU)
    assert model.seen == []  # the model was not called


# -- parse_forward_kwargs -----------------------------------------------------------------------------------------


def test_forward_kwargs_are_yaml_values() -> None:
    lines = ["return_loss=false", "k=3", "mode=eval", "sizes=[1,2]", " scale = 0.5 ", "", "  ", "opts={a: 1}"]
    assert parse_forward_kwargs(lines) == {
        "return_loss": False,
        "k": 3,
        "mode": "eval",
        "sizes": [1, 2],
        "scale": 0.5,
        "opts": {"a": 1},
    }
    assert parse_forward_kwargs(["target=null", "name='3'", "eq=a=b"]) == {"target": None, "name": "3", "eq": "a=b"}
    assert parse_forward_kwargs([]) == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("return_loss", "the key must be a Python identifier"),
        ("=3", "the key must be a Python identifier"),
        ("1k=3", "the key must be a Python identifier"),
        ("return-loss=false", "the key must be a Python identifier"),
        ("k=", "give a value, e.g. k=null for None"),
        ("sizes=[1,2", "the value is not valid YAML"),
        ("mode=a: b", "the value reads as block YAML; quote it to pass a string"),
        ("mode=- a", "the value reads as block YAML; quote it to pass a string"),
    ],
)
def test_bad_forward_kwargs_name_the_line_and_the_form(line: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_forward_kwargs(["ok=1", line])
    message = str(info.value)
    assert message.startswith(f"ckpt_forward_kwargs / --ckpt-forward-kwarg {line!r}: {problem}")
    assert "expected key=value with a YAML value, e.g. return_loss=false" in message
    assert "\n" not in message


def test_a_forward_kwarg_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'k=4': 'k' is given twice; expected key=value"):
        parse_forward_kwargs(["k=3", "k=4"])


@given(
    key=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
    value=st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=4)),
)
@settings(max_examples=100, deadline=None)
def test_forward_kwargs_round_trip(key: str, value: Any) -> None:
    assert parse_forward_kwargs([f"{key}={json.dumps(value)}"]) == {key: value}


# -- forward kwargs in the call ---------------------------------------------------------------------------------


def test_kwargs_are_passed_to_the_model() -> None:
    model = Probe(lambda x, scale=1.0, return_loss=True: x * scale)
    report = run_forward(model, _x(), CPU, {"scale": 2.0, "return_loss": False})
    assert model.seen[0]["kwargs"] == {"scale": 2.0, "return_loss": False}
    assert len(model.seen[0]["args"]) == 1
    assert report.outputs == (("output", (2, 4)),)
    assert report.input == "input tensor [2, 4] float32, kwargs {scale: 2.0, return_loss: False}"


def test_kwargs_follow_positional_args() -> None:
    model = Probe(lambda image, factor, flag=False: image * factor)
    run_forward(model, (_x(), 3.0), CPU, {"flag": True})
    assert len(model.seen[0]["args"]) == 2
    assert model.seen[0]["kwargs"] == {"flag": True}


def test_kwargs_are_merged_with_a_dict_input() -> None:
    model = Probe(lambda image, mask, mode: image * mask)
    run_forward(model, {"image": _x(), "mask": torch.ones(2, 4)}, CPU, {"mode": "eval"})
    assert set(model.seen[0]["kwargs"]) == {"image", "mask", "mode"}
    assert model.seen[0]["kwargs"]["mode"] == "eval"


def test_a_keyword_given_by_the_input_and_the_kwargs_is_refused() -> None:
    model = Probe(lambda image, mode: image)
    with pytest.raises(CheckError) as info:
        run_forward(model, {"image": _x(), "mode": "train"}, CPU, {"mode": "eval"}, origin=FROM_HOOK)
    assert str(info.value) == (
        "forward keyword argument 'mode' is given twice: by the input (pytest_ckptgate_make_input hook) and by "
        "ckpt_forward_kwargs / --ckpt-forward-kwarg; remove it from one of them"
    )
    assert model.seen == []


def test_no_kwargs_is_the_plain_call() -> None:
    for kwargs in (None, {}):
        model = Probe(lambda x: x)
        run_forward(model, _x(), CPU, kwargs)
        assert model.seen[0]["kwargs"] == {}


# -- example_input, to_device, default_input ----------------------------------------------------------------------


class WithExample(torch.nn.Module):
    def __init__(self, example: Any) -> None:
        super().__init__()
        self.example_input_array = example
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.layer(x) * scale


@pytest.mark.parametrize(
    "example",
    [torch.zeros(2, 4), (torch.zeros(2, 4), 2.0), {"x": torch.zeros(2, 4), "scale": 2.0}],
    ids=["tensor", "args", "kwargs"],
)
def test_example_input_array_is_returned_as_it_is(example: Any) -> None:
    assert example_input(WithExample(example)) is example
    report = run_forward(WithExample(example), example, CPU, origin=FROM_EXAMPLE)
    assert report.outputs == (("output", (2, 3)),)


def test_no_example_input_array() -> None:
    assert example_input(torch.nn.Linear(4, 3)) is None
    assert example_input(WithExample(None)) is None
    assert example_input(object()) is None


def test_a_lightning_module_example_input_array_is_found_without_importing_lightning() -> None:
    pl = pytest.importorskip("pytorch_lightning")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

    module = Module()
    assert example_input(module) is None  # Lightning's default
    module.example_input_array = torch.zeros(5, 4)
    assert example_input(module) is module.example_input_array
    source = Path(forward_module.__file__).read_text()
    assert "import lightning" not in source and "import pytorch_lightning" not in source


def test_an_example_input_array_property_that_raises_is_reported() -> None:
    class Broken(torch.nn.Module):
        @property
        def example_input_array(self) -> Any:
            raise KeyError("image_size")

    with pytest.raises(CheckError) as info:
        example_input(Broken())
    assert str(info.value) == (
        "reading example_input_array of Broken raised KeyError: 'image_size'; fix the property or set it to None "
        "to use --ckpt-input-shape"
    )


Pair = namedtuple("Pair", ["image", "mask"])


def test_to_device_moves_every_tensor_and_nothing_else() -> None:
    meta = torch.device("meta")  # a device every machine has, without a GPU
    flag = object()
    inputs = {"image": torch.zeros(2, 3), "extra": [torch.ones(1), (torch.ones(2), 3, "s")], "flag": flag}
    moved = to_device(inputs, meta)
    assert moved["image"].device == meta
    assert moved["extra"][0].device == meta
    assert moved["extra"][1][0].device == meta
    assert moved["extra"][1][1:] == (3, "s")
    assert isinstance(moved["extra"], list) and isinstance(moved["extra"][1], tuple)
    assert moved["flag"] is flag
    assert inputs["image"].device == CPU  # the caller's input is left alone
    pair = to_device(Pair(torch.zeros(1), torch.ones(1)), meta)
    assert isinstance(pair, Pair) and pair.mask.device == meta
    assert to_device(torch.zeros(2), meta).device == meta
    assert to_device(2.5, meta) == 2.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")
def test_to_device_cuda() -> None:
    moved = to_device((torch.zeros(1), {"m": torch.zeros(1)}), torch.device("cuda"))
    assert moved[0].is_cuda and moved[1]["m"].is_cuda


def test_default_input_prefers_the_model_example() -> None:
    model = WithExample((torch.zeros(2, 4), 2.0))
    inputs, origin = default_input(model, (1, 3, 8, 8), torch.device("meta"))
    assert origin == FROM_EXAMPLE == "example_input_array"
    assert inputs[0].device.type == "meta" and inputs[1] == 2.0
    inputs, origin = default_input(torch.nn.Linear(4, 3), (1, 3, 8, 8), CPU)
    assert origin == FROM_SHAPE == "--ckpt-input-shape"
    assert torch.equal(inputs, dummy_input((1, 3, 8, 8), CPU))


# -- describe_input ------------------------------------------------------------------------------------------------


def test_describe_input() -> None:
    assert (
        describe_input(dummy_input((1, 3, 64, 64), CPU), {"return_loss": False}, FROM_SHAPE)
        == "input tensor [1, 3, 64, 64] float32 (--ckpt-input-shape), kwargs {return_loss: False}"
    )
    assert describe_input(torch.zeros(2, dtype=torch.long)) == "input tensor [2] int64"
    assert (
        describe_input((torch.zeros(1, 3), 2.0, "bilinear"), None, FROM_EXAMPLE)
        == "input args (tensor [1, 3] float32, 2.0, 'bilinear') (example_input_array)"
    )
    assert (
        describe_input({"image": torch.zeros(1, 3), "mask": torch.ones(1, 3) > 0}, {"mode": "eval"}, FROM_HOOK)
        == "input kwargs {image: tensor [1, 3] float32, mask: tensor [1, 3] bool} (pytest_ckptgate_make_input hook), "
        "kwargs {mode: 'eval'}"
    )
    assert describe_input([torch.zeros(1)] * 8) == (
        "input [tensor [1] float32, tensor [1] float32, tensor [1] float32, tensor [1] float32, tensor [1] float32, "
        "tensor [1] float32, … (+2 more)]"
    )
    assert describe_input({"a": {"b": {"c": {"d": 1}}}}) == "input kwargs {a: {b: {c: …}}}"
    assert describe_input("x" * 100) == f"input '{'x' * 38}…"


# -- forward failures -------------------------------------------------------------------------------------------------


class LossModel(torch.nn.Module):
    """The issue's model: computes a loss unless told not to; the loss needs a target."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, return_loss: bool = True) -> Any:
        logits = self.layer(x)
        if return_loss:
            return F.cross_entropy(logits, target)  # the failing line
        return logits


class NeedsTarget(torch.nn.Module):
    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return x


class Gray(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # the failing line


class ReadsJson(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        json.loads("{")  # the failing line
        return x


def _failure(model: Any, inputs: Any, kwargs: Any = None, origin: str | None = FROM_SHAPE) -> str:
    with pytest.raises(CheckError) as info:
        run_forward(model, inputs, CPU, kwargs, origin=origin)
    return str(info.value)


def _location(message: str) -> tuple[str, str, str]:
    """(path, line, function) of the ``(at path:line in function)`` in a failure's first line."""
    found = re.search(r"\(at (\S+):(\d+) in (\S+)\)", message.splitlines()[0])
    assert found, message
    return found.group(1), found.group(2), found.group(3)


def _line_text(path: str, line: str) -> str:
    return linecache.getline(path, int(line)).strip()


HINT_SHAPE = (
    "  set --ckpt-input-shape N,C,H,W (ini ckpt_input_shape), add keyword arguments with ckpt_forward_kwargs (ini "
    "lines key=value) or --ckpt-forward-kwarg key=value, set example_input_array on the LightningModule, or return "
    "an input from a pytest_ckptgate_make_input hook"
)


def test_a_loss_computing_forward_names_the_users_line_the_input_and_the_options() -> None:
    message = _failure(LossModel(), _x())
    first, *rest = message.splitlines()
    assert first.startswith(
        "forward pass on cpu failed: TypeError: cross_entropy_loss(): argument 'target' (position 2) must be Tensor, "
        "not NoneType (at "
    )
    path, line, function = _location(message)
    assert path == shown_path(__file__) and function == "LossModel.forward"
    assert _line_text(path, line).endswith("# the failing line")
    assert first.endswith(
        "in LossModel.forward); the input may be at fault, not the checkpoint: "
        "input tensor [2, 4] float32 (--ckpt-input-shape)"
    )
    assert rest == [HINT_SHAPE]
    assert first_line(message, 1000) == first  # reports show the first line: it carries the essence


def test_the_forward_kwarg_makes_the_loss_model_pass() -> None:
    report = run_forward(LossModel(), _x(), CPU, parse_forward_kwargs(["return_loss=false"]), origin=FROM_SHAPE)
    assert report.outputs == (("output", (2, 3)),)
    assert report.input == "input tensor [2, 4] float32 (--ckpt-input-shape), kwargs {return_loss: False}"


def test_a_signature_mismatch_points_at_the_forward_that_was_called() -> None:
    message = _failure(NeedsTarget(), _x(), origin=FROM_EXAMPLE)
    first, hint = message.splitlines()
    found = re.search(r"\(calling NeedsTarget\.forward defined at (\S+):(\d+)\)", first)
    assert found, first
    assert found.group(1) == shown_path(__file__)
    assert _line_text(found.group(1), found.group(2)).startswith("def forward(self, x: torch.Tensor, target")
    assert "missing 1 required positional argument: 'target'" in first
    assert "torch/nn/modules" not in first
    assert first.endswith("may be at fault, not the checkpoint: input tensor [2, 4] float32 (example_input_array)")
    assert hint.startswith("  fix example_input_array on the LightningModule, return an input from a")
    assert "--ckpt-input-shape is not used while example_input_array is set" in hint


def test_a_channel_mismatch_is_an_input_problem_located_in_the_model() -> None:
    message = _failure(Gray(), dummy_input((1, 3, 16, 16), CPU))
    first = message.splitlines()[0]
    assert "RuntimeError: Given groups=1, weight of size [2, 1, 3, 3], expected input[1, 3, 16, 16]" in first
    path, line, function = _location(message)
    assert function == "Gray.forward" and _line_text(path, line).endswith("# the failing line")
    assert "the input may be at fault, not the checkpoint: input tensor [1, 3, 16, 16] float32" in first


def test_stdlib_frames_are_not_the_users_code() -> None:
    message = _failure(ReadsJson(), _x())
    path, line, function = _location(message)
    assert function == "ReadsJson.forward" and _line_text(path, line).endswith("# the failing line")


def test_a_model_bug_is_not_blamed_on_the_input() -> None:
    def broken(x: torch.Tensor, mode: str) -> Any:
        raise ValueError("the decoder lost its head")

    message = _failure(Probe(broken), _x(), {"mode": "eval"})
    assert "\n" not in message
    assert message.startswith("forward pass on cpu failed: ValueError: the decoder lost its head (at ")
    assert _location(message)[2] == "test_a_model_bug_is_not_blamed_on_the_input.<locals>.broken"
    assert message.endswith("); input tensor [2, 4] float32 (--ckpt-input-shape), kwargs {mode: 'eval'}")
    assert "may be at fault" not in message


def test_only_library_code_falls_back_to_the_library_forward() -> None:
    message = _failure(torch.nn.Linear(3, 2), _x())
    first = message.splitlines()[0]
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x4 and 3x2)" in first
    assert re.search(r"\(calling Linear\.forward defined at \S*torch[/\\]nn[/\\]modules[/\\]linear\.py:\d+\)", first)


def test_a_long_error_is_shortened_on_the_first_line_and_kept_below() -> None:
    text = "size mismatch " + "x" * 400

    def long(x: torch.Tensor) -> Any:
        raise RuntimeError(text)

    first, hint, full = _failure(Probe(long), _x()).splitlines()
    assert f"RuntimeError: {text[:159]}… (at " in first
    assert hint == HINT_SHAPE
    assert full == f"  full error: {text}"


@pytest.mark.parametrize(
    ("origin", "present", "absent"),
    [
        (FROM_SHAPE, ["--ckpt-input-shape N,C,H,W", "ckpt_forward_kwargs", "example_input_array", "make_input"], []),
        (None, ["--ckpt-input-shape N,C,H,W", "ckpt_forward_kwargs", "example_input_array", "make_input"], []),
        (FROM_EXAMPLE, ["fix example_input_array", "make_input hook", "ckpt_forward_kwargs"], ["N,C,H,W"]),
        (FROM_HOOK, ["make_input hook returns", "ckpt_forward_kwargs"], ["N,C,H,W", "example_input_array"]),
    ],
)
def test_the_hint_names_the_settings_that_change_this_input(
    origin: str | None, present: list[str], absent: list[str]
) -> None:
    hint = _failure(Gray(), dummy_input((1, 3, 8, 8), CPU), origin=origin).splitlines()[1]
    assert all(text in hint for text in present), hint
    assert not any(text in hint for text in absent), hint


@pytest.mark.parametrize(
    "text",
    [
        "mat1 and mat2 shapes cannot be multiplied (1x12288 and 512x10)",
        "Given groups=1, weight of size [16, 3, 3, 3], expected input[1, 1, 64, 64] to have 3 channels, but got 1",
        "Expected 3 channels in the input, got 1",
        "size mismatch, got input (2), mat (2x3), vec (4)",
        "Sizes of tensors must match except in dimension 1. Expected size 32 but got size 31 for tensor number 1",
        "The size of tensor a (64) must match the size of tensor b (63) at non-singleton dimension 3",
        "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [1, 64]",
        "shape '[1, 256]' is invalid for input of size 12288",
        "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size can't be greater than "
        "actual input size",
        "Input type (double) and weight type (float) should be the same",
        "Net.forward() missing 1 required positional argument: 'target'",
        "Net.forward() missing 2 required positional arguments: 'a' and 'b'",
        "Net.forward() got an unexpected keyword argument 'return_loss'",
        "Net.forward() takes 2 positional arguments but 3 were given",
        "Net.forward() takes from 2 to 3 positional arguments but 4 were given",
        "cross_entropy_loss(): argument 'target' (position 2) must be Tensor, not NoneType",
        "not enough values to unpack (expected 4, got 3)",
    ],
)
def test_input_mismatches_are_recognised(text: str) -> None:
    assert looks_like_input_mismatch(RuntimeError(text))


@pytest.mark.parametrize(
    "text",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "the decoder lost its head",
        "'NoneType' object has no attribute 'weight'",
        "index 7 is out of bounds for dimension 0 with size 3",
        "",
    ],
)
def test_other_errors_are_not_input_mismatches(text: str) -> None:
    assert not looks_like_input_mismatch(RuntimeError(text))


# -- user_frame --------------------------------------------------------------------------------------------------------


def _library(source: str, module: str = "torch._fake", filename: str = "/site/torch/_fake.py") -> dict[str, Any]:
    """Functions compiled as if they lived in a library module (by module name, as user_frame sees them)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_user_frame_skips_library_frames_and_follows_wrapped_causes() -> None:
    library = _library(
        "def wrap(call):\n"
        "    try:\n"
        "        call()\n"
        "    except Exception as exc:\n"
        "        raise RuntimeError('Error in call to target') from exc\n"
        "\n"
        "def catch(call):\n"
        "    try:\n"
        "        wrap(call)\n"
        "    except Exception as exc:\n"
        "        return exc\n",
        module="hydra._internal.instantiate",
    )

    def user_init() -> None:
        torch.zeros(2).view(3)  # the failing line

    exc = library["catch"](user_init)  # caught by library code, as ckptgate catches a build's error
    assert isinstance(exc, RuntimeError)
    assert all(frame.is_library() for frame in traceback_frames(exc))
    where = user_frame(exc)
    assert where is not None
    path, line = re.fullmatch(r"(\S+):(\d+) in .*user_init", where).groups()  # type: ignore[union-attr]
    assert path == shown_path(__file__) and _line_text(path, line).endswith("# the failing line")


def test_user_frame_falls_back_to_the_innermost_frame() -> None:
    run = _library(
        "def fail():\n    raise ValueError('inside')\n\ndef run():\n    try:\n        fail()\n"
        "    except ValueError as exc:\n        return exc\n"
    )["run"]
    exc = run()
    assert user_frame(exc) == f"{shown_path('/site/torch/_fake.py')}:2 in fail"
    assert user_frame(exc, fallback=False) is None
    assert user_frame(ValueError("never raised")) is None


def test_shown_path_is_relative_inside_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shown_path(str(tmp_path / "models" / "net.py")) == os.path.join("models", "net.py")
    outside = str(tmp_path.parent / "elsewhere.py")
    assert shown_path(outside) == outside
