"""The signature worker: a small process that answers `check_signed_data` for batches of reports.

`verifier.VerifierPool` starts it as a fresh interpreter (``python -c``, see
`COMMAND`) and talks to it over its standard input and output. It imports this
module, `reconciler.core.trust.sshsig` and `cryptography`, nothing else: no web
framework, no database driver, no repository. Its memory is that of an
interpreter with `cryptography` loaded and one verifying key per node it has
seen (`sshsig._verifier`'s cache), whatever the serving process holds.

Messages, both ways a count then length-prefixed fields (``>I``, big-endian):

- request: ``count``, then per item its key blob, signature algorithm, signature
  and signed data (`SignedData`, in that order);
- answer: ``count``, then per item `NONE` (verified) or the length and UTF-8 text
  of the reason it did not verify.

No pickle: the worker and the serving process read nothing but these fields.
End of input (the serving process closed the pipe or died) ends the worker.
"""

from __future__ import annotations

import signal
import struct
import sys
from typing import IO

from reconciler.core.errors import VerificationError
from reconciler.core.trust.sshsig import SignedData, check_signed_data

__all__ = ["NONE", "check_many", "main", "read_answers", "write_request"]

_U32 = struct.Struct(">I")
NONE = 0xFFFFFFFF
"""The length that stands for "verified" (no reason) in an answer."""
MAX_FIELD = 1 << 24
"""A field longer than this is a broken stream, not a report (reports are capped far lower)."""


def check_many(items: list[SignedData]) -> list[str | None]:
    """`check_signed_data` for each item: None when it verified, else the reason it did not."""
    answers: list[str | None] = []
    for item in items:
        try:
            check_signed_data(item)
        except VerificationError as exc:
            answers.append(str(exc))
        else:
            answers.append(None)
    return answers


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the other end of the signature worker's pipe is gone")
    return data


def _read_u32(stream: IO[bytes]) -> int:
    (value,) = _U32.unpack(_read_exact(stream, 4))
    return int(value)


def _read_field(stream: IO[bytes]) -> bytes:
    size = _read_u32(stream)
    if size > MAX_FIELD:
        raise ValueError(f"a field of {size} bytes in the signature worker's stream")
    return _read_exact(stream, size)


def write_request(stream: IO[bytes], items: list[SignedData]) -> None:
    parts = [_U32.pack(len(items))]
    for item in items:
        for data in (item.key_blob, item.algorithm.encode("utf-8"), item.signature, item.data):
            parts += (_U32.pack(len(data)), data)
    stream.write(b"".join(parts))
    stream.flush()


def read_request(stream: IO[bytes]) -> list[SignedData] | None:
    """The next batch, or None at the end of input."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) != 4:
        raise EOFError("the signature worker's input ended inside a request")
    (count,) = _U32.unpack(head)
    items = []
    for _ in range(count):
        blob, algorithm, signature, data = (_read_field(stream) for _ in range(4))
        items.append(SignedData(blob, algorithm.decode("utf-8", "replace"), signature, data))
    return items


def write_answers(stream: IO[bytes], answers: list[str | None]) -> None:
    parts = [_U32.pack(len(answers))]
    for answer in answers:
        if answer is None:
            parts.append(_U32.pack(NONE))
        else:
            text = answer.encode("utf-8")
            parts += (_U32.pack(len(text)), text)
    stream.write(b"".join(parts))
    stream.flush()


def read_answers(stream: IO[bytes], expected: int) -> list[str | None]:
    """One answer per item sent; EOFError when the worker died, ValueError when it garbled."""
    count = _read_u32(stream)
    if count != expected:
        raise ValueError(f"the signature worker answered {count} items, {expected} were sent")
    answers: list[str | None] = []
    for _ in range(count):
        size = _read_u32(stream)
        if size == NONE:
            answers.append(None)
        elif size > MAX_FIELD:
            raise ValueError(f"an answer of {size} bytes from the signature worker")
        else:
            answers.append(_read_exact(stream, size).decode("utf-8", "replace"))
    return answers


def main() -> None:
    """Answer batches from standard input until it ends."""
    # Ctrl-C in a terminal reaches the whole process group: the serving process decides
    # when to stop, and this worker stops when its input ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (items := read_request(stdin)) is not None:
        write_answers(stdout, check_many(items))
