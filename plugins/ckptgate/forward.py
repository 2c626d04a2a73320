"""One forward pass on a dummy input: the last proof that a checkpoint is usable for inference.

Outputs must be tensors (alone or inside dicts, lists, tuples), finite, and batch-sized: a diverged run
saves NaN weights that load perfectly well, and only a forward pass shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptgate.errors import CheckError, describe_exception

DEFAULT_INPUT_SHAPE = (1, 3, 64, 64)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; raises ValueError with the expected form."""
    parts = [part.strip() for part in text.strip().replace("x", ",").split(",")]
    shape = tuple(int(part) for part in parts if part.isdigit())
    if not parts or len(shape) != len(parts) or any(dim < 1 for dim in shape):
        raise ValueError(f"--ckpt-input-shape {text!r}: expected positive integers like 1,3,64,64")
    return shape


def dummy_input(shape: Sequence[int], device: Any, seed: int = 0) -> Any:
    """A reproducible standard-normal batch on ``device`` (generated on CPU so every device sees the same)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device)


@dataclass(frozen=True)
class ForwardReport:
    """What the forward pass produced, for the passing test's record."""

    device: str
    outputs: tuple[tuple[str, tuple[int, ...]], ...]  # (path, shape) of every output tensor

    def describe(self) -> str:
        shown = ", ".join(f"{path} {list(shape)}" for path, shape in self.outputs[:6])
        return f"{len(self.outputs)} output tensor(s) on {self.device}: {shown}"


def output_problems(output: Any, batch: int) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Walk the output; return (tensors found, problems). Problems name the output path."""
    import torch

    tensors: list[tuple[str, tuple[int, ...]]] = []
    problems: list[str] = []
    stack: list[tuple[str, Any]] = [("output", output)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, torch.Tensor):
            tensors.append((path, tuple(value.shape)))
            if value.dim() == 0 or value.shape[0] != batch:
                problems.append(f"{path} has shape {list(value.shape)}, not batch-sized (batch {batch})")
            if value.is_floating_point() or value.is_complex():
                bad = (~torch.isfinite(value)).sum().item()
                if bad:
                    nan = torch.isnan(value).sum().item()
                    problems.append(
                        f"{path} has {bad} non-finite values ({nan} NaN, {bad - nan} Inf) out of "
                        f"{value.numel()}: diverged or corrupt weights?"
                    )
        elif isinstance(value, Mapping):
            stack.extend((f"{path}[{key!r}]", item) for key, item in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value))))
        else:
            problems.append(f"{path} is a {type(value).__name__}, not a tensor or a dict of tensors")
    if not tensors and not problems:
        problems.append("the model returned no tensors")
    return sorted(tensors), problems


def run_forward(model: Any, inputs: Any, device: Any) -> ForwardReport:
    """Eval mode, ``torch.inference_mode``; ``inputs`` is a tensor, a tuple of args or a dict of kwargs."""
    import torch

    model.eval()
    batch = _batch_size(inputs)
    try:
        with torch.inference_mode():
            if isinstance(inputs, Mapping):
                output = model(**inputs)
            elif isinstance(inputs, tuple):
                output = model(*inputs)
            else:
                output = model(inputs)
    except Exception as exc:
        raise CheckError(f"forward pass on {device} failed: {describe_exception(exc)}") from None
    tensors, problems = output_problems(output, batch)
    if problems:
        more = f" (+{len(problems) - 2} more problems)" if len(problems) > 2 else ""
        raise CheckError(f"forward pass on {device}: " + "; ".join(problems[:2]) + more)
    return ForwardReport(str(device), tuple(tensors))


def _batch_size(inputs: Any) -> int:
    import torch

    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    raise CheckError("the forward input holds no batched tensor")
