"""``python -m tools.promtool build|path``: build promtool into the cache, or print its path.

Exit codes: 0 done, 1 build failure or not built, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from tools.promtool import BuildError, build, require_promtool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.promtool", description=__doc__)
    parser.add_argument("command", choices=("build", "path"))
    args = parser.parse_args(argv)
    try:
        binary = build() if args.command == "build" else require_promtool()
    except BuildError as error:
        print(f"promtool: {error}", file=sys.stderr)
        return 1
    if args.command == "path":
        print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
