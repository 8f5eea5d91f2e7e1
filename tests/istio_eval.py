"""Reference evaluator for Istio 1.30 AuthorizationPolicy on a sidecar, HTTP traffic only.

Written from the Istio semantics notes (``istio-semantics.md`` sections 2.1-2.8), independently of the
``meshgen`` generator, so tests can check what the generated policies *mean* instead of how they look.

It models what the Envoy RBAC filters built by istiod do on a sidecar's inbound HTTP chain:

* which policies attach to a workload (namespace / root namespace, ``selector``; ``targetRefs`` ignored);
* the decision order CUSTOM -> DENY -> (no ALLOW -> allow) -> ALLOW -> deny, AUDIT ignored, dry-run ignored;
* rule matching: (any ``from``) AND (any ``to``) AND (all ``when``), OR within a field, AND across fields;
* RequestAuthentication: the ``envoy.filters.http.jwt_authn`` filter istiod builds from every applicable
  ``jwtRules`` entry, which runs before RBAC: token extraction, verification (401 / 403 before any policy),
  removal of the verified token, and the payload that ``requestPrincipals`` / ``request.auth.*`` read
  (Istio 1.30.3 ``pilot/pkg/security/authn`` + Envoy 1.40 jwt_authn / jwt_verify_lib; /work/notes/jwt.md).

Ambient mode (end of file, from the Istio 1.30.3 ambient source): ``evaluate_ambient`` runs a request
through the waypoint (``targetRefs`` policies, the client's identity) and then the destination ztunnel
(policies without ``targetRefs`` as ``convertAuthorizationPolicy`` reduces them to L4, the waypoint's
identity), or straight to the pod's ztunnel.

Anything it does not model raises :class:`UnsupportedPolicyError`; anything the Istio API server or
webhook would reject raises :class:`InvalidPolicyError`. Both are ``ValueError`` so a test fails loudly
instead of silently evaluating something Istio would never run.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import HMACAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

__all__ = [
    "Ambient",
    "InvalidPolicyError",
    "IstioRequest",
    "L4Connection",
    "Outcome",
    "UnsupportedPolicyError",
    "Verdict",
    "Workload",
    "ZtunnelPolicy",
    "ambient_strict",
    "evaluate",
    "evaluate_all",
    "evaluate_ambient",
    "evaluate_outcomes",
    "normalize_path",
    "policy_applies",
    "rule_matches",
    "validate_policy",
    "validate_request_authentication",
    "waypoint_policy_applies",
    "ztunnel_decision",
    "ztunnel_policy",
    "ztunnel_policy_matches",
]

Policy = Mapping[str, Any]

DRY_RUN_ANNOTATION: Final = "istio.io/dry-run"
_API_VERSIONS: Final = frozenset({"security.istio.io/v1", "security.istio.io/v1beta1"})
_ACTIONS: Final = frozenset({"ALLOW", "DENY", "AUDIT", "CUSTOM"})
_SPEC_KEYS: Final = frozenset({"action", "provider", "rules", "selector", "targetRef", "targetRefs"})
_RULE_KEYS: Final = frozenset({"from", "to", "when"})
_CONDITION_KEYS: Final = frozenset({"key", "values", "notValues"})

# Path templates (Istio >= 1.22): `{*}` = one segment, `{**}` = the rest (istio security.go).
_MATCH_ONE: Final = "{*}"
_MATCH_ANY: Final = "{**}"
# Istio's CheckValidPathTemplate: literal segments of a templated path must be RFC 3986 pchars.
_TEMPLATE_LITERAL: Final = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")
# What Envoy's uri_template operators consume: pchars plus `*` (added by the CVE-2025-46821 fix);
# `{**}` additionally crosses `/`.
_ONE_SEGMENT_TEXT: Final = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=*]+")
_MANY_SEGMENT_TEXT: Final = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=*/]*")

_HEADER_KEY: Final = re.compile(r"request\.headers\[(?P<name>[^\]]+)\]")
# `when` keys Istio accepts but this evaluator does not model (destination IP, XFF, SNI, ...).
_KNOWN_UNMODELLED_KEYS: Final = frozenset(
    {
        "remote.ip",
        "source.serviceAccount",
        "source.trustDomain",
        "destination.ip",
        "connection.sni",
    }
)
_KNOWN_UNMODELLED_PREFIXES: Final = ("request.experimental.inline.headers[",)
# JWT `when` keys (istiod model.go): all read the jwt_authn payload; claims take a nested [a][b] path.
_REQUEST_PRINCIPAL_KEY: Final = "request.auth.principal"
_REQUEST_CLAIMS_KEY: Final = "request.auth.claims"
_CLAIM_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "request.auth.audiences": ("aud",),
    "request.auth.presenter": ("azp",),
}
_EXPERIMENTAL: Final = "experimental.envoy.filters."

# Go's strconv.ParseBool, which istiod uses for the dry-run annotation.
_GO_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_UNRESERVED: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_PERCENT_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")


class InvalidPolicyError(ValueError):
    """The document would be rejected by the Kubernetes API server (CRD schema/CEL) or Istio's webhook."""


class UnsupportedPolicyError(ValueError):
    """Valid Istio configuration that this evaluator deliberately does not model."""


@dataclass(frozen=True)
class Workload:
    """A pod with an Istio sidecar: where it runs and the labels selectors see."""

    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class IstioRequest:
    """One inbound HTTP request as the sidecar's RBAC filter sees it."""

    port: int  # destination (container) port
    method: str  # HTTP method; gRPC is always "POST"
    path: str  # as sent; may contain a query string "?..." which Istio strips before path matching
    principal: str | None = None  # peer mTLS identity "<trust-domain>/ns/<ns>/sa/<sa>", None for plaintext
    source_ip: str | None = None  # direct peer IP (IPv4 or IPv6)
    headers: Mapping[str, str] = field(default_factory=dict)  # header names are case-insensitive
    # Dynamic metadata earlier HTTP filters wrote (filter namespace -> key -> string value), as
    # `when: experimental.envoy.filters.<...>[<key>]` conditions read it.
    metadata: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Wall-clock time (Unix seconds) jwt_authn checks `exp`/`nbf` against; None = time.time().
    now: float | None = None

    def __post_init__(self) -> None:
        # Catch mistakes in the *test* early: a malformed request would otherwise just "not match".
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if not self.method:
            raise ValueError("method must not be empty")
        if not self.path.startswith("/"):
            raise ValueError(f"path must be origin-form (start with '/'): {self.path!r}")
        if self.principal is not None:
            _check_principal(self.principal)
        if self.source_ip is not None:
            ipaddress.ip_address(self.source_ip)
        _check_header_names(self.headers)
        if self.now is not None and self.now < 0:
            raise ValueError(f"now must be a Unix time in seconds, got {self.now}")


def _check_principal(principal: str) -> None:
    # Policies use the Istio form; a SPIFFE URI here would silently never match anything.
    if principal.startswith("spiffe://"):
        raise ValueError(f"principal must be in Istio form '<td>/ns/<ns>/sa/<sa>', not a URI: {principal!r}")
    if not principal:
        raise ValueError("principal must not be empty (use None for plaintext)")


def _check_header_names(headers: Mapping[str, str]) -> None:
    seen: set[str] = set()
    for name in headers:
        lowered = name.lower()
        # Two spellings of one header would make a case-insensitive lookup ambiguous.
        if lowered in seen:
            raise ValueError(f"header {name!r} given twice (names are case-insensitive)")
        # Pseudo-headers other than :authority are derived from method/path; don't let them disagree.
        if lowered.startswith(":") and lowered != ":authority":
            raise ValueError(f"pseudo-header {name!r} is derived from the request fields; do not set it")
        seen.add(lowered)
    # Envoy folds Host into :authority, so giving both is the same header twice.
    if {"host", ":authority"} <= seen:
        raise ValueError("give either Host or :authority, not both")


# ---------------------------------------------------------------------------------------------------
# Request attributes
# ---------------------------------------------------------------------------------------------------


def normalize_path(raw: str) -> str:
    """The path RBAC compares against: query/fragment stripped, then Istio's default BASE normalization.

    BASE (mesh default ``pathNormalization``) = backslash to ``/``, decode %-escapes of unreserved
    characters, resolve ``.``/``..`` (RFC 3986). Slashes are *not* merged (that is MERGE_SLASHES).
    """
    path = raw.split("?", 1)[0].split("#", 1)[0]
    path = path.replace("\\", "/")
    path = _PERCENT_ESCAPE.sub(_decode_if_unreserved, path)
    return _remove_dot_segments(path)


def _decode_if_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _remove_dot_segments(path: str) -> str:
    if not path.startswith("/"):
        return path
    segments = path[1:].split("/")
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    # "/a/b/.." resolves to "/a/" (RFC 3986 5.2.4): a trailing dot segment leaves a trailing slash.
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def _header(request: IstioRequest, name: str) -> str | None:
    """Case-insensitive header lookup, including the pseudo-headers Envoy matchers can see."""
    lowered = name.lower()
    if lowered == ":method":
        return request.method
    if lowered == ":path":
        # HCM normalizes :path before filters run but keeps the query string.
        query = request.path[len(request.path.split("?", 1)[0]) :]
        return normalize_path(request.path) + query
    if lowered in (":authority", "host"):
        return _lookup(request.headers, (":authority", "host"))
    return _lookup(request.headers, (lowered,))


def _lookup(headers: Mapping[str, str], names: Iterable[str]) -> str | None:
    wanted = set(names)
    for key, value in headers.items():
        if key.lower() in wanted:
            return value
    return None


def _peer_namespace(request: IstioRequest) -> str | None:
    # Istio derives source.namespace from the `/ns/<ns>/` part of the peer certificate identity.
    if request.principal is None:
        return None
    match = re.match(r"[^/]*/ns/([^/]+)/", request.principal)
    return match.group(1) if match else None


def _peer_trust_domain(request: IstioRequest) -> str | None:
    if request.principal is None or "/" not in request.principal:
        return None
    return request.principal.split("/", 1)[0]


# ---------------------------------------------------------------------------------------------------
# Value matchers: one policy value against one request attribute
# ---------------------------------------------------------------------------------------------------


def _string_matches(pattern: str, value: str | None) -> bool:
    """Istio's string grammar (matcher/string.go): `*` = non-empty, `*abc` suffix, `abc*` prefix, else exact.

    An absent attribute (no principal on plaintext, missing header) matches nothing.
    """
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _header_matches(pattern: str, value: str | None) -> bool:
    # For header-based fields Istio emits Envoy `present_match` for `*`: present, even if empty.
    if pattern == "*":
        return value is not None
    return _string_matches(pattern, value)


def _host_matches(pattern: str, host: str | None) -> bool:
    # `hosts` is an :authority header matcher with ignore_case (exact/prefix/suffix alike).
    if pattern == "*" or host is None:
        return _header_matches(pattern, host)
    return _string_matches(pattern.lower(), host.lower())


def _ip_matches(block: str, ip: str | None) -> bool:
    if ip is None:
        return False
    # Go's netip.ParsePrefix accepts host bits (1.2.3.4/24), hence strict=False.
    network = ipaddress.ip_network(block, strict=False)
    address = ipaddress.ip_address(ip)
    return address.version == network.version and address in network


def _port_matches(port: str, request_port: int) -> bool:
    return int(port) == request_port


def _service_account_matches(value: str, principal: str | None, policy_namespace: str | None) -> bool:
    if principal is None:
        return False
    namespace, _, account = value.rpartition("/")
    if not namespace:
        # A bare service account means "in the policy's own namespace".
        if policy_namespace is None:
            raise ValueError(f"serviceAccounts value {value!r} needs the policy namespace")
        namespace = policy_namespace
    # Same shape as istiod's regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`, minus the URI scheme.
    regex = rf".+/ns/{re.escape(namespace)}/(.+/|)sa/{re.escape(account)}(/.+)?"
    return re.fullmatch(regex, principal) is not None


def _is_path_template(value: str) -> bool:
    return _MATCH_ONE in value or _MATCH_ANY in value


def _path_matches(pattern: str, path: str) -> bool:
    if _is_path_template(pattern):
        return _template_matches(pattern, path)
    return _string_matches(pattern, path)


def _template_matches(template: str, path: str) -> bool:
    """Segment-wise match of an Envoy uri_template (``{*}`` -> ``*``, ``{**}`` -> ``**``).

    ``{**}`` is the last operator, so everything after it is literal: the head of the path is matched
    segment by segment, the tail likewise from the end, and ``{**}`` takes whatever lies between --
    possibly the empty string (``/v2/{**}`` matches ``/v2/`` but not ``/v2``, as in Envoy).
    """
    wanted = template.split("/")
    actual = path.split("/")
    if _MATCH_ANY not in wanted:
        return len(wanted) == len(actual) and _segments_match(wanted, actual)
    split = wanted.index(_MATCH_ANY)
    head, tail = wanted[:split], wanted[split + 1 :]
    # {**} stands in for at least one (possibly empty) piece between two slashes.
    if len(actual) < len(head) + len(tail) + 1:
        return False
    middle = actual[len(head) : len(actual) - len(tail)]
    return (
        _segments_match(head, actual[: len(head)])
        and _segments_match(tail, actual[len(actual) - len(tail) :])
        and _MANY_SEGMENT_TEXT.fullmatch("/".join(middle)) is not None
    )


def _segments_match(wanted: Sequence[str], actual: Sequence[str]) -> bool:
    for pattern, segment in zip(wanted, actual, strict=True):
        if pattern == _MATCH_ONE:
            if _ONE_SEGMENT_TEXT.fullmatch(segment) is None:
                return False
        elif pattern != segment:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# Field tables: policy field name -> "does this one value match the request?"
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """The request plus what matching it needs from the enclosing policy."""

    request: IstioRequest  # as RBAC sees it: after jwt_authn removed a verified token
    policy_namespace: str | None
    path: str  # normalized, query stripped
    # jwt_authn's `payload` metadata (the verified claims, space-delimited claims split); None = no token.
    claims: Mapping[str, Any] | None = None


ValueMatcher = Callable[[str, _Subject], bool]


# --- JWT: requestPrincipals and request.auth.* read the jwt_authn payload metadata ------------------
#
# istiod (pilot/pkg/security/authz/model/generator.go, matcher/string.go, matcher/metadata.go) emits
# Envoy metadata matchers on `envoy.filters.http.jwt_authn` / `payload` / <claim path>. A missing
# payload (no token) or path matches nothing, so their `not*` forms then hold.

StringTest = Callable[[Any], bool]


def _jwt_any(value: Any) -> bool:
    # `*` becomes safe_regex `.+` (RE2 full match; `.` does not match a newline, as in Python).
    return isinstance(value, str) and re.fullmatch(r".+", value) is not None


def _jwt_exact(expected: str) -> StringTest:
    return lambda value: isinstance(value, str) and value == expected


def _jwt_prefix(prefix: str) -> StringTest:
    return lambda value: isinstance(value, str) and value.startswith(prefix)


def _jwt_suffix(suffix: str) -> StringTest:
    return lambda value: isinstance(value, str) and value.endswith(suffix)


def _jwt_string_test(pattern: str) -> StringTest:
    """matcher.StringMatcher: `*` = `.+`, `*x` suffix, `x*` prefix, else exact; only strings match."""
    if pattern == "*":
        return _jwt_any
    if pattern.startswith("*"):
        return _jwt_suffix(pattern[1:])
    if pattern.endswith("*"):
        return _jwt_prefix(pattern[:-1])
    return _jwt_exact(pattern)


def _principal_tests(value: str) -> tuple[StringTest, StringTest]:
    """requestPrincipalGenerator.extendedPrincipal: (iss test, sub test) for one value, split at the last `/`."""
    slash = value.rfind("/")
    found = slash >= 0
    iss, sub = (value[:slash], value[slash + 1 :]) if found else (value, "")
    if value == "*":
        return _jwt_any, _jwt_any
    if value.startswith("*"):
        if found:
            return (_jwt_any if iss == "*" else _jwt_suffix(iss[1:])), _jwt_exact(sub)
        return _jwt_any, _jwt_suffix(value[1:])
    if value.endswith("*"):
        if found:
            return _jwt_exact(iss), (_jwt_any if sub == "*" else _jwt_prefix(sub[:-1]))
        return _jwt_prefix(value[:-1]), _jwt_any
    # No `/`: iss exact and sub exact "" -- only a token whose `sub` is the empty string matches.
    return _jwt_exact(iss), _jwt_exact(sub)


def _request_principal_matches(value: str, subject: _Subject) -> bool:
    if subject.claims is None:
        return False
    iss_test, sub_test = _principal_tests(value)
    return iss_test(subject.claims.get("iss")) and sub_test(subject.claims.get("sub"))


def _claim_value(claims: Mapping[str, Any] | None, path: Sequence[str]) -> Any:
    """Envoy Metadata::metadataValue: walk struct fields only; anything else on the way = absent."""
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _claim_matcher(path: Sequence[str]) -> ValueMatcher:
    """MetadataListValueMatcher(useExtendedJwt): or_match[list_match{one_of: v}, v] with v a string matcher.

    A string claim matches if it matches; a list claim if one of its string elements does; numbers,
    booleans and objects never match (istiod only emits string matchers).
    """

    def matches(value: str, subject: _Subject) -> bool:
        test = _jwt_string_test(value)
        found = _claim_value(subject.claims, path)
        if isinstance(found, list):
            return any(test(element) for element in found)
        return test(found)

    return matches


def _nested_claim_names(brackets: str) -> list[str] | None:
    """istiod's extractNameInNestedBrackets (model/util.go): `[a][b]` -> [a, b]; None = istiod errors."""
    names: list[str] = []

    def end_bracket(begin: int) -> int:
        if begin >= len(brackets) or brackets[begin] != "[":
            return -1
        for index in range(begin + 1, len(brackets)):
            if brackets[index] == "[":
                return -1
            if brackets[index] == "]":
                return index
        return -1

    begin = 0
    while begin < len(brackets):
        end = end_bracket(begin)
        if end == -1:
            # Fallback extractNameInBrackets on the whole string: `[a[b]]` -> one claim named `a[b]`.
            if not (brackets.startswith("[") and brackets.endswith("]")):
                return None
            return [brackets[1:-1]]
        names.append(brackets[begin + 1 : end])
        begin = end + 1
    return names


def _valid_map_key(key: str) -> bool:
    # security.validateMapKey (webhook): `a[b]` with a non-empty `a` and `b`.
    opening = key.find("[")
    return key.endswith("]") and 0 < opening < len(key) - 2


_SOURCE_FIELDS: Final[Mapping[str, ValueMatcher]] = {
    "principals": lambda v, s: _string_matches(v, s.request.principal),
    "namespaces": lambda v, s: _string_matches(v, _peer_namespace(s.request)),
    "ipBlocks": lambda v, s: _ip_matches(v, s.request.source_ip),
    "requestPrincipals": _request_principal_matches,
    "serviceAccounts": lambda v, s: _service_account_matches(v, s.request.principal, s.policy_namespace),
    "trustDomains": lambda v, s: _string_matches(v, _peer_trust_domain(s.request)),
}
# remote.ip depends on XFF / PROXY protocol and numTrustedProxies, which a request here doesn't carry.
_UNMODELLED_SOURCE_FIELDS: Final = frozenset({"remoteIpBlocks", "notRemoteIpBlocks"})

_OPERATION_FIELDS: Final[Mapping[str, ValueMatcher]] = {
    "ports": lambda v, s: _port_matches(v, s.request.port),
    "methods": lambda v, s: _header_matches(v, s.request.method),
    "paths": lambda v, s: _path_matches(v, s.path),
    "hosts": lambda v, s: _host_matches(v, _header(s.request, ":authority")),
}

_WHEN_KEYS: Final[Mapping[str, ValueMatcher]] = {
    "source.ip": _SOURCE_FIELDS["ipBlocks"],
    "source.namespace": _SOURCE_FIELDS["namespaces"],
    "source.principal": _SOURCE_FIELDS["principals"],
    "destination.port": _OPERATION_FIELDS["ports"],
}


def _split_negation(key: str) -> tuple[str, bool]:
    """``notPaths`` -> (``paths``, True); ``paths`` -> (``paths``, False)."""
    if key.startswith("not") and len(key) > 3 and key[3].isupper():
        return key[3].lower() + key[4:], True
    return key, False


def _metadata_matcher(key: str) -> ValueMatcher:
    """``experimental.envoy.filters.a.b[c]``: metadata ``c`` of filter ``envoy.filters.a.b`` (istiod's
    envoyFilterGenerator, generator.go). A value ``[v]`` matches a list holding ``v``; a plain ``v`` is a
    string match (exact, ``*`` prefix/suffix, ``*`` alone = present); a missing key matches no value."""
    filter_name, _, inner = key.removeprefix("experimental.").removesuffix("]").partition("[")

    def matches(value: str, subject: _Subject) -> bool:
        found = subject.request.metadata.get(filter_name, {}).get(inner)
        if value.startswith("[") and value.endswith("]"):
            return False  # list values: the metadata this evaluator models is strings only
        return _string_matches(value, found)

    return matches


def _when_matcher(key: str) -> ValueMatcher:
    header = _HEADER_KEY.fullmatch(key)
    if header is not None:
        name = header.group("name")
        return lambda v, s: _header_matches(v, _header(s.request, name))
    if key.startswith(_EXPERIMENTAL):
        if not key.endswith("]") or "[" not in key:
            raise InvalidPolicyError(f"bad key ({key}): should have format a[b]")
        return _metadata_matcher(key)
    if key in _WHEN_KEYS:
        return _WHEN_KEYS[key]
    if key == _REQUEST_PRINCIPAL_KEY:
        return _request_principal_matches
    if key in _CLAIM_ALIASES:
        return _claim_matcher(_CLAIM_ALIASES[key])
    if key.startswith(_REQUEST_CLAIMS_KEY):
        if not _valid_map_key(key):
            raise InvalidPolicyError(f"bad key ({key}): should have format a[b]")
        names = _nested_claim_names(key[len(_REQUEST_CLAIMS_KEY) :])
        if names is None:
            # The webhook accepts it, but istiod cannot translate it and drops the rule (ALLOW) or the
            # condition (DENY): a generated policy should never rely on that.
            raise UnsupportedPolicyError(f"`when` key {key!r}: istiod cannot extract the claim names")
        return _claim_matcher(tuple(names))
    if key in _KNOWN_UNMODELLED_KEYS or key.startswith(_KNOWN_UNMODELLED_PREFIXES):
        raise UnsupportedPolicyError(f"`when` key {key!r} is valid Istio but not modelled by this evaluator")
    raise InvalidPolicyError(f"unknown `when` key {key!r} (Istio rejects it)")


# ---------------------------------------------------------------------------------------------------
# Validation: reject what Istio would reject, flag what we don't model
# ---------------------------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidPolicyError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _sequence(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidPolicyError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _sequence(value, where)
    for item in items:
        # The CRD declares every list as strings: `ports: [8000]` is rejected by the API server.
        if not isinstance(item, str):
            raise InvalidPolicyError(f"{where} must contain strings, got {item!r}")
        if item == "":
            raise InvalidPolicyError(f"{where}: empty value not allowed")
    return list(items)


def _check_ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise InvalidPolicyError(f"{where}: bad IP or CIDR {value!r}") from err


def _check_port(value: str, where: str) -> None:
    # istio ValidatePorts: an unsigned decimal <= 65535, no wildcards.
    if re.fullmatch(r"[0-9]+", value) is None or int(value) > 65535:
        raise InvalidPolicyError(f"{where}: bad port {value!r} (ports are exact decimal strings)")


def _check_service_account(value: str, where: str) -> None:
    if "*" in value or value.count("/") > 1 or value.startswith("/") or value.endswith("/"):
        expected = "'serviceAccount' or 'namespace/serviceAccount'"
        raise InvalidPolicyError(f"{where}: expected {expected}, got {value!r}")


def _check_path(value: str, where: str) -> None:
    """Istio's CheckValidPathTemplate plus Envoy's requirement that a template is absolute."""
    if not _is_path_template(value):
        # Even without a template, `{`/`}` anywhere is rejected ("beyond a supported path template").
        if "{" in value or "}" in value:
            raise InvalidPolicyError(f"{where}: '{{' or '}}' outside a {{*}}/{{**}} template in {value!r}")
        return
    if not value.startswith("/"):
        raise InvalidPolicyError(f"{where}: path template must start with '/': {value!r}")
    seen_any = False
    for segment in value.strip("/").split("/"):
        if segment in (_MATCH_ONE, _MATCH_ANY):
            if seen_any:
                raise InvalidPolicyError(f"{where}: {{**}} must be the last operator in {value!r}")
            seen_any = segment == _MATCH_ANY
        elif _TEMPLATE_LITERAL.fullmatch(segment) is None:
            raise InvalidPolicyError(f"{where}: invalid segment {segment!r} in path template {value!r}")


def _no_check(_value: str, _where: str) -> None:
    return None


_VALUE_CHECKS: Final[Mapping[str, Callable[[str, str], None]]] = {
    "ipBlocks": _check_ip,
    "ports": _check_port,
    "paths": _check_path,
    "serviceAccounts": _check_service_account,
    "source.ip": _check_ip,
    "destination.port": _check_port,
}


def _validate_fields(clause: Mapping[str, Any], table: Mapping[str, ValueMatcher], where: str) -> None:
    non_empty = False
    for key, raw in clause.items():
        base, _ = _split_negation(key)
        if base not in table:
            raise InvalidPolicyError(f"{where}: unknown field {key!r}")
        values = _strings(raw, f"{where}.{key}")
        for value in values:
            _VALUE_CHECKS.get(base, _no_check)(value, f"{where}.{key}")
        non_empty = non_empty or bool(values)
    if not non_empty:
        raise InvalidPolicyError(f"{where} must not be empty")


def _validate_source(source: Mapping[str, Any], where: str) -> None:
    unmodelled = sorted(_UNMODELLED_SOURCE_FIELDS & source.keys())
    if unmodelled:
        raise UnsupportedPolicyError(f"{where}: {unmodelled} are valid Istio but not modelled here")
    _validate_fields(source, _SOURCE_FIELDS, where)
    # CRD CEL rule: serviceAccounts cannot be combined with principals or namespaces.
    accounts = {"serviceAccounts", "notServiceAccounts"} & source.keys()
    identities = {"principals", "notPrincipals", "namespaces", "notNamespaces"} & source.keys()
    if accounts and identities:
        raise InvalidPolicyError(f"{where}: cannot set serviceAccounts with namespaces or principals")


def _validate_clauses(rule: Mapping[str, Any], section: str, inner: str, where: str) -> None:
    if rule.get(section) is None:
        return
    entries = _sequence(rule[section], f"{where}.{section}")
    if not entries:
        raise InvalidPolicyError(f"{where}.{section} must not be empty (omit it to match anything)")
    for index, entry in enumerate(entries):
        at = f"{where}.{section}[{index}]"
        body = _mapping(_mapping(entry, at).get(inner), f"{at}.{inner}")
        if section == "from":
            _validate_source(body, f"{at}.{inner}")
        else:
            _validate_fields(body, _OPERATION_FIELDS, f"{at}.{inner}")


def _validate_condition(condition: Any, where: str) -> None:
    body = _mapping(condition, where)
    unknown = body.keys() - _CONDITION_KEYS
    if unknown:
        raise InvalidPolicyError(f"{where}: unknown fields {sorted(unknown)}")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidPolicyError(f"{where}.key must be a non-empty string")
    _when_matcher(key)  # raises for unknown / unmodelled keys
    values = [*_condition_values(body, "values", where), *_condition_values(body, "notValues", where)]
    if not values:
        raise InvalidPolicyError(f"{where}: at least one of values or notValues must be set for {key!r}")
    for value in values:
        _VALUE_CHECKS.get(key, _no_check)(value, f"{where}[{key}]")


def _condition_values(condition: Mapping[str, Any], name: str, where: str) -> list[str]:
    raw = condition.get(name)
    return [] if raw is None else _strings(raw, f"{where}.{name}")


def _validate_rule(rule: Any, where: str) -> Mapping[str, Any]:
    body = _mapping(rule, where)
    unknown = body.keys() - _RULE_KEYS
    if unknown:
        raise InvalidPolicyError(f"{where}: unknown fields {sorted(unknown)}")
    _validate_clauses(body, "from", "source", where)
    _validate_clauses(body, "to", "operation", where)
    for index, condition in enumerate(_sequence(body.get("when") or [], f"{where}.when")):
        _validate_condition(condition, f"{where}.when[{index}]")
    return body


def _spec(policy: Policy) -> Mapping[str, Any]:
    spec = policy.get("spec")
    # `spec:` with nothing after it loads as None; Kubernetes treats it like `spec: {}`.
    return {} if spec is None else _mapping(spec, "spec")


def _namespace(policy: Policy) -> str:
    namespace = _mapping(policy.get("metadata"), "metadata").get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise InvalidPolicyError("metadata.namespace must be set (applicability depends on it)")
    return namespace


def _action(policy: Policy) -> str:
    action = _spec(policy).get("action") or "ALLOW"
    if action not in _ACTIONS:
        raise InvalidPolicyError(f"spec.action must be one of {sorted(_ACTIONS)}, got {action!r}")
    return str(action)


def _rules(policy: Policy) -> Sequence[Any]:
    rules = _spec(policy).get("rules")
    return [] if rules is None else _sequence(rules, "spec.rules")


def _is_dry_run(policy: Policy) -> bool:
    annotations = _mapping(policy.get("metadata"), "metadata").get("annotations") or {}
    value = _mapping(annotations, "metadata.annotations").get(DRY_RUN_ANNOTATION)
    if value is None:
        return False
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise InvalidPolicyError(f"{DRY_RUN_ANNOTATION} must be a Go boolean string, got {value!r}")


def _validate_header(policy: Policy) -> None:
    kind = policy.get("kind", "AuthorizationPolicy")
    api_version = policy.get("apiVersion", "security.istio.io/v1")
    if kind != "AuthorizationPolicy" or api_version not in _API_VERSIONS:
        raise InvalidPolicyError(f"not a security.istio.io AuthorizationPolicy: {api_version} {kind}")
    _namespace(policy)


def _validate_selector(spec: Mapping[str, Any]) -> None:
    # CRD CEL rule: at most one of selector / targetRef / targetRefs (presence-based, like `has()`).
    if sum(key in spec for key in ("selector", "targetRef", "targetRefs")) > 1:
        raise InvalidPolicyError("only one of targetRefs or selector can be set")
    selector = spec.get("selector")
    if selector is None:
        return
    body = _mapping(selector, "spec.selector")
    if body.keys() - {"matchLabels"}:
        raise InvalidPolicyError("spec.selector only supports matchLabels")
    for key, value in _mapping(body.get("matchLabels") or {}, "spec.selector.matchLabels").items():
        if not isinstance(value, str) or not key or "*" in key or "*" in value:
            raise InvalidPolicyError(f"spec.selector.matchLabels: bad label {key!r}: {value!r}")


def validate_policy(policy: Policy) -> None:
    """Raise InvalidPolicyError / UnsupportedPolicyError for a document Istio or this evaluator can't take."""
    _validate_header(policy)
    spec = _spec(policy)
    unknown = spec.keys() - _SPEC_KEYS
    if unknown:
        raise InvalidPolicyError(f"spec: unknown fields {sorted(unknown)}")
    action = _action(policy)
    if "provider" in spec and action != "CUSTOM":
        raise InvalidPolicyError("spec.provider is only valid with action CUSTOM")
    if DRY_RUN_ANNOTATION in (_mapping(policy["metadata"], "metadata").get("annotations") or {}):
        if action not in ("ALLOW", "DENY"):
            raise InvalidPolicyError(f"{DRY_RUN_ANNOTATION} only supports ALLOW/DENY, found {action}")
        _is_dry_run(policy)
    _validate_selector(spec)
    rules = _rules(policy)
    # Webhook: "DENY action without `rules` is meaningless as it will never be triggered".
    if action == "DENY" and not rules:
        raise InvalidPolicyError("DENY without rules never triggers; add an empty rule {} to deny all")
    for index, rule in enumerate(rules):
        _validate_rule(rule, f"spec.rules[{index}]")


# ---------------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------------


def _field_matches(key: str, raw: Sequence[str], table: Mapping[str, ValueMatcher], subject: _Subject) -> bool:
    if not raw:
        return True  # an empty repeated field is the same as an absent one in proto3
    base, negated = _split_negation(key)
    hit = any(table[base](value, subject) for value in raw)
    return hit != negated  # notX = NOT(OR(values))


def _clause_matches(clause: Mapping[str, Any], table: Mapping[str, ValueMatcher], subject: _Subject) -> bool:
    # Fields inside one source / operation are ANDed.
    return all(_field_matches(key, raw, table, subject) for key, raw in clause.items())


def _section_matches(
    rule: Mapping[str, Any], section: str, inner: str, table: Mapping[str, ValueMatcher], subject: _Subject
) -> bool:
    entries = rule.get(section)
    if entries is None:
        return True  # absent from/to = any source / any operation
    # Entries of one from/to list are ORed.
    return any(_clause_matches(entry[inner], table, subject) for entry in entries)


def _condition_matches(condition: Mapping[str, Any], subject: _Subject) -> bool:
    matcher = _when_matcher(condition["key"])
    values = condition.get("values") or []
    not_values = condition.get("notValues") or []
    if values and not any(matcher(value, subject) for value in values):
        return False
    return not any(matcher(value, subject) for value in not_values)


def rule_matches(
    rule: Mapping[str, Any],
    request: IstioRequest,
    policy_namespace: str | None = None,
    *,
    claims: Mapping[str, Any] | None = None,
) -> bool:
    """(any ``from``) AND (any ``to``) AND (all ``when``); ``{}`` always matches.

    ``policy_namespace`` is only needed for bare ``serviceAccounts`` values (``<sa>`` = policy namespace).
    ``claims`` is the jwt_authn payload of a verified token (None = no token): what ``requestPrincipals``
    and ``request.auth.*`` read. :func:`evaluate_outcomes` derives it from real tokens.
    """
    return _body_matches(_validate_rule(rule, "rule"), request, policy_namespace, claims)


def _body_matches(
    body: Mapping[str, Any],
    request: IstioRequest,
    policy_namespace: str | None,
    claims: Mapping[str, Any] | None = None,
) -> bool:
    """``rule_matches`` on a rule already validated."""
    subject = _Subject(request, policy_namespace, normalize_path(request.path), claims)
    return (
        _section_matches(body, "from", "source", _SOURCE_FIELDS, subject)
        and _section_matches(body, "to", "operation", _OPERATION_FIELDS, subject)
        and all(_condition_matches(condition, subject) for condition in body.get("when") or [])
    )


def _policy_matches(policy: Policy, request: IstioRequest, claims: Mapping[str, Any] | None) -> bool:
    # No `rules` means "never match" (an ALLOW policy without rules is allow-nothing).
    namespace = _namespace(policy)
    return any(_body_matches(rule, request, namespace, claims) for rule in _rules(policy))


def policy_applies(policy: Policy, workload: Workload, root_namespace: str = "istio-system") -> bool:
    """Does the policy attach to this sidecar workload? (Dry-run is handled by :func:`evaluate`.)

    The same rule attaches RequestAuthentications (``GetJwtPoliciesForWorkload``).
    """
    spec = _spec(policy)
    # ShouldAttachPolicy: a targetRef(s) policy never attaches to a sidecar workload.
    if spec.get("targetRef") or spec.get("targetRefs"):
        return False
    namespace = _namespace(policy)
    if namespace not in (workload.namespace, root_namespace):
        return False
    selector = _mapping(spec.get("selector") or {}, "spec.selector")
    labels = _mapping(selector.get("matchLabels") or {}, "spec.selector.matchLabels")
    # No selector / empty matchLabels = every workload in scope.
    return all(workload.labels.get(key) == value for key, value in labels.items())


class Verdict(enum.Enum):
    """What the sidecar does with a request, and which filter decided."""

    ALLOWED = "allowed"
    DENIED = "denied"  # 403 "RBAC: access denied"
    UNAUTHENTICATED = "unauthenticated"  # 401 from jwt_authn: a token was presented and is invalid
    AUDIENCE_REJECTED = "audience rejected"  # 403 from jwt_authn: valid token, `aud` not allowed

    @property
    def status(self) -> int:
        """The HTTP status (gRPC: 401 -> UNAUTHENTICATED, 403 -> PERMISSION_DENIED)."""
        return 200 if self is Verdict.ALLOWED else 401 if self is Verdict.UNAUTHENTICATED else 403


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str  # jwt_authn's status text, or which policy decided
    # The jwt_authn payload the request carried into RBAC (None: no verified token).
    claims: Mapping[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED

    @property
    def status(self) -> int:
        return self.verdict.status

    @property
    def principal(self) -> str | None:
        """``request.auth.principal`` = ``<iss>/<sub>`` of the verified token, None without one."""
        if self.claims is None:
            return None
        return f"{self.claims.get('iss', '')}/{self.claims.get('sub', '')}"


def evaluate(
    policies: Sequence[Mapping[str, Any]],
    workload: Workload,
    request: IstioRequest,
    root_namespace: str = "istio-system",
) -> bool:
    """True = allowed. ``policies`` are parsed AuthorizationPolicy (and RequestAuthentication) documents
    (as yaml.safe_load gives them).

    Every document is validated, applicable or not; CUSTOM policies that apply raise.
    """
    return evaluate_all(policies, workload, [request], root_namespace)[0]


def evaluate_all(
    policies: Sequence[Mapping[str, Any]],
    workload: Workload,
    requests: Iterable[IstioRequest],
    root_namespace: str = "istio-system",
) -> list[bool]:
    """``evaluate`` for many requests against the same policies, validating the policies once.

    RequestAuthentication documents in ``policies`` are applied too (a request is allowed only if its
    outcome is ALLOWED); any other kind is an error, as before.
    """
    return [outcome.allowed for outcome in _outcomes(policies, workload, requests, root_namespace, strict=True)]


def evaluate_outcomes(
    documents: Iterable[Mapping[str, Any] | None],
    workload: Workload,
    requests: Iterable[IstioRequest],
    root_namespace: str = "istio-system",
) -> list[Outcome]:
    """jwt_authn then RBAC, per request: ALLOWED / DENIED (RBAC 403) / UNAUTHENTICATED (401) /
    AUDIENCE_REJECTED (jwt_authn 403).

    ``documents`` is a mixed stream: AuthorizationPolicy and RequestAuthentication documents are validated
    (applicable or not) and applied; other kinds and empty documents are ignored.
    """
    return _outcomes(documents, workload, requests, root_namespace, strict=False)


def _outcomes(
    documents: Iterable[Mapping[str, Any] | None],
    workload: Workload,
    requests: Iterable[IstioRequest],
    root_namespace: str,
    *,
    strict: bool,
) -> list[Outcome]:
    policies: list[Policy] = []
    authentications: list[Policy] = []
    for document in documents:
        if document is None and not strict:
            continue
        kind = _mapping(document, "document").get("kind", "AuthorizationPolicy")
        if kind == _RA_KIND:
            validate_request_authentication(_mapping(document, "document"))
            authentications.append(_mapping(document, "document"))
        elif kind == "AuthorizationPolicy" or strict:
            validate_policy(_mapping(document, "document"))
            policies.append(_mapping(document, "document"))
    active = [p for p in policies if policy_applies(p, workload, root_namespace) and not _is_dry_run(p)]
    by_action: dict[str, list[Policy]] = {action: [] for action in _ACTIONS}
    for policy in active:
        by_action[_action(policy)].append(policy)
    if by_action["CUSTOM"]:
        raise UnsupportedPolicyError("CUSTOM (ext_authz) policies are not modelled by this evaluator")
    providers = _jwt_providers([ra for ra in authentications if policy_applies(ra, workload, root_namespace)])
    return [_decide(by_action, providers, request) for request in requests]


def _decide(by_action: Mapping[str, list[Policy]], providers: Sequence[_Provider], request: IstioRequest) -> Outcome:
    authenticated = _authenticate(providers, request)
    if isinstance(authenticated, Outcome):
        return authenticated
    seen, claims = authenticated.request, authenticated.claims
    # AUDIT only marks requests for logging; it never changes the decision.
    for policy in by_action["DENY"]:
        if _policy_matches(policy, seen, claims):
            return Outcome(Verdict.DENIED, f"RBAC: access denied (DENY {_label(policy)})", claims)
    if not by_action["ALLOW"]:
        return Outcome(Verdict.ALLOWED, "no ALLOW policy applies", claims)
    for policy in by_action["ALLOW"]:
        if _policy_matches(policy, seen, claims):
            return Outcome(Verdict.ALLOWED, f"ALLOW {_label(policy)}", claims)
    return Outcome(Verdict.DENIED, "RBAC: access denied (no ALLOW rule matched)", claims)


def _label(policy: Policy) -> str:
    metadata = _mapping(policy.get("metadata"), "metadata")
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


# ---------------------------------------------------------------------------------------------------
# RequestAuthentication: the jwt_authn filter istiod puts before RBAC on the inbound HTTP chain
# ---------------------------------------------------------------------------------------------------
#
# istiod (pilot/pkg/security/authn/policy_applier.go, 1.30.3) turns every jwtRule of every applicable
# RequestAuthentication into one Envoy provider (rules sorted by issuer, default token locations when no
# from* is set, `payload_in_metadata: payload`, `scope`/`permission` always space-delimited) and requires
# `requires_any[each provider, requires_all[any[provider_i, allow_missing]...]]` (one provider:
# `any[provider, allow_missing]`). In effect: no token -> anonymous; a token -> it must verify against a
# provider that reads that location and whose issuer is the token's `iss`, else 401 (403 for `aud`).
# Verification follows google/jwt_verify_lib (parse, issuer, exp/nbf with 60 s skew, audiences, then the
# signature): PyJWT supplies the JWK decoding and the RSA/HMAC/EdDSA primitives, but not jwt.decode, whose
# own checks differ from Envoy's (segment splitting, base64 leniency, iat/sub/jti checks, `exp <= now -
# leeway` at the boundary, `int()` of string claims).

_RA_KIND: Final = "RequestAuthentication"
_RA_SPEC_KEYS: Final = frozenset({"jwtRules", "selector", "targetRef", "targetRefs"})
_JWT_RULE_KEYS: Final = frozenset(
    {
        "issuer", "audiences", "jwksUri", "jwks_uri", "jwks", "fromHeaders", "fromParams", "fromCookies",
        "outputPayloadToHeader", "forwardOriginalToken", "outputClaimToHeaders", "spaceDelimitedClaims", "timeout",
    }
)  # fmt: skip
_CLOCK_SKEW: Final = 60  # jwt_verify_lib kClockSkewInSecond: Istio never sets clock_skew_seconds
_ALWAYS_SPACE_DELIMITED: Final = frozenset({"permission", "scope"})  # buildSpaceDelimitedClaims
_DEFAULT_HEADER: Final = ("authorization", "Bearer ")  # Envoy's defaults when no from_* is configured
_DEFAULT_PARAM: Final = "access_token"
_IMPLEMENTED_ALGS: Final = frozenset(  # jwt.cc isImplemented
    {"EdDSA"} | {f"{family}{bits}" for family in ("ES", "HS", "RS", "PS") for bits in (256, 384, 512)}
)
_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
# absl's kUnWebSafeBase64: character -> 6-bit value.
_UNBASE64: Final = {
    ord(char): value for value, char in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_UINT64_LIMIT: Final = float(2**64)

# jwt_verify_lib status texts (src/status.cc), which Envoy returns as the 401/403 body.
_MISSING_ISSUER: Final = "Jwt issuer is not configured"
_AUDIENCE_NOT_ALLOWED: Final = "Audiences in Jwt are not allowed"


@dataclass(frozen=True)
class _Jwk:
    kty: str
    kid: str  # "" = none (also when the JWK's kid is not a string: jwt_verify_lib ignores it)
    alg: str
    key: Any  # cryptography public key, or bytes for `oct`


@dataclass(frozen=True)
class _Location:
    header: str | None  # lower-case header name, or None for a query parameter
    prefix: str
    param: str | None

    @property
    def order(self) -> tuple[int, str]:
        # Envoy's extractor: header locations keyed `name + prefix` in a std::map, then params by name.
        return (0, f"{self.header}{self.prefix}") if self.header is not None else (1, self.param or "")


@dataclass(frozen=True)
class _Provider:
    issuer: str
    audiences: frozenset[str]  # already sanitized like jwt_verify_lib's CheckAudience
    keys: tuple[_Jwk, ...]
    locations: tuple[_Location, ...]
    forward: bool
    space_delimited: frozenset[str]


@dataclass(frozen=True)
class _Authenticated:
    request: IstioRequest  # what RBAC sees: a verified, non-forwarded token removed
    claims: Mapping[str, Any] | None


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def outcome(self) -> Outcome:
        audience = self.reason == _AUDIENCE_NOT_ALLOWED
        return Outcome(Verdict.AUDIENCE_REJECTED if audience else Verdict.UNAUTHENTICATED, self.reason)


@dataclass(frozen=True)
class _Jwt:
    signed: bytes  # `<header>.<payload>` as sent: what the signature covers
    alg: str
    kid: str
    claims: Mapping[str, Any]
    iss: str
    audiences: tuple[str, ...]
    nbf: int
    exp: int
    signature: bytes


# --- validation --------------------------------------------------------------------------------------


def _string_list(value: Any, where: str) -> list[str]:
    return [] if value is None else _strings(value, where)


def validate_request_authentication(document: Policy) -> None:
    """Raise InvalidPolicyError (Istio rejects it, or Envoy refuses the JWKS) / UnsupportedPolicyError."""
    kind = document.get("kind")
    if kind != _RA_KIND or document.get("apiVersion") not in _API_VERSIONS:
        raise InvalidPolicyError(f"not a security.istio.io RequestAuthentication: {document.get('apiVersion')} {kind}")
    _namespace(document)
    spec = _spec(document)
    unknown = spec.keys() - _RA_SPEC_KEYS
    if unknown:
        raise InvalidPolicyError(f"spec: unknown fields {sorted(unknown)}")
    _validate_selector(spec)
    for index, rule in enumerate(_sequence(spec.get("jwtRules") or [], "spec.jwtRules")):
        _jwt_rule_provider(_mapping(rule, f"spec.jwtRules[{index}]"), f"spec.jwtRules[{index}]")


def _jwt_rule_provider(rule: Mapping[str, Any], where: str) -> _Provider:
    """The Envoy provider istiod builds from one jwtRule (validating it on the way)."""
    unknown = rule.keys() - _JWT_RULE_KEYS
    if unknown:
        raise InvalidPolicyError(f"{where}: unknown fields {sorted(unknown)}")
    if rule.get("jwksUri") or rule.get("jwks_uri"):
        raise UnsupportedPolicyError(f"{where}: jwksUri (istiod fetches it) is not modelled; use inline jwks")
    issuer = rule.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise InvalidPolicyError(f"{where}: issuer or jwksUri must be non-empty string")
    jwks = rule.get("jwks")
    if jwks is None:
        raise UnsupportedPolicyError(f"{where}: no jwks: istiod would use OIDC discovery, which is not modelled")
    if not isinstance(jwks, str):
        raise InvalidPolicyError(f"{where}.jwks must be a string")
    for unmodelled in ("fromCookies", "outputClaimToHeaders", "outputPayloadToHeader"):
        if rule.get(unmodelled):
            raise UnsupportedPolicyError(f"{where}.{unmodelled} is valid Istio but not modelled here")
    forward = rule.get("forwardOriginalToken", False)
    if not isinstance(forward, bool):
        raise InvalidPolicyError(f"{where}.forwardOriginalToken must be a boolean")
    locations: dict[tuple[int, str], _Location] = {}
    for index, entry in enumerate(_sequence(rule.get("fromHeaders") or [], f"{where}.fromHeaders")):
        at = f"{where}.fromHeaders[{index}]"
        header = _mapping(entry, at)
        if header.keys() - {"name", "prefix"}:
            raise InvalidPolicyError(f"{at}: unknown fields {sorted(header.keys() - {'name', 'prefix'})}")
        name, prefix = header.get("name"), header.get("prefix", "")
        if not isinstance(name, str) or not name:
            raise InvalidPolicyError(f"{at}: location header name must be non-empty string")
        if not isinstance(prefix, str):
            raise InvalidPolicyError(f"{at}.prefix must be a string")
        location = _Location(name.lower(), prefix, None)
        locations[location.order] = location
    for param in _string_list(rule.get("fromParams"), f"{where}.fromParams"):
        location = _Location(None, "", param)
        locations[location.order] = location
    if not locations and not rule.get("fromCookies"):
        for location in (_Location(*_DEFAULT_HEADER, None), _Location(None, "", _DEFAULT_PARAM)):
            locations[location.order] = location
    return _Provider(
        issuer=issuer,
        audiences=frozenset(_sanitize_audience(a) for a in _string_list(rule.get("audiences"), f"{where}.audiences")),
        keys=_envoy_jwks(jwks, where),
        locations=tuple(locations[order] for order in sorted(locations)),
        forward=forward,
        space_delimited=_ALWAYS_SPACE_DELIMITED
        | frozenset(_string_list(rule.get("spaceDelimitedClaims"), f"{where}.spaceDelimitedClaims")),
    )


def _jwt_providers(authentications: Sequence[Policy]) -> tuple[_Provider, ...]:
    providers: list[_Provider] = []
    for document in authentications:
        for index, rule in enumerate(_sequence(_spec(document).get("jwtRules") or [], "spec.jwtRules")):
            providers.append(_jwt_rule_provider(_mapping(rule, "jwtRule"), f"{_label(document)} jwtRules[{index}]"))
    issuers = [provider.issuer for provider in providers]
    if len(set(issuers)) != len(issuers):
        # istiod does not merge them (istio#19245): several providers then race for one token.
        raise UnsupportedPolicyError(f"several jwtRules for one issuer: {sorted(issuers)}")
    return tuple(sorted(providers, key=lambda provider: provider.issuer))


# --- JWKS as Envoy loads it (jwt_verify_lib src/jwks.cc) ---------------------------------------------


def _envoy_jwks(text: str, where: str) -> tuple[_Jwk, ...]:
    """The usable keys; a JWKS without any fails Envoy's config load (the whole listener is refused)."""
    try:
        return _load_jwks(text)
    except (InvalidPolicyError, UnsupportedPolicyError) as error:
        raise type(error)(f"{where}.jwks: {error}") from error


@functools.cache
def _load_jwks(text: str) -> tuple[_Jwk, ...]:
    document = _json_object(text.encode())
    if document is None:
        raise InvalidPolicyError("Jwks is an invalid JSON")
    if "keys" not in document:
        raise UnsupportedPolicyError("a JWKS without `keys` (the x509 form) is not modelled")
    if not isinstance(document["keys"], list):
        raise InvalidPolicyError("[keys] in Jwks is not an array")
    keys = [key for key in (_envoy_jwk(entry) for entry in document["keys"] if isinstance(entry, dict)) if key]
    if not keys:
        raise InvalidPolicyError("Jwks doesn't have any valid public key")
    return tuple(keys)


def _jwk_string(jwk: Mapping[str, Any], name: str) -> str | None:
    value = jwk.get(name)
    return value if isinstance(value, str) else None


def _envoy_jwk(jwk: Mapping[str, Any]) -> _Jwk | None:
    """extractJwk: one key, or None when jwt_verify_lib skips it. Only public members are used."""
    kty = _jwk_string(jwk, "kty")
    kid, alg = _jwk_string(jwk, "kid") or "", _jwk_string(jwk, "alg") or ""
    members: dict[str, Any]
    try:
        if kty == "RSA":
            n, e = _jwk_string(jwk, "n"), _jwk_string(jwk, "e")
            exponent = _base64url_decode(e) if e is not None else None
            if (alg and alg[:2] not in ("RS", "PS")) or n is None or _base64url_decode(n) is None or not exponent:
                return None
            if int.from_bytes(exponent, "big") not in (3, 65537):
                return None  # createRsaFromJwk: "non-standard key; reject it early"
            members, algorithm = {"kty": "RSA", "n": n, "e": e}, "RS256"
        elif kty == "EC":
            crv = jwk.get("crv", "")
            if (alg and not alg.startswith("ES")) or not isinstance(crv, str):
                return None
            curves = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
            if alg and crv and curves.get(alg) != crv:
                return None
            curve = curves.get(alg) or crv or "P-256"
            if curve not in curves.values():
                return None
            members = {"kty": "EC", "crv": curve, "x": jwk.get("x"), "y": jwk.get("y")}
            algorithm = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[curve]
        elif kty == "oct":
            k = _jwk_string(jwk, "k")
            if (alg and alg not in ("HS256", "HS384", "HS512")) or k is None or not _base64url_decode(k):
                return None
            members, algorithm = {"kty": "oct", "k": k}, "HS256"
        elif kty == "OKP":
            x = _jwk_string(jwk, "x")
            if (alg and alg != "EdDSA") or jwk.get("crv") != "Ed25519" or x is None:
                return None
            members, algorithm = {"kty": "OKP", "crv": "Ed25519", "x": x}, "EdDSA"
        else:
            return None
        # The algorithm is passed explicitly so the JWK's own `alg` does not steer PyJWT's key parsing.
        return _Jwk(kty, kid, alg, jwt.PyJWK(members, algorithm).key)
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return None


# --- tokens --------------------------------------------------------------------------------------------


_PAD_BYTES: Final = frozenset(b"=.")
_SPACE_BYTES: Final = frozenset(b" \t\n\v\f\r")  # absl::ascii_isspace


def _base64url_decode(segment: str) -> bytes | None:
    """absl::WebSafeBase64Unescape (Base64UnescapeInternal), ported step by step; None = invalid.

    It skips whitespace between data characters when enough input remains, and accepts no padding or
    exactly the right number of `=` (or `.`), optionally followed by whitespace.
    """
    src = segment.encode("utf-8", "surrogateescape")
    out = bytearray()
    size, pos = len(src), 0
    decode = state = ch = temp = 0
    broke = False
    while size >= 4:
        quad = src[pos : pos + 4]
        if all(byte in _UNBASE64 for byte in quad):
            temp = 0
            for byte in quad:
                temp = (temp << 6) | _UNBASE64[byte]
            size, pos = size - 4, pos + 4
        else:
            for remain in (4, 3, 2, 1):  # GET_INPUT(label, remain)
                while True:
                    size, ch, pos = size - 1, src[pos], pos + 1
                    decode = _UNBASE64.get(ch, -1)
                    if decode < 0 and ch in _SPACE_BYTES and size >= remain:
                        continue
                    break
                if decode < 0:
                    state, broke = 4 - remain, True
                    break
                temp = decode if remain == 4 else (temp << 6) | decode
            if broke:
                break
        out += bytes(((temp >> 16) & 0xFF, (temp >> 8) & 0xFF, temp & 0xFF))
    if decode < 0 and ch not in _PAD_BYTES and ch not in _SPACE_BYTES:
        return None
    if ch in _PAD_BYTES:
        size, pos = size + 1, pos - 1
    else:
        while size > 0:
            size, ch, pos = size - 1, src[pos], pos + 1
            decode = _UNBASE64.get(ch, -1)
            if decode < 0:
                if ch in _SPACE_BYTES:
                    continue
                if ch in _PAD_BYTES:
                    size, pos = size + 1, pos - 1
                    break
                return None
            temp, state = (temp << 6) | decode, state + 1
            if state == 4:
                out += bytes(((temp >> 16) & 0xFF, (temp >> 8) & 0xFF, temp & 0xFF))
                state = temp = 0
    if state == 1:
        return None
    if state == 2:
        out.append((temp >> 4) & 0xFF)
    elif state == 3:
        out += bytes(((temp >> 10) & 0xFF, (temp >> 2) & 0xFF))
    equals = 0
    for byte in src[pos : pos + size]:
        if byte in _PAD_BYTES:
            equals += 1
        elif byte not in _SPACE_BYTES:
            return None
    return bytes(out) if equals in (0, {0: 0, 2: 2, 3: 1}[state]) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise UnsupportedPolicyError("duplicate keys in a JWT/JWKS JSON object: protobuf's handling not modelled")
    return result


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """protobuf JsonStringToMessage into a Struct: a UTF-8 JSON object, no NaN/Infinity; None = invalid."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _claim_string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise _Rejected(f"Jwt payload [{name}] field is not a string")
    return value


def _claim_uint64(claims: Mapping[str, Any], name: str) -> int:
    """StructUtils::GetUInt64: a JSON number in [0, 2^64), truncated; absent = 0."""
    value = claims.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(f"Jwt payload [{name}] field is not an integer")
    try:
        in_range = 0 <= float(value) < _UINT64_LIMIT
    except OverflowError:
        in_range = False
    if not in_range:
        raise _Rejected(f"Jwt payload [{name}] field is not a positive 64 bit integer")
    return int(value)


def _parse_jwt(token: str) -> _Jwt:
    """Jwt::parseFromString (jwt_verify_lib src/jwt.cc)."""
    parts = [part for part in token.split(".") if part]  # absl::StrSplit(jwt, '.', absl::SkipEmpty())
    if len(parts) != 3:
        raise _Rejected("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    header_raw = _base64url_decode(parts[0])
    if header_raw is None:
        raise _Rejected("Jwt header is an invalid Base64url encoded")
    header = _json_object(header_raw)
    if header is None:
        raise _Rejected("Jwt header is an invalid JSON")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _Rejected("Jwt header [alg] field is required and must be a string")
    if alg not in _IMPLEMENTED_ALGS:
        raise _Rejected("Jwt header [alg] is not supported")
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        raise _Rejected("Jwt header [kid] field is not a string")
    payload_raw = _base64url_decode(parts[1])
    if payload_raw is None:
        raise _Rejected("Jwt payload is an invalid Base64url encoded")
    claims = _json_object(payload_raw)
    if claims is None:
        raise _Rejected("Jwt payload is an invalid JSON")
    iss = _claim_string(claims, "iss")
    _claim_string(claims, "sub")
    _claim_uint64(claims, "iat")  # type-checked, never compared with the clock
    nbf, exp = _claim_uint64(claims, "nbf"), _claim_uint64(claims, "exp")
    _claim_string(claims, "jti")
    aud = claims.get("aud", [])
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(item, str) for item in audiences):
        raise _Rejected("Jwt payload [aud] field is not a string or string list")
    signature = _base64url_decode(parts[2])
    if signature is None:
        raise _Rejected("Jwt signature is an invalid Base64url encoded")
    signed = f"{parts[0]}.{parts[1]}".encode()
    return _Jwt(signed, alg, kid, claims, iss, tuple(audiences), nbf, exp, signature)


def _sanitize_audience(audience: str) -> str:
    """CheckAudience's sanitizeAudience: drop an http:// or https:// prefix and one trailing `/`."""
    if not audience:
        return audience
    start = len("http://") if audience.startswith("http://") else len("https://") * audience.startswith("https://")
    end = len(audience) - 1 if audience.endswith("/") else len(audience)
    return audience[start:end]


def _hash_for(alg: str) -> type[hashes.HashAlgorithm]:
    # verify.cc picks the digest from the token's alg within the key's family; the default is SHA-256.
    return hashes.SHA384 if alg.endswith("384") else hashes.SHA512 if alg.endswith("512") else hashes.SHA256


def _ec_verifies(key: ec.EllipticCurvePublicKey, alg: str, signature: bytes, signed: bytes) -> bool:
    # verifySignatureEC: r and s are the two halves of the signature, whatever its length (not DER).
    half = len(signature) // 2
    r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half : 2 * half], "big")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(_hash_for(alg)()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _signature_verifies(key: _Jwk, token: _Jwt) -> bool:
    alg, signature, signed = token.alg, token.signature, token.signed
    if key.kty == "EC":
        return _ec_verifies(key.key, alg, signature, signed)
    if key.kty == "RSA" and alg.startswith("RS"):
        return bool(RSAAlgorithm(_hash_for(alg)).verify(signed, key.key, signature))
    if key.kty == "RSA" and alg.startswith("PS"):
        return bool(RSAPSSAlgorithm(_hash_for(alg)).verify(signed, key.key, signature))
    if key.kty == "oct":
        digest = {hashes.SHA384: HMACAlgorithm.SHA384, hashes.SHA512: HMACAlgorithm.SHA512}.get(
            _hash_for(alg), HMACAlgorithm.SHA256
        )
        return bool(HMACAlgorithm(digest).verify(signed, key.key, signature))
    if key.kty == "OKP":
        if len(signature) != 64:
            raise _Rejected("Jwt ED25519 signature is wrong length")
        return bool(OKPAlgorithm().verify(signed, key.key, signature))
    return False  # e.g. an RSA key and an HS256/ES256 token: no verification is even attempted


def _verify(provider: _Provider, token: str, now: int) -> Mapping[str, Any]:
    """AuthenticatorImpl::startVerify + verifyKey for one token and one provider; raises _Rejected."""
    parsed = _parse_jwt(token)
    if parsed.iss != provider.issuer:
        raise _Rejected(_MISSING_ISSUER)
    # Jwt::verifyTimeConstraint: nbf/exp absent are 0; exp 0 means "no expiry".
    if now + _CLOCK_SKEW < parsed.nbf:
        raise _Rejected("Jwt not yet valid")
    if parsed.exp and now > parsed.exp + _CLOCK_SKEW:
        raise _Rejected("Jwt is expired")
    if provider.audiences and not provider.audiences & {_sanitize_audience(a) for a in parsed.audiences}:
        raise _Rejected(_AUDIENCE_NOT_ALLOWED)
    matched = False
    for key in provider.keys:
        # verifyJwtWithoutTimeChecking: kids must agree when both are set; a JWK alg must equal the token's.
        if parsed.kid and key.kid and key.kid != parsed.kid:
            continue
        if key.alg and key.alg != parsed.alg:
            continue
        matched = True
        if _signature_verifies(key, parsed):
            return _normalize_payload(parsed.claims, provider.space_delimited)
    raise _Rejected("Jwt verification fails" if matched else "Jwks doesn't have key to match kid or alg from Jwt")


def _normalize_payload(claims: Mapping[str, Any], space_delimited: frozenset[str]) -> dict[str, Any]:
    # setPayloadMetadata: a string claim listed there becomes the list of its space-separated words
    # (a string without any word stays as it is).
    normalized = dict(claims)
    for name in space_delimited:
        value = claims.get(name)
        words = value.split(" ") if isinstance(value, str) else []
        if any(words):
            normalized[name] = [word for word in words if word]
    return normalized


# --- extraction and the decision -------------------------------------------------------------------


def _query(path: str) -> list[tuple[str, str, str]]:
    """(raw pair, decoded key, decoded value) of the query string, as parseAndDecodeQueryString reads it."""
    if "?" not in path:
        return []
    query = path.split("?", 1)[1].split("#", 1)[0]
    pairs = []
    for raw in query.split("&"):
        if raw:
            key, _, value = raw.partition("=")
            pairs.append((raw, unquote_plus(key), unquote_plus(value)))
    return pairs


def _extract(provider: _Provider, request: IstioRequest) -> list[tuple[_Location, str]]:
    """ExtractorImpl::extract for one provider: (location, token) in Envoy's order."""
    tokens: list[tuple[_Location, str]] = []
    for location in provider.locations:
        if location.header is not None:
            value = _header(request, location.header)
            if value is None:
                continue
            value = value.strip(" \t")  # the codec strips optional whitespace around field values
            if location.prefix:
                position = value.find(location.prefix)  # anywhere in the value, case-sensitive
                if position < 0:
                    continue
                rest = value[position + len(location.prefix) :]
                # extractJWT: skip to the first base64url-or-dot character; none at all -> the whole value.
                start = next((i for i, char in enumerate(rest) if char in _TOKEN_CHARS), None)
                value = value if start is None else rest[start:]
            tokens.append((location, value))
        else:
            found = [value for _, key, value in _query(request.path) if key == location.param]
            if found and not found[0]:
                raise UnsupportedPolicyError(f"empty ?{location.param}= value: Envoy's handling is not modelled")
            if found:
                tokens.append((location, found[0]))
    return tokens


def _is_cors_preflight(request: IstioRequest) -> bool:
    # Istio sets bypass_cors_preflight: OPTIONS with non-empty Origin and Access-Control-Request-Method.
    return (
        request.method == "OPTIONS"
        and bool(_header(request, "origin"))
        and bool(_header(request, "access-control-request-method"))
    )


def _without_token(request: IstioRequest, locations: Iterable[_Location]) -> IstioRequest:
    """handleGoodJwt with forward=false: the token's header is removed, or its query parameter."""
    headers = dict(request.headers)
    path = request.path
    for location in locations:
        if location.header is not None:
            headers = {name: value for name, value in headers.items() if name.lower() != location.header}
        else:
            kept = [raw for raw, key, _ in _query(path) if key != location.param]
            base = path.split("?", 1)[0]
            path = f"{base}?{'&'.join(kept)}" if kept else base
    return dataclasses.replace(request, headers=headers, path=path)


def _authenticate(providers: Sequence[_Provider], request: IstioRequest) -> _Authenticated | Outcome:
    if not providers or _is_cors_preflight(request):
        return _Authenticated(request, None)
    found = [(provider, _extract(provider, request)) for provider in providers]
    tokens = {token for _, located in found for _, token in located}
    if not tokens:
        return _Authenticated(request, None)  # allow_missing: anonymous
    if len(tokens) > 1:
        # Every provider verifier stops at its first bad token, allow_missing's own loop does not, and
        # Istio documents the principal as nondeterministic: not modelled.
        raise UnsupportedPolicyError(f"{len(tokens)} different JWTs in one request (e.g. header and query)")
    (token,) = tokens
    now = int(time.time() if request.now is None else request.now)
    rejections: list[_Rejected] = []
    for provider, located in found:
        if not located:
            continue  # JwtMissed for this provider
        try:
            claims = _verify(provider, token, now)
        except _Rejected as rejected:
            rejections.append(rejected)
            continue
        # requires_any: the first provider that verifies the token decides (issuers are unique).
        seen = request if provider.forward else _without_token(request, (where for where, _ in located))
        return _Authenticated(seen, claims)
    # AnyVerifierImpl prefers an error other than "missing" / "issuer not configured" (measured).
    specific = [rejected for rejected in rejections if rejected.reason != _MISSING_ISSUER]
    return (specific or rejections)[0].outcome


# ---------------------------------------------------------------------------------------------------
# PeerAuthentication: the mTLS mode a sidecar enforces on one workload port
# ---------------------------------------------------------------------------------------------------

_MTLS_MODES: Final = frozenset({"UNSET", "DISABLE", "PERMISSIVE", "STRICT"})


def effective_mtls_mode(
    documents: Sequence[Mapping[str, Any]], workload: Workload, port: int, root_namespace: str = "istio-system"
) -> str:
    """STRICT / PERMISSIVE / DISABLE on ``port`` (a container port), as istiod composes it.

    Istio semantics notes section 3 (``policy_applier.go`` ``ComposePeerAuthentication``): start from
    PERMISSIVE, then the mesh policy (root namespace, no selector), the namespace policy (workload
    namespace, no selector), the workload policy (selector matching, not in the root namespace; a
    selector policy in the root namespace is ignored), each only if its mode is not UNSET; then the
    workload policy's ``portLevelMtls`` entry for the port (UNSET inherits). Several candidates on one
    level are resolved by creation time, which these documents do not carry: that raises.
    """
    levels: dict[str, list[Mapping[str, Any]]] = {"mesh": [], "namespace": [], "workload": []}
    for document in documents:
        if document.get("kind") != "PeerAuthentication":
            continue
        namespace = _namespace(document)
        spec = _spec(document)
        selector = _mapping(spec.get("selector") or {}, "spec.selector")
        labels = _mapping(selector.get("matchLabels") or {}, "spec.selector.matchLabels")
        if not labels:
            if namespace == root_namespace:
                levels["mesh"].append(spec)
            elif namespace == workload.namespace:
                levels["namespace"].append(spec)
        elif (
            namespace == workload.namespace
            and namespace != root_namespace
            and all(workload.labels.get(k) == v for k, v in labels.items())
        ):
            levels["workload"].append(spec)
    mode = "PERMISSIVE"
    for level in ("mesh", "namespace", "workload"):
        if len(levels[level]) > 1:
            raise UnsupportedPolicyError(f"{len(levels[level])} {level}-level PeerAuthentications: oldest wins")
        for spec in levels[level]:
            mode = _mode(spec.get("mtls"), mode)
    for spec in levels["workload"]:
        port_level = _mapping(spec.get("portLevelMtls") or {}, "spec.portLevelMtls")
        if str(port) in port_level:
            mode = _mode(port_level[str(port)], mode)
    return mode


def _mode(mtls: Any, inherited: str) -> str:
    if mtls is None:
        return inherited
    mode = _mapping(mtls, "mtls").get("mode") or "UNSET"
    if mode not in _MTLS_MODES:
        raise InvalidPolicyError(f"unknown mTLS mode {mode!r}")
    return inherited if mode == "UNSET" else str(mode)


# ---------------------------------------------------------------------------------------------------
# Ambient mode (Istio 1.30.3): the destination ztunnel (L4) and the waypoint (L7) as two stages
# ---------------------------------------------------------------------------------------------------
#
# Written from the Istio 1.30.3 source (/work/notes/ambient.md):
#
# * The waypoint is an Envoy that reads only policies with targetRefs (pilot/pkg/model/policyattachment.go
#   ShouldAttachPolicy: "waypoints never use selector"): kind Service (core group) named like the Service,
#   in the Service's namespace; kind Gateway named like the waypoint, in its namespace; kind GatewayClass
#   istio-waypoint in the root namespace. RequestAuthentication attaches the same way
#   (model/authentication.go getConfigsForWorkload). Its RBAC is the sidecar's (same builder, with
#   principals read from the io.istio.peer_principal filter state = the URI SAN of the HBONE client
#   certificate: the original client's identity, xds/filters/filters.go ConnectAuthorityFilter), and the
#   source address is restored from %DOWNSTREAM_REMOTE_ADDRESS% of the HBONE connection (the client pod).
#   So the waypoint stage is the sidecar decision above over the targetRefs policies.
# * The destination ztunnel reads only policies without targetRefs, converted by
#   pilot/pkg/serviceregistry/ambient/authorization.go convertAuthorizationPolicy / handleRule: ALLOW and
#   DENY only (AUDIT, CUSTOM and dry-run policies are not sent); per rule one clause of `to` matches
#   (ports), one of `from` matches (ipBlocks, principals, namespaces, serviceAccounts), one per `when`
#   (source.ip/.namespace/.principal, destination.ip/.port; any other key is HTTP). HTTP fields (hosts,
#   methods, paths, remoteIpBlocks, requestPrincipals and their not* forms, other when keys) are dropped;
#   an ALLOW rule that had any is dropped whole ("L7 policies never match for ALLOW"). trustDomains are
#   silently ignored. ztunnel (src/rbac.rs Authorization::matches) then skips empty matches, so a clause
#   whose matches are all empty never matches, and a policy without rules never matches;
#   src/state.rs assert_rbac: a matching DENY rejects, no ALLOW policy allows, a matching ALLOW allows.
#   It sees the connection: the resolved container port, the peer IP, the HBONE peer identity (None for
#   plaintext) - for traffic relayed by a waypoint, the waypoint's identity and IP.
# * PeerAuthentication at ztunnel (authorization.go convertedSelectorPeerAuthentications, policies.go
#   DefaultPolicy, convertPeerAuthentication): effective STRICT adds DENY {notPrincipals: presence}
#   (plaintext); DISABLE counts as not-STRICT; a workload policy's portLevelMtls decides for its port.

_WAYPOINT_CLASS: Final = "istio-waypoint"
_CORE_GROUPS: Final = frozenset({"", "core"})
_GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
_L4_WHEN: Final[Mapping[str, str]] = {
    "source.ip": "source_ips",
    "source.namespace": "namespaces",
    "source.principal": "principals",
    "destination.ip": "destination_ips",
    "destination.port": "destination_ports",
}
_HTTP_OPERATION_FIELDS: Final = frozenset({"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"})
_HTTP_SOURCE_FIELDS: Final = frozenset(
    {"remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals"}
)


@dataclass(frozen=True)
class Ambient:
    """The Triton pods (captured by ztunnel), their Service bound to a waypoint (``istio.io/use-waypoint``)."""

    workload: Workload
    service: str  # in workload.namespace
    waypoint: str  # the waypoint Gateway's name, in workload.namespace
    waypoint_principal: str  # "<td>/ns/<ns>/sa/<sa>" of the waypoint pods (SA = Gateway name by default)
    waypoint_ip: str = "10.255.0.9"


@dataclass(frozen=True)
class L4Connection:
    """A connection as the destination ztunnel sees it."""

    port: int  # container port (ztunnel resolves the HBONE target to it)
    principal: str | None  # HBONE peer identity; None: plaintext from outside the mesh
    source_ip: str | None


@dataclass(frozen=True)
class _Match:
    """security.Match (authorization.proto): fields ANDed; values ORed; not* = none of them."""

    fields: tuple[tuple[str, tuple[str, ...]], ...]  # (field, values), e.g. ("not_principals", ("*",))

    @property
    def is_empty(self) -> bool:
        return not any(values for _, values in self.fields)


@dataclass(frozen=True)
class ZtunnelPolicy:
    """What istiod sends to ztunnel for one AuthorizationPolicy: rules of clauses of matches."""

    name: str
    namespace: str
    scope: str  # WORKLOAD_SELECTOR / NAMESPACE / GLOBAL
    labels: Mapping[str, str] | None  # WORKLOAD_SELECTOR: the matchLabels (None: nil selector)
    action: str  # ALLOW / DENY
    rules: tuple[tuple[tuple[_Match, ...], ...], ...]  # group -> clauses -> matches
    dropped_http: tuple[str, ...] = ()  # what the ZtunnelAccepted status lists as unsupported


def _port_values(values: Sequence[str]) -> tuple[str, ...]:
    # stringToPort: a value that is not a number <= 65535 is silently dropped.
    return tuple(v for v in values if v.isdigit() and int(v) <= 65535)


def _ip_values(values: Sequence[str]) -> tuple[str, ...]:
    kept = []
    for value in values:  # stringToIP: unparsable values are silently dropped
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            continue
        kept.append(value)
    return tuple(kept)


def _source_match(source: Mapping[str, Any], policy_namespace: str) -> _Match:
    def values(key: str) -> tuple[str, ...]:
        return tuple(_strings(source.get(key) or [], key))

    def accounts(key: str) -> tuple[str, ...]:
        # stringToServiceAccountMatch: a bare "<sa>" is in the policy's namespace.
        return tuple(v if "/" in v else f"{policy_namespace}/{v}" for v in values(key))

    return _Match(
        (
            ("source_ips", _ip_values(values("ipBlocks"))),
            ("not_source_ips", _ip_values(values("notIpBlocks"))),
            ("namespaces", values("namespaces")),
            ("not_namespaces", values("notNamespaces")),
            ("service_accounts", accounts("serviceAccounts")),
            ("not_service_accounts", accounts("notServiceAccounts")),
            ("principals", values("principals")),
            ("not_principals", values("notPrincipals")),
        )
    )


def ztunnel_policy(document: Policy, root_namespace: str = "istio-system") -> ZtunnelPolicy | None:
    """convertAuthorizationPolicy: None when istiod sends nothing to ztunnel for this policy."""
    validate_policy(document)
    spec = _spec(document)
    if _is_dry_run(document):  # AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY is off by default
        return None
    if spec.get("targetRef") or spec.get("targetRefs"):  # "TargetRef is not intended for ztunnel"
        return None
    action = _action(document)
    if action not in ("ALLOW", "DENY"):  # "ztunnel does not support the %s action"
        return None
    namespace = _namespace(document)
    labels: Mapping[str, str] | None = None
    if "selector" in spec:
        scope = "WORKLOAD_SELECTOR"
        match_labels = _mapping(spec.get("selector") or {}, "spec.selector").get("matchLabels")
        labels = None if not match_labels else dict(_mapping(match_labels, "spec.selector.matchLabels"))
    else:
        scope = "GLOBAL" if namespace == root_namespace else "NAMESPACE"
    groups = []
    dropped: set[str] = set()
    for rule in _rules(document):
        clauses, http = _handle_rule(_mapping(rule, "rule"), namespace)
        dropped |= http
        if action == "ALLOW" and http:
            continue  # "L7 policies never match for ALLOW": the rule is dropped
        groups.append(clauses)
    return ZtunnelPolicy(
        _mapping(document["metadata"], "metadata")["name"],
        namespace,
        scope,
        labels,
        action,
        tuple(groups),
        tuple(sorted(dropped)),
    )


def _handle_rule(rule: Mapping[str, Any], namespace: str) -> tuple[tuple[tuple[_Match, ...], ...], set[str]]:
    http: set[str] = set()
    clauses: list[tuple[_Match, ...]] = []
    to_matches = []
    for entry in rule.get("to") or []:
        operation = _mapping(entry.get("operation"), "operation")
        http |= _HTTP_OPERATION_FIELDS & {k for k, v in operation.items() if v}
        to_matches.append(
            _Match(
                (
                    ("destination_ports", _port_values(_strings(operation.get("ports") or [], "ports"))),
                    ("not_destination_ports", _port_values(_strings(operation.get("notPorts") or [], "notPorts"))),
                )
            )
        )
    from_matches = []
    for entry in rule.get("from") or []:
        source = _mapping(entry.get("source"), "source")
        http |= _HTTP_SOURCE_FIELDS & {k for k, v in source.items() if v}
        from_matches.append(_source_match(source, namespace))
    if to_matches:
        clauses.append(tuple(to_matches))
    if from_matches:
        clauses.append(tuple(from_matches))
    for condition in rule.get("when") or []:
        key = condition["key"]
        if key not in _L4_WHEN:
            http.add(key)
        fields = []
        for name, field_name in _L4_WHEN.items():
            if key != name:
                continue
            convert = (
                _port_values
                if field_name == "destination_ports"
                else (_ip_values if field_name.endswith("_ips") else tuple)
            )
            fields.append((field_name, convert(_strings(condition.get("values") or [], "values"))))
            fields.append((f"not_{field_name}", convert(_strings(condition.get("notValues") or [], "notValues"))))
        clauses.append((_Match(tuple(fields)),))
    return tuple(clauses), http


def _ztunnel_string(pattern: str, value: str) -> bool:
    # stringToMatch: "*" presence (non-empty), "*x" suffix, "x*" prefix, else exact.
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _ztunnel_value(field_name: str, value: str, connection: L4Connection) -> bool:
    principal = connection.principal
    if field_name == "principals":  # matches_principal: no identity, no match
        return principal is not None and _ztunnel_string(value, principal)
    if field_name == "namespaces":  # the identity's namespace, "" without one
        parts = (principal or "").split("/")
        return _ztunnel_string(value, parts[2] if len(parts) == 5 else "")
    if field_name == "service_accounts":  # exact namespace and SA; the trust domain is ignored
        if principal is None:
            return False
        parts = principal.split("/")
        return len(parts) == 5 and f"{parts[2]}/{parts[4]}" == value
    if field_name == "source_ips":
        return connection.source_ip is not None and _ip_matches(value, connection.source_ip)
    if field_name == "destination_ports":
        return int(value) == connection.port
    if field_name == "destination_ips":
        raise UnsupportedPolicyError("destination.ip at ztunnel is not modelled")
    raise AssertionError(field_name)


def _ztunnel_match(match: _Match, connection: L4Connection) -> bool:
    for field_name, values in match.fields:
        if not values:
            continue
        negated = field_name.startswith("not_")
        base = field_name.removeprefix("not_")
        hit = any(_ztunnel_value(base, value, connection) for value in values)
        if hit == negated:
            return False
    return True


def ztunnel_policy_matches(policy: ZtunnelPolicy, connection: L4Connection) -> bool:
    """rbac.rs Authorization::matches: OR of rules; AND of clauses; OR of non-empty matches."""
    for clauses in policy.rules:
        if all(any(not match.is_empty and _ztunnel_match(match, connection) for match in clause) for clause in clauses):
            return True  # a rule without clauses matches
    return False  # no rules: never matches


def _ztunnel_applies(policy: ZtunnelPolicy, workload: Workload, root_namespace: str) -> bool:
    if policy.scope == "GLOBAL":
        return True
    if policy.scope == "NAMESPACE":
        return policy.namespace == workload.namespace
    # buildWorkloadPolicies: a nil label selector attaches nowhere.
    if policy.labels is None or policy.namespace not in (workload.namespace, root_namespace):
        return False
    return all(workload.labels.get(k) == v for k, v in policy.labels.items())


def ambient_strict(
    documents: Sequence[Mapping[str, Any]], workload: Workload, port: int, root_namespace: str = "istio-system"
) -> bool:
    """Does ztunnel refuse plaintext on ``port``? (convertedSelectorPeerAuthentications + portLevelMtls)"""
    mesh: Mapping[str, Any] | None = None
    namespace: Mapping[str, Any] | None = None
    selected: Mapping[str, Any] | None = None
    for document in documents:
        if document.get("kind") != "PeerAuthentication":
            continue
        spec = _spec(document)
        ns = _namespace(document)
        labels = _mapping(_mapping(spec.get("selector") or {}, "spec.selector").get("matchLabels") or {}, "labels")
        if not labels:
            if ns == root_namespace:
                mesh = mesh or spec
            elif ns == workload.namespace:
                namespace = namespace or spec
        elif ns == workload.namespace != root_namespace and all(workload.labels.get(k) == v for k, v in labels.items()):
            selected = selected or spec
    strict = False
    for level in (mesh, namespace, selected):
        if level is not None:
            mode = _mode(level.get("mtls"), "STRICT" if strict else "PERMISSIVE")
            strict = mode == "STRICT"  # DISABLE, like PERMISSIVE, is not strict
    if selected is not None:
        port_level = _mapping(selected.get("portLevelMtls") or {}, "spec.portLevelMtls")
        if str(port) in port_level:
            strict = _mode(port_level[str(port)], "STRICT" if strict else "PERMISSIVE") == "STRICT"
    return strict


def ztunnel_decision(
    documents: Sequence[Mapping[str, Any]],
    workload: Workload,
    connection: L4Connection,
    root_namespace: str = "istio-system",
) -> Outcome:
    """state.rs assert_rbac at the destination ztunnel, PeerAuthentication's static STRICT deny included."""
    policies = [
        converted
        for document in documents
        if document.get("kind", "AuthorizationPolicy") == "AuthorizationPolicy"
        and (converted := ztunnel_policy(document, root_namespace)) is not None
        and _ztunnel_applies(converted, workload, root_namespace)
    ]
    if connection.principal is None and ambient_strict(documents, workload, connection.port, root_namespace):
        return Outcome(Verdict.DENIED, "ztunnel: explicitly denied (istio_converted_static_strict)")
    for policy in policies:
        if policy.action == "DENY" and ztunnel_policy_matches(policy, connection):
            return Outcome(Verdict.DENIED, f"ztunnel: explicitly denied (DENY {policy.namespace}/{policy.name})")
    allows = [policy for policy in policies if policy.action == "ALLOW"]
    if not allows:
        return Outcome(Verdict.ALLOWED, "ztunnel: no ALLOW policy")
    for policy in allows:
        if ztunnel_policy_matches(policy, connection):
            return Outcome(Verdict.ALLOWED, f"ztunnel: ALLOW {policy.namespace}/{policy.name}")
    return Outcome(Verdict.DENIED, "ztunnel: not allowed")


def waypoint_policy_applies(policy: Policy, ambient: Ambient, root_namespace: str = "istio-system") -> bool:
    """ShouldAttachPolicy for the waypoint's per-Service chain of ``ambient.service``."""
    spec = _spec(policy)
    refs = [spec["targetRef"]] if spec.get("targetRef") else list(spec.get("targetRefs") or [])
    namespace = _namespace(policy)
    for ref in refs:
        group, kind, name = ref.get("group") or "", ref.get("kind"), ref.get("name")
        service = kind == "Service" and group in _CORE_GROUPS and name == ambient.service
        if service and namespace == ambient.workload.namespace:
            return True
        waypoint_class = kind == "GatewayClass" and group == _GATEWAY_GROUP and name == _WAYPOINT_CLASS
        if waypoint_class and namespace == root_namespace:
            return True
        gateway = kind == "Gateway" and group == _GATEWAY_GROUP and name == ambient.waypoint
        if gateway and namespace == ambient.workload.namespace:
            return True
    return False  # selector and namespace-wide policies: "waypoints never use selector"


def evaluate_ambient(
    documents: Sequence[Mapping[str, Any]],
    ambient: Ambient,
    requests: Iterable[IstioRequest],
    *,
    via_waypoint: bool = True,
    root_namespace: str = "istio-system",
) -> list[Outcome]:
    """Each request through the waypoint (its L7 policy) and then the destination ztunnel (which sees the
    waypoint), or - ``via_waypoint=False`` - straight to the pod's ztunnel (which sees the client)."""
    authorization, authentications = [], []
    for document in documents:
        kind = document.get("kind")
        if kind == "AuthorizationPolicy":
            validate_policy(document)
            authorization.append(document)
        elif kind == _RA_KIND:
            validate_request_authentication(document)
            authentications.append(document)
    by_action: dict[str, list[Policy]] = {action: [] for action in _ACTIONS}
    for policy in authorization:
        if waypoint_policy_applies(policy, ambient, root_namespace) and not _is_dry_run(policy):
            by_action[_action(policy)].append(policy)
    if by_action["CUSTOM"]:
        raise UnsupportedPolicyError("CUSTOM (ext_authz) policies are not modelled by this evaluator")
    providers = _jwt_providers([ra for ra in authentications if waypoint_policy_applies(ra, ambient, root_namespace)])
    outcomes = []
    for request in requests:
        if not via_waypoint:
            outcomes.append(
                ztunnel_decision(
                    documents, ambient.workload, L4Connection(request.port, request.principal, request.source_ip)
                )
            )
            continue
        if request.principal is None:
            raise ValueError("only mesh clients (with an HBONE identity) reach a waypoint")
        at_waypoint = _decide(by_action, providers, request)
        if not at_waypoint.allowed:
            outcomes.append(at_waypoint)
            continue
        relayed = L4Connection(request.port, ambient.waypoint_principal, ambient.waypoint_ip)
        outcomes.append(ztunnel_decision(documents, ambient.workload, relayed, root_namespace))
    return outcomes
