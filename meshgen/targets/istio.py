"""Istio target: AuthorizationPolicy (DENY, then ALLOW) and PeerAuthentication for the workload.

Mirrors how istiod reads these resources (see docs/targets.md): each spec rule becomes Istio rules
whose ``to`` operations carry the container port, the catalog's methods and exact paths or ``{*}``
templates, and whose ``from``/``when`` carry the client identities. A client identified by headers
needs its own Istio rule, because ``when`` applies to the whole rule, not to one ``from`` entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshgen.catalog import ANY_SEGMENT
from meshgen.errors import TargetError
from meshgen.policy import ClientIdentity, Policy, PolicyRule
from meshgen.render import load_yaml_all, render

MANAGED_BY = {"app.kubernetes.io/managed-by": "meshgen"}
MAX_RULES = 512  # AuthorizationPolicy spec.rules maxItems in the Istio 1.30 CRD
GRPC_METHOD = "POST"  # Istio matches gRPC by path; the HTTP/2 method is always POST


def generate(policy: Policy, dry_run: bool = False) -> str:
    context = build_context(policy, dry_run)
    text = render("istio", "istio.yaml.j2", **context)
    check_rendered(text, context)
    return text


def build_context(policy: Policy, dry_run: bool = False) -> dict[str, Any]:
    annotations = {"istio.io/dry-run": "true"} if dry_run else {}
    policies = []
    deny_rules = istio_rules(policy, policy.rules_for("deny"))
    if deny_rules:
        policies.append(
            {"name": f"{policy.name}-deny", "action": "DENY", "rules": deny_rules, "annotations": annotations}
        )
    # Always present: an ALLOW policy with no rules allows nothing, which is the default-deny we want.
    policies.append(
        {
            "name": f"{policy.name}-allow",
            "action": "ALLOW",
            "rules": istio_rules(policy, policy.rules_for("allow")),
            "annotations": annotations,
        }
    )
    return {
        "namespace": policy.namespace,
        "labels": dict(MANAGED_BY),
        "selector": dict(policy.selector),
        "policies": policies,
        "peer_authentication": {
            "name": f"{policy.name}-mtls",
            "mode": policy.mtls_mode,
            "port_level_mtls": {str(port): {"mode": mode} for port, mode in policy.port_mtls},
        },
    }


def istio_rules(policy: Policy, rules: Iterable[PolicyRule]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for rule in rules:
        operations = _operations(policy, rule)
        if not operations:
            continue
        for sources, conditions in _identity_groups(rule):
            istio_rule: dict[str, Any] = {}
            if sources:
                istio_rule["from"] = [{"source": source} for source in sources]
            istio_rule["to"] = operations
            if conditions:
                istio_rule["when"] = conditions
            result.append(istio_rule)
    if len(result) > MAX_RULES:
        raise TargetError(
            f"istio: the spec needs {len(result)} AuthorizationPolicy rules, more than Istio's limit of "
            f"{MAX_RULES}; merge clients that share rules or use fewer header-identified clients"
        )
    return result


def _operations(policy: Policy, rule: PolicyRule) -> list[dict[str, Any]]:
    # Paths per (port, methods, excluded paths), deduplicated in first-seen order (dict keys).
    grouped: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, None]] = {}
    for grant in rule.http:
        key = (str(policy.port(grant.endpoint.port)), grant.endpoint.methods, grant.excluded_paths)
        paths = grouped.setdefault(key, {})
        for pattern in grant.patterns:
            paths[_istio_path(pattern)] = None
    if rule.grpc:
        grouped[(str(policy.port("grpc")), (GRPC_METHOD,), ())] = dict.fromkeys(method.path for method in rule.grpc)
    operations = []
    for (port, methods, excluded), unique_paths in grouped.items():
        operation: dict[str, Any] = {"ports": [port], "methods": list(methods), "paths": list(unique_paths)}
        if excluded:
            operation["notPaths"] = list(excluded)
        operations.append({"operation": operation})
    return operations


def _istio_path(pattern: tuple[str, ...]) -> str:
    return "/" + "/".join("{*}" if segment == ANY_SEGMENT else segment for segment in pattern)


def _identity_groups(rule: PolicyRule) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(sources, when-conditions) per Istio rule needed to express the rule's clients."""
    if rule.clients is None:
        return [([], [])]
    groups: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    plain = [_source(client) for client in rule.clients if not client.headers]
    if plain:
        groups.append((plain, []))
    for client in rule.clients:
        if client.headers:
            source = _source(client)
            groups.append(([source] if source else [], _header_conditions(client)))
    return groups


def _source(client: ClientIdentity) -> dict[str, Any]:
    source: dict[str, Any] = {}
    if client.principals:
        source["principals"] = list(client.principals)
    if client.namespaces:
        source["namespaces"] = list(client.namespaces)
    if client.ip_blocks:
        source["ipBlocks"] = list(client.ip_blocks)
    return source


def _header_conditions(client: ClientIdentity) -> list[dict[str, Any]]:
    conditions = []
    for name, value in client.headers:
        if value.startswith("*") or value.endswith("*"):
            raise TargetError(
                f"istio: client {client.name!r} header {name!r}: Istio reads a leading or trailing '*' in a "
                "header value as a wildcard, so this value cannot be matched exactly; choose another value"
            )
        conditions.append({"key": f"request.headers[{name}]", "values": [value]})
    return conditions


def check_rendered(text: str, context: dict[str, Any]) -> None:
    """Parse the output back and confirm the template carried every value through unchanged."""
    documents = load_yaml_all(text)
    expected = [*context["policies"], context["peer_authentication"]]
    if len(documents) != len(expected):
        raise AssertionError("istio template produced the wrong number of documents")
    for document, want in zip(documents, expected, strict=True):
        if document["metadata"]["name"] != want["name"]:
            raise AssertionError(f"istio template mangled {want['name']}")
        spec = document["spec"]
        if document["kind"] == "AuthorizationPolicy":
            if spec["action"] != want["action"] or spec.get("rules", []) != want["rules"]:
                raise AssertionError(f"istio template mangled the rules of {want['name']}")
        elif spec["mtls"]["mode"] != want["mode"] or spec.get("portLevelMtls", {}) != want["port_level_mtls"]:
            raise AssertionError("istio template mangled the PeerAuthentication")
        if spec["selector"]["matchLabels"] != context["selector"]:
            raise AssertionError("istio template mangled the selector")
