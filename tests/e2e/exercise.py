"""Drive one proxy in front of the real Triton with the whole call list, once per identity.

Per identity: tritonclient.http goes through an :class:`HttpTap` that connects from the identity's
source address (so the proxy sees that address) and records the exact requests; tritonclient.grpc goes
through a :class:`GrpcRecorder` whose upstream is a SourceRelay from that address. Each call's outcome
keeps its wire requests and the slice of Triton's verbose log written while it ran.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from meshgen.features import Feature
from meshgen.policy import Identity, Request, decide
from meshgen.policy.decide import EVERY_FEATURE
from meshgen.spec import Spec
from tests.e2e.calls import Call, Clients, all_calls
from tests.e2e.triton_server import TritonServer
from tests.e2e.wire import GrpcRecorder, HttpTap, WireLog, WireRequest
from tests.support.matrix import LOOPBACK_OUTSIDER_IP
from tests.support.relay import SourceRelay

# Triton's verbose log: one line per HTTP request when it arrives, and "step START" when a gRPC call
# is picked up by its handler. Neither appears for a request that never reached the server.
HTTP_ARRIVAL = '"HTTP request: '
GRPC_ARRIVAL = " step START"
SPECS_DIR = Path(__file__).resolve().parent / "specs"
STATS_WAIT = 5.0


@dataclass(frozen=True)
class E2eIdentity:
    label: str
    source_ip: str
    headers: dict[str, str]


def _first_host(block: str) -> str:
    network = ipaddress.ip_network(block, strict=False)
    return str(network.network_address + 1) if network.num_addresses > 1 else str(network.network_address)


def identities(spec: Spec) -> list[E2eIdentity]:
    """Each client from its first address with its headers; each header client without its header; nobody."""
    result = [E2eIdentity("nobody", LOOPBACK_OUTSIDER_IP, {})]
    for name, client in spec.clients.items():
        source_ip = _first_host(client.ip_blocks[0]) if client.ip_blocks else LOOPBACK_OUTSIDER_IP
        headers = {header: str(value) for header, value in (client.headers or {}).items()}
        result.append(E2eIdentity(name, source_ip, headers))
        if headers and client.ip_blocks:
            result.append(E2eIdentity(f"{name} without its header", source_ip, {}))
    return result


@dataclass
class Outcome:
    call: Call
    identity: E2eIdentity
    wire: list[WireRequest]
    result: Any = None
    error: InferenceServerException | None = None
    triton_log: str = ""
    inferences_counted: int | None = None  # Triton's success count of the model moved by this much

    @property
    def label(self) -> str:
        return f"{self.call.label} as {self.identity.label}"

    def expected_allowed(self, spec: Spec, enforced: Collection[Feature] = EVERY_FEATURE) -> bool:
        """decide() on every wire request the call made (all of them must be allowed), for a target that
        enforces ``enforced``. tritonclient's gRPC messages are canonical, so the model a body-reading
        proxy proves is the call's own model."""
        return bool(self.wire) and all(decide(spec, self.request(wire), enforced).allowed for wire in self.wire)

    def request(self, wire: WireRequest) -> Request:
        return to_request(wire, self.call.model or "")

    def reached_triton(self) -> bool:
        marker = GRPC_ARRIVAL if self.call.protocol == "grpc" else HTTP_ARRIVAL
        return marker in self.triton_log


def to_request(wire: WireRequest, body_model: str | None = "") -> Request:
    identity = Identity(None, wire.source_ip, dict(wire.headers))
    return Request(wire.protocol, wire.method, wire.path, identity, body_model if wire.protocol == "grpc" else "")


def _inference_count(direct: Any, model: str) -> int:
    """Triton's own count of successful inferences of ``model``, asked directly (not through a proxy)."""
    stats = direct.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def _run_call(
    call: Call, clients: Clients, log: WireLog, identity: E2eIdentity, server: TritonServer, direct: Any
) -> Outcome:
    # Loading a model (even an unchanged one) resets its statistics: count around each inference call.
    counted = call.model if call.category == "inference" else None
    before = _inference_count(direct, counted) if counted else 0
    mark, offset = log.mark(), server.log_size()
    outcome = Outcome(call, identity, [])
    try:
        outcome.result = call.run(clients)
    except InferenceServerException as error:
        outcome.error = error
    outcome.wire = log.since(mark)
    outcome.triton_log = server.log_since(offset)
    if counted:
        # Triton updates statistics when it releases the request, just after the answer is sent: wait
        # for a call the client saw succeed to show up, so it cannot land in the next call's window.
        answered = outcome.error is None
        deadline = time.monotonic() + STATS_WAIT
        while True:
            outcome.inferences_counted = _inference_count(direct, counted) - before
            if not answered or outcome.inferences_counted >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    return outcome


@dataclass
class ProxyPorts:
    http: int
    grpc: int
    metrics: int


def run_pass(server: TritonServer, proxy: ProxyPorts, spec: Spec) -> list[Outcome]:
    """Every identity of ``spec`` makes every call through the proxy; the outcomes in order."""
    direct = httpclient.InferenceServerClient(server.http_url)
    try:
        return [outcome for identity in identities(spec) for outcome in _identity_pass(server, proxy, identity, direct)]
    finally:
        direct.close()


def _identity_pass(server: TritonServer, proxy: ProxyPorts, identity: E2eIdentity, direct: Any) -> Iterator[Outcome]:
    log = WireLog()
    with ExitStack() as stack:
        http_tap = stack.enter_context(HttpTap(proxy.http, log, "http", identity.source_ip))
        metrics_tap = stack.enter_context(HttpTap(proxy.metrics, log, "metrics", identity.source_ip))
        relay = stack.enter_context(SourceRelay("127.0.0.1", proxy.grpc, identity.source_ip))
        recorder = stack.enter_context(GrpcRecorder(f"127.0.0.1:{relay.port}", log, identity.source_ip))
        http = httpclient.InferenceServerClient(http_tap.url)
        stack.callback(http.close)
        grpc = grpcclient.InferenceServerClient(recorder.url)
        stack.callback(grpc.close)
        clients = Clients(http, grpc, metrics_tap.port, identity.headers)
        outcomes = [_run_call(call, clients, log, identity, server, direct) for call in all_calls()]
    yield from outcomes
