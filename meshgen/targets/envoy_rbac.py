"""Envoy RBAC HTTP filters (DENY, then ALLOW) for a compiled policy, mirroring istiod's translation.

Each spec rule becomes one RBAC policy per client (``rules[2]-from[admin]``), so Envoy's per-policy
stats and logs name the spec rule and the client that matched:

- permissions: one ``and_rules`` per (port, methods, excluded paths) group: ``:method`` exact, paths as
  ``url_path`` exact or a validated ``uri_template``, ``not_rule`` for paths Triton routes elsewhere,
  and (in the filter-only output) ``destination_port`` = the Triton container port.
- principals: one ``and_ids`` per client over its identity kinds (principals, namespaces, ipBlocks,
  headers); ``any`` for ``from: anyone``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from meshgen.catalog import ANY_SEGMENT
from meshgen.errors import TargetError
from meshgen.policy import ClientIdentity, Policy, PolicyRule

RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
URI_TEMPLATE_MATCHER = "envoy.path.match.uri_template.uri_template_matcher"
URI_TEMPLATE_TYPE = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
GRPC_METHOD = "POST"  # every gRPC call is an HTTP/2 POST
SPIFFE = "spiffe://"

# A literal path segment Envoy's uri_template parser accepts (RFC 3986 pchar without '%', and without
# '*', which the parser reads as an operator). Anything else would crash Envoy at load time.
_TEMPLATE_LITERAL = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,;=:@]+$")
_MAX_TEMPLATE_OPERATORS = 5  # Envoy's kPatternMatchingMaxVariablesPerPath


def rbac_filters(policy: Policy, *, port: str | None, dry_run: bool) -> list[dict[str, Any]]:
    """HTTP filter entries: DENY (only if it has policies), then ALLOW (always: empty = deny all).

    ``port`` None: every Triton port, each permission pinned to its container port with
    ``destination_port`` (the sidecar / mesh case). ``port`` "http"|"grpc"|"metrics": only that port's
    permissions and no ``destination_port`` (one listener per port in a standalone bootstrap).
    """
    filters: list[dict[str, Any]] = []
    deny = _policies(policy, policy.rules_for("deny"), port)
    if deny:
        filters.append(_filter(f"{policy.name}-deny", "DENY", deny, port, dry_run))
    filters.append(_filter(f"{policy.name}-allow", "ALLOW", _policies(policy, policy.rules_for("allow"), port),
                           port, dry_run))
    return filters


def _filter(label: str, action: str, policies: dict[str, Any], port: str | None, dry_run: bool) -> dict[str, Any]:
    prefix = f"{label}-{port}." if port else f"{label}."
    rules = {"action": action, "policies": policies}
    config: dict[str, Any] = {"@type": RBAC_TYPE}
    if dry_run:
        # Shadow rules are only counted and logged; with no enforcing `rules` the filter allows all.
        config["shadow_rules"] = rules
        config["shadow_rules_stat_prefix"] = prefix
    else:
        config["rules"] = rules
        config["rules_stat_prefix"] = prefix
    return {"name": RBAC_FILTER, "typed_config": config}


def _policies(policy: Policy, rules: Iterable[PolicyRule], port: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for rule in rules:
        permissions = _permissions(policy, rule, port)
        if not permissions:
            continue  # nothing on this port
        if rule.clients is None:
            result[f"{rule.label}-from[anyone]"] = {"permissions": permissions, "principals": [{"any": True}]}
            continue
        for client in rule.clients:
            result[f"{rule.label}-from[{client.name}]"] = {
                "permissions": permissions,
                "principals": [_principal(client)],
            }
    return result


def _permissions(policy: Policy, rule: PolicyRule, port: str | None) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
    for grant in rule.http:
        if port is not None and grant.endpoint.port != port:
            continue
        paths = grouped.setdefault((grant.endpoint.port, grant.endpoint.methods, grant.excluded_paths), [])
        for pattern in grant.patterns:
            matcher = path_matcher(pattern)
            if matcher not in paths:
                paths.append(matcher)
    if rule.grpc and port in (None, "grpc"):
        grouped[("grpc", (GRPC_METHOD,), ())] = [_url_path(method.path) for method in rule.grpc]
    permissions = []
    for (port_name, methods, excluded), paths in grouped.items():
        conditions: list[dict[str, Any]] = [
            _any_of([{"header": {"name": ":method", "string_match": {"exact": m}}} for m in methods]),
            _any_of(paths),
        ]
        if excluded:
            conditions.append({"not_rule": _any_of([_url_path(path) for path in excluded])})
        if port is None:
            conditions.append({"destination_port": policy.port(port_name)})
        permissions.append({"and_rules": {"rules": conditions}})
    return permissions


def _any_of(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def _url_path(path: str) -> dict[str, Any]:
    # url_path compares the path without the query string (a `:path` header matcher would include it).
    return {"url_path": {"path": {"exact": path}}}


def path_matcher(pattern: tuple[str, ...]) -> dict[str, Any]:
    """``url_path`` exact for a literal path, else a ``uri_template`` with ``*`` for one whole segment."""
    if ANY_SEGMENT not in pattern:
        return _url_path("/" + "/".join(pattern))
    template = "/" + "/".join(pattern)
    check_uri_template(template)
    return {"uri_template": {"name": URI_TEMPLATE_MATCHER, "typed_config": {
        "@type": URI_TEMPLATE_TYPE, "path_template": template}}}


def check_uri_template(template: str) -> None:
    """Reject what Envoy's uri_template parser would reject: a malformed template aborts Envoy."""
    segments = template.split("/")
    problem = None
    if not template.startswith("/"):
        problem = "must start with '/'"
    elif any(not segment for segment in segments[1:]):
        problem = "has an empty segment"
    elif sum(segment == ANY_SEGMENT for segment in segments) > _MAX_TEMPLATE_OPERATORS:
        problem = f"has more than {_MAX_TEMPLATE_OPERATORS} '*' segments"
    else:
        bad = [s for s in segments[1:] if s != ANY_SEGMENT and not _TEMPLATE_LITERAL.match(s)]
        if bad:
            problem = f"has segment {bad[0]!r} with characters a uri_template literal cannot hold"
    if problem:
        raise TargetError(f"envoy: path template {template!r} {problem}")


def _principal(client: ClientIdentity) -> dict[str, Any]:
    kinds: list[dict[str, Any]] = []
    if client.principals:
        kinds.append(_one_of([{"authenticated": {"principal_name": {"exact": SPIFFE + p}}}
                              for p in client.principals]))
    if client.namespaces:
        # Istio identities are exactly spiffe://<td>/ns/<ns>/sa/<sa>; RE2 safe_regex is a full match.
        kinds.append(_one_of([{"authenticated": {"principal_name": {"safe_regex": {
            "regex": f"spiffe://[^/]+/ns/{re.escape(ns)}/sa/[^/]+"}}}} for ns in client.namespaces]))
    if client.ip_blocks:
        kinds.append(_one_of([{"direct_remote_ip": _cidr(block)} for block in client.ip_blocks]))
    for name, value in client.headers:
        # direct_remote_ip and exact, case-sensitive header values: X-Forwarded-For can't impersonate.
        kinds.append({"header": {"name": name, "string_match": {"exact": value}}})
    if not kinds:
        raise TargetError(f"envoy: client {client.name!r} has no identity Envoy can check")
    return kinds[0] if len(kinds) == 1 else {"and_ids": {"ids": kinds}}


def _one_of(ids: list[dict[str, Any]]) -> dict[str, Any]:
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _cidr(block: str) -> dict[str, Any]:
    network = ipaddress.ip_network(block, strict=False)
    return {"address_prefix": str(network.network_address), "prefix_len": network.prefixlen}
