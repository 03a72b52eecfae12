"""`outpost bundle publish` on real git, and the index format both sides share."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airgap_world import History
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.core.errors import ConfigError
from reconciler.fleet.feed import RETIRE_GRACE, publish_feed
from reconciler.node.config import load_config
from reconciler.node.feed import check_feed_url
from reconciler.node.feed_index import FeedEntry, FeedError, FeedIndex, parse_index
from reconciler.node.fetch import CANDIDATE_REF, Mirror
from reconciler.node.inbox import BundleError, BundleManifest, import_inbox, read_manifest

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file with its mtime (ns) and bytes: "wrote nothing" made testable."""
    found = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, path.read_bytes())
    return found


def test_first_publish_writes_the_full_bundle_and_an_index_naming_it(
    history: History, tmp_path: Path
) -> None:
    out = tmp_path / "feed"
    result = publish_feed(history.repo.path, "main", out, now=T0)

    assert result.outcome == "first"
    index = parse_index((out / "index.json").read_bytes(), "index.json")
    assert index.head == history.c
    assert index.chain == ()
    assert index.latest == index.full
    assert index.full.name == f"bundles/full-{history.c}.bundle"
    bundle = out / index.full.name
    assert index.full.manifest.size == bundle.stat().st_size
    # The manifest next to the file is the inbox's own format, with the same numbers.
    assert read_manifest(bundle.with_name(bundle.name + ".manifest.json")) == index.full.manifest
    assert index.full.manifest.commits == 3


def test_republishing_the_same_head_writes_nothing(history: History, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    publish_feed(history.repo.path, "main", out, now=T0)
    before = files(out)

    again = publish_feed(history.repo.path, "main", out, now=T0 + timedelta(hours=1))

    assert again.outcome == "unchanged"
    assert again.written == ()
    assert files(out) == before


def test_each_publish_adds_one_step_from_the_previous_head(
    history: History, tmp_path: Path
) -> None:
    out = tmp_path / "feed"
    history.repo.git("reset", "-q", "--hard", history.a)
    publish_feed(history.repo.path, "main", out, now=T0)
    history.repo.git("reset", "-q", "--hard", history.c)  # B and C arrive together
    second = publish_feed(history.repo.path, "main", out, now=T0 + timedelta(minutes=5))
    d = history.repo.change_plant("Ostrava: publish every 1250 ms", 1250)
    third = publish_feed(history.repo.path, "main", out, now=T0 + timedelta(minutes=10))

    assert (second.outcome, third.outcome) == ("published", "published")
    index = third.index
    assert [(e.manifest.from_, e.manifest.to, e.manifest.commits) for e in index.chain] == [
        (history.a, history.c, 2),
        (history.c, d, 1),
    ]
    assert index.latest.name == f"bundles/{history.c}-{d}.bundle"
    # A node at A follows both steps, one at C the last, one at D nothing; unknown: full.
    assert index.steps_from({history.a}.__contains__) == index.chain
    assert index.steps_from({history.c}.__contains__) == index.chain[1:]
    assert index.steps_from({"0" * 40}.__contains__) is None
    # The replaced full bundles stay for a grace time; then they go.
    assert (out / f"bundles/full-{history.a}.bundle").exists()
    later = publish_feed(
        history.repo.path, "main", out, now=T0 + timedelta(seconds=RETIRE_GRACE + 900)
    )
    assert later.outcome == "unchanged"
    assert f"bundles/full-{history.a}.bundle" in later.removed
    assert not (out / f"bundles/full-{history.a}.bundle").exists()
    assert sorted(p.name for p in (out / "bundles").iterdir() if p.suffix == ".bundle") == sorted(
        [f"{history.a}-{history.c}.bundle", f"{history.c}-{d}.bundle", f"full-{d}.bundle"]
    )


def test_the_steps_import_through_the_inbox_in_order(history: History, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    history.repo.git("reset", "-q", "--hard", history.a)
    publish_feed(history.repo.path, "main", out, now=T0)
    history.repo.git("reset", "-q", "--hard", history.b)
    publish_feed(history.repo.path, "main", out, now=T0 + timedelta(minutes=1))
    history.repo.git("reset", "-q", "--hard", history.c)
    index = publish_feed(history.repo.path, "main", out, now=T0 + timedelta(minutes=2)).index
    mirror = Mirror(tmp_path / "node" / "mirror.git")
    inbox = tmp_path / "stick"
    inbox.mkdir()
    for number, entry in enumerate([*index.chain][::-1]):  # dropped in the wrong order
        source = out / entry.name
        target = inbox / f"{number}-{source.name}"
        target.write_bytes(source.read_bytes())
        manifest = source.with_name(source.name + ".manifest.json")
        target.with_name(target.name + ".manifest.json").write_bytes(manifest.read_bytes())
    # The node's install, still on the server during the grace time: no manifest this time.
    (inbox / "0000-full.bundle").write_bytes(
        (out / f"bundles/full-{history.a}.bundle").read_bytes()
    )

    results = import_inbox(mirror, inbox, now=T0)

    assert {r.outcome for r in results} == {"imported"}
    assert mirror.resolve(CANDIDATE_REF) == history.c


def test_keep_drops_old_steps_but_never_the_newest(history: History, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    history.repo.git("reset", "-q", "--hard", history.a)
    publish_feed(history.repo.path, "main", out, now=T0)
    history.repo.git("reset", "-q", "--hard", history.b)
    publish_feed(history.repo.path, "main", out, now=T0 + timedelta(days=1))
    history.repo.git("reset", "-q", "--hard", history.c)
    publish_feed(history.repo.path, "main", out, now=T0 + timedelta(days=5))

    late = publish_feed(
        history.repo.path, "main", out, now=T0 + timedelta(days=10), keep_seconds=7 * 86400
    )

    assert [e.manifest.to for e in late.index.chain] == [history.c]
    step = f"bundles/{history.a}-{history.b}.bundle"
    assert step in dict(late.index.retired)
    even_later = publish_feed(
        history.repo.path, "main", out, now=T0 + timedelta(days=30), keep_seconds=7 * 86400
    )
    assert [e.manifest.to for e in even_later.index.chain] == [history.c]
    assert not (out / step).exists()


def test_a_reset_branch_starts_its_step_at_the_merge_base(history: History, tmp_path: Path) -> None:
    """A refused commit is never built upon: the branch goes back to what runs, and the new
    step starts where every node following the feed already is."""
    out = tmp_path / "feed"
    publish_feed(history.repo.path, "main", out, now=T0)  # C, which the sites refused
    history.repo.git("reset", "-q", "--hard", history.b)
    fixed = history.repo.change_plant("Ostrava: publish every 900 ms", 900)

    result = publish_feed(history.repo.path, "main", out, now=T0 + timedelta(hours=1))

    assert result.outcome == "published"
    assert "reset" in result.note
    assert result.index.latest.manifest.from_ == history.b
    assert result.index.latest.manifest.to == fixed
    assert result.index.steps_from({history.b}.__contains__) == (result.index.latest,)


def test_unrelated_history_and_a_missing_branch_are_refused(
    history: History, tmp_path: Path
) -> None:
    out = tmp_path / "feed"
    publish_feed(history.repo.path, "main", out, now=T0)
    with pytest.raises(BundleError, match="no branch 'release'"):
        publish_feed(history.repo.path, "release", tmp_path / "other", now=T0)
    history.repo.git("branch", "release", history.b)
    with pytest.raises(BundleError, match="feed of branch 'main'"):
        publish_feed(history.repo.path, "release", out, now=T0)
    history.repo.git("checkout", "-q", "--orphan", "fresh")
    history.repo.commit("Unrelated start")
    history.repo.git("branch", "-f", "main", "fresh")
    with pytest.raises(BundleError, match="shares no history"):
        publish_feed(history.repo.path, "main", out, now=T0)


def test_outpost_bundle_publish_cli(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "feed"
    assert (
        main(["bundle", "publish", "--branch", "main", "--repo", str(history.repo.path), str(out)])
        == 0
    )
    first = capsys.readouterr().out
    assert f"full-{history.c}.bundle" in first and "index.json: head" in first
    assert (
        main(["bundle", "publish", "--branch", "main", "--repo", str(history.repo.path), str(out)])
        == 0
    )
    assert "already published" in capsys.readouterr().out
    code = main(
        ["bundle", "publish", "--branch", "nope", "--repo", str(history.repo.path), str(out)]
    )
    assert code == 1
    assert "no branch 'nope'" in capsys.readouterr().err
    (out / "index.json").write_text("[]")
    code = main(
        ["bundle", "publish", "--branch", "main", "--repo", str(history.repo.path), str(out)]
    )
    assert code == 1
    assert "index.json: expected a JSON object" in capsys.readouterr().err


# -- the index format --------------------------------------------------------------------


def test_the_index_round_trips_and_refuses_names_outside_bundles(
    history: History, tmp_path: Path
) -> None:
    out = tmp_path / "feed"
    index = publish_feed(history.repo.path, "main", out, now=T0).index
    assert parse_index(index.to_bytes(), "index.json") == index

    data = json.loads(index.to_bytes())
    for bad in ("../../etc/passwd.bundle", "https://elsewhere.example/x.bundle", "/x.bundle"):
        data["full"]["name"] = bad
        with pytest.raises(FeedError, match="is not a bundle file under bundles/"):
            parse_index(json.dumps(data).encode(), "index.json")
    data = json.loads(index.to_bytes())
    data["full"]["manifest"]["size"] = 2 * 1024**3
    with pytest.raises(FeedError, match="over the cap"):
        parse_index(json.dumps(data).encode(), "index.json")
    data = json.loads(index.to_bytes())
    data["head"] = history.a
    with pytest.raises(FeedError, match="not the whole history of the head"):
        parse_index(json.dumps(data).encode(), "index.json")
    with pytest.raises(
        FeedError, match="1,048,577 bytes, over the cap of 1,048,576 for a feed index"
    ):
        parse_index(b" " * (1024 * 1024 + 1), "index.json")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=300)
    | st.fixed_dictionaries(
        {
            "apiVersion": st.just("outpost/v1"),
            "kind": st.just("BundleFeed"),
            "branch": st.text(max_size=10),
            "head": st.text(alphabet="0123456789abcdef", min_size=39, max_size=41),
            "updated": _json,
            "full": _json,
            "chain": _json,
            "retired": _json,
            "keepSeconds": _json,
        }
    ).map(lambda v: json.dumps(v).encode())
)
def test_the_index_parser_refuses_garbage_with_feed_error_only(raw: bytes) -> None:
    try:
        parse_index(raw, "index.json")
    except FeedError as exc:
        assert exc.message.startswith("index.json")


# -- the feed URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_http", "refused"),
    [
        ("https://cdn.example.com/outpost/main/", False, None),
        ("http://127.0.0.1:8080/feed/", False, None),
        ("http://[::1]/feed/", False, None),
        ("http://localhost/feed/", False, None),
        ("http://mirror.plant.lan/feed/", False, "plain HTTP to a host that is not loopback"),
        ("http://mirror.plant.lan/feed/", True, None),
        ("ftp://cdn.example.com/feed/", False, "is not an https:// URL"),
        ("https://user:secret@cdn.example.com/feed/", False, "must not carry a user name"),
        ("https://cdn.example.com:99999/feed/", False, "is not a URL"),
    ],
)
def test_feed_urls(url: str, allow_http: bool, refused: str | None) -> None:
    reason = check_feed_url(url, allow_http=allow_http)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_the_agent_config_reads_spec_feed_and_refuses_plain_http_with_its_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.yaml"
    body = """apiVersion: outpost/v1
kind: AgentConfig
spec:
  site: store-0001
  trustRoot: allowed_signers
  stateDir: state
  feed:
    url: {url}
    caBundle: ca.pem
    readTimeout: 15s
    deadline: 5m
"""
    config.write_text(body.format(url="https://cdn.example.com/outpost/main/"))
    loaded = load_config(config)
    assert loaded.feed is not None
    assert (loaded.feed.url, loaded.feed.ca_bundle, loaded.feed.read_timeout) == (
        "https://cdn.example.com/outpost/main/",
        tmp_path / "ca.pem",
        15,
    )
    assert (loaded.feed.deadline, loaded.feed.connect_timeout, loaded.feed.allow_http) == (
        300,
        10,
        False,
    )

    config.write_text(body.format(url="http://cdn.example.com/feed/"))
    with pytest.raises(ConfigError, match="not loopback") as refused:
        load_config(config)
    assert str(refused.value).startswith(f"{config}:8: spec.feed.url")


def _entry(start: str | None, to: str) -> FeedEntry:
    name = f"bundles/{start or 'full'}-{to}.bundle"
    manifest = BundleManifest("all", start, to, "2026-11-20T09:00:00+00:00", "0" * 64, 10)
    return FeedEntry(name, "2026-11-20T09:00:00+00:00", manifest)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(min_value=1, max_value=30),
    kept=st.integers(min_value=0, max_value=30),
    has=st.sets(st.integers(min_value=0, max_value=30)),
)
def test_the_walk_back_from_the_head_starts_at_the_newest_commit_the_node_has(
    length: int, kept: int, has: set[int]
) -> None:
    commits = [f"{i:040x}" for i in range(length + 1)]  # c0 … c_length, the head last
    first = max(0, length - kept)  # older steps expired from the chain
    chain = tuple(_entry(commits[i], commits[i + 1]) for i in range(first, length))
    index = FeedIndex("main", commits[-1], "now", 0, _entry(None, commits[-1]), chain)
    known = {commits[i] for i in has if i <= length}

    steps = index.steps_from(known.__contains__)

    reachable = [i for i in range(first, length) if commits[i] in known]
    if not reachable:
        assert steps is None
    else:
        assert steps == chain[max(reachable) - first :]
        assert steps is not None and steps[-1].manifest.to == index.head
