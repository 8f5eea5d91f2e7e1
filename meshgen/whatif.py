"""``meshgen check``: what the reference decides for one request from one client, and which rule decides."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from meshgen.errors import MeshgenError, did_you_mean
from meshgen.features import Feature
from meshgen.identity import representative_identity
from meshgen.policy import Decision, Identity, Request, decide
from meshgen.policy.decide import EVERY_FEATURE
from meshgen.spec import LoadedSpec

GRPC_SERVICE = "/inference.GRPCInferenceService/"


@dataclass(frozen=True)
class WhatIf:
    request: Request
    decision: Decision
    rule_location: str | None

    def text(self) -> str:
        verdict = "ALLOW" if self.decision.allowed else "DENY"
        where = f" ({self.rule_location})" if self.rule_location else ""
        request = f"{self.request.protocol} {self.request.method} {self.request.path}"
        if self.request.protocol in ("grpc", "openai") and self.request.body_model:
            request += f" (model {self.request.body_model})"
        return f"{verdict} {request}: {self.decision.reason}{where}"


def what_if(
    loaded: LoadedSpec,
    subject: str,
    http: str | None,
    grpc: str | None,
    headers: list[str],
    port: str | None = None,
    model: str | None = None,
    enforced: Collection[Feature] = EVERY_FEATURE,
) -> WhatIf:
    spec = loaded.spec
    if subject == "anyone":
        identity = Identity()
    elif subject in spec.clients:
        identity = representative_identity(spec.clients[subject])
    else:
        known = ", ".join(["anyone", *spec.clients])
        raise MeshgenError(
            f"--from: unknown client {subject!r} (one of: {known})" + did_you_mean(subject, list(spec.clients))
        )
    extra = {}
    for item in headers:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise MeshgenError(f"--header {item!r} must be NAME=VALUE")
        extra[name] = value
    identity = dataclasses.replace(identity, headers={**identity.headers, **extra})
    request = _request(http, grpc, identity, port)
    if model is not None:
        if request.protocol not in ("grpc", "openai"):
            raise MeshgenError(
                "--model is for --grpc calls and OpenAI inference routes (JSON body): an HTTP path names its model"
            )
        request = dataclasses.replace(request, body_model=model)
    decision = decide(spec, request, enforced)
    location = None
    if decision.rule_index is not None:
        location = str(loaded.location("rules", decision.rule_index))
    return WhatIf(request, decision, location)


def _request(http: str | None, grpc: str | None, identity: Identity, port: str | None) -> Request:
    if (http is None) == (grpc is None):
        raise MeshgenError('give exactly one of --http "METHOD PATH" or --grpc METHOD')
    if grpc is not None:
        path = grpc if grpc.startswith("/") else GRPC_SERVICE + grpc
        return Request("grpc", "POST", path, identity)
    assert http is not None
    method, _, path = http.strip().partition(" ")
    if not path.startswith("/"):
        raise MeshgenError(f'--http {http!r} must be "METHOD /path"')
    on = port or _port_of(path.split("?")[0])
    if on not in ("http", "metrics", "openai"):
        raise MeshgenError("--port must be http, metrics or openai")
    return Request(on, method.upper(), path.strip(), identity)  # type: ignore[arg-type]


def _port_of(path: str) -> str:
    """The port a path is on when --port is not given: the OpenAI frontend's routes, metrics, else http."""
    if path.startswith("/v1/") or path == "/health/ready":
        return "openai"
    return "metrics" if path.rstrip("/") == "/metrics" else "http"
