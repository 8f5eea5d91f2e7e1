"""The target contract, for every registered target: goldens, capability tables, encoders, CLI, bundle.

Each test loops over ``meshgen.targets.registry.TARGETS``, so a new target is covered by adding it there.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from meshgen.bundle import KUSTOMIZATION, build_bundle, output_names
from meshgen.errors import TargetError
from meshgen.features import IDENTITY_FEATURES, Feature
from meshgen.policy import compile_policy
from meshgen.policy.identity import Headers, IpBlocks, Jwt, Namespaces, Principals
from meshgen.spec import load_spec_text
from meshgen.targets.contract import (
    Enforced,
    PortAddressFlags,
    Refused,
    Target,
    Withheld,
    cli_options,
    lower,
)
from meshgen.targets.registry import TARGETS
from tests.support.goldens import all_golden_cases, assert_golden_directory, load_case

KINDS = {
    Principals: Feature.PRINCIPALS,
    Namespaces: Feature.NAMESPACES,
    IpBlocks: Feature.IP_BLOCKS,
    Headers: Feature.HEADERS,
    Jwt: Feature.JWT,
}
TARGET_IDS = [target.name for target in TARGETS]


@pytest.mark.golden
@pytest.mark.parametrize("case", all_golden_cases())
def test_golden_directory_is_the_bundle(case: str, update_goldens: bool) -> None:
    """tests/golden/<case>/ = the files `meshgen all` writes + <output>.error per refusal + variants."""
    assert_golden_directory(case, update_goldens)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("case", all_golden_cases())
def test_every_output_is_deterministic(target: Target[Any], case: str) -> None:
    policy = compile_policy(load_case(case))
    for output in target.outputs:
        try:
            first = target.generate(policy, output.options).text
        except TargetError:
            continue
        assert target.generate(compile_policy(load_case(case)), output.options).text == first


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_capability_table_has_a_row_for_every_feature(target: Target[Any]) -> None:
    policy = compile_policy(load_case("triton-access"))
    for options in {output.options for output in target.outputs} | {target.options_type()}:
        assert set(target.capabilities(policy, options)) == set(Feature), target.name


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_encoder_table_covers_exactly_the_enforced_identity_kinds(target: Target[Any]) -> None:
    """Adding an identity kind = one row per target: a kind is enforced iff the target can encode it."""
    policy = compile_policy(load_case("triton-access"))
    enforced = {
        kind
        for kind, feature in KINDS.items()
        if isinstance(target.capabilities(policy, target.options_type())[feature], Enforced)
    }
    assert target.encoded_kinds() == enforced
    assert set(KINDS.values()) == IDENTITY_FEATURES


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_dry_run_option_matches_the_table(target: Target[Any]) -> None:
    names = [name for name, _ in cli_options(target.options_type)]
    support = target.capabilities(compile_policy(load_case("default-deny")), target.options_type())[Feature.DRY_RUN]
    assert ("dry_run" in names) == isinstance(support, Enforced)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_cli_command_offers_every_declared_flag(target: Target[Any]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshgen", target.name, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    for _, option in cli_options(target.options_type):
        flags = (
            [f"--{option.prefix}-{p}" for p in ("http", "grpc", "metrics")]
            if isinstance(option, PortAddressFlags)
            else [option.name]
        )
        for flag in flags:
            assert flag in result.stdout, (target.name, flag)


def test_output_names_are_unique_and_kustomization_lists_every_kubernetes_file() -> None:
    names = output_names()
    assert len(names) == len(set(names)) and names[-1] == KUSTOMIZATION
    bundle = build_bundle(compile_policy(load_case("headers-and-ips")))
    kubernetes = [o.name for t in TARGETS for o in t.outputs if o.kubernetes]
    assert yaml.safe_load(bundle.files[KUSTOMIZATION])["resources"] == kubernetes


HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: t, namespace: n}
workload: {selector: {app: t}}
"""


def _policy(body: str) -> Any:
    return compile_policy(load_spec_text(HEAD + body, "s.yaml", {}))


def test_refused_identity_kind_names_the_client_its_rules_and_location() -> None:
    policy = _policy(
        "clients:\n  mesh: {principals: [cluster.local/ns/a/sa/b]}\nrules:\n  - {allow: [health], from: [mesh]}\n"
    )
    table = {feature: Enforced() for feature in Feature} | {Feature.PRINCIPALS: Refused("why", "what to do")}
    with pytest.raises(TargetError) as raised:
        lower(policy, "probe", table)
    assert str(raised.value) == (
        "s.yaml:6:3: error: probe: client 'mesh' (used by rules[0]) is identified by "
        "principals, which probe cannot enforce: why; dropping it would widen the rule; "
        "what to do"
    )


def test_withheld_narrowing_drops_allow_grants_and_widens_denies_to_every_model() -> None:
    policy = _policy(
        "clients:\n  a: {ipBlocks: [10.0.0.0/8]}\n"
        "rules:\n  - {allow: [inference], models: [m1], from: [a]}\n"
        "  - {deny: [inference], models: [m1], from: anyone}\n"
    )
    table = {feature: Enforced() for feature in Feature} | {Feature.PER_MODEL_HTTP: Withheld("no paths", "try x")}
    lowered = lower(policy, "probe", table)
    allow, deny = lowered.policy.rules
    assert allow.http == () and all(g.models is not None for g in allow.grpc)
    assert deny.http and all(g.models is None for g in deny.http)
    [withholding] = lowered.withheld
    assert withholding.rule.index == 0 and withholding.feature is Feature.PER_MODEL_HTTP
    assert str(withholding.warning()).startswith(
        "s.yaml:8:5: warning: rules[0]: probe cannot enforce per-model "
        "HTTP grants: no paths; so these grants are NOT made: POST "
    )


def test_lowering_never_widens_an_allow() -> None:
    """Every target: the lowered allow grants are a subset of the compiled ones."""
    for case in all_golden_cases():
        policy = compile_policy(load_case(case))
        for target in TARGETS:
            for output in target.outputs:
                try:
                    lowered = lower(policy, target.name, target.capabilities(policy, output.options))
                except TargetError:
                    continue
                for before, after in zip(policy.rules, lowered.policy.rules, strict=True):
                    if before.action == "allow":
                        assert set(after.http) <= set(before.http) and set(after.grpc) <= set(before.grpc)
