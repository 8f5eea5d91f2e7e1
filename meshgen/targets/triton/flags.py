"""Triton launch flags for defence in depth behind the proxy (``meshgen triton``).

Each flag carries a comment saying why. Restricted-API flags make Triton itself refuse a category
unless the caller sends the header that identifies the only clients granted it, so a request that
slips past the proxy still fails. Flag syntax follows Triton's command_line_parser.cc: HTTP uses
``--http-restricted-api=<api>[,<api>...]:<key>=<value>``, gRPC ``--grpc-restricted-protocol`` with the
same format, and gRPC clients then send the metadata key ``triton-grpc-protocol-<key>``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from meshgen.address import PORT_NAMES
from meshgen.catalog import CATEGORIES
from meshgen.policy.model import Policy
from meshgen.render import render as render_template
from meshgen.targets.contract import Encoders, NoOptions, Rendered

GRPC_METADATA_PREFIX = "triton-grpc-protocol-"
TRITON_CATEGORIES = tuple(c for c in CATEGORIES if c != "metrics")  # metrics is never restricted by Triton


@dataclass(frozen=True)
class Flag:
    reason: str
    argument: str


# Triton checks no caller identity itself: every identity kind is left to the proxy (Delegated).
ENCODERS: Encoders[None] = {}


def render(policy: Policy, options: NoOptions) -> Rendered:
    flags = list(triton_flags(policy))
    text = render_template("triton", "triton-args.txt.j2", name=policy.name, flags=flags)
    return Rendered(text, [flag.argument for flag in flags])


def parse_back(text: str) -> list[str]:
    """The arguments of a flags file: every line that is not a comment is exactly one shell word."""
    arguments = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            words = shlex.split(line)
            if len(words) != 1:
                raise AssertionError(f"triton template wrote {len(words)} words on one line")
            arguments.append(words[0])
    return arguments


def triton_flags(policy: Policy) -> Iterator[Flag]:
    yield from _restricted_apis(policy)
    yield from _disabled_endpoints(policy)
    yield from _model_control(policy)
    yield Flag(
        "Cloud frontends reuse the HTTP API under other routes; nothing in the spec needs them",
        "--allow-sagemaker=false",
    )
    yield Flag("The Vertex AI redirect header can reach any API through the predict route", "--allow-vertex-ai=false")
    yield from _loopback_binding(policy)


def _granted(policy: Policy, category: str) -> list[tuple[frozenset[tuple[str, str]], bool]]:
    """(header pairs of each client granted ``category``, whether the grant is to anyone)."""
    result: list[tuple[frozenset[tuple[str, str]], bool]] = []
    for rule in policy.rules_for("allow"):
        categories = {g.endpoint.category for g in rule.http} | {g.method.category for g in rule.grpc}
        if category not in categories:
            continue
        if rule.clients is None:
            result.append((frozenset(), True))
        else:
            result.extend(
                (frozenset((h.name, h.value.value) for h in client.headers), False) for client in rule.clients
            )
    return result


def _restricted_apis(policy: Policy) -> Iterator[Flag]:
    """Group categories whose every grantee sends one common header, by that header."""
    groups: dict[tuple[str, str], list[str]] = {}
    for category in TRITON_CATEGORIES:
        grants = _granted(policy, category)
        if not grants or any(anyone for _, anyone in grants):
            continue
        common = frozenset.intersection(*(headers for headers, _ in grants))
        if common:
            groups.setdefault(min(common), []).append(category)
    for (name, value), categories in sorted(groups.items()):
        apis = ",".join(categories)
        yield Flag(
            f"{apis}: granted only to clients that send header {name}; Triton refuses it without the header",
            f"--http-restricted-api={apis}:{name}={value}",
        )
        yield Flag(
            f"{apis} over gRPC: clients must also send metadata {GRPC_METADATA_PREFIX}{name}",
            f"--grpc-restricted-protocol={apis}:{name}={value}",
        )


def _disabled_endpoints(policy: Policy) -> Iterator[Flag]:
    allow = policy.rules_for("allow")
    if not any(rule.grpc for rule in allow):
        yield Flag("No rule grants any gRPC method", "--allow-grpc=false")
    if not any(g.endpoint.port == "http" for rule in allow for g in rule.http):
        yield Flag("No rule grants any HTTP endpoint", "--allow-http=false")
    if not any(g.endpoint.port == "metrics" for rule in allow for g in rule.http):
        yield Flag("No rule grants metrics", "--allow-metrics=false")


def _model_control(policy: Policy) -> Iterator[Flag]:
    loads = any(
        g.endpoint.category == "model-repository" and g.endpoint.model_scoped
        for rule in policy.rules_for("allow")
        for g in rule.http
    ) or any(g.method.name == "RepositoryModelLoad" for rule in policy.rules_for("allow") for g in rule.grpc)
    if loads:
        yield Flag("Clients may load and unload models (model-repository is granted)", "--model-control-mode=explicit")
        # Explicit mode starts with no model loaded; the default mode served the whole repository.
        yield Flag("Explicit mode loads nothing by itself: start with every model of the repository", "--load-model=*")
    else:
        yield Flag(
            "No client may load or unload models: serve the repository as it is at start-up",
            "--model-control-mode=none",
        )


def _loopback_binding(policy: Policy) -> Iterator[Flag]:
    """With a standalone proxy on the same host, Triton should listen on loopback only."""
    for port in PORT_NAMES:
        upstream = policy.standalone.upstream.get(port)
        if upstream is not None and upstream.is_loopback:
            yield Flag(
                f"The proxy reaches the {port} port on {upstream}: nothing else should",
                f"--{port}-address={upstream.host}",
            )
