"""What the collector knows from the signed repository: each site's node keys, fleets and waves.

The collector trusts a report only if a key listed in the site's
``hardware.yaml`` signed it, so it must read that file from a commit it has
verified itself, exactly as a node does: every commit from the root (first
read) or since the last verified head (each refresh) must pass `outpost verify`
against the collector's own trust root (``allowed_signers``, installed with the
collector and never read from the repository).

Rules:

- **Fail closed, keep the last good view.** A head that does not verify (or a
  repository that cannot be read) leaves the last verified view in force and is
  reported (`RepositoryStatus.problem`, the ``outpost_collector_repository_ok``
  series); with no verified view yet the collector refuses every report.
- **History rewritten** (the branch reset after a refused commit, see the
  design's trust rules): the new head does not descend from the last verified
  one, so its whole history is verified again.
- **Silence depends on connectivity**: a site is silent when no report came
  for `SILENT_AFTER` of its ``connectivity`` (online nodes report hourly,
  air-gapped plants when a stick comes back).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reconciler.core.errors import (
    ConfigError,
    OutpostError,
    SourceUnavailable,
    VerificationError,
)

if TYPE_CHECKING:  # the trust package is imported where keys are read, not by every reader
    from reconciler.core.trust.sshsig import PublicKey

__all__ = [
    "SILENT_AFTER",
    "FleetSource",
    "FleetView",
    "RepositoryStatus",
    "SiteInfo",
]

SILENT_AFTER: Mapping[str, timedelta] = {
    "online": timedelta(hours=2),
    "intermittent": timedelta(hours=26),
    "air-gapped": timedelta(days=35),
}
MAX_COMMITS = 200_000
# One line of a repository child's answer: a site, or the waves of every fleet (names only).
MAX_CHILD_LINE = 64 << 20
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """One site as the verified repository describes it.

    A collector holds one for every site of the fleet, so it is kept small: slots, and
    its mappings and strings shared with every other site that has the same ones
    (`read_view`: most sites of a fleet have the same labels, waves and machines).
    """

    site: str
    connectivity: str
    fleets: tuple[str, ...]
    waves: Mapping[str, str | None] = field(hash=False)
    """fleet → the name of the wave that selects the site (None: the fleet has no waves)."""
    wave_order: Mapping[str, int] = field(hash=False)
    """fleet → the index of that wave, for sorting."""
    nodes: Mapping[bytes, str] = field(hash=False, repr=False)
    """node key blob → node name."""
    labels: Mapping[str, str] = field(hash=False, default_factory=dict)
    """The site's labels (country, region, format …), for the dashboard's filters."""
    hardware: tuple[tuple[str, str], ...] = ()
    """(node name, one line: arch, CPUs, memory, serial) per node in ``hardware.yaml``."""

    @property
    def keys(self) -> tuple[PublicKey, ...]:
        """Built for each report (a tuple of small objects, cheaper to build than to keep
        for every site of the fleet)."""
        from reconciler.core.trust.sshsig import PublicKey

        return tuple(PublicKey("ssh-ed25519", blob, name) for blob, name in self.nodes.items())

    @property
    def silent_after(self) -> timedelta:
        return SILENT_AFTER.get(self.connectivity, SILENT_AFTER["online"])


@dataclass(frozen=True)
class FleetView:
    """The sites of one verified revision."""

    revision: str
    sites: Mapping[str, SiteInfo] = field(hash=False)
    waves: Mapping[str, tuple[str, ...]] = field(hash=False)
    """fleet → its wave names in rollout order."""


@dataclass(frozen=True)
class RepositoryStatus:
    view: FleetView | None
    checked_at: datetime | None
    problem: str | None


class FleetSource:
    """A repository path and a trust root; `refresh` verifies what is new and rereads the view.

    With ``in_child`` (the collector), a head not seen before is verified and read in a
    child process (`_child_main`, a fresh interpreter) that hands back the view alone:
    walking the history and parsing two documents of every site takes tens of MB that
    a long-running server would otherwise keep (an allocator gives little back), for a
    view of a few. The head is still resolved here, and a head already known costs no
    child. ``outpost fleet status`` and ``promote`` read once and exit: in-process.
    """

    def __init__(
        self, path: Path, trust: Path, *, rev: str = "HEAD", in_child: bool = False
    ) -> None:
        self.path = path
        self.trust = trust
        self.rev = rev
        self.in_child = in_child
        self.status = RepositoryStatus(None, None, "the repository has not been read yet")

    def refresh(self, now: datetime) -> RepositoryStatus:
        """Verify the head and reread the view if it moved; never raises."""
        try:
            view = self._refresh(now)
        except OutpostError as exc:
            self.status = RepositoryStatus(self.status.view, now, f"{self.path}: {exc}")
        else:
            self.status = RepositoryStatus(view, now, None)
        return self.status

    def _refresh(self, now: datetime) -> FleetView:
        from reconciler.core.trust.allowed_signers import parse_allowed_signers

        try:
            data = read_trust_root(self.trust)
        except ConfigError as exc:
            raise SourceUnavailable(exc.message) from None
        trust = parse_allowed_signers(data, str(self.trust))
        known = self.status.view
        if self.in_child:
            if known is not None and _head_by_git(self.path, self.rev) == known.revision:
                return known  # nothing new: no child
            return _view_from_child(self, known, now)
        from reconciler.core.trust.gitsource import open_repository, resolve

        repo = open_repository(self.path)
        head = resolve(repo, self.rev)
        if known is not None and known.revision == head:
            return known
        since = None
        if known is not None and repo.descendant_of(head, known.revision):
            since = known.revision
        return _verified_view(repo, trust, head, since, now)

    def descends(self, revision: str, ancestor: str) -> bool | None:
        """True when ``revision`` is ``ancestor`` or descends from it; None if unknown here."""
        if revision == ancestor:
            return True
        if not (_COMMIT_ID.fullmatch(revision) and _COMMIT_ID.fullmatch(ancestor)):
            return None  # a report's revision is shown, never handed to git as anything else
        if not self.in_child:
            from reconciler.core.trust.gitsource import open_repository

            try:
                repo = open_repository(self.path)
                return bool(repo.descendant_of(revision, ancestor))
            except Exception:  # pygit2: GitError, KeyError or ValueError for an unknown id
                return None
        # The collector does not load libgit2 (11 MB) for this: git's own answer, a few ms.
        done = _git(self.path, "merge-base", "--is-ancestor", ancestor, revision)
        return None if done is None else {0: True, 1: False}.get(done[0])


def _verified_view(repo: Any, trust: Any, head: str, since: str | None, now: datetime) -> FleetView:
    """``(since, head]`` verified against ``trust`` (all history without ``since``), then the
    view at ``head``; the error of the first refused commit."""
    from reconciler.core.trust.gitsource import verify_repository

    result = verify_repository(
        repo, trust, now=now, candidate=head, since=since, max_commits=MAX_COMMITS
    )
    result.raise_for_refusal()
    return read_view(repo, head)


def _head_by_git(path: Path, rev: str) -> str | None:
    """The commit ``rev`` names, as git's own ``rev-parse`` says (a few ms, no libgit2 in
    this process); None when git cannot say, and then the child finds out why."""
    done = _git(path, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if done is None:
        return None
    code, out = done
    head = out.decode("ascii", "replace").strip()
    return head if code == 0 and _COMMIT_ID.fullmatch(head) else None


def _git(path: Path, *args: str) -> tuple[int, bytes] | None:
    """``git -C path ARGS``: its exit code and output, or None when git could not be run or
    took longer than 30 s."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout


def _view_from_child(source: FleetSource, known: FleetView | None, now: datetime) -> FleetView:
    """`FleetSource._refresh` in a child process (`_child_main`): the head resolved there
    (``known`` when it has not moved after all: the child stops), else verified and read and
    the view sent back one site a line, each line distilled here before the next is read."""
    import subprocess
    import tempfile

    from reconciler.fleet._child import python_running

    command = python_running(
        "reconciler.fleet.collector.fleetview",
        "_child_main",
        *(str(source.path), str(source.trust), source.rev, known.revision if known else ""),
        now.isoformat(),
    )
    # Its errors go to a file: a pipe left unread while the answer is read could fill up.
    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            raise SourceUnavailable(f"cannot start the process that verifies it: {exc}") from None
        with child:
            answer = child.stdout
            if answer is None:  # never: stdout is a pipe
                raise SourceUnavailable("the process that verifies it has no output")
            try:
                view = _read_child(answer, known)
            finally:
                answer.close()
                child.wait()
        if view is None or child.returncode != 0:
            errors.seek(0)
            last = " ".join(
                errors.read(1 << 16).decode("utf-8", "replace").strip().splitlines()[-1:]
            )
            raise SourceUnavailable(
                f"the process that verifies it stopped (exit {child.returncode}): {last}"
            )
    if view is not known:
        release_freed_memory()
    return view


def _read_child(lines: IO[bytes], known: FleetView | None) -> FleetView | None:
    """What `_child_main` wrote: a view (``known`` when the head has not moved), its
    problem raised, or None when its answer stopped short or is garbled (it failed: its
    errors say why)."""
    import base64

    from reconciler.core.envelope import loads

    def line() -> Any:
        text = lines.readline(MAX_CHILD_LINE + 1)
        if len(text) > MAX_CHILD_LINE:
            raise ValueError("a line of the child's answer is longer than the limit")
        return loads(text) if text else None

    try:
        head = line()
        if head is None or head.get("problem") is not None:
            if head is None:
                return None
            raise SourceUnavailable(str(head["problem"]))
        if known is not None and head["head"] == known.revision:
            return known
        top = line()
        if top is None:
            return None
        if top.get("problem") is not None:
            raise VerificationError(str(top["problem"]))
        share = _Sharing()
        sites = {}
        for _ in range(int(top["sites"])):
            site, connectivity, fleets, waves, order, nodes, labels, hardware = line()
            sites[site] = share.site(
                site=site,
                connectivity=connectivity,
                fleets=tuple(fleets),
                waves=waves,
                order=order,
                nodes={base64.b64decode(blob): name for blob, name in nodes},
                labels=labels,
                machines=[(name, text) for name, text in hardware],
            )
        return FleetView(
            revision=top["revision"],
            sites=sites,
            waves={fleet: tuple(names) for fleet, names in top["waves"].items()},
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # stopped short or garbled: said with the child's own last words


def _child_main() -> None:
    """The child of `_view_from_child`: PATH TRUST REV KNOWN NOW in; out, one JSON document
    a line: the head (or the problem); unless it is KNOWN, the view's revision, waves and
    number of sites (or the refusal); then one line per site."""
    import base64
    import json
    import sys

    from reconciler.core.trust.allowed_signers import parse_allowed_signers
    from reconciler.core.trust.gitsource import open_repository, resolve

    def put(value: Any) -> None:
        sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")

    path, trust_path, rev, known, now = sys.argv[1:6]
    try:
        trust = parse_allowed_signers(read_trust_root(Path(trust_path)), trust_path)
        repo = open_repository(Path(path))
        head = resolve(repo, rev)
        since = known if known and repo.descendant_of(head, known) else None
    except OutpostError as exc:
        put({"problem": str(exc)})
        return
    put({"head": head})
    if head == known:
        return
    try:
        view = _verified_view(repo, trust, head, since, datetime.fromisoformat(now))
    except OutpostError as exc:
        put({"problem": str(exc)})
        return
    waves = {fleet: list(names) for fleet, names in view.waves.items()}
    put({"revision": view.revision, "waves": waves, "sites": len(view.sites)})
    for info in view.sites.values():
        nodes = [
            [base64.b64encode(blob).decode("ascii"), name] for blob, name in info.nodes.items()
        ]
        put(
            [
                info.site,
                info.connectivity,
                list(info.fleets),
                dict(info.waves),
                dict(info.wave_order),
                nodes,
                dict(info.labels),
                [list(machine) for machine in info.hardware],
            ]
        )


class _Sharing:
    """Equal values kept once for all sites: most sites of a fleet have the same labels,
    waves and machines (a collector holds a `SiteInfo` for every site)."""

    def __init__(self) -> None:
        self._kept: dict[Any, Any] = {}

    def one(self, value: Any, key: Any = None) -> Any:
        """The equal value already kept (``key``: the value's hashable form)."""
        return self._kept.setdefault(value if key is None else key, value)

    def site(
        self,
        *,
        site: str,
        connectivity: str,
        fleets: tuple[str, ...],
        waves: dict[str, str | None],
        order: dict[str, int],
        nodes: dict[bytes, str],
        labels: dict[str, str],
        machines: list[tuple[str, str]],
    ) -> SiteInfo:
        return SiteInfo(
            site=site,
            connectivity=self.one(connectivity),
            fleets=self.one(fleets),
            waves=self.one(waves, ("waves", *waves.items())),
            wave_order=self.one(order, ("order", *order.items())),
            nodes=nodes,
            labels=self.one(labels, ("labels", *labels.items())),
            hardware=self.one(tuple((self.one(n), self.one(m)) for n, m in machines)),
        )


def read_view(repo: Any, revision: str) -> FleetView:
    """Sites, node keys, fleets and waves at ``revision`` (already verified).

    Each site's two documents are parsed, distilled into a `SiteInfo` and dropped before
    the next site's: the collector's peak memory grows with what it keeps, not with the
    parsed YAML of 10,000 sites at once.
    """
    from reconciler.core.loader import load_document
    from reconciler.core.model import Hardware, Repository, Site, expect
    from reconciler.core.schedule import FleetRollout, SiteCalendar
    from reconciler.core.source import CommitTree
    from reconciler.core.trust.sshsig import parse_public_key_line

    tree = CommitTree(repo, revision)
    model = Repository(tree)
    share = _Sharing()

    rollouts: dict[str, FleetRollout] = {}
    for name in model.fleet_names:
        fleet = model.fleet(name)
        if fleet is not None:
            rollouts[name] = FleetRollout.from_document(fleet.doc)
    present = set(tree.files("sites", lenient=True))
    sites: dict[str, SiteInfo] = {}
    for site_id in model.site_ids:
        site_path = f"sites/{site_id}/site.yaml"
        if site_path not in present:
            continue
        site = Site(expect(load_document(tree.read(site_path), site_path), "Site", site_id))
        hardware_path = f"sites/{site_id}/hardware.yaml"
        hardware = (
            Hardware(
                expect(load_document(tree.read(hardware_path), hardware_path), "Hardware", site_id)
            )
            if hardware_path in present
            else None
        )
        labels = SiteCalendar.from_document(site.doc).label_map
        waves: dict[str, str | None] = {}
        order: dict[str, int] = {}
        for fleet_name in site.fleets:
            rollout = rollouts.get(fleet_name)
            if rollout is None:
                continue
            waves[fleet_name] = None
            for index, wave in enumerate(rollout.waves):
                if wave.selects(fleet_name, site_id, labels):
                    waves[fleet_name], order[fleet_name] = wave.name, index
                    break
        nodes: dict[bytes, str] = {}
        machines: list[tuple[str, str]] = []
        for node in hardware.nodes if hardware else ():
            machines.append((str(node.get("name")), _machine(node)))
            line = node.get("publicKey")
            if isinstance(line, str):
                key = parse_public_key_line(line, what=f"{hardware_path} publicKey")
                nodes[key.blob] = str(node.get("name"))
        sites[site_id] = share.site(
            site=site_id,
            connectivity=site.connectivity,
            fleets=tuple(site.fleets),
            waves=waves,
            order=order,
            nodes=nodes,
            labels={str(k): str(v) for k, v in labels.items()},
            machines=machines,
        )
    return FleetView(
        revision=revision,
        sites=sites,
        waves={name: tuple(w.name for w in r.waves) for name, r in rollouts.items()},
    )


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``).

    Receiving a new view (`_read_child`) decodes a line of JSON per site; once it is
    distilled, that memory is free but stays with the process, which serves for
    days until the next head. Elsewhere than glibc this does nothing.
    """
    import ctypes
    import gc

    gc.collect()  # the parsers' reference cycles first, so that their pages are free too
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return
    trim(0)


def _machine(node: Mapping[str, Any]) -> str:
    """One node of ``hardware.yaml`` in a line: ``amd64 · 8 CPU · 32Gi · serial CZCE21679E``."""
    identity = node.get("identity")
    serial = identity.get("serial") if isinstance(identity, Mapping) else None
    parts = [
        str(node["arch"]) if node.get("arch") else None,
        f"{node['cpu']} CPU" if node.get("cpu") else None,
        str(node["memory"]) if node.get("memory") else None,
        f"serial {serial}" if serial else None,
    ]
    return " · ".join(p for p in parts if p) or "no details"


COLLECTOR_FILES = "the collector's configuration"


def read_trust_root(path: Path) -> bytes:
    """The trust root (allowed signers) a collector is started with: bounded, a FIFO or a
    device refused, a link followed; ConfigError naming it."""
    from reconciler.core.source import read_configured
    from reconciler.core.trust.allowed_signers import MAX_TRUST_ROOT_BYTES

    return read_configured(path, "the trust root", MAX_TRUST_ROOT_BYTES, holder=COLLECTOR_FILES)
