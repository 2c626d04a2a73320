"""The one exception our plain functions raise when a checkpoint fails a check.

It is an ordinary ``Exception`` so discovery, configs, loading and forward can be used without pytest;
the pytest layer turns it into a failure with a one-line message and no traceback.
"""

from __future__ import annotations


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
