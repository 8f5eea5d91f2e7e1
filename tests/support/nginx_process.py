"""Run the Debian nginx on a generated config: ``nginx -t`` and a foreground process for live tests."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from tests.support.processes import listening, stop_process, wait_until_ready

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@contextmanager
def nginx_prefix() -> Iterator[Path]:
    """A fresh prefix (see ``make_prefix``), removed afterwards."""
    path = make_prefix()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nginx_test_text(text: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a complete config written into ``prefix``."""
    config = prefix / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    return nginx_test(config, prefix)


def nginx_test_dropin(dropin: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a drop-in as conf.d/*.conf holds it: included from a minimal http{} in ``prefix``."""
    (prefix / "dropin.conf").write_text(dropin, encoding="utf-8")
    return nginx_test_text(
        "pid nginx.pid; error_log error.log; events {}\nhttp {\n"
        "client_body_temp_path cb; proxy_temp_path px; fastcgi_temp_path fc; uwsgi_temp_path uw; "
        f"scgi_temp_path sc; access_log off;\ninclude {prefix}/dropin.conf;\n}}\n",
        prefix,
    )


def make_prefix() -> Path:
    """A prefix directory nginx workers can use: when tests run as root, workers run as the build's
    default user, which cannot enter pytest's 0700 temp directories."""
    path = Path(tempfile.mkdtemp(prefix="meshgen-nginx-", dir="/tmp"))
    path.chmod(0o755)
    return path


def nginx_test(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t -p PREFIX -c CONFIG`` (does not bind ports)."""
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-q", "-p", str(prefix), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class NginxProcess:
    """nginx in the foreground (the config must say ``daemon off;``) until ``stop()``."""

    def __init__(
        self, config_text: str, ports: list[int], *, prefix: Path | None = None, run_as: str | None = None
    ) -> None:
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
            command = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                *command,
                "-e",
                str(self.prefix / "error.log"),
            ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for port in ports:
            wait_until_ready(
                self.process, lambda port=port: listening(port), 10, f"nginx on port {port}", self.error_log
            )

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the master we started (by its pid; it stops its own workers), then remove the prefix."""
        stop_process(self.process)
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> NginxProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
