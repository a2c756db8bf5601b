"""uvicorn with a graceful shutdown that closes its doors without slamming them on anyone.

uvicorn stops by closing its listening sockets and then every connection between requests.
Both lose requests that clients have already sent: closing a listening socket makes the
kernel reset the connections it had completed but the server had not yet accepted, and a
connection accepted just before the stop may not have delivered its request yet. (64
clients opening a connection per request lost up to 50 requests at each SIGTERM.)

So the first SIGTERM runs, all within the grace period:

1. drain (app.api.draining): new requests get 503 with `Connection: close`, while the
   requests accepted before SIGTERM finish; new connections are still taken meanwhile;
2. close the doors: a socket filter makes the kernel drop new handshakes (SYN without ACK)
   while those under way complete; the server keeps accepting what the kernel completed
   for `SETTLE_S` and until none is queued, then closes its listening sockets;
3. answer every accepted connection: requests being answered finish, and a connection
   that has not sent a request yet gets `IDLE_WAIT_S` to send one (answered 503);
4. uvicorn's own shutdown closes what is left, connections that sent nothing, and exits.

A client whose handshake is dropped sees its connect fail or time out: it was never
accepted, so it knows its request was not sent.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import struct
import sys
import time
from types import FrameType
from typing import Protocol

import uvicorn

from app.api.draining import Drain

logger = logging.getLogger("deepserve")

# Long enough for a handshake under way to complete over a link of up to a second's round
# trip; the connections it brings are answered 503.
SETTLE_S = 1.0
# For a connection accepted without its request: on a LAN the request follows the
# handshake within milliseconds, so this only waits long on clients that send nothing.
IDLE_WAIT_S = 1.0
POLL_S = 0.02

SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>; Python's socket module lacks it
# Classic BPF, run on every segment a TCP socket receives, which it sees from the TCP header
# on (offset 0). Pure SYNs open new handshakes: dropped. A child socket inherits the filter,
# which is harmless: an established connection never receives a pure SYN.
DROP_NEW_HANDSHAKES = (
    (0x30, 0, 0, 13),  # ldb [13]: the TCP flags
    (0x54, 0, 0, 0x12),  # and #0x12: SYN and ACK only
    (0x15, 0, 1, 0x02),  # jeq #0x02: SYN without ACK? (else skip one)
    (0x06, 0, 0, 0),  # ret #0: drop the segment
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep all of it
)


class ListeningSocket(Protocol):
    """What asyncio's and uvloop's servers hand out as their listening sockets."""

    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM drains, then closes the doors, before the server stops."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False  # set in the signal handler: a second SIGTERM must see it
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Before start-up is over there is nothing to drain.
        first_sigterm = sig == signal.SIGTERM and not self._draining
        if first_sigterm and self.started and self._loop is not None:
            self._draining = True
            self._loop.call_soon_threadsafe(self._start_draining)
            return
        super().handle_exit(sig, frame)  # SIGINT, or a second SIGTERM: stop now

    def _start_draining(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        deadline = time.monotonic() + self._grace_s
        logger.info("SIGTERM: draining for up to %.0fs", self._grace_s)
        self._drain.start()
        # Doors open while accepted requests finish, so that late clients hear a 503 rather
        # than nothing; closing them needs some time of its own, kept from the grace period.
        closing_s = SETTLE_S + IDLE_WAIT_S
        try:
            await self._drain.wait(deadline - closing_s - time.monotonic())
            await self._close_doors(deadline)
            await self._answer_accepted(deadline)
        except Exception:  # whatever failed, the server must still stop
            logger.exception("graceful shutdown failed; stopping now")
        finally:
            if self._drain.in_flight:
                logger.warning(
                    "grace period over with %d requests in flight", self._drain.in_flight
                )
            self.should_exit = True

    async def _close_doors(self, deadline: float) -> None:
        """Take no new connections, losing none that the kernel has completed."""
        listeners: list[ListeningSocket] = [
            sock for server in self.servers for sock in server.sockets or ()
        ]
        filtered = [_refuse_new_handshakes(sock) for sock in listeners]
        if not all(filtered):
            logger.warning(
                "cannot have the kernel refuse new connections on this platform: those that "
                "arrive as the listening sockets close may be reset"
            )
        settled = min(deadline, time.monotonic() + SETTLE_S)
        while time.monotonic() < deadline and (
            time.monotonic() < settled
            # Only once the filter holds new ones off can the accept queue run empty.
            or (all(filtered) and any(_accept_queue_length(sock) for sock in listeners))
        ):
            await asyncio.sleep(POLL_S)
        # No await from the last look at the queue to here: nothing is accepted in between.
        for server in self.servers:
            server.close()

    async def _answer_accepted(self, deadline: float) -> None:
        """Wait, within the grace period, until every accepted connection has its answer.

        A connection that is answering a request is waited for; one with no request has
        until `IDLE_WAIT_S` from now to send it. What remains is for uvicorn to close.
        """
        idle_until = min(deadline, time.monotonic() + IDLE_WAIT_S)
        connections = self.server_state.connections
        while (connections or self._drain.in_flight) and time.monotonic() < deadline:
            answering = self._drain.in_flight or any(map(_is_answering, connections))
            if not answering and time.monotonic() >= idle_until:
                break
            await asyncio.sleep(POLL_S)
        idle = sum(not _is_answering(c) for c in connections)
        if idle:
            logger.info("closing %d connections that sent no request", idle)


def _refuse_new_handshakes(sock: ListeningSocket) -> bool:
    """Have the kernel drop new handshakes to `sock`; False where it cannot (not Linux)."""
    if sys.platform != "linux":
        return False
    program = b"".join(struct.pack("HBBI", *op) for op in DROP_NEW_HANDSHAKES)
    code = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: the kernel copies
    # the program in the call, so `code` need not outlive it.
    fprog = struct.pack("HP", len(DROP_NEW_HANDSHAKES), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def _accept_queue_length(sock: ListeningSocket) -> int:
    """Connections the kernel has completed that the server has not accepted yet (Linux)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    # struct tcp_info: on a listening socket tcpi_unacked (offset 24) is the accept queue.
    return int(struct.unpack_from("I", info, 24)[0])


def _is_answering(connection: object) -> bool:
    """Whether a connection has a request whose answer is not complete yet.

    uvicorn's HTTP/1.1 protocols keep the request they are answering as `cycle`.
    """
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and not cycle.response_complete
