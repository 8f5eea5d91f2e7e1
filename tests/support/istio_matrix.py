"""Run a request matrix through the Istio evaluator and compare each decision with ``decide()``.

Per-model gRPC rules read the dynamic metadata of the gRPC model guard, which the generated EnvoyFilter
inserts into the sidecar. The evaluator does not run Lua: for each request the metadata is the guard's
documented result (the model the message names, or "unproven"), for the methods the EnvoyFilter's guard
inspects on its port. The guard's text is the one the Envoy target runs, where its behaviour on every
byte string is proven against protobuf (tests/test_grpc_body.py); tests/test_istio.py checks they match.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshgen.features import Feature
from meshgen.policy import Request, decide
from meshgen.policy.decide import EVERY_FEATURE
from meshgen.spec import Spec
from tests.istio_eval import IstioRequest, Workload, evaluate_all

_FIELD = re.compile(r'\["(?P<path>/[^"]+)"\] = (?P<field>[0-9]+),')
_NAMESPACE = re.compile(r'^local NAMESPACE = "(?P<namespace>[^"]+)"$', re.M)


@dataclass(frozen=True)
class Guard:
    """What the EnvoyFilter's guard inspects: on which container port, which methods, where it writes."""

    port: int
    paths: frozenset[str]
    namespace: str


def guards(documents: Sequence[Mapping[str, Any]]) -> list[Guard]:
    found = []
    for document in documents:
        if document.get("kind") != "EnvoyFilter":
            continue
        for patch in document["spec"]["configPatches"]:
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


def to_istio(request: Request, ports: Mapping[str, int], active: Sequence[Guard] = ()) -> IstioRequest:
    """The request as the Triton workload's sidecar sees it (its container port, peer identity, headers)."""
    identity = request.identity
    port = ports[request.protocol]
    return IstioRequest(
        port=port,
        method=request.method,
        path=request.path,
        principal=identity.principal,
        source_ip=identity.source_ip,
        headers=dict(identity.headers),
        metadata=guard_metadata(request, port, active),
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
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    active = guards(documents)
    observed = evaluate_all(policies, workload, [to_istio(request, ports, active) for _, request in matrix])
    mismatches = []
    for (label, request), allowed in zip(matrix, observed, strict=True):
        if allowed != decide(spec, request, enforced).allowed:
            mismatches.append(f"{label}: istio {'allows' if allowed else 'denies'}, decide() does not")
    return mismatches
