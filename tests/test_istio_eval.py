"""Table-driven tests for the reference Istio AuthorizationPolicy evaluator (tests/istio_eval.py).

Expectations come from the Istio semantics notes, not from meshgen: this file must not import meshgen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.istio_eval import (
    InvalidPolicyError,
    IstioRequest,
    UnsupportedPolicyError,
    Workload,
    evaluate,
    normalize_path,
    policy_applies,
    rule_matches,
    validate_policy,
)
from tests.istio_validation import shared_reference_dir

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
    (frm(requestPrincipals=["*"]), CLIENT, False),  # no JWT support: never matches
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
        ("request.auth.claims[iss]", UnsupportedPolicyError),
        ("request.auth.principal", UnsupportedPolicyError),
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
    values: list[str] | None, not_values: list[str] | None, metadata: dict[str, dict[str, str]], matches: bool
) -> None:
    """istiod's envoyFilterGenerator: experimental.envoy.filters.a.b[c] = metadata c of filter envoy.filters.a.b."""
    rule = when(f"experimental.{GUARD}[model]", values, not_values)
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
