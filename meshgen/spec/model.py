"""The deployment spec, format ``meshgen/v1`` (documented in docs/spec.md).

Field-level rules live here as types; rules that relate fields (a rule naming an unknown client,
``models`` on a category without model-scoped endpoints) live in ``meshgen.spec.checks`` so their
errors can point at the exact spec line.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from meshgen.address import parse_address
from meshgen.catalog.model import Category

PortName = Literal["http", "grpc", "metrics", "openai"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]

# Suffixes such as "-allow" must still fit a 63-character DNS-1123 label.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MODEL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
CLIENT_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
HEADER_NAME = r"^[A-Za-z0-9-]+$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
PRINCIPAL = re.compile(
    r"^(?P<trust_domain>[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)"
    r"/ns/(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"/sa/(?P<service_account>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"
)
# Visible ASCII with single inner spaces: HTTP trims surrounding whitespace, so it could never match.
HEADER_VALUE = re.compile(r"^[\x21-\x7e]+( [\x21-\x7e]+)*$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
RESERVED_MODEL_NAMES = frozenset({"stats"})
# A token's own bookkeeping has fields of its own (issuer, subject, audiences) or is checked by the proxy.
RESERVED_CLAIMS = {
    "iss": "issuer",
    "sub": "subject",
    "aud": "audiences",
    "exp": None,
    "nbf": None,
    "iat": None,
}
CLAIM_NAME = r"^[A-Za-z0-9_.:/@+-]+$"
# Claims Istio (and meshgen's Envoy output, to match it) split on spaces into lists.
SPACE_DELIMITED_CLAIMS = ("scope", "permission")
# Printable, no surrounding whitespace; a token value can be any JSON string, a spec value stays readable.
TOKEN_VALUE = re.compile(r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_principal(value: str) -> str:
    if value.startswith("spiffe://"):
        raise ValueError(
            f"principal {value!r} must be in Istio form without the scheme: {value.removeprefix('spiffe://')!r}"
        )
    if not PRINCIPAL.match(value):
        raise ValueError(f"principal {value!r} must look like '<trust-domain>/ns/<namespace>/sa/<service-account>'")
    return value


def _check_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid IP block {value!r}: {exc}") from None
    return str(network) if "/" in value else value


def _check_header_value(value: str) -> str:
    if len(value) > 4096 or not HEADER_VALUE.match(value):
        raise ValueError(
            "header values must be 1-4096 visible ASCII characters (single inner spaces allowed), "
            "without control characters or surrounding whitespace"
        )
    return value


def _check_model(value: str) -> str:
    if value in RESERVED_MODEL_NAMES:
        raise ValueError(
            f"model name {value!r} collides with Triton's /v2/models/{value} route and cannot be granted per model"
        )
    return value


def _check_issuer(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(
            f"issuer {value!r} is not a URL: write the exact 'iss' of the provider's tokens, e.g. "
            "'https://login.example.com/'"
        )
    if "*" in value:
        raise ValueError(f"issuer {value!r} contains '*', which Istio reads as a wildcard")
    return value


def _check_token_value(value: str) -> str:
    if len(value) > 1024 or not TOKEN_VALUE.match(value):
        raise ValueError(
            f"{value!r} must be 1-1024 printable characters without control characters or surrounding whitespace"
        )
    return value


def _check_claim_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"claim values must be strings, not {type(value).__name__} {value!r}: the proxies compare claims as "
            "strings only, so a number or boolean claim would never match; quote it if the token carries a string"
        )
    return _check_token_value(value)


Name = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=57)]
Namespace = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=63)]
ClientName = Annotated[str, StringConstraints(pattern=CLIENT_NAME, max_length=63)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME, max_length=200), AfterValidator(_check_model)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME, max_length=256)]
Principal = Annotated[str, AfterValidator(_check_principal)]
IpBlock = Annotated[str, AfterValidator(_check_cidr)]
HeaderLiteral = Annotated[str, AfterValidator(_check_header_value)]
Port = Annotated[int, Field(ge=1, le=65535)]
Issuer = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_check_issuer)]
TokenValue = Annotated[str, AfterValidator(_check_token_value)]
ClaimName = Annotated[str, StringConstraints(pattern=CLAIM_NAME, max_length=256)]
ClaimValue = Annotated[Any, AfterValidator(_check_claim_value)]


class Metadata(Strict):
    name: Name
    namespace: Namespace


class Ports(Strict):
    http: Port = 8000
    grpc: Port = 8001
    metrics: Port = 8002
    # Triton's OpenAI-compatible frontend (python/openai, default 9000): no default, set only where it runs.
    openai: Port | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        numbers = [n for n in (self.http, self.grpc, self.metrics, self.openai) if n is not None]
        if len(set(numbers)) != len(numbers):
            raise ValueError("the http, grpc, metrics and openai ports must differ")
        return self

    def by_name(self, name: PortName) -> int | None:
        """The port's number; None for the openai port when the frontend does not run."""
        return {"http": self.http, "grpc": self.grpc, "metrics": self.metrics, "openai": self.openai}[name]

    def served(self) -> dict[PortName, int]:
        """The ports Triton serves, by name."""
        names: tuple[PortName, ...] = ("http", "grpc", "metrics", "openai")
        return {name: number for name in names if (number := self.by_name(name)) is not None}


class Workload(Strict):
    selector: dict[str, str]
    ports: Ports = Ports()
    # The Kubernetes Service in front of the pods (same namespace): what ambient waypoint policies target.
    service: Name | None = None

    @field_validator("selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        if not selector:
            raise ValueError("selector needs at least one label: an empty selector would select every workload")
        for key, value in selector.items():
            if not LABEL_KEY.match(key) or len(key) > 317:
                raise ValueError(f"invalid label key {key!r}")
            if not LABEL_VALUE.match(value):
                raise ValueError(f"invalid label value {value!r} for {key!r}")
        return selector


class Mtls(Strict):
    mode: MtlsMode = "STRICT"
    port_overrides: dict[PortName | Port, MtlsMode] = Field(default_factory=dict, alias="portOverrides")


class EnvRef(Strict):
    env: Annotated[str, StringConstraints(pattern=ENV_NAME)]


class Jwks(Strict):
    """The issuer's public keys: a JWKS file (relative to the spec) or the JWKS JSON itself.

    Read at generation time; after loading, ``inline`` always holds the text (``file`` remembers where it
    came from)."""

    file: str | None = Field(default=None, min_length=1)
    inline: str | None = Field(default=None, min_length=1)


class Jwt(Strict):
    """A caller holding a token from an identity provider, verified by the proxy."""

    issuer: Issuer
    audiences: list[TokenValue] | None = Field(default=None, min_length=1)
    jwks: Jwks
    subject: TokenValue | None = None
    claims: dict[ClaimName, ClaimValue] | None = Field(default=None, min_length=1)

    @field_validator("claims")
    @classmethod
    def _claims(cls, claims: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (claims or {}).items():
            if name in RESERVED_CLAIMS:
                field = RESERVED_CLAIMS[name]
                where = f"use jwt.{field}" if field else "the proxy checks it itself"
                raise ValueError(f"claim {name!r} cannot be listed under claims: {where}")
            if name in SPACE_DELIMITED_CLAIMS and " " in value:
                raise ValueError(f"claim {name!r} is a space-delimited list: name one {name} value, not {value!r}")
        return claims


class Client(Strict):
    principals: list[Principal] | None = Field(default=None, min_length=1)
    namespaces: list[Namespace] | None = Field(default=None, min_length=1)
    ip_blocks: list[IpBlock] | None = Field(default=None, min_length=1, alias="ipBlocks")
    headers: dict[HeaderName, HeaderLiteral | EnvRef] | None = Field(default=None, min_length=1)
    jwt: Jwt | None = None


class Rule(Strict):
    allow: list[Category] | None = Field(default=None, min_length=1)
    deny: list[Category] | None = Field(default=None, min_length=1)
    from_: Literal["anyone"] | list[ClientName] = Field(alias="from")
    models: list[ModelName] | None = Field(default=None, min_length=1)
    grpc_all_models: bool = Field(default=False, alias="grpcAllModels")

    @property
    def action(self) -> Literal["allow", "deny"]:
        return "allow" if self.allow is not None else "deny"

    @property
    def categories(self) -> tuple[Category, ...]:
        return tuple(self.allow if self.allow is not None else self.deny or ())


class Tls(Strict):
    cert: str
    key: str
    client_ca: str = Field(alias="clientCA")


def check_address(value: str) -> str:
    """``host:port`` (IPv6 in brackets); the only form the proxies' configs get."""
    parse_address(value)
    return value


Address = Annotated[str, AfterValidator(check_address)]


class Addresses(Strict):
    http: Address | None = None
    grpc: Address | None = None
    metrics: Address | None = None
    openai: Address | None = None


class Standalone(Strict):
    listen: Addresses = Addresses()
    upstream: Addresses = Addresses()
    tls: Tls | None = None


# gRPC's default maximum message size (grpc-go, grpcio receive limit): Triton's ModelInfer payloads of
# one image or a few small batches fit, and a proxy buffers one such message per inspected request
# (docs/spec.md, docs/performance.md for the measurements).
DEFAULT_INSPECTION_BYTES = 4 * 1024 * 1024
MAX_INSPECTION_BYTES = 256 * 1024 * 1024


class BodyInspection(Strict):
    """Reading the model name from request bodies (gRPC protobuf) where a rule grants per model."""

    enabled: bool = True
    max_bytes: int = Field(default=DEFAULT_INSPECTION_BYTES, ge=1024, le=MAX_INSPECTION_BYTES, alias="maxBytes")


MeshMode = Literal["sidecar", "ambient"]
NO_WAYPOINT = "none"  # Istio's reserved istio.io/use-waypoint value: no waypoint
DEFAULT_WAYPOINT = "waypoint"  # istioctl's default waypoint name (constants.DefaultNamespaceWaypoint)
DEFAULT_TRUST_DOMAIN = "cluster.local"  # Istio's default trust domain
TRUST_DOMAIN = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")


def _check_trust_domain(value: str) -> str:
    if not TRUST_DOMAIN.match(value) or len(value) > 253:
        raise ValueError(f"trust domain {value!r} must be a DNS name such as 'cluster.local'")
    return value


class Mesh(Strict):
    """The Istio data plane the workload runs in: sidecar proxies, or ambient (ztunnel plus a waypoint)."""

    mode: MeshMode = "sidecar"
    # Ambient only: the waypoint Gateway (class istio-waypoint) in the workload's namespace, or "none".
    waypoint: Name | None = None
    # Ambient only: the mesh's trust domain, for the waypoint's identity <td>/ns/<ns>/sa/<waypoint>.
    trust_domain: Annotated[str, AfterValidator(_check_trust_domain)] | None = Field(default=None, alias="trustDomain")


class Spec(Strict):
    api_version: Literal["meshgen/v1"] = Field(alias="apiVersion")
    kind: Literal["TritonAccessPolicy"]
    metadata: Metadata
    workload: Workload
    mtls: Mtls = Mtls()
    clients: dict[ClientName, Client] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    body_inspection: BodyInspection = Field(default_factory=BodyInspection, alias="bodyInspection")
    standalone: Standalone | None = None
    mesh: Mesh = Field(default_factory=Mesh)
