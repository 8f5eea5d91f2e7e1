"""Target-neutral access rules: what each spec rule grants or denies, resolved against the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshgen.catalog import GrpcMethod, HttpEndpoint
from meshgen.errors import CompileWarning, SourceLocation
from meshgen.spec.model import MtlsMode, Standalone

Action = Literal["allow", "deny"]


@dataclass(frozen=True)
class ClientIdentity:
    """A named client; it matches a request only when every identity kind it lists matches."""

    name: str
    principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, exact value)

    @property
    def needs_mtls(self) -> bool:
        return bool(self.principals or self.namespaces)


@dataclass(frozen=True)
class HttpGrant:
    """One catalog endpoint, for every model (``models is None``) or only the listed ones."""

    endpoint: HttpEndpoint
    models: tuple[str, ...] | None

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
class PolicyRule:
    index: int
    action: Action
    clients: tuple[ClientIdentity, ...] | None  # None: anyone
    http: tuple[HttpGrant, ...]
    grpc: tuple[GrpcMethod, ...]
    location: SourceLocation

    @property
    def label(self) -> str:
        return f"rules[{self.index}]"


@dataclass(frozen=True)
class Policy:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, int], ...]  # (port name, container port) for http, grpc, metrics
    mtls_mode: MtlsMode
    port_mtls: tuple[tuple[int, MtlsMode], ...]
    clients: tuple[ClientIdentity, ...]
    rules: tuple[PolicyRule, ...]
    warnings: tuple[CompileWarning, ...]
    standalone: Standalone | None = None  # listen/upstream/TLS for the runnable proxy outputs

    def port(self, name: str) -> int:
        return dict(self.ports)[name]

    def rules_for(self, action: Action) -> tuple[PolicyRule, ...]:
        return tuple(rule for rule in self.rules if rule.action == action)
