"""Make git bundles of signed history for air-gapped plants (the operator's workstation).

Workstation side — `create_bundle`:

- a bundle of ``since..rev`` (or the whole history of ``rev``) made with the
  ``git bundle create`` CLI. libgit2 (pygit2) can read bundles through a fetch
  but cannot write them, so the operator's workstation needs git on PATH;
- the operator's clone is never written to: the bundle is made in a throw-away
  bare repository that borrows the clone's objects (``objects/info/alternates``)
  and holds one ref, ``refs/heads/outpost/<site>``, at ``rev``. Any clone works,
  whatever its branch names; a shallow clone is refused (its history is cut);
- ``--since`` must be an ancestor of ``rev``: otherwise the plant could not
  connect the bundle to what it has, and the operator learns it at the desk,
  not at the plant;
- ``<out>.manifest.json`` records site, from, to, the clock reading passed in,
  the bundle's sha256 and size. The manifest is *not* signed: it catches a
  truncated copy or a file swapped in transit, not a determined attacker (the
  commit signatures do that).

The format (manifest, header, constants) is defined by the node's inbox
(``reconciler.node.inbox``), which reads what this module writes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.core.files import write_json
from reconciler.core.trust.heartbeat import HEARTBEAT_TAG
from reconciler.node.inbox import (
    _CHUNK,
    _SITE,
    GIT_TIMEOUT,
    HEAD_REF_PREFIX,
    BundleError,
    BundleManifest,
    _git,
    _stderr,
    manifest_path,
    short,
)

__all__ = ["BundleError", "BundleManifest", "create_bundle", "manifest_path", "write_bundle"]


def _workstation_env() -> dict[str, str]:
    """The operator's environment minus variables that would point git elsewhere."""
    drop = {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_CEILING_DIRECTORIES",
        "GIT_REPLACE_REF_BASE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_NO_REPLACE_OBJECTS"] = "1"  # a replace ref must not swap commits into a bundle
    return env


def plant_would_accept(
    repo_path: Path, site: str, since: str | None, rev: str, trust: Any, *, now: datetime
) -> None:
    """The plant's own checks, run before a bundle is carried there: BundleError if it would
    refuse ``since..rev``.

    A refused bundle costs a trip to the plant. The node verifies every commit of the
    range against its root signers and the delegations (``trust.verify_repository``, the
    same call), then validates, renders and policy-checks its slice of ``rev``
    (``NodePipeline.desired``); these are the same checks, without decrypting secrets
    (the workstation does not hold the plant's key).
    """
    from reconciler.core.errors import OutpostError
    from reconciler.core.findings import ERROR
    from reconciler.core.model import Repository
    from reconciler.core.policy import check_rendered_site
    from reconciler.core.render import render_site
    from reconciler.core.source import CommitTree
    from reconciler.core.trust.gitsource import open_repository, verify_repository
    from reconciler.core.validate import validate_tree

    refuse = f"the plant would refuse this bundle, so it was not written: {short(rev)}"
    try:
        repo = open_repository(repo_path)
        result = verify_repository(repo, trust, now=now, candidate=rev, since=since)
        error = result.error
        if error is not None:
            raise BundleError(f"{refuse}: {error.message}")
        tree = CommitTree(repo, rev)
        findings = [
            f
            for f in validate_tree(tree, sites=[site])
            if f.severity == ERROR and (not f.site or f.site == site)
        ]
        if not findings:
            repository = Repository(tree)
            rendered = render_site(repository, site)
            findings = [
                f
                for f in check_rendered_site(repository, site, rendered, today=now.date())
                if f.severity == ERROR
            ]
    except BundleError:
        raise
    except OutpostError as exc:
        raise BundleError(f"{refuse}: {exc}") from None
    if findings:
        shown = "; ".join(f"{f.location}: {f.message}" for f in findings[:5])
        more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
        raise BundleError(f"{refuse}: site {site}'s slice does not pass its checks: {shown}{more}")


def create_bundle(
    repo_path: Path,
    site: str,
    since: str | None,
    rev: str,
    out: Path,
    *,
    now: datetime,
    timeout: float = GIT_TIMEOUT,
    trust: Any = None,
) -> BundleManifest:
    """Write ``out`` (a git bundle of ``since..rev``, or all of ``rev`` when ``since`` is None)
    and ``<out>.manifest.json``; return the manifest.

    With ``trust`` (the plant's root signers, a ``TrustRoot``) nothing is written unless
    the plant would take the bundle: see :func:`plant_would_accept`.

    Needs the git CLI (libgit2 cannot write bundles). ``now`` is the clock reading for
    ``created``. BundleError for unknown revisions, a ``since`` that is not an ancestor of
    ``rev``, an empty range, a site the revision does not have, or a shallow clone.
    """
    if not _SITE.match(site):
        raise BundleError(f"{site!r} is not a site id (lowercase letters, digits and '-')")
    env = _workstation_env()
    what = f"bundle for {site}"
    git = workstation_git(repo_path, what, env=env, timeout=timeout)
    require_full_clone(
        git,
        repo_path,
        "its history is cut, so a bundle from it could not be connected on the plant; run "
        "`git fetch --unshallow` first",
    )
    to = _resolve(git, rev, "--rev")
    start = _resolve(git, since, "--since") if since is not None else None
    if git("cat-file", "-e", f"{to}:sites/{site}/site.yaml", check=False).returncode != 0:
        raise BundleError(
            f"revision {short(to)} has no sites/{site}/site.yaml: is {site!r} the right site id?"
        )
    if start is not None:
        if start == to:
            raise BundleError(
                f"--since and --rev are the same commit {short(to)}: the plant already has "
                "it, there is nothing to bundle"
            )
        ancestor = git("merge-base", "--is-ancestor", start, to, check=False)
        if ancestor.returncode == 1:
            raise BundleError(
                f"--since {since} ({short(start)}) is not an ancestor of --rev {rev} "
                f"({short(to)}): the plant could not connect such a bundle to the history it "
                "has. Use the revision the plant runs (its status report names it), or --full"
            )
        if ancestor.returncode != 0:
            raise BundleError(f"{what}: git merge-base failed: {_stderr(ancestor)}")
    if trust is not None:
        plant_would_accept(repo_path, site, start, to, trust, now=now)
    ref = f"{HEAD_REF_PREFIX}{site}"
    digest, size, commits = write_bundle(
        repo_path, ref, start, to, out, env=env, timeout=timeout, what=what
    )
    manifest = BundleManifest(
        site=site,
        from_=start,
        to=to,
        created=now.astimezone(UTC).isoformat(),
        sha256=digest,
        size=size,
        ref=ref,
        commits=commits,
        heartbeat=heartbeat_of(repo_path, to, env=env, timeout=timeout),
    )
    write_json(manifest_path(out), manifest.to_json())
    return manifest


def heartbeat_of(repo_path: Path, to: str, *, env: dict[str, str], timeout: float) -> str:
    """The clone's signed heartbeat tag object (base64) if it points at ``to`` or an
    ancestor of it, else "" (a tag ahead of the bundle says nothing about it)."""

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "-C", str(repo_path), *args],
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    found = git("rev-parse", "--verify", "--quiet", f"refs/tags/{HEARTBEAT_TAG}")
    tag = found.stdout.decode("ascii", "replace").strip()
    if found.returncode != 0 or not tag:
        return ""
    target = git("rev-parse", "--verify", "--quiet", f"{tag}^{{commit}}")
    commit = target.stdout.decode("ascii", "replace").strip()
    if target.returncode != 0 or (
        commit != to and git("merge-base", "--is-ancestor", commit, to).returncode != 0
    ):
        return ""
    raw = git("cat-file", "tag", tag)
    if raw.returncode != 0:
        return ""
    return base64.b64encode(raw.stdout).decode("ascii")


def write_bundle(
    repo_path: Path,
    ref: str,
    start: str | None,
    to: str,
    out: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
    what: str = "bundle",
) -> tuple[str, int, int]:
    """Write ``out``, a bundle of ``start..to`` (all of ``to`` when ``start`` is None) that
    carries one ref, ``ref``; return its sha256, size and number of commits.

    The caller has checked the revisions (full commit ids, ``start`` an ancestor of ``to``).
    Shared by `create_bundle` (a plant's stick) and `reconciler.fleet.feed` (the feed).
    """
    env = env if env is not None else _workstation_env()
    git = workstation_git(repo_path, what, env=env, timeout=timeout)

    commits = int(git("rev-list", "--count", to if start is None else f"{start}..{to}").stdout)
    object_format = git("rev-parse", "--show-object-format").stdout.strip() or "sha1"
    objects = git("rev-parse", "--path-format=absolute", "--git-path", "objects").stdout.strip()

    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="outpost-bundle-") as scratch:
        # A throw-away repository borrowing the clone's objects: the clone's refs,
        # config and hooks are neither used nor touched.
        temp = Path(scratch) / "export.git"
        git_dir = ["--git-dir", str(temp)]

        def scratch_git(*args: str) -> subprocess.CompletedProcess[str]:
            proc = _git([*args], env=env, timeout=timeout, what=what)
            if proc.returncode != 0:
                raise BundleError(
                    f"{what}: git {args[2] if len(args) > 2 else args[0]} failed: {_stderr(proc)}"
                )
            return proc

        scratch_git("init", "--quiet", "--bare", f"--object-format={object_format}", str(temp))
        (temp / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (temp / "objects" / "info" / "alternates").write_text(objects + "\n")
        scratch_git(*git_dir, "update-ref", ref, to)
        spec = [ref] if start is None else [ref, f"^{start}"]
        scratch_git(
            *git_dir,
            "-c",
            "core.hooksPath=/dev/null",
            "bundle",
            "create",
            "--quiet",
            str(out),
            *spec,
        )
    digest, size = _hash_file(out)
    return digest, size, commits


Git = Callable[..., subprocess.CompletedProcess[str]]
"""``git(*args, check=True)``: one git command in a repository (`workstation_git`)."""


def workstation_git(repo_path: Path, what: str, *, env: dict[str, str], timeout: float) -> Git:
    """Run git in ``repo_path`` with ``env`` (`_workstation_env`); a command that fails is a
    BundleError naming ``what``, the command and git's own words, unless ``check=False``."""

    def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = _git(["-C", str(repo_path), *args], env=env, timeout=timeout, what=what)
        if check and proc.returncode != 0:
            raise BundleError(f"{what}: git {args[0]} in {repo_path} failed: {_stderr(proc)}")
        return proc

    return git


def require_full_clone(git: Git, repo_path: Path, shallow: str) -> None:
    """BundleError unless ``repo_path`` is a git repository with its whole history;
    ``shallow`` says why a shallow clone will not do and what to run."""
    top = git("rev-parse", "--git-dir", check=False)
    if top.returncode != 0:
        raise BundleError(
            f"{repo_path} is not a git repository (or cannot be read): {_stderr(top)}"
        )
    if git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        raise BundleError(f"{repo_path} is a shallow clone: {shallow}")


def _resolve(git: Any, rev: str, option: str) -> str:
    if not rev or rev.startswith("-"):
        raise BundleError(f"{option} {rev!r} is not a revision")
    proc = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    commit = str(proc.stdout.strip())
    if proc.returncode != 0 or not commit:
        raise BundleError(
            f"{option} {rev!r} does not name a commit in this clone (fetch it first, or "
            "check the spelling)"
        )
    return commit


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
