"""The verification core on commit objects: payload extraction, trailers, range bookkeeping,
and the ``outpost verify`` command around it."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from trust_git import NOW, Key, Repo, root_line, short, signers_yaml, trust_root

from reconciler.cli import main
from reconciler.core.errors import VerificationError
from reconciler.core.trust.verify import (
    CommitObject,
    CommitRecord,
    emergency_reason,
    parse_commit,
    verify_range,
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Fix\n\nOutpost-Emergency: tills down\n", "tills down"),
        ("Fix\n\nbody\n\nSigned-off-by: a\noutpost-emergency :  tills down  \n", "tills down"),
        ("Outpost-Emergency: only a subject\n", None),
        ("Fix\n\nOutpost-Emergency: early\n\nlast paragraph\n", None),
        ("Fix\n\nOutpost-Emergency:\n", None),
        ("Fix\n\nX-Outpost-Emergency: no\n", None),
    ],
)
def test_emergency_trailer(message: str, expected: str | None) -> None:
    assert emergency_reason(message) == expected


def test_payload_excludes_the_signature_header_only(repo: Repo, keys: dict[str, Key]) -> None:
    sha = repo.commit({"a": "1\n"}, keys["root"], "Subject\n\nBody line\n")
    raw = repo.raw(sha)
    parsed = parse_commit(CommitObject(sha, raw))
    assert parsed.signature is not None
    assert parsed.signature.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    assert parsed.signature.endswith(b"-----END SSH SIGNATURE-----\n")
    assert b"gpgsig" not in parsed.payload
    assert parsed.payload.endswith(b"\n\nSubject\n\nBody line\n")
    assert parsed.parents == ()
    assert parsed.message == "Subject\n\nBody line\n"
    assert parsed.tree == repo.git("rev-parse", f"{sha}^{{tree}}")


def test_object_id_is_recomputed(repo: Repo, keys: dict[str, Key]) -> None:
    sha = repo.commit({"a": "1\n"}, keys["root"])
    raw = repo.raw(sha)
    with pytest.raises(VerificationError, match="does not hash to its id"):
        parse_commit(CommitObject(sha, raw.replace(b"change", b"chang3")))


def test_other_signature_headers_are_not_signed_content(repo: Repo, keys: dict[str, Key]) -> None:
    """As git: a gpgsig-sha256 header in a SHA-1 repository is left out of the payload."""
    repo.commit({"a": "1\n"}, keys["root"])
    signed = repo.head()
    extra = repo.rewrite(
        signed,
        lambda raw: raw.replace(b"\ngpgsig ", b"\ngpgsig-sha256 bogus\n continued\ngpgsig ", 1),
    )
    trust = trust_root(root_line("alice", keys["root"]))
    assert repo.verify(trust).ok
    allowed = repo.path.parent / "allowed"
    allowed.write_text(root_line("alice", keys["root"]) + "\n")
    repo.git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", extra)


def test_two_signature_headers_are_refused(repo: Repo, keys: dict[str, Key]) -> None:
    sha = repo.commit({"a": "1\n"}, keys["root"])
    doubled = repo.rewrite(
        sha,
        lambda raw: raw.replace(b"\n\nchange", b"\ngpgsig -----BEGIN SSH SIGNATURE-----\n\nchange"),
    )
    with pytest.raises(VerificationError, match="carries 2 gpgsig headers; expected at most one"):
        parse_commit(CommitObject(doubled, repo.raw(doubled)))
    result = repo.verify(trust_root(root_line("alice", keys["root"])))
    assert str(result.error) == (
        f"commit {short(doubled)}: the commit carries 2 gpgsig headers; expected at most one"
    )


def test_malformed_committer_is_refused(repo: Repo, keys: dict[str, Key]) -> None:
    sha = repo.commit({"a": "1\n"}, keys["root"])
    bad = repo.rewrite(sha, lambda raw: raw.replace(b"+0000\ngpgsig", b"+0000 x\ngpgsig", 1))
    with pytest.raises(VerificationError, match="committer line is malformed"):
        parse_commit(CommitObject(bad, repo.raw(bad)))


def test_merged_signed_tag_keeps_mergetag_in_the_payload(repo: Repo, keys: dict[str, Key]) -> None:
    base = repo.commit({"a": "1\n"}, keys["root"])
    repo.checkout("-b", "release")
    repo.commit({"b": "1\n"}, keys["root"])
    repo.git("-c", f"user.signingkey={keys['root'].private}", "tag", "-s", "v1", "-m", "v1")
    repo.checkout("main")
    repo.commit({"c": "1\n"}, keys["root"])
    repo.merge("v1", keys["root"], "merge v1")
    merge = repo.head()
    assert b"\nmergetag object " in repo.raw(merge)
    assert b"\nmergetag object " in parse_commit(CommitObject(merge, repo.raw(merge))).payload
    assert repo.verify(trust_root(root_line("alice", keys["root"])), since=base).ok


def test_core_bookkeeping(repo: Repo, keys: dict[str, Key]) -> None:
    trust = trust_root(root_line("alice", keys["root"]))
    sha = repo.commit({"a": "1\n"}, keys["root"])
    record = CommitRecord(sha, repo.raw(sha), changes=(("a",),), parent_signers=())
    assert verify_range([record], trust=trust, candidate=sha, now=NOW).ok
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_range([record], trust=trust, candidate=sha, now=datetime(2026, 1, 1))
    missing = verify_range([record], trust=trust, candidate="f" * 40, now=NOW)
    assert missing.problem == "candidate fffffff is not among the commits to verify"
    wrong = CommitRecord(sha, repo.raw(sha), changes=(), parent_signers=())
    assert verify_range([wrong], trust=trust, candidate=sha, now=NOW).verdicts[0].reason == (
        "internal error: the git layer gave 0 change lists and 0 signers files for 0 parents"
    )
    second = repo.commit({"a": "2\n"}, keys["root"])
    stray = CommitRecord(second, repo.raw(second), changes=(("a",),), parent_signers=(None,))
    result = verify_range([record, stray], trust=trust, candidate=sha, now=NOW)
    assert result.problem == (
        f"internal error: 1 commits handed in are not reachable from the candidate {short(sha)}"
    )


# --- outpost verify ------------------------------------------------------------------------

# The command reads the real clock; the test commits are dated 2026-03, so allow any skew.
ANY_CLOCK = ["--max-skew", str(10**10)]


@pytest.fixture
def cli_repo(repo: Repo, keys: dict[str, Key]) -> tuple[Repo, str]:
    allowed = repo.path.parent / "allowed_signers"
    allowed.write_text(root_line("alice@example.com", keys["root"]) + "\n")
    repo.commit(
        {"policies/signers.yaml": signers_yaml({"pos-team": ([keys["pos"]], ["apps/pos/**"])})},
        keys["root"],
    )
    repo.commit({"apps/pos/app.yaml": "v: 1\n"}, keys["pos"])
    return repo, str(allowed)


def test_cli_all_verified(
    cli_repo: tuple[Repo, str], keys: dict[str, Key], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, allowed = cli_repo
    code = main(["verify", *ANY_CLOCK, "--trust", allowed, "--repo", str(repo.path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    first, second = repo.git("rev-list", "--reverse", "HEAD").split()
    assert out[0].split() == [
        short(first),
        "root:alice@example.com",
        keys["root"].fingerprint,
        "verified",
    ]
    assert out[1].split() == [short(second), "pos-team", keys["pos"].fingerprint, "verified"]
    assert out[2] == "verified 2 commits"


def test_cli_refused_json(
    cli_repo: tuple[Repo, str], keys: dict[str, Key], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, allowed = cli_repo
    since = repo.head()
    bad = repo.commit({"sites/x/site.yaml": "x: 1\n"}, keys["pos"])
    code = main(
        [
            "verify",
            *ANY_CLOCK,
            "--trust",
            allowed,
            "--repo",
            str(repo.path),
            "--since",
            since,
            "-o",
            "json",
        ]
    )
    body = json.loads(capsys.readouterr().out)
    assert code == 1
    assert body["verified"] is False
    assert body["since"] == since and body["candidate"] == bad
    assert body["error"] == (
        f"commit {short(bad)}: signed by pos-team, which may change apps/pos/**, but it changes "
        "sites/x/site.yaml"
    )
    assert body["commits"][0]["verdict"] == "refused"
    assert body["commits"][0]["fingerprint"] == keys["pos"].fingerprint


def test_cli_text_refusal_line(
    cli_repo: tuple[Repo, str], keys: dict[str, Key], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, allowed = cli_repo
    since = repo.head()
    bad = repo.commit({"apps/pos/app.yaml": "v: 2\n"}, None)
    argv = ["verify", *ANY_CLOCK, "--trust", allowed, "--repo", str(repo.path), "--since", since]
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{short(bad)}  -  -  refused: not signed")
    assert out[-1].startswith(f"refused: commit {short(bad)}: not signed")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trust", "{missing}"], "cannot read the trust file"),
        (["--trust", "{empty}"], "the trust root is empty"),
        (["--trust", "{allowed}", "--since", "no-such-rev"], "revision 'no-such-rev' does not"),
        (["--trust", "{allowed}", "--repo", "{missing}"], "cannot open the git repository"),
    ],
)
def test_cli_errors_exit_2(
    cli_repo: tuple[Repo, str],
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, allowed = cli_repo
    empty = repo.path.parent / "empty"
    empty.write_text("# nobody\n")
    names = {"missing": str(repo.path.parent / "missing"), "empty": str(empty), "allowed": allowed}
    argv = [a.format(**names) for a in args]
    if "--repo" not in argv:
        argv += ["--repo", str(repo.path)]
    assert main(["verify", *argv]) == 2
    assert expected in capsys.readouterr().err
