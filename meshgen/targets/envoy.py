"""Envoy target: RBAC HTTP filters for an existing HCM, or a complete runnable bootstrap.

Filter-only output (for a mesh sidecar that terminates mTLS): the DENY and ALLOW RBAC filters over
all three Triton ports, each permission pinned to its container port with ``destination_port``.

Bootstrap (``--bootstrap``): one listener per Triton port. Each listener's RBAC filters carry only that
port's permissions and NO ``destination_port``: the listener port is the proxy's own (e.g. 8080), not
Triton's container port (8000), and separate listeners already keep the ports apart, so pinning a port
would only add a way to get it wrong.

Path handling in every generated HCM: ``normalize_path`` (RFC 3986 dot-segments), ``merge_slashes``,
and ``path_with_escaped_slashes_action: REJECT_REQUEST``. No Triton path holds an encoded slash (model
names cannot contain '/'), so rejecting %2F/%5C with 400 is fail-closed and, unlike
UNESCAPE_AND_REDIRECT, never sends a client somewhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from meshgen.errors import TargetError
from meshgen.policy import Policy
from meshgen.render import load_yaml, render
from meshgen.spec.model import ADDRESS, check_address
from meshgen.targets.envoy_rbac import rbac_filters
from meshgen.targets.standalone import PORTS, Endpoint, PortAddresses, resolve_addresses

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Inference over HTTP can run for minutes (large batches, generate_stream); gRPC streams
# (ModelStreamInfer) live as long as the client wants, so the gRPC route has no overall timeout.
ROUTE_TIMEOUT = {"http": "300s", "grpc": "0s", "metrics": "15s"}
STREAM_IDLE_TIMEOUT = "300s"


def generate(
    policy: Policy,
    *,
    bootstrap: bool = False,
    listen_overrides: Mapping[str, str | None] | None = None,
    upstream_overrides: Mapping[str, str | None] | None = None,
    admin: str | None = None,
    dry_run: bool = False,
) -> str:
    if not bootstrap:
        filters = rbac_filters(policy, port=None, dry_run=dry_run)
        text = render("envoy", "filters.yaml.j2", filters=filters)
        _check_same(load_yaml(text), filters, "filters")
        return text
    context = build_bootstrap(policy, resolve_addresses(policy, "envoy", listen_overrides or {},
                                                        upstream_overrides or {}), admin, dry_run)
    text = render("envoy", "bootstrap.yaml.j2", **context)
    document = load_yaml(text)
    _check_same(document["static_resources"]["listeners"], context["listeners"], "listeners")
    _check_same(document["static_resources"]["clusters"], context["clusters"], "clusters")
    _check_same(document.get("admin"), context["admin"], "admin")
    return text


def build_bootstrap(policy: Policy, addresses: Mapping[str, PortAddresses], admin: str | None,
                    dry_run: bool) -> dict[str, Any]:
    tls = policy.standalone.tls if policy.standalone else None
    needs_mtls = sorted({client.name for rule in policy.rules for client in rule.clients or () if client.needs_mtls})
    if needs_mtls and tls is None:
        raise TargetError(
            f"envoy: clients {', '.join(needs_mtls)} are identified by principals/namespaces, which a standalone "
            "Envoy can only check on mutual TLS; set standalone.tls (cert, key, clientCA) in the spec, or use "
            "the filter-only output inside a mesh that does mTLS"
        )
    listeners = []
    clusters = []
    for port in PORTS:
        cluster_name = f"triton_{port}"
        hcm = {
            "@type": HCM_TYPE,
            "stat_prefix": f"{policy.name}_{port}",
            "codec_type": "AUTO",
            # The peer address is the TCP source; X-Forwarded-For from clients is never trusted.
            "use_remote_address": True,
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "stream_idle_timeout": STREAM_IDLE_TIMEOUT,
            "route_config": {
                "name": f"{port}_route",
                "virtual_hosts": [{
                    "name": f"triton_{port}",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"},
                                "route": {"cluster": cluster_name, "timeout": ROUTE_TIMEOUT[port]}}],
                }],
            },
            "http_filters": [
                *rbac_filters(policy, port=port, dry_run=dry_run),
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
            ],
        }
        chain: dict[str, Any] = {"filters": [{"name": HCM, "typed_config": hcm}]}
        if tls is not None:
            chain["transport_socket"] = {"name": TLS_SOCKET, "typed_config": {
                "@type": DOWNSTREAM_TLS_TYPE,
                "require_client_certificate": True,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                                          "private_key": {"filename": tls.key}}],
                    "validation_context": {"trusted_ca": {"filename": tls.client_ca}},
                },
            }}
        listeners.append({
            "name": f"triton_{port}",
            "address": _socket_address(addresses[port].listen),
            "filter_chains": [chain],
        })
        cluster: dict[str, Any] = {
            "name": cluster_name,
            "type": "STATIC" if _is_ip(addresses[port].upstream.host) else "STRICT_DNS",
            "connect_timeout": "5s",
            "load_assignment": {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket_address(addresses[port].upstream)}}]}]},
        }
        if port == "grpc":
            cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS_KEY: {
                "@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}}
        clusters.append(cluster)
    admin_config = None
    if admin is not None:
        admin_config = {"address": _socket_address(_parse_address(admin))}
    return {"admin": admin_config, "listeners": listeners, "clusters": clusters}


def _socket_address(endpoint: Endpoint) -> dict[str, Any]:
    return {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}


def _parse_address(value: str) -> Endpoint:
    try:
        check_address(value)
    except ValueError as error:
        raise TargetError(f"envoy: --admin: {error}") from None
    match = ADDRESS.match(value)
    assert match is not None  # check_address accepted it
    return Endpoint(match.group("host").strip("[]"), int(match.group("port")))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_same(rendered: Any, expected: Any, what: str) -> None:
    """The template lays out documents; confirm it carried every value through unchanged."""
    if rendered != expected:
        raise AssertionError(f"envoy template mangled the {what}")
