"""Envoy target: structure of the RBAC filters, errors, and `envoy --mode validate` (goldens: test_targets.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshgen.errors import TargetError
from meshgen.policy import Policy, compile_policy
from meshgen.spec import LoadedSpec, load_spec_text
from meshgen.spec.model import Standalone, Tls
from meshgen.targets.envoy.rbac import HEADER_INPUT, HEADER_INPUT_TYPE, RBAC_FILTER, path_predicates
from tests.support.envoy_process import validate
from tests.support.goldens import golden_cases, load_case
from tests.support.pki import TestCA
from tests.support.processes import free_port
from tests.support.targets import envoy_output

ANY_INPUT = {"name": HEADER_INPUT, "typed_config": {"@type": HEADER_INPUT_TYPE, "header_name": ":path"}}


def _policy(loaded: LoadedSpec) -> Policy:
    return compile_policy(loaded)


def _with_tls(loaded: LoadedSpec, tls: Tls) -> LoadedSpec:
    standalone = loaded.spec.standalone or Standalone()
    spec = loaded.spec.model_copy(update={"standalone": standalone.model_copy(update={"tls": tls})})
    return LoadedSpec(spec, loaded.source)


def _needs_mtls(policy: Policy) -> bool:
    return any(client.needs_mtls for rule in policy.rules for client in rule.clients or ())


def _filters(policy: Policy, **kwargs: Any) -> list[dict[str, Any]]:
    """The RBAC filters of the filter-only output (the gRPC model guard, if any, left out)."""
    loaded: list[dict[str, Any]] = yaml.safe_load(envoy_output(policy, **kwargs))
    return [entry for entry in loaded if entry["name"] == RBAC_FILTER]


def test_the_grpc_model_guard_comes_first_and_only_where_a_rule_limits_grpc_to_models() -> None:
    names = [f["name"] for f in yaml.safe_load(envoy_output(_policy(load_case("headers-and-ips"))))]
    assert names == ["meshgen.grpc_model_guard", RBAC_FILTER]
    without = [f["name"] for f in yaml.safe_load(envoy_output(_policy(load_case("every-category"))))]
    assert "meshgen.grpc_model_guard" not in without


def _default(entry: dict[str, Any], field: str = "matcher") -> str:
    action: str = entry["typed_config"][field]["on_no_match"]["action"]["typed_config"]["action"]
    return action


def _entries(entry: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = entry["typed_config"]["matcher"]["matcher_list"]["matchers"]
    return entries


def _action_names(value: Any) -> set[str]:
    """Every RBAC action name anywhere under ``value``."""
    if isinstance(value, dict):
        found = {value["name"]} if value.get("@type", "").endswith("rbac.v3.Action") else set()
        return found.union(*(_action_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_action_names(v) for v in value))
    return set()


def test_one_first_match_filter_deny_entries_before_allow_entries() -> None:
    """One RBAC filter: its first-match list holds every deny entry before every allow entry, then denies."""
    for case in ("headers-and-ips", "identity-kinds"):
        filters = _filters(_policy(load_case(case)))
        assert len(filters) == 1 and _default(filters[0]) == "DENY"
        actions = [
            e["on_match"]["action"]["typed_config"]["action"] for e in _entries(filters[0]) if "action" in e["on_match"]
        ]
        assert actions == sorted(actions, key=lambda action: action != "DENY"), (case, actions)
        assert ("DENY" in actions) == (case == "headers-and-ips"), case  # only it has deny rules


def test_policy_names_and_identity_matchers() -> None:
    filters = _filters(_policy(load_case("identity-kinds")))
    names = _action_names(filters[-1])
    assert "rules[0]-from[by-principal]" in names and "rules[1]-from[principal-and-ip]" in names
    text = yaml.safe_dump(filters[-1])
    assert "envoy.matching.inputs.uri_san" in text and "exact: spiffe://cluster.local/ns/a/sa/one" in text
    assert r"regex: spiffe://[^/]+/ns/team\-x/sa/[^/]+" in text
    assert "envoy.matching.inputs.direct_source_ip" in text and "address_prefix: 10.50.0.0" in text


def test_destination_port_only_in_filter_output() -> None:
    policy = _policy(load_case("headers-and-ips"))
    assert "envoy.matching.inputs.destination_port" in envoy_output(policy)
    assert "destination_port" not in envoy_output(policy, bootstrap=True)


def test_excluded_stats_path_uses_not_matcher() -> None:
    text = envoy_output(_policy(load_case("every-category")))
    assert "not_matcher" in text and "exact: /v2/models/stats" in text


def test_per_model_grants_are_a_trie_behind_a_shape_gate() -> None:
    filters = _filters(_policy(load_case("per-model")))
    tries = [e for e in _entries(filters[-1]) if "matcher" in e["on_match"]]
    keys = {
        key
        for e in tries
        for kind in ("prefix_match_map", "exact_match_map")
        for key in e["on_match"]["matcher"]["matcher_tree"].get(kind, {}).get("map", {})
    }
    assert {"/v2/models/fraud-detect/", "/v2/models/churn.v2", "/v2/models/churn.v2?"} <= keys
    # No regex ever lists model names: the RE2 program size does not grow with the models.
    regexes = [line for line in yaml.safe_dump(filters).splitlines() if "regex:" in line]
    assert not any("fraud" in line or "churn" in line for line in regexes)


def test_dry_run_uses_shadow_matcher_only() -> None:
    for entry in _filters(_policy(load_case("headers-and-ips")), dry_run=True):
        config = entry["typed_config"]
        assert "matcher" not in config and "rules" not in config and "rules_stat_prefix" not in config
        assert config["shadow_matcher"]["matcher_list"]["matchers"] and config["shadow_rules_stat_prefix"]


def test_bootstrap_needs_tls_for_principals() -> None:
    loaded = load_case("triton-access")
    assert loaded.spec.standalone is not None
    without_tls = loaded.spec.model_copy(update={"standalone": loaded.spec.standalone.model_copy(update={"tls": None})})
    with pytest.raises(TargetError, match=r"standalone\.tls"):
        envoy_output(_policy(LoadedSpec(without_tls, loaded.source)), bootstrap=True)


NO_STANDALONE = """apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: t, namespace: n}
workload: {selector: {app: t}}
"""


def test_bootstrap_needs_addresses() -> None:
    with pytest.raises(TargetError, match="--listen-http"):
        envoy_output(_policy(load_spec_text(NO_STANDALONE, "s.yaml", {})), bootstrap=True)
    ports = {"http": "127.0.0.1:1", "grpc": "127.0.0.1:2", "metrics": "127.0.0.1:3"}
    with pytest.raises(TargetError, match=r"no upstream address for the grpc port.*--upstream-grpc"):
        envoy_output(
            _policy(load_spec_text(NO_STANDALONE, "s.yaml", {})),
            bootstrap=True,
            listen=ports,
            upstream={"http": "127.0.0.1:4"},
        )


def test_admin_only_when_asked() -> None:
    policy = _policy(load_case("headers-and-ips"))
    assert "admin" not in yaml.safe_load(envoy_output(policy, bootstrap=True))
    with_admin = yaml.safe_load(envoy_output(policy, bootstrap=True, admin="127.0.0.1:9901"))
    assert with_admin["admin"] == {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}
    with pytest.raises(ValueError, match="host:port"):
        envoy_output(policy, bootstrap=True, admin="nonsense")


def test_path_predicates_read_the_raw_path_with_its_query() -> None:
    assert path_predicates(("v2", "health", "live")) == [
        {"single_predicate": {"input": ANY_INPUT, "value_match": {"exact": "/v2/health/live"}}},
        {"single_predicate": {"input": ANY_INPUT, "value_match": {"prefix": "/v2/health/live?"}}},
    ]
    [wild] = path_predicates(("v2", "models", "*", "infer"))
    assert wild["single_predicate"]["value_match"]["safe_regex"]["regex"] == r"/v2/models/[^/?]+/infer(?:\?.*)?"


def _bootstrap_for(case: str, directory: Path, ca: TestCA | None, dry_run: bool = False) -> Path:
    loaded = load_case(case)
    policy = _policy(loaded)
    if _needs_mtls(policy):
        assert ca is not None
        server = ca.issue("envoy", server=True)
        policy = _policy(_with_tls(loaded, Tls(cert=str(server.cert), key=str(server.key), clientCA=str(ca.ca.cert))))
    addresses: dict[str, str] = {port: f"127.0.0.1:{free_port()}" for port in policy.ports.served}
    text = envoy_output(
        policy, bootstrap=True, listen=addresses, upstream=addresses, admin=f"127.0.0.1:{free_port()}", dry_run=dry_run
    )
    path = directory / f"{case}{'-dry-run' if dry_run else ''}.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.envoy
@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("case", golden_cases())
def test_bootstrap_passes_envoy_validate(case: str, dry_run: bool, tmp_path: Path) -> None:
    path = _bootstrap_for(case, tmp_path, TestCA(tmp_path), dry_run)
    started = time.monotonic()
    result = validate(path)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Deprecated field" not in output and "deprecated" not in output.lower(), output
    assert elapsed < 10


@pytest.mark.envoy
@pytest.mark.golden
@pytest.mark.parametrize(
    "case",
    [
        c
        for c in golden_cases()
        if load_case(c).spec.standalone is not None
        and load_case(c).spec.standalone.tls is None  # type: ignore[union-attr]
        and not _needs_mtls(_policy(load_case(c)))
    ],
)
def test_golden_bootstrap_passes_envoy_validate(case: str) -> None:
    from tests.support.goldens import GOLDEN_DIR

    result = validate(GOLDEN_DIR / case / "envoy-bootstrap.json")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Deprecated field" not in output, output
