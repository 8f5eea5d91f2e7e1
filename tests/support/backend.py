"""A stand-in Triton for proxy tests: every HTTP path and every gRPC method succeeds and is recorded.

A proxy under test sits in front of it; whatever reaches the backend got through the proxy, so
``http_seen`` / ``grpc_seen`` tell a bypass probe exactly what was let through, and ``http_received``
what each HTTP request carried (headers and body: a proxy that reads a JSON body must pass it on intact).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from tests.support.grpc_messages import parsed_model

STREAM_SUFFIX = "ModelStreamInfer"  # Triton's only bidirectional-streaming method
# A test may tag an HTTP request with this header to find what the backend received for it.
REQUEST_ID_HEADER = "x-meshgen-test-request"


@dataclass(frozen=True)
class Received:
    """One HTTP request as it reached the backend."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # de-chunked

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Triton; proxies reuse upstream connections
    # Header and body are separate writes: with Nagle on, each proxied request waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server: _RecordingServer

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        body = self._body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        received = Received(self.command, self.path, headers, body)
        self.server.record(f"{self.command} {self.path}", self.headers.get_all("Authorization") or [], received)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>: answer every method, known or not.
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # thousands of matrix requests: keep test output readable


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.seen: list[str] = []
        self.authorization: list[str] = []  # every Authorization value that reached the backend
        self.received: list[Received] = []
        self.by_id: dict[str, Received] = {}
        self._lock = threading.Lock()

    def record(self, entry: str, authorization: list[str], received: Received) -> None:
        with self._lock:
            self.seen.append(entry)
            self.authorization += authorization
            self.received.append(received)
            request_id = received.header(REQUEST_ID_HEADER)
            if request_id is not None:
                self.by_id[request_id] = received


class _AnyMethodHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # untyped base
    """Answers every method OK: unary with b"", streams by echoing one empty message; records the method
    and, for model-scoped methods, the model protobuf reads from the (first) request message."""

    def __init__(
        self, seen: list[str], models: list[tuple[str, str | None]], authorization: list[str], lock: threading.Lock
    ) -> None:
        self._seen = seen
        self._models = models
        self._authorization = authorization
        self._lock = lock

    def _record(self, method: str, message: bytes) -> None:
        model = parsed_model(method, message)
        with self._lock:
            self._models.append((method, model))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        credentials = [value for key, value in handler_call_details.invocation_metadata if key == "authorization"]
        with self._lock:
            self._seen.append(method)
            self._authorization += credentials
        if method.endswith(STREAM_SUFFIX):

            def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                for message in requests:
                    self._record(method, message)
                    yield b""
                    return

            return grpc.stream_stream_rpc_method_handler(stream)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._record(method, request)
            return b""

        return grpc.unary_unary_rpc_method_handler(unary)


class Backend:
    """HTTP/1.1 and gRPC servers on free 127.0.0.1 ports; use as a context manager or call stop()."""

    def __init__(self) -> None:
        self._http = _RecordingServer()
        self.http_port: int = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="backend-http", daemon=True)
        self._http_thread.start()
        self._grpc_lock = threading.Lock()
        self.grpc_seen: list[str] = []
        # (method, model protobuf parsed from the request message, None if it names none / does not parse)
        self.grpc_models: list[tuple[str, str | None]] = []
        self.grpc_authorization: list[str] = []  # every authorization metadata value that reached it
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._grpc.add_generic_rpc_handlers(
            (_AnyMethodHandler(self.grpc_seen, self.grpc_models, self.grpc_authorization, self._grpc_lock),)
        )
        self.grpc_port: int = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        self._stopped = False

    @property
    def http_seen(self) -> list[str]:
        """ "METHOD /path?query" of every HTTP request that reached the backend, in arrival order."""
        return self._http.seen

    @property
    def http_received(self) -> list[Received]:
        """Every HTTP request that reached the backend (headers and body), in arrival order."""
        return self._http.received

    def received_for(self, request_id: str) -> Received | None:
        """The HTTP request tagged ``REQUEST_ID_HEADER: request_id`` that reached the backend, if one did."""
        with self._http._lock:
            return self._http.by_id.get(request_id)

    @property
    def authorization_seen(self) -> list[str]:
        """Every Authorization header (HTTP) and authorization metadata (gRPC) value that reached it."""
        return [*self._http.authorization, *self.grpc_authorization]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def grpc_call_on(
    channel: grpc.Channel,
    method_path: str,
    metadata: Sequence[tuple[str, str]],
    timeout: float = 5,
    message: bytes = b"",
) -> grpc.StatusCode:
    """One generic call sending ``message`` (raw request bytes) on an open channel; the status it ended with."""
    try:
        if method_path.endswith(STREAM_SUFFIX):
            responses = channel.stream_stream(method_path)(iter([message]), metadata=tuple(metadata), timeout=timeout)
            for _ in responses:
                pass
        else:
            channel.unary_unary(method_path)(message, metadata=tuple(metadata), timeout=timeout)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def grpc_call(
    target: str,
    method_path: str,
    metadata: list[tuple[str, str]],
    credentials: grpc.ChannelCredentials | None = None,
    timeout: float = 5,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.StatusCode:
    """A generic call (stream call for ModelStreamInfer) on a fresh channel to ``target`` ("host:port")."""
    channel = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(target, options=options)
    )
    with channel:
        return grpc_call_on(channel, method_path, metadata, timeout)


def unlike_sent(received: Received | None, headers: Mapping[str, str], body: bytes | None) -> str | None:
    """Why ``received`` is not the request a client sent with ``headers`` (Content-Type) and ``body``;
    None when it arrived as sent. A proxy that reads the body must pass body and Content-Type on intact."""
    if received is None:
        return "the backend never received it"
    sent_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if received.header("content-type") != sent_type:
        return f"Content-Type {sent_type!r} arrived as {received.header('content-type')!r}"
    if received.body != (body or b""):
        return f"body {body!r} arrived as {received.body!r}"
    return None
