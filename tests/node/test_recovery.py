"""A lost state.json never lowers the floor: recovery from the mirror and the cluster's inventory.

Real git: a signed repository fetched into a real bare mirror. The cluster's answer (the
inventory's revision) is passed in, as the agent does; the agent itself is exercised
against the real control plane in tests/cluster/test_agent.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trust_git import Key, Repo

from reconciler.core.errors import ConfigError
from reconciler.node.config import AgentConfig, fetch_default, load_config
from reconciler.node.fetch import APPLIED_REF, Mirror
from reconciler.node.recovery import FAILED_PREFIX, REFUSED_PREFIX, recover, remember


@pytest.fixture
def history(tmp_path: Path, keys: dict[str, Key]) -> tuple[Repo, list[str], Mirror]:
    """Commits c0 → c1 → c2 on main and an unrelated root commit u on another branch, all
    fetched into a mirror."""
    repo = Repo(tmp_path / "repo")
    commits = [repo.commit({"a": f"{n}\n"}, keys["root"]) for n in range(3)]
    repo.checkout("--orphan", "other")
    commits.append(repo.commit({"b": "x\n"}, keys["root"]))
    mirror = Mirror(tmp_path / "mirror.git")
    mirror.fetch(f"file://{repo.path}", "main")
    mirror.fetch(f"file://{repo.path}", "other")
    return repo, commits, mirror


def test_nothing_on_record_recovers_nothing(history: tuple[Repo, list[str], Mirror]) -> None:
    _, _, mirror = history
    found = recover(mirror, cluster_revision=None, floor=None)
    assert (found.applied, dict(found.refused), found.failed, found.notes) == (None, {}, (), ())


def test_the_mirrors_applied_ref_and_the_cluster_agree_or_the_newer_wins(
    history: tuple[Repo, list[str], Mirror],
) -> None:
    _, (c0, c1, c2, unrelated), mirror = history
    mirror.pin(APPLIED_REF, c1)
    assert recover(mirror, cluster_revision=None, floor=None).applied == c1
    assert recover(mirror, cluster_revision=c1, floor=None).applied == c1
    # An apply of c2 completed in the cluster, the kill came before the ref moved.
    assert recover(mirror, cluster_revision=c2, floor=None).applied == c2
    # The cluster's inventory is older than what the mirror pinned: the newer wins.
    assert recover(mirror, cluster_revision=c0, floor=None).applied == c1
    # Unrelated: what the cluster runs wins, and the status says so.
    found = recover(mirror, cluster_revision=unrelated, floor=None)
    assert found.applied == unrelated
    assert any("which are unrelated; taking what the cluster runs" in n for n in found.notes)
    # A wiped mirror: the cluster alone still knows (the commit may come back with a fetch).
    mirror.repo.references.delete(APPLIED_REF)
    assert recover(mirror, cluster_revision=c2, floor=None).applied == c2


def test_the_floor_bounds_what_is_recovered(history: tuple[Repo, list[str], Mirror]) -> None:
    _, (c0, c1, c2, unrelated), mirror = history
    mirror.pin(APPLIED_REF, c0)
    found = recover(mirror, cluster_revision=unrelated, floor=c1)
    assert found.applied is None
    assert any(f"does not descend from the enrolled floor {c1[:12]}" in n for n in found.notes)
    assert recover(mirror, cluster_revision=c2, floor=c1).applied == c2
    assert recover(mirror, cluster_revision=c1, floor=c1).applied == c1


def test_a_failed_revision_in_the_inventory_is_not_what_runs(
    history: tuple[Repo, list[str], Mirror],
) -> None:
    """A failed first install, removed again, leaves the inventory under its revision."""
    _, (c0, _, _, _), mirror = history
    remember(mirror, {}, [c0])
    found = recover(mirror, cluster_revision=c0, floor=None)
    assert (found.applied, found.failed) == (None, (c0,))


def test_refused_and_failed_commits_survive_in_the_mirror(
    history: tuple[Repo, list[str], Mirror],
) -> None:
    _, (_, c1, c2, unrelated), mirror = history
    remember(mirror, {unrelated: "commit abc: not signed"}, [c2])
    names = sorted(n for n in mirror.repo.references if n.startswith("refs/outpost/"))
    assert REFUSED_PREFIX + unrelated in names and FAILED_PREFIX + c2 in names
    found = recover(mirror, cluster_revision=c1, floor=None)
    assert dict(found.refused) == {unrelated: "commit abc: not signed"}
    assert found.failed == (c2,)
    assert found.notes[0].startswith(
        f"the state file was lost; recovered the applied revision {c1[:12]} from the cluster's "
        "inventory, 1 refused and 1 failed commit(s) from the mirror"
    )
    # Forgotten in the state (bounded lists), forgotten in the mirror.
    remember(mirror, {}, [])
    assert not [
        n
        for n in mirror.repo.references
        if n.startswith(("refs/outpost/refused/", "refs/outpost/failed/"))
    ]


def test_a_failed_commit_in_the_inventory_is_not_taken_as_applied(
    history: tuple[Repo, list[str], Mirror],
) -> None:
    """A failed first install pruned again once left its revision in the inventory: the
    next tick took it as applied, called the site unchanged and re-applied it as drift."""
    _, (c0, c1, _, _), mirror = history
    remember(mirror, {}, [c1])
    found = recover(mirror, cluster_revision=c1, floor=None)
    assert (found.applied, found.failed) == (None, (c1,))
    assert any(f"names {c1[:12]}, which failed its health check" in n for n in found.notes)
    # A good revision pinned before the failure still wins.
    mirror.pin(APPLIED_REF, c0)
    assert recover(mirror, cluster_revision=c1, floor=None).applied == c0


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        '  source: {url: "file:///srv/repo", branch: main}\n'
        "  trustRoot: allowed_signers\n  stateDir: state\n" + extra
    )
    return path


def test_floor_and_fetch_limits_in_agent_yaml(tmp_path: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    config = load_config(
        write_config(
            tmp_path,
            f"  trust: {{floor: {sha}}}\n  fetchLimits: {{maxBytes: 2048, maxObjects: 10}}\n",
        )
    )
    assert (config.floor, config.fetch_max_bytes, config.fetch_max_objects) == (sha, 2048, 10)
    defaults = load_config(write_config(tmp_path, ""))
    assert defaults.floor is None
    assert defaults.fetch_max_bytes == fetch_default("maxBytes") == 512 * 1024 * 1024
    assert defaults.fetch_max_objects == fetch_default("maxObjects") == 1_000_000
    fields = AgentConfig.__dataclass_fields__
    assert fields["fetch_max_bytes"].default == fetch_default("maxBytes")
    assert fields["fetch_max_objects"].default == fetch_default("maxObjects")
    with pytest.raises(ConfigError, match=r"spec\.trust\.floor"):
        load_config(write_config(tmp_path, "  trust: {floor: HEAD~3}\n"))
