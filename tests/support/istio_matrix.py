"""Run a request matrix through the Istio evaluator and compare each decision with ``decide()``.

Per-model gRPC rules read the dynamic metadata of the gRPC model guard, which the generated EnvoyFilter
inserts into the sidecar. The evaluator does not run Lua: for each request the metadata is the guard's
documented result (the model the message names, or "unproven"), for the methods the EnvoyFilter's guard
inspects on its port. The guard's text is the one the Envoy target runs, where its behaviour on every
byte string is proven against protobuf (tests/test_grpc_body.py); tests/test_istio.py checks they match.

Per-model OpenAI inference rules read the metadata of Envoy's json_to_metadata filter, which another
EnvoyFilter inserts on the OpenAI port: the body's top-level ``model`` where it is a non-empty JSON
string the filter reads (``Request.body_model``), nothing otherwise. That filter's configuration is the
Envoy target's (tests/test_istio.py), run on the real Envoy by the Envoy conformance suites.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshgen.features import Feature
from meshgen.policy import Request, decide
from meshgen.policy.decide import EVERY_FEATURE
from meshgen.spec import Spec
from meshgen.targets.envoy.openai import JSON_FILTER
from tests.istio_eval import Ambient, IstioRequest, Outcome, Workload, evaluate_all, evaluate_ambient
from tests.support.matrix import JSON, BodyRequest

_FIELD = re.compile(r'\["(?P<path>/[^"]+)"\] = (?P<field>[0-9]+),')
_NAMESPACE = re.compile(r'^local NAMESPACE = "(?P<namespace>[^"]+)"$', re.M)


@dataclass(frozen=True)
class Guard:
    """What the EnvoyFilter's guard inspects: on which container port, which methods, where it writes."""

    port: int
    paths: frozenset[str]
    namespace: str


@dataclass(frozen=True)
class JsonReader:
    """An EnvoyFilter's json_to_metadata filter: on which container port, which top-level keys it writes
    to which metadata (namespace, key)."""

    port: int
    keys: Mapping[str, tuple[str, str]]
    content_types: frozenset[str]  # the only Content-Type values whose bodies it reads


def _patches(documents: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        patch
        for document in documents
        if document.get("kind") == "EnvoyFilter"
        for patch in document["spec"]["configPatches"]
    ]


def json_readers(documents: Sequence[Mapping[str, Any]]) -> list[JsonReader]:
    found = []
    for patch in _patches(documents):
        value = patch["patch"]["value"]
        if value["name"] != JSON_FILTER:
            continue
        keys = {}
        for rule in value["typed_config"]["request_rules"]["rules"]:
            [selector] = rule["selectors"]  # a top-level key: what the evaluator's metadata models
            target = rule["on_present"]
            keys[selector["key"]] = (target["metadata_namespace"], target["key"])
        # Envoy's default without allow_content_types: application/json only.
        content_types = frozenset(value["typed_config"]["request_rules"].get("allow_content_types", [JSON]))
        found.append(JsonReader(patch["match"]["listener"]["portNumber"], keys, content_types))
    return found


def guards(documents: Sequence[Mapping[str, Any]]) -> list[Guard]:
    """The gRPC model guards (Lua) among the EnvoyFilters."""
    found = []
    for patch in _patches(documents):
        if patch["patch"]["value"]["name"] == JSON_FILTER:
            continue
        script = patch["patch"]["value"]["typed_config"]["default_source_code"]["inline_string"]
        namespace = _NAMESPACE.search(script)
        assert namespace is not None
        paths = frozenset(m["path"] for m in _FIELD.finditer(script))
        found.append(Guard(patch["match"]["listener"]["portNumber"], paths, namespace["namespace"]))
    return found


def guard_metadata(request: Request, port: int, active: Sequence[Guard]) -> dict[str, dict[str, str]]:
    for guard in active:
        if request.protocol == "grpc" and port == guard.port and request.path in guard.paths:
            if request.body_model is None:
                return {guard.namespace: {"inspected": "1", "unproven": "the message cannot be proven"}}
            return {guard.namespace: {"inspected": "1", "model": request.body_model}}
    return {}


def json_metadata(request: Request, port: int, readers: Sequence[JsonReader]) -> dict[str, dict[str, str]]:
    """What json_to_metadata writes for the request's body: its ``model`` string, where it is one (a
    non-empty JSON string in a body of a Content-Type the filter reads); on any path of the reader's port."""
    metadata: dict[str, dict[str, str]] = {}
    content_type = request.content_type if isinstance(request, BodyRequest) else None
    for reader in readers:
        if (
            port == reader.port
            and request.body_model
            and content_type in reader.content_types
            and "model" in reader.keys
        ):
            namespace, key = reader.keys["model"]
            metadata.setdefault(namespace, {})[key] = request.body_model
    return metadata


def to_istio(
    request: Request,
    ports: Mapping[str, int],
    active: Sequence[Guard] = (),
    readers: Sequence[JsonReader] = (),
) -> IstioRequest:
    """The request as the Triton workload's sidecar sees it (its container port, peer identity, headers,
    the metadata of the filters the EnvoyFilters insert before RBAC)."""
    identity = request.identity
    port = ports[request.protocol]
    return IstioRequest(
        port=port,
        method=request.method,
        path=request.path,
        principal=identity.principal,
        source_ip=identity.source_ip,
        headers=dict(identity.headers),
        metadata={**guard_metadata(request, port, active), **json_metadata(request, port, readers)},
    )


def istio_mismatches(
    spec: Spec,
    documents: Sequence[Mapping[str, Any]],
    matrix: Sequence[tuple[str, Request]],
    enforced: Collection[Feature] = EVERY_FEATURE,
) -> list[str]:
    """One line per request where the generated policies decide differently from ``decide()``."""
    # RequestAuthentication too: it verifies tokens and removes them before RBAC (JWT clients).
    policies = [doc for doc in documents if doc["kind"] in ("AuthorizationPolicy", "RequestAuthentication")]
    workload = Workload(spec.metadata.namespace, spec.workload.selector)
    ports: dict[str, int] = {name: number for name, number in spec.workload.ports.served().items()}
    active, readers = guards(documents), json_readers(documents)
    observed = evaluate_all(policies, workload, [to_istio(request, ports, active, readers) for _, request in matrix])
    mismatches = []
    for (label, request), allowed in zip(matrix, observed, strict=True):
        if allowed != decide(spec, request, enforced).allowed:
            mismatches.append(f"{label}: istio {'allows' if allowed else 'denies'}, decide() does not")
    return mismatches


# --- ambient: the same matrix through the waypoint and the destination ztunnel -------------------------

# A pod captured by ambient always has an identity: a request the matrix sends without one comes, in
# ambient, from a mesh pod whose identity matches no client (and, separately, from outside the mesh,
# which can only reach the pod directly: see ``ambient_direct_results``).
AMBIENT_OUTSIDER = "cluster.local/ns/ambient-outsider/sa/client"


@dataclass(frozen=True)
class AmbientResult:
    compared: int  # matrix requests through waypoint + ztunnel, compared with decide()
    mismatches: tuple[str, ...]


def ambient_topology(spec: Spec) -> Ambient:
    """The evaluator's view of the spec's deployment, read from the spec (not from meshgen's output)."""
    assert spec.workload.service is not None
    waypoint = spec.mesh.waypoint or "waypoint"
    trust_domain = spec.mesh.trust_domain or "cluster.local"
    namespace = spec.metadata.namespace
    return Ambient(
        Workload(namespace, spec.workload.selector),
        spec.workload.service,
        waypoint,
        f"{trust_domain}/ns/{namespace}/sa/{waypoint}",
    )


def as_mesh_client(request: Request) -> Request:
    if request.identity.principal is not None:
        return request
    return dataclasses.replace(request, identity=dataclasses.replace(request.identity, principal=AMBIENT_OUTSIDER))


def ambient_mismatches(
    spec: Spec,
    documents: Sequence[Mapping[str, Any]],
    matrix: Sequence[tuple[str, Request]],
    enforced: Collection[Feature] = EVERY_FEATURE,
) -> AmbientResult:
    """Every request, from a mesh client, through the waypoint then the destination ztunnel, == decide()."""
    ambient = ambient_topology(spec)
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    mesh = [(label, as_mesh_client(request)) for label, request in matrix]
    observed = evaluate_ambient(documents, ambient, [to_istio(request, ports) for _, request in mesh])
    mismatches = []
    for (label, request), outcome in zip(mesh, observed, strict=True):
        if outcome.allowed != decide(spec, request, enforced).allowed:
            verdict = "allows" if outcome.allowed else f"denies ({outcome.reason})"
            mismatches.append(f"{label}: ambient {verdict}, decide() does not")
    return AmbientResult(len(mesh), tuple(mismatches))


def ambient_direct_results(
    spec: Spec, documents: Sequence[Mapping[str, Any]], matrix: Sequence[tuple[str, Request]]
) -> list[tuple[str, Request, Outcome]]:
    """Every request sent straight to the pod (pod IP, or from outside the mesh): only ztunnel decides."""
    ambient = ambient_topology(spec)
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    requests = [to_istio(request, ports) for _, request in matrix]
    outcomes = evaluate_ambient(documents, ambient, requests, via_waypoint=False)
    return [(label, request, outcome) for (label, request), outcome in zip(matrix, outcomes, strict=True)]
