"""Files the node's configuration names, read bounded: agent.yaml, the trust root, the
kubeconfig and its token file, the machine id, the git password file, the age key, the
node key.

Each goes through `reconciler.core.source.read_configured` / `read_file`: a FIFO in its
place is refused at once (a plain ``open()`` would wait for a writer forever), a huge file
costs a stat, and the error names the file and says what it is instead. A link is followed
here — these paths are the operator's (Kubernetes mounts a projected token as a link) —
unlike the repository's files and the node's own records, where a link is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from reconciler.core.errors import ConfigError, SecretError
from reconciler.core.secrets import read_key_file
from reconciler.node.apply import kubeconfig
from reconciler.node.config import load_config
from reconciler.node.enroll import read_machine, trust_root_fingerprints
from reconciler.node.identity import load_identity

pytestmark = pytest.mark.usefixtures("no_hang")


def _kubeconfig(path: Path) -> None:
    kubeconfig.read(path)


def _machine_id(path: Path) -> None:
    read_machine(path, path.with_name("absent-serial"))


def _trust_root(path: Path) -> None:
    trust_root_fingerprints(path)


READERS: dict[str, tuple[Callable[[Path], object], type[Exception], str]] = {
    "agent config": (load_config, ConfigError, "cannot read the agent config"),
    "trust root": (_trust_root, ConfigError, "cannot read the trust root"),
    "kubeconfig": (_kubeconfig, ConfigError, "cannot read the kubeconfig"),
    "machine id": (_machine_id, ConfigError, "cannot read the machine id"),
    "age key": (read_key_file, SecretError, "not a regular file"),
    "node key": (load_identity, ConfigError, "cannot read the node key"),
}


@pytest.mark.parametrize("what", sorted(READERS))
def test_a_fifo_in_place_of_a_configured_file_is_an_error_not_a_hang(
    tmp_path: Path, what: str
) -> None:
    reader, error, said = READERS[what]
    path = tmp_path / "configured"
    os.mkfifo(path, 0o600)
    with pytest.raises(error) as raised:
        reader(path)
    assert str(path) in str(raised.value) and said in str(raised.value)


@pytest.mark.parametrize("what", ["agent config", "trust root", "kubeconfig", "machine id"])
def test_a_huge_configured_file_is_refused_before_it_is_read(
    tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, error, said = READERS[what]
    path = tmp_path / "configured"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: a stat says how large, nothing needs reading
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(error, match=r"file is 1,073,741,824 bytes; the limit is") as raised:
        reader(path)
    assert str(path) in str(raised.value) and said in str(raised.value)
    assert reads == []


def test_a_token_file_behind_a_link_is_followed_a_fifo_is_not_read(tmp_path: Path) -> None:
    """A projected service-account token is ``token -> ..data/token``: the link is followed."""
    data = tmp_path / "..data"
    data.mkdir()
    (data / "token").write_text("projected\n")
    (tmp_path / "token").symlink_to(data / "token")
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"tokenFile": str(tmp_path / "token")}}],
                "contexts": [{"name": "s", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "s",
            }
        )
    )
    endpoint = kubeconfig.read(path)
    assert endpoint is not None
    assert endpoint.auth_headers() == {"Authorization": "Bearer projected"}
    (data / "token").unlink()
    os.mkfifo(data / "token")
    with pytest.raises(ConfigError, match=r"cannot read tokenFile: .*a named pipe \(FIFO\)"):
        endpoint.auth_headers()
