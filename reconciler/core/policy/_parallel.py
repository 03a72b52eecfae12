"""Check every site of a repository, in forked workers when the fleet is large.

The CI entry point (`validate_policies`, `policy_check`): sites are independent once the
repository is loaded, so contiguous shards are rendered and checked in parallel and the
findings come back in site order, collapsed across sites (`aggregate`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from reconciler.core.errors import OutpostError, PolicyError
from reconciler.core.findings import Finding, aggregate
from reconciler.core.policy._evaluate import (
    _FAILURE,
    PolicyCache,
    evaluate,
)
from reconciler.core.policy._load import (
    Digests,
    ObjectCheck,
    PolicySet,
    load_policies,
    policy_documents,
)
from reconciler.core.policy._site import RULE_ENGINE, _group_of, _label, check_folder


def check_unrendered_secrets(
    policies: PolicySet, repo: Any, *, cache: PolicyCache | None = None
) -> list[Finding]:
    """Policies on ``kind: Secret`` over every app manifest of the tree, rendered or not.

    A plaintext Secret is a leak the moment it is committed (every clone, every USB
    bundle holds it), whether or not a site renders that app version yet. So the
    Secret documents of every app's manifests are checked as written, placeholders
    and all, with no site: ``site`` and ``hardware`` are empty, ``app`` is the App.
    """
    cache = cache if cache is not None else PolicyCache()
    matching = policies.for_kind("", "Secret")
    findings: list[Finding] = []
    if not matching:
        return findings
    for name in repo.app_names:
        try:
            app = repo.app(name)
        except OutpostError:
            continue  # the file layer reports a broken app
        if app is None:
            continue
        for manifest in app.manifests:
            body = manifest.body
            if not isinstance(body, dict) or body.get("kind") != "Secret":
                continue
            if _group_of(body) != "":
                continue
            variables = {"object": body, "site": {}, "hardware": {}, "app": app.doc.body}
            label = _label(body)
            for policy in matching:
                if policy.exempt("", str(name)):
                    continue
                outcome = evaluate(policy, cache.bindings.bind(variables), variables=variables)
                for kind, message in outcome:
                    text = f"{label}: {message}"
                    if kind == _FAILURE:
                        text += f" (policy {policy.name} cannot decide; {policy.doc.path})"
                    findings.append(
                        Finding.at(
                            manifest.mark(),
                            text,
                            severity=policy.finding_severity,
                            rule=policy.name,
                        )
                    )
    return findings


def validate_policies(
    repo: Any,
    site_ids: Sequence[str] | None = None,
    *,
    today: date,
    render: Callable[[Any, str], Any] | None = None,
    cache: PolicyCache | None = None,
    workers: int | None = None,
    objects: ObjectCheck | None = None,
    collapse: bool = True,
) -> list[Finding]:
    """Render each site and check it against ``policies/``; the CI entry point.

    ``site_ids`` None means every site of ``repo`` (a ``model.Repository``). Render
    errors become findings (rule ``render``) and that site is skipped. Secrets in app
    manifests are checked whether or not a site renders them (``check_unrendered_secrets``).
    Findings that differ only by site are collapsed (``aggregate``). ``today`` decides which
    exemptions have expired; the caller reads the clock.

    Sites are independent once the repository is loaded, so a large run is split into
    contiguous shards rendered and checked in forked processes (``workers`` None: one
    per core from ``PARALLEL_MIN_SITES`` sites on; 1: in this process). Shards come back
    in site order, so the findings are the same either way; ``cache`` counts the hits and
    evaluations of every shard. ``objects`` checks each rendered site further (CI's
    Kubernetes API schemas, ``ci.kube_schema``); its findings join the policies'.

    ``collapse`` False (a shard of a larger run, merged by ``ci.validate.merge_findings``)
    keeps the per-site findings apart and every finding of ``check_unrendered_secrets``:
    whether a site elsewhere renders the same Secret is known once the shards are merged.
    """
    documents, findings = policy_documents(repo)
    try:
        policies, kept = _loaded(documents, today)
    except PolicyError as exc:
        return [*findings, Finding.from_error(exc, rule=RULE_ENGINE)]
    findings.extend(policies.findings)
    if render is None:
        from reconciler.core.render import render_site

        # The rendered objects are only read, by the policies and ``objects``.
        render = functools.partial(render_site, shared=True)
    cache = cache if cache is not None else kept
    sites = list(site_ids if site_ids is not None else repo.site_ids)

    from reconciler.core._fork import fork_map, workers_for

    if workers is None:
        workers = workers_for(len(sites), PARALLEL_MIN_SITES)
    shards = _shards(sites, workers)
    checker = render

    def shard(index: int) -> tuple[list[Finding], list[Finding], int, int]:
        hits, misses = cache.hits, cache.misses
        errors, per_site = _check_sites(policies, repo, shards[index], checker, cache, objects)
        return errors, per_site, cache.hits - hits, cache.misses - misses

    per_site: list[Finding] = []
    results = fork_map(shard, len(shards), workers)
    if workers > 1:  # the shards counted in the workers' copies of the cache
        cache.hits += sum(r[2] for r in results)
        cache.misses += sum(r[3] for r in results)
    for errors, found, _, _ in results:
        findings += errors
        per_site += found
    rendered_at = {(f.path, f.line, f.rule) for f in per_site} if collapse else set()
    for finding in check_unrendered_secrets(policies, repo, cache=cache):
        if (finding.path, finding.line, finding.rule) not in rendered_at:
            findings.append(finding)
    return findings + (aggregate(per_site) if collapse else per_site)


# The policies loaded last, with their cache: (the documents they were loaded from, today,
# the policies, the cache). A validation's forked workers check the sites of one loaded
# repository in several runs, each with a Repository of its own over the same policy
# documents: the policies are compiled once and every run reuses what earlier runs found.
_LOADED: list[tuple[tuple[Any, ...], date, PolicySet, PolicyCache]] = []


def _loaded(documents: Sequence[Any], today: date) -> tuple[PolicySet, PolicyCache]:
    """``load_policies(documents)`` and a cache for them; the last answer again when
    ``documents`` are the very objects it was loaded from (and ``today`` is the same)."""
    key = tuple(documents)
    if _LOADED:
        last, day, policies, cache = _LOADED[0]
        if (
            day == today
            and len(last) == len(key)
            and all(a is b for a, b in zip(last, key, strict=True))
        ):
            return policies, cache
    policies = load_policies(documents, today=today)
    cache = PolicyCache()
    _LOADED[:] = [(key, today, policies, cache)]
    return policies, cache


# Below this many sites a run stays in one process: forking and shipping findings back
# cost more than rendering a few hundred sites.
PARALLEL_MIN_SITES = 500
_SHARDS_PER_WORKER = 4


def _shards(sites: Sequence[str], workers: int) -> list[list[str]]:
    """Contiguous runs of ``sites``, a few per worker so a slow shard does not hold the rest."""
    from reconciler.core._fork import contiguous

    return contiguous(sites, 1 if workers <= 1 else workers * _SHARDS_PER_WORKER)


def _check_sites(
    policies: PolicySet,
    repo: Any,
    site_ids: Sequence[str],
    render: Callable[[Any, str], Any],
    cache: PolicyCache,
    objects: ObjectCheck | None = None,
) -> tuple[list[Finding], list[Finding]]:
    """Render and check ``site_ids`` in order: (render error findings, policy findings)."""
    errors: list[Finding] = []
    per_site: list[Finding] = []
    for site_id in site_ids:
        try:
            rendered = render(repo, site_id)
            folder = repo.site(site_id)
        except OutpostError as exc:
            errors.append(Finding.from_error(exc, rule="render", site=site_id))
            continue
        digests: Digests | None = {} if objects is not None else None
        per_site += check_folder(policies, rendered, folder, cache=cache, digests=digests)
        if objects is not None and digests is not None:
            per_site += objects(repo, folder, rendered, digests)
    return errors, per_site


def policy_check(
    *, today: date, objects: ObjectCheck | None = None, collapse: bool = True
) -> Callable[[Any, Sequence[str]], list[Finding]]:
    """``validate_policies`` as a ``validate.Check`` (repository, site ids) → findings."""

    def check(repo: Any, site_ids: Sequence[str]) -> list[Finding]:
        return validate_policies(repo, site_ids, today=today, objects=objects, collapse=collapse)

    return check
