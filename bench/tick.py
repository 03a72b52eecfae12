"""The agent's no-op tick: wall time and peak memory, against kubectl checking the same slice.

A store's node runs ``outpost agent run --once`` every five minutes; nearly every tick
finds nothing new and only checks for drift. Goal: under 0.5 s wall and under 80 MB
peak RSS. The peer, measured in the same run on the same control plane, is
``kubectl diff --server-side`` over the same rendered objects (the usual way to ask
"has anything drifted?"), run as a fresh process like the agent.

    python bench/tick.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.demo.__main__ import SITE, add_store_node, agent_config  # noqa: E402
from tools.signedfleet import create  # noqa: E402
from tools.testcluster import running  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="outpost-bench-tick-") as tmp:
        work = Path(tmp)
        fleet = create(work / "repo", when=now - timedelta(hours=2))
        fleet.edit(f"sites/{SITE}/site.yaml", lambda t: t + "# bench\n")
        fleet.commit("bench", when=now - timedelta(hours=1), emergency="benchmark install")
        with running(work / "cluster") as cluster:
            add_store_node(cluster)
            env = {**os.environ, **cluster.env()}
            config = agent_config(work, fleet, cluster)
            agent = [
                sys.executable,
                "-m",
                "reconciler.cli",
                "agent",
                "run",
                "--once",
                "--config",
                str(config),
            ]
            wall, rss, code = timed(agent, env)
            if code != 0:
                print(f"the first (installing) tick failed with exit {code}", file=sys.stderr)
                return 1
            print(f"installing tick: {wall:.2f} s, {rss:.0f} MB")
            rendered = work / "slice.json"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reconciler.cli",
                    "render",
                    SITE,
                    "--repo",
                    str(fleet.path),
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            items = [entry["object"] for entry in json.loads(done.stdout)["objects"]]
            rendered.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
            kubectl = [
                str(cluster.bin_dir / "kubectl"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "diff",
                "--server-side",
                "-f",
                str(rendered),
            ]
            check = subprocess.run(kubectl, env=env, capture_output=True, text=True)
            if check.returncode > 1:  # 1 means "differences found", which is an answer
                print(f"kubectl diff failed: {check.stderr.strip()}", file=sys.stderr)
                return 1
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(timed(agent, env))
                theirs.append(timed(kubectl, env))
            bad = [c for _, _, c in ours if c != 0]
            if bad:
                print(f"a no-op tick failed: exit codes {bad}", file=sys.stderr)
                return 1
    ow = statistics.median(w for w, _, _ in ours)
    orss = max(r for _, r, _ in ours)
    kw = statistics.median(w for w, _, _ in theirs)
    krss = max(r for _, r, _ in theirs)
    print(f"no-op tick, {args.rounds} rounds (median wall, max peak RSS), {len(items)} objects")
    print(f"  outpost agent run --once     {ow:6.2f} s  {orss:5.0f} MB   (goal < 0.5 s, < 80 MB)")
    print(f"  kubectl diff --server-side   {kw:6.2f} s  {krss:5.0f} MB")
    print(f"  ratio outpost/kubectl        {ow / kw:6.2f}    {orss / krss:5.2f}")
    print(
        f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"own RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
