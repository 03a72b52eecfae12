"""Shared helpers for policy tests: policies from text, fake rendered sites."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from reconciler.core.errors import Mark
from reconciler.core.loader import load_document
from reconciler.core.policy import PolicySet, load_policies

TODAY = date(2026, 6, 1)


def policy_doc(text: str, path: str = "policies/test.yaml") -> Any:
    return load_document(text.encode(), path)


def policies_from(*texts: str, today: date = TODAY) -> PolicySet:
    docs = [policy_doc(t, f"policies/p{i}.yaml") for i, t in enumerate(texts)]
    return load_policies(docs, today=today)


@dataclass(frozen=True)
class Obj:
    body: dict[str, Any]
    origin: Mark
    app: str | None = None


@dataclass(frozen=True)
class Rendered:
    objects: tuple[Obj, ...]
    secret_refs: tuple[Any, ...] = field(default=())


def deployment(
    name: str = "web",
    image: str = "registry.example.com/pos/server@sha256:" + "a" * 64,
    site: str | None = None,
    **container: Any,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    if site is not None:
        labels["outpost/site"] = site
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "pos", "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": name, "image": image, **container}]},
            },
        },
    }


def site(name: str = "st-0001", type_: str = "store", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "outpost/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": type_, "timezone": "Europe/Berlin"},
    }


def hardware(
    name: str = "st-0001", cpu: int = 4, memory: str = "8Gi", **extra: Any
) -> dict[str, Any]:
    node = {"name": "edge-1", "cpu": cpu, "memory": memory, **extra}
    return {
        "apiVersion": "outpost/v1",
        "kind": "Hardware",
        "metadata": {"name": name},
        "spec": {"nodes": [node]},
    }
