"""The packaged catalog agrees with the reference catalog and routes paths as Triton does."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import yaml

from meshgen.catalog import CATEGORIES, HttpEndpoint, load_catalog

REFERENCE = Path(
    os.environ.get("MESHGEN_SHARED_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference")
)
MODEL_SCOPED_GRPC = {
    "ModelInfer",
    "ModelStreamInfer",
    "ModelMetadata",
    "ModelReady",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "TraceSetting",
}


def reference() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((REFERENCE / "triton-endpoints.yaml").read_text())
    return data


def test_grpc_methods_match_the_reference_catalog() -> None:
    ref = reference()["categories"]
    catalog = load_catalog()
    for category in CATEGORIES[:-1]:
        assert [m.path for m in catalog.grpc_methods(category)] == ref[category]["grpc"]  # type: ignore[index]
    assert {m.name for m in catalog.grpc if m.model_scoped} == MODEL_SCOPED_GRPC


def test_http_endpoints_match_the_reference_regexes() -> None:
    """Each reference route regex accepts exactly the packaged templates of that category and method."""
    import re

    ref = reference()["categories"]
    catalog = load_catalog()
    for category in CATEGORIES[:-1]:
        # Triton's own HTTP port here; the OpenAI frontend's routes: test_openai_routes_match_the_reference
        templates = {(e.template, e.methods) for e in catalog.http_endpoints(category) if e.port == "http"}
        for entry in ref[category]["http"]:  # type: ignore[index]
            regex = re.compile(entry["regex"])
            covered = {
                t
                for t in templates
                if t[1] == tuple(entry["methods"])
                and regex.match(
                    t[0]
                    .replace("{model}", "m")
                    .replace("{version}", "1")
                    .replace("{region}", "r")
                    .replace("{repo}", "rp")
                )
            }
            assert covered, f"{category}: no packaged endpoint for {entry['path']}"
        assert all(
            any(
                re.match(
                    e["regex"],
                    t.replace("{model}", "m")
                    .replace("{version}", "1")
                    .replace("{region}", "r")
                    .replace("{repo}", "rp"),
                )
                for e in ref[category]["http"]
            )  # type: ignore[index]
            for t, _ in templates
        ), category


def _openai_endpoints() -> list[HttpEndpoint]:
    return [e for e in load_catalog().http if e.port == "openai"]


def test_openai_routes_match_the_reference() -> None:
    """The OpenAI frontend's routes (reference openai_frontend.endpoints), with their categories."""
    frontend = reference()["openai_frontend"]
    expected = {
        (entry["category"], tuple(entry["methods"]), entry["path"].replace("{model_name}", "{model}"))
        for entry in frontend["endpoints"]  # type: ignore[index]
    }
    packaged = [(e.category, e.methods, e.template) for e in _openai_endpoints()]
    assert len(packaged) == len(set(packaged))
    assert set(packaged) == expected


def test_openai_routes_sit_in_the_frontends_own_restriction_categories() -> None:
    """The frontend's --openai-restricted-api mapping (method + path prefix) puts each packaged route in
    its catalog category and in no other, and names no category meshgen does not know."""
    mapping: dict[str, list[str]] = reference()["openai_frontend"]["restriction"]["categories"]  # type: ignore[index]
    assert set(mapping) <= set(CATEGORIES)

    def covering(endpoint: HttpEndpoint) -> set[str]:
        path = endpoint.template.replace("{model}", "m")
        return {
            category
            for category, entries in mapping.items()
            for method, prefix in (entry.split(" ", 1) for entry in entries)
            if method in endpoint.methods and path.startswith(prefix)
        }

    for endpoint in _openai_endpoints():
        assert covering(endpoint) == {endpoint.category}, endpoint.template


def test_only_the_openai_inference_routes_read_the_model_from_the_body() -> None:
    """body_model: the frontend's inference routes (a JSON "model"); model-repository names it in the path."""
    frontend = reference()["openai_frontend"]
    inference = {e["path"] for e in frontend["endpoints"] if e["category"] == "inference"}  # type: ignore[index]
    body = [e for e in load_catalog().http if e.body_model]
    assert {e.template for e in body} == inference
    assert all(e.port == "openai" and e.methods == ("POST",) and "{model}" not in e.segments for e in body)
    assert all(e.model_scoped for e in body)
    path_scoped = {e.template for e in _openai_endpoints() if "{model}" in e.segments}
    assert path_scoped == {"/v1/models/{model}", "/v1/models/{model}/load", "/v1/models/{model}/unload"}


def test_templated_endpoints_never_overlap() -> None:
    """Apart from the documented /v2/models/stats shadow, a path reaches at most one endpoint."""
    http = load_catalog().http
    for a, b in itertools.combinations(http, 2):
        if a.port != b.port or len(a.segments) != len(b.segments):
            continue
        overlap = all(
            x == y or x.startswith("{") or y.startswith("{") for x, y in zip(a.segments, b.segments, strict=True)
        )
        shadowed = b.template in a.shadowed or a.template in b.shadowed
        assert not overlap or shadowed, (a.template, b.template)


@pytest.mark.parametrize(
    ("port", "path", "category", "model"),
    [
        ("http", "/v2/models/stats", "statistics", None),
        ("http", "/v2/models/stats/ready", "health", "stats"),
        ("http", "/v2/models/m", "metadata", "m"),
        ("http", "/v2/models/m/versions/3/infer", "inference", "m"),
        ("http", "/v2/repository/r/models/m/load", "model-repository", "m"),
        ("http", "/v2/models/m/trace/setting", "trace", "m"),
        ("metrics", "/metrics/", "metrics", None),
        ("http", "/metrics", None, None),
        ("http", "/v2/models//infer", None, None),
        ("http", "/v2/models/m/versions/1/trace/setting", None, None),
        ("openai", "/v1/chat/completions", "inference", None),
        ("openai", "/v1/embeddings", "inference", None),
        ("openai", "/v1/models", "model-repository", None),
        ("openai", "/v1/models/m", "model-repository", "m"),
        ("openai", "/v1/models/m/unload", "model-repository", "m"),
        ("openai", "/health/ready", "health", None),
        ("openai", "/metrics", "metrics", None),
        ("openai", "/v1/models/", None, None),
        ("openai", "/v1/models/m/infer", None, None),
        ("openai", "/metrics/", None, None),
        ("openai", "/v2/health/ready", None, None),
        ("http", "/v1/models", None, None),
        ("http", "/health/ready", None, None),
        ("metrics", "/v1/chat/completions", None, None),
    ],
)
def test_paths_route_like_triton(port: str, path: str, category: str | None, model: str | None) -> None:
    match = load_catalog().match_http(port, path)  # type: ignore[arg-type]
    if category is None:
        assert match is None
    else:
        assert match is not None and match.endpoint.category == category and match.model == model
