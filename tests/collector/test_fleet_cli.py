"""`outpost fleet ingest DIR` and `outpost fleet status` on the collector's store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector_world import Keys, signed

from reconciler.cli import main

NOW = datetime.now(UTC).replace(microsecond=0)


def stick(tmp_path: Path, keys: Keys) -> Path:
    outbox = tmp_path / "stick" / "outbox"
    outbox.mkdir(parents=True)
    reports = {
        "plant-ostrava": signed(keys, "plant-ostrava", NOW, node="ipc-2", revision="e" * 40),
        "plant-lyon": signed(
            keys,
            "plant-lyon",
            NOW,
            node="ipc-1",
            outcome="waiting",
            pending={
                "revision": "f" * 40,
                "reason": "maintenance window",
                "until": (NOW + timedelta(days=2)).isoformat(),
            },
        ),
    }
    for site, envelope in reports.items():
        (outbox / f"outpost-status-{site}.json").write_bytes(envelope.to_bytes())
    return outbox


def repo_args(fleet) -> list[str]:
    return ["--repo", str(fleet.path), "--trust", str(fleet.allowed_signers)]


def test_ingest_verifies_and_stores_then_status_shows_it(
    tmp_path: Path, keys: Keys, fleet, store_target: str, capsys
) -> None:
    where = ["--db", store_target] if "://" not in store_target else ["--url", store_target]
    outbox = stick(tmp_path, keys)
    # A copy of Lyon's report under Ostrava's name, and one signed by the wrong plant.
    (outbox / "sub").mkdir()
    (outbox / "sub" / "outpost-status-plant-ostrava.json").write_bytes(
        (outbox / "outpost-status-plant-lyon.json").read_bytes()
    )
    forged = signed(keys, "plant-ostrava", NOW, node="ipc-1")
    forged_text = forged.to_bytes().replace(b"plant-ostrava", b"plant-lyon")
    (outbox / "sub" / "outpost-status-plant-lyon.json").write_bytes(forged_text)
    code = main(["fleet", "ingest", str(outbox), *where, *repo_args(fleet)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "stored plant-ostrava: stored the report of" in out and "signed by node ipc-2" in out
    assert (
        "sub/outpost-status-plant-ostrava.json: the file is named for site 'plant-ostrava'" in err
    )
    assert "sub/outpost-status-plant-lyon.json: report from plant-lyon" in err
    assert "not a node key of plant-lyon" in err
    # Again: nothing new.
    assert (
        main(
            [
                "fleet",
                "ingest",
                str(outbox / "outpost-status-plant-lyon.json").rsplit("/", 1)[0],
                *where,
                *repo_args(fleet),
            ]
        )
        == 1
    )
    assert "the report of" in capsys.readouterr().out

    assert main(["fleet", "status", *where, "-o", "json"]) == 0
    rows = {r["site"]: r for r in json.loads(capsys.readouterr().out)["sites"]}
    assert set(rows) == {"plant-lyon", "plant-ostrava"}
    assert rows["plant-ostrava"]["applied"]["revision"] == "e" * 40
    assert rows["plant-lyon"]["state"] == "waiting"

    assert main(["fleet", "status", *where, *repo_args(fleet)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == [
        "SITE",
        "STATE",
        "FLEET/WAVE",
        "APPLIED",
        "HEALTH",
        "REPORTED",
        "WHY",
    ]
    lyon = next(line for line in text.splitlines() if line.startswith("plant-lyon"))
    assert "waiting" in lyon and "plants/canary" in lyon and "maintenance window" in lyon
    muc = next(line for line in text.splitlines() if line.startswith("de-muc-0007"))
    assert "silent" in muc and "no report yet" in muc  # listed by the repository, never reported

    assert main(["fleet", "status", *where, "-o", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("**2 sites**: 1 ok, 1 waiting")
    assert "| plant-ostrava | ok |" in markdown


def test_ingest_without_the_repository_is_an_error(tmp_path: Path, keys: Keys, capsys) -> None:
    code = main(["fleet", "ingest", str(stick(tmp_path, keys)), "--db", str(tmp_path / "c.db")])
    assert code == 2
    assert "--repo and --trust are needed" in capsys.readouterr().err


def test_a_repository_that_does_not_verify_is_an_error(
    tmp_path: Path, keys: Keys, fleet, capsys
) -> None:
    other = tmp_path / "other_signers"
    other.write_text(
        "someone@example.com ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIKYj4JFKNhoXu07aUPFuX+HPCaQEUYpOZDkjnHb5Tztw\n"
    )
    code = main(
        [
            "fleet",
            "ingest",
            str(stick(tmp_path, keys)),
            "--db",
            str(tmp_path / "c.db"),
            "--repo",
            str(fleet.path),
            "--trust",
            str(other),
        ]
    )
    assert code == 2
    assert "did not verify" in capsys.readouterr().err
    assert not (tmp_path / "c.db").exists()


def test_status_lists_every_stored_site(tmp_path: Path, capsys) -> None:
    """2,000 stored sites, one line each (bench/collector.py measures 10,000 for speed)."""
    import hashlib

    from collector_world import status

    from reconciler.fleet.collector.store import Row, open_store

    store = open_store(str(tmp_path / "c.db"), now=NOW)
    rows = []
    for i in range(2000):
        body = status(f"site-{i:05d}", NOW)
        payload = json.dumps(body)
        rows.append(
            Row(
                f"site-{i:05d}",
                "edge-1",
                NOW,
                NOW,
                hashlib.sha256(payload.encode()).hexdigest(),
                body,
                payload,
                "sig",
            )
        )
    store.ingest(rows)
    store.close()
    assert main(["fleet", "status", "--db", str(tmp_path / "c.db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2001
    assert lines[1].split()[:2] == ["site-00000", "ok"] and "up to date" in lines[-1]
