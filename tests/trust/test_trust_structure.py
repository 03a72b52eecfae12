"""Structural refusals: commits whose shape, not their signature, is wrong.

Each case is made with the real git CLI (objects written with ``hash-object --literally``
where git itself would refuse to make them, as a hostile remote could still serve them)
and verified through the same git layer the node and ``outpost verify`` use. A malformed
object is refused by name, as a permanent verdict the node remembers, never retried as a
temporary failure to read the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from trust_git import NOW, Key, Repo, root_line, short, signers_yaml, trust_root

from reconciler.cli import main
from reconciler.core.errors import SourceUnavailable, VerificationError
from reconciler.core.trust.allowed_signers import TrustRoot
from reconciler.core.trust.verify import (
    MAX_COMMIT_BYTES,
    CommitObject,
    CommitRecord,
    verify_range,
)


def trust(keys: dict[str, Key]) -> TrustRoot:
    return trust_root(root_line("alice@example.com", keys["root"]))


def seeded(repo: Repo, keys: dict[str, Key]) -> str:
    """A root-signed first commit that delegates apps/pos/** to the POS team."""
    return repo.commit(
        {
            "policies/signers.yaml": signers_yaml({"pos-team": ([keys["pos"]], ["apps/pos/**"])}),
            "apps/pos/app.yaml": "version: 1\n",
        },
        keys["root"],
        "Seed",
    )


def literally(repo: Repo, sha: str, change: Callable[[bytes], bytes]) -> str:
    """Write ``change(raw(sha))`` as a commit object; no ref points at it (git would refuse
    to move one there), so the candidate is named by its id, as the node names it."""
    return repo.git(
        "hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=change(repo.raw(sha))
    )


def refusal(repo: Repo, keys: dict[str, Key], **options: str) -> str:
    """The refusal, whether the core refuses the range or the git layer the object."""
    try:
        result = repo.verify(trust(keys), **options)  # type: ignore[arg-type]
    except SourceUnavailable:
        raise
    except VerificationError as exc:
        return exc.message
    assert not result.ok, "the range was accepted"
    error = result.error
    assert isinstance(error, VerificationError)
    return error.message


# -- parentless commits ---------------------------------------------------------------------


def test_a_parentless_commit_by_a_delegated_signer_is_refused(
    repo: Repo, keys: dict[str, Key]
) -> None:
    """A delegated signer's authority comes from a parent's signers.yaml; a commit without
    parents has none, even if the signers.yaml it carries lists its own key for '**'."""
    seeded(repo, keys)
    repo.checkout("--orphan", "takeover")
    orphan = repo.commit(
        {
            "policies/signers.yaml": signers_yaml({"pos-team": ([keys["pos"]], ["**"])}),
            "apps/pos/app.yaml": "version: 666\n",
        },
        keys["pos"],
        "A new history",
    )
    message = refusal(repo, keys, rev=orphan)
    assert message.startswith(f"commit {short(orphan)}: signed by an unknown key SHA256:")
    assert message.endswith("a commit without parents can be signed by root signers only")
    # The same commit signed by a root signer is fine: the rule is about who signs it.
    repo.checkout("--orphan", "fresh")
    fresh = repo.commit({"apps/pos/app.yaml": "version: 1\n"}, keys["root"], "A new history")
    assert repo.verify(trust(keys), rev=fresh).ok


# -- malformed header lines --------------------------------------------------------------------


def test_a_malformed_parent_line_is_refused_by_name(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    bad = literally(repo, head, lambda raw: raw.replace(f"parent {base}".encode(), b"parent zz"))
    expected = f"commit {short(bad)}: the commit has a malformed parent line b'zz'"
    assert refusal(repo, keys, rev=bad, since=base) == expected
    assert refusal(repo, keys, rev=bad) == expected


def test_a_malformed_commit_in_the_middle_of_the_range_is_found(
    repo: Repo, keys: dict[str, Key]
) -> None:
    """libgit2 cannot walk past it; the refusal still names it, not the candidate."""
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    tree = repo.git("rev-parse", f"{head}^{{tree}}").encode()
    bad = literally(repo, head, lambda raw: raw.replace(b"tree " + tree, b"tree " + b"x" * 40))
    # A well-formed child of the malformed commit, signed by root (git writes it as is).
    child_raw = repo.raw(head).replace(f"parent {base}".encode(), f"parent {bad}".encode())
    child = repo.git("hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=child_raw)
    assert refusal(repo, keys, rev=child, since=base) == (
        f"commit {short(bad)}: the commit has no valid tree line"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda raw: raw.replace(b"+0000\ngpgsig", b"+0000 x\ngpgsig", 1),
            "the commit's committer line is malformed: 'Test Signer <signer@example.com> ",
        ),
        (
            lambda raw: raw.replace(b"\ncommitter ", b"\ncommitter Eve <e@x> 1 +0000\ncommitter "),
            "the commit has 2 committer lines; expected exactly one",
        ),
        (
            lambda raw: raw.replace(b"\ncommitter ", b"\nxcommitter ", 1),
            "the commit has 0 committer lines; expected exactly one",
        ),
        (
            lambda raw: raw.replace(b"\ncommitter ", b"\ncommitter Eve <e@x> soon +0000\nx", 1),
            "the commit's committer line is malformed: 'Eve <e@x> soon +0000'",
        ),
    ],
)
def test_a_malformed_committer_line_is_refused(
    repo: Repo, keys: dict[str, Key], change: Callable[[bytes], bytes], problem: str
) -> None:
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    bad = literally(repo, head, change)
    message = refusal(repo, keys, rev=bad, since=base)
    assert message.startswith(f"commit {short(bad)}: {problem}"), message


def test_a_malformed_author_line_is_refused_too(repo: Repo, keys: dict[str, Key]) -> None:
    """Trust does not read the author line, but git cannot load the commit without it."""
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    bad = literally(repo, head, lambda raw: raw.replace(b"\nauthor ", b"\nauthr ", 1))
    message = refusal(repo, keys, rev=bad, since=base)
    assert message.startswith(f"commit {short(bad)}: git cannot read the commit: "), message


def test_an_oversized_commit_is_refused_unread(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    message_file = repo.path.parent / "long-message"
    message_file.write_text("Huge\n\n" + "x" * MAX_COMMIT_BYTES + "\n")
    repo.git(
        "-c",
        f"user.signingkey={keys['root'].private}",
        "commit",
        "-q",
        "--allow-empty",
        "-S",
        "-F",
        str(message_file),
        env={"GIT_COMMITTER_DATE": "@1772438600 +0000", "GIT_AUTHOR_DATE": "@1772438600 +0000"},
    )
    big = repo.head()
    size = len(repo.raw(big))
    assert size > MAX_COMMIT_BYTES
    assert refusal(repo, keys, since=base) == (
        f"commit {short(big)}: the commit object is {size:,} bytes; "
        f"the limit is {MAX_COMMIT_BYTES:,}"
    )


# -- the last applied commit -------------------------------------------------------------------


def test_an_unreadable_last_applied_commit_refuses_the_range(
    repo: Repo, keys: dict[str, Key]
) -> None:
    """The floor for committer times comes from the last applied commit; if its bytes do
    not parse (or do not hash to its id), nothing after it can be judged."""
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    records = [CommitRecord(head, repo.raw(head), (("apps/pos/app.yaml",),), (None,))]
    corrupt = CommitObject(base, repo.raw(base).replace(b"Seed", b"Sees"))
    result = verify_range(records, trust=trust(keys), candidate=head, now=NOW, last_applied=corrupt)
    assert str(result.error) == (
        f"last applied commit {short(base)}: the commit object does not hash to its id "
        "(corrupt or tampered object store)"
    )
    malformed_raw = repo.raw(base).replace(b"+0000\ngpgsig", b"+0000 x\ngpgsig", 1)
    malformed = repo.git(
        "hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=malformed_raw
    )
    result = verify_range(
        records,
        trust=trust(keys),
        candidate=head,
        now=NOW,
        last_applied=CommitObject(malformed, malformed_raw),
    )
    assert str(result.error).startswith(
        f"last applied commit {short(malformed)}: the commit's committer line is malformed"
    )


def test_a_last_applied_commit_missing_from_the_mirror_is_temporary(
    repo: Repo, keys: dict[str, Key]
) -> None:
    """Missing is not malformed: a mirror that lost an object is fixed by fetching again."""
    seeded(repo, keys)
    repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    with pytest.raises(SourceUnavailable):
        repo.verify(trust(keys), since="0" * 40)


def test_outpost_verify_names_the_malformed_commit(
    repo: Repo, keys: dict[str, Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = seeded(repo, keys)
    head = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    bad = literally(repo, head, lambda raw: raw.replace(f"parent {base}".encode(), b"parent zz"))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(root_line("alice@example.com", keys["root"]) + "\n")
    code = main(["verify", "--trust", str(allowed), "--repo", str(repo.path), bad])
    captured = capsys.readouterr()
    assert code == 1  # refused, not an error reading the repository
    assert captured.err.startswith(
        f"outpost verify: refused: commit {short(bad)}: the commit has a malformed parent line"
    )
    assert "Traceback" not in captured.err
