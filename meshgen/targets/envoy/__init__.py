"""Envoy target: RBAC HTTP filters for an existing HttpConnectionManager, or a complete runnable bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshgen.address import Address
from meshgen.features import Feature
from meshgen.targets.contract import (
    Capabilities,
    OutputFile,
    Refused,
    StandaloneOptions,
    Target,
    Variant,
    address,
    enforced_except,
    switch,
)

if TYPE_CHECKING:
    from meshgen.policy.model import Policy


@dataclass(frozen=True)
class EnvoyOptions(StandaloneOptions):
    """Dry run: shadow matchers only (counted and logged, never enforced)."""

    bootstrap: bool = switch("--bootstrap", "A complete, runnable Envoy bootstrap instead of the filters.")
    admin: Address | None = address("--admin", "Add an admin listener here (bootstrap only).")


FILTER_CAPABILITIES = enforced_except({})
NO_MTLS = Refused(
    "a standalone Envoy checks mesh identities only on mutual TLS, and the spec has no standalone.tls",
    "set standalone.tls (cert, key, clientCA) in the spec, or use the filter-only output inside a mesh that does mTLS",
)


class EnvoyTarget(Target[EnvoyOptions]):
    name = "envoy"
    summary = "Envoy RBAC HTTP filter (deny entries, then allow entries), or a runnable bootstrap with --bootstrap."
    options_type = EnvoyOptions
    outputs = (
        OutputFile("envoy-rbac.yaml", EnvoyOptions()),
        OutputFile("envoy-bootstrap.json", EnvoyOptions(bootstrap=True), optional=True),
    )
    variants = (Variant("envoy-rbac.yaml", "dry-run", EnvoyOptions(dry_run=True)),)
    implementation = "meshgen.targets.envoy.bootstrap"
    capability_table = FILTER_CAPABILITIES

    def capabilities(self, policy: Policy, options: EnvoyOptions) -> Capabilities:
        if options.bootstrap and policy.standalone.tls is None:
            return {**FILTER_CAPABILITIES, Feature.PRINCIPALS: NO_MTLS, Feature.NAMESPACES: NO_MTLS}
        return FILTER_CAPABILITIES


TARGET = EnvoyTarget()
