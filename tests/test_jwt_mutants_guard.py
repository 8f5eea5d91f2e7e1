"""JWT clients on Istio, RequestAuthentication included: the generated documents of ``jwt-tenants`` run
through the Istio evaluator (tests/istio_eval.py: istiod's jwt_authn, then RBAC) answer every token, every
placement and every near miss as ``decide()`` says.

Allowed, 401 for a token that fails verification, 403 from jwt_authn for an audience outside its
issuer's, 403 from RBAC otherwise: the verdict, not only allowed / refused, must be ``decide()``'s. The
requests are the corpus tests/test_jwt.py sends to the real Envoy (every invalid kind, odd placements,
tokens that verify but fall just short of a client) and each client's matrix identities (its own token
and one near miss per narrowing, tests/support/matrix.py), on the probes of test_jwt.py and one request
per grant and deny of the case's JWT clients. No golden is compared: scripts/mutants.py relies on this for
the Istio JWT mutants.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshgen.policy import Decision, Identity, Request, TokenRefusal, compile_policy, decide
from tests.istio_eval import Verdict, Workload, evaluate_outcomes
from tests.support.goldens import load_case
from tests.support.istio_matrix import guards, to_istio
from tests.support.matrix import LOOPBACK_OUTSIDER_IP, identities
from tests.support.targets import istio_output
from tests.test_jwt import CASE, PROBES, SERVICE, authorization_values, near_miss_values

# Beyond test_jwt.py's probes: each rule of a JWT client of jwt-tenants (batch's model, research's deny).
GRANT_PROBES = [
    ("batch's infer", "http", "POST", "/v2/models/simple/infer", None),
    ("gRPC batch's ModelInfer", "grpc", "POST", SERVICE + "ModelInfer", "simple"),
    ("research's infer, but of hidden", "http", "POST", "/v2/models/hidden/infer", None),
    ("gRPC research's ModelInfer, but of hidden", "grpc", "POST", SERVICE + "ModelInfer", "hidden"),
    ("partner's metadata", "http", "GET", "/v2/models/add", None),
    ("model repository (ops only)", "http", "POST", "/v2/repository/index", None),
]


def expected_verdict(decision: Decision) -> Verdict:
    if decision.allowed:
        return Verdict.ALLOWED
    if decision.token is TokenRefusal.INVALID:
        return Verdict.UNAUTHENTICATED
    if decision.token is TokenRefusal.AUDIENCE:
        return Verdict.AUDIENCE_REJECTED
    return Verdict.DENIED


def requests(identities_by_label: dict[str, Identity]) -> list[tuple[str, Request]]:
    return [
        (
            f"{label} / {probe}",
            Request(
                port,  # type: ignore[arg-type]
                method,
                path,
                identity,
                body_model=model if model is not None else "",
            ),
        )
        for label, identity in identities_by_label.items()
        for probe, port, method, path, model in [*PROBES, *GRANT_PROBES]
    ]


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(istio_output(compile_policy(load_case(CASE)))))


def mismatches(documents: list[dict[str, Any]], matrix: list[tuple[str, Request]]) -> list[str]:
    spec = load_case(CASE).spec
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    active = guards(documents)
    workload = Workload(spec.metadata.namespace, spec.workload.selector)
    outcomes = evaluate_outcomes(documents, workload, [to_istio(request, ports, active) for _, request in matrix])
    problems = []
    for (label, request), outcome in zip(matrix, outcomes, strict=True):
        decision = decide(spec, request)
        if outcome.verdict is not expected_verdict(decision):
            problems.append(f"{label}: istio {outcome.verdict.value} ({outcome.reason}), decide(): {decision.reason}")
    return problems


def test_the_documents_hold_a_request_authentication(documents: list[dict[str, Any]]) -> None:
    assert [d["kind"] for d in documents].count("RequestAuthentication") == 1


def test_every_token_and_placement_is_decided_as_decide_says(documents: list[dict[str, Any]]) -> None:
    values = authorization_values() | near_miss_values()
    matrix = requests(
        {label: Identity(source_ip=LOOPBACK_OUTSIDER_IP, headers={"authorization": v}) for label, v in values.items()}
    )
    problems = mismatches(documents, matrix)
    assert not problems, f"{len(problems)}/{len(matrix)} mismatches:\n" + "\n".join(problems[:25])


def test_each_clients_token_and_its_near_misses_are_decided_as_decide_says(documents: list[dict[str, Any]]) -> None:
    people = {person.label: person.identity for person in identities(load_case(CASE).spec)}
    assert any("authorization" in identity.headers for identity in people.values())
    matrix = requests(people)
    spec = load_case(CASE).spec
    granted = {label for label, request in matrix if decide(spec, request).allowed}
    # Each client's own token reaches its grants (so the near misses are near misses of something).
    assert {"batch / batch's infer", "research / research's stats", "partner / partner's infer"} <= granted
    assert "research / research's infer, but of hidden" not in granted
    problems = mismatches(documents, matrix)
    assert not problems, f"{len(problems)}/{len(matrix)} mismatches:\n" + "\n".join(problems[:25])
