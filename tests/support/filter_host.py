"""A sidecar-like Envoy around meshgen's filter-only output (``meshgen envoy`` without --bootstrap).

In a mesh the filters run in the inbound HttpConnectionManager of the Triton pod, where the connection's
destination port is Triton's container port. This bootstrap is written by the tests, not by meshgen: one
listener per Triton port on 127.0.0.1:<container port>, each HCM normalizing paths the way a mesh does,
the generated filters, then the router to a backend. So the filters' ``destination_port`` predicates are
exercised for real: a grant pinned to the wrong port denies requests on its own port.
"""

from __future__ import annotations

import json
from typing import Any

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def filter_host_bootstrap(
    filters: list[dict[str, Any]],
    container_ports: dict[str, int],
    upstream_ports: dict[str, int],
    admin_port: int,
    tls: tuple[str, str, str] | None = None,  # (cert, key, client CA): require client certificates
) -> str:
    listeners = []
    clusters = []
    for name, port in container_ports.items():
        hcm = {
            "@type": HCM_TYPE,
            "stat_prefix": f"inbound_{name}",
            "codec_type": "AUTO",
            "use_remote_address": True,
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": name,
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name, "timeout": "0s"}}],
                    }
                ]
            },
            "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
        }
        chain: dict[str, Any] = {
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
        }
        if tls is not None:
            cert, key, ca = tls
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": TLS_TYPE,
                    "require_client_certificate": True,
                    "common_tls_context": {
                        "alpn_protocols": ["h2", "http/1.1"],
                        "tls_certificates": [
                            {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}
                        ],
                        "validation_context": {"trusted_ca": {"filename": ca}},
                    },
                },
            }
        listeners.append(
            {
                "name": name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [chain],
            }
        )
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": upstream_ports[name]}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        if name == "grpc":
            cluster["typed_extension_protocol_options"] = H2_OPTIONS
        clusters.append(cluster)
    document = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    # JSON, not YAML: a YAML 1.1 reader (Envoy's) would take a header value "n" for false.
    return json.dumps(document, indent=1)
