"""Benchmark: verify a range of signed commits with Outpost and with ``git verify-commit``.

Builds (once, or reuses with --workdir) a repository of N commits signed with
real ssh-keygen keys: a root signer every tenth commit, the POS team (a
delegated signer, apps/pos/**) in between, then packs its objects (``git gc``)
as they are in a mirror the node fetched into. Then, in one run, in three
interleaved rounds so both sides see the same load on a shared machine:

- Outpost: `verify_repository` over the whole history, in-process, with its
  caches cleared first (as a freshly started agent); the median is reported.
  Once more as the ``outpost verify`` command, a whole process, start-up included.
- git: ``git verify-commit`` (one ``ssh-keygen -Y verify`` process each) on an
  evenly spaced sample of the commits, a third per round, extrapolated to a
  rate; ``--sample 0`` verifies every commit.

Goal (issue 5): Outpost at least 50x git's rate.

    python bench/verify.py [--commits 1000] [--sample 100] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

GOAL = 50.0


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode()}")
    return done.stdout.decode().strip()


def keygen(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], directory)
    return path


def build(workdir: Path, commits: int) -> Path:
    """A repository of ``commits`` signed commits; reused if it already has them."""
    repo = workdir / "repo"
    root = keygen(workdir, "root")
    pos = keygen(workdir, "pos")
    root_pub = Path(f"{root}.pub").read_text().strip()
    pos_pub = Path(f"{pos}.pub").read_text().strip()
    (workdir / "allowed_signers").write_text(f"root@example.com {root_pub}\n")
    # git verify-commit needs every signer in its allowed_signers to say "Good".
    (workdir / "git_allowed_signers").write_text(
        f"root@example.com {root_pub}\npos-team {pos_pub}\n"
    )
    if (repo / ".git").exists():
        have = int(run(["git", "rev-list", "--count", "HEAD"], repo))
        if have == commits:
            return repo
        raise SystemExit(f"{repo} holds {have} commits, not {commits}; use another --workdir")
    repo.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    for key, value in [
        ("user.name", "Bench"),
        ("user.email", "bench@example.com"),
        ("gpg.format", "ssh"),
        ("commit.gpgsign", "true"),
    ]:
        run(["git", "config", key, value], repo)
    (repo / "policies").mkdir()
    (repo / "apps/pos").mkdir(parents=True)
    (repo / "policies/signers.yaml").write_text(
        "apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: signers}\nspec:\n  signers:\n"
        f'    - {{name: pos-team, keys: ["{pos_pub}"], paths: ["apps/pos/**"]}}\n'
    )
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    began = time.perf_counter()
    for number in range(commits):
        key = root if number % 10 == 0 else pos
        target = "fleets/retail-eu.yaml" if number % 10 == 0 else f"apps/pos/v{number % 7}.yaml"
        path = repo / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"revision: {number}\n")
        stamp = f"@{start + 60 * number} +0000"
        run(["git", "add", "-A"], repo)
        run(
            ["git", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", f"change {number}"],
            repo,
            {"GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp},
        )
        if number and number % 200 == 0:
            print(f"  … {number} commits signed", file=sys.stderr)
    print(f"built {commits} signed commits in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return repo


def pack(repo: Path) -> None:
    """Pack the objects, as they are in a mirror the node fetched into (a pack, not loose files)."""
    loose = run(["git", "count-objects"], repo)
    if not loose.startswith("0 objects"):
        run(["git", "gc", "-q"], repo)


class Outpost:
    """Verify the whole history in-process, caches cleared first (a freshly started agent)."""

    def __init__(self, repo: Path, trust_file: Path, commits: int) -> None:
        self.repo = repo
        self.trust_file = trust_file
        self.commits = commits

    def run(self) -> float:
        import pygit2

        from reconciler.core.trust import rules, sshsig
        from reconciler.core.trust.allowed_signers import parse_allowed_signers
        from reconciler.core.trust.gitsource import verify_repository

        now = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=30)
        sshsig._verifier.cache_clear()
        rules.parse_signers.cache_clear()
        rules.compile_pattern.cache_clear()
        began = time.perf_counter()
        trust = parse_allowed_signers(self.trust_file.read_bytes(), str(self.trust_file))
        result = verify_repository(pygit2.Repository(str(self.repo)), trust, now=now)
        elapsed = time.perf_counter() - began
        if not result.ok or len(result.verdicts) != self.commits:
            raise SystemExit(f"outpost refused the benchmark repository: {result.error}")
        return elapsed

    def run_cli(self) -> float:
        code = "import sys; from reconciler.cli import main; sys.exit(main())"
        argv = [
            sys.executable,
            "-c",
            code,
            "verify",
            "--trust",
            str(self.trust_file),
            "--repo",
            str(self.repo),
            "--max-skew",
            str(10**9),
            "-o",
            "json",
        ]
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"outpost verify exited {done.returncode}: {done.stderr.decode()}")
        return elapsed


def git_verify(repo: Path, allowed: Path, shas: list[str]) -> float:
    began = time.perf_counter()
    for sha in shas:
        run(["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", sha], repo)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument(
        "--sample",
        type=int,
        default=100,
        help="commits git verifies (0 = all); its rate is extrapolated",
    )
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the repository here")
    args = parser.parse_args()

    rounds = 3
    with tempfile.TemporaryDirectory(prefix="outpost-bench-verify-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        repo = build(workdir, args.commits)
        pack(repo)
        outpost = Outpost(repo, workdir / "allowed_signers", args.commits)
        shas = run(["git", "rev-list", "HEAD"], repo).split()
        if args.sample and args.sample < len(shas):
            step = len(shas) / args.sample
            shas = [shas[int(i * step)] for i in range(args.sample)]
        # Interleave the two so both see the same load on a shared machine.
        ours_times: list[float] = []
        git_times: list[float] = []
        git_counts: list[int] = []
        for number in range(rounds):
            chunk = shas[number::rounds]
            ours_times.append(outpost.run())
            git_times.append(git_verify(repo, workdir / "git_allowed_signers", chunk))
            git_counts.append(len(chunk))
        process = outpost.run_cli()

    ours = args.commits / statistics.median(ours_times)
    theirs = sum(git_counts) / sum(git_times)
    per_round = [
        (args.commits / o) / (n / g)
        for o, g, n in zip(ours_times, git_times, git_counts, strict=True)
    ]
    checked = sum(git_counts)
    sampled = (
        "all commits"
        if checked == args.commits
        else f"an evenly spaced sample of {checked} of {args.commits} commits, rate extrapolated"
    )
    print(
        f"repository: {args.commits} signed commits (ed25519; every 10th by a root signer, the "
        "rest by a delegated signer within apps/pos/**), objects packed as in a fetched mirror"
    )
    print(
        f"outpost (in-process, whole range, cold caches, median of {rounds}): "
        f"{statistics.median(ours_times):.3f} s → {ours:,.0f} commits/s"
    )
    print(
        f"outpost verify (one CLI process, incl. interpreter start-up): "
        f"{process:.3f} s → {args.commits / process:,.0f} commits/s"
    )
    print(
        f"git verify-commit ({sampled}): {sum(git_times):.2f} s for {checked} → "
        f"{theirs:,.1f} commits/s"
    )
    ratio = ours / theirs
    print(
        f"ratio: {ratio:,.0f}× git's rate in-process (per interleaved round: "
        f"{', '.join(f'{r:,.0f}×' for r in per_round)}), {args.commits / process / theirs:,.0f}× "
        f"as a CLI process; goal ≥ {GOAL:.0f}× — {'met' if ratio >= GOAL else 'NOT met'}"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
