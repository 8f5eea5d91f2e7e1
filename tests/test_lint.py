"""``meshgen lint``: each risky-but-legal pattern yields its stable code; clean specs yield nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from meshgen.lint import lint
from meshgen.spec import load_spec_text

HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: t, namespace: n}
workload: {selector: {app: t}}
"""

# (spec body, expected codes)
CASES = [
    ("clients:\n  a: {principals: [cluster.local/ns/a/sa/b]}\nrules:\n  - {allow: [inference], from: [a]}\n", []),
    ("rules:\n  - {allow: [model-repository, logging], from: anyone}\n", ["MG101"]),
    ("clients:\n  o: {ipBlocks: [10.0.0.0/8]}\nrules:\n  - {allow: [shared-memory], from: [o]}\n", ["MG102"]),
    (
        "clients:\n  o: {ipBlocks: [10.0.0.0/8], headers: {x-k: {env: K}}}\nrules:\n  - {allow: [trace], from: [o]}\n",
        [],
    ),
    ("clients:\n  h: {headers: {x-k: literal}}\n", ["MG103"]),
    (
        "mtls: {mode: PERMISSIVE}\nclients:\n  a: {namespaces: [a]}\nrules:\n  - {allow: [health], from: [a]}\n",
        ["MG104"],
    ),
    (
        "mtls: {portOverrides: {metrics: PERMISSIVE}}\nclients:\n  a: {namespaces: [a]}\n"
        "rules:\n  - {allow: [health], from: [a]}\n",
        [],
    ),
    ("rules:\n  - {allow: [metrics], from: anyone}\n", ["MG105"]),
    ("rules:\n  - {allow: [logging], from: anyone}\n  - {deny: [logging], from: anyone}\n", ["MG101", "MG106"]),
]


@pytest.mark.parametrize(("body", "codes"), CASES)
def test_findings(body: str, codes: list[str]) -> None:
    loaded = load_spec_text(HEAD + textwrap.dedent(body), "s.yaml", {"K": "v"})
    assert [finding.code for finding in lint(loaded)] == codes


def test_every_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "lint.md").read_text()
    for code in ("MG101", "MG102", "MG103", "MG104", "MG105", "MG106"):
        assert f"| {code} |" in doc


def test_cli_exit_codes(tmp_path: object) -> None:
    spec = HEAD + "rules:\n  - {allow: [metrics], from: anyone}\n"
    run = [sys.executable, "-m", "meshgen", "lint", "-"]
    relaxed = subprocess.run(run, input=spec, capture_output=True, text=True, check=False)
    strict = subprocess.run([*run, "--strict"], input=spec, capture_output=True, text=True, check=False)
    assert relaxed.returncode == 0 and "MG105" in relaxed.stderr
    assert strict.returncode == 1
    assert subprocess.run(run, input="nope", capture_output=True, text=True, check=False).returncode == 2
