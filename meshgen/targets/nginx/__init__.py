"""NGINX target: an ``http {}`` drop-in (or a complete nginx.conf) that enforces the policy per location."""

from __future__ import annotations

from dataclasses import dataclass

from meshgen.features import Feature
from meshgen.targets.contract import (
    OutputFile,
    Refused,
    StandaloneOptions,
    Target,
    Variant,
    Withheld,
    directory,
    enforced_except,
    switch,
)


@dataclass(frozen=True)
class NginxOptions(StandaloneOptions):
    """Dry run: the decision of every request is logged (``log_format meshgen_dry_run``), nothing is denied."""

    full: bool = switch("--full", "A complete nginx.conf that runs as is, instead of the http{} drop-in.")
    prefix: str | None = directory("--prefix", "pid, log and temp paths under DIR (absolute).")
    no_daemon: bool = switch("--no-daemon", "Emit 'daemon off;' (run in the foreground; with --full).")


NO_GRPC_BODY = Withheld(
    "nginx cannot read gRPC request bodies, where gRPC carries the model name",
    "set grpcAllModels: true to grant them for every model, or use the envoy or istio target",
)
NO_JSON_BODY = Withheld(
    "nginx cannot read the JSON request body, where the OpenAI frontend's inference routes name the model",
    "grant those routes without models, or use the envoy or istio target",
)
MESH_IDENTITY = Refused(
    "nginx cannot verify the mTLS peer identity of an Istio sidecar",
    "identify this client by ipBlocks and/or headers, or use the istio or envoy target",
)

NO_JWT = Refused(
    "open-source nginx cannot verify JWTs (signature, issuer, audience, expiry)",
    "identify this client by ipBlocks and/or headers on nginx, or use the istio or envoy target",
)


class NginxTarget(Target[NginxOptions]):
    name = "nginx"
    summary = "NGINX http{} drop-in (geo/map, upstreams, one server per Triton port), or a full nginx.conf."
    options_type = NginxOptions
    outputs = (OutputFile("nginx.conf", NginxOptions(), optional=True),)
    variants = (
        Variant("nginx.conf", "dry-run", NginxOptions(dry_run=True)),
        Variant("nginx.conf", "full", NginxOptions(full=True, no_daemon=True)),
    )
    implementation = "meshgen.targets.nginx.config"
    capability_table = enforced_except(
        {
            Feature.PRINCIPALS: MESH_IDENTITY,
            Feature.NAMESPACES: MESH_IDENTITY,
            Feature.JWT: NO_JWT,
            Feature.PER_MODEL_GRPC: NO_GRPC_BODY,
            Feature.PER_MODEL_JSON: NO_JSON_BODY,
        }
    )


TARGET = NginxTarget()
