"""Hostile values in every field that reaches a config language: refused, or provably harmless.

For each (field, value): the spec is refused (SpecError), or a target refuses it (TargetError), or the
target's output still grants exactly what ``decide()`` says — Istio through the evaluator on the full
matrix, Envoy through ``envoy --mode validate``, nginx through ``nginx -t`` (the real-traffic matrices
run on the golden and generated specs elsewhere).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshgen.errors import SpecError, TargetError
from meshgen.policy import compile_policy
from meshgen.spec import LoadedSpec, load_spec_text
from tests.istio_validation import validate_istio_document
from tests.support.envoy_process import validate as envoy_validate
from tests.support.istio_matrix import istio_mismatches
from tests.support.matrix import full_matrix
from tests.support.nginx_process import NGINX, nginx_prefix, nginx_test_text
from tests.support.targets import envoy_output, istio_output, nginx_output

HOSTILE = [
    "a;b",
    "a}b",
    "a{b",
    "a'b",
    'a"b',
    "a$b",
    "a|b",
    "a*",
    "*a",
    "a*b",
    "..",
    "a/../b",
    "a\nb",
    "a\x00b",
    "\u0430",  # Cyrillic a
    "\uff41",  # fullwidth a
    "a b",
    "^a$",
    "(a)+",
    "a\\b",
    "[a]",
    "a#b",
    "a?b",
    "a%2Fb",
    "a,b",
    "a=b",
    "y",
    "n",
    "~",
]
STANDALONE = {
    "listen": {"http": "127.0.0.1:18080", "grpc": "127.0.0.1:18081", "metrics": "127.0.0.1:18082"},
    "upstream": {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001", "metrics": "127.0.0.1:8002"},
}


def base() -> dict[str, Any]:
    return {
        "apiVersion": "meshgen/v1",
        "kind": "TritonAccessPolicy",
        "metadata": {"name": "t", "namespace": "n"},
        "workload": {"selector": {"app": "triton"}},
        "clients": {"edge": {"ipBlocks": ["10.1.0.0/16"], "headers": {"x-key": "k"}}},
        "rules": [
            {"allow": ["inference", "metadata"], "models": ["m1"], "from": ["edge"]},
            {"allow": ["health"], "from": "anyone"},
        ],
        "standalone": STANDALONE,
    }


def put(field: str, value: str) -> dict[str, Any]:
    spec = base()
    edge = spec["clients"]["edge"]
    if field == "model":
        spec["rules"][0]["models"] = [value]
    elif field == "client-name":
        spec["clients"] = {value: edge}
        spec["rules"][0]["from"] = [value]
    elif field == "header-name":
        edge["headers"] = {value: "k"}
    elif field == "header-value":
        edge["headers"] = {"x-key": value}
    elif field == "principal":
        edge["principals"] = [f"cluster.local/ns/{value}/sa/x"]
    elif field == "namespace":
        edge["namespaces"] = [value]
    elif field == "cidr":
        edge["ipBlocks"] = [value]
    elif field == "resource-name":
        spec["metadata"]["name"] = value
    elif field == "label-value":
        spec["workload"]["selector"] = {"app": value}
    return spec


FIELDS = [
    "model",
    "client-name",
    "header-name",
    "header-value",
    "principal",
    "namespace",
    "cidr",
    "resource-name",
    "label-value",
]


def istio_agrees(loaded: LoadedSpec) -> None:
    documents = list(yaml.safe_load_all(istio_output(compile_policy(loaded))))
    for document in documents:
        assert validate_istio_document(document) == []
    assert istio_mismatches(loaded.spec, documents, list(full_matrix(loaded.spec))) == []


def envoy_valid(loaded: LoadedSpec) -> None:
    policy = compile_policy(loaded)
    try:
        text = envoy_output(policy, bootstrap=True, listen={}, upstream={}, admin=None, dry_run=False)
    except TargetError:
        return  # e.g. principals without standalone.tls: refused, never widened
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "envoy.json"
        config.write_text(text)
        result = envoy_validate(config)
        assert result.returncode == 0 and "Deprecated field" not in result.stdout + result.stderr, result.stderr


def nginx_valid(loaded: LoadedSpec) -> None:
    try:
        text = nginx_output(
            compile_policy(loaded),
            full=True,
            listen={},
            upstream={},
            prefix=None,
            daemon=False,
            dry_run=False,
        )
    except TargetError:
        return
    if NGINX is None:
        pytest.skip("nginx is not installed")
    with nginx_prefix() as prefix:
        result = nginx_test_text(text, prefix)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_value_is_refused_or_harmless(field: str, value: str) -> None:
    try:
        loaded = load_spec_text(yaml.safe_dump(put(field, value)), "hostile.yaml", {})
    except SpecError as error:
        # One line per error (several come at once): an injected newline never starts a line of its own.
        assert all(line.startswith("hostile.yaml:") for line in str(error).split("\n")), str(error)
        return
    with contextlib.suppress(TargetError):  # e.g. a '*' at the edge of a header value: Istio refuses it
        istio_agrees(loaded)
    envoy_valid(loaded)
    nginx_valid(loaded)


def test_only_header_values_and_harmless_labels_get_through() -> None:
    """Documents which hostile values the spec accepts at all: names are allow-listed everywhere."""
    accepted = []
    for field in FIELDS:
        for value in HOSTILE:
            try:
                load_spec_text(yaml.safe_dump(put(field, value)), "hostile.yaml", {})
                accepted.append((field, value))
            except SpecError:
                pass
    names = [(field, value) for field, value in accepted if field not in ("header-value", "label-value")]
    assert all(value.isascii() and value.isalnum() for _, value in names), names
