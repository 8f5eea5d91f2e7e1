"""``meshgen lint``: risky but legal specs. Each finding has a stable code documented in docs/lint.md."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from meshgen.catalog import load_catalog
from meshgen.errors import SourceLocation
from meshgen.policy.compile import client_identity, rule_grants
from meshgen.spec import Client, LoadedSpec, Rule
from meshgen.spec.model import PortName

ADMIN_CATEGORIES = ("model-repository", "shared-memory", "logging", "trace")


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    location: SourceLocation

    def __str__(self) -> str:
        return f"{self.location}: warning: {self.code} {self.message}"


def lint(loaded: LoadedSpec) -> list[Finding]:
    findings = [
        *_open_to_anyone(loaded),
        *_admin_to_address_only(loaded),
        *_literal_secrets(loaded),
        *_permissive_with_mtls_clients(loaded),
        *_rules_granting_nothing(loaded),
        *_grpc_all_models_where_per_model_works(loaded),
        *_admin_to_tokens_of_any_audience(loaded),
    ]
    return sorted(findings, key=lambda f: (f.location.line, f.location.column, f.code))


def _allow_rules(loaded: LoadedSpec) -> Iterator[tuple[int, Rule]]:
    return ((i, rule) for i, rule in enumerate(loaded.spec.rules) if rule.action == "allow")


# (code, categories, why) for categories that should never be open to anyone.
OPEN_TO_ANYONE = (
    ("MG101", ADMIN_CATEGORIES, "any caller could load models, register shared memory or change logging/tracing"),
    ("MG105", ("metrics",), "metrics reveal model names and load"),
)


def _open_to_anyone(loaded: LoadedSpec) -> Iterator[Finding]:
    for index, rule in _allow_rules(loaded):
        if rule.from_ != "anyone":
            continue
        for code, categories, why in OPEN_TO_ANYONE:
            risky = [c for c in rule.categories if c in categories]
            if risky:
                yield Finding(
                    code, f"rules[{index}] opens {', '.join(risky)} to anyone: {why}", loaded.location("rules", index)
                )


def _address_only(client: Client) -> bool:
    return bool(client.ip_blocks) and not (client.principals or client.namespaces or client.headers or client.jwt)


def _admin_to_address_only(loaded: LoadedSpec) -> Iterator[Finding]:
    for index, rule in _allow_rules(loaded):
        risky = [c for c in rule.categories if c in ADMIN_CATEGORIES]
        if not risky or rule.from_ == "anyone":
            continue
        for position, name in enumerate(rule.from_):
            if _address_only(loaded.spec.clients[name]):
                yield Finding(
                    "MG102",
                    f"rules[{index}] grants {', '.join(risky)} to {name!r}, identified only by its address; "
                    "anything on that network can use admin APIs — add principals or a header",
                    loaded.location("rules", index, "from", position),
                )


MG103 = (
    "client {client!r} header {header!r} is a literal secret in the spec; "
    "use {{env: VARIABLE}} and keep the value out of version control"
)


def _literal_secrets(loaded: LoadedSpec) -> Iterator[Finding]:
    for name, client in loaded.spec.clients.items():
        resolved = client_identity(loaded, name, client).headers
        literal = [
            written for written, header in zip(client.headers or {}, resolved, strict=True) if header.value.env is None
        ]
        yield from (
            Finding(
                "MG103", MG103.format(client=name, header=header), loaded.location("clients", name, "headers", header)
            )
            for header in literal
        )


def _permissive_with_mtls_clients(loaded: LoadedSpec) -> Iterator[Finding]:
    spec = loaded.spec
    mtls_clients = {name for name, client in spec.clients.items() if client.principals or client.namespaces}
    ports = spec.workload.ports
    permissive = {
        ports.served()[key] if isinstance(key, str) else key
        for key, mode in spec.mtls.port_overrides.items()
        if mode == "PERMISSIVE"
    }
    if spec.mtls.mode == "PERMISSIVE":
        permissive |= set(ports.served().values())
    exposed = sorted(
        {
            name
            for rule in spec.rules
            if rule.from_ != "anyone"
            for name in rule.from_
            if name in mtls_clients and permissive & _rule_ports(rule, ports.served())
        }
    )
    if exposed:
        yield Finding(
            "MG104",
            f"PERMISSIVE mTLS on ports used by clients identified by principals/namespaces ({', '.join(exposed)}): "
            "plaintext callers are accepted there; prefer STRICT",
            loaded.location("mtls"),
        )


def _rule_ports(rule: Rule, served: Mapping[PortName, int]) -> set[int]:
    """The container ports a rule's categories have endpoints on."""
    catalog = load_catalog()
    names: set[PortName] = {e.port for c in rule.categories for e in catalog.http_endpoints(c)}
    names |= {"grpc" for c in rule.categories if catalog.grpc_methods(c)}
    return {number for name, number in served.items() if name in names}


def _rules_granting_nothing(loaded: LoadedSpec) -> Iterator[Finding]:
    denied_for_all = {
        category
        for rule in loaded.spec.rules
        if rule.action == "deny" and rule.from_ == "anyone" and rule.models is None
        for category in rule.categories
    }
    for index, rule in _allow_rules(loaded):
        http, grpc = rule_grants(rule, loaded.spec.workload.ports.served())
        live = [c for c in rule.categories if c not in denied_for_all]
        if not (http or grpc) or not live:
            yield Finding(
                "MG106",
                f"rules[{index}] grants nothing: every category it allows is denied to anyone by a deny rule",
                loaded.location("rules", index),
            )


def _grpc_all_models_where_per_model_works(loaded: LoadedSpec) -> Iterator[Finding]:
    if not loaded.spec.body_inspection.enabled:
        return
    catalog = load_catalog()
    for index, rule in _allow_rules(loaded):
        if not rule.grpc_all_models:
            continue
        unary = [m.name for c in rule.categories for m in catalog.grpc_methods(c) if m.model_scoped and not m.streaming]
        if unary:
            yield Finding(
                "MG107",
                f"rules[{index}] sets grpcAllModels although the Envoy and Istio targets now grant "
                f"{', '.join(unary)} per model from the request message: drop it to grant gRPC only for "
                f"{', '.join(rule.models or ())} (ModelStreamInfer, never per model, would then be withheld)",
                loaded.location("rules", index, "grpcAllModels"),
            )


def _jwt_only(client: Client) -> bool:
    return client.jwt is not None and not (client.principals or client.namespaces or client.ip_blocks or client.headers)


def _admin_to_tokens_of_any_audience(loaded: LoadedSpec) -> Iterator[Finding]:
    for index, rule in _allow_rules(loaded):
        risky = [c for c in rule.categories if c in ADMIN_CATEGORIES]
        if not risky or rule.from_ == "anyone":
            continue
        for position, name in enumerate(rule.from_):
            client = loaded.spec.clients[name]
            if _jwt_only(client) and client.jwt is not None and client.jwt.audiences is None:
                yield Finding(
                    "MG108",
                    f"rules[{index}] grants {', '.join(risky)} to {name!r}, identified only by a token of "
                    f"{client.jwt.issuer} for any audience: a token the provider issued for another service "
                    "would do — set jwt.audiences",
                    loaded.location("rules", index, "from", position),
                )
