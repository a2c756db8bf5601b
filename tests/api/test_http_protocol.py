"""One socket write per loop turn (app.api.http_protocol), on real sockets and a real server."""

from __future__ import annotations

import asyncio
import json
import socket
from importlib import resources
from pathlib import Path

import pytest

from app.api.http_protocol import FLUSH_BYTES, CoalescingTransport
from tests import model_factory
from tests.conftest import transaction
from tests.server import running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the transport is asyncio's


async def _connected() -> tuple[CoalescingTransport, socket.socket]:
    """A coalescing transport over one end of a socket pair, and the other end to read."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    return CoalescingTransport(transport), theirs  # type: ignore[arg-type]


def _read_available(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_writes_of_one_turn_leave_together_at_its_end() -> None:
    transport, peer = await _connected()
    transport.write(b"head ")
    transport.write(b"body")
    assert transport.get_write_buffer_size() == 9
    await asyncio.sleep(0.05)  # the same turn cannot see it; give the kernel a moment
    assert _read_available(peer) == b"head body"
    transport.close()
    peer.close()


async def test_nothing_reaches_the_socket_before_the_turn_ends() -> None:
    transport, peer = await _connected()
    transport.write(b"head ")
    transport.write(b"body")
    assert _read_available(peer) == b""
    transport.close()
    peer.close()


async def test_a_large_write_goes_out_at_once() -> None:
    transport, peer = await _connected()
    transport.write(b"x" * (FLUSH_BYTES + 1))
    assert transport.get_write_buffer_size() <= FLUSH_BYTES + 1
    received = b""
    for _ in range(50):  # without yielding to the loop: only an immediate write can arrive
        received += _read_available(peer)
        if received:
            break
    assert received.startswith(b"x")
    transport.close()
    peer.close()


async def test_close_sends_what_is_pending_first() -> None:
    transport, peer = await _connected()
    transport.write(b"last words")
    transport.close()
    loop = asyncio.get_running_loop()
    received = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(peer, 1024), 5):
        received += chunk
    assert received == b"last words"  # then end of stream
    peer.close()


def _responses(raw: bytes, count: int) -> list[tuple[int, bytes]]:
    """(status, body) of `count` HTTP/1.1 responses with content-length, in order."""
    parsed = []
    for _ in range(count):
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        parsed.append((int(lines[0].split()[1]), rest[:length]))
        raw = rest[length:]
    assert raw == b""
    return parsed


def test_pipelined_requests_get_their_answers_in_order(tmp_path: Path) -> None:
    model_factory.fraud_model(tmp_path)
    bodies = [json.dumps(transaction(transaction_id=i, amount=10.0 * i)).encode() for i in (1, 2)]
    requests = [
        b"POST /v1/models/tiny-fraud/score HTTP/1.1\r\nhost: x\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        for body in bodies
    ]
    # A file streamed in several chunks, and the connection closed after it.
    stylesheet = "/docs-assets/swagger-ui.css"
    requests.append(
        b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % stylesheet.encode()
    )
    with running_server(model_repository=str(tmp_path)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"".join(requests))
            raw = b""
            while chunk := sock.recv(1 << 16):  # the server closes after the third
                raw += chunk
    (s1, b1), (s2, b2), (s3, b3) = _responses(raw, 3)
    assert (s1, s2, s3) == (200, 200, 200)
    assert json.loads(b1)["results"][0]["transaction_id"] == 1
    assert json.loads(b2)["results"][0]["transaction_id"] == 2
    assert b3 == (resources.files("fastapi_offline") / "static" / "swagger-ui.css").read_bytes()
    assert len(b3) > FLUSH_BYTES
