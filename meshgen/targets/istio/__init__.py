"""Istio target: AuthorizationPolicy (DENY, then ALLOW) and PeerAuthentication for the workload.

Sidecar mode: selector policies the sidecar enforces. Ambient mode (``mesh.mode: ambient``): the same
rules on the waypoint (``targetRefs`` to the Triton Service), and a ztunnel policy that admits only the
waypoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshgen.features import Feature
from meshgen.targets.contract import (
    Capabilities,
    DryRunOption,
    OutputFile,
    Refused,
    Target,
    Variant,
    Withheld,
    enforced_except,
)

if TYPE_CHECKING:
    from meshgen.policy.model import Policy


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
    # mesh.mode: ambient. ztunnel enforces L4 only; every rule of a spec names methods and paths, so it is
    # enforced on the waypoint (docs/targets.md "Istio ambient"); the rows below are what the waypoint lacks.
    ambient_table = enforced_except(
        {
            Feature.PER_MODEL_GRPC: Withheld(
                "in ambient mode the gRPC model guard would have to run on the waypoint as an EnvoyFilter, which "
                "Istio does not support there (EnvoyFilter is Alpha on waypoints; its WAYPOINT patch context is "
                "never applied in Istio 1.30.3)",
                "grant per model over HTTP, set grpcAllModels: true, or use mesh.mode: sidecar",
            ),
            Feature.PER_MODEL_JSON: Withheld(
                "in ambient mode the OpenAI body reader would have to run on the waypoint as an EnvoyFilter, which "
                "Istio does not support there (its WAYPOINT patch context is never applied in Istio 1.30.3)",
                "grant those routes without models, or use mesh.mode: sidecar",
            ),
            Feature.DRY_RUN: Refused(
                "ztunnel drops dry-run AuthorizationPolicies (AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY is off by "
                "default), so the policy that keeps clients from bypassing the waypoint would silently vanish",
                "dry-run in sidecar mode, or apply the ambient output for real",
            ),
        }
    )

    def capabilities(self, policy: Policy, options: IstioOptions) -> Capabilities:
        return self.capability_table if policy.ambient is None else self.ambient_table


TARGET = IstioTarget()
