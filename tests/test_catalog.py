"""The packaged catalog agrees with the reference catalog and routes paths as Triton does."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import yaml

from meshgen.catalog import CATEGORIES, load_catalog

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
        templates = {(e.template, e.methods) for e in catalog.http_endpoints(category)}
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
    ],
)
def test_paths_route_like_triton(port: str, path: str, category: str | None, model: str | None) -> None:
    match = load_catalog().match_http(port, path)  # type: ignore[arg-type]
    if category is None:
        assert match is None
    else:
        assert match is not None and match.endpoint.category == category and match.model == model
