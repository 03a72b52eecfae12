"""The agent's no-op tick: wall time and peak memory, against kubectl checking the same slice.

A store's node runs ``outpost agent run --once`` every five minutes; nearly every tick
finds nothing new and only checks for drift. Goal (issue 23): at most 0.3 s wall, at most
50 MB peak RSS, at most twice ``kubectl diff --server-side`` over the same rendered
objects (the usual way to ask "has anything drifted?"), run as a fresh process like the
agent, in the same run on the same control plane.

The agent runs as a node runs it: this tree is built into a wheel and installed into
its own virtual environment, byte-code compiled by pip, and started through the
``outpost`` script pip wrote. The dependencies are this interpreter's (a ``.pth`` line
puts its site-packages on ``sys.path``, so nothing is downloaded), without running the
``.pth`` hooks found there (an editable install's finder and the like), which a node's
venv does not have either. With ``--baseline REV``, REV's code is installed the same way
into a second environment with its own state directory, and its no-op ticks are
interleaved with this tree's and kubectl's: before and after, under the same load. The agent's
config has no collector (``report``), so no report is sent; a no-op tick sends one only
hourly anyway. Peak RSS is each process's own (see `LAUNCHER`), not the bench's.

    python bench/tick.py [--rounds 10] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.demo.__main__ import SITE, add_store_node  # noqa: E402
from tools.signedfleet import SignedFleet, create  # noqa: E402
from tools.testcluster import Cluster, running  # noqa: E402

GOAL_SECONDS, GOAL_MB, GOAL_RATIO = 0.3, 50.0, 2.0
PACKAGE = ("pyproject.toml", "README.md", "reconciler", "schemas")


def install(code: Path, into: Path) -> Path:
    """``code``'s package built into a wheel and installed into a new venv at ``into``;
    the ``outpost`` script pip wrote there."""
    source = into.with_name(into.name + "-src")
    source.mkdir(parents=True)
    for part in PACKAGE:
        if (code / part).is_dir():
            shutil.copytree(
                code / part, source / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copyfile(code / part, source / part)
    wheels = into.with_name(into.name + "-wheel")
    quiet = {"check": True, "capture_output": True}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], **quiet)
    subprocess.run([sys.executable, "-m", "venv", str(into)], **quiet)
    # The dependencies are this interpreter's, on sys.path through a .pth line; unlike
    # --system-site-packages, the .pth hooks of that folder (an editable install's finder,
    # coverage, a CA injector) are not run, as none runs in a node's own venv.
    purelib = sysconfig.get_path("purelib")
    venv_lib = next((into / "lib").glob("python3*/site-packages"))
    (venv_lib / "outpost-bench-deps.pth").write_text(purelib + "\n")
    wheel = next(wheels.glob("*.whl"))
    subprocess.run(
        [
            str(into / "bin" / "python"),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        **quiet,
    )
    return into / "bin" / "outpost"


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def agent_config(folder: Path, fleet: SignedFleet, cluster: Cluster) -> Path:
    """The store's agent config, as enrollment writes it (no collector: see the docstring)."""
    folder.mkdir(parents=True)
    key = folder / f"{SITE}.age.key"  # a checkout leaves the example key readable by all
    key.write_bytes((ROOT / "tests/keys/age" / f"{SITE}.key").read_bytes())
    key.chmod(0o600)
    identity = folder / "node.key"
    identity.write_bytes((ROOT / "tests/keys/node" / f"{SITE}-edge-1.key").read_bytes())
    identity.chmod(0o600)
    config = folder / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\n"
        "kind: AgentConfig\n"
        "spec:\n"
        f"  site: {SITE}\n"
        f'  source: {{url: "{fleet.url}", branch: main}}\n'
        f"  trustRoot: {fleet.allowed_signers}\n"
        f"  ageKey: {key}\n"
        f"  identityKey: {identity}\n"
        f"  kubeconfig: {cluster.kubeconfig}\n"
        f"  stateDir: {folder / 'state'}\n"
        "  healthDeadline: 2m\n"
    )
    return config


# Every timed process is started by this small launcher, not by the bench itself: Linux
# counts into a process's peak RSS the resident size of the process it was forked from, at
# its exec, so a child of this bench (tens of MB by the time the cluster runs) could never
# report less than the bench. A child of the launcher starts from the launcher's few MB.
LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    argv, env = json.loads(line)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps([wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
    sys.stdout.flush()
"""


class Launcher:
    """Runs each timed process (see `LAUNCHER`); start it before the bench grows."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def timed(self, argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
        """(wall seconds, peak RSS MB, exit code) of one fresh process."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([argv, env]) + "\n")
        self.proc.stdin.flush()
        wall, rss, code = json.loads(self.proc.stdout.readline())
        return float(wall), float(rss), int(code)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline", metavar="REV", help="also time REV's agent")
    args = parser.parse_args()
    launcher = Launcher()
    try:
        return measure(args, launcher)
    finally:
        launcher.close()


def measure(args: argparse.Namespace, launcher: Launcher) -> int:
    timed = launcher.timed
    now = datetime.now(UTC)
    floor = max(timed([sys.executable, "-I", "-S", "-c", "pass"], {})[1] for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="outpost-bench-tick-") as tmp:
        work = Path(tmp)
        codes = {"outpost agent run --once": ROOT}
        if args.baseline:
            codes[f"  the same, {args.baseline}"] = checkout(args.baseline, work / "baseline")
        scripts = {
            name: install(code, work / f"venv{i}") for i, (name, code) in enumerate(codes.items())
        }
        fleet = create(work / "repo", when=now - timedelta(hours=2))
        fleet.edit(f"sites/{SITE}/site.yaml", lambda t: t + "# bench\n")
        fleet.commit("bench", when=now - timedelta(hours=1), emergency="benchmark install")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with running(work / "cluster") as cluster:
            add_store_node(cluster)
            env.update(cluster.env())
            sides: dict[str, list[str]] = {}
            for i, (name, script) in enumerate(scripts.items()):
                config = agent_config(work / f"agent{i}", fleet, cluster)
                sides[name] = [str(script), "agent", "run", "--once", "--config", str(config)]
                wall, rss, code = timed(sides[name], env)
                if code != 0:
                    print(f"{name}: the first (installing) tick exited {code}", file=sys.stderr)
                    return 1
                print(f"installing tick ({name.strip()}): {wall:.2f} s, {rss:.0f} MB")
            done = subprocess.run(
                [
                    *(str(scripts["outpost agent run --once"]), "render", SITE),
                    *("--repo", str(fleet.path), "-o", "json"),
                ],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            items = [entry["object"] for entry in json.loads(done.stdout)["objects"]]
            rendered = work / "slice.json"
            rendered.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
            kubectl = [
                str(cluster.bin_dir / "kubectl"),
                *("--kubeconfig", str(cluster.kubeconfig), "diff", "--server-side"),
                *("-f", str(rendered)),
            ]
            check = subprocess.run(kubectl, env=env, capture_output=True, text=True)
            if check.returncode > 1:  # 1 means "differences found", which is an answer
                print(f"kubectl diff failed: {check.stderr.strip()}", file=sys.stderr)
                return 1
            for name, argv in list(sides.items()):
                # The first no-op tick after an install renders the slice and records it
                # (the agent's slice record); the rounds measure the ticks after it.
                wall, rss, code = timed(argv, env)
                print(f"first no-op tick ({name.strip()}): {wall:.2f} s, {rss:.0f} MB, exit {code}")
            sides["kubectl diff --server-side"] = kubectl
            runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, argv in sides.items():
                    runs[name].append(timed(argv, env))
            for name, found in runs.items():
                bad = [c for _, _, c in found if c != 0 and not name.startswith("kubectl")]
                if bad:
                    print(f"{name}: a no-op tick failed: exit codes {bad}", file=sys.stderr)
                    return 1
    wall = {name: statistics.median(w for w, _, _ in found) for name, found in runs.items()}
    peak = {name: max(r for _, r, _ in found) for name, found in runs.items()}
    peer = "kubectl diff --server-side"
    print(f"no-op tick, {args.rounds} rounds (median wall, max peak RSS), {len(items)} objects")
    for name in runs:
        print(
            f"  {name:<34} {wall[name]:6.3f} s  {peak[name]:5.0f} MB"
            f"   {wall[name] / wall[peer]:5.2f}x kubectl's wall"
        )
    print(
        f"  goal: ≤ {GOAL_SECONDS} s, ≤ {GOAL_MB:.0f} MB, ≤ {GOAL_RATIO:.0f}x kubectl: "
        f"{wall['outpost agent run --once']:.3f} s, {peak['outpost agent run --once']:.0f} MB, "
        f"{wall['outpost agent run --once'] / wall[peer]:.2f}x"
    )
    print(
        f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; peak RSS of "
        f"`python -I -S -c pass` as the launcher starts it: {floor:.0f} MB; "
        f"the bench's own: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
