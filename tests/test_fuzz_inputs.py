"""Hostile repositories through validate, render, schedule and the node's gate.

Structure-aware generation (hypothesis): each example starts from the corpus's valid
``_base`` repository plus a policy, and changes a few of its documents the way
authors and attackers do — a value replaced by an edge case (``!!bool maybe``, a
5,000-digit integer, ``9999-12-31``, ``99999999999d``, a remote ``$ref``, a pattern
that backtracks, nesting thousands deep, control characters, aliases), a key dropped
or added, a file replaced by raw text or by something that is not a file (a FIFO),
a policy expression of nested comprehensions. Then:

- ``outpost validate`` (with policies) exits 0 or 1 and prints no internal error;
- ``render_site`` and the node's schedule path (``gate_inputs`` + ``decide``) raise
  nothing but Outpost's own errors;
- nothing opens a socket: ``socket.connect``/``create_connection``/``getaddrinfo``
  raise during the example and every attempt is recorded and fails the test;
- every example ends within its bound: a watchdog (``faulthandler``) ends the test
  process with every thread's stack if one example runs longer than ``BOUND_S``.

CI runs a fixed, derandomized set of examples. For a longer run on a developer
machine::

    OUTPOST_FUZZ_EXAMPLES=2000 OUTPOST_FUZZ_SEED=$RANDOM \\
        PYTHONPATH=$PWD python -m pytest -q tests/test_fuzz_inputs.py
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.core.errors import OutpostError
from reconciler.core.model import Repository
from reconciler.core.render import render_site
from reconciler.core.schedule import Change, decide, gate_inputs
from reconciler.core.source import WorkdirTree

BASE = Path(__file__).parent / "corpus" / "_base"
EXAMPLES = int(os.environ.get("OUTPOST_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("OUTPOST_FUZZ_SEED", "14"))
BOUND_S = 60
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

POLICY = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: fuzz
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: ["*"], kinds: ["*"]}
  validations:
    - expression: "has(object.metadata) && object.metadata.name != ''"
"""

# Raw values as an author (or an attacker) types them, beyond what safe_dump writes.
RAW_VALUES = [
    "!!bool maybe",
    "!!int abc",
    "!!float nope",
    "!!binary zz==",
    "!!set {a}",
    "!!omap [a]",
    "!!python/object:os.system x",
    "&anchor 1",
    "*anchor",
    "9" * 5000,
    "-" + "9" * 120,
    "0x" + "f" * 200,
    ".nan",
    "2026-13-45",
    "9999-12-31",
    "0001-01-01",
    "99999999999d",
    "0m",
    "25:61",
    "${nope}",
    "${",
    "$${literal}",
    '"\\x07bell"',
    "[" * 3000 + "]" * 3000,
    "{a: " * 200 + "1" + "}" * 200,
    "- - - - - - - - x",
    "'http://203.0.113.7/schema.json'",
    "'^(a+)+$'",
    "'(a)\\1'",
    "'https://pos.example.com/api'",
    "'" + "a" * 60 + "b'",
    "~",
    "''",
    "|\n  multi\n  line",
]
KEYS = [
    "name", "spec", "metadata", "type", "timezone", "fleets", "updateWindows", "duration",
    "start", "days", "freezes", "from", "to", "waves", "soak", "percent", "sites", "apps",
    "version", "values", "parameters", "$ref", "pattern", "properties", "items", "nodes",
    "cpu", "memory", "devices", "patches", "json", "merge", "target", "replicas", "image",
    "currency", "WIFI_PSK", "password", "<<",
]  # fmt: skip
FILES = [
    "sites/st-0001/site.yaml",
    "sites/st-0001/hardware.yaml",
    "sites/st-0002/site.yaml",
    "sites/pl-0001/vms/hmi.yaml",
    "fleets/retail.yaml",
    "apps/pos/app.yaml",
    "apps/pos/manifests/deployment.yaml",
    "sites/st-0001/overrides.yaml",
    "policies/fuzz.yaml",
]
COMPREHENSIONS = ["all", "exists", "map", "filter", "exists_one"]

scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.sampled_from(["EUR", "usb", "amd64", "Europe/Berlin", "retail", "canary", "6h", "22:30"]),
)
plain_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def cel_expressions(draw: st.DrawFn) -> str:
    """Nested comprehensions over the object and literal lists: cheap to write, costly to run."""
    depth = draw(st.integers(min_value=0, max_value=7))
    literal = "[" + ",".join(str(i) for i in range(draw(st.integers(1, 30)))) + "]"
    body = draw(st.sampled_from(["true", "v0 > 0", "size(object.metadata.name) > 0"]))
    for level in range(depth):
        source = draw(st.sampled_from([literal, "object.spec.template.spec.containers", literal]))
        macro = draw(st.sampled_from(COMPREHENSIONS))
        if macro in ("map", "filter"):
            body = f"size({source}.{macro}(v{level}, {body})) >= 0"
        else:
            body = f"{source}.{macro}(v{level}, {body})"
    return body.replace("v0 > 0", "true") if depth == 0 else body


@st.composite
def mutated_text(draw: st.DrawFn, path: str) -> bytes:
    """One file of the repository, changed the way a bad commit changes it."""
    original = (BASE / path).read_text() if (BASE / path).is_file() else ""
    kind = draw(st.sampled_from(["value", "drop", "raw-line", "raw-file", "bytes", "cel"]))
    if kind == "cel" or (path == "policies/fuzz.yaml" and not original):
        expression = draw(cel_expressions())
        return POLICY.replace(
            "has(object.metadata) && object.metadata.name != ''", expression
        ).encode()
    if kind == "raw-file":
        return draw(st.sampled_from(RAW_VALUES)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    body = yaml.safe_load(original) if original else {}
    if kind == "raw-line":
        lines = original.splitlines() or ["spec:"]
        index = draw(st.integers(0, len(lines) - 1))
        key = draw(st.sampled_from(KEYS))
        indent = len(lines[index]) - len(lines[index].lstrip())
        lines.insert(index + 1, f"{' ' * indent}{key}: {draw(st.sampled_from(RAW_VALUES))}")
        return ("\n".join(lines) + "\n").encode()
    target = body
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            if not isinstance(target[key], dict | list) or not target[key]:
                break
            target = target[key]
        elif isinstance(target, list) and target:
            target = target[draw(st.integers(0, len(target) - 1))]
        else:
            break
    if isinstance(target, dict):
        key = draw(st.sampled_from(sorted(target) + KEYS))
        if kind == "drop":
            target.pop(key, None)
        else:
            target[key] = draw(plain_values)
    elif isinstance(target, list):
        if kind == "drop" and target:
            target.pop()
        else:
            target.append(draw(plain_values))
    return yaml.safe_dump(body, sort_keys=False).encode()


@st.composite
def repositories(draw: st.DrawFn) -> dict[str, bytes | None]:
    """Changed files by path; None makes the path a FIFO (a file that is not a file)."""
    changes: dict[str, bytes | None] = {}
    for path in draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=3, unique=True)):
        fifo = draw(st.integers(0, 19)) == 0
        changes[path] = None if fifo else draw(mutated_text(path))
    return changes


def build(target: Path, changes: dict[str, bytes | None]) -> Path:
    repo = target / "repo"
    shutil.copytree(BASE, repo)
    (repo / "policies").mkdir()
    (repo / "policies" / "fuzz.yaml").write_text(POLICY)
    for path, data in changes.items():
        dest = repo / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()
        if data is None:
            os.mkfifo(dest)
        else:
            dest.write_bytes(data)
    return repo


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Every way to open a connection raises, and is recorded."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"test: {name} is not allowed while reading a repository")

        return refused

    patches = {
        (socket.socket, "connect"): refuse("socket.connect"),
        (socket.socket, "connect_ex"): refuse("socket.connect_ex"),
        (socket, "create_connection"): refuse("create_connection"),
        (socket, "getaddrinfo"): refuse("getaddrinfo"),
    }
    saved = {key: getattr(*key) for key in patches}
    try:
        for (owner, name), replacement in patches.items():
            setattr(owner, name, replacement)
        yield attempts
    finally:
        for (owner, name), original in saved.items():
            setattr(owner, name, original)


@contextlib.contextmanager
def bounded(seconds: int) -> Iterator[None]:
    """End the whole process, with every thread's stack, if the block outlives ``seconds``.

    A hang in native code (libyaml, the CEL interpreter, a blocking open) ignores
    Python's signals and exceptions; only ending the process bounds it.
    """
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def exercise(repo: Path) -> None:
    """validate (CLI), render each site, and the node's schedule path, for one repository."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(repo), "-o", "json"])
    assert "internal error" not in err.getvalue(), err.getvalue()
    assert code in (0, 1), (code, err.getvalue())
    json.loads(out.getvalue())
    model = Repository(WorkdirTree(repo))
    try:
        site_ids = list(model.site_ids)
    except OutpostError:
        return
    for site_id in site_ids:
        with contextlib.suppress(OutpostError):
            render_site(model, site_id)
        try:
            folder = model.site(site_id)
            fleets = [model.fleet(name) for name in folder.site.fleets]
            calendar, rollout = gate_inputs(
                folder.site.doc,
                [f.doc for f in fleets if f is not None],
                Change(changed_at=NOW),
            )
            decide(calendar, rollout, Change(changed_at=NOW), NOW)
        except OutpostError:
            pass


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # the watchdog bounds each example; timings here vary with the machine
    database=None,
    derandomize="OUTPOST_FUZZ_SEED" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(changes=repositories())
def test_hostile_repositories_give_findings_not_crashes(changes: dict[str, bytes | None]) -> None:
    with tempfile.TemporaryDirectory(prefix="outpost-fuzz-") as tmp:
        repo = build(Path(tmp), changes)
        with no_network() as attempts, bounded(BOUND_S):
            exercise(repo)
        assert attempts == []


def test_a_hostile_repository_opens_no_socket(tmp_path: Path) -> None:
    """Remote $refs in an app's parameters (and a hostile policy) through validate and render."""
    app = (BASE / "apps/pos/app.yaml").read_text()
    hostile = app.replace(
        "        type: string\n        enum: [EUR, USD]",
        '        $ref: "http://203.0.113.7/currency.schema.json"',
    )
    nested = hostile.replace(
        "    additionalProperties: false",
        '    additionalProperties: false\n    $defs:\n      x: {$ref: "https://203.0.113.7/x"}',
    )
    repo = build(tmp_path, {"apps/pos/app.yaml": nested.encode()})
    with no_network() as attempts, bounded(BOUND_S):
        exercise(repo)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["validate", str(repo), "-o", "json"])
        with pytest.raises(OutpostError, match="points outside the schema"):
            render_site(Repository(WorkdirTree(repo)), "st-0001")
    assert attempts == []
    assert code == 1
    messages = [f["message"] for f in json.loads(out.getvalue())]
    assert any("203.0.113.7" in m and "points outside the schema" in m for m in messages)


def test_the_guard_catches_a_connection(tmp_path: Path) -> None:
    """The socket guard itself works: a connection attempt inside it fails and is recorded."""
    with no_network() as attempts, pytest.raises(OSError, match="not allowed"):
        socket.create_connection(("203.0.113.7", 80), timeout=0.1)
    assert attempts and attempts[0].startswith("create_connection")
