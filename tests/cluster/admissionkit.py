"""Helpers for tests whose agent applies a site's policies to the shared control plane."""

from __future__ import annotations

import time

from tools.testcluster import Cluster

FACTS = "outpost-policy-facts"


def clear_outpost_policies(cluster: Cluster) -> None:
    """Remove the admission policies an agent applied: they would judge the next test's objects.

    The facts policy and binding stay (they match only ConfigMaps named outpost-policy-facts
    in outpost-system). Deleting the last binding with a ConfigMap paramKind makes this
    Kubernetes stop resolving ConfigMap parameters until the API server restarts
    (kubernetes/kubernetes#130887), which would break every later test of the session that
    applies a policy reading facts.
    """
    cluster.kubectl(
        "delete",
        "validatingadmissionpolicybindings,validatingadmissionpolicies",
        "-l",
        "app.kubernetes.io/managed-by=outpost",
        "--field-selector",
        f"metadata.name!={FACTS}",
        "--ignore-not-found",
    )
    # The API server drops a deleted policy from its admission cache a moment later: wait
    # until an object every bundled policy would deny (no limits, a :latest image) is
    # admitted again, so the next test does not meet a policy that is already gone.
    for _ in range(60):
        probe = cluster.kubectl(
            "create",
            "deployment",
            "outpost-policy-probe",
            "--image=busybox:latest",
            "--dry-run=server",
            "-n",
            "default",
            check=False,
        )
        if probe.returncode == 0 or "ValidatingAdmissionPolicy 'outpost-" not in probe.stderr:
            return
        time.sleep(0.5)
