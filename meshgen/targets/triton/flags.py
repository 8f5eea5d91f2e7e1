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

from meshgen.address import PortName
from meshgen.catalog import CATEGORIES
from meshgen.errors import CompileWarning, TargetError
from meshgen.policy.model import Policy
from meshgen.render import render as render_template
from meshgen.targets.contract import Encoders, Rendered
from meshgen.targets.triton import TritonOptions

GRPC_METADATA_PREFIX = "triton-grpc-protocol-"
TRITON_CATEGORIES = tuple(c for c in CATEGORIES if c != "metrics")  # metrics is never restricted by Triton
# The OpenAI frontend's --openai-restricted-api categories (middleware/api_restriction.py ENDPOINT_MAPPING).
OPENAI_CATEGORIES = ("inference", "model-repository", "metrics", "health")
# tritonserver's own ports; the OpenAI frontend (python/openai) is another process with its own flags.
TRITONSERVER_PORTS: tuple[PortName, ...] = ("http", "grpc", "metrics")


@dataclass(frozen=True)
class Flag:
    reason: str
    argument: str
    more: tuple[str, ...] = ()  # further words of the same option (argparse nargs), on the same line

    @property
    def words(self) -> tuple[str, ...]:
        return (self.argument, *self.more)


# Triton checks no caller identity itself: every identity kind is left to the proxy (Delegated).
ENCODERS: Encoders[None] = {}


def render(policy: Policy, options: TritonOptions) -> Rendered:
    if options.openai:
        if policy.ports.openai is None:
            raise TargetError(
                "triton: --openai: the spec serves no OpenAI frontend; set workload.ports.openai where it runs"
            )
        flags = list(openai_frontend_flags(policy))
        text = render_template("triton", "openai-frontend-args.txt.j2", name=policy.name, flags=flags)
        warning = CompileWarning(
            "triton: do not start the OpenAI frontend with --enable-kserve-frontends: the KServe HTTP and gRPC "
            "frontends it opens take no restriction at all (tritonfrontend has no restricted-API option); run "
            "tritonserver with triton-args.txt for KServe clients instead"
        )
        return Rendered(text, [list(flag.words) for flag in flags], (warning,))
    flags = list(triton_flags(policy))
    text = render_template("triton", "triton-args.txt.j2", name=policy.name, flags=flags)
    return Rendered(text, [list(flag.words) for flag in flags])


def parse_back(text: str) -> list[list[str]]:
    """The options of a flags file: every line that is not a comment is one option (its shell words)."""
    return [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]


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


def _granted(
    policy: Policy, category: str, port: PortName | None = None
) -> list[tuple[frozenset[tuple[str, str]], bool]]:
    """(header pairs of each client granted ``category`` (on ``port``, or any), whether the grant is to anyone)."""
    result: list[tuple[frozenset[tuple[str, str]], bool]] = []
    for rule in policy.rules_for("allow"):
        categories = {g.endpoint.category for g in rule.http if port is None or g.endpoint.port == port}
        if port is None:
            categories |= {g.method.category for g in rule.grpc}
        if category not in categories:
            continue
        if rule.clients is None:
            result.append((frozenset(), True))
        else:
            result.extend(
                (frozenset((h.name, h.value.value) for h in client.headers), False) for client in rule.clients
            )
    return result


def _common_headers(
    policy: Policy, categories: tuple[str, ...], port: PortName | None = None
) -> list[tuple[tuple[str, str], list[str]]]:
    """Categories whose every grantee sends one common header, grouped by that header."""
    groups: dict[tuple[str, str], list[str]] = {}
    for category in categories:
        grants = _granted(policy, category, port)
        if not grants or any(anyone for _, anyone in grants):
            continue
        common = frozenset.intersection(*(headers for headers, _ in grants))
        if common:
            groups.setdefault(min(common), []).append(category)
    return sorted(groups.items())


def _restricted_apis(policy: Policy) -> Iterator[Flag]:
    """Group categories whose every grantee sends one common header, by that header."""
    for (name, value), categories in _common_headers(policy, TRITON_CATEGORIES):
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


def openai_frontend_flags(policy: Policy) -> Iterator[Flag]:
    """The OpenAI frontend's flags (server python/openai/openai_frontend/main.py ``parse_args``)."""
    yield Flag("The port the proxy forwards the OpenAI routes to", f"--openai-port={policy.port('openai')}")
    upstream = policy.standalone.upstream.openai
    if upstream is not None and upstream.is_loopback:
        # --host is the one address of the OpenAI frontend (and of KServe frontends it might start).
        yield Flag(
            f"The proxy reaches the OpenAI frontend on {upstream}: nothing else should", f"--host={upstream.host}"
        )
    for (name, value), categories in _common_headers(policy, OPENAI_CATEGORIES, "openai"):
        apis = ",".join(categories)
        yield Flag(
            f"{apis}: granted only to clients that send header {name}; the frontend answers 401 without it "
            "(it matches path prefixes: model-repository covers /v1/models and everything under it)",
            "--openai-restricted-api",
            (apis, name, value),
        )


def _loopback_binding(policy: Policy) -> Iterator[Flag]:
    """With a standalone proxy on the same host, Triton should listen on loopback only."""
    for port in TRITONSERVER_PORTS:
        upstream = policy.standalone.upstream.get(port)
        if upstream is not None and upstream.is_loopback:
            yield Flag(
                f"The proxy reaches the {port} port on {upstream}: nothing else should",
                f"--{port}-address={upstream.host}",
            )
