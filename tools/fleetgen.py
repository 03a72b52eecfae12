"""A large fleet generated from the example repository, for the validation bench and tests.

``generate`` copies the example's apps, fleets, policies and schemas and its sites, then
clones sites from them up to ``n`` (stores mostly, a few percent plants with VMs): each
clone has its own id, machine ids, serials, node keys and age recipient, and one store in
ten other POS values, so most stores render the same objects and some do not. The result
validates clean, as a real fleet does; ``.sops.yaml`` is written as
`outpost secrets sops-config` writes it. ``plant`` then breaks it in known ways, one of
each kind of finding, some of them across sites (a machine id or an age recipient shared
by two sites far apart in the sorted list, so in different shards of a CI matrix).
"""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _node_key(rng: random.Random, comment: str) -> str:
    """An ed25519 public key line (random key bytes in the SSH wire format)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def templates() -> list[str]:
    return sorted(p.name for p in (ROOT / "sites").iterdir() if (p / "site.yaml").is_file())


def generate(n: int, root: Path, rng: random.Random) -> None:
    """The example fleet plus synthetic sites up to ``n`` in total, at ``root``."""
    from reconciler.core.secrets import write_sops_config
    from reconciler.core.secrets._age import bech32_encode

    for top in ("apps", "fleets", "policies", "schemas"):
        if (ROOT / top).is_dir():
            shutil.copytree(ROOT / top, root / top)
    names = templates()
    for site in names:
        shutil.copytree(ROOT / "sites" / site, root / "sites" / site)
    stores = [t for t in names if not t.startswith("plant-")]
    plants = [t for t in names if t.startswith("plant-")]
    for i in range(n - len(names)):
        template = rng.choice(plants) if rng.random() < 0.03 else rng.choice(stores)
        prefix = template.rsplit("-", 1)[0] if not template.startswith("plant-") else "plant"
        site = f"{prefix}-g{i:05d}"
        source = ROOT / "sites" / template
        target = root / "sites" / site
        target.mkdir(parents=True)
        for path in source.rglob("*.yaml"):
            if "secrets" in path.parts:
                continue  # encrypted to the template site's key; not this site's
            relative = path.relative_to(source)
            text = path.read_text()
            text = re.sub(rf"(name:\s*){re.escape(template)}\b", rf"\g<1>{site}", text)
            if relative.name == "hardware.yaml":
                text = re.sub(
                    r"machineId: [0-9a-f]{32}",
                    lambda _m: f"machineId: {rng.randbytes(16).hex()}",
                    text,
                )
                text = re.sub(
                    r"serial: ([A-Za-z0-9-]+)",
                    lambda m: f"serial: {m.group(1)[:4]}{rng.randrange(16**6):06X}",
                    text,
                )
                text = re.sub(
                    r"publicKey: \"ssh-ed25519 [^\"]*\"",
                    lambda _m, site=site: f'publicKey: "{_node_key(rng, "outpost-node@" + site)}"',
                    text,
                )
            if relative.name == "site.yaml":
                text = re.sub(
                    r"age1[0-9a-z]{58}", lambda _m: bech32_encode("age", rng.randbytes(32)), text
                )
            if relative.name == "overrides.yaml" and rng.random() < 0.1:
                text = re.sub(r"lanes: \d+", f"lanes: {rng.choice([8, 16, 24])}", text)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_text(text)
    write_sops_config(root)


def git_commit(root: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "fleet"],
    ):
        subprocess.run(argv, cwd=root, check=True, env=env, capture_output=True)


@dataclass(frozen=True)
class Planted:
    """One planted error: where its finding is expected, under which rule, for which site,
    and a piece of its message."""

    path: str
    rule: str
    site: str
    says: str


def _stores_with(root: Path, text: str) -> list[str]:
    return sorted(
        p.parent.name
        for p in (root / "sites").glob("*-g*/overrides.yaml")
        if text in p.read_text() and not p.parent.name.startswith("plant")
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def plant(root: Path) -> list[Planted]:
    """Break a generated fleet in known ways; the findings ``outpost validate`` should give."""
    sites = sorted(p.name for p in (root / "sites").iterdir() if "-g" in p.name)
    stores = [s for s in _stores_with(root, "pos:") if s.startswith("de-")]
    first, last, middle = stores[0], stores[-1], stores[len(stores) // 2]
    planted: list[Planted] = []

    # schema: a time zone that does not exist
    site = sites[1]
    _edit(root / f"sites/{site}/site.yaml", "timezone: ", "timezone: Mars/Olympus_Mons #")
    planted.append(Planted(f"sites/{site}/site.yaml", "schema", "", "Mars/Olympus_Mons"))

    # reference, across sites: the last store reuses the first store's machine id
    machine = re.search(
        r"machineId: ([0-9a-f]{32})", (root / f"sites/{first}/hardware.yaml").read_text()
    )
    assert machine is not None
    hardware = root / f"sites/{last}/hardware.yaml"
    hardware.write_text(
        re.sub(
            r"machineId: [0-9a-f]{32}",
            f"machineId: {machine.group(1)}",
            hardware.read_text(),
            count=1,
        )
    )
    planted.append(
        Planted(f"sites/{last}/hardware.yaml", "reference", last, f"declared by site {first!r}")
    )

    # reference, across sites: a store's node reports with the first store's node key
    key = re.search(
        r"ssh-ed25519 [A-Za-z0-9+/=]+", (root / f"sites/{first}/hardware.yaml").read_text()
    )
    assert key is not None
    quarter = stores[max(5, len(stores) // 4)]  # none of the stores broken below
    hardware = root / f"sites/{quarter}/hardware.yaml"
    hardware.write_text(
        re.sub(r"ssh-ed25519 [A-Za-z0-9+/=]+", key.group(0), hardware.read_text(), count=1)
    )
    planted.append(
        Planted(f"sites/{quarter}/hardware.yaml", "reference", quarter, f"the key of {first}/")
    )

    # reference, within a site: a store's hardware names two devices alike
    site = stores[4]
    _edit(root / f"sites/{site}/hardware.yaml", "{name: receipt-printer,", "{name: scanner,")
    planted.append(
        Planted(f"sites/{site}/hardware.yaml", "reference", site, "'scanner' is declared twice")
    )

    # secrets, across sites: the middle store declares the first store's age recipient
    recipient = re.search(r"age1[0-9a-z]{58}", (root / f"sites/{first}/site.yaml").read_text())
    assert recipient is not None
    site_yaml = root / f"sites/{middle}/site.yaml"
    site_yaml.write_text(re.sub(r"age1[0-9a-z]{58}", recipient.group(0), site_yaml.read_text()))
    planted.append(Planted(f"sites/{middle}/site.yaml", "secrets", middle, f"with site {first!r}"))
    planted.append(Planted(".sops.yaml", "secrets", middle, f"site {middle!r} does not match"))

    # secrets: a literal password in a site's overrides
    site = stores[1]
    _edit(
        root / f"sites/{site}/overrides.yaml",
        "values: {",
        "values: {adminPassword: hunter2, ",
    )
    planted.append(Planted(f"sites/{site}/overrides.yaml", "secrets", site, "literal value"))
    planted.append(Planted(f"sites/{site}/overrides.yaml", "render", site, "adminPassword"))

    # policy: a store's patch gives the POS server the host's network
    site = stores[2]
    _edit(
        root / f"sites/{site}/overrides.yaml",
        "merge: {spec: {strategy:",
        "merge: {spec: {template: {spec: {hostNetwork: true}}, strategy:",
    )
    planted.append(Planted("", "host-access", site, "host"))

    # Kubernetes API schema: a store's patch writes a word where the API wants a number
    site = stores[3]
    _edit(
        root / f"sites/{site}/overrides.yaml",
        "merge: {spec: {strategy:",
        "merge: {spec: {revisionHistoryLimit: ten, strategy:",
    )
    planted.append(Planted("", "kubernetes", site, "revisionHistoryLimit"))

    # a plaintext Secret every POS store renders (one finding for all of them), and one in
    # a vendored version no site runs yet (found as written)
    manifest = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n"
        "stringData:\n  password: hunter2\n"
    )
    for folder, name in (("pos/manifests", "pos-admin"), ("mqtt-broker/manifests/2.0.18", "old")):
        path = f"apps/{folder}/admin-secret.yaml"
        (root / path).write_text(manifest.format(name=name))
        planted.append(Planted(path, "secrets", "", "a Kubernetes Secret with stringData"))
        planted.append(Planted(path, "secrets", "", "'password' holds a literal value"))
    planted.append(
        Planted("apps/mqtt-broker/manifests/2.0.18/admin-secret.yaml", "vendor", "", "vendored")
    )
    planted.append(
        Planted("apps/pos/manifests/admin-secret.yaml", "no-plaintext-secrets", "", "plaintext")
    )

    # Kubernetes API schema, in an app's manifest: one finding for every site that runs it
    _edit(
        root / "apps/camera-analytics/manifests/inference.yaml",
        "\nspec:\n",
        "\nspec:\n  revisionHistoryLimit: ten\n",
    )
    planted.append(
        Planted("apps/camera-analytics/manifests/inference.yaml", "kubernetes", "", " sites: ")
    )
    planted.append(
        Planted(
            "apps/mqtt-broker/manifests/2.0.18/admin-secret.yaml", "no-plaintext-secrets", "", ""
        )
    )
    return planted
