"""The gRPC server of the Open Inference Protocol: on its own port, in the same process and
event loop as HTTP, so both share one data plane, batcher and drain."""

from __future__ import annotations

import logging

import grpc

from app.api.services import Services

logger = logging.getLogger(__name__)


class GrpcServer:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        # Imported here: the stubs load only where gRPC serves.
        from app.api.open_inference.grpc_service import service_handler

        settings = self.services.settings
        limit = settings.max_body_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a port in use is an error, as for HTTP
            ]
        )
        server.add_generic_rpc_handlers((service_handler(self.services),))
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC could not listen on {address}: {exc}") from exc
        await server.start()
        self._server = server
        logger.info("gRPC (Open Inference Protocol) on %s", address)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give those running up to `grace_s` to finish, then close."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
