"""``.sops.yaml`` as `outpost secrets sops-config` writes it is read without the YAML
parser; whatever the bytes, the rules read are the ones the YAML parser reads."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.errors import Mark
from reconciler.core.secrets._recipients import (
    BreakGlass,
    SiteKeys,
    _parse_generated,
    _parse_yaml_rules,
    parse_sops_config,
    sops_config_text,
)

BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
site_ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
NO_MARK = Mark("sites/x/site.yaml", 1)  # the text never reads where a key was declared
recipients = st.text(BECH32, min_size=58, max_size=58).map(lambda body: "age1" + body)


@st.composite
def site_keys(draw: st.DrawFn, fleets: st.SearchStrategy[str] = site_ids) -> list[SiteKeys]:
    ids = draw(st.lists(site_ids, unique=True, max_size=6))
    glass = st.builds(BreakGlass, recipients, fleets, st.just(Mark("fleets/f.yaml", 1)))
    break_glass = tuple(draw(st.lists(glass, max_size=2)))
    return [
        SiteKeys(site_id, NO_MARK, NO_MARK, draw(st.one_of(st.none(), recipients)), break_glass, ())
        for site_id in ids
    ]


def _yaml(data: bytes) -> tuple[object, object]:
    return _parse_yaml_rules(data, ".sops.yaml")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(site_keys())
def test_a_generated_file_reads_as_the_yaml_parser_reads_it(keys: list[SiteKeys]) -> None:
    data = sops_config_text(keys).encode()
    generated = _parse_generated(data, ".sops.yaml")
    assert generated is not None, data
    assert (generated, []) == _yaml(data)
    assert set(generated) == {
        f"^sites/{k.site_id}/secrets/.*\\.sops\\.yaml$" for k in keys if k.recipient
    }


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(site_keys(fleets=st.text(max_size=12)), st.data())  # a fleet's name in a comment
def test_any_edit_of_a_generated_file_reads_as_the_yaml_parser_reads_it(
    keys: list[SiteKeys], data: st.DataObject
) -> None:
    text = sops_config_text(keys).encode()
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(
        st.sampled_from(
            [
                b"",
                b" ",
                b"\n",
                b"#",
                b"  # x",
                b"'",
                b'"',
                b"\t",
                b"- ",
                b":",
                b"&a ",
                b"*a",
                b"!!str ",
                b"[",
                b"\xff",
                b"\xc3\xa9",
                b"age1qq\n      - ",
                b"\n    age: []",
            ]
        )
    )
    edited = text[:at] + insert + text[at + cut :]
    assert parse_sops_config(edited) == _yaml(edited)
    # A run over a few sites asks for their rules alone: the same rules, the same problems.
    asked = data.draw(st.lists(st.sampled_from([*_regexes(keys), "^sites/zz/secrets/x$"])))
    rules, problems = parse_sops_config(edited, only=asked)
    everything, expected = parse_sops_config(edited)
    assert problems == expected
    assert {k: rules[k] for k in asked if k in rules} == {
        k: everything[k] for k in asked if k in everything
    }


def _regexes(keys: list[SiteKeys]) -> list[str]:
    return [f"^sites/{k.site_id}/secrets/.*\\.sops\\.yaml$" for k in keys] or ["^x$"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(site_keys(), st.data())
def test_the_rules_asked_about_read_as_the_whole_file_reads_them(
    keys: list[SiteKeys], data: st.DataObject
) -> None:
    text = sops_config_text(keys).encode()
    # The same site twice: the later rule wins, as when the whole file is read.
    text += text.partition(b"creation_rules:\n")[2] if data.draw(st.booleans()) else b""
    asked = data.draw(st.lists(st.sampled_from(_regexes(keys)), unique=True))
    everything = _parse_generated(text, ".sops.yaml")
    assert everything is not None
    assert _parse_generated(text, ".sops.yaml", asked) == {
        k: everything[k] for k in asked if k in everything
    }


def test_marks_point_at_each_rule_line() -> None:
    keys = [
        SiteKeys(
            "a",
            NO_MARK,
            NO_MARK,
            "age1" + "q" * 58,
            (BreakGlass("age1" + "p" * 58, "retail", Mark("fleets/retail.yaml", 9)),),
            (),
        ),
        SiteKeys("b", NO_MARK, NO_MARK, "age1" + "z" * 58, (), ()),
    ]
    data = sops_config_text(keys).encode()
    rules, problems = parse_sops_config(data)
    lines = data.decode().splitlines()
    assert problems == []
    for regex, (_, _, mark) in rules.items():
        assert mark.path == ".sops.yaml"
        assert lines[mark.line - 1] == f"  - path_regex: {regex}"
    assert [m.line for _, _, m in rules.values()] == [5, 10]
    assert rules["^sites/b/secrets/.*\\.sops\\.yaml$"][2] == Mark(".sops.yaml", 10)
