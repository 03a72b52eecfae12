"""One site changed in a large fleet: ``outpost validate --changed-since`` as a whole process.

Generates the fleet of ``tools/fleetgen.py`` (default 10,000 sites), commits it,
edits one synthetic store's overrides in the working tree, then times fresh processes,
interleaved round by round so every side sees the same load:

- ``outpost validate --changed-since HEAD -o json`` (``python -m reconciler.cli``, this
  tree's code): git says what changed, then the affected site is validated in full —
  files, schemas, references, secrets, vendored output, rollout records, policies and
  the Kubernetes schemas of its rendered objects — with what the whole fleet's checks
  need of the other sites (their names, and the site.yaml files that can share the
  site's age recipient);
- with ``--baseline REV``: the same command with REV's code (``git archive``);
- peers: ``git status --porcelain`` over the same working tree (what any
  "changed since" has to ask git first) and ``python -c pass`` (the interpreter's start).

Printed: median wall and CPU (user + system of the process and its children) of each,
and the goal (issue 23): at most 0.5 s for the whole process. The findings of this
tree's and the baseline's runs are compared: they must be the same.

Each side's code is byte-compiled first (``compileall``, as pip installs it), and the
processes may write byte-code (``PYTHONDONTWRITEBYTECODE`` is dropped from their
environment): a run that compiled every module of the package each time would measure
the compiler. ``--repo DIR`` reuses a repository an earlier run kept (``--keep``).

    python bench/validate_changed.py [--sites 10000] [--rounds 7] [--baseline REV]
        [--keep DIR | --repo DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.fleetgen import generate, git_commit  # noqa: E402


def change_one_site(root: Path) -> str:
    """Edit one synthetic store's overrides in the working tree; its name."""
    for folder in sorted((root / "sites").iterdir()):
        overrides = folder / "overrides.yaml"
        if "-g" in folder.name and overrides.is_file() and "lanes:" in overrides.read_text():
            text = overrides.read_text()
            overrides.write_text(re.sub(r"lanes: \d+", "lanes: 30", text, count=1))
            return folder.name
    raise SystemExit("no synthetic store with pos lanes in its overrides to change")


def checkout(revision: str) -> Path:
    """``revision``'s files in a temporary folder (git archive: no worktree, no checkout)."""
    target = Path(tempfile.mkdtemp(prefix="outpost-bench-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    compile_code(target)
    return target


def compile_code(code: Path) -> None:
    """``code``'s package byte-compiled, as an installed package is."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "reconciler")], check=True)


GOAL_SECONDS = 0.5


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, bytes, int]:
    """(wall, CPU of the process and its children, stdout, exit code) of one fresh process."""
    read, write = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=write, stderr=subprocess.DEVNULL)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, b"".join(chunks), proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--baseline", metavar="REV", help="also time REV's code")
    parser.add_argument("--keep", type=Path, help="generate under DIR and keep it")
    parser.add_argument(
        "--repo", type=Path, help="reuse the generated repository DIR (kept by --keep)"
    )
    args = parser.parse_args()
    if args.repo is not None:
        repo = args.repo.resolve()
        work = repo.parent
        sites = sum(1 for _ in (repo / "sites").iterdir())
        print(f"reusing {repo} ({sites:,} site folders); edited sites/{change_one_site(repo)}")
        args.sites, args.keep = sites, work
    else:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="outpost-bench-changed-", dir=args.keep))
        repo = work / "repo"
        started = time.perf_counter()
        generate(args.sites, repo, random.Random(args.seed))
        git_commit(repo)
        site = change_one_site(repo)
        print(
            f"{args.sites:,} sites generated and committed in "
            f"{time.perf_counter() - started:.1f} s; edited sites/{site}/overrides.yaml"
        )
    compile_code(ROOT)
    drop = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    codes = {"outpost validate --changed-since": ROOT}
    if args.baseline:
        codes[f"  the same, {args.baseline}"] = checkout(args.baseline)
    command = [sys.executable, "-m", "reconciler.cli", "validate", "--repo", str(repo)]
    command += ["--changed-since", "HEAD", "-o", "json"]
    sides: dict[str, tuple[list[str], Path]] = {
        name: (command, code) for name, code in codes.items()
    }
    sides["git status --porcelain"] = (["git", "-C", str(repo), "status", "--porcelain"], work)
    sides["python -c pass"] = ([sys.executable, "-c", "pass"], work)
    outputs: dict[str, bytes] = {}
    for name, (argv, cwd) in sides.items():  # warm the page cache and the byte-code
        _, _, out, code = run(argv, cwd, env)
        if name in codes and code not in (0, 1):
            print(f"{name.strip()}: exit {code}", file=sys.stderr)
            return 1
        outputs[name] = out
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (argv, cwd) in sides.items():
            wall, cpu, _, _ = run(argv, cwd, env)
            times[name].append((wall, cpu))
    print(f"one site changed in {args.sites:,}: median of {args.rounds} fresh processes each")
    for name, each in times.items():
        wall = statistics.median(w for w, _ in each)
        cpu = statistics.median(c for _, c in each)
        print(f"  {name:<36} {wall:6.3f} s wall  {cpu:6.3f} s CPU")
    ours = statistics.median(w for w, _ in times["outpost validate --changed-since"])
    print(f"  goal: ≤ {GOAL_SECONDS} s as a process: {ours:.3f} s")
    if args.baseline:
        same = (
            outputs["outpost validate --changed-since"] == outputs[f"  the same, {args.baseline}"]
        )
        print(f"  findings the same as {args.baseline}'s: {'yes' if same else 'NO'}")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for code in codes.values():
        if code != ROOT:
            shutil.rmtree(code, ignore_errors=True)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
