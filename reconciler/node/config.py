"""The node's own configuration: ``/etc/outpost/agent.yaml`` (``kind: AgentConfig``).

It is installed at enrollment and never read from the repository: the trust
root, the age key and the site id a node serves must not be something a commit
can change. Relative paths are read relative to the config file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.commits import DEFAULT_MAX_COMMITS
from reconciler.core.errors import ConfigError, DocumentError
from reconciler.core.loader import MAX_FILE_BYTES, load_document
from reconciler.core.source import read_configured
from reconciler.node.fetch import Credentials

if TYPE_CHECKING:
    from reconciler.node.feed import FeedSettings

DEFAULT_HEALTH_DEADLINE = 300
DEFAULT_STALE_AFTER = 3 * 24 * 3600
DEFAULT_REPORT_INTERVAL = 3600
DEFAULT_REPORT_SPOOL = 100


def parse_duration(text: str, *, where: str) -> int:
    """Seconds in a duration like ``90s``, ``5m``, ``1h30m``, ``2d``."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in str(text).strip():
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            number = "x"
            break
    if number or total <= 0:
        raise ConfigError(f"{where}: {text!r} is not a duration like 90s, 5m, 1h30m or 2d")
    return total


@dataclass(frozen=True)
class SourceConfig:
    url: str | None
    branch: str
    credentials: Credentials | None


@dataclass(frozen=True)
class ReportConfig:
    """Where signed status reports go (``spec.report``)."""

    url: str
    ca_bundle: Path | None = None
    interval: int = DEFAULT_REPORT_INTERVAL
    spool: int = DEFAULT_REPORT_SPOOL


@dataclass(frozen=True)
class AgentConfig:
    """Everything one node needs to reconcile its site."""

    path: Path
    site: str
    source: SourceConfig
    bundle_inbox: Path | None
    outbox: Path | None
    trust_root: Path
    age_key: Path | None
    kubeconfig: Path | None
    state_dir: Path
    health_deadline: int
    stale_after: int
    field_manager: str
    max_commits: int
    metrics_dir: Path | None
    feed: FeedSettings | None = None
    floor: str | None = None
    """``spec.trust.floor``: nothing that does not descend from this commit is accepted."""
    fetch_max_bytes: int = 512 * 1024 * 1024
    fetch_max_objects: int = 1_000_000
    identity_key: Path | None = None
    report: ReportConfig | None = None
    first_apply: str = "immediate"
    """``spec.firstApply``: whether a site with nothing running may apply outside its gate."""

    @property
    def mirror_dir(self) -> Path:
        return self.state_dir / "mirror.git"


CHECKED_FILE = "config-checked"


def load_config(path: Path, *, remember: bool = False) -> AgentConfig:
    """Read and check the agent config; every problem is a ConfigError naming the file:line.

    The schema check is the costly part (jsonschema, for a file that changes once a year):
    with ``remember`` (the agent's run), its passing is recorded in the state directory
    as a digest of the config's bytes and of every schema, and the same bytes under the
    same schemas are not checked again. Every other check runs every time.
    """
    data = read_configured(path, "the agent config", MAX_FILE_BYTES)
    try:
        doc = load_document(data, str(path))
    except DocumentError as exc:
        raise ConfigError(exc.message, mark=exc.mark) from None
    if doc.kind != "AgentConfig":
        raise ConfigError(f"expected kind AgentConfig, found {doc.kind!r}", mark=doc.mark("kind"))
    record, digest = _check_record(doc.body, data, path)
    if record is None or not _recorded(record, digest):
        from reconciler.core.schemas import validator

        errors = validator("AgentConfig").iter_errors(doc.body)
        for error in sorted(errors, key=lambda e: e.path):
            where = ".".join(str(p) for p in error.absolute_path)
            raise ConfigError(f"{where}: {error.message}", mark=doc.mark(*error.absolute_path))
        if remember and record is not None:
            _remember(record, digest)
    spec = doc.spec
    base = path.parent

    def opt_path(value: object) -> Path | None:
        return None if value in (None, "") else (base / str(value))

    source = spec.get("source") or {}
    creds = source.get("credentials") or {}
    credentials = None
    if creds:
        credentials = Credentials(
            username=creds.get("username"),
            password_file=opt_path(creds.get("passwordFile")),
            ssh_key_file=opt_path(creds.get("sshKeyFile")),
        )
    limits = spec.get("fetchLimits") or {}
    if not source.get("url") and not spec.get("bundleInbox") and not spec.get("feed"):
        raise ConfigError(
            "the agent needs a source: set spec.source.url (a git remote), spec.feed.url "
            "(a bundle feed) or spec.bundleInbox (a folder where bundles arrive)",
            mark=doc.mark("spec"),
        )
    feed = None
    if spec.get("feed"):
        from reconciler.node.feed import DEFAULT_MAX_STEPS, FeedSettings, check_feed_url

        raw = spec["feed"]
        allow_http = bool(raw.get("allowHttp", False))
        reason = check_feed_url(str(raw["url"]), allow_http=allow_http)
        if reason is not None:
            raise ConfigError(f"spec.feed.url: {reason}", mark=doc.mark("spec", "feed", "url"))

        def seconds(key: str, default: str) -> int:
            return parse_duration(raw.get(key, default), where=f"{path}: spec.feed.{key}")

        feed = FeedSettings(
            url=str(raw["url"]),
            ca_bundle=opt_path(raw.get("caBundle")),
            allow_http=allow_http,
            connect_timeout=seconds("connectTimeout", "10s"),
            read_timeout=seconds("readTimeout", "30s"),
            deadline=seconds("deadline", "10m"),
            max_steps=int(raw.get("maxSteps", DEFAULT_MAX_STEPS)),
        )
    report = None
    if spec.get("report"):
        if not spec.get("identityKey"):
            raise ConfigError(
                "spec.report needs spec.identityKey: reports are signed with the node's key "
                "(make one with `outpost agent keygen`)",
                mark=doc.mark("spec", "report"),
            )
        section = spec["report"]
        report = ReportConfig(
            url=str(section["url"]),
            ca_bundle=opt_path(section.get("caBundle")),
            interval=parse_duration(
                section.get("interval", "1h"), where=f"{path}: spec.report.interval"
            ),
            spool=int(section.get("spool", DEFAULT_REPORT_SPOOL)),
        )
    return AgentConfig(
        path=path,
        site=str(spec["site"]),
        source=SourceConfig(
            url=source.get("url"), branch=str(source.get("branch", "main")), credentials=credentials
        ),
        bundle_inbox=opt_path(spec.get("bundleInbox")),
        outbox=opt_path(spec.get("outbox")),
        trust_root=base / str(spec["trustRoot"]),
        age_key=opt_path(spec.get("ageKey")),
        kubeconfig=opt_path(spec.get("kubeconfig")),
        state_dir=base / str(spec.get("stateDir", "/var/lib/outpost")),
        health_deadline=parse_duration(
            spec.get("healthDeadline", "5m"), where=f"{path}: spec.healthDeadline"
        ),
        stale_after=parse_duration(spec.get("staleAfter", "3d"), where=f"{path}: spec.staleAfter"),
        field_manager=str(spec.get("fieldManager", "outpost")),
        max_commits=int(spec.get("maxCommitsPerTick", DEFAULT_MAX_COMMITS)),
        metrics_dir=opt_path(spec.get("metricsDir")),
        feed=feed,
        floor=(spec.get("trust") or {}).get("floor"),
        fetch_max_bytes=int(limits.get("maxBytes", fetch_default("maxBytes"))),
        fetch_max_objects=int(limits.get("maxObjects", fetch_default("maxObjects"))),
        identity_key=opt_path(spec.get("identityKey")),
        report=report,
        first_apply=str(spec.get("firstApply", "immediate")),
    )


def fetch_default(name: str) -> int:
    """A ``spec.fetchLimits`` default, as the AgentConfig schema states it (one source)."""
    from reconciler.core.schemas import schema_of

    spec = schema_of("AgentConfig")["properties"]["spec"]["properties"]
    return int(spec["fetchLimits"]["properties"][name]["default"])


def _check_record(body: object, data: bytes, path: Path) -> tuple[Path | None, str]:
    """Where a passed schema check of this config is recorded, and the digest it records."""
    import hashlib

    from reconciler.core.schemas import schemas_digest

    spec = body.get("spec") if isinstance(body, dict) else None
    state = spec.get("stateDir", "/var/lib/outpost") if isinstance(spec, dict) else None
    if not isinstance(state, str) or not state:
        return None, ""
    digest = hashlib.sha256(b"%s\0%s" % (schemas_digest().encode(), data)).hexdigest()
    return path.parent / state / CHECKED_FILE, digest


def _recorded(record: Path, digest: str) -> bool:
    from reconciler.core.source import read_file

    try:
        return read_file(record, str(record), limit=256).decode().strip() == digest
    except (DocumentError, UnicodeDecodeError):
        return False


def _remember(record: Path, digest: str) -> None:
    """Best effort: a state directory that cannot take it only costs the check next time."""
    from reconciler.core.files import atomic_write

    try:
        if record.parent.is_dir():
            atomic_write(record, f"{digest}\n".encode())
    except OSError:
        pass
