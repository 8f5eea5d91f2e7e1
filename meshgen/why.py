"""Why a request is decided as it is: grants a rule would make but that are withheld, and from whom.

``meshgen check`` prints these notes under its verdict, ``meshgen explain`` lists the withheld grants of the
whole spec. Both name the rule that would grant, the target(s) that withhold and why, and what would change it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from meshgen.catalog import GrpcMethod, HttpMatch, load_catalog
from meshgen.errors import MeshgenError, did_you_mean
from meshgen.features import Feature
from meshgen.policy import Decision, Request
from meshgen.policy.decide import EVERY_FEATURE, _caller, _from_matches, _resolve
from meshgen.spec import LoadedSpec, Rule
from meshgen.targets.contract import Capabilities, Withheld, enforced_features


@dataclass(frozen=True)
class TargetView:
    """One target's view of the spec: its effective capability table and what it therefore enforces."""

    name: str
    capabilities: Capabilities

    @property
    def enforced(self) -> frozenset[Feature]:
        return enforced_features(self.capabilities)


def target_view(loaded: LoadedSpec, name: str) -> TargetView:
    """The target ``name`` with its default options; refuses (TargetError, at the client) what it cannot do."""
    from meshgen.policy import compile_policy
    from meshgen.targets.contract import lower
    from meshgen.targets.registry import TARGETS

    by_name = {target.name: target for target in TARGETS}
    if name not in by_name:
        raise MeshgenError(
            f"--target: unknown target {name!r} (one of: {', '.join(by_name)})" + did_you_mean(name, list(by_name))
        )
    target = by_name[name]
    policy = compile_policy(loaded)
    capabilities = target.effective_capabilities(policy, target.options_type())
    lower(policy, name, capabilities)  # a client the target cannot identify: the target refuses the spec
    return TargetView(name, capabilities)


def withholding_targets(loaded: LoadedSpec, feature: Feature) -> list[tuple[str, Withheld]]:
    """Proxy targets (not Triton's flags) that withhold grants needing ``feature``, and their reasons."""
    from meshgen.policy import compile_policy
    from meshgen.targets.registry import TARGETS

    policy = compile_policy(loaded)
    found = []
    for target in TARGETS:
        if target.name == "triton":
            continue
        support = target.effective_capabilities(policy, target.options_type())[feature]
        if isinstance(support, Withheld):
            found.append((target.name, support))
    return found


def check_grpc_method(request: Request, decision: Decision) -> None:
    """An unknown gRPC method is a typo more often than a question: refuse it, with a suggestion."""
    if request.protocol == "grpc" and decision.reason.startswith("unknown gRPC method"):
        names = [method.name for method in load_catalog().grpc]
        asked = request.path.rsplit("/", 1)[-1]
        raise MeshgenError(
            f"--grpc: unknown gRPC method {asked!r} (see the gRPC methods in docs/spec.md)" + did_you_mean(asked, names)
        )


def check_notes(
    loaded: LoadedSpec,
    request: Request,
    decision: Decision,
    enforced: Collection[Feature] = EVERY_FEATURE,
    target: TargetView | None = None,
) -> list[str]:
    """Notes for ``meshgen check``: the grants that do not apply to this request although a rule's
    categories and clients cover it, why, and what would change that."""
    if decision.token is not None or (not decision.allowed and decision.rule_index is not None):
        return []  # a refused credential or a deny rule decides; no grant could change it
    spec = loaded.spec
    caller = _caller(spec, request.identity, enforced, time.time())
    reached = _resolve(spec, request)
    if isinstance(caller, Decision) or isinstance(reached, str):
        return []
    category = reached.category if isinstance(reached, GrpcMethod) else reached.endpoint.category
    notes: list[str] = []
    for index, rule in enumerate(spec.rules):
        if rule.action != "allow" or category not in rule.categories or rule.models is None:
            continue
        if not _from_matches(spec, rule, caller):
            continue
        where = f"rules[{index}] ({loaded.location('rules', index)})"
        if decision.allowed:
            if decision.rule_index == index and isinstance(reached, GrpcMethod) and not rule.grpc_all_models:
                notes += _withheld_elsewhere(loaded, index, target)
            continue
        if isinstance(reached, HttpMatch) and reached.endpoint.body_model:
            notes.append(_json_body_note(where, rule, category, reached, request))
        elif isinstance(reached, HttpMatch):
            notes.append(_http_note(where, rule, category, reached))
        else:
            notes += _grpc_notes(loaded, index, where, rule, category, reached, request, enforced, target)
    return notes


def _models(rule: Rule) -> str:
    return ", ".join(rule.models or ())


def _json_body_note(where: str, rule: Rule, category: str, reached: HttpMatch, request: Request) -> str:
    """An OpenAI inference route: the model is the JSON body's, which the proxy must be able to read."""
    named = f"names {request.body_model!r}" if request.body_model else "names no model the proxy can read"
    return (
        f'{where} grants {category} on {reached.endpoint.template} only when the JSON body\'s "model" is one of '
        f"{_models(rule)}, and this request {named}; pass --model NAME (a listed model); proxies that cannot "
        "read JSON bodies (nginx) withhold the grant"
    )


def _http_note(where: str, rule: Rule, category: str, reached: HttpMatch) -> str:
    if reached.model is None:
        return (
            f"{where} grants {category} only for models {_models(rule)}, and "
            f"{reached.endpoint.template} names no model: a rule without 'models' grants it"
        )
    return f"{where} grants {category} only for models {_models(rule)}, not {reached.model!r}" + did_you_mean(
        reached.model, rule.models or []
    )


def _grpc_notes(
    loaded: LoadedSpec,
    index: int,
    where: str,
    rule: Rule,
    category: str,
    method: GrpcMethod,
    request: Request,
    enforced: Collection[Feature],
    target: TargetView | None,
) -> list[str]:
    every_model = f"or set grpcAllModels: true on rules[{index}] (every model over gRPC)"
    if not method.model_scoped:
        return [
            f"{where} grants {category} only for models {_models(rule)}, and {method.name} names no model: "
            "a rule without 'models' grants it"
        ]
    if method.streaming:
        return [
            f"{where} grants {category} for models {_models(rule)}, but never the stream {method.name}: a proxy sees "
            f"only a stream's first message, later ones could name any model; {every_model.removeprefix('or ')}"
        ]
    reads_body = Feature.PER_MODEL_GRPC in enforced and loaded.spec.body_inspection.enabled
    if not reads_body and target is not None:
        support = target.capabilities[Feature.PER_MODEL_GRPC]
        reason = support.reason if isinstance(support, Withheld) else "it does not read gRPC bodies"
        remedy = support.remedy if isinstance(support, Withheld) else every_model.removeprefix("or ")
        return [f"{where} grants {category} for models {_models(rule)}; withheld on {target.name}: {reason}; {remedy}"]
    notes = [
        f"{where} grants {category} for models {_models(rule)}; over gRPC the grant is withheld unless the request "
        "message names one of them, and "
        + (
            "this request names none"
            if request.body_model == ""
            else f"this request names {request.body_model!r}" + did_you_mean(request.body_model, rule.models or [])
        )
    ]
    if request.body_model is None:
        notes[0] = f"{where} grants {category} for models {_models(rule)}; over gRPC only to a message that names one"
    example = (rule.models or ["NAME"])[0]
    notes.append(f"would change it: --model {example} (a listed model), or {every_model.removeprefix('or set ')}")
    if target is None:
        notes += _withheld_elsewhere(loaded, index, None)
    return notes


def _withheld_elsewhere(loaded: LoadedSpec, index: int, target: TargetView | None) -> list[str]:
    if target is not None:
        return []
    return [
        f"withheld on {name}: {support.reason}; {support.remedy}"
        for name, support in withholding_targets(loaded, Feature.PER_MODEL_GRPC)
    ]


# --- the whole spec, for explain ------------------------------------------------------------------------


@dataclass(frozen=True)
class WithheldGrant:
    """Grants of one rule that some targets do not make, and why."""

    rule: int
    location: str
    feature: str
    grants: tuple[str, ...]
    models: tuple[str, ...]
    targets: tuple[str, ...]
    reason: str
    remedy: str

    def text(self) -> str:
        return (
            f"rules[{self.rule}] ({self.location}): withheld on {', '.join(self.targets)}: {self.reason}; "
            f"not made: {', '.join(self.grants)}"
            + (f" (models {', '.join(self.models)})" if self.models else "")
            + f"; {self.remedy}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "location": self.location,
            "feature": self.feature,
            "grants": list(self.grants),
            "models": list(self.models),
            "targets": list(self.targets),
            "reason": self.reason,
            "remedy": self.remedy,
        }


def withheld_grants(loaded: LoadedSpec) -> list[WithheldGrant]:
    """Every allow grant a proxy target withholds, one entry per rule and reason, naming every such target."""
    from meshgen.policy import compile_policy
    from meshgen.targets.contract import _lower_grants
    from meshgen.targets.registry import TARGETS

    policy = compile_policy(loaded)
    merged: dict[tuple[int, str, tuple[str, ...], str, str], list[str]] = {}
    for target in TARGETS:
        if target.name == "triton":
            continue
        capabilities = target.effective_capabilities(policy, target.options_type())
        for rule in policy.rules:
            if rule.action != "allow":
                continue
            for grants in (rule.http, rule.grpc):
                for item in _withholdings(target.name, rule, grants, capabilities, _lower_grants):
                    key = (rule.index, item.feature.value, item.grants, item.support.reason, item.support.remedy)
                    merged.setdefault(key, []).append(target.name)
    return [
        WithheldGrant(
            index,
            str(loaded.location("rules", index)),
            feature,
            grants,
            tuple(loaded.spec.rules[index].models or ()),
            tuple(targets),
            reason,
            remedy,
        )
        for (index, feature, grants, reason, remedy), targets in sorted(merged.items())
    ]


def _withholdings(target: str, rule: Any, grants: Any, capabilities: Capabilities, lower_grants: Any) -> Iterator[Any]:
    from meshgen.errors import TargetError

    try:
        _, withheld = lower_grants(target, rule, grants, capabilities)
    except TargetError:
        return  # the target refuses this rule outright: `meshgen <target>` says why
    yield from withheld
