"""Hypothesis strategies for valid meshgen specs (docs/spec.md), for the property-based conformance tests.

``specs()`` covers the whole format: every identity kind and combinations of them, allow/deny rules over
random category sets, ``models`` and ``grpcAllModels``, ``anyone``, overlapping rules, empty rule lists,
ports (the OpenAI frontend's in about a third of the specs), mTLS modes and port overrides.
``proxy_specs()`` keeps to what nginx can express (no principals or namespaces, header values of
nginx-safe characters, few IPv4 blocks) so the same spec can also run on a real Envoy and a real nginx
on this machine (tests/support/matrix.py ``loopback_variant``).

Draws come from small shared pools (client names, models, categories) on purpose: rules then overlap
on clients, models and categories often, which is where deny/allow precedence bugs live.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

from meshgen.catalog import CATEGORIES, load_catalog
from meshgen.spec import LoadedSpec, load_spec_text
from meshgen.spec.model import RESERVED_MODEL_NAMES

MODEL_SCOPED_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORIES if load_catalog().has_model_scoped(c))
CLIENT_NAMES = ("gateway", "web", "ops", "admin", "monitoring", "c-1", "x")
# Names the matrix also probes (unlisted_model, Resnet50) plus the corners of the model-name regex.
MODEL_POOL = ("resnet50", "Resnet50", "densenet_onnx", "m.v2", "_private", "a-b", "9", "unlisted_model", "stats-x")
TRUST_DOMAINS = ("cluster.local", "example.org", "td-1.corp")
IDENTITY_KINDS = ("principals", "namespaces", "ipBlocks", "headers")
MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
PORT_NAMES = ("http", "grpc", "metrics")  # every spec serves these
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
OPENAI_DEFAULT_PORT = 9000  # the frontend's own default; the spec has none (the port is opt-in)
# nginx matches header values only when made of these (meshgen.targets.nginx SAFE_HEADER_VALUE_CHARS).
NGINX_SAFE_VALUE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:@,-"
VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


class _NoAliasDumper(yaml.SafeDumper):
    """The spec format refuses YAML anchors/aliases, which safe_dump emits for objects used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass(frozen=True)
class GeneratedSpec:
    """A valid spec document and the environment its ``{env: NAME}`` header values are read from."""

    document: dict[str, Any]
    environ: dict[str, str] = field(default_factory=dict)

    def to_yaml(self) -> str:
        return yaml.dump(self.document, Dumper=_NoAliasDumper, sort_keys=False)

    def load(self) -> LoadedSpec:
        return load_spec_text(self.to_yaml(), "prop.yaml", self.environ)

    def __repr__(self) -> str:
        # Hypothesis prints this for a falsifying example: make it a spec one can paste into a golden case.
        env = f"# environ: {self.environ}\n" if self.environ else ""
        return f"GeneratedSpec(\n{env}{self.to_yaml()})"


def dns_labels(max_size: int = 20) -> st.SearchStrategy[str]:
    """DNS-1123 labels: [a-z0-9], inner '-' allowed, alphanumeric at both ends."""
    inner = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=max_size - 2)
    edge = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789")
    return st.one_of(edge, st.builds(lambda a, m, b: a + m + b, edge, inner, edge))


def model_names() -> st.SearchStrategy[str]:
    generated = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}\Z").filter(lambda m: m not in RESERVED_MODEL_NAMES)
    return st.one_of(st.sampled_from(MODEL_POOL), generated)


def principals() -> st.SearchStrategy[str]:
    return st.builds(
        lambda td, ns, sa: f"{td}/ns/{ns}/sa/{sa}", st.sampled_from(TRUST_DOMAINS), dns_labels(12), dns_labels(12)
    )


@st.composite
def ip_blocks(draw: st.DrawFn, *, ipv6: bool = True) -> str:
    """An IP or a CIDR with zero host bits (what the spec accepts), IPv4 or IPv6."""
    version = draw(st.sampled_from((4, 6) if ipv6 else (4,)))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(min_value=8 if version == 4 else 16, max_value=bits))
    address = draw(st.integers(min_value=0, max_value=2**bits - 1)) & ~((1 << (bits - prefix)) - 1)
    network = ipaddress.ip_network((address, prefix))
    if prefix == bits and draw(st.booleans()):
        return str(network.network_address)  # a bare IP is a /32 (/128) block
    return str(network)


@st.composite
def header_values(draw: st.DrawFn, *, nginx_safe: bool) -> str:
    """Visible ASCII with single inner spaces; mostly plain tokens, sometimes any visible character
    (quotes, '$', '*' at the ends: the values Istio or nginx must refuse rather than mis-match)."""
    safe = st.text(alphabet=NGINX_SAFE_VALUE_CHARS, min_size=1, max_size=24)
    if nginx_safe:
        return draw(safe)
    words = st.lists(st.text(alphabet=VISIBLE_ASCII, min_size=1, max_size=8), min_size=1, max_size=3)
    return draw(st.one_of(safe, safe, safe, words.map(" ".join)))


@st.composite
def header_names(draw: st.DrawFn) -> str:
    name = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=16))
    # Spec header names are case-insensitive: sometimes write one in mixed case.
    return name.title() if draw(st.booleans()) else name


@st.composite
def _client(
    draw: st.DrawFn, name: str, kinds_allowed: tuple[str, ...], environ: dict[str, str], nginx_safe: bool
) -> dict[str, Any]:
    kinds = draw(st.lists(st.sampled_from(kinds_allowed), min_size=1, max_size=len(kinds_allowed), unique=True))
    client: dict[str, Any] = {}
    if "principals" in kinds:
        client["principals"] = draw(st.lists(principals(), min_size=1, max_size=3, unique=True))
    if "namespaces" in kinds:
        client["namespaces"] = draw(st.lists(dns_labels(12), min_size=1, max_size=3, unique=True))
    if "ipBlocks" in kinds:
        client["ipBlocks"] = draw(
            st.lists(ip_blocks(ipv6=not nginx_safe), min_size=1, max_size=2 if nginx_safe else 3, unique=True)
        )
    if "headers" in kinds:
        names = draw(st.lists(header_names(), min_size=1, max_size=2, unique_by=str.lower))
        headers: dict[str, Any] = {}
        for position, header in enumerate(names):
            value = draw(header_values(nginx_safe=nginx_safe))
            if draw(st.booleans()):
                variable = f"MG_{name.upper().replace('-', '_')}_{position}"
                environ[variable] = value
                headers[header] = {"env": variable}
            else:
                headers[header] = value
        client["headers"] = headers
    return client


@st.composite
def _rule(draw: st.DrawFn, clients: list[str], models_pool: list[str]) -> dict[str, Any]:
    action = draw(st.sampled_from(("allow", "deny")))
    with_models = draw(st.booleans())
    universe = MODEL_SCOPED_CATEGORIES if with_models else CATEGORIES
    rule: dict[str, Any] = {action: draw(st.lists(st.sampled_from(universe), min_size=1, max_size=4, unique=True))}
    if with_models:
        rule["models"] = draw(st.lists(st.sampled_from(models_pool), min_size=1, max_size=3, unique=True))
        if action == "allow" and draw(st.booleans()):
            rule["grpcAllModels"] = True
    if not clients or draw(st.integers(0, 3)) == 0:
        rule["from"] = "anyone"
    else:
        rule["from"] = draw(st.lists(st.sampled_from(clients), min_size=1, max_size=len(clients), unique=True))
    return rule


@st.composite
def _ports(draw: st.DrawFn) -> dict[str, int] | None:
    openai = draw(st.integers(0, 2)) == 0  # workload.ports.openai: the OpenAI frontend runs too
    if draw(st.booleans()):
        return {"openai": OPENAI_DEFAULT_PORT} if openai else None  # the defaults 8000/8001/8002
    names = (*PORT_NAMES, *(("openai",) if openai else ()))
    numbers = draw(
        st.lists(st.integers(min_value=1, max_value=65535), min_size=len(names), max_size=len(names), unique=True)
    )
    return dict(zip(names, numbers, strict=True))


@st.composite
def _mtls(draw: st.DrawFn, ports: dict[str, int], mode: str) -> dict[str, Any] | None:
    """``ports``: every port the spec serves, by name."""
    mtls: dict[str, Any] = {"mode": mode}
    overridden = draw(st.lists(st.sampled_from(tuple(ports)), max_size=3, unique=True))
    if overridden:
        # Name each overridden port by its name or its number (both forms are valid keys).
        mtls["portOverrides"] = {
            (port if draw(st.booleans()) else ports[port]): draw(st.sampled_from(MTLS_MODES)) for port in overridden
        }
    if mode == "STRICT" and not overridden and draw(st.booleans()):
        return None  # the default
    return mtls


@st.composite
def _specs(draw: st.DrawFn, *, proxy: bool) -> GeneratedSpec:
    environ: dict[str, str] = {}
    ports = draw(_ports())
    mode = draw(st.sampled_from(MTLS_MODES))
    kinds: tuple[str, ...] = IDENTITY_KINDS
    if proxy:
        kinds = ("ipBlocks", "headers")
    elif mode == "DISABLE":
        kinds = ("ipBlocks", "headers")  # principals/namespaces can never match without mTLS: an error
    names = draw(st.lists(st.sampled_from(CLIENT_NAMES), max_size=3 if proxy else 4, unique=True))
    clients = {name: draw(_client(name, kinds, environ, proxy)) for name in names}
    models_pool = draw(st.lists(model_names(), min_size=1, max_size=4, unique=True))
    rules = draw(st.lists(_rule(names, models_pool), max_size=5))
    document: dict[str, Any] = {
        "apiVersion": "meshgen/v1",
        "kind": "TritonAccessPolicy",
        "metadata": {"name": draw(dns_labels(57)), "namespace": draw(dns_labels(20))},
        "workload": {"selector": {"app": draw(dns_labels(20))}},
    }
    if ports is not None:
        document["workload"]["ports"] = ports
    mtls = draw(_mtls({**DEFAULT_PORTS, **(ports or {})}, mode))
    if mtls is not None:
        document["mtls"] = mtls
    if clients or draw(st.booleans()):
        document["clients"] = clients  # an empty clients map is valid too
    if rules or draw(st.booleans()):
        document["rules"] = rules  # and so is an empty rule list
    return GeneratedSpec(document, environ)


def specs() -> st.SearchStrategy[GeneratedSpec]:
    """Any valid spec (some of which a target must refuse with its documented error)."""
    return _specs(proxy=False)


def proxy_specs() -> st.SearchStrategy[GeneratedSpec]:
    """Valid specs nginx and a standalone Envoy can both express without TLS: clients identified by
    IPv4 blocks and nginx-safe header values only, few enough blocks for ``loopback_variant``."""
    return _specs(proxy=True)
