"""Render a site's slice: (tree, site id) → the exact Kubernetes objects the site should run.

One rendering code path serves CI (every affected site, from a working tree or
any revision) and the node (its own site, from a verified commit). Rendering is
pure: no network, no clock, no cluster, no sops. See ``_site`` for the steps,
``_params`` for values and placeholders, ``_patch`` for RFC 7386/6902,
``_placement`` for hardware → node labels and device placement, ``_vms`` for
KubeVirt, ``_output`` for the byte-stable YAML/JSON.
"""

from __future__ import annotations

from reconciler.core.model import selector_matches
from reconciler.core.render._output import as_data, dump_yaml, to_json, to_yaml
from reconciler.core.render._placement import node_labels
from reconciler.core.render._site import render_site
from reconciler.core.render._types import (
    CLUSTER_SCOPED_KINDS,
    KIND_ORDER,
    AppInstance,
    ObjectKey,
    RenderedObject,
    RenderedSite,
    SecretRef,
    kind_rank,
)
from reconciler.core.render._vms import device_resource

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "KIND_ORDER",
    "AppInstance",
    "ObjectKey",
    "RenderedObject",
    "RenderedSite",
    "SecretRef",
    "as_data",
    "device_resource",
    "dump_yaml",
    "kind_rank",
    "node_labels",
    "render_site",
    "selector_matches",
    "to_json",
    "to_yaml",
]
