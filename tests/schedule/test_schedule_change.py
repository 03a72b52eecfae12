"""``outpost schedule --base``: the change's sites, its inputs as the node computes them.

Pure parts first (``signed_change`` against the rule it replaced in the node's
pipeline, as a property), then render's sources, then the command over signed
repositories made with ``tools.signedfleet``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ci.schedule import SliceSources, schedule_change
from reconciler.cli import main
from reconciler.core.model import Repository, Site
from reconciler.core.render import render_site
from reconciler.core.schedule import SignedRange, changed_fleets, signed_change
from reconciler.core.source import WorkdirTree
from reconciler.node.pipeline import NodePipeline
from tools.signedfleet import SignedFleet, create, make_key

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
C1 = datetime(2027, 2, 3, 21, 0, tzinfo=UTC)
LATER = datetime(2027, 3, 1, tzinfo=UTC)  # a clock after every commit here


# -- signed_change, pure ----------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    committed_at: datetime
    paths: frozenset[str]
    emergency: bool = False
    emergency_reason: str = ""
    first_seen: datetime | None = None


@dataclass(frozen=True)
class Assignment:
    app: str


@dataclass(frozen=True)
class Doc:
    path: str


@dataclass(frozen=True)
class Fleet:
    name: str
    doc: Doc
    apps: tuple[Assignment, ...]


def fleet(name: str, *apps: str) -> Fleet:
    return Fleet(name, Doc(f"fleets/{name}.yaml"), tuple(Assignment(a) for a in apps))


EU = fleet("retail-eu", "pos", "node-metrics")
VISION = fleet("store-vision", "camera-analytics")
SOURCES = {
    "sites/de-ber-0042/site.yaml",
    "fleets/retail-eu.yaml",
    "fleets/store-vision.yaml",
    "apps/pos/app.yaml",
    "apps/camera-analytics/app.yaml",
}


def at(hours: int) -> datetime:
    return C1 + timedelta(hours=hours)


def test_a_range_that_misses_the_slice_is_no_change() -> None:
    commits = [Commit(at(0), frozenset({"sites/de-muc-0007/site.yaml", "policies/x.yaml"}))]
    assert signed_change(commits, SOURCES, [EU, VISION]) is None


def test_the_last_touching_commit_gives_the_time_and_the_emergency() -> None:
    commits = [
        Commit(at(0), frozenset({"fleets/retail-eu.yaml"}), True, "CVE"),
        Commit(at(1), frozenset({"sites/de-ber-0042/site.yaml"})),
        Commit(at(2), frozenset({"sites/de-muc-0007/site.yaml"}), True, "other store"),
    ]
    found = signed_change(commits, SOURCES, [EU, VISION], revision="abc")
    assert found is not None
    assert found.change.changed_at == at(1)
    assert not found.change.emergency  # the newest content was not declared urgent
    assert found.change.revision == "abc"
    assert found.changed_fleets == ("retail-eu",)
    assert found.commits == 2


def test_an_app_file_changes_the_fleets_that_assign_the_app() -> None:
    commits = [Commit(at(0), frozenset({"apps/camera-analytics/app.yaml"}))]
    found = signed_change(commits, SOURCES, [EU, VISION])
    assert found is not None
    assert found.changed_fleets == ("store-vision",)
    own = [Commit(at(0), frozenset({"sites/de-ber-0042/site.yaml"}))]
    only_site = signed_change(own, SOURCES, [EU, VISION])
    assert only_site is not None
    assert only_site.changed_fleets == ()  # a site-only change: no fleet's waves gate it


PATHS = [
    "fleets/retail-eu.yaml",
    "fleets/store-vision.yaml",
    "fleets/plants.yaml",
    "apps/pos/app.yaml",
    "apps/pos/README.md",
    "apps/camera-analytics/manifests/a.yaml",
    "apps/historian/app.yaml",
    "sites/de-ber-0042/site.yaml",
    "sites/de-ber-0042/overrides.yaml",
    "sites/de-muc-0007/site.yaml",
    "policies/p.yaml",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5), st.frozensets(st.sampled_from(PATHS), max_size=4), st.booleans()
        ),
        max_size=6,
    ),
    st.frozensets(st.sampled_from(PATHS), max_size=6),
)
def test_signed_range_equals_the_rule_over_the_union_of_paths(
    raw: list[tuple[int, frozenset[str], bool]], sources: frozenset[str]
) -> None:
    """The node's rule restated: touching commits (a path of the slice, or any path in one of
    its site or app folders — a deletion there changes the slice too), the latest, fleets
    over the union."""
    commits = sorted(
        (Commit(at(h), paths, flag, "r" if flag else "") for h, paths, flag in raw),
        key=lambda c: c.committed_at,
    )
    fleets = [EU, VISION, fleet("plants", "historian")]
    found = SignedRange(commits).change_for(sources, fleets)
    folders = {
        "/".join(p.split("/")[:2]) + "/" for p in sources if p.startswith(("sites/", "apps/"))
    }
    touching = [
        c
        for c in commits
        if c.paths & sources or any("/".join(p.split("/")[:2]) + "/" in folders for p in c.paths)
    ]
    if not touching:
        assert found is None
        return
    latest = max(touching, key=lambda c: c.committed_at)
    union = {p for c in touching for p in c.paths}
    assert found is not None
    assert found.change.changed_at == latest.committed_at
    assert found.change.emergency == latest.emergency
    assert list(found.changed_fleets) == changed_fleets(fleets, union)


# -- render's sources -------------------------------------------------------------------


def test_change_sources_equal_render_sources() -> None:
    """SliceSources renders one site per (fleets, own apps) and must still equal rendering all."""
    repo = Repository(WorkdirTree(ROOT))
    sources = SliceSources(repo)
    for site_id in repo.site_ids:
        site = Site(repo.document(f"sites/{site_id}/site.yaml", "Site", site_id))
        assert sources(site_id, site) == set(render_site(repo, site_id).sources), site_id
    assert sources.rendered < len(repo.site_ids)  # some combination was reused


# -- the command ------------------------------------------------------------------------


@pytest.fixture
def fleet_repo(tmp_path: Path) -> SignedFleet:
    return create(tmp_path / "repo", when=T0)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["schedule", *args, "-o", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data: dict[str, Any] = json.loads(captured.out)
    return data


def bump_eu(fleet_repo: SignedFleet) -> None:
    fleet_repo.edit(
        "fleets/retail-eu.yaml",
        lambda t: t.replace("values: {currency: EUR}", "values: {currency: EUR, logLevel: warn}"),
    )


def test_working_tree_change_assumes_a_merge_time(
    fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    base = fleet_repo.head()
    bump_eu(fleet_repo)
    args = [str(fleet_repo.path), "--base", base, "--from", "2027-02-08T10:00:00Z"]
    data = run_json(capsys, *args)
    sites = {row["site"] for row in data["sites"]}
    assert sites == {"de-ber-0042", "de-fra-0088", "de-ham-0113", "de-muc-0007"}
    assert data["change"]["assumedMergeAt"] == "2027-02-08T10:00:00Z"
    assert any("assuming the change merges at 2027-02-08 10:00" in n for n in data["notes"])
    assert main(["schedule", *args, "-o", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "assuming the change merges at 2027-02-08 10:00" in markdown
    assert "**1 canary store tonight; 1 hypermarkets store tomorrow;" in markdown
    assert main(["schedule", *args]) == 0
    assert "note: change" in capsys.readouterr().out


def test_a_policy_change_reaches_no_gate(
    fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    base = fleet_repo.head()
    fleet_repo.write("policies/extra.yaml", "# not read by any slice\n")
    head = fleet_repo.commit("policies: a comment", when=C1)
    data = run_json(capsys, str(fleet_repo.path), "--base", base, "--head", head)
    assert data["sites"] == []
    assert data["change"]["unreached"] == data["change"]["affected"] > 0
    assert any("without waiting" in n for n in data["notes"])


def test_only_the_named_sites_and_removed_sites(
    fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    base = fleet_repo.head()
    bump_eu(fleet_repo)
    fleet_repo.git("rm", "-rq", "sites/de-fra-0088")
    head = fleet_repo.commit("retail-eu: warn; Frankfurt closes", when=C1)
    args = [str(fleet_repo.path), "--base", base, "--head", head]
    data = run_json(capsys, *args, "--site", "de-muc-0007", "--site", "us-chi-0201")
    assert [row["site"] for row in data["sites"]] == ["de-muc-0007"]
    data = run_json(capsys, *args)
    assert data["change"]["removed"] == 1
    assert "de-fra-0088" not in {row["site"] for row in data["sites"]}


def test_a_pause_in_the_range_blocks_like_the_node(
    tmp_path: Path, fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.node.config import load_config
    from reconciler.node.fetch import Mirror

    base = fleet_repo.head()
    bump_eu(fleet_repo)
    fleet_repo.commit("retail-eu: warn", when=C1)
    fleet_repo.edit(
        "fleets/retail-eu.yaml", lambda t: t.replace("  waves:", "  paused: true\n  waves:")
    )
    head = fleet_repo.commit("retail-eu: pause", when=C1 + timedelta(hours=30))
    data = run_json(capsys, str(fleet_repo.path), "--base", base, "--head", head)
    rows = {row["site"]: row for row in data["sites"]}
    assert rows["de-muc-0007"]["blocked"] == "paused"
    assert all(row["firstAllowed"] is None for row in data["sites"])

    config = tmp_path / "agent.yaml"
    key = tmp_path / "de-muc-0007.key"  # a checkout leaves the example key readable by all
    key.write_bytes((ROOT / "tests/keys/age/de-muc-0007.key").read_bytes())
    key.chmod(0o600)
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        f'  source: {{url: "{fleet_repo.url}", branch: main}}\n'
        f"  trustRoot: {fleet_repo.allowed_signers}\n"
        f"  ageKey: {key}\n"
        f"  stateDir: {tmp_path / 'state'}\n"
    )
    pipeline = NodePipeline(load_config(config))
    mirror = Mirror(tmp_path / "mirror")
    candidate = mirror.fetch(fleet_repo.url, "main")
    verified = pipeline.verify(mirror, base, candidate, LATER)
    desired = pipeline.desired(mirror, candidate, checks=False)
    decision = pipeline.gate(mirror, verified, desired, LATER)
    assert not decision.allowed
    assert decision.until is None
    assert "paused" in decision.reason


def test_an_emergency_counts_only_from_a_root_signer_with_trust_root(tmp_path: Path) -> None:
    """Without --trust-root the trailer is taken at its word (and said so); with it, only
    a root-signed emergency passes the freeze, as on the node."""
    autumn = datetime(2026, 11, 10, 9, tzinfo=UTC)  # before the peak-season freeze
    fleet_repo = create(tmp_path / "repo", when=autumn)
    ops = make_key(tmp_path / "ops", "ops-eu-2")
    public = " ".join(ops.with_suffix(".pub").read_text().split()[:2])
    fleet_repo.edit(
        "policies/signers.yaml",
        lambda t: t.replace(
            "  signers:\n",
            f'  signers:\n    - name: ops-eu-2\n      keys: ["{public}"]\n'
            "      paths: [fleets/retail-eu.yaml]\n",
            1,
        ),
    )
    base = fleet_repo.commit("signers: ops-eu-2", when=autumn + timedelta(hours=1))
    bump_eu(fleet_repo)
    in_freeze = datetime(2026, 12, 2, 12, tzinfo=UTC)  # in the example fleets' peak season
    head = fleet_repo.commit("retail-eu: warn", when=in_freeze, key=ops, emergency="CVE-2027-1")
    kwargs: dict[str, Any] = {"start": None, "now": LATER, "sites": ["de-muc-0007"]}

    trusted = schedule_change(fleet_repo.path, base, head, **kwargs)
    assert any("taken as root-signed without checking" in n for n in trusted.notes)
    assert trusted.predictions[0].held_by is None

    checked = schedule_change(
        fleet_repo.path, base, head, trust_root=fleet_repo.allowed_signers, **kwargs
    )
    assert checked.refused is None
    assert checked.predictions[0].held_by == "peak-season"

    # An empty root-signed emergency commit changes no slice: the last commit that did
    # is still the delegated signer's, so the freeze still holds.
    empty = fleet_repo.commit("retail-eu: root says", when=in_freeze, emergency="CVE-2027-1")
    again = schedule_change(
        fleet_repo.path, base, empty, trust_root=fleet_repo.allowed_signers, **kwargs
    )
    assert again.predictions[0].held_by == "peak-season"
    fleet_repo.edit(
        "fleets/retail-eu.yaml", lambda t: t.replace("logLevel: warn", "logLevel: error")
    )
    later = in_freeze + timedelta(minutes=5)
    root_head = fleet_repo.commit("retail-eu: error", when=later, emergency="CVE-2027-1")
    root = schedule_change(
        fleet_repo.path, base, root_head, trust_root=fleet_repo.allowed_signers, **kwargs
    )
    assert root.predictions[0].held_by is None
    assert root.predictions[0].first_allowed == later


def test_an_unsigned_commit_is_refused_with_trust_root(fleet_repo: SignedFleet) -> None:
    base = fleet_repo.head()
    bump_eu(fleet_repo)
    head = fleet_repo.commit("retail-eu: warn", when=C1, sign=False)
    result = schedule_change(
        fleet_repo.path, base, head, start=None, now=LATER, trust_root=fleet_repo.allowed_signers
    )
    assert result.refused is not None
    assert head[:7] in result.refused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head", "HEAD"], "--head needs --base"),
        (["--trust-root", "x"], "--trust-root needs --base"),
        (["--base", "HEAD", "--head", "HEAD", "--emergency", "x"], "--emergency is for"),
        (["--base", "HEAD", "--trust-root", "x"], "give --head"),
        (["--base", "no-such-rev"], "no-such-rev"),
    ],
)
def test_usage_errors(
    fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["schedule", str(fleet_repo.path), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_site_that_cannot_render_is_an_error_and_the_rest_are_scheduled(
    fleet_repo: SignedFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    base = fleet_repo.head()
    bump_eu(fleet_repo)
    fleet_repo.edit(
        "sites/de-muc-0007/site.yaml",
        lambda t: t.replace("fleets: [retail-eu]", "fleets: [retail-eu, nope]"),
    )
    fleet_repo.edit(
        "sites/de-ham-0113/site.yaml", lambda t: t + '  apps:\n    ghost: {version: "1.0"}\n'
    )
    head = fleet_repo.commit("Munich and Hamburg break", when=C1)
    code = main(["schedule", str(fleet_repo.path), "--base", base, "--head", head, "-o", "json"])
    captured = capsys.readouterr()
    assert code == 2
    assert "site 'de-muc-0007' names fleet 'nope'" in captured.err
    assert "site de-ham-0113: app 'ghost' is assigned here" in captured.err
    data = json.loads(captured.out)
    assert {row["site"] for row in data["sites"]} == {"de-ber-0042", "de-fra-0088"}
    assert data["change"]["errors"] == 2


def test_a_deleted_file_in_the_site_folder_is_a_change() -> None:
    """Deleting sites/<id>/overrides.yaml changes the slice though the head no longer reads it."""
    sources = frozenset({"sites/de-muc-0007/site.yaml", "apps/pos/app.yaml"})
    deletion = Commit(at(3), frozenset({"sites/de-muc-0007/overrides.yaml"}), False, "")
    other_site = Commit(at(4), frozenset({"sites/de-ber-0042/overrides.yaml"}), False, "")
    found = SignedRange([deletion, other_site]).change_for(sources, [EU])
    assert found is not None
    assert found.change.changed_at == deletion.committed_at
    manifest = Commit(at(5), frozenset({"apps/pos/manifests/old.yaml"}), False, "")
    found = SignedRange([manifest]).change_for(sources, [EU])
    assert found is not None
    assert found.changed_fleets == ("retail-eu",)


def test_change_time_is_the_later_of_committer_time_and_first_seen() -> None:
    """A commit dated back does not move the change time before the node saw it; one the node
    saw before its (skewed) committer time keeps the committer time."""
    paths = frozenset({"fleets/retail-eu.yaml"})
    dated_back = Commit(at(-72), paths, first_seen=at(2))
    on_time = Commit(at(1), paths, first_seen=at(0))
    unknown = Commit(at(3), paths)
    assert signed_change([dated_back], SOURCES, [EU]).change.changed_at == at(2)  # type: ignore[union-attr]
    assert signed_change([on_time], SOURCES, [EU]).change.changed_at == at(1)  # type: ignore[union-attr]
    assert signed_change([unknown], SOURCES, [EU]).change.changed_at == at(3)  # type: ignore[union-attr]
    both = signed_change([on_time, dated_back], SOURCES, [EU])
    assert both is not None and both.change.changed_at == at(2)


def test_pending_approvals_are_shown_with_trust_root(tmp_path: Path) -> None:
    """A policy change under a threshold of two, signed by one root: the schedule says who
    must still approve it and where the nodes stay meanwhile."""
    autumn = datetime(2026, 11, 10, 9, tzinfo=UTC)
    fleet_repo = create(tmp_path / "repo", when=autumn)
    fleet_repo.edit(
        "policies/signers.yaml",
        lambda t: t + "  thresholds:\n    - paths: ['policies/**']\n      approvals: 2\n",
    )
    base = fleet_repo.commit("policies: two principals", when=autumn + timedelta(hours=1))
    bump_eu(fleet_repo)
    eu = fleet_repo.commit("retail-eu: warn", when=autumn + timedelta(hours=2))
    fleet_repo.write("policies/extra.txt", "one more rule\n")
    head = fleet_repo.commit("policies: extra", when=autumn + timedelta(hours=3))
    kwargs: dict[str, Any] = {"start": None, "now": LATER, "sites": ["de-muc-0007"]}

    result = schedule_change(
        fleet_repo.path, base, head, trust_root=fleet_repo.allowed_signers, **kwargs
    )

    assert result.refused is None
    [pending] = result.change["approvalsPending"]
    assert pending.startswith(f"commit {head[:7]} changes policies/extra.txt: it needs 2")
    assert "has 1 (ops-root@example.com)" in pending
    note = next(n for n in result.notes if "wait for approvals" in n)
    assert f"nodes stay on {eu[:12]} until they are approved" in note
