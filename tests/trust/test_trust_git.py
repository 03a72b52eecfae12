"""The attack corpus and the happy paths, on real git repositories signed by real ssh-keygen keys.

Every attack must be refused with its exact reason: the assertion is on the
message an operator reads, so a refusal for the wrong reason fails the test.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

from trust_git import (
    BASE_TS,
    NOW,
    Key,
    Repo,
    replace_signature,
    root_line,
    short,
    signature_of,
    signers_yaml,
    trust_root,
)

from reconciler.core.errors import VerificationError
from reconciler.core.trust.allowed_signers import TrustRoot
from reconciler.core.trust.verify import RangeResult

SITE = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: de-ber-0042}\n"


def refused(result: RangeResult) -> str:
    """The first refusal message (what the agent raises)."""
    assert not result.ok
    error = result.error
    assert isinstance(error, VerificationError)
    return error.message


def standard_trust(keys: dict[str, Key]) -> TrustRoot:
    return trust_root(
        "# root signers of the fleet",
        root_line("alice@example.com", keys["root"], 'namespaces="git"'),
        root_line("bob@example.com", keys["root2"]),
    )


def delegations(keys: dict[str, Key], pos: str = "pos") -> str:
    return signers_yaml(
        {
            "pos-team": ([keys[pos]], ["apps/pos/**"]),
            "ops-de": ([keys["ops"]], ["sites/de-*/**"]),
        }
    )


def seeded(repo: Repo, keys: dict[str, Key]) -> str:
    """A root-signed first commit with the delegations, a POS app and one German store."""
    return repo.commit(
        {
            "policies/signers.yaml": delegations(keys),
            "apps/pos/app.yaml": "version: 1\n",
            "sites/de-ber-0042/site.yaml": SITE,
        },
        keys["root"],
        "Seed the repository",
    )


# --- happy paths ---------------------------------------------------------------------------


def test_whole_history_of_delegated_and_root_commits_verifies(
    repo: Repo, keys: dict[str, Key]
) -> None:
    first = seeded(repo, keys)
    pos = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"], "POS 2")
    ops = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# x\n"}, keys["ops"], "Berlin")
    fleet = repo.commit({"fleets/retail-eu.yaml": "x: 1\n"}, keys["root2"], "Fleet")

    result = repo.verify(standard_trust(keys))

    assert result.ok, result.error
    assert [v.sha for v in result.verdicts] == [first, pos, ops, fleet]
    assert [v.principal for v in result.verdicts] == [
        "alice@example.com",
        "pos-team",
        "ops-de",
        "bob@example.com",
    ]
    assert [v.root for v in result.verdicts] == [True, False, False, True]
    assert result.verdicts[1].fingerprint == keys["pos"].fingerprint
    assert result.verdicts[2].fingerprint == keys["ops"].fingerprint
    assert result.verdicts[1].reason == "signed by pos-team within apps/pos/**"


def test_range_since_last_applied_only_covers_new_commits(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    new = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])

    result = repo.verify(standard_trust(keys), since=applied)

    assert result.ok
    assert [v.sha for v in result.verdicts] == [new]
    assert repo.verify(standard_trust(keys), since=new).verdicts == ()


def test_rsa_root_signer_verifies(repo: Repo, keys: dict[str, Key]) -> None:
    repo.commit({"a.txt": "a\n"}, keys["rsa"])
    result = repo.verify(trust_root(root_line("carol@example.com", keys["rsa"])))
    assert result.ok, result.error
    assert result.verdicts[0].fingerprint == keys["rsa"].fingerprint


def test_rotation_of_a_delegated_key_by_a_root_signer(repo: Repo, keys: dict[str, Key]) -> None:
    seeded(repo, keys)
    before = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"], "old key")
    rotation = repo.commit(
        {"policies/signers.yaml": delegations(keys, pos="pos2")}, keys["root"], "Rotate POS key"
    )
    after = repo.commit({"apps/pos/app.yaml": "version: 3\n"}, keys["pos2"], "new key")

    result = repo.verify(standard_trust(keys), since=before)
    assert result.ok, result.error
    assert [(v.sha, v.principal) for v in result.verdicts] == [
        (rotation, "alice@example.com"),
        (after, "pos-team"),
    ]

    # The retired key is no longer anyone's after the rotation.
    stale = repo.commit({"apps/pos/app.yaml": "version: 4\n"}, keys["pos"], "retired key")
    assert refused(repo.verify(standard_trust(keys), since=after)) == (
        f"commit {short(stale)}: signed by an unknown key {keys['pos'].fingerprint} "
        f"(ssh-ed25519): not in the trust root allowed_signers nor in policies/signers.yaml "
        f"of parent {short(after)}"
    )


def test_merge_of_two_signed_branches_signed_by_a_root(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    repo.checkout("-b", "pos")
    pos = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    repo.checkout("main")
    ops = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# y\n"}, keys["ops"])
    merge = repo.merge("pos", keys["root"])

    result = repo.verify(standard_trust(keys), since=base)

    assert result.ok, result.error
    assert {v.sha for v in result.verdicts} == {pos, ops, merge}
    assert result.verdicts[-1].sha == merge
    assert result.verdicts[-1].principal == "alice@example.com"


def test_merge_of_two_branches_in_one_scope_by_the_delegated_signer(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    repo.checkout("-b", "feature")
    repo.commit({"apps/pos/manifests/a.yaml": "a: 1\n"}, keys["pos"])
    repo.checkout("main")
    repo.commit({"apps/pos/manifests/b.yaml": "b: 1\n"}, keys["pos"])
    merge = repo.merge("feature", keys["pos"])

    result = repo.verify(standard_trust(keys), since=base)

    assert result.ok, result.error
    assert result.verdict_for(merge) is not None
    assert result.verdicts[-1].principal == "pos-team"


def test_emergency_trailer_counts_only_from_a_root_signer(repo: Repo, keys: dict[str, Key]) -> None:
    seeded(repo, keys)
    message = "Roll back POS\n\nThe tills crash.\n\nOutpost-Emergency: tills crash at checkout"
    root = repo.commit({"apps/pos/app.yaml": "version: 1.1\n"}, keys["root"], message)
    pos = repo.commit({"apps/pos/app.yaml": "version: 1.2\n"}, keys["pos"], message)
    subject = repo.commit(
        {"apps/pos/app.yaml": "version: 1.3\n"}, keys["root"], "Outpost-Emergency: in the subject"
    )

    result = repo.verify(standard_trust(keys))

    root_verdict = result.verdict_for(root)
    pos_verdict = result.verdict_for(pos)
    subject_verdict = result.verdict_for(subject)
    assert root_verdict and pos_verdict and subject_verdict
    assert root_verdict.emergency
    assert root_verdict.emergency_reason == "tills crash at checkout"
    assert not pos_verdict.emergency and pos_verdict.ok
    assert "Outpost-Emergency trailer is ignored" in pos_verdict.reason
    assert not subject_verdict.emergency


# --- attack corpus -----------------------------------------------------------------------


def test_unsigned_commit_in_the_middle_of_the_range(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    unsigned = repo.commit({"apps/pos/app.yaml": "version: evil\n"}, None)
    later = repo.commit({"apps/pos/app.yaml": "version: 3\n"}, keys["pos"])

    result = repo.verify(standard_trust(keys), since=applied)

    assert refused(result) == (
        f"commit {short(unsigned)}: not signed; every commit must carry an SSH signature "
        f"(git commit -S) — the candidate {short(later)} is built on it and refused with it: "
        f"reset the branch to {short(applied)}, what the sites run, and commit the work again"
    )
    assert result.verdict_for(later) is not None
    assert result.verdict_for(later).reason == (  # type: ignore[union-attr]
        f"built on {short(unsigned)}, which was refused (not signed; every commit must carry an "
        "SSH signature (git commit -S)); nothing built on a refused commit is accepted: reset "
        f"the branch to {short(applied)}, what the sites run, and commit the work again"
    )


def test_signature_by_an_unknown_key(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    rogue = repo.commit({"apps/pos/app.yaml": "version: evil\n"}, keys["rogue"])
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(rogue)}: signed by an unknown key {keys['rogue'].fingerprint} "
        f"(ssh-ed25519): not in the trust root allowed_signers nor in policies/signers.yaml of "
        f"parent {short(applied)}"
    )


def test_content_changed_after_signing(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    signed = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    # A compromised server swaps the tree under the signature for one of its own.
    repo.checkout("-q", "-b", "evil", applied)
    evil_tree = repo.git(
        "rev-parse", repo.commit({"apps/pos/app.yaml": "version: evil\n"}, None) + "^{tree}"
    )
    good_tree = repo.git("rev-parse", signed + "^{tree}")
    repo.checkout("main")
    forged = repo.rewrite(
        signed, lambda raw: raw.replace(good_tree.encode(), evil_tree.encode(), 1)
    )

    assert forged != signed
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(forged)}: the signature by pos-team ({keys['pos'].fingerprint}) does "
        "not match the commit's content (changed after signing?)"
    )
    message_forged = repo.rewrite(signed, lambda raw: raw.replace(b"\nchange", b"\nchanged"))
    assert "does not match the commit's content" in refused(
        repo.verify(standard_trust(keys), since=applied)
    )
    assert message_forged != signed


def test_root_key_expired(repo: Repo, keys: dict[str, Key]) -> None:
    trust = trust_root(
        root_line("alice@example.com", keys["root"], 'valid-before="20260302090000Z"'),
    )
    ok = repo.commit({"a": "1\n"}, keys["root"], when=BASE_TS + 1800)  # 08:30Z
    edge = repo.commit({"a": "2\n"}, keys["root"], when=BASE_TS + 3600)  # 09:00:00Z, inclusive
    late = repo.commit({"a": "3\n"}, keys["root"], when=BASE_TS + 3601)

    # Judged by a node whose clock reads 08:59Z, before the key retired.
    result = repo.verify(trust, now=datetime.fromtimestamp(BASE_TS + 3540, UTC))

    assert [v.ok for v in result.verdicts] == [True, True, False]
    assert result.verdicts[0].sha == ok and result.verdicts[1].sha == edge
    assert refused(result) == (
        f"commit {short(late)}: key {keys['root'].fingerprint} of alice@example.com expired "
        "before committer time 2026-03-02 09:00:01Z (valid-before 2026-03-02 09:00:00Z, "
        "allowed_signers:1)"
    )


def test_root_key_not_yet_valid(repo: Repo, keys: dict[str, Key]) -> None:
    trust = trust_root(
        root_line("alice@example.com", keys["root"], 'valid-after="20260303"'),
        root_line("bob@example.com", keys["root2"]),
    )
    early = repo.commit({"a": "1\n"}, keys["root"])
    assert refused(repo.verify(trust)) == (
        f"commit {short(early)}: key {keys['root'].fingerprint} of alice@example.com is not "
        "valid yet at committer time 2026-03-02 08:01:00Z (valid-after 2026-03-03 00:00:00Z, "
        "allowed_signers:1)"
    )


def test_retired_key_backdating_a_commit_into_its_validity(
    repo: Repo, keys: dict[str, Key]
) -> None:
    trust = trust_root(
        root_line("alice@example.com", keys["root"], 'valid-before="20260302100000Z"'),
        root_line("bob@example.com", keys["root2"]),
    )
    first = repo.commit({"a": "1\n"}, keys["root"], when=BASE_TS + 600)  # 08:10, valid
    second = repo.commit({"a": "2\n"}, keys["root2"], when=BASE_TS + 4 * 3600)  # 12:00
    # Alice's key retired at 10:00; whoever holds it signs with GIT_COMMITTER_DATE 09:30.
    backdated = repo.commit({"a": "evil\n"}, keys["root"], when=BASE_TS + 5400)

    assert refused(repo.verify(trust, since=first)) == (
        f"commit {short(backdated)}: committer time 2026-03-02 09:30:00Z is earlier than that of "
        f"its parent {short(second)} (2026-03-02 12:00:00Z); committer times may not go "
        "backwards (a backdated commit could slip inside a retired key's valid-before)"
    )
    assert refused(repo.verify(trust, since=second)) == (
        f"commit {short(backdated)}: committer time 2026-03-02 09:30:00Z is earlier than that of "
        f"the last applied commit {short(second)} (2026-03-02 12:00:00Z); committer times may "
        "not go backwards (a backdated commit could slip inside a retired key's valid-before)"
    )


def test_commit_from_the_future(repo: Repo, keys: dict[str, Key]) -> None:
    future = repo.commit({"a": "1\n"}, keys["root"], when=int(NOW.timestamp()) + 3600)
    assert refused(repo.verify(standard_trust(keys))) == (
        f"commit {short(future)}: committer time 2026-04-01 09:00:00Z lies in the future "
        "(node clock 2026-04-01 08:00:00Z, allowed skew 300s)"
    )


def test_signer_outside_its_scope(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    bad = repo.commit(
        {"apps/pos/app.yaml": "version: 2\n", "sites/de-ber-0042/site.yaml": SITE + "# pos\n"},
        keys["pos"],
    )
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(bad)}: signed by pos-team, which may change apps/pos/**, "
        "but it changes sites/de-ber-0042/site.yaml"
    )


def test_delegated_signer_deleting_outside_its_scope(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    bad = repo.commit({"sites/de-ber-0042/site.yaml": None}, keys["pos"])
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(bad)}: signed by pos-team, which may change apps/pos/**, "
        "but it changes sites/de-ber-0042/site.yaml"
    )


def test_key_adding_itself_to_signers_in_the_same_commit(repo: Repo, keys: dict[str, Key]) -> None:
    applied = seeded(repo, keys)
    widened = signers_yaml(
        {
            "pos-team": ([keys["pos"]], ["apps/pos/**"]),
            "ops-de": ([keys["ops"]], ["sites/de-*/**"]),
            "intruder": ([keys["rogue"]], ["sites/**"]),
        }
    )
    bad = repo.commit(
        {"policies/signers.yaml": widened, "sites/de-ber-0042/site.yaml": SITE + "# evil\n"},
        keys["rogue"],
    )
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(bad)}: signed by an unknown key {keys['rogue'].fingerprint} "
        f"(ssh-ed25519): not in the trust root allowed_signers nor in policies/signers.yaml of "
        f"parent {short(applied)}"
    )


def test_delegated_signer_adding_a_key_then_using_it_later(
    repo: Repo, keys: dict[str, Key]
) -> None:
    applied = seeded(repo, keys)
    widened = signers_yaml(
        {
            "pos-team": ([keys["pos"], keys["rogue"]], ["apps/pos/**", "sites/**"]),
            "ops-de": ([keys["ops"]], ["sites/de-*/**"]),
        }
    )
    grant = repo.commit({"policies/signers.yaml": widened}, keys["pos"], "Add a key")
    use = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# evil\n"}, keys["rogue"])

    result = repo.verify(standard_trust(keys), since=applied)

    assert refused(result) == (
        f"commit {short(grant)}: signed by pos-team, a delegated signer, but it changes "
        "policies/signers.yaml; only root signers may change policies/** — the candidate "
        f"{short(use)} is built on it and refused with it: reset the branch to {short(applied)}, "
        "what the sites run, and commit the work again"
    )
    assert result.verdict_for(use).reason == (  # type: ignore[union-attr]
        f"built on {short(grant)}, which was refused (signed by pos-team, a delegated signer, but "
        "it changes policies/signers.yaml; only root signers may change policies/**); nothing "
        f"built on a refused commit is accepted: reset the branch to {short(applied)}, what the "
        "sites run, and commit the work again"
    )


def test_rollback_to_an_older_commit(repo: Repo, keys: dict[str, Key]) -> None:
    old = seeded(repo, keys)
    repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    applied = repo.commit({"apps/pos/app.yaml": "version: 3\n"}, keys["pos"])
    assert refused(repo.verify(standard_trust(keys), since=applied, rev=old)) == (
        f"candidate {short(old)} is an ancestor of the last applied commit {short(applied)}: "
        "going back is refused (rollback); undo a change with a new revert commit instead"
    )


def test_unrelated_history_after_a_force_push(repo: Repo, keys: dict[str, Key]) -> None:
    seeded(repo, keys)
    applied = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    repo.git("reset", "-q", "--hard", "HEAD~1")
    rewritten = repo.commit({"apps/pos/app.yaml": "version: 2b\n"}, keys["pos"])

    result = repo.verify(standard_trust(keys), since=applied)
    assert refused(result) == (
        f"candidate {short(rewritten)} does not descend from the last applied commit "
        f"{short(applied)}: unrelated history (a force-push, or another branch) is refused"
    )

    repo.checkout("--orphan", "other")
    orphan = repo.commit({"x": "1\n"}, keys["root"])
    assert refused(repo.verify(standard_trust(keys), since=applied, rev=orphan)) == (
        f"candidate {short(orphan)} does not descend from the last applied commit "
        f"{short(applied)}: unrelated history (a force-push, or another branch) is refused"
    )


def test_unsigned_merge(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    repo.checkout("-b", "pos")
    repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    repo.checkout("main")
    repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# y\n"}, keys["ops"])
    merge = repo.merge("pos", None)
    assert refused(repo.verify(standard_trust(keys), since=base)) == (
        f"commit {short(merge)}: not signed; every commit must carry an SSH signature "
        "(git commit -S)"
    )


def test_merge_by_a_delegated_signer_is_judged_against_each_parent(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    repo.checkout("-b", "pos")
    pos_tip = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    repo.checkout("main")
    repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# y\n"}, keys["ops"])
    merge = repo.merge("pos", keys["pos"])
    # Relative to the POS branch, the merge brings in the operators' change to the store.
    assert refused(repo.verify(standard_trust(keys), since=base)) == (
        f"commit {short(merge)}: signed by pos-team, which may change apps/pos/**, but it "
        f"changes sites/de-ber-0042/site.yaml (relative to parent {short(pos_tip)})"
    )


def test_signature_made_for_namespace_file(
    repo: Repo, keys: dict[str, Key], file_namespace_program: Path
) -> None:
    applied = seeded(repo, keys)
    bad = repo.commit(
        {"apps/pos/app.yaml": "version: 2\n"}, keys["pos"], program=file_namespace_program
    )
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(bad)}: signature was made for namespace 'file', not 'git' (a signature "
        "made for another purpose must not count here)"
    )


def test_root_key_restricted_to_another_namespace(repo: Repo, keys: dict[str, Key]) -> None:
    trust = trust_root(
        root_line("alice@example.com", keys["root"], 'namespaces="file,email"'),
        root_line("bob@example.com", keys["root2"], 'namespaces="git"'),
    )
    bad = repo.commit({"a": "1\n"}, keys["root"])
    assert refused(repo.verify(trust)) == (
        f"commit {short(bad)}: allowed_signers:1 allows key {keys['root'].fingerprint} only "
        'for namespaces "file,email", not "git"'
    )
    # Without a namespaces option every namespace is allowed, git included.
    open_trust = trust_root(root_line("alice@example.com", keys["root"]))
    assert repo.verify(open_trust).ok


def _signed_then_replaced(repo: Repo, keys: dict[str, Key], armored: bytes) -> tuple[str, str]:
    applied = seeded(repo, keys)
    signed = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    forged = repo.rewrite(signed, lambda raw: replace_signature(raw, armored))
    return applied, forged


def test_truncated_signature(repo: Repo, keys: dict[str, Key]) -> None:
    seeded(repo, keys)
    good = signature_of(repo.raw(repo.commit({"x": "1\n"}, keys["pos"])))
    lines = good.rstrip(b"\n").split(b"\n")
    applied, forged = _signed_then_replaced(repo, keys, b"\n".join(lines[:3]) + b"\n")
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(forged)}: signature is truncated: '-----END SSH SIGNATURE-----' is missing"
    )

    body = base64.b64decode(b"".join(lines[1:-1]))
    cut = base64.encodebytes(body[: len(body) - 20])
    repo.git("reset", "-q", "--hard", applied)
    applied, forged = _signed_then_replaced(repo, keys, lines[0] + b"\n" + cut + lines[-1] + b"\n")
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(forged)}: signature is malformed: signature needs 83 bytes but only "
        "63 remain (truncated?)"
    )


def test_garbage_signature(repo: Repo, keys: dict[str, Key]) -> None:
    garbage = base64.encodebytes(os.urandom(200))
    armored = b"-----BEGIN SSH SIGNATURE-----\n" + garbage + b"-----END SSH SIGNATURE-----\n"
    applied, forged = _signed_then_replaced(repo, keys, armored)
    message = refused(repo.verify(standard_trust(keys), since=applied))
    assert message.startswith(f"commit {short(forged)}: signature is malformed: magic ")
    assert message.endswith(", expected SSHSIG")

    repo.git("reset", "-q", "--hard", applied)
    applied, forged = _signed_then_replaced(repo, keys, b"this is not a signature\n")
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(forged)}: signature is not an SSH signature: expected "
        "'-----BEGIN SSH SIGNATURE-----', found 'this is not a signature'"
    )


def test_oversized_signature(repo: Repo, keys: dict[str, Key]) -> None:
    huge = base64.encodebytes(os.urandom(96 * 1024))
    armored = b"-----BEGIN SSH SIGNATURE-----\n" + huge + b"-----END SSH SIGNATURE-----\n"
    applied, forged = _signed_then_replaced(repo, keys, armored)
    size = len(signature_of(repo.raw(forged)))
    assert refused(repo.verify(standard_trust(keys), since=applied)) == (
        f"commit {short(forged)}: signature is {size:,} bytes; the limit is 16,384 bytes "
        "(refused unread)"
    )


def test_invalid_signers_file_refuses_delegates_but_not_roots(
    repo: Repo, keys: dict[str, Key]
) -> None:
    seeded(repo, keys)
    broken = repo.commit(
        {"policies/signers.yaml": "kind: Signers\nspec: {signers: []}\n"}, keys["root"]
    )
    pos = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    assert refused(repo.verify(standard_trust(keys), since=broken)) == (
        f"commit {short(pos)}: signed by key {keys['pos'].fingerprint}, not a root signer; "
        f"policies/signers.yaml of parent {short(broken)} is invalid (policies/signers.yaml:1: "
        "expected apiVersion 'outpost/v1', found no apiVersion); until a root signer fixes it, "
        "only root signers can sign"
    )
    repo.git("reset", "-q", "--hard", broken)
    fixed = repo.commit({"policies/signers.yaml": delegations(keys)}, keys["root"])
    assert repo.verify(standard_trust(keys), since=broken, rev=fixed).ok


def test_symlinked_signers_file_is_not_followed(repo: Repo, keys: dict[str, Key]) -> None:
    seeded(repo, keys)
    (repo.path / "policies/signers.yaml").unlink()
    (repo.path / "policies/real.yaml").write_text(delegations(keys))
    (repo.path / "policies/signers.yaml").symlink_to("real.yaml")
    linked = repo.commit({}, keys["root"])
    pos = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    assert refused(repo.verify(standard_trust(keys), since=linked)) == (
        f"commit {short(pos)}: signed by key {keys['pos'].fingerprint}, not a root signer; "
        f"policies/signers.yaml of parent {short(linked)} is not a regular file (git mode "
        "120000); it is ignored"
    )


def test_walk_bound(repo: Repo, keys: dict[str, Key]) -> None:
    first = seeded(repo, keys)
    for number in range(4):
        repo.commit({"apps/pos/app.yaml": f"version: {number}\n"}, keys["pos"])
    result = repo.verify(standard_trust(keys), since=first, max_commits=3)
    assert refused(result) == (
        f"more than 3 commits between the last applied commit {short(first)} and "
        f"{short(repo.head())}; refusing to walk further (raise the limit, e.g. outpost verify "
        "--max-commits, after checking why the range is this long)"
    )
    assert repo.verify(standard_trust(keys), since=first, max_commits=4).ok


def test_verification_agrees_with_git_verify_commit(repo: Repo, keys: dict[str, Key]) -> None:
    """A peer check: what we accept as signed by root, `git verify-commit` accepts too."""
    seeded(repo, keys)
    merge_base = repo.head()
    repo.checkout("-b", "side")
    repo.commit({"b": "1\n"}, keys["root2"], "Side\n\nwith a body\n")
    repo.checkout("main")
    repo.commit({"c": "1\n"}, keys["rsa"])
    repo.merge("side", keys["root"])
    allowed = repo.path.parent / "allowed_signers"
    lines = [
        root_line("alice@example.com", keys["root"]),
        root_line("bob@example.com", keys["root2"]),
        root_line("carol@example.com", keys["rsa"]),
    ]
    allowed.write_text("\n".join(lines) + "\n")
    trust = trust_root(*lines)
    result = repo.verify(trust, since=merge_base)
    assert result.ok, result.error
    for verdict in result.verdicts:
        repo.git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", verdict.sha)


# --- retired keys, merges and the way back (issue 13) ----------------------------------------


def retiring_trust(keys: dict[str, Key]) -> TrustRoot:
    """Alice's root key retired at 2026-03-02 10:00Z; Bob's is valid."""
    return trust_root(
        root_line("alice@example.com", keys["root"], 'valid-before="20260302100000Z"'),
        root_line("bob@example.com", keys["root2"]),
    )


def test_retired_key_cannot_start_new_history_on_a_quiet_repository(
    repo: Repo, keys: dict[str, Key]
) -> None:
    trust = retiring_trust(keys)
    applied = repo.commit(
        {"policies/signers.yaml": delegations(keys), "a": "1\n"}, keys["root"], when=BASE_TS + 600
    )
    # The repository stays quiet; a month later whoever holds Alice's retired key signs a commit
    # dated 09:30, inside its old validity and after the last applied commit.
    evil = repo.commit({"sites/de-ber-0042/site.yaml": "evil\n"}, keys["root"], when=BASE_TS + 5400)
    expected = (
        f"commit {short(evil)}: signed by alice@example.com with key {keys['root'].fingerprint}, "
        "valid at its committer time 2026-03-02 09:30:00Z but retired since 2026-03-02 10:00:00Z "
        "(node clock 2026-04-01 08:00:00Z): a retired key cannot start new history; it counts "
        "only under a commit on top of it signed by a signer valid now whose scope covers "
        "sites/de-ber-0042/site.yaml"
    )
    assert refused(repo.verify(trust, since=applied)) == expected
    # A freshly enrolled node, verifying the whole history, refuses it too (and the first
    # commit, whose key is as retired and which no current signer has signed on top of).
    fresh = repo.verify(trust)
    assert [v.ok for v in fresh.verdicts] == [False, False]
    assert fresh.verdicts[0].reason.endswith("whose scope covers a, policies/signers.yaml")
    assert fresh.verdicts[1].message == expected
    # Before the key retired, a node took the same commit: the key was valid then and now.
    before = datetime.fromtimestamp(BASE_TS + 5500, UTC)
    assert repo.verify(trust, since=applied, now=before).ok


def test_late_bundle_signed_while_valid_gets_in_once_a_current_signer_signs_on_top(
    repo: Repo, keys: dict[str, Key]
) -> None:
    trust = retiring_trust(keys)
    applied = seeded(repo, keys)
    late = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# late\n"}, keys["root"])
    assert refused(repo.verify(trust, since=applied)).startswith(
        f"commit {short(late)}: signed by alice@example.com with key"
    )
    vouch = repo.commit({"fleets/retail-eu.yaml": "x: 1\n"}, keys["root2"], "On top")

    result = repo.verify(trust, since=applied)

    assert result.ok, result.error
    assert result.verdict_for(late).reason == (  # type: ignore[union-attr]
        "signed by root signer alice@example.com (key retired since 2026-03-02 10:00:00Z; "
        f"vouched for by a root signer in {short(vouch)})"
    )


def test_a_delegated_signer_vouches_only_within_its_scope(repo: Repo, keys: dict[str, Key]) -> None:
    trust = retiring_trust(keys)
    applied = seeded(repo, keys)
    in_scope = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["root"])
    repo.commit({"apps/pos/app.yaml": "version: 3\n"}, keys["pos"])
    assert repo.verify(trust, since=applied).ok

    outside = repo.commit({"fleets/retail-eu.yaml": "x: 1\n"}, keys["root"])
    pos = repo.commit({"apps/pos/app.yaml": "version: 4\n"}, keys["pos"])
    result = repo.verify(trust, since=applied)
    assert refused(result).startswith(f"commit {short(outside)}: signed by alice@example.com")
    assert refused(result).endswith(
        f"whose scope covers fleets/retail-eu.yaml — the candidate {short(pos)} is built on it "
        f"and refused with it: reset the branch to {short(applied)}, what the sites run, and "
        "commit the work again"
    )
    assert result.verdict_for(in_scope).ok  # type: ignore[union-attr]
    assert not result.verdict_for(pos).ok  # type: ignore[union-attr]


def test_a_refused_commit_cannot_vouch_for_a_retired_key(repo: Repo, keys: dict[str, Key]) -> None:
    trust = retiring_trust(keys)
    applied = seeded(repo, keys)
    retired = repo.commit({"a": "1\n"}, keys["root"])
    unsigned = repo.commit({"a": "2\n"}, None)
    on_top = repo.commit({"a": "3\n"}, keys["root2"])

    result = repo.verify(trust, since=applied)

    assert "a retired key cannot start new history" in result.verdict_for(retired).reason  # type: ignore[union-attr]
    assert not result.verdict_for(unsigned).ok  # type: ignore[union-attr]
    assert result.verdict_for(on_top).reason.startswith(f"built on {short(unsigned)}, ")  # type: ignore[union-attr]


def test_ordinary_merge_of_a_branch_started_before_the_last_applied_commit(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    repo.checkout("-b", "feature")
    early = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"], "POS 2")
    repo.checkout("main")
    applied = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# y\n"}, keys["ops"])
    merge = repo.merge("feature", keys["root"], "Merge POS 2")

    result = repo.verify(standard_trust(keys), since=applied)

    assert result.ok, result.error
    assert {v.sha for v in result.verdicts} == {early, merge}
    # The same by a delegated signer allowed for the whole change: POS on both sides.
    repo.git("reset", "-q", "--hard", base)
    repo.checkout("-b", "feature2")
    repo.commit({"apps/pos/manifests/a.yaml": "a: 1\n"}, keys["pos"])
    repo.checkout("main")
    applied = repo.commit({"apps/pos/manifests/b.yaml": "b: 1\n"}, keys["pos"])
    repo.merge("feature2", keys["pos"])
    assert repo.verify(standard_trust(keys), since=applied).ok


def test_merged_in_commits_are_still_judged_by_their_signatures(
    repo: Repo, keys: dict[str, Key]
) -> None:
    seeded(repo, keys)
    repo.checkout("-b", "feature")
    rogue = repo.commit({"apps/pos/app.yaml": "version: evil\n"}, keys["rogue"])
    repo.checkout("main")
    applied = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# y\n"}, keys["ops"])
    merge = repo.merge("feature", keys["root"])

    result = repo.verify(standard_trust(keys), since=applied)

    assert refused(result).startswith(f"commit {short(rogue)}: signed by an unknown key")
    assert result.verdict_for(merge).reason.startswith(
        f"built on {short(rogue)}, which was refused"
    )  # type: ignore[union-attr]
    # Along first parents time still never goes back, and never before the applied commit.
    repo.git("reset", "-q", "--hard", applied)
    back = repo.commit({"a": "1\n"}, keys["root"], when=BASE_TS)
    assert "is earlier than that of the last applied commit" in refused(
        repo.verify(standard_trust(keys), since=applied)
    )
    assert back


def test_refusal_names_the_refused_ancestor_not_just_the_parent(
    repo: Repo, keys: dict[str, Key]
) -> None:
    applied = seeded(repo, keys)
    bad = repo.commit({"apps/pos/app.yaml": "version: evil\n"}, keys["rogue"])
    one = repo.commit({"apps/pos/app.yaml": "version: 2\n"}, keys["pos"])
    two = repo.commit({"apps/pos/app.yaml": "version: 3\n"}, keys["pos"])

    result = repo.verify(standard_trust(keys), since=applied)

    for sha in (one, two):
        verdict = result.verdict_for(sha)
        assert verdict is not None
        assert verdict.message.startswith(f"commit {short(sha)}: built on {short(bad)}, which")
        assert verdict.message.endswith(
            f"reset the branch to {short(applied)}, what the sites run, and commit the work again"
        )


def test_no_message_advises_a_revert_on_top_of_a_refused_commit() -> None:
    """A refused commit is never built upon: no text may suggest reverting it."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [
        *(root / "reconciler").rglob("*.py"),
        root / "README.md",
        root / "ARCHITECTURE.md",
    ]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            lowered = line.lower()
            if "revert" in lowered and ("refus" in lowered or "rejected" in lowered):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []
