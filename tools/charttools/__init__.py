"""``helm`` and ``kustomize`` for ``outpost app vendor`` and its tests, built from source.

Commands (run from the repository root)::

    python -m tools.charttools build         # compile into the cache; seconds when cached
    python -m tools.charttools build --plan  # say 'cached' or what is missing, build nothing
    python -m tools.charttools bin           # print the directory holding helm and kustomize
    export PATH="$(python -m tools.charttools bin):$PATH"

The tests take the ``chart_tools`` fixture (``tests/vendor/conftest.py``), which FAILS with a
message naming ``python -m tools.charttools build`` when the binaries are missing; it never
builds silently. Pins: ``tools/charttools/{helm,kustomize}/go.mod``.
"""

from ._build import (
    BINARIES,
    BUILD_COMMAND,
    MissingToolsError,
    Plan,
    build,
    pinned_versions,
    plan,
    require_binaries,
)

__all__ = [
    "BINARIES",
    "BUILD_COMMAND",
    "MissingToolsError",
    "Plan",
    "build",
    "pinned_versions",
    "plan",
    "require_binaries",
]
