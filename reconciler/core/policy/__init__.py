"""Policies as data: CEL rules over a site's rendered slice, with findings at file:line.

A ``kind: Policy`` document is shaped like a Kubernetes ValidatingAdmissionPolicy
(``match`` by API group and kind, ``validations`` with a CEL ``expression`` and a
``message``), plus what a fleet of thousands of sites needs: ``match.siteTypes``
and ``match.siteSelector``, ``severity: deny|warn``, ``exemptions`` that name sites
or apps with a reason and an expiry, and ``tests`` the policy must pass.

What is checked. For one site, every rendered object (apps' manifests, KubeVirt
VMs; SOPS secrets as redacted ``v1 Secret`` stubs annotated ``outpost/source:
sops``), and the Outpost documents of the site in API group ``outpost``: its
``Site``, its ``Hardware``, its ``VirtualMachine`` documents and the ``App``
documents it runs. CEL sees ``object``, ``site`` (the Site document plus a computed
``status`` with usage and capacity, see ``_facts``), ``hardware`` and ``app``
(the App document of the object's app, ``{}`` for objects of no app), and the
functions of ``_facts.CEL_FUNCTIONS``.

Fail closed (design: "an empty policy list is an error, never everything passes"):

- no Policy documents at all is a ``PolicyError``;
- an expression that does not compile is an error finding at its file:line, and
  the policy's other validations still run: a typo never turns into a pass;
- an expression that fails at run time (no such key, wrong type) is a finding at
  the object's origin with the policy's severity, worded so the author knows to
  guard the field with ``has()``;
- an expression that yields anything but a boolean is a finding too;
- an object claiming the reserved annotation ``outpost/source`` is an error: only
  the engine marks SOPS secrets, so a plaintext Secret cannot pass as encrypted.

An expired exemption (``expires`` is the last day it holds) stops exempting and
is itself a warning at its line: the policy applies again and the stale entry
should go. It is a warning, not an error, so a date passing does not stop a node
from taking a commit that is otherwise clean.

Speed. Most stores run the same thing: the same app, version and parameters
render the same body. Results are cached by (policy, canonical hash of the object,
and the hash of each of ``site``, ``hardware``, ``app`` the policy's expressions
reference). A policy that never names ``site`` is evaluated once per distinct
object across the fleet; one that does is keyed on the site too, so a result that
depends on a site is never reused at another (see ``PolicyCache``). A policy whose
expressions read ``site`` only as ``site.status`` is given and keyed by the status alone,
and one that never reads ``object`` is keyed without it (``Policy.site_status_only``,
``Policy.reads_object``; not where a cost bound looks at sizes): a policy on a site's
figures runs once per distinct status, not once per site. One that reads ``object`` only
through ``.field`` chains is keyed by the values there (``Policy.object_paths``): a policy
on a Site's ``kind`` and ``spec.devices`` runs once, not once per Site document. Every
expression is compiled
once, when the policy is loaded.

Where a policy is enforced (``enforce``): ``everywhere`` (the default) is CI, the node
before it applies a commit, and the site's own API server, to which the node applies
the policy as a ValidatingAdmissionPolicy with the slice (``_translate``, ``_export``);
``ci-and-node`` keeps it from the API server. A policy the API server cannot evaluate
and that is not marked ``ci-and-node`` is an error finding at its line.

One job per file: ``_load`` (documents to compiled policies), ``_evaluate`` (CEL and
the cache), ``_site`` (one site's slice; the node's re-check), ``_parallel`` (every
site of a repository, sharded over forked workers; CI's entry point), ``_facts``
(what CEL sees besides the documents: usage, capacity, helper functions),
``_translate`` (an expression in the API server's CEL) and ``_export`` (a site's
policies as admission objects).
"""

from __future__ import annotations

from reconciler.core.findings import aggregate
from reconciler.core.labels import SITE_LABEL
from reconciler.core.policy._evaluate import Outcome, PolicyCache, evaluate, new_context
from reconciler.core.policy._export import (
    ADMISSION_API,
    FACTS_NAME,
    FACTS_NAMESPACE,
    SYSTEM_NAMESPACES,
    SiteExport,
    admission_objects,
    export_rendered_site,
    export_site,
    facts_data,
)
from reconciler.core.policy._load import (
    ENFORCE_CI_AND_NODE,
    ENFORCE_EVERYWHERE,
    SITE_VARIABLES,
    Digests,
    Exemption,
    ObjectCheck,
    Policy,
    PolicySet,
    Validation,
    load_policies,
    load_policy,
    policy_documents,
)
from reconciler.core.policy._parallel import (
    PARALLEL_MIN_SITES,
    check_unrendered_secrets,
    policy_check,
    validate_policies,
)
from reconciler.core.policy._site import (
    OUTPOST_GROUP,
    RESERVED_ANNOTATION,
    RULE_ENGINE,
    SOPS_SOURCE,
    ObjectLike,
    RenderedLike,
    SecretRefLike,
    check_rendered_site,
    check_site,
)

__all__ = [
    "ADMISSION_API",
    "ENFORCE_CI_AND_NODE",
    "ENFORCE_EVERYWHERE",
    "FACTS_NAME",
    "FACTS_NAMESPACE",
    "OUTPOST_GROUP",
    "PARALLEL_MIN_SITES",
    "RESERVED_ANNOTATION",
    "RULE_ENGINE",
    "SITE_LABEL",
    "SITE_VARIABLES",
    "SOPS_SOURCE",
    "SYSTEM_NAMESPACES",
    "Digests",
    "Exemption",
    "ObjectCheck",
    "ObjectLike",
    "Outcome",
    "Policy",
    "PolicyCache",
    "PolicySet",
    "RenderedLike",
    "SecretRefLike",
    "SiteExport",
    "Validation",
    "admission_objects",
    "aggregate",
    "check_rendered_site",
    "check_site",
    "check_unrendered_secrets",
    "evaluate",
    "export_rendered_site",
    "export_site",
    "facts_data",
    "load_policies",
    "load_policy",
    "new_context",
    "policy_check",
    "policy_documents",
    "validate_policies",
]
