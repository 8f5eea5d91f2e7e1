"""Istio ambient mode (``mesh.mode: ambient``): goldens against Istio's schema/CEL/webhook rules, and the
decision matrix through the two stages of tests/istio_eval.py (waypoint, then destination ztunnel).

The evaluator's ambient stages are written from the Istio 1.30.3 source (/work/notes/ambient.md), not
from meshgen; the topology (Service, waypoint, its identity) is read from the spec.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshgen.address import PORT_NAMES
from meshgen.errors import SpecError, TargetError
from meshgen.features import Feature
from meshgen.policy import compile_policy, decide
from meshgen.spec import load_spec_text
from tests.istio_eval import (
    Verdict,
    Workload,
    ambient_strict,
    evaluate_ambient,
    ztunnel_policy,
)
from tests.istio_validation import validate_istio_document, webhook_warnings
from tests.support.goldens import AMBIENT_PREFIX, ambient_cases, load_case
from tests.support.istio_matrix import (
    ambient_direct_results,
    ambient_mismatches,
    ambient_topology,
    as_mesh_client,
    to_istio,
)
from tests.support.matrix import full_matrix
from tests.support.targets import ISTIO, enforced_by, istio_output

CASES = ambient_cases()


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def documents_of(case: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(istio_output(compile_policy(load_case(case)))))


def test_every_golden_spec_has_an_ambient_twin() -> None:
    assert len(CASES) == 10
    for case in CASES:
        assert load_case(case).spec.mesh.mode == "ambient"
        assert load_case(case.removeprefix(AMBIENT_PREFIX)).spec.mesh.mode == "sidecar"


def test_documents_pass_istio_schema_cel_and_webhook(case: str) -> None:
    spec = load_case(case).spec
    for document in documents_of(case):
        name = document["metadata"]["name"]
        assert validate_istio_document(document) == [], name
        assert webhook_warnings(document) == [], name
        assert document["kind"] != "EnvoyFilter"  # unsupported on waypoints: body inspection is withheld
        attachment = {"selector", "targetRefs"} & document["spec"].keys()
        if document["kind"] == "RequestAuthentication" or name.endswith(("-waypoint-allow", "-waypoint-deny")):
            assert attachment == {"targetRefs"}, name
            assert document["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": spec.workload.service}]
        else:
            assert attachment == {"selector"}, name


def test_the_ztunnel_policy_is_l4_only_and_admits_only_the_waypoint(case: str) -> None:
    """istiod drops nothing from it (no HTTP field), and the only identity it admits is the waypoint's."""
    spec = load_case(case).spec
    selector_policies = [
        d for d in documents_of(case) if d["kind"] == "AuthorizationPolicy" and "selector" in d["spec"]
    ]
    assert [d["metadata"]["name"] for d in selector_policies] == [f"{spec.metadata.name}-ztunnel"]
    converted = ztunnel_policy(selector_policies[0])
    assert converted is not None and converted.dropped_http == () and converted.action == "ALLOW"
    for rule in selector_policies[0]["spec"].get("rules", []):
        assert [entry["source"] for entry in rule["from"]] == [
            {"principals": [ambient_topology(spec).waypoint_principal]}
        ]


def test_ambient_decisions_through_waypoint_and_ztunnel_equal_the_reference(case: str) -> None:
    loaded = load_case(case)
    policy = compile_policy(loaded)
    matrix = list(full_matrix(loaded.spec))
    result = ambient_mismatches(loaded.spec, documents_of(case), matrix, enforced_by(ISTIO, policy))
    assert result.compared == len(matrix) > 300
    assert not result.mismatches, f"{len(result.mismatches)}/{result.compared} mismatches:\n" + "\n".join(
        result.mismatches[:20]
    )


def test_nothing_reaches_the_pod_without_the_waypoint(case: str) -> None:
    """Pod-IP traffic (the waypoint is for Service traffic), ingress without ingress-use-waypoint, and
    plaintext from outside the mesh: every rule is L7, so the destination ztunnel denies all of it."""
    loaded = load_case(case)
    enforced = enforced_by(ISTIO, compile_policy(loaded))
    results = ambient_direct_results(loaded.spec, documents_of(case), list(full_matrix(loaded.spec)))
    allowed = [label for label, _, outcome in results if outcome.allowed]
    assert not allowed, allowed[:10]
    # ... including every request an L7 rule would have allowed through the waypoint.
    granted = [label for label, request, _ in results if decide(loaded.spec, as_mesh_client(request), enforced).allowed]
    assert granted or not loaded.spec.rules or all(r.action == "deny" for r in loaded.spec.rules)


def test_peer_authentication_as_ztunnel_reads_it(case: str) -> None:
    """STRICT where the spec says so; DISABLE is written as PERMISSIVE, which is what ambient does with it."""
    spec = load_case(case).spec
    workload = Workload(spec.metadata.namespace, spec.workload.selector)
    documents = documents_of(case)
    [peer] = [d for d in documents if d["kind"] == "PeerAuthentication"]
    assert "DISABLE" not in yaml.safe_dump(peer)
    for name in PORT_NAMES:
        number = spec.workload.ports.by_name(name)
        overrides = spec.mtls.port_overrides
        expected = overrides.get(name, overrides.get(number, spec.mtls.mode))
        assert ambient_strict(documents, workload, number) == (expected == "STRICT"), (case, name)


# --- the negative control: sidecar output read by ambient ------------------------------------------------


def test_sidecar_output_in_ambient_is_deny_all_and_its_denies_widen() -> None:
    """The trap the ambient output avoids, seen by the same evaluator: the sidecar policies of the
    deny-allow-overlap case under ambient. The waypoint ignores them (no targetRefs), ztunnel drops every
    ALLOW rule (all name paths: deny-all) and enforces the DENY rules without methods and paths (wider)."""
    loaded = load_case("deny-allow-overlap")
    spec = loaded.spec.model_copy(update={"workload": loaded.spec.workload.model_copy(update={"service": "triton"})})
    sidecar = list(yaml.safe_load_all(istio_output(compile_policy(loaded))))
    matrix = list(full_matrix(spec))
    granted = [(label, r) for label, r in matrix if decide(spec, as_mesh_client(r)).allowed]
    assert len(granted) > 50
    ambient = ambient_topology(spec)
    ports = {name: spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    requests = [to_istio(as_mesh_client(r), ports) for _, r in granted]
    outcomes = evaluate_ambient(sidecar, ambient, requests)
    assert all(outcome.verdict is Verdict.DENIED for outcome in outcomes)  # every grant lost
    widened = [o for o in outcomes if "DENY inference/overlap-deny" in o.reason]
    assert len(widened) > 0  # a deny of /v2/models/stats on 8000 became a deny of port 8000
    [allow] = [d for d in sidecar if d["metadata"]["name"] == "overlap-allow"]
    [deny] = [d for d in sidecar if d["metadata"]["name"] == "overlap-deny"]
    converted_allow, converted_deny = ztunnel_policy(allow), ztunnel_policy(deny)
    assert converted_allow is not None and converted_allow.rules == ()  # ALLOW without rules: deny-all
    assert converted_deny is not None and len(converted_deny.rules) == len(deny["spec"]["rules"])
    assert {"methods", "paths"} <= set(converted_allow.dropped_http)  # the ZtunnelAccepted status list
    # Without the widened DENY, the deny-all alone still denies everything.
    only_allow = [d for d in sidecar if d["metadata"]["name"] != "overlap-deny"]
    assert not any(o.allowed for o in evaluate_ambient(only_allow, ambient, requests))


def test_the_ambient_output_makes_those_grants() -> None:
    """The twin of the control: the same grants through the ambient output are allowed."""
    loaded = load_case("ambient-deny-allow-overlap")
    enforced = enforced_by(ISTIO, compile_policy(loaded))
    matrix = list(full_matrix(loaded.spec))
    granted = [as_mesh_client(r) for _, r in matrix if decide(loaded.spec, as_mesh_client(r), enforced).allowed]
    ports = {name: loaded.spec.workload.ports.by_name(name) for name in ("http", "grpc", "metrics")}
    outcomes = evaluate_ambient(
        documents_of("ambient-deny-allow-overlap"),
        ambient_topology(loaded.spec),
        [to_istio(r, ports) for r in granted],
    )
    assert granted and all(outcome.allowed for outcome in outcomes)


# --- spec and capability errors ------------------------------------------------------------------------

HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: t, namespace: n}
workload: {selector: {app: t}, service: triton}
"""


def test_ambient_needs_the_service() -> None:
    spec = HEAD.replace(", service: triton", "") + "mesh: {mode: ambient}\n"
    with pytest.raises(SpecError, match=r"workload\.service") as error:
        load_spec_text(spec, "s.yaml", {})
    assert str(error.value).startswith("s.yaml:5:")


def test_waypoint_settings_are_ambient_only() -> None:
    with pytest.raises(SpecError, match=r"mesh\.waypoint only applies to mesh\.mode: ambient"):
        load_spec_text(HEAD + "mesh: {waypoint: wp}\n", "s.yaml", {})


def test_l7_rules_without_a_waypoint_are_refused() -> None:
    spec = HEAD + "mesh: {mode: ambient, waypoint: none}\nrules:\n  - {allow: [health], from: anyone}\n"
    with pytest.raises(TargetError, match=r"mesh\.waypoint is none") as error:
        istio_output(compile_policy(load_spec_text(spec, "s.yaml", {})))
    assert str(error.value).startswith("s.yaml:5:")


def test_no_waypoint_and_no_rules_is_a_ztunnel_deny_all() -> None:
    spec = HEAD + "mesh: {mode: ambient, waypoint: none}\n"
    documents = list(yaml.safe_load_all(istio_output(compile_policy(load_spec_text(spec, "s.yaml", {})))))
    assert [d["metadata"]["name"] for d in documents] == ["t-ztunnel", "t-mtls"]
    assert "rules" not in documents[0]["spec"]


def test_dry_run_is_refused_in_ambient() -> None:
    spec = HEAD + "mesh: {mode: ambient}\n"
    with pytest.raises(TargetError, match="ztunnel drops dry-run"):
        istio_output(compile_policy(load_spec_text(spec, "s.yaml", {})), dry_run=True)


def test_per_model_grpc_is_withheld_in_ambient_with_a_warning() -> None:
    policy = compile_policy(load_case("ambient-grpc-per-model"))
    generated = ISTIO.generate(policy, ISTIO.options_type())
    assert generated.withheld and {w.feature for w in generated.withheld} == {Feature.PER_MODEL_GRPC}
    assert "EnvoyFilter" in str(generated.withheld[0].warning())
    assert "kind: EnvoyFilter" not in generated.text


def test_cli_exits_2_for_l7_rules_without_a_waypoint(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(HEAD + "mesh: {mode: ambient, waypoint: none}\nrules:\n  - {allow: [health], from: anyone}\n")
    for command in ("istio", "all"):
        args = [sys.executable, "-m", "meshgen", command, str(spec)] + (
            ["-o", str(tmp_path / "out")] if command == "all" else []
        )
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"{spec}:5:1: error: istio: mesh.waypoint is none"), result.stderr
