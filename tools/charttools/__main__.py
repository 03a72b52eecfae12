"""``python -m tools.charttools build|bin`` — see the package docstring.

Exit codes: 0 done, 1 build failure or tools missing (``bin``), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from tools.testcluster._build import BuildError

from . import _build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.charttools", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="compile helm and kustomize into the cache")
    build.add_argument("--plan", action="store_true", help="print 'cached' or what is missing")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    commands.add_parser("bin", help="print the directory holding the built helm and kustomize")
    args = parser.parse_args(argv)
    try:
        if args.command == "bin":
            print(_build.require_binaries().bin_dir)
        elif args.plan:
            current = _build.plan()
            state = "cached" if current.status == "cached" else "build"
            print(f"{state} {current.directory} {' '.join(current.missing)}".rstrip())
        else:
            _build.build(force=args.force)
    except BuildError as error:
        print(f"charttools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
