"""``outpost site accept REQUEST``: record an enrolled node's keys in its site's folder.

The request (`reconciler.core.enrollment`) was written by ``outpost node enroll``
on the box and signed with the node's new key. Accepting it, in a checkout:

1. verifies the signature (the request was not changed since the node wrote it);
2. checks it against the repository: the site and node exist, the machine id and
   serial are the ones ``hardware.yaml`` registers for that node, and the commit
   the node enrolled from is in this repository's history;
3. records the node's public key (``publicKey`` of the node in ``hardware.yaml``,
   replacing the old box's key: from the commit that records it on, the collector
   accepts only the new key) and the site's age recipient (``site.yaml``
   ``spec.sops.recipient`` and ``.sops.yaml``);
4. re-encrypts the site's secrets to the new recipient and the fleets'
   break-glass keys (`reconciler.core.secrets.adopt_site_recipient`), so the old
   site key reads nothing written from now on.

It leaves the change in the working tree for a person to review, commit and sign;
it never commits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.enrollment import (
    MAX_REQUEST_BYTES,
    EnrollmentRefused,
    EnrollmentRequest,
    open_request,
    registered_nodes,
)
from reconciler.core.errors import ConfigError, DocumentError, Mark
from reconciler.core.secrets._edit import content_end, double_quoted

__all__ = ["Accepted", "accept_request", "set_node_public_key"]

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Accepted:
    """What accepting a request changed in the working tree."""

    request: EnrollmentRequest
    old_public_key: str | None
    old_recipient: str | None
    written: tuple[str, ...]


def read_request(path: Path) -> EnrollmentRequest:
    """Read and verify a request file; EnrollmentRefused or ConfigError naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the enrollment request {path}: {exc.strerror}") from None
    return open_request(data, str(path))


def _node_item(root: yaml.Node, node: str, path: str) -> yaml.MappingNode:
    def get(mapping: yaml.Node, key: str) -> yaml.Node | None:
        if not isinstance(mapping, yaml.MappingNode):
            return None
        return next((v for k, v in mapping.value if getattr(k, "value", None) == key), None)

    spec = get(root, "spec")
    nodes = get(spec, "nodes") if spec is not None else None
    if not isinstance(nodes, yaml.SequenceNode):
        raise DocumentError("cannot edit: no spec.nodes list", mark=Mark(path))
    for item in nodes.value:
        name = get(item, "name")
        if isinstance(item, yaml.MappingNode) and getattr(name, "value", None) == node:
            return item
    raise DocumentError(f"cannot edit: no node named {node!r} in spec.nodes", mark=Mark(path))


def set_node_public_key(text: str, path: str, node: str, key_line: str) -> str:
    """``text`` (a hardware.yaml) with node ``node``'s ``publicKey`` set, all else unchanged.

    A textual splice, as `reconciler.core.secrets._edit` does for site.yaml: comments
    and order are the site's people's. The result is parsed again and must differ from
    the original in that one value only.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise DocumentError(f"cannot edit: not valid YAML ({exc})", mark=Mark(path)) from None
    if root is None:
        raise DocumentError("cannot edit: the file is empty", mark=Mark(path))
    item = _node_item(root, node, path)
    quoted = double_quoted(key_line)
    existing = next((v for k, v in item.value if getattr(k, "value", None) == "publicKey"), None)
    if existing is not None:
        new_text = text[: existing.start_mark.index] + quoted + text[existing.end_mark.index :]
    elif item.flow_style:
        brace = text.index("{", item.start_mark.index)
        new_text = text[: brace + 1] + f"publicKey: {quoted}, " + text[brace + 1 :]
    else:
        first_key = item.value[0][0]
        indent = " " * first_key.start_mark.column
        after = next(
            (v for k, v in item.value if getattr(k, "value", None) == "identity"), item.value[0][1]
        )
        newline = text.find("\n", content_end(after))
        if newline < 0:
            new_text = text + f"\n{indent}publicKey: {quoted}\n"
        else:
            new_text = text[: newline + 1] + f"{indent}publicKey: {quoted}\n" + text[newline + 1 :]
    old = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    try:
        new = yaml.load(new_text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        new = None
    expected = copy.deepcopy(old)
    for entry in expected["spec"]["nodes"]:
        if isinstance(entry, dict) and entry.get("name") == node:
            entry["publicKey"] = key_line
    if new != expected:
        raise DocumentError(
            f"cannot set node {node}'s publicKey safely in this file's layout; set it by hand "
            f"to {key_line}",
            mark=Mark(path),
        )
    return new_text


def _check_identity(root: Path, request: EnrollmentRequest) -> str | None:
    """The node's current publicKey, after checking the request against hardware.yaml."""
    from reconciler.core.model import Repository
    from reconciler.core.source import WorkdirTree

    repo = Repository(WorkdirTree(root))
    hardware = f"sites/{request.site}/hardware.yaml"
    if request.site not in repo.site_ids:
        raise EnrollmentRefused(
            f"the request names site {request.site!r}, which this repository does not have "
            f"(no sites/{request.site}/)"
        )
    entries = [n for n in registered_nodes(repo) if n.site == request.site]
    entry = next((n for n in entries if n.node == request.node), None)
    if entry is None:
        names = ", ".join(n.node for n in entries) or "none"
        raise EnrollmentRefused(
            f"{hardware}: the request names node {request.node!r}, which the site does not "
            f"have (nodes: {names})"
        )
    if entry.machine_id != request.machine_id:
        raise EnrollmentRefused(
            f"{entry.where}: {request.site}/{request.node} is registered with machine id "
            f"{entry.machine_id}, the request comes from machine id {request.machine_id}: not "
            "the registered box. Refused"
        )
    if entry.serial is not None and entry.serial != request.serial:
        raise EnrollmentRefused(
            f"{entry.where}: {request.site}/{request.node} is registered with serial "
            f"{entry.serial}, the request comes from serial {request.serial or '(none)'}: not "
            "the registered box. Refused"
        )
    return entry.public_key


def _check_floor(root: Path, floor: str) -> None:
    import pygit2

    try:
        repo = pygit2.Repository(str(root))
        repo[pygit2.Oid(hex=floor)].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise EnrollmentRefused(
            f"the node enrolled from commit {floor[:12]}, which this checkout does not have: "
            "fetch (or accept in the repository the node enrolled from)"
        ) from None


def accept_request(root: Path, request_path: Path, *, key: Path | None) -> Accepted:
    """Check the request and record its keys in the working tree at ``root`` (see module doc)."""
    from reconciler.core.secrets import adopt_site_recipient

    request = read_request(request_path)
    old_key = _check_identity(root, request)
    _check_floor(root, request.floor)
    hardware = f"sites/{request.site}/hardware.yaml"
    # The comment is ours, not the request's: what hardware.yaml lists is known text.
    node_key = replace(request.public_key, comment=f"outpost-node@{request.site}/{request.node}")
    key_line = node_key.line()
    from reconciler.core.loader import MAX_FILE_BYTES
    from reconciler.core.source import read_file

    # Checked above through the repository's reader; read again the same bounded way (no
    # link, no FIFO), since its text is what gets edited.
    text = read_file(root / hardware, hardware, MAX_FILE_BYTES).decode("utf-8")
    new_text = (
        text if old_key == key_line else set_node_public_key(text, hardware, request.node, key_line)
    )
    keys = adopt_site_recipient(root, request.site, request.age_recipient, key=key)
    written = list(keys.written)
    if new_text != text:
        from reconciler.core.files import atomic_write

        atomic_write(root / hardware, new_text.encode("utf-8"))
        written.insert(0, hardware)
    return Accepted(request, old_key, keys.old_recipient, tuple(written))
