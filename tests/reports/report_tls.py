"""A throwaway CA and a server certificate for 127.0.0.1 (`tools.testcluster._pki`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools.testcluster._pki import loopback_server


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, name: str = "test") -> Tls:
    return Tls(*loopback_server(directory, name))
