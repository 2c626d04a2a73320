"""Building a model never downloads: a checkpoint holds its weights, and a gate must not depend on the network.

Model code often fetches pretrained weights in ``__init__`` (``timm.create_model(..., pretrained=True)``,
``torch.hub``, Hugging Face ``from_pretrained``). On a CI runner without network that hangs or fails far
from the cause, and with network it downloads gigabytes only to overwrite them with the checkpoint's
weights. While :func:`no_downloads` is active, every internet connection attempt raises
:class:`DownloadBlocked` at once and the common hubs are told they are offline; :func:`download_attempt`
then turns the resulting failure into one line a user can act on.

The block is process-wide (hubs download from thread pools), covers only internet sockets (AF_INET,
AF_INET6): Unix-domain sockets and pipes, which pytest-xdist talks over, and sockets opened before, keep
working.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ckptgate.errors import CheckError, exception_chain, first_line, traceback_frames

T = TypeVar("T")

# Read by huggingface_hub, transformers and datasets: with them set, a hub serves its local cache only.
# (huggingface_hub reads its variable when first imported; an already imported one is stopped by the socket
# block instead.)
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

INTERNET_FAMILIES = tuple(getattr(socket, name) for name in ("AF_INET", "AF_INET6") if hasattr(socket, name))

# Exception class names of download libraries that mean "no network" (huggingface_hub's
# OfflineModeIsEnabled and LocalEntryNotFoundError, requests' and httpx's connection errors, urllib3's
# name resolution errors), recognised without importing them.
_OFFLINE_NAME_PARTS = ("Offline", "LocalEntryNotFound", "ConnectionError", "ConnectError", "NameResolution")


class DownloadBlocked(ConnectionError):
    """A network connection was attempted while building a model. An ``OSError`` (a ``ConnectionError``), so
    libraries that handle network failures treat it as being offline."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"network access to {address} was attempted while building the model; ckptgate builds models "
            "offline: the checkpoint holds the weights, nothing needs downloading"
        )
        self.address = address


@dataclass(eq=False)
class BlockedAttempts:
    """The connections refused while a :func:`no_downloads` block was active (a library may swallow them)."""

    addresses: list[str] = field(default_factory=list)


@dataclass
class _Saved:
    """What :func:`no_downloads` replaced, to put back exactly: attributes (``None``: absent) and variables."""

    attributes: dict[tuple[Any, str], Any]
    environment: dict[str, str | None]


_lock = threading.RLock()
_active: list[BlockedAttempts] = []
_saved: _Saved | None = None


@contextmanager
def no_downloads() -> Iterator[BlockedAttempts]:
    """Block internet connections and set the hubs' offline variables for the duration; everything is
    restored on exit, also when the body raises. Nested and concurrent uses share one block, lifted when
    the last one exits."""
    attempts = BlockedAttempts()
    _enter(attempts)
    try:
        yield attempts
    finally:
        _exit(attempts)


def build_offline(build: Callable[[], T]) -> T:
    """``build()`` under :func:`no_downloads`; when it fails because it tried to download, a CheckError whose
    first line says so, followed by the original message."""
    with no_downloads():
        try:
            return build()
        except Exception as exc:
            reason = download_attempt(exc)
            if reason is None:
                raise
            raise CheckError(f"{reason}\n  {exc}") from exc


def download_attempt(exc: BaseException) -> str | None:
    """One line saying that building the model tried to download and failed offline, with what to do; None
    when nothing in ``exc``'s cause/context chain is a failed download."""
    failures = [found for link in _links(exc) if (found := _download_failure(link)) is not None]
    if not failures:
        return None
    blocked = [failure for failure in failures if failure.startswith("blocked")]
    return (
        f"building the model tried to download (pretrained weights?) and failed offline: {(blocked or failures)[0]}. "
        "Set `pretrained: false` in the model config (timm encoders and most backbones take it; the checkpoint "
        f"holds the trained weights) or put the weights in the local cache ({_cache_dirs()})"
    )


def _enter(attempts: BlockedAttempts) -> None:
    global _saved
    with _lock:
        if not _active:
            _saved = _install()
        _active.append(attempts)


def _exit(attempts: BlockedAttempts) -> None:
    global _saved
    with _lock:
        _active.remove(attempts)
        if not _active and _saved is not None:
            _restore(_saved)
            _saved = None


def _install() -> _Saved:
    replacements: dict[tuple[Any, str], Any] = {
        (socket.socket, "connect"): _guard_socket_method(socket.socket.connect),
        (socket.socket, "connect_ex"): _guard_socket_method(socket.socket.connect_ex),
        (socket, "create_connection"): _refuse_call(socket.create_connection),
        (socket, "getaddrinfo"): _refuse_call(socket.getaddrinfo),
    }
    saved = _Saved({key: vars(key[0]).get(key[1]) for key in replacements}, {})
    for (owner, name), replacement in replacements.items():
        setattr(owner, name, replacement)
    for name, value in OFFLINE_ENVIRONMENT.items():
        saved.environment[name] = os.environ.get(name)
        os.environ[name] = value
    return saved


def _restore(saved: _Saved) -> None:
    for (owner, name), original in saved.attributes.items():
        if original is None:  # inherited (socket.socket.connect comes from _socket.socket): remove our shadow
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    for name, value in saved.environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _guard_socket_method(original: Callable[..., Any]) -> Callable[..., Any]:
    """``socket.connect``/``connect_ex`` that refuse internet addresses and pass everything else through."""

    @functools.wraps(original)
    def guarded(self: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
        if self.family in INTERNET_FAMILIES:
            _refuse(address)
        return original(self, address, *args, **kwargs)

    return guarded


def _refuse_call(original: Callable[..., Any]) -> Callable[..., Any]:
    """``create_connection``/``getaddrinfo``: only ever about internet addresses, so always refused."""

    @functools.wraps(original)
    def refused(host: Any, *args: Any, **kwargs: Any) -> Any:
        _refuse(host if isinstance(host, tuple) else (host, args[0] if args else kwargs.get("port")))

    return refused


def _refuse(address: Any) -> None:
    shown = f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else repr(address)
    with _lock:
        for attempts in _active:
            attempts.addresses.append(shown)
    raise DownloadBlocked(shown)


def _links(exc: BaseException) -> Iterator[BaseException]:
    """The cause/context chain, plus the exceptions urllib keeps as an error's ``reason``."""
    for link in exception_chain(exc):
        yield link
        reason = getattr(link, "reason", None)
        if isinstance(link, urllib.error.URLError) and isinstance(reason, BaseException):
            yield from exception_chain(reason)


def _download_failure(exc: BaseException) -> str | None:
    """What ``exc`` says about a failed download, or None when it is about something else."""
    if isinstance(exc, DownloadBlocked):
        return f"blocked a connection to {exc.address}"
    names = [cls.__name__ for cls in type(exc).__mro__]
    offline = any(part in name for name in names for part in _OFFLINE_NAME_PARTS)
    if offline or isinstance(exc, urllib.error.URLError | socket.gaierror) or _raised_in_torch_hub(exc):
        return f"{type(exc).__name__}: {first_line(' '.join(str(exc).split()), 160)}"
    return None


def _raised_in_torch_hub(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and any(frame.module == "torch.hub" for frame in traceback_frames(exc))


def _cache_dirs() -> str:
    """Where torch hub and Hugging Face look for weights before downloading."""
    import torch.hub

    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    hf_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub")
    return f"torch hub: {os.path.join(torch.hub.get_dir(), 'checkpoints')}; Hugging Face: {hf_cache}"
