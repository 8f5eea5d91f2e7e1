"""Everyday commands: check (what-if), explain, schema, triton flags, and the `all` drift gate."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from meshgen.catalog import CATEGORIES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "triton-access.yaml")
EDGE = str(ROOT / "tests" / "golden" / "headers-and-ips" / "spec.yaml")
LOCKED = str(ROOT / "tests" / "golden" / "default-deny" / "spec.yaml")


def meshgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *args], capture_output=True, text=True, check=False)


# (arguments after SPEC, exit code, stdout prefix, rule location line or None)
CHECKS = [
    (["--from", "gateway", "--http", "POST /v2/models/resnet50/infer"], 0, "ALLOW http POST", 23),
    (
        ["--from", "gateway", "--grpc", "ModelInfer"],
        1,
        "DENY grpc POST /inference.GRPCInferenceService/ModelInfer",
        None,
    ),
    (["--from", "gateway", "--grpc", "ModelInfer", "--model", "resnet50"], 0, "ALLOW grpc POST", 23),
    (["--from", "gateway", "--grpc", "ModelInfer", "--model", "Resnet50"], 1, "DENY grpc POST", None),
    (["--from", "gateway", "--grpc", "ModelStreamInfer", "--model", "resnet50"], 1, "DENY grpc POST", None),
    (["--from", "anyone", "--grpc", "/grpc.health.v1.Health/Check"], 0, "ALLOW grpc", 21),
    (["--from", "admin", "--http", "GET /v2/systemsharedmemory/status"], 1, "DENY http GET", 30),
    (["--from", "admin", "--header", "x-triton-admin=nope", "--http", "POST /v2/logging"], 1, "DENY", None),
    (["--from", "monitoring", "--http", "GET /metrics"], 0, "ALLOW metrics GET /metrics", 28),
    (["--from", "monitoring", "--http", "GET /metrics", "--port", "http"], 1, "DENY http GET /metrics", None),
]


@pytest.mark.parametrize(("args", "code", "prefix", "line"), CHECKS)
def test_check(args: list[str], code: int, prefix: str, line: int | None) -> None:
    result = meshgen("check", EXAMPLE, *args)
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith(prefix)
    if line is not None:
        assert f"triton-access.yaml:{line}:5)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--from", "ghost", "--grpc", "ModelInfer"], ["--from", "anyone"], ["--from", "anyone", "--http", "GET"]],
)
def test_check_usage_errors_exit_2(args: list[str]) -> None:
    result = meshgen("check", EXAMPLE, *args)
    assert result.returncode == 2 and result.stderr.startswith("error:")


def test_explain_json_is_the_full_matrix() -> None:
    result = meshgen("explain", EXAMPLE, "--format", "json")
    data = json.loads(result.stdout)
    assert data["subjects"] == ["anyone", "gateway", "web", "ops", "admin", "monitoring"]
    assert data["categories"] == list(CATEGORIES)
    gateway = data["access"]["gateway"]
    assert gateway["inference"]["http"] == {
        "access": "some",
        "models": ["densenet_onnx", "resnet50"],
        "deniedBy": [],
        "grpcWithheld": False,
        "withheldOn": [],
    }
    assert gateway["inference"]["grpc"] == {
        "access": "some",
        "models": ["densenet_onnx", "resnet50"],  # read from the request message on Envoy and Istio
        "deniedBy": [],
        "grpcWithheld": True,
        "withheldOn": ["nginx"],
    }
    assert data["access"]["anyone"]["shared-memory"]["http"]["deniedBy"] == [4]
    assert data["access"]["monitoring"]["metrics"]["http"]["access"] == "all"


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_explain_text_formats(fmt: str) -> None:
    result = meshgen("explain", EXAMPLE, "--format", fmt)
    assert result.returncode == 0
    assert "models: densenet_onnx, resnet50" in result.stdout and "withheld" in result.stdout
    assert "DENY rules[4]" in result.stdout
    if fmt == "markdown":
        assert "| HTTP category | anyone | gateway |" in result.stdout


def test_schema_validates_every_golden_spec_and_rejects_typos() -> None:
    schema = json.loads(meshgen("schema").stdout)
    for spec in sorted((ROOT / "tests" / "golden").glob("*/spec.yaml")):
        data = json.loads(json.dumps(yaml.safe_load(spec.read_text())))  # YAML int keys become strings
        jsonschema.validate(data, schema)
    broken = yaml.safe_load(Path(EXAMPLE).read_text()) | {"rulez": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def flags(text: str) -> list[str]:
    return [shlex.split(line)[0] for line in text.splitlines() if line and not line.startswith("#")]


def test_triton_flags_restrict_header_only_categories() -> None:
    result = meshgen("triton", EDGE)
    assert result.returncode == 0
    lines = flags(result.stdout)
    apis = "model-config,model-repository,statistics,trace,logging"
    assert f"--http-restricted-api={apis}:x-triton-admin=S3cret-Token" in lines
    assert f"--grpc-restricted-protocol={apis}:x-triton-admin=S3cret-Token" in lines
    assert "--model-control-mode=explicit" in lines and "--http-address=127.0.0.1" in lines
    # every flag is preceded by a comment saying why
    text_lines = result.stdout.splitlines()
    for index, line in enumerate(text_lines):
        if line and not line.startswith("#"):
            assert text_lines[index - 1].startswith("# ")


def test_triton_flags_syntax_matches_the_catalog() -> None:
    """Restricted categories are Triton's names; each category appears in at most one group."""
    for spec in sorted((ROOT / "tests" / "golden").glob("*/spec.yaml")):
        seen: dict[str, list[str]] = {"--http-restricted-api": [], "--grpc-restricted-protocol": []}
        for flag in flags(meshgen("triton", str(spec)).stdout):
            name, _, value = flag.partition("=")
            if name in seen:
                apis, _, header = value.partition(":")
                key, _, secret = header.partition("=")
                assert key and secret and all(c in CATEGORIES and c != "metrics" for c in apis.split(","))
                seen[name] += apis.split(",")
        for categories in seen.values():
            assert len(categories) == len(set(categories))


def test_triton_flags_disable_unused_endpoints() -> None:
    lines = flags(meshgen("triton", LOCKED).stdout)
    assert {"--allow-grpc=false", "--allow-http=false", "--allow-metrics=false", "--model-control-mode=none"} <= set(
        lines
    )


def test_all_writes_everything_and_check_detects_drift(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = meshgen("all", EDGE, "-o", str(out))
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["istio.yaml", "envoy-bootstrap.json", "envoy-rbac.yaml", "nginx.conf", "triton-args.txt", "kustomization.yaml"]
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert meshgen("all", EDGE, "-o", str(out)).returncode == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # re-running changes nothing
    assert meshgen("all", EDGE, "-o", str(out), "--check").returncode == 0

    (out / "istio.yaml").write_text("stale\n")
    (out / "nginx.conf").unlink()
    stale = meshgen("all", EDGE, "-o", str(out), "--check")
    assert stale.returncode == 1
    assert "--- a/istio.yaml" in stale.stdout and "+++ b/nginx.conf" in stale.stdout
    assert (out / "istio.yaml").read_text() == "stale\n"  # --check writes nothing


def test_all_removes_files_earlier_versions_wrote(tmp_path: Path) -> None:
    """An upgrade never leaves a stale policy beside the current one: the YAML bootstrap became JSON."""
    assert meshgen("all", EDGE, "-o", str(tmp_path)).returncode == 0
    (tmp_path / "envoy-bootstrap.yaml").write_text("static_resources: {}\n")
    stale = meshgen("all", EDGE, "-o", str(tmp_path), "--check")
    assert stale.returncode == 1 and "--- a/envoy-bootstrap.yaml" in stale.stdout, stale.stdout
    assert meshgen("all", EDGE, "-o", str(tmp_path)).returncode == 0
    assert not (tmp_path / "envoy-bootstrap.yaml").exists() and (tmp_path / "envoy-bootstrap.json").is_file()


def test_all_skips_what_the_spec_cannot_express(tmp_path: Path) -> None:
    result = meshgen("all", EXAMPLE, "-o", str(tmp_path))
    assert result.returncode == 0
    assert "note: nginx.conf not generated" in result.stderr
    assert not (tmp_path / "nginx.conf").exists()
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["istio.yaml"]


def test_all_check_on_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: nope\n")
    assert meshgen("all", str(bad), "-o", str(tmp_path), "--check").returncode == 2
