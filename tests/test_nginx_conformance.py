"""A real nginx, generated with --full, in front of a backend that answers everything: every request of
the matrix must be allowed or denied exactly as ``decide()`` says, and no bypass probe may get through.

HTTP/1.1 goes out with http.client bound to each identity's 127.0.x.y source; gRPC (h2c) through
grpcio via a SourceRelay from that source. grpcio refuses upper-case metadata keys on the client side,
so identities that send a header name in upper case (the "~<header>-upper" near misses) are only
checked over HTTP.
"""

from __future__ import annotations

import http.client
import posixpath
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest

from meshgen.catalog import load_catalog
from meshgen.features import Feature
from meshgen.policy import Identity, Request, compile_policy, decide
from meshgen.spec import LoadedSpec, Spec
from tests.support.backend import REQUEST_ID_HEADER, Backend, grpc_call_on, unlike_sent
from tests.support.goldens import cases_generated_by, load_case
from tests.support.h2client import GRPC_HEADERS, grpc_frame, h2_request, refused_by_proxy
from tests.support.matrix import (
    JSON,
    LOOPBACK_OUTSIDER_IP,
    full_matrix,
    grpc_message,
    json_request,
    loopback_variant,
    sent_body,
    served_ports,
)
from tests.support.nginx_process import NGINX, NginxProcess
from tests.support.processes import free_port
from tests.support.relay import SourceRelay
from tests.support.targets import NGINX as NGINX_TARGET
from tests.support.targets import enforced_by, nginx_output

pytestmark = [pytest.mark.nginx, pytest.mark.skipif(NGINX is None, reason="nginx is not installed")]

MAX_REPORTED = 20


EXPRESSIBLE = cases_generated_by("nginx.conf")  # the cases nginx does not refuse


@dataclass
class Proxy:
    spec: Spec
    backend: Backend
    ports: dict[str, int]
    # nginx's reference: decide() for what nginx enforces (it withholds per-model gRPC: no body reading)
    enforced: frozenset[Feature]


@pytest.fixture(scope="module", params=EXPRESSIBLE)
def proxy(request: pytest.FixtureRequest) -> Iterator[Proxy]:
    with start_proxy(load_case(request.param)) as running:
        yield running


@contextmanager
def start_proxy(loaded: LoadedSpec) -> Iterator[Proxy]:
    """nginx --full for the spec's loopback variant in front of a fresh Backend, stopped on exit
    (also used by tests/test_properties.py for generated specs)."""
    spec = loopback_variant(loaded.spec)
    policy = compile_policy(LoadedSpec(spec, loaded.source))
    with Backend() as backend:
        ports = {name: free_port() for name in served_ports(spec)}
        text = nginx_output(
            policy,
            full=True,
            daemon=False,
            prefix=None,
            listen={name: f"127.0.0.1:{port}" for name, port in ports.items()},
            upstream={
                name: f"127.0.0.1:{backend.grpc_port if name == 'grpc' else backend.http_port}" for name in ports
            },
        )
        with NginxProcess(text, list(ports.values())):
            yield Proxy(spec, backend, ports, enforced_by(NGINX_TARGET, policy))


def http_status(
    proxy: Proxy,
    request: Request,
    port: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    request_id: str | None = None,
) -> int:
    """Send ``request`` with its body (the matrix's for a JSON body route, else ``{}`` for POST, PUT and
    PATCH), tagged with ``request_id`` if given; nginx's status."""
    identity = request.identity
    connection = http.client.HTTPConnection(
        "127.0.0.1",
        proxy.ports[port or request.protocol],
        timeout=10,
        source_address=(identity.source_ip or "127.0.0.1", 0),
    )
    try:
        connection.putrequest(request.method, request.path, skip_accept_encoding=True)
        for name, value in headers if headers is not None else identity.headers.items():
            connection.putheader(name, value)
        if request_id is not None:
            connection.putheader(REQUEST_ID_HEADER, request_id)
        extra, body = request_body(request)
        for name, value in extra.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def request_body(request: Request) -> tuple[dict[str, str], bytes | None]:
    """(headers, body) ``http_status`` sends: the matrix's own for a request with a body, else ``{}``
    as JSON for POST, PUT and PATCH, and none otherwise."""
    headers, body = sent_body(request)
    if body is None and request.method in ("POST", "PUT", "PATCH"):
        return {"Content-Type": JSON}, b"{}"
    return headers, body


def test_matrix_matches_decide(proxy: Proxy) -> None:
    total, mismatches = run_matrix(proxy, full_matrix(proxy.spec, LOOPBACK_OUTSIDER_IP))
    assert not mismatches, f"{len(mismatches)} of {total} mismatches:\n" + "\n".join(mismatches[:MAX_REPORTED])


def run_matrix(proxy: Proxy, matrix: Iterable[tuple[str, Request]]) -> tuple[int, list[str]]:
    """(requests in ``matrix``, mismatches with decide()) on the running nginx."""
    mismatches: list[str] = []
    grpc_requests: dict[str, list[tuple[str, Request]]] = {}
    total = 0
    for label, request in matrix:
        total += 1
        expected = decide(proxy.spec, request, proxy.enforced).allowed
        if request.protocol == "grpc" and request.method != "POST":
            # grpcio always sends POST: other method names go over raw HTTP/2.
            response = h2_request(
                proxy.ports["grpc"],
                request.method,
                request.path,
                [*GRPC_HEADERS, *((name.lower(), value) for name, value in request.identity.headers.items())],
                [grpc_frame(grpc_message(request))],
                source_ip=request.identity.source_ip or "127.0.0.1",
            )
            if refused_by_proxy(response) == expected:
                mismatches.append(f"{label}: over HTTP/2 nginx answered {response}, decide() allows={expected}")
            continue
        if request.protocol == "grpc":
            grpc_requests.setdefault(request.identity.source_ip or "127.0.0.1", []).append((label, request))
            continue
        request_id = uuid.uuid4().hex
        status = http_status(proxy, request, request_id=request_id)
        # 400: refused by nginx's request parser (a method name with lower-case letters) or its raw-path guard.
        if status not in (400, 403) and not 200 <= status < 300:
            mismatches.append(f"{label}: unexpected HTTP {status}")
        elif (200 <= status < 300) != expected:
            mismatches.append(
                f"{label}: nginx {'allowed' if 200 <= status < 300 else f'refused ({status})'}, decide() "
                f"{'allows' if expected else 'denies'}"
            )
        elif 200 <= status < 300:
            headers, body = request_body(request)
            problem = unlike_sent(proxy.backend.received_for(request_id), headers, body)
            if problem is not None:
                mismatches.append(f"{label}: allowed, but {problem}")
    for source_ip, calls in grpc_requests.items():
        with (
            SourceRelay("127.0.0.1", proxy.ports["grpc"], source_ip) as relay,
            grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel,
        ):
            for label, request in calls:
                # HTTP/2 header names are lower case on the wire (grpcio refuses others client-side).
                metadata = [(name.lower(), value) for name, value in request.identity.headers.items()]
                code = grpc_call_on(channel, request.path, metadata, message=grpc_message(request))
                expected = decide(proxy.spec, request, proxy.enforced).allowed
                if code not in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED):
                    mismatches.append(f"{label}: unexpected gRPC status {code.name}")
                elif (code == grpc.StatusCode.OK) != expected:
                    mismatches.append(f"{label}: nginx {code.name}, decide() {'allows' if expected else 'denies'}")
    print(f"matrix: {total} requests")
    return total, mismatches


def test_denied_grpc_is_permission_denied_with_a_message(proxy: Proxy) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{proxy.ports['grpc']}") as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/inference.GRPCInferenceService/Unknown")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "permission denied" in (raised.value.details() or "")  # type: ignore[attr-defined]


# --- bypass probes ----------------------------------------------------------------------------------

NON_CANONICAL = ("%", "//", "/./", "/../", "/.")  # ";x" and "." are plain characters of a segment


def _normalized(path: str) -> str:
    raw = urllib.parse.unquote(path.split("?", 1)[0])
    return posixpath.normpath(raw.replace("//", "/")).rstrip("\n")


def _variants(path: str) -> list[str]:
    head, _, last = path.rpartition("/")
    first = path.split("/")[1]
    return [
        f"{head}/x/../{last}",
        f"{head}/./{last}",
        f"{head}//{last}",
        path.replace("/", "//", 1),
        f"{head}%2F{last}",
        f"{head}/x/%2e%2e/{last}",
        f"{head}/%2E/{last}",
        f"{path}%0A",
        f"{path}%00",
        f"{head}/{last[:-1]}%{ord(last[-1]):02X}",
        f"{head}/{last[:-1]}%{ord(last[-1]):02x}",
        path.upper(),
        path.replace(first, first.upper(), 1),
        f"{head}/{last.upper()}",
        f"{path}/",
        f"{path}?q=1",
        f"{path}#frag",
        f"{path};x",
        f"{path}.",
        f"/.{path}",
        f"{path}%20",
    ]


def _probe_targets(spec: Spec) -> list[tuple[str, str, str]]:
    """(port, method, path) that some identity of the matrix is denied on the http port, and on the
    OpenAI frontend's port where the spec serves it."""
    targets = [
        ("http", "POST", "/v2/repository/models/simple/load"),
        ("http", "GET", "/v2/models/stats"),
        ("http", "GET", "/v2/logging"),
        ("http", "POST", "/v2/models/protected/infer"),
        ("http", "POST", "/v2/repository/models/protected/load"),
        ("http", "GET", "/v2/models/unlisted_model"),
        ("http", "GET", "/v2/health/live"),
        ("http", "GET", "/v2/systemsharedmemory/status"),
    ]
    if "openai" in served_ports(spec):
        listed = sorted({model for rule in spec.rules for model in rule.models or ()})
        targets += [
            ("openai", "GET", "/v1/models"),
            ("openai", "GET", "/v1/models/unlisted_model"),
            ("openai", "POST", "/v1/models/unlisted_model/load"),
            *(("openai", "POST", f"/v1/models/{model}/unload") for model in listed[:2]),
            ("openai", "POST", "/v1/chat/completions"),
            ("openai", "GET", "/health/ready"),
            ("openai", "GET", "/metrics"),
        ]
    return targets


def _identities(spec: Spec) -> list[Identity]:
    seen: dict[tuple[object, ...], Identity] = {}
    for _, request in full_matrix(spec, LOOPBACK_OUTSIDER_IP):
        identity = request.identity
        seen.setdefault((identity.source_ip, tuple(sorted(identity.headers.items()))), identity)
    return list(seen.values())


def test_path_bypass_probes(proxy: Proxy) -> None:
    failures: list[str] = []
    for identity in _identities(proxy.spec):
        for port, method, path in _probe_targets(proxy.spec):
            canonical = Request(port, method, path, identity)  # type: ignore[arg-type]
            canonical_allowed = decide(proxy.spec, canonical, proxy.enforced).allowed
            for probe in _variants(path):
                before = len(proxy.backend.http_seen)
                status = http_status(proxy, Request(port, method, probe, identity))  # type: ignore[arg-type]
                reached = proxy.backend.http_seen[before:]
                who = f"{port} {method} {probe!r} from {identity.source_ip} {dict(identity.headers)}"
                if any(marker in probe.split("?", 1)[0] for marker in NON_CANONICAL) or "#" in probe:
                    # Triton may decode or normalize these: they must never reach it. nginx's raw-path
                    # guard answers 400 (docs/spec.md, non-canonical paths).
                    if status != 400 or reached:
                        failures.append(f"{who}: non-canonical path got {status} (not 400), backend saw {reached}")
                    continue
                expected = decide(proxy.spec, Request(port, method, probe, identity), proxy.enforced).allowed  # type: ignore[arg-type]
                if (200 <= status < 300) != expected:
                    failures.append(f"{who}: HTTP {status}, decide() {'allows' if expected else 'denies'}")
                if not canonical_allowed and any(_normalized(r.split(" ", 1)[1]) == path for r in reached):
                    failures.append(f"{who}: denied endpoint {path} reached the backend as {reached}")
    assert not failures, f"{len(failures)} bypasses:\n" + "\n".join(failures[:MAX_REPORTED])


def test_header_bypass_probes(proxy: Proxy) -> None:
    """Near misses of every identity header: case of the value, name spelled with '_', extra text."""
    failures: list[str] = []
    for name, client in proxy.spec.clients.items():
        if not client.headers:
            continue
        source_ip = (
            (client.ip_blocks[0].split("/")[0].rsplit(".", 1)[0] + ".5") if client.ip_blocks else LOOPBACK_OUTSIDER_IP
        )
        good = {header: str(value) for header, value in client.headers.items()}
        for header, value in good.items():
            others = [(h, v) for h, v in good.items() if h != header]
            near_misses = [
                [*others, (header, value.upper())],
                [*others, (header, value.lower())],
                [*others, (header, value.swapcase())],
                [*others, (header.replace("-", "_"), value)],
                [*others, (header, value + "x")],
                [*others, (header, "x" + value)],
                [*others, (header, value[:-1])],
                [*others, (header, value + " x")],
                [*others, ("x-forwarded-" + header, value)],
            ]
            for headers in near_misses:
                identity = Identity(source_ip=source_ip, headers=dict(headers))
                for method, path in [
                    ("GET", "/v2/logging"),
                    ("GET", "/v2"),
                    ("POST", "/v2/repository/index"),
                    ("POST", "/v2/models/m/infer"),
                    ("GET", "/v2/models/stats"),
                ]:
                    expected = decide(proxy.spec, Request("http", method, path, identity), proxy.enforced).allowed
                    status = http_status(proxy, Request("http", method, path, identity), headers=headers)
                    if (200 <= status < 300) != expected:
                        failures.append(
                            f"client {name} {headers} {method} {path}: HTTP {status}, decide() "
                            f"{'allows' if expected else 'denies'}"
                        )
    assert not failures, "\n".join(failures[:MAX_REPORTED])


def test_grpc_path_probes(proxy: Proxy) -> None:
    """Method paths nginx does not grant exactly never reach the backend."""
    probes = [
        "/inference.GRPCInferenceService/modelinfer",
        "/INFERENCE.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService//ModelInfer",
        "/inference.GRPCInferenceService/./ModelInfer",
        "/inference.GRPCInferenceService/ModelInfer/",
        "/inference.GRPCInferenceService/ModelInfer?x=1",
        "/inference.GRPCInferenceService/Model%49nfer",
        "//inference.GRPCInferenceService/ModelInfer",
    ]
    with grpc.insecure_channel(f"127.0.0.1:{proxy.ports['grpc']}") as channel:
        for probe in probes:
            before = len(proxy.backend.grpc_seen)
            code = grpc_call_on(channel, probe, [])
            assert code != grpc.StatusCode.OK, probe
            assert proxy.backend.grpc_seen[before:] == [], (probe, proxy.backend.grpc_seen[before:])


def test_large_body_is_not_limited(proxy: Proxy) -> None:
    """No 1 MB client_max_body_size: a 3 MB inference body reaches the backend where allowed."""
    for _, request in full_matrix(proxy.spec, LOOPBACK_OUTSIDER_IP):
        if (
            request.protocol == "http"
            and request.method == "POST"
            and request.path.endswith("/infer")
            and decide(proxy.spec, request, proxy.enforced).allowed
        ):
            break
    else:
        pytest.skip("no identity may infer over HTTP in this case")
    identity = request.identity
    connection = http.client.HTTPConnection(
        "127.0.0.1", proxy.ports["http"], timeout=30, source_address=(identity.source_ip or "127.0.0.1", 0)
    )
    try:
        connection.request("POST", request.path, body=b"0" * (3 << 20), headers=dict(identity.headers))
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    finally:
        connection.close()


def _case_variant_matrix(spec: Spec) -> Iterator[tuple[str, Request]]:
    """Every listed model in other spellings (upper, swapped, capitalized) on every per-model path
    shape, versioned and repo shapes included: map keys fold case, Triton model names do not."""
    listed = sorted({model for rule in spec.rules for model in rule.models or ()})
    people = [
        (label, request.identity)
        for label, request in full_matrix(spec, LOOPBACK_OUTSIDER_IP)
        if request.protocol == "http" and request.method == "GET" and request.path == "/v2"
    ]
    ports = served_ports(spec)
    for endpoint in load_catalog().http:
        if not endpoint.model_scoped or endpoint.port not in ports:
            continue
        for model in listed:
            for spelling in dict.fromkeys([model, model.upper(), model.swapcase(), model.capitalize()]):
                for label, identity in people:
                    who = label.rsplit(" as ", 1)[1]
                    if endpoint.body_model:  # the model is the JSON body's
                        request = json_request(endpoint.port, endpoint.template, spelling, identity)
                        yield f"{endpoint.port} POST {endpoint.template} [model={spelling!r}] as {who}", request
                        continue
                    path = endpoint.template.replace("{model}", spelling).replace("{version}", "3")
                    path = path.replace("{repo}", "repo0")
                    for method in endpoint.methods:
                        yield (
                            f"{endpoint.port} {method} {path} as {who}",
                            Request(endpoint.port, method, path, identity),
                        )


def test_model_name_case_variants_match_decide(proxy: Proxy) -> None:
    matrix = list(_case_variant_matrix(proxy.spec))
    if not matrix:
        pytest.skip("no per-model rules in this case")
    total, mismatches = run_matrix(proxy, matrix)
    assert not mismatches, f"{len(mismatches)} of {total} mismatches:\n" + "\n".join(mismatches[:MAX_REPORTED])
