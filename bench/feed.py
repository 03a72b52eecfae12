"""Benchmark: nodes polling a bundle feed vs the same nodes fetching from a git server.

One nginx from Debian (tools.webserver) serves, in the same run, on loopback:

- the bundle feed written by ``outpost bundle publish`` (static files), and
- the same repository through ``git http-backend`` behind fcgiwrap (smart HTTP), the
  usual way to serve git from nginx.

Measured:

1. **Polling an unchanged fleet.** N simulated nodes (default 1,000), each already at the
   head, poll once: the feed's nodes run the agent's real feed code
   (`reconciler.node.feed.follow_feed`: one conditional GET of index.json, answered 304);
   the git nodes run the agent's real fetch (`Mirror.fetch`, libgit2) and, as a second
   peer, the git command line's ``git fetch`` (protocol v2). Each node opens its own
   connection, as separate machines would. Reported: the **server's** CPU seconds (nginx
   master and workers, fcgiwrap and the git processes it runs, from a cgroup made for
   them — fcgiwrap lets the kernel reap its children, so /proc's child times miss git)
   and bytes on the wire (nginx's
   access log: bytes sent plus request length), per 1,000 polls. Goal: the feed costs the
   server ≥ 20× less CPU than git.
2. **Catching up 100 commits.** A node at the first commit after 100 publishes (one per
   commit): its tick's feed step with the agent's defaults (too far behind for the chain:
   the full bundle), following the 100 steps one by one, and `Mirror.fetch` from the git
   server. Wall time, medians over the rounds; both end with the same commit in the mirror.
   Signature verification is the same afterwards for all and is not included.

Run: python bench/feed.py [--nodes 1000] [--commits 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reconciler.fleet.feed import publish_feed  # noqa: E402
from reconciler.node.feed import FeedSettings, follow_feed  # noqa: E402
from reconciler.node.fetch import CANDIDATE_REF, Mirror  # noqa: E402
from reconciler.node.http import HttpClient  # noqa: E402
from tools import signedfleet  # noqa: E402
from tools.webserver import Nginx  # noqa: E402

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def measure(nginx: Nginx, polls: int, poll: Callable[[int], None]) -> tuple[float, int, float]:
    """(server CPU seconds, bytes on the wire, wall seconds) for ``polls`` calls of ``poll``."""
    mark = len(nginx.requests())
    cpu, _ = nginx.cpu_seconds()
    started = time.perf_counter()
    for node in range(polls):
        poll(node)
    wall = time.perf_counter() - started
    time.sleep(0.2)  # let nginx write its last log lines and fcgiwrap reap its children
    lines = nginx.requests()[mark:]
    return nginx.cpu_seconds()[0] - cpu, sum(x.bytes_sent + x.request_length for x in lines), wall


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def mirror_at(path: Path, source: Path, commit: str) -> Mirror:
    """A node's mirror holding ``commit`` (and its history) as its candidate."""
    if path.exists():
        shutil.rmtree(path)
    mirror = Mirror(path)
    git("--git-dir", str(path), "fetch", "-q", str(source), f"{commit}:refs/outpost/candidate")
    return mirror


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="outpost-bench-feed-") as scratch:
        work = Path(scratch)
        fleet = signedfleet.create(work / "desk", when=START)
        first = fleet.head()
        www, repos = work / "www", work / "git"
        clock = START
        publish_feed(fleet.path, "main", www / "feed", now=clock)
        for number in range(args.commits):
            clock += timedelta(minutes=5)
            fleet.write(f"sites/store-bench/notes-{number}.txt", f"change {number}\n")
            fleet.commit(f"Change {number}", when=clock)
            publish_feed(fleet.path, "main", www / "feed", now=clock)
        head = fleet.head()
        repos.mkdir()
        git("clone", "-q", "--bare", str(fleet.path), str(repos / "fleet.git"))

        with Nginx(work / "nginx", www, git_root=repos) as nginx:
            feed_url = f"{nginx.url}/feed/"
            git_url = f"{nginx.url}/git/fleet.git"
            settings = FeedSettings(url=feed_url)
            print(
                f"fleet: {args.commits + 1} commits, feed of {args.commits} steps; "
                f"{args.nodes} nodes; nginx {nginx.url}"
            )

            # -- 1. polling an unchanged fleet --------------------------------------------
            node_mirror = mirror_at(work / "node-mirror.git", fleet.path, head)
            states = work / "states"
            for node in range(args.nodes):  # each node has polled once before: it has an ETag
                follow_feed(node_mirror, settings, states / str(node), now=clock)

            def feed_poll(node: int) -> None:
                result = follow_feed(
                    node_mirror,
                    settings,
                    states / str(node),
                    now=clock,
                    client=HttpClient(),
                )
                assert result.outcome == "unchanged", result.message

            def libgit2_poll(node: int) -> None:
                assert node_mirror.fetch(git_url, "main") == head

            cli_mirror = work / "cli-mirror.git"
            git("clone", "-q", "--bare", str(repos / "fleet.git"), str(cli_mirror))

            def cli_poll(node: int) -> None:
                git(
                    "--git-dir", str(cli_mirror), "-c", "protocol.version=2",
                    "fetch", "-q", git_url, "+refs/heads/main:refs/heads/main",
                )  # fmt: skip

            rows = []
            for name, poll in (
                ("feed: conditional GET index.json (304)", feed_poll),
                ("git: Mirror.fetch (libgit2, smart HTTP)", libgit2_poll),
                ("git: git fetch (CLI, protocol v2)", cli_poll),
            ):
                cpu, sent, wall = measure(nginx, args.nodes, poll)
                scale = 1000 / args.nodes
                rows.append((name, cpu * scale, sent * scale, wall))
            print(
                f"\npolling an unchanged fleet, per 1,000 polls ({args.nodes} measured; "
                f"server CPU from {nginx.cpu_seconds()[1]}):"
            )
            print(f"  {'':44} {'server CPU s':>12} {'bytes':>12} {'client wall s':>14}")
            for name, cpu, sent, wall in rows:
                print(f"  {name:44} {cpu:12.3f} {sent:12.0f} {wall:14.1f}")
            feed_cpu = rows[0][1]
            for name, cpu, sent, _ in rows[1:]:
                print(
                    f"  {name.split(':')[1].strip()}: the feed costs the server "
                    f"{cpu / feed_cpu:.0f}x less CPU and {sent / rows[0][2]:.1f}x fewer bytes"
                )
            goal = rows[1][1] / feed_cpu
            print(f"  goal >= 20x less server CPU than the node's git fetch: {goal >= 20}")

            # -- 2. catching up 100 commits ---------------------------------------------
            times: dict[str, list[float]] = {"defaults": [], "steps": [], "git": []}
            planned = 0
            for _ in range(args.rounds):
                for mode in ("defaults", "steps", "git"):
                    mirror = mirror_at(work / f"catch-{mode}.git", fleet.path, first)
                    state = work / f"catch-{mode}-state"
                    shutil.rmtree(state, ignore_errors=True)
                    started = time.perf_counter()
                    if mode == "git":
                        mirror.fetch(git_url, "main")
                    else:
                        steps = settings.max_steps if mode == "defaults" else 10 * args.commits
                        wanted = FeedSettings(url=feed_url, max_steps=steps)
                        result = follow_feed(mirror, wanted, state, now=clock)
                        if mode == "defaults":
                            planned = len(result.downloaded)
                        else:
                            assert len(result.downloaded) == args.commits, result.message
                    times[mode].append(time.perf_counter() - started)
                    assert mirror.resolve(CANDIDATE_REF) == head
            full, steps, by_git = (
                statistics.median(times[k]) for k in ("defaults", "steps", "git")
            )
            what = "the full bundle" if planned == 1 else f"{planned} steps"
            print(f"\ncatching up {args.commits} commits (median of {args.rounds}):")
            print(f"  feed, agent defaults ({what:15}) {full:8.2f} s  ({full / by_git:.1f}x git)")
            print(
                f"  feed, {args.commits} steps one by one          {steps:8.2f} s  "
                f"({steps / by_git:.1f}x git)"
            )
            print(f"  git: Mirror.fetch                    {by_git:8.2f} s")


if __name__ == "__main__":
    main()
