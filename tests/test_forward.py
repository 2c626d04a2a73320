"""ckptgate.forward: the input shape option, the dummy batch, and what a forward pass must produce."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from ckptgate.errors import CheckError
from ckptgate.forward import DEFAULT_INPUT_SHAPE, ForwardReport, dummy_input, parse_shape, run_forward
from hypothesis import given, settings
from hypothesis import strategies as st

CPU = torch.device("cpu")

# -- parse_shape --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1,3,64,64", (1, 3, 64, 64)),
        ("2x3x8x8", (2, 3, 8, 8)),
        ("4", (4,)),
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
    shape=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=6),
    separator=st.sampled_from([",", "x", ", "]),
)
@settings(max_examples=100, deadline=None)
def test_parse_shape_round_trips(shape: list[int], separator: str) -> None:
    assert parse_shape(separator.join(map(str, shape))) == tuple(shape)


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
    assert re.search(r"\(at .*test_forward\.py:\d+\)$", message)


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
