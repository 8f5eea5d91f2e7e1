"""The generated bootstrap on a real Envoy allows and denies exactly what ``decide()`` says.

Per golden case: the loopback variant of the spec (ipBlocks on 127.0.x.0/24), a bootstrap on free
127.0.0.1 ports in front of a Backend that answers everything, and every request of the full matrix
sent for real: HTTP/1.1 from the identity's source address, gRPC through a SourceRelay bound to it.
Principals and namespaces are client certificates with a SPIFFE URI SAN (cases that need them run
with standalone.tls); an identity without a principal presents a CA-issued cert without a URI SAN.
"""

from __future__ import annotations

import dataclasses
import http.client
import ssl
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs
import pytest
import yaml

from meshgen.features import Feature
from meshgen.policy import Identity, Request, compile_policy, decide
from meshgen.spec import LoadedSpec, Spec
from meshgen.spec.model import Ports, Standalone, Tls
from meshgen.targets.envoy import EnvoyOptions
from meshgen.targets.envoy.openai import JSON_FILTER
from tests.support.backend import REQUEST_ID_HEADER, Backend, grpc_call_on, unlike_sent
from tests.support.envoy_process import EnvoyProcess
from tests.support.filter_host import filter_host_bootstrap
from tests.support.goldens import golden_cases, load_case
from tests.support.h2client import GRPC_HEADERS, H2Response, H2Session, grpc_frame, refused_by_proxy
from tests.support.matrix import (
    LOOPBACK_OUTSIDER_IP,
    STANDARD_METHODS,
    full_matrix,
    grpc_message,
    json_request,
    loopback_variant,
    refusal,
    sent_body,
    served_ports,
)
from tests.support.paths import NON_CANONICAL_FORMS, envoy_canonical
from tests.support.pki import CertFiles, TestCA
from tests.support.processes import free_port
from tests.support.relay import SourceRelay
from tests.support.targets import ENVOY, enforced_by, envoy_output

pytestmark = pytest.mark.envoy


@dataclass
class RunningCase:
    spec: Spec
    listen: dict[str, int]  # per served port
    backend: Backend
    ca: TestCA | None
    client_certs: dict[str | None, CertFiles]
    # The reference: decide() for what this Envoy output enforces (its capability table)
    enforced: frozenset[Feature]

    def cert_for(self, principal: str | None) -> CertFiles:
        assert self.ca is not None
        if principal not in self.client_certs:
            self.client_certs[principal] = self.ca.issue(
                "client", uri=f"spiffe://{principal}" if principal is not None else None
            )
        return self.client_certs[principal]


def _needs_mtls(spec: Spec) -> bool:
    return any(client.principals or client.namespaces for client in spec.clients.values())


@contextmanager
def start_case(case: str, directory: Path, *, dry_run: bool = False) -> Iterator[RunningCase]:
    """Envoy with the case's loopback bootstrap in front of a fresh Backend, stopped on exit."""
    with start_spec(load_case(case), directory, dry_run=dry_run) as running_case:
        yield running_case


@contextmanager
def start_spec(loaded: LoadedSpec, directory: Path, *, dry_run: bool = False) -> Iterator[RunningCase]:
    """Envoy with the spec's loopback bootstrap in front of a fresh Backend, stopped on exit
    (also used by tests/test_properties.py for generated specs)."""
    spec = loopback_variant(loaded.spec)
    ca = None
    if _needs_mtls(spec):
        ca = TestCA(directory)
        server = ca.issue("envoy", server=True)
        tls = Tls(cert=str(server.cert), key=str(server.key), clientCA=str(ca.ca.cert))
        spec = spec.model_copy(update={"standalone": Standalone(tls=tls)})
    ports = served_ports(spec)
    with Backend() as backend:
        listen = {port: free_port() for port in ports}
        upstream = backend_ports(backend, ports)
        admin_port = free_port()
        policy = compile_policy(LoadedSpec(spec, loaded.source))
        text = envoy_output(
            policy,
            bootstrap=True,
            listen={p: f"127.0.0.1:{listen[p]}" for p in ports},
            upstream={p: f"127.0.0.1:{upstream[p]}" for p in ports},
            admin=f"127.0.0.1:{admin_port}",
            dry_run=dry_run,
        )
        config = directory / "envoy.json"
        config.write_text(text, encoding="utf-8")
        enforced = enforced_by(ENVOY, policy, EnvoyOptions(bootstrap=True, dry_run=dry_run))
        with EnvoyProcess(config, admin_port, directory / "envoy.log"):
            yield RunningCase(spec, listen, backend, ca, {}, enforced)


def backend_ports(backend: Backend, ports: Iterable[str]) -> dict[str, int]:
    """The backend port standing in for each Triton port: gRPC's, or its HTTP server for the others."""
    return {port: backend.grpc_port if port == "grpc" else backend.http_port for port in ports}


@contextmanager
def start_filter_host(
    case: str, directory: Path, *, without_guard: bool = False, without_json_reader: bool = False
) -> Iterator[RunningCase]:
    """The case's filter-only output inside a sidecar-like Envoy (tests/support/filter_host.py) whose
    listeners are on the spec's container ports (free ports, set in the loopback variant).
    ``without_guard``: as installed by someone who left the gRPC model guard out; ``without_json_reader``:
    the OpenAI body reader (json_to_metadata)."""
    loaded = load_case(case)
    container = {port: free_port() for port in served_ports(loaded.spec)}
    workload = loaded.spec.workload.model_copy(update={"ports": Ports(**container)})
    spec = loopback_variant(loaded.spec).model_copy(update={"workload": workload})
    policy = compile_policy(LoadedSpec(spec, loaded.source))
    filters = yaml.safe_load(envoy_output(policy))
    if without_guard:
        filters = [entry for entry in filters if entry["name"] != "meshgen.grpc_model_guard"]
    if without_json_reader:
        filters = [entry for entry in filters if entry["name"] != JSON_FILTER]
    ca = TestCA(directory) if _needs_mtls(spec) else None
    tls = None
    if ca is not None:
        server = ca.issue("envoy", server=True)
        tls = (str(server.cert), str(server.key), str(ca.ca.cert))
    with Backend() as backend:
        upstream = backend_ports(backend, container)
        admin_port = free_port()
        config = directory / "filter-host.json"
        config.write_text(filter_host_bootstrap(filters, container, upstream, admin_port, tls), encoding="utf-8")
        with EnvoyProcess(config, admin_port, directory / "envoy.log"):
            yield RunningCase(spec, container, backend, ca, {}, enforced_by(ENVOY, policy))


@pytest.fixture(scope="module", params=golden_cases())
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCase]:
    # Module scope: Envoy is started (and dies with) the main test thread, once per case.
    case: str = request.param
    with start_case(case, tmp_path_factory.mktemp(f"envoy-{case}")) as running_case:
        yield running_case


def _ssl_context(case: RunningCase, principal: str | None) -> ssl.SSLContext:
    assert case.ca is not None
    context = ssl.create_default_context(cafile=str(case.ca.ca.cert))
    cert = case.cert_for(principal)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


class HttpClient:
    """One keep-alive connection per (identity, port); reconnects if Envoy closed it."""

    def __init__(self, case: RunningCase, identity: Identity, port: str) -> None:
        self._case, self._identity, self._port = case, identity, port
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        source = (self._identity.source_ip or LOOPBACK_OUTSIDER_IP, 0)
        port = self._case.listen[self._port]
        if self._case.ca is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1",
                port,
                source_address=source,
                timeout=10,
                context=_ssl_context(self._case, self._identity.principal),
            )
        return http.client.HTTPConnection("127.0.0.1", port, source_address=source, timeout=10)

    def send(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
        for attempt in range(2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(method, path, body, headers={**self._identity.headers, **(headers or {})})
                response = self._conn.getresponse()
                response.read()
                if response.will_close:
                    self._conn.close()
                    self._conn = None
                return response.status
            except (http.client.HTTPException, OSError):
                # Envoy may close an idle keep-alive connection between requests: reconnect once.
                self.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class GrpcClient:
    """One channel per identity, through a relay that connects from the identity's source address."""

    def __init__(self, case: RunningCase, identity: Identity) -> None:
        self._relay = SourceRelay("127.0.0.1", case.listen["grpc"], identity.source_ip or LOOPBACK_OUTSIDER_IP)
        target = f"127.0.0.1:{self._relay.port}"
        if case.ca is not None:
            cert = case.cert_for(identity.principal)
            credentials = grpc.ssl_channel_credentials(
                case.ca.ca.cert.read_bytes(), cert.key.read_bytes(), cert.cert.read_bytes()
            )
            self.channel = grpc.secure_channel(target, credentials)
        else:
            self.channel = grpc.insecure_channel(target)
        # grpcio rejects upper-case metadata keys; HTTP/2 header names are lower-case on the wire anyway,
        # so a "header-upper" near miss is the same request as the good identity on gRPC.
        self.metadata = [(name.lower(), value) for name, value in identity.headers.items()]

    def call(self, request: Request) -> grpc.StatusCode:
        return grpc_call_on(self.channel, request.path, self.metadata, message=grpc_message(request))

    def close(self) -> None:
        self.channel.close()
        self._relay.close()


@dataclass
class Observed:
    mismatches: list[str]
    allowed: Counter[str]  # per protocol: requests the proxy let through


def needs_h2(request: Request) -> bool:
    """Method names an HTTP/1.1 codec refuses, and non-POST gRPC calls, go over raw HTTP/2."""
    return request.method not in STANDARD_METHODS or (request.protocol == "grpc" and request.method != "POST")


def send_h2(case: RunningCase, identity: Identity, request: Request, sessions: dict[str, H2Session]) -> H2Response:
    """Over the identity's HTTP/2 connection to the request's port (one per port, kept open)."""
    grpc_call = request.protocol == "grpc"
    if request.protocol not in sessions:
        sessions[request.protocol] = H2Session(
            case.listen[request.protocol],
            source_ip=identity.source_ip or LOOPBACK_OUTSIDER_IP,
            tls=_ssl_context(case, identity.principal) if case.ca is not None else None,
        )
    headers = [(name.lower(), value) for name, value in identity.headers.items()]
    extra, body = sent_body(request)
    headers += [(name.lower(), value) for name, value in extra.items()]
    return sessions[request.protocol].request(
        request.method,
        request.path,
        [*(GRPC_HEADERS if grpc_call else ()), *headers],
        [grpc_frame(b"")] if grpc_call else [body] if body else [],
    )


def _observe(case: RunningCase, identity: Identity, requests: list[tuple[str, Request]]) -> Observed:
    """Send one identity's requests; what got through and the mismatches with decide()."""
    mismatches: list[str] = []
    allowed: Counter[str] = Counter()
    http_clients: dict[str, HttpClient] = {}
    h2_sessions: dict[str, H2Session] = {}
    grpc_client: GrpcClient | None = None
    try:
        for label, request in requests:
            decision = decide(case.spec, request, case.enforced)
            expected, answers = decision.allowed, refusal(decision)
            if needs_h2(request):
                response = send_h2(case, identity, request, h2_sessions)
                passed = not refused_by_proxy(response)
                allowed[request.protocol] += passed
                if passed != expected:
                    mismatches.append(f"{label}: over HTTP/2 got {response}, decide() says allowed={expected}")
                continue
            if request.protocol == "grpc":
                grpc_client = grpc_client or GrpcClient(case, identity)
                code = grpc_client.call(request)
                allowed[request.protocol] += code == grpc.StatusCode.OK
                if code != grpc.StatusCode.OK and code.value[0] not in answers.grpc:
                    mismatches.append(f"{label}: got {code.name}, decide() says {decision.reason}")
                elif (code == grpc.StatusCode.OK) != expected:
                    mismatches.append(f"{label}: got {code.name}, decide() says allowed={expected}")
                continue
            client = http_clients.setdefault(request.protocol, HttpClient(case, identity, request.protocol))
            headers, body = sent_body(request)
            request_id = uuid.uuid4().hex
            status = client.send(request.method, request.path, {**headers, REQUEST_ID_HEADER: request_id}, body)
            allowed[request.protocol] += 200 <= status < 300
            if not 200 <= status < 300 and status not in answers.http:
                mismatches.append(f"{label}: got HTTP {status}, decide() says {decision.reason}")
            elif (200 <= status < 300) != expected:
                mismatches.append(f"{label}: got {status}, decide() says allowed={expected}")
            elif 200 <= status < 300:
                problem = unlike_sent(case.backend.received_for(request_id), headers, body)
                if problem is not None:
                    mismatches.append(f"{label}: allowed, but {problem}")
    finally:
        for http_client in http_clients.values():
            http_client.close()
        for session in h2_sessions.values():
            session.close()
        if grpc_client is not None:
            grpc_client.close()
    return Observed(mismatches, allowed)


def _run_matrix(
    running: RunningCase,
    matrix: Iterable[tuple[str, Request]] | None = None,
) -> tuple[int, Counter[str], list[str]]:
    """(requests sent, allowed per protocol, mismatches with decide()) for ``matrix`` (default: the
    case's full matrix)."""
    # Identity holds a headers dict (unhashable): group by its parts, one connection set per identity.
    by_identity: dict[tuple[object, ...], list[tuple[str, Request]]] = defaultdict(list)
    for label, request in full_matrix(running.spec, LOOPBACK_OUTSIDER_IP) if matrix is None else matrix:
        who = request.identity
        by_identity[(who.principal, who.source_ip, tuple(who.headers.items()))].append((label, request))
    total = sum(len(requests) for requests in by_identity.values())
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda requests: _observe(running, requests[0][1].identity, requests), by_identity.values())
        )
    mismatches = [m for result in results for m in result.mismatches]
    allowed = sum((result.allowed for result in results), Counter[str]())
    print(
        f"envoy matrix: {total} requests, {len(by_identity)} identities, allowed {dict(allowed)}, "
        f"{len(mismatches)} mismatches"
    )
    return total, allowed, mismatches


@pytest.mark.parametrize("case", golden_cases())
def test_filter_output_on_container_port_listeners_matches_decide(case: str, tmp_path: Path) -> None:
    """The filter-only output (pinned to container ports with destination_port), for real."""
    with start_filter_host(case, tmp_path) as host:
        total, allowed, mismatches = _run_matrix(host)
    if any(rule.action == "allow" for rule in host.spec.rules):
        assert allowed, "nothing was allowed at all"
    assert not mismatches, f"{len(mismatches)} of {total} requests differ from decide():\n" + "\n".join(mismatches[:20])


def test_without_the_guard_per_model_grpc_fails_closed(tmp_path: Path) -> None:
    """The RBAC filters never trust what only the guard may write: without it (a mistake when copying the
    filter list), per-model grants deny, per-model denies deny, and a forged model header changes nothing."""
    infer = "/inference.GRPCInferenceService/ModelInfer"
    metadata = "/inference.GRPCInferenceService/ModelMetadata"
    tenant, bulk = Identity(source_ip="127.0.1.1"), Identity(source_ip="127.0.3.1")
    forged = Identity(source_ip="127.0.1.1", headers={"x-meshgen-grpc-model": "add"})
    with start_filter_host("grpc-per-model", tmp_path, without_guard=True) as host:
        for identity, path, model, allowed in [
            (tenant, infer, "add", False),
            (forged, infer, "add", False),
            (forged, infer, "hidden", False),
            (forged, metadata, "add", False),  # no per-model deny covers it: only the model gate refuses
            (bulk, infer, "other", False),  # a deny names a model: without the guard it applies to all
            (bulk, metadata, "other", True),  # no per-model rule for bulk's metadata calls
        ]:
            client = GrpcClient(host, identity)
            try:
                code = client.call(Request("grpc", "POST", path, identity, body_model=model))
            finally:
                client.close()
            assert (code == grpc.StatusCode.OK) == allowed, (identity, path, model, code)


def test_without_the_json_reader_per_model_openai_fails_closed(tmp_path: Path) -> None:
    """Without json_to_metadata (left out when copying the filter list) no body names a model: per-model
    OpenAI grants deny, a per-model deny applies to every model, and routes without models still work."""
    chat, ops = Identity(source_ip="127.0.1.1"), Identity(source_ip="127.0.5.1", headers={"x-ops-token": "ops-S3cret"})
    forged = Identity(source_ip="127.0.1.1", headers={"x-envoy-filters-http-json-to-metadata": "llama-3-8b-instruct"})
    with start_filter_host("llm-tenants", tmp_path, without_json_reader=True) as host:
        assert "openai" in host.listen
        for identity, request, allowed in [
            (chat, json_request("openai", "/v1/chat/completions", "llama-3-8b-instruct"), False),
            (forged, json_request("openai", "/v1/completions", "llama-3-8b-instruct"), False),
            (chat, json_request("openai", "/v1/embeddings", "unlisted_model"), False),
            (ops, Request("openai", "GET", "/v1/models"), True),  # no models in its rule: the body is not read
            (ops, Request("openai", "POST", "/v1/models/llama-3-8b-instruct/load"), True),
            (ops, Request("openai", "POST", "/v1/models/llama-3-70b-base/load"), False),  # the path names it
            (Identity(source_ip=LOOPBACK_OUTSIDER_IP), Request("openai", "GET", "/health/ready"), True),
        ]:
            request = dataclasses.replace(request, identity=identity)
            # What a target that cannot read the body decides.
            assert decide(host.spec, request, host.enforced - {Feature.PER_MODEL_JSON}).allowed == allowed, request
            client = HttpClient(host, identity, "openai")
            try:
                headers, body = sent_body(request)
                status = client.send(request.method, request.path, headers, body)
            finally:
                client.close()
            assert (200 <= status < 300) == allowed, (identity, request.path, request.body_model, status)


def test_matrix_matches_decide(running: RunningCase) -> None:
    total, allowed, mismatches = _run_matrix(running)
    if any(rule.action == "allow" for rule in running.spec.rules):
        assert allowed, "nothing was allowed at all: the matrix would not notice a deny-everything proxy"
    assert not mismatches, f"{len(mismatches)} of {total} requests differ from decide():\n" + "\n".join(mismatches[:20])


# Bypass probes on headers-and-ips (addresses and headers: no TLS in the way of raw paths).
# lb (127.0.1.0/24 in the loopback variant) may infer on `simple` only; nobody may touch the
# repository; admin (header + 127.0.3.0/24) may use the repository except for model `simple` (deny).
LB_IP, ADMIN_IP = "127.0.1.1", "127.0.3.1"
ADMIN_HEADERS = {"x-triton-admin": "S3cret-Token"}
PROBES: list[tuple[str, str, str, dict[str, str]]] = [
    # (source ip, method, raw path, extra headers) -- every one aims at an endpoint the identity is denied
    (LOOPBACK_OUTSIDER_IP, "GET", "/v2/health/../repository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/health/live/../../repository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/health/%2e%2e/repository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/health/%2E%2E/%2e%2e/v2/repository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "//v2//repository//index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/repository%2Findex", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/health%2F..%2Frepository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/V2/repository/index", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/repository/index/", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/repository/index?x=/v2/health/live", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/repository/index#/v2/health/live", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/repository/index;/v2/health/live", {}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/models/simple/infer", {"x-forwarded-for": LB_IP}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/models/simple/infer", {"x-forwarded-for": f"{LB_IP}, {LB_IP}"}),
    (LOOPBACK_OUTSIDER_IP, "POST", "/v2/models/simple/infer", {"x-real-ip": LB_IP, "forwarded": f"for={LB_IP}"}),
    (LB_IP, "POST", "/v2/models/simple/../other/infer", {}),
    (LB_IP, "POST", "/v2/models/simple/infer/../../other/infer", {}),
    (LB_IP, "POST", "/v2/models/simple%2F..%2Fother/infer", {}),
    (LB_IP, "POST", "/v2/models/simple%2f..%2fother/infer", {}),
    (LB_IP, "POST", "/v2/models/simple%5C..%5Cother/infer", {}),
    (LB_IP, "POST", "/v2/models/./other/infer", {}),
    (LB_IP, "POST", "/v2/models/other/infer?model=simple", {}),
    (LB_IP, "POST", "/v2/models/Other/../other/infer", {}),
    (ADMIN_IP, "POST", "/v2/repository/models/./simple/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/x/../simple/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models//simple/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/simple/load/", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/simple/./load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/sim%70le/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/%73imple/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/simple%2Fload", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/V2/repository/models/simple/load", {**ADMIN_HEADERS}),
    (ADMIN_IP, "POST", "/v2/repository/models/simple/load?x=1", {**ADMIN_HEADERS}),
]
# Denied endpoints in the backend's canonical form: none of them may ever arrive there.
DENIED_AT_BACKEND = (
    "/v2/repository/index",
    "/v2/models/other/infer",
    "/v2/models/simple/infer",
    "/v2/repository/models/simple/load",
)


@pytest.mark.parametrize("running", ["headers-and-ips"], indirect=True)
def test_bypass_probes_never_reach_denied_endpoints(running: RunningCase) -> None:
    before = len(running.backend.http_seen)
    statuses = []
    lock = threading.Lock()
    for source_ip, method, path, headers in PROBES:
        client = HttpClient(running, Identity(source_ip=source_ip), "http")
        try:
            status = client.send(method, path, headers)
        finally:
            client.close()
        with lock:
            statuses.append((status, method, path, source_ip))
    leaked = running.backend.http_seen[before:]
    reached = [
        entry for entry in leaked if entry.split(" ", 1)[1].split("?", 1)[0].split("#", 1)[0] in DENIED_AT_BACKEND
    ]
    allowed = [entry for entry in statuses if 200 <= entry[0] < 300]
    print("probe statuses:", statuses, "backend saw:", leaked)
    assert not reached and not allowed, f"reached backend: {leaked}\nstatuses: {statuses}"


MTLS_CASES = [case for case in golden_cases() if _needs_mtls(load_case(case).spec)]


@pytest.mark.parametrize("running", MTLS_CASES, indirect=True)
def test_mtls_listeners_refuse_clients_without_a_certificate(running: RunningCase) -> None:
    """With standalone.tls every listener requires a client certificate from the CA (docs/targets.md):
    a TLS client without one, and a plaintext client, never get a response nor reach the backend."""
    assert running.ca is not None
    before = (len(running.backend.http_seen), len(running.backend.grpc_seen))
    for port in running.listen:
        no_certificate = ssl.create_default_context(cafile=str(running.ca.ca.cert))
        connections = [
            http.client.HTTPSConnection("127.0.0.1", running.listen[port], timeout=5, context=no_certificate),
            http.client.HTTPConnection("127.0.0.1", running.listen[port], timeout=5),
        ]
        for connection in connections:
            try:
                connection.request("GET", "/v2/health/live")
                status: int | str = connection.getresponse().status
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
            finally:
                connection.close()
            assert not isinstance(status, int), f"{port}: answered {status} without a client certificate"
    assert (len(running.backend.http_seen), len(running.backend.grpc_seen)) == before


# Canonical endpoints whose non-canonical spellings are probed (headers-and-ips: granted to some, denied to others).
CANONICAL_TARGETS = (
    ("http", "GET", "/v2/health/live"),
    ("http", "POST", "/v2/models/simple/infer"),
    ("http", "POST", "/v2/repository/models/simple/load"),
    ("http", "POST", "/v2/repository/models/other/load"),
    ("http", "GET", "/v2/models/simple/config"),
    ("metrics", "GET", "/metrics"),
)


@pytest.mark.parametrize("running", ["headers-and-ips"], indirect=True)
def test_non_canonical_paths_are_decided_on_their_canonical_form(running: RunningCase) -> None:
    """docs/spec.md: Envoy canonicalizes (dots, unreserved escapes, backslashes, merged slashes) and then
    decides; escaped slashes get 400. The backend only ever sees the canonical path."""
    people = [
        Identity(source_ip=LOOPBACK_OUTSIDER_IP),
        Identity(source_ip=LB_IP),
        Identity(source_ip=ADMIN_IP, headers=ADMIN_HEADERS),
        Identity(source_ip="127.0.5.5"),
    ]
    targets = [Request(port, method, path) for port, method, path in CANONICAL_TARGETS]  # type: ignore[arg-type]
    failures = _canonical_failures(running, people, targets)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


# llm-tenants (loopback variant): chat-app 127.0.1.0/24 may infer on two llama models, ops 127.0.5.0/24 with
# its header may manage the repository except llama-3-70b-base (denied to everyone).
OPENAI_CANONICAL_TARGETS = (
    Request("openai", "GET", "/health/ready"),
    Request("openai", "GET", "/v1/models/llama-3-8b-instruct"),
    Request("openai", "POST", "/v1/models/llama-3-8b-instruct/load"),
    Request("openai", "POST", "/v1/models/llama-3-70b-base/unload"),
    json_request("openai", "/v1/chat/completions", "llama-3-8b-instruct"),
    json_request("openai", "/v1/embeddings", "llama-3-70b-base"),
    Request("openai", "GET", "/metrics"),
)


@pytest.mark.parametrize("running", ["llm-tenants"], indirect=True)
def test_non_canonical_openai_paths_are_decided_on_their_canonical_form(running: RunningCase) -> None:
    """The same on the OpenAI frontend's port: path-model routes and JSON body routes alike."""
    people = [
        Identity(source_ip=LOOPBACK_OUTSIDER_IP),
        Identity(source_ip="127.0.1.1"),
        Identity(source_ip="127.0.5.1", headers={"x-ops-token": "ops-S3cret"}),
    ]
    failures = _canonical_failures(running, people, OPENAI_CANONICAL_TARGETS)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


def _canonical_failures(running: RunningCase, people: list[Identity], targets: Iterable[Request]) -> list[str]:
    """Each target path in every non-canonical form, with the target's body, from each identity."""
    failures: list[str] = []
    for identity in people:
        for target in targets:
            port, method, path = target.protocol, target.method, target.path
            headers, body = sent_body(target)
            for form, make in NON_CANONICAL_FORMS:
                raw = make(path)
                canonical = envoy_canonical(raw)
                client = HttpClient(running, identity, port)
                before = len(running.backend.http_seen)
                try:
                    status = client.send(method, raw, headers, body)
                finally:
                    client.close()
                reached = running.backend.http_seen[before:]
                who = f"{port} {method} {raw!r} ({form}) from {identity.source_ip}"
                if canonical is None:
                    if status != 400 or reached:
                        failures.append(f"{who}: expected 400 (escaped slash), got {status}, backend saw {reached}")
                    continue
                request = dataclasses.replace(target, path=canonical, identity=identity)
                expected = decide(running.spec, request, running.enforced).allowed
                if (200 <= status < 300) != expected or status not in (200, 403):
                    failures.append(f"{who}: got {status}; decide({canonical}) allows={expected}")
                if reached and reached != [f"{method} {canonical}"]:
                    failures.append(f"{who}: backend saw {reached}, not the canonical {canonical}")
    return failures


def test_dry_run_denies_nothing_and_the_matrix_notices(tmp_path: Path) -> None:
    """Negative control: shadow rules never deny, so every request decide() denies is a mismatch.

    (Requests with odd method names are left out: forwarded, they only test the stand-in backend.)"""
    with start_case("headers-and-ips", tmp_path, dry_run=True) as running:
        matrix = [(label, r) for label, r in full_matrix(running.spec, LOOPBACK_OUTSIDER_IP) if not needs_h2(r)]
        total, allowed, mismatches = _run_matrix(running, matrix)
    denied = sum(not decide(running.spec, request, running.enforced).allowed for _, request in matrix)
    assert sum(allowed.values()) == total
    assert len(mismatches) == denied > 0
