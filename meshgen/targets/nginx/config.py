"""NGINX target: an ``http {}`` drop-in (or a complete nginx.conf) that enforces the policy per location.

Design (see ../shared/reference/nginx-notes.md for the bypasses this avoids):

* Clients are flags: ``geo $remote_addr`` for ipBlocks (the direct peer only, no realip) and one ``map``
  per header with a case-sensitive, fully anchored regex key (``~^...\\z``; plain map keys compare
  case-insensitively). A client's flag is 1 only when every identity kind it lists matched.
* Rules are flags over their clients (``from: anyone`` needs none).
* Every catalog endpoint gets its own location: ``location =`` for literal paths and for per-model paths
  without other variables (exact, case-sensitive, kept in a tree: flat however many models), and one
  constant regex per templated shape, in catalog order so regex precedence mirrors Triton's routing.
  Shapes with ``{version}``/``{repo}`` capture the model name (``$mg_model``) instead of growing one regex
  per model: a rule's model list becomes a hash ``map`` (flat) whose value, the listed spelling, is
  compared case-sensitively with the captured name (map string keys compare case-insensitively).
  Inside a location, only ``if (...) { return 403; }``: wrong method, any matching deny rule, or no
  matching allow rule. This is exactly ``decide()``: allowed iff no deny rule matches and some allow does.
* ``dry_run``: the same locations compute the same decision into ``$meshgen_decision`` ("allow rules[i]",
  "deny rules[j]", "deny method", ...) with ``set``, deny nothing, and log it with ``log_format
  meshgen_dry_run``.
* ``location /`` denies, and a server-level guard answers 400 when the raw request URI differs from the
  normalized one nginx matched (dot segments, ``//``, percent-escapes), because ``proxy_pass`` forwards the
  raw URI. On the gRPC port every denial is a Trailers-Only ``grpc-status: 7`` via ``error_page``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from meshgen.address import PortName
from meshgen.catalog import ANY_SEGMENT, GrpcMethod, HttpEndpoint, load_catalog
from meshgen.catalog.model import VARIABLES
from meshgen.errors import TargetError
from meshgen.policy.model import Policy, PolicyRule
from meshgen.render import environment
from meshgen.render import render as render_template
from meshgen.targets.contract import Rendered
from meshgen.targets.nginx import NginxOptions
from meshgen.targets.nginx.flags import (
    ENCODERS,
    MODEL_CAPTURE,
    Flags,
    FlagVar,
    client_and_rule_flags,
    hash_sizes,
    identifier,
    rule_flag,
)
from meshgen.targets.nginx.quote import nginx_arg, nginx_map_source, nginx_variable, regex_literal
from meshgen.targets.standalone import ProxyPort, proxy_ports

__all__ = ["ENCODERS", "parse_back", "render"]

GRPC_METHOD = "POST"
LONG_TIMEOUT = "3600s"  # ModelStreamInfer streams and slow generate calls must not hit nginx's 60 s default
GRPC_DENIED_MESSAGE = "meshgen: permission denied by policy"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
DRY_RUN_LOG = "meshgen-dry-run.log"
DROPIN_LOG_DIR = "/var/log/nginx"  # Debian's; the drop-in's dry-run log goes there unless --prefix is given

# The templates write every value through these filters (the shared environment is cached per target).
environment("nginx").filters.update(nginx_arg=nginx_arg, nginx_var=nginx_variable, nginx_map_source=nginx_map_source)


@dataclass(frozen=True)
class Check:
    """``if (<variable> [<op> <value>]) { return 403; }``; ``value`` is a literal, quoted on output."""

    variable: str
    op: Literal["", "=", "!="] = ""
    value: str = ""


@dataclass(frozen=True)
class Verdict:
    """Dry run: ``set $mg_verdict <decision>`` when ``check`` holds (always when None); the last one set wins."""

    check: Check | None
    decision: str


@dataclass(frozen=True)
class Location:
    modifier: Literal["=", "~"]
    path: str
    deny_all: bool
    checks: tuple[Check, ...]
    comment: str
    verdicts: tuple[Verdict, ...] = ()


def render(policy: Policy, options: NginxOptions) -> Rendered:
    ports = proxy_ports(policy, "nginx", options.listen, options.upstream)
    full, prefix, dry_run = options.full, options.prefix, options.dry_run
    paths = main_paths(prefix) if full or dry_run else {}
    dry_run_log: str | None = None
    if dry_run:
        # The full config logs where its access_log is; a drop-in cannot know the main config's log
        # directory: under --prefix, else Debian's.
        dry_run_log = paths["access_log"] if full else f"{(prefix or DROPIN_LOG_DIR).rstrip('/')}/{DRY_RUN_LOG}"
    context = build_context(policy, ports, dry_run_log=dry_run_log)
    text = render_template("nginx", "http.conf.j2", **context)
    if full:
        text = render_template("nginx", "full.conf.j2", http_block=text, daemon=not options.no_daemon, **paths)
    return Rendered(text, planned_locations(context))


def parse_back(text: str) -> object:
    return parse_locations(text)


def build_context(
    policy: Policy,
    ports: tuple[ProxyPort, ...],
    *,
    dry_run_log: str | None = None,
) -> dict[str, Any]:
    flags = Flags()
    rule_flags = client_and_rule_flags(policy, flags)
    servers = []
    for port in ports:
        if port.name == "grpc":
            locations = _grpc_locations(policy, rule_flags, flags)
        else:
            locations = _http_locations(policy, port.name, rule_flags, flags)
        servers.append(_server(policy, port, locations))
    return {
        "name": policy.name,
        "namespace": policy.namespace,
        "geos": flags.geos,
        "maps": flags.maps,
        "map_hash": hash_sizes(flags),
        "servers": servers,
        "grpc_denied_message": GRPC_DENIED_MESSAGE,
        "long_timeout": LONG_TIMEOUT,
        "dry_run_log": dry_run_log,
    }


def _server(policy: Policy, port: ProxyPort, locations: list[Location]) -> dict[str, Any]:
    upstream = f"meshgen_{identifier(policy.name)}_{port.name}"
    return {
        "port": port.name,
        "triton_port": policy.port(port.name),
        "listen": str(port.listen),
        "upstream_name": upstream,
        "pass_to": f"{'grpc' if port.name == 'grpc' else 'http'}://{upstream}",
        "upstream": str(port.upstream),
        "grpc": port.name == "grpc",
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


# --- locations (client and rule flags: meshgen/targets/nginx_flags.py) ------------------------------


@dataclass(frozen=True)
class Step:
    """A rule as it applies in one location."""

    rule: PolicyRule
    flag: FlagVar | None  # "1" when the rule matches the request there; None: it always does


def _decision(
    deny: list[Step],
    allow: list[Step],
    method: Check,
    flags: Flags,
) -> tuple[bool, tuple[Check, ...], tuple[Verdict, ...]]:
    """(deny everyone, checks, dry-run verdicts): a request passes iff no deny rule and some allow rule matches.

    The verdicts replay ``decide()`` in reverse priority, so the last one whose check holds names the same
    deciding rule: wrong method, else the first deny rule (spec order), else the first allow rule.
    """
    verdicts = [Verdict(None, "deny default")]
    verdicts += [
        Verdict(None if s.flag is None else Check(s.flag.name), f"allow {s.rule.label}")
        for s in sorted(allow, key=lambda step: -step.rule.index)
    ]
    verdicts += [
        Verdict(None if s.flag is None else Check(s.flag.name), f"deny {s.rule.label}")
        for s in sorted(deny, key=lambda step: -step.rule.index)
    ]
    verdicts.append(Verdict(method, "deny method"))
    last_unconditional = max(i for i, verdict in enumerate(verdicts) if verdict.check is None)
    audit = tuple(verdicts[last_unconditional:])
    if any(step.flag is None for step in deny) or not allow:
        return True, (), audit
    checks = [method, *(Check(step.flag.name) for step in deny if step.flag is not None)]
    if all(step.flag is not None for step in allow):
        # By the number in their names (then the name), so generated names and goldens are stable.
        chosen = sorted({step.flag for step in allow if step.flag is not None}, key=lambda f: (f.order, f.name))
        flag = chosen[0] if len(chosen) == 1 else flags.add_any_of(chosen)
        checks.append(Check(flag.name, "=", "0"))
    return False, tuple(checks), audit


def _method_check(methods: tuple[str, ...], flags: Flags) -> Check:
    if len(methods) == 1:
        return Check("request_method", "!=", methods[0])
    variable = flags.add_map(
        ["request_method"],
        "mg_method_" + "_".join(m.lower() for m in methods),
        # Regex keys: plain map keys would compare case-insensitively.
        [("default", "0"), *((f"~^{regex_literal(m)}\\z", "1") for m in methods)],
    )
    return Check(variable, "=", "0")


def _models_there(rule: PolicyRule, endpoint: HttpEndpoint) -> frozenset[str] | Literal[False] | None:
    """What ``rule`` grants on ``endpoint``: every model (None), the listed ones, or nothing (False)."""
    models: set[str] = set()
    covered = False
    for grant in rule.http:
        if grant.endpoint != endpoint:
            continue
        if grant.models is None:
            return None
        if endpoint.model_scoped:  # a model list never covers a path that names no model (as in decide())
            covered = True
            models.update(grant.models)
    return frozenset(models) if covered else False


class _EndpointGrants:
    """Which rules grant one endpoint, and on which models, computed once per endpoint.

    An endpoint has one location per listed model; rescanning every rule's grants (and copying a
    rule's model list) for each of them made the nginx target quadratic in the number of models.
    """

    def __init__(self, policy: Policy, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        self.rules = policy.rules
        # Rules are keyed by their position in policy.rules: sorted positions are spec order.
        # position -> _models_there(rule, endpoint), for the rules that grant the endpoint at all
        self.models: dict[int, frozenset[str] | None] = {}
        self.any_model: set[int] = set()  # rules granting every model
        self.by_model: dict[str, set[int]] = {}  # model -> rules listing it
        for position, rule in enumerate(policy.rules):
            models = _models_there(rule, endpoint)
            if models is False:
                continue
            self.models[position] = models
            if models is None:
                self.any_model.add(position)
            for model in models or ():
                self.by_model.setdefault(model, set()).add(position)

    def granting(self, model: str) -> list[PolicyRule]:
        """The rules that grant ``model`` here, in spec order: those for every model and those listing it."""
        return [self.rules[position] for position in sorted(self.any_model | self.by_model.get(model, set()))]


def _steps(
    action: Literal["allow", "deny"],
    grants: _EndpointGrants,
    model: str | None,
    capture: bool,
    rule_flags: dict[int, FlagVar],
    flags: Flags,
) -> list[Step]:
    """The rules of ``action`` covering the endpoint for ``model`` (None: a model no per-model location has,
    or with ``capture`` the model captured from the path) with their flags there."""
    if model is not None:
        return [Step(rule, rule_flags.get(rule.index)) for rule in grants.granting(model) if rule.action == action]
    steps: list[Step] = []
    for position, models in grants.models.items():
        rule = grants.rules[position]
        if rule.action != action:
            continue
        if models is None:
            steps.append(Step(rule, rule_flags.get(rule.index)))
        elif capture:
            steps.append(Step(rule, rule_flag(rule, models, rule_flags, flags)))
    return steps


def _endpoint_location(
    policy: Policy,
    grants: _EndpointGrants,
    model: str | None,
    rule_flags: dict[int, FlagVar],
    flags: Flags,
) -> Location:
    endpoint = grants.endpoint
    pattern = endpoint.pattern(model)
    # A generic shape with another variable besides {model} captures the model and looks it up in maps,
    # rather than one regex location per model (whose cost grows with the number of models).
    versioned = model is None and endpoint.model_scoped and sum(s == ANY_SEGMENT for s in pattern) > 1
    capture = versioned and any(grants.models.values())
    deny = _steps("deny", grants, model, capture, rule_flags, flags)
    allow = _steps("allow", grants, model, capture, rule_flags, flags)
    deny_all, checks, verdicts = _decision(deny, allow, _method_check(endpoint.methods, flags), flags)
    if ANY_SEGMENT in pattern:
        parts = []
        for template_segment, segment in zip(endpoint.segments, pattern, strict=True):
            if segment != ANY_SEGMENT:
                parts.append(regex_literal(segment))
            elif capture and template_segment == "{model}":
                parts.append(f"(?<{MODEL_CAPTURE}>[^/]+)")
            else:
                parts.append("[^/]+")
        modifier: Literal["=", "~"] = "~"
        path = "^/" + "/".join(parts) + "\\z"
    else:
        modifier, path = "=", "/" + "/".join(pattern)
    what = f"{endpoint.category} {endpoint.template}" + (
        f" for model {model}"
        if model is not None
        else " for any model (model lists: the captured $mg_model looked up in maps)"
        if capture
        else " for any model"
        if versioned
        else " for any other model"
        if endpoint.model_scoped
        else ""
    )
    return Location(modifier, path, deny_all, checks, _comment(what, deny, allow), verdicts)


def _label(step: Step) -> str:
    listed = step.flag is not None and step.flag.model_set is not None
    return step.rule.label + (" (listed models)" if listed else "")


def _comment(what: str, deny: list[Step], allow: list[Step]) -> str:
    parts = [what]
    if deny:
        parts.append("denied by " + ", ".join(map(_label, deny)))
    if allow:
        parts.append("allowed by " + ", ".join(map(_label, allow)))
    else:
        parts.append("no allow rule")
    return "; ".join(parts)


def _http_locations(
    policy: Policy,
    port: PortName,
    rule_flags: dict[int, FlagVar],
    flags: Flags,
) -> list[Location]:
    exact: list[Location] = []
    regex: list[Location] = []
    for endpoint in load_catalog().http:
        if endpoint.port != port:
            continue
        grants = _EndpointGrants(policy, endpoint)
        if endpoint.model_scoped and sum(s in VARIABLES for s in endpoint.segments) == 1:
            # Only {model} varies: one exact location per listed model (a tree lookup, flat).
            models = sorted(
                {m for rule in policy.rules for g in rule.http if g.endpoint == endpoint for m in g.models or ()}
            )
            exact += [_endpoint_location(policy, grants, model, rule_flags, flags) for model in models]
        location = _endpoint_location(policy, grants, None, rule_flags, flags)
        # Regex locations are tried in file order: shapes follow catalog order, the order in which
        # Triton's router tries them.
        (exact if location.modifier == "=" else regex).append(location)
    return exact + regex


def _grpc_locations(policy: Policy, rule_flags: dict[int, FlagVar], flags: Flags) -> list[Location]:
    for rule in policy.rules:
        assert all(grant.models is None for grant in rule.grpc), "per-model gRPC is withheld by the capabilities"
    locations = []
    for method in load_catalog().grpc:
        deny = [Step(r, rule_flags.get(r.index)) for r in policy.rules_for("deny") if method in r.grpc_methods]
        allow = [Step(r, rule_flags.get(r.index)) for r in policy.rules_for("allow") if method in r.grpc_methods]
        deny_all, checks, verdicts = _decision(deny, allow, Check("request_method", "!=", GRPC_METHOD), flags)
        locations.append(
            Location("=", method.path, deny_all, checks, _comment(_grpc_what(method), deny, allow), verdicts)
        )
    return locations


def _grpc_what(method: GrpcMethod) -> str:
    return f"{method.category} {method.name}"


# --- parse-back check -------------------------------------------------------------------------------


def planned_locations(context: dict[str, Any]) -> list[tuple[str, str]]:
    return [(loc.modifier, loc.path) for server in context["servers"] for loc in server["locations"]]


def parse_locations(text: str) -> list[tuple[str, str]]:
    """Tokenize the output (braces must balance) and list its ``location = | ~`` blocks in order."""
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
    return seen


# One token per match, in nginx's terms: whitespace and comments (skipped), a brace or ';', a quoted
# string (group 2 or 3, escapes still in) or a bare word. One regex scan instead of a Python loop per
# character: the check runs on every generated config, megabytes for thousands of models.
_TOKEN = re.compile(
    r"""\s+|#[^\n]*|([{};])|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([^\s{};"'#][^\s{};]*)""", re.DOTALL
)
_ESCAPE = re.compile(r"""\\(["'\\])""")


def _tokens(text: str) -> list[str]:
    """nginx's tokenizer, enough for our own output: words, quoted strings (unescaped), braces, ';'."""
    tokens: list[str] = []
    index = 0
    while index < len(text):
        match = _TOKEN.match(text, index)
        if match is None:
            raise AssertionError(f"nginx template produced an unterminated quoted string at offset {index}")
        index = match.end()
        brace, double, single, word = match.groups()
        if word is not None:
            tokens.append(word)
        elif brace is not None:
            tokens.append(brace)
        elif double is not None or single is not None:
            quoted = double if double is not None else single
            tokens.append(_ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted)
    return tokens
