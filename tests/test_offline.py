"""ckptgate.offline: building a model never downloads, fails fast and says why, and leaves the process as it was."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ckptgate.errors import CheckError, describe_exception, exception_chain
from ckptgate.offline import (
    OFFLINE_ENVIRONMENT,
    DownloadBlocked,
    build_offline,
    download_attempt,
    no_downloads,
)

HAS_UNIX = hasattr(socket, "AF_UNIX")


def _socket_state() -> dict[str, Any]:
    """What no_downloads replaces: the class's own attributes (absent: None) and the module's functions."""
    return {
        "connect": vars(socket.socket).get("connect"),
        "connect_ex": vars(socket.socket).get("connect_ex"),
        "create_connection": socket.create_connection,
        "getaddrinfo": socket.getaddrinfo,
    }


def _environment() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in OFFLINE_ENVIRONMENT}


def _assert_blocking() -> None:
    with pytest.raises(DownloadBlocked):
        socket.getaddrinfo("127.0.0.1", 80)


def _assert_not_blocking() -> None:
    assert socket.getaddrinfo("127.0.0.1", 80)  # numeric: no DNS query, works anywhere


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A local TCP server: a download that was really blocked never reaches it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


def _port(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def _never_reached(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


def _build(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build as ckptgate's build routes do: any failure becomes a CheckError raised ``from None``."""
    try:
        return make()
    except Exception as exc:
        raise CheckError(f"building the model with factory m:f failed: {describe_exception(exc)}") from None


class DownloadsInInit(torch.nn.Module):
    """A model that fetches its "pretrained weights" from the network in __init__."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        urllib.request.urlopen(url, timeout=5).read()


class HubWeightsInInit(torch.nn.Module):
    """timm/torchvision style: ``pretrained=True`` loads weights through torch.hub."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.layer.load_state_dict(torch.hub.load_state_dict_from_url(url, progress=False))


# -- blocking ----------------------------------------------------------------------------------------------------


def test_a_model_that_downloads_in_init_fails_fast_with_the_reason(server: socket.socket) -> None:
    url = f"http://127.0.0.1:{_port(server)}/x"
    started = time.monotonic()
    with pytest.raises(CheckError) as info:
        build_offline(lambda: _build(lambda: DownloadsInInit(url)))
    assert time.monotonic() - started < 2
    assert _never_reached(server)
    first, *rest = str(info.value).splitlines()
    assert first.startswith(
        "building the model tried to download (pretrained weights?) and failed offline: "
        f"blocked a connection to 127.0.0.1:{_port(server)}. Set `pretrained: false` in the model config"
    )
    assert "or put the weights in the local cache (torch hub: " in first
    assert rest and rest[0].strip().startswith("building the model with factory m:f failed: URLError:")
    assert any(isinstance(link, DownloadBlocked) for link in _all_links(info.value))


def test_the_gate_can_wire_no_downloads_and_download_attempt_itself(server: socket.socket) -> None:
    url = f"http://127.0.0.1:{_port(server)}/x"
    with no_downloads() as attempts, pytest.raises(CheckError) as info:
        _build(lambda: DownloadsInInit(url))
    assert attempts.addresses == [f"127.0.0.1:{_port(server)}"]
    reason = download_attempt(info.value)  # building raised `from None`: the cause is still in __context__
    assert reason is not None and reason.startswith("building the model tried to download (pretrained weights?)")
    assert "\n" not in reason
    assert _never_reached(server)


def test_torch_hub_weights_fail_fast_and_nothing_is_written(
    tmp_path: Path, server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    url = f"http://127.0.0.1:{_port(server)}/resnet18-f37072fd.pth"
    started = time.monotonic()
    with pytest.raises(CheckError) as info:
        build_offline(lambda: _build(lambda: HubWeightsInInit(url)))
    assert time.monotonic() - started < 2
    assert _never_reached(server)
    first = str(info.value).splitlines()[0]
    assert f"failed offline: blocked a connection to 127.0.0.1:{_port(server)}" in first
    assert f"torch hub: {torch_home / 'hub' / 'checkpoints'}" in first
    # torch.hub creates its (empty) checkpoints folder before downloading; no file may appear in it.
    assert [path for path in torch_home.rglob("*") if not path.is_dir()] == []


def test_a_host_name_is_not_even_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    started = time.monotonic()
    with no_downloads() as attempts, pytest.raises(urllib.error.URLError) as info:
        torch.hub.load_state_dict_from_url("https://weights.invalid/resnet18.pth", progress=False)
    assert time.monotonic() - started < 2
    assert isinstance(info.value.reason, DownloadBlocked)
    assert attempts.addresses == ["weights.invalid:443"]


@pytest.mark.parametrize(
    "connect",
    [
        pytest.param(lambda port: socket.getaddrinfo("example.com", 443), id="getaddrinfo"),
        pytest.param(lambda port: socket.create_connection(("127.0.0.1", port), timeout=1), id="create_connection"),
        pytest.param(lambda port: _tcp().connect(("127.0.0.1", port)), id="connect"),
        pytest.param(lambda port: _tcp().connect_ex(("127.0.0.1", port)), id="connect_ex"),
    ],
)
def test_every_internet_connection_is_refused(connect: Callable[[int], Any], server: socket.socket) -> None:
    with no_downloads(), pytest.raises(DownloadBlocked) as info:
        connect(_port(server))
    assert isinstance(info.value, OSError)  # libraries that handle network errors see "offline"
    assert "was attempted while building the model" in str(info.value)
    assert _never_reached(server)


def test_ipv6_connections_are_refused() -> None:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("no IPv6 on this machine")
    with sock, no_downloads(), pytest.raises(DownloadBlocked, match=r"network access to ::1:9 "):
        sock.connect(("::1", 9))


def _tcp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(1)
    return sock


def test_threads_started_inside_are_blocked_too() -> None:
    """Hubs download from thread pools: the block is process-wide."""
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo("example.com", 443)
        except BaseException as exc:
            errors.append(exc)

    with no_downloads():
        thread = threading.Thread(target=resolve)
        thread.start()
        thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], DownloadBlocked)


# -- what keeps working --------------------------------------------------------------------------------------------


def test_sockets_opened_before_keep_working(server: socket.socket) -> None:
    client = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
    server.setblocking(True)
    accepted, _ = server.accept()
    with client, accepted, no_downloads():
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        accepted.sendall(b"pong")
        assert client.recv(4) == b"pong"


@pytest.mark.skipif(not HAS_UNIX, reason="no Unix-domain sockets here")
def test_unix_sockets_and_pipes_keep_working() -> None:
    """pytest-xdist talks to its workers over pipes; other tools over Unix-domain sockets."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder, no_downloads():
        path = os.path.join(folder, "s.sock")  # short: Unix socket paths are limited to ~100 bytes
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        missing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        assert missing.connect_ex(os.path.join(folder, "none.sock")) != 0  # the real connect_ex: an errno
        missing.close()
        accepted, _ = listener.accept()
        client.sendall(b"unix")
        assert accepted.recv(4) == b"unix"
        for sock in (accepted, client, listener):
            sock.close()
        left, right = socket.socketpair()
        left.sendall(b"pair")
        assert right.recv(4) == b"pair"
        left.close()
        right.close()
        read, write = os.pipe()
        os.write(write, b"pipe")
        assert os.read(read, 4) == b"pipe"
        os.close(read)
        os.close(write)


# -- environment and restoring ---------------------------------------------------------------------------------------


def test_hub_offline_variables_are_set_inside_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with no_downloads():
        assert _environment() == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert _environment() == {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": None, "HF_DATASETS_OFFLINE": None}


def test_everything_is_restored_when_the_body_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "maybe")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sockets, environment = _socket_state(), _environment()
    with pytest.raises(ZeroDivisionError), no_downloads():
        inside = _socket_state()
        assert [name for name in sockets if inside[name] is sockets[name]] == []  # each one is guarded
        _ = 1 / 0
    assert _socket_state() == sockets
    assert _environment() == environment
    _assert_not_blocking()


def test_nested_use_lifts_the_block_only_at_the_outermost_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sockets = _socket_state()
    with no_downloads() as outer:
        with no_downloads() as inner:
            _assert_blocking()
        _assert_blocking()
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (len(inner.addresses), len(outer.addresses)) == (1, 2)
    assert _socket_state() == sockets
    assert "HF_HUB_OFFLINE" not in os.environ
    _assert_not_blocking()


def test_overlapping_uses_that_exit_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads' blocks may end in any order: the block holds until the last one ends."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sockets = _socket_state()
    first, second = no_downloads(), no_downloads()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    _assert_blocking()
    second.__exit__(None, None, None)
    assert _socket_state() == sockets
    assert "HF_HUB_OFFLINE" not in os.environ
    _assert_not_blocking()


def test_a_build_that_does_not_download_is_untouched() -> None:
    assert build_offline(lambda: 42) == 42

    def fails() -> None:
        raise CheckError("no config")

    with pytest.raises(CheckError, match=r"^no config$"):
        build_offline(fails)


# -- download_attempt ------------------------------------------------------------------------------------------------


class OfflineModeIsEnabled(ConnectionError):
    """Named like huggingface_hub's, which ckptgate must recognise without importing it."""


class LocalEntryNotFoundError(FileNotFoundError):
    """Named like huggingface_hub's: offline and not in the cache."""


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _chained(inner: BaseException, *, hide: bool) -> BaseException:
    """``RuntimeError`` raised while handling ``inner``: ``from inner`` or ``from None`` (as building does)."""
    try:
        raise inner
    except BaseException as caught:
        try:
            if hide:
                raise RuntimeError("building the model failed") from None
            raise RuntimeError("building the model failed") from caught
        except RuntimeError as outer:
            return outer


def _hub_failure(tmp_path: Path) -> BaseException:
    """An OSError raised inside torch.hub itself (its download target cannot be written)."""
    try:
        torch.hub.download_url_to_file("http://127.0.0.1:9/x", str(tmp_path / "missing" / "x"), progress=False)
    except OSError as exc:
        return exc
    raise AssertionError("torch.hub did not fail")


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda: DownloadBlocked("huggingface.co:443"), "blocked a connection to huggingface.co:443"),
        (lambda: OfflineModeIsEnabled("offline mode is enabled"), "OfflineModeIsEnabled: offline mode is enabled"),
        (lambda: LocalEntryNotFoundError("not in cache"), "LocalEntryNotFoundError: not in cache"),
        (lambda: urllib.error.URLError("timed out"), "URLError: <urlopen error timed out>"),
        (lambda: socket.gaierror(-2, "Name or service not known"), "gaierror: [Errno -2] Name or service not known"),
        (lambda: urllib.error.URLError(DownloadBlocked("a:1")), "blocked a connection to a:1"),
    ],
)
@pytest.mark.parametrize("how", ["itself", "cause", "hidden context"])
def test_download_failures_are_recognised(make: Callable[[], BaseException], said: str, how: str) -> None:
    exc = _raised(make()) if how == "itself" else _chained(make(), hide=how == "hidden context")
    reason = download_attempt(exc)
    assert reason is not None
    assert reason.startswith(f"building the model tried to download (pretrained weights?) and failed offline: {said}")
    assert "Set `pretrained: false` in the model config" in reason
    assert "\n" not in reason


def test_torch_hub_failures_are_recognised(tmp_path: Path) -> None:
    reason = download_attempt(_hub_failure(tmp_path))
    assert reason is not None and "failed offline: FileNotFoundError" in reason


def test_a_blocked_connection_is_named_before_what_it_caused() -> None:
    exc = _chained(urllib.error.URLError(DownloadBlocked("download.pytorch.org:443")), hide=False)
    exc.__context__ = _raised(OfflineModeIsEnabled("offline"))  # an earlier failure, further down the chain
    reason = download_attempt(exc)
    assert reason is not None and "failed offline: blocked a connection to download.pytorch.org:443." in reason


@pytest.mark.parametrize(
    "make",
    [
        lambda: ValueError("pretrained weights are missing a key"),
        lambda: KeyError("url"),
        lambda: FileNotFoundError(2, "No such file or directory", "config.yaml"),
        lambda: CheckError("building the model with factory m:f failed: TypeError: bad"),
    ],
)
def test_other_failures_are_not_downloads(make: Callable[[], BaseException]) -> None:
    assert download_attempt(_raised(make())) is None
    assert download_attempt(_chained(make(), hide=True)) is None


def test_a_cyclic_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert download_attempt(first) is None


def _all_links(exc: BaseException) -> list[BaseException]:
    links = list(exception_chain(exc))
    return links + [link.reason for link in links if isinstance(getattr(link, "reason", None), BaseException)]
