"""The CLI's file readers fed what an attacker or a tired operator would: a FIFO, a sparse
gigabyte, a symbolic link, deep nesting, a wrong type, a year 9999.

Every case runs the real CLI as a process with a timeout, so a read that waits on a FIFO
fails the test instead of blocking the suite. The answer must be exit 2 (or 1 with a
finding) naming the file, never a traceback, never "internal error".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_files import CASES, Format, plant

ROOT = Path(__file__).resolve().parents[1]
# A refusal takes well under a second; a read blocked on a FIFO never returns.
TIMEOUT = 20
DEEP = 100_000  # past Python's recursion limit: json.loads raises RecursionError


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def outpost(cwd: Path, *args: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def assert_clean_refusal(run: Run, shown: str, code: int = 2) -> None:
    assert run.code == code, run
    assert shown in run.text, run
    assert "Traceback" not in run.text, run
    assert "internal error" not in run.text, run


JSON = Format(
    nested=lambda depth: "[" * depth + "]" * depth,
    wrong_type='{"findings": []}',
    not_utf8=b'["\xff\xfe"]',
)


def hostile(folder: Path, case: str) -> Path:
    """A JSON file named after ``case`` in ``folder``, made hostile that way (`plant`);
    ``nested deep``: past Python's recursion limit."""
    path = folder / f"{case.replace(' ', '-')}.json"
    target = folder / "target.json"
    if case == "symlink":
        target.write_text("[]")
    return plant(path, f"nested {DEEP}" if case == "nested deep" else case, JSON, target)


FINDING = {
    "path": "sites/st-0001/site.yaml",
    "line": 3,
    "message": "m",
    "severity": "error",
    "rule": "r",
    "site": "st-0001",
}

MERGE_CASES = list(CASES)


@pytest.mark.parametrize("case", MERGE_CASES)
def test_validate_merge_refuses_a_hostile_shard_file_naming_it(tmp_path: Path, case: str) -> None:
    path = hostile(tmp_path, case)
    assert_clean_refusal(
        outpost(tmp_path, "validate", "--merge", path.name), f"--merge {path.name}"
    )


def test_validate_merge_refuses_json_nested_past_the_recursion_limit(tmp_path: Path) -> None:
    path = hostile(tmp_path, "nested deep")
    assert_clean_refusal(
        outpost(tmp_path, "validate", "--merge", path.name), f"--merge {path.name}"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("line", "3"), ("line", None), ("severity", 9999), ("path", ["a"]), ("extra", "x")],
)
def test_validate_merge_refuses_a_finding_of_the_wrong_shape(
    tmp_path: Path, field: str, value: object
) -> None:
    (tmp_path / "shard.json").write_text(json.dumps([FINDING, {**FINDING, field: value}]))
    run = outpost(tmp_path, "validate", "--merge", "shard.json")
    assert_clean_refusal(run, "--merge shard.json: item 1")


def test_validate_merge_of_good_shards_reports_their_findings(tmp_path: Path) -> None:
    """The control: the same reader passes a real shard output through (exit 1: a finding)."""
    (tmp_path / "shard.json").write_text(json.dumps([FINDING]))
    run = outpost(tmp_path, "validate", "--merge", "shard.json", "-o", "json")
    assert run.code == 1, run
    assert json.loads(run.out) == [FINDING]


@pytest.mark.parametrize(
    "shard", ["0/4", "5/4", "1/0", "-1/4", "x", "1/4/2", "9999999999/9999999999", ""]
)
def test_validate_shard_refuses_a_bad_value_naming_it(tmp_path: Path, shard: str) -> None:
    run = outpost(tmp_path, "validate", "--repo", str(tmp_path), f"--shard={shard}")
    assert_clean_refusal(run, f"--shard {shard!r}")


@pytest.mark.parametrize("case", ["fifo", "gigabyte", "not a database"])
def test_fleet_status_db_refuses_a_file_that_is_no_store(tmp_path: Path, case: str) -> None:
    if case == "not a database":
        path = tmp_path / "garbage.db"
        path.write_bytes(b"SQLite format 3\0" + b"\xff" * 4096)
    else:
        path = hostile(tmp_path, case)
    run = outpost(tmp_path, "fleet", "status", "--db", path.name)
    assert_clean_refusal(run, f"cannot open the store {path.name}")


@pytest.mark.parametrize("body", ["[]", '{"kind": "FleetStatus", "sites": []}', "not json"])
def test_fleet_status_from_refuses_a_file_of_the_wrong_shape(tmp_path: Path, body: str) -> None:
    (tmp_path / "fleet.json").write_text(body)
    assert_clean_refusal(outpost(tmp_path, "fleet", "status", "--from", "fleet.json"), "fleet.json")


def test_fleet_status_from_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    path = hostile(tmp_path, "fifo")
    assert_clean_refusal(outpost(tmp_path, "fleet", "status", "--from", path.name), path.name)


def test_fleet_status_from_a_gigabyte_is_refused_unread(tmp_path: Path) -> None:
    path = hostile(tmp_path, "gigabyte")
    run = outpost(tmp_path, "fleet", "status", "--from", path.name)
    assert_clean_refusal(run, path.name)
    assert "limit" in run.err or "cap" in run.err, run


def test_fleet_status_from_deep_nesting_names_the_file(tmp_path: Path) -> None:
    path = hostile(tmp_path, "nested deep")
    assert_clean_refusal(outpost(tmp_path, "fleet", "status", "--from", path.name), path.name)


REPORT_CASES = list(CASES)


def stick_of(folder: Path, cases: list[str]) -> list[str]:
    """``folder``/stick holding a report file per case; the names of its files."""
    stick = folder / "stick"
    stick.mkdir()
    names = []
    for case in cases:
        made = hostile(stick, case)
        name = f"outpost-status-{made.name}"
        made.rename(stick / name)
        names.append(name)
    year_9999 = {
        "apiVersion": "outpost.dev/v1",
        "kind": "SiteStatus",
        "site": "st-0001",
        "reportedAt": "9999-12-31T23:59:59+00:00",
    }
    (stick / "outpost-status-9999.json").write_text(json.dumps(year_9999))
    names.append("outpost-status-9999.json")
    return names


def test_fleet_ingest_refuses_each_hostile_report_by_name_and_goes_on(tmp_path: Path) -> None:
    names = stick_of(tmp_path, REPORT_CASES)
    link = "outpost-status-symlink.json"
    names.remove(link)  # links on a stick are left out unread (fleet/status.report_files)
    run = outpost(tmp_path, "fleet", "ingest", "stick", "--into", "fleet.json")
    assert run.code == 1, run
    assert "Traceback" not in run.text and "internal error" not in run.text, run
    for name in names:
        assert f"refused {name}:" in run.err, (name, run)
    assert link not in run.text, run
    assert f"0 recorded, 0 older than on record, {len(names)} refused" in run.out, run


def test_fleet_ingest_refuses_a_deeply_nested_report_and_goes_on(tmp_path: Path) -> None:
    names = stick_of(tmp_path, ["nested deep"])
    run = outpost(tmp_path, "fleet", "ingest", "stick", "--into", "fleet.json")
    assert run.code == 1, run
    assert "internal error" not in run.text, run
    for name in names:
        assert f"refused {name}:" in run.err, (name, run)


def signers(folder: Path) -> Path:
    path = folder / "allowed_signers"
    path.write_text("root@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n")
    return path


def test_fleet_promote_trust_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    trust = hostile(tmp_path, "fifo")
    token = tmp_path / "token"
    token.write_text("t\n")
    run = outpost(
        tmp_path, "fleet", "promote", "--api", "https://127.0.0.1:9", "--token-file", "token",
        "--repo", str(tmp_path), "--trust", trust.name, "--dry-run",
    )  # fmt: skip
    assert_clean_refusal(run, trust.name)


def test_fleet_serve_session_key_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    key = hostile(tmp_path, "fifo")
    run = outpost(
        tmp_path, "fleet", "serve", "--repo", str(tmp_path), "--trust", str(signers(tmp_path)),
        "--db", "c.db", "--listen", "127.0.0.1:0", "--session-key", key.name,
    )  # fmt: skip
    assert_clean_refusal(run, key.name)
