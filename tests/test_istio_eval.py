"""Table-driven tests for the reference Istio AuthorizationPolicy evaluator (tests/istio_eval.py).

Expectations come from the Istio semantics notes, not from meshgen: this file must not import meshgen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.istio_eval import (
    InvalidPolicyError,
    IstioRequest,
    Outcome,
    UnsupportedPolicyError,
    Verdict,
    Workload,
    evaluate,
    evaluate_all,
    evaluate_outcomes,
    normalize_path,
    policy_applies,
    rule_matches,
    validate_policy,
    validate_request_authentication,
)
from tests.istio_validation import shared_reference_dir
from tests.support.jwt_tokens import SigningKey, b64url, claims, der_signed, invalid_tokens, jwks, mint, provider_key

EXAMPLES = shared_reference_dir() / "istio-rbac-examples"

NS = "triton"
TRITON = Workload(NS, {"app": "triton", "version": "v1"})
CLIENT = "cluster.local/ns/clients/sa/app"
_UNSET: Any = object()


def ap(
    rules: Any = _UNSET,
    *,
    action: str | None = None,
    namespace: str = NS,
    selector: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    """Build an AuthorizationPolicy document; ``rules`` left unset means no ``rules`` key at all."""
    spec: dict[str, Any] = dict(spec_extra)
    if action is not None:
        spec["action"] = action
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    if rules is not _UNSET:
        spec["rules"] = rules
    metadata: dict[str, Any] = {"name": "p", "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec,
    }


def req(**overrides: Any) -> IstioRequest:
    fields: dict[str, Any] = {"port": 8000, "method": "GET", "path": "/v2/health/ready"}
    fields.update(overrides)
    return IstioRequest(**fields)


def to(**operation: list[Any]) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def frm(**source: list[Any]) -> dict[str, Any]:
    return {"from": [{"source": source}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"key": key}
    if values is not None:
        condition["values"] = values
    if not_values is not None:
        condition["notValues"] = not_values
    return {"when": [condition]}


# --------------------------------------------------------------------------------------------------
# String matching: exact / prefix / suffix / presence
# --------------------------------------------------------------------------------------------------

STRING_CASES = [
    # (rule, request overrides, expected)
    (to(paths=["/v2/health/ready"]), {}, True),
    (to(paths=["/v2/health/ready"]), {"path": "/v2/health/readyz"}, False),
    (to(paths=["/v2/health/ready"]), {"path": "/V2/health/ready"}, False),  # paths are case-sensitive
    (to(paths=["/v2/health/*"]), {"path": "/v2/health/live"}, True),
    (to(paths=["/v2/health/*"]), {"path": "/v2/health"}, False),
    (to(paths=["/v2/health/*"]), {"path": "/v2/health/"}, True),
    (to(paths=["*/ready"]), {"path": "/v2/health/ready"}, True),
    (to(paths=["*/ready"]), {"path": "/v2/health/live"}, False),
    (to(paths=["*"]), {"path": "/"}, True),
    (to(methods=["GET"]), {}, True),
    (to(methods=["GET"]), {"method": "get"}, False),  # methods are case-sensitive
    (to(methods=["P*"]), {"method": "POST"}, True),
    (to(methods=["*T"]), {"method": "POST"}, True),
    (to(methods=["*T"]), {"method": "DELETE"}, False),
    (to(methods=["*"]), {"method": "PATCH"}, True),
    (frm(principals=[CLIENT]), {"principal": CLIENT}, True),
    (frm(principals=["cluster.local/ns/clients/*"]), {"principal": CLIENT}, True),
    (frm(principals=["*/sa/app"]), {"principal": CLIENT}, True),
    (frm(principals=["*/sa/other"]), {"principal": CLIENT}, False),
    (frm(principals=["*"]), {"principal": CLIENT}, True),
    (frm(principals=["*"]), {}, False),  # presence needs an mTLS identity
    (
        to(hosts=["triton.triton.svc.cluster.local"]),
        {"headers": {"Host": "TRITON.triton.svc.cluster.local"}},
        True,
    ),
    (to(hosts=["triton.*"]), {"headers": {":authority": "Triton.triton:8000"}}, True),
    (to(hosts=["*:8000"]), {"headers": {"host": "triton:8000"}}, True),
    (to(hosts=["triton"]), {"headers": {"host": "triton:8000"}}, False),  # port is part of the Host value
    (to(hosts=["*"]), {}, False),  # no Host header at all
]


@pytest.mark.parametrize(("rule", "overrides", "expected"), STRING_CASES)
def test_string_matching(rule: dict[str, Any], overrides: dict[str, Any], expected: bool) -> None:
    assert rule_matches(rule, req(**overrides)) is expected


# --------------------------------------------------------------------------------------------------
# Path templates and path handling
# --------------------------------------------------------------------------------------------------

TEMPLATE_CASES = [
    ("/v2/models/{*}", "/v2/models/stats", True),
    ("/v2/models/{*}", "/v2/models/a/b", False),
    ("/v2/models/{*}", "/v2/models/", False),  # {*} needs a non-empty segment
    ("/v2/models/{*}", "/v2/models", False),
    ("/v2/models/{*}/ready", "/v2/models/resnet/ready", True),
    ("/v2/models/{*}/ready", "/v2/models/resnet/versions/1/ready", False),
    ("/v2/models/{*}/versions/{*}/infer", "/v2/models/m/versions/3/infer", True),
    ("/v2/models/{**}", "/v2/models/a/b/c", True),
    ("/v2/models/{**}", "/v2/models/stats", True),
    ("/v2/models/{**}", "/v2/models/", True),  # {**} may be empty ...
    ("/v2/models/{**}", "/v2/models", False),  # ... but the slash before it is literal (Envoy `/**`)
    ("/v2/models/{**}", "/v2/modelsX/a", False),
    ("/{**}/ready", "/v2/models/m/ready", True),
    ("/{**}/ready", "/v2/models/m/live", False),
    ("/v2/{*}/{**}", "/v2/models/m/ready", True),
    ("/v2/{*}/{**}", "/v2/models", False),
    ("/v2/models/{*}", "/v2/models/a*b", True),  # `*` is a path char since the CVE-2025-46821 fix
    ("/v2/models/{*}", "/v2/models/a%2Fb", True),  # an encoded slash stays inside one segment
]


@pytest.mark.parametrize(("template", "path", "expected"), TEMPLATE_CASES)
def test_path_templates(template: str, path: str, expected: bool) -> None:
    assert rule_matches(to(paths=[template]), req(path=path)) is expected


@pytest.mark.parametrize(
    "template",
    [
        "/v2/{**}/models/{*}",  # {**} must be the last operator
        "/v2/{**}/{**}",
        "/v2/models/{*}.json",  # operator must be a whole segment
        "/v2/models/{name}",
        "/v2//{*}",  # empty literal segment next to a template
        "/v2/*/{*}",  # `*` is not a literal character
        "v2/{*}",  # Envoy templates are absolute
    ],
)
def test_invalid_path_templates_raise(template: str) -> None:
    with pytest.raises(InvalidPolicyError):
        rule_matches(to(paths=[template]), req())


@pytest.mark.parametrize(
    ("rule", "path", "expected"),
    [
        (to(paths=["/v2/health/ready"]), "/v2/health/ready?verbose=1", True),
        (to(paths=["*ready"]), "/v2/health/ready?x=ready", True),
        (to(paths=["*=1"]), "/v2/health/ready?x=1", False),  # query is not part of the path
        (to(paths=["/v2/models/{*}"]), "/v2/models/m?x=/a/b", True),
        (to(paths=["/v2/repository/index"]), "/v2/models/../repository/index", True),  # BASE normalization
        (to(paths=["/v2/models/*"]), "/v2/models/../repository/index", False),
        (to(paths=["/v2/health/ready"]), "/v2/%68ealth/ready", True),  # unreserved %XX decoded
        (to(paths=["/v2/health/ready"]), "/v2\\health\\ready", True),
        (to(paths=["/v2/health/ready"]), "/v2//health/ready", False),  # slashes are not merged
    ],
)
def test_query_strip_and_normalization(rule: dict[str, Any], path: str, expected: bool) -> None:
    assert rule_matches(rule, req(path=path)) is expected


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/a/b?c=d#e", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/../../a", "/a"),
        ("/a/%2e%2E/b", "/b"),
        ("/a%2Fb", "/a%2Fb"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    ("rule", "overrides", "expected"),
    [
        (to(notPaths=["/v2/repository/*"]), {"path": "/v2/health/ready"}, True),
        (to(notPaths=["/v2/repository/*"]), {"path": "/v2/repository/index"}, False),
        (to(paths=["/v2/*"], notPaths=["/v2/repository/*"]), {"path": "/v2/repository/index"}, False),
        (to(paths=["/v2/*"], notPaths=["/v2/models/{*}/unload"]), {"path": "/v2/models/a/unload"}, False),
        (to(paths=["/v2/*"], notPaths=["/v2/models/{*}/unload"]), {"path": "/v2/models/a/load"}, True),
        (to(notMethods=["GET", "HEAD"]), {"method": "POST"}, True),
        (to(notMethods=["GET", "HEAD"]), {"method": "HEAD"}, False),
        (to(notPorts=["8002"]), {"port": 8000}, True),
        (to(notPorts=["8002"]), {"port": 8002}, False),
        (to(notHosts=["evil.*"]), {"headers": {"host": "EVIL.example"}}, False),
        (to(notHosts=["evil.*"]), {}, True),  # no Host: notHosts matches
    ],
)
def test_negated_operation_fields(rule: dict[str, Any], overrides: dict[str, Any], expected: bool) -> None:
    assert rule_matches(rule, req(**overrides)) is expected


# --------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "port", "expected"),
    [
        (["8000"], 8000, True),
        (["8000", "8001"], 8001, True),
        (["8000"], 8002, False),
    ],
)
def test_ports_are_exact_strings(ports: list[str], port: int, expected: bool) -> None:
    assert rule_matches(to(ports=ports), req(port=port)) is expected


@pytest.mark.parametrize("ports", [[8000], ["80*"], ["*"], ["65536"], ["http"]])
def test_bad_ports_raise(ports: list[Any]) -> None:
    with pytest.raises(InvalidPolicyError):
        rule_matches(to(ports=ports), req())


def test_destination_port_condition() -> None:
    rule = when("destination.port", ["8000"], ["8002"])
    assert rule_matches(rule, req(port=8000))
    assert not rule_matches(rule, req(port=8002))
    assert not rule_matches(rule, req(port=8001))


# --------------------------------------------------------------------------------------------------
# Sources: plaintext vs mTLS identity, namespaces, service accounts, trust domains, IPs
# --------------------------------------------------------------------------------------------------

SOURCE_CASES = [
    # (rule, principal, expected)
    (frm(principals=[CLIENT]), None, False),
    (frm(notPrincipals=[CLIENT]), None, True),  # plaintext has no principal, so NOT(...) holds
    (frm(notPrincipals=[CLIENT]), CLIENT, False),
    (frm(notPrincipals=["*"]), None, True),
    (frm(notPrincipals=["*"]), CLIENT, False),
    (frm(namespaces=["clients"]), CLIENT, True),
    (frm(namespaces=["clients"]), "cluster.local/ns/other/sa/clients", False),  # namespace, not sa
    (frm(namespaces=["client*"]), CLIENT, True),
    (frm(namespaces=["*ents"]), CLIENT, True),
    (frm(namespaces=["*"]), CLIENT, True),
    (frm(namespaces=["clients"]), None, False),
    (frm(notNamespaces=["clients"]), None, True),
    (frm(notNamespaces=["clients"]), CLIENT, False),
    (frm(notNamespaces=["kube-system"]), CLIENT, True),
    (frm(serviceAccounts=["clients/app"]), CLIENT, True),
    (frm(serviceAccounts=["clients/other"]), CLIENT, False),
    (frm(serviceAccounts=["app"]), "cluster.local/ns/triton/sa/app", True),  # bare = policy namespace
    (frm(serviceAccounts=["app"]), CLIENT, False),
    (frm(notServiceAccounts=["clients/app"]), None, True),
    (frm(trustDomains=["cluster.local"]), CLIENT, True),
    (frm(trustDomains=["other.local"]), CLIENT, False),
    (frm(trustDomains=["*"]), None, False),
    (frm(requestPrincipals=["*"]), CLIENT, False),  # mTLS identity is not a request principal (no JWT)
    (frm(notRequestPrincipals=["issuer/sub"]), CLIENT, True),
    (when("source.principal", [CLIENT]), CLIENT, True),
    (when("source.principal", ["*"]), None, False),
    (when("source.principal", None, ["*"]), None, True),
    (when("source.namespace", ["clients"]), CLIENT, True),
    (when("source.namespace", ["clients"]), None, False),
    (when("source.namespace", None, ["clients"]), None, True),
]


@pytest.mark.parametrize(("rule", "principal", "expected"), SOURCE_CASES)
def test_source_identity(rule: dict[str, Any], principal: str | None, expected: bool) -> None:
    assert rule_matches(rule, req(principal=principal), policy_namespace=NS) is expected


def test_bare_service_account_needs_policy_namespace() -> None:
    with pytest.raises(ValueError, match="policy namespace"):
        rule_matches(frm(serviceAccounts=["app"]), req(principal=CLIENT))


@pytest.mark.parametrize(
    ("rule", "source_ip", "expected"),
    [
        (frm(ipBlocks=["10.0.0.0/8"]), "10.1.2.3", True),
        (frm(ipBlocks=["10.0.0.0/8"]), "11.1.2.3", False),
        (frm(ipBlocks=["10.1.2.3"]), "10.1.2.3", True),
        (frm(ipBlocks=["10.1.2.3"]), "10.1.2.4", False),
        (frm(ipBlocks=["10.1.2.3/24"]), "10.1.2.200", True),  # host bits allowed, as in Go
        (frm(ipBlocks=["fd00::/8"]), "fd00::1", True),
        (frm(ipBlocks=["fd00::/8"]), "10.1.2.3", False),
        (frm(ipBlocks=["0.0.0.0/0"]), "::1", False),  # families never cross
        (frm(ipBlocks=["10.0.0.0/8"]), None, False),
        (frm(notIpBlocks=["10.0.0.0/8"]), "192.168.0.1", True),
        (frm(notIpBlocks=["10.0.0.0/8"]), "10.0.0.1", False),
        (when("source.ip", ["192.168.0.0/16"]), "192.168.3.4", True),
        (when("source.ip", None, ["192.168.0.0/16"]), "192.168.3.4", False),
    ],
)
def test_ip_blocks(rule: dict[str, Any], source_ip: str | None, expected: bool) -> None:
    assert rule_matches(rule, req(source_ip=source_ip)) is expected


@pytest.mark.parametrize("blocks", [["10.0.0.*"], ["10.0.0.0/33"], ["not-an-ip"]])
def test_bad_ip_blocks_raise(blocks: list[str]) -> None:
    with pytest.raises(InvalidPolicyError):
        rule_matches(frm(ipBlocks=blocks), req())


# --------------------------------------------------------------------------------------------------
# Headers in `when`
# --------------------------------------------------------------------------------------------------

HEADER_CASES = [
    # (rule, headers, expected)
    (when("request.headers[X-Tenant]", ["alpha"]), {"x-tenant": "alpha"}, True),  # name case-insensitive
    (when("request.headers[x-tenant]", ["alpha"]), {"X-TENANT": "alpha"}, True),
    (when("request.headers[X-Tenant]", ["alpha"]), {"X-Tenant": "Alpha"}, False),  # value case-sensitive
    (when("request.headers[X-Tenant]", ["al*"]), {"X-Tenant": "alpha"}, True),
    (when("request.headers[X-Tenant]", ["*ha"]), {"X-Tenant": "alpha"}, True),
    (when("request.headers[X-Tenant]", ["*"]), {"X-Tenant": "alpha"}, True),
    (when("request.headers[X-Tenant]", ["*"]), {"X-Tenant": ""}, True),  # Envoy present_match
    (when("request.headers[X-Tenant]", ["alpha"]), {}, False),  # missing header never matches values
    (when("request.headers[X-Tenant]", ["*"]), {}, False),
    (when("request.headers[X-Tenant]", None, ["beta"]), {}, True),  # ... and always matches notValues
    (when("request.headers[X-Tenant]", None, ["beta"]), {"X-Tenant": "beta"}, False),
    (when("request.headers[X-Tenant]", ["alpha", "beta"], ["beta"]), {"X-Tenant": "beta"}, False),
    (when("request.headers[X-Tenant]", ["alpha", "beta"], ["beta"]), {"X-Tenant": "alpha"}, True),
    (when("request.headers[:method]", ["GET"]), {}, True),
    (when("request.headers[:path]", ["*?debug=1"]), {}, False),
    (when("request.headers[Host]", ["triton*"]), {":authority": "triton:8000"}, True),
]


@pytest.mark.parametrize(("rule", "headers", "expected"), HEADER_CASES)
def test_header_conditions(rule: dict[str, Any], headers: dict[str, str], expected: bool) -> None:
    assert rule_matches(rule, req(headers=headers)) is expected


def test_path_pseudo_header_keeps_query() -> None:
    rule = when("request.headers[:path]", ["*?debug=1"])
    assert rule_matches(rule, req(path="/v2/x/../health/ready?debug=1"))


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("request.auth.claimsX[iss]", UnsupportedPolicyError),  # webhook accepts it, istiod cannot translate it
        ("request.auth.claims", InvalidPolicyError),
        ("request.auth.claims[]", InvalidPolicyError),
        ("destination.ip", UnsupportedPolicyError),
        ("remote.ip", UnsupportedPolicyError),
        ("connection.sni", UnsupportedPolicyError),
        ("experimental.envoy.filters.a.b", InvalidPolicyError),
        ("destination.namespace", InvalidPolicyError),
        ("request.header[x]", InvalidPolicyError),
        ("request.headers[]", InvalidPolicyError),
        ("source.ips", InvalidPolicyError),
    ],
)
def test_unsupported_when_keys_raise(key: str, error: type[ValueError]) -> None:
    with pytest.raises(error):
        rule_matches(when(key, ["x"]), req())
    assert issubclass(error, ValueError)


GUARD = "envoy.filters.http.meshgen_grpc"
JSON_READER = "envoy.filters.http.json_to_metadata"  # the OpenAI body reader's namespace


@pytest.mark.parametrize("namespace", [GUARD, JSON_READER])
@pytest.mark.parametrize(
    ("values", "not_values", "metadata", "matches"),
    [
        (["add"], None, {GUARD: {"model": "add"}}, True),
        (["add"], None, {GUARD: {"model": "Add"}}, False),  # exact, case-sensitive
        (["add", "simple"], None, {GUARD: {"model": "simple"}}, True),  # values OR
        (["add"], None, {}, False),  # a missing key matches no value
        (["add"], None, {"envoy.filters.http.other": {"model": "add"}}, False),  # another filter's metadata
        (["*"], None, {GUARD: {"model": ""}}, False),  # `*` is presence of a non-empty value
        (["ad*"], None, {GUARD: {"model": "add"}}, True),  # Istio's prefix wildcard
        (["[add]"], None, {GUARD: {"model": "add"}}, False),  # `[v]` is a list match; the value is a string
        (None, ["*"], {}, True),  # notValues on a missing key hold
        (None, ["*"], {GUARD: {"model": "add"}}, False),
    ],
)
def test_experimental_filter_metadata_conditions(
    namespace: str,
    values: list[str] | None,
    not_values: list[str] | None,
    metadata: dict[str, dict[str, str]],
    matches: bool,
) -> None:
    """istiod's envoyFilterGenerator: experimental.envoy.filters.a.b[c] = metadata c of filter envoy.filters.a.b
    (also for a filter name with underscores, json_to_metadata's)."""
    rule = when(f"experimental.{namespace}[model]", values, not_values)
    metadata = {namespace if name == GUARD else name: keys for name, keys in metadata.items()}
    assert rule_matches(rule, req(metadata=metadata)) is matches


def test_when_key_is_checked_even_if_rule_fails_early() -> None:
    # Validation must not depend on short-circuiting: an unmatched `from` still reports the bad key.
    rule = {**frm(principals=["nobody"]), **when("destination.ip", ["10.0.0.1"])}
    with pytest.raises(UnsupportedPolicyError):
        rule_matches(rule, req())


# --------------------------------------------------------------------------------------------------
# Rule structure: AND / OR composition, empty and absent parts
# --------------------------------------------------------------------------------------------------

COMPOSITION_CASES = [
    # (rule, request overrides, expected)
    ({}, {}, True),  # the empty rule always matches
    (to(paths=["/a", "/v2/health/ready"]), {}, True),  # values in a field are ORed
    (to(paths=["/v2/health/ready"], methods=["POST"]), {}, False),  # fields in an operation are ANDed
    (to(paths=["/v2/health/ready"], methods=["GET"], ports=["8000"]), {}, True),
    ({"to": [{"operation": {"methods": ["POST"]}}, {"operation": {"ports": ["8000"]}}]}, {}, True),  # to ORed
    ({**frm(principals=[CLIENT]), **to(methods=["GET"])}, {"principal": CLIENT}, True),  # from AND to
    ({**frm(principals=[CLIENT]), **to(methods=["POST"])}, {"principal": CLIENT}, False),
    ({**frm(principals=["x/ns/y/sa/z"]), **to(methods=["GET"])}, {"principal": CLIENT}, False),
    (
        {"from": [{"source": {"principals": ["x/ns/y/sa/z"]}}, {"source": {"namespaces": ["clients"]}}]},
        {"principal": CLIENT},
        True,
    ),
    (
        frm(principals=[CLIENT], ipBlocks=["10.0.0.0/8"]),
        {"principal": CLIENT, "source_ip": "11.0.0.1"},
        False,
    ),
    (
        {
            "when": [
                {"key": "request.headers[a]", "values": ["1"]},
                {"key": "request.headers[b]", "values": ["2"]},
            ]
        },
        {"headers": {"a": "1", "b": "3"}},
        False,
    ),  # all `when` conditions must hold
    (
        {
            "when": [
                {"key": "request.headers[a]", "values": ["1"]},
                {"key": "request.headers[b]", "values": ["2"]},
            ]
        },
        {"headers": {"A": "1", "B": "2"}},
        True,
    ),
    (to(paths=[], methods=["GET"]), {}, True),  # an empty list is the same as an absent field
]


@pytest.mark.parametrize(("rule", "overrides", "expected"), COMPOSITION_CASES)
def test_rule_composition(rule: dict[str, Any], overrides: dict[str, Any], expected: bool) -> None:
    assert rule_matches(rule, req(**overrides)) is expected


@pytest.mark.parametrize(
    "rule",
    [
        {"from": []},  # present-but-empty from/to is a webhook error
        {"to": []},
        {"from": [{"source": {}}]},
        {"to": [{"operation": {}}]},
        {"to": [{"operation": {"paths": []}}]},  # only empty lists = empty operation
        {"to": [{"operation": {"path": ["/x"]}}]},  # typo'd field name
        {"from": [{"source": {"principals": [""]}}]},
        {"from": [{"source": {"serviceAccounts": ["a/b"], "namespaces": ["c"]}}]},
        {"from": [{"source": {"serviceAccounts": ["a*"]}}]},
        {"when": [{"key": "source.ip"}]},  # neither values nor notValues
        {"what": []},
    ],
)
def test_invalid_rules_raise(rule: dict[str, Any]) -> None:
    with pytest.raises(InvalidPolicyError):
        rule_matches(rule, req())


def test_remote_ip_blocks_are_unsupported() -> None:
    with pytest.raises(UnsupportedPolicyError):
        rule_matches(frm(remoteIpBlocks=["10.0.0.0/8"]), req())


# --------------------------------------------------------------------------------------------------
# Decision order
# --------------------------------------------------------------------------------------------------

ALLOW_HEALTH = ap([to(paths=["/v2/health/*"])])
DENY_CLIENTS = ap([frm(namespaces=["clients"])], action="DENY")

DECISION_CASES = [
    # (id, policies, request overrides, expected)
    ("no policies allow everything", [], {}, True),
    ("allow-nothing: ALLOW without rules", [ap()], {}, False),
    ("allow-nothing: spec {}", [{**ap(), "spec": {}}], {}, False),
    ("allow-nothing: spec null", [{**ap(), "spec": None}], {}, False),
    ("allow-nothing: rules []", [ap([])], {}, False),
    ("allow-all: rules [{}]", [ap([{}])], {}, True),
    ("deny-all: DENY rules [{}]", [ap([{}], action="DENY")], {}, False),
    ("deny-all beats allow-all", [ap([{}]), ap([{}], action="DENY")], {}, False),
    ("ALLOW matches", [ALLOW_HEALTH], {}, True),
    ("ALLOW exists, no match -> deny", [ALLOW_HEALTH], {"path": "/v2/models/m/infer"}, False),
    ("DENY not matching, no ALLOW -> allow", [DENY_CLIENTS], {"principal": "td/ns/other/sa/x"}, True),
    ("DENY before ALLOW", [ALLOW_HEALTH, DENY_CLIENTS], {"principal": CLIENT}, False),
    ("DENY miss, then ALLOW", [ALLOW_HEALTH, DENY_CLIENTS], {"principal": "td/ns/other/sa/x"}, True),
    (
        "any ALLOW suffices",
        [ALLOW_HEALTH, ap([to(methods=["POST"])])],
        {"method": "POST", "path": "/x"},
        True,
    ),
    ("AUDIT alone never denies", [ap([{}], action="AUDIT")], {}, True),
    ("AUDIT does not count as ALLOW", [ap([{}], action="AUDIT"), ALLOW_HEALTH], {"path": "/x"}, False),
    (
        "dry-run DENY never denies",
        [ap([{}], action="DENY", annotations={"istio.io/dry-run": "true"})],
        {},
        True,
    ),
    (
        "dry-run ALLOW does not create deny-by-default",
        [ap([to(paths=["/nothing"])], annotations={"istio.io/dry-run": "true"})],
        {},
        True,
    ),
    (
        "dry-run false is enforced",
        [ap([{}], action="DENY", annotations={"istio.io/dry-run": "false"})],
        {},
        False,
    ),
    (
        "dry-run parsed like Go ParseBool",
        [ap([{}], action="DENY", annotations={"istio.io/dry-run": "1"})],
        {},
        True,
    ),
    (
        "gRPC: POST + /package.Service/Method",
        [ap([to(methods=["POST"], paths=["/inference.GRPCInferenceService/*"])])],
        {"method": "POST", "path": "/inference.GRPCInferenceService/ModelInfer"},
        True,
    ),
]


@pytest.mark.parametrize(
    ("policies", "overrides", "expected"),
    [case[1:] for case in DECISION_CASES],
    ids=[case[0] for case in DECISION_CASES],
)
def test_decision_order(policies: list[dict[str, Any]], overrides: dict[str, Any], expected: bool) -> None:
    assert evaluate(policies, TRITON, req(**overrides)) is expected


def test_custom_policy_is_unsupported() -> None:
    custom = ap([{}], action="CUSTOM", provider={"name": "ext-authz"})
    with pytest.raises(UnsupportedPolicyError):
        evaluate([custom], TRITON, req())
    # A CUSTOM policy that does not apply to the workload is harmless.
    assert evaluate([{**custom, "metadata": {"name": "c", "namespace": "elsewhere"}}], TRITON, req())


@pytest.mark.parametrize(
    "policy",
    [
        ap(action="DENY"),  # DENY without rules is rejected by the webhook
        ap([], action="DENY"),
        ap([{}], action="deny"),
        ap([{}], annotations={"istio.io/dry-run": "yes"}),
        ap([{}], action="AUDIT", annotations={"istio.io/dry-run": "true"}),
        ap([{}], selector={"app": "triton"}, targetRefs=[{"kind": "Service", "name": "triton"}]),
        ap([{}], selector={"app": "trit*"}),
        ap([{}], provider={"name": "x"}),
        ap([{}], unknownField=True),
        {**ap([{}]), "kind": "PeerAuthentication"},
        {**ap([{}]), "metadata": {"name": "no-namespace"}},
    ],
)
def test_invalid_policies_raise(policy: dict[str, Any]) -> None:
    with pytest.raises(InvalidPolicyError):
        validate_policy(policy)
    with pytest.raises(InvalidPolicyError):
        evaluate([policy], TRITON, req())


def test_every_policy_is_validated_even_if_not_applicable() -> None:
    broken = ap([to(ports=[8000])], namespace="elsewhere")
    with pytest.raises(InvalidPolicyError):
        evaluate([broken], TRITON, req())


# --------------------------------------------------------------------------------------------------
# Applicability
# --------------------------------------------------------------------------------------------------

APPLIES_CASES = [
    # (id, policy, workload, expected)
    ("same namespace, no selector", ap([{}]), TRITON, True),
    ("other namespace", ap([{}], namespace="other"), TRITON, False),
    ("root namespace, no selector = mesh-wide", ap([{}], namespace="istio-system"), TRITON, True),
    (
        "root namespace with selector",
        ap([{}], namespace="istio-system", selector={"app": "triton"}),
        TRITON,
        True,
    ),
    (
        "root namespace selector miss",
        ap([{}], namespace="istio-system", selector={"app": "x"}),
        TRITON,
        False,
    ),
    ("selector subset", ap([{}], selector={"app": "triton"}), TRITON, True),
    ("selector all labels", ap([{}], selector={"app": "triton", "version": "v1"}), TRITON, True),
    ("selector value differs", ap([{}], selector={"app": "triton", "version": "v2"}), TRITON, False),
    ("selector extra label", ap([{}], selector={"app": "triton", "tier": "gpu"}), TRITON, False),
    (
        "empty matchLabels",
        {**ap([{}]), "spec": {"selector": {"matchLabels": {}}, "rules": [{}]}},
        TRITON,
        True,
    ),
    (
        "targetRefs ignored on sidecars",
        ap([{}], targetRefs=[{"kind": "Gateway", "name": "gw"}]),
        TRITON,
        False,
    ),
    ("legacy targetRef ignored", ap([{}], targetRef={"kind": "Service", "name": "triton"}), TRITON, False),
]


@pytest.mark.parametrize(
    ("policy", "workload", "expected"),
    [case[1:] for case in APPLIES_CASES],
    ids=[case[0] for case in APPLIES_CASES],
)
def test_policy_applies(policy: dict[str, Any], workload: Workload, expected: bool) -> None:
    assert policy_applies(policy, workload) is expected


def test_custom_root_namespace() -> None:
    policy = ap([{}], action="DENY", namespace="mesh-root")
    assert policy_applies(policy, TRITON, root_namespace="mesh-root")
    assert not evaluate([policy], TRITON, req(), root_namespace="mesh-root")
    assert evaluate([policy], TRITON, req())  # with the default root it is just another namespace


def test_selector_scopes_the_decision() -> None:
    policies = [ap(selector={"app": "triton"})]  # allow-nothing for triton only
    assert not evaluate(policies, TRITON, req())
    assert evaluate(policies, Workload(NS, {"app": "other"}), req())


# --------------------------------------------------------------------------------------------------
# Request construction guards
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"principal": "spiffe://cluster.local/ns/a/sa/b"},
        {"principal": ""},
        {"source_ip": "10.0.0.300"},
        {"path": "v2/health"},
        {"port": 0},
        {"headers": {"X-A": "1", "x-a": "2"}},
        {"headers": {":path": "/other"}},
        {"headers": {"Host": "a", ":authority": "b"}},
    ],
)
def test_bad_requests_raise(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        req(**overrides)


# --------------------------------------------------------------------------------------------------
# The istio/istio builder golden inputs
# --------------------------------------------------------------------------------------------------

HTTPBIN = Workload("foo", {"app": "httpbin", "version": "v1"})
OTHER_IN_FOO = Workload("foo", {"app": "other"})

# Files using `when` keys or fields this evaluator does not model; they must raise, not be guessed at.
UNSUPPORTED_EXAMPLES = {
    "http-single-policy-in.yaml": "destination.ip / remote.ip / remoteIpBlocks",
    "tcp-deny-both-http-tcp-in.yaml": "request.auth.*, remote.ip, destination.ip, connection.sni, ...",
}

EXAMPLE_CASES = [
    # (file, workload, request, expected)
    ("http-allow-empty-rule-in.yaml", HTTPBIN, req(), True),
    ("http-allow-nil-rule-in.yaml", HTTPBIN, req(), False),
    ("http-allow-nil-rule-in.yaml", OTHER_IN_FOO, req(), True),  # selector does not match
    ("http-allow-path-in.yaml", HTTPBIN, req(path="/exact"), False),  # notPaths contains "*"
    ("http-deny-empty-rule-in.yaml", HTTPBIN, req(), False),
    ("http-deny-and-allow-in.yaml", HTTPBIN, req(principal="deny"), False),
    ("http-deny-and-allow-in.yaml", HTTPBIN, req(principal="allow"), True),
    ("http-deny-and-allow-in.yaml", HTTPBIN, req(), False),
    ("http-multiple-policies-in.yaml", HTTPBIN, req(port=8080, method="GET", path="/x"), True),
    ("http-multiple-policies-in.yaml", OTHER_IN_FOO, req(port=8080, method="GET", path="/x"), False),
    ("http-multiple-policies-in.yaml", OTHER_IN_FOO, req(port=90), True),
    ("http-multiple-policies-in.yaml", OTHER_IN_FOO, req(port=8080, headers={"x-abc": "abc2"}), True),
    ("http-multiple-policies-in.yaml", OTHER_IN_FOO, req(port=8080, source_ip="5.6.7.8"), True),
    (
        "http-multiple-policies-in.yaml",
        OTHER_IN_FOO,
        req(port=8080, principal="td/ns/namespaces1/sa/x"),
        True,
    ),
    ("http-multiple-policies-in.yaml", OTHER_IN_FOO, req(port=8080, principal="td/ns/n/sa/x"), False),
    ("http-trust-domains-in.yaml", HTTPBIN, req(principal="cluster.local/ns/a/sa/b"), True),
    ("http-trust-domains-in.yaml", HTTPBIN, req(principal="bad.example/ns/a/sa/b"), False),
    ("http-trust-domains-in.yaml", HTTPBIN, req(principal="elsewhere/ns/a/sa/b"), True),
    ("http-trust-domains-in.yaml", HTTPBIN, req(), True),  # plaintext satisfies notTrustDomains
    ("tcp-allow-both-http-tcp-in.yaml", HTTPBIN, req(port=80, principal="td/ns/ns-1/sa/x"), True),
    ("tcp-allow-both-http-tcp-in.yaml", HTTPBIN, req(port=80), False),
    (
        "tcp-allow-only-http-in.yaml",
        HTTPBIN,
        req(principal="td/ns/ns-1/sa/x", headers={"host": "Example.com"}),
        True,
    ),
    ("tcp-allow-only-http-in.yaml", HTTPBIN, req(principal="td/ns/ns-1/sa/x"), False),
]


def load_example(name: str) -> list[dict[str, Any]]:
    with (EXAMPLES / name).open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def example_files() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*-in.yaml"))


@pytest.mark.parametrize("name", example_files())
def test_examples_are_accepted(name: str) -> None:
    policies = load_example(name)
    assert policies
    if name in UNSUPPORTED_EXAMPLES:
        with pytest.raises(UnsupportedPolicyError):
            evaluate(policies, HTTPBIN, req())
        return
    for policy in policies:
        validate_policy(policy)
    evaluate(policies, HTTPBIN, req())
    evaluate(policies, HTTPBIN, req(principal=CLIENT, source_ip="10.0.0.1", headers={"host": "h"}))


def test_every_example_is_covered() -> None:
    covered = {case[0] for case in EXAMPLE_CASES} | UNSUPPORTED_EXAMPLES.keys()
    assert covered == set(example_files())


@pytest.mark.parametrize(("name", "workload", "request_", "expected"), EXAMPLE_CASES)
def test_example_semantics(name: str, workload: Workload, request_: IstioRequest, expected: bool) -> None:
    assert evaluate(load_example(name), workload, request_) is expected


# --------------------------------------------------------------------------------------------------
# JWT: RequestAuthentication (jwt_authn before RBAC), requestPrincipals and request.auth.* conditions
#
# Expectations come from /work/notes/jwt.md (Istio 1.30.3 source, measured on Envoy 1.40): the reason
# strings are jwt_verify_lib's, as Envoy returned them in the measured matrix.
# --------------------------------------------------------------------------------------------------

ISS_A = "https://idp-a.example"
ISS_B = "https://idp-b.example"
AUD = "meshgen-api"
KEY_A = provider_key("idp-a", "RSA")
KEY_A_EC = provider_key("idp-a", "EC")
KEY_B = provider_key("idp-b", "RSA")
STRANGER = provider_key("stranger", "RSA")
BEARER = [{"name": "Authorization", "prefix": "Bearer "}]
NOW = 1_800_000_000  # a fixed clock for the cases that test time
_DEFAULT: Any = object()


def jwt_rule(
    issuer: str = ISS_A,
    keys: tuple[SigningKey, ...] = (KEY_A, KEY_A_EC),
    *,
    audiences: tuple[str, ...] = (AUD,),
    from_headers: Any = _DEFAULT,
    **extra: Any,
) -> dict[str, Any]:
    """One jwtRule with inline JWKS; ``from_headers=None`` leaves Envoy's default token locations."""
    rule: dict[str, Any] = {"issuer": issuer, "jwks": jwks(*keys)}
    if audiences:
        rule["audiences"] = list(audiences)
    if from_headers is not None:
        rule["fromHeaders"] = BEARER if from_headers is _DEFAULT else from_headers
    return rule | extra


def ra(
    *rules: dict[str, Any], namespace: str = NS, selector: Mapping[str, str] | None = None, name: str = "jwt"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"jwtRules": list(rules)}
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def outcome(documents: list[Any], **overrides: Any) -> Outcome:
    return evaluate_outcomes(documents, TRITON, [req(**overrides)])[0]


RA_A = ra(jwt_rule())
ALICE = claims(ISS_A, "alice", AUD)
VALID = mint(ALICE, KEY_A)
PRINCIPAL_A = f"{ISS_A}/alice"
ALLOW_ALL = ap([{}])
REQUIRE_TOKEN = ap([frm(requestPrincipals=["*"])])
# The notes' DENY for credentials jwt_authn did not verify (A.4): Authorization present, no iss/sub.
DENY_UNVERIFIED = ap(
    [{**frm(notRequestPrincipals=["*"]), **when("request.headers[authorization]", ["*"])}],
    action="DENY",
)


def timed(**fields: Any) -> dict[str, Any]:
    """A body for the fixed clock NOW: issued 100 s ago, expiring at NOW, unless overridden."""
    body: dict[str, Any] = {"iss": ISS_A, "sub": "alice", "aud": AUD, "iat": NOW - 100, "nbf": NOW - 100, "exp": NOW}
    return {key: value for key, value in (body | fields).items() if value is not None}


# --- invalid tokens: 401 before any policy --------------------------------------------------------

INVALID = invalid_tokens(ALICE, KEY_A, STRANGER) | {"ES256 signature DER-encoded": der_signed(ALICE, KEY_A_EC)}
TWO_DOTS = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
AUDIENCES = "Audiences in Jwt are not allowed"
INVALID_REASONS = {
    "bad signature (other key, same kid)": "Jwt verification fails",
    "tampered payload": "Jwt verification fails",
    "signature bit flipped": "Jwt verification fails",
    "alg none, empty signature": TWO_DOTS,
    "alg none, with signature": "Jwt header [alg] is not supported",
    "HS256 signed with the public key": NO_KEY,
    "unknown kid": NO_KEY,
    "unknown issuer": "Jwt issuer is not configured",
    "unknown issuer, stranger's key": "Jwt issuer is not configured",
    "expired": "Jwt is expired",
    "not yet valid": "Jwt not yet valid",
    "other algorithm for the key": NO_KEY,  # the JWK pins alg RS256
    "two segments": TWO_DOTS,
    "not a JWT": TWO_DOTS,
    "garbage segments": "Jwt header is an invalid JSON",
    "header not JSON": "Jwt header is an invalid JSON",
    "payload not JSON": "Jwt payload is an invalid JSON",
    "padding in segments": "Jwt header is an invalid Base64url encoded",
    "ES256 signature DER-encoded": "Jwt verification fails",
}


def test_every_invalid_token_has_an_expected_reason() -> None:
    assert INVALID.keys() == INVALID_REASONS.keys()


@pytest.mark.parametrize("label", sorted(INVALID))
def test_invalid_tokens_are_rejected_before_rbac(label: str) -> None:
    result = outcome([RA_A, ALLOW_ALL], headers=bearer(INVALID[label]))
    assert (result.verdict, result.status, result.reason) == (Verdict.UNAUTHENTICATED, 401, INVALID_REASONS[label])
    assert result.claims is None
    assert not evaluate([RA_A, ALLOW_ALL], TRITON, req(headers=bearer(INVALID[label])))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({**ALICE, "sub": 7}, "Jwt payload [sub] field is not a string"),  # rejected, not "never matches"
        ({**ALICE, "iss": [ISS_A]}, "Jwt payload [iss] field is not a string"),
        ({**ALICE, "iat": "yesterday"}, "Jwt payload [iat] field is not an integer"),  # type-checked only
        ({**ALICE, "exp": "tomorrow"}, "Jwt payload [exp] field is not an integer"),
        ({**ALICE, "exp": True}, "Jwt payload [exp] field is not an integer"),
        ({**ALICE, "nbf": -1}, "Jwt payload [nbf] field is not a positive 64 bit integer"),
        ({**ALICE, "exp": None}, "Jwt payload [exp] field is not an integer"),  # JSON null
        ({**ALICE, "jti": 1}, "Jwt payload [jti] field is not a string"),
        ({**ALICE, "aud": [AUD, 1]}, "Jwt payload [aud] field is not a string or string list"),
    ],
)
def test_malformed_claims_are_rejected(body: dict[str, Any], reason: str) -> None:
    result = outcome([RA_A], headers=bearer(mint(body, KEY_A)))
    assert (result.verdict, result.reason) == (Verdict.UNAUTHENTICATED, reason)


# --- tokens that verify ---------------------------------------------------------------------------

UNPINNED = ra(jwt_rule(keys=(), audiences=()) | {"jwks": json.dumps({"keys": [KEY_A.jwk(alg=False, kid=False)]})})
HMAC_SECRET = b"0123456789abcdef0123456789abcdef"
HMAC_RA = ra(
    jwt_rule() | {"jwks": json.dumps({"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": b64url(HMAC_SECRET)}]})}
)

ACCEPTED_CASES = [
    # (id, documents, token)
    ("RS256 with kid", [RA_A], VALID),
    ("ES256 with kid", [RA_A], mint(ALICE, KEY_A_EC)),
    ("RS256 without kid", [RA_A], mint(ALICE, KEY_A, kid=False)),
    ("aud list holding ours", [RA_A], mint(claims(ISS_A, "alice", ["other", AUD]), KEY_A)),
    ("aud compared without scheme and trailing /", [RA_A], mint(claims(ISS_A, "alice", f"https://{AUD}/"), KEY_A)),
    ("no exp at all", [RA_A], mint({k: v for k, v in ALICE.items() if k != "exp"}, KEY_A)),
    ("no audiences configured: any aud", [ra(jwt_rule(audiences=()))], mint(claims(ISS_A, "alice", "x"), KEY_A)),
    ("no audiences configured: no aud", [ra(jwt_rule(audiences=()))], mint(claims(ISS_A, "alice"), KEY_A)),
    ("JWK without alg: RS384", [UNPINNED], mint(ALICE, KEY_A, alg="RS384")),
    ("JWK without alg: PS256", [UNPINNED], mint(ALICE, KEY_A, alg="PS256")),
    ("JWK without kid: any token kid", [UNPINNED], mint(ALICE, KEY_A, kid="whatever")),
    ("HS256 with an oct JWK", [HMAC_RA], mint(ALICE, HMAC_SECRET, kid="h")),
]


@pytest.mark.parametrize(
    ("documents", "token"), [case[1:] for case in ACCEPTED_CASES], ids=[case[0] for case in ACCEPTED_CASES]
)
def test_valid_tokens_carry_their_principal(documents: list[Any], token: str) -> None:
    result = outcome([*documents, REQUIRE_TOKEN], headers=bearer(token))
    assert result.verdict is Verdict.ALLOWED, result.reason
    assert result.principal == PRINCIPAL_A


@pytest.mark.parametrize(
    ("body", "now", "verdict", "reason"),
    [
        (timed(), NOW + 30, Verdict.ALLOWED, None),  # expired 30 s ago: inside the 60 s clock skew
        (timed(), NOW + 60, Verdict.ALLOWED, None),
        (timed(), NOW + 61, Verdict.UNAUTHENTICATED, "Jwt is expired"),
        (timed(exp=NOW + 0.9), NOW + 60.99, Verdict.ALLOWED, None),  # both truncated to whole seconds
        (timed(nbf=NOW + 60), NOW, Verdict.ALLOWED, None),
        (timed(nbf=NOW + 61), NOW, Verdict.UNAUTHENTICATED, "Jwt not yet valid"),
        (timed(iat=NOW + 86400), NOW, Verdict.ALLOWED, None),  # iat is never compared with the clock
        (timed(exp=0), NOW, Verdict.ALLOWED, None),  # exp 0 = no expiry
        (timed(exp=None, nbf=None, iat=None), NOW, Verdict.ALLOWED, None),
    ],
)
def test_time_constraints(body: dict[str, Any], now: float, verdict: Verdict, reason: str | None) -> None:
    result = outcome([RA_A], headers=bearer(mint(body, KEY_A)), now=now)
    assert result.verdict is verdict
    if reason is not None:
        assert result.reason == reason


# --- audiences: 403 from jwt_authn, checked after the clock and before the signature ---------------


@pytest.mark.parametrize(
    ("token", "verdict", "reason"),
    [
        (
            mint(claims(ISS_A, "alice", "other-api"), KEY_A),
            Verdict.AUDIENCE_REJECTED,
            "Audiences in Jwt are not allowed",
        ),
        (mint(claims(ISS_A, "alice"), KEY_A), Verdict.AUDIENCE_REJECTED, "Audiences in Jwt are not allowed"),
        (mint(claims(ISS_A, "alice", []), KEY_A), Verdict.AUDIENCE_REJECTED, "Audiences in Jwt are not allowed"),
        (mint(claims(ISS_A, "alice", "other-api"), STRANGER, kid=KEY_A.kid), Verdict.AUDIENCE_REJECTED, None),
        (mint(claims(ISS_A, "alice", "other-api", lifetime=-3600), KEY_A), Verdict.UNAUTHENTICATED, "Jwt is expired"),
        (mint(claims(ISS_B, "alice", "other-api"), KEY_A), Verdict.UNAUTHENTICATED, "Jwt issuer is not configured"),
    ],
    ids=["wrong aud", "no aud", "empty aud list", "wrong aud, bad signature", "wrong aud, expired", "unknown issuer"],
)
def test_audience_rejections(token: str, verdict: Verdict, reason: str | None) -> None:
    result = outcome([RA_A, ALLOW_ALL], headers=bearer(token))
    assert result.verdict is verdict
    assert result.status == (403 if verdict is Verdict.AUDIENCE_REJECTED else 401)
    if reason is not None:
        assert result.reason == reason


def test_no_token_is_anonymous() -> None:
    anonymous = outcome([RA_A])
    assert (anonymous.verdict, anonymous.claims, anonymous.principal) == (Verdict.ALLOWED, None, None)
    assert outcome([RA_A, REQUIRE_TOKEN]).verdict is Verdict.DENIED  # RBAC must require the token
    assert outcome([RA_A, REQUIRE_TOKEN], headers=bearer(VALID)).principal == PRINCIPAL_A


# --- token extraction: which header values count as a token ----------------------------------------

EXTRACTION_CASES = [
    # (id, headers, path, verdict under RA_A + DENY_UNVERIFIED, verified principal)
    ("Bearer <valid>", bearer(VALID), "/", Verdict.ALLOWED, PRINCIPAL_A),  # header removed: DENY misses
    ("bearer <valid>: prefix is case-sensitive", {"Authorization": f"bearer {VALID}"}, "/", Verdict.DENIED, None),
    ("bearer <invalid>", {"authorization": "bearer not-a-jwt"}, "/", Verdict.DENIED, None),
    ("BEARER <invalid>", {"Authorization": "BEARER not-a-jwt"}, "/", Verdict.DENIED, None),
    ("Basic credentials", {"Authorization": "Basic dXNlcjpwYXNz"}, "/", Verdict.DENIED, None),
    ("Bearer + two spaces + invalid", {"Authorization": "Bearer  not-a-jwt"}, "/", Verdict.UNAUTHENTICATED, None),
    ("prefix found anywhere: invalid", {"Authorization": "Foo Bearer not-a-jwt"}, "/", Verdict.UNAUTHENTICATED, None),
    ("prefix found anywhere: valid", {"Authorization": f"Foo Bearer {VALID}"}, "/", Verdict.ALLOWED, PRINCIPAL_A),
    ("Bearer with an empty token", {"Authorization": "Bearer "}, "/", Verdict.DENIED, None),
    ("Bearer without a space", {"Authorization": "Bearer"}, "/", Verdict.DENIED, None),
    ("two Authorization headers joined", {"Authorization": f"Bearer {VALID},Bearer {VALID}"}, "/",
     Verdict.UNAUTHENTICATED, None),
    ("token in another header", {"x-other": f"Bearer {VALID}"}, "/", Verdict.ALLOWED, None),
    ("?access_token=<valid> ignored when fromHeaders is set", {}, f"/?access_token={VALID}", Verdict.ALLOWED, None),
    ("?access_token=<invalid> ignored too", {}, "/?access_token=not-a-jwt", Verdict.ALLOWED, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "path", "verdict", "principal"),
    [case[1:] for case in EXTRACTION_CASES],
    ids=[case[0] for case in EXTRACTION_CASES],
)
def test_token_extraction(headers: dict[str, str], path: str, verdict: Verdict, principal: str | None) -> None:
    result = outcome([RA_A, DENY_UNVERIFIED], headers=headers, path=path)
    assert result.verdict is verdict, result.reason
    assert result.principal == principal


def test_unextracted_credentials_pass_anonymously_without_the_deny() -> None:
    result = outcome([RA_A], headers={"Authorization": f"bearer {VALID}"})
    assert (result.verdict, result.claims) == (Verdict.ALLOWED, None)


DEFAULT_LOCATIONS = ra(jwt_rule(from_headers=None))
PATH_WITH_TOKEN = f"/v2/health/ready?access_token={VALID}"


@pytest.mark.parametrize(
    ("documents", "overrides", "verdict", "principal"),
    [
        ([DEFAULT_LOCATIONS], {"path": PATH_WITH_TOKEN}, Verdict.ALLOWED, PRINCIPAL_A),
        ([DEFAULT_LOCATIONS], {"path": "/v2/health/ready?access_token=not-a-jwt"}, Verdict.UNAUTHENTICATED, None),
        ([DEFAULT_LOCATIONS], {"headers": bearer(VALID)}, Verdict.ALLOWED, PRINCIPAL_A),
        ([DEFAULT_LOCATIONS], {"headers": {"Authorization": f"bearer {VALID}"}}, Verdict.ALLOWED, None),
        # The verified parameter is removed from :path before RBAC (forward = false) ...
        (
            [DEFAULT_LOCATIONS, ap([when("request.headers[:path]", ["/v2/health/ready?a=1&b=2"])])],
            {"path": f"/v2/health/ready?a=1&access_token={VALID}&b=2"},
            Verdict.ALLOWED,
            PRINCIPAL_A,
        ),
        # ... and kept with forwardOriginalToken.
        (
            [
                ra(jwt_rule(from_headers=None, forwardOriginalToken=True)),
                ap([when("request.headers[:path]", [PATH_WITH_TOKEN])], action="DENY"),
            ],
            {"path": PATH_WITH_TOKEN},
            Verdict.DENIED,
            PRINCIPAL_A,
        ),
    ],
    ids=["param", "invalid param", "header", "lower-case bearer", "param removed", "param forwarded"],
)
def test_default_token_locations(
    documents: list[Any], overrides: dict[str, Any], verdict: Verdict, principal: str | None
) -> None:
    result = outcome(documents, **overrides)
    assert result.verdict is verdict, result.reason
    assert result.principal == principal


def test_two_different_tokens_are_unsupported() -> None:
    with pytest.raises(UnsupportedPolicyError):
        outcome([DEFAULT_LOCATIONS], headers=bearer(VALID), path="/?access_token=not-a-jwt")


DENY_AUTHORIZATION_HEADER = ap([when("request.headers[authorization]", ["*"])], action="DENY")


@pytest.mark.parametrize(
    ("rule", "headers", "verdict", "principal"),
    [
        (jwt_rule(), bearer(VALID), Verdict.ALLOWED, PRINCIPAL_A),  # RBAC sees the request without the token
        (jwt_rule(forwardOriginalToken=True), bearer(VALID), Verdict.DENIED, PRINCIPAL_A),
        (
            jwt_rule(from_headers=[{"name": "x-jwt-assertion"}]),
            {"x-jwt-assertion": VALID},
            Verdict.ALLOWED,
            PRINCIPAL_A,
        ),
        (jwt_rule(from_headers=[{"name": "x-jwt-assertion"}]), bearer(VALID), Verdict.DENIED, None),
        # No prefix: the whole value "Bearer <jwt>" is the token.
        (jwt_rule(from_headers=[{"name": "authorization"}]), bearer(VALID), Verdict.UNAUTHENTICATED, None),
        (
            jwt_rule(from_headers=[{"name": "authorization", "prefix": "Bearer"}]),
            bearer(VALID),
            Verdict.ALLOWED,
            PRINCIPAL_A,
        ),  # the space is skipped as a non-base64url character
        (
            jwt_rule(from_headers=[*BEARER, {"name": "Authorization", "prefix": "bearer "}]),
            {"Authorization": f"bearer {VALID}"},
            Verdict.ALLOWED,
            PRINCIPAL_A,
        ),
        (
            jwt_rule(from_headers=[*BEARER, {"name": "Authorization", "prefix": "bearer "}]),
            {"Authorization": "bearer not-a-jwt"},
            Verdict.UNAUTHENTICATED,
            None,
        ),
    ],
    ids=[
        "removed",
        "forwarded",
        "own header",
        "own header only",
        "no prefix",
        "prefix without space",
        "second prefix",
        "second prefix invalid",
    ],
)
def test_header_locations_and_forwarding(
    rule: dict[str, Any], headers: dict[str, str], verdict: Verdict, principal: str | None
) -> None:
    result = outcome([ra(rule), DENY_AUTHORIZATION_HEADER], headers=headers)
    assert result.verdict is verdict, result.reason
    assert result.principal == principal


def test_cors_preflight_bypasses_jwt_authn() -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST", **bearer("not-a-jwt")}
    assert outcome([RA_A], method="OPTIONS", headers=preflight).verdict is Verdict.ALLOWED
    del preflight["Access-Control-Request-Method"]
    assert outcome([RA_A], method="OPTIONS", headers=preflight).verdict is Verdict.UNAUTHENTICATED


# --- requestPrincipals / request.auth.principal: iss and sub, split at the last `/` ----------------

A_ALICE = {"iss": ISS_A, "sub": "alice"}
PRINCIPAL_CASES = [
    # (value, claims, expected)
    (PRINCIPAL_A, A_ALICE, True),
    (PRINCIPAL_A, {"iss": ISS_A, "sub": "bob"}, False),
    (PRINCIPAL_A, {"iss": ISS_B, "sub": "alice"}, False),
    (PRINCIPAL_A, None, False),  # no token
    (f"{ISS_A}/*", A_ALICE, True),
    (f"{ISS_A}/*", {"iss": ISS_A}, False),  # a token without sub
    (f"{ISS_A}/*", {"iss": ISS_A, "sub": ""}, False),  # `*` is `.+`
    (f"{ISS_A}/al*", A_ALICE, True),
    (f"{ISS_A}/bo*", A_ALICE, False),
    ("*", A_ALICE, True),
    ("*", {"iss": ISS_A}, False),
    ("*", {"sub": "alice"}, False),
    ("*/alice", A_ALICE, True),
    ("*.example/alice", A_ALICE, True),
    ("*.example/alice*", {"iss": ISS_A, "sub": "alice*"}, True),  # leading `*`: the sub is exact
    ("*.example/alice*", A_ALICE, False),
    ("no-slash", {"iss": "no-slash", "sub": "alice"}, False),  # iss exact, sub exact ""
    ("no-slash", {"iss": "no-slash", "sub": ""}, True),
    ("idp*", {"iss": "idp-x", "sub": "x"}, True),  # no slash, trailing `*`: iss prefix, any sub
    ("idp*", {"iss": "idp-x"}, False),
    ("*lice", {"iss": "anyone", "sub": "alice"}, True),  # no slash, leading `*`: any iss, sub suffix
    ("*lice", {"iss": "anyone", "sub": "bob"}, False),
    ("idp*", {"iss": "other", "sub": "x"}, False),
    ("https://idp/spiffe://td/ns/a/sa/b", {"iss": "https://idp", "sub": "spiffe://td/ns/a/sa/b"}, False),
]


@pytest.mark.parametrize(("value", "claims_", "expected"), PRINCIPAL_CASES)
def test_request_principals(value: str, claims_: dict[str, Any] | None, expected: bool) -> None:
    assert rule_matches(frm(requestPrincipals=[value]), req(), claims=claims_) is expected
    assert rule_matches(frm(notRequestPrincipals=[value]), req(), claims=claims_) is not expected
    assert rule_matches(when("request.auth.principal", [value]), req(), claims=claims_) is expected
    assert rule_matches(when("request.auth.principal", None, [value]), req(), claims=claims_) is not expected


def test_token_without_sub_is_no_request_principal() -> None:
    token = mint(claims(ISS_A, None, AUD), KEY_A)
    assert outcome([RA_A, ALLOW_ALL], headers=bearer(token)).verdict is Verdict.ALLOWED  # it does verify
    assert outcome([RA_A, REQUIRE_TOKEN], headers=bearer(token)).verdict is Verdict.DENIED
    assert outcome([RA_A, ap([frm(requestPrincipals=[f"{ISS_A}/*"])])], headers=bearer(token)).verdict is (
        Verdict.DENIED
    )


# --- request.auth.claims[...], audiences, presenter: string or list, strings only ------------------

CLAIM_CASES = [
    # (key, values, not_values, claims, expected)
    ("request.auth.claims[groups]", ["admins"], None, {"groups": ["users", "admins"]}, True),
    ("request.auth.claims[groups]", ["admins"], None, {"groups": "admins"}, True),
    ("request.auth.claims[groups]", ["admins"], None, {"groups": "users admins"}, False),  # not space-delimited
    ("request.auth.claims[groups]", ["admins"], None, {"groups": ["admins-x"]}, False),
    ("request.auth.claims[groups]", ["adm*"], None, {"groups": ["users", "admins"]}, True),
    ("request.auth.claims[groups]", ["*"], None, {"groups": [""]}, False),
    ("request.auth.claims[groups]", ["*"], None, {"groups": [3, "x"]}, True),
    ("request.auth.claims[groups]", ["admins"], None, {}, False),
    ("request.auth.claims[groups]", ["admins"], None, None, False),
    ("request.auth.claims[level]", ["3"], None, {"level": 3}, False),  # numbers never match
    ("request.auth.claims[verified]", ["true"], None, {"verified": True}, False),  # nor booleans
    ("request.auth.claims[org]", ["*"], None, {"org": {"id": "o1"}}, False),  # nor objects
    ("request.auth.claims[org][id]", ["o1"], None, {"org": {"id": "o1"}}, True),
    ("request.auth.claims[org][id]", ["o1"], None, {"org": "o1"}, False),
    ("request.auth.claims[org][id]", ["o1"], None, {"org": {"id": ["o2", "o1"]}}, True),
    ("request.auth.claims[a.b]", ["x"], None, {"a.b": "x"}, True),  # one claim named "a.b"
    ("request.auth.claims[a.b]", ["x"], None, {"a": {"b": "x"}}, False),
    ("request.auth.claims[groups]", None, ["admins"], None, True),  # no token: not_id holds
    ("request.auth.claims[groups]", None, ["admins"], {"groups": ["admins"]}, False),
    ("request.auth.claims[groups]", None, ["admins"], {"groups": ["users"]}, True),
    ("request.auth.audiences", [AUD], None, {"aud": AUD}, True),
    ("request.auth.audiences", [AUD], None, {"aud": ["x", AUD]}, True),
    ("request.auth.audiences", [AUD], None, {"aud": f"https://{AUD}/"}, False),  # RBAC compares verbatim
    ("request.auth.presenter", ["web"], None, {"azp": "web"}, True),
    ("request.auth.presenter", ["web"], None, {"aud": "web"}, False),
]


@pytest.mark.parametrize(("key", "values", "not_values", "claims_", "expected"), CLAIM_CASES)
def test_claim_conditions(
    key: str, values: list[str] | None, not_values: list[str] | None, claims_: dict[str, Any] | None, expected: bool
) -> None:
    assert rule_matches(when(key, values, not_values), req(), claims=claims_) is expected


@pytest.mark.parametrize(
    ("rule", "body", "claim", "normalized"),
    [
        (jwt_rule(), {"scope": "read  infer"}, "scope", ["read", "infer"]),
        (jwt_rule(), {"permission": "a b"}, "permission", ["a", "b"]),
        (jwt_rule(), {"scope": ""}, "scope", ""),  # no word: left as it is
        (jwt_rule(), {"scope": ["read infer"]}, "scope", ["read infer"]),  # only strings are split
        (jwt_rule(), {"roles": "a b"}, "roles", "a b"),
        (jwt_rule(spaceDelimitedClaims=["roles"]), {"roles": "a b"}, "roles", ["a", "b"]),
    ],
)
def test_space_delimited_claims(rule: dict[str, Any], body: dict[str, Any], claim: str, normalized: Any) -> None:
    token = mint(claims(ISS_A, "alice", AUD, **body), KEY_A)
    result = outcome([ra(rule)], headers=bearer(token))
    assert result.claims is not None
    assert result.claims[claim] == normalized


ACCOUNTS = ap(
    [
        {**frm(requestPrincipals=[PRINCIPAL_A]), **to(paths=["/v2/models/alice-model/*"])},
        {
            **frm(requestPrincipals=["*"]),
            "when": [
                {"key": "request.auth.claims[groups]", "values": ["admins"]},
                {"key": "request.auth.audiences", "values": [AUD]},
                {"key": "request.auth.claims[org][id]", "values": ["o1"]},
                {"key": "request.auth.claims[scope]", "values": ["infer"]},
            ],
        },
    ]
)
ADMIN = {"groups": ["users", "admins"], "org": {"id": "o1"}, "scope": "read infer"}


@pytest.mark.parametrize(
    ("sub", "extra", "path", "verdict"),
    [
        ("alice", {}, "/v2/models/alice-model/infer", Verdict.ALLOWED),
        ("alice", {}, "/v2/models/other/infer", Verdict.DENIED),
        ("bob", {}, "/v2/models/alice-model/infer", Verdict.DENIED),
        ("bob", ADMIN, "/v2/models/other/infer", Verdict.ALLOWED),
        ("bob", {**ADMIN, "scope": "read"}, "/v2/models/other/infer", Verdict.DENIED),
        ("bob", {**ADMIN, "org": {"id": "o2"}}, "/v2/models/other/infer", Verdict.DENIED),
        ("bob", {**ADMIN, "groups": "admins"}, "/v2/models/other/infer", Verdict.ALLOWED),  # string claim
    ],
)
def test_accounts_policy_from_the_notes(sub: str, extra: dict[str, Any], path: str, verdict: Verdict) -> None:
    token = mint(claims(ISS_A, sub, AUD, **extra), KEY_A)
    documents = [RA_A, DENY_UNVERIFIED, ACCOUNTS]
    assert outcome(documents, headers=bearer(token), path=path).verdict is verdict


# --- several issuers and attachment ---------------------------------------------------------------

RA_B_ROOT = ra(jwt_rule(ISS_B, (KEY_B,)), namespace="istio-system", name="jwt-b")
BOB = claims(ISS_B, "bob", AUD)

TWO_ISSUER_CASES = [
    # (id, documents, headers, verdict, reason or principal)
    ("valid A", [RA_A, RA_B_ROOT], bearer(VALID), Verdict.ALLOWED, PRINCIPAL_A),
    ("valid B", [RA_A, RA_B_ROOT], bearer(mint(BOB, KEY_B)), Verdict.ALLOWED, f"{ISS_B}/bob"),
    ("iss A signed with B's key", [RA_A, RA_B_ROOT], bearer(mint(ALICE, KEY_B)), Verdict.UNAUTHENTICATED, NO_KEY),
    ("iss A, B's key, A's kid", [RA_A, RA_B_ROOT], bearer(mint(ALICE, KEY_B, kid=KEY_A.kid)),
     Verdict.UNAUTHENTICATED, "Jwt verification fails"),
    ("iss B signed with A's key", [RA_A, RA_B_ROOT], bearer(mint(BOB, KEY_A)), Verdict.UNAUTHENTICATED, NO_KEY),
    ("unknown issuer C", [RA_A, RA_B_ROOT], bearer(mint(claims("https://idp-c.example", "c", AUD), KEY_A)),
     Verdict.UNAUTHENTICATED, "Jwt issuer is not configured"),
    ("wrong aud for the second issuer", [RA_A, RA_B_ROOT], bearer(mint(claims(ISS_B, "bob", "x"), KEY_B)),
     Verdict.AUDIENCE_REJECTED, "Audiences in Jwt are not allowed"),
    ("B's RA in another namespace", [RA_A, {**RA_B_ROOT, "metadata": {"name": "b", "namespace": "other"}}],
     bearer(mint(BOB, KEY_B)), Verdict.UNAUTHENTICATED, "Jwt issuer is not configured"),
    ("B's RA selects another workload", [RA_A, ra(jwt_rule(ISS_B, (KEY_B,)), selector={"app": "other"}, name="b")],
     bearer(mint(BOB, KEY_B)), Verdict.UNAUTHENTICATED, "Jwt issuer is not configured"),
    ("no applicable RA: no jwt_authn at all", [ra(jwt_rule(), selector={"app": "other"})], bearer("not-a-jwt"),
     Verdict.ALLOWED, None),
    ("B's token where only A looks", [RA_A, ra(jwt_rule(ISS_B, (KEY_B,), from_headers=[{"name": "x-b"}]), name="b")],
     bearer(mint(BOB, KEY_B)), Verdict.UNAUTHENTICATED, "Jwt issuer is not configured"),
    ("B's token in B's header", [RA_A, ra(jwt_rule(ISS_B, (KEY_B,), from_headers=[{"name": "x-b"}]), name="b")],
     {"x-b": mint(BOB, KEY_B)}, Verdict.ALLOWED, f"{ISS_B}/bob"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("documents", "headers", "verdict", "detail"),
    [case[1:] for case in TWO_ISSUER_CASES],
    ids=[case[0] for case in TWO_ISSUER_CASES],
)
def test_several_issuers(documents: list[Any], headers: dict[str, str], verdict: Verdict, detail: str | None) -> None:
    result = outcome(documents, headers=headers)
    assert result.verdict is verdict, result.reason
    assert (result.principal if verdict is Verdict.ALLOWED else result.reason) == detail


def test_duplicate_issuers_are_unsupported() -> None:
    with pytest.raises(UnsupportedPolicyError):
        outcome([RA_A, ra(jwt_rule(), name="again")])


# --- API: mixed document streams, evaluate_all, validation -----------------------------------------


def test_evaluate_all_applies_request_authentications() -> None:
    requests = [req(), req(headers=bearer(VALID)), req(headers=bearer("not-a-jwt"))]
    assert evaluate_all([RA_A], TRITON, requests) == [True, True, False]
    assert evaluate_all([RA_A, REQUIRE_TOKEN], TRITON, requests) == [False, True, False]
    assert evaluate_all([REQUIRE_TOKEN], TRITON, requests) == [False, False, False]  # no RA: no identity


def test_evaluate_outcomes_ignores_other_kinds() -> None:
    peer = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "p"}}
    assert outcome([None, peer, RA_A], headers=bearer(VALID)).principal == PRINCIPAL_A
    with pytest.raises(InvalidPolicyError):
        evaluate([peer, RA_A], TRITON, req())  # evaluate / evaluate_all stay strict


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (ra(jwt_rule() | {"jwks": "{not json"}), InvalidPolicyError),
        (ra(jwt_rule() | {"jwks": '{"keys": []}'}), InvalidPolicyError),  # Envoy refuses the listener
        (ra(jwt_rule() | {"jwks": '{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}'}), InvalidPolicyError),
        (ra({k: v for k, v in jwt_rule().items() if k != "issuer"}), InvalidPolicyError),
        (ra(jwt_rule(from_headers=[{"name": ""}])), InvalidPolicyError),
        (ra(jwt_rule(from_headers=[{"prefix": "Bearer "}])), InvalidPolicyError),
        (ra(jwt_rule(), selector={"app": "tri*"}), InvalidPolicyError),
        (ra(jwt_rule(issuers=["x"])), InvalidPolicyError),
        (ra(jwt_rule() | {"jwksUri": "https://idp-a.example/jwks"}), UnsupportedPolicyError),
        (ra({"issuer": ISS_A}), UnsupportedPolicyError),  # OIDC discovery
        (ra(jwt_rule(fromCookies=["session"])), UnsupportedPolicyError),
        (ra(jwt_rule(outputPayloadToHeader="x-jwt-payload")), UnsupportedPolicyError),
    ],
)
def test_invalid_request_authentications_raise(document: dict[str, Any], error: type[ValueError]) -> None:
    if error is InvalidPolicyError and document["kind"] == "RequestAuthentication":
        with pytest.raises(error):
            validate_request_authentication(document)
    # Validated even when it does not apply to the workload.
    elsewhere = {**document, "metadata": {"name": "jwt", "namespace": "elsewhere"}}
    with pytest.raises(error):
        evaluate_outcomes([elsewhere], TRITON, [req()])


def test_misspelt_kind_is_an_error_for_evaluate_only() -> None:
    misspelt = {**RA_A, "kind": "RequestAuthentications"}
    with pytest.raises(InvalidPolicyError):
        evaluate([misspelt], TRITON, req())
    assert outcome([misspelt], headers=bearer("not-a-jwt")).verdict is Verdict.ALLOWED  # ignored in a stream


def test_valid_request_authentication_passes() -> None:
    validate_request_authentication(RA_A)
    validate_request_authentication(ra(jwt_rule(from_headers=None, fromParams=["token"], spaceDelimitedClaims=["r"])))
