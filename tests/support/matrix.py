"""The request matrix every target is checked on: catalog endpoints x model names x methods x identities.

Built from the spec alone (not from any generator), so each target's observed decision can be compared
with ``meshgen.policy.decide`` request by request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass

from meshgen.catalog import HttpEndpoint, load_catalog
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
# The OpenAI frontend's port: FastAPI's own routes, near misses of the catalog's, and KServe paths that
# exist only on the http port.
OPENAI_EXTRA_PATHS = (
    "/",
    "/v1",
    "/v1/",
    "/v1/models/",
    "/v1/modelsx",
    "/v1/chat",
    "/v1/chat/completions/",
    "/v1/completions/x",
    "/v1/models/x/unknown",
    "/health",
    "/health/ready/",
    "/metrics/",
    "/docs",
    "/openapi.json",
    "/v2/health/ready",
)
OUTSIDER_IP = "192.0.2.10"  # TEST-NET-1: inside no spec's ipBlocks unless a spec says so
JSON = "application/json"


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


def served_ports(spec: Spec) -> tuple[str, ...]:
    """The Triton ports the spec serves, in PORT_NAMES order (openai only with workload.ports.openai)."""
    return tuple(spec.workload.ports.served())


def http_ports(spec: Spec) -> tuple[str, ...]:
    """The served ports that speak plain HTTP (every one but grpc)."""
    return tuple(port for port in served_ports(spec) if port != "grpc")


def _path(endpoint: HttpEndpoint, model: str) -> str:
    path = endpoint.template.replace("{model}", model).replace("{version}", "1")
    return path.replace("{region}", "r0").replace("{repo}", "repo0")


def endpoint_paths(spec: Spec, port: str) -> list[tuple[HttpEndpoint, str]]:
    """(endpoint, path) for every catalog endpoint of ``port``: per model name where the path names one."""
    paths: dict[str, HttpEndpoint] = {}
    for endpoint in load_catalog().http:
        if endpoint.port != port:
            continue
        for model in model_names(spec) if "{model}" in endpoint.segments else [""]:
            paths.setdefault(_path(endpoint, model), endpoint)
    return [(endpoint, path) for path, endpoint in paths.items()]


def http_paths(spec: Spec, port: str) -> list[str]:
    return [path for _, path in endpoint_paths(spec, port)]


# --- request bodies: the OpenAI frontend's inference routes name the model in their JSON body ---------


@dataclass(frozen=True)
class BodyRequest(Request):
    """A request of the matrix sent with this body and Content-Type (None: no Content-Type header).

    ``body_model`` is what a reader of the body may rely on (decide()'s input): the JSON body's top-level
    ``"model"`` string as Python's json reads it, or None where a proxy cannot read it safely."""

    content_type: str | None = JSON
    body: bytes = b""


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _payload(path: str, model: object) -> dict[str, object]:
    """A request document for the route (the field next to ``model`` that route requires)."""
    if path.startswith("/v1/chat/"):
        return {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if path.startswith("/v1/embeddings"):
        return {"model": model, "input": "hi"}
    return {"model": model, "prompt": "hi"}


def json_models(spec: Spec) -> list[str]:
    """The model strings the JSON bodies of the matrix name: every listed model (denied ones included),
    then near misses: unlisted, a case variant and an extension of a listed name."""
    listed = sorted({model for rule in spec.rules for model in rule.models or ()})
    if not listed:
        return [UNLISTED_MODEL]
    return list(dict.fromkeys([*listed, UNLISTED_MODEL, listed[0].swapcase(), f"{listed[0]}x"]))


def granted_json_models(spec: Spec) -> list[str]:
    """Models an allow rule grants on a JSON body route: what an unreadable body pretends to name."""
    categories = {e.category for e in load_catalog().http if e.body_model}
    granted = [
        model
        for rule in spec.rules
        if rule.action == "allow" and rule.models and categories & set(rule.categories)
        for model in rule.models[:1]
    ]
    return list(dict.fromkeys(granted)) or json_models(spec)[:1]


def json_bodies(spec: Spec, path: str) -> list[tuple[str, str | None, str | None, bytes]]:
    """(label, Content-Type, body_model, body) for one JSON body route: a body naming each model of
    ``json_models``; then, per model an allow rule grants, bodies that seem to name it but that a proxy
    cannot read safely (body_model None or ""), and bodies whose model a JSON reader must read right."""
    bodies: list[tuple[str, str | None, str | None, bytes]] = [
        (f"model={model!r}", JSON, model, _json(_payload(path, model))) for model in json_models(spec)
    ]
    other = UNLISTED_MODEL
    for model in granted_json_models(spec):
        named = _json(_payload(path, model))
        without = {k: v for k, v in _payload(path, model).items() if k != "model"}
        bodies += [
            (f"model={model!r} charset=utf-8", "application/json; charset=utf-8", model, named),
            (f"model={model!r} escaped", JSON, model, named.replace(b"-", b"\\u002d").replace(b"_", b"\\u005f")),
            (
                f"model={model!r} after a duplicate",
                JSON,
                model,
                b'{"model": "' + other.encode() + b'", ' + named[1:],
            ),
            (f"model={other!r} after {model!r}", JSON, other, named[:-1] + b', "model": "' + other.encode() + b'"}'),
            (f"content-type text/plain, {model!r}", "text/plain", None, named),
            (f"content-type Application/JSON, {model!r}", "Application/JSON", None, named),
            (f"content-type application/json;charset=utf-8, {model!r}", "application/json;charset=utf-8", None, named),
            (f"no content-type, {model!r}", None, None, named),
            (f"not JSON, {model!r}", JSON, None, named[:-1]),
            (f"model {model!r} nested", JSON, None, _json({**without, "options": {"model": model}})),
            (f"model [{model!r}]", JSON, None, _json({**without, "model": [model]})),
        ]
    bodies += [
        ("model missing", JSON, None, _json({k: v for k, v in _payload(path, "").items() if k != "model"})),
        ("model a number", JSON, None, _json(_payload(path, 7))),
        ("model null", JSON, None, _json(_payload(path, None))),
        ("model empty", JSON, "", _json(_payload(path, ""))),
        ("empty body", JSON, None, b""),
    ]
    return bodies


def json_request(port: str, path: str, model: str, identity: Identity | None = None) -> BodyRequest:
    """A POST to a JSON body route whose body names ``model`` (readable: application/json)."""
    return BodyRequest(
        port,  # type: ignore[arg-type]
        "POST",
        path,
        identity or Identity(),
        body_model=model,
        body=_json(_payload(path, model)),
    )


def body_requests(spec: Spec, port: str, method: str, path: str) -> Iterator[tuple[str, Request]]:
    """The requests of the matrix for one (port, method, path): one per body for a JSON body route."""
    endpoint = load_catalog().match_http(port, path.split("?", 1)[0]) if port != "grpc" else None  # type: ignore[arg-type]
    if endpoint is None or not endpoint.endpoint.body_model or method != "POST":
        yield f"{port} {method} {path}", Request(port, method, path)  # type: ignore[arg-type]
        return
    for label, content_type, model, body in json_bodies(spec, path):
        request = BodyRequest(port, method, path, body_model=model, content_type=content_type, body=body)  # type: ignore[arg-type]
        yield f"{port} {method} {path} [{label}]", request


def sent_body(request: Request) -> tuple[dict[str, str], bytes | None]:
    """(headers, body) a real client sends for ``request`` besides its identity's headers (None: no body)."""
    if not isinstance(request, BodyRequest):
        return {}, None
    return ({"Content-Type": request.content_type} if request.content_type is not None else {}), request.body


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
    ports = http_ports(spec)
    for port in ports:
        for method in load_catalog().grpc:
            yield f"{port} POST {method.path}", Request(port, "POST", method.path)  # type: ignore[arg-type]
    for path in dict.fromkeys(path for port in ports for path in http_paths(spec, port)):
        yield f"grpc POST {path}", Request("grpc", "POST", path)
    if "openai" not in ports:
        return
    # The OpenAI frontend's routes on the KServe ports and theirs on its port ("/metrics" is on both).
    for home in ports:
        for endpoint, path in endpoint_paths(spec, home):
            for port in ports:
                if port != home and ("openai" in (port, home)):
                    for label, request in body_requests(spec, home, endpoint.methods[0], path):
                        if isinstance(request, BodyRequest) and request.body_model not in granted_json_models(spec):
                            continue  # on the wrong port, the bodies that could be granted
                        moved = dataclasses.replace(request, protocol=port)  # type: ignore[arg-type]
                        yield label.replace(home, port, 1), moved


def _method_variant_requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    """Every method set of the catalog, on one endpoint of each port, with near-miss method names."""
    models = model_names(spec)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    served = http_ports(spec)
    for endpoint in load_catalog().http:
        if endpoint.port not in served or (endpoint.port, endpoint.methods) in seen:
            continue
        seen.add((endpoint.port, endpoint.methods))
        path = _path(endpoint, models[0])
        for method in endpoint.methods:
            for variant in method_variants(method):
                yield f"{endpoint.port} {variant} {path}", Request(endpoint.port, variant, path)
    for path in GRPC_VARIANT_PATHS:
        for variant in [*method_variants("POST"), "GET", "PUT"]:
            yield f"grpc {variant} {path}", Request("grpc", variant, path)


def _catalog_requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    for port in http_ports(spec):
        paths = [*http_paths(spec, port), *(OPENAI_EXTRA_PATHS if port == "openai" else EXTRA_PATHS)]
        for path in dict.fromkeys(paths):
            for method in HTTP_METHODS:
                yield from body_requests(spec, port, method, path)
        for method in RARE_METHODS:
            yield f"{port} {method} {paths[0]}", Request(port, method, paths[0])  # type: ignore[arg-type]
        yield f"{port} GET {paths[0]}?q=1", Request(port, "GET", paths[0] + "?q=1")  # type: ignore[arg-type]
        for endpoint, path in endpoint_paths(spec, port):
            if endpoint.body_model:
                # The query is not part of the route: a granted body still decides.
                model = granted_json_models(spec)[0]
                yield f"{port} POST {path}?q=1 [model={model!r}]", json_request(port, f"{path}?q=1", model)
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
