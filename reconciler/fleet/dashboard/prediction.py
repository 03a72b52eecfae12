"""A change's predicted schedule: `outpost schedule`'s own code, run on the verified repository.

The change page needs, for commit C, the instant each site's node may first
apply C. That is ``outpost schedule --base C^ --head C --trust-root …``:
`reconciler.ci.schedule.schedule_change` reads the range as the node does,
verifies it against the collector's trust root and predicts each affected
site with `reconciler.core.schedule.predict` — the functions the node's gate
calls. Nothing here re-implements a rule.

What it costs, and where it is paid:

- **Once per commit.** A commit never changes, nor does the trust root while
  the collector runs, so an answer is kept per commit (`Predictions`, at most
  `KEEP` commits). Nothing else on the change page is kept: the rollout
  (who runs what) is read from the store at every view.
- **Ahead of the first view.** Reading 10,000 sites' documents at two
  revisions takes seconds, so the collector starts the computation as soon as
  it learns of a new head (`Predictions.ahead`, called when a refresh verifies
  one), before anybody opens the page. A view that arrives while it runs waits
  for that same computation (never a second one, never another commit's
  answer); a commit that was never a head (an older change) is computed at its
  first view.
- **Kept in the store** too (`Store.keep_prediction`, by commit and by the
  digest of the trust root it was verified against): a restarted collector,
  or another collector on the same database, finds it there instead of
  computing it again. Only the schedule is kept, never the rollout.
- **In a child process** (`predict_in_child`): the work is pure Python, and in
  the collector's own process it would hold the interpreter lock that ingest
  and every other page need. The child is started for one computation (a
  fresh interpreter, `reconciler.fleet._child`: no copy of the server's
  threads, sockets or memory, and no `multiprocessing` resource tracker left
  running after it) and exits; its answer comes back as `to_json` text. It runs
  at the collector's own priority: a lowered one starved it on a busy machine
  (seconds became tens of seconds), and it is seconds of one core per new head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path

from reconciler.core.envelope import loads
from reconciler.core.errors import ConfigError
from reconciler.fleet.collector.fleetview import read_trust_root
from reconciler.fleet.collector.store import Store, StoreError, StoreUnavailable
from reconciler.fleet.dashboard.views import Predicted

__all__ = ["KEEP", "Predictions", "from_json", "predict_change", "predict_in_child", "to_json"]

log = logging.getLogger("outpost.collector")

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


def predict_in_child(repository: Path, trust: Path, commit: str, *, now: datetime) -> Predicted:
    """`predict_change` in a child process of its own (see the module docstring).

    The child is a fresh interpreter (`reconciler.fleet._child`) that prints the answer
    as `to_json`; a child that cannot start, dies or prints something else is a problem
    on the page (and not kept, so the next view tries again), never an exception out of
    the page.
    """
    import subprocess

    from reconciler.core.errors import OutpostError
    from reconciler.fleet._child import python_running

    command = python_running(
        "reconciler.fleet.dashboard.prediction",
        "_child_main",
        str(repository),
        str(trust),
        commit,
        now.isoformat(),
    )
    try:
        done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise OSError(f"the child exited with {done.returncode}: {' '.join(last)}")
        return from_json(done.stdout.decode("utf-8"))
    except (OSError, OutpostError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        return Predicted(
            now, {}, {}, problem=f"the schedule of {commit[:12]} could not be computed: {exc}"
        )


def _child_main() -> None:
    """The child of `predict_in_child`: REPOSITORY TRUST COMMIT NOW in, `to_json` out."""
    import sys

    repository, trust, commit, now = sys.argv[1:5]
    predicted = predict_change(
        Path(repository), Path(trust), commit, now=datetime.fromisoformat(now)
    )
    sys.stdout.write(to_json(predicted))


def to_json(predicted: Predicted) -> str:
    return json.dumps(
        {
            "start": predicted.start.isoformat(),
            "sites": {s: t.isoformat() if t else None for s, t in predicted.sites.items()},
            "blockers": dict(predicted.blockers),
            "problem": predicted.problem,
        },
        sort_keys=True,
    )


def from_json(text: str) -> Predicted:
    body = loads(text)
    return Predicted(
        datetime.fromisoformat(body["start"]),
        {s: datetime.fromisoformat(t) if t else None for s, t in body["sites"].items()},
        dict(body["blockers"]),
        problem=body["problem"],
    )


class Predictions:
    """Predictions kept per commit; thread-safe, one computation per commit at a time."""

    def __init__(
        self,
        repository: Path,
        trust: Path,
        *,
        predict: Callable[..., Predicted] = predict_in_child,
        store: Store | None = None,
    ) -> None:
        self.repository = repository
        self.trust = trust
        self.store = store
        self._predict = predict
        self._kept: OrderedDict[str, Future[Predicted]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, commit: str, *, now: datetime) -> Predicted:
        """The prediction of ``commit``: kept, being computed (waits for it), or computed now."""
        with self._lock:
            entry = self._kept.get(commit)
            mine = entry is None
            if entry is None:
                entry = self._kept[commit] = Future()
            self._kept.move_to_end(commit)
        if mine:
            self._compute(commit, entry, now=now)
        return entry.result()

    def ahead(self, commit: str, *, now: datetime) -> None:
        """Start computing ``commit`` in the background unless it is kept or under way."""
        with self._lock:
            if commit in self._kept:
                return
        threading.Thread(
            target=self.get,
            args=(commit,),
            kwargs={"now": now},
            name="outpost-prediction",
            daemon=True,
        ).start()

    def _compute(self, commit: str, entry: Future[Predicted], *, now: datetime) -> None:
        try:
            found = self._kept_in_store(commit)
            if found is None:
                found = self._predict(self.repository, self.trust, commit, now=now)
                if found.problem is None or found.sites:
                    self._keep_in_store(commit, found, now=now)
        except Exception as exc:  # a defect must not leave viewers waiting forever
            log.error("prediction failed", extra={"commit": commit, "error": str(exc)})
            found = Predicted(now, {}, {}, problem=f"the schedule could not be computed: {exc}")
        with self._lock:
            if found.problem is not None and not found.sites:
                self._kept.pop(commit, None)  # computed again at the next view
            done = [c for c, f in self._kept.items() if f.done() and c != commit]
            for old in done[: max(0, len(self._kept) - KEEP)]:
                del self._kept[old]
        entry.set_result(found)

    def _trust_digest(self) -> str | None:
        try:
            return hashlib.sha256(read_trust_root(self.trust)).hexdigest()
        except ConfigError:
            return None  # computed (and refused) by the prediction itself, never kept

    def _kept_in_store(self, commit: str) -> Predicted | None:
        digest = self._trust_digest()
        if self.store is None or digest is None:
            return None
        try:
            text = self.store.prediction(commit, digest)
        except (StoreError, StoreUnavailable) as exc:
            log.warning("predictions not readable", extra={"error": exc.message})
            return None
        return from_json(text) if text is not None else None

    def _keep_in_store(self, commit: str, found: Predicted, *, now: datetime) -> None:
        digest = self._trust_digest()
        if self.store is None or digest is None:
            return
        try:
            self.store.keep_prediction(commit, digest, to_json(found), now=now)
        except (StoreError, StoreUnavailable) as exc:  # kept in memory all the same
            log.warning("prediction not kept in the store", extra={"error": exc.message})
