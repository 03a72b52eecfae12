"""The renderer's JSON Patch code against the public JSON Patch test suite (RFC 6902).

``json-patch-tests`` (``tests.json`` and ``spec_tests.json``) is the suite every JSON Patch
implementation runs: each case has a document, a patch and either the ``expected`` result
or an ``error`` (the patch must be refused). A case with neither must simply apply. Cases
marked ``disabled`` are the suite's own known-bad ones and are left out, as it says. The
data lives in ``shared/testdata`` (see ``tests/peers.py``); in CI a missing folder fails.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from reconciler.core.render._patch import PatchError, json_equal, json_patch
from tests.peers import peer_available, peer_path

SUITE = "json-patch-tests"
FILES = ("tests.json", "spec_tests.json")


def _cases() -> list[Any]:
    if not peer_available(SUITE):
        return [pytest.param(None, None, id="suite-missing")]
    found = []
    for name in FILES:
        cases = json.loads((peer_path(SUITE) / name).read_text(encoding="utf-8"))
        for number in range(len(cases)):
            label = f"{name.removesuffix('.json')}-{number}"
            found.append(pytest.param(name, number, id=label))
    return found


def _load(name: str, number: int) -> dict[str, Any]:
    case: dict[str, Any] = json.loads((peer_path(SUITE) / name).read_text(encoding="utf-8"))[number]
    return case


@pytest.mark.parametrize(("name", "number"), _cases())
def test_json_patch_suite_case(name: str | None, number: int | None) -> None:
    folder = peer_path(SUITE)  # skips locally or fails in CI when the suite is missing
    assert name is not None and number is not None, f"{folder} appeared during the run"
    case = _load(name, number)
    if case.get("disabled"):
        # The suite's own instruction; counted below so a suite of only these cannot pass.
        return
    doc = case["doc"]
    before = copy.deepcopy(doc)
    where = f"{name} case {number} ({case.get('comment', 'no comment')})"
    if "error" in case:
        with pytest.raises(PatchError):
            json_patch(doc, case["patch"])
    else:
        result = json_patch(doc, case["patch"])
        if "expected" in case:
            assert json_equal(result, case["expected"]), f"{where}: got {result!r}"
    assert json_equal(doc, before), f"{where}: the input document was changed"


def test_the_suite_is_the_whole_suite() -> None:
    """The suite has its ~110 cases, most of them enabled, both kinds of outcome among them:
    a truncated or emptied copy must not pass quietly."""
    folder = peer_path(SUITE)
    cases = [c for name in FILES for c in json.loads((folder / name).read_text("utf-8"))]
    enabled = [c for c in cases if not c.get("disabled")]
    assert len(cases) >= 100
    assert len(enabled) >= len(cases) - 10
    assert sum("error" in c for c in enabled) >= 30
    assert sum("expected" in c for c in enabled) >= 60
