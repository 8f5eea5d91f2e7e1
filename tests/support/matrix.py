"""The request matrix every target is checked on: catalog endpoints x model names x methods x identities.

Built from the spec alone (not from any generator), so each target's observed decision can be compared
with ``meshgen.policy.decide`` request by request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from meshgen.catalog import load_catalog
from meshgen.policy import Decision, Identity, Request, TokenRefusal
from meshgen.spec import Spec
from meshgen.spec.model import Client
from tests.support.grpc_messages import bypass_message, request_message
from tests.support.jwt_tokens import claims, mint, provider_key, signing_key_for

HTTP_METHODS = ("GET", "POST", "HEAD", "DELETE")
RARE_METHODS = ("PUT", "OPTIONS", "PATCH")
# Methods every HTTP/1.1 codec accepts; any other method name is sent over HTTP/2 (Envoy's HTTP/1 codec
# answers 400 to unknown methods before any filter runs, so only HTTP/2 reaches its RBAC with them).
STANDARD_METHODS = frozenset({*HTTP_METHODS, *RARE_METHODS})
# gRPC methods whose method-name variants are probed on the gRPC port: server-, model- and admin-scoped.
GRPC_VARIANT_PATHS = (
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/RepositoryIndex",
)
UNLISTED_MODEL = "unlisted_model"
EXTRA_PATHS = (
    "/",
    "/v2/",
    "/v2/unknown",
    "/v2/models",
    "/v2/models/x/unknown",
    "/metrics",
    "/v2/health/live/",
    "/v2/repository/models/x/versions/1/load",
)
EXTRA_GRPC = (
    "/inference.GRPCInferenceService/Unknown",
    "/grpc.health.v1.Health/Watch",
    "/inference.GRPCInferenceService/ModelInfer/",
    "/other.Service/ModelInfer",
)
OUTSIDER_IP = "192.0.2.10"  # TEST-NET-1: inside no spec's ipBlocks unless a spec says so


@dataclass(frozen=True)
class NamedIdentity:
    label: str  # e.g. "gateway", "gateway~principal" (a near miss), "nobody"
    identity: Identity


def model_names(spec: Spec) -> list[str]:
    """Listed models, then near misses: unlisted, the reserved ``stats``, a case variant, and a listed
    name extended by one character (a prefix match would take it for the listed one)."""
    listed = sorted({model for rule in spec.rules for model in rule.models or ()})
    extended = [f"{listed[0]}x"] if listed else []
    return [*listed[:3], UNLISTED_MODEL, "stats", "Resnet50", *extended]


def http_paths(spec: Spec, port: str) -> list[str]:
    paths: list[str] = []
    for endpoint in load_catalog().http:
        if endpoint.port != port:
            continue
        for model in model_names(spec) if endpoint.model_scoped else [""]:
            path = endpoint.template.replace("{model}", model).replace("{version}", "1")
            path = path.replace("{region}", "r0").replace("{repo}", "repo0")
            if path not in paths:
                paths.append(path)
    return paths


def identities(spec: Spec, outsider_ip: str = OUTSIDER_IP) -> list[NamedIdentity]:
    """One identity per client that satisfies it, one near miss per identity kind, and nobody."""
    result = [NamedIdentity("nobody", Identity(source_ip=outsider_ip))]
    for name, client in spec.clients.items():
        principal = None
        if client.principals:
            principal = client.principals[0]
        elif client.namespaces:
            principal = f"cluster.local/ns/{client.namespaces[0]}/sa/default"
        source_ip = _first_host(client.ip_blocks[0]) if client.ip_blocks else outsider_ip
        headers = {header: str(value) for header, value in (client.headers or {}).items()}
        good = Identity(principal, source_ip, headers)
        result.append(NamedIdentity(name, good))
        if client.principals:
            result.append(NamedIdentity(f"{name}~principal", Identity(principal + "x", source_ip, headers)))
            td, rest = client.principals[0].split("/", 1)
            result.append(NamedIdentity(f"{name}~trustdomain", Identity(f"other.{td}/{rest}", source_ip, headers)))
        if client.namespaces:
            near = f"cluster.local/ns/{client.namespaces[0]}x/sa/default"
            result.append(NamedIdentity(f"{name}~namespace", Identity(near, source_ip, headers)))
            other_td = f"example.org/ns/{client.namespaces[0]}/sa/other"
            result.append(NamedIdentity(f"{name}@othertd", Identity(other_td, source_ip, headers)))
        if client.principals or client.namespaces:
            result.append(NamedIdentity(f"{name}~plaintext", Identity(None, source_ip, headers)))
        if client.ip_blocks:
            result.append(NamedIdentity(f"{name}~ip", Identity(principal, _just_outside(client.ip_blocks[0]), headers)))
        for header, value in headers.items():
            flipped = value.swapcase() if value.swapcase() != value else value + "x"
            result.append(
                NamedIdentity(f"{name}~{header}-value", Identity(principal, source_ip, {**headers, header: flipped}))
            )
            result.append(
                NamedIdentity(
                    f"{name}~{header}-longer", Identity(principal, source_ip, {**headers, header: value + "x"})
                )
            )
            missing = {k: v for k, v in headers.items() if k != header}
            result.append(NamedIdentity(f"{name}~{header}-missing", Identity(principal, source_ip, missing)))
            result.append(
                NamedIdentity(
                    f"{name}~{header}-upper", Identity(principal, source_ip, {**missing, header.upper(): value})
                )
            )
        if client.jwt is not None:
            result += [
                NamedIdentity(label, Identity(principal, source_ip, {**headers, "authorization": authorization}))
                for label, authorization in token_variants(spec, name, client)
            ]
    return result


STRANGER = "stranger"  # the seed of a key no spec trusts


def token_variants(spec: Spec, name: str, client: Client) -> list[tuple[str, str]]:
    """(label, Authorization value): the client's own valid token, then one near miss per narrowing, a
    token of another issuer, and placements a proxy must not read as this client's token."""
    jwt = client.jwt
    assert jwt is not None and jwt.jwks.inline is not None
    key = signing_key_for(jwt.jwks.inline)
    if key is None:
        raise ValueError(f"client {name!r}: its JWKS holds no key of tests/support/jwt_tokens.provider_key")
    subject = jwt.subject or f"acct-{name}"
    audience = jwt.audiences[0] if jwt.audiences else None
    extra = dict(jwt.claims or {})
    own = claims(jwt.issuer, subject, audience, lifetime=3600, **extra)
    variants = [(name, own)]
    variants.append((f"{name}~subject", {**own, "sub": subject + "x"}))
    variants.append((f"{name}~no-subject", {k: v for k, v in own.items() if k != "sub"}))
    for claim, value in extra.items():
        variants.append((f"{name}~{claim}-missing", {k: v for k, v in own.items() if k != claim}))
        flipped = value.swapcase() if value.swapcase() != value else value + "x"
        variants.append((f"{name}~{claim}-case", {**own, claim: flipped}))
        variants.append((f"{name}~{claim}-in-list", {**own, claim: ["other", value]}))
    if jwt.audiences:
        variants.append((f"{name}~audience", {**own, "aud": "other-audience"}))
        variants.append((f"{name}~audience-in-list", {**own, "aud": ["other-audience", jwt.audiences[-1]]}))
    tokens = [(label, f"Bearer {mint(body, key)}") for label, body in variants]
    for other_name, other in spec.clients.items():
        if other.jwt is not None and other.jwt.issuer != jwt.issuer and other.jwt.jwks.inline is not None:
            other_key = signing_key_for(other.jwt.jwks.inline)
            if other_key is not None:
                body = {**own, "iss": other.jwt.issuer}
                tokens.append((f"{name}~issuer-of-{other_name}", f"Bearer {mint(body, other_key)}"))
                break
    tokens.append((f"{name}~stranger-key", f"Bearer {mint(own, provider_key(STRANGER), kid=key.kid)}"))
    valid = tokens[0][1].removeprefix("Bearer ")
    tokens.append((f"{name}~lower-case-bearer", f"bearer {valid}"))
    tokens.append((f"{name}~two-tokens", f"Bearer {valid},Bearer {valid}"))
    return tokens


def _first_host(block: str) -> str:
    network = ipaddress.ip_network(block, strict=False)
    return str(network.network_address + 1) if network.num_addresses > 1 else str(network.network_address)


def _just_outside(block: str) -> str:
    network = ipaddress.ip_network(block, strict=False)
    after = int(network.broadcast_address) + 1
    if after > (2**32 - 1 if network.version == 4 else 2**128 - 1):
        after = int(network.network_address) - 1
    return str(ipaddress.ip_address(after))


def method_variants(method: str) -> list[str]:
    """Names a loose method match would take for ``method``: a prefix, suffixes, other cases."""
    return [method[:-1], method + "X", method + method[-1], method.lower(), method.title()]


def requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    """(label, request) for every request shape, without identities."""
    yield from _catalog_requests(spec)
    yield from _cross_port_requests(spec)
    yield from _method_variant_requests(spec)


def _cross_port_requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    """A gRPC method is one only on the gRPC port, an HTTP endpoint only on its own port."""
    for port in ("http", "metrics"):
        for method in load_catalog().grpc:
            yield f"{port} POST {method.path}", Request(port, "POST", method.path)
    for path in dict.fromkeys([*http_paths(spec, "http"), *http_paths(spec, "metrics")]):
        yield f"grpc POST {path}", Request("grpc", "POST", path)


def _method_variant_requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    """Every method set of the catalog, on one endpoint of each port, with near-miss method names."""
    models = model_names(spec)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for endpoint in load_catalog().http:
        if (endpoint.port, endpoint.methods) in seen:
            continue
        seen.add((endpoint.port, endpoint.methods))
        path = endpoint.template.replace("{model}", models[0]).replace("{version}", "1")
        path = path.replace("{region}", "r0").replace("{repo}", "repo0")
        for method in endpoint.methods:
            for variant in method_variants(method):
                yield f"{endpoint.port} {variant} {path}", Request(endpoint.port, variant, path)
    for path in GRPC_VARIANT_PATHS:
        for variant in [*method_variants("POST"), "GET", "PUT"]:
            yield f"grpc {variant} {path}", Request("grpc", variant, path)


def _catalog_requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    for port in ("http", "metrics"):
        paths = [*http_paths(spec, port), *EXTRA_PATHS]
        for path in dict.fromkeys(paths):
            for method in HTTP_METHODS:
                yield f"{port} {method} {path}", Request(port, method, path)  # type: ignore[arg-type]
        for method in RARE_METHODS:
            yield f"{port} {method} {paths[0]}", Request(port, method, paths[0])  # type: ignore[arg-type]
        yield f"{port} GET {paths[0]}?q=1", Request(port, "GET", paths[0] + "?q=1")  # type: ignore[arg-type]
    bodies = body_models(spec)
    for method in load_catalog().grpc:
        if not method.model_scoped:
            yield f"grpc {method.path}", Request("grpc", "POST", method.path)
            continue
        for model in bodies:
            label = f"grpc {method.path} {'unproven' if model is None else f'model={model!r}'}"
            yield label, Request("grpc", "POST", method.path, body_model=model)
    for path in EXTRA_GRPC:
        yield f"grpc {path}", Request("grpc", "POST", path)


def body_models(spec: Spec) -> list[str | None]:
    """What the gRPC request messages of the matrix name: the listed models and their near misses, no name,
    and (None) a message whose model cannot be proven. Only one, no name, without any per-model rule."""
    if not any(rule.models for rule in spec.rules):
        return [""]
    return [*(m for m in model_names(spec) if m != "stats"), "", None]


def grpc_message(request: Request) -> bytes:
    """The request message a matrix gRPC request sends: naming ``body_model``; for None the bypass of
    grpc-body-authz-notes.md (an unlisted model hidden behind the name field's other wire type)."""
    if request.body_model is None:
        return bypass_message(request.path, "allowed_looking", UNLISTED_MODEL)
    return request_message(request.path, request.body_model)


def full_matrix(spec: Spec, outsider_ip: str = OUTSIDER_IP) -> Iterator[tuple[str, Request]]:
    people = identities(spec, outsider_ip)
    for label, request in requests(spec):
        for person in people:
            yield f"{label} as {person.label}", dataclasses.replace(request, identity=person.identity)


LOOPBACK_OUTSIDER_IP = "127.0.250.10"


def loopback_variant(spec: Spec) -> Spec:
    """The spec with every ipBlock moved onto 127.0.0.0/8, so a real proxy on this machine can be
    reached from each client's addresses (distinct 127.0.x.y sources) and from just outside them.

    Block i becomes 127.0.(2i+1).0/24 (a /32 stays a /32 at .5); the even third octets stay free, so
    "just outside" a block is never inside another one.
    """
    mapping: dict[str, str] = {}
    for client in spec.clients.values():
        for block in client.ip_blocks or ():
            if block not in mapping:
                octet = 2 * len(mapping) + 1
                if octet > 249:
                    raise ValueError("too many ipBlocks for the loopback variant")
                single = ipaddress.ip_network(block, strict=False).num_addresses == 1
                mapping[block] = f"127.0.{octet}.5/32" if single else f"127.0.{octet}.0/24"
    clients = {
        name: client.model_copy(update={"ip_blocks": [mapping[b] for b in client.ip_blocks]})
        if client.ip_blocks
        else client
        for name, client in spec.clients.items()
    }
    return spec.model_copy(update={"clients": clients})


@dataclass(frozen=True)
class Refusal:
    """How a proxy answers a request ``decide()`` refuses: the HTTP statuses and gRPC codes it may use."""

    http: frozenset[int]
    grpc: frozenset[int]  # grpc.StatusCode values: 7 PERMISSION_DENIED, 16 UNAUTHENTICATED


DENIED = Refusal(frozenset({403}), frozenset({7}))
UNAUTHENTICATED = Refusal(frozenset({401}), frozenset({16}))
# Envoy's JWT filter answers an audience it does not accept with 403; meshgen's bootstrap turns it into 401.
WRONG_AUDIENCE = Refusal(frozenset({401, 403}), frozenset({7, 16}))


def refusal(decision: Decision) -> Refusal:
    """The answers a refusal may take: 401 only for a token that fails verification."""
    if decision.token is TokenRefusal.INVALID:
        return UNAUTHENTICATED
    if decision.token is TokenRefusal.AUDIENCE:
        return WRONG_AUDIENCE
    return DENIED
