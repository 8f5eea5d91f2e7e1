"""Network addresses (``host:port``), parsed once where they are written (spec, command line), then only read."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

# Triton's ports, by the name the spec gives them; "openai" is the OpenAI-compatible frontend, served
# only where the spec sets workload.ports.openai.
PortName = Literal["http", "grpc", "metrics", "openai"]
PORT_NAMES: tuple[PortName, ...] = ("http", "grpc", "metrics", "openai")

_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Address:
    host: str  # an IP address or a DNS name; IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_loopback(self) -> bool:
        return self.is_ip and ipaddress.ip_address(self.host).is_loopback


def parse_address(text: str) -> Address:
    """``host:port`` (IPv6 as ``[addr]:port``, port 1-65535); ValueError with a message otherwise."""
    match = _ADDRESS.match(text)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise ValueError(f"address {text!r} must be host:port (IPv6 as [addr]:port), port 1-65535")
    host = match.group("host")
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"address {text!r}: {host!r} is not an IPv6 address") from None
    return Address(host, int(match.group("port")))


@dataclass(frozen=True)
class PortAddresses:
    """An address per Triton port, each possibly unset."""

    http: Address | None = None
    grpc: Address | None = None
    metrics: Address | None = None
    openai: Address | None = None

    def get(self, port: PortName) -> Address | None:
        match port:
            case "http":
                return self.http
            case "grpc":
                return self.grpc
            case "metrics":
                return self.metrics
            case "openai":
                return self.openai

    def overridden_by(self, overrides: PortAddresses) -> PortAddresses:
        return PortAddresses(*(overrides.get(port) or self.get(port) for port in PORT_NAMES))
