"""Envoy target: RBAC HTTP filters for an existing HCM, or a complete runnable bootstrap.

Filter-only output (for a mesh sidecar that terminates mTLS): the RBAC filter (deny entries first) over
every Triton port (the OpenAI frontend's too, where the spec serves it), each permission pinned to its
container port with ``destination_port``.

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

from typing import Any

from meshgen.address import Address
from meshgen.policy.model import Policy
from meshgen.render import load_yaml
from meshgen.render import render as render_template
from meshgen.targets.contract import Rendered
from meshgen.targets.envoy import EnvoyOptions
from meshgen.targets.envoy.guard import MODEL_HEADER, NAMESPACE, UNPROVEN_KEY, inspected_methods
from meshgen.targets.envoy.jwt import AUDIENCE_FAILURE, FAILURE_KEY, JWT_FILTER
from meshgen.targets.envoy.openai import body_limited
from meshgen.targets.envoy.rbac import ENCODERS, http_filters
from meshgen.targets.standalone import ProxyPort, proxy_ports

__all__ = ["ENCODERS", "parse_back", "render"]

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Inference over HTTP can run for minutes (large batches, generate_stream); gRPC streams
# (ModelStreamInfer) live as long as the client wants, so the gRPC route has no overall timeout.
# OpenAI completions stream tokens (server-sent events) for as long as generation runs: like gRPC
# streams, no overall timeout; the stream idle timeout still ends a stalled one.
ROUTE_TIMEOUT = {"http": "300s", "grpc": "0s", "metrics": "15s", "openai": "0s"}
STREAM_IDLE_TIMEOUT = "300s"
GRPC_PREFIX = 5  # flag byte and 4-byte length in front of every gRPC message
MIN_WINDOW = 65535  # HTTP/2's default window: never go below it


def render(policy: Policy, options: EnvoyOptions) -> Rendered:
    if not options.bootstrap:
        return render_filters(policy, options.dry_run)
    ports = proxy_ports(policy, "envoy", options.listen, options.upstream)
    return render_bootstrap(policy, ports, options.admin, options.dry_run)


def parse_back(text: str) -> object:
    return load_yaml(text)


def render_filters(policy: Policy, dry_run: bool) -> Rendered:
    filters = http_filters(policy, port=None, dry_run=dry_run)
    return Rendered(render_template("envoy", "filters.yaml.j2", filters=filters), filters)


def render_bootstrap(policy: Policy, ports: tuple[ProxyPort, ...], admin: Address | None, dry_run: bool) -> Rendered:
    context = build_bootstrap(policy, ports, admin, dry_run)
    document: dict[str, Any] = {}
    if context["admin"] is not None:
        document["admin"] = context["admin"]
    document["static_resources"] = {"listeners": context["listeners"], "clusters": context["clusters"]}
    return Rendered(render_template("envoy", "bootstrap.yaml.j2", **context), document)


def build_bootstrap(
    policy: Policy, ports: tuple[ProxyPort, ...], admin: Address | None, dry_run: bool
) -> dict[str, Any]:
    """One listener per Triton port with that port's RBAC filters; clusters to Triton's ports."""
    tls = policy.standalone.tls
    listeners = []
    clusters = []
    for proxy_port in ports:
        port = proxy_port.name
        cluster_name = f"triton_{port}"
        hcm: dict[str, Any] = {
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
                "virtual_hosts": [
                    {
                        "name": f"triton_{port}",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": cluster_name, "timeout": ROUTE_TIMEOUT[port]},
                            }
                        ],
                    }
                ],
            },
            "http_filters": [
                *http_filters(policy, port=port, dry_run=dry_run),
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
            ],
        }
        mappers = _token_mappers(policy)
        if port == "grpc" and inspected_methods(policy):
            inspection = _inspection_settings(policy)
            hcm["http2_protocol_options"] = inspection["http2_protocol_options"]
            mappers += inspection["local_reply_config"]["mappers"]
            route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
            route["request_headers_to_remove"] = [MODEL_HEADER]  # the guard's copy, for RBAC only
        if port == "openai" and body_limited(policy):
            body_limit = _json_body_limit(policy)
            hcm["http2_protocol_options"] = body_limit["http2_protocol_options"]
            mappers += body_limit["mappers"]
        if mappers:
            hcm["local_reply_config"] = {"mappers": mappers}
        chain: dict[str, Any] = {"filters": [{"name": HCM, "typed_config": hcm}]}
        if tls is not None:
            chain["transport_socket"] = {
                "name": TLS_SOCKET,
                "typed_config": {
                    "@type": DOWNSTREAM_TLS_TYPE,
                    "require_client_certificate": True,
                    "common_tls_context": {
                        "alpn_protocols": ["h2", "http/1.1"],
                        "tls_certificates": [
                            {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
                        ],
                        "validation_context": {"trusted_ca": {"filename": tls.client_ca}},
                    },
                },
            }
        listener: dict[str, Any] = {
            "name": f"triton_{port}",
            "address": _socket_address(proxy_port.listen),
            "filter_chains": [chain],
        }
        if port == "openai" and body_limited(policy):
            # The JSON body reader holds a whole body; Envoy's default buffer (1 MiB) would answer 413
            # below the spec's limit. Past the limit the reader gives up and the model is unproven.
            listener["per_connection_buffer_limit_bytes"] = policy.body_inspection.max_bytes
        listeners.append(listener)
        cluster: dict[str, Any] = {
            "name": cluster_name,
            "type": "STATIC" if proxy_port.upstream.is_ip else "STRICT_DNS",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": cluster_name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(proxy_port.upstream)}}]}],
            },
        }
        if port == "grpc":
            cluster["typed_extension_protocol_options"] = {
                HTTP_OPTIONS_KEY: {"@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}
            }
        clusters.append(cluster)
    admin_config = {"address": _socket_address(admin)} if admin is not None else None
    return {"admin": admin_config, "listeners": listeners, "clusters": clusters}


def _json_body_limit(policy: Policy) -> dict[str, Any]:
    """The OpenAI listener holds at most ``maxBytes`` of a body: over HTTP/1.1 the connection buffer
    (listener), over HTTP/2 the stream window, past which Envoy answers 413 — rewritten to the 403 every
    other refusal gets, saying why."""
    limit = policy.body_inspection.max_bytes
    window = max(limit, MIN_WINDOW)
    too_large = f"meshgen: the request body is larger than the inspection limit ({limit} bytes)"
    over = {"op": "EQ", "value": {"default_value": 413, "runtime_key": "meshgen.openai_inspection.status"}}
    return {
        "http2_protocol_options": {"initial_stream_window_size": window, "initial_connection_window_size": window},
        "mappers": [
            {
                "filter": {"status_code_filter": {"comparison": over}},
                "status_code": 403,
                "body": {"inline_string": too_large},
            }
        ],
    }


def _inspection_settings(policy: Policy) -> dict[str, Any]:
    """The gRPC listener's HTTP/2 windows, and refusals that say why for inspected calls.

    The guard reads a message buffered whole, and a buffered request may hold about one stream window:
    the window is the limit plus the 5-byte gRPC prefix. Past it Envoy answers 413, which gRPC has no
    status for (clients would see UNKNOWN): it is rewritten to a 403, sent to gRPC clients as
    PERMISSION_DENIED. A refusal because the guard could not prove the model names the reason. Requests
    the guard skips stream through the same window with HTTP/2 flow control and no limit.
    """
    limit = policy.body_inspection.max_bytes
    window = max(limit + GRPC_PREFIX, MIN_WINDOW)
    too_large = f"meshgen: the request message is larger than the inspection limit ({limit} bytes)"

    def unproven_is(value_match: dict[str, Any]) -> dict[str, Any]:
        # Envoy's default matches a missing key: every other local reply (RBAC, upstream failures)
        # would then carry the guard's message.
        return {
            "metadata_filter": {
                "matcher": {"filter": NAMESPACE, "path": [{"key": UNPROVEN_KEY}], "value": value_match},
                "match_if_key_not_found": False,
            }
        }

    return {
        "http2_protocol_options": {"initial_stream_window_size": window, "initial_connection_window_size": window},
        "local_reply_config": {
            "mappers": [
                {
                    "filter": {
                        "status_code_filter": {
                            "comparison": {
                                "op": "EQ",
                                "value": {"default_value": 413, "runtime_key": "meshgen.inspection.status"},
                            }
                        }
                    },
                    "status_code": 403,
                    "body": {"inline_string": too_large},
                },
                {"filter": unproven_is({"string_match": {"exact": "too-large"}}), "body": {"inline_string": too_large}},
                {
                    "filter": unproven_is({"present_match": True}),
                    "body_format_override": {
                        "text_format_source": {
                            "inline_string": (
                                "meshgen: the model named by the request message cannot be proven "
                                f"(%DYNAMIC_METADATA({NAMESPACE}:{UNPROVEN_KEY})%)"
                            )
                        }
                    },
                },
            ]
        },
    }


def _token_mappers(policy: Policy) -> list[dict[str, Any]]:
    """A token outside its issuer's audiences is a token that failed verification: 401, like the rest.

    Envoy's JWT filter answers it 403 (hard-coded); its failure status, in dynamic metadata, says why.
    """
    if not policy.jwt_providers:
        return []
    why = [{"key": FAILURE_KEY}, {"key": "message"}]
    return [
        {
            "filter": {
                "metadata_filter": {
                    "matcher": {
                        "filter": JWT_FILTER,
                        "path": why,
                        "value": {"string_match": {"exact": AUDIENCE_FAILURE}},
                    },
                    "match_if_key_not_found": False,
                }
            },
            "status_code": 401,
        }
    ]


def _socket_address(address: Address) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}
