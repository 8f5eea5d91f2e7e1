"""Target-neutral access rules, resolved once by ``compile_policy``; targets only read them.

Everything a target needs is here as a typed value: endpoints and methods from the catalog, addresses
as (host, port), header values that remember whether they came from ``{env: ...}``, client identities
as one value per identity kind, and each grant with the feature a target needs to enforce it as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, TypeVar

from meshgen.address import PORT_NAMES, PortAddresses, PortName
from meshgen.catalog import GrpcMethod, HttpEndpoint
from meshgen.errors import CompileWarning, SourceLocation
from meshgen.features import Feature
from meshgen.policy.identity import ClientIdentity

Action = Literal["allow", "deny"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


# --- grants ---------------------------------------------------------------------------------------------


class _ModelLimited:
    """A grant for every model (``models is None``) or only the listed ones."""

    models: tuple[str, ...] | None
    narrowing: ClassVar[Feature]  # what a target must enforce to limit it to the listed models

    @property
    def feature(self) -> Feature | None:
        """What a target must enforce to grant exactly this (None: nothing beyond the request's route)."""
        return self.narrowing if self.models is not None else None

    def for_every_model(self: Grant_) -> Grant_:
        return replace(self, models=None)  # type: ignore[type-var]


Grant_ = TypeVar("Grant_", bound=_ModelLimited)


@dataclass(frozen=True)
class HttpGrant(_ModelLimited):
    """One catalog endpoint; the model is a path segment."""

    endpoint: HttpEndpoint
    models: tuple[str, ...] | None
    narrowing: ClassVar[Feature] = Feature.PER_MODEL_HTTP

    @property
    def feature(self) -> Feature | None:
        if self.models is None:
            return None
        return Feature.PER_MODEL_JSON if self.endpoint.body_model else Feature.PER_MODEL_HTTP

    @property
    def label(self) -> str:
        return f"{self.endpoint.methods[0]} {self.endpoint.template}"

    @property
    def patterns(self) -> tuple[tuple[str, ...], ...]:
        if self.models is None or not self.endpoint.model_scoped:
            return (self.endpoint.pattern(),)
        return tuple(self.endpoint.pattern(model) for model in self.models)

    @property
    def excluded_paths(self) -> tuple[str, ...]:
        """Paths the pattern also matches that Triton routes to another category."""
        return self.endpoint.shadowed if self.models is None else ()


@dataclass(frozen=True)
class GrpcGrant(_ModelLimited):
    """One unary gRPC method; the model is named in the protobuf request message."""

    method: GrpcMethod
    models: tuple[str, ...] | None = None
    narrowing: ClassVar[Feature] = Feature.PER_MODEL_GRPC

    @property
    def label(self) -> str:
        return self.method.name


Grant = HttpGrant | GrpcGrant


@dataclass(frozen=True)
class PolicyRule:
    index: int
    action: Action
    clients: tuple[ClientIdentity, ...] | None  # None: anyone
    http: tuple[HttpGrant, ...]
    grpc: tuple[GrpcGrant, ...]
    location: SourceLocation

    @property
    def label(self) -> str:
        return f"rules[{self.index}]"

    @property
    def grpc_methods(self) -> tuple[GrpcMethod, ...]:
        return tuple(grant.method for grant in self.grpc)


# --- the workload and the runnable-proxy settings --------------------------------------------------------


@dataclass(frozen=True)
class WorkloadPorts:
    """Triton's container ports; ``openai`` only where the OpenAI-compatible frontend runs."""

    http: int
    grpc: int
    metrics: int
    openai: int | None = None

    @property
    def served(self) -> tuple[PortName, ...]:
        """The ports Triton serves here, in PORT_NAMES order: every target loops over these."""
        return tuple(name for name in PORT_NAMES if name != "openai" or self.openai is not None)

    def get(self, port: PortName) -> int:
        match port:
            case "http":
                return self.http
            case "grpc":
                return self.grpc
            case "metrics":
                return self.metrics
            case "openai":
                if self.openai is None:
                    raise KeyError("the spec does not serve the openai port")
                return self.openai


@dataclass(frozen=True)
class PortMtls:
    port: int  # container port
    mode: MtlsMode


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    client_ca: str


@dataclass(frozen=True)
class StandaloneSettings:
    """Listen/upstream addresses and TLS of the runnable proxy outputs (Envoy bootstrap, full nginx.conf)."""

    listen: PortAddresses = field(default_factory=PortAddresses)
    upstream: PortAddresses = field(default_factory=PortAddresses)
    tls: TlsFiles | None = None


@dataclass(frozen=True)
class BodyInspection:
    """Whether request bodies may be read for the model name, and how much of one at most."""

    enabled: bool
    max_bytes: int  # of one gRPC message (its 5-byte length prefix not counted)


@dataclass(frozen=True)
class JwtProvider:
    """One token issuer the proxy verifies: its keys, and the audiences a token of it must name.

    ``audiences`` is the union of its clients' audiences, or None (any) when one of them names none: a
    token outside it is rejected outright, a token inside it still has to match each client's own list.
    """

    issuer: str
    jwks: str  # the issuer's public keys, canonical JWKS JSON (meshgen.jwks.KeySet.json)
    audiences: tuple[str, ...] | None


@dataclass(frozen=True)
class AmbientMesh:
    """Istio ambient: ztunnel on every node, L7 rules on the waypoint in front of the Service."""

    service: str  # the Triton Service (workload namespace): waypoint policies target it
    waypoint: str | None  # the waypoint Gateway's name (workload namespace); None: no waypoint
    trust_domain: str  # for the waypoint's identity
    location: SourceLocation  # of the spec's mesh section

    def waypoint_principal(self, namespace: str) -> str:
        """The waypoint's SPIFFE identity: its ServiceAccount is named after the Gateway."""
        assert self.waypoint is not None
        return f"{self.trust_domain}/ns/{namespace}/sa/{self.waypoint}"


@dataclass(frozen=True)
class Policy:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...]
    ports: WorkloadPorts
    mtls_mode: MtlsMode
    port_mtls: tuple[PortMtls, ...]  # sorted by port
    clients: tuple[ClientIdentity, ...]
    rules: tuple[PolicyRule, ...]
    warnings: tuple[CompileWarning, ...]
    body_inspection: BodyInspection
    standalone: StandaloneSettings = field(default_factory=StandaloneSettings)
    jwt_providers: tuple[JwtProvider, ...] = ()  # of the clients rules use, sorted by issuer
    ambient: AmbientMesh | None = None  # None: sidecar mode

    def port(self, name: PortName) -> int:
        return self.ports.get(name)

    def rules_for(self, action: Action) -> tuple[PolicyRule, ...]:
        return tuple(rule for rule in self.rules if rule.action == action)

    def used_clients(self) -> tuple[ClientIdentity, ...]:
        """Clients named by some rule, in spec order (unused clients need no target support)."""
        used = {client.name for rule in self.rules for client in rule.clients or ()}
        return tuple(client for client in self.clients if client.name in used)
