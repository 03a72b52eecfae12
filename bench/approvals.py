"""Benchmark: what thresholds cost verification, in the worst case for them.

Builds two repositories of N commits signed with real ssh-keygen keys, identical but for
one line of ``policies/signers.yaml``: in one, ``spec.thresholds`` asks two root principals
for ``policies/**`` and every commit changes a file there, signed by the same single root
signer — so every commit is pending and no approval ever arrives (the most searching the
approvals pass can be made to do); in the other there is no threshold. Then, in interleaved
rounds (the same load on a shared machine for both), `verify_repository` over the whole
history, caches cleared first; the medians and their ratio are printed.

Goal: thresholds cost no more than 1.5x plain verification on the same range (the pass is
linear in the range for root thresholds, whatever the number of pending commits).

    python bench/approvals.py [--commits 400] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

GOAL = 1.5
START = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    import os

    done = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr}")
    return done.stdout.strip()


def build(workdir: Path, name: str, commits: int, key: Path, threshold: bool) -> Path:
    repo = workdir / name
    if (repo / ".git").exists():
        return repo
    repo.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    for option, value in [("user.name", "Bench"), ("user.email", "bench@example.com"),
                          ("gpg.format", "ssh"), ("commit.gpgsign", "true")]:  # fmt: skip
        run(["git", "config", option, value], repo)
    (repo / "policies").mkdir()
    extra = "  thresholds:\n    - {paths: ['policies/**'], approvals: 2}\n" if threshold else ""
    (repo / "policies/signers.yaml").write_text(
        "apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: signers}\nspec:\n"
        "  signers: []\n" + extra
    )
    for number in range(commits):
        (repo / "policies" / f"rule-{number % 13}.txt").write_text(f"revision {number}\n")
        stamp = f"@{START + 60 * number} +0000"
        run(["git", "add", "-A"], repo)
        run(["git", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", f"rule {number}"],
            repo, {"GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp})  # fmt: skip
    run(["git", "gc", "-q"], repo)
    return repo


def verify(repo: Path, trust_file: Path, commits: int, *, pending: bool) -> float:
    import pygit2

    from reconciler.core.trust import rules, sshsig
    from reconciler.core.trust.allowed_signers import parse_allowed_signers
    from reconciler.core.trust.gitsource import verify_repository

    sshsig._verifier.cache_clear()
    rules.parse_signers.cache_clear()
    rules.compile_pattern.cache_clear()
    began = time.perf_counter()
    trust = parse_allowed_signers(trust_file.read_bytes(), str(trust_file))
    now = datetime.fromtimestamp(START, UTC) + timedelta(days=30)
    result = verify_repository(pygit2.Repository(str(repo)), trust, now=now)
    elapsed = time.perf_counter() - began
    expected = commits - 1 if pending else 0  # the first commit adds the threshold itself
    if not result.ok or len(result.verdicts) != commits or len(result.pending) != expected:
        raise SystemExit(
            f"{repo}: {len(result.verdicts)} verdicts, {len(result.pending)} pending "
            f"(expected {commits} and {expected}): {result.error}"
        )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=400)
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the repositories here")
    args = parser.parse_args()
    rounds = 5
    with tempfile.TemporaryDirectory(prefix="outpost-bench-approvals-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        key = workdir / "root"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], workdir)
        public = Path(f"{key}.pub").read_text().strip()
        trust_file = workdir / "allowed_signers"
        trust_file.write_text(
            f"root@example.com {public}\n"
            # a second root principal who never signs: the threshold stays unmet
            "other@example.com ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIHf2DLkUl2albbnUy6guYOdfhSLHi+aJSbFEd3e27U7Z\n"
        )
        began = time.perf_counter()
        plain = build(workdir, "plain", args.commits, key, threshold=False)
        gated = build(workdir, "thresholds", args.commits, key, threshold=True)
        print(f"built 2 x {args.commits} signed commits in {time.perf_counter() - began:.0f} s",
              file=sys.stderr)  # fmt: skip
        plain_times: list[float] = []
        gated_times: list[float] = []
        for _ in range(rounds):
            plain_times.append(verify(plain, trust_file, args.commits, pending=False))
            gated_times.append(verify(gated, trust_file, args.commits, pending=True))
    ours, base = statistics.median(gated_times), statistics.median(plain_times)
    ratio = ours / base
    print(f"range: {args.commits} commits, each changing policies/, one root signer (ed25519)")
    print(f"no thresholds (median of {rounds}): {base:.3f} s")
    print(f"threshold of 2 on policies/**, {args.commits - 1} commits pending "
          f"(median of {rounds}): {ours:.3f} s")  # fmt: skip
    print(f"ratio: {ratio:.2f}x plain verification; goal <= {GOAL}x - "
          f"{'met' if ratio <= GOAL else 'NOT met'}")  # fmt: skip
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
