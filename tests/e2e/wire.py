"""Record what tritonclient puts on the wire, without changing it.

* :class:`HttpTap` is a byte-for-byte TCP relay (like tests/support/relay.py, from a chosen source
  address) that parses the HTTP/1.1 streams it forwards: each request's method, target and headers
  exactly as the client sent them, paired with the status line the other side answered.
* :class:`GrpcRecorder` is a gRPC pass-through: it records each call's ``:path`` and metadata exactly as
  tritonclient.grpc sent them and forwards the call (message bytes untouched) to its upstream, relaying
  the upstream's status and details back. grpcio exposes no HPACK decoder to tap HTTP/2 bytes, so the
  recorder re-originates the call with grpcio, the same stack tritonclient uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from tests.support.relay import Observer, SourceRelay

WireProtocol = Literal["http", "grpc", "metrics"]
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
MAX_FORWARD_TIMEOUT = 3600.0


@dataclass
class WireRequest:
    protocol: WireProtocol  # the Triton port it was sent to
    method: str  # HTTP method; "POST" for gRPC
    path: str  # request target as sent (query included) or the gRPC ":path"
    headers: dict[str, str]  # as sent; gRPC metadata keys are lower-case on the wire
    status: str | None = None  # HTTP status code, or the gRPC status name ("OK", "PERMISSION_DENIED", ...)
    source_ip: str = "127.0.0.1"


@dataclass
class WireLog:
    """Every request in arrival order; ``mark()``/``since()`` attribute them to one client call."""

    requests: list[WireRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: WireRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[WireRequest]:
        with self._lock:
            return list(self.requests[mark:])


class _HttpStreamParser:
    """Incremental HTTP/1.1 message framing for one direction of a connection (heads + bodies)."""

    def __init__(self, on_head: Callable[[str, dict[str, str]], None]) -> None:
        self._buffer = b""
        self._on_head = on_head
        self._body_left = 0  # bytes of a Content-Length body still to skip
        self._chunked = False
        self._chunk_state: Literal["size", "data", "crlf", "trailer"] = "size"

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self._body_left:
            taken = min(self._body_left, len(self._buffer))
            self._buffer, self._body_left = self._buffer[taken:], self._body_left - taken
            if self._body_left == 0 and self._chunked and self._chunk_state == "data":
                self._chunk_state = "crlf"
            return bool(taken) and bool(self._buffer)
        if self._chunked:
            return self._step_chunked()
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        start, *lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        lowered = {k.lower(): v for k, v in headers.items()}
        self._on_head(start, headers)
        if lowered.get("transfer-encoding", "").lower() == "chunked":
            self._chunked, self._chunk_state = True, "size"
        else:
            self._body_left = int(lowered.get("content-length") or 0)
        return True

    def _step_chunked(self) -> bool:
        if self._chunk_state in ("size", "crlf", "trailer"):
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if self._chunk_state == "crlf":
                self._chunk_state = "size"
            elif self._chunk_state == "trailer":
                if not line:
                    self._chunked = False  # message complete
            else:
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    self._chunk_state = "trailer"
                else:
                    self._chunk_state, self._body_left = "data", size
            return True
        return False


class _Exchange:
    """One tapped connection: requests and answers pair up in order (tritonclient does not pipeline)."""

    def __init__(self, tap: HttpTap) -> None:
        self._tap = tap
        self._pending: list[WireRequest] = []
        self._lock = threading.Lock()

    def on_request(self, start: str, headers: dict[str, str]) -> None:
        method, target, _version = start.split(" ", 2)
        request = WireRequest(self._tap.protocol, method, target, headers, source_ip=self._tap.source_ip)
        with self._lock:
            self._pending.append(request)
        self._tap.log.add(request)

    def on_response(self, start: str, headers: dict[str, str]) -> None:
        status = start.split(" ", 2)[1]
        if status.startswith("1"):
            return  # interim (100 Continue): the final answer follows
        with self._lock:
            if self._pending:
                self._pending.pop(0).status = status


class HttpTap(SourceRelay):
    """Listens on 127.0.0.1:<free port>; relays each connection to ``target`` from ``source_ip`` unchanged,
    logging every request (and the answer's status) into ``log``."""

    def __init__(
        self, target_port: int, log: WireLog, protocol: WireProtocol = "http", source_ip: str = "127.0.0.1"
    ) -> None:
        self.protocol: WireProtocol = protocol
        self.log = log
        super().__init__("127.0.0.1", target_port, source_ip)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _observers(self) -> tuple[Observer, Observer]:
        # The pipe feeds the parser before forwarding: an answer cannot come back before its request is logged.
        exchange = _Exchange(self)
        return _HttpStreamParser(exchange.on_request).feed, _HttpStreamParser(exchange.on_response).feed


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining deadline; grpcio reports "no deadline" as a huge number, not None."""
    remaining: float | None = context.time_remaining()
    return remaining if remaining is not None and remaining < MAX_FORWARD_TIMEOUT else None


def _forwardable(metadata: tuple[tuple[str, str | bytes], ...]) -> list[tuple[str, str | bytes]]:
    # grpcio adds its own user-agent; "grpc-*" keys are reserved for the transport.
    return [(k, v) for k, v in metadata if not k.startswith((":", "grpc-")) and k != "user-agent"]


class _RecordingForwarder(grpc.GenericRpcHandler):  # type: ignore[misc]  # untyped base
    def __init__(self, recorder: GrpcRecorder) -> None:
        self._recorder = recorder

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        metadata = tuple(details.invocation_metadata)
        entry = WireRequest(
            "grpc",
            "POST",
            method,
            {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in metadata},
            source_ip=self._recorder.source_ip,
        )
        self._recorder.log.add(entry)
        channel = self._recorder.channel
        forward = _forwardable(metadata)

        def fail(context: grpc.ServicerContext, error: grpc.RpcError) -> None:
            entry.status = error.code().name
            context.abort(error.code(), error.details() or "")

        if method == STREAM_METHOD:

            def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                call = channel.stream_stream(method)(requests, metadata=forward, timeout=_timeout(context))
                try:
                    yield from call
                except grpc.RpcError as error:
                    fail(context, error)
                entry.status = "OK"

            return grpc.stream_stream_rpc_method_handler(stream)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                reply: bytes = channel.unary_unary(method)(request, metadata=forward, timeout=_timeout(context))
            except grpc.RpcError as error:
                fail(context, error)
                raise  # unreachable: abort raised
            entry.status = "OK"
            return reply

        return grpc.unary_unary_rpc_method_handler(unary)


class GrpcRecorder:
    """A gRPC server on a free 127.0.0.1 port forwarding every call to ``upstream`` ("host:port")."""

    def __init__(self, upstream: str, log: WireLog, source_ip: str = "127.0.0.1") -> None:
        self.log = log
        self.source_ip = source_ip  # where the upstream connection comes from (a SourceRelay's job)
        self.channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((_RecordingForwarder(self),))
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(grace=None)
        self.channel.close()

    def __enter__(self) -> GrpcRecorder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
