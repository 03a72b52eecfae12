"""``outpost heartbeat``: move the signed heartbeat tag onto the branch head, with the time.

Run by CI on a schedule (every hour, say), with a key that ``spec.heartbeat.keys`` of
``policies/signers.yaml`` lists and nothing else trusts. The tag is an annotated tag
object signed the way ``git tag -s`` with ``gpg.format=ssh`` signs (namespace ``git``):
the git CLI writes it, ``ssh-keygen`` signs it. The tagger time is the signed time a
node compares with ``maxSilence``. Push it with ``git push --force origin
refs/tags/outpost/heartbeat`` (or ``--push origin``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.errors import SourceUnavailable
from reconciler.core.trust.heartbeat import HEARTBEAT_TAG

__all__ = ["HeartbeatWritten", "write_heartbeat"]

_TIMEOUT = 120.0


@dataclass(frozen=True)
class HeartbeatWritten:
    tag: str
    target: str
    signed_at: datetime
    pushed: str | None


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"git {args[0]} in {repo} did not run: {exc}") from None
    if done.returncode != 0:
        raise SourceUnavailable(
            f"git {args[0]} in {repo} failed: {done.stderr.strip()[:400] or done.returncode}"
        )
    return done.stdout.strip()


def write_heartbeat(
    repo: Path,
    key: Path,
    *,
    branch: str,
    now: datetime,
    push: str | None = None,
    tag: str = HEARTBEAT_TAG,
) -> HeartbeatWritten:
    """Sign ``refs/tags/<tag>`` onto ``branch``'s head at ``now``; push it to ``push``."""
    if not key.is_file():
        raise SourceUnavailable(f"the heartbeat key {key} is not a file (an SSH private key)")
    target = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    stamp = f"@{int(now.timestamp())} +0000"
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _git(
        repo,
        "-c", "gpg.format=ssh",
        "-c", f"user.signingkey={key}",
        "tag", "--sign", "--force",
        "-m", f"Outpost heartbeat\n\n{branch} was at {target} at {when}.",
        tag, target,
        env={"GIT_COMMITTER_DATE": stamp},
    )  # fmt: skip
    if push is not None:
        _git(repo, "push", "--quiet", "--force", push, f"refs/tags/{tag}:refs/tags/{tag}")
    return HeartbeatWritten(tag, target, now.astimezone(UTC).replace(microsecond=0), push)
