"""Fixtures for tests that need a real Kubernetes API server (``-m cluster``).

One control plane per test session (see ``tools/testcluster/__init__.py`` for what it has
and how it is built). Tests share it, so each test works in its own ``namespace``; a test
that changes cluster-wide state (nodes, CRDs, enrolment) takes ``fresh_cluster`` instead.
If the binaries are not built the fixture fails — it never skips: a green run must mean the
cluster tests ran. CI runs ``python -m tools.testcluster build`` before pytest.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# tools/ is repository tooling, not part of the installed package; make it importable when
# pytest is started as `pytest` (which, unlike `python -m pytest`, does not add the cwd).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tools.testcluster import Cluster, MissingBinariesError, require_binaries, running  # noqa: E402

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def _fail_unless_built() -> None:
    """Fail (never skip) with the build command when the binaries are missing."""
    try:
        require_binaries()
    except MissingBinariesError as error:
        missing = str(error)
    else:
        missing = ""
    if missing:  # outside `except`, so the report shows the message once, without a chain
        pytest.fail(missing, pytrace=False)


_SHARED: list[Cluster] = []


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's control plane; stopped at session end, on failure and on interrupt."""
    _fail_unless_built()
    with running(tmp_path_factory.mktemp("testcluster")) as started:
        _SHARED.append(started)
        yield started
        _SHARED.clear()


@pytest.fixture(scope="module", autouse=True)
def _no_policies_left_for_the_next_module() -> Iterator[None]:
    """The admission policies an agent applied to the shared control plane judge every later
    object, whichever test made it: each module's are removed when it ends, so the next
    module starts without them (a module that needs them applies its own)."""
    yield
    if _SHARED:
        from admissionkit import clear_outpost_policies

        clear_outpost_policies(_SHARED[0])


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A control plane of this test's own (about 10 s to start), for tests that change
    cluster-wide state other tests would see: nodes, CRDs, a site's enrolment or inventory."""
    _fail_unless_built()
    with running(tmp_path / "testcluster") as started:
        yield started


@pytest.fixture
def api_client(cluster: Cluster) -> Iterator[ApiClient]:
    """A ``kubernetes.client.ApiClient`` for the admin user, closed after the test."""
    with cluster.api_client() as client:
        yield client


@pytest.fixture
def namespace(api_client: ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
