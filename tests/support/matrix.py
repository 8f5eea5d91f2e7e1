"""The request matrix every target is checked on: catalog endpoints x model names x methods x identities.

Built from the spec alone (not from any generator), so each target's observed decision can be compared
with ``meshgen.policy.decide`` request by request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from meshgen.catalog import load_catalog
from meshgen.policy import Identity, Request
from meshgen.spec import Spec

HTTP_METHODS = ("GET", "POST", "HEAD", "DELETE")
RARE_METHODS = ("PUT", "OPTIONS", "PATCH")
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
    listed = sorted({model for rule in spec.rules for model in rule.models or ()})
    return [*listed[:3], UNLISTED_MODEL, "stats", "Resnet50"]


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
            missing = {k: v for k, v in headers.items() if k != header}
            result.append(NamedIdentity(f"{name}~{header}-missing", Identity(principal, source_ip, missing)))
            result.append(
                NamedIdentity(
                    f"{name}~{header}-upper", Identity(principal, source_ip, {**missing, header.upper(): value})
                )
            )
    return result


def _first_host(block: str) -> str:
    network = ipaddress.ip_network(block, strict=False)
    return str(network.network_address + 1) if network.num_addresses > 1 else str(network.network_address)


def _just_outside(block: str) -> str:
    network = ipaddress.ip_network(block, strict=False)
    after = int(network.broadcast_address) + 1
    if after > (2**32 - 1 if network.version == 4 else 2**128 - 1):
        after = int(network.network_address) - 1
    return str(ipaddress.ip_address(after))


def requests(spec: Spec) -> Iterator[tuple[str, Request]]:
    """(label, request) for every request shape, without identities."""
    for port in ("http", "metrics"):
        paths = [*http_paths(spec, port), *EXTRA_PATHS]
        for path in dict.fromkeys(paths):
            for method in HTTP_METHODS:
                yield f"{port} {method} {path}", Request(port, method, path)  # type: ignore[arg-type]
        for method in RARE_METHODS:
            yield f"{port} {method} {paths[0]}", Request(port, method, paths[0])  # type: ignore[arg-type]
        yield f"{port} GET {paths[0]}?q=1", Request(port, "GET", paths[0] + "?q=1")  # type: ignore[arg-type]
    for method in [m.path for m in load_catalog().grpc] + list(EXTRA_GRPC):
        yield f"grpc {method}", Request("grpc", "POST", method)


def full_matrix(spec: Spec, outsider_ip: str = OUTSIDER_IP) -> Iterator[tuple[str, Request]]:
    people = identities(spec, outsider_ip)
    for label, request in requests(spec):
        for person in people:
            yield f"{label} as {person.label}", Request(request.protocol, request.method, request.path, person.identity)


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
