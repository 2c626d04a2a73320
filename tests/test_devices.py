"""ckptgate.devices: worker index/count from pytest-xdist's environment, the per-worker thread share and
device choice. Every test sets or clears the xdist variables itself, so it passes under ``-n`` too."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from ckptgate import devices
from ckptgate.errors import CheckError


@pytest.fixture
def no_xdist(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    return monkeypatch


@pytest.fixture
def torch_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Restores torch's thread count and the once-only flag after a configure_torch test."""
    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "_configured", False)
    yield before
    torch.set_num_threads(before)


@pytest.mark.parametrize(("name", "index"), [("gw0", 0), ("gw1", 1), ("gw5", 5), ("gw12", 12), ("master", 0)])
def test_worker_index(no_xdist: pytest.MonkeyPatch, name: str, index: int) -> None:
    no_xdist.setenv("PYTEST_XDIST_WORKER", name)
    assert devices.worker_index() == index


def test_worker_index_outside_xdist(no_xdist: pytest.MonkeyPatch) -> None:
    assert devices.worker_index() == 0


@pytest.mark.parametrize(("value", "count"), [("1", 1), ("2", 2), ("16", 16), ("0", 1), ("-2", 1), ("two", 1)])
def test_worker_count(no_xdist: pytest.MonkeyPatch, value: str, count: int) -> None:
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", value)
    assert devices.worker_count() == count


def test_worker_count_outside_xdist(no_xdist: pytest.MonkeyPatch) -> None:
    assert devices.worker_count() == 1


def test_cpu_count_is_this_process_share() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert devices.cpu_count() == expected >= 1


def test_cpu_count_without_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert devices.cpu_count() == (os.cpu_count() or 1)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert devices.cpu_count() == 1


@pytest.mark.parametrize(
    ("cores", "workers", "threads"),
    [(8, "1", 8), (8, "3", 2), (2, "2", 1), (2, "4", 1), (16, "4", 4), (1, "1", 1)],
)
def test_threads_per_worker(no_xdist: pytest.MonkeyPatch, cores: int, workers: str, threads: int) -> None:
    no_xdist.setattr(devices, "cpu_count", lambda: cores)
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    assert devices.threads_per_worker() == threads


def test_threads_per_worker_on_this_machine(no_xdist: pytest.MonkeyPatch) -> None:
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert devices.threads_per_worker() == max(1, devices.cpu_count() // 2)


def test_configure_torch_sets_the_share_under_xdist(no_xdist: pytest.MonkeyPatch, torch_threads: int) -> None:
    no_xdist.setattr(devices, "cpu_count", lambda: 4)
    no_xdist.setenv("PYTEST_XDIST_WORKER", "gw1")
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    torch.set_num_threads(3)
    devices.configure_torch()
    assert torch.get_num_threads() == 2
    assert devices._configured is True
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", "4")  # once per process: a second call changes nothing
    devices.configure_torch()
    assert torch.get_num_threads() == 2


def test_configure_torch_on_the_real_core_count(no_xdist: pytest.MonkeyPatch, torch_threads: int) -> None:
    no_xdist.setenv("PYTEST_XDIST_WORKER", "gw0")
    no_xdist.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    devices.configure_torch()
    assert torch.get_num_threads() == max(1, devices.cpu_count() // 2)


def test_configure_torch_outside_xdist_leaves_threads_alone(no_xdist: pytest.MonkeyPatch, torch_threads: int) -> None:
    torch.set_num_threads(3)
    devices.configure_torch()
    assert torch.get_num_threads() == 3
    assert devices._configured is True


def test_device_kinds() -> None:
    assert devices.device_kinds("auto") == ("cpu", "cuda")
    assert devices.device_kinds("cpu") == ("cpu",)
    assert devices.device_kinds("cuda") == ("cuda",)
    assert devices.DEVICE_CHOICES == ("auto", "cpu", "cuda")


def test_cuda_unavailable_reason_matches_this_machine() -> None:
    reason = devices.cuda_unavailable_reason()
    if torch.cuda.is_available():
        assert reason is None
    else:  # this machine: no GPU
        assert isinstance(reason, str)
        assert "no CUDA GPU" in reason and "cpu" in reason


def test_cuda_unavailable_reason_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "torch.cuda.is_available() is False" in devices.cuda_unavailable_reason()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.cuda_unavailable_reason() is None


def test_resolve_cpu() -> None:
    assert devices.resolve("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("worker", "gpus", "index"), [("gw5", 4, 1), ("gw0", 4, 0), ("gw3", 4, 3), ("gw4", 4, 0), ("gw7", 1, 0)]
)
def test_resolve_cuda_takes_a_gpu_by_worker_index(
    no_xdist: pytest.MonkeyPatch, worker: str, gpus: int, index: int
) -> None:
    no_xdist.setattr(torch.cuda, "device_count", lambda: gpus)
    no_xdist.setenv("PYTEST_XDIST_WORKER", worker)
    assert devices.resolve("cuda") == torch.device("cuda", index)


def test_resolve_cuda_outside_xdist_is_the_first_gpu(no_xdist: pytest.MonkeyPatch) -> None:
    no_xdist.setattr(torch.cuda, "device_count", lambda: 4)
    assert devices.resolve("cuda") == torch.device("cuda", 0)


def test_resolve_cuda_without_a_gpu_says_why(no_xdist: pytest.MonkeyPatch) -> None:
    no_xdist.setattr(torch.cuda, "device_count", lambda: 0)
    no_xdist.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckError, match="cannot run on cuda: no CUDA GPU visible"):
        devices.resolve("cuda")
