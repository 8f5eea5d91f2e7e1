"""The full nginx.conf runs as is as an unprivileged user: every path it writes lives under the prefix."""

from __future__ import annotations

import http.client
import os
import pwd
import shutil

import pytest

from meshgen.policy import compile_policy
from tests.support.backend import Backend
from tests.support.goldens import load_case
from tests.support.nginx_process import NGINX, NginxProcess, make_prefix
from tests.support.processes import free_port
from tests.support.targets import nginx_output

UNPRIVILEGED = "nobody"

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody"),
]


def status(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


def test_full_config_serves_and_refuses_as_nobody() -> None:
    prefix = make_prefix()
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    with Backend() as backend:
        text = nginx_output(
            compile_policy(load_case("headers-and-ips")),
            full=True,
            daemon=False,
            prefix=str(prefix),
            dry_run=False,
            listen={name: f"127.0.0.1:{port}" for name, port in ports.items()},
            upstream={
                "http": f"127.0.0.1:{backend.http_port}",
                "grpc": f"127.0.0.1:{backend.grpc_port}",
                "metrics": f"127.0.0.1:{backend.http_port}",
            },
        )
        with NginxProcess(text, list(ports.values()), prefix=prefix, run_as=UNPRIVILEGED) as proxy:
            assert status(ports["http"], "GET", "/v2/health/live") == 200  # anyone may check health
            assert status(ports["http"], "POST", "/v2/logging") == 403
            assert backend.http_seen == ["GET /v2/health/live"]
            owner = pwd.getpwuid((proxy.prefix / "client_body_temp").stat().st_uid).pw_name
            assert owner == UNPRIVILEGED
