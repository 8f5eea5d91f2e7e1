"""Client identities: one value per identity kind a client lists; each target encodes each kind.

A client matches a request only when every kind it lists matches; within a kind, any listed value does
(every header, for ``Headers``). Adding a kind: a class here, a Feature, and one encoder row per target.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from meshgen.errors import SourceLocation
from meshgen.features import Feature


@dataclass(frozen=True)
class Principals:
    """mTLS peer identities, Istio form ``<trust-domain>/ns/<ns>/sa/<sa>``; any one matches."""

    values: tuple[str, ...]
    feature: ClassVar[Feature] = Feature.PRINCIPALS


@dataclass(frozen=True)
class Namespaces:
    """The mTLS peer's namespace, under any trust domain; any one matches."""

    values: tuple[str, ...]
    feature: ClassVar[Feature] = Feature.NAMESPACES


@dataclass(frozen=True)
class IpBlocks:
    """IPs or CIDRs of the direct peer address (never X-Forwarded-For); any one matches."""

    blocks: tuple[str, ...]
    feature: ClassVar[Feature] = Feature.IP_BLOCKS

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(block, strict=False) for block in self.blocks)


@dataclass(frozen=True)
class HeaderValue:
    value: str
    env: str | None = None  # the environment variable it was read from at generation time; None: a literal


@dataclass(frozen=True)
class Header:
    name: str  # lower case: header names are case-insensitive
    value: HeaderValue


@dataclass(frozen=True)
class Headers:
    """Request headers with exact, case-sensitive values; every one must match."""

    headers: tuple[Header, ...]
    feature: ClassVar[Feature] = Feature.HEADERS


@dataclass(frozen=True)
class Claim:
    name: str
    value: str  # the claim equals it, or (a list claim) contains it


@dataclass(frozen=True)
class Jwt:
    """A verified token from ``issuer`` (an account: ``iss`` and a non-empty ``sub``), narrowed by subject,
    audiences (``aud`` contains one) and claims (each equals its value or, as a list, contains it)."""

    issuer: str
    subject: str | None = None
    audiences: tuple[str, ...] | None = None
    claims: tuple[Claim, ...] = ()
    feature: ClassVar[Feature] = Feature.JWT


IdentityKind = Principals | Namespaces | IpBlocks | Headers | Jwt
Kind = TypeVar("Kind", Principals, Namespaces, IpBlocks, Headers, Jwt)


@dataclass(frozen=True)
class ClientIdentity:
    """A named client; it matches a request only when every identity kind it lists matches."""

    name: str
    kinds: tuple[IdentityKind, ...]  # in spec-format order: principals, namespaces, ipBlocks, headers, jwt
    location: SourceLocation | None = None

    def kind(self, kind: type[Kind]) -> Kind | None:
        return next((k for k in self.kinds if isinstance(k, kind)), None)

    @property
    def headers(self) -> tuple[Header, ...]:
        found = self.kind(Headers)
        return found.headers if found else ()

    @property
    def needs_mtls(self) -> bool:
        return self.kind(Principals) is not None or self.kind(Namespaces) is not None
