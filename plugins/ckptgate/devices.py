"""Which device a test runs on, and how many threads torch may use, per pytest-xdist worker.

cpu and cuda run the same code with the device as a parameter; only the choice of device lives here.
Each xdist worker takes one GPU by its worker index, and one share of the CPU cores: torch defaults to
every core in every process, and two workers on two cores were measured 3x slower than one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

from ckptgate.errors import CheckError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def worker_index() -> int:
    """0 for ``gw0`` (and outside xdist), 1 for ``gw1``..."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def worker_count() -> int:
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    return int(count) if count.isdigit() and int(count) > 0 else 1


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker() -> int:
    return max(1, cpu_count() // worker_count())


_configured = False


def configure_torch() -> None:
    """Set torch's intra-op threads to this worker's share of the cores (once; only under xdist)."""
    global _configured
    if _configured:
        return
    _configured = True
    if "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        torch.set_num_threads(threads_per_worker())


def device_kinds(choice: str) -> tuple[str, ...]:
    """The device parameters of the forward test: both for ``auto`` so test ids are the same on every machine."""
    return ("cpu", "cuda") if choice == "auto" else (choice,)


@functools.cache  # the installed torch does not change during a session
def _torch_without_gpu_support() -> bool:
    """True when the installed torch is a CPU-only build, read from ``torch/version.py`` without importing
    torch (a second of start-up that a run whose every other check came from ``--ckpt-cache`` never pays).
    Such a build has neither ``torch.version.cuda`` nor ``.hip``, so ``torch.cuda.is_available()`` is False."""
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return False
        text = Path(next(iter(spec.submodule_search_locations)), "version.py").read_text("utf-8")
    except (ImportError, ValueError, OSError):
        return False
    found = dict(_VERSION_FIELD.findall(text))
    return found.get("cuda") == "None" and found.get("hip") == "None"


_VERSION_FIELD = re.compile(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def cuda_unavailable_reason() -> str | None:
    if "torch" not in sys.modules and _torch_without_gpu_support():
        return "no CUDA GPU visible (torch.cuda.is_available() is False); this machine checks on cpu only"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False); this machine checks on cpu only"
    return None


def resolve(kind: str) -> Any:
    """A ``torch.device`` for ``"cpu"`` or ``"cuda"`` (``cuda:N``, N = worker index modulo GPU count)."""
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count()
        if count == 0:  # was a ZeroDivisionError: say why instead
            raise CheckError(f"cannot run on cuda: {cuda_unavailable_reason() or 'no CUDA GPU is visible'}")
        return torch.device("cuda", worker_index() % count)
    return torch.device(kind)


def torch_version() -> str:
    """The running torch's version (``2.13.0+cpu``): what a pin was taken with."""
    import torch

    return str(torch.__version__)
