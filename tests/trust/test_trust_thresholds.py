"""Thresholds and in-band root rotation, on real git repositories signed by real ssh-keygen keys.

Part of the attack corpus: one stolen root key must not be enough to change the rules
(``policies/**``), declare an emergency or move the trust root, and a rotation that
retires it must hold for every node.
"""

from __future__ import annotations

from pathlib import Path

from trust_git import BASE_TS, Key, Repo, root_line, short, signers_yaml, trust_root

from reconciler.core.trust.allowed_signers import TrustRoot
from reconciler.core.trust.verify import RangeResult

SITE = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: de-ber-0042}\n"
POLICY = "apiVersion: outpost/v1\nkind: Policy\nmetadata: {name: p}\n"


def roots(keys: dict[str, Key]) -> TrustRoot:
    """Three root principals: alice, bob, carol."""
    return trust_root(
        root_line("alice@example.com", keys["root"]),
        root_line("bob@example.com", keys["root2"]),
        root_line("carol@example.com", keys["rsa"]),
    )


def roots_text(keys: dict[str, Key], *names: str) -> str:
    by = {"alice": "root", "bob": "root2", "carol": "rsa", "dave": "pos2"}
    return "\n".join(root_line(f"{n}@example.com", keys[by[n]]) for n in names) + "\n"


def signers_with(keys: dict[str, Key], extra: str) -> str:
    return signers_yaml({"pos-team": ([keys["pos"]], ["apps/pos/**"])}) + extra


THRESHOLD = "  thresholds:\n    - paths: ['policies/**']\n      approvals: 2\n"


def seeded(repo: Repo, keys: dict[str, Key], extra: str = THRESHOLD) -> str:
    return repo.commit(
        {"policies/signers.yaml": signers_with(keys, extra), "sites/de-ber-0042/site.yaml": SITE},
        keys["root"],
        "seed",
        when=BASE_TS,
    )


def pending_of(result: RangeResult) -> list[str]:
    assert result.ok, result.error
    return [p.sha for p in result.pending]


def test_a_policy_change_by_one_root_under_a_threshold_of_two_stays_pending(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    site = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# v2\n"}, keys["root"], "site")
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    later = repo.commit({"apps/pos/app.yaml": "x: 1\n"}, keys["pos"], "pos work on top")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == [change]
    assert not result.complete
    assert result.applicable == site  # earlier approved work still goes out; nothing after
    message = result.pending[0].message
    assert f"commit {short(change)} changes policies/p.yaml" in message
    assert "needs 2 distinct principals, has 1 (alice@example.com)" in message
    assert "from bob@example.com, carol@example.com" in message
    assert f"Approve {short(change)}" in message
    assert later not in pending_of(result)  # blocked behind it, not itself pending


def test_a_second_principals_approval_makes_it_apply(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    approve = repo.commit({}, keys["root2"], f"Approve {change}")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == []
    assert result.complete and result.applicable == approve


def test_the_same_principal_twice_does_not_count(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys)
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    repo.commit({}, keys["root"], f"Approve {change}")
    repo.commit({}, keys["root"], f"Approve {change} again")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == [change]
    assert result.applicable == base or result.applicable is None


def test_one_key_listed_under_two_principals_counts_once(repo: Repo, keys: dict[str, Key]) -> None:
    """A stolen key listed for two names is still one key."""
    trust = trust_root(
        root_line("alice@example.com", keys["root"]),
        root_line("alice-backup@example.com", keys["root"]),
        root_line("bob@example.com", keys["root2"]),
    )
    base = seeded(repo, keys)
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    repo.commit({}, keys["root"], f"Approve {change}")

    assert pending_of(repo.verify(trust, since=base)) == [change]


def test_lowering_the_threshold_needs_the_threshold_it_lowers(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    lower = repo.commit({"policies/signers.yaml": signers_with(keys, "")}, keys["root"], "lower")
    repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy under the lowered rule")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == [lower]
    assert result.applicable is None


def test_a_threshold_takes_effect_for_the_commits_after_it(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys, extra="")
    add = repo.commit({"policies/signers.yaml": signers_with(keys, THRESHOLD)}, keys["root"], "2")
    policy = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == [policy]
    assert result.applicable == add


def test_an_emergency_needs_its_approvals(repo: Repo, keys: dict[str, Key]) -> None:
    extra = "  emergencyApprovals: 2\n"
    base = seeded(repo, keys, extra=extra)
    message = "hotfix\n\nOutpost-Emergency: card terminals down"
    urgent = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# fix\n"}, keys["root"], message)

    result = repo.verify(roots(keys), since=base)
    assert pending_of(result) == [urgent]
    assert "declares an emergency" in result.pending[0].message

    repo.commit({}, keys["rsa"], f"Approve {urgent}")
    assert pending_of(repo.verify(roots(keys), since=base)) == []


def test_a_threshold_on_an_app_counts_delegated_signers_in_scope(
    repo: Repo, keys: dict[str, Key]
) -> None:
    extra = "  thresholds:\n    - paths: ['apps/pos/**']\n      approvals: 2\n"
    base = repo.commit(
        {
            "policies/signers.yaml": signers_yaml(
                {"pos-team": ([keys["pos"]], ["apps/pos/**"]), "ops": ([keys["ops"]], ["sites/**"])}
            )
            + extra
        },
        keys["root"],
        "seed",
        when=BASE_TS,
    )
    change = repo.commit({"apps/pos/app.yaml": "x: 1\n"}, keys["pos"], "pos")
    repo.commit({}, keys["ops"], f"Approve {change}")  # ops may not change apps/pos: no count

    result = repo.verify(roots(keys), since=base)
    assert pending_of(result) == [change]
    assert "from alice@example.com, bob@example.com, carol@example.com" in result.pending[0].message

    repo.commit({}, keys["root2"], f"Approve {change}")
    assert pending_of(repo.verify(roots(keys), since=base)) == []


def test_a_retired_root_key_approves_nothing(repo: Repo, keys: dict[str, Key]) -> None:
    """A key whose valid-before has passed cannot approve, even backdated into its validity."""
    trust = trust_root(
        root_line("alice@example.com", keys["root"]),
        root_line("bob@example.com", keys["root2"], 'valid-before="20260310Z"'),
    )
    base = seeded(repo, keys)
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy", when=BASE_TS + 60)
    repo.commit({}, keys["root2"], f"Approve {change}", when=BASE_TS + 120)
    repo.commit({}, keys["root"], "a current root signer on top", when=BASE_TS + 180)

    assert pending_of(repo.verify(trust, since=base)) == [change]


# -- root rotation ------------------------------------------------------------------


def rotate(repo: Repo, keys: dict[str, Key], signer: str, *names: str) -> str:
    return repo.commit({"policies/root-signers": roots_text(keys, *names)}, keys[signer], "rotate")


def test_a_rotation_approved_by_the_threshold_retires_the_stolen_key(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    rotation = rotate(repo, keys, "root2", "bob", "carol", "dave")  # alice's key was stolen
    approval = repo.commit({}, keys["rsa"], f"Approve {rotation}")
    by_dave = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# dave\n"}, keys["pos2"], "d")

    result = repo.verify(roots(keys), since=base)

    assert result.complete, result.error
    assert [(r.commit, r.effective) for r in result.rotations] == [(rotation, approval)]
    assert result.rotations[0].approvers == ("bob@example.com", "carol@example.com")
    assert result.verdict_for(by_dave).principal == "dave@example.com"  # type: ignore[union-attr]

    stolen = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# evil\n"}, keys["root"], "evil")
    result = repo.verify(roots(keys), since=base)
    assert not result.ok
    verdict = result.verdict_for(stolen)
    assert verdict is not None and not verdict.ok
    assert "unknown key" in verdict.reason
    assert f"{short(rotation)}" in verdict.reason  # names the root it was judged by


def test_a_rotation_approved_by_the_new_keys_alone_is_refused(
    repo: Repo, keys: dict[str, Key]
) -> None:
    """The thief signs a rotation to a root of their own and approves it with the new key."""
    base = seeded(repo, keys)
    rotation = rotate(repo, keys, "root", "alice", "dave")
    approval = repo.commit({}, keys["pos2"], f"Approve {rotation}")

    result = repo.verify(roots(keys), since=base)

    assert not result.ok
    verdict = result.verdict_for(approval)
    assert verdict is not None and "unknown key" in verdict.reason
    assert result.rotations == ()


def test_a_rotation_by_one_root_under_a_threshold_stays_pending(
    repo: Repo, keys: dict[str, Key]
) -> None:
    base = seeded(repo, keys)
    rotation = rotate(repo, keys, "root", "alice", "dave")
    repo.commit({}, keys["root"], f"Approve {rotation}")

    result = repo.verify(roots(keys), since=base)

    assert pending_of(result) == [rotation]
    assert "a trust-root rotation" in result.pending[0].message
    assert result.rotations == ()
    assert result.applicable == base or result.applicable is None


def test_an_invalid_next_root_is_refused_with_its_line(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys, extra="")
    bad = repo.commit(
        {"policies/root-signers": "bob@example.com ssh-ed25519 AAAA-nope\n"}, keys["root"]
    )

    result = repo.verify(roots(keys), since=base)

    verdict = result.verdict_for(bad)
    assert verdict is not None and not verdict.ok
    assert "the next trust root it writes is invalid" in verdict.reason
    assert f"policies/root-signers at {short(bad)}:1" in verdict.reason


def test_deleting_the_next_root_is_refused(repo: Repo, keys: dict[str, Key]) -> None:
    base = seeded(repo, keys, extra="")
    rotate(repo, keys, "root", "alice", "bob")
    gone = repo.commit({"policies/root-signers": None}, keys["root"], "drop it")

    result = repo.verify(roots(keys), since=base)

    verdict = result.verdict_for(gone)
    assert verdict is not None and "never removed" in verdict.reason


def test_an_old_root_file_follows_the_chain_of_rotations(repo: Repo, keys: dict[str, Key]) -> None:
    """Two rotations in a row: from the enrolled root, the second is judged by the first's."""
    base = seeded(repo, keys, extra="")
    first = rotate(repo, keys, "root", "bob", "carol")
    second = rotate(repo, keys, "root2", "carol", "dave")
    last = repo.commit({"sites/de-ber-0042/site.yaml": SITE + "# dave\n"}, keys["pos2"], "d")

    result = repo.verify(roots(keys), since=base)

    assert result.complete, result.error
    assert [r.effective for r in result.rotations] == [first, second]
    assert result.verdict_for(last).principal == "dave@example.com"  # type: ignore[union-attr]
    # and alice, retired by the first rotation, cannot rotate again after it
    repo.commit({"policies/root-signers": roots_text(keys, "alice")}, keys["root"], "take back")
    assert not repo.verify(roots(keys), since=base).ok


def test_outpost_verify_lists_pending_approvals_and_rotations(
    repo: Repo, keys: dict[str, Key], tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    trust = tmp_path / "old_root"
    trust.write_text(roots_text(keys, "alice", "bob", "carol"))
    base = seeded(repo, keys)
    rotation = rotate(repo, keys, "root2", "bob", "carol", "dave")
    approval = repo.commit({}, keys["rsa"], f"Approve {rotation}")
    change = repo.commit({"policies/p.yaml": POLICY}, keys["pos2"], "dave's policy")

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "verify", "--repo", str(repo.path),
             "--trust", str(trust), "--since", base, *extra],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip

    text = verify()
    assert text.returncode == 1, text.stderr
    assert f"trust root rotated by {short(rotation)} (approved by bob@example.com, " in text.stdout
    assert f"pending: commit {short(change)} changes policies/p.yaml" in text.stdout
    assert "has 1 (dave@example.com); waiting for 1 more from bob@example.com" in text.stdout
    assert f"a node takes {short(approval)} meanwhile" in text.stdout
    body = json.loads(verify("-o", "json").stdout)
    assert body["complete"] is False and body["applicable"] == approval
    assert [p["sha"] for p in body["pending"]] == [change]
    assert body["rotations"] == [
        {"commit": rotation, "effective": approval,
         "approvers": ["bob@example.com", "carol@example.com"]}
    ]  # fmt: skip
