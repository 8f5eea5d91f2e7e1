"""Run the Debian nginx on a generated config: ``nginx -t`` and a foreground process for live tests."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def make_prefix() -> Path:
    """A prefix directory nginx workers can use: when tests run as root, workers run as the build's
    default user, which cannot enter pytest's 0700 temp directories."""
    path = Path(tempfile.mkdtemp(prefix="meshgen-nginx-", dir="/tmp"))
    path.chmod(0o755)
    return path


def nginx_test(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t -p PREFIX -c CONFIG`` (does not bind ports)."""
    assert NGINX is not None
    return subprocess.run([NGINX, "-t", "-q", "-p", str(prefix), "-c", str(config)],
                          capture_output=True, text=True, timeout=30, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NginxProcess:
    """nginx in the foreground (the config must say ``daemon off;``) until ``stop()``."""

    def __init__(self, config_text: str, ports: list[int], *, prefix: Path | None = None,
                 run_as: str | None = None) -> None:
        """``run_as``: a user to drop to first (needs root), to prove the config runs unprivileged."""
        assert NGINX is not None
        self.prefix = prefix or make_prefix()
        self.config = self.prefix / "nginx.conf"
        self.config.write_text(config_text, encoding="utf-8")
        command = [NGINX, "-p", str(self.prefix), "-c", str(self.config)]
        if run_as is not None:
            shutil.chown(self.prefix, run_as)
            shutil.chown(self.config, run_as)
            # -e: before reading the config nginx opens its compiled-in error log, root-only on Debian.
            user = pwd.getpwnam(run_as)
            command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                       *command, "-e", str(self.prefix / "error.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_listening(ports)

    def _wait_listening(self, ports: list[int], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited early:\n{self.error_log()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"nginx did not listen on {port}:\n{self.error_log()}") from None
                    time.sleep(0.02)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the master we started (by its pid; it stops its own workers), then remove the prefix."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> NginxProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
