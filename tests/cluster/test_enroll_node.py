"""From ``outpost node enroll`` to a healthy site on the real control plane, in one test.

A fresh node of de-muc-0007 (a kwok node named as in its hardware.yaml) enrolls from a
signed copy of the example fleet with its machine identity in files; operations accepts
the request in the repository (the node key and the site's age key recorded, the site's
secrets re-encrypted to the node) and commits it signed by the root signer; the node's
first tick, at 11:00 in Munich (outside the store's window), verifies from its floor and
applies the slice, secrets included: nothing runs there yet (``spec.firstApply:
immediate``). The next change to the site waits for the window as usual.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_agent import clean_site, read, store_node  # noqa: F401 - fixtures

from reconciler.ci.accept import accept_request
from reconciler.core.secrets import Sops
from reconciler.node.agent import Agent
from reconciler.node.config import load_config
from reconciler.node.enroll import EnrollOptions, enroll
from reconciler.node.pipeline import ManagerCluster, NodePipeline
from tools.signedfleet import SignedFleet, create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SITE = "de-muc-0007"
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
OUTSIDE_WINDOW = datetime(2027, 2, 2, 10, 0, tzinfo=UTC)  # 11:00 in Munich, a Tuesday
MACHINE_ID, SERIAL = "9ebe7fbe5dec546e5d6d50404bf78330", "CZCE21679E"  # its hardware.yaml


@pytest.fixture
def fleet(tmp_path: Path) -> SignedFleet:
    return create(tmp_path / "repo", when=T0)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path / "box"
    folder.mkdir()
    (folder / "machine-id").write_text(MACHINE_ID + "\n")
    (folder / "product_serial").write_text(SERIAL + "\n")
    yield folder / "machine-id", folder / "product_serial"


def test_a_fresh_node_enrolls_is_accepted_and_its_first_tick_applies_the_site(
    tmp_path: Path,
    fleet: SignedFleet,
    cluster: Cluster,
    clean_site: None,  # noqa: F811
    box: tuple[Path, Path],
) -> None:
    machine_id_file, serial_file = box
    enrolled_from = fleet.head()
    done = enroll(
        EnrollOptions(
            config_dir=tmp_path / "etc",
            trust_root=fleet.allowed_signers,
            repo=fleet.path,
            site=SITE,
            machine_id_file=machine_id_file,
            serial_file=serial_file,
            user=getpass.getuser(),
            state_dir=tmp_path / "state",
            kubeconfig=Path(cluster.kubeconfig),
            source_url=fleet.url,
        ),
        now=T0 + timedelta(minutes=10),
    )
    assert (done.node.site, done.node.node, done.floor) == (SITE, "edge-1", enrolled_from)

    config = load_config(done.config)
    assert config.floor == enrolled_from
    clock = _Clock(OUTSIDE_WINDOW - timedelta(minutes=30))
    agent = Agent(
        config,
        pipeline=NodePipeline(config),
        cluster=lambda: ManagerCluster.connect(config),
        clock=clock,
    )
    # before acceptance: the node waits, says why, and remembers no refusal
    early = agent.tick()
    assert (early.outcome, early.pending, early.applied) == ("interrupted", enrolled_from, None)
    assert "enrollment has not been accepted yet" in (early.pending_reason or "")

    # operations: accept the request, commit it signed by the root signer
    accepted = accept_request(fleet.path, done.request, key=ROOT / "tests/keys/age/break-glass.key")
    assert f"sites/{SITE}/hardware.yaml" in accepted.written
    secret = f"sites/{SITE}/secrets/wifi-psk.sops.yaml"
    assert secret in accepted.written
    assert not _decrypts(fleet.path / secret, ROOT / "tests/keys/age" / f"{SITE}.key")
    accept_commit = fleet.commit(f"Enroll {SITE}/edge-1", when=T0 + timedelta(hours=1))

    # the node's first tick after it, outside the store's window
    clock.now = OUTSIDE_WINDOW
    first = agent.tick()
    assert (first.outcome, first.applied, first.health) == ("applied", accept_commit, "healthy")
    assert read(cluster, "deployment", "pos", "pos-server") is not None
    wifi = read(cluster, "secret", "pos", "wifi-psk")
    assert wifi is not None, "the secret decrypted with the node's own age key"

    # the next change is gated by the window as usual
    fleet.edit(
        f"sites/{SITE}/site.yaml",
        lambda t: t.replace("country: de", "country: de\n    pilot: enrolled", 1),
    )
    later = fleet.commit("label the store", when=T0 + timedelta(hours=2))
    clock.now = OUTSIDE_WINDOW + timedelta(minutes=10)
    second = agent.tick()
    assert (second.outcome, second.pending, second.applied) == ("waiting", later, accept_commit)


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _decrypts(path: Path, key: Path) -> bool:
    from reconciler.core.errors import SecretError

    try:
        Sops().decrypt(path.read_bytes(), key_file=key, path=str(path))
    except SecretError:
        return False
    return True
