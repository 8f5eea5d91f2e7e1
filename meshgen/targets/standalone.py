"""Addresses of the runnable proxy outputs (Envoy bootstrap, full nginx.conf).

Command-line flags override ``standalone`` in the spec; every port must end up with both a listen
and an upstream address, or the proxy could not be started as generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgen.address import Address, PortAddresses, PortName
from meshgen.errors import TargetError
from meshgen.policy.model import Policy


@dataclass(frozen=True)
class ProxyPort:
    """One Triton port as a standalone proxy serves it."""

    name: PortName
    listen: Address
    upstream: Address


def proxy_ports(policy: Policy, target: str, listen: PortAddresses, upstream: PortAddresses) -> tuple[ProxyPort, ...]:
    listen = policy.standalone.listen.overridden_by(listen)
    upstream = policy.standalone.upstream.overridden_by(upstream)
    ports = []
    for port in policy.ports.served:
        listen_at, upstream_at = listen.get(port), upstream.get(port)
        if listen_at is None or upstream_at is None:
            missing = "listen" if listen_at is None else "upstream"
            raise TargetError(
                f"{target}: no {missing} address for the {port} port; set standalone.{missing}.{port} "
                f"in the spec or pass --{missing}-{port}"
            )
        ports.append(ProxyPort(port, listen_at, upstream_at))
    return tuple(ports)
