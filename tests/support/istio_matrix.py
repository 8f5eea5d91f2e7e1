"""Run a request matrix through the Istio evaluator and compare each decision with ``decide()``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshgen.policy import Request, decide
from meshgen.spec import Spec
from tests.istio_eval import IstioRequest, Workload, evaluate_all


def to_istio(request: Request, ports: Mapping[str, int]) -> IstioRequest:
    """The request as the Triton workload's sidecar sees it (its container port, peer identity, headers)."""
    identity = request.identity
    return IstioRequest(
        port=ports[request.protocol],
        method=request.method,
        path=request.path,
        principal=identity.principal,
        source_ip=identity.source_ip,
        headers=dict(identity.headers),
    )


def istio_mismatches(
    spec: Spec, documents: Sequence[Mapping[str, Any]], matrix: Sequence[tuple[str, Request]]
) -> list[str]:
    """One line per request where the generated policies decide differently from ``decide()``."""
    policies = [doc for doc in documents if doc["kind"] == "AuthorizationPolicy"]
    workload = Workload(spec.metadata.namespace, spec.workload.selector)
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    observed = evaluate_all(policies, workload, [to_istio(request, ports) for _, request in matrix])
    mismatches = []
    for (label, request), allowed in zip(matrix, observed, strict=True):
        if allowed != decide(spec, request).allowed:
            mismatches.append(f"{label}: istio {'allows' if allowed else 'denies'}, decide() does not")
    return mismatches
