"""Istio AuthorizationPolicy (DENY, then ALLOW) and PeerAuthentication documents for a lowered policy.

Mirrors how istiod reads these resources (see docs/targets.md): each spec rule becomes Istio rules
whose ``to`` operations carry the container port, the catalog's methods and exact paths or ``{*}``
templates, and whose ``from``/``when`` carry the client identities. A client whose identity needs a
``when`` condition (headers) gets an Istio rule of its own, because ``when`` applies to the whole rule,
not to one ``from`` entry.

Ambient mode (``policy.ambient``) writes the same rules as waypoint policies (``targetRefs`` to the
Triton Service) and one ztunnel policy (``selector``, L4 fields only) that admits only the waypoint's
identity, so no request reaches Triton without the waypoint's L7 checks (docs/targets.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshgen.address import PORT_NAMES
from meshgen.catalog import ANY_SEGMENT
from meshgen.errors import CompileWarning, TargetError
from meshgen.policy.identity import ClientIdentity, Headers, IpBlocks, Jwt, Namespaces, Principals
from meshgen.policy.model import AmbientMesh, Policy, PolicyRule
from meshgen.render import load_yaml_all
from meshgen.render import render as render_template
from meshgen.targets.contract import Encoders, Rendered, Unencodable, encode_identity
from meshgen.targets.envoy.guard import (
    INSPECTED_KEY,
    MODEL_KEY,
    NAMESPACE,
    UNPROVEN_KEY,
    guard_filter,
    inspected_methods,
)
from meshgen.targets.envoy.openai import MODEL_KEY as JSON_MODEL_KEY
from meshgen.targets.envoy.openai import NAMESPACE as JSON_NAMESPACE
from meshgen.targets.envoy.openai import body_limited, json_filter
from meshgen.targets.istio import IstioOptions

API_VERSION = "security.istio.io/v1"
NETWORKING_API_VERSION = "networking.istio.io/v1alpha3"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshgen"}
MAX_RULES = 512  # AuthorizationPolicy spec.rules maxItems in the Istio 1.30 CRD
GRPC_METHOD = "POST"  # Istio matches gRPC by path; the HTTP/2 method is always POST
DRY_RUN = {"istio.io/dry-run": "true"}


@dataclass(frozen=True)
class IstioMatch:
    """What one identity kind contributes to an Istio rule: ``from.source`` fields, ``when`` conditions."""

    source: tuple[tuple[str, tuple[str, ...]], ...] = ()
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _header_conditions(kind: Headers, client: ClientIdentity) -> IstioMatch:
    for header in kind.headers:
        value = header.value.value
        if value.startswith("*") or value.endswith("*"):
            raise Unencodable(
                f"header {header.name!r}: Istio reads a leading or trailing '*' in a header value as a "
                "wildcard, so this value cannot be matched exactly; choose another value"
            )
    return IstioMatch(when=tuple((f"request.headers[{h.name}]", (h.value.value,)) for h in kind.headers))


def _exact(what: str, value: str) -> str:
    if value.startswith("*") or value.endswith("*"):
        raise Unencodable(
            f"{what} {value!r}: Istio reads a leading or trailing '*' as a wildcard, so it cannot be matched "
            "exactly; choose another value"
        )
    return value


def _token_conditions(kind: Jwt, client: ClientIdentity) -> IstioMatch:
    """``requestPrincipals`` ``<iss>/<sub>`` (``<iss>/*``: any non-empty subject), audiences and claims.

    istiod splits a request principal at its last '/': a subject holding '/' is matched as a claim.
    """
    when: list[tuple[str, tuple[str, ...]]] = []
    subject = "*"
    if kind.subject is not None:
        _exact("jwt.subject", kind.subject)
        if "/" in kind.subject:
            when.append(("request.auth.claims[sub]", (kind.subject,)))
        else:
            subject = kind.subject
    if kind.audiences is not None:
        when.append(("request.auth.audiences", tuple(_exact("jwt.audiences", a) for a in kind.audiences)))
    for claim in kind.claims:
        when.append((f"request.auth.claims[{claim.name}]", (_exact(f"jwt.claims.{claim.name}", claim.value),)))
    return IstioMatch(source=(("requestPrincipals", (f"{kind.issuer}/{subject}",)),), when=tuple(when))


# Identity kind -> its Istio encoding. A kind missing here must be refused by the capability table.
ENCODERS: Encoders[IstioMatch] = {
    Principals: lambda kind, client: IstioMatch(source=(("principals", kind.values),)),
    Namespaces: lambda kind, client: IstioMatch(source=(("namespaces", kind.values),)),
    IpBlocks: lambda kind, client: IstioMatch(source=(("ipBlocks", kind.blocks),)),
    Headers: _header_conditions,
    Jwt: _token_conditions,
}
# A token is read from this header with this prefix only (never from ?access_token or cookies).
TOKEN_HEADER = {"name": "Authorization", "prefix": "Bearer "}
# Istio removes a verified token from the request: an Authorization header left is a credential it did
# not read (another scheme, "bearer" in lower case), denied so that nothing unverified reaches Triton.
UNREAD_AUTHORIZATION_RULE = {"when": [{"key": "request.headers[authorization]", "values": ["*"]}]}


def render(policy: Policy, options: IstioOptions) -> Rendered:
    context = build_context(policy, options.dry_run)
    warnings: tuple[CompileWarning, ...] = ()
    if options.dry_run and policy.jwt_providers:
        warnings = (
            CompileWarning(
                "istio: a RequestAuthentication has no dry-run: even in this dry run, requests with a token that "
                "fails verification are rejected (401); only the AuthorizationPolicies are audit-only"
            ),
        )
    return Rendered(render_template("istio", "istio.yaml.j2", **context), documents(context), warnings)


def parse_back(text: str) -> object:
    return load_yaml_all(text)


def build_context(policy: Policy, dry_run: bool = False) -> dict[str, Any]:
    if policy.ambient is not None:
        return ambient_context(policy, policy.ambient)
    annotations = dict(DRY_RUN) if dry_run else {}
    selector = {"matchLabels": dict(policy.selector)}
    policies = []
    deny_rules = _deny_rules(policy)
    if deny_rules:
        policies.append(
            {
                "name": f"{policy.name}-deny",
                "action": "DENY",
                "rules": deny_rules,
                "annotations": annotations,
                "attachment": {"selector": selector},
            }
        )
    # Always present: an ALLOW policy with no rules allows nothing, which is the default-deny we want.
    policies.append(
        {
            "name": f"{policy.name}-allow",
            "action": "ALLOW",
            "rules": istio_rules(policy, policy.rules_for("allow")),
            "annotations": annotations,
            "attachment": {"selector": selector},
        }
    )
    envoy_filters = []
    if inspected_methods(policy):
        envoy_filters.append(
            {
                "name": f"{policy.name}-grpc-model-guard",
                "port": policy.port("grpc"),
                "filter": guard_filter(policy),
                "comment": (
                    "The gRPC model guard (meshgen/targets/envoy/guard.py): reads the model name of per-model gRPC calls",  # noqa: E501
                    "for the AuthorizationPolicy conditions experimental.envoy.filters.http.meshgen_grpc[...].",
                ),
            }
        )
    if body_limited(policy):
        envoy_filters.append(
            {
                "name": f"{policy.name}-openai-model-reader",
                "port": policy.port("openai"),
                "filter": json_filter(),
                "comment": (
                    "The OpenAI body reader (meshgen/targets/envoy/openai.py): the JSON body's top-level model for",
                    "the AuthorizationPolicy conditions experimental.envoy.filters.http.json_to_metadata[model].",
                ),
            }
        )
    return _context(policy, policies, _request_authentication(policy, {"selector": selector}), envoy_filters)


def _deny_rules(policy: Policy) -> list[dict[str, Any]]:
    deny_rules = istio_rules(policy, policy.rules_for("deny"))
    if policy.jwt_providers:
        deny_rules.insert(0, UNREAD_AUTHORIZATION_RULE)
        _check_rule_count(len(deny_rules))
    return deny_rules


def _request_authentication(policy: Policy, attachment: dict[str, Any]) -> dict[str, Any] | None:
    if not policy.jwt_providers:
        return None
    jwt_rules = []
    for provider in policy.jwt_providers:
        jwt_rule: dict[str, Any] = {"issuer": provider.issuer}
        if provider.audiences is not None:
            jwt_rule["audiences"] = list(provider.audiences)
        jwt_rule |= {"jwks": provider.jwks, "fromHeaders": [dict(TOKEN_HEADER)]}
        jwt_rules.append(jwt_rule)
    return {"name": f"{policy.name}-jwt", "jwt_rules": jwt_rules, "attachment": attachment}


def _context(
    policy: Policy,
    policies: list[dict[str, Any]],
    request_authentication: dict[str, Any] | None,
    envoy_filters: list[dict[str, Any]],
    mtls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    mode_of = dict(mtls or {})
    return {
        "api_version": API_VERSION,
        "networking_api_version": NETWORKING_API_VERSION,
        "request_authentication": request_authentication,
        "envoy_filters": envoy_filters,
        "namespace": policy.namespace,
        "labels": dict(MANAGED_BY),
        "selector": dict(policy.selector),
        "policies": policies,
        "peer_authentication": {
            "name": f"{policy.name}-mtls",
            "mode": mode_of.get(policy.mtls_mode, policy.mtls_mode),
            "port_level_mtls": {
                str(item.port): {"mode": mode_of.get(item.mode, item.mode)} for item in policy.port_mtls
            },
        },
    }


# --- ambient ------------------------------------------------------------------------------------------

# Waypoints read only targetRefs policies (policyattachment.go ShouldAttachPolicy); a Service in the
# policy's own namespace, core group written as "" (validation.go allowedTargetRefs canonicalises it).
SERVICE_GROUP = ""
# Ambient has no DISABLE: istiod treats it as not-STRICT (authorization.go convertedSelectorPeerAuthentications),
# and HBONE is mTLS whatever it says; PERMISSIVE is what it does.
AMBIENT_MTLS = {"DISABLE": "PERMISSIVE"}


def ambient_context(policy: Policy, mesh: AmbientMesh) -> dict[str, Any]:
    """Waypoint policies (targetRefs: the Service) with every rule, and a ztunnel policy (selector, L4
    only) that admits the waypoint alone, on the ports something is granted on."""
    if mesh.waypoint is None and policy.rules:
        raise TargetError(
            "istio: mesh.waypoint is none, but every rule names HTTP methods and paths (or gRPC methods), which "
            "ztunnel cannot enforce: it drops ALLOW rules with HTTP fields (deny-all) and strips them from DENY "
            "rules; name the waypoint Gateway in mesh.waypoint",
            mesh.location,
        )
    service = {"targetRefs": [{"group": SERVICE_GROUP, "kind": "Service", "name": mesh.service}]}
    policies = []
    if mesh.waypoint is not None:
        deny_rules = _deny_rules(policy)
        if deny_rules:
            policies.append(
                {
                    "name": f"{policy.name}-waypoint-deny",
                    "action": "DENY",
                    "rules": deny_rules,
                    "annotations": {},
                    "attachment": service,
                }
            )
        policies.append(
            {
                "name": f"{policy.name}-waypoint-allow",
                "action": "ALLOW",
                "rules": istio_rules(policy, policy.rules_for("allow")),
                "annotations": {},
                "attachment": service,
            }
        )
    policies.append(
        {
            "name": f"{policy.name}-ztunnel",
            "action": "ALLOW",
            "rules": _ztunnel_rules(policy, mesh),
            "annotations": {},
            "attachment": {"selector": {"matchLabels": dict(policy.selector)}},
        }
    )
    # The lowered policy has no per-model gRPC grant left (withheld): no guard, no EnvoyFilter.
    assert not inspected_methods(policy)
    return _context(policy, policies, _request_authentication(policy, service), [], AMBIENT_MTLS)


def _ztunnel_rules(policy: Policy, mesh: AmbientMesh) -> list[dict[str, Any]]:
    """Only the waypoint, only on the (container) ports an allow grant is on; nothing else is L4-exact."""
    granted: set[str] = {grant.endpoint.port for rule in policy.rules_for("allow") for grant in rule.http}
    granted |= {"grpc" for rule in policy.rules_for("allow") if rule.grpc}
    ports = [str(policy.port(name)) for name in PORT_NAMES if name in granted]
    if mesh.waypoint is None or not ports:
        return []
    source = {"principals": [mesh.waypoint_principal(policy.namespace)]}
    return [{"from": [{"source": source}], "to": [{"operation": {"ports": ports}}]}]


def documents(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The documents the template must lay out, as data (compared with the parsed output)."""

    def metadata(name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": context["namespace"], "labels": context["labels"]}
        if annotations:
            meta["annotations"] = dict(annotations)
        return meta

    selector = {"matchLabels": context["selector"]}
    result = []
    authentication = context["request_authentication"]
    if authentication:
        result.append(
            {
                "apiVersion": context["api_version"],
                "kind": "RequestAuthentication",
                "metadata": metadata(authentication["name"], {}),
                "spec": {**authentication["attachment"], "jwtRules": authentication["jwt_rules"]},
            }
        )
    for item in context["policies"]:
        spec: dict[str, Any] = {**item["attachment"], "action": item["action"]}
        if item["rules"]:
            spec["rules"] = item["rules"]
        result.append(
            {
                "apiVersion": context["api_version"],
                "kind": "AuthorizationPolicy",
                "metadata": metadata(item["name"], item["annotations"]),
                "spec": spec,
            }
        )
    peer = context["peer_authentication"]
    peer_spec: dict[str, Any] = {"selector": selector, "mtls": {"mode": peer["mode"]}}
    if peer["port_level_mtls"]:
        peer_spec["portLevelMtls"] = peer["port_level_mtls"]
    result.append(
        {
            "apiVersion": context["api_version"],
            "kind": "PeerAuthentication",
            "metadata": metadata(peer["name"], {}),
            "spec": peer_spec,
        }
    )
    for envoy_filter in context["envoy_filters"]:
        result.append(
            {
                "apiVersion": context["networking_api_version"],
                "kind": "EnvoyFilter",
                "metadata": metadata(envoy_filter["name"], {}),
                "spec": {
                    "workloadSelector": {"labels": context["selector"]},
                    "configPatches": [guard_patch(envoy_filter["port"], envoy_filter["filter"])],
                },
            }
        )
    return result


def guard_patch(port: int, guard: dict[str, Any]) -> dict[str, Any]:
    """Insert a body reader before the sidecar's first RBAC filter, in the inbound chain of ``port``."""
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": "SIDECAR_INBOUND",
            "listener": {
                "portNumber": port,
                "filterChain": {
                    "filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.rbac"},
                    }
                },
            },
        },
        "patch": {"operation": "INSERT_BEFORE", "value": guard},
    }


def istio_rules(policy: Policy, rules: Iterable[PolicyRule]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for rule in rules:
        operations = _operations(policy, rule)
        model_operations = _model_operations(policy, rule)
        json_operations = _json_model_operations(policy, rule)
        if not operations and not model_operations and not json_operations:
            continue
        for sources, conditions in _identity_groups(rule):
            if operations:
                result.append(_istio_rule(sources, operations, conditions))
            for operation, models in model_operations:
                # The model comes from the guard's metadata (EnvoyFilter below): a rule of its own, since
                # `when` applies to the whole rule. A deny also applies when the guard cannot prove the
                # model, and when it did not run (fail closed).
                result.append(_istio_rule(sources, [operation], [*conditions, _model_in(models)]))
                if rule.action == "deny":
                    result.append(_istio_rule(sources, [operation], [*conditions, _guard_says(UNPROVEN_KEY)]))
                    result.append(_istio_rule(sources, [operation], [*conditions, *_guard_silent()]))
            for operation, models in json_operations:
                # The model comes from the JSON body reader's metadata; only a string value matches, so a
                # deny also applies when there is no string (not JSON, no model, another type): fail closed.
                result.append(_istio_rule(sources, [operation], [*conditions, _json_model_in(models)]))
                if rule.action == "deny":
                    result.append(_istio_rule(sources, [operation], [*conditions, _json_model_unproven()]))
    _check_rule_count(len(result))
    return result


def _check_rule_count(count: int) -> None:
    if count > MAX_RULES:
        raise TargetError(
            f"istio: the spec needs {count} AuthorizationPolicy rules, more than Istio's limit of "
            f"{MAX_RULES}; merge clients that share rules or use fewer header-identified clients"
        )


def _istio_rule(
    sources: list[dict[str, Any]], operations: list[dict[str, Any]], conditions: list[dict[str, Any]]
) -> dict[str, Any]:
    istio_rule: dict[str, Any] = {}
    if sources:
        istio_rule["from"] = [{"source": source} for source in sources]
    istio_rule["to"] = operations
    if conditions:
        istio_rule["when"] = conditions
    return istio_rule


def _guard_key(key: str) -> str:
    """istiod reads experimental.envoy.filters.<a.b>[<key>] as metadata <key> of filter envoy.filters.<a.b>."""
    return f"experimental.{NAMESPACE}[{key}]"


def _model_in(models: tuple[str, ...]) -> dict[str, Any]:
    # Model names hold no '*' (Istio's wildcard) and no '[' (its list syntax): each value is exact.
    return {"key": _guard_key(MODEL_KEY), "values": list(models)}


def _guard_says(key: str) -> dict[str, Any]:
    return {"key": _guard_key(key), "values": ["*"]}


def _guard_silent() -> list[dict[str, Any]]:
    return [{"key": _guard_key(INSPECTED_KEY), "notValues": ["*"]}]


def _json_key() -> str:
    return f"experimental.{JSON_NAMESPACE}[{JSON_MODEL_KEY}]"


def _json_model_in(models: tuple[str, ...]) -> dict[str, Any]:
    return {"key": _json_key(), "values": list(models)}


def _json_model_unproven() -> dict[str, Any]:
    return {"key": _json_key(), "notValues": ["*"]}


def _json_model_operations(policy: Policy, rule: PolicyRule) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """OpenAI body routes limited to models, one operation per model list, in first-seen order."""
    grouped: dict[tuple[str, ...], dict[str, None]] = {}
    for grant in rule.http:
        if grant.endpoint.body_model and grant.models is not None:
            grouped.setdefault(grant.models, {})[grant.endpoint.template] = None
    if not grouped:
        return []
    port = str(policy.port("openai"))
    return [
        ({"operation": {"ports": [port], "methods": ["POST"], "paths": list(paths)}}, models)
        for models, paths in grouped.items()
    ]


def _model_operations(policy: Policy, rule: PolicyRule) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """gRPC operations limited to models, one per model list, in first-seen order."""
    grouped: dict[tuple[str, ...], dict[str, None]] = {}
    for grant in rule.grpc:
        if grant.models is not None:
            grouped.setdefault(grant.models, {})[grant.method.path] = None
    port = str(policy.port("grpc"))
    return [
        ({"operation": {"ports": [port], "methods": [GRPC_METHOD], "paths": list(paths)}}, models)
        for models, paths in grouped.items()
    ]


def _operations(policy: Policy, rule: PolicyRule) -> list[dict[str, Any]]:
    # Paths per (port, methods, excluded paths), deduplicated in first-seen order (dict keys).
    grouped: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, None]] = {}
    for grant in rule.http:
        if grant.endpoint.body_model and grant.models is not None:
            continue  # _json_model_operations
        key = (str(policy.port(grant.endpoint.port)), grant.endpoint.methods, grant.excluded_paths)
        paths = grouped.setdefault(key, {})
        for pattern in grant.patterns:
            paths[_istio_path(pattern)] = None
    unlimited = [g.method.path for g in rule.grpc if g.models is None]
    if unlimited:
        grouped[(str(policy.port("grpc")), (GRPC_METHOD,), ())] = dict.fromkeys(unlimited)
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
    encoded = [(client, _encode(client)) for client in rule.clients]
    groups: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    shared = [source for _, (source, when) in encoded if not when]
    if shared:
        groups.append((shared, []))
    for _, (source, when) in encoded:
        if when:
            groups.append(([source] if source else [], when))
    return groups


def _encode(client: ClientIdentity) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The client's ``from.source`` (its kinds AND within one source) and its ``when`` conditions."""
    source: dict[str, Any] = {}
    when: list[dict[str, Any]] = []
    for match in encode_identity("istio", client, ENCODERS):
        source.update((name, list(values)) for name, values in match.source)
        when += [{"key": key, "values": list(values)} for key, values in match.when]
    return source, when
