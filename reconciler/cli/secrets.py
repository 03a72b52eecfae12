"""``outpost secrets``: per-site age keys, encrypted secrets, and their checks.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "json", "github", "sarif")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "secrets",
        help=COMMANDS["secrets"],
        description=(
            "Secrets live in sites/<site>/secrets/<name>.sops.yaml, encrypted to the site's age "
            "recipient plus its fleets' break-glass recipients."
        ),
        epilog=example(
            "outpost secrets init-site de-muc-0007 --key-out ~/keys/de-muc-0007.agekey",
            "outpost secrets encrypt de-muc-0007 --from /tmp/pos-db.yaml",
        ),
    )
    sub = parser.add_subparsers(dest="secrets_command", metavar="SUBCOMMAND", required=True)

    repo_arg = add_repo_argument

    init = sub.add_parser(
        "init-site",
        help="create a site's age key pair, record its recipient, regenerate .sops.yaml",
        description=(
            "Write the site's private key to --key-out (mode 0600, outside the repository; it "
            "is what enrollment installs on the node), set spec.sops.recipient in its "
            "site.yaml and regenerate .sops.yaml."
        ),
        epilog=example("outpost secrets init-site de-muc-0007 --key-out ~/keys/de-muc-0007.agekey"),
    )
    init.add_argument("site_id", metavar="SITE")
    init.add_argument("--key-out", required=True, type=Path, help="where to write the private key")
    repo_arg(init)
    init.set_defaults(func=run_init)

    rotate = sub.add_parser(
        "rotate-site",
        help="new key pair for a site; re-encrypt its secrets; drop the old recipient",
        description=(
            "Re-encrypt every secret of SITE to a new site key (plus break-glass) with a fresh "
            "data key. --old-key is any key that can decrypt them: the old site key or a "
            "break-glass key (default: $OUTPOST_AGE_KEY_FILE)."
        ),
        epilog=example(
            "outpost secrets rotate-site de-muc-0007 --key-out ~/keys/de-muc-0007.new.agekey "
            "--old-key ~/keys/break-glass.agekey"
        ),
    )
    rotate.add_argument("site_id", metavar="SITE")
    rotate.add_argument("--key-out", required=True, type=Path, help="where to write the new key")
    rotate.add_argument("--old-key", type=Path, help="a key that decrypts the site's secrets")
    repo_arg(rotate)
    rotate.set_defaults(func=run_rotate)

    sync = sub.add_parser(
        "sync",
        help="re-encrypt secrets whose recipients no longer match site + break-glass",
        description=(
            "After a fleet's breakGlass.recipients change: re-encrypt the sites' secrets to "
            "the current recipients and regenerate .sops.yaml."
        ),
        epilog=example(
            "outpost secrets sync de-muc-0007 de-ber-0001 --key ~/keys/break-glass.agekey"
        ),
    )
    sync.add_argument("site_ids", metavar="SITE", nargs="+")
    sync.add_argument(
        "--key", type=Path, help="a key that decrypts them (default: $OUTPOST_AGE_KEY_FILE)"
    )
    repo_arg(sync)
    sync.set_defaults(func=run_sync)

    encrypt = sub.add_parser(
        "encrypt",
        help="encrypt a plaintext Secret manifest into sites/SITE/secrets/",
        description=(
            "Read one plaintext v1 Secret (stdin, or --from a file outside the repository) and "
            "write sites/SITE/secrets/<name>.sops.yaml. The plaintext never touches the tree."
        ),
        epilog=example(
            "outpost secrets encrypt de-muc-0007 --from /run/user/1000/pos-db.yaml",
            "outpost secrets encrypt de-muc-0007 < <(kubectl create secret generic pos-db "
            "--from-literal=password=… --dry-run=client -o yaml)",
        ),
    )
    encrypt.add_argument("site_id", metavar="SITE")
    encrypt.add_argument(
        "--from", dest="source", default="-", help="plaintext file (default: stdin)"
    )
    encrypt.add_argument("--name", help="file name (default: the Secret's metadata.name)")
    encrypt.add_argument("--force", action="store_true", help="replace an existing file")
    repo_arg(encrypt)
    encrypt.set_defaults(func=run_encrypt)

    show = sub.add_parser(
        "show",
        help="decrypt a site's secrets with a key and print them redacted",
        description="Each value is shown as <redacted sha256:…>: a change shows, the value not.",
        epilog=example("outpost secrets show de-muc-0007 --key ~/keys/de-muc-0007.agekey"),
    )
    show.add_argument("site_id", metavar="SITE")
    show.add_argument("--key", type=Path, help="age key file (default: $OUTPOST_AGE_KEY_FILE)")
    repo_arg(show)
    show.set_defaults(func=run_show)

    config = sub.add_parser(
        "sops-config",
        help="regenerate .sops.yaml from the tree",
        description=(
            "Write .sops.yaml with one creation rule per site (its age recipient plus its "
            "fleets' break-glass recipients), so plain `sops` encrypts new files right."
        ),
        epilog=example("outpost secrets sops-config --repo ."),
    )
    repo_arg(config)
    config.set_defaults(func=run_sops_config)

    keygen = sub.add_parser(
        "keygen",
        help="create an age key pair (e.g. a break-glass key) and print its recipient",
        description=(
            "Write a new age identity to --key-out (mode 0600) and print its public "
            "recipient, to put in a fleet's spec.breakGlass.recipients."
        ),
        epilog=example("outpost secrets keygen --key-out ~/keys/break-glass.agekey"),
    )
    keygen.add_argument("--key-out", required=True, type=Path, help="where to write the key")
    keygen.add_argument("--comment", default="", help="a comment line for the key file")
    repo_arg(keygen)
    keygen.set_defaults(func=run_keygen)

    check = sub.add_parser(
        "check",
        help="the secrets part of `outpost validate` (MACs too, given a key)",
        description=(
            "Check every encrypted file: SOPS structure, recipients (site + break-glass), no "
            "plaintext values; with a key, each file's MAC."
        ),
        epilog=example("outpost secrets check --repo . --key ~/keys/break-glass.agekey"),
    )
    add_repo_argument(check, positional_alias=True)
    check.add_argument(
        "--key", type=Path, help="age key for MAC checks (default: $OUTPOST_AGE_KEY_FILE)"
    )
    check.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    check.set_defaults(func=run_check)


def _fail(command: str, exc: Exception) -> int:
    from reconciler.core.errors import SecretError, ValidationError

    print(f"outpost secrets {command}: {exc}", file=sys.stderr)
    return EXIT_FINDINGS if isinstance(exc, SecretError | ValidationError) else EXIT_ERROR


def _env_key(given: Path | None) -> Path | None:
    if given is not None:
        return given
    from reconciler.core.secrets import key_file_from_env

    return key_file_from_env()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def run_init(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import init_site

    try:
        result = init_site(Path(args.repo), args.site_id, args.key_out, created=_now())
    except OutpostError as exc:
        return _fail("init-site", exc)
    print(f"site {result.site_id}: recipient {result.recipient}")
    print(f"private key written to {result.key_file} (mode 0600); install it on the site's node")
    for path in result.written:
        print(f"updated {path}")
    return EXIT_OK


def run_rotate(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import rotate_site

    try:
        result = rotate_site(
            Path(args.repo),
            args.site_id,
            args.key_out,
            old_key=_env_key(args.old_key),
            created=_now(),
        )
    except OutpostError as exc:
        return _fail("rotate-site", exc)
    print(f"site {result.site_id}: recipient {result.old_recipient} -> {result.recipient}")
    print(f"new private key written to {result.key_file} (mode 0600); install it on the node")
    for path in result.written:
        print(f"updated {path}")
    print(
        "note: git history still holds the old ciphertexts, readable with the old key; "
        "if the old key was lost or stolen, change the secret values too"
    )
    return EXIT_OK


def run_sync(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import sync_site

    key = _env_key(args.key)
    if key is None:
        print("outpost secrets sync: give --key or set OUTPOST_AGE_KEY_FILE", file=sys.stderr)
        return EXIT_ERROR
    try:
        for site_id in args.site_ids:
            for path in sync_site(Path(args.repo), site_id, key):
                print(f"updated {path}")
    except OutpostError as exc:
        return _fail("sync", exc)
    return EXIT_OK


def run_encrypt(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import encrypt_secret

    root = Path(args.repo).resolve()
    if args.source == "-":
        plaintext = sys.stdin.buffer.read()
    else:
        source = Path(args.source).resolve()
        if source == root or root in source.parents:
            print(
                "outpost secrets encrypt: refusing to read plaintext from inside the repository "
                f"({source}); a plaintext file in the tree is one `git add` from a leak. "
                "Move it out (or pipe it on stdin)",
                file=sys.stderr,
            )
            return EXIT_FINDINGS
        try:
            plaintext = source.read_bytes()
        except OSError as exc:
            print(f"outpost secrets encrypt: {source}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    try:
        path = encrypt_secret(root, args.site_id, plaintext, name=args.name, force=args.force)
    except OutpostError as exc:
        return _fail("encrypt", exc)
    finally:
        del plaintext
    print(f"wrote {path}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    import yaml

    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import decrypt_site_secrets, redact, redaction_key
    from reconciler.core.source import WorkdirTree

    key = _env_key(args.key)
    if key is None:
        print("outpost secrets show: give --key or set OUTPOST_AGE_KEY_FILE", file=sys.stderr)
        return EXIT_ERROR
    try:
        secrets = decrypt_site_secrets(WorkdirTree(Path(args.repo)), args.site_id, key)
        hmac_key = redaction_key(key, args.site_id)
        redacted = [redact(s, hmac_key) for s in secrets]
    except OutpostError as exc:
        return _fail("show", exc)
    finally:
        secrets = []
    sys.stdout.write(yaml.safe_dump_all(redacted, sort_keys=False) if redacted else "")
    return EXIT_OK


def run_sops_config(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import SOPS_CONFIG, write_sops_config

    try:
        changed = write_sops_config(Path(args.repo))
    except OutpostError as exc:
        return _fail("sops-config", exc)
    print(f"{'updated' if changed else 'unchanged'} {SOPS_CONFIG}")
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import keygen

    try:
        recipient = keygen(args.key_out, Path(args.repo), created=_now(), comment=args.comment)
    except OutpostError as exc:
        return _fail("keygen", exc)
    print(recipient)
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from reconciler import __version__
    from reconciler.core.errors import OutpostError
    from reconciler.core.findings import has_errors, render_findings, report_order
    from reconciler.core.model import Repository
    from reconciler.core.secrets import check_secrets
    from reconciler.core.source import WorkdirTree

    try:
        repo = Repository(WorkdirTree(Path(args.repo)))
        findings = check_secrets(repo, list(repo.site_ids), key_file=_env_key(args.key))
    except OutpostError as exc:
        print(f"outpost secrets check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    findings = sorted(set(findings), key=report_order)
    sys.stdout.write(render_findings(findings, args.output, version=__version__))
    return EXIT_FINDINGS if has_errors(findings) else EXIT_OK
