"""``outpost fleet promote``: open the next wave of a change, or halt it, as signed data.

For every fleet with gated waves (``gate:`` in its waves) and its change in flight — the
newest commit on the head's first-parent line that touched the fleet's file or one of its
apps — the promoter judges the first gated wave not yet opened, from the collector's
stored reports (`collector.rollout.change_state`: the same per-site answer the API gives):

1. **Halt** when more of the earlier waves' sites rolled the change back or refused it than
   the gate's ``maxFailed``. Checked first and without waiting for the soak: a failed
   canary stops the rollout in the first run after its report arrives.
2. **Promote** when at least the gate's ``healthy`` share of the earlier waves' sites run
   the change (or a later one that includes it) and report healthy, and the wave's soak
   (the longer of its ``soak`` and the gate's ``minSoak``) has passed since the previous
   wave opened. Silent sites count against the share.
3. Otherwise **wait**, naming the rule that is not met yet.

The soak is counted here from the change's committer time (the promoter has no node's
memory); each node counts its own from when it first saw the change (trust rule 16), so
a node may open its wave later than the promotion says, never earlier.

A decision is written to ``rollouts/<fleet>/<change>.yaml`` (`core.schedule._promotion`)
and committed with ``git commit -S`` (``gpg.format=ssh``, the promoter's key), the
commit message naming the rule and the sites it was judged on. The promoter's scope in
``policies/signers.yaml`` is ``rollouts/**``: the trust rules refuse its key on anything
else. The clock, the store's records and the repository view come in as arguments.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError, OutpostError
from reconciler.core.schedule import (
    FleetRollout,
    PromotionState,
    RolloutRecord,
    format_utc,
    promotion_state,
    record_path,
)
from reconciler.core.schedule._model import PERCENT_SCALE
from reconciler.fleet.collector.fleetview import FleetView
from reconciler.fleet.collector.rollout import change_state, remembered
from reconciler.fleet.collector.store import SiteRecord

__all__ = ["Decision", "FleetChange", "commit_decision", "decide_fleet", "fleet_changes"]

MAX_WALK = 2000
"""First-parent commits walked back from the head to find each fleet's change."""
SITES_LISTED = 50


@dataclass(frozen=True)
class FleetChange:
    """A fleet's change in flight: the commit, its committer time, the fleet's rollout."""

    fleet: str
    change: str
    changed_at: datetime
    rollout: FleetRollout


@dataclass(frozen=True)
class Decision:
    """One fleet's answer for its change: promote, halt, wait, or nothing left to decide."""

    fleet: str
    change: str
    action: str
    """``promote``, ``halt``, ``wait``, ``halted`` (earlier) or ``done``."""
    wave: str | None
    rule: str
    sites: tuple[str, ...] = ()
    record: RolloutRecord | None = field(default=None, compare=False)

    @property
    def writes(self) -> bool:
        return self.record is not None

    def message(self) -> str:
        """The commit message: the decision, the rule, the sites it was judged on."""
        verb = {"promote": "open wave", "halt": "halt before wave"}[self.action]
        lines = [
            f"rollout {self.fleet} {self.change[:12]}: {verb} {self.wave!r}",
            "",
            f"Change {self.change} in fleet {self.fleet}.",
            f"Rule: {self.rule}",
            "",
            "Sites judged:",
        ]
        lines += [f"  {s}" for s in self.sites[:SITES_LISTED]]
        if len(self.sites) > SITES_LISTED:
            lines.append(f"  … and {len(self.sites) - SITES_LISTED} more (see the collector)")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "change": self.change,
            "action": self.action,
            "wave": self.wave,
            "rule": self.rule,
            "sites": list(self.sites),
        }


def fleet_changes(git_repo: Any, revision: str) -> list[FleetChange]:
    """Each gated fleet's change in flight at ``revision`` (already verified by the caller)."""
    import pygit2

    from reconciler.core.model import Repository
    from reconciler.core.schedule import fleet_touched
    from reconciler.core.source import CommitTree

    model = Repository(CommitTree(git_repo, revision))
    gated = []
    for name in model.fleet_names:
        fleet = model.fleet(name)
        if fleet is None:
            continue
        rollout = FleetRollout.from_document(fleet.doc)
        if rollout.gated:
            gated.append((fleet, rollout))
    found: list[FleetChange] = []
    commit = git_repo[revision].peel(pygit2.Commit)
    for _ in range(MAX_WALK):
        if not gated:
            break
        parent = commit.parents[0] if commit.parents else None
        if parent is not None:
            diff = git_repo.diff(parent.tree, commit.tree)
        else:
            diff = commit.tree.diff_to_tree(swap=True)
        paths = frozenset(p for d in diff.deltas for p in (d.old_file.path, d.new_file.path) if p)
        when = datetime.fromtimestamp(commit.commit_time, UTC)
        for fleet, rollout in list(gated):
            if fleet_touched(fleet, paths):
                found.append(FleetChange(fleet.name, str(commit.id), when, rollout))
                gated.remove((fleet, rollout))
        if parent is None:
            break
        commit = parent
    return found


def decide_fleet(
    change: FleetChange,
    records: Sequence[RolloutRecord],
    view: FleetView,
    reports: Mapping[str, SiteRecord],
    *,
    now: datetime,
    descends: Callable[[str, str], bool | None],
) -> Decision:
    """The promoter's answer for one fleet's change; pure (reports and clock passed in)."""
    fleet, sha, rollout = change.fleet, change.change, change.rollout
    state = promotion_state(records, sha, lambda a, b: descends(a, b) is True)
    if state.halted is not None:
        return Decision(fleet, sha, "halted", None, state.halted)
    by_wave: dict[int, list[str]] = {}
    for site, info in view.sites.items():
        index = info.wave_order.get(fleet)
        if index is not None:
            by_wave.setdefault(index, []).append(site)
    opens = change.changed_at
    for i, wave in enumerate(rollout.waves):
        opens += wave.effective_soak
        if wave.gate is None:
            continue
        promoted = _promoted(state, wave.name)
        if promoted is not None:
            opens = max(opens, promoted)
            continue
        gate = wave.gate
        earlier = sorted(s for j in range(i) for s in by_wave.get(j, ()))
        healthy: list[str] = []
        failed: list[str] = []
        lines: list[str] = []
        for site in earlier:
            report = reports.get(site)
            state_at, why, _ = change_state(sha, report, view.sites.get(site), now, descends)
            ok = state_at == "applied" and report is not None and report.health == "healthy"
            if ok:
                healthy.append(site)
            elif state_at in ("rolled-back", "refused"):
                failed.append(site)
            health = report.health if report is not None else "no report"
            lines.append(f"{site}: {state_at}{'' if ok else ' (' + (why or health) + ')'}")
        share = len(healthy) * 100 * PERCENT_SCALE // max(len(earlier), 1)
        counts = (
            f"{len(healthy)} of {len(earlier)} earlier sites applied and healthy "
            f"({share / PERCENT_SCALE:g} %), {len(failed)} rolled back or refused"
        )
        if len(failed) > gate.max_failed:
            rule = (
                f"wave {wave.name!r} gate: at most {gate.max_failed} of the earlier waves' "
                f"sites may roll back or refuse; {counts}: halted"
            )
            why = (
                f"{len(failed)} of the earlier waves' sites rolled back or refused the "
                f"change ({', '.join(failed[:5])}); the gate allows {gate.max_failed}"
            )
            halt = RolloutRecord("Halt", fleet, sha, state.promoted, wave.name, now, why)
            return Decision(fleet, sha, "halt", wave.name, rule, tuple(lines), halt)
        enough = bool(earlier) and share >= gate.healthy_bp
        if enough and now >= opens:
            rule = (
                f"wave {wave.name!r} gate: at least {gate.healthy_bp / PERCENT_SCALE:g} % "
                f"applied and healthy, at most {gate.max_failed} failed, soak until "
                f"{format_utc(opens)}; {counts}: opened"
            )
            opened = (*state.promoted, (wave.name, now))
            record = RolloutRecord("Promotion", fleet, sha, opened, reason=rule)
            return Decision(fleet, sha, "promote", wave.name, rule, tuple(lines), record)
        waiting = (
            f"soak until {format_utc(opens)}"
            if enough
            else f"at least {gate.healthy_bp / PERCENT_SCALE:g} % applied and healthy ({counts})"
        )
        return Decision(fleet, sha, "wait", wave.name, f"wave {wave.name!r} waits on {waiting}")
    return Decision(fleet, sha, "done", None, "every gated wave is open")


def _promoted(state: PromotionState, wave: str) -> datetime | None:
    return next((at for name, at in state.promoted if name == wave), None)


def commit_decision(workdir: Path, decision: Decision, *, key: Path, now: datetime) -> str:
    """Write the decision's record and commit it signed by ``key``; return the commit id.

    Only the record's path is staged and committed (``git commit -- <path>``): whatever
    else lies in the working tree stays out of the promoter's commit.
    """
    if decision.record is None:
        raise ConfigError(f"nothing to commit for fleet {decision.fleet}: {decision.rule}")
    if not key.is_file():
        raise ConfigError(f"promoter key {key}: not a file (an SSH private key is expected)")
    path = record_path(decision.fleet, decision.change)
    target = workdir / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(decision.record.to_yaml())
    stamp = f"@{int(now.timestamp())} +0000"
    env = {**os.environ, "GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp}
    _git(workdir, env, "add", "--", path)
    _git(
        workdir,
        env,
        "-c", "gpg.format=ssh",
        "-c", f"user.signingkey={key}",
        "commit", "-q", "-S", "-F", "-", "--", path,
        stdin=decision.message(),
    )  # fmt: skip
    return _git(workdir, env, "rev-parse", "HEAD").strip()


def _git(workdir: Path, env: Mapping[str, str], *args: str, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=workdir,
            env=dict(env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OutpostError(f"git {args[0]} in {workdir}: {exc}") from None
    if done.returncode != 0:
        raise OutpostError(f"git {' '.join(args[:3])} in {workdir}: {done.stderr.strip()}")
    return done.stdout


def promote(
    workdir: Path,
    source: Any,
    reports: Mapping[str, SiteRecord],
    *,
    now: datetime,
    key: Path | None,
) -> list[tuple[Decision, str | None]]:
    """One promote run: every gated fleet's decision, committed unless ``key`` is None.

    ``source`` is the collector's `FleetSource` for ``workdir`` (refreshed: the head is
    verified against the root signers before anything is decided from it). Returns each
    decision with the commit that recorded it (None: nothing written, or a dry run).
    """
    from reconciler.core.schedule import read_records
    from reconciler.core.source import CommitTree
    from reconciler.core.trust.gitsource import open_repository

    view = source.status.view
    if view is None:
        raise ConfigError(f"the fleet repository did not verify: {source.status.problem}")
    git_repo = open_repository(workdir)
    tree = CommitTree(git_repo, view.revision)
    descends = remembered(source.descends)

    out: list[tuple[Decision, str | None]] = []
    for change in fleet_changes(git_repo, view.revision):
        records = read_records(tree, change.fleet)
        decision = decide_fleet(change, records, view, reports, now=now, descends=descends)
        commit = None
        if decision.writes and key is not None:
            commit = commit_decision(workdir, decision, key=key, now=now)
        out.append((decision, commit))
    return out


MAX_API_BYTES = 256 * 1024 * 1024
"""Cap on the collector's answer read by ``--api`` (10,000 sites are about 10 MB)."""


def reports_from_api(
    base_url: str, token: str, *, ca: Path | None = None, timeout: float = 60.0
) -> dict[str, SiteRecord]:
    """Every site's newest report as the collector's read API gives it (``GET /api/v1/sites``).

    The same records the store holds, read over HTTPS with a bearer token: for a promoter
    that runs where the database is not reachable (CI on a schedule).
    """
    import json

    import urllib3

    from reconciler.core.errors import TemporaryError

    pool = urllib3.PoolManager(
        ca_certs=str(ca) if ca else None,
        cert_reqs="CERT_REQUIRED" if base_url.startswith("https:") else None,
        timeout=urllib3.Timeout(connect=10.0, read=timeout),
        retries=False,
    )
    url = base_url.rstrip("/") + "/api/v1/sites"
    try:
        answer = pool.request(
            "GET", url, headers={"Authorization": f"Bearer {token}"}, preload_content=False
        )
        body = answer.read(MAX_API_BYTES + 1)
        answer.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"the collector at {url} did not answer: {exc}") from None
    if len(body) > MAX_API_BYTES:
        raise ConfigError(f"{url}: the answer exceeds {MAX_API_BYTES:,} bytes")
    if answer.status != 200:
        text = body[:300].decode("utf-8", "replace")
        raise ConfigError(f"{url}: HTTP {answer.status}, expected 200: {text}")
    try:
        sites = json.loads(body)["sites"]
        return {r.site: r for r in (_record(s) for s in sites) if r is not None}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{url}: not the collector's site list ({exc})") from None


def _record(site: Mapping[str, Any]) -> SiteRecord | None:
    """A `SiteRecord` from the API's site JSON (`collector.rollout.site_json`); None: no report."""
    if site.get("reported") is None:
        return None
    at = datetime.fromisoformat(str(site["reported"]))
    applied = site.get("applied") or {}
    pending = site.get("pending") or {}
    return SiteRecord(
        site=str(site["site"]),
        node=str(site.get("node") or ""),
        time=at,
        received=at,
        digest="",
        outcome=str(site.get("outcome") or ""),
        health=str(site.get("health") or ""),
        applied=applied.get("revision"),
        applied_at=applied.get("at"),
        pending=pending.get("revision"),
        pending_reason=pending.get("reason"),
        pending_until=pending.get("until"),
        last_error=site.get("lastError"),
        failed=tuple(str(f) for f in site.get("failedRevisions") or ()),
        source_answered=site.get("sourceLastAnswered"),
        warnings=tuple(str(w) for w in site.get("warnings") or ()),
    )
