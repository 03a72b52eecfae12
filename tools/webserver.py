"""A real nginx on loopback for the bundle feed's tests and benchmark, started and stopped here.

nginx from Debian (``apt-get install nginx``; ``fcgiwrap`` too for git's smart HTTP), with
its own configuration, pid file, logs and temporary folders in a directory of its own, on a
free port on 127.0.0.1. Nothing of the system's nginx is used or touched.

- ``root``: served as static files (the feed), with ETag and Last-Modified as nginx does
  for any file, so conditional requests get 304s as from a CDN or object store;
- ``/slow/``: the same files at ``slow_rate`` bytes per second (nginx's ``limit_rate``);
- ``/norange/``: the same files, ``Range`` ignored (``max_ranges 0``: always a 200);
- ``tls``: (certificate, key) PEM files make it HTTPS;
- ``/git/``: when ``git_root`` is given, ``git http-backend`` behind fcgiwrap, the usual
  way to serve smart HTTP from nginx (the peer in ``bench/feed.py``);
- the access log has one line per request: method, URI, status, bytes sent (headers
  included), request length and the Range header — what the tests count.

Run as root (as the tests do in CI), the workers run as root too (``user root``): the
files live in a private temporary directory nobody else can read.

Server CPU (`Nginx.cpu_seconds`) is read from a cgroup v1 ``cpuacct`` group made for the
server's processes when the machine allows it: fcgiwrap ignores SIGCHLD, so the git
processes it runs are reaped by the kernel and their time never reaches any parent's
``cutime`` — only a cgroup sees it. Without one, /proc is summed and says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOG_FORMAT = '$request_method $request_uri $status $bytes_sent $request_length "$http_range"'


@dataclass(frozen=True)
class LogLine:
    method: str
    uri: str
    status: int
    bytes_sent: int
    request_length: int
    range: str


def _make_cgroup(name: str) -> Path | None:
    """A cgroup v1 cpuacct group of our own, or None where that is not allowed."""
    base = Path("/sys/fs/cgroup/cpuacct")
    if not (base / "cpuacct.usage").exists():
        return None
    path = base / name
    try:
        path.mkdir()
    except OSError:
        return None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """One nginx (and fcgiwrap when serving git): ``start()``, ``stop()``, or ``with``."""

    def __init__(
        self,
        workdir: Path,
        root: Path,
        *,
        git_root: Path | None = None,
        slow_rate: int = 2048,
        workers: int = 1,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.workdir = workdir
        self.root = root
        self.git_root = git_root
        self.slow_rate = slow_rate
        self.workers = workers
        self.tls = tls
        self.port = 0
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        self.socket = workdir / "fcgiwrap.sock"
        self._nginx: subprocess.Popen[bytes] | None = None
        self._fcgiwrap: subprocess.Popen[bytes] | None = None
        self.cgroup: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / folder).mkdir(exist_ok=True)
        self.cgroup = _make_cgroup(f"outpost-webserver-{os.getpid()}-{id(self)}")
        if self.git_root is not None:
            self._start_fcgiwrap()
        self.port = free_port()
        config = self.workdir / "nginx.conf"
        config.write_text(self._config())
        self._nginx = subprocess.Popen(
            [nginx, "-c", str(config), "-p", str(self.workdir), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=self._join_cgroup,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._nginx.poll() is not None:
                err = self._nginx.stderr.read().decode() if self._nginx.stderr else ""
                raise RuntimeError(f"nginx did not start: {err} {self._errors()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within 15 s: {self._errors()}")

    def _start_fcgiwrap(self) -> None:
        fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
        if not Path(fcgiwrap).exists():
            raise RuntimeError("fcgiwrap is not installed: apt-get install -y fcgiwrap")
        self.socket.unlink(missing_ok=True)
        self._fcgiwrap = subprocess.Popen(
            [fcgiwrap, "-c", "1", "-s", f"unix:{self.socket}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "fcgiwrap.log").open("wb"),
            preexec_fn=self._join_cgroup,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self._fcgiwrap.poll() is not None:
                raise RuntimeError("fcgiwrap did not create its socket")
            time.sleep(0.02)

    def _join_cgroup(self) -> None:
        """In the child before exec: it and everything it starts count in our cgroup."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def cpu_seconds(self) -> tuple[float, str]:
        """CPU seconds the server's processes (and all they started) used so far, and how
        that was measured."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError, ValueError):
                usage = int((self.cgroup / "cpuacct.usage").read_text())
                return usage / 1e9, "cgroup cpuacct"
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                # utime stime cutime cstime: fields 14-17 of proc(5); [0] here is field 3.
                total += sum(int(x) for x in fields[11:15])
        return total / ticks, "/proc (misses children reaped by the kernel)"

    def _config(self) -> str:
        user = "user root;" if os.geteuid() == 0 else ""
        listen = f"listen 127.0.0.1:{self.port};"
        if self.tls is not None:
            cert, key = self.tls
            listen = (
                f"listen 127.0.0.1:{self.port} ssl;\n"
                f"        ssl_certificate {cert};\n        ssl_certificate_key {key};"
            )
        git = ""
        if self.git_root is not None:
            backend = "/usr/lib/git-core/git-http-backend"
            git = f"""
        location ~ ^/git(/.*)$ {{
            fastcgi_pass unix:{self.socket};
            include {self.workdir}/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {self.git_root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $1;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param HOME {self.workdir};
        }}"""
            params = Path("/etc/nginx/fastcgi_params")
            (self.workdir / "fastcgi_params").write_text(
                params.read_text() if params.exists() else ""
            )
        return f"""
{user}
worker_processes {self.workers};
daemon off;
master_process on;
pid {self.workdir}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    log_format feed '{LOG_FORMAT}';
    access_log {self.access_log} feed;
    client_body_temp_path {self.workdir}/body;
    proxy_temp_path {self.workdir}/proxy;
    fastcgi_temp_path {self.workdir}/fastcgi;
    uwsgi_temp_path {self.workdir}/uwsgi;
    scgi_temp_path {self.workdir}/scgi;
    types {{ application/json json; application/octet-stream bundle; }}
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        {listen}
        root {self.root};
        location /slow/ {{
            alias {self.root}/;
            limit_rate {self.slow_rate};
        }}
        location /norange/ {{
            alias {self.root}/;
            max_ranges 0;
        }}{git}
    }}
}}
"""

    def _errors(self) -> str:
        try:
            return self.error_log.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        for process in (self._nginx, self._fcgiwrap):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stderr:
                process.stderr.close()
        self._nginx = self._fcgiwrap = None
        if self.cgroup is not None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # its last processes are still exiting
            self.cgroup = None

    def pids(self) -> list[int]:
        """nginx's master and workers and fcgiwrap: whose CPU time is the server's."""
        found = []
        for process in (self._nginx, self._fcgiwrap):
            if process is None:
                continue
            found.append(process.pid)
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
                found += [int(pid) for pid in children.split()]
        return found

    def requests(self) -> list[LogLine]:
        """Every request so far, from the access log."""
        lines = []
        with contextlib.suppress(FileNotFoundError):
            for raw in self.access_log.read_text().splitlines():
                head, _, rng = raw.partition(' "')
                method, uri, status, sent, length = head.split()
                lines.append(
                    LogLine(method, uri, int(status), int(sent), int(length), rng.rstrip('"'))
                )
        return lines
