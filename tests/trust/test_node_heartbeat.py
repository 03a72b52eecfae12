"""The heartbeat: a signed tag CI moves onto the branch head, and a node that notices when
it stops moving (a git server withholding updates: TUF's freeze attack).

Real keys, real ``git tag -s`` (gpg.format=ssh, via ``outpost heartbeat``), the example
fleet signed by a real root key, and the node's real mirror and pipeline: the tag is
verified with the repository's own SSHSIG code against ``spec.heartbeat.keys``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ci.heartbeat import write_heartbeat
from reconciler.core.errors import OutpostError, VerificationError
from reconciler.core.trust.heartbeat import verify_heartbeat
from reconciler.core.trust.rules import parse_signers
from reconciler.fleet.bundle import create_bundle
from reconciler.fleet.feed import publish_feed
from reconciler.node.agent import TickReport, metrics_text, status_document
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.feed_index import parse_index
from reconciler.node.fetch import HEARTBEAT_REF, Mirror
from reconciler.node.inbox import import_inbox, keep_heartbeat
from reconciler.node.pipeline import NodePipeline
from reconciler.node.state import AgentState
from tools.signedfleet import SignedFleet, create, make_key

T0 = datetime.now(UTC).replace(microsecond=0)
STORE = "de-muc-0007"


def public(key: Path) -> str:
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture
def world(tmp_path: Path) -> tuple[SignedFleet, Path, Path]:
    """The example fleet with a CI heartbeat key and retail-eu's maxSilence of 6h."""
    fleet = create(tmp_path / "repo", when=T0 - timedelta(days=2))
    ci_key = make_key(tmp_path / "ci", "heartbeat-ci")
    rogue = make_key(tmp_path / "rogue", "rogue")
    fleet.edit(
        "policies/signers.yaml",
        lambda t: t + f'  heartbeat:\n    keys: ["{public(ci_key)}"]\n',
    )
    fleet.edit(
        "fleets/retail-eu.yaml",
        lambda t: t.replace(
            "spec:\n", "spec:\n  heartbeat: {maxSilence: 6h, maxSilenceAirGapped: 30d}\n", 1
        ),
    )
    fleet.commit("heartbeat: CI key, 6h", when=T0 - timedelta(days=1))
    return fleet, ci_key, rogue


def node(
    tmp_path: Path, fleet: SignedFleet, *, stick: Path | None = None
) -> tuple[NodePipeline, Mirror]:
    config = AgentConfig(
        path=tmp_path / "agent.yaml",
        site=STORE,
        source=SourceConfig(url=None if stick else fleet.url, branch="main", credentials=None),
        bundle_inbox=stick,
        outbox=None,
        trust_root=fleet.allowed_signers,
        age_key=None,
        kubeconfig=None,
        state_dir=tmp_path / "state",
        health_deadline=60,
        stale_after=3 * 86400,
        field_manager="outpost",
        max_commits=1000,
        metrics_dir=None,
    )
    return NodePipeline(config), Mirror(config.mirror_dir)


def tag_object(fleet: SignedFleet) -> tuple[str, bytes]:
    sha = fleet.git("rev-parse", "refs/tags/outpost/heartbeat")
    raw = subprocess.run(
        ["git", "-C", str(fleet.path), "cat-file", "tag", sha], capture_output=True, check=True
    ).stdout
    return sha, raw


def test_outpost_heartbeat_writes_a_tag_the_core_verifies(
    world: tuple[SignedFleet, Path, Path],
) -> None:
    fleet, ci_key, rogue = world
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "heartbeat", "--repo", str(fleet.path),
         "--key", str(ci_key), "--branch", "main"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"heartbeat outpost/heartbeat → {fleet.head()[:12]} signed at" in done.stdout
    rules = parse_signers((fleet.path / "policies/signers.yaml").read_bytes())

    sha, raw = tag_object(fleet)
    beat = verify_heartbeat(sha, raw, rules)
    assert beat.target == fleet.head()
    assert abs(beat.signed_at - datetime.now(UTC).timestamp()) < 120

    # Signed by a key the heartbeat role does not list: not a heartbeat.
    write_heartbeat(fleet.path, rogue, branch="main", now=T0)
    sha, raw = tag_object(fleet)
    with pytest.raises(VerificationError, match=r"which spec\.heartbeat\.keys"):
        verify_heartbeat(sha, raw, rules)
    # A root key may sign commits, not heartbeats.
    write_heartbeat(fleet.path, fleet.root_key, branch="main", now=T0)
    sha, raw = tag_object(fleet)
    with pytest.raises(VerificationError, match=r"which spec\.heartbeat\.keys"):
        verify_heartbeat(sha, raw, rules)

    # The time moved forward after signing: the signature no longer matches.
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    sha, raw = tag_object(fleet)
    stamp = str(int(T0.timestamp())).encode()
    later = str(int(T0.timestamp()) + 86400).encode()
    forged = raw.replace(stamp, later, 1)
    forged_sha = subprocess.run(
        ["git", "-C", str(fleet.path), "hash-object", "-t", "tag", "-w", "--literally", "--stdin"],
        input=forged, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    with pytest.raises(VerificationError, match="does not match"):
        verify_heartbeat(forged_sha, forged, rules)
    with pytest.raises(VerificationError, match="does not hash to its id"):
        verify_heartbeat(sha, forged, rules)


def test_a_node_whose_server_stops_moving_the_heartbeat_reports_it_after_max_silence(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    fleet, ci_key, _ = world
    pipeline, mirror = node(tmp_path / "node", fleet)
    head = fleet.head()
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    mirror.fetch(fleet.url, "main")

    fresh = pipeline.freshness(mirror, head, head, T0 + timedelta(hours=1))
    assert fresh.signed_at == T0.timestamp() and fresh.note is None
    assert not fresh.withheld and fresh.warning() is None

    # CI keeps signing: still fresh seven hours on.
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0 + timedelta(hours=5))
    mirror.fetch(fleet.url, "main")
    assert not pipeline.freshness(mirror, head, head, T0 + timedelta(hours=7)).withheld

    # The server stops moving it (serves the last one forever): reported after 6 h.
    stuck = T0 + timedelta(hours=11, minutes=1)
    mirror.fetch(fleet.url, "main")
    fresh = pipeline.freshness(mirror, head, head, stuck)
    assert fresh.withheld
    warning = fresh.warning()
    assert warning is not None
    assert warning.startswith("updates may be withheld: the newest signed heartbeat is 6.0 h old")
    report = TickReport(heartbeat=fresh)
    status = status_document(STORE, AgentState(site=STORE), report, stuck)
    assert status["heartbeat"]["updatesMayBeWithheld"] is True
    assert status["heartbeat"]["signedAt"] == (T0 + timedelta(hours=5)).isoformat()
    metrics = metrics_text(STORE, AgentState(site=STORE), report, stuck)
    assert f'outpost_updates_may_be_withheld{{site="{STORE}"}} 1' in metrics

    # A replayed older heartbeat does not move the time back, nor forward.
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    mirror.fetch(fleet.url, "main")
    fresh = pipeline.freshness(mirror, head, head, stuck)
    assert fresh.signed_at == (T0 + timedelta(hours=5)).timestamp() and fresh.withheld


def test_a_heartbeat_ahead_of_the_served_branch_does_not_count(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    """The server shows an old head with a fresh tag on a newer commit it withholds."""
    fleet, ci_key, _ = world
    pipeline, mirror = node(tmp_path / "node", fleet)
    served = fleet.head()
    fleet.write("sites/de-muc-0007/notes.txt", "withheld\n")
    fleet.commit("a change the server withholds", when=T0)
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    mirror.fetch(fleet.url, "main")

    fresh = pipeline.freshness(mirror, served, served, T0 + timedelta(hours=1))

    assert fresh.signed_at is None
    assert fresh.note is not None and "is not the fetched head" in fresh.note
    assert mirror.repo.references.get(HEARTBEAT_REF) is not None
    assert not fresh.withheld  # the node has watched for no time yet
    later = pipeline.freshness(mirror, served, served, T0 + timedelta(hours=7, minutes=1))
    assert later.withheld
    assert (later.warning() or "").startswith(
        "updates may be withheld: no signed heartbeat in 6.0 h of watching"
    )


def test_an_air_gapped_plant_reads_the_heartbeat_its_bundle_carries(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    fleet, ci_key, _ = world
    stick = tmp_path / "stick"
    stick.mkdir()
    pipeline, mirror = node(tmp_path / "plant", fleet, stick=stick)
    head = fleet.head()
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    manifest = create_bundle(fleet.path, STORE, None, "HEAD", stick / "a.bundle", now=T0)
    assert manifest.heartbeat  # the stick carries the signed tag
    [imported] = import_inbox(mirror, stick, now=T0)
    assert imported.outcome == "imported" and imported.note is None

    fresh = pipeline.freshness(mirror, head, head, T0 + timedelta(days=1))
    assert fresh.signed_at == T0.timestamp()
    assert fresh.max_silence == 30 * 86400  # the plant's own limit, not the stores' 6 h
    assert not fresh.withheld
    assert pipeline.freshness(mirror, head, head, T0 + timedelta(days=31)).withheld


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.lists(
            st.sampled_from(
                [b"object " + b"a" * 40, b"type commit", b"tag outpost/heartbeat",
                 b"tagger CI <ci@example.com> 1700000000 +0000", b"tagger x", b"",
                 b"-----BEGIN SSH SIGNATURE-----", b"AAAA", b"-----END SSH SIGNATURE-----",
                 b"object zz", b"\xff\xfe"]
            ),
            max_size=12,
        ).map(b"\n".join),
    )
)  # fmt: skip
def test_any_bytes_as_a_heartbeat_tag_are_refused_with_a_reason(raw: bytes) -> None:
    """Whatever a server puts under the tag's name: a VerificationError, never a crash."""
    sha = hashlib.sha1(b"tag %d\0" % len(raw) + raw, usedforsecurity=False).hexdigest()  # git ids
    rules = parse_signers(
        b"apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: s}\nspec:\n  signers: []\n"
    )
    with pytest.raises(VerificationError):
        verify_heartbeat(sha, raw, rules)


def test_each_publish_of_the_feed_carries_the_newest_heartbeat(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    """The feed's index is fetched every tick, so it carries the tag; a publish with no new
    commit still refreshes it (CI runs heartbeat, then publish, on its schedule)."""
    fleet, ci_key, _ = world
    out = tmp_path / "feed"
    head = fleet.head()
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    publish_feed(fleet.path, "main", out, now=T0)
    first = parse_index((out / "index.json").read_bytes(), "index.json")
    assert first.heartbeat

    write_heartbeat(fleet.path, ci_key, branch="main", now=T0 + timedelta(hours=1))
    publish_feed(fleet.path, "main", out, now=T0 + timedelta(hours=1))
    second = parse_index((out / "index.json").read_bytes(), "index.json")
    assert second.head == head and second.heartbeat != first.heartbeat

    pipeline, mirror = node(tmp_path / "node", fleet)
    mirror.fetch(fleet.url, "main")  # the commits; the tag comes from the index below
    mirror.repo.references.delete(HEARTBEAT_REF)
    assert keep_heartbeat(mirror, second.heartbeat) is None
    fresh = pipeline.freshness(mirror, head, head, T0 + timedelta(hours=2))
    assert fresh.signed_at == (T0 + timedelta(hours=1)).timestamp()


def served(
    tmp_path: Path, fleet: SignedFleet, ci_key: Path, change: str
) -> tuple[NodePipeline, Mirror, str]:
    """``change`` committed, a heartbeat signed at T0, and a node that fetched both."""
    fleet.commit(change, when=T0 - timedelta(hours=12))
    pipeline, mirror = node(tmp_path / "node", fleet)
    head = fleet.head()
    write_heartbeat(fleet.path, ci_key, branch="main", now=T0)
    mirror.fetch(fleet.url, "main")
    return pipeline, mirror, head


HOSTILE_FLEETS = {
    # site.yaml's fleets: entries of the wrong type are no fleet
    "wrong types": (
        "sites/de-muc-0007/site.yaml",
        lambda t: t.replace("fleets: [retail-eu]", "fleets: [{a: 1}, 7, [x], retail-eu]"),
    ),
    # the fleet's limits: out of range, the wrong type, a negative duration: no limit
    "limits of no use": (
        "fleets/retail-eu.yaml",
        lambda t: t.replace(
            "heartbeat: {maxSilence: 6h, maxSilenceAirGapped: 30d}",
            "heartbeat: {maxSilence: 99999999999d, maxSilenceAirGapped: {x: 1}}",
        ),
    ),
    "a negative duration": (
        "fleets/retail-eu.yaml",
        lambda t: t.replace("maxSilence: 6h,", 'maxSilence: "-6h",'),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FLEETS))
def test_a_site_or_fleet_with_hostile_heartbeat_settings_sets_no_limit(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path], case: str
) -> None:
    """The heartbeat reads only site.yaml's fleets and those fleets' limits: values of no
    use are passed over (the schemas report them in CI), the signed tag is still read."""
    fleet, ci_key, _ = world
    path, change = HOSTILE_FLEETS[case]
    fleet.edit(path, change)
    pipeline, mirror, head = served(tmp_path, fleet, ci_key, f"heartbeat: {case}")
    fresh = pipeline.freshness(mirror, head, head, T0 + timedelta(days=400))
    assert fresh.signed_at == T0.timestamp()
    # retail-eu's 6h is gone in every case but the first: then it is still the limit
    assert fresh.withheld is (case == "wrong types")


@pytest.mark.parametrize(
    ("what", "content"),
    [
        ("nested 600 levels", "apiVersion: outpost/v1\nkind: Fleet\nspec: " + "[" * 600),
        ("not a Fleet", "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: retail-eu}\n"),
        ("not UTF-8", "apiVersion: outpost/v1\nkind: Fleet\nx: \udcff\n"),
    ],
)
def test_a_fleet_file_that_does_not_load_is_an_error_naming_it(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path], what: str, content: str
) -> None:
    """What the agent turns into a tick warning ("the heartbeat could not be checked"):
    an OutpostError naming the file, never another exception."""
    fleet, ci_key, _ = world
    (fleet.path / "fleets/retail-eu.yaml").write_bytes(content.encode(errors="surrogateescape"))
    pipeline, mirror, head = served(tmp_path, fleet, ci_key, f"retail-eu: {what}")
    with pytest.raises(OutpostError) as caught:
        pipeline.freshness(mirror, head, head, T0 + timedelta(hours=1))
    assert caught.value.mark is not None and caught.value.mark.path == "fleets/retail-eu.yaml"


def test_a_fleet_name_that_climbs_out_of_fleets_is_an_error_naming_it(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    fleet, ci_key, _ = world
    fleet.edit(
        "sites/de-muc-0007/site.yaml",
        lambda t: t.replace("fleets: [retail-eu]", 'fleets: ["../../policies/signers"]'),
    )
    pipeline, mirror, head = served(tmp_path, fleet, ci_key, "a climbing fleet name")
    with pytest.raises(OutpostError, match="leaves the repository") as caught:
        pipeline.freshness(mirror, head, head, T0 + timedelta(hours=1))
    assert caught.value.mark is not None
    assert caught.value.mark.path == "fleets/../../policies/signers.yaml"


def test_a_fleet_file_that_is_a_link_is_an_error_naming_it(
    tmp_path: Path, world: tuple[SignedFleet, Path, Path]
) -> None:
    fleet, ci_key, _ = world
    target = fleet.path / "fleets/retail-eu.yaml"
    target.rename(fleet.path / "elsewhere.yaml")
    target.symlink_to("../elsewhere.yaml")
    pipeline, mirror, head = served(tmp_path, fleet, ci_key, "retail-eu: a link")
    with pytest.raises(OutpostError, match="symbolic link") as caught:
        pipeline.freshness(mirror, head, head, T0 + timedelta(hours=1))
    assert caught.value.mark is not None and caught.value.mark.path == "fleets/retail-eu.yaml"
