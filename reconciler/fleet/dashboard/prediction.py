"""A change's predicted schedule: `outpost schedule`'s own code, run on the verified repository.

The change page needs, for commit C, the instant each site's node may first
apply C. That is ``outpost schedule --base C^ --head C --trust-root …``:
`reconciler.ci.schedule.schedule_change` reads the range as the node does,
verifies it against the collector's trust root and predicts each affected
site with `reconciler.core.schedule.predict` — the functions the node's gate
calls. Nothing here re-implements a rule.

A commit never changes, nor does the trust root while the collector runs, so
an answer is kept per commit (`Predictions`, at most `KEEP` commits): a
fleet-wide change over 10,000 sites is computed once, not per page view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from reconciler.fleet.dashboard.views import Predicted

__all__ = ["KEEP", "Predictions", "predict_change"]

KEEP = 32


def predict_change(repository: Path, trust: Path, commit: str, *, now: datetime) -> Predicted:
    """The schedule of ``commit`` against its first parent; a problem is reported, not raised."""
    from datetime import UTC

    import pygit2

    from reconciler.ci.schedule import schedule_change
    from reconciler.core.errors import OutpostError

    try:
        git = pygit2.Repository(str(repository))
        parents = git[commit].peel(pygit2.Commit).parent_ids
    except (KeyError, ValueError, pygit2.GitError):
        return Predicted(now, {}, {}, problem=f"{commit[:12]} is not in {repository}")
    if not parents:
        return Predicted(now, {}, {}, problem=f"{commit[:12]} is the first commit: no base")
    try:
        schedule = schedule_change(
            repository, str(parents[0]), commit, start=None, now=now, trust_root=trust
        )
    except OutpostError as exc:
        return Predicted(now, {}, {}, problem=str(exc))
    if schedule.refused is not None:
        return Predicted(now, {}, {}, problem=schedule.refused)
    sites = {
        p.site: p.first_allowed.astimezone(UTC) if p.first_allowed else None
        for p in schedule.predictions
    }
    blockers = {p.site: p.blocker for p in schedule.predictions if p.blocker}
    problem = "; ".join(schedule.errors) or None
    return Predicted(schedule.start, sites, blockers, problem=problem)


class Predictions:
    """`predict_change` answers kept per commit; thread-safe, one computation per commit."""

    def __init__(
        self,
        repository: Path,
        trust: Path,
        *,
        predict: Callable[..., Predicted] = predict_change,
    ) -> None:
        self.repository = repository
        self.trust = trust
        self._predict = predict
        self._kept: OrderedDict[str, Predicted] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, commit: str, *, now: datetime) -> Predicted:
        with self._lock:
            found = self._kept.get(commit)
            if found is not None:
                self._kept.move_to_end(commit)
                return found
            found = self._predict(self.repository, self.trust, commit, now=now)
            if found.problem is None or found.sites:
                self._kept[commit] = found
                while len(self._kept) > KEEP:
                    self._kept.popitem(last=False)
            return found
