"""Files written whole or not at all: a kill at any instant leaves the old bytes or the new.

The way python-tuf persists metadata: a temporary file in the same directory, ``fsync``,
``os.replace``, then ``fsync`` of the directory. Used by the node's state, its bundle inbox,
the secrets' key files and the fleet's status store.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old bytes or the new, never a mix.

    ``durable=False`` leaves out both ``fsync`` calls, for a file rewritten every few
    minutes that nothing depends on after a power cut (a status, metrics): readers still
    see the old bytes or the new, but a power cut may lose the new ones (or, on a file
    system that does not write a renamed file's data first, leave it empty).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_bytes(value: Any) -> bytes:
    """The form `write_json` writes: indented, keys sorted, a final newline."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    atomic_write(path, json_bytes(value), durable=durable)


def write_into_folder(folder: Path, name: str, data: bytes) -> None:
    """Atomically write ``folder/name`` through a handle on ``folder`` that follows no link.

    The folder is made if missing. One that is a symlink (or not a folder) raises OSError
    with ``strerror`` saying so: a removable medium cannot redirect the write.
    """
    with contextlib.suppress(FileExistsError):
        folder.mkdir(parents=True)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(exc.errno, "it is a symbolic link or not a folder") from None
        raise
    try:
        write_at(dir_fd, name, data)
    finally:
        os.close(dir_fd)


def write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Atomic write of ``name`` inside the folder handle ``dir_fd`` (temp, fsync, rename,
    fsync of the folder); the temporary file is opened without following a link."""
    temp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
