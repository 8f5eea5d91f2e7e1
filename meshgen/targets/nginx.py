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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgen.catalog import ANY_SEGMENT, GrpcMethod, HttpEndpoint, load_catalog
from meshgen.catalog.model import VARIABLES
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
DRY_RUN_LOG = "meshgen-dry-run.log"
DROPIN_LOG_DIR = "/var/log/nginx"  # Debian's; the drop-in's dry-run log goes there unless --prefix is given

# The templates write every value through these filters (the shared environment is cached per target).
environment("nginx").filters.update(nginx_arg=nginx_arg, nginx_var=nginx_variable)


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


@dataclass
class Flags:
    """The geo/map blocks computing client, rule and allow-set flags ("0" or "1")."""

    geos: list[dict[str, Any]] = field(default_factory=list)
    maps: list[dict[str, Any]] = field(default_factory=list)
    model_sets: dict[tuple[str, ...], int] = field(default_factory=dict)
    allow_sets: dict[tuple[str, ...], str] = field(default_factory=dict)
    _defined: set[str] = field(default_factory=set)

    def add_map(self, source_variables: Iterable[str], variable: str, entries: list[tuple[str, str]],
                comment: str = "", *, separator: str = "", prefix: str = "") -> str:
        """Define ``map "<prefix>$a<separator>$b..." $variable`` once (same name, same content)."""
        if variable not in self._defined:
            self._defined.add(variable)
            source = prefix + separator.join(nginx_variable(name) for name in source_variables)
            self.maps.append({"source": source, "variable": nginx_variable(variable), "entries": entries,
                              "comment": comment})
        return variable

    def add_any_of(self, variables: list[str]) -> str:
        """A flag that is 1 when any of ``variables`` is; numbered, because a name spelled from the
        rule flags would grow with them past nginx's variable-name hash limits."""
        key = tuple(variables)
        if key not in self.allow_sets:
            self.allow_sets[key] = self.add_map(
                variables, f"mg_allow_{len(self.allow_sets)}", [("default", "0"), ("~1", "1")],
                "1 when one of these allow rules matches: " + ", ".join(variables),
            )
        return self.allow_sets[key]

    def largest_map(self) -> int:
        return max((len(m["entries"]) for m in self.maps), default=0)

    def longest_key(self) -> int:
        return max((len(key) for m in self.maps for key, _ in m["entries"]), default=0)


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
    paths = main_paths(prefix) if full or dry_run else {}
    dry_run_log: str | None = None
    if dry_run:
        # The full config logs where its access_log is; a drop-in cannot know the main config's log
        # directory: under --prefix, else Debian's.
        dry_run_log = paths["access_log"] if full else f"{(prefix or DROPIN_LOG_DIR).rstrip('/')}/{DRY_RUN_LOG}"
    context = build_context(policy, listen_overrides or {}, upstream_overrides or {}, dry_run_log=dry_run_log)
    text = render("nginx", "http.conf.j2", **context)
    if full:
        text = render("nginx", "full.conf.j2", http_block=text, daemon=daemon, **paths)
    check_rendered(text, context)
    return text


def build_context(policy: Policy, listen_overrides: Mapping[str, str | None],
                  upstream_overrides: Mapping[str, str | None], *, dry_run_log: str | None = None,
                  ) -> dict[str, Any]:
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
        "map_hash": _map_hash_sizes(flags),
        "servers": servers,
        "grpc_denied_message": GRPC_DENIED_MESSAGE,
        "long_timeout": LONG_TIMEOUT,
        "dry_run_log": dry_run_log,
    }


NGINX_BUILTIN_VARIABLES = 200  # nginx's own variables share the variables hash with ours (~150 in 1.22)
MANY_VARIABLES = 32  # up to here nginx 1.22 builds its default variables hash (1024 slots, 64-byte buckets)


def _map_hash_sizes(flags: Flags) -> dict[str, int] | None:
    """map_hash_* and variables_hash_* sizes when nginx's defaults (2048/64, 1024/64) would not build
    an optimal hash (nginx then warns, or for variables refuses to start).

    Emitted only then: they are http{}-wide and a main config setting them too would clash with the drop-in.
    """
    map_sizes = _hash_sizes(flags.largest_map(), flags.longest_key(), (2048, 64))
    variables = [m["variable"] for m in flags.maps] + [g["variable"] for g in flags.geos]
    variable_sizes = None
    if len(variables) > MANY_VARIABLES:
        variable_sizes = _hash_sizes(
            len(variables) + NGINX_BUILTIN_VARIABLES, max(len(v) for v in variables), (1024, 64)
        )
    if map_sizes is None and variable_sizes is None:
        return None
    return {
        "max_size": (map_sizes or (2048, 64))[0],
        "bucket_size": (map_sizes or (2048, 64))[1],
        "variables_max_size": (variable_sizes or (1024, 64))[0],
        "variables_bucket_size": (variable_sizes or (1024, 64))[1],
    }


def _hash_sizes(keys: int, longest: int, defaults: tuple[int, int]) -> tuple[int, int] | None:
    """(max_size, bucket_size) for nginx's ngx_hash_init, or None when the defaults suffice.

    An element takes align(8 + key length + 2, 8) bytes and a bucket ends with a pointer. A bucket that
    holds at least four of the longest elements and a table of ~16 slots per key always leave nginx a
    size where every bucket fits; with one element per bucket it would need a collision-free table.
    """
    element = (8 + longest + 2 + 7) // 8 * 8
    bucket = defaults[1]
    while bucket < 4 * element + 8:
        bucket *= 2
    max_size = defaults[0]
    while max_size < 16 * keys:
        max_size *= 2
    sizes = (max_size, bucket)
    small = keys * 16 <= defaults[0] and element + 8 <= defaults[1]
    return None if small else sizes


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

MODEL_CAPTURE = "mg_model"  # named capture of the model segment in the generic regex of a versioned shape
# Map keys of model names get this prefix so that a model called "default", "include", "hostnames" or
# "volatile" is never read as a map keyword.
MODEL_KEY_PREFIX = "m:"
# "<captured>/<spelling>[/<spelling>...]" -> 1 when the captured name is one of the listed spellings,
# exactly (PCRE backreference, case-sensitive). Model names never contain '/', a path segment cannot.
SPELLING_GUARD = r"~^([^/]+)/(?:[^/]+/)*\1(?:/|\z)"

# A rule as it applies in one location: its label and the flag variable telling whether it matches the
# request there (None: it always does).
Step = tuple[PolicyRule, str | None]


def _model_flag(models: frozenset[str], flags: Flags) -> str:
    """1 when the captured ``$mg_model`` is exactly one of ``models``: a hash lookup, whatever their number.

    The first map finds the listed spelling(s) by a case-insensitive hash key; the second accepts only an
    exact, case-sensitive spelling, since Triton model names are case-sensitive ("Simple" != "simple").
    """
    key = tuple(sorted(models))
    if key not in flags.model_sets:
        flags.model_sets[key] = len(flags.model_sets)
    number = flags.model_sets[key]
    folded: dict[str, list[str]] = {}
    for model in key:
        folded.setdefault(model.lower(), []).append(model)
    spelling = flags.add_map(
        [MODEL_CAPTURE], f"mg_models_{number}_spelling",
        [(MODEL_KEY_PREFIX + lowered, "/".join(names)) for lowered, names in sorted(folded.items())],
        f"model set {number} ({len(key)} model(s)): the listed spelling(s) of the model captured from the path",
        prefix=MODEL_KEY_PREFIX,
    )
    return flags.add_map(
        [MODEL_CAPTURE, spelling], f"mg_models_{number}", [("default", "0"), (SPELLING_GUARD, "1")],
        f"model set {number}: 1 when the captured model is spelled exactly as listed", separator="/",
    )


def _rule_flag(rule: PolicyRule, models: frozenset[str] | None, rule_variables: dict[int, str],
               flags: Flags) -> str | None:
    """The flag of ``rule`` in a location; ``models``: the models it is limited to there (None: any)."""
    client = rule_variables.get(rule.index)
    if models is None:
        return client
    model = _model_flag(models, flags)
    if client is None:
        return model
    return flags.add_map(
        [client, model], f"{client}_models_{model.rsplit('_', 1)[1]}", [("default", "0"), ("11", "1")],
        f"{rule.label} for a listed model: 1 when one of its clients matches and the model is listed",
    )


def _decision(deny: list[Step], allow: list[Step], method: Check, flags: Flags,
              ) -> tuple[bool, tuple[Check, ...], tuple[Verdict, ...]]:
    """(deny everyone, checks, dry-run verdicts): a request passes iff no deny rule and some allow rule matches.

    The verdicts replay ``decide()`` in reverse priority, so the last one whose check holds names the same
    deciding rule: wrong method, else the first deny rule (spec order), else the first allow rule.
    """
    verdicts = [Verdict(None, "deny default")]
    verdicts += [Verdict(None if v is None else Check(v), f"allow {r.label}")
                 for r, v in sorted(allow, key=lambda step: -step[0].index)]
    verdicts += [Verdict(None if v is None else Check(v), f"deny {r.label}")
                 for r, v in sorted(deny, key=lambda step: -step[0].index)]
    verdicts.append(Verdict(method, "deny method"))
    last_unconditional = max(i for i, verdict in enumerate(verdicts) if verdict.check is None)
    audit = tuple(verdicts[last_unconditional:])
    if any(v is None for _, v in deny) or not allow:
        return True, (), audit
    checks = [method, *(Check(v) for _, v in deny if v is not None)]
    if all(v is not None for _, v in allow):
        variables = sorted({v for _, v in allow if v is not None}, key=_flag_order)
        variable = variables[0] if len(variables) == 1 else flags.add_any_of(variables)
        checks.append(Check(variable, "=", "0"))
    return False, tuple(checks), audit


def _flag_order(variable: str) -> tuple[int, str]:
    """Rule flags by rule index (then name), so generated names and goldens are stable."""
    digits = variable.removeprefix("mg_rule_").removeprefix("mg_models_").split("_", 1)[0]
    return (int(digits) if digits.isdigit() else -1, variable)


def _method_check(methods: tuple[str, ...], flags: Flags) -> Check:
    if len(methods) == 1:
        return Check("request_method", "!=", methods[0])
    variable = flags.add_map(
        ["request_method"], "mg_method_" + "_".join(m.lower() for m in methods),
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


def _steps(action: Literal["allow", "deny"], grants: _EndpointGrants, model: str | None, capture: bool,
           rule_variables: dict[int, str], flags: Flags) -> list[Step]:
    """The rules of ``action`` covering the endpoint for ``model`` (None: a model no per-model location has,
    or with ``capture`` the model captured from the path) with their flags there."""
    if model is not None:
        return [(rule, rule_variables.get(rule.index)) for rule in grants.granting(model) if rule.action == action]
    steps: list[Step] = []
    for position, models in grants.models.items():
        rule = grants.rules[position]
        if rule.action != action:
            continue
        if models is None:
            steps.append((rule, rule_variables.get(rule.index)))
        elif capture:
            steps.append((rule, _rule_flag(rule, models, rule_variables, flags)))
    return steps


def _endpoint_location(
    policy: Policy, grants: _EndpointGrants, model: str | None, rule_variables: dict[int, str], flags: Flags,
) -> Location:
    endpoint = grants.endpoint
    pattern = endpoint.pattern(model)
    # A generic shape with another variable besides {model} captures the model and looks it up in maps,
    # rather than one regex location per model (whose cost grows with the number of models).
    versioned = model is None and endpoint.model_scoped and sum(s == ANY_SEGMENT for s in pattern) > 1
    capture = versioned and any(grants.models.values())
    deny = _steps("deny", grants, model, capture, rule_variables, flags)
    allow = _steps("allow", grants, model, capture, rule_variables, flags)
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
        f" for model {model}" if model is not None
        else " for any model (model lists: the captured $mg_model looked up in maps)" if capture
        else " for any model" if versioned
        else " for any other model" if endpoint.model_scoped else "")
    return Location(modifier, path, deny_all, checks, _comment(what, deny, allow), verdicts)


def _label(step: Step) -> str:
    rule, variable = step
    return rule.label + (" (listed models)" if variable is not None and "models_" in variable else "")


def _comment(what: str, deny: list[Step], allow: list[Step]) -> str:
    parts = [what]
    if deny:
        parts.append("denied by " + ", ".join(map(_label, deny)))
    if allow:
        parts.append("allowed by " + ", ".join(map(_label, allow)))
    else:
        parts.append("no allow rule")
    return "; ".join(parts)


def _http_locations(policy: Policy, port: str, rule_variables: dict[int, str], flags: Flags) -> list[Location]:
    exact: list[Location] = []
    regex: list[Location] = []
    for endpoint in load_catalog().http:
        if endpoint.port != port:
            continue
        grants = _EndpointGrants(policy, endpoint)
        if endpoint.model_scoped and sum(s in VARIABLES for s in endpoint.segments) == 1:
            # Only {model} varies: one exact location per listed model (a tree lookup, flat).
            models = sorted({m for rule in policy.rules for g in rule.http if g.endpoint == endpoint
                             for m in g.models or ()})
            exact += [_endpoint_location(policy, grants, model, rule_variables, flags) for model in models]
        location = _endpoint_location(policy, grants, None, rule_variables, flags)
        # Regex locations are tried in file order: shapes follow catalog order, the order in which
        # Triton's router tries them.
        (exact if location.modifier == "=" else regex).append(location)
    return exact + regex


def _grpc_locations(policy: Policy, rule_variables: dict[int, str], flags: Flags) -> list[Location]:
    locations = []
    for method in load_catalog().grpc:
        deny = [(r, rule_variables.get(r.index)) for r in policy.rules_for("deny") if method in r.grpc]
        allow = [(r, rule_variables.get(r.index)) for r in policy.rules_for("allow") if method in r.grpc]
        deny_all, checks, verdicts = _decision(deny, allow, Check("request_method", "!=", GRPC_METHOD), flags)
        locations.append(Location("=", method.path, deny_all, checks,
                                  _comment(_grpc_what(method), deny, allow), verdicts))
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
