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
from tests.istio_validation import validate_istio_document, webhook_warnings
from tests.support.goldens import golden_cases, load_case
from tests.support.istio_matrix import istio_mismatches
from tests.support.matrix import full_matrix
from tests.support.targets import istio_output

CASES = golden_cases()


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def generate(case: str) -> str:
    return istio_output(compile_policy(load_case(case)))


def test_documents_pass_istio_schema_cel_and_webhook(case: str) -> None:
    for document in yaml.safe_load_all(generate(case)):
        assert validate_istio_document(document) == [], document["metadata"]["name"]
        assert webhook_warnings(document) == []
        assert document["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshgen"}
        assert "targetRefs" not in document["spec"]


def test_output_is_deterministic(case: str) -> None:
    assert generate(case) == generate(case)


def test_istio_decisions_equal_the_reference(case: str) -> None:
    loaded = load_case(case)
    spec = loaded.spec
    policies: list[dict[str, Any]] = [
        doc for doc in yaml.safe_load_all(generate(case)) if doc["kind"] == "AuthorizationPolicy"
    ]
    matrix = list(full_matrix(spec))
    total = len(matrix)
    mismatches = istio_mismatches(spec, policies, matrix)
    assert total > 300
    assert not mismatches, f"{len(mismatches)}/{total} mismatches:\n" + "\n".join(mismatches[:20])


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
