"""Istio target: AuthorizationPolicy (DENY, then ALLOW) and PeerAuthentication for the workload."""

from __future__ import annotations

from dataclasses import dataclass

from meshgen.targets.contract import (
    DryRunOption,
    OutputFile,
    Target,
    Variant,
    enforced_except,
)


@dataclass(frozen=True)
class IstioOptions(DryRunOption):
    """Dry run: every policy is annotated ``istio.io/dry-run`` (Istio logs its decisions, denies nothing)."""


class IstioTarget(Target[IstioOptions]):
    name = "istio"
    summary = "Istio AuthorizationPolicy (DENY + ALLOW) and PeerAuthentication."
    options_type = IstioOptions
    outputs = (OutputFile("istio.yaml", IstioOptions(), kubernetes=True),)
    variants = (Variant("istio.yaml", "dry-run", IstioOptions(dry_run=True)),)
    implementation = "meshgen.targets.istio.policies"
    capability_table = enforced_except({})


TARGET = IstioTarget()
