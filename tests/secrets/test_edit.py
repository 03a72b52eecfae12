"""The textual edit of site.yaml: one value changes, comments and layout stay."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import DocumentError
from reconciler.core.secrets._edit import set_value

R = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
AT = ("spec", "sops")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            'spec:\n  type: store  # c\n  sops: {recipient: "age1..."}\n  updateWindows: []\n',
            f'spec:\n  type: store  # c\n  sops: {{recipient: "{R}"}}\n  updateWindows: []\n',
        ),
        (
            "spec:\n  sops:\n    # the key\n    recipient: age1old  # old\n  x: 1\n",
            f'spec:\n  sops:\n    # the key\n    recipient: "{R}"  # old\n  x: 1\n',
        ),
        ("spec:\n  sops: {}\n", f'spec:\n  sops: {{recipient: "{R}"}}\n'),
        (
            "spec:\n  sops:\n  type: store\n",
            f'spec:\n  sops: {{recipient: "{R}"}}\n  type: store\n',
        ),
        (
            "spec:\n  sops:\n    other: 1\n",
            f'spec:\n  sops:\n    recipient: "{R}"\n    other: 1\n',
        ),
        (
            "spec:\n  type: store\n  # windows\n  updateWindows:\n    - {days: [mon]}\n",
            f'spec:\n  type: store\n  sops: {{recipient: "{R}"}}\n  # windows\n  updateWindows:\n'
            "    - {days: [mon]}\n",
        ),
        (
            "spec:\n  type: store\n  labels:\n    - a\n\n# trailing\n",
            f'spec:\n  type: store\n  labels:\n    - a\n  sops: {{recipient: "{R}"}}\n\n# trailing\n',
        ),
        ("spec: {type: store}\n", f'spec: {{sops: {{recipient: "{R}"}}, type: store}}\n'),
    ],
    ids=["flow", "block", "empty", "null", "block-other", "before-windows", "at-end", "flow-spec"],
)
def test_set_value(before: str, after: str) -> None:
    assert set_value(before, "site.yaml", AT, "recipient", R) == after


@pytest.mark.parametrize(
    "text", ["spec: [1, 2]\n", "nospec: 1\n", "spec:\n  sops: [a]\n", "a: [\n"]
)
def test_refuses_what_it_cannot_edit(text: str) -> None:
    with pytest.raises(DocumentError) as caught:
        set_value(text, "sites/x/site.yaml", AT, "recipient", R)
    assert "sites/x/site.yaml" in str(caught.value)


_keys = st.sampled_from(
    [
        "type",
        "timezone",
        "fleets",
        "connectivity",
        "address",
        "updateWindows",
        "freezes",
        "apps",
        "maintenance",
    ]
)
_values = st.sampled_from(
    ["store", "[a, b]", "{x: 1}", '"22:30"', "\n    - a\n    - b", "\n    k: v"]
)
_comments = st.sampled_from(["", "  # note", "  # sops: {recipient: x}"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(_keys, _values, _comments), min_size=1, max_size=6, unique_by=lambda t: t[0]
    ),
    st.booleans(),
    st.sampled_from(["", "# header\n"]),
)
def test_only_the_recipient_changes(
    entries: list[tuple[str, str, str]], with_sops: bool, head: str
) -> None:
    lines = [head + "apiVersion: outpost/v1", "spec:"]
    for key, value, comment in entries:
        if value.startswith("\n"):
            lines.append(f"  {key}:{comment}{value}")
        else:
            lines.append(f"  {key}: {value}{comment}")
        lines.append("  # between")
    if with_sops:
        lines.insert(2, '  sops: {recipient: "age1old"}')
    text = "\n".join(lines) + "\n"
    edited = set_value(text, "s.yaml", AT, "recipient", R)
    before, after = yaml.safe_load(text), yaml.safe_load(edited)
    assert after["spec"].pop("sops") == {"recipient": R}
    before["spec"].pop("sops", None)
    assert after == before
    # every original line survives, except the recipient line itself
    kept = [line for line in text.splitlines() if "age1old" not in line]
    remaining = edited.splitlines()
    for line in kept:
        assert line in remaining
    assert len(remaining) == len(text.splitlines()) + (0 if with_sops else 1)
