"""A raw HTTP/2 client for probes grpcio and http.client cannot make.

Any method (``POSTS``, ``get``), any pseudo-header values, headers-only requests, a body split into
chosen DATA frames, from a chosen source address, in cleartext (h2c prior knowledge) or over TLS with
ALPN h2. Built on the ``h2`` state machine (PyPI ``h2``); one request per connection.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class H2Response:
    status: int | None = None  # None: the connection ended without a response
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: int | None = None  # RST_STREAM error code, if the stream was reset

    @property
    def grpc_status(self) -> int | None:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return int(value) if value is not None else None


class H2Session:
    """One HTTP/2 connection for many requests, one stream each; reconnects when the peer closed it."""

    def __init__(
        self,
        port: int,
        *,
        source_ip: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        authority: str = "localhost",
        timeout: float = 10,
    ) -> None:
        self.port, self.source_ip, self.tls, self.authority, self.timeout = port, source_ip, tls, authority, timeout
        self._sock: socket.socket | None = None
        self._connection: h2.connection.H2Connection | None = None

    def _connect(self) -> tuple[socket.socket, h2.connection.H2Connection]:
        raw = socket.create_connection(
            ("127.0.0.1", self.port), timeout=self.timeout, source_address=(self.source_ip, 0)
        )
        sock: socket.socket = raw
        if self.tls is not None:
            self.tls.set_alpn_protocols(["h2"])
            sock = self.tls.wrap_socket(raw, server_hostname="localhost")
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        return sock, connection

    def request(
        self, method: str, path: str, headers: Sequence[tuple[str, str]] = (), frames: Sequence[bytes] = ()
    ) -> H2Response:
        """Send one request; ``frames`` are its DATA frames (none: END_STREAM on HEADERS)."""
        for attempt in range(2):
            if self._sock is None or self._connection is None:
                self._sock, self._connection = self._connect()
            response, alive = self._exchange(self._sock, self._connection, method, path, headers, frames)
            if not alive:
                self.close()
            if response.status is not None or response.reset is not None or attempt:
                return response
        return response

    def _exchange(
        self,
        sock: socket.socket,
        connection: h2.connection.H2Connection,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        frames: Sequence[bytes],
    ) -> tuple[H2Response, bool]:
        stream = connection.get_next_available_stream_id()
        scheme = "https" if self.tls else "http"
        request_headers = [
            (":method", method),
            (":path", path),
            (":scheme", scheme),
            (":authority", self.authority),
            *headers,
        ]
        response = H2Response()
        done = False

        def receive() -> bool:
            """Handle one read of events; False when the connection is gone."""
            nonlocal done
            data = sock.recv(65536)
            if not data:
                return False
            for event in connection.receive_data(data):
                if getattr(event, "stream_id", stream) != stream:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    response.headers = dict(event.headers)
                    response.status = int(response.headers.get(":status", "0"))
                elif isinstance(event, h2.events.TrailersReceived):
                    response.trailers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    response.body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    response.reset = event.error_code
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return False
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            sock.sendall(connection.data_to_send())
            return True

        try:
            connection.send_headers(stream, request_headers, end_stream=not frames)
            sock.sendall(connection.data_to_send())
            for index, frame in enumerate(frames):
                last = index == len(frames) - 1
                remaining = frame
                while True:
                    # Respect the peer's flow-control windows: wait for WINDOW_UPDATEs as a real client does.
                    allowed = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size)
                    if remaining and allowed <= 0:
                        if done or not receive():
                            return response, not done and response.status is not None
                        continue
                    chunk, remaining = remaining[:allowed], remaining[allowed:]
                    connection.send_data(stream, chunk, end_stream=last and not remaining)
                    sock.sendall(connection.data_to_send())
                    if not remaining:
                        break
            while not done:
                if not receive():
                    return response, False
            return response, True
        except (TimeoutError, ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError, OSError):
            return response, False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._connection = None

    def __enter__(self) -> H2Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def h2_request(
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    frames: Sequence[bytes] = (),
    *,
    source_ip: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    authority: str = "localhost",
    timeout: float = 10,
) -> H2Response:
    """One request on a connection of its own."""
    with H2Session(port, source_ip=source_ip, tls=tls, authority=authority, timeout=timeout) as session:
        return session.request(method, path, headers, frames)


def refused_by_proxy(response: H2Response) -> bool:
    """The proxy's refusal: HTTP 400/401/403, or a gRPC PERMISSION_DENIED / UNAUTHENTICATED it answered itself."""
    return response.status in (400, 401, 403) or (response.status == 200 and response.grpc_status in (7, 16))


def grpc_frame(message: bytes, *, compressed: bool = False, declared_length: int | None = None) -> bytes:
    """One gRPC length-prefixed message: flag byte, 4-byte big-endian length, bytes."""
    length = len(message) if declared_length is None else declared_length
    return bytes([1 if compressed else 0]) + length.to_bytes(4, "big") + message


GRPC_HEADERS = (("content-type", "application/grpc"), ("te", "trailers"))
