"""
nginx as a baseline: find it or install it (Debian package), and write its configuration.

The runner starts it in the foreground among the scenario's processes.

One proxy configuration serves both uses: a WebSocket proxy (upgrade-aware, 64 KiB proxy buffers, the
set-up the performance issue names) and a keep-alive HTTP reverse proxy (the ceiling for the HTTP relaying
scenarios). A second configuration serves static files (the upstream HTTP server of those scenarios). One
worker process each, like the single-threaded gateway; connections are kept alive for any number of
requests, so no variant reconnects during a measurement.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


@dataclass(frozen=True)
class NginxBinary:
    """
    An nginx executable and how the suite came to have it.

    @ivar how: C{"found"} or C{"installed"} (by this run, with apt-get).
    """

    path: str
    version: str
    how: str

    def describe(self) -> str:
        verb = "installed by this run with apt-get" if self.how == "installed" else "found"
        return f"nginx {self.version} ({verb}: {self.path})"


def _find() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def _version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip()
    return text.rsplit("/", 1)[-1] if "/" in text else text


def apt_install(package: str) -> str:
    """C{apt-get install -y PACKAGE} (after C{apt-get update} if the first try fails); an error or C{""}."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    command = [*sudo, "apt-get", "install", "-y", "-q", package]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return f"apt-get install {package} failed: {done.stderr.strip()[-300:]}"
    return ""


def ensure_nginx(install: bool) -> tuple[NginxBinary | None, str]:
    """
    Find nginx, or install it when allowed.

    @return: the binary (or C{None}) and a sentence for the report saying what happened.
    """
    path = _find()
    if path:
        binary = NginxBinary(path, _version(path), "found")
        return binary, binary.describe()
    if not install:
        return None, "nginx not found and --no-install given: nginx baselines skipped"
    if shutil.which("apt-get") is None:
        return None, "nginx not found and apt-get is not available: nginx baselines skipped"
    error = apt_install("nginx")
    path = _find()
    if path is None:
        return (
            None,
            f"nginx could not be installed ({error or 'no binary after install'}): nginx baselines skipped",
        )
    binary = NginxBinary(path, _version(path), "installed")
    return binary, binary.describe()


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# What both configurations share: one worker, no daemon, files under the prefix, no access log.
_PREAMBLE = """\
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 20000;
    use epoll;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""

CONFIG = (
    _PREAMBLE
    + """\
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""
)


def write_config(prefix: Path, upstream: int, port: int) -> Path:
    """Write the configuration into C{prefix}; return its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(CONFIG.format(prefix=prefix, upstream=upstream, port=port))
    return path


STATIC_CONFIG = (
    _PREAMBLE
    + """\
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""
)


def write_static_config(prefix: Path, root: Path, port: int) -> Path:
    """Write a configuration serving the files under C{root} on C{port}; return its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(STATIC_CONFIG.format(prefix=prefix, root=root, port=port))
    return path
