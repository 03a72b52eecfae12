"""Start-up of the command line: ``outpost --help`` as a whole process, against peers.

Every invocation is a fresh process, interleaved round by round so all sides see the
same load on a shared machine; the median wall time of each is printed:

- ``outpost --help`` through the installed entry point (the console script pip wrote
  next to the interpreter), with this tree's code first on ``PYTHONPATH``;
- ``python -m reconciler.cli --help``;
- ``python -c pass``: the interpreter's own start-up with the same site-packages,
  the floor any Python command stands on;
- ``git --help`` and ``kubectl --help`` (the control plane cache's kubectl, if built):
  other command lines an operator types.

With ``--baseline REV`` the first two also run with REV's code (git archive into a
temporary folder), so before and after are measured in the same run.

Goal (issue 23): ``outpost --help`` ≤ 0.1 s.

    python bench/cli_start.py [--rounds 21] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.1


def entry_point() -> str | None:
    """The ``outpost`` console script of this interpreter's installation, if any."""
    candidate = Path(sysconfig.get_path("scripts")) / "outpost"
    return str(candidate) if candidate.is_file() else shutil.which("outpost")


def kubectl() -> str | None:
    found = sorted((Path.home() / ".cache" / "outpost-testcluster").glob("*/bin/kubectl"))
    return str(found[-1]) if found else shutil.which("kubectl")


def checkout(revision: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="outpost-bench-cli-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(target / "reconciler")])
    return target


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(  # from / : `python -m` puts the working directory on sys.path
        argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--baseline", metavar="REV", help="also time REV's code")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    codes = {"": ROOT}
    if args.baseline:
        codes[f" ({args.baseline})"] = checkout(args.baseline)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")])
    sides: dict[str, tuple[list[str], dict[str, str]]] = {}
    script = entry_point()
    for label, code in codes.items():
        env = {**base, "PYTHONPATH": str(code)}
        if script:
            sides[f"outpost --help{label}"] = ([script, "--help"], env)
        sides[f"python -m reconciler.cli --help{label}"] = (
            [sys.executable, "-m", "reconciler.cli", "--help"],
            env,
        )
    sides["python -c pass"] = ([sys.executable, "-c", "pass"], base)
    sides["git --help"] = (["git", "--help"], base)
    found = kubectl()
    if found:
        sides["kubectl --help"] = ([found, "--help"], base)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (argv, env) in sides.items():
            times[name].append(timed(argv, env))
    floor = statistics.median(times["python -c pass"])
    print(f"command line start-up, median of {args.rounds} fresh processes each")
    for name, each in times.items():
        median = statistics.median(each)
        print(
            f"  {name:<44} {median * 1000:7.1f} ms  (min {min(each) * 1000:6.1f})  "
            f"{median / floor:5.2f}x python -c pass"
        )
    print(f"  goal: outpost --help ≤ {GOAL * 1000:.0f} ms")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, code in codes.items():
        if label:
            shutil.rmtree(code, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
