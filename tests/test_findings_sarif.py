"""``outpost validate -o sarif`` against the OASIS SARIF 2.1.0 schema itself.

GitHub code scanning refuses a SARIF log that breaks the schema, and then a pull request's
findings vanish from its review. The schema is OASIS's published one, from
``shared/testdata/sarif`` (see ``tests/peers.py``); in CI a missing copy fails the tests.
The logs come from the real command over broken repositories of the bad-input corpus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler.cli import main
from tests.peers import peer_path
from tests.test_validate_corpus import CORPUS, build_case

# Broken repositories whose findings have every shape: with and without a line, with a
# site, errors and warnings, several rules in one log.
CASES = ("yaml-syntax", "unknown-field", "vm-node-unknown", "image-not-pinned", "empty-file")


def sarif_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        (peer_path("sarif") / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def sarif_of(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["validate", str(repo), "--no-policies", "-o", "sarif"])
    log: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, log


@pytest.mark.parametrize("case", CASES)
def test_sarif_of_a_broken_repository_is_valid_sarif(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    validator = sarif_validator()
    code, log = sarif_of(build_case(case, tmp_path), capsys)
    assert code == 1
    results = log["runs"][0]["results"]
    assert results, f"{case} has findings"
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert errors == [], "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_sarif_of_a_clean_repository_is_valid_sarif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(CORPUS / "_base", tmp_path / "repo")
    code, log = sarif_of(tmp_path / "repo", capsys)
    assert (code, log["runs"][0]["results"]) == (0, [])
    assert list(sarif_validator().iter_errors(log)) == []


def test_the_schema_check_can_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The schema is strict enough to catch what code scanning would refuse."""
    validator = sarif_validator()
    _, log = sarif_of(build_case("yaml-syntax", tmp_path), capsys)
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"] = {"startLine": 0}
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(log))
    del broken["version"]
    assert not validator.is_valid(broken)
