"""The collector under load: signed reports from 10,000 synthetic sites, sent at once over loopback.

What it measures, in one run:

- **verified and stored per second**: 10,000 signed reports POSTed concurrently (256 keep-alive
  connections from an asyncio client in this process, as many nodes behind a proxy would
  be) to ``outpost fleet serve`` on SQLite, then on PostgreSQL (a durable server: fsync on,
  started here with initdb/pg_ctl), once the collector has done its start-up work (verified
  the repository and computed the head's schedule for the dashboard: asked for, and timed,
  before the flood);
- **the peer**: a plain psycopg upsert of the same 10,000 rows into the same PostgreSQL
  schema, batched 500 per transaction, without HTTP or verification — the ratio says what
  the HTTP, JSON and Ed25519 work costs on top of the database; and a **second peer**, the
  same upsert with each report's signature checked first (one process, no HTTP: what no
  verifying collector can skip);
- ``outpost fleet status`` over the 10,000 sites (the whole command, Python start included);
- the collector's CPU time and peak memory: its serving process's peak RSS (``VmHWM``) and
  its child processes' one by one (the signature worker), and its whole process tree
  sampled every 20 ms (`TreeSampler`, as ``bench/validate_fleet.py`` samples its own): the
  peak sum of PSS (a page shared by k processes counts 1/k, from ``smaps_rollup``) and of
  RSS, during ingest and during start-up, where the head's schedule child comes and goes;
- **the dashboard** over the same 10,000 sites (SQLite store): the overview and the page of
  a fleet-wide change, next to the JSON API's answers over the same data as the peer
  (``/api/v1/sites`` and ``/api/v1/changes/C``); the change page's first view, also as the
  very first request to a restarted collector, and the time it takes to compute the
  change's schedule (what a first view waits for when no collector computed it ahead).

Goals (issue 16): ≥ 2,000 reports/s and ≥ 0.5× the plain upsert on 2 cores; status ≤ 300 ms;
RSS ≤ 150 MB (held here to the whole process tree: serving process and children, summed).
10,000 sites every 5 minutes is 33 reports/s. Dashboard (issue 17): overview and change page
≤ 500 ms each for 10,000 sites.

The synthetic repository has 10,000 sites with one node key each in one fleet with waves,
signed by one root key; the collector verifies it and reads every site before serving.

Measured 2026-12-03 on the 2-core machine shared with other work (load average 5 to 9, so
Ed25519 alone ran at 3,750-8,250/s instead of about 10,500/s); three runs of this script
alternated with three of the version before this one (before → after, wall; CPU where noted):

- reports/s, SQLite: 1,114, 954, 1,706 → 1,767, 1,213, 2,084; PostgreSQL: 1,067, 912,
  1,506 → 1,613, 1,364, 1,278. Per collector CPU-second on PostgreSQL (its signature
  worker included): 2,020, 1,873, 2,160 → 2,825, 2,899, 2,924. The wall rate follows the
  machine's load more than the code; 2,000/s on PostgreSQL was not reached here.
- ratio to the plain upsert: 0.04-0.12 → 0.06-0.09 (the peer itself ran at 8,700-25,000/s);
  to the verifying upsert: 0.49-0.66. The 0.5 goal against the plain upsert is out of reach
  on 2 cores: Ed25519 alone is 0.27-0.43 of it per core, before HTTP, JSON or the database.
- ``outpost fleet status``, SQLite: 1,467, 791, 477 ms (422, 434, 383 ms CPU) → 388, 230,
  298 ms (222, 198, 212 ms CPU); PostgreSQL: 1,002, 757, 621 ms (501, 491, 474 ms CPU) →
  730, 703, 635 ms (348, 320, 319 ms CPU), of which importing psycopg is about 100 ms.
  Nine alternated runs each at load 6.9: 828 → 538 ms wall, 540 → 346 ms CPU.
- the change page's first view: 4,536, 4,864, 2,975 ms → 180, 399, 306 ms (computed ahead
  at start, ready 3.5-5 s after the repository is verified), 495, 386, 224 ms as the
  first request to a restarted collector (kept in the store); computing it cold takes
  3.2-5.2 s. Warm: overview 529, 389, 212 → 352, 350, 263 ms; change page 342, 276, 358 →
  317, 402, 339 ms.
- peak RSS: serving process 106 → 114 MB during ingest; its child processes 56 MB (the
  signature worker 41 MB, multiprocessing's resource tracker 15 MB). The schedule's child
  (about 120 MB for 10,000 sites, for seconds per new head) is gone before the flood;
  before, that computation ran in the serving process, which then stayed at 160 MB (115
  MB now).

Memory (issue 16: "collector peak RSS ≤ 150 MB"), measured 2026-12-03 16:00 UTC (load 2.9
to 4.2, other benchmarks running), two runs of this script alternated with two of
0040033 (the version before: a spawn ProcessPoolExecutor for the signature worker, the
repository verified and read in the serving process), SQLite / PostgreSQL:

- serving process, peak RSS: 102-103 / 111 MB → 65 / 75 MB. Where it went: Python and the
  serving imports (uvicorn, Starlette, Jinja2, the dashboard) are 41 MB (psycopg 8 more);
  the repository's verification and two documents per site, parsed, left 35-45 MB more
  (libgit2 11 MB, the parse's pages the allocator kept, the view of 10,000 sites 14 MB).
  Now the view is compact (5 MB: slots, labels, waves and machines shared between sites,
  node keys built per report) and a new head is verified and read in a child process that
  sends the view back a site a line; the serving process never loads libgit2 or YAML.
- its children during ingest: 54 MB (multiprocessing's resource tracker 15, the spawned
  signature worker 39-40) → 34 MB (a plain child on two pipes, `sigworker`: 25 MB of
  interpreter and cryptography, 9 MB of cached keys for 10,000 nodes; no resource tracker).
- the process tree during ingest, peak sum of RSS: 157, 157 / 165, 165 MB → 99, 99 / 109,
  109 MB; of PSS: 125, 125 / 124, 124 MB → 73, 72 / 79, 79 MB. The goal holds on RSS summed.
- while the head's schedule is computed (at start and once per new head, for 2-6 s): a
  child of 95 MB (``ci.schedule`` over 10,000 sites at two revisions; 97-98 MB before)
  beside the serving process and the worker: RSS summed 231-245 → 172-183 MB, PSS summed
  173-180 → 126-133 MB. Summed RSS counts each shared library once per process; PSS,
  what the tree costs the machine, stays under 150 MB then too. The repository child
  (70 MB for 10,000 sites) runs before it, never beside it.
- unchanged: reports per collector CPU-second 3,236-3,571 → 3,413-3,861; ``outpost fleet
  status`` CPU 187-191 / 270-288 ms → 184-193 / 295-297 ms. Reports/s on PostgreSQL
  follow the load (2,501, 2,790 → 1,607, 1,241 in these runs; three more alternated
  runs of the collector alone on PostgreSQL at load 4.6-6.0: 1,736, 2,434, 1,623 →
  2,325, 1,787, 1,466).

    python bench/collector.py [--sites N] [--connections C] [--dashboard-only]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from reconciler.core.report import seal  # noqa: E402
from reconciler.core.trust.sshsig import public_key_of  # noqa: E402
from tools import fleetserve, postgres  # noqa: E402
from tools.proctree import kib, tree_pids  # noqa: E402
from tools.signedfleet import make_key  # noqa: E402

SITE_YAML = """apiVersion: outpost/v1
kind: Site
metadata:
  name: {site}
  labels: {{country: de, format: supermarket, region: eu-central}}
spec:
  type: store
  timezone: Europe/Berlin
  fleets: [bench]
  connectivity: online
"""
HARDWARE_YAML = """apiVersion: outpost/v1
kind: Hardware
metadata:
  name: {site}
spec:
  nodes:
    - name: edge-1
      identity: {{machineId: {machine}}}
      publicKey: "{key}"
      arch: amd64
      cpu: 8
      memory: 32Gi
"""
FLEET_YAML = """apiVersion: outpost/v1
kind: Fleet
metadata:
  name: bench
spec:
  selector: {matchLabels: {region: eu-central}}
  waves:
    - {name: canary, sites: [s00000, s00001]}
    - {name: early, percent: 10, soak: 24h}
    - {name: all, soak: 48h}
"""


def git(repo: Path, *args: str, when: datetime | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_fleet(
    work: Path, count: int
) -> tuple[Path, Path, list[tuple[str, Ed25519PrivateKey]], str, str]:
    """The signed fleet, its trust root, each site's key, and (base, change): a fleet-wide
    change committed three days ago on top of the first commit."""
    keys = work / "keys"
    root = make_key(keys, "root")
    public = root.with_suffix(".pub").read_text().split()
    trust = keys / "allowed_signers"
    trust.write_text(f'root@example.com namespaces="git" {public[0]} {public[1]}\n')
    repo = work / "fleet"
    (repo / "fleets").mkdir(parents=True)
    (repo / "fleets" / "bench.yaml").write_text(FLEET_YAML)
    sites = []
    for index in range(count):
        site = f"s{index:05d}"
        key = Ed25519PrivateKey.generate()
        folder = repo / "sites" / site
        folder.mkdir(parents=True)
        (folder / "site.yaml").write_text(SITE_YAML.format(site=site))
        (folder / "hardware.yaml").write_text(
            HARDWARE_YAML.format(
                site=site,
                machine=f"{index:032x}",
                key=public_key_of(key, comment=f"bench@{site}").line(),
            )
        )
        sites.append((site, key))
    git(repo, "init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "Bench"),
        ("user.email", "root@example.com"),
        ("gpg.format", "ssh"),
        ("user.signingkey", str(root)),
    ):
        git(repo, "config", key, value)
    git(repo, "add", "-A")
    now = datetime.now(UTC)
    git(repo, "commit", "-q", "-S", "-m", "bench fleet", when=now - timedelta(days=4))
    base = git(repo, "rev-parse", "HEAD")
    (repo / "fleets" / "bench.yaml").write_text(
        FLEET_YAML.replace("spec:\n", "spec:\n  description: every store of the bench\n")
    )
    git(
        repo,
        "commit",
        "-q",
        "-S",
        "-am",
        "bench: a fleet-wide change",
        when=now - timedelta(days=3),
    )
    return repo, trust, sites, base, git(repo, "rev-parse", "HEAD")


def reports(
    sites: list[tuple[str, Ed25519PrivateKey]], now: datetime, base: str, change: str
) -> list[bytes]:
    """Six sites in ten run the change; the others wait for it (their wave's soak)."""
    out = []
    for index, (site, key) in enumerate(sites):
        runs = change if index % 10 < 6 else base
        status = {
            "apiVersion": "outpost/v1",
            "kind": "SiteStatus",
            "site": site,
            "time": now.isoformat(),
            "outcome": "applied" if runs == change else "waiting",
            "applied": {"revision": runs, "at": now.isoformat()},
            "lastGood": runs,
            "fetched": {"revision": change, "at": now.isoformat()},
            "sourceLastAnswered": now.isoformat(),
            "pending": None
            if runs == change
            else {"revision": change, "reason": "wave 'all' soaks until 48h after 'early'"},
            "health": "healthy",
            "drift": {"objects": 0, "corrected": 0},
            "lastError": None,
            "warnings": [],
            "failedRevisions": [],
            "inventory": 12,
        }
        out.append(seal(status, key).to_bytes())
    return out


def start_collector(
    work: Path, store: list[str], repo: Path, trust: Path
) -> tuple[subprocess.Popen[bytes], int, float]:
    started = time.perf_counter()
    try:
        process, port, _ = fleetserve.start(
            store,
            repo,
            trust,
            *("--refresh", "3600"),
            log=lambda port: work / f"collector-{port}.log",
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            seconds=600,  # a generous bound: loading a large fleet is part of what is timed
        )
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    return process, port, time.perf_counter() - started


async def _send_all(port: int, bodies: list[bytes], connections: int) -> dict[int, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    codes: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                writer.write(
                    b"POST /api/v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                codes[status] = codes.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return codes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the collector's signature workers, and the
    dashboard's prediction while it runs)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class TreeSampler:
    """The collector's process tree every 20 ms, as ``bench/validate_fleet.py`` samples its
    own: the sum of PSS (``/proc/PID/smaps_rollup``; a page shared by k processes counts
    1/k: what the tree costs the machine) and the sum of RSS (a shared page counted in
    every process that maps it), each at its peak, per phase; and each process's own peak
    (``VmHWM``) while it was alive, so that a child that came and went (the schedule's)
    is seen too. The tree is the bench's children running ``fleet serve``, and theirs."""

    def __init__(self) -> None:
        self.phase = "start"
        self.peaks: dict[str, tuple[float, float]] = {}
        self.hwm: dict[int, tuple[float, str]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        served = [pid for pid in tree_pids(os.getpid())[1:] if b"fleet\0serve" in _cmdline(pid)]
        return [pid for root in served for pid in tree_pids(root)]

    def _run(self) -> None:
        while not self._done.is_set():
            pids = self._tree()
            pss = sum(kib(p, "smaps_rollup", "Pss:") for p in pids) / 1024
            rss = sum(kib(p, "status", "VmRSS:") for p in pids) / 1024
            old_pss, old_rss = self.peaks.get(self.phase, (0.0, 0.0))
            self.peaks[self.phase] = (max(pss, old_pss), max(rss, old_rss))
            for pid in pids:
                hwm = kib(pid, "status", "VmHWM:") / 1024
                if hwm > self.hwm.get(pid, (0.0, ""))[0]:
                    self.hwm[pid] = (hwm, _role(_cmdline(pid)))
            self._done.wait(0.02)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _role(cmdline: bytes) -> str:
    for needle, role in (
        (b"fleet\0serve", "serving process"),
        (b"sigworker", "signature worker"),
        (b"collector.fleetview", "repository child"),
        (b"prediction", "schedule child"),
        (b"resource_tracker", "multiprocessing resource tracker"),
        (b"spawn_main", "multiprocessing child"),
    ):
        if needle in cmdline:
            return role
    return cmdline.replace(b"\0", b" ")[:60].decode("utf-8", "replace")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def add_token(store: list[str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "fleet", "token", "add", "bench", *store],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.strip()


def run_collector(
    label: str,
    work: Path,
    store: list[str],
    repo: Path,
    trust: Path,
    bodies: list[bytes],
    connections: int,
    change: str,
) -> dict[str, float]:
    """The flood starts once the collector is done with its start-up work: verifying the
    repository, and the head's schedule for the dashboard (asked for first, and timed)."""
    token = add_token(store)
    sampler = TreeSampler()
    process, port, start_seconds = start_collector(work, store, repo, trust)
    try:
        ready = _get_ms(
            "change page", f"http://127.0.0.1:{port}/dashboard/changes/{change}", token, 2,
            process.pid,
        )[0]  # fmt: skip
        cpu_before = cpu_seconds(process.pid)
        helpers_before = {c: cpu_seconds(c) for c in children(process.pid)}
        sampler.phase = "ingest"
        started = time.perf_counter()
        codes = asyncio.run(_send_all(port, bodies, connections))
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu_before
        helpers = {c: cpu_seconds(c) - helpers_before.get(c, 0.0) for c in children(process.pid)}
        rss = peak_rss_mb(process.pid)
        helpers_rss = {c: peak_rss_mb(c) for c in helpers}
    finally:
        sampler.stop()
        process.terminate()
        process.wait(timeout=30)
    if codes != {200: len(bodies)}:
        raise SystemExit(f"{label}: unexpected answers {codes}")
    rate = len(bodies) / seconds
    tree = cpu + sum(helpers.values())
    shown = ", ".join(f"{helpers[c]:.2f} s / {helpers_rss[c]:.0f} MB" for c in helpers) or "none"
    print(
        f"{label:<26} {len(bodies):>6} reports in {seconds:6.2f} s = {rate:7.0f}/s   "
        f"(collector CPU {tree:.2f} s = {len(bodies) / tree:.0f} reports per CPU-second: "
        f"serving process {cpu:.2f} s, child processes {shown}; peak RSS {rss:.0f} MB + "
        f"children {sum(helpers_rss.values()):.0f} MB; start incl. verifying the repository "
        f"{start_seconds:.1f} s, then the head's schedule ready {ready / 1000:.1f} s later)"
    )
    ingest_pss, ingest_rss = sampler.peaks.get("ingest", (0.0, 0.0))
    start_pss, start_rss = sampler.peaks.get("start", (0.0, 0.0))
    each = "; ".join(f"{role} {hwm:.0f}" for hwm, role in sampler.hwm.values())
    print(
        f"{'':<26} process tree, peak sum during ingest: PSS {ingest_pss:.0f} MB, RSS "
        f"{ingest_rss:.0f} MB; during start (the head's schedule computed in a child): PSS "
        f"{start_pss:.0f} MB, RSS {start_rss:.0f} MB; each process's peak RSS (MB): {each}"
    )
    return {
        "rate": rate,
        "rss": rss,
        "children_rss": sum(helpers_rss.values()),
        "per_cpu": len(bodies) / tree,
        "ingest_pss": ingest_pss,
        "ingest_rss": ingest_rss,
        "start_pss": start_pss,
        "start_rss": start_rss,
    }


def _timed_upsert(url: str, batches: Iterable[list[tuple[Any, ...]]]) -> float:
    """Seconds to connect and upsert each batch in a transaction of its own, with psycopg
    alone and the collector's own statement (building a batch counts: it runs in the loop)."""
    import psycopg

    from reconciler.fleet.collector.store import _UPSERT

    statement = _UPSERT.replace("?", "%s")
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for rows in batches:
            with conn.cursor() as cur:
                cur.executemany(statement, rows)
            conn.commit()
    return time.perf_counter() - started


def plain_upsert(url: str, bodies: list[bytes]) -> float:
    """The same rows into the same schema with psycopg alone: no HTTP, no verification."""
    from reconciler.core.report import read_envelope
    from reconciler.fleet.collector.store import Row

    now = datetime.now(UTC)
    rows = []
    for body in bodies:
        envelope = read_envelope(body, "bench")
        rows.append(
            Row(
                envelope.site,
                "edge-1",
                envelope.time,
                now,
                hashlib.sha256(envelope.payload).hexdigest(),
                json.loads(envelope.payload),
                envelope.payload.decode(),
                envelope.signature,
            ).values()
        )
    seconds = _timed_upsert(url, (rows[start : start + 500] for start in range(0, len(rows), 500)))
    rate = len(rows) / seconds
    print(
        f"{'plain psycopg upsert (PG)':<26} {len(rows):>6} rows    in {seconds:6.2f} s = "
        f"{rate:7.0f}/s   (same rows, same schema, 500 per transaction)"
    )
    return rate


def verifying_upsert(url: str, bodies: list[bytes], keys: dict[str, bytes]) -> float:
    """The second peer: the plain upsert plus what no verifying collector can skip: reading
    each envelope and checking its signature against the site's key, in one process, no
    HTTP. (The first peer does no verification, and Ed25519 alone runs at about a quarter
    of its rate on one core: against it, ≥ 0.5 needs more than two cores' worth of
    verification before HTTP, JSON or the database take any.)"""
    from reconciler.core.report import open_envelope, read_envelope
    from reconciler.core.trust.sshsig import parse_public_key_blob
    from reconciler.fleet.collector.store import Row

    now = datetime.now(UTC)

    def verified(batch: list[bytes]) -> list[tuple[Any, ...]]:
        rows = []
        for body in batch:
            envelope = read_envelope(body, "bench")
            key = parse_public_key_blob(keys[envelope.site])
            report = open_envelope(envelope, [key])
            rows.append(
                Row(
                    report.site,
                    "edge-1",
                    report.time,
                    now,
                    hashlib.sha256(report.payload).hexdigest(),
                    report.body,
                    report.payload.decode(),
                    envelope.signature,
                ).values()
            )
        return rows

    # A generator: each batch is verified inside the timed run, just before its upsert.
    batches = (verified(bodies[start : start + 500]) for start in range(0, len(bodies), 500))
    seconds = _timed_upsert(url, batches)
    rate = len(bodies) / seconds
    print(
        f"{'verify + upsert (PG)':<26} {len(bodies):>6} rows    in {seconds:6.2f} s = "
        f"{rate:7.0f}/s   (the same, each signature checked first; one process, no HTTP)"
    )
    return rate


def status_ms(store: list[str]) -> float:
    """Wall and CPU time of the whole command; CPU is what a loaded machine cannot inflate."""
    import resource

    times, cpu = [], []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "fleet", "status", *store],
            capture_output=True,
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        times.append((time.perf_counter() - started) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        lines = done.stdout.count(b"\n")
    print(
        f"outpost fleet status {store[0]:<5} {lines - 1:>6} sites, median of 5: "
        f"{statistics.median(times):6.0f} ms wall, {statistics.median(cpu):.0f} ms CPU "
        f"(min wall {min(times):.0f} ms)"
    )
    return statistics.median(times)


def _get_ms(
    name: str, url: str, token: str, times: int, pid: int
) -> tuple[float, float, int, float]:
    """(first, median of the rest) in ms wall, the size of the answer, and the median CPU
    time the collector spent per answer after the first (what a loaded machine cannot
    inflate)."""
    import urllib3

    pool = urllib3.PoolManager()
    took, cpu = [], []
    size = 0
    for _ in range(times):
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        answer = pool.request(
            "GET",
            url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            retries=False,
            redirect=False,
        )
        took.append((time.perf_counter() - started) * 1000)
        cpu.append((cpu_seconds(pid) - cpu_before) * 1000)
        if answer.status != 200:
            raise SystemExit(f"{url}: {answer.status} {answer.data[:300]!r}")
        size = len(answer.data)
    if os.environ.get("BENCH_KEEP_PAGES"):
        Path(os.environ["BENCH_KEEP_PAGES"], name.replace("/", "_") + ".out").write_bytes(
            answer.data
        )
    return took[0], statistics.median(took[1:]), size, statistics.median(cpu[1:])


def dashboard_ms(
    work: Path, store: list[str], repo: Path, trust: Path, change: str, sites: int
) -> None:
    """Overview and change page against the JSON API over the same stored reports."""
    token = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "fleet", "token", "add", "dashboard", *store],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.strip()
    # A collector that has just started (restarted: the ingest runs above used this store):
    # its first view of the head's change page, before anything else was asked of it.
    process, port, _ = start_collector(work, store, repo, trust)
    try:
        right_after_start = _get_ms(
            "change page at start", f"http://127.0.0.1:{port}/dashboard/changes/{change}",
            token, 2, process.pid,
        )[0]  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    process, port, _ = start_collector(work, store, repo, trust)
    base = f"http://127.0.0.1:{port}"
    try:
        pages = {
            "dashboard overview": f"{base}/dashboard/",
            "dashboard overview, filtered": f"{base}/dashboard/?state=waiting&page=7",
            "dashboard change page": f"{base}/dashboard/changes/{change}",
            "peer: /api/v1/sites": f"{base}/api/v1/sites",
            "peer: /api/v1/changes/C": f"{base}/api/v1/changes/{change}",
        }
        measured = {name: _get_ms(name, url, token, 8, process.pid) for name, url in pages.items()}
    finally:
        process.terminate()
        process.wait(timeout=30)
    for name, (first, median, size, cpu) in measured.items():
        print(
            f"{name:<30} first {first:7.0f} ms, median of 7 more {median:6.0f} ms wall, "
            f"{cpu:5.0f} ms collector CPU ({size / 1024:.0f} KiB)"
        )
    overview, change_page = measured["dashboard overview"], measured["dashboard change page"]
    sites_api, change_api = measured["peer: /api/v1/sites"], measured["peer: /api/v1/changes/C"]
    print(
        f"ratios (wall): overview / /api/v1/sites {overview[1] / sites_api[1]:.2f}, "
        f"change page / /api/v1/changes {change_page[1] / change_api[1]:.2f}; "
        f"(CPU): {overview[3] / sites_api[3]:.2f} and {change_page[3] / change_api[3]:.2f}"
    )
    from reconciler.fleet.dashboard.prediction import predict_change

    started = time.perf_counter()
    predict_change(repo, trust, change, now=datetime.now(UTC))
    computing = (time.perf_counter() - started) * 1000
    print(
        f"dashboard for {sites} sites: overview {overview[1]:.0f} ms wall / {overview[3]:.0f} ms "
        f"CPU, change page {change_page[1]:.0f} ms / {change_page[3]:.0f} ms (goal ≤ 500 ms "
        f"each); the change page's first view {change_page[0]:.0f} ms (after the overviews), "
        f"{right_after_start:.0f} ms as the first request to a restarted collector (the "
        f"schedule kept in the store); computing the schedule takes {computing:.0f} ms (here, "
        "in this process: what the first view waits for at most when no collector computed "
        "it before; collectors start it in a child process when they verify a new head)"
    )


def verify_floor(count: int = 3000) -> float:
    """Ed25519 verifications per second with `cryptography` alone: the ceiling per core for
    any collector that checks every report's signature."""
    key = Ed25519PrivateKey.generate()
    message = b"x" * 1500
    signature, public = key.sign(message), key.public_key()
    started = time.perf_counter()
    for _ in range(count):
        public.verify(signature, message)
    rate = count / (time.perf_counter() - started)
    print(f"{'Ed25519 verify alone':<26} {rate:7.0f}/s on one core (a verifier's ceiling)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument(
        "--dashboard-only",
        action="store_true",
        help="store the reports (SQLite) and measure the dashboard; skip PostgreSQL",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        repo, trust, sites, base, change = make_fleet(work, args.sites)
        bodies = reports(sites, datetime.now(UTC), base, change)
        print(
            f"setup: {args.sites} sites, keys and signed reports in "
            f"{time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        sqlite = run_collector(
            "collector, SQLite",
            work,
            ["--db", str(work / "c.db")],
            repo,
            trust,
            bodies,
            args.connections,
            change,
        )
        status_sqlite = status_ms(["--db", str(work / "c.db")])
        dashboard_ms(work, ["--db", str(work / "c.db")], repo, trust, change, args.sites)
        if args.dashboard_only:
            return 0
        server = postgres.start(durable=True)
        try:
            url = server.create_database()
            pg = run_collector(
                "collector, PostgreSQL",
                work,
                ["--url", url],
                repo,
                trust,
                bodies,
                args.connections,
                change,
            )
            status_pg = status_ms(["--url", url])
            plain_url = server.create_database()
            from reconciler.fleet.collector.store import open_store

            open_store(plain_url, now=datetime.now(UTC)).close()
            plain = plain_upsert(plain_url, bodies)
            verifying_url = server.create_database()
            open_store(verifying_url, now=datetime.now(UTC)).close()
            keys = {site: public_key_of(key).blob for site, key in sites}
            verifying = verifying_upsert(verifying_url, bodies, keys)
        finally:
            server.stop()
        print()
        floor = verify_floor()
        print(
            f"ratio collector(PG) / plain upsert: {pg['rate'] / plain:.2f}  (goal ≥ 0.5); "
            f"Ed25519 verification alone / plain upsert: {floor / plain:.2f}; "
            f"collector(PG) / verify + upsert: {pg['rate'] / verifying:.2f}"
        )
        print(
            f"reports/s: SQLite {sqlite['rate']:.0f}, PostgreSQL {pg['rate']:.0f} (goal ≥ 2,000); "
            f"per collector CPU-second: {sqlite['per_cpu']:.0f} and {pg['per_cpu']:.0f}"
        )
        print(
            f"fleet status: {status_sqlite:.0f} ms (SQLite), {status_pg:.0f} ms (PostgreSQL) "
            "(goal ≤ 300 ms)"
        )
        print(
            f"collector peak RSS: {max(sqlite['rss'], pg['rss']):.0f} MB, its child processes "
            f"{max(sqlite['children_rss'], pg['children_rss']):.0f} MB; process tree during "
            f"ingest, peak RSS sum {max(sqlite['ingest_rss'], pg['ingest_rss']):.0f} MB, "
            f"peak PSS sum {max(sqlite['ingest_pss'], pg['ingest_pss']):.0f} MB (goal ≤ 150 MB); "
            f"while the head's schedule is computed at start: RSS sum "
            f"{max(sqlite['start_rss'], pg['start_rss']):.0f} MB, PSS sum "
            f"{max(sqlite['start_pss'], pg['start_pss']):.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
