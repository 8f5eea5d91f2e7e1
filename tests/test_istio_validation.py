"""Tests for tests/istio_validation.py: one valid document per kind, one broken variant per rule.

Each invalid case changes a single field of a valid document, so the asserted error can only
come from the rule under test.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.istio_validation import (
    ALLOW_MISSING_ENV,
    CRD_FILES,
    SHARED_REFERENCE_ENV,
    SharedReferenceMissingError,
    crd_dir,
    shared_reference_dir,
    validate_istio_document,
    validate_istio_documents,
    webhook_warnings,
)
from tests.support.jwt_tokens import jwks, provider_key

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _shared_reference() -> None:
    """Every test needs the CRDs; a missing folder fails unless explicitly allowed to skip."""
    try:
        shared_reference_dir()
    except SharedReferenceMissingError as exc:
        if os.environ.get(ALLOW_MISSING_ENV) == "1":
            pytest.skip(str(exc))
        pytest.fail(str(exc))


# ---------------------------------------------------------------------------------------------
# Valid documents
# ---------------------------------------------------------------------------------------------

VALID_AP: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {
        "name": "triton-deny-admin",
        "namespace": "triton",
        "labels": {"app.kubernetes.io/managed-by": "meshgen", "tier": ""},
        "annotations": {"meshgen.io/source": "spec.yaml"},
    },
    "spec": {
        "selector": {"matchLabels": {"app": "triton"}},
        "action": "DENY",
        "rules": [
            {
                "from": [
                    {
                        "source": {
                            "principals": ["cluster.local/ns/clients/sa/web"],
                            "notNamespaces": ["triton"],
                            "ipBlocks": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"],
                            # Host bits set: istiod (Go netip.ParsePrefix) accepts it.
                            "notIpBlocks": ["10.1.2.3/16"],
                        }
                    }
                ],
                "to": [
                    {
                        "operation": {
                            "ports": ["8000"],
                            "methods": ["POST", "GET"],
                            "paths": [
                                "/v2/models/{*}/versions/{*}/infer",
                                "/v2/repository/{**}",
                                "/v2/health/*",
                            ],
                            "notPaths": ["/v2/models/{*}/ready"],
                        }
                    }
                ],
                "when": [{"key": "request.headers[x-a]", "values": ["1"], "notValues": ["2"]}],
            },
            {
                "from": [{"source": {"namespaces": ["ml"]}}],
                "to": [{"operation": {"ports": ["8001"], "paths": ["/inference.GRPCInferenceService/*"]}}],
                "when": [
                    {"key": "source.ip", "values": ["10.0.0.1"]},
                    {"key": "destination.port", "notValues": ["8002"]},
                    {"key": "request.auth.claims[iss]", "values": ["https://issuer"]},
                ],
            },
        ],
    },
}

VALID_ALLOW_AP: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1beta1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "triton-allow", "namespace": "triton"},
    "spec": {
        "selector": {"matchLabels": {"app": "triton"}},
        "rules": [
            {
                "from": [{"source": {"serviceAccounts": ["clients/web", "batch"]}}],
                "to": [{"operation": {"paths": ["/v2/models/simple/infer"], "methods": ["POST"]}}],
            },
            {},
        ],
    },
}

VALID_PA: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "triton-mtls", "namespace": "triton"},
    "spec": {
        "selector": {"matchLabels": {"app": "triton"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"8002": {"mode": "PERMISSIVE"}},
    },
}

VALID_RA: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1",
    "kind": "RequestAuthentication",
    "metadata": {"name": "triton-jwt", "namespace": "triton"},
    "spec": {
        "selector": {"matchLabels": {"app": "triton"}},
        "jwtRules": [{"issuer": "https://issuer", "jwksUri": "https://issuer/jwks", "timeout": "5s"}],
    },
}

KEY_RSA = provider_key("idp-a", "RSA")
KEY_EC = provider_key("idp-a", "EC")

VALID_JWKS_RA: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1",
    "kind": "RequestAuthentication",
    "metadata": {"name": "triton-jwt-inline", "namespace": "triton"},
    "spec": {
        "selector": {"matchLabels": {"app": "triton"}},
        "jwtRules": [
            {
                "issuer": "https://idp-a.example",
                "audiences": ["meshgen-api"],
                "jwks": jwks(KEY_RSA, KEY_EC),
                "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}, {"name": "x-jwt"}],
                "fromParams": ["token"],
                "forwardOriginalToken": False,
                "spaceDelimitedClaims": ["roles"],
                "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
            }
        ],
    },
}

VALID_DOCS = {
    "ap-deny": VALID_AP,
    "ap-allow": VALID_ALLOW_AP,
    "pa": VALID_PA,
    "ra": VALID_RA,
    "ra-inline-jwks": VALID_JWKS_RA,
}


def _with(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """Deep copy of ``base`` with ``value`` set at ``path``; the ``DELETE`` value removes the key."""
    doc = copy.deepcopy(base)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


DELETE = object()
RULE0 = ("spec", "rules", 0)
JWT0 = ("spec", "jwtRules", 0)
SRC0 = (*RULE0, "from", 0, "source")
OP0 = (*RULE0, "to", 0, "operation")
WHEN0 = (*RULE0, "when", 0)


@pytest.mark.parametrize("doc", VALID_DOCS.values(), ids=VALID_DOCS.keys())
@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_valid_documents_have_no_errors(doc: dict[str, Any], version: str) -> None:
    doc = _with(doc, ("apiVersion",), f"security.istio.io/{version}")
    assert validate_istio_document(doc) == []


@pytest.mark.parametrize("doc", VALID_DOCS.values(), ids=VALID_DOCS.keys())
def test_valid_documents_have_no_warnings(doc: dict[str, Any]) -> None:
    assert webhook_warnings(doc) == []


def test_documents_loaded_from_yaml_validate() -> None:
    stream = yaml.safe_dump_all([VALID_AP, VALID_PA], sort_keys=False) + "---\n"
    assert validate_istio_documents(yaml.safe_load_all(stream)) == []


HEADER_CONDITION = {"key": "request.headers[x-a]", "values": ["1"]}
GATEWAY_REF = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "ingress"}

# Variants that must stay valid: guards against false positives in the stricter checks.
VALID_VARIANTS: list[tuple[str, dict[str, Any], tuple[str | int, ...], Any]] = [
    ("allow-nothing", VALID_ALLOW_AP, ("spec",), {}),
    ("deny-all", VALID_AP, ("spec", "rules"), [{}]),
    ("plain-prefix-path", VALID_AP, (*OP0, "paths"), ["/v2/models/*", "*", "/v2/*/ready"]),
    ("match-any-last", VALID_AP, (*OP0, "paths"), ["/v2/{**}", "/{*}/{**}"]),
    ("method-wildcard", VALID_AP, (*OP0, "methods"), ["*", "GET"]),
    ("port-zero-padded", VALID_AP, (*OP0, "ports"), ["08000"]),
    ("ipv6-host", VALID_AP, (*SRC0, "ipBlocks"), ["::1", "fe80::/10"]),
    ("trust-domains", VALID_AP, (*SRC0, "trustDomains"), ["cluster.local", "*.local", "prod.*", "*"]),
    ("claims-nested", VALID_AP, (*WHEN0,), {"key": "request.auth.claims[groups][admin]", "values": ["x"]}),
    ("experimental-key", VALID_AP, (*WHEN0,),
     {"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]}),
    ("trust-domain-key", VALID_AP, (*WHEN0,), {"key": "source.trustDomain", "values": ["cluster.local"]}),
    ("remote-ip-cidr", VALID_AP, (*WHEN0,), {"key": "remote.ip", "notValues": ["10.0.0.0/8"]}),
    ("gateway-target", VALID_RA, ("spec",), {"targetRefs": [GATEWAY_REF]}),
    ("namespace-wide-pa", VALID_PA, ("spec",), {"mtls": {"mode": "STRICT"}}),
    ("pa-unset-port", VALID_PA, ("spec", "portLevelMtls"), {"8000": {"mode": "UNSET"}, "8001": {}}),
    ("ra-jwks-uri-alias", VALID_RA, ("spec", "jwtRules", 0), {"issuer": "i", "jwks_uri": "http://i/keys"}),
    # The webhook takes an issuer-less rule when it has a jwksUri (the proto says issuer is required).
    ("ra-issuer-less-jwks-uri", VALID_RA, JWT0, {"jwksUri": "https://i:8443/keys"}),
    ("ra-bare-jwk", VALID_JWKS_RA, (*JWT0, "jwks"), json.dumps({"kty": "RSA", "n": KEY_RSA.jwk()["n"], "e": "AQAB"})),
    ("ra-default-locations", VALID_JWKS_RA, JWT0, {"issuer": "https://idp-a.example", "jwks": jwks(KEY_EC)}),
    ("request-principals", VALID_AP, (*SRC0, "requestPrincipals"), ["https://idp-a.example/alice", "*"]),
    ("not-request-principals", VALID_AP, (*SRC0, "notRequestPrincipals"), ["*"]),
    ("claims-fallback-name", VALID_AP, WHEN0, {"key": "request.auth.claims[a[b]]", "values": ["x"]}),
    ("jwt-when-keys", VALID_AP, (*RULE0, "when"),
     [{"key": "request.auth.principal", "values": ["i/s"]}, {"key": "request.auth.audiences", "notValues": ["a"]},
      {"key": "request.auth.presenter", "values": ["web"]}]),
    ("custom-with-provider", VALID_ALLOW_AP, ("spec",),
     {"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{"when": [HEADER_CONDITION]}]}),
    ("no-namespace", VALID_PA, ("metadata",), {"name": "cluster-wide.default"}),
    ("status-preserved", VALID_PA, ("status",), {"anything": {"goes": True}}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "path", "value"), [case[1:] for case in VALID_VARIANTS], ids=[case[0] for case in VALID_VARIANTS]
)
def test_valid_variant_has_no_errors(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    assert validate_istio_document(_with(base, path, value)) == []


# ---------------------------------------------------------------------------------------------
# Invalid variants: (id, base document, path, new value, substrings every one of which must appear)
# ---------------------------------------------------------------------------------------------

INVALID_CASES: list[tuple[str, dict[str, Any], tuple[str | int, ...], Any, tuple[str, ...]]] = [
    # document identity
    ("unknown-kind", VALID_AP, ("kind",), "DestinationRule", ("kind: unsupported 'DestinationRule'",)),
    ("unknown-version", VALID_AP, ("apiVersion",), "security.istio.io/v1alpha1",
     ("apiVersion: unsupported 'security.istio.io/v1alpha1'",)),
    ("wrong-group", VALID_PA, ("apiVersion",), "networking.istio.io/v1",
     ("apiVersion: unsupported 'networking.istio.io/v1'",)),
    # layer 1: schema, unknown fields, metadata
    ("unknown-top-field", VALID_AP, ("specs",), {}, ('unknown field "specs"',)),
    ("unknown-spec-field", VALID_AP, ("spec", "actions"), "DENY", ('unknown field "spec.actions"',)),
    ("unknown-rule-field", VALID_AP, (*RULE0, "form"), [], ('unknown field "spec.rules[0].form"',)),
    ("unknown-operation-field", VALID_AP, (*OP0, "method"), ["GET"],
     ('unknown field "spec.rules[0].to[0].operation.method"',)),
    ("unknown-pa-field", VALID_PA, ("spec", "mtls", "modes"), "STRICT", ('unknown field "spec.mtls.modes"',)),
    ("unknown-metadata-field", VALID_AP, ("metadata", "label"), {}, ('unknown field "metadata.label"',)),
    ("missing-metadata", VALID_AP, ("metadata",), DELETE, ("'metadata' is a required property",)),
    ("bad-action", VALID_AP, ("spec", "action"), "deny", ("'deny' is not one of",)),
    ("bad-mtls-mode", VALID_PA, ("spec", "mtls", "mode"), "strict", ("'strict' is not one of",)),
    ("port-as-int", VALID_AP, (*OP0, "ports"), [8000],
     ("8000 is not of type 'string'", "some validation rules were not checked")),
    ("null-rules", VALID_AP, ("spec", "rules"), None, ("None is not of type 'array'",)),
    ("targetref-missing-kind", VALID_RA, ("spec", "targetRef"), {"name": "gw"},
     ("'kind' is a required property",)),
    ("bad-name", VALID_AP, ("metadata", "name"), "Triton_AP", ("metadata.name: 'Triton_AP'",)),
    ("bad-namespace", VALID_AP, ("metadata", "namespace"), "a.b", ("metadata.namespace: 'a.b'",)),
    ("bad-label-key", VALID_AP, ("metadata", "labels", "-x"), "v", ("metadata.labels[-x]: key name",)),
    ("bad-label-prefix", VALID_AP, ("metadata", "labels", "Ex.com/x"), "v", ("key prefix 'Ex.com'",)),
    ("bad-label-value", VALID_AP, ("metadata", "labels", "tier"), "a b",
     ("metadata.labels[tier]: value 'a b'",)),
    # layer 2: CEL
    ("selector-and-targetrefs", VALID_AP,
     ("spec", "targetRefs"), [{"kind": "Service", "group": "", "name": "t"}],
     ("spec: only one of targetRefs or selector can be set",)),
    ("wildcard-label-value", VALID_AP, ("spec", "selector", "matchLabels", "app"), "tri*",
     ("spec.selector.matchLabels[app]: wildcard not allowed in label value match",)),
    ("wildcard-label-key", VALID_PA, ("spec", "selector", "matchLabels", "a*"), "x",
     ("wildcard not allowed in label key match",)),
    ("sa-with-principals", VALID_ALLOW_AP, ("spec", "rules", 0, "from", 0, "source", "principals"), ["x"],
     ("Cannot set serviceAccounts with namespaces or principals",)),
    ("pa-portlevel-without-selector", VALID_PA, ("spec", "selector"), DELETE,
     ("portLevelMtls requires selector", "mesh/namespace peer authentication cannot have port level mTLS")),
    ("pa-portlevel-port-0", VALID_PA, ("spec", "portLevelMtls"), {"0": {"mode": "STRICT"}},
     ("spec.portLevelMtls: port must be between 1-65535", "port must be in range 1..65535")),
    ("ra-jwks-scheme", VALID_RA, ("spec", "jwtRules", 0, "jwksUri"), "ftp://issuer/jwks",
     ("url must have scheme http:// or https://",)),
    ("ra-relative-url", VALID_RA, ("spec", "jwtRules", 0, "jwksUri"), "issuer/jwks",
     ("url must have scheme http:// or https:// (rule could not be evaluated",)),
    ("ra-timeout", VALID_RA, ("spec", "jwtRules", 0, "timeout"), "500us",
     ("must be a valid duration greater than 1ms",)),
    # layer 3: istiod webhook
    ("deny-without-rules", VALID_AP, ("spec", "rules"), DELETE,
     ("DENY action without `rules` is meaningless",)),
    ("deny-empty-rules", VALID_AP, ("spec", "rules"), [], ("DENY action without `rules` is meaningless",)),
    ("custom-without-provider", VALID_AP, ("spec", "action"), "CUSTOM",
     ("`provider.name` must not be empty",)),
    ("provider-with-allow", VALID_ALLOW_AP, ("spec", "provider"), {"name": "ext"},
     ("`provider` must not be with non CUSTOM action, found ALLOW",)),
    ("empty-from", VALID_AP, (*RULE0, "from"), [], ("spec.rules[0].from: `from` must not be empty",)),
    ("empty-to", VALID_AP, (*RULE0, "to"), [], ("spec.rules[0].to: `to` must not be empty",)),
    ("from-without-source", VALID_AP, (*RULE0, "from", 0), {}, ("`from.source` must not be nil",)),
    ("empty-source", VALID_AP, SRC0, {}, ("`from.source` must not be empty",)),
    ("empty-operation", VALID_AP, OP0, {"ports": []}, ("`to.operation` must not be empty",)),
    ("empty-string-value", VALID_AP, (*SRC0, "principals"), [""],
     ("spec.rules[0].from[0].source.principals[0]: empty value not allowed",)),
    ("empty-string-path", VALID_AP, (*OP0, "paths"), ["/ok", ""],
     ("operation.paths[1]: empty value not allowed",)),
    ("port-too-large", VALID_AP, (*OP0, "ports"), ["70000"], ("bad port (70000)",)),
    ("port-not-a-number", VALID_AP, (*OP0, "ports"), ["+80"], ("bad port (+80)",)),
    ("bad-cidr", VALID_AP, (*SRC0, "ipBlocks"), ["10.0.0.0/33"], ("bad CIDR range (10.0.0.0/33)",)),
    ("netmask-cidr", VALID_AP, (*SRC0, "ipBlocks"), ["10.0.0.0/255.0.0.0"], ("bad CIDR range",)),
    ("bad-ip", VALID_AP, (*SRC0, "ipBlocks"), ["10.0.0.256"], ("bad IP address (10.0.0.256)",)),
    ("sa-wildcard", VALID_ALLOW_AP, ("spec", "rules", 0, "from", 0, "source", "serviceAccounts"), ["ns/*"],
     ("wildcard not allowed",)),
    ("sa-format", VALID_ALLOW_AP, ("spec", "rules", 0, "from", 0, "source", "serviceAccounts"), ["a/b/c"],
     ("expected format 'serviceAccount' or 'namespace/serviceAccount'",)),
    ("trust-domain-middle-wildcard", VALID_AP, (*SRC0, "trustDomains"), ["a*b.local"], ("bad trust domain",)),
    ("template-suffix", VALID_AP, (*OP0, "paths"), ["/foo/{*}.txt"],
     ("Contains '{' or '}' beyond a supported path template",)),
    ("template-any-not-last", VALID_AP, (*OP0, "paths"), ["/v2/{**}/{*}/infer"],
     ("{**} is not the last operator",)),
    ("template-named-var", VALID_AP, (*OP0, "notPaths"), ["/v2/{name}/{*}"],
     ("beyond a supported path template",)),
    ("template-bare-star", VALID_AP, (*OP0, "paths"), ["/v2/*/{*}"],
     ("Contains segment * with invalid string literal",)),
    ("lower-case-method", VALID_AP, (*OP0, "methods"), ["get"], ("method 'get' must be upper-case",)),
    ("lower-case-not-method", VALID_AP, (*OP0, "notMethods"), ["Post"],
     ("method 'Post' must be upper-case",)),
    ("unknown-when-key", VALID_AP, (*WHEN0, "key"), "source.ips", ("unknown attribute: source.ips",)),
    ("rejected-when-key", VALID_AP, (*WHEN0, "key"), "destination.namespace",
     ("replaced by the metadata.namespace",)),
    ("when-header-without-name", VALID_AP, (*WHEN0, "key"), "request.headers[]",
     ("should have format a[b]",)),
    ("when-without-values", VALID_AP, WHEN0, {"key": "request.headers[x-a]"},
     ("at least one of `values` or `notValues` must be set for key request.headers[x-a]",)),
    ("when-empty-key", VALID_AP, (*WHEN0, "key"), "", ("`key` must not be empty",)),
    ("when-missing-key", VALID_AP, WHEN0, {"values": ["1"]}, ("'key' is a required property",)),
    ("when-bad-ip", VALID_AP, ("spec", "rules", 1, "when", 0, "values"), ["10.0.0.x"],
     ("bad IP address (10.0.0.x)",)),
    ("targetref-kind", VALID_RA, ("spec", "targetRefs"), [{"kind": "Deployment", "name": "t"}],
     ("targetRef must be to one of", "but was core/Deployment")),
    ("pa-empty-portlevel", VALID_PA, ("spec", "portLevelMtls"), {},
     ("port level mTLS, if defined, must have at least one element",)),
    # RequestAuthentication: CEL, then validateJwtRule
    ("ra-jwks-and-jwks-uri", VALID_JWKS_RA, (*JWT0, "jwksUri"), "https://idp-a.example/jwks",
     ("spec.jwtRules[0]: only one of jwks or jwksUri can be set",)),
    ("ra-jwks-and-alias", VALID_JWKS_RA, (*JWT0, "jwks_uri"), "https://idp-a.example/jwks",
     ("only one of jwks or jwksUri can be set",)),
    ("ra-jwks-not-json", VALID_JWKS_RA, (*JWT0, "jwks"), "{keys: []",
     ("spec.jwtRules[0].jwks: jwks parse error: invalid JSON",)),
    ("ra-jwks-not-an-object", VALID_JWKS_RA, (*JWT0, "jwks"), "[]", ("jwks parse error",)),
    ("ra-jwks-keys-not-a-list", VALID_JWKS_RA, (*JWT0, "jwks"), '{"keys": {}}', ("`keys` must be an array",)),
    ("ra-jwks-bad-key", VALID_JWKS_RA, (*JWT0, "jwks"), '{"keys": [{"kty": "RSA", "e": "AQAB"}]}',
     ("jwks parse error: key 0",)),
    ("ra-jwks-unknown-kty", VALID_JWKS_RA, (*JWT0, "jwks"), '{"keys": [{"kty": "XYZ"}]}',
     ("key 0: unsupported kty 'XYZ'",)),
    ("ra-jwks-no-keys", VALID_JWKS_RA, (*JWT0, "jwks"), '{"keys": []}',
     ("jwks has no keys: Envoy refuses the listener",)),
    ("ra-header-without-name", VALID_JWKS_RA, (*JWT0, "fromHeaders"), [{"prefix": "Bearer "}],
     ("'name' is a required property", "fromHeaders[0]: location header name must be non-empty string")),
    ("ra-header-empty-name", VALID_JWKS_RA, (*JWT0, "fromHeaders", 1, "name"), "",
     ("fromHeaders[1].name: '' should be non-empty", "fromHeaders[1]: location header name must be non-empty string")),
    ("ra-header-null", VALID_JWKS_RA, (*JWT0, "fromHeaders"), [None],
     ("fromHeaders[0]: location header name must be non-null",)),
    ("ra-no-issuer", VALID_JWKS_RA, (*JWT0, "issuer"), DELETE,
     ("spec.jwtRules[0]: issuer or jwksUri must be non-empty string",)),
    ("ra-empty-issuer", VALID_JWKS_RA, (*JWT0, "issuer"), "",
     ("issuer: '' should be non-empty", "issuer or jwksUri must be non-empty string")),
    ("ra-empty-audience", VALID_JWKS_RA, (*JWT0, "audiences"), ["meshgen-api", ""],
     ("audiences[1]: audience must be non-empty string",)),
    ("ra-empty-param", VALID_JWKS_RA, (*JWT0, "fromParams"), [""],
     ("fromParams[0]: location query must be non-empty string",)),
    ("ra-empty-cookie", VALID_JWKS_RA, (*JWT0, "fromCookies"), [""],
     ("fromCookies[0]: cookie name must be non-empty string",)),
    ("ra-claim-to-header-empty", VALID_JWKS_RA, (*JWT0, "outputClaimToHeaders"), [{"header": "x-sub", "claim": ""}],
     ("outputClaimToHeaders[0]: outputClaimToHeaders header and claim value must be non-empty string",)),
    ("ra-jwks-uri-port", VALID_RA, (*JWT0, "jwksUri"), "https://issuer:https/jwks", ("invalid port",)),
    ("ra-unknown-rule-field", VALID_JWKS_RA, (*JWT0, "issuers"), ["x"],
     ('unknown field "spec.jwtRules[0].issuers"',)),
    ("ra-selector-wildcard", VALID_JWKS_RA, ("spec", "selector", "matchLabels", "app"), "tri*",
     ("wildcard not allowed in label value match",)),
    ("ra-selector-and-targetref", VALID_JWKS_RA, ("spec", "targetRefs"), [GATEWAY_REF],
     ("only one of targetRefs or selector can be set",)),
    # AuthorizationPolicy JWT fields
    ("empty-request-principal", VALID_AP, (*SRC0, "requestPrincipals"), ["https://idp/alice", ""],
     ("source.requestPrincipals[1]: empty value not allowed",)),
    ("claims-key-without-brackets", VALID_AP, (*WHEN0, "key"), "request.auth.claims",
     ("should have format a[b]",)),
    ("claims-key-empty-name", VALID_AP, (*WHEN0, "key"), "request.auth.claims[]", ("should have format a[b]",)),
    ("claims-key-istiod-cannot-split", VALID_AP, (*WHEN0, "key"), "request.auth.claimsX[a]",
     ("istiod cannot extract the claim names",)),
    ("empty-claim-value", VALID_AP, (*WHEN0,), {"key": "request.auth.claims[groups]", "values": [""]},
     ("empty value not allowed",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "path", "value", "expected"),
    [case[1:] for case in INVALID_CASES],
    ids=[case[0] for case in INVALID_CASES],
)
def test_invalid_variant_reports_specific_error(
    base: dict[str, Any], path: tuple[str | int, ...], value: Any, expected: tuple[str, ...]
) -> None:
    errors = validate_istio_document(_with(base, path, value))
    joined = "\n".join(errors)
    for substring in expected:
        assert substring in joined, f"{substring!r} not in:\n{joined}"


def test_cross_namespace_target_ref_is_rejected() -> None:
    doc = _with(VALID_RA, ("spec", "selector"), DELETE)
    doc["spec"]["targetRefs"] = [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]
    assert validate_istio_document(doc) == []
    doc["spec"]["targetRefs"][0]["namespace"] = "other"
    assert validate_istio_document(doc) == [
        "spec.targetRefs[0].namespace: cross namespace referencing is not currently supported"
    ]


def test_custom_action_rejects_identity_fields() -> None:
    doc = _with(VALID_AP, ("spec", "action"), "CUSTOM")
    doc["spec"]["provider"] = {"name": "ext-authz"}
    errors = "\n".join(validate_istio_document(doc))
    assert "principals is currently not supported with CUSTOM action" in errors
    assert "`provider.name`" not in errors


def test_non_mapping_document_is_an_error() -> None:
    not_a_mapping: Any = []
    assert validate_istio_document(not_a_mapping) == ["<document>: expected a mapping, got list"]


def test_stream_errors_name_the_document() -> None:
    bad = _with(VALID_PA, ("spec", "selector"), DELETE)
    errors = validate_istio_documents([VALID_AP, None, bad])
    assert errors
    assert all(error.startswith("PeerAuthentication/triton/triton-mtls: ") for error in errors)


# ---------------------------------------------------------------------------------------------
# Warnings
# ---------------------------------------------------------------------------------------------


def test_deny_with_only_http_attributes_warns() -> None:
    doc = _with(VALID_AP, (*OP0, "ports"), DELETE)
    assert validate_istio_document(doc) == []
    warnings = webhook_warnings(doc)
    assert len(warnings) == 1
    assert warnings[0].startswith("spec.rules[0]: ")
    assert "will deny all traffic to TCP ports" in warnings[0]


def test_deny_source_only_with_tcp_attribute_does_not_warn() -> None:
    doc = _with(VALID_AP, (*RULE0, "to"), DELETE)
    assert webhook_warnings(doc) == []


def test_allow_with_only_http_attributes_does_not_warn() -> None:
    assert webhook_warnings(VALID_ALLOW_AP) == []


@pytest.mark.parametrize(
    "keys",
    [
        [KEY_RSA.jwk(with_private=True), KEY_EC.jwk()],
        [KEY_EC.jwk(), KEY_EC.jwk(with_private=True)],
        [KEY_RSA.jwk(), {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}],  # symmetric: a secret
    ],
    ids=["rsa", "ec", "oct"],
)
def test_private_key_material_in_jwks_warns(keys: list[dict[str, Any]]) -> None:
    doc = _with(VALID_JWKS_RA, (*JWT0, "jwks"), json.dumps({"keys": keys}))
    assert validate_istio_document(doc) == []  # a warning, not an error (Envoy would even use the key)
    index = next(i for i, key in enumerate(keys) if "d" in key or key["kty"] == "oct")
    assert webhook_warnings(doc) == [
        f"spec.jwtRules[0].jwks: jwks key at index {index} contains private key material; "
        "only public keys are used for verification"
    ]


def test_unparseable_jwks_does_not_warn() -> None:
    doc = _with(VALID_JWKS_RA, (*JWT0, "jwks"), '{"keys": [{"kty": "oct"}]}')
    assert validate_istio_document(doc)
    assert webhook_warnings(doc) == []


def test_selector_without_labels_warns() -> None:
    doc = _with(VALID_ALLOW_AP, ("spec", "selector"), {"matchLabels": {}})
    assert validate_istio_document(doc) == []
    assert webhook_warnings(doc) == ["spec.selector: workload selector specified without labels"]


# ---------------------------------------------------------------------------------------------
# Where the CRDs come from
# ---------------------------------------------------------------------------------------------


def test_crds_are_read_from_the_shared_folder() -> None:
    assert {path.name for path in crd_dir().glob("*.yaml")} >= set(CRD_FILES.values())
    copies = [
        path
        for name in CRD_FILES.values()
        for path in REPO_ROOT.rglob(name)
        if ".git" not in path.relative_to(REPO_ROOT).parts
    ]
    assert copies == [], "Istio CRDs must be read from the shared reference folder, not copied"


@pytest.fixture
def missing_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "nowhere"
    monkeypatch.setenv(SHARED_REFERENCE_ENV, str(folder))
    yield folder


def test_missing_shared_folder_raises_clear_error(missing_reference: Path) -> None:
    with pytest.raises(SharedReferenceMissingError, match=SHARED_REFERENCE_ENV) as info:
        validate_istio_document(VALID_AP)
    assert str(missing_reference / "istio-crds") in str(info.value)


def test_env_var_selects_the_shared_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shared_reference_dir()
    monkeypatch.setenv(SHARED_REFERENCE_ENV, str(real))
    assert shared_reference_dir() == real
    assert validate_istio_document(VALID_PA) == []
