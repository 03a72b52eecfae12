"""``python -m tools.demo`` (``make demo``): one store reconciled end to end, on this machine.

What it does, with the real parts a store uses:

1. copies the bundled example fleet into a new git repository and signs the commit with a
   fresh SSH key (the "root signer"), whose public key becomes the node's trust root;
2. starts the test control plane (kube-apiserver, etcd, controller manager, scheduler and
   kwok, built from source by ``python -m tools.testcluster build``) with a node named
   like the store's hardware;
3. enrolls the Munich supermarket de-muc-0007's box (``outpost node enroll`` from its
   machine identity, ``outpost site accept`` and a root-signed commit), then
   runs ``outpost agent run --once`` for it against the control plane,
   tick by tick: the gate (today's window and the retail peak-season freeze), an
   emergency fix signed by the root signer that passes them, drift corrected, and an
   unsigned commit refused while the store keeps its last good revision;
4. sends the store's signed status report after each tick to a collector
   (``outpost fleet serve`` on loopback, SQLite), which verifies it against the node key
   in the store's ``hardware.yaml``; ``outpost fleet status`` shows what headquarters sees;
5. stops everything. Nothing is left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tools import fleetserve
from tools.signedfleet import REPO_ROOT, SignedFleet, create
from tools.testcluster import Cluster, running

SITE = "de-muc-0007"


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(text: str) -> None:
    print(textwrap.indent(text.rstrip(), "   "), flush=True)


def outpost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )
    show(f"$ outpost {' '.join(args)}  (exit {done.returncode})")
    if done.stdout.strip():
        show(done.stdout)
    return done


def tick(config: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "reconciler.cli", "agent", "run", "--once"),
            *("--config", str(config), "--log-format", "json"),  # parsed below, line by line
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
    )
    last = {}
    for line in done.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            show(line)
            continue
        if entry.get("msg") == "tick done":
            last = entry
    show(f"$ outpost agent run --once  (exit {done.returncode}, outcome {last.get('outcome')})")
    return last


def store_node(name: str = "edge-1") -> dict[str, Any]:
    """A kwok-managed Node named like a node of the store's hardware.yaml."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
        },
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        },
    }


def add_store_node(cluster: Cluster) -> None:
    node = store_node()
    manifest = Path(tempfile.mkstemp(suffix=".json")[1])
    manifest.write_text(json.dumps(node))
    cluster.kubectl("create", "-f", str(manifest))
    cluster.kubectl("wait", "--for=condition=Ready", "node/edge-1", "--timeout=60s")


def start_collector(work: Path, fleet: SignedFleet) -> tuple[subprocess.Popen[bytes], str]:
    """``outpost fleet serve`` on a free loopback port; its URL once it answers."""
    process, port, _ = fleetserve.start(
        ["--db", str(work / "collector.db")],
        fleet.path,
        fleet.allowed_signers,
        # The enrollment commit brings the node's new key: read it within seconds.
        *("--refresh", "2"),
        log=lambda port: work / "collector.log",
        cwd=REPO_ROOT,
    )
    return process, f"http://127.0.0.1:{port}"


def enroll_store(work: Path, fleet: SignedFleet, cluster: Cluster, collector: str) -> Path:
    """The store's box enrolls from its hardware identity; operations accept it, signed."""
    import getpass

    box = work / "box"  # this machine plays the Munich box: its identity as hardware.yaml has it
    box.mkdir()
    (box / "machine-id").write_text("9ebe7fbe5dec546e5d6d50404bf78330\n")
    (box / "product_serial").write_text("CZCE21679E\n")
    etc = work / "etc"
    enrolled = outpost(
        *("node", "enroll", "--repo", str(fleet.path), "--trust-root", str(fleet.allowed_signers)),
        *("--site", SITE, "--config-dir", str(etc), "--state-dir", str(work / "state")),
        *("--user", getpass.getuser(), "--source-url", fleet.url),
        *("--kubeconfig", str(cluster.kubeconfig), "--report-url", f"{collector}/api/v1/reports"),
        # The demo shows the gate on tick 1, so this store's first apply waits like any change.
        *("--first-apply", "gated"),
        *(
            "--machine-id-file",
            str(box / "machine-id"),
            "--serial-file",
            str(box / "product_serial"),
        ),
    )
    if enrolled.returncode != 0:
        raise RuntimeError(f"enrollment failed: {enrolled.stderr}")
    accepted = outpost(
        *("site", "accept", str(etc / "enrollment-request.json"), "--repo", str(fleet.path)),
        *("--key", str(REPO_ROOT / "tests/keys/age/break-glass.key")),
    )
    if accepted.returncode != 0:
        raise RuntimeError(f"accepting the enrollment failed: {accepted.stderr}")
    fleet.commit(f"Enroll {SITE}/edge-1", when=datetime.now(UTC) - timedelta(hours=1))
    show("root signer committed the node's keys and the re-encrypted secrets")
    config = etc / "agent.yaml"
    text = config.read_text().replace("  stateDir:", "  healthDeadline: 2m\n  stateDir:", 1)
    config.write_text(text)
    return config


def main() -> int:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="outpost-demo-") as tmp:
        work = Path(tmp)
        say("A signed repository made from the bundled example fleet")
        fleet = create(work / "repo", when=now - timedelta(hours=2))
        show(f"repository {fleet.path}, head {fleet.head()[:12]}, root signer key {fleet.root_key}")
        outpost("validate", str(fleet.path))
        outpost("verify", "--trust", str(fleet.allowed_signers), "--repo", str(fleet.path))

        say("Headquarters: the collector (outpost fleet serve, SQLite, on loopback)")
        collector, collector_url = start_collector(work, fleet)
        show(f"collecting at {collector_url}, store {work / 'collector.db'}")
        try:
            demo(work, fleet, now, collector_url)
        finally:
            collector.terminate()
            collector.wait(timeout=30)
        show("done: nothing left running")
    return 0


def demo(work: Path, fleet: SignedFleet, now: datetime, collector: str) -> None:
    say("Starting the test control plane (kube-apiserver + etcd + kwok nodes, on loopback)")
    with running(work / "cluster") as cluster:
        add_store_node(cluster)
        show(cluster.kubectl("get", "nodes").stdout)
        env = cluster.env()
        say(f"Enrollment — the {SITE} box finds itself in hardware.yaml")
        config = enroll_store(work, fleet, cluster, collector)

        say(f"Tick 1 — store {SITE} sees the fleet for the first time")
        report = tick(config, env)
        outpost("agent", "status", "--config", str(config))
        if report.get("outcome") != "applied":
            say("The gate held it back (window or freeze); an emergency fix may pass")
            fleet.edit(f"sites/{SITE}/site.yaml", lambda t: t + "# card terminals: TLS fix\n")
            fleet.commit(
                "Munich: card terminal TLS fix",
                when=now - timedelta(minutes=30),
                emergency="card terminals reject the new acquirer certificate",
            )
            show("root signer committed with trailer 'Outpost-Emergency: ...'")
            tick(config, env)
            outpost("agent", "status", "--config", str(config))
        show(cluster.kubectl("get", "deploy,ds,svc,secret", "-n", "pos").stdout)

        say("Drift — someone deletes the POS service by hand")
        cluster.kubectl("delete", "service", "pos-server", "-n", "pos")
        tick(config, env)
        outpost("agent", "status", "--config", str(config))
        show(cluster.kubectl("get", "svc", "-n", "pos").stdout)

        say("An unsigned commit arrives (a stolen push credential)")
        fleet.edit("fleets/retail-eu.yaml", lambda t: t + "# not reviewed\n")
        fleet.commit("sneaky change", when=now - timedelta(minutes=10), sign=False)
        tick(config, env)
        outpost("agent", "status", "--config", str(config))

        say("Headquarters: the store's signed reports arrived at the collector")
        repo = ["--repo", str(fleet.path), "--trust", str(fleet.allowed_signers)]
        # The head is the refused commit: list the sites of the last signed one.
        outpost("fleet", "status", "--db", str(work / "collector.db"), *repo, "--rev", "HEAD~1")

        say("Stopping the control plane and the collector")


if __name__ == "__main__":
    sys.exit(main())
