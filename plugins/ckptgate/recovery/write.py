"""Write a recovered sidecar atomically, never over an existing file, safely when two runs race.

The JSON goes to a temporary file in the same folder, is flushed and fsynced, then hard-linked to its
final name: ``link`` fails if the name exists (no overwrite, no lost update), and the name only ever
points at a complete file (a crash leaves no sidecar, or a whole one). The temporary name is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ckptgate.errors import CheckError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_sidecar(path: Path, document: dict[str, Any]) -> bool:
    """Write ``document`` as JSON at ``path``; False when ``path`` already exists (left untouched)."""
    if os.path.lexists(path):
        return False
    try:
        data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:  # a value JSON cannot hold (bytes, a set...), or a cycle
        raise CheckError(f"cannot write {path.name}: the config is not JSON data ({exc})") from None
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckError(f"cannot write {path.name} in {path.parent}: {exc.strerror or exc}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
        except OSError as exc:  # a full disk, an I/O error: the sidecar was never linked
            raise CheckError(f"cannot write {path.name} in {path.parent}: {exc.strerror or exc}") from None
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False  # another run wrote it first: theirs stands
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise CheckError(f"cannot write {path}: {exc.strerror or exc}") from None
            return _write_exclusive(path, data)  # a filesystem without hard links
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):  # gone already, or not ours to remove any more: never fatal
            os.unlink(temporary)


def _write_exclusive(path: Path, data: bytes) -> bool:
    """Fallback: create the file exclusively and write it (a crash here can leave a partial file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise CheckError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # ours alone (O_EXCL): remove the partial file rather than leave it
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise CheckError(f"cannot write {path}: {exc.strerror or exc}") from None
    return True
