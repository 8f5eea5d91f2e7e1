"""Reference evaluator for Istio 1.30 AuthorizationPolicy on a sidecar, HTTP traffic only.

Written from the Istio semantics notes (``istio-semantics.md`` sections 2.1-2.8), independently of the
``meshgen`` generator, so tests can check what the generated policies *mean* instead of how they look.

It models what the Envoy RBAC filters built by istiod do on a sidecar's inbound HTTP chain:

* which policies attach to a workload (namespace / root namespace, ``selector``; ``targetRefs`` ignored);
* the decision order CUSTOM -> DENY -> (no ALLOW -> allow) -> ALLOW -> deny, AUDIT ignored, dry-run ignored;
* rule matching: (any ``from``) AND (any ``to``) AND (all ``when``), OR within a field, AND across fields.

Anything it does not model raises :class:`UnsupportedPolicyError`; anything the Istio API server or
webhook would reject raises :class:`InvalidPolicyError`. Both are ``ValueError`` so a test fails loudly
instead of silently evaluating something Istio would never run.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "InvalidPolicyError",
    "IstioRequest",
    "UnsupportedPolicyError",
    "Workload",
    "evaluate",
    "evaluate_all",
    "normalize_path",
    "policy_applies",
    "rule_matches",
    "validate_policy",
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
# `when` keys Istio accepts but this evaluator does not model (JWT, destination IP, XFF, SNI, ...).
_KNOWN_UNMODELLED_KEYS: Final = frozenset(
    {
        "remote.ip",
        "source.serviceAccount",
        "source.trustDomain",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "connection.sni",
    }
)
_KNOWN_UNMODELLED_PREFIXES: Final = (
    "request.auth.claims[",
    "request.experimental.inline.headers[",
)
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

    request: IstioRequest
    policy_namespace: str | None
    path: str  # normalized, query stripped


ValueMatcher = Callable[[str, _Subject], bool]


def _never(_value: str, _subject: _Subject) -> bool:
    # No JWT support: the request never has a request principal, so requestPrincipals never match
    # (and notRequestPrincipals always do), as with Envoy's metadata matcher and no jwt_authn output.
    return False


_SOURCE_FIELDS: Final[Mapping[str, ValueMatcher]] = {
    "principals": lambda v, s: _string_matches(v, s.request.principal),
    "namespaces": lambda v, s: _string_matches(v, _peer_namespace(s.request)),
    "ipBlocks": lambda v, s: _ip_matches(v, s.request.source_ip),
    "requestPrincipals": _never,
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


def rule_matches(rule: Mapping[str, Any], request: IstioRequest, policy_namespace: str | None = None) -> bool:
    """(any ``from``) AND (any ``to``) AND (all ``when``); ``{}`` always matches.

    ``policy_namespace`` is only needed for bare ``serviceAccounts`` values (``<sa>`` = policy namespace).
    """
    return _body_matches(_validate_rule(rule, "rule"), request, policy_namespace)


def _body_matches(body: Mapping[str, Any], request: IstioRequest, policy_namespace: str | None) -> bool:
    """``rule_matches`` on a rule already validated."""
    subject = _Subject(request, policy_namespace, normalize_path(request.path))
    return (
        _section_matches(body, "from", "source", _SOURCE_FIELDS, subject)
        and _section_matches(body, "to", "operation", _OPERATION_FIELDS, subject)
        and all(_condition_matches(condition, subject) for condition in body.get("when") or [])
    )


def _policy_matches(policy: Policy, request: IstioRequest) -> bool:
    # No `rules` means "never match" (an ALLOW policy without rules is allow-nothing).
    namespace = _namespace(policy)
    return any(_body_matches(rule, request, namespace) for rule in _rules(policy))


def policy_applies(policy: Policy, workload: Workload, root_namespace: str = "istio-system") -> bool:
    """Does the policy attach to this sidecar workload? (Dry-run is handled by :func:`evaluate`.)"""
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


def evaluate(
    policies: Sequence[Mapping[str, Any]],
    workload: Workload,
    request: IstioRequest,
    root_namespace: str = "istio-system",
) -> bool:
    """True = allowed. ``policies`` are parsed AuthorizationPolicy documents (as yaml.safe_load gives them).

    Every document is validated, applicable or not; CUSTOM policies that apply raise.
    """
    return evaluate_all(policies, workload, [request], root_namespace)[0]


def evaluate_all(
    policies: Sequence[Mapping[str, Any]],
    workload: Workload,
    requests: Iterable[IstioRequest],
    root_namespace: str = "istio-system",
) -> list[bool]:
    """``evaluate`` for many requests against the same policies, validating the policies once."""
    for policy in policies:
        validate_policy(policy)
    active = [p for p in policies if policy_applies(p, workload, root_namespace) and not _is_dry_run(p)]
    by_action: dict[str, list[Policy]] = {action: [] for action in _ACTIONS}
    for policy in active:
        by_action[_action(policy)].append(policy)
    if by_action["CUSTOM"]:
        raise UnsupportedPolicyError("CUSTOM (ext_authz) policies are not modelled by this evaluator")
    return [_allowed(by_action, request) for request in requests]


def _allowed(by_action: Mapping[str, list[Policy]], request: IstioRequest) -> bool:
    # AUDIT only marks requests for logging; it never changes the decision.
    if any(_policy_matches(policy, request) for policy in by_action["DENY"]):
        return False
    if not by_action["ALLOW"]:
        return True
    return any(_policy_matches(policy, request) for policy in by_action["ALLOW"])


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
