"""``nginx --dry-run`` on a real nginx: every request of the matrix reaches the backend, and the log
records, request by request, the decision ``decide()`` takes — allow/deny and the deciding rule.

Each request carries a unique ``x-request-id`` (logged as ``request_id``), so log lines are matched to
requests by id, not by order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meshgen.policy import Request, compile_policy, decide
from meshgen.spec import LoadedSpec
from tests.support.backend import Backend, grpc_call_on
from tests.support.goldens import cases_generated_by, load_case
from tests.support.matrix import LOOPBACK_OUTSIDER_IP, full_matrix, grpc_message, loopback_variant, served_ports
from tests.support.nginx_process import NGINX, NginxProcess
from tests.support.processes import free_port
from tests.support.relay import SourceRelay
from tests.support.targets import NGINX as NGINX_TARGET
from tests.support.targets import enforced_by, nginx_output
from tests.test_nginx_conformance import Proxy, http_status

pytestmark = [pytest.mark.nginx, pytest.mark.skipif(NGINX is None, reason="nginx is not installed")]

MAX_REPORTED = 20
LOG_LINE = re.compile(r'request_id="(?P<id>[^"]*)" decision="(?P<decision>[^"]*)"$')
VERDICT = re.compile(r"^(?P<verdict>allow|deny) (?:rules\[(?P<index>\d+)\]|method|default|no-endpoint|non-canonical)$")


@dataclass
class DryRunProxy:
    proxy: Proxy
    log: Path


@pytest.fixture(scope="module", params=cases_generated_by("nginx.conf"))
def dry_run(request: pytest.FixtureRequest) -> Iterator[DryRunProxy]:
    loaded = load_case(request.param)
    spec = loopback_variant(loaded.spec)
    policy = compile_policy(LoadedSpec(spec, loaded.source))
    with Backend() as backend:
        ports = {name: free_port() for name in served_ports(spec)}
        text = nginx_output(
            policy,
            full=True,
            daemon=False,
            prefix=None,
            dry_run=True,
            listen={name: f"127.0.0.1:{port}" for name, port in ports.items()},
            upstream={
                name: f"127.0.0.1:{backend.grpc_port if name == 'grpc' else backend.http_port}" for name in ports
            },
        )
        with NginxProcess(text, list(ports.values())) as process:
            proxy = Proxy(spec, backend, ports, enforced_by(NGINX_TARGET, policy))
            yield DryRunProxy(proxy, process.prefix / "access.log")


def _read_log(path: Path, expected: int, timeout: float = 10) -> dict[str, str]:
    """request id -> logged decision, once ``expected`` tagged lines are there (nginx logs at request end)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            match = LOG_LINE.search(line)
            if match and match["id"].startswith("mg-"):
                assert match["id"] not in found, f"two log lines for {match['id']}"
                found[match["id"]] = match["decision"]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _compare(proxy: Proxy, request: Request, logged: str | None) -> str | None:
    """Why the logged decision disagrees with decide(), or None."""
    expected = decide(proxy.spec, request, proxy.enforced)
    if logged is None:
        return "no log line"
    match = VERDICT.match(logged)
    if match is None:
        return f"unparsable decision {logged!r}"
    if (match["verdict"] == "allow") != expected.allowed:
        return f"logged {logged!r}, decide(): {expected.reason}"
    index = int(match["index"]) if match["index"] is not None else None
    if index != expected.rule_index:
        return f"logged {logged!r}, decide() decided by rule {expected.rule_index} ({expected.reason})"
    return None


def test_dry_run_denies_nothing_and_logs_every_decision(dry_run: DryRunProxy) -> None:
    proxy = dry_run.proxy
    failures: list[str] = []
    sent: dict[str, tuple[str, Request]] = {}
    grpc_requests: dict[str, list[tuple[str, str, Request]]] = {}
    http_sent = 0
    for number, (label, request) in enumerate(full_matrix(proxy.spec, LOOPBACK_OUTSIDER_IP)):
        tag = f"mg-{number}"
        if request.method != request.method.upper() or (request.protocol == "grpc" and request.method != "POST"):
            continue  # nginx's parser refuses lower-case method names (400) and grpcio sends only POST
        if request.protocol == "grpc":
            grpc_requests.setdefault(request.identity.source_ip or "127.0.0.1", []).append((tag, label, request))
            continue
        sent[tag] = (label, request)
        headers = [*request.identity.headers.items(), ("x-request-id", tag)]
        status = http_status(proxy, request, headers=headers)
        http_sent += 1
        if status != 200:  # only the backend answers 200; nginx itself would have said 403 or 400
            failures.append(f"{label}: HTTP {status}, expected to reach the backend")
    for source_ip, calls in grpc_requests.items():
        with (
            SourceRelay("127.0.0.1", proxy.ports["grpc"], source_ip) as relay,
            grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel,
        ):
            for tag, label, request in calls:
                sent[tag] = (label, request)
                # HTTP/2 header names are lower case on the wire (grpcio refuses others client-side).
                metadata = [(name.lower(), value) for name, value in request.identity.headers.items()]
                code = grpc_call_on(
                    channel, request.path, [*metadata, ("x-request-id", tag)], message=grpc_message(request)
                )
                if code != grpc.StatusCode.OK:
                    failures.append(f"{label}: gRPC {code.name}, expected to reach the backend")
    assert len(proxy.backend.http_seen) == http_sent, "every HTTP request reaches the backend"
    assert len(proxy.backend.grpc_seen) == len(sent) - http_sent, "every gRPC call reaches the backend"
    logged = _read_log(dry_run.log, len(sent))
    denials = 0
    for tag, (label, request) in sent.items():
        denials += not decide(proxy.spec, request, proxy.enforced).allowed
        problem = _compare(proxy, request, logged.get(tag))
        if problem:
            failures.append(f"{label}: {problem}")
    print(f"dry run: {len(sent)} requests, {denials} would-be denials logged as deny")
    assert denials > 0, "the matrix must exercise denials"
    assert not failures, f"{len(failures)} of {len(sent)} failures:\n" + "\n".join(failures[:MAX_REPORTED])


def test_dry_run_logs_non_canonical_paths_as_denied(dry_run: DryRunProxy) -> None:
    """The enforcing config answers 400 to these; the dry run forwards them and logs the denial."""
    proxy = dry_run.proxy
    probes = ["/v2/x/../health/live", "/v2//health/live", "/v2/health/%6Cive"]
    for number, path in enumerate(probes):
        status = http_status(proxy, Request("http", "GET", path), headers=[("x-request-id", f"mg-nc-{number}")])
        assert status == 200, path
    logged = _read_log(dry_run.log, 0, timeout=0)
    deadline = time.monotonic() + 10
    while sum(tag.startswith("mg-nc-") for tag in logged) < len(probes) and time.monotonic() < deadline:
        time.sleep(0.05)
        logged = _read_log(dry_run.log, 0, timeout=0)
    for number in range(len(probes)):
        assert logged.get(f"mg-nc-{number}") == "deny non-canonical", (probes[number], logged.get(f"mg-nc-{number}"))
