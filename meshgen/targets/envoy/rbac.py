"""The Envoy RBAC HTTP filter for a compiled policy, on the unified matcher API.

One filter with an RBAC ``matcher`` (``shadow_matcher`` for a dry run): a first-match ``matcher_list``
of the deny entries, then the allow entries; ``on_no_match`` denies. An entry whose predicate matches
and whose action (or nested model trie) matches decides; a nested trie that finds no key does NOT
decide, the list goes on. Every action is named after the spec rule and client it comes from
(``rules[2]-from[admin]``, ``default-deny``), so Envoy's dynamic metadata and logs name the rule that
decided.

One entry per (rule, client, port/method group, path shape):

- predicate: ``:method`` exact; in the filter-only output the destination port; the client identity
  (URI SAN exact/regex for principals/namespaces, direct source IP in CIDRs, exact header values);
  then the path.
- paths: the matcher reads the RAW ``:path`` (query string included), so a literal path P is
  ``exact P`` or ``prefix "P?"``, and a path with ``*`` segments is a small RE2 regex ending in
  ``(?:\\?.*)?`` with ``[^/?]+`` for a segment: a query can never stand in for a segment.
- per-model grants: a constant shape-regex gate (model segment ``[^/?]+``), then a nested
  ``prefix_match_map`` trie keyed ``/v2/models/<model>/`` (``exact_match_map`` / ``prefix
  "/v2/models/<model>?"`` when the model is the last segment). The gate has already checked every
  other segment, and model names hold neither '/' nor '?', so the key pins the model segment exactly.
  Each per-model entry starts with ``:method`` and a literal-prefix guard on :path (``prefix
  /v2/models/``, ``/v2/repository/``; implied by the gate, so it changes no decision): a request for
  another endpoint leaves the entry after one string compare, before the identity and the gate regex.
  Lookup cost does not grow with the number of models, and no regex holds a model list, so the
  output never needs a raised RE2 program-size limit. A client's tries with the same keys (inference
  over POST and metadata over GET both key ``/v2/models/<model>/``) are one entry whose predicate is
  either group's: each model is written once per key form.
- endpoints whose model segment follows a variable segment (``/v2/repository/{repo}/models/{model}/
  load``) cannot be keyed by a prefix; they get one small regex per model behind their own shape
  gate, so only requests of that shape pay for it.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from meshgen.address import PortName
from meshgen.catalog import ANY_SEGMENT, HttpEndpoint
from meshgen.policy.identity import ClientIdentity, Headers, IpBlocks, Jwt, Namespaces, Principals
from meshgen.policy.model import Policy, PolicyRule
from meshgen.targets.contract import Encoders, encode_identity
from meshgen.targets.envoy.guard import (
    INSPECTED_KEY,
    MODEL_HEADER,
    MODEL_KEY,
    NAMESPACE,
    UNPROVEN_KEY,
    guard_filter,
    inspected_methods,
)
from meshgen.targets.envoy.jwt import AUTHORIZATION, JWT_FILTER, PAYLOAD_KEY, UNREAD_AUTHORIZATION, jwt_filter
from meshgen.targets.envoy.openai import MODEL_KEY as JSON_MODEL_KEY
from meshgen.targets.envoy.openai import NAMESPACE as JSON_NAMESPACE
from meshgen.targets.envoy.openai import body_limited, json_filter

RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
ACTION_NAME = "envoy.filters.rbac.action"
ACTION_TYPE = "type.googleapis.com/envoy.config.rbac.v3.Action"
HEADER_INPUT = "envoy.matching.inputs.request_headers"
HEADER_INPUT_TYPE = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
PORT_INPUT = "envoy.matching.inputs.destination_port"
PORT_INPUT_TYPE = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput"
SOURCE_IP_INPUT = "envoy.matching.inputs.direct_source_ip"
SOURCE_IP_INPUT_TYPE = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DirectSourceIPInput"
URI_SAN_INPUT = "envoy.matching.inputs.uri_san"
URI_SAN_INPUT_TYPE = "type.googleapis.com/envoy.extensions.matching.common_inputs.ssl.v3.UriSanInput"
METADATA_INPUT = "envoy.matching.inputs.dynamic_metadata"
METADATA_INPUT_TYPE = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DynamicMetadataInput"
METADATA_MATCHER = "envoy.matching.matchers.metadata_matcher"
METADATA_MATCHER_TYPE = "type.googleapis.com/envoy.extensions.matching.input_matchers.metadata.v3.Metadata"
MATCH_DELEGATE_TYPE = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
SKIP_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
IP_MATCHER = "envoy.matching.input_matchers.ip"
IP_MATCHER_TYPE = "type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip"
GRPC_METHOD = "POST"  # every gRPC call is an HTTP/2 POST
SPIFFE = "spiffe://"
SEGMENT = "[^/?]+"  # one non-empty path segment of the raw :path, never into the query
QUERY = r"(?:\?.*)?"
DEFAULT_DENY = "default-deny"

_MODEL = "{model}"


def http_filters(policy: Policy, *, port: PortName | None, dry_run: bool) -> list[dict[str, Any]]:
    """JWT verification (where a rule uses a JWT client), the gRPC model guard (where a rule limits gRPC
    methods to models), the OpenAI body reader (where a rule limits OpenAI inference to models), then the
    RBAC filters."""
    tokens = jwt_filter(policy, dry_run=dry_run)
    guard = []
    if port in (None, "grpc") and inspected_methods(policy):
        guard = [_guarded_only_where_needed(policy, guard_filter(policy), port)]
    if port in (None, "openai") and body_limited(policy):
        guard.append(_json_reader(policy, port))
    return [*([tokens] if tokens else []), *guard, *rbac_filters(policy, port=port, dry_run=dry_run)]


def _json_reader(policy: Policy, port: PortName | None) -> dict[str, Any]:
    """The JSON body reader; in the filter-only output skipped off the OpenAI port (it buffers bodies)."""
    reader = json_filter()
    if port is not None:
        return reader
    elsewhere = {"not_matcher": _single(_input(PORT_INPUT, PORT_INPUT_TYPE), {"exact": str(policy.port("openai"))})}
    skip = {"action": {"name": "skip", "typed_config": {"@type": SKIP_FILTER_TYPE}}}
    return {
        "name": reader["name"],
        "typed_config": {
            "@type": MATCH_DELEGATE_TYPE,
            "extension_config": reader,
            "xds_matcher": {"matcher_list": {"matchers": [{"predicate": elsewhere, "on_match": skip}]}},
        },
    }


def rbac_filters(policy: Policy, *, port: PortName | None, dry_run: bool) -> list[dict[str, Any]]:
    """One RBAC filter whose first-match matcher holds the deny entries, then the allow entries, then
    denies (``on_no_match``): the first entry that matches decides, so a deny entry always wins over an
    allow entry, as in decide(). (istiod's DENY filter + ALLOW filter pair costs a second filter on every
    request for the same decisions.)

    ``port`` None: every Triton port, each entry pinned to its container port with a destination-port
    predicate (the sidecar / mesh case). ``port`` "http"|"grpc"|...: only that port's grants and no port
    predicate (one listener per port in a standalone bootstrap).
    """
    deny = _entries(policy, policy.rules_for("deny"), port, "DENY")
    if policy.jwt_providers:
        # jwt_authn removes every token it verified: an Authorization header left is a credential it did
        # not read (another scheme, "bearer" in lower case), never to be passed on or trusted.
        unread = _header(AUTHORIZATION, {"safe_regex": _regex(".*")})
        deny.insert(0, {"predicate": unread, "on_match": _action(UNREAD_AUTHORIZATION, "DENY")})
    allow = _entries(policy, policy.rules_for("allow"), port, "ALLOW")
    return [_filter(policy.name, [*deny, *allow], _action(DEFAULT_DENY, "DENY"), port, dry_run)]


def _filter(
    label: str, entries: list[dict[str, Any]], default: dict[str, Any], port: PortName | None, dry_run: bool
) -> dict[str, Any]:
    prefix = f"{label}-{port}." if port else f"{label}."
    matcher: dict[str, Any] = {}
    if entries:
        matcher["matcher_list"] = {"matchers": entries}
    matcher["on_no_match"] = default
    config: dict[str, Any] = {"@type": RBAC_TYPE}
    if dry_run:
        # A shadow matcher is only counted and logged; with no enforcing matcher the filter allows all.
        config["shadow_matcher"] = matcher
        config["shadow_rules_stat_prefix"] = prefix
    else:
        config["matcher"] = matcher
        config["rules_stat_prefix"] = prefix
    return {"name": RBAC_FILTER, "typed_config": config}


def _action(name: str, action: str) -> dict[str, Any]:
    return {"action": {"name": ACTION_NAME, "typed_config": {"@type": ACTION_TYPE, "name": name, "action": action}}}


def _entries(
    policy: Policy,
    rules: Iterable[PolicyRule],
    port: PortName | None,
    action: str,
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for rule in rules:
        groups = _groups(policy, rule, port)
        if not groups:
            continue  # nothing on this port
        clients: list[tuple[str, list[dict[str, Any]]]] = (
            [("anyone", [])]
            if rule.clients is None
            else [(client.name, identity_predicates(client)) for client in rule.clients]
        )
        for client_name, identity in clients:
            on_match = _action(f"{rule.label}-from[{client_name}]", action)
            # One trie per key set: groups of other methods (infer is POST, metadata GET) key the same
            # models the same way, so their gates share one map. Every entry of this client carries the
            # same action, so where an entry sits among them changes no decision.
            tries: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
            for group in groups:
                entries.extend(group.entries(identity, on_match, deny=action == "DENY"))
                for map_field, keys, predicate in group.trie_predicates(identity):
                    tries.setdefault((map_field, keys), []).append(predicate)
            for (map_field, keys), predicates in tries.items():
                tree = {map_field: {"map": dict.fromkeys(keys, on_match)}}
                entries.append(
                    {
                        "predicate": _any(predicates),
                        "on_match": {"matcher": {"matcher_tree": {"input": _path_input(), **tree}}},
                    }
                )
    return entries


class TrieKey(Enum):
    """How a per-model trie keys the raw :path at a literal prefix such as ``/v2/models/``."""

    MODEL_THEN_SEGMENT = "prefix_match_map"  # model in the middle: key "<prefix><model>/"
    MODEL_LAST = "exact_match_map"  # model is the last segment: key "<prefix><model>"
    MODEL_LAST_QUERY = "prefix_match_map?"  # ... followed by a query: key "<prefix><model>?"

    @property
    def map_field(self) -> str:
        return "exact_match_map" if self is TrieKey.MODEL_LAST else "prefix_match_map"


@dataclass
class _Trie:
    gates: list[str] = field(default_factory=list)  # shape regexes (the model segment any [^/?]+)
    keys: dict[str, None] = field(default_factory=dict)  # in first-seen order


@dataclass
class _RegexFallback:
    """Per-model regexes behind one shape gate, for shapes a prefix cannot key (variable before the model)."""

    literal: str  # literal prefix of the gate, checked first
    regexes: dict[str, None] = field(default_factory=dict)


class _Group:
    """The paths one rule grants on one port for one method set; rendered as matcher entries."""

    def __init__(self, methods: tuple[str, ...], port_number: int | None, excluded: tuple[str, ...]) -> None:
        self.head = [_any([_header(":method", {"exact": m}) for m in methods])]
        if port_number is not None:
            self.head.append(_single(_input(PORT_INPUT, PORT_INPUT_TYPE), {"exact": str(port_number)}))
        self.excluded = excluded
        self.static: list[dict[str, Any]] = []  # path predicates
        self.tries: dict[tuple[str, TrieKey], _Trie] = {}  # per literal prefix and key kind, first-seen order
        self.fallback: dict[str, _RegexFallback] = {}  # gate regex -> its per-model regexes
        self.grpc_models: dict[tuple[str, ...], list[str]] = {}  # models -> gRPC method paths limited to them
        self.json_models: dict[tuple[str, ...], list[str]] = {}  # models -> OpenAI body routes limited to them

    def add_json_models(self, path: str, models: tuple[str, ...]) -> None:
        self.json_models.setdefault(models, []).append(path)

    def add_grpc_models(self, method_path: str, models: tuple[str, ...]) -> None:
        self.grpc_models.setdefault(models, []).append(method_path)

    def add_static(self, predicate: dict[str, Any]) -> None:
        if predicate not in self.static:
            self.static.append(predicate)

    def add_models(self, endpoint: HttpEndpoint, models: tuple[str, ...]) -> None:
        segments = endpoint.segments
        at = segments.index(_MODEL)
        before = segments[:at]
        gate_segments = tuple(
            SEGMENT if s == _MODEL else _segment_regex(endpoint.pattern()[i]) for i, s in enumerate(segments)
        )
        if any(s.startswith("{") for s in before):
            gate = "/" + "/".join(gate_segments) + QUERY
            literal = "/" + "".join(s + "/" for s in itertools.takewhile(lambda s: not s.startswith("{"), before))
            fallback = self.fallback.setdefault(gate, _RegexFallback(literal))
            for model in models:
                fallback.regexes[
                    "/"
                    + "/".join(
                        re.escape(model) if s == _MODEL else g for s, g in zip(segments, gate_segments, strict=True)
                    )
                    + QUERY
                ] = None
            return
        prefix = "/" + "".join(s + "/" for s in before)
        if at < len(segments) - 1:
            self._trie(
                prefix,
                TrieKey.MODEL_THEN_SEGMENT,
                "/" + "/".join(gate_segments) + QUERY,
                (prefix + model + "/" for model in models),
            )
        else:
            self._trie(prefix, TrieKey.MODEL_LAST, "/" + "/".join(gate_segments), (prefix + model for model in models))
            self._trie(
                prefix,
                TrieKey.MODEL_LAST_QUERY,
                "/" + "/".join(gate_segments) + r"\?.*",
                (prefix + model + "?" for model in models),
            )

    def _trie(self, prefix: str, kind: TrieKey, gate: str, keys: Iterable[str]) -> None:
        trie = self.tries.setdefault((prefix, kind), _Trie())
        if gate not in trie.gates:
            trie.gates.append(gate)
        for key in keys:
            trie.keys[key] = None

    def entries(
        self, identity: list[dict[str, Any]], on_match: dict[str, Any], *, deny: bool = False
    ) -> list[dict[str, Any]]:
        # The path right after :method (and port), the identity after it: a request for another
        # endpoint leaves the entry after string compares, before an identity check (the source-IP
        # matcher formats and parses the peer address on every evaluation).
        head = self.head
        result: list[dict[str, Any]] = []
        if self.static:
            conditions = [*head, _any(self.static), *identity]
            if self.excluded:
                conditions.append({"not_matcher": _any([p for path in self.excluded for p in _literal(path)])})
            result.append({"predicate": _all(conditions), "on_match": on_match})
        for gate_regex, fallback in self.fallback.items():
            nested = {
                "matcher_list": {
                    "matchers": [
                        {"predicate": _path({"safe_regex": _regex(r)}), "on_match": on_match} for r in fallback.regexes
                    ]
                }
            }
            result.append(
                {
                    "predicate": _all(
                        [*self._guarded(fallback.literal), *identity, _path({"safe_regex": _regex(gate_regex)})]
                    ),
                    "on_match": {"matcher": nested},
                }
            )
        for models, methods in self.grpc_models.items():
            result += _grpc_model_entries(head, identity, methods, models, on_match, deny)
        for models, paths in self.json_models.items():
            result += _json_model_entries(head, identity, paths, models, on_match, deny)
        return result

    def trie_predicates(self, identity: list[dict[str, Any]]) -> Iterable[tuple[str, tuple[str, ...], dict[str, Any]]]:
        """(map field, trie keys, predicate) of each per-model trie; the caller writes one entry per key set.

        The literal-prefix guard on :path (implied by the gate regexes, which all start with that literal)
        comes right after :method, so a request for another endpoint leaves the predicate after one string
        compare instead of running the identity checks and every gate regex.
        """
        for (prefix, kind), trie in self.tries.items():
            # One RE2 program for every shape (a full match of the alternation is a full match of one
            # of them): one regex run per request instead of one per shape.
            gate = _path({"safe_regex": _regex(trie.gates[0] if len(trie.gates) == 1 else _alternation(trie.gates))})
            yield kind.map_field, tuple(trie.keys), _all([*self._guarded(prefix), *identity, gate])

    def _guarded(self, literal: str) -> list[dict[str, Any]]:
        """``:method``, the literal-prefix guard on :path, then the destination port (filter output)."""
        return [self.head[0], _path({"prefix": literal}), *self.head[1:]]


def _groups(policy: Policy, rule: PolicyRule, port: PortName | None) -> list[_Group]:
    grouped: dict[tuple[PortName, tuple[str, ...], tuple[str, ...]], _Group] = {}

    def group(port_name: PortName, methods: tuple[str, ...], excluded: tuple[str, ...]) -> _Group:
        key = (port_name, methods, excluded)
        if key not in grouped:
            grouped[key] = _Group(methods, policy.port(port_name) if port is None else None, excluded)
        return grouped[key]

    for grant in rule.http:
        if port is not None and grant.endpoint.port != port:
            continue
        target = group(grant.endpoint.port, grant.endpoint.methods, grant.excluded_paths)
        if grant.models is not None and grant.endpoint.body_model:
            target.add_json_models(grant.endpoint.template, grant.models)
            continue
        if grant.models is not None and grant.endpoint.model_scoped:
            target.add_models(grant.endpoint, grant.models)
            continue
        for pattern in grant.patterns:
            for predicate in path_predicates(pattern):
                target.add_static(predicate)
    if rule.grpc and port in (None, "grpc"):
        target = group("grpc", (GRPC_METHOD,), ())
        for grpc_grant in rule.grpc:
            if grpc_grant.models is not None:
                target.add_grpc_models(grpc_grant.method.path, grpc_grant.models)
            else:
                # gRPC paths carry no query: decide() compares the whole :path.
                target.add_static(_path({"exact": grpc_grant.method.path}))
    return list(grouped.values())


def _grpc_model_entries(
    head: list[dict[str, Any]],
    identity: list[dict[str, Any]],
    methods: list[str],
    models: tuple[str, ...],
    on_match: dict[str, Any],
    deny: bool,
) -> list[dict[str, Any]]:
    """Entries for methods limited to ``models``, named in the request message (the guard's metadata).

    The name is looked up in a flat map keyed by the guard's request header, behind a gate that the
    guard's metadata is present (a client's own header is removed by the guard, and without the metadata,
    which only the guard writes, worthless). A deny also applies when the name is unproven, and when the
    guard did not run at all (fail closed).
    """
    call = [*head, _any([_path({"exact": path}) for path in methods]), *identity]
    lookup = {
        "matcher_tree": {
            "input": _header_input(MODEL_HEADER),
            "exact_match_map": {"map": dict.fromkeys(models, on_match)},
        }
    }
    entries = [{"predicate": _all([*call, _metadata_present(MODEL_KEY)]), "on_match": {"matcher": lookup}}]
    if deny:
        entries.append({"predicate": _all([*call, _metadata_present(UNPROVEN_KEY)]), "on_match": on_match})
        guard_missing = {"not_matcher": _metadata_present(INSPECTED_KEY)}
        entries.append({"predicate": _all([*call, guard_missing]), "on_match": on_match})
    return entries


def _json_model_entries(
    head: list[dict[str, Any]],
    identity: list[dict[str, Any]],
    paths: list[str],
    models: tuple[str, ...],
    on_match: dict[str, Any],
    deny: bool,
) -> list[dict[str, Any]]:
    """Entries for OpenAI routes limited to ``models``, named by the JSON body (json_to_metadata's metadata).

    Only a string value can match; a deny also applies when there is none (unproven: fail closed).
    """
    route = [*head, _any([p for path in paths for p in _literal(path)]), *identity]
    entries = [{"predicate": _all([*route, _json_model(_one_of(models))]), "on_match": on_match}]
    if deny:
        unproven = {"not_matcher": _json_model({"string_match": {"safe_regex": {"regex": ".+"}}})}
        entries.append({"predicate": _all([*route, unproven]), "on_match": on_match})
    return entries


def _json_model(value: dict[str, Any]) -> dict[str, Any]:
    keys = [{"key": JSON_MODEL_KEY}]
    return {
        "single_predicate": {
            "input": _input(METADATA_INPUT, METADATA_INPUT_TYPE, filter=JSON_NAMESPACE, path=keys),
            "custom_match": {
                "name": METADATA_MATCHER,
                "typed_config": {"@type": METADATA_MATCHER_TYPE, "value": value},
            },
        }
    }


def _one_of(values: tuple[str, ...]) -> dict[str, Any]:
    """A string value equal to one of ``values`` (or_match needs two or more)."""
    matchers = [_exactly(value) for value in values]
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def _metadata_present(key: str) -> dict[str, Any]:
    return {
        "single_predicate": {
            "input": _input(METADATA_INPUT, METADATA_INPUT_TYPE, filter=NAMESPACE, path=[{"key": key}]),
            "custom_match": {
                "name": METADATA_MATCHER,
                "typed_config": {"@type": METADATA_MATCHER_TYPE, "value": {"present_match": True}},
            },
        }
    }


def _guarded_only_where_needed(policy: Policy, guard: dict[str, Any], port: PortName | None) -> dict[str, Any]:
    """The guard, skipped (by Envoy's match_delegate) for every request whose decision cannot depend on the
    model: so clients whose grants are not per model see no new limit (size, compression) and no cost.

    The guard runs when the method is limited to models for the caller and the model can change the
    outcome: some deny rule limited to models matches, or some allow rule limited to models matches and
    no rule for every model decides first (a deny for every model denies, an allow for every model allows,
    whatever the model). Identities and paths are the RBAC entries' own predicates.
    """
    methods = {method.path for method in inspected_methods(policy)}
    head = [_header(":method", {"exact": GRPC_METHOD})]
    if port is None:
        head.append(_single(_input(PORT_INPUT, PORT_INPUT_TYPE), {"exact": str(policy.port("grpc"))}))

    def matching(action: str, limited: bool) -> list[dict[str, Any]]:
        """Predicates 'a rule of ``action`` (limited to models or not) matches an inspected method'."""
        found = []
        for rule in policy.rules_for("allow" if action == "ALLOW" else "deny"):
            paths = [g.method.path for g in rule.grpc if g.method.path in methods and (g.models is not None) == limited]
            if not paths:
                continue
            who = [[]] if rule.clients is None else [identity_predicates(client) for client in rule.clients]
            call = _any([_path({"exact": path}) for path in dict.fromkeys(paths)])
            found += [_all([*head, call, *identity]) for identity in who]
        return found

    def either(predicates: list[dict[str, Any]]) -> dict[str, Any] | None:
        return _any(predicates) if predicates else None

    deny_any, deny_limited = either(matching("DENY", False)), either(matching("DENY", True))
    allow_any, allow_limited = either(matching("ALLOW", False)), either(matching("ALLOW", True))
    depends: list[dict[str, Any]] = []
    if deny_limited is not None:
        depends.append(deny_limited)
    if allow_limited is not None:
        depends.append(allow_limited if allow_any is None else _all([allow_limited, {"not_matcher": allow_any}]))
    inspect = _any(depends)
    if deny_any is not None:
        inspect = _all([inspect, {"not_matcher": deny_any}])
    # Every predicate above names an inspected method: checking the method first (after :method, on the
    # filter output the port) lets every other call skip the guard after a few string compares.
    inspect = _all([*head, _any([_path({"exact": path}) for path in sorted(methods)]), inspect])
    skip = {"action": {"name": "skip", "typed_config": {"@type": SKIP_FILTER_TYPE}}}
    return {
        "name": guard["name"],
        "typed_config": {
            "@type": MATCH_DELEGATE_TYPE,
            "extension_config": guard,
            "xds_matcher": {"matcher_list": {"matchers": [{"predicate": {"not_matcher": inspect}, "on_match": skip}]}},
        },
    }


def path_predicates(pattern: tuple[str, ...]) -> list[dict[str, Any]]:
    """Predicates on the raw ``:path`` for one catalog path pattern (``*`` = one whole segment)."""
    path = "/" + "/".join(pattern)
    if ANY_SEGMENT not in pattern:
        return _literal(path)
    return [_path({"safe_regex": _regex("/" + "/".join(_segment_regex(s) for s in pattern) + QUERY)})]


def _literal(path: str) -> list[dict[str, Any]]:
    # The raw :path is P itself or P followed by a query string.
    return [_path({"exact": path}), _path({"prefix": path + "?"})]


def _alternation(regexes: list[str]) -> str:
    return "|".join(f"(?:{regex})" for regex in regexes)


def _segment_regex(segment: str) -> str:
    return SEGMENT if segment == ANY_SEGMENT else re.escape(segment)


def _regex(regex: str) -> dict[str, Any]:
    return {"google_re2": {}, "regex": regex}


def _input(name: str, type_url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": type_url, **fields}}


def _path_input() -> dict[str, Any]:
    return _header_input(":path")


def _header_input(name: str) -> dict[str, Any]:
    return _input(HEADER_INPUT, HEADER_INPUT_TYPE, header_name=name)


def _single(matcher_input: dict[str, Any], value_match: dict[str, Any]) -> dict[str, Any]:
    return {"single_predicate": {"input": matcher_input, "value_match": value_match}}


def _header(name: str, value_match: dict[str, Any]) -> dict[str, Any]:
    return _single(_input(HEADER_INPUT, HEADER_INPUT_TYPE, header_name=name), value_match)


def _path(value_match: dict[str, Any]) -> dict[str, Any]:
    return _single(_path_input(), value_match)


def _any(predicates: list[dict[str, Any]]) -> dict[str, Any]:
    return predicates[0] if len(predicates) == 1 else {"or_matcher": {"predicate": predicates}}


def _all(predicates: list[dict[str, Any]]) -> dict[str, Any]:
    return predicates[0] if len(predicates) == 1 else {"and_matcher": {"predicate": predicates}}


def _principals(kind: Principals, client: ClientIdentity) -> list[dict[str, Any]]:
    uri_san = _input(URI_SAN_INPUT, URI_SAN_INPUT_TYPE)
    return [_any([_single(uri_san, {"exact": SPIFFE + p}) for p in kind.values])]


def _namespaces(kind: Namespaces, client: ClientIdentity) -> list[dict[str, Any]]:
    # Istio identities are exactly spiffe://<td>/ns/<ns>/sa/<sa>; RE2 safe_regex is a full match.
    uri_san = _input(URI_SAN_INPUT, URI_SAN_INPUT_TYPE)
    return [
        _any(
            [
                _single(uri_san, {"safe_regex": _regex(f"spiffe://[^/]+/ns/{re.escape(ns)}/sa/[^/]+")})
                for ns in kind.values
            ]
        )
    ]


def _ip_blocks(kind: IpBlocks, client: ClientIdentity) -> list[dict[str, Any]]:
    # The direct peer address: X-Forwarded-For can't impersonate.
    return [
        {
            "single_predicate": {
                "input": _input(SOURCE_IP_INPUT, SOURCE_IP_INPUT_TYPE),
                "custom_match": {
                    "name": IP_MATCHER,
                    "typed_config": {
                        "@type": IP_MATCHER_TYPE,
                        "cidr_ranges": [_cidr(block) for block in kind.blocks],
                        "stat_prefix": f"meshgen_{client.name.replace('-', '_')}_ip",
                    },
                },
            }
        }
    ]


def _headers(kind: Headers, client: ClientIdentity) -> list[dict[str, Any]]:
    # Exact, case-sensitive header values.
    return [_header(header.name, {"exact": header.value.value}) for header in kind.headers]


def _payload(path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    """The verified token's payload at ``path`` matches ``value`` (a ValueMatcher); never without a token."""
    keys = [{"key": key} for key in (PAYLOAD_KEY, *path)]
    return {
        "single_predicate": {
            "input": _input(METADATA_INPUT, METADATA_INPUT_TYPE, filter=JWT_FILTER, path=keys),
            "custom_match": {
                "name": METADATA_MATCHER,
                "typed_config": {"@type": METADATA_MATCHER_TYPE, "value": value},
            },
        }
    }


def _exactly(value: str) -> dict[str, Any]:
    return {"string_match": {"exact": value}}


def _holds(values: tuple[str, ...]) -> dict[str, Any]:
    """A string claim equal to one of ``values``, or a list claim holding one (istiod's shape too)."""
    matchers = [m for value in values for m in ({"list_match": {"one_of": _exactly(value)}}, _exactly(value))]
    return {"or_match": {"value_matchers": matchers}}


def _jwt(kind: Jwt, client: ClientIdentity) -> list[dict[str, Any]]:
    # An account of the issuer: iss exact and sub a non-empty string, as Istio's requestPrincipals.
    # envoy.type.matcher.v3.RegexMatcher (metadata values): RE2 is its only engine, google_re2 is deprecated.
    any_subject = {"string_match": {"safe_regex": {"regex": ".+"}}}
    subject = _exactly(kind.subject) if kind.subject is not None else any_subject
    predicates = [_payload(("iss",), _exactly(kind.issuer)), _payload(("sub",), subject)]
    if kind.audiences is not None:
        predicates.append(_payload(("aud",), _holds(kind.audiences)))
    return predicates + [_payload((claim.name,), _holds((claim.value,))) for claim in kind.claims]


# Identity kind -> its predicates (all must hold). A kind missing here must be refused by the capability table.
ENCODERS: Encoders[list[dict[str, Any]]] = {
    Principals: _principals,
    Namespaces: _namespaces,
    IpBlocks: _ip_blocks,
    Headers: _headers,
    Jwt: _jwt,
}


def identity_predicates(client: ClientIdentity) -> list[dict[str, Any]]:
    """Predicates that all must hold for ``client`` (any value within one identity kind)."""
    return [predicate for predicates in encode_identity("envoy", client, ENCODERS) for predicate in predicates]


def _cidr(block: str) -> dict[str, Any]:
    network = ipaddress.ip_network(block, strict=False)
    return {"address_prefix": str(network.network_address), "prefix_len": network.prefixlen}
