"""``outpost node enroll``: a fresh node finds itself in the signed repository and sets itself up.

The hardware already registered in the repository is the identity to match: the
machine's ``/etc/machine-id`` and DMI product serial must equal exactly one node
entry of one site's ``hardware.yaml``, at a commit signed by the trust root the
operator installs. Then, and only then, the node writes (in this order, so that a
half-done enrollment is never mistaken for a done one — ``agent.yaml`` is last,
and the first-boot unit runs while it is missing):

1. the trust root (``allowed_signers``), copied from the operator's file;
2. the node's identity key (ed25519, 0600) and the site's age key (0600), owned
   by the agent's user;
3. the state directory (0700, the agent's user's);
4. the enrollment request (`reconciler.core.enrollment`), signed with the new
   node key: what ``outpost site accept`` records in the repository;
5. ``agent.yaml``, with ``spec.trust.floor`` pinned to the commit enrolled from.

Refusals are ``EnrollmentRefused`` (the wrong box, a repository the trust root does
not sign) or ``ConfigError`` (already enrolled, unreadable files); nothing is written
before every check has passed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.enrollment import (
    EnrollmentRefused,
    RegisteredNode,
    match_machine,
    registered_nodes,
    seal_request,
)
from reconciler.core.errors import ConfigError, OutpostError
from reconciler.core.files import atomic_write
from reconciler.core.source import read_configured

if TYPE_CHECKING:
    from reconciler.core.secrets import Identity

__all__ = [
    "DMI_SERIAL",
    "MACHINE_ID",
    "EnrollOptions",
    "Enrolled",
    "enroll",
    "read_machine",
    "trust_root_fingerprints",
]

MACHINE_ID = Path("/etc/machine-id")
DMI_SERIAL = Path("/sys/class/dmi/id/product_serial")
_MAX_ID_BYTES = 4096
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
# What firmware writes when nobody set a serial: not an identity.
_NO_SERIAL = {"", "0", "none", "default string", "to be filled by o.e.m.", "system serial number"}


@dataclass(frozen=True)
class EnrollOptions:
    """Where everything comes from and goes to; every path injectable for tests."""

    config_dir: Path
    trust_root: Path
    repo: Path | None = None
    bundle: Path | None = None
    branch: str = "main"
    site: str | None = None
    machine_id_file: Path = MACHINE_ID
    serial_file: Path = DMI_SERIAL
    user: str = "outpost"
    state_dir: Path = Path("/var/lib/outpost")
    kubeconfig: Path | None = None
    source_url: str | None = None
    password_file: Path | None = None
    feed_url: str | None = None
    bundle_inbox: Path | None = None
    report_url: str | None = None
    request_out: Path | None = None
    first_apply: str = "immediate"
    age_key: Path | None = None
    """The site's age key from its first node (a site with several nodes shares one key);
    None: make a new one."""


@dataclass(frozen=True)
class Enrolled:
    """What enrollment did, for the command to print."""

    node: RegisteredNode
    floor: str
    config: Path
    request: Path
    identity_key: Path
    public_key: str
    age_key: Path
    age_recipient: str
    trust_root: Path
    trust_sha256: str
    trust_keys: tuple[str, ...]
    owner: str


def _read_small(path: Path, what: str) -> str | None:
    """A one-line identity file; None when it does not exist. sysfs says 4096 bytes for
    every attribute, so the limit is that: a FIFO or a device is refused without blocking."""
    if not os.path.lexists(path):
        return None
    data = read_configured(path, what, _MAX_ID_BYTES)
    return data.decode("utf-8", "replace").strip()


def read_machine(machine_id_file: Path, serial_file: Path) -> tuple[str, str | None]:
    """This machine's (machine id, serial); the serial is None when firmware has none."""
    machine_id = _read_small(machine_id_file, "the machine id")
    if machine_id is None:
        raise ConfigError(
            f"{machine_id_file} does not exist: this system has no machine id "
            "(run `systemd-machine-id-setup`, then enroll)"
        )
    if not _MACHINE_ID.match(machine_id):
        raise ConfigError(
            f"{machine_id_file} holds {machine_id[:40]!r}, not a machine id (32 lowercase hex "
            "digits); an uninitialized image? run `systemd-machine-id-setup`"
        )
    serial = _read_small(serial_file, "the DMI serial")
    if serial is not None and serial.lower() in _NO_SERIAL:
        serial = None
    return machine_id, serial


def trust_root_fingerprints(path: Path) -> tuple[bytes, str, tuple[str, ...]]:
    """(file bytes, sha256 of the file, "principal SHA256:…" per key) of an allowed_signers."""
    from reconciler.core.trust import parse_allowed_signers
    from reconciler.core.trust.allowed_signers import MAX_TRUST_ROOT_BYTES

    data = read_configured(path, "the trust root", MAX_TRUST_ROOT_BYTES)
    trust = parse_allowed_signers(data, str(path))
    keys = tuple(f"{signer.principal} {signer.key.fingerprint}" for signer in trust)
    if not keys:
        raise ConfigError(f"the trust root {path} names no signer")
    return data, hashlib.sha256(data).hexdigest(), keys


@contextmanager
def _repository(options: EnrollOptions) -> Iterator[tuple[Any, str]]:
    """(pygit2 repository, the commit to enroll from) of a checkout or a bundle."""
    import pygit2

    if (options.repo is None) == (options.bundle is None):
        raise ConfigError("enroll from exactly one of a checkout (--repo) or a bundle (--bundle)")
    if options.repo is not None:
        try:
            repo = pygit2.Repository(str(options.repo))
            head = str(repo.revparse_single("HEAD").peel(pygit2.Commit).id)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"{options.repo} is not a git checkout with a commit: {exc}"
            ) from None
        yield repo, head
        return
    assert options.bundle is not None
    with tempfile.TemporaryDirectory(prefix="outpost-enroll-") as scratch:
        yield _unpack_bundle(options.bundle, Path(scratch), options.branch)


def _unpack_bundle(bundle: Path, scratch: Path, branch: str) -> tuple[Any, str]:
    """Fetch every branch of ``bundle`` into a temporary bare repository (the git CLI, as the
    inbox does: libgit2 cannot read bundles); return it and the head of ``branch``."""
    import pygit2

    from reconciler.node.inbox import _NODE_CONFIG, _git, _node_env, _stderr

    if not bundle.is_file():
        raise ConfigError(f"the bundle {bundle} is not a file")
    bare = scratch / "repo.git"
    env = _node_env(scratch)
    what = f"unpacking {bundle}"
    init = _git(["init", "-q", "--bare", str(bare)], env=env, timeout=60, what=what)
    if init.returncode != 0:
        raise ConfigError(f"{what}: git init failed: {_stderr(init)}")
    fetch = _git(
        [
            "--git-dir",
            str(bare),
            *_NODE_CONFIG,
            "fetch",
            "-q",
            "--no-tags",
            str(bundle.resolve()),
            "refs/heads/*:refs/heads/*",
        ],
        env=env,
        timeout=600,
        what=what,
    )
    if fetch.returncode != 0:
        raise ConfigError(
            f"{bundle} cannot be read as a full git bundle (an incremental bundle needs history "
            f"this node does not have; enroll from a full one): {_stderr(fetch)}"
        )
    repo = pygit2.Repository(str(bare))
    heads = sorted(r for r in repo.references if r.startswith("refs/heads/"))
    wanted = f"refs/heads/{branch}"
    if wanted not in heads:
        raise ConfigError(
            f"the bundle {bundle} has no branch {branch!r} (it has: "
            f"{', '.join(h.removeprefix('refs/heads/') for h in heads) or 'none'})"
        )
    return repo, str(repo.references[wanted].peel(pygit2.Commit).id)


def _verify_floor(
    repo: Any, floor: str, trust_data: bytes, trust_path: Path, now: datetime
) -> None:
    """The commit enrolled from must be signed by someone the trust root allows."""
    import pygit2

    from reconciler.core.trust import parse_allowed_signers, verify_repository

    commit = repo[pygit2.Oid(hex=floor)].peel(pygit2.Commit)
    parent = str(commit.parents[0].id) if commit.parents else None
    trust = parse_allowed_signers(trust_data, str(trust_path))
    result = verify_repository(repo, trust, now=now, candidate=floor, since=parent)
    try:
        result.raise_for_refusal()
    except OutpostError as exc:
        raise EnrollmentRefused(
            f"the commit to enroll from, {floor[:12]}, is not signed by a signer of the trust "
            f"root {trust_path} ({exc}). Either the trust root or the repository is the wrong "
            "one: compare the trust root's fingerprint with operations before going on"
        ) from None


FLOOR_REF = "refs/outpost/floor"


def _seed_mirror(source: str, options: EnrollOptions, owner: tuple[int, int] | None) -> None:
    """Put the enrolled history in the node's mirror (``refs/outpost/floor``), so that the
    incremental bundles an air-gapped site receives next find their prerequisites. Not a
    candidate: nothing is applied from it."""
    from reconciler.node.fetch import Mirror
    from reconciler.node.inbox import _NODE_CONFIG, _git, _node_env, _stderr

    mirror = Mirror(options.state_dir / "mirror.git")
    fetched = _git(
        [
            *("--git-dir", str(mirror.path), *_NODE_CONFIG, "fetch", "-q", "--no-tags"),
            *(source, f"refs/heads/{options.branch}:{FLOOR_REF}"),
        ],
        env=_node_env(options.state_dir),
        timeout=600,
        what="seeding the node's mirror",
    )
    if fetched.returncode != 0:
        raise ConfigError(f"cannot seed the mirror {mirror.path}: {_stderr(fetched)}")
    if owner is not None:
        for folder, dirs, files in os.walk(options.state_dir):
            for name in (folder, *(os.path.join(folder, n) for n in (*dirs, *files))):
                os.lchown(name, *owner)


def _shared_age_key(path: Path | None) -> Identity | None:
    """The one identity of the site key file a site's first node made, or None."""
    if path is None:
        return None
    from reconciler.core.secrets._age import read_key_file

    identities = read_key_file(path)
    if len(identities) != 1:
        raise ConfigError(f"{path} holds {len(identities)} age keys; a site key file holds one")
    return identities[0]


def _owner(user: str) -> tuple[int, int] | None:
    """(uid, gid) to chown to when running as root; None otherwise (files stay ours)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            f"user {user!r} does not exist; create the agent's user first "
            f"(useradd --system --home-dir /var/lib/outpost {user}) or pass --user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _already(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"{path} already exists: this node is enrolled (or was, partly). A node keeps "
                "its keys; to enroll a replaced box start from a fresh system, or move the "
                "old files away deliberately"
            )


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_yaml(
    options: EnrollOptions, site: str, floor: str, trust: Path, key: Path, age: Path
) -> str:
    """The agent config enrollment writes (paths absolute; the schema checks it on load)."""
    lines = [
        "# Written by `outpost node enroll`; never read from the repository.",
        "apiVersion: outpost/v1",
        "kind: AgentConfig",
        "spec:",
        f"  site: {site}",
    ]
    if options.source_url:
        lines += ["  source:", f"    url: {_yaml_str(options.source_url)}"]
        lines.append(f"    branch: {_yaml_str(options.branch)}")
        if options.password_file is not None:
            lines += [
                "    credentials:",
                f"      username: outpost-{site}",
                f"      passwordFile: {_yaml_str(str(options.password_file))}",
            ]
    if options.feed_url:
        lines += ["  feed:", f"    url: {_yaml_str(options.feed_url)}"]
    if options.bundle_inbox is not None:
        lines.append(f"  bundleInbox: {_yaml_str(str(options.bundle_inbox))}")
    lines += [
        f"  trustRoot: {_yaml_str(str(trust))}",
        f"  ageKey: {_yaml_str(str(age))}",
        f"  identityKey: {_yaml_str(str(key))}",
    ]
    if options.kubeconfig is not None:
        lines.append(f"  kubeconfig: {_yaml_str(str(options.kubeconfig))}")
    if options.report_url:
        lines += ["  report:", f"    url: {_yaml_str(options.report_url)}"]
    lines += [
        f"  stateDir: {_yaml_str(str(options.state_dir))}",
        "  # immediate: a site with nothing running yet applies its first revision outside its",
        "  # windows; gated: it waits like any change.",
        f"  firstApply: {options.first_apply}",
        "  # The commit this node enrolled from: nothing older or unrelated is ever accepted.",
        f"  trust: {{floor: {floor}}}",
    ]
    return "\n".join(lines) + "\n"


def enroll(options: EnrollOptions, *, now: datetime) -> Enrolled:
    """Enroll this machine (see the module docstring); nothing is written unless all checks pass."""
    from reconciler.core.model import Repository
    from reconciler.core.secrets._age import generate as age_generate
    from reconciler.core.secrets._age import key_file_text, write_key_file
    from reconciler.core.source import CommitTree
    from reconciler.node import identity

    if not options.source_url and not options.feed_url and options.bundle_inbox is None:
        raise ConfigError(
            "say where this node will get its updates: --source-url (a git remote), "
            "--feed-url (a bundle feed) or --bundle-inbox (a folder where bundles arrive)"
        )
    config_dir = options.config_dir
    config = config_dir / "agent.yaml"
    trust_target = config_dir / "allowed_signers"
    key_path = config_dir / "node.key"
    age_path = config_dir / "age.key"
    request_path = options.request_out or config_dir / "enrollment-request.json"
    _already([config, key_path, key_path.with_name("node.key.pub"), age_path, request_path])
    machine_id, serial = read_machine(options.machine_id_file, options.serial_file)
    trust_data, trust_sha, trust_keys = trust_root_fingerprints(options.trust_root)
    with _repository(options) as (git_repo, floor):
        _verify_floor(git_repo, floor, trust_data, options.trust_root, now)
        repo = Repository(CommitTree(git_repo, floor))
        match = match_machine(
            registered_nodes(repo),
            machine_id,
            serial,
            expected_site=options.site,
            revision=floor,
        )
        shared_key = _shared_age_key(options.age_key)
        owner = _owner(options.user)
        # Every check passed: write, agent.yaml last.
        if options.bundle is not None:
            _seed_mirror(git_repo.path, options, owner)
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(trust_target, trust_data, mode=0o644)
        comment = f"outpost-node@{match.site}/{match.node}"
        node_key = identity.generate(key_path, comment=comment)
        age_identity = shared_key if shared_key is not None else age_generate()
        write_key_file(
            age_path,
            key_file_text(
                age_identity,
                created=now,
                comment=f"age key of Outpost site {match.site}, installed at enrollment of "
                f"{match.node}. Never copy it off this node.",
            ),
        )
        options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if owner is not None:
            for path in (key_path, key_path.with_name("node.key.pub"), age_path):
                os.chown(path, *owner)
            os.chown(options.state_dir, *owner)
        os.chmod(options.state_dir, 0o700)
        request = seal_request(
            site=match.site,
            node=match.node,
            machine_id=machine_id,
            serial=serial,
            private_key=node_key.private_key,
            comment=comment,
            age_recipient=age_identity.recipient,
            floor=floor,
            time=now,
        )
        request_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(request_path, request, mode=0o644)
        text = agent_yaml(options, match.site, floor, trust_target, key_path, age_path)
        atomic_write(config, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise ConfigError(
            f"enrollment could not write {exc.filename}: {exc.strerror}; nothing is enrolled "
            f"until {config} exists — remove what was written in {config_dir} and run again"
        ) from None
    return Enrolled(
        node=match,
        floor=floor,
        config=config,
        request=request_path,
        identity_key=key_path,
        public_key=node_key.public_key.line(),
        age_key=age_path,
        age_recipient=age_identity.recipient,
        trust_root=trust_target,
        trust_sha256=trust_sha,
        trust_keys=trust_keys,
        owner=options.user if owner is not None else f"uid {os.geteuid()} (not root: no chown)",
    )
