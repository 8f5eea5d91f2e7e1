"""Stage 3: resolve each spec rule into the endpoints and gRPC methods it grants or denies."""

from __future__ import annotations

from meshgen.catalog import GrpcMethod, HttpEndpoint, load_catalog
from meshgen.errors import CompileWarning
from meshgen.policy.model import ClientIdentity, HttpGrant, Policy, PolicyRule
from meshgen.spec import Client, LoadedSpec, Rule


def compile_policy(loaded: LoadedSpec) -> Policy:
    spec = loaded.spec
    clients = {name: client_identity(name, client) for name, client in spec.clients.items()}
    rules: list[PolicyRule] = []
    warnings: list[CompileWarning] = []
    for index, rule in enumerate(spec.rules):
        location = loaded.location("rules", index)
        http, grpc, withheld = rule_grants(rule)
        who = None if rule.from_ == "anyone" else tuple(clients[name] for name in rule.from_)
        rules.append(PolicyRule(index, rule.action, who, http, grpc, location))
        if withheld:
            names = ", ".join(method.name for method in withheld)
            warnings.append(
                CompileWarning(
                    f"rules[{index}]: gRPC carries the model name in the request body, which no proxy can see, "
                    f"so the model-scoped gRPC methods of this rule are NOT granted ({names}); "
                    "set grpcAllModels: true to grant them for every model",
                    location,
                )
            )
        if rule.grpc_all_models:
            names = ", ".join(method.name for method in grpc if method.model_scoped)
            warnings.append(
                CompileWarning(
                    f"rules[{index}]: grpcAllModels widens this rule on gRPC to EVERY model, not only "
                    f"{', '.join(rule.models or ())} ({names})",
                    loaded.location("rules", index, "grpcAllModels"),
                )
            )
    ports = spec.workload.ports
    port_mtls = sorted(
        (ports.by_name(key) if isinstance(key, str) else key, mode) for key, mode in spec.mtls.port_overrides.items()
    )
    return Policy(
        name=spec.metadata.name,
        namespace=spec.metadata.namespace,
        selector=tuple(spec.workload.selector.items()),
        ports=(("http", ports.http), ("grpc", ports.grpc), ("metrics", ports.metrics)),
        mtls_mode=spec.mtls.mode,
        port_mtls=tuple(port_mtls),
        clients=tuple(clients.values()),
        rules=tuple(rules),
        warnings=tuple(warnings),
        standalone=spec.standalone,
    )


def client_identity(name: str, client: Client) -> ClientIdentity:
    return ClientIdentity(
        name=name,
        principals=tuple(client.principals or ()),
        namespaces=tuple(client.namespaces or ()),
        ip_blocks=tuple(client.ip_blocks or ()),
        headers=tuple((header.lower(), str(value)) for header, value in (client.headers or {}).items()),
    )


def rule_grants(rule: Rule) -> tuple[tuple[HttpGrant, ...], tuple[GrpcMethod, ...], tuple[GrpcMethod, ...]]:
    """(HTTP grants, gRPC methods, gRPC methods withheld) of one rule, in catalog order."""
    catalog = load_catalog()
    models = tuple(rule.models) if rule.models is not None else None
    http: list[HttpGrant] = []
    grpc: list[GrpcMethod] = []
    withheld: list[GrpcMethod] = []
    for category in rule.categories:
        for endpoint in catalog.http_endpoints(category):
            if _covers(endpoint, models):
                http.append(HttpGrant(endpoint, models if endpoint.model_scoped else None))
        for method in catalog.grpc_methods(category):
            if models is None:
                grpc.append(method)
            elif not method.model_scoped:
                continue  # server-scoped: needs a rule without models
            elif rule.action == "deny" or rule.grpc_all_models:
                # A deny cannot see the model either, so it fails closed: denied for every model.
                grpc.append(method)
            else:
                withheld.append(method)
    return tuple(http), tuple(grpc), tuple(withheld)


def _covers(endpoint: HttpEndpoint, models: tuple[str, ...] | None) -> bool:
    return models is None or endpoint.model_scoped
