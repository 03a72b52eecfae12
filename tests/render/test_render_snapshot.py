"""A filled manifest kept across sites (`snapshot`) gives each site its own deep copy."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.render._params import from_snapshot, snapshot

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
plain = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def containers(node: Any) -> list[int]:
    found = [id(node)] if isinstance(node, (dict, list)) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        found += containers(child)
    return found


@given(st.dictionaries(st.text(max_size=8), plain, max_size=5))
def test_every_copy_equals_the_original_and_shares_no_container_with_it(
    body: dict[str, Any],
) -> None:
    kept = snapshot(body)
    first, second = from_snapshot(kept), from_snapshot(kept)
    assert first == body and second == body
    assert list(first) == list(body)  # the keys' order too: it is the manifest's
    shared = set(containers(first)) & (set(containers(second)) | set(containers(body)))
    assert not shared


def test_a_copy_changed_by_one_site_leaves_the_next_sites_copy_alone() -> None:
    kept = snapshot({"metadata": {"labels": {"app": "pos"}}, "spec": {"ports": [80]}})
    first = from_snapshot(kept)
    first["metadata"]["labels"]["outpost.dev/site"] = "de-ber-0001"
    first["spec"]["ports"].append(443)
    assert from_snapshot(kept) == {"metadata": {"labels": {"app": "pos"}}, "spec": {"ports": [80]}}


def test_a_value_marshal_cannot_write_is_copied_the_slow_way() -> None:
    body: dict[str, Any] = {"spec": {"when": object()}, "items": [1, 2]}
    kept = snapshot(body)
    copy = from_snapshot(kept)
    assert copy["spec"]["when"] is body["spec"]["when"]  # a scalar, as the copy before marshal kept it
    assert copy["items"] == [1, 2] and copy["items"] is not body["items"]
