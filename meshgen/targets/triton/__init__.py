"""Triton target: launch flags for defence in depth behind the proxy (``meshgen triton``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshgen.features import Feature
from meshgen.targets.contract import Delegated, OutputFile, Refused, Target, switch, table

if TYPE_CHECKING:
    from meshgen.policy.model import Policy

PROXY_CHECKS_IT = Delegated("Triton's flags restrict whole API categories; the proxy in front checks each client")
PROXY_CHECKS_MODELS = Delegated("Triton's flags restrict whole API categories; the proxy in front checks models")


@dataclass(frozen=True)
class TritonOptions:
    openai: bool = switch("--openai", "The OpenAI frontend's flags (python/openai main.py) instead of tritonserver's.")


def serves_openai(policy: Policy) -> bool:
    return policy.ports.openai is not None


class TritonTarget(Target[TritonOptions]):
    name = "triton"
    summary = "Triton launch flags (restricted APIs, disabled endpoints, model control) that follow from the spec."
    options_type = TritonOptions
    outputs = (
        OutputFile("triton-args.txt", TritonOptions()),
        OutputFile("openai-frontend-args.txt", TritonOptions(openai=True), applies_to=serves_openai),
    )
    implementation = "meshgen.targets.triton.flags"
    capability_table = table(
        {
            Feature.PRINCIPALS: PROXY_CHECKS_IT,
            Feature.NAMESPACES: PROXY_CHECKS_IT,
            Feature.IP_BLOCKS: PROXY_CHECKS_IT,
            # Categories whose every grantee sends one common header are restricted to it (--*-restricted-*).
            Feature.HEADERS: PROXY_CHECKS_IT,
            Feature.JWT: PROXY_CHECKS_IT,
            Feature.PER_MODEL_HTTP: PROXY_CHECKS_MODELS,
            Feature.PER_MODEL_GRPC: PROXY_CHECKS_MODELS,
            Feature.PER_MODEL_JSON: PROXY_CHECKS_MODELS,
            Feature.DRY_RUN: Refused("Triton has no audit mode", "use the dry-run of the proxy targets"),
        }
    )


TARGET = TritonTarget()
