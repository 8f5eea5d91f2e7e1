"""The executable reference: what the spec allows, request by request.

Every target's output is tested against ``decide``. It reads the spec and the catalog directly,
not the compiled rules the targets consume, so a compilation mistake cannot hide in both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from meshgen.catalog import GrpcMethod, HttpMatch, load_catalog
from meshgen.features import Feature
from meshgen.spec.model import Client, Rule, Spec

Protocol = Literal["http", "grpc", "metrics"]
GRPC_METHOD = "POST"


@dataclass(frozen=True)
class Identity:
    """What a proxy can know about the caller."""

    principal: str | None = None  # mTLS peer identity, Istio form "<td>/ns/<ns>/sa/<sa>"
    source_ip: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass(frozen=True)
class Request:
    protocol: Protocol  # which Triton port the request arrives on
    method: str
    path: str  # HTTP path (query allowed) or gRPC "/package.Service/Method"
    identity: Identity = Identity()
    # gRPC: the model the request message names, as protobuf parses it ("" when it names none);
    # None when a proxy reading the body cannot prove it (not one canonical, uncompressed message).
    body_model: str | None = ""


EVERY_FEATURE: frozenset[Feature] = frozenset(Feature)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule_index: int | None
    reason: str


def decide(spec: Spec, request: Request, enforced: Collection[Feature] = EVERY_FEATURE) -> Decision:
    """``enforced``: what the deciding target can enforce (its capability table); by default everything,
    i.e. what the spec means. Per-model gRPC needs ``Feature.PER_MODEL_GRPC`` and body inspection on."""
    target = _resolve(request)
    if isinstance(target, str):
        return Decision(False, None, target)
    reads_body = Feature.PER_MODEL_GRPC in enforced and spec.body_inspection.enabled
    for index, rule in enumerate(spec.rules):
        if rule.action == "deny" and _rule_matches(spec, rule, target, request, reads_body):
            return Decision(False, index, f"denied by rules[{index}]")
    for index, rule in enumerate(spec.rules):
        if rule.action == "allow" and _rule_matches(spec, rule, target, request, reads_body):
            return Decision(True, index, f"allowed by rules[{index}]")
    return Decision(False, None, "no rule allows it (default deny)")


def _resolve(request: Request) -> HttpMatch | GrpcMethod | str:
    """The catalog entry the request reaches, or why it reaches none."""
    catalog = load_catalog()
    if request.protocol == "grpc":
        method = catalog.match_grpc(request.path)
        if method is None:
            return f"unknown gRPC method {request.path}"
        if request.method != GRPC_METHOD:
            return "gRPC methods are only called with POST"
        return method
    path = request.path.split("?", 1)[0]
    match = catalog.match_http(request.protocol, path)
    if match is None:
        return f"{path} is not a Triton endpoint on the {request.protocol} port"
    if request.method not in match.endpoint.methods:
        return f"{request.method} is not a method of {match.endpoint.template}"
    return match


def _rule_matches(spec: Spec, rule: Rule, target: HttpMatch | GrpcMethod, request: Request, reads_body: bool) -> bool:
    return _rule_covers(rule, target, request, reads_body) and _from_matches(spec, rule, request.identity)


def _rule_covers(rule: Rule, target: HttpMatch | GrpcMethod, request: Request, reads_body: bool) -> bool:
    if isinstance(target, GrpcMethod):
        if target.category not in rule.categories:
            return False
        if rule.models is None:
            return True
        if not target.model_scoped:
            return False  # server-scoped: needs a rule without models
        if rule.grpc_all_models:
            return True  # the conscious widening (allow rules only)
        if target.streaming or not reads_body or request.body_model is None:
            # The name is out of sight (a stream's later messages, a target that reads no bodies) or cannot
            # be proven: an allow does not grant the method, a deny applies to every model (fail closed).
            return rule.action == "deny"
        # "" (no name: the server-wide form of ModelStatistics/TraceSetting) is never a listed model.
        return request.body_model in rule.models
    if target.endpoint.category not in rule.categories:
        return False
    if rule.models is None:
        return True
    return target.model is not None and target.model in rule.models


def _from_matches(spec: Spec, rule: Rule, identity: Identity) -> bool:
    if rule.from_ == "anyone":
        return True
    return any(client_matches(spec.clients[name], identity) for name in rule.from_)


def client_matches(client: Client, identity: Identity) -> bool:
    """All identity kinds the client lists must match; any value within one kind matches."""
    checks: list[bool] = []
    if client.principals is not None:
        checks.append(identity.principal in client.principals)
    if client.namespaces is not None:
        checks.append(_namespace(identity.principal) in client.namespaces)
    if client.ip_blocks is not None:
        checks.append(_in_blocks(identity.source_ip, client.ip_blocks))
    if client.headers is not None:
        checks.append(all(identity.header(name) == str(value) for name, value in client.headers.items()))
    return bool(checks) and all(checks)


def _namespace(principal: str | None) -> str | None:
    if principal is None:
        return None
    # SPIFFE identities issued by Istio are exactly <trust-domain>/ns/<ns>/sa/<sa>.
    parts = principal.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[2]


def _in_blocks(source_ip: str | None, blocks: list[str]) -> bool:
    if source_ip is None:
        return False
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(block, strict=False) for block in blocks)
