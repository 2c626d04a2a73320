"""The one exception our plain functions raise when a checkpoint fails a check.

It is an ordinary ``Exception`` so discovery, configs, loading and forward can be used without pytest;
the pytest layer turns it into a failure with a one-line message and no traceback.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass


class CheckError(Exception):
    """A checkpoint (or its config) is not usable; ``str()`` says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def first_line(text: str, limit: int = 300) -> str:
    """The first line of a message, shortened: root-cause pointers must stay on one line."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` plus where it was raised, for errors inside user code (factories, models)."""
    tb = exc.__traceback__
    location = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith("<frozen"):  # importlib's internals say nothing to the user
            location = f" (at {filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    text = " ".join(str(exc).split())  # one line: messages end up in one-line root causes
    return f"{type(exc).__name__}: {text}{location}" if text else f"{type(exc).__name__}{location}"


# Frames of these packages are never "where the user's code failed": a traceback that ends in
# torch.nn.functional says nothing a user can act on; the model line that called it does.
LIBRARY_PACKAGES = frozenset(
    {
        "torch",
        "lightning",
        "pytorch_lightning",
        "lightning_fabric",
        "lightning_utilities",
        "torchmetrics",
        "ckptgate",
        "hydra",
        "omegaconf",
        "pluggy",
        "_pytest",
        "pytest",
    }
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (also those hidden by ``raise ... from None``), each once."""
    seen: set[int] = set()
    queue = [exc]
    while queue:
        link = queue.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        queue.extend(other for other in (link.__cause__, link.__context__) if other is not None)


def user_frame(exc: BaseException, *, fallback: bool = True) -> str | None:
    """``path:line in function`` of the innermost frame in the user's code where ``exc`` (or, when its
    own traceback has none, what caused it) was raised.

    Library frames (torch, Lightning, ckptgate, Hydra, the standard library) are skipped because a user
    cannot act on them; when every frame is one, the innermost is returned (``fallback``) or None.
    """
    innermost: Frame | None = None
    for link in exception_chain(exc):
        frames = traceback_frames(link)
        for frame in reversed(frames):
            if not frame.is_library():
                return frame.describe()
        if innermost is None and frames:
            innermost = frames[-1]
    return innermost.describe() if fallback and innermost is not None else None


@dataclass(frozen=True)
class Frame:
    """One traceback frame, as much of it as a message needs."""

    filename: str
    line: int
    function: str  # qualified where Python knows it: ``Net.forward``
    module: str

    def is_library(self) -> bool:
        if self.module.partition(".")[0] in LIBRARY_PACKAGES or self.filename.startswith("<frozen"):
            return True
        return _in_stdlib(self.filename)

    def describe(self) -> str:
        return f"{shown_path(self.filename)}:{self.line} in {self.function}"


def traceback_frames(exc: BaseException) -> list[Frame]:
    """Every frame of ``exc``'s own traceback, outermost first."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        module = tb.tb_frame.f_globals.get("__name__") or ""
        frames.append(Frame(code.co_filename, tb.tb_lineno, getattr(code, "co_qualname", code.co_name), module))
        tb = tb.tb_next
    return frames


def _in_stdlib(filename: str) -> bool:
    """By path, not by module name: a user's ``models/code.py`` is not the stdlib's ``code``."""
    path = os.path.normcase(os.path.abspath(filename))
    if "site-packages" in path or "dist-packages" in path:
        return False
    return any(path.startswith(root + os.sep) for root in _stdlib_roots())


@functools.cache
def _stdlib_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.normcase(os.path.abspath(paths[key])) for key in ("stdlib", "platstdlib") if key in paths})


def shown_path(filename: str) -> str:
    """A path as a user types it: relative to the current directory when inside it, else absolute."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if relative.startswith(os.pardir) else relative
