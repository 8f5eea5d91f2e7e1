"""The command line: exit codes, one-line errors on stderr, stdin, and nothing written on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "triton-access.yaml"
BROKEN = (
    "apiVersion: meshgen/v1\nkind: TritonAccessPolicy\nmetadata: {name: t, namespace: n}\n"
    "workload: {selector: {app: t}}\nrules:\n  - {allow: [health], from: [ghost]}\n"
)


def meshgen(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgen", *args], input=stdin, capture_output=True, text=True, env=env, check=False
    )


def test_example_prints_istio_resources_with_a_warning_per_withheld_rule() -> None:
    result = meshgen("istio", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("apiVersion: security.istio.io/v1\n")
    assert result.stdout.count("kind: AuthorizationPolicy") == 2
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{EXAMPLE}:23:5: warning: rules[1]:")


def test_spec_from_stdin() -> None:
    result = meshgen("istio", "-", stdin=EXAMPLE.read_text())
    assert result.returncode == 0 and "triton-allow" in result.stdout
    assert "<stdin>:23:5: warning" in result.stderr


def test_bad_spec_exits_2_with_one_line_and_no_traceback() -> None:
    result = meshgen("istio", "-", stdin=BROKEN)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "<stdin>:6:30: error: rules[0].from: unknown client 'ghost' (clients: none defined)"
    ]


def test_missing_file_exits_2() -> None:
    result = meshgen("istio", "/nonexistent/spec.yaml")
    assert result.returncode == 2 and "cannot read spec" in result.stderr and "Traceback" not in result.stderr


def test_output_file_is_written_atomically_and_kept_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "istio.yaml"
    assert meshgen("istio", str(EXAMPLE), "-o", str(out)).returncode == 0
    good = out.read_bytes()
    assert good.startswith(b"apiVersion")
    result = meshgen("istio", "-", "-o", str(out), stdin=BROKEN)
    assert result.returncode == 2
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["istio.yaml"]


def test_failed_run_creates_no_file(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    assert meshgen("istio", "-", "-o", str(out), stdin=BROKEN).returncode == 2
    assert not out.exists()


def test_env_header_missing_exits_2() -> None:
    spec = BROKEN.replace(
        "rules:\n  - {allow: [health], from: [ghost]}\n",
        "clients:\n  admin: {headers: {x-admin: {env: MESHGEN_TEST_UNSET}}}\n",
    )
    result = meshgen("istio", "-", stdin=spec, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "MESHGEN_TEST_UNSET is not set" in result.stderr


@pytest.mark.parametrize("args", [["--version"], ["istio", "--help"]])
def test_informational_commands(args: list[str]) -> None:
    result = meshgen(*args)
    assert result.returncode == 0 and result.stdout


def test_usage_error_exits_2() -> None:
    assert meshgen("istio").returncode == 2
