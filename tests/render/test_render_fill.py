"""Filling a manifest's placeholders through its template gives what the full walk gives.

``fill`` copies a manifest and fills only the strings its template lists;
``substitute`` walks every node. Both must produce the same object, or raise the
same error at the same line, for any manifest and any values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from render_world import tiny_files, workdir_repo, write_files

from reconciler.core.errors import RenderError
from reconciler.core.loader import YamlDocument, parse_yaml
from reconciler.core.render import _site, render_site, to_json
from reconciler.core.render._params import Scope, fill, substitute, used_parameters

ROOT = Path(__file__).resolve().parents[2]


def scope(values: dict[str, Any], declared: frozenset[str] | None = None) -> Scope:
    return Scope(
        app="web",
        site="s1",
        declared=frozenset(values) if declared is None else declared,
        values=values,
        builtins={
            "app.name": "web",
            "app.version": "1.0.0",
            "app.namespace": "web",
            "site.name": "s1",
            "site.timezone": "Europe/Berlin",
            "site.type": "store",
        },
        images={"server": "registry.example.com/web@sha256:" + "a" * 64},
        version="1.0.0",
    )


def outcome(function: Any, *args: Any) -> Any:
    try:
        return ("ok", function(*args))
    except RenderError as exc:
        return ("error", exc.message, str(exc.mark))


def test_the_example_apps_fill_like_the_full_walk() -> None:
    manifests = [
        doc
        for path in sorted((ROOT / "apps").glob("*/manifests/*.yaml"))
        for doc in parse_yaml(path.read_bytes(), path.relative_to(ROOT).as_posix(), multi=True)
    ]
    assert manifests
    values = {"replicas": 2, "greeting": "hi", "tls": {"port": 8443}}
    for doc in manifests:
        s = scope(values, frozenset())
        assert outcome(fill, doc, s) == outcome(substitute, doc.body, doc, s)


_texts = st.sampled_from(
    [
        "plain",
        "${greeting}",
        "${replicas}",
        "${tls}",
        "${tls.port}/tcp",
        "${tls.nope}",
        "${images.server}",
        "${images.nope}",
        "${site.name}-${app.version}",
        "$${HOME}",
        "${unknown}",
        "${",
        "${bad name}",
        "x ${tls} y",
    ]
)
_keys = st.one_of(st.sampled_from(["a", "b", "name", "${greeting}", "k-${site.name}"]), _texts)
_nodes = st.recursive(
    st.one_of(_texts, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(body=_nodes.filter(lambda node: node is not None), with_tls=st.booleans())
def test_fill_agrees_with_substitute(body: Any, with_tls: bool) -> None:
    text = yaml.safe_dump(body, sort_keys=False)
    doc = parse_yaml(text.encode(), "apps/web/manifests/m.yaml")[0]
    values: dict[str, Any] = {"greeting": "hello", "replicas": 1}
    if with_tls:
        values["tls"] = {"port": 8443}
    s = scope(values, frozenset({"greeting", "replicas", "tls"}))
    assert outcome(fill, doc, s) == outcome(substitute, doc.body, doc, s)
    assert outcome(fill, doc, s) == outcome(fill, doc, s)


def at_site(s: Scope, site: str) -> Scope:
    return replace(s, site=site, builtins={**s.builtins, "site.name": site})


@settings(max_examples=300, deadline=None)
@given(
    body=_nodes.filter(lambda node: node is not None),
    visits=st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.booleans()), max_size=6),
)
def test_a_manifest_naming_the_site_fills_at_each_site_as_the_full_walk_does(
    body: Any, visits: list[tuple[str, bool]]
) -> None:
    """The strings without ${site.name} are kept from the first fill with the same values;
    whatever the order of sites and values, each fill is the full walk's at that site, its
    errors included (they name the site they are met at), and never one kept from another."""
    text = yaml.safe_dump({"site": "${site.name}", "body": body}, sort_keys=False)
    doc = parse_yaml(text.encode(), "apps/web/manifests/m.yaml")[0]
    for site, with_tls in visits:
        values: dict[str, Any] = {"greeting": "hello", "replicas": 1}
        if with_tls:
            values["tls"] = {"port": 8443}
        s = at_site(scope(values, frozenset({"greeting", "replicas", "tls"})), site)
        filled = outcome(fill, doc, s)
        assert filled == outcome(substitute, doc.body, doc, s)
        if filled[0] == "ok":
            assert filled[1]["site"] == site
            filled[1]["body"] = "changed"  # a fill is the caller's: the next one is not
    assert doc.body["site"] == "${site.name}"


def test_a_missing_value_beside_the_site_name_is_met_at_every_site() -> None:
    doc = parse_yaml(b"a: ok ${greeting}\nb: ${site.name}\nc: ${x}\n", "m.yaml")[0]
    s = scope({"greeting": "hi"}, frozenset({"greeting", "x"}))
    assert fill(doc, replace(s, values={"greeting": "hi", "x": "y"})) == {
        "a": "ok hi",
        "b": "s1",
        "c": "y",
    }
    for site in ("s2", "s3"):
        with pytest.raises(RenderError, match=f"has no value at site '{site}'"):
            fill(doc, at_site(s, site))
    assert fill(doc, at_site(replace(s, values={"greeting": "hi", "x": "z"}), "s4")) == {
        "a": "ok hi",
        "b": "s4",
        "c": "z",
    }


def test_fill_leaves_the_manifest_alone() -> None:
    doc = parse_yaml(b"a: {b: '${greeting}', c: [1, {d: x}]}\n", "m.yaml")[0]
    filled = fill(doc, scope({"greeting": "hi"}))
    assert filled == {"a": {"b": "hi", "c": [1, {"d": "x"}]}}
    filled["a"]["c"][1]["d"] = "changed"
    assert doc.body == {"a": {"b": "${greeting}", "c": [1, {"d": "x"}]}}


def test_used_parameters_are_remembered_per_declaration() -> None:
    docs: tuple[YamlDocument, ...] = tuple(parse_yaml(b"a: '${greeting} ${x}'\n", "m.yaml"))
    assert used_parameters(docs, scope({}, frozenset({"greeting", "x"}))) == {"greeting", "x"}
    assert used_parameters(docs, scope({}, frozenset({"greeting", "x"}))) == {"greeting", "x"}
    with pytest.raises(RenderError, match=r"unknown placeholder \$\{x\}"):
        used_parameters(docs, scope({}, frozenset({"greeting"})))


def _two_sites(tmp_path: Path, second: dict[str, str] | None = None) -> Any:
    files = tiny_files()
    for name in ("site.yaml", "hardware.yaml"):
        files[f"sites/s2/{name}"] = files[f"sites/s1/{name}"].replace("name: s1", "name: s2")
    files["sites/s2/hardware.yaml"] = files["sites/s2/hardware.yaml"].replace(
        "0123456789abcdef", "1123456789abcdef"
    )
    files.update(second or {})
    write_files(tmp_path, files)
    return workdir_repo(tmp_path)


def test_sites_with_the_same_values_share_one_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _two_sites(tmp_path)
    calls: list[str] = []
    real = _site.fill
    monkeypatch.setattr(_site, "fill", lambda doc, s: calls.append(s.site) or real(doc, s))
    first, second = render_site(repo, "s1"), render_site(repo, "s2")
    # The ConfigMap says ${site.name}: filled at each site. The Deployment is shared.
    assert calls == ["s1", "s1", "s2"]
    config = {s.site: s.object("v1/ConfigMap/web/web-config") for s in (first, second)}
    assert config["s1"].body["data"]["GREETING"] == "hello, s1!"
    assert config["s2"].body["data"]["GREETING"] == "hello, s2!"
    one = first.object("apps/v1/Deployment/web/web").body
    two = second.object("apps/v1/Deployment/web/web").body
    assert one["metadata"]["labels"]["outpost/site"] == "s1"
    assert two["metadata"]["labels"]["outpost/site"] == "s2"
    assert one is not two and one["spec"] is not two["spec"]
    # each site's body is its own, to its leaves: a caller may change it
    again = render_site(repo, "s2").object("apps/v1/Deployment/web/web").body
    containers = [b["spec"]["template"]["spec"]["containers"] for b in (one, two, again)]
    assert containers[0] == containers[1] == containers[2]
    assert len({id(c) for c in containers}) == 3


def test_the_shared_fill_renders_what_a_fresh_one_renders(tmp_path: Path) -> None:
    site2 = tiny_files()["sites/s1/site.yaml"].replace("name: s1", "name: s2")
    site2 += '  apps:\n    web: {version: "1.0.0", values: {replicas: 2}}\n'
    repo = _two_sites(tmp_path, {"sites/s2/site.yaml": site2})
    cached = [to_json(render_site(repo, s)) for s in ("s1", "s2", "s1", "s2")]
    fresh = []
    for site in ("s1", "s2"):
        _site._FILLED.entries.clear()
        _site._CHECKED.entries.clear()
        fresh.append(to_json(render_site(workdir_repo(tmp_path), site)))
    assert cached == fresh * 2
    assert '"replicas": 2' in cached[1] and '"replicas": 1' in cached[0]
