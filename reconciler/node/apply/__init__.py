"""Apply a site's slice to its cluster: staged server-side apply, drift, inventory, prune, health.

The only package that imports ``kubernetes`` (and only in :mod:`.cluster`).

Public surface:

- :class:`Cluster` — the seam (``Cluster.from_kubeconfig(path)``); every
  failure leaves it as ClusterUnavailable (temporary), ApplyError (the slice
  is refused) or ConfigError (the kubeconfig is unusable);
- :class:`ResourceManager` — ``apply`` → :class:`ApplyResult`, ``drift`` →
  [:class:`Drift`], ``read_inventory``/``write_inventory`` →
  :class:`Inventory`, ``prune`` → [:class:`ObjectKey`], ``wait_healthy`` →
  :class:`HealthReport`, ``health`` for one look;
- pure helpers: :class:`ObjectKey`, :func:`key_of`, :func:`stages`,
  :func:`prune_order` (:mod:`.order`); :func:`health_of`, :class:`Health`,
  :class:`Status` (:mod:`.health`).

A tick, as the agent drives it::

    cluster = Cluster.from_kubeconfig(config.kubeconfig)
    manager = ResourceManager(cluster, site=config.site)
    previous = manager.read_inventory()          # or the state dir copy
    result = manager.apply(objects, revision=sha)  # widens the inventory first
    report = manager.wait_healthy(objects, deadline_seconds=300, clock=clock, sleep=sleep)
    if report.healthy:
        manager.prune(previous.keys, result.keys)
        manager.write_inventory(result.keys, sha)
    else:                                       # roll back: the same calls with the last good slice
        ...

Drift on a tick with nothing new: ``manager.drift(applied_objects)``, then
``manager.apply(<the drifted objects>, revision=applied_sha)``.
"""

from __future__ import annotations

from reconciler.node.apply.cluster import Cluster, Resource
from reconciler.node.apply.health import Health, Status, health_of
from reconciler.node.apply.manager import (
    INVENTORY_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    SITE_LABEL,
    Action,
    ApplyEntry,
    ApplyResult,
    Clock,
    Drift,
    HealthReport,
    Inventory,
    ResourceManager,
    Sleep,
)
from reconciler.node.apply.order import (
    ObjectKey,
    key_of,
    keys_of,
    prune_order,
    sort_objects,
    stages,
)

__all__ = [
    "INVENTORY_NAME",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "PRUNE_ANNOTATION",
    "PRUNE_DISABLED",
    "SITE_LABEL",
    "Action",
    "ApplyEntry",
    "ApplyResult",
    "Clock",
    "Cluster",
    "Drift",
    "Health",
    "HealthReport",
    "Inventory",
    "ObjectKey",
    "Resource",
    "ResourceManager",
    "Sleep",
    "Status",
    "health_of",
    "key_of",
    "keys_of",
    "prune_order",
    "sort_objects",
    "stages",
]
