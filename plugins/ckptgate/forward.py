"""One forward pass on a dummy input: the last proof that a checkpoint is usable for inference.

Outputs must be tensors (alone or inside dicts, lists, tuples), finite, and batch-sized: a diverged run
saves NaN weights that load perfectly well, and only a forward pass shows it.

The input comes from a ``pytest_ckptgate_make_input`` hook, else the model's own
``example_input_array`` (Lightning's convention), else a dummy batch of ``--ckpt-input-shape``; keyword
arguments from ``ckpt_forward_kwargs`` are added to the call. A forward pass that fails because the input
does not fit the model says so: the checkpoint is then probably fine.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckptgate.errors import CheckError, shown_path, user_frame

DEFAULT_INPUT_SHAPE = (1, 3, 64, 64)
SEED = 0  # of the dummy batch, and of torch's generator before each model is built (an example_input_array)

# Where a forward input came from, for messages (the caller passes one of these as ``origin``).
FROM_SHAPE = "--ckpt-input-shape"
FROM_EXAMPLE = "example_input_array"
FROM_HOOK = "pytest_ckptgate_make_input hook"

# Errors that say the input does not fit the model (shape, channels, arguments) rather than that the
# weights are bad: the weights loaded strictly before the forward pass ran.
INPUT_MISMATCH = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"mat1 and mat2 shapes cannot be multiplied",
        r"expected\b.*\bchannels",
        r"size mismatch",
        r"sizes of tensors must match",
        r"the size of tensor a \(\d+\) must match the size of tensor b",
        r"given groups=",
        r"expected\b.{0,60}\binput",
        r"is invalid for input of size",
        r"kernel size can't be greater than actual input size",
        r"output size is too small",
        r"input type .* and weight type .* should be the same",
        r"missing \d+ required (positional|keyword-only) arguments?",
        r"unexpected keyword argument",
        r"takes (from \d+ to )?\d+ positional arguments? but \d+ (were|was) given",
        r"must be Tensor, not NoneType",  # an optional argument (a loss target) the input did not give
        r"not enough values to unpack",  # ``b, c, h, w = x.shape`` on an input of another rank
    )
)


SHAPE_HELP = "N,C,H,W: the batch size, then one sample's shape (N,F, N,C,L and N,C,D,H,W too: 2 to 5 values)"


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; a batch size and one sample's shape, 2 to 5 positive integers (a
    lone ``64`` or six values are no batch of anything a model takes); raises ValueError with the expected form."""
    parts = [part.strip() for part in text.strip().replace("x", ",").split(",")]
    shape = tuple(int(part) for part in parts if part.isdigit())
    if not parts or len(shape) != len(parts) or any(dim < 1 for dim in shape):
        raise ValueError(f"--ckpt-input-shape {text!r}: expected positive integers like 1,3,64,64 ({SHAPE_HELP})")
    if not 2 <= len(shape) <= 5:
        raise ValueError(f"--ckpt-input-shape {text!r}: {len(shape)} value(s); expected {SHAPE_HELP}")
    return shape


def dummy_input(shape: Sequence[int], device: Any, seed: int = SEED) -> Any:
    """A reproducible standard-normal batch on ``device`` (generated on CPU so every device sees the same)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device)


def parse_forward_kwargs(lines: Iterable[str]) -> dict[str, Any]:
    """``["return_loss=false", "k=3"]`` -> ``{"return_loss": False, "k": 3}``: values are YAML scalars or
    flow values (``[1, 2]``, ``{a: 1}``) so a model can be given booleans, numbers and lists from an ini.

    Blank lines are skipped; anything else that is not ``identifier=value`` raises ValueError with a one-line
    message naming the line (a usage error)."""
    parsed: dict[str, Any] = {}
    for line in lines:
        if not line.strip():
            continue
        key, value = _parse_kwarg_line(line)
        if key in parsed:
            raise _kwarg_error(line, f"{key!r} is given twice")
        parsed[key] = value
    return parsed


def _parse_kwarg_line(line: str) -> tuple[str, Any]:
    import yaml

    key, sep, text = (part.strip() for part in line.partition("="))
    if not sep or not key.isidentifier():
        raise _kwarg_error(line, "the key must be a Python identifier")
    if not text:
        raise _kwarg_error(line, f"give a value, e.g. {key}=null for None")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or "not a YAML value").split())
        raise _kwarg_error(line, f"the value is not valid YAML ({problem}); quote it to pass a string") from None
    if isinstance(value, dict | list) and text[0] not in "[{":  # ``a: b`` or ``- a``: block YAML, surely a typo
        raise _kwarg_error(line, "the value reads as block YAML; quote it to pass a string")
    return key, value


def _kwarg_error(line: str, problem: str) -> ValueError:
    return ValueError(
        f"ckpt_forward_kwargs / --ckpt-forward-kwarg {line.strip()!r}: {problem}; expected key=value with a YAML "
        "value, e.g. return_loss=false, k=3, mode=eval, sizes=[1,2]"
    )


def example_input(model: Any) -> Any | None:
    """The model's ``example_input_array`` (Lightning's convention: a tensor, a tuple of positional args or a
    dict of kwargs), or None when it has none. Duck-typed: any module may carry one, and lightning need not
    be importable."""
    try:
        return getattr(model, "example_input_array", None)
    except Exception as exc:  # a property that raises: say so rather than fall back silently
        raise CheckError(
            f"reading example_input_array of {type(model).__name__} raised {type(exc).__name__}: "
            f"{' '.join(str(exc).split())}; fix the property or set it to None to use --ckpt-input-shape"
        ) from None


def to_device(inputs: Any, device: Any) -> Any:
    """``inputs`` with every tensor inside tensors, tuples (named ones too), lists and dicts on ``device``;
    anything else (flags, numbers, strings) is left as it is."""
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {key: to_device(value, device) for key, value in inputs.items()}
    if isinstance(inputs, tuple):
        moved = [to_device(value, device) for value in inputs]
        return type(inputs)(*moved) if hasattr(inputs, "_fields") else tuple(moved)
    if isinstance(inputs, list):
        return [to_device(value, device) for value in inputs]
    return inputs


def default_input(model: Any, shape: Sequence[int], device: Any) -> tuple[Any, str]:
    """The input when no hook gave one, and its origin: the model's ``example_input_array`` (on
    ``device``), else a dummy batch of ``shape``."""
    example = example_input(model)
    if example is not None:
        return to_device(example, device), FROM_EXAMPLE
    return dummy_input(shape, device), FROM_SHAPE


def describe_input(inputs: Any, kwargs: Mapping[str, Any] | None = None, origin: str | None = None) -> str:
    """What the model was given, in one line: ``input tensor [1, 3, 64, 64] float32 (--ckpt-input-shape),
    kwargs {return_loss: False}``; a failure names it so the user can tell the input from the checkpoint."""
    if isinstance(inputs, Mapping):
        text = f"input kwargs {_describe_value(inputs)}"
    elif isinstance(inputs, tuple):
        text = f"input args {_describe_value(inputs)}"
    else:
        text = f"input {_describe_value(inputs)}"
    if origin:
        text += f" ({origin})"
    if kwargs:
        text += f", kwargs {_describe_value(kwargs)}"
    return text


def _describe_value(value: Any, depth: int = 0) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if depth >= 3 and isinstance(value, Mapping | list | tuple):
        return "…"
    if isinstance(value, Mapping):
        items = [f"{key}: {_describe_value(item, depth + 1)}" for key, item in list(value.items())[:6]]
        return "{" + ", ".join(items) + _more(len(value), 6) + "}"
    if isinstance(value, list | tuple):
        items = [_describe_value(item, depth + 1) for item in value[:6]]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        return opening + ", ".join(items) + _more(len(value), 6) + closing
    return _shorten(" ".join(repr(value).split()), 40)


def _more(count: int, shown: int) -> str:
    return f", … (+{count - shown} more)" if count > shown else ""


@dataclass(frozen=True)
class ForwardReport:
    """What the forward pass produced, for the passing test's record."""

    device: str
    outputs: tuple[tuple[str, tuple[int, ...]], ...]  # (path, shape) of every output tensor
    input: str = field(default="", compare=False)  # describe_input's text: what the model was given
    # pins.output_fingerprints of the outputs, when asked for (--ckpt-pins): taken from this very pass
    fingerprints: dict[str, dict[str, Any]] | None = field(default=None, compare=False)

    def describe(self) -> str:
        shown = ", ".join(f"{path} {list(shape)}" for path, shape in self.outputs[:6])
        return f"{len(self.outputs)} output tensor(s) on {self.device}: {shown}"


def output_problems(output: Any, batch: int) -> tuple[list[tuple[str, Any]], list[str]]:
    """Walk the output; return (tensors found with their paths, sorted by path; problems). Problems name the
    output path."""
    import torch

    tensors: list[tuple[str, Any]] = []
    problems: list[str] = []
    stack: list[tuple[str, Any]] = [("output", output)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, torch.Tensor):
            tensors.append((path, value))
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
    return sorted(tensors, key=lambda found: found[0]), problems


def run_forward(
    model: Any,
    inputs: Any,
    device: Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    origin: str | None = None,
    fingerprint: bool = False,
) -> ForwardReport:
    """Eval mode, ``torch.inference_mode``; ``inputs`` is a tensor, a tuple of args or a dict of kwargs,
    ``kwargs`` (``ckpt_forward_kwargs``) are added to the call, ``origin`` says where the input came from;
    ``fingerprint``: also the outputs' pins fingerprints (:mod:`ckptgate.pins`), from this same pass."""
    import torch

    model.eval()
    batch = _batch_size(inputs)
    args, call_kwargs = call_arguments(inputs, kwargs, origin)
    described = describe_input(inputs, kwargs, origin)
    try:
        with torch.inference_mode():
            output = model(*args, **call_kwargs)
    except Exception as exc:
        raise CheckError(forward_failure(model, exc, device, described, origin)) from None
    tensors, problems = output_problems(output, batch)
    if problems:
        more = f" (+{len(problems) - 2} more problems)" if len(problems) > 2 else ""
        raise CheckError(f"forward pass on {device}: " + "; ".join(problems[:2]) + more)
    shapes = tuple((path, tuple(tensor.shape)) for path, tensor in tensors)
    if not fingerprint:
        return ForwardReport(str(device), shapes, described)
    from ckptgate.pins import output_fingerprints

    return ForwardReport(str(device), shapes, described, output_fingerprints(tensors))


def call_arguments(
    inputs: Any, kwargs: Mapping[str, Any] | None, origin: str | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model call's positional and keyword arguments; a keyword given by both sides is refused, since
    silently preferring one would test another call than the user asked for."""
    extra = dict(kwargs or {})
    if isinstance(inputs, Mapping):
        twice = sorted(str(key) for key in inputs if key in extra)
        if twice:
            raise CheckError(
                f"forward keyword argument {twice[0]!r} is given twice: by the input ({origin or 'a dict of kwargs'}) "
                "and by ckpt_forward_kwargs / --ckpt-forward-kwarg; remove it from one of them"
            )
        return (), {**inputs, **extra}
    if isinstance(inputs, tuple):
        return inputs, extra
    return (inputs,), extra


def forward_failure(model: Any, exc: BaseException, device: Any, described: str, origin: str | None) -> str:
    """The message of a forward pass that raised: the error, where in the user's code, the input, and,
    when the error says the input does not fit, that the checkpoint is probably fine and how to change it.

    The first line carries all of it (reports show only that); later lines add the how-to and the full
    error when the first line had to shorten it."""
    text = " ".join(str(exc).split())
    error = f"{type(exc).__name__}: {_shorten(text, 160)}" if text else type(exc).__name__
    mismatch = looks_like_input_mismatch(exc)
    verdict = "; the input may be at fault, not the checkpoint: " if mismatch else "; "
    lines = [f"forward pass on {device} failed: {error} ({_failure_location(model, exc)}){verdict}{described}"]
    if mismatch:
        lines.append(f"  {input_hint(origin)}")
    if len(text) > 160:
        lines.append(f"  full error: {_shorten(text, 2000)}")
    return "\n".join(lines)


def looks_like_input_mismatch(exc: BaseException) -> bool:
    """Whether the error reads like a shape, channel or argument mismatch between input and model."""
    text = " ".join(str(exc).split())
    return any(pattern.search(text) for pattern in INPUT_MISMATCH)


def input_hint(origin: str | None) -> str:
    """How to give the model an input it accepts, naming only the settings that would change this one."""
    kwargs = "keyword arguments with ckpt_forward_kwargs (ini lines key=value) or --ckpt-forward-kwarg key=value"
    if origin == FROM_HOOK:
        return f"change what your pytest_ckptgate_make_input hook returns, or add {kwargs}"
    if origin == FROM_EXAMPLE:
        return (
            "fix example_input_array on the LightningModule, return an input from a pytest_ckptgate_make_input "
            f"hook, or add {kwargs} (--ckpt-input-shape is not used while example_input_array is set)"
        )
    return (
        f"set --ckpt-input-shape N,C,H,W (ini ckpt_input_shape), add {kwargs}, set example_input_array on the "
        "LightningModule, or return an input from a pytest_ckptgate_make_input hook"
    )


def _failure_location(model: Any, exc: BaseException) -> str:
    """Where to look: the user's frame in the traceback; when the call itself failed (a signature
    mismatch raises inside torch), the model's ``forward`` that was called."""
    where = user_frame(exc, fallback=False)
    if where:
        return f"at {where}"
    defined = _forward_definition(model)
    if defined:
        return f"calling {defined}"
    innermost = user_frame(exc)
    return f"at {innermost}" if innermost else "no traceback"


def _forward_definition(model: Any) -> str | None:
    """``Net.forward defined at path:line``, or None where Python cannot tell (builtins, C code)."""
    method = getattr(type(model), "forward", None)
    try:
        path = inspect.getsourcefile(method)  # type: ignore[arg-type]
        line = inspect.getsourcelines(method)[1]  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None
    if path is None:
        return None
    return f"{method.__qualname__} defined at {shown_path(path)}:{line}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _batch_size(inputs: Any) -> int:
    import torch

    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    raise CheckError("the forward input holds no batched tensor")
