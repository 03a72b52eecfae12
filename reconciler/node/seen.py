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
never shorter. That is the safe direction, and the one an unreadable file takes too:
a FIFO, a link, a file over `MAX_BYTES`, JSON that is cut short or holds anything but
commit ids and times is `RecordUnreadable` (naming the file and what it should hold),
moved aside as ``first-seen.json.corrupt``, and every commit of the range counts as seen
at this tick — a damaged file can restart a wave's soak, never skip one. The warning
goes into the tick's status. The file is bounded: the oldest entries go first past
`MAX_ENTRIES`, long after their waves have opened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.core.files import write_json
from reconciler.node.state import (
    RecordUnreadable,
    read_record,
    set_aside,
    unix_time,
    wrong_field,
)

__all__ = ["FIRST_SEEN_FILE", "MAX_BYTES", "MAX_ENTRIES", "FirstSeen"]

FIRST_SEEN_FILE = "first-seen.json"
KIND = "FirstSeen"
MAX_ENTRIES = 20_000
MAX_BYTES = 4 * 1024 * 1024
"""`MAX_ENTRIES` lines of ``"<40 hex>": <time>,`` are about 1.5 MB as the agent writes them."""


class FirstSeen:
    """``first-seen.json``: commit id → unix time this node first saw it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FIRST_SEEN_FILE
        self.warnings: list[str] = []
        """What `see` found wrong with the file (for the tick's status)."""

    def load(self) -> dict[str, float]:
        """What was recorded ({} without a file); `RecordUnreadable` naming the file when it
        is not a FirstSeen record of commit ids and unix times."""
        data = read_record(self.path, KIND, MAX_BYTES)
        if data is None:
            return {}
        seen = data.get("seen")
        if not isinstance(seen, dict):
            raise wrong_field(self.path, "seen", "an object of commit id: unix time", seen)
        for sha, when in seen.items():
            if unix_time(when) is None:
                raise wrong_field(self.path, f"seen.{sha}", "a unix time (a number)", when)
        return {str(sha): float(when) for sha, when in seen.items()}

    def see(self, commits: Iterable[str], now: float) -> Mapping[str, float]:
        """Record ``now`` for each commit not seen before; return the first-seen time of each.

        An unreadable file is set aside and every commit counts as first seen ``now`` (a
        soak restarts, none is skipped); the reason is added to `warnings`.
        """
        try:
            known = self.load()
        except RecordUnreadable as exc:
            known = {}
            self.warnings.append(
                set_aside(
                    self.path,
                    exc,
                    "every commit of the range counts as first seen now: a wave's soak "
                    "starts again, none is skipped",
                )
            )
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
