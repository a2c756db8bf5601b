"""A real Redis for the tests and the benchmarks: Debian's `redis-server` on a free loopback
port, in its own folder, with the append-only file on (as deployments run it). Tests that
need it skip with the reason when the package is not installed (`make test` installs it)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.server import free_port


class RedisServer:
    def __init__(self, folder: Path, appendfsync: str = "everysec") -> None:
        self.folder = folder
        self.appendfsync = appendfsync  # "always": nothing acknowledged is lost to a kill
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.folder),
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "save": "",
            "logfile": str(self.folder / "redis.log"),
        }
        self.process = subprocess.Popen(
            ["redis-server", *(x for name, value in options.items() for x in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()


def redis_installed() -> bool:
    return shutil.which("redis-server") is not None


MISSING = "redis-server is not installed (apt-get install redis-server)"


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started Redis in a temporary folder; RuntimeError when there is none to start."""
    if not redis_installed():
        raise RuntimeError(MISSING)
    with tempfile.TemporaryDirectory(prefix="deepserve-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()
