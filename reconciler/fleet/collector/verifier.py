"""Signature checks of reports in worker processes, so that a collector uses more than one core.

Checking a report's signature (`reconciler.core.trust.sshsig.check_signed_data`:
one Ed25519 verification, about 100 µs) holds the interpreter lock, and so
does everything else a collector does per report: in one process, verifying
and serving take turns on one core. `VerifierPool` hands that one step to
worker processes; everything before it (the envelope's shape, the site's keys
from the verified repository, the namespace, the hash of the payload:
`reconciler.core.report.check_envelope`) and after it (rate limit, store)
stays in the serving process.

- **The same check, elsewhere.** A worker runs `check_signed_data` on the key
  blob, signature and data the serving process prepared, and answers with its
  error message or None. The key is the one the verified repository lists for
  the site the report names; the worker trusts nothing and decides nothing else.
- **Batched per turn of the event loop**: the reports that reach the check in
  one turn go to the workers in one message each way (`flush`).
- **A worker that dies costs nothing but time**: the batch it held is checked
  in the serving process, and the pool is started again.
- Workers are started with ``spawn`` (no copy of the server's threads, sockets
  or database connections) when the collector starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from reconciler.core.errors import VerificationError
from reconciler.core.trust.sshsig import SignedData, check_signed_data

__all__ = ["VerifierPool", "check_many"]

log = logging.getLogger("outpost.collector")


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


_Waiting = list[tuple[SignedData, "asyncio.Future[str | None]"]]


class VerifierPool:
    """``workers`` processes checking signatures for one event loop's requests."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a verifier pool needs at least one worker")
        self.workers = workers
        self._pool = self._start()
        self._waiting: _Waiting = []
        self._flushing = False

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def warm(self) -> None:
        """Start the workers now (they import the verifier once), not at the first report."""
        for _ in range(self.workers):
            self._pool.submit(check_many, []).result(timeout=120)

    async def check(self, signed: SignedData) -> str | None:
        """`check_signed_data`'s answer for ``signed``: None (verified) or the reason."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()
        self._waiting.append((signed, answer))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self.flush, loop)
        return await answer

    def flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what waits, split over the workers."""
        self._flushing = False
        waiting, self._waiting = self._waiting, []
        size = -(-len(waiting) // self.workers)
        for start in range(0, len(waiting), size):
            part = waiting[start : start + size]
            try:
                sent = self._pool.submit(check_many, [signed for signed, _ in part])
            except (BrokenProcessPool, RuntimeError) as exc:
                self._restart(exc)
                _deliver(part, check_many([signed for signed, _ in part]))
                continue
            sent.add_done_callback(self._on_done(loop, part))

    def _on_done(
        self, loop: asyncio.AbstractEventLoop, part: _Waiting
    ) -> Callable[[Future[list[str | None]]], None]:
        """Called in the pool's thread: hand the answers back to the event loop."""

        def done(sent: Future[list[str | None]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(self._answered, part, sent)

        return done

    def _answered(self, part: _Waiting, done: Future[list[str | None]]) -> None:
        try:
            answers = done.result()
        except Exception as exc:  # a worker died: check this batch here, start the pool again
            self._restart(exc)
            answers = check_many([signed for signed, _ in part])
        _deliver(part, answers)

    def _restart(self, exc: BaseException) -> None:
        log.error("signature worker failed; restarting the pool", extra={"error": str(exc)})
        with contextlib.suppress(Exception):
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _deliver(part: _Waiting, answers: list[str | None]) -> None:
    for (_, answer), problem in zip(part, answers, strict=True):
        if not answer.done():  # the request was cancelled (client gone)
            answer.set_result(problem)
