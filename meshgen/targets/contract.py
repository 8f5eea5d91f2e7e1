"""The target contract: what every target declares, and the one function that applies it.

A target declares, as class data: its name and help, its options (a frozen dataclass whose fields
carry their command-line flags), the files it writes in a ``meshgen all`` bundle, and a capability
table: for every ``Feature`` (identity kinds, per-model narrowing, dry-run) whether it is

* ``Enforced``  — encoded exactly;
* ``Refused``   — the spec needs it and the target cannot enforce it: exit 2, naming what and why;
* ``Withheld``  — an allow grant that needs it is not made (warning), a deny that needs it applies to
                  every model (fail closed): access only ever narrows;
* ``Delegated`` — the target is not the guard for it (Triton's own flags restrict whole categories and
                  leave per-model and per-client checks to the proxy in front).

``lower`` applies the table to a compiled policy before the target sees it, so every target refuses and
withholds in the same words, and a target's encoders only ever meet what its table says it enforces.
The CLI, ``meshgen all`` and the tests loop over ``meshgen.targets.registry.TARGETS``.

This module is imported at CLI start-up: nothing heavy (pydantic, Jinja2, PyYAML) at import time.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from meshgen.errors import CompileWarning, TargetError
from meshgen.features import Feature

if TYPE_CHECKING:
    from meshgen.address import PortAddresses
    from meshgen.policy.identity import ClientIdentity, IdentityKind
    from meshgen.policy.model import GrpcGrant, HttpGrant, Policy, PolicyRule


# --- support levels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enforced:
    """Encoded exactly."""


@dataclass(frozen=True)
class Refused:
    reason: str  # why the target cannot enforce it, e.g. "nginx cannot verify mTLS peer identities"
    remedy: str  # what the user can do instead


@dataclass(frozen=True)
class Withheld:
    reason: str
    remedy: str


@dataclass(frozen=True)
class Delegated:
    reason: str  # why the target leaves it to another layer


Support = Enforced | Refused | Withheld | Delegated
ENFORCED = Enforced()
Capabilities = Mapping[Feature, Support]


def table(rows: dict[Feature, Support]) -> Capabilities:
    """A capability table (read-only: targets declare it once, as class data)."""
    return MappingProxyType(rows)


def enforced_except(exceptions: dict[Feature, Support]) -> Capabilities:
    """A table in which every feature is enforced but the listed ones."""
    return table({feature: exceptions.get(feature, ENFORCED) for feature in Feature})


# Support values several targets share, so they refuse and withhold in the same words.
BODY_INSPECTION_OFF = Withheld(
    "the spec switches body inspection off (bodyInspection.enabled: false), and gRPC carries the model name "
    "in the request body",
    "set bodyInspection.enabled: true, or grpcAllModels: true to grant them for every model",
)
JSON_INSPECTION_OFF = Withheld(
    "the spec switches body inspection off (bodyInspection.enabled: false), and the OpenAI frontend's "
    "inference routes name the model in the JSON body",
    "set bodyInspection.enabled: true, or grant those routes without models",
)


# --- options: frozen dataclasses whose fields carry their flags --------------------------------------

CLI = "meshgen.cli"  # dataclass field metadata key


class ValueKind(Enum):
    SWITCH = "switch"  # a boolean flag
    ADDRESS = "ADDR"  # one host:port
    DIRECTORY = "DIR"


@dataclass(frozen=True)
class CliFlag:
    kind: ValueKind
    name: str  # "--dry-run"
    help: str


@dataclass(frozen=True)
class PortAddressFlags:
    """One ``host:port`` flag per Triton port: ``--<prefix>-http``, ``--<prefix>-grpc``, ..."""

    prefix: str  # "listen" / "upstream"
    help: str  # "{port}" is replaced by the port name


CliOption = CliFlag | PortAddressFlags


def switch(name: str, help: str) -> Any:
    return field(default=False, metadata={CLI: CliFlag(ValueKind.SWITCH, name, help)})


def address(name: str, help: str) -> Any:
    return field(default=None, metadata={CLI: CliFlag(ValueKind.ADDRESS, name, help)})


def directory(name: str, help: str) -> Any:
    return field(default=None, metadata={CLI: CliFlag(ValueKind.DIRECTORY, name, help)})


def port_addresses(prefix: str, help: str) -> Any:
    from meshgen.address import PortAddresses

    return field(default_factory=PortAddresses, metadata={CLI: PortAddressFlags(prefix, help)})


def cli_options(options_type: type[Any]) -> list[tuple[str, CliOption]]:
    """(field name, flag declaration) of an options dataclass, in declaration order."""
    return [(f.name, f.metadata[CLI]) for f in dataclasses.fields(options_type) if CLI in f.metadata]


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class DryRunOption:
    """Options of a target with an audit mode (its capability table enforces Feature.DRY_RUN)."""

    dry_run: bool = switch("--dry-run", "Audit mode: record every decision the policy would take, deny nothing.")


@dataclass(frozen=True)
class StandaloneOptions(DryRunOption):
    """Options of a target whose output can be a runnable proxy: per-port addresses beside ``standalone``."""

    listen: PortAddresses = port_addresses("listen", "Where the proxy listens for the {port} port.")
    upstream: PortAddresses = port_addresses("upstream", "Triton's {port} port, as the proxy reaches it.")


# --- outputs and the generation pipeline --------------------------------------------------------------

Options = TypeVar("Options")


@dataclass(frozen=True)
class OutputFile(Generic[Options]):
    """One file of a ``meshgen all`` bundle: the target run with ``options``."""

    name: str
    options: Options
    kubernetes: bool = False  # a Kubernetes resource file: listed in kustomization.yaml
    optional: bool = False  # True: when the target refuses the spec, the bundle notes why and goes on
    # Whether the spec has anything for this file at all (e.g. the OpenAI frontend's flags); if not, the
    # bundle leaves it out silently.
    applies_to: Callable[[Policy], bool] = field(default=lambda policy: True, compare=False)


@dataclass(frozen=True)
class Variant(Generic[Options]):
    """A golden-test variant of an output with other options, stored as ``<stem>.<suffix><ext>``."""

    output: str  # the OutputFile name it varies
    suffix: str  # e.g. "dry-run", named after the option
    options: Options


@dataclass(frozen=True)
class Rendered:
    text: str
    expected: object  # what ``Target.parse_back(text)`` must return: the template lost nothing
    warnings: tuple[CompileWarning, ...] = ()  # what the output does that the user may not expect
    # True: ``text`` is ``expected`` written by one of meshgen.render's emitters (``yaml_block``,
    # ``json_document``) behind a comment at most, with no template in between. The emitters' round trip
    # is proven in tests (tests/test_render.py: equal to PyYAML's dump / json.loads on generated and
    # hostile data), and every test run parses back every output anyway (VERIFY_EMITTED), so ``generate``
    # skips the parse-back at run time. A templated output is always parsed back.
    emitted: bool = False


# Set (to anything) by the test suite: parse back emitted outputs too, in every test and every CLI run it starts.
VERIFY_EMITTED = "MESHGEN_VERIFY_EMITTED"


@dataclass(frozen=True)
class Generated:
    text: str
    withheld: tuple[Withholding, ...] = ()
    warnings: tuple[CompileWarning, ...] = ()


class Implementation(Protocol):
    """The module that does a target's work, imported the first time the target generates."""

    ENCODERS: Encoders[Any]  # identity kind -> encoder; empty for a target that delegates identities

    def render(self, policy: Policy, options: Any) -> Rendered:
        """Template context from the (lowered) policy, rendered; plus what parsing it back must give."""

    def parse_back(self, text: str) -> object:
        """Read rendered text back into the values ``render`` expected (the template self-check)."""


class Target(Generic[Options]):
    """A way to enforce the policy, declared as class data; the work is done by its implementation module."""

    name: str
    summary: str  # one line, for --help and docs
    options_type: type[Options]
    outputs: tuple[OutputFile[Options], ...]
    variants: tuple[Variant[Options], ...] = ()
    capability_table: Capabilities
    implementation: str  # dotted module path of its Implementation (kept out of CLI start-up)

    def capabilities(self, policy: Policy, options: Options) -> Capabilities:
        """The capability table for this policy and these options (a row for every Feature)."""
        return self.capability_table

    def effective_capabilities(self, policy: Policy, options: Options) -> Capabilities:
        """The table with the spec's own switches applied: body inspection off withholds what needs it."""
        table = self.capabilities(policy, options)
        if not policy.body_inspection.enabled:
            if isinstance(table[Feature.PER_MODEL_GRPC], Enforced):
                table = {**table, Feature.PER_MODEL_GRPC: BODY_INSPECTION_OFF}
            if isinstance(table[Feature.PER_MODEL_JSON], Enforced):
                table = {**table, Feature.PER_MODEL_JSON: JSON_INSPECTION_OFF}
        return table

    def implementing_module(self) -> Implementation:
        return cast(Implementation, importlib.import_module(self.implementation))

    def encoded_kinds(self) -> frozenset[type[IdentityKind]]:
        return frozenset(self.implementing_module().ENCODERS)

    def generate(self, policy: Policy, options: Options) -> Generated:
        """Apply the capability table, render, and check the rendered text says what was planned."""
        capabilities = self.effective_capabilities(policy, options)
        if isinstance(options, DryRunOption) and options.dry_run:
            require(self.name, Feature.DRY_RUN, capabilities)
        lowered = lower(policy, self.name, capabilities)
        implementation = self.implementing_module()
        rendered = implementation.render(lowered.policy, options)
        checked = not rendered.emitted or os.environ.get(VERIFY_EMITTED)
        if checked and implementation.parse_back(rendered.text) != rendered.expected:
            raise AssertionError(f"{self.name} template mangled its output")
        return Generated(rendered.text, lowered.withheld, rendered.warnings)


def enforced_features(capabilities: Capabilities) -> frozenset[Feature]:
    """What a target with this table decides as the spec means it (``decide(..., enforced=...)``)."""
    return frozenset(f for f, support in capabilities.items() if isinstance(support, Enforced | Delegated))


def require(target: str, feature: Feature, capabilities: Capabilities) -> None:
    support = capabilities[feature]
    if isinstance(support, Refused | Withheld):
        raise TargetError(f"{target}: cannot do {feature.value}: {support.reason}; {support.remedy}")


# --- identity encoders: one table per target, kind -> encoder --------------------------------------------

Encoded = TypeVar("Encoded")


class Unencodable(Exception):
    """An encoder cannot write this value exactly (e.g. a header value Istio would read as a wildcard)."""


# An encoder gets the kind's value and the client it belongs to (for names derived from the client's).
Encoders = Mapping[type["IdentityKind"], Callable[[Any, "ClientIdentity"], Encoded]]


def encode_identity(target: str, client: ClientIdentity, encoders: Encoders[Encoded]) -> list[Encoded]:
    """Each identity kind of ``client`` through the target's encoder table, in the client's kind order.

    A kind without an encoder is a bug (the capability table must have refused it before); a value an
    encoder cannot write exactly is refused, naming the client, in the same words on every target.
    """
    encoded = []
    for kind in client.kinds:
        encoder = encoders.get(type(kind))
        if encoder is None:
            raise AssertionError(f"{target} enforces {kind.feature.value} but has no encoder for it")
        try:
            encoded.append(encoder(kind, client))
        except Unencodable as why:
            raise TargetError(f"{target}: client {client.name!r}: {why}", client.location) from None
    return encoded


# --- applying a capability table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Withholding:
    """Grants of one rule that a target does not make, because it cannot enforce how they are narrowed."""

    target: str
    rule: PolicyRule
    feature: Feature
    grants: tuple[str, ...]  # labels of the grants not made
    support: Withheld

    def key(self) -> tuple[int, Feature, tuple[str, ...], Withheld]:
        """Withholdings of several targets with the same key are reported as one warning."""
        return (self.rule.index, self.feature, self.grants, self.support)

    def warning(self, targets: Sequence[str] | None = None) -> CompileWarning:
        who = ", ".join(targets or [self.target])
        return CompileWarning(
            f"{self.rule.label}: {who} cannot enforce {self.feature.value}: {self.support.reason}; "
            f"so these grants are NOT made: {', '.join(self.grants)}; {self.support.remedy}",
            self.rule.location,
        )


def merged_warnings(withheld: Sequence[Withholding]) -> list[CompileWarning]:
    """One warning per withheld set, naming every target that withholds it, in rule order."""
    targets: dict[tuple[int, Feature, tuple[str, ...], Withheld], list[str]] = {}
    first: dict[tuple[int, Feature, tuple[str, ...], Withheld], Withholding] = {}
    for item in withheld:
        key = item.key()
        first.setdefault(key, item)
        if item.target not in targets.setdefault(key, []):
            targets[key].append(item.target)
    return [first[key].warning(targets[key]) for key in sorted(first, key=lambda k: (k[0], k[1].value))]


@dataclass(frozen=True)
class Lowered:
    policy: Policy
    withheld: tuple[Withholding, ...]


def lower(policy: Policy, target: str, capabilities: Capabilities) -> Lowered:
    """The policy as ``target`` can enforce it: refused features raise, withheld grants go (allow) or
    widen to every model (deny), delegated and enforced ones stay. Never wider than the policy."""
    for client in policy.used_clients():
        for kind in client.kinds:
            support = capabilities[kind.feature]
            if isinstance(support, Refused | Withheld):
                raise _client_refusal(policy, target, client, kind.feature, support)
    rules = []
    withheld: list[Withholding] = []
    for rule in policy.rules:
        http, http_withheld = _lower_grants(target, rule, rule.http, capabilities)
        grpc, grpc_withheld = _lower_grants(target, rule, rule.grpc, capabilities)
        withheld += [*http_withheld, *grpc_withheld]
        if http != rule.http or grpc != rule.grpc:
            rule = dataclasses.replace(rule, http=http, grpc=grpc)
        rules.append(rule)
    return Lowered(dataclasses.replace(policy, rules=tuple(rules)), tuple(withheld))


GrantT = TypeVar("GrantT", "HttpGrant", "GrpcGrant")


def _lower_grants(
    target: str,
    rule: PolicyRule,
    grants: tuple[GrantT, ...],
    capabilities: Capabilities,
) -> tuple[tuple[GrantT, ...], list[Withholding]]:
    kept: list[GrantT] = []
    dropped: dict[Feature, tuple[Withheld, list[str]]] = {}
    for grant in grants:
        feature = grant.feature
        support = ENFORCED if feature is None else capabilities[feature]
        if isinstance(support, Enforced | Delegated):
            kept.append(grant)
        elif isinstance(support, Refused):
            assert feature is not None
            raise TargetError(
                f"{target}: {rule.label} needs {feature.value} ({grant.label}), which {target} cannot enforce: "
                f"{support.reason}; {support.remedy}",
                rule.location,
            )
        elif rule.action == "deny":
            # A deny the target cannot narrow applies to every model: fail closed.
            widened = grant.for_every_model()
            if widened not in kept:
                kept.append(widened)
        else:
            assert feature is not None
            dropped.setdefault(feature, (support, []))[1].append(grant.label)
    withheld = [
        Withholding(target, rule, feature, tuple(dict.fromkeys(labels)), support)
        for feature, (support, labels) in dropped.items()
    ]
    return tuple(kept), withheld


def _client_refusal(
    policy: Policy, target: str, client: ClientIdentity, feature: Feature, support: Refused | Withheld
) -> TargetError:
    used_by = [rule.label for rule in policy.rules if any(c.name == client.name for c in rule.clients or ())]
    return TargetError(
        f"{target}: client {client.name!r} (used by {', '.join(used_by)}) is identified by {feature.value}, "
        f"which {target} cannot enforce: {support.reason}; dropping it would widen the rule; {support.remedy}",
        client.location,
    )
