"""When this node first saw each commit: the soak clock a signer cannot set.

A commit's committer time is whatever its signer typed. The gate measures a wave's
soak from the change time, so a delegated signer who dates a commit just after its
parent — or days back — would open every wave at once. The node therefore takes the
*later* of the committer time and the moment it first saw the commit, and keeps the
second here, in ``first-seen.json`` in its state directory (atomic writes, like every
file there).

A commit dated at or before the node's enrolled floor (``spec.trust.floor``) is older
than the node itself: the pipeline takes its committer time instead, so a freshly
enrolled node does not restart a wave's soak for history it was enrolled past.

Losing the file only makes commits look newer (seen again now): the soak gets longer,
never shorter. The file is bounded: the oldest entries go first past `MAX_ENTRIES`,
long after their waves have opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.core.files import write_json

__all__ = ["FIRST_SEEN_FILE", "MAX_ENTRIES", "FirstSeen"]

FIRST_SEEN_FILE = "first-seen.json"
MAX_ENTRIES = 20_000
_MAX_BYTES = 8 * 1024 * 1024


class FirstSeen:
    """``first-seen.json``: commit id → unix time this node first saw it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FIRST_SEEN_FILE

    def load(self) -> dict[str, float]:
        """What was recorded; an unreadable file counts as empty (commits look newer, the
        safe direction) and is rewritten by the next `see`."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(_MAX_BYTES + 1)
        except OSError:
            return {}
        if len(raw) > _MAX_BYTES:
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}
        seen = data.get("seen") if isinstance(data, dict) else None
        if not isinstance(seen, dict):
            return {}
        return {
            str(sha): float(when)
            for sha, when in seen.items()
            if isinstance(when, int | float) and not isinstance(when, bool)
        }

    def see(self, commits: Iterable[str], now: float) -> Mapping[str, float]:
        """Record ``now`` for each commit not seen before; return the first-seen time of each."""
        known = self.load()
        wanted = list(dict.fromkeys(commits))
        new = [sha for sha in wanted if sha not in known]
        for sha in new:
            known[sha] = now
        if new:
            if len(known) > MAX_ENTRIES:
                keep = sorted(known.items(), key=lambda item: item[1])[-MAX_ENTRIES:]
                known = dict(keep)
                for sha in wanted:
                    known.setdefault(sha, now)
            write_json(self.path, {"apiVersion": "outpost/v1", "kind": "FirstSeen", "seen": known})
        return {sha: known[sha] for sha in wanted}
