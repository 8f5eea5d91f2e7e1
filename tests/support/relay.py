"""A TCP relay that reaches a proxy from a chosen source address (e.g. 127.0.3.1).

grpcio cannot bind a client socket to a source address, so tests point the client at the relay,
which opens its own upstream connection from ``source_ip`` and pipes bytes both ways.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

Observer = Callable[[bytes], None]


class SourceRelay:
    """Listens on 127.0.0.1:<free port> (``.port``); each connection is relayed to the target from ``source_ip``."""

    def __init__(self, target_host: str, target_port: int, source_ip: str) -> None:
        self.target = (target_host, target_port)
        self.source_ip = source_ip
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"relay-{source_ip}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed by close()
            try:
                upstream = socket.create_connection(self.target, source_address=(self.source_ip, 0))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            to_upstream, to_client = self._observers()
            threading.Thread(target=pipe, args=(client, upstream, to_upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, to_client), daemon=True).start()

    def _observers(self) -> tuple[Observer | None, Observer | None]:
        """What sees the bytes of one new connection: (client -> target, target -> client)."""
        return None, None

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def __enter__(self) -> SourceRelay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def pipe(source: socket.socket, sink: socket.socket, observe: Observer | None = None) -> None:
    """Copy bytes until EOF; ``observe`` sees each chunk before it is forwarded."""
    try:
        while data := source.recv(65536):
            if observe is not None:
                observe(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        # Pass the half-close on so the other side sees EOF, as it would without the relay.
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
