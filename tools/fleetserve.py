"""``outpost fleet serve`` as a child process on a free loopback port, answering ``/healthz``:
the collector the collector tests, the collector benchmark and the demo run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import urllib3

from tools.postgres import free_port


def start(
    store: Sequence[str],
    repo: Path,
    trust: Path,
    *extra: str,
    log: Callable[[int], Path],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    ready: Callable[[urllib3.BaseHTTPResponse], bool] = lambda answer: True,
    seconds: float = 30.0,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The collector over ``store`` (``--db PATH`` or ``--url URL``), its port and log, once
    ``/healthz`` answers 200 and ``ready`` accepts the answer. ``log`` names the file for its
    output from the port. Raises :class:`RuntimeError` with that output if it exits first or
    does not answer within ``seconds`` (then it is killed)."""
    port = free_port()
    output = log(port)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "fleet",
            "serve",
            *store,
            "--repo",
            str(repo),
            "--trust",
            str(trust),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the collector exited: {output.read_text()}")
        try:
            answer = urllib3.request(
                "GET", f"http://127.0.0.1:{port}/healthz", timeout=1.0, retries=False
            )
            if answer.status == 200 and ready(answer):
                return process, port, output
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the collector did not start: {output.read_text()}")
