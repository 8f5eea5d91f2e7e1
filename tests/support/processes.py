"""Starting and stopping the real servers the tests and benchmarks run (Envoy, nginx, Triton).

Each server binds 127.0.0.1 on a free port and is stopped, by its own process handle, by whoever started it.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str) -> bool:
    """True once ``url`` answers 200 (a readiness endpoint)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until_ready(
    process: subprocess.Popen[Any],
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    details: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``ready`` until it holds; if the process exits or the time runs out, stop it and raise."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{details()}")
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{what} not ready after {timeout} s:\n{details()}")
        time.sleep(0.02)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM the process we started; SIGKILL it only if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
