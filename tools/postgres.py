"""A real PostgreSQL for tests and benchmarks, from Debian's binaries in a temporary folder.

``initdb`` refuses to run as root (a database cluster owned by root is a classic
privilege escalation), and CI runs as root: there the server is initialised and run
as the unprivileged user ``nobody`` through ``runuser``; as any other user it runs as
that user. Nothing is mocked: the collector talks to this server over TCP on 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

USER = "nobody"


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"{name} not found: install Debian's postgresql package "
            "(apt-get install -y postgresql; .ci/run does)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    base: Path
    port: int
    prefix: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql://outpost@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://outpost@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.prefix,
                pg_binary("pg_ctl"),
                "-D",
                str(self.base / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def start(*, durable: bool = False) -> Postgres:
    """initdb + pg_ctl start on a free port. ``durable=False`` turns fsync off (tests only)."""
    base = Path(tempfile.mkdtemp(prefix="outpost-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam(USER)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", USER, "--"]
    data = base / "data"
    subprocess.run(
        [
            *prefix,
            pg_binary("initdb"),
            "-D",
            str(data),
            "-U",
            "outpost",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    done = subprocess.run(
        [
            *prefix,
            pg_binary("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    if done.returncode != 0:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log}")
    return Postgres(base, port, prefix)
