"""The node waits and applies exactly when ``outpost schedule --base --head`` says it will.

A signed copy of the example fleet gets three commits in one range:

- C1 (Wed 21:00 UTC) adds a POS value to fleet retail-eu;
- C2 (Wed 21:30 UTC) moves fleet retail-apac to node-metrics 1.8.2;
- C3 (Wed 21:45 UTC) edits only de-fra-0088's site.yaml.

``outpost schedule`` is run in-process over C0..C3. Then, for stores in
several waves and zones, the real node pipeline (verify, desired: render,
checks, secrets, then gate — no cluster) is asked with a fake clock, stepped
every 15 minutes from C3's committer time and then minute by minute over the
last step, when it first allows the apply. It must be the predicted instant,
and the node's first Wait must already name that instant as ``until``.

A site's change time is the later of the committer time of the last commit that
changed its slice and the time its node first saw that commit (a signer cannot
date a commit back to skip a wave's soak). Here every node first sees the three
commits together, at C3, as the schedule assumes for a committed head; a node
that saw C1 on its own at 21:00 counts de-ham-0113's soak from then — the change
time is still per site and per commit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.node.agent import Desired, Verified
from reconciler.node.config import load_config
from reconciler.node.fetch import Mirror
from reconciler.node.pipeline import NodePipeline
from tools.signedfleet import SignedFleet, create

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)  # after the example fleets' peak-season freeze
C1 = datetime(2027, 2, 3, 21, 0, tzinfo=UTC)
C2 = datetime(2027, 2, 3, 21, 30, tzinfo=UTC)
C3 = datetime(2027, 2, 3, 21, 45, tzinfo=UTC)
STEP = timedelta(minutes=15)
HORIZON = timedelta(days=8)
SITES = {
    "de-muc-0007": "canary",  # Munich, retail-eu canary
    "de-ber-0042": "hypermarkets",  # Berlin hypermarket, second wave
    "de-fra-0088": "early",  # Frankfurt, also changed by C3 (its own folder)
    "de-ham-0113": "all",  # Hamburg, last wave
    "au-syd-0501": "canary",  # Australia/Sydney, retail-apac canary
    "in-blr-0601": "all",  # Asia/Kolkata (+05:30), retail-apac last wave
}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def change(tmp_path_factory: pytest.TempPathFactory) -> tuple[SignedFleet, str, str]:
    fleet = create(tmp_path_factory.mktemp("repo"), when=T0)
    before = fleet.head()
    fleet.edit(
        "fleets/retail-eu.yaml",
        lambda t: t.replace(
            "values: {currency: EUR}", "values: {currency: EUR, offlineQueueHours: 24}"
        ),
    )
    fleet.commit("retail-eu: lanes keep selling 24 h offline", when=C1)
    fleet.edit(
        "fleets/retail-apac.yaml",
        lambda t: t.replace("node-metrics: {version: 1.8.1}", "node-metrics: {version: 1.8.2}"),
    )
    fleet.commit("retail-apac: node-metrics 1.8.2", when=C2)
    fleet.edit("sites/de-fra-0088/site.yaml", lambda t: t + "# refit planned for March 2027\n")
    after = fleet.commit("Frankfurt: site.yaml touched", when=C3)
    return fleet, before, after


def _schedule(fleet: SignedFleet, before: str, after: str) -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["schedule", str(fleet.path), "--base", before, "--head", after, "-o", "json"])
    assert code == 0
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def _node(tmp_path: Path, fleet: SignedFleet, site: str) -> tuple[NodePipeline, Mirror]:
    config = tmp_path / f"{site}.yaml"
    key = tmp_path / f"{site}.key"  # a checkout leaves the example key readable by all
    key.write_bytes((ROOT / "tests/keys/age" / f"{site}.key").read_bytes())
    key.chmod(0o600)
    config.write_text(
        "apiVersion: outpost/v1\n"
        "kind: AgentConfig\n"
        "spec:\n"
        f"  site: {site}\n"
        f'  source: {{url: "{fleet.url}", branch: main}}\n'
        f"  trustRoot: {fleet.allowed_signers}\n"
        f"  ageKey: {key}\n"
        f"  stateDir: {tmp_path / site}\n"
    )
    loaded = load_config(config)
    return NodePipeline(loaded), Mirror(tmp_path / site / "mirror")


def _first_apply(
    pipeline: NodePipeline,
    mirror: Mirror,
    verified: Verified,
    desired: Desired,
    start: datetime,
) -> tuple[datetime, datetime | None]:
    """The first instant the gate allows, stepping from ``start``; and the first Wait's until."""
    first = pipeline.gate(mirror, verified, desired, start)
    if first.allowed:
        return start, None
    t = start
    while True:
        t += STEP
        assert t - start < HORIZON, f"the gate still waits at {t}: {first.reason}"
        if pipeline.gate(mirror, verified, desired, t).allowed:
            break
    minute = t - STEP
    while True:
        minute += timedelta(minutes=1)
        if pipeline.gate(mirror, verified, desired, minute).allowed:
            return minute, first.until


def test_the_node_applies_exactly_when_the_schedule_says(
    tmp_path: Path, change: tuple[SignedFleet, str, str]
) -> None:
    fleet, before, after = change
    data = _schedule(fleet, before, after)
    rows = {row["site"]: row for row in data["sites"]}
    assert set(SITES) <= set(rows)
    assert data["start"] == _iso(C3)  # a committed head is scheduled from its committer time
    assert data["change"]["commits"] == 3
    # Nodes first see C1 and C2 with C3: their soak counts from C3, not from their dates.
    assert rows["de-ham-0113"]["waveOpens"] == _iso(C3 + timedelta(hours=96))
    assert rows["de-fra-0088"]["waveOpens"] == _iso(C3 + timedelta(hours=48))
    assert rows["in-blr-0601"]["waveOpens"] == _iso(C3 + timedelta(hours=48))
    assert any("first see every commit of the change at" in n for n in data["notes"])

    for site, wave in SITES.items():
        row = rows[site]
        assert row["wave"] == wave, (site, row)
        assert row["firstAllowed"] is not None, (site, row)
        expected = datetime.fromisoformat(row["firstAllowed"])
        pipeline, mirror = _node(tmp_path, fleet, site)
        candidate = mirror.fetch(fleet.url, "main")
        assert candidate == after
        verified = pipeline.verify(mirror, before, candidate, C3)  # first sees the change
        desired = pipeline.desired(mirror, candidate)
        applied, until = _first_apply(pipeline, mirror, verified, desired, C3)
        assert applied == expected, (site, applied, expected)
        if until is not None:
            assert until == expected, (site, until, expected)


def test_a_site_the_range_does_not_touch_is_not_scheduled_and_not_gated(
    tmp_path: Path, change: tuple[SignedFleet, str, str]
) -> None:
    fleet, before, after = change
    data = _schedule(fleet, before, after)
    scheduled = {row["site"] for row in data["sites"]}
    assert "us-chi-0201" not in scheduled  # retail-us: no commit in the range touched it
    pipeline, mirror = _node(tmp_path, fleet, "us-chi-0201")
    candidate = mirror.fetch(fleet.url, "main")
    verified = pipeline.verify(mirror, before, candidate, C3 + timedelta(minutes=1))
    desired = pipeline.desired(mirror, candidate, checks=False)
    decision = pipeline.gate(mirror, verified, desired, C3)
    assert decision.allowed
    assert "no commit in the range changed this site's slice" in decision.reason


def test_a_commit_seen_earlier_keeps_its_earlier_change_time(
    tmp_path: Path, change: tuple[SignedFleet, str, str]
) -> None:
    """The node saw C1 alone at 21:00 (its own tick), then C2 and C3 at 21:45: de-ham-0113's
    slice last changed in C1, so its wave opens 96 h after 21:00 — per site, per commit."""
    fleet, before, after = change
    pipeline, mirror = _node(tmp_path, fleet, "de-ham-0113")
    candidate = mirror.fetch(fleet.url, "main")
    c1 = fleet.git("rev-parse", f"{after}~2")
    pipeline.verify(mirror, before, c1, C1)
    verified = pipeline.verify(mirror, before, candidate, C3 + timedelta(minutes=1))
    desired = pipeline.desired(mirror, candidate)
    applied, _ = _first_apply(pipeline, mirror, verified, desired, C3)
    assert applied == C1 + timedelta(hours=96)


def test_a_commit_dated_back_does_not_skip_the_soak(tmp_path: Path) -> None:
    """A signer dates a fleet-wide change a week back, just after its parent. The node first
    sees it at C3 + 1 h: the hypermarkets' 24 h soak runs from then, and `outpost schedule`,
    told when nodes see it (--from), predicts the same instant."""
    fleet = create(tmp_path / "repo", when=T0)
    after = fleet.head()
    fleet.edit(
        "fleets/retail-eu.yaml",
        lambda t: t.replace(
            "values: {currency: EUR}", "values: {currency: EUR, offlineQueueHours: 12}"
        ),
    )
    backdated = fleet.commit("retail-eu: dated back", when=T0 + timedelta(minutes=1))
    seen = C3 + timedelta(hours=1)
    pipeline, mirror = _node(tmp_path, fleet, "de-ber-0042")
    candidate = mirror.fetch(fleet.url, "main")
    assert candidate == backdated
    verified = pipeline.verify(mirror, after, candidate, seen)
    assert verified.changed_at == seen
    desired = pipeline.desired(mirror, candidate)
    applied, _ = _first_apply(pipeline, mirror, verified, desired, seen)

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["schedule", str(fleet.path), "--base", after, "--head", backdated, "--from",
             _iso(seen), "-o", "json"]
        )  # fmt: skip
    assert code == 0
    rows = {row["site"]: row for row in json.loads(out.getvalue())["sites"]}
    assert rows["de-ber-0042"]["firstAllowed"] == _iso(applied)
    assert applied >= seen + timedelta(hours=24)  # hypermarkets open a day after the canaries
def test_an_error_of_the_gate_is_a_refusal_with_its_reason(
    tmp_path: Path, change: tuple[SignedFleet, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation refuses what the schedule cannot compute; should anything still overflow
    in the gate, the commit is refused (a PermanentError the tick records) — never a crash."""
    import reconciler.core.schedule
    from reconciler.core.errors import PermanentError

    fleet, before, after = change
    pipeline, mirror = _node(tmp_path, fleet, "de-muc-0007")
    candidate = mirror.fetch(fleet.url, "main")
    verified = pipeline.verify(mirror, before, candidate, C3 + timedelta(minutes=1))
    desired = pipeline.desired(mirror, candidate, checks=False)

    def overflowing(*args: Any, **kwargs: Any) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(reconciler.core.schedule, "decide", overflowing)
    with pytest.raises(PermanentError) as refused:
        pipeline.gate(mirror, verified, desired, C3)
    assert f"the update gate cannot decide for revision {after[:12]}" in str(refused.value)
    assert "OverflowError: date value out of range" in str(refused.value)
