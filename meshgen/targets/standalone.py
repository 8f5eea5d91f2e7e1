"""Addresses for the runnable proxy outputs (Envoy bootstrap, full nginx.conf).

Command-line flags override ``standalone`` in the spec; every port must end up with both a listen
and an upstream address, or the proxy could not be started as generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshgen.errors import TargetError
from meshgen.policy import Policy
from meshgen.spec.model import ADDRESS, check_address

PORTS = ("http", "grpc", "metrics")


@dataclass(frozen=True)
class Endpoint:
    host: str  # without IPv6 brackets
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PortAddresses:
    listen: Endpoint
    upstream: Endpoint


def resolve_addresses(
    policy: Policy,
    target: str,
    listen_overrides: Mapping[str, str | None],
    upstream_overrides: Mapping[str, str | None],
) -> dict[str, PortAddresses]:
    standalone = policy.standalone
    result: dict[str, PortAddresses] = {}
    for port in PORTS:
        listen = listen_overrides.get(port) or (getattr(standalone.listen, port) if standalone else None)
        upstream = upstream_overrides.get(port) or (getattr(standalone.upstream, port) if standalone else None)
        if not listen or not upstream:
            missing = "listen" if not listen else "upstream"
            raise TargetError(
                f"{target}: no {missing} address for the {port} port; set standalone.{missing}.{port} "
                f"in the spec or pass --{missing}-{port}"
            )
        result[port] = PortAddresses(_endpoint(listen, target), _endpoint(upstream, target))
    return result


def _endpoint(value: str, target: str) -> Endpoint:
    try:
        check_address(value)
    except ValueError as error:
        raise TargetError(f"{target}: {error}") from None
    match = ADDRESS.match(value)
    assert match is not None
    return Endpoint(match.group("host").strip("[]"), int(match.group("port")))
