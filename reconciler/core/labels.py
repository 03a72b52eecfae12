"""The labels and annotations Outpost puts on what it renders and applies: one key each.

**One site label: ``outpost/site``.** Render stamps it on every object of a site's
slice, apply stamps it again on whatever it sends (decrypted Secrets included), and
prune deletes only objects that carry it with this node's site id. It shares its
``outpost/`` prefix with every other label render writes (``outpost/app``,
``outpost/node``, ``outpost/vm``, ``outpost/device.<type>``), so ``outpost render``
shows exactly the labels that run.

Earlier versions had apply stamp ``outpost.io/site`` as well (render stamped
``outpost/site``): live objects carry both, and objects applied before the change
that since left the slice may carry only the old key. `site_of` recognises either, so
nothing is orphaned on upgrade; the next apply of an object drops the old key (server-
side apply removes a label its field manager no longer sends).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "LEGACY_SITE_LABELS",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "SITE_LABEL",
    "SITE_LABELS",
    "site_of",
    "without_site_label",
]

SITE_LABEL = "outpost/site"
"""The one key saying which site an object belongs to."""
LEGACY_SITE_LABELS = ("outpost.io/site",)
"""Keys that meant the same before: read, never written."""
SITE_LABELS = (SITE_LABEL, *LEGACY_SITE_LABELS)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "outpost"


def site_of(labels: Mapping[str, object]) -> str | None:
    """The site an object's labels name, under the current key or a legacy one; None if none.

    The current key wins when both are present (they agree on everything Outpost applied).
    """
    for key in SITE_LABELS:
        value = labels.get(key)
        if isinstance(value, str) and value:
            return value
    return None


# Where an object carries labels Outpost stamps: its own, its pod template's, its jobs'.
LABELLED_PATHS = (
    ("metadata",),
    ("spec", "template", "metadata"),
    ("spec", "jobTemplate", "metadata"),
    ("spec", "jobTemplate", "spec", "template", "metadata"),
)


def labels_along(body: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, labels) for each of ``LABELLED_PATHS`` whose metadata holds a labels map."""
    for path in LABELLED_PATHS:
        node: Any = body
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        labels = node.get("labels") if isinstance(node, dict) else None
        if isinstance(labels, dict):
            yield path, labels


def without_site_label(body: dict[str, Any], site_id: str) -> dict[str, Any]:
    """The object as policies see it: without the ``outpost/site: <site id>`` label render stamps.

    The label is the only thing that makes the same app, version and values render
    differently at two sites, and it is not the author's: hiding it makes identical
    objects identical, so one evaluation serves every site (and a policy that wants
    the site reads ``site``, which keys the cache on the site). Copies only the
    maps on the way to a label it removes; the rendered body is not changed.
    """
    result = body
    for path, labels in labels_along(body):
        if labels.get(SITE_LABEL) != site_id:
            continue
        if result is body:
            result = dict(body)
        parent: dict[str, Any] = result
        for key in path:
            child = dict(parent[key])
            parent[key] = child
            parent = child
        parent["labels"] = {k: v for k, v in labels.items() if k != SITE_LABEL}
    return result
