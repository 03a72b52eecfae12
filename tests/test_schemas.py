"""The JSON Schemas in schemas/ and the example fleet they document.

Three promises are checked here:

1. every schema is a valid draft 2020-12 schema, reachable by its ``$id``, and
   documents every field it declares (the schemas are the format's manual);
2. every document of the bundled example fleet (and deploy/agent.yaml) loads
   with the project's loader and validates against its kind's schema;
3. the patterns mean what the contract says: values generated from each
   grammar match, near misses (``4GB``, ``4 Gi``, ``24:00``, ``30m1h``) do not.

The schemas are loaded here straight from schemas/ into a ``referencing``
registry, independently of ``reconciler.core.schemas``, so a broken ``$id`` or
``$ref`` fails in this file and not only at run time.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from reconciler.core.loader import load_document

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
BASE = "https://outpost.example/schemas/"
COMMON = BASE + "common.schema.json"
KINDS = (
    "Site",
    "Hardware",
    "Fleet",
    "App",
    "VirtualMachine",
    "SiteOverrides",
    "Policy",
    "Signers",
    "AgentConfig",
    "Promotion",
    "Halt",
)
SCHEMA_FILES = sorted(SCHEMAS.glob("*.schema.json"))
# Subschema-bearing keywords of draft 2020-12, by shape.
MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
SINGLE = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
DOCUMENTED = ("properties", "patternProperties", "$defs")
# Keywords whose subschemas only restate constraints on fields the enclosing schema declares.
CONDITIONALS = ("if", "then", "else", "not", "dependentSchemas")
PATTERN_SETTINGS = settings(max_examples=200, deadline=None)


def _load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in (_load(p) for p in SCHEMA_FILES)
)


def validator_for(kind: str) -> Draft202012Validator:
    schema = _load(SCHEMAS / f"{kind.lower()}.schema.json")
    return Draft202012Validator(
        schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def definition(name: str) -> Draft202012Validator:
    """A validator for one shared definition of common.schema.json."""
    return Draft202012Validator(
        {"$ref": f"{COMMON}#/$defs/{name}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def accepts(name: str, value: object) -> bool:
    return definition(name).is_valid(value)


# --------------------------------------------------------------------------- the schemas


def test_every_kind_has_a_schema_and_nothing_else_is_there() -> None:
    names = {p.name for p in SCHEMA_FILES}
    expected = {f"{k.lower()}.schema.json" for k in KINDS} | {"common.schema.json"}
    assert names == expected


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12_with_its_id(path: Path) -> None:
    schema = _load(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE + path.name
    assert schema.get("description"), f"{path.name} has no top-level description"


def _missing_descriptions(
    schema: Any, where: str, beside: frozenset[str] = frozenset()
) -> Iterator[str]:
    """Paths of declared fields and definitions without a description, walking only subschemas.

    Conditionals (if/then/else, not, dependentSchemas) may only restate constraints on fields
    declared beside them; a field they name that is not declared there is reported too.
    """
    if not isinstance(schema, dict):
        return
    declared = beside | set(schema.get("properties") or {})
    for keyword in MAPS:
        for name, sub in (schema.get(keyword) or {}).items():
            if keyword in DOCUMENTED and isinstance(sub, dict) and not sub.get("description"):
                yield f"{where}/{keyword}/{name}"
            if keyword not in CONDITIONALS:
                yield from _missing_descriptions(sub, f"{where}/{keyword}/{name}")
    for keyword in ("if", "then", "else"):
        sub = schema.get(keyword)
        if isinstance(sub, dict):
            for name in sub.get("properties") or {}:
                if name not in declared:
                    yield f"{where}/{keyword}/properties/{name} (not declared beside it)"
    for keyword in SINGLE:
        if keyword not in CONDITIONALS:
            yield from _missing_descriptions(schema.get(keyword), f"{where}/{keyword}")
    for keyword in LISTS:
        for index, sub in enumerate(schema.get(keyword) or []):
            yield from _missing_descriptions(sub, f"{where}/{keyword}/{index}", declared)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_property_has_a_description(path: Path) -> None:
    missing = list(_missing_descriptions(_load(path), path.name))
    assert missing == []


def test_description_walker_finds_a_missing_description() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"description": "ok"}, "b": {"type": "string"}},
        "if": {"properties": {"c": {"const": 1}}},
    }
    assert list(_missing_descriptions(schema, "x")) == [
        "x/properties/b",
        "x/if/properties/c (not declared beside it)",
    ]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_reference_resolves(path: Path) -> None:
    schema = _load(path)
    resolver = REGISTRY.resolver(base_uri=schema["$id"])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(schema))
    for ref in found:
        if ref.startswith("https://json-schema.org/"):
            continue
        resolver.lookup(ref)  # raises on a dangling reference
    assert path.name == "common.schema.json" or found


# --------------------------------------------------------------------------- the example


def _kind_for(rel: str) -> str | None:
    parts = rel.split("/")
    if parts[0] == "sites" and len(parts) == 3:
        return {
            "site.yaml": "Site",
            "hardware.yaml": "Hardware",
            "overrides.yaml": "SiteOverrides",
        }[parts[2]]
    if parts[0] == "sites" and len(parts) == 4 and parts[2] == "vms":
        return "VirtualMachine"
    if parts[0] == "fleets" and len(parts) == 2:
        return "Fleet"
    if parts[0] == "apps" and len(parts) == 3 and parts[2] == "app.yaml":
        return "App"
    if parts[0] == "policies" and len(parts) == 2:
        return "Signers" if parts[1] == "signers.yaml" else "Policy"
    return None


def _source_folders() -> tuple[str, ...]:
    """Folders an app renders from (a Helm chart, a Kustomize base): not Outpost documents."""
    folders = []
    for app_yaml in sorted((ROOT / "apps").glob("*/app.yaml")):
        source = yaml.safe_load(app_yaml.read_text()).get("spec", {}).get("source", {})
        folders += [s["path"] + "/" for s in source.values() if "path" in s]
    return tuple(folders)


def _example_paths() -> list[str]:
    found = []
    sources = _source_folders()
    for top in ("sites", "fleets", "apps", "policies"):
        for path in sorted((ROOT / top).rglob("*.yaml")):
            rel = path.relative_to(ROOT).as_posix()
            if "/secrets/" in rel or "/manifests/" in rel or rel.startswith(sources):
                continue
            found.append(rel)
    return [*found, "deploy/agent.yaml"]


EXAMPLES = _example_paths()


def _example(rel: str) -> Any:
    return load_document((ROOT / rel).read_bytes(), rel)


@pytest.mark.parametrize("rel", EXAMPLES)
def test_example_document_validates(rel: str) -> None:
    kind = "AgentConfig" if rel == "deploy/agent.yaml" else _kind_for(rel)
    assert kind is not None, f"{rel} is not at a known document path"
    doc = _example(rel)
    assert doc.kind == kind
    errors = [
        f"{rel}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_for(kind).iter_errors(doc.body)
    ]
    assert errors == []


def _sites() -> dict[str, Any]:
    return {rel.split("/")[1]: _example(rel) for rel in EXAMPLES if rel.endswith("/site.yaml")}


def test_example_fleet_is_the_showcase_the_docs_promise() -> None:
    """At least 8 stores in 4+ zones, one southern (opposite DST), one half-hour offset, 2 plants."""
    sites = _sites()
    stores = {i: s for i, s in sites.items() if s.spec["type"] == "store"}
    plants = {i: s for i, s in sites.items() if s.spec["type"] == "plant"}
    assert len(stores) >= 8
    assert len({s.spec["timezone"] for s in stores.values()}) >= 4
    january, july = datetime(2027, 1, 15, 12), datetime(2027, 7, 15, 12)

    def offset(zone: str, when: datetime) -> float:
        delta = when.replace(tzinfo=ZoneInfo(zone)).utcoffset()
        assert delta is not None
        return delta.total_seconds()

    zones = {s.spec["timezone"] for s in sites.values()}
    assert any(offset(z, january) > offset(z, july) for z in zones), "no southern-hemisphere DST"
    assert any(offset(z, january) % 3600 == 1800 for z in zones), "no half-hour offset"
    assert len(plants) >= 2
    assert any(p.spec["connectivity"] == "air-gapped" for p in plants.values())
    for plant in plants:
        assert (ROOT / "sites" / plant / "vms").is_dir(), f"{plant} has no VM"
    formats = {s.labels.get("format") for s in stores.values()}
    assert {"hypermarket", "supermarket"} <= formats


def test_example_signer_keys_are_real_ssh_keys(tmp_path: Path) -> None:
    signers = _example("policies/signers.yaml").spec["signers"]
    assert signers
    for signer in signers:
        for index, key in enumerate(signer["keys"]):
            pub = tmp_path / f"{signer['name']}-{index}.pub"
            pub.write_text(key + "\n")
            result = subprocess.run(
                ["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"{signer['name']}: {result.stderr}"
            assert "ED25519" in result.stdout


# --------------------------------------------------------------------------- rejections

SITE = {
    "apiVersion": "outpost/v1",
    "kind": "Site",
    "metadata": {"name": "de-ber-0042", "labels": {"region": "eu-central"}},
    "spec": {
        "type": "store",
        "timezone": "Europe/Berlin",
        "fleets": ["retail-eu"],
        "updateWindows": [{"days": ["mon"], "start": "22:30", "duration": "6h"}],
    },
}
NODE = {
    "name": "edge-1",
    "identity": {"machineId": "0123456789abcdef0123456789abcdef"},
    "arch": "amd64",
    "cpu": 8,
    "memory": "32Gi",
}
HARDWARE = {
    "apiVersion": "outpost/v1",
    "kind": "Hardware",
    "metadata": {"name": "de-ber-0042"},
    "spec": {"nodes": [NODE]},
}
DIGEST = "registry.example.com/pos/server@sha256:" + "ab" * 32
APP = {
    "apiVersion": "outpost/v1",
    "kind": "App",
    "metadata": {"name": "pos"},
    "spec": {
        "versions": {"4.2.1": {"images": {"server": DIGEST}}},
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    },
}
FLEET = {
    "apiVersion": "outpost/v1",
    "kind": "Fleet",
    "metadata": {"name": "retail-eu"},
    "spec": {"selector": {}, "apps": {"pos": {"version": "4.2.1"}}},
}
VM = {
    "apiVersion": "outpost/v1",
    "kind": "VirtualMachine",
    "metadata": {"name": "hmi"},
    "spec": {"cpu": 2, "memory": "4Gi", "disks": [{"name": "system", "image": DIGEST}]},
}
OVERRIDES = {
    "apiVersion": "outpost/v1",
    "kind": "SiteOverrides",
    "metadata": {"name": "de-ber-0042"},
    "spec": {"apps": {"pos": {"values": {"lanes": 4}}}},
}
SIGNERS = {
    "apiVersion": "outpost/v1",
    "kind": "Signers",
    "metadata": {"name": "signers"},
    "spec": {
        "signers": [
            {
                "name": "pos-team",
                "keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHf2 pos-team"],
                "paths": ["apps/pos/**"],
            }
        ]
    },
}
AGENT = {
    "apiVersion": "outpost/v1",
    "kind": "AgentConfig",
    "spec": {
        "site": "de-ber-0042",
        "bundleInbox": "/media/outpost",
        "trustRoot": "a",
        "stateDir": "/var/lib/outpost",
    },
}
BASES = {
    "Site": SITE,
    "Hardware": HARDWARE,
    "App": APP,
    "Fleet": FLEET,
    "VirtualMachine": VM,
    "SiteOverrides": OVERRIDES,
    "Signers": SIGNERS,
    "AgentConfig": AGENT,
}


def _with(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


REJECTED: list[tuple[str, tuple[str | int, ...], Any]] = [
    ("Site", ("metadata", "name"), "de-ber-0042/.."),
    ("Site", ("metadata", "name"), ".."),
    ("Site", ("metadata", "name"), "De-Ber"),
    ("Site", ("metadata", "extra"), 1),
    ("Site", ("spec", "timezone"), "Europe/../etc/passwd"),
    ("Site", ("spec", "timezone"), "Europe Berlin"),
    ("Site", ("spec", "type"), "warehouse"),
    ("Site", ("spec", "connectivity"), "offline"),
    ("Site", ("spec", "updateWindows"), [{"days": ["mon"], "start": "24:00", "duration": "1h"}]),
    ("Site", ("spec", "updateWindows"), [{"days": ["monday"], "start": "22:00", "duration": "1h"}]),
    ("Site", ("spec", "updateWindows"), [{"days": ["mon"], "start": "22:00", "duration": "1h30"}]),
    ("Site", ("spec", "updateWindows"), [{"days": [], "start": "22:00", "duration": "1h"}]),
    ("Site", ("spec", "freezes"), [{"name": "x", "from": "2026-13-01", "to": "2026-12-31"}]),
    ("Site", ("spec", "freezes"), [{"name": "x", "from": "2026-02-30", "to": "2026-03-01"}]),
    (
        "Site",
        ("spec", "maintenance"),
        [{"name": "x", "start": "2026-12-24T06:00:00", "end": "2026-12-25T06:00:00Z"}],
    ),
    ("Site", ("spec", "sops"), {"recipient": "age1notakey"}),
    ("Site", ("spec", "apps"), {"pos": {"version": 4.2}}),
    ("Site", ("spec", "apps"), {"pos": {"values": {}}}),
    ("Site", ("metadata", "labels"), {"region": "eu central"}),
    ("Hardware", ("spec", "nodes", 0, "memory"), "4GB"),
    ("Hardware", ("spec", "nodes", 0, "memory"), "4 Gi"),
    ("Hardware", ("spec", "nodes", 0, "memory"), "4gi"),
    ("Hardware", ("spec", "nodes", 0, "cpu"), "8"),
    ("Hardware", ("spec", "nodes", 0, "cpu"), 0),
    ("Hardware", ("spec", "nodes", 0, "arch"), "x86_64"),
    ("Hardware", ("spec", "nodes", 0, "identity", "machineId"), "0123456789ABCDEF0123456789ABCDEF"),
    ("Hardware", ("spec", "nodes", 0, "identity", "machineId"), "0123456789abcdef"),
    (
        "Hardware",
        ("spec", "nodes", 0, "devices"),
        [{"name": "scanner", "type": "usb", "vendor": "05E0", "product": "1200"}],
    ),
    (
        "Hardware",
        ("spec", "nodes", 0, "devices"),
        [{"name": "scanner", "type": "usb", "vendor": "5e0", "product": "1200"}],
    ),
    ("Hardware", ("spec", "nodes", 0, "devices"), [{"name": "scanner", "type": "usb"}]),
    (
        "Hardware",
        ("spec", "nodes", 0, "devices"),
        [
            {
                "name": "scanner",
                "type": "usb",
                "vendor": "05e0",
                "product": "1200",
                "path": "/dev/ttyS0",
            }
        ],
    ),
    (
        "Hardware",
        ("spec", "nodes", 0, "devices"),
        [{"name": "plc", "type": "serial", "path": "/dev/../etc/shadow"}],
    ),
    ("Hardware", ("spec", "nodes", 0, "devices"), [{"name": "gpu0", "type": "gpu", "count": 1}]),
    (
        "Hardware",
        ("spec", "nodes", 0, "devices"),
        [{"name": "nic", "type": "pci", "address": "03:00.0", "vendor": "8086", "product": "1533"}],
    ),
    ("Hardware", ("spec", "nodes", 0, "devices"), [{"name": "x", "type": "bluetooth"}]),
    ("Hardware", ("spec", "nodes"), []),
    (
        "App",
        ("spec", "versions"),
        {"4.2.1": {"images": {"server": "registry.example.com/pos:4.2.1"}}},
    ),
    (
        "App",
        ("spec", "versions"),
        {"4.2.1": {"images": {"server": "registry.example.com/pos:latest"}}},
    ),
    (
        "App",
        ("spec", "versions"),
        {"4.2.1": {"images": {"server": "registry.example.com/pos@sha256:" + "AB" * 32}}},
    ),
    ("App", ("spec", "versions"), {"latest": {"images": {"server": DIGEST}}}),
    ("App", ("spec", "versions"), {"4.2.1": {"images": {}}}),
    ("App", ("spec", "versions"), {}),
    ("App", ("spec", "parameters"), {"type": "object", "properties": {}}),
    (
        "App",
        ("spec", "parameters"),
        {
            "type": "object",
            "properties": {"site": {"type": "string"}},
            "additionalProperties": False,
        },
    ),
    (
        "App",
        ("spec", "parameters"),
        {"type": "object", "properties": {"a": {"type": "strin"}}, "additionalProperties": False},
    ),
    ("App", ("spec", "requires"), {"devices": ["camera"]}),
    ("App", ("spec", "allow"), {"privileged": "yes"}),
    ("Fleet", ("spec", "waves"), [{"name": "canary", "sites": ["de-ber-0042"], "percent": 10}]),
    ("Fleet", ("spec", "waves"), [{"name": "early", "percent": 0}]),
    ("Fleet", ("spec", "waves"), [{"name": "early", "percent": 101}]),
    ("Fleet", ("spec", "waves"), [{"name": "all", "soak": "2 days"}]),
    ("Fleet", ("spec", "waves"), [{"name": "early", "precent": 10}]),
    ("Fleet", ("spec", "selector"), {"matchExpressions": [{"key": "region", "operator": "In"}]}),
    (
        "Fleet",
        ("spec", "selector"),
        {"matchExpressions": [{"key": "region", "operator": "Exists", "values": ["x"]}]},
    ),
    ("Fleet", ("spec", "freezes"), [{"name": "peak", "from": "2026-11-20"}]),
    ("Fleet", ("spec", "breakGlass"), {"recipients": []}),
    (
        "VirtualMachine",
        ("spec", "disks"),
        [{"name": "system", "image": "registry.example.com/vm:1"}],
    ),
    (
        "VirtualMachine",
        ("spec", "disks"),
        [{"name": "system", "image": DIGEST, "volume": {"size": "40Gi"}}],
    ),
    ("VirtualMachine", ("spec", "disks"), [{"name": "data", "volume": {"size": "40GB"}}]),
    ("VirtualMachine", ("spec", "networks"), [{"name": "floor", "type": "multus"}]),
    ("VirtualMachine", ("spec", "runStrategy"), "Sometimes"),
    ("VirtualMachine", ("spec", "memory"), "4GB"),
    (
        "SiteOverrides",
        ("spec", "apps", "pos"),
        {"patches": [{"target": {"kind": "Deployment", "name": "pos"}, "merge": {}, "json": []}]},
    ),
    (
        "SiteOverrides",
        ("spec", "apps", "pos"),
        {
            "patches": [
                {
                    "target": {"kind": "Deployment", "name": "pos"},
                    "json": [{"op": "add", "path": "/spec/replicas"}],
                }
            ]
        },
    ),
    (
        "SiteOverrides",
        ("spec", "apps", "pos"),
        {
            "patches": [
                {
                    "target": {"kind": "Deployment", "name": "pos"},
                    "json": [{"op": "replace", "path": "spec/replicas", "value": 2}],
                }
            ]
        },
    ),
    ("SiteOverrides", ("spec", "apps", "pos"), {"patches": [{"merge": {}}]}),
    ("Signers", ("spec", "signers", 0, "paths"), ["policies/**"]),
    ("Signers", ("spec", "signers", 0, "paths"), ["/apps/pos/**"]),
    ("Signers", ("spec", "signers", 0, "paths"), ["apps/../policies/x.yaml"]),
    ("Signers", ("spec", "signers", 0, "keys"), ["ssh-dss AAAAB3NzaC1kc3M pos-team"]),
    ("Signers", ("spec", "signers", 0, "keys"), []),
    ("AgentConfig", ("spec", "healthDeadline"), "5 minutes"),
    ("AgentConfig", ("spec", "site"), "../de-ber-0042"),
    ("AgentConfig", ("spec", "source"), {"url": "http://git.example.com/x.git"}),
]


@pytest.mark.parametrize("kind", sorted(BASES))
def test_base_documents_are_valid(kind: str) -> None:
    assert list(validator_for(kind).iter_errors(BASES[kind])) == []


@pytest.mark.parametrize(("kind", "path", "value"), REJECTED, ids=lambda v: repr(v)[:60])
def test_schema_rejects(kind: str, path: tuple[str | int, ...], value: Any) -> None:
    doc = _with(BASES[kind], path, value)
    assert not validator_for(kind).is_valid(doc)


def test_agent_config_needs_a_source_or_an_inbox() -> None:
    doc = json.loads(json.dumps(AGENT))
    del doc["spec"]["bundleInbox"]
    assert not validator_for("AgentConfig").is_valid(doc)
    doc["spec"]["source"] = {"url": "git@git.example.com:retail/outpost-config.git"}
    assert validator_for("AgentConfig").is_valid(doc)


# --------------------------------------------------------------------------- the patterns

digits = st.integers(min_value=0, max_value=10**6).map(str)


@st.composite
def durations(draw: st.DrawFn) -> str:
    parts = [draw(st.one_of(st.none(), digits)) for _ in "dhm"]
    if all(p is None for p in parts):
        parts[draw(st.integers(0, 2))] = draw(digits)
    return "".join(f"{p}{u}" for p, u in zip(parts, "dhm", strict=True) if p is not None)


@PATTERN_SETTINGS
@given(durations())
def test_durations_from_the_grammar_are_accepted(text: str) -> None:
    assert accepts("duration", text)


@PATTERN_SETTINGS
@given(durations(), st.sampled_from([" ", "s", "h1", "1", "x", "D", "\n"]))
def test_durations_with_junk_are_rejected(text: str, junk: str) -> None:
    assert not accepts("duration", text + junk)
    if not junk[0].isdigit():  # a digit in front only makes a bigger number
        assert not accepts("duration", junk + text)


@pytest.mark.parametrize("text", ["", "30m1h", "1h1d", "1.5h", "-1h", "1h 30m", "6H", "90s"])
def test_duration_near_misses(text: str) -> None:
    assert not accepts("duration", text)


BINARY = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
DECIMAL = ["k", "M", "G", "T", "P", "E"]
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**9).map(str),
    st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(0, 999)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
)


@PATTERN_SETTINGS
@given(numbers, st.sampled_from(["", *BINARY, *DECIMAL]))
def test_byte_quantities_from_the_grammar_are_accepted(number: str, suffix: str) -> None:
    assert accepts("byteQuantity", number + suffix)


@PATTERN_SETTINGS
@given(
    numbers,
    st.sampled_from([*BINARY, *DECIMAL]),
    st.sampled_from(["B", "b", "iB", "bytes", "s"]),
)
def test_byte_quantities_with_unit_letters_are_rejected(
    number: str, suffix: str, junk: str
) -> None:
    assert not accepts("byteQuantity", number + suffix + junk)  # 4GB, 4GiB, 4Gbytes
    assert not accepts("byteQuantity", f"{number} {suffix}")  # 4 Gi


@pytest.mark.parametrize("text", ["4GB", "4 Gi", "4gi", "4KI", "500m", "-1Gi", "1e3", "Gi", ".5Gi"])
def test_byte_quantity_near_misses(text: str) -> None:
    assert not accepts("byteQuantity", text)


@PATTERN_SETTINGS
@given(st.integers(0, 23), st.integers(0, 59))
def test_times_of_day_are_accepted(hour: int, minute: int) -> None:
    assert accepts("time", f"{hour:02d}:{minute:02d}")


@PATTERN_SETTINGS
@given(st.integers(0, 99), st.integers(0, 99))
def test_time_pattern_agrees_with_the_clock(hour: int, minute: int) -> None:
    valid = hour < 24 and minute < 60
    assert accepts("time", f"{hour:02d}:{minute:02d}") is valid
    if hour < 10:
        assert not accepts("time", f"{hour}:{minute:02d}")  # "7:30" must be written "07:30"


@PATTERN_SETTINGS
@given(st.dates())
def test_dates_are_accepted(day: Any) -> None:
    assert accepts("date", day.isoformat())
    assert not accepts("date", day.strftime("%d.%m.%Y"))


DNS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._/A", min_size=0, max_size=70)


def _is_dns_label(text: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return 0 < len(text) <= 63 and set(text) <= allowed and text[0] != "-" and text[-1] != "-"


@PATTERN_SETTINGS
@given(DNS)
def test_names_and_site_ids_are_dns_labels(text: str) -> None:
    assert accepts("name", text) is _is_dns_label(text)
    assert accepts("siteId", text) is _is_dns_label(text)


@PATTERN_SETTINGS
@given(
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.one_of(st.none(), st.sampled_from(["rc.1", "beta", "alpha.2.x"])),
)
def test_semver_versions_are_accepted(major: int, minor: int, patch: int, pre: str | None) -> None:
    text = f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else "")
    assert accepts("version", text)
    assert not accepts("version", "v" + text)


@PATTERN_SETTINGS
@given(
    st.sampled_from(["registry.example.com", "localhost:5000", "ghcr.io", "10.0.0.5:443"]),
    st.lists(st.from_regex(r"\A[a-z0-9]+([._-][a-z0-9]+)?\Z"), min_size=1, max_size=3),
    st.binary(min_size=32, max_size=32),
    st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")),
)
def test_images_pinned_by_digest(
    registry: str, path: list[str], raw: bytes, tag: str | None
) -> None:
    name = f"{registry}/{'/'.join(path)}" + (f":{tag}" if tag else "")
    assert accepts("imageDigest", f"{name}@sha256:{raw.hex()}")
    if raw.hex() != raw.hex().upper():
        assert not accepts("imageDigest", f"{name}@sha256:{raw.hex().upper()}")
    assert not accepts("imageDigest", f"{name}@sha256:{raw.hex()[:-1]}")
    assert not accepts("imageDigest", name)


def test_timezone_shape_accepts_every_iana_zone() -> None:
    rejected = sorted(z for z in available_timezones() if not accepts("timezone", z))
    assert rejected == []


@pytest.mark.parametrize(
    "text", ["", "Europe/", "/etc/localtime", "Europe/../../etc", "Europe Berlin"]
)
def test_timezone_shape_rejects_paths_and_junk(text: str) -> None:
    assert not accepts("timezone", text)


TRAILING_NEWLINE = [
    ("name", "de-ber-0042"),
    ("siteId", "de-ber-0042"),
    ("duration", "6h"),
    ("time", "22:30"),
    ("date", "2026-11-20"),
    ("byteQuantity", "32Gi"),
    ("version", "4.2.1"),
    ("imageDigest", DIGEST),
    ("timezone", "Europe/Berlin"),
    ("labelValue", "eu-central"),
]


@pytest.mark.parametrize(("name", "value"), TRAILING_NEWLINE)
def test_a_trailing_newline_is_not_part_of_a_valid_value(name: str, value: str) -> None:
    """Python's ``$`` also matches before a final newline; a YAML block scalar ends with one."""
    assert accepts(name, value)
    assert not accepts(name, value + "\n")


@given(
    st.sampled_from([r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", r"^[0-9a-f]{4}$", r"\d", r"^$"]),
    st.lists(st.text(alphabet="ab09-f\n", max_size=6), max_size=60),
)
def test_a_pattern_answers_every_string_as_re_does_asked_again_or_not(
    pattern: str, texts: list[str]
) -> None:
    from reconciler.core import schemas

    check = schemas._re_search(pattern)
    for text in [*texts, *texts]:  # the second time from what the first kept
        assert check(text) is (re.search(pattern, text) is not None), text


def test_a_pattern_keeps_a_bounded_number_of_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.core import schemas

    monkeypatch.setattr(schemas, "_PATTERN_ANSWERS", 8)
    check = schemas._re_search(r"^[0-9]+$")
    texts = [str(n) if n % 2 else f"x{n}" for n in range(50)]
    assert [check(t) for t in texts * 2] == [t.isdigit() for t in texts * 2]
    kept = inspect.getclosurevars(check).nonlocals["known"]
    assert 0 < len(kept) <= 8
