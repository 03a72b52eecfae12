"""A private copy of an example age key for an agent under test.

A checkout leaves `tests/keys/age/*.key` readable by all, and the node refuses an age key
that group or others can read (as ssh refuses such a private key): the agent gets a 0600
copy in the test's own folder.
"""

from __future__ import annotations

from pathlib import Path

KEYS = Path(__file__).resolve().parents[1] / "keys" / "age"


def private_age_key(site: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / f"{site}.age.key"
    key.write_bytes((KEYS / f"{site}.key").read_bytes())
    key.chmod(0o600)
    return key
