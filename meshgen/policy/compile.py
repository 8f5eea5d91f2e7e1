"""Stage 3: resolve the spec once into the typed, target-neutral policy every target reads.

Each rule becomes the catalog endpoints and gRPC methods it grants or denies, each grant carrying the
models it is limited to. Whether a target can enforce a per-model limit (and what it does when it
cannot) is not decided here but by the target's capability table (meshgen/targets/contract.py).
"""

from __future__ import annotations

from collections.abc import Collection

from meshgen.address import PORT_NAMES, PortAddresses, PortName, parse_address
from meshgen.catalog import GrpcMethod, HttpEndpoint, load_catalog
from meshgen.errors import CompileWarning
from meshgen.jwks import KeySet, parse_jwks
from meshgen.policy.identity import (
    Claim,
    ClientIdentity,
    Header,
    Headers,
    HeaderValue,
    IdentityKind,
    IpBlocks,
    Jwt,
    Namespaces,
    Principals,
)
from meshgen.policy.model import (
    AmbientMesh,
    BodyInspection,
    GrpcGrant,
    HttpGrant,
    JwtProvider,
    Policy,
    PolicyRule,
    PortMtls,
    StandaloneSettings,
    TlsFiles,
    WorkloadPorts,
)
from meshgen.spec import Client, LoadedSpec, Rule
from meshgen.spec.model import (
    DEFAULT_TRUST_DOMAIN,
    DEFAULT_WAYPOINT,
    NO_WAYPOINT,
    Addresses,
    Spec,
    Standalone,
)


def compile_policy(loaded: LoadedSpec) -> Policy:
    spec = loaded.spec
    clients = {name: client_identity(loaded, name, client) for name, client in spec.clients.items()}
    rules: list[PolicyRule] = []
    warnings: list[CompileWarning] = []
    served = frozenset(spec.workload.ports.served())
    for index, rule in enumerate(spec.rules):
        http, grpc = rule_grants(rule, served)
        who = None if rule.from_ == "anyone" else tuple(clients[name] for name in rule.from_)
        rules.append(PolicyRule(index, rule.action, who, http, grpc, loaded.location("rules", index)))
        streams = withheld_streams(rule)
        if streams:
            warnings.append(
                CompileWarning(
                    f"rules[{index}]: {', '.join(m.name for m in streams)} cannot be granted per model: a proxy "
                    "sees only a stream's first message, and later ones can name another model; set "
                    "grpcAllModels: true to grant it for every model",
                    loaded.location("rules", index),
                )
            )
        if rule.grpc_all_models:
            names = ", ".join(grant.method.name for grant in grpc if grant.method.model_scoped)
            warnings.append(
                CompileWarning(
                    f"rules[{index}]: grpcAllModels widens this rule on gRPC to EVERY model, not only "
                    f"{', '.join(rule.models or ())} ({names})",
                    loaded.location("rules", index, "grpcAllModels"),
                )
            )
    ports = spec.workload.ports
    port_mtls = sorted(
        (
            PortMtls(ports.served()[key] if isinstance(key, str) else key, mode)
            for key, mode in spec.mtls.port_overrides.items()
        ),
        key=lambda item: item.port,
    )
    return Policy(
        name=spec.metadata.name,
        namespace=spec.metadata.namespace,
        selector=tuple(spec.workload.selector.items()),
        ports=WorkloadPorts(ports.http, ports.grpc, ports.metrics, ports.openai),
        mtls_mode=spec.mtls.mode,
        port_mtls=tuple(port_mtls),
        clients=tuple(clients.values()),
        rules=tuple(rules),
        warnings=tuple(warnings),
        body_inspection=BodyInspection(spec.body_inspection.enabled, spec.body_inspection.max_bytes),
        standalone=standalone_settings(spec.standalone),
        jwt_providers=jwt_providers(loaded, [client for rule in rules for client in rule.clients or ()]),
        ambient=ambient_mesh(loaded),
    )


def ambient_mesh(loaded: LoadedSpec) -> AmbientMesh | None:
    spec = loaded.spec
    if spec.mesh.mode != "ambient":
        return None
    assert spec.workload.service is not None  # meshgen.spec.checks
    waypoint = spec.mesh.waypoint or DEFAULT_WAYPOINT
    return AmbientMesh(
        service=spec.workload.service,
        waypoint=None if waypoint == NO_WAYPOINT else waypoint,
        trust_domain=spec.mesh.trust_domain or DEFAULT_TRUST_DOMAIN,
        location=loaded.location("mesh"),
    )


def jwt_providers(loaded: LoadedSpec, used: list[ClientIdentity]) -> tuple[JwtProvider, ...]:
    """One provider per issuer of the JWT clients rules use; unused clients change nothing."""
    by_issuer: dict[str, list[Jwt]] = {}
    for client in used:
        jwt = client.kind(Jwt)
        if jwt is not None and jwt not in by_issuer.setdefault(jwt.issuer, []):
            by_issuer[jwt.issuer].append(jwt)
    providers = []
    for issuer, jwts in sorted(by_issuer.items()):
        lists = [jwt.audiences for jwt in jwts]
        audiences = None if None in lists else tuple(sorted({a for wanted in lists for a in wanted or ()}))
        providers.append(JwtProvider(issuer, issuer_keys(loaded.spec, issuer).json(), audiences))
    return tuple(providers)


def issuer_keys(spec: Spec, issuer: str) -> KeySet:
    """The issuer's keys, from the JWKS the loader inlined (one per issuer: checked at load)."""
    jwks = next(c.jwt.jwks.inline for c in spec.clients.values() if c.jwt is not None and c.jwt.issuer == issuer)
    assert jwks is not None
    return parse_jwks(jwks)


def client_identity(loaded: LoadedSpec, name: str, client: Client) -> ClientIdentity:
    kinds: list[IdentityKind] = []
    if client.principals:
        kinds.append(Principals(tuple(client.principals)))
    if client.namespaces:
        kinds.append(Namespaces(tuple(client.namespaces)))
    if client.ip_blocks:
        kinds.append(IpBlocks(tuple(client.ip_blocks)))
    if client.headers:
        kinds.append(
            Headers(
                tuple(
                    Header(header.lower(), HeaderValue(str(value), loaded.header_env.get((name, header))))
                    for header, value in client.headers.items()
                )
            )
        )
    if client.jwt is not None:
        jwt = client.jwt
        kinds.append(
            Jwt(
                jwt.issuer,
                jwt.subject,
                tuple(jwt.audiences) if jwt.audiences is not None else None,
                tuple(Claim(claim, value) for claim, value in (jwt.claims or {}).items()),
            )
        )
    return ClientIdentity(name, tuple(kinds), loaded.location("clients", name))


def rule_grants(rule: Rule, served: Collection[PortName]) -> tuple[tuple[HttpGrant, ...], tuple[GrpcGrant, ...]]:
    """(HTTP grants, gRPC grants) of one rule, in catalog order, each limited to the rule's models.

    A rule with ``models`` covers only the model-scoped endpoints and methods of its categories;
    ``grpcAllModels`` grants its gRPC methods for every model (the conscious widening). A stream cannot
    be limited to models (its later messages are never seen): an allow does not grant it, a deny denies
    it for every model.
    """
    catalog = load_catalog()
    models = tuple(rule.models) if rule.models is not None else None
    http: list[HttpGrant] = []
    grpc: list[GrpcGrant] = []
    for category in rule.categories:
        for endpoint in catalog.http_endpoints(category):
            if endpoint.port in served and _covers(endpoint, models):
                http.append(HttpGrant(endpoint, models if endpoint.model_scoped else None))
        for method in catalog.grpc_methods(category):
            if models is None:
                grpc.append(GrpcGrant(method))
            elif not method.model_scoped:
                continue  # server-scoped: needs a rule without models
            elif rule.grpc_all_models:
                grpc.append(GrpcGrant(method))
            elif method.streaming:
                if rule.action == "deny":
                    grpc.append(GrpcGrant(method))
            else:
                grpc.append(GrpcGrant(method, models))
    return tuple(http), tuple(grpc)


def withheld_streams(rule: Rule) -> list[GrpcMethod]:
    """Stream methods an allow rule with models does not grant (none with grpcAllModels)."""
    if rule.action != "allow" or rule.models is None or rule.grpc_all_models:
        return []
    catalog = load_catalog()
    return [m for c in rule.categories for m in catalog.grpc_methods(c) if m.streaming]


def _covers(endpoint: HttpEndpoint, models: tuple[str, ...] | None) -> bool:
    return models is None or endpoint.model_scoped


def standalone_settings(standalone: Standalone | None) -> StandaloneSettings:
    if standalone is None:
        return StandaloneSettings()
    tls = standalone.tls
    return StandaloneSettings(
        listen=port_addresses(standalone.listen),
        upstream=port_addresses(standalone.upstream),
        tls=TlsFiles(tls.cert, tls.key, tls.client_ca) if tls is not None else None,
    )


def port_addresses(addresses: Addresses) -> PortAddresses:
    # The spec validated each address with the same parser: this cannot fail.
    values = {"http": addresses.http, "grpc": addresses.grpc, "metrics": addresses.metrics, "openai": addresses.openai}
    return PortAddresses(*(parse_address(v) if (v := values[port]) is not None else None for port in PORT_NAMES))
