"""``outpost policy test [PATH] [--cluster]`` and ``outpost policy export SITE``.

``test`` runs every policy's own cases in Outpost's engine and, with ``--cluster``,
in the API server of a reachable cluster too, reporting where the two disagree.
``export`` prints the admission objects the node applies for a site.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy",
        help=COMMANDS["policy"],
        description="Work with the CEL policies in policies/.",
        epilog=example("outpost policy test --repo . -v"),
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    test = commands.add_parser(
        "test",
        help="run the pass/fail test cases every policy carries",
        description=(
            "Run the test cases of every policy of the repository at --repo (its policies/ "
            "folder), or of PATH: a folder of policy files or one policy file. "
            "Exit 0 when every case passes, 1 when a case fails, an expression does not "
            "compile or a policy has no pass or no fail case, 2 on I/O errors or no policies."
        ),
        epilog=example("outpost policy test --repo .", "outpost policy test policies/pci.yaml"),
    )
    test.add_argument(
        "path", nargs="?", default=None, help="a folder of policy files or one policy file"
    )
    test.add_argument(
        "--repo", default=".", metavar="DIR", help="the configuration repository (default: .)"
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.add_argument(
        "--cluster",
        action="store_true",
        help=(
            "also run every case of every policy enforced at sites through the API server of "
            "the cluster in $KUBECONFIG (server-side dry run) and report disagreements; it "
            "creates and then deletes test policies there, so use a test cluster"
        ),
    )
    test.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig for --cluster (default: $KUBECONFIG)"
    )
    test.set_defaults(func=run_test)
    export = commands.add_parser(
        "export",
        help="print a site's policies as ValidatingAdmissionPolicy objects",
        description=(
            "Print the ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding and parameter "
            "ConfigMap objects the node applies for SITE, so its API server refuses what CI "
            "refuses. Policies kept to CI and the node are listed with the reason. Exit 0 when "
            "exported, 1 when a policy that applies to the site cannot be exported, 2 on "
            "usage or I/O errors."
        ),
        epilog=example("outpost policy export de-muc-0007 --rev origin/main > policies.yaml"),
    )
    export.add_argument("site", metavar="SITE", help="site id (the folder name under sites/)")
    export.add_argument("--rev", metavar="REV", help="git revision (default: working tree)")
    add_repo_argument(export)
    export.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    export.set_defaults(func=run_export)


def _policy_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "policies" if (path / "policies").is_dir() else path
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".yaml", ".yml") and p.stem != "signers" and p.is_file()
    )


def run_test(args: argparse.Namespace) -> int:
    from datetime import date

    from reconciler.ci.policy_tests import run_tests, untested
    from reconciler.core.errors import OutpostError
    from reconciler.core.findings import ERROR
    from reconciler.core.loader import Document, load_document
    from reconciler.core.policy import load_policies

    root = Path(args.path if args.path is not None else args.repo)
    if not root.exists():
        print(f"outpost policy test: {root} does not exist", file=sys.stderr)
        return EXIT_ERROR
    documents: list[Document] = []
    failed = 0
    try:
        files = _policy_files(root)
    except OSError as exc:
        print(f"outpost policy test: cannot read {root}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    base = root if root.is_dir() else root.parent
    for file in files:
        shown = file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)
        try:
            documents.append(load_document(file.read_bytes(), shown))
        except OutpostError as exc:
            print(f"FAIL {exc}")
            failed += 1
        except OSError as exc:
            print(f"outpost policy test: cannot read {file}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    try:
        # The clock is read here, at the edge: it decides only which exemptions are stale.
        policies = load_policies(documents, today=date.today())
    except OutpostError as exc:
        if failed:
            return EXIT_FINDINGS
        print(f"outpost policy test: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for finding in policies.findings:
        level = "FAIL" if finding.severity == ERROR else "warn"
        print(f"{level} {finding.location}: {finding.rule}: {finding.message}")
        failed += finding.severity == ERROR
    for policy in untested(policies):
        print(
            f"FAIL {policy.doc.mark('spec')}: {policy.name}: needs at least one pass and one "
            "fail case under spec.tests, so a change to it is tested like code"
        )
        failed += 1
    results = run_tests(policies)
    passed = 0
    for result in results:
        if result.ok:
            passed += 1
            if args.verbose:
                print(result)
        else:
            failed += 1
            print(result)
    print(f"policy tests: {passed} passed, {failed} failed ({len(policies.policies)} policies)")
    if args.cluster:
        code = _run_cluster(args, policies)
        if code == EXIT_ERROR:
            return EXIT_ERROR
        failed += code != EXIT_OK
    return EXIT_FINDINGS if failed else EXIT_OK


def _run_cluster(args: argparse.Namespace, policies: Any) -> int:
    """Both engines on every case; print each disagreement. Exit-code style result."""
    import os
    import time

    from reconciler.ci.policy_cluster import compare_on_cluster
    from reconciler.core.errors import OutpostError
    from reconciler.node.apply.cluster import Cluster

    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print(
            "outpost policy test: --cluster needs a kubeconfig (--kubeconfig or $KUBECONFIG)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        with Cluster.from_kubeconfig(Path(kubeconfig)) as cluster:
            report = compare_on_cluster(policies, cluster, sleep=time.sleep)
    except OutpostError as exc:
        print(f"outpost policy test --cluster: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in report.lines(verbose=args.verbose):
        print(line)
    print(report.summary())
    return EXIT_FINDINGS if report.failed else EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    from datetime import date

    from reconciler.cli.render import open_tree
    from reconciler.core.errors import OutpostError, PolicyError
    from reconciler.core.model import Repository
    from reconciler.core.policy import export_rendered_site
    from reconciler.core.policy._export import to_json, to_yaml
    from reconciler.core.render import render_site

    try:
        repo = Repository(open_tree(args.repo, args.rev))
        rendered = render_site(repo, args.site)
        # The clock is read here, at the edge: it decides which exemptions still hold.
        export = export_rendered_site(repo, args.site, rendered, today=date.today())
    except PolicyError as exc:
        print(f"outpost policy export: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost policy export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(to_json(export) if args.output == "json" else to_yaml(export))
    return EXIT_OK
