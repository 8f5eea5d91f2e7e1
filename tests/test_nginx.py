"""NGINX target: goldens, ``nginx -t`` and crossplane on every output, quoting, and refusals (exit 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]
import pytest

from meshgen.errors import TargetError
from meshgen.policy import Policy, compile_policy
from meshgen.policy.model import StandaloneSettings
from meshgen.spec import load_spec_text
from meshgen.targets.contract import lower
from meshgen.targets.nginx import config as nginx
from meshgen.targets.nginx import flags as nginx_flags
from meshgen.targets.nginx.quote import nginx_arg, regex_literal
from meshgen.targets.standalone import proxy_ports
from tests.support.goldens import cases_generated_by, golden_cases, load_case
from tests.support.nginx_process import NGINX, nginx_prefix, nginx_test_dropin, nginx_test_text
from tests.support.targets import NGINX as NGINX_TARGET
from tests.support.targets import nginx_output, port_addresses

# Addresses for every case (the same as the golden specs' standalone sections); openai only for the
# cases that serve it (_served).
GOLDEN_LISTEN = {
    "http": "127.0.0.1:18080",
    "grpc": "127.0.0.1:18081",
    "metrics": "127.0.0.1:18082",
    "openai": "127.0.0.1:19090",
}
GOLDEN_UPSTREAM = {
    "http": "127.0.0.1:8000",
    "grpc": "127.0.0.1:8001",
    "metrics": "127.0.0.1:8002",
    "openai": "127.0.0.1:9000",
}

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


def _policy(case: str) -> Policy:
    return compile_policy(load_case(case))


def _served(addresses: dict[str, str], policy: Policy) -> dict[str, str]:
    return {port: address for port, address in addresses.items() if port in policy.ports.served}


def _generate(case: str, **kwargs: object) -> str:
    policy = _policy(case)
    listen, upstream = _served(GOLDEN_LISTEN, policy), _served(GOLDEN_UPSTREAM, policy)
    return nginx_output(policy, listen=listen, upstream=upstream, **kwargs)  # type: ignore[arg-type]


EXPRESSIBLE = cases_generated_by("nginx.conf")  # the cases nginx does not refuse
INEXPRESSIBLE = [case for case in golden_cases() if case not in EXPRESSIBLE]


@pytest.mark.parametrize("case", INEXPRESSIBLE)
def test_identities_nginx_cannot_check_are_refused(case: str) -> None:
    with pytest.raises(TargetError, match="which nginx cannot enforce"):
        _generate(case)


def test_every_case_is_covered() -> None:
    assert set(EXPRESSIBLE) >= {"default-deny", "deny-allow-overlap", "every-category", "headers-and-ips"}


def _full(case: str, prefix: str | None = None) -> str:
    return _generate(case, full=True, daemon=False, prefix=prefix)


@needs_nginx
@pytest.mark.nginx
@pytest.mark.parametrize("case", EXPRESSIBLE)
@pytest.mark.parametrize("absolute_prefix", [False, True])
def test_full_config_passes_nginx_t(case: str, absolute_prefix: bool) -> None:
    with nginx_prefix() as prefix:
        result = nginx_test_text(_full(case, str(prefix) if absolute_prefix else None), prefix)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr


@needs_nginx
@pytest.mark.nginx
@pytest.mark.parametrize("case", EXPRESSIBLE)
def test_dropin_passes_nginx_t_inside_http(case: str) -> None:
    with nginx_prefix() as prefix:
        result = nginx_test_dropin(_generate(case), prefix)
    assert result.returncode == 0, result.stderr


def _directives(parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for directive in parsed:
        found.append(directive)
        found += _directives(directive.get("block", []))
    return found


@pytest.mark.parametrize("case", EXPRESSIBLE)
def test_full_config_parses_with_crossplane(case: str, tmp_path: Path) -> None:
    config = tmp_path / "nginx.conf"
    config.write_text(_full(case), encoding="utf-8")
    payload = crossplane.parse(str(config), single=True, check_ctx=True, check_args=True)
    assert payload["status"] == "ok", payload["errors"]
    directives = _directives(payload["config"][0]["parsed"])
    names = [d["directive"] for d in directives]
    assert "limit_except" not in names, "limit_except GET lets HEAD through"
    # One server per port the spec serves (the OpenAI frontend's too, where it does).
    servers = sum(1 for d in directives if d["directive"] == "server" and "block" in d)
    assert servers == len(_policy(case).ports.served)
    assert "daemon" in names and "realip" not in " ".join(map(str, names))
    for directive in directives:
        if directive["directive"] == "if":
            body = [d["directive"] for d in directive.get("block", [])]
            assert body == ["return"], f"only 'return' inside if (line {directive['line']})"
        if directive["directive"] == "map":
            spelling = directive["args"][1].endswith("_spelling")
            for entry in directive["block"]:
                key = entry["directive"]
                # Plain map keys compare case-insensitively: only default, 0/1 flag strings and regexes,
                # and model names in the spelling maps, whose value a case-sensitive guard compares.
                if spelling:
                    assert (
                        key.startswith(nginx_flags.MODEL_KEY_PREFIX)
                        and key[len(nginx_flags.MODEL_KEY_PREFIX) :] == entry["args"][0].split("/")[0].lower()
                    ), entry
                    continue
                assert key == "default" or set(key) <= {"0", "1"} or key.startswith("~"), key
                assert not key.startswith("~*"), key
            if spelling:
                guard = [
                    d
                    for d in directives
                    if d["directive"] == "map" and d["args"][0].endswith("/$" + directive["args"][1][1:])
                ]
                assert len(guard) == 1 and guard[0]["block"][1]["directive"] == nginx_flags.SPELLING_GUARD


def test_every_location_denies_or_checks_the_method() -> None:
    policy = _policy("deny-allow-overlap")
    lowered = lower(policy, "nginx", NGINX_TARGET.capabilities(policy, NGINX_TARGET.options_type())).policy
    context = nginx.build_context(
        lowered,
        proxy_ports(
            lowered,
            "nginx",
            port_addresses(_served(GOLDEN_LISTEN, lowered)),
            port_addresses(_served(GOLDEN_UPSTREAM, lowered)),
        ),
    )
    for server in context["servers"]:
        for location in server["locations"]:
            assert location.deny_all or location.checks[0].variable.startswith(("request_method", "mg_method"))


def test_full_paths_relative_by_default_or_under_prefix() -> None:
    relative = _full("default-deny")
    assert "pid nginx.pid;" in relative and "daemon off;" in relative
    for name in nginx.TEMP_PATHS:
        assert f"{name}_temp_path {name}_temp;" in relative
    absolute = _generate("default-deny", full=True, daemon=True, prefix="/srv/mg/")
    assert "pid /srv/mg/nginx.pid;" in absolute and "daemon off" not in absolute
    with pytest.raises(TargetError, match="absolute"):
        _generate("default-deny", full=True, prefix="relative/dir")
    with pytest.raises(TargetError, match="cannot write"):
        _generate("default-deny", full=True, prefix="/srv/$evil")


def test_dropin_needs_addresses() -> None:
    with pytest.raises(TargetError, match="no listen address for the http port"):
        nginx_output(dataclasses.replace(_policy("default-deny"), standalone=StandaloneSettings()))


@pytest.mark.parametrize("case", EXPRESSIBLE)
def test_dry_run_denies_nothing(case: str) -> None:
    """No return at all (so no 403 or 400), and every location forwards."""
    text = _generate(case, dry_run=True)
    assert "return " not in text and "deny " not in text.replace('"deny ', "")
    assert "log_format meshgen_dry_run" in text and "access_log /var/log/nginx/meshgen-dry-run.log" in text
    lines = [line.strip() for line in text.splitlines()]
    locations = sum(line.startswith("location ") for line in lines)
    assert locations == sum(line.startswith(("proxy_pass ", "grpc_pass ")) for line in lines)


def test_dry_run_log_path_follows_prefix() -> None:
    assert "access_log /srv/mg/meshgen-dry-run.log meshgen_dry_run;" in _generate(
        "default-deny", dry_run=True, prefix="/srv/mg"
    )
    assert "access_log access.log meshgen_dry_run;" in _generate("default-deny", dry_run=True, full=True)
    with pytest.raises(TargetError, match="absolute"):
        _generate("default-deny", dry_run=True, prefix="relative")


@needs_nginx
@pytest.mark.nginx
@pytest.mark.parametrize("case", EXPRESSIBLE)
@pytest.mark.parametrize("full", [False, True])
def test_dry_run_passes_nginx_t(case: str, full: bool) -> None:
    """The full config, and the drop-in inside a minimal http{} (log_format and map valid there)."""
    with nginx_prefix() as prefix:
        if full:
            result = nginx_test_text(_generate(case, dry_run=True, full=True, daemon=False), prefix)
        else:
            result = nginx_test_dropin(_generate(case, dry_run=True, prefix=str(prefix)), prefix)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr


def _many_models_spec(count: int) -> str:
    models = ", ".join(f"model-{i:05d}" for i in range(count))
    return f"""apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {{name: many, namespace: n}}
workload: {{selector: {{app: t}}}}
clients:
  team: {{ipBlocks: ["10.0.0.0/8"]}}
  key: {{headers: {{x-key: "K1"}}}}
rules:
  - {{allow: [inference, metadata], models: [{models}], from: [team]}}
  - {{allow: [model-repository], models: [{models}, {"L" * 150}], from: [key]}}
  - {{deny: [inference], models: [model-00007, Model-00007], from: anyone}}
standalone:
  listen: {{http: "127.0.0.1:1", grpc: "127.0.0.1:2", metrics: "127.0.0.1:3"}}
  upstream: {{http: "127.0.0.1:4", grpc: "127.0.0.1:5", metrics: "127.0.0.1:6"}}
"""


@needs_nginx
@pytest.mark.nginx
def test_5000_models_pass_nginx_t_without_hash_warnings() -> None:
    """Model lists are hash maps: nginx -t passes, no "could not build optimal map_hash" warning, and
    the number of regex locations does not grow with the number of models."""
    counts = {}
    for count in (10, 5000):
        policy = compile_policy(load_spec_text(_many_models_spec(count).encode(), "<many>"))
        text = nginx_output(policy, full=True, daemon=False)
        counts[count] = text.count("location ~")
        with nginx_prefix() as prefix:
            result = nginx_test_text(text, prefix)
        assert result.returncode == 0, result.stderr
        assert "warn" not in result.stderr and "optimal" not in result.stderr, result.stderr
    assert counts[10] == counts[5000]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain/path-1.conf", "plain/path-1.conf"),
        ("with space", '"with space"'),
        ('q"uote;{}', '"q\\"uote;{}"'),
        ("^/v2/[^/]+\\z", '"^/v2/[^/]+\\z"'),  # nginx keeps a backslash that starts no escape
        ("a\\tb", '"a\\\\tb"'),  # ... and unescapes \\t to a tab, so that one is doubled
    ],
)
def test_nginx_arg_quotes_values(value: str, written: str, tmp_path: Path) -> None:
    assert nginx_arg(value) == written
    if "\\\\" not in written:  # crossplane does not unescape backslashes, nginx does
        config = tmp_path / "x.conf"
        config.write_text(f"x {written};\n", encoding="utf-8")
        parsed = crossplane.parse(str(config), single=True, check_ctx=False, check_args=False)
        assert parsed["config"][0]["parsed"][0]["args"] == [value]


@pytest.mark.parametrize("value", ["$host", "new\nline", "tab\t", "caf\u00e9"])
def test_nginx_arg_refuses_what_it_cannot_hold(value: str) -> None:
    with pytest.raises(TargetError):
        nginx_arg(value)


def test_regex_literal_escapes_everything_but_word_characters() -> None:
    assert regex_literal("churn.v2-a_b") == "churn\\x2ev2\\x2da_b"


# --- refusals through the CLI: exit 2 and nothing written -------------------------------------------

SPEC_TEMPLATE = """apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {{name: probe, namespace: n}}
workload: {{selector: {{app: t}}}}
clients:
  key: {{headers: {{x-key: {header}}}}}
rules:
  - {{allow: [inference], models: [{model}], from: [key]}}
standalone:
  listen: {{http: "127.0.0.1:1", grpc: "127.0.0.1:2", metrics: "127.0.0.1:3"}}
  upstream: {{http: "127.0.0.1:4", grpc: "127.0.0.1:5", metrics: "127.0.0.1:6"}}
"""
HOSTILE = [";", "}", "{", '"', "'", " x", "|", "$", "\\n"]


def _cli(spec: str, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgen", "nginx", "-", "--full", "-o", str(output)],
        input=spec,
        capture_output=True,
        text=True,
        check=False,
    )


def test_probe_spec_itself_is_accepted(tmp_path: Path) -> None:
    result = _cli(SPEC_TEMPLATE.format(header='"Key-1"', model="ok"), tmp_path / "out.conf")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_model_name_is_refused_before_writing(hostile: str, tmp_path: Path) -> None:
    out = tmp_path / "out.conf"
    model = '"evil' + hostile.replace('"', '\\"') + 'x"'
    result = _cli(SPEC_TEMPLATE.format(header='"Key-1"', model=model), out)
    assert result.returncode == 2, (model, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_header_value_is_refused_before_writing(hostile: str, tmp_path: Path) -> None:
    out = tmp_path / "out.conf"
    header = '"Key' + hostile.replace('"', '\\"') + 'x"'
    result = _cli(SPEC_TEMPLATE.format(header=header, model="ok"), out)
    assert result.returncode == 2, (header, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and not out.exists()
    errors = [line for line in result.stderr.splitlines() if ": error: " in line or line.startswith("error:")]
    assert len(errors) == 1 and "x-key" in errors[0], result.stderr


def test_header_value_refusal_names_client_and_character() -> None:
    loaded = load_spec_text(SPEC_TEMPLATE.format(header='"a|b"', model="ok").encode(), "<probe>")
    with pytest.raises(TargetError, match=r"client 'key': header 'x-key'.*'\|'"):
        nginx_output(compile_policy(loaded))
