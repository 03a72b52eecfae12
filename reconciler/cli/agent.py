"""``outpost agent run|status``: the node's reconcile tick, and what it last did."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, example

EXIT_TEMPORARY = 75  # EX_TEMPFAIL: the outside world was down; the unit treats it as success
DEFAULT_CONFIG = "/etc/outpost/agent.yaml"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent",
        help=COMMANDS["agent"],
        description="The node agent: one reconcile tick at a time, and what the last one did.",
        epilog=example("outpost agent run --once", "outpost agent status"),
    )
    sub = parser.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    run_parser = sub.add_parser(
        "run",
        help="reconcile this site: fetch, verify, render, gate, apply (one tick with --once)",
        description=(
            "Exit 0 when the site runs its intended revision (or waits for its window), "
            "1 when a candidate was refused or rolled back, 2 on configuration errors, "
            "75 when the source or the cluster did not answer (retried next tick)."
        ),
        epilog=example(
            "outpost agent run --config /etc/outpost/agent.yaml --once --log-format text"
        ),
    )
    run_parser.add_argument("--config", default=DEFAULT_CONFIG, help="the agent config")
    run_parser.add_argument("--once", action="store_true", help="one tick, then exit")
    run_parser.add_argument(
        "--interval", type=float, default=300.0, help="seconds between ticks without --once"
    )
    run_parser.add_argument(
        "--log-format",
        choices=("auto", "text", "json"),
        default="auto",
        help="log lines for a terminal (text) or journald (json); auto: json under systemd",
    )
    run_parser.set_defaults(func=run)
    status_parser = sub.add_parser(
        "status",
        help="what the last tick did",
        description=(
            "Print the last tick's status: what runs, what waits and why, failed and refused "
            "revisions with their reasons, how fresh the source is. Exit 0, 2 when no tick "
            "has run."
        ),
        epilog=example(
            "outpost agent status", "outpost agent status --state-dir /var/lib/outpost -o json"
        ),
    )
    status_parser.add_argument("--config", default=DEFAULT_CONFIG, help="the agent config")
    status_parser.add_argument("--state-dir", help="read this state directory instead")
    status_parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    status_parser.set_defaults(func=status)
    keygen_parser = sub.add_parser(
        "keygen",
        help="make this node's own key, which signs its status reports",
        description=(
            "Write a new ed25519 key (OpenSSH format, mode 0600) to the config's "
            "spec.identityKey or --out, and its public half to <key>.pub; print the public key "
            "line for the node's publicKey in sites/<site>/hardware.yaml. Refuses to replace an "
            "existing key without --force. Exit 0, or 2 when the key cannot be written."
        ),
        epilog=example("outpost agent keygen --config /etc/outpost/agent.yaml"),
    )
    keygen_parser.add_argument("--config", default=DEFAULT_CONFIG, help="the agent config")
    keygen_parser.add_argument("--out", help="write the key here instead of spec.identityKey")
    keygen_parser.add_argument("--comment", help="the key's comment (default outpost-node@SITE)")
    keygen_parser.add_argument("--force", action="store_true", help="replace an existing key")
    keygen_parser.set_defaults(func=keygen)


def _logging(choice: str) -> None:
    import logging
    import os

    from reconciler.node.agent import JsonFormatter, TextFormatter, log_format

    handler = logging.StreamHandler(sys.stderr)
    json_lines = log_format(choice, os.environ) == "json"
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("outpost")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    import time

    from reconciler.core.errors import ConfigError
    from reconciler.node.agent import Agent
    from reconciler.node.config import load_config
    from reconciler.node.pipeline import ManagerCluster, NodePipeline
    from reconciler.node.state import AgentBusy

    _logging(args.log_format)
    try:
        config = load_config(Path(args.config), remember=True)
    except ConfigError as exc:
        print(f"outpost agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    agent = Agent(
        config, pipeline=NodePipeline(config), cluster=lambda: ManagerCluster.connect(config)
    )
    while True:
        try:
            report = agent.tick()
        except AgentBusy as exc:
            print(f"outpost agent: {exc}", file=sys.stderr)
            return EXIT_TEMPORARY if args.once else EXIT_ERROR
        except ConfigError as exc:
            print(f"outpost agent: {exc}", file=sys.stderr)
            return EXIT_ERROR
        code = exit_code(report.outcome, temporary=report.temporary)
        if args.once:
            return code
        time.sleep(args.interval)


def exit_code(outcome: str, *, temporary: bool) -> int:
    if outcome in ("refused", "failed", "failed-before", "rolled-back"):
        return EXIT_FINDINGS
    if temporary or outcome == "interrupted":
        return EXIT_TEMPORARY
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    from reconciler.core.errors import ConfigError
    from reconciler.node.config import load_config
    from reconciler.node.state import StateStore, StatusUnreadable

    if args.state_dir:
        state_dir = Path(args.state_dir)
    else:
        try:
            state_dir = load_config(Path(args.config)).state_dir
        except ConfigError as exc:
            print(f"outpost agent status: {exc}", file=sys.stderr)
            return EXIT_ERROR
    try:
        report = StateStore(state_dir).read_status()
    except StatusUnreadable as exc:
        print(f"outpost agent status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if report is None:
        print(
            f"outpost agent status: no status in {state_dir} yet (no tick has run)", file=sys.stderr
        )
        return EXIT_ERROR
    if args.output == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
        return EXIT_OK
    try:
        text = format_status(report)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        print(
            f"outpost agent status: {state_dir / 'status.json'} has a field of the wrong shape "
            f"({type(exc).__name__}: {exc}); the next tick rewrites it",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(text)
    return EXIT_OK


def format_status(report: dict[str, Any]) -> str:
    applied = report.get("applied") or {}
    leftover = report.get("leftover")
    nothing = "nothing yet"
    if leftover is not None:
        left = leftover.get("objects") or []
        nothing += (
            f" (the failed install was removed again: {leftover.get('removed', 0)} objects "
            "deleted" + (f"; {len(left)} not removed, see below)" if left else ")")
        )
    lines = [
        f"site:       {report.get('site')}",
        f"outcome:    {report.get('outcome')} at {report.get('time')}",
        f"applied:    {(applied.get('revision') or '')[:12] or nothing}"
        + (f" since {applied.get('at')}" if applied.get("at") else ""),
        f"health:     {report.get('health')}",
        f"success:    last {report.get('lastSuccess') or 'never'}",
        f"source:     last answered {report.get('sourceLastAnswered') or 'never'}",
    ]
    if leftover is not None:
        lines.extend(
            f"left:       {key} (not removed: not found, not this site's, or "
            "outpost.io/prune: disabled)"
            for key in leftover.get("objects") or []
        )
        lines.extend(
            f"kept:       {key} ({leftover.get('keptReason') or 'kept on purpose'})"
            for key in leftover.get("kept") or []
        )
    pending = report.get("pending")
    if pending:
        until = f" (until {pending['until']})" if pending.get("until") else ""
        lines.append(
            f"pending:    {str(pending.get('revision'))[:12]}: {pending.get('reason')}{until}"
        )
    lines.extend(f"approval:   {item}" for item in report.get("approvalsPending") or [])
    beat = report.get("heartbeat")
    if isinstance(beat, dict):
        state = "updates may be withheld" if beat.get("updatesMayBeWithheld") else "fresh"
        lines.append(
            f"heartbeat:  {state}; newest signed {beat.get('signedAt') or 'never'} "
            f"({int(beat.get('silenceSeconds') or 0) // 60} min ago)"
        )
    drift = report.get("drift") or {}
    if drift.get("objects"):
        lines.append(
            f"drift:      {drift['objects']} object(s), {drift.get('corrected', 0)} corrected"
        )
    if report.get("lastError"):
        at = f" (at {report['lastErrorAt']})" if report.get("lastErrorAt") else ""
        lines.append(f"last error: {report['lastError']}{at}")
    for entry in report.get("failed") or []:
        reason = entry.get("reason") or "failed its health check"
        lines.append(f"failed:     {str(entry.get('revision'))[:12]}: {reason} (not retried)")
    for entry in report.get("refused") or []:
        lines.append(
            f"refused:    {str(entry.get('revision'))[:12]}: {entry.get('reason')} (never retried)"
        )
    lines.extend(f"warning:    {w}" for w in report.get("warnings") or [])
    return "\n".join(lines)


def keygen(args: argparse.Namespace) -> int:
    from reconciler.core.errors import ConfigError
    from reconciler.node.config import load_config
    from reconciler.node.identity import generate

    try:
        site = None
        if args.out:
            path = Path(args.out)
        else:
            config = load_config(Path(args.config))
            if config.identity_key is None:
                raise ConfigError(
                    f"{config.path}: spec.identityKey is not set; set it (e.g. "
                    "/etc/outpost/node.key) or pass --out"
                )
            path, site = config.identity_key, config.site
        comment = args.comment or (f"outpost-node@{site}" if site else "outpost-node")
        identity = generate(path, comment=comment, force=args.force)
    except ConfigError as exc:
        print(f"outpost agent keygen: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(identity.public_key.line())
    print(
        f"wrote {path} (0600) and {path}.pub; add the line above as this node's publicKey in "
        "sites/<site>/hardware.yaml and commit it, signed",
        file=sys.stderr,
    )
    return EXIT_OK
