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
  in the serving process, and the worker is started again.
- **Small workers, and nothing else beside them.** A worker is a fresh
  interpreter that imports `sigworker` (the check and its message format) and
  `cryptography` only: about 25 MB, whatever the serving process holds, and
  no copy of its threads, sockets or database connections. It is a plain child
  process with two pipes (`subprocess`), not `multiprocessing`: no pickles
  either way, and no ``resource_tracker`` process (15 MB, started by the first
  semaphore a `multiprocessing` pool creates). Each worker has one thread in
  the serving process that writes its batches and reads its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import subprocess
import threading
from typing import IO

from reconciler.core.trust.sshsig import SignedData
from reconciler.fleet._child import python_running
from reconciler.fleet.collector.sigworker import check_many, read_answers, write_request

__all__ = ["VerifierPool", "check_many", "worker_command"]

log = logging.getLogger("outpost.collector")

_Waiting = list[tuple[SignedData, "asyncio.Future[str | None]"]]
_Job = tuple[_Waiting, asyncio.AbstractEventLoop]


def worker_command() -> list[str]:
    """A fresh interpreter running `sigworker.main`, from the same copy of the package."""
    return python_running("reconciler.fleet.collector.sigworker", "main")


class _Worker:
    """One worker process and the thread that talks to it."""

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()  # one exchange with the process at a time
        self._process = _start()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def submit(self, part: _Waiting, loop: asyncio.AbstractEventLoop) -> None:
        self._jobs.put((part, loop))

    def answers(self, items: list[SignedData]) -> list[str | None]:
        """The worker's answers; if it died (or garbled), these items are checked here and
        the worker is started again."""
        with self._lock:
            process = self._process
            try:
                write_request(_pipe(process.stdin), items)
                return read_answers(_pipe(process.stdout), len(items))
            except (OSError, EOFError, ValueError) as exc:
                log.error(
                    "signature worker failed; starting it again",
                    extra={"error": str(exc) or type(exc).__name__, "pid": process.pid},
                )
                _stop(process)
                self._process = _start()
        return check_many(items)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            part, loop = job
            answers = self.answers([signed for signed, _ in part])
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_deliver, part, answers)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)
        with self._lock:
            _stop(self._process)


def _start() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
    )


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:  # never: both are pipes (`_start`)
        raise OSError("the signature worker has no pipe")
    return stream


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Close its input (it exits at the end of input), then kill it if it does not."""
    for stream in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class VerifierPool:
    """``workers`` processes checking signatures for one event loop's requests."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a verifier pool needs at least one worker")
        self.workers = workers
        self._workers = [_Worker(f"outpost-verifier-{n}") for n in range(workers)]
        self._waiting: _Waiting = []
        self._flushing = False

    def warm(self) -> None:
        """Wait until each worker has imported the verifier (one empty exchange)."""
        for worker in self._workers:
            worker.answers([])

    def pids(self) -> list[int]:
        """The workers' process ids (the benchmark measures them, a test kills them)."""
        return [worker.pid for worker in self._workers]

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
        if not waiting:
            return
        size = -(-len(waiting) // self.workers)
        for worker, start in zip(self._workers, range(0, len(waiting), size), strict=False):
            worker.submit(waiting[start : start + size], loop)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


def _deliver(part: _Waiting, answers: list[str | None]) -> None:
    for (_, answer), problem in zip(part, answers, strict=True):
        if not answer.done():  # the request was cancelled (client gone)
            answer.set_result(problem)
