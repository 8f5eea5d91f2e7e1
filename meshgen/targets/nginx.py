"""NGINX target: an ``http {}`` drop-in (or a complete nginx.conf) that enforces the policy per location.

Design (see ../shared/reference/nginx-notes.md for the bypasses this avoids):

* Clients are flags: ``geo $remote_addr`` for ipBlocks (the direct peer only, no realip) and one ``map``
  per header with a case-sensitive, fully anchored regex key (``~^...\\z``; plain map keys compare
  case-insensitively). A client's flag is 1 only when every identity kind it lists matched.
* Rules are flags over their clients (``from: anyone`` needs none).
* Every catalog endpoint gets its own location: ``location =`` for literal and per-model paths (exact,
  case-sensitive, flat however many models), one regex per templated shape otherwise, per-model regexes
  before the generic one, in catalog order so regex precedence mirrors Triton's routing. Inside, only
  ``if (...) { return 403; }``: wrong method, any matching deny rule, or no matching allow rule. This is
  exactly ``decide()``: allowed iff no deny rule matches and some allow rule does.
* ``location /`` denies, and a server-level guard answers 400 when the raw request URI differs from the
  normalized one nginx matched (dot segments, ``//``, percent-escapes), because ``proxy_pass`` forwards the
  raw URI. On the gRPC port every denial is a Trailers-Only ``grpc-status: 7`` via ``error_page``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgen.catalog import ANY_SEGMENT, GrpcMethod, HttpEndpoint, load_catalog
from meshgen.errors import TargetError
from meshgen.policy import ClientIdentity, Policy, PolicyRule
from meshgen.render import environment, render
from meshgen.targets.nginx_quote import nginx_arg, nginx_variable, regex_literal
from meshgen.targets.standalone import PortAddresses, resolve_addresses

GRPC_METHOD = "POST"
LONG_TIMEOUT = "3600s"  # ModelStreamInfer streams and slow generate calls must not hit nginx's 60 s default
GRPC_DENIED_MESSAGE = "meshgen: permission denied by policy"
# Header values are matched through a regex written with \xHH escapes, so any visible ASCII would be safe;
# this narrower set (what API keys and tokens use) keeps config syntax characters out of the spec entirely.
SAFE_HEADER_VALUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:@,-")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# The templates write every value through these filters (the shared environment is cached per target).
environment("nginx").filters.update(nginx_arg=nginx_arg, nginx_var=nginx_variable)


@dataclass(frozen=True)
class Check:
    """``if (<variable> [<op> <value>]) { return 403; }``; ``value`` is a literal, quoted on output."""

    variable: str
    op: Literal["", "=", "!="] = ""
    value: str = ""


@dataclass(frozen=True)
class Location:
    modifier: Literal["=", "~"]
    path: str
    deny_all: bool
    checks: tuple[Check, ...]
    comment: str


@dataclass
class Flags:
    """The geo/map blocks computing client, rule and allow-set flags ("0" or "1")."""

    geos: list[dict[str, Any]] = field(default_factory=list)
    maps: list[dict[str, Any]] = field(default_factory=list)
    _defined: set[str] = field(default_factory=set)

    def add_map(self, source_variables: Iterable[str], variable: str, entries: list[tuple[str, str]],
                comment: str = "") -> str:
        if variable not in self._defined:
            self._defined.add(variable)
            source = "".join(nginx_variable(name) for name in source_variables)
            self.maps.append({"source": source, "variable": nginx_variable(variable), "entries": entries,
                              "comment": comment})
        return variable


def generate(
    policy: Policy,
    *,
    full: bool = False,
    listen_overrides: Mapping[str, str | None] | None = None,
    upstream_overrides: Mapping[str, str | None] | None = None,
    prefix: str | None = None,
    daemon: bool = True,
    dry_run: bool = False,
) -> str:
    if dry_run:
        # Never emit an enforcing config when the user asked for one that denies nothing.
        raise TargetError("nginx: --dry-run is not supported by the nginx target yet")
    context = build_context(policy, listen_overrides or {}, upstream_overrides or {})
    text = render("nginx", "http.conf.j2", **context)
    if full:
        text = render("nginx", "full.conf.j2", http_block=text, daemon=daemon, **main_paths(prefix))
    check_rendered(text, context)
    return text


def build_context(policy: Policy, listen_overrides: Mapping[str, str | None],
                  upstream_overrides: Mapping[str, str | None]) -> dict[str, Any]:
    flags = Flags()
    rule_variables = _client_and_rule_flags(policy, flags)
    addresses = resolve_addresses(policy, "nginx", listen_overrides, upstream_overrides)
    servers = []
    for port in ("http", "grpc", "metrics"):
        if port == "grpc":
            locations = _grpc_locations(policy, rule_variables, flags)
        else:
            locations = _http_locations(policy, port, rule_variables, flags)
        servers.append(_server(policy, port, addresses[port], locations))
    return {
        "name": policy.name,
        "namespace": policy.namespace,
        "geos": flags.geos,
        "maps": flags.maps,
        "servers": servers,
        "grpc_denied_message": GRPC_DENIED_MESSAGE,
        "long_timeout": LONG_TIMEOUT,
    }


def _server(policy: Policy, port: str, address: PortAddresses, locations: list[Location]) -> dict[str, Any]:
    return {
        "port": port,
        "triton_port": policy.port(port),
        "listen": address.listen.address,
        "upstream_name": nginx_variable(f"meshgen_{_identifier(policy.name)}_{port}")[1:],
        "upstream": address.upstream.address,
        "grpc": port == "grpc",
        "locations": locations,
    }


def main_paths(prefix: str | None) -> dict[str, str]:
    """pid, logs and temp paths: relative (to ``nginx -p DIR``) by default, else under ``prefix``."""
    base = "" if prefix is None else prefix.rstrip("/") + "/"
    if prefix is not None and not prefix.startswith("/"):
        raise TargetError(f"nginx: --prefix {prefix!r} must be an absolute directory")
    paths = {"pid": f"{base}nginx.pid", "error_log": f"{base}error.log", "access_log": f"{base}access.log"}
    paths.update({f"{name}_temp_path": f"{base}{name}_temp" for name in TEMP_PATHS})
    for value in paths.values():
        nginx_arg(value)  # refuse what cannot be written before rendering anything
    return paths


# --- identities -------------------------------------------------------------------------------------


def _identifier(name: str) -> str:
    """Spec names are lower-case DNS labels; '-' is not allowed in nginx variable names, '_' is not in them."""
    return name.replace("-", "_").replace(".", "_")


def _client_and_rule_flags(policy: Policy, flags: Flags) -> dict[int, str]:
    """Define client and rule flags; returns rule index -> flag variable (rules from anyone have none)."""
    client_variables: dict[str, str] = {}
    rule_variables: dict[int, str] = {}
    for rule in policy.rules:
        if rule.clients is None:
            continue
        names = []
        for client in rule.clients:
            if client.name not in client_variables:
                client_variables[client.name] = _client_flag(client, flags)
            names.append(client_variables[client.name])
        rule_variables[rule.index] = flags.add_map(
            names, f"mg_rule_{rule.index}", [("default", "0"), ("~1", "1")],
            f"{rule.label}: 1 when one of its clients ({', '.join(c.name for c in rule.clients)}) matches",
        )
    return rule_variables


def _client_flag(client: ClientIdentity, flags: Flags) -> str:
    kinds = [kind for kind, present in (("principals", client.principals), ("namespaces", client.namespaces))
             if present]
    if kinds:
        raise TargetError(
            f"nginx: client {client.name!r} is identified by {' and '.join(kinds)}, which need the mTLS peer "
            "identity of an Istio sidecar; nginx cannot verify it, and dropping it would widen the rule. "
            "Identify this client by ipBlocks and/or headers, or use the istio or envoy target"
        )
    base = f"mg_client_{_identifier(client.name)}"
    parts: list[str] = []
    if client.ip_blocks:
        variable = f"{base}_ip"
        flags.geos.append({"variable": nginx_variable(variable),
                           "entries": [("default", "0"), *((block, "1") for block in client.ip_blocks)]})
        parts.append(variable)
    for position, (header, value) in enumerate(client.headers):
        unsafe = sorted(set(value) - SAFE_HEADER_VALUE_CHARS)
        if unsafe:
            raise TargetError(
                f"nginx: client {client.name!r} header {header!r}: the value contains {''.join(unsafe)!r}; "
                "nginx matching is generated only for values made of letters, digits and ._~+/=:@,- "
                "(config syntax characters, quotes, spaces and '$' are refused)"
            )
        parts.append(flags.add_map(
            [f"http_{_identifier(header)}"], f"{base}_header_{position}",
            [("default", "0"), (f"~^{regex_literal(value)}\\z", "1")],
            f"client {client.name}: header {header} equals its value exactly (case-sensitive)",
        ))
    if not parts:
        # A client listing no identity kind matches nobody (as in decide()).
        return flags.add_map(["remote_addr"], base, [("default", "0")], f"client {client.name}: matches nobody")
    return flags.add_map(parts, base, [("default", "0"), ("1" * len(parts), "1")],
                         f"client {client.name}: every identity kind it lists matched")


# --- locations --------------------------------------------------------------------------------------


def _decision_checks(
    deny: list[PolicyRule], allow: list[PolicyRule], rule_variables: dict[int, str], flags: Flags,
) -> tuple[bool, tuple[Check, ...]]:
    """(deny everyone, checks) such that a request passes iff no deny rule and some allow rule matches."""
    if any(rule.clients is None for rule in deny) or not allow:
        return True, ()
    checks = [Check(rule_variables[rule.index]) for rule in deny]
    if all(rule.clients is not None for rule in allow):
        indices = sorted(rule.index for rule in allow)
        if len(indices) == 1:
            variable = rule_variables[indices[0]]
        else:
            variable = flags.add_map(
                [rule_variables[i] for i in indices], "mg_allow_rules_" + "_".join(map(str, indices)),
                [("default", "0"), ("~1", "1")], "1 when one of these allow rules matches",
            )
        checks.append(Check(variable, "=", "0"))
    return False, tuple(checks)


def _method_check(methods: tuple[str, ...], flags: Flags) -> Check:
    if len(methods) == 1:
        return Check("request_method", "!=", methods[0])
    variable = flags.add_map(
        ["request_method"], "mg_method_" + "_".join(m.lower() for m in methods),
        # Regex keys: plain map keys would compare case-insensitively.
        [("default", "0"), *((f"~^{regex_literal(m)}\\z", "1") for m in methods)],
    )
    return Check(variable, "=", "0")


def _covers_http(rule: PolicyRule, endpoint: HttpEndpoint, model: str | None) -> bool:
    return any(
        grant.endpoint == endpoint and (grant.models is None or (model is not None and model in grant.models))
        for grant in rule.http
    )


def _endpoint_location(
    policy: Policy, endpoint: HttpEndpoint, model: str | None, rule_variables: dict[int, str], flags: Flags,
) -> Location:
    deny = [r for r in policy.rules_for("deny") if _covers_http(r, endpoint, model)]
    allow = [r for r in policy.rules_for("allow") if _covers_http(r, endpoint, model)]
    deny_all, checks = _decision_checks(deny, allow, rule_variables, flags)
    pattern = endpoint.pattern(model)
    if ANY_SEGMENT in pattern:
        regex = "^" + "".join("/" + ("[^/]+" if s == ANY_SEGMENT else regex_literal(s)) for s in pattern) + "\\z"
        modifier: Literal["=", "~"] = "~"
        path = regex
    else:
        modifier, path = "=", "/" + "/".join(pattern)
    what = f"{endpoint.category} {endpoint.template}" + (
        f" for model {model}" if model is not None else " for any other model" if endpoint.model_scoped else "")
    if not deny_all:
        checks = (_method_check(endpoint.methods, flags), *checks)
    return Location(modifier, path, deny_all, checks, _comment(what, deny, allow))


def _comment(what: str, deny: list[PolicyRule], allow: list[PolicyRule]) -> str:
    parts = [what]
    if deny:
        parts.append("denied by " + ", ".join(r.label for r in deny))
    if allow:
        parts.append("allowed by " + ", ".join(r.label for r in allow))
    else:
        parts.append("no allow rule")
    return "; ".join(parts)


def _http_locations(policy: Policy, port: str, rule_variables: dict[int, str], flags: Flags) -> list[Location]:
    exact: list[Location] = []
    regex: list[Location] = []
    for endpoint in load_catalog().http:
        if endpoint.port != port:
            continue
        if endpoint.model_scoped:
            models = sorted({m for rule in policy.rules for g in rule.http if g.endpoint == endpoint
                             for m in g.models or ()})
            for model in models:
                location = _endpoint_location(policy, endpoint, model, rule_variables, flags)
                (exact if location.modifier == "=" else regex).append(location)
        location = _endpoint_location(policy, endpoint, None, rule_variables, flags)
        # Regex locations are tried in file order: per-model ones precede the generic one of their shape,
        # and shapes follow catalog order, the order in which Triton's router tries them.
        (exact if location.modifier == "=" else regex).append(location)
    return exact + regex


def _grpc_locations(policy: Policy, rule_variables: dict[int, str], flags: Flags) -> list[Location]:
    locations = []
    for method in load_catalog().grpc:
        deny = [r for r in policy.rules_for("deny") if method in r.grpc]
        allow = [r for r in policy.rules_for("allow") if method in r.grpc]
        deny_all, checks = _decision_checks(deny, allow, rule_variables, flags)
        if not deny_all:
            checks = (Check("request_method", "!=", GRPC_METHOD), *checks)
        locations.append(Location("=", method.path, deny_all, checks, _comment(_grpc_what(method), deny, allow)))
    return locations


def _grpc_what(method: GrpcMethod) -> str:
    return f"{method.category} {method.name}"


# --- parse-back check -------------------------------------------------------------------------------


def check_rendered(text: str, context: dict[str, Any]) -> None:
    """Tokenize the output and confirm every location the context planned appears once, in order."""
    tokens = _tokens(text)
    depth = 0
    seen: list[tuple[str, str]] = []
    for position, token in enumerate(tokens):
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                raise AssertionError("nginx template produced an unbalanced '}'")
        elif token == "location" and tokens[position + 1] in ("=", "~"):
            seen.append((tokens[position + 1], tokens[position + 2]))
    if depth != 0:
        raise AssertionError("nginx template produced unbalanced braces")
    planned = [(loc.modifier, loc.path) for server in context["servers"] for loc in server["locations"]]
    if seen != planned:
        raise AssertionError("nginx template mangled the locations")


def _tokens(text: str) -> list[str]:
    """nginx's tokenizer, enough for our own output: words, quoted strings (unescaped), braces, ';'."""
    tokens: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char == "#":
            index = text.find("\n", index) if "\n" in text[index:] else len(text)
        elif char in "{};":
            tokens.append(char)
            index += 1
        elif char in "\"'":
            end = index + 1
            value = []
            while text[end] != char:
                if text[end] == "\\" and text[end + 1] in "\"'\\":
                    end += 1
                value.append(text[end])
                end += 1
            tokens.append("".join(value))
            index = end + 1
        else:
            end = index
            while end < len(text) and not text[end].isspace() and text[end] not in "{};":
                end += 1
            tokens.append(text[index:end])
            index = end
    return tokens
