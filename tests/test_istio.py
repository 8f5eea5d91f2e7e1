"""Istio target: goldens, Istio's own schema/CEL/webhook rules, and the decision matrix.

The matrix is evaluated by tests/istio_eval.py, an Istio-semantics evaluator written from the Istio
reference notes without importing the generator; every decision must equal ``decide()``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshgen.errors import TargetError
from meshgen.policy import Request, compile_policy, decide
from meshgen.spec import load_spec_text
from meshgen.targets.envoy.openai import JSON_FILTER, body_limited
from tests.istio_eval import Workload, effective_mtls_mode
from tests.istio_validation import ENVOY_FILTER_WARNING, validate_istio_document, webhook_warnings
from tests.support.goldens import golden_cases, load_case
from tests.support.istio_matrix import istio_mismatches
from tests.support.matrix import full_matrix
from tests.support.targets import envoy_output, istio_output

CASES = golden_cases()


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def generate(case: str) -> str:
    return istio_output(compile_policy(load_case(case)))


def test_documents_pass_istio_schema_cel_and_webhook(case: str) -> None:
    for document in yaml.safe_load_all(generate(case)):
        assert validate_istio_document(document) == [], document["metadata"]["name"]
        # istiod warns about every EnvoyFilter (the guard's), and about nothing else meshgen writes.
        expected = [ENVOY_FILTER_WARNING] if document["kind"] == "EnvoyFilter" else []
        assert webhook_warnings(document) == expected
        assert document["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshgen"}
        assert "targetRefs" not in document["spec"]


def test_output_is_deterministic(case: str) -> None:
    assert generate(case) == generate(case)


def test_istio_decisions_equal_the_reference(case: str) -> None:
    loaded = load_case(case)
    spec = loaded.spec
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(generate(case)))
    matrix = list(full_matrix(spec))
    total = len(matrix)
    mismatches = istio_mismatches(spec, documents, matrix)
    assert total > 300
    assert not mismatches, f"{len(mismatches)}/{total} mismatches:\n" + "\n".join(mismatches[:20])


def test_peer_authentication_enforces_the_specs_mode_on_every_port(case: str) -> None:
    """Istio's composition of the generated PeerAuthentication gives each container port the spec's mode
    (its override, else mtls.mode): plaintext is refused exactly where the spec says STRICT."""
    spec = load_case(case).spec
    documents = list(yaml.safe_load_all(generate(case)))
    workload = Workload(spec.metadata.namespace, spec.workload.selector)
    for name, number in spec.workload.ports.served().items():
        overrides = spec.mtls.port_overrides
        expected = overrides.get(name, overrides.get(number, spec.mtls.mode))
        assert effective_mtls_mode(documents, workload, number) == expected, (case, name)


def _envoy_filters(documents: list[dict[str, Any]], filter_name: str) -> list[dict[str, Any]]:
    return [
        doc
        for doc in documents
        if doc["kind"] == "EnvoyFilter"
        and any(patch["patch"]["value"]["name"] == filter_name for patch in doc["spec"]["configPatches"])
    ]


def _assert_inserted_before_rbac(envoy_filter: dict[str, Any], port: int, selector: dict[str, str]) -> None:
    [patch] = envoy_filter["spec"]["configPatches"]
    assert patch["match"]["listener"]["portNumber"] == port
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == selector
    assert (patch["applyTo"], patch["patch"]["operation"]) == ("HTTP_FILTER", "INSERT_BEFORE")
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.rbac"


def test_the_envoy_filter_runs_the_envoy_targets_guard_byte_for_byte(case: str) -> None:
    """One guard: the Lua text Istio's sidecar runs is the one proven on the real Envoy."""
    policy = compile_policy(load_case(case))
    documents = list(yaml.safe_load_all(generate(case)))
    filters = _envoy_filters(documents, "meshgen.grpc_model_guard")
    envoy_filters = yaml.safe_load(envoy_output(policy))
    delegated = [f for f in envoy_filters if f["name"] == "meshgen.grpc_model_guard"]
    assert len(filters) == len(delegated) <= 1
    for envoy_filter, wrapper in zip(filters, delegated, strict=True):
        [patch] = envoy_filter["spec"]["configPatches"]
        assert patch["patch"]["value"] == wrapper["typed_config"]["extension_config"]
        _assert_inserted_before_rbac(envoy_filter, policy.port("grpc"), dict(policy.selector))


def test_the_openai_model_reader_is_the_envoy_targets_json_filter(case: str) -> None:
    """One JSON reader: the json_to_metadata filter Istio's sidecar runs on the OpenAI port is the Envoy
    target's (run on the real Envoy by the conformance suites), present exactly where a rule limits the
    OpenAI inference routes to models; every EnvoyFilter is the guard or this reader."""
    policy = compile_policy(load_case(case))
    documents = list(yaml.safe_load_all(generate(case)))
    readers = _envoy_filters(documents, JSON_FILTER)
    guards = _envoy_filters(documents, "meshgen.grpc_model_guard")
    assert len(readers) + len(guards) == sum(doc["kind"] == "EnvoyFilter" for doc in documents)
    envoy_filters = yaml.safe_load(envoy_output(policy))
    delegated = [f for f in envoy_filters if f["name"] == JSON_FILTER]
    assert len(readers) == len(delegated) == (1 if body_limited(policy) else 0)
    for envoy_filter, wrapper in zip(readers, delegated, strict=True):
        [patch] = envoy_filter["spec"]["configPatches"]
        assert patch["patch"]["value"] == wrapper["typed_config"]["extension_config"]
        assert envoy_filter["metadata"]["name"] == f"{policy.name}-openai-model-reader"
        _assert_inserted_before_rbac(envoy_filter, policy.port("openai"), dict(policy.selector))


def test_ports_in_the_matrix_cannot_cross() -> None:
    """A health path sent to the gRPC or metrics port is denied even for anyone-health rules."""
    loaded = load_case("triton-access")
    assert decide(loaded.spec, Request("http", "GET", "/v2/health/live")).allowed
    assert not decide(loaded.spec, Request("metrics", "GET", "/v2/health/live")).allowed


HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: t, namespace: n}
workload: {selector: {app: t}}
"""


def test_header_values_istio_would_read_as_wildcards_are_refused() -> None:
    spec = HEAD + "clients:\n  a: {headers: {x-k: 'tok*'}}\nrules:\n  - {allow: [health], from: [a]}\n"
    with pytest.raises(TargetError, match="wildcard"):
        istio_output(compile_policy(load_spec_text(spec, "s.yaml", {})))


def test_no_allow_rules_means_an_allow_policy_without_rules() -> None:
    documents = list(yaml.safe_load_all(istio_output(compile_policy(load_spec_text(HEAD, "s.yaml", {})))))
    assert [d["metadata"]["name"] for d in documents] == ["t-allow", "t-mtls"]
    assert "rules" not in documents[0]["spec"] and documents[0]["spec"]["action"] == "ALLOW"


def test_dry_run_annotates_every_policy() -> None:
    loaded = load_case("deny-allow-overlap")
    documents = list(yaml.safe_load_all(istio_output(compile_policy(loaded), dry_run=True)))
    policies = [d for d in documents if d["kind"] == "AuthorizationPolicy"]
    assert policies and all(d["metadata"]["annotations"] == {"istio.io/dry-run": "true"} for d in policies)
