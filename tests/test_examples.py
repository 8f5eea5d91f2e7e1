"""Examples never rot: each example's generated outputs are checked in and must be current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
# The break-glass token of internal-ops.yaml; the checked-in outputs were generated with this value.
ENV = {**os.environ, "OPS_BREAKGLASS_TOKEN": "example-breakglass-token"}


def meshgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgen", *args], capture_output=True, text=True, env=ENV, check=False
    )


@pytest.mark.golden
@pytest.mark.parametrize("name", NAMES)
def test_generated_outputs_are_current(name: str) -> None:
    result = meshgen("all", str(EXAMPLES / f"{name}.yaml"), "-o", str(EXAMPLES / name), "--check")
    assert result.returncode == 0, (
        f"examples/{name}/ is stale; run: meshgen all examples/{name}.yaml -o examples/{name}\n{result.stdout}"
    )


@pytest.mark.parametrize("name", [n for n in NAMES if n != "triton-access"])
def test_realistic_examples_are_lint_clean(name: str) -> None:
    result = meshgen("lint", str(EXAMPLES / f"{name}.yaml"), "--strict")
    assert result.returncode == 0, result.stderr


def test_readme_example_runs_without_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshgen", "istio", str(EXAMPLES / "triton-access.yaml")],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        check=False,
    )
    assert result.returncode == 0 and "kind: PeerAuthentication" in result.stdout
