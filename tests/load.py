"""A small HTTP/1.1 load generator on asyncio streams, for tests and the soak run.

Each worker keeps one keep-alive connection and sends the same prepared request over it,
either as fast as answers come back (closed loop) or paced so that all workers together
offer `rate` requests per second. Every request's outcome is recorded, including the ones
that got no answer, so callers can account for each request sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic() when the request was written
    latency_s: float
    status: int | None  # None: no answer (connection refused, reset or closed)
    error: str | None = None
    retry_after: str | None = None
    body: bytes = b""


@dataclass
class Results:
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0
    started: float = 0.0  # time.monotonic() when the run began

    def statuses(self) -> Counter[int | None]:
        return Counter(o.status for o in self.outcomes)

    def rate(self, status: int | None = None) -> float:
        """Requests per second over the run, of one status or of all."""
        count = sum(1 for o in self.outcomes if status is None or o.status == status)
        return count / self.duration_s if self.duration_s else 0.0

    def rate_after(self, offset_s: float, status: int | None = None) -> float:
        """Requests per second sent from `offset_s` into the run to its end, of one status
        or of all."""
        since = self.started + offset_s
        count = sum(
            1
            for o in self.outcomes
            if o.started >= since and (status is None or o.status == status)
        )
        window = self.duration_s - offset_s
        return count / window if window > 0 else 0.0

    def latency_quantile(self, q: float, status: int | None = None) -> float:
        latencies = sorted(
            o.latency_s for o in self.outcomes if status is None or o.status == status
        )
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]


def post_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    rate: float | None = None,
    stop_after_status: int | None = None,
    keep_bodies: bool = False,
) -> Results:
    """Send `request` from `concurrency` workers for `duration_s` seconds.

    `rate` paces the workers to offer that many requests per second in total (a worker that
    falls behind sends its next request at once, it does not burst to catch up). A worker
    whose answer has status `stop_after_status` stops, as a load balancer stops sending to a
    backend that says it is shutting down.
    """
    started = time.monotonic()
    results = Results(started=started)
    deadline = started + duration_s
    interval = concurrency / rate if rate else 0.0

    async def worker(index: int) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        next_send = started + (index * interval / concurrency)
        while True:
            now = time.monotonic()
            if interval and next_send > now:
                await asyncio.sleep(next_send - now)
            if time.monotonic() >= deadline:
                break
            next_send = max(next_send + interval, time.monotonic()) if interval else 0.0
            sent = time.monotonic()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                reader, writer = connection
                writer.write(request)
                status, headers, body = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                results.outcomes.append(
                    Outcome(sent, time.monotonic() - sent, None, f"{type(exc).__name__}: {exc}")
                )
                connection = await _close(connection)
                if isinstance(exc, ConnectionRefusedError):
                    if stop_after_status is not None:
                        break  # the backend is gone
                    await asyncio.sleep(0.01)  # not a busy loop against a closed port
                continue
            results.outcomes.append(
                Outcome(
                    sent,
                    time.monotonic() - sent,
                    status,
                    retry_after=headers.get("retry-after"),
                    body=body if keep_bodies else b"",
                )
            )
            if headers.get("connection", "").lower() == "close":
                connection = await _close(connection)
            if status == stop_after_status:
                break
        await _close(connection)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    results.duration_s = min(time.monotonic(), deadline) - started
    return results


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _close(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
) -> None:
    if connection is not None:
        connection[1].close()
        with contextlib.suppress(OSError):
            await connection[1].wait_closed()
    return None


def rss_mb(pid: int) -> float:
    """Resident memory of one process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
