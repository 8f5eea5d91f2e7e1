"""Typed view of the endpoint catalog and the path matching every target must agree with."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal, get_args

import yaml

ANY_SEGMENT = "*"
"""Marker in a path pattern for one whole, non-empty path segment of any value."""

# Triton's restricted-API categories (src/restricted_features.h, enum order) plus the metrics port.
Category = Literal[
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
    "metrics",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)

VARIABLES = frozenset({"{model}", "{version}", "{region}", "{repo}"})
HttpPort = Literal["http", "metrics", "openai"]


@dataclass(frozen=True)
class HttpEndpoint:
    category: str
    port: HttpPort
    methods: tuple[str, ...]
    template: str
    segments: tuple[str, ...]
    # Literal catalog paths this template also matches but Triton routes elsewhere (exact routes win).
    shadowed: tuple[str, ...] = ()
    # The model is the JSON body's top-level "model" (the OpenAI frontend's inference routes).
    body_model: bool = False

    @property
    def model_scoped(self) -> bool:
        return "{model}" in self.segments or self.body_model

    def pattern(self, model: str | None = None) -> tuple[str, ...]:
        """Segments with ``{model}`` bound to ``model`` (or any segment) and other variables any segment."""
        return tuple(
            (model if model is not None else ANY_SEGMENT)
            if segment == "{model}"
            else ANY_SEGMENT
            if segment in VARIABLES
            else segment
            for segment in self.segments
        )

    def match(self, segments: tuple[str, ...]) -> str | Literal[False] | None:
        """False if ``segments`` is not this endpoint; else the model name it names (None if none)."""
        if len(segments) != len(self.segments):
            return False
        model: str | None = None
        for want, got in zip(self.segments, segments, strict=True):
            if want in VARIABLES:
                if not got:
                    return False
                if want == "{model}":
                    model = got
            elif want != got:
                return False
        return model


@dataclass(frozen=True)
class GrpcMethod:
    category: str
    path: str
    model_field: int | None = None  # field number of the model name in the request message
    streaming: bool = False  # a stream: a proxy sees only its first message

    @property
    def model_scoped(self) -> bool:
        return self.model_field is not None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class HttpMatch:
    endpoint: HttpEndpoint
    model: str | None


@dataclass(frozen=True)
class Catalog:
    http: tuple[HttpEndpoint, ...]
    grpc: tuple[GrpcMethod, ...]
    _literal_paths: Mapping[tuple[HttpPort, str], HttpEndpoint] = field(repr=False, compare=False)

    def http_endpoints(self, category: str) -> tuple[HttpEndpoint, ...]:
        return tuple(e for e in self.http if e.category == category)

    def grpc_methods(self, category: str) -> tuple[GrpcMethod, ...]:
        return tuple(m for m in self.grpc if m.category == category)

    def has_model_scoped(self, category: str) -> bool:
        return any(e.model_scoped for e in self.http_endpoints(category))

    def match_http(self, port: HttpPort, path: str) -> HttpMatch | None:
        """The endpoint Triton would route ``path`` to on ``port`` (query already removed)."""
        literal = self._literal_paths.get((port, path))
        if literal is not None:
            return HttpMatch(literal, None)
        if not path.startswith("/"):
            return None
        segments = tuple(path[1:].split("/"))
        for endpoint in self.http:
            if endpoint.port != port:
                continue
            model = endpoint.match(segments)
            if model is not False:
                return HttpMatch(endpoint, model)
        return None

    def match_grpc(self, path: str) -> GrpcMethod | None:
        return next((m for m in self.grpc if m.path == path), None)

    def __iter__(self) -> Iterator[HttpEndpoint]:
        return iter(self.http)


def _segments(path: str) -> tuple[str, ...]:
    if not path.startswith("/"):
        raise ValueError(f"catalog path {path!r} must start with '/'")
    return tuple(path[1:].split("/"))


@cache
def load_catalog() -> Catalog:
    raw = yaml.safe_load(resources.files("meshgen.catalog").joinpath("triton.yaml").read_text("utf-8"))
    http: list[HttpEndpoint] = []
    grpc: list[GrpcMethod] = []
    for category in CATEGORIES:
        entry = raw["categories"][category]
        port: HttpPort = entry.get("port", "http")
        for item in entry["http"]:
            http.append(
                HttpEndpoint(
                    category,
                    item.get("port", port),
                    tuple(item["methods"]),
                    item["path"],
                    _segments(item["path"]),
                    body_model=bool(item.get("body_model", False)),
                )
            )
        for item in entry["grpc"]:
            grpc.append(
                GrpcMethod(category, item["method"], item.get("model_field"), bool(item.get("streaming", False)))
            )
    literal = {(e.port, e.template): e for e in http if not any(s in VARIABLES for s in e.segments)}
    http = [
        HttpEndpoint(
            e.category,
            e.port,
            e.methods,
            e.template,
            e.segments,
            tuple(
                p
                for (_, p), other in literal.items()
                if other.port == e.port and e.match(_segments(p)) is not False and other is not e
            ),
            e.body_model,
        )
        for e in http
    ]
    literal = {(e.port, e.template): e for e in http if not any(s in VARIABLES for s in e.segments)}
    return Catalog(tuple(http), tuple(grpc), literal)
