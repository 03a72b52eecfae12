"""Bundles end to end on real git: made by `git bundle create`, imported into a plant's mirror."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pygit2
import pytest
from airgap_world import NOW, OTHER_PLANT, PLANT, History, Key, allowed_signers, drop, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.core.trust.allowed_signers import parse_allowed_signers
from reconciler.core.trust.gitsource import verify_repository
from reconciler.fleet.bundle import create_bundle
from reconciler.node.fetch import APPLIED_REF, BUNDLE_REF, CANDIDATE_REF, Mirror
from reconciler.node.inbox import (
    BundleError,
    BundleHeader,
    BundleManifest,
    import_inbox,
    parse_header,
    read_manifest,
)


class Plant:
    """A plant's node: its mirror and the stick's mount point."""

    def __init__(self, root: Path) -> None:
        self.mirror = Mirror(root / "state" / "mirror.git")
        self.inbox = root / "stick"
        self.inbox.mkdir(parents=True)

    def at(self, history: History, commit: str, tmp: Path) -> None:
        """Bring the plant to ``commit`` with a full bundle, as if it had applied it."""
        out = tmp / f"full-{commit[:7]}.bundle"
        history.repo.bundle(out, None, commit)
        drop(out, self.inbox)
        [result] = import_inbox(self.mirror, self.inbox, now=NOW)
        assert result.outcome == "imported", result.message
        self.mirror.pin(APPLIED_REF, commit)

    @property
    def candidate(self) -> str | None:
        return self.mirror.resolve(CANDIDATE_REF)


@pytest.fixture
def plant(tmp_path: Path) -> Plant:
    return Plant(tmp_path / "plant")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "desk"
    folder.mkdir()
    return folder


def refs(path: Path) -> str:
    return subprocess.run(
        ["git", "for-each-ref"], cwd=path, capture_output=True, text=True, check=True
    ).stdout


def pack_objects(bundle: Path) -> int:
    data = bundle.read_bytes()
    header = parse_header(data, bundle.name)
    pack = data[header.pack_offset :]
    assert pack[:4] == b"PACK"
    return int.from_bytes(pack[8:12], "big")


# -- the plant moves forward ------------------------------------------------------------


def test_bundle_a_to_c_moves_the_candidate_to_c_and_trust_verifies_it(
    history: History, plant: Plant, out: Path, tmp_path: Path, keys: dict[str, Key]
) -> None:
    plant.at(history, history.a, tmp_path)
    manifest = history.repo.bundle(out / "a-c.bundle", history.a)
    assert (manifest.from_, manifest.to, manifest.site, manifest.commits) == (
        history.a,
        history.c,
        PLANT,
        2,
    )
    drop(out / "a-c.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "imported", result.message
    assert (result.previous, result.candidate, result.head) == (history.a, history.c, history.c)
    assert plant.candidate == history.c
    assert plant.mirror.resolve(BUNDLE_REF) == history.c
    assert plant.mirror.resolve(APPLIED_REF) == history.a
    # The bundle's commits are verified like fetched ones: the range (A, C] by its signatures.
    trust = parse_allowed_signers(allowed_signers(keys["ops"]), "allowed_signers")
    verdict = verify_repository(
        plant.mirror.repo, trust, now=NOW, candidate=history.c, since=history.a
    )
    assert verdict.ok, verdict.error
    assert [v.sha for v in verdict.verdicts] == [history.b, history.c]


def test_incremental_bundle_carries_only_what_the_plant_lacks(history: History, out: Path) -> None:
    history.repo.bundle(out / "full.bundle", None)
    history.repo.bundle(out / "b-c.bundle", history.b)
    header = parse_header((out / "b-c.bundle").read_bytes(), "b-c.bundle")
    assert [c for c, _ in header.prerequisites] == [history.b]
    assert header.refs == ((history.c, f"refs/heads/outpost/{PLANT}"),)
    # C changes one file: its commit, its root tree, sites/, the site's folder and the blob.
    assert pack_objects(out / "b-c.bundle") == 5
    assert pack_objects(out / "full.bundle") > 100


def test_processed_bundles_are_moved_aside_with_a_result_file(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    manifest = history.repo.bundle(out / "a-b.bundle", history.a, history.b)
    drop(out / "a-b.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW + timedelta(minutes=5))

    processed = plant.inbox / "processed"
    assert result.moved_to == processed / "a-b.bundle"
    assert not (plant.inbox / "a-b.bundle").exists()
    assert not (plant.inbox / "a-b.bundle.manifest.json").exists()
    assert read_manifest(processed / "a-b.bundle.manifest.json") == manifest
    record = json.loads((processed / "a-b.bundle.result.json").read_text())
    assert record["kind"] == "BundleResult"
    assert record["outcome"] == "imported"
    assert record["head"] == record["candidate"] == history.b
    assert record["previousCandidate"] == history.a
    assert record["sha256"] == manifest.sha256
    assert record["time"] == (NOW + timedelta(minutes=5)).isoformat()
    assert record["manifest"]["to"] == history.b


def test_the_same_file_name_twice_does_not_overwrite_the_earlier_record(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    history.repo.bundle(out / "update.bundle", history.a, history.b)
    drop(out / "update.bundle", plant.inbox)
    import_inbox(plant.mirror, plant.inbox, now=NOW)
    history.repo.bundle(out / "update.bundle", history.b, history.c)
    drop(out / "update.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "imported"
    assert result.moved_to == plant.inbox / "processed" / "update.1.bundle"
    first = json.loads((plant.inbox / "processed" / "update.bundle.result.json").read_text())
    assert first["head"] == history.b
    assert plant.candidate == history.c


def test_bundles_dropped_out_of_order_in_one_run_are_all_imported(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    history.repo.bundle(out / "1-b-c.bundle", history.b)
    history.repo.bundle(out / "2-a-b.bundle", history.a, history.b)
    drop(out / "1-b-c.bundle", plant.inbox)
    drop(out / "2-a-b.bundle", plant.inbox)

    results = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert [(r.name, r.outcome) for r in results] == [
        ("2-a-b.bundle", "imported"),
        ("1-b-c.bundle", "imported"),
    ]
    assert plant.candidate == history.c


def test_a_bundle_made_for_another_plant_is_imported_all_the_same(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    manifest = history.repo.bundle(out / "lyon.bundle", history.a, site=OTHER_PLANT)
    drop(out / "lyon.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert manifest.site == OTHER_PLANT
    assert result.outcome == "imported"
    assert result.manifest is not None and result.manifest.site == OTHER_PLANT
    assert plant.candidate == history.c


def test_a_commit_signed_by_an_unknown_key_is_imported_and_then_refused_by_trust(
    history: History, plant: Plant, out: Path, tmp_path: Path, keys: dict[str, Key]
) -> None:
    """The bundle is transport only: it moves the candidate; trust refuses the commit."""
    plant.at(history, history.c, tmp_path)
    rogue = history.repo.change_plant("Ostrava: publish every 10 ms", 10, keys["rogue"])
    history.repo.bundle(out / "c-d.bundle", history.c)
    drop(out / "c-d.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "imported"
    trust = parse_allowed_signers(allowed_signers(keys["ops"]), "allowed_signers")
    verdict = verify_repository(plant.mirror.repo, trust, now=NOW, candidate=rogue, since=history.c)
    assert not verdict.ok
    assert rogue[:7] in str(verdict.error)


# -- replays change nothing ---------------------------------------------------------------


def test_a_replayed_older_bundle_after_c_changes_nothing(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    history.repo.bundle(out / "a-c.bundle", history.a)
    history.repo.bundle(out / "a-b.bundle", history.a, history.b)
    drop(out / "a-c.bundle", plant.inbox)
    import_inbox(plant.mirror, plant.inbox, now=NOW)
    before = snapshot(plant.mirror)
    drop(out / "a-b.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "replay"
    assert result.message.startswith(f"replay: already have {history.c[:12]}")
    assert history.b[:12] in result.message
    assert plant.candidate == history.c
    assert snapshot(plant.mirror) == before
    assert (plant.inbox / "processed" / "a-b.bundle.result.json").exists()


def test_the_same_bundle_twice_is_a_replay(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.a, tmp_path)
    history.repo.bundle(out / "a-c.bundle", history.a)
    drop(out / "a-c.bundle", plant.inbox)
    import_inbox(plant.mirror, plant.inbox, now=NOW)
    drop(out / "a-c.bundle", plant.inbox, name="again.bundle")

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "replay"
    assert result.message.startswith(f"replay: already have {history.c[:12]}")


def test_a_bundle_older_than_the_applied_revision_is_a_replay(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.c, tmp_path)
    history.repo.bundle(out / "full-b.bundle", None, history.b)
    drop(out / "full-b.bundle", plant.inbox)
    before = snapshot(plant.mirror)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "replay"
    assert plant.candidate == history.c
    assert snapshot(plant.mirror) == before


def test_a_diverged_head_does_not_move_the_candidate(
    history: History, plant: Plant, out: Path, tmp_path: Path
) -> None:
    plant.at(history, history.c, tmp_path)
    history.repo.git("checkout", "-q", "-b", "fork", history.b)
    fork = history.repo.change_plant("a fork off B", 5)
    history.repo.bundle(out / "fork.bundle", history.b, "fork")
    drop(out / "fork.bundle", plant.inbox)

    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)

    assert result.outcome == "rejected"
    assert "does not descend from this node's candidate" in result.message
    assert plant.candidate == history.c
    assert plant.mirror.resolve(BUNDLE_REF) == fork


# -- bad bundles are refused and change nothing -------------------------------------------


@pytest.fixture
def plant_at_a(history: History, plant: Plant, tmp_path: Path) -> Plant:
    plant.at(history, history.a, tmp_path)
    return plant


def refused(plant: Plant, name: str) -> str:
    before = snapshot(plant.mirror)
    candidate = plant.candidate
    [result] = import_inbox(plant.mirror, plant.inbox, now=NOW)
    assert result.outcome == "rejected", result.message
    assert isinstance(result.error, BundleError)
    assert snapshot(plant.mirror) == before
    assert plant.candidate == candidate
    assert result.moved_to == plant.inbox / "rejected" / name
    record = json.loads((plant.inbox / "rejected" / f"{name}.result.json").read_text())
    assert record["outcome"] == "rejected"
    assert record["message"] == result.message
    assert not (plant.inbox / name).exists()
    return result.message


def test_a_truncated_bundle_is_refused_with_a_clear_message(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    data = (out / "a-c.bundle").read_bytes()
    (plant_at_a.inbox / "a-c.bundle").write_bytes(data[: len(data) - 100])

    message = refused(plant_at_a, "a-c.bundle")

    assert message.startswith("a-c.bundle: the pack data is truncated or corrupt")
    assert "copy it again" in message


def test_a_truncated_bundle_with_its_manifest_is_refused_by_the_manifest(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    target = drop(out / "a-c.bundle", plant_at_a.inbox)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])

    message = refused(plant_at_a, "a-c.bundle")

    assert "does not match its manifest" in message
    assert f"it is {len(data) // 2} bytes" in message
    assert (plant_at_a.inbox / "rejected" / "a-c.bundle.manifest.json").exists()


def test_a_bundle_cut_inside_its_header_is_refused(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    (plant_at_a.inbox / "a-c.bundle").write_bytes((out / "a-c.bundle").read_bytes()[:60])

    message = refused(plant_at_a, "a-c.bundle")

    assert "header ends before its blank line" in message


def test_a_tampered_bundle_is_refused_by_its_manifest_sha256(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    target = drop(out / "a-c.bundle", plant_at_a.inbox)
    data = bytearray(target.read_bytes())
    data[-30] ^= 0x01
    target.write_bytes(bytes(data))
    digest = hashlib.sha256(bytes(data)).hexdigest()

    message = refused(plant_at_a, "a-c.bundle")

    assert "does not match its manifest" in message
    assert f"sha256 {digest[:16]}" in message
    assert "tampered" in message


def test_a_corrupt_pack_with_a_recomputed_checksum_is_refused_by_git_and_leaves_nothing(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    """Past every check made here, git's own index-pack refuses it; no temporary pack stays."""
    history.repo.bundle(out / "a-c.bundle", history.a)
    data = bytearray((out / "a-c.bundle").read_bytes())
    header = parse_header(bytes(data), "a-c.bundle")
    body = data[header.pack_offset : -20]
    for i in range(20, len(body) - 20):  # inside the compressed objects, past the pack header
        body[i] ^= 0xFF
    pack = bytes(body) + hashlib.sha1(bytes(body), usedforsecurity=False).digest()
    (plant_at_a.inbox / "a-c.bundle").write_bytes(bytes(data[: header.pack_offset]) + pack)

    message = refused(plant_at_a, "a-c.bundle")

    assert message.startswith("a-c.bundle could not be imported (git fetch)")
    leftovers = [
        p for p in os.listdir(plant_at_a.mirror.path / "objects" / "pack") if p.startswith("tmp_")
    ]
    assert leftovers == []


def test_a_bundle_whose_prerequisites_are_missing_names_the_missing_commit(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "b-c.bundle", history.b)
    drop(out / "b-c.bundle", plant_at_a.inbox)

    message = refused(plant_at_a, "b-c.bundle")

    assert f"needs commit {history.b} (Ostrava: publish every 750 ms)" in message
    assert f"it has {history.a[:12]}" in message
    assert f"--since {history.a[:12]}" in message


def test_a_file_that_is_not_a_bundle_is_refused(plant_at_a: Plant) -> None:
    (plant_at_a.inbox / "notes.bundle").write_text("shopping list\n")

    message = refused(plant_at_a, "notes.bundle")

    assert message == (
        "notes.bundle is not a git bundle: it starts with b'shopping list', expected "
        "'# v2 git bundle' or '# v3 git bundle'"
    )


def test_a_bundle_over_the_size_cap_is_refused(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    drop(out / "a-c.bundle", plant_at_a.inbox)
    size = (out / "a-c.bundle").stat().st_size
    before = snapshot(plant_at_a.mirror)

    [result] = import_inbox(plant_at_a.mirror, plant_at_a.inbox, now=NOW, max_bytes=size - 1)

    assert result.outcome == "rejected"
    assert result.message.startswith(f"a-c.bundle is {size} bytes, over the cap of {size - 1}")
    assert snapshot(plant_at_a.mirror) == before


def test_a_symlink_in_the_inbox_is_refused_without_being_followed(
    plant_at_a: Plant, tmp_path: Path
) -> None:
    secret = tmp_path / "age.key"
    secret.write_text("AGE-SECRET-KEY-1...\n")
    (plant_at_a.inbox / "key.bundle").symlink_to(secret)

    message = refused(plant_at_a, "key.bundle")

    assert "symbolic link" in message
    assert "AGE" not in message


def test_a_malformed_manifest_refuses_the_bundle(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    history.repo.bundle(out / "a-c.bundle", history.a)
    target = drop(out / "a-c.bundle", plant_at_a.inbox)
    target.with_name("a-c.bundle.manifest.json").write_text('{"kind": "BundleManifest"}')

    message = refused(plant_at_a, "a-c.bundle")

    assert message.startswith("a-c.bundle.manifest.json: expected apiVersion outpost/v1")


def test_a_manifest_naming_another_head_refuses_the_bundle(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    manifest = history.repo.bundle(out / "a-c.bundle", history.a)
    target = drop(out / "a-c.bundle", plant_at_a.inbox)
    forged = {**manifest.to_json(), "to": history.b}
    target.with_name("a-c.bundle.manifest.json").write_text(json.dumps(forged))

    message = refused(plant_at_a, "a-c.bundle")

    assert f"its head is {history.c[:12]} but its manifest says {history.b[:12]}" in message


def test_no_inbox_means_no_bundles(plant: Plant) -> None:
    assert import_inbox(plant.mirror, plant.inbox / "not-mounted", now=NOW) == []


def test_an_inbox_that_is_a_file_is_temporary_trouble(plant: Plant) -> None:
    from reconciler.core.errors import SourceUnavailable

    (plant.inbox / "file").write_text("")
    with pytest.raises(SourceUnavailable, match="is not a directory"):
        import_inbox(plant.mirror, plant.inbox / "file", now=NOW)


# -- creating bundles ---------------------------------------------------------------------


def test_bundles_are_made_from_any_clone_without_touching_it(
    history: History, out: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "other-clone"
    subprocess.run(
        ["git", "clone", "-q", "--no-local", str(history.repo.path), str(clone)], check=True
    )
    subprocess.run(["git", "branch", "-q", "-m", "main", "work"], cwd=clone, check=True)
    before = refs(clone)

    manifest = create_bundle(
        clone, PLANT, "origin/main~2", "origin/main", out / "x.bundle", now=NOW
    )

    assert (manifest.from_, manifest.to) == (history.a, history.c)
    assert refs(clone) == before
    assert hashlib.sha256((out / "x.bundle").read_bytes()).hexdigest() == manifest.sha256
    assert manifest.size == (out / "x.bundle").stat().st_size
    assert manifest.created == NOW.isoformat()
    assert read_manifest(out / "x.bundle.manifest.json") == manifest


@pytest.mark.parametrize(
    ("since", "rev", "expected"),
    [
        ("C", "B", "is not an ancestor of --rev"),
        ("C", "C", "are the same commit"),
        ("no-such-branch", "C", "--since 'no-such-branch' does not name a commit in this clone"),
        ("A", "deadbeef", "--rev 'deadbeef' does not name a commit"),
        ("A", "--all", "--rev '--all' is not a revision"),
    ],
)
def test_bad_ranges_are_refused_at_the_desk(
    history: History, out: Path, since: str, rev: str, expected: str
) -> None:
    names = {"A": history.a, "B": history.b, "C": history.c}
    with pytest.raises(BundleError, match=expected):
        create_bundle(
            history.repo.path, PLANT, names.get(since, since), names.get(rev, rev),
            out / "x.bundle", now=NOW,
        )  # fmt: skip
    assert not (out / "x.bundle").exists()


def test_a_since_on_a_diverged_branch_is_refused_with_the_fix(history: History, out: Path) -> None:
    history.repo.git("checkout", "-q", "-b", "fork", history.b)
    fork = history.repo.change_plant("fork", 5)
    with pytest.raises(BundleError) as caught:
        history.repo.bundle(out / "x.bundle", fork, "main")
    assert f"--since {fork} ({fork[:12]}) is not an ancestor of --rev main" in str(caught.value)
    assert "the revision the plant runs" in str(caught.value)


def test_an_unknown_site_and_a_shallow_clone_are_refused(
    history: History, out: Path, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match=r"has no sites/plant-nowhere/site\.yaml"):
        create_bundle(history.repo.path, "plant-nowhere", None, "HEAD", out / "x.bundle", now=NOW)
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{history.repo.path}", str(shallow)],
        check=True,
    )
    with pytest.raises(BundleError, match="shallow clone"):
        create_bundle(shallow, PLANT, None, "HEAD", out / "x.bundle", now=NOW)
    with pytest.raises(BundleError, match="is not a git repository"):
        create_bundle(tmp_path, PLANT, None, "HEAD", out / "x.bundle", now=NOW)


def test_outpost_bundle_create_cli(
    history: History, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = out / "ostrava.bundle"
    code = main(
        ["bundle", "create", "--site", PLANT, "--since", history.a, "--repo",
         str(history.repo.path), str(target)]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"wrote {target} (" in printed.out
    assert "2 commits" in printed.out
    assert read_manifest(target.with_name("ostrava.bundle.manifest.json")).to == history.c

    code = main(
        ["bundle", "create", "--site", PLANT, "--since", history.c, "--rev", history.b,
         "--repo", str(history.repo.path), str(out / "bad.bundle")]
    )  # fmt: skip
    assert code == 1
    assert "is not an ancestor" in capsys.readouterr().err

    full = out / "full.bundle"
    code = main(
        ["bundle", "create", "--site", PLANT, "--full", "--repo", str(history.repo.path), str(full)]
    )
    assert code == 0
    assert parse_header(full.read_bytes(), "full.bundle").prerequisites == ()


def test_git_itself_reads_the_bundle(history: History, out: Path, tmp_path: Path) -> None:
    """An ordinary git bundle: an operator can inspect or clone it with plain git."""
    history.repo.bundle(out / "full.bundle", None)
    clone = tmp_path / "from-bundle"
    subprocess.run(
        ["git", "clone", "-q", "-b", f"outpost/{PLANT}", str(out / "full.bundle"), str(clone)],
        check=True,
    )
    assert str(pygit2.Repository(str(clone)).head.target) == history.c
    assert (clone / "sites" / PLANT / "overrides.yaml").read_text().count("1000") == 1


# -- the header parser --------------------------------------------------------------------

_SHA = st.text("0123456789abcdef", min_size=40, max_size=40)
_COMMENT = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=40)
_REF = st.from_regex(r"refs/heads/[a-z][a-z0-9/-]{0,30}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from([2, 3]),
    prerequisites=st.lists(st.tuples(_SHA, _COMMENT), max_size=5),
    refs_=st.lists(st.tuples(_SHA, _REF), min_size=1, max_size=5),
    pack=st.binary(max_size=64),
)
def test_header_round_trip(
    version: int,
    prerequisites: list[tuple[str, str]],
    refs_: list[tuple[str, str]],
    pack: bytes,
) -> None:
    lines = [f"# v{version} git bundle"]
    if version == 3:
        lines.append("@object-format=sha1")
    lines += [f"-{c} {comment}".rstrip(" ") if comment else f"-{c}" for c, comment in prerequisites]
    lines += [f"{c} {r}" for c, r in refs_]
    head = ("\n".join(lines) + "\n\n").encode()
    parsed = parse_header(head + pack, "x.bundle")
    assert parsed == BundleHeader(
        version=version,
        capabilities=(("object-format", "sha1"),) if version == 3 else (),
        prerequisites=tuple((c, comment.rstrip(" ")) for c, comment in prerequisites),
        refs=tuple(refs_),
        pack_offset=len(head),
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_header_parser_refuses_garbage_with_bundle_error_only(data: bytes) -> None:
    for candidate in (data, b"# v2 git bundle\n" + data, b"# v3 git bundle\n" + data):
        try:
            parse_header(candidate, "x.bundle")
        except BundleError as exc:
            assert exc.message.startswith("x.bundle")


def test_manifest_round_trip_and_refusals() -> None:
    manifest = BundleManifest(
        site=PLANT, from_=None, to="a" * 40, created=NOW.isoformat(), sha256="b" * 64, size=3
    )
    assert BundleManifest.from_json(manifest.to_json(), "m.json") == manifest
    for field, value in (("site", "Plant_X"), ("to", "HEAD"), ("sha256", "x"), ("size", -1)):
        with pytest.raises(BundleError, match=f"m.json: {field}"):
            BundleManifest.from_json({**manifest.to_json(), field: value}, "m.json")


def test_a_copy_left_by_a_killed_import_is_cleared_and_the_bundle_imported_again(
    history: History, plant_at_a: Plant, out: Path
) -> None:
    staging = plant_at_a.mirror.path / "outpost-incoming"
    (staging / "incoming-killed.bundle").write_bytes(b"# v2 git bundle\n-half")
    history.repo.bundle(out / "a-b.bundle", history.a, history.b)
    drop(out / "a-b.bundle", plant_at_a.inbox)

    [result] = import_inbox(plant_at_a.mirror, plant_at_a.inbox, now=NOW)

    assert result.outcome == "imported"
    assert os.listdir(staging) == []
