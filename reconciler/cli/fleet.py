"""``outpost fleet``: status reports from sites, in a file or in the collector's store.

``outpost fleet ingest DIR`` reads every ``outpost-status-<site>.json`` at or
below DIR (an air-gapped plant's outbox on the stick that came back): into the
fleet status file (``--into``, reports taken as they claim), or verified
against the signed repository into the collector's store (``--db PATH`` for
SQLite, ``--url postgresql://…``). ``outpost fleet status`` prints which sites
run what, why a change has not landed yet, and which of the repository's sites
never reported, from either. ``outpost fleet serve`` is the collector itself;
``outpost fleet token`` manages its read API's bearer tokens. ``outpost fleet promote``
opens the next gated wave of each fleet's change, or halts it (``fleet.promote``).

The fleet status file is ``$OUTPOST_FLEET_STATUS``, else
``$XDG_STATE_HOME/outpost/fleet-status.json`` (``~/.local/state/...``): neither
command writes into the current directory unless told to with ``--into``/``--from``.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "json", "markdown")
DEFAULT_HELP = "$OUTPOST_FLEET_STATUS, else $XDG_STATE_HOME/outpost/fleet-status.json"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help=COMMANDS["fleet"],
        description="Status reports carried back from sites (air-gapped plants' outboxes).",
        epilog=example("outpost fleet ingest /media/usb", "outpost fleet status --repo ."),
    )
    commands = parser.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    ingest = commands.add_parser(
        "ingest",
        help="read outpost-status-<site>.json reports from DIR into the fleet status file",
        description=(
            "Read every outpost-status-<site>.json at or below DIR into --into. Per site the "
            "newest report (by its own time) wins; an older one changes nothing. Exit 0 when "
            "every report was read, 1 when one was refused (malformed), 2 on I/O errors."
        ),
        epilog=example("outpost fleet ingest /media/usb"),
    )
    ingest.add_argument("directory", metavar="DIR", help="where the reports are (a stick)")
    ingest.add_argument(
        "--into", metavar="FILE", help=f"fleet status file (default: {DEFAULT_HELP})"
    )
    _store_arguments(ingest, repository_required=False)
    ingest.set_defaults(func=run_ingest)
    status = commands.add_parser(
        "status",
        help="print which sites run what, and why a change has not landed yet",
        description=(
            "Print one line per site: applied revision, health, age of its last report, and "
            "what waits and why; then every site of the repository at --repo that never "
            "reported. Exit 0, or 2 when the file cannot be read."
        ),
        epilog=example("outpost fleet status --repo ~/src/stores -o json"),
    )
    status.add_argument(
        "--from", dest="source", metavar="FILE", help=f"fleet status file (default: {DEFAULT_HELP})"
    )
    _store_arguments(status, repository_required=False)
    status.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    status.set_defaults(func=run_status)
    serve = commands.add_parser(
        "serve",
        help="run the collector: signed reports in, fleet API and /metrics out",
        description=(
            "Serve the collector's HTTP API. Reports are verified against the node keys in the "
            "fleet repository (--repo), itself verified against --trust and re-read every "
            "--refresh seconds. The dashboard is at /dashboard/ (same tokens, or its login "
            "form). TLS: --tls-cert/--tls-key, or a reverse proxy in front (see README). "
            "Exit 2 on configuration errors."
        ),
        epilog=example(
            "outpost fleet serve --db collector.db --repo /srv/fleet "
            "--trust /etc/outpost/allowed_signers "
            "--commit-url 'https://git.example.com/ops/fleet/commit/{commit}'"
        ),
    )
    _store_arguments(serve, repository_required=True)
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (127.0.0.1:8080)",
    )
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    serve.add_argument(
        "--refresh",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often to re-verify the repository and prune history (60)",
    )
    serve.add_argument(
        "--history", type=int, default=100, metavar="N", help="earlier reports kept per site (100)"
    )
    serve.add_argument(
        "--rate",
        default="30/5",
        metavar="BURST/SECONDS",
        help="per-site limit: BURST reports at once, then one per SECONDS (30/5)",
    )
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST alerts (firing and resolved) to URL; repeatable",
    )
    serve.add_argument(
        "--webhook-format",
        choices=("json", "slack"),
        default="json",
        help="generic JSON or a Slack-compatible {text} body (json)",
    )
    serve.add_argument(
        "--commit-url",
        metavar="TEMPLATE",
        help="the dashboard links each change here, {commit} replaced by its id, e.g. "
        "https://git.example.com/ops/fleet/commit/{commit}",
    )
    serve.add_argument(
        "--session-key",
        metavar="FILE",
        help="the dashboard's session signing key (≥ 32 bytes); collectors behind one "
        "address share it. Default: random per process (logins end at a restart)",
    )
    serve.add_argument(
        "--verify-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that check report signatures beside the serving one (default: 1 on "
        "a machine with more than one core, else 0: the serving process checks them)",
    )
    serve.set_defaults(func=run_serve)
    promote = commands.add_parser(
        "promote",
        help="open the next gated wave of each fleet's change, or halt it, as a signed commit",
        description=(
            "For every fleet with gated waves and its change in flight, judge the next wave's "
            "gate from the collector's store and commit a Promotion or Halt record into "
            "rollouts/<fleet>/<change>.yaml of --repo, signed with --key (the promoter, whose "
            "scope in policies/signers.yaml is rollouts/**). Push the branch afterwards. "
            "Exit 0, 1 when a fleet is halted, 2 on errors."
        ),
        epilog=example(
            "outpost fleet promote --repo ~/src/stores --trust allowed_signers "
            "--db collector.db --key ~/.ssh/outpost-promoter"
        ),
    )
    where = promote.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", metavar="PATH", help="the collector's SQLite store (a file)")
    where.add_argument("--url", metavar="URL", help="the collector's PostgreSQL store")
    where.add_argument(
        "--api", metavar="URL", help="the collector's read API (https://…), with --token-file"
    )
    promote.add_argument("--token-file", metavar="FILE", help="a bearer token of the read API")
    promote.add_argument("--ca", metavar="PEM", help="CA bundle for --api (default: system)")
    promote.add_argument(
        "--repo", metavar="DIR", required=True, help="the fleet repository (a git clone)"
    )
    promote.add_argument("--trust", metavar="FILE", required=True, help="its root signers")
    promote.add_argument("--rev", default="HEAD", help="the revision of --repo to follow (HEAD)")
    promote.add_argument(
        "--key", metavar="FILE", help="the promoter's SSH private key (git commit -S)"
    )
    promote.add_argument(
        "--dry-run", action="store_true", help="decide and print, commit nothing (no --key)"
    )
    promote.add_argument("-o", "--output", choices=("text", "json"), default="text")
    promote.set_defaults(func=run_promote)
    token = commands.add_parser(
        "token",
        help="add or remove a bearer token of the collector's read API",
        description=(
            "`add NAME` prints a new token once; only its SHA-256 hash is stored. "
            "`remove NAME` revokes it (collectors notice within 10 s)."
        ),
        epilog=example(
            "outpost fleet token add grafana --db /var/lib/outpost/collector.db",
            "outpost fleet token remove grafana --url postgresql://outpost@db/outpost",
        ),
    )
    token.add_argument("action", choices=("add", "remove"))
    token.add_argument("name", metavar="NAME", help="who the token is for, e.g. grafana")
    _store_arguments(token, repository_required=False, repository=False)
    token.set_defaults(func=run_token)


def _store_arguments(
    parser: argparse.ArgumentParser, *, repository_required: bool, repository: bool = True
) -> None:
    where = parser.add_mutually_exclusive_group(required=repository_required or not repository)
    where.add_argument("--db", metavar="PATH", help="the collector's SQLite store (a file)")
    where.add_argument(
        "--url", metavar="URL", help="the collector's PostgreSQL store (postgresql://…)"
    )
    if repository:
        add_repo_argument(
            parser,
            default=None,
            required=repository_required,
            purpose="(a git clone) whose node keys verify reports",
        )
        parser.add_argument(
            "--trust",
            metavar="FILE",
            required=repository_required,
            help="root signers for --repo (allowed_signers), as for outpost verify",
        )
        parser.add_argument("--rev", default="HEAD", help="the revision of --repo to follow (HEAD)")


def _open(
    args: argparse.Namespace, *, need_repository: bool, in_child: bool = False
) -> tuple[Any, Any]:
    """The store and the verified repository view (None without --repo); ``in_child``: a
    new head is verified in a child process (the collector, `FleetSource`)."""
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import ConfigError
    from reconciler.fleet.collector.fleetview import FleetSource
    from reconciler.fleet.collector.store import open_store

    now = datetime.now(UTC)
    source = None
    repo = getattr(args, "repo", None)
    if need_repository and repo is None:
        raise ConfigError(
            "--repo and --trust are needed: reports are verified against the "
            "node keys in the fleet repository"
        )
    if repo is not None:
        if not args.trust:
            raise ConfigError("--repo needs --trust (the root signers' allowed_signers file)")
        source = FleetSource(Path(repo), Path(args.trust), rev=args.rev, in_child=in_child)
        status = source.refresh(now)
        if status.view is None and need_repository:
            raise ConfigError(f"the fleet repository did not verify: {status.problem}")
        if status.view is None:
            print(
                f"warning: the fleet repository did not verify, so sites that never reported "
                f"are not listed: {status.problem}",
                file=sys.stderr,
            )
    store = open_store(args.db or args.url, now=now)
    return store, source


def _site_records(args: argparse.Namespace, *, need_repository: bool) -> tuple[Any, Any]:
    """The newest record of every site in the store (site → record), and the repository view
    (`_open`); the store is closed again."""
    store, source = _open(args, need_repository=need_repository)
    try:
        return {r.site: r for r in store.sites()}, source
    finally:
        store.close()


def _print_outcomes(outcomes: Sequence[Any], directory: str) -> int:
    """One line per report ingested from ``directory`` (refusals on stderr); how many refused."""
    refused = 0
    for outcome in outcomes:
        if outcome.outcome == "refused":
            refused += 1
            print(f"refused {outcome.message}", file=sys.stderr)
        else:
            print(f"{outcome.outcome} {outcome.message}")
    if not outcomes:
        print(f"no outpost-status-*.json reports under {directory}", file=sys.stderr)
    return refused


def run_ingest(args: argparse.Namespace) -> int:
    if args.db or args.url:
        return _ingest_store(args)
    import os
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.status import default_fleet_file, ingest_dir, load_fleet, save_fleet

    now = datetime.now(UTC)  # the CLI is the edge: the one place that reads the clock
    target = Path(args.into) if args.into else default_fleet_file(os.environ)
    try:
        fleet = load_fleet(target)
        fleet, outcomes = ingest_dir(Path(args.directory), fleet, now=now)
        save_fleet(target, fleet)
    except OutpostError as exc:
        print(f"outpost fleet ingest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"outpost fleet ingest: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    refused = _print_outcomes(outcomes, args.directory)
    counts = {k: sum(1 for o in outcomes if o.outcome == k) for k in ("recorded", "stale")}
    print(
        f"{target}: {counts['recorded']} recorded, {counts['stale']} older than on record, "
        f"{refused} refused; {len(fleet.sites)} sites on record"
    )
    return EXIT_FINDINGS if refused else EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    if args.db or args.url:
        return _status_store(args)
    import os
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.core.model import Repository
    from reconciler.core.source import WorkdirTree
    from reconciler.fleet.status import (
        default_fleet_file,
        format_text,
        load_fleet,
        never_reported,
        summarize,
    )

    source = Path(args.source) if args.source else default_fleet_file(os.environ)
    repo_dir = Path(args.repo or ".")
    has_sites = (repo_dir / "sites").is_dir()
    if not source.exists() and (args.source or not has_sites):
        print(
            f"outpost fleet status: {source} does not exist; run `outpost fleet ingest DIR` "
            "first, or pass --repo to list the sites that never reported",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        fleet = load_fleet(source)
        site_ids = list(Repository(WorkdirTree(repo_dir)).site_ids) if has_sites else []
    except OutpostError as exc:
        print(f"outpost fleet status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not has_sites:
        print(
            f"outpost fleet status: no sites/ under {repo_dir}; sites that never reported are "
            "not listed (pass --repo DIR)",
            file=sys.stderr,
        )
    never = never_reported(fleet, site_ids)
    rows = summarize(fleet, now=datetime.now(UTC))
    if args.output == "json":
        document = {"sites": [row.to_json() for row in rows], "neverReported": never}
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    elif args.output == "markdown":
        print("outpost fleet status: -o markdown needs the store (--db or --url)", file=sys.stderr)
        return EXIT_ERROR
    else:
        sys.stdout.write(format_text(rows, never))
    return EXIT_OK


def _ingest_store(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.collector.ingest import Ingestor
    from reconciler.fleet.collector.offline import ingest_directory

    try:
        store, source = _open(args, need_repository=True)
        try:
            ingestor = Ingestor(store, source, clock=lambda: datetime.now(UTC))
            outcomes = ingest_directory(ingestor, Path(args.directory))
            sites, _ = store.count()
        finally:
            store.close()
    except OutpostError as exc:
        print(f"outpost fleet ingest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    refused = _print_outcomes(outcomes, args.directory)
    stored = sum(1 for o in outcomes if o.outcome == "stored")
    print(f"{args.db or 'the store'}: {stored} stored, {refused} refused; {sites} sites on record")
    return EXIT_FINDINGS if refused else EXIT_OK


def _status_store(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.collector.offline import format_markdown, format_text, site_rows

    try:
        records, source = _site_records(args, need_repository=False)
    except OutpostError as exc:
        print(f"outpost fleet status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    view = source.status.view if source is not None else None
    now = datetime.now(UTC)
    if args.output == "json":
        rows = site_rows(records, view, now=now)
        sys.stdout.write(json.dumps({"sites": rows}, indent=2, sort_keys=True) + "\n")
    elif args.output == "markdown":
        sys.stdout.write(format_markdown(records, view, now=now))
    else:
        sys.stdout.write(format_text(records, view, now=now))
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.fleet.collector.server import ServeOptions, serve

    try:
        options = ServeOptions.from_args(args)
        store, source = _open(args, need_repository=True, in_child=True)
    except OutpostError as exc:
        print(f"outpost fleet serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as exc:
        print(
            f"outpost fleet serve: {exc.name} is missing; install 'outpost-gitops[fleet]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return serve(store, source, options)


def run_promote(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.promote import promote

    if args.key is None and not args.dry_run:
        print("outpost fleet promote: --key is needed (or --dry-run)", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.api:
            from reconciler.core.source import read_configured
            from reconciler.fleet.collector.fleetview import FleetSource
            from reconciler.fleet.promote import reports_from_api

            if not args.token_file:
                print("outpost fleet promote: --api needs --token-file", file=sys.stderr)
                return EXIT_ERROR
            source = FleetSource(Path(args.repo), Path(args.trust), rev=args.rev)
            checked = source.refresh(datetime.now(UTC))
            if checked.problem is not None:  # nothing to decide from: the collector not asked
                print(f"outpost fleet promote: {checked.problem}", file=sys.stderr)
                return EXIT_ERROR
            token = read_configured(Path(args.token_file), "the API token", 64 << 10).decode()
            token = token.strip()
            ca = Path(args.ca) if args.ca else None
            reports = reports_from_api(args.api, token, ca=ca)
        else:
            reports, source = _site_records(args, need_repository=True)
        key = None if args.dry_run else Path(args.key)
        results = promote(Path(args.repo), source, reports, now=datetime.now(UTC), key=key)
    except OutpostError as exc:
        print(f"outpost fleet promote: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"outpost fleet promote: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        rows = [{**d.to_json(), "commit": c} for d, c in results]
        sys.stdout.write(json.dumps({"decisions": rows}, indent=2) + "\n")
    else:
        for decision, commit in results:
            done = f" → {commit[:12]}" if commit else ""
            print(
                f"{decision.fleet} {decision.change[:12]}: {decision.action}{done}: {decision.rule}"
            )
        if not results:
            print("no fleet has gated waves and a change in flight")
    halted = any(d.action in ("halt", "halted") for d, _ in results)
    return EXIT_FINDINGS if halted else EXIT_OK


def run_token(args: argparse.Namespace) -> int:
    import secrets
    from datetime import UTC, datetime

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.collector.app import hash_token

    try:
        store, _ = _open(args, need_repository=False)
        try:
            if args.action == "add":
                token = secrets.token_urlsafe(32)
                store.add_token(args.name, hash_token(token), now=datetime.now(UTC))
                print(token)
                print(f"token {args.name!r} added; it is shown only now", file=sys.stderr)
                return EXIT_OK
            if not store.remove_token(args.name):
                print(f"outpost fleet token: no token named {args.name!r}", file=sys.stderr)
                return EXIT_FINDINGS
            print(f"token {args.name!r} removed", file=sys.stderr)
            return EXIT_OK
        finally:
            store.close()
    except OutpostError as exc:
        print(f"outpost fleet token: {exc}", file=sys.stderr)
        return EXIT_ERROR
