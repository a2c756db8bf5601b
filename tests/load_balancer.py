"""A real load balancer for the tests: Debian's nginx, round robin over replicas on
loopback, in a folder of its own (tests that need it skip when it is not installed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import free_port

CONFIG = """
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream deepserve {{
        {servers}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://deepserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_path() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@contextlib.contextmanager
def nginx_in_front(backend_ports: list[int]) -> Iterator[str]:
    """nginx balancing round robin over the backends; yields its base URL."""
    nginx = nginx_path()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="deepserve-nginx-") as folder:
        config = Path(folder) / "nginx.conf"
        config.write_text(
            CONFIG.format(
                # Run as root, nginx's workers would otherwise drop to `nobody`, who cannot
                # use this folder.
                user="user root;" if os.geteuid() == 0 else "",
                folder=folder,
                port=port,
                servers="\n        ".join(f"server 127.0.0.1:{p};" for p in backend_ports),
            )
        )
        process = subprocess.Popen(
            [nginx, "-c", str(config), "-p", folder, "-e", f"{folder}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_listening(base, process, Path(folder) / "error.log")
            yield base
        finally:
            process.terminate()
            process.wait(10)


def _wait_listening(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                error = log.read_text() if log.exists() else ""
                raise RuntimeError(f"nginx did not start: {error}") from None
            time.sleep(0.05)
