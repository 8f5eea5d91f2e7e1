"""The spec format: what loads, and what is refused with which message at which line."""

from __future__ import annotations

import textwrap

import pytest

from meshgen.errors import SpecError
from meshgen.spec import load_spec_text

HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: triton, namespace: inference}
workload:
  selector: {app: triton}
"""


def load(body: str, environ: dict[str, str] | None = None) -> object:
    return load_spec_text(HEAD + textwrap.dedent(body), "spec.yaml", environ or {})


def test_minimal_spec_gets_the_defaults() -> None:
    spec = load_spec_text(HEAD, "spec.yaml").spec
    assert (spec.workload.ports.http, spec.workload.ports.grpc, spec.workload.ports.metrics) == (8000, 8001, 8002)
    assert spec.mtls.mode == "STRICT"
    assert spec.clients == {} and spec.rules == []


def test_env_header_values_are_read_at_generation_time() -> None:
    loaded = load_spec_text(
        HEAD + "clients:\n  admin: {headers: {X-Admin: {env: ADMIN_TOKEN}}}\n", "spec.yaml", {"ADMIN_TOKEN": "t0k"}
    )
    assert loaded.spec.clients["admin"].headers == {"X-Admin": "t0k"}


# (spec body after the common head, expected line, expected message fragment)
ERRORS = [
    ("bogus: 1\n", 6, "unknown field 'bogus'"),
    ("clients:\n  a: {ipBlocks: [10.0.0.0/33]}\n", 7, "invalid IP block"),
    ("clients:\n  a: {ipBlocks: [10.0.0.1/8]}\n", 7, "host bits set"),
    ("clients:\n  a: {principals: [spiffe://cluster.local/ns/a/sa/b]}\n", 7, "without the scheme"),
    ("clients:\n  a: {principals: [cluster.local/ns/a]}\n", 7, "must look like"),
    ("clients:\n  a: {principals: ['cluster.local/ns/*/sa/b']}\n", 7, "must look like"),
    ("clients:\n  a: {}\n", 7, "has no identity"),
    ("clients:\n  a: {ipBlocks: []}\n", 7, "at least 1"),
    ("clients:\n  a: {headers: {x_y: v}}\n", 7, "x_y"),
    ("clients:\n  a: {headers: {x-y: ' v'}}\n", 7, "header values must be"),
    ('clients:\n  a: {headers: {x-y: "a\\nb"}}\n', 7, "header values must be"),
    ("clients:\n  a: {headers: {x-y: v, X-Y: w}}\n", 7, "twice"),
    ("clients:\n  a: {headers: {x-y: {env: NOT_SET}}}\n", 7, "NOT_SET is not set"),
    ("clients:\n  a: {ipBlocks: [10.0.0.0/8]}\n  a: {ipBlocks: [10.0.0.0/8]}\n", 8, "duplicate key 'a'"),
    ("clients:\n  Bad_Name: {ipBlocks: [10.0.0.0/8]}\n", 7, "Bad_Name"),
    ("rules:\n  - {allow: [health], from: [ghost]}\n", 7, "unknown client 'ghost'"),
    ("rules:\n  - {allow: [healthz], from: anyone}\n", 7, "healthz"),
    ("rules:\n  - {allow: [health], deny: [health], from: anyone}\n", 7, "exactly one of"),
    ("rules:\n  - {from: anyone}\n", 7, "exactly one of"),
    ("rules:\n  - {allow: [health], from: []}\n", 7, "from is empty"),
    ("rules:\n  - {allow: [health], from: everyone}\n", 7, "from"),
    ("rules:\n  - {allow: [health, health], from: anyone}\n", 7, "twice"),
    ("rules:\n  - {allow: [inference], models: [stats], from: anyone}\n", 7, "collides"),
    ("rules:\n  - {allow: [inference], models: ['a b'], from: anyone}\n", 7, "does not match"),
    ("rules:\n  - {allow: [inference], models: ['../x'], from: anyone}\n", 7, "does not match"),
    (
        "rules:\n  - {allow: [inference], grpcAllModels: true, from: anyone}\n",
        7,
        "only applies to a rule with 'models'",
    ),
    ("rules:\n  - {deny: [inference], models: [m], grpcAllModels: true, from: anyone}\n", 7, "only applies to allow"),
    ("rules:\n  - {allow: [logging], models: [m], from: anyone}\n", 7, "no model-scoped endpoints"),
    ("rules:\n  - {allow: [inference, shared-memory], models: [m], from: anyone}\n", 7, "'shared-memory' has no"),
    ("mtls: {mode: DISABLE}\nclients:\n  a: {namespaces: [web]}\n", 8, "mtls.mode is DISABLE"),
    ("mtls: {mode: strict}\n", 6, "invalid value 'strict'"),
    ("mtls: {portOverrides: {9999: PERMISSIVE}}\n", 6, "not one of the workload's ports"),
    ("mtls: {portOverrides: {admin: PERMISSIVE}}\n", 6, "admin"),
    ("mtls: {portOverrides: {metrics: STRICT, 8002: DISABLE}}\n", 6, "name the same port"),
    ("standalone: {listen: {http: 'localhost'}}\n", 6, "must be host:port"),
    ("x: &a [1]\ny: *a\n", 7, "aliases are not supported"),
    ("clients: [\n", 7, "YAML syntax"),
]


@pytest.mark.parametrize(("body", "line", "fragment"), ERRORS, ids=[e[2] for e in ERRORS])
def test_invalid_specs_are_refused_at_their_line(body: str, line: int, fragment: str) -> None:
    with pytest.raises(SpecError) as raised:
        load(body)
    error = raised.value
    assert fragment in error.message
    assert error.location is not None and error.location.file == "spec.yaml"
    assert error.location.line == line, str(error)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        ("", "spec is empty"),
        ("[1, 2]", "must be a YAML mapping"),
        ("a: \x00", "NUL"),
        ("apiVersion: meshgen/v2\n", "apiVersion"),
        ("- " * 40 + "x", "nested too deeply"),
    ],
)
def test_malformed_documents_are_refused(text: str | bytes, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        load_spec_text(text, "spec.yaml", {})


def test_metadata_name_leaves_room_for_resource_suffixes() -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        load_spec_text(HEAD.replace("name: triton", "name: " + "a" * 58), "spec.yaml", {})
