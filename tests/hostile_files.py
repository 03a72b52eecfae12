"""Files made hostile the ways an attacker or a tired operator would, for the tests of the
readers that take a path: a FIFO, a sparse gigabyte, a symbolic link, deep nesting, a value
of the wrong type, bytes that are not UTF-8. What a case writes is in the reader's format
(`Format`); the cases that do not depend on it are made the same way for every reader."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GIGABYTE = 1 << 30
CASES = ("fifo", "gigabyte", "symlink", "nested 600", "wrong type", "not utf-8")


@dataclass(frozen=True)
class Format:
    """What the cases that depend on a reader's format write."""

    nested: Callable[[int], str]  # a document nested this many levels deep
    wrong_type: str  # a well-formed document whose value has the wrong type
    not_utf8: bytes  # a document with bytes that are not UTF-8


def plant(path: Path, case: str, form: Format, link_to: Path) -> Path:
    """``path`` (what was there removed) made hostile the way ``case`` says: one of `CASES`,
    or ``nested N``; a link points at ``link_to``."""
    if path.is_symlink() or path.exists():
        path.unlink()
    if case == "fifo":
        os.mkfifo(path)  # nobody writes: a plain open() for reading blocks for ever
    elif case == "gigabyte":
        with path.open("wb") as handle:
            handle.truncate(GIGABYTE)  # sparse: nothing on disk, everything to refuse
    elif case == "symlink":
        path.symlink_to(link_to)
    elif case.startswith("nested ") and case.split()[1].isdigit():
        path.write_text(form.nested(int(case.split()[1])))
    elif case == "wrong type":
        path.write_text(form.wrong_type)
    elif case == "not utf-8":
        path.write_bytes(form.not_utf8)
    else:
        raise AssertionError(case)
    return path
