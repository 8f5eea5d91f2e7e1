"""Issue 17, a newcomer's first ten minutes: every error at once, explanations that say why, init, diff, help."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/triton-access.yaml"
HEAD = (
    "apiVersion: meshgen/v1\nkind: TritonAccessPolicy\nmetadata: {name: t, namespace: n}\n"
    "workload: {selector: {app: t}}\n"
)


def meshgen(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "meshgen", *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env
    )


# --- every error at once -----------------------------------------------------------------------------------

TYPOS = """\
# a spec with five mistakes
apiVersion: meshgen/v1
kind: TritonAccessPolicy
workload:
  selector: {app: t}
  ports: {htp: 8000}
clinets:
  a: {ipBlocks: [10.0.0.0/8]}
mtls: {mode: STRIKT}
rules:
  - allow: [inferense]
    from: anyone
"""


def test_every_structural_error_at_once_sorted_with_suggestions() -> None:
    result = meshgen("istio", "-", stdin=TYPOS)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "<stdin>:2:1: error: missing required field 'metadata'",
        "<stdin>:6:11: error: unknown field 'workload.ports.htp'; did you mean 'http'?",
        "<stdin>:7:1: error: unknown field 'clinets'; did you mean 'clients'?",
        "<stdin>:9:8: error: mtls.mode: invalid value 'STRIKT'; expected 'STRICT', 'PERMISSIVE' or 'DISABLE'; "
        "did you mean 'STRICT'?",
        "<stdin>:11:13: error: rules[0].allow[0]: invalid value 'inferense'; expected 'health', 'metadata', "
        "'inference', 'shared-memory', 'model-config', 'model-repository', 'statistics', 'trace', 'logging' or "
        "'metrics'; did you mean 'inference'?",
    ]
    assert "Traceback" not in result.stderr


def test_missing_section_points_at_the_nearest_parent() -> None:
    result = meshgen("istio", "-", stdin=HEAD.replace("metadata: {name: t, namespace: n}", "metadata: {name: t}"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["<stdin>:3:1: error: missing required field 'metadata.namespace'"]


def test_every_rule_and_client_error_at_once_with_client_suggestions() -> None:
    spec = HEAD + (
        "clients:\n  gateway: {ipBlocks: [10.0.0.0/8]}\n  b: {}\n"
        "rules:\n  - {allow: [health], from: [gatway]}\n  - {allow: [health], from: [b, b]}\n"
    )
    result = meshgen("istio", "-", stdin=spec)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "<stdin>:7:3: error: client 'b' has no identity: give it principals, namespaces, ipBlocks, headers or jwt",
        "<stdin>:9:30: error: rules[0].from: unknown client 'gatway' (clients: b, gateway); did you mean 'gateway'?",
        "<stdin>:10:33: error: rules[1].from lists 'b' twice",
    ]


def test_errors_are_capped_at_twenty() -> None:
    rules = "".join(f"  - {{allow: [healthz{i}], from: anyone}}\n" for i in range(25))
    result = meshgen("istio", "-", stdin=HEAD + "rules:\n" + rules)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 21
    assert lines[0].startswith("<stdin>:6:14: error: rules[0].allow[0]: invalid value 'healthz0'")
    assert lines[19].startswith("<stdin>:25:14: error: rules[19].allow[0]")
    assert lines[20] == "... and 5 more"


def test_check_keeps_the_error_location_on_bad_input() -> None:
    result = meshgen("check", "-", "--from", "anyone", "--grpc", "ModelInfer", stdin=TYPOS)
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr.splitlines()[1] == "<stdin>:6:11: error: unknown field 'workload.ports.htp'; did you mean 'http'?"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "gateway", "--grpc", "ModelInfr"],
            "error: --grpc: unknown gRPC method 'ModelInfr' (see the gRPC methods in docs/spec.md); "
            "did you mean 'ModelInfer'?",
        ),
        (
            ["--from", "gatway", "--grpc", "ModelInfer"],
            "error: --from: unknown client 'gatway' (one of: anyone, gateway, web, ops, admin, monitoring); "
            "did you mean 'gateway'?",
        ),
        (
            ["--from", "gateway", "--grpc", "ModelInfer", "--target", "ngnix"],
            "error: --target: unknown target 'ngnix' (one of: istio, envoy, nginx, triton); did you mean 'nginx'?",
        ),
    ],
)
def test_check_suggests_near_misses(args: list[str], message: str) -> None:
    result = meshgen("check", EXAMPLE, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [message]


# --- explanations that say why --------------------------------------------------------------------------------

NGINX_WITHHOLDS = (
    "withheld on nginx: nginx cannot read gRPC request bodies, where gRPC carries the model name; set "
    "grpcAllModels: true to grant them for every model, or use the envoy or istio target"
)


def test_check_names_the_withheld_grant_its_rule_and_what_would_change_it() -> None:
    result = meshgen("check", EXAMPLE, "--from", "gateway", "--grpc", "ModelInfer")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "DENY grpc POST /inference.GRPCInferenceService/ModelInfer: no rule allows it (default deny)",
        "  rules[1] (examples/triton-access.yaml:23:5) grants inference for models resnet50, densenet_onnx; over "
        "gRPC the grant is withheld unless the request message names one of them, and this request names none",
        "  would change it: --model resnet50 (a listed model), or grpcAllModels: true on rules[1] "
        "(every model over gRPC)",
        "  " + NGINX_WITHHOLDS,
    ]


def test_check_suggests_a_listed_model() -> None:
    result = meshgen("check", EXAMPLE, "--from", "web", "--grpc", "ModelInfer", "--model", "resnet5")
    assert result.returncode == 1
    assert "this request names 'resnet5'; did you mean 'resnet50'?" in result.stdout


def test_check_allow_notes_the_targets_that_withhold_it() -> None:
    result = meshgen("check", EXAMPLE, "--from", "gateway", "--grpc", "ModelInfer", "--model", "resnet50")
    assert result.returncode == 0
    assert result.stdout.splitlines()[1:] == ["  " + NGINX_WITHHOLDS]


def test_check_explains_streams_and_http_models() -> None:
    stream = meshgen("check", EXAMPLE, "--from", "gateway", "--grpc", "ModelStreamInfer", "--model", "resnet50")
    assert stream.returncode == 1
    assert "but never the stream ModelStreamInfer: a proxy sees only a stream's first message" in stream.stdout
    http = meshgen("check", EXAMPLE, "--from", "web", "--http", "GET /v2/models/resnet5")
    assert http.returncode == 1
    assert http.stdout.splitlines()[1] == (
        "  rules[1] (examples/triton-access.yaml:23:5) grants metadata only for models resnet50, densenet_onnx, "
        "not 'resnet5'; did you mean 'resnet50'?"
    )


PER_MODEL_ON_IPS = HEAD + (
    "clients:\n  lab: {ipBlocks: [10.1.0.0/16]}\n"
    "rules:\n  - allow: [inference]\n    models: [resnet50]\n    from: [lab]\n"
)


def test_check_target_decides_with_that_targets_capabilities() -> None:
    args = ["check", "-", "--from", "lab", "--grpc", "ModelInfer", "--model", "resnet50"]
    assert meshgen(*args, "--target", "envoy", stdin=PER_MODEL_ON_IPS).stdout.startswith("ALLOW")
    result = meshgen(*args, "--target", "nginx", stdin=PER_MODEL_ON_IPS)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "DENY grpc POST /inference.GRPCInferenceService/ModelInfer (model resnet50): no rule allows it "
        "(default deny) [as nginx enforces it]",
        "  rules[0] (<stdin>:8:5) grants inference for models resnet50; withheld on nginx: nginx cannot read gRPC "
        "request bodies, where gRPC carries the model name; set grpcAllModels: true to grant them for every model, "
        "or use the envoy or istio target",
    ]


def test_check_target_refusing_the_spec_exits_2_at_the_client() -> None:
    result = meshgen("check", EXAMPLE, "--from", "gateway", "--grpc", "ModelInfer", "--target", "nginx")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(
        "examples/triton-access.yaml:15:3: error: nginx: client 'gateway' (used by rules[1]) is identified by "
        "principals, which nginx cannot enforce"
    )


def test_explain_lists_withheld_grants() -> None:
    text = meshgen("explain", EXAMPLE)
    assert text.returncode == 0
    assert text.stdout.endswith(
        "Withheld grants (a rule grants them, these targets do not make them):\n"
        "  rules[1] (examples/triton-access.yaml:23:5): withheld on nginx: nginx cannot read gRPC request bodies, "
        "where gRPC carries the model name; not made: ModelInfer, ModelMetadata (models resnet50, densenet_onnx); "
        "set grpcAllModels: true to grant them for every model, or use the envoy or istio target\n"
    )
    data = json.loads(meshgen("explain", EXAMPLE, "--format", "json").stdout)
    assert data["withheld"] == [
        {
            "rule": 1,
            "location": "examples/triton-access.yaml:23:5",
            "feature": "per-model gRPC grants",
            "grants": ["ModelInfer", "ModelMetadata"],
            "models": ["resnet50", "densenet_onnx"],
            "targets": ["nginx"],
            "reason": "nginx cannot read gRPC request bodies, where gRPC carries the model name",
            "remedy": "set grpcAllModels: true to grant them for every model, or use the envoy or istio target",
        }
    ]


# --- init ----------------------------------------------------------------------------------------------------


def test_init_writes_a_starter_spec_that_passes_lint_strict(tmp_path: Path) -> None:
    result = meshgen("init")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    assert "  - allow: [health]  # liveness and readiness probes\n    from: anyone\n" in text
    assert "  - allow: [metrics]\n    from: [monitoring]\n" in text
    for kind in ("principals", "namespaces", "ipBlocks", "headers", "jwt"):
        assert re.search(rf"^  # \w+: \{{{kind}: ", text, re.MULTILINE), kind
    spec = tmp_path / "spec.yaml"
    assert meshgen("init", "-o", str(spec)).returncode == 0
    assert spec.read_text() == text.replace("meshgen lint spec.yaml", f"meshgen lint {spec}").replace(
        "explain spec.yaml", f"explain {spec}"
    ).replace("istio spec.yaml", f"istio {spec}")
    lint = meshgen("lint", str(spec), "--strict")
    assert (lint.returncode, lint.stderr) == (0, "")
    explained = json.loads(meshgen("explain", str(spec), "--format", "json").stdout)["access"]
    assert explained["anyone"]["health"]["http"]["access"] == "all"
    assert explained["monitoring"]["metrics"]["http"]["access"] == "all"
    assert explained["anyone"]["inference"]["grpc"]["access"] == "none"


def test_init_lists_the_models_of_a_triton_model_repository(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    for directory, config in [("resnet50", 'platform: "pytorch"\n'), ("dense", 'name: "densenet_onnx"\n')]:
        (repository / directory / "1").mkdir(parents=True)
        (repository / directory / "config.pbtxt").write_text(config)
    (repository / "not-a-model").mkdir()
    spec = tmp_path / "spec.yaml"
    result = meshgen("init", "--model-repository", str(repository), "-o", str(spec))
    assert result.returncode == 0, result.stderr
    text = spec.read_text()
    assert (
        "  # - allow: [inference, metadata]\n  #   models: [densenet_onnx, resnet50]\n  #   from: [gateway]\n" in text
    )
    assert meshgen("lint", str(spec), "--strict").returncode == 0
    # One edit away: uncomment the rule and a client.
    edited = text.replace("  # gateway:", "  gateway:").replace("  # - allow: [inference", "  - allow: [inference")
    edited = edited.replace("  #   models:", "    models:").replace("  #   from: [gateway]", "    from: [gateway]")
    check = meshgen("check", "-", "--from", "gateway", "--grpc", "ModelInfer", "--model", "resnet50", stdin=edited)
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    result = meshgen("init", "--model-repository", str(tmp_path / "none"), "-o", str(spec))
    assert result.returncode == 2 and not spec.exists()
    assert result.stderr == f"error: --model-repository: {str(tmp_path / 'none')!r} is not a directory\n"
    bad = meshgen("init", "--name", "Bad_Name")
    assert bad.returncode == 2 and bad.stdout == "" and "metadata.name" in bad.stderr


# --- diff ----------------------------------------------------------------------------------------------------


def narrowed(tmp_path: Path) -> Path:
    text = (ROOT / EXAMPLE).read_text()
    text = text.replace("models: [resnet50, densenet_onnx]", "models: [resnet50]")
    text = text.replace("from: [monitoring]", "from: [monitoring, ops]")
    path = tmp_path / "new.yaml"
    path.write_text(text)
    return path


def test_diff_unchanged_exits_0() -> None:
    result = meshgen("diff", EXAMPLE, EXAMPLE)
    assert (result.returncode, result.stdout) == (0, f"access unchanged: {EXAMPLE} -> {EXAMPLE}\n")


def test_diff_reordered_rules_and_renamed_files_are_no_change(tmp_path: Path) -> None:
    text = (ROOT / EXAMPLE).read_text()
    rules = text.index("rules:\n")
    body = text[rules:].split("standalone:")[0]
    reordered = tmp_path / "reordered.yaml"
    items = body.removeprefix("rules:\n").split("  - ")[1:]
    reordered.write_text(text[:rules] + "rules:\n" + "".join("  - " + i for i in reversed(items)))
    assert meshgen("diff", EXAMPLE, str(reordered)).returncode == 0


def test_diff_text_names_what_each_client_gains_and_loses(tmp_path: Path) -> None:
    new = narrowed(tmp_path)
    result = meshgen("diff", EXAMPLE, str(new))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"access changes: {EXAMPLE} -> {new}",
        "gateway:",
        "  - http metadata (model densenet_onnx)",
        "  - grpc metadata (model densenet_onnx)",
        "  - http inference (model densenet_onnx)",
        "  - grpc inference (model densenet_onnx): ModelInfer",
        "ops:",
        "  + metrics metrics",
        "web:",
        "  - http metadata (model densenet_onnx)",
        "  - grpc metadata (model densenet_onnx)",
        "  - http inference (model densenet_onnx)",
        "  - grpc inference (model densenet_onnx): ModelInfer",
    ]


def test_diff_markdown_and_whole_categories(tmp_path: Path) -> None:
    result = meshgen("diff", "tests/golden/default-deny/spec.yaml", EXAMPLE, "--format", "markdown")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"### Access changes: tests/golden/default-deny/spec.yaml → {EXAMPLE}"
    assert lines[2:4] == ["| client | change | protocol | category | model | endpoints |", "|---|---|---|---|---|---|"]
    assert "| anyone | gains | http | health | every model | all |" in lines
    assert "| gateway | gains | grpc | inference | resnet50 | ModelInfer |" in lines
    assert "| monitoring | gains | metrics | metrics |  | all |" in lines
    assert not any("shared-memory" in line for line in lines)


def test_diff_git_compares_with_the_committed_spec(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    spec = tmp_path / "spec.yaml"
    spec.write_text((ROOT / EXAMPLE).read_text())
    git("init", "-q")
    git("add", "spec.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec")
    assert meshgen("diff", "--git", "HEAD", "spec.yaml", cwd=tmp_path).returncode == 0
    spec.write_text(narrowed(tmp_path).read_text())
    result = meshgen("diff", "--git", "HEAD", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[:2] == ["access changes: HEAD:spec.yaml -> spec.yaml", "gateway:"]
    missing = meshgen("diff", "--git", "no-such-ref", "spec.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: --git: cannot read spec.yaml at no-such-ref: fatal:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([EXAMPLE], "error: give OLD and NEW, or --git REF and one spec"),
        ([EXAMPLE, EXAMPLE, "--format", "html"], "error: --format must be text or markdown"),
        ([EXAMPLE, "-"], "<stdin>:5:1: error: unknown field 'clinets'; did you mean 'clients'?"),
    ],
)
def test_diff_errors_exit_2(args: list[str], message: str) -> None:
    result = meshgen("diff", *args, stdin=HEAD + "clinets: {}\n")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [message]


# --- help ----------------------------------------------------------------------------------------------------

COMMANDS = ["istio", "envoy", "nginx", "triton", "all", "lint", "check", "explain", "init", "diff", "schema"]


def test_help_has_no_type_noise() -> None:
    for args in [[], *([command] for command in COMMANDS)]:
        result = meshgen(*args, "--help")
        assert result.returncode == 0
        assert "<bool>" not in result.stdout, args


def examples_of(command: str) -> list[str]:
    text = meshgen(command, "--help").stdout
    assert "Examples:" in text, command
    lines = [re.sub(r"[│\s]+$", "", line.strip(" │")) for line in text.split("Examples:", 1)[1].splitlines()]
    return [line for line in lines if line.startswith("meshgen ")]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_runnable_examples(command: str, tmp_path: Path) -> None:
    found = examples_of(command)
    assert 1 <= len(found) <= 2, found
    for example in found:
        assert example.startswith(f"meshgen {command}"), example
        for line in example.split(" && "):
            words = shlex.split(line)
            assert words[0] == "meshgen", example
            redirect = None
            if ">" in words:
                redirect = tmp_path / words[words.index(">") + 1]
                words = words[: words.index(">")]
            words = [
                str(tmp_path / w) if w in ("istio.yaml", "envoy.yaml", "nginx.conf", "spec.yaml") else w for w in words
            ]
            words = [str(tmp_path / "generated") if w == "deploy/generated" else w for w in words]
            words = [str(tmp_path / "models") if w == "/models" else w for w in words]
            if "--model-repository" in words:
                (tmp_path / "models" / "m").mkdir(parents=True, exist_ok=True)
                (tmp_path / "models" / "m" / "config.pbtxt").write_text('name: "m"\n')
            result = meshgen(*words[1:])
            if redirect is not None:
                redirect.write_text(result.stdout)
            # check: 0 allow / 1 deny; diff: 0 same / 1 changed; everything else 0.
            assert result.returncode in ((0, 1) if command in ("check", "diff") else (0,)), (example, result.stderr)


def test_a_tagged_key_is_an_error_not_a_crash() -> None:
    result = meshgen("istio", "-", stdin=HEAD + "!x rules: []\n")
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr == "<stdin>:5:1: error: mapping key 'rules': could not determine a constructor for the tag '!x'\n"
    )


def test_a_value_fitting_no_union_member_gets_one_error() -> None:
    result = meshgen("istio", "-", stdin=HEAD + 'clients:\n  k: {headers: {x-key: "a\\nb"}}\n')
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "<stdin>:6:17: error: clients.k.headers.x-key: header values must be 1-4096 visible ASCII characters "
        "(single inner spaces allowed), without control characters or surrounding whitespace"
    ]
