"""How the NGINX target identifies clients and rules: ``geo``/``map`` flags that are "1" or "0".

A client's flag is 1 only when every identity kind it lists matched (``geo $remote_addr`` for ipBlocks,
one case-sensitive, anchored regex ``map`` per header); a rule's flag is 1 when one of its clients'
is; a model set's flag is 1 when the model captured from the path is spelled exactly as listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshgen.policy.identity import ClientIdentity, Headers, IpBlocks
from meshgen.policy.model import Policy, PolicyRule
from meshgen.targets.contract import Encoders, Unencodable, encode_identity
from meshgen.targets.nginx.quote import MapSource, regex_literal

# Header values are matched through a regex written with \xHH escapes, so any visible ASCII would be safe;
# this narrower set (what API keys and tokens use) keeps config syntax characters out of the spec entirely.
SAFE_HEADER_VALUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:@,-")

MODEL_CAPTURE = "mg_model"  # named capture of the model segment in the generic regex of a versioned shape
# Map keys of model names get this prefix so that a model called "default", "include", "hostnames" or
# "volatile" is never read as a map keyword.
MODEL_KEY_PREFIX = "m:"
# "<captured>/<spelling>[/<spelling>...]" -> 1 when the captured name is one of the listed spellings,
# exactly (PCRE backreference, case-sensitive). Model names never contain '/', a path segment cannot.
SPELLING_GUARD = r"~^([^/]+)/(?:[^/]+/)*\1(?:/|\z)"


@dataclass(frozen=True)
class FlagVar:
    """A generated variable that is "1" or "0", and what it tells about."""

    name: str
    order: int = -1  # the number in its name (rule index, or model set of a bare model flag): sorts flags
    model_set: int | None = None  # the model set it checks: the rule holds only for listed models


@dataclass
class Flags:
    """The geo/map blocks computing client, rule and allow-set flags ("0" or "1")."""

    geos: list[dict[str, Any]] = field(default_factory=list)
    maps: list[dict[str, Any]] = field(default_factory=list)
    model_sets: dict[tuple[str, ...], int] = field(default_factory=dict)
    allow_sets: dict[tuple[str, ...], str] = field(default_factory=dict)
    _defined: set[str] = field(default_factory=set)

    def add_map(
        self,
        source_variables: Iterable[str],
        variable: str,
        entries: list[tuple[str, str]],
        comment: str = "",
        *,
        separator: str = "",
        prefix: str = "",
    ) -> str:
        """Define ``map "<prefix>$a<separator>$b..." $variable`` once (same name, same content)."""
        if variable not in self._defined:
            self._defined.add(variable)
            source = MapSource(tuple(source_variables), separator, prefix)
            self.maps.append({"source": source, "variable": variable, "entries": entries, "comment": comment})
        return variable

    def add_any_of(self, flags: list[FlagVar]) -> FlagVar:
        """A flag that is 1 when any of ``flags`` is; numbered, because a name spelled from the
        rule flags would grow with them past nginx's variable-name hash limits."""
        names = [flag.name for flag in flags]
        key = tuple(names)
        if key not in self.allow_sets:
            self.allow_sets[key] = self.add_map(
                names,
                f"mg_allow_{len(self.allow_sets)}",
                [("default", "0"), ("~1", "1")],
                "1 when one of these allow rules matches: " + ", ".join(names),
            )
        return FlagVar(self.allow_sets[key])

    def largest_map(self) -> int:
        return max((len(m["entries"]) for m in self.maps), default=0)

    def longest_key(self) -> int:
        return max((len(key) for m in self.maps for key, _ in m["entries"]), default=0)


NGINX_BUILTIN_VARIABLES = 200  # nginx's own variables share the variables hash with ours (~150 in 1.22)
MANY_VARIABLES = 32  # up to here nginx 1.22 builds its default variables hash (1024 slots, 64-byte buckets)


def hash_sizes(flags: Flags) -> dict[str, int] | None:
    """map_hash_* and variables_hash_* sizes when nginx's defaults (2048/64, 1024/64) would not build
    an optimal hash (nginx then warns, or for variables refuses to start).

    Emitted only then: they are http{}-wide and a main config setting them too would clash with the drop-in.
    """
    map_sizes = _hash_sizes(flags.largest_map(), flags.longest_key(), (2048, 64))
    # Counted with their '$' (one byte more than nginx hashes: a safe margin).
    variables = ["$" + m["variable"] for m in flags.maps] + ["$" + g["variable"] for g in flags.geos]
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


def identifier(name: str) -> str:
    """Spec names are lower-case DNS labels; '-' is not allowed in nginx variable names, '_' is not in them."""
    return name.replace("-", "_").replace(".", "_")


def client_and_rule_flags(policy: Policy, flags: Flags) -> dict[int, FlagVar]:
    """Define client and rule flags; returns rule index -> flag (rules from anyone have none)."""
    client_variables: dict[str, str] = {}
    rule_flags: dict[int, FlagVar] = {}
    for rule in policy.rules:
        if rule.clients is None:
            continue
        names = []
        for client in rule.clients:
            if client.name not in client_variables:
                client_variables[client.name] = _client_flag(client, flags)
            names.append(client_variables[client.name])
        variable = flags.add_map(
            names,
            f"mg_rule_{rule.index}",
            [("default", "0"), ("~1", "1")],
            f"{rule.label}: 1 when one of its clients ({', '.join(c.name for c in rule.clients)}) matches",
        )
        rule_flags[rule.index] = FlagVar(variable, rule.index)
    return rule_flags


@dataclass(frozen=True)
class GeoFlag:
    """``geo $remote_addr $variable``: 1 for the listed blocks."""

    variable: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class HeaderFlag:
    """A map of one request header: 1 when it equals ``value`` exactly (case-sensitive)."""

    variable: str
    header: str  # lower case
    value: str
    comment: str


def _ip_blocks(kind: IpBlocks, client: ClientIdentity) -> list[GeoFlag | HeaderFlag]:
    return [GeoFlag(f"mg_client_{identifier(client.name)}_ip", kind.blocks)]


def _headers(kind: Headers, client: ClientIdentity) -> list[GeoFlag | HeaderFlag]:
    found: list[GeoFlag | HeaderFlag] = []
    for position, header in enumerate(kind.headers):
        value = header.value.value
        unsafe = sorted(set(value) - SAFE_HEADER_VALUE_CHARS)
        if unsafe:
            raise Unencodable(
                f"header {header.name!r}: the value contains {''.join(unsafe)!r}; nginx matching is generated "
                "only for values made of letters, digits and ._~+/=:@,- (config syntax characters, quotes, "
                "spaces and '$' are refused)"
            )
        comment = f"client {client.name}: header {header.name} equals its value exactly (case-sensitive)"
        found.append(HeaderFlag(f"mg_client_{identifier(client.name)}_header_{position}", header.name, value, comment))
    return found


# Identity kind -> the flags it defines (all must be 1). A kind missing here must be refused by the
# capability table (principals and namespaces are: nginx cannot verify mesh identities).
ENCODERS: Encoders[list[GeoFlag | HeaderFlag]] = {
    IpBlocks: _ip_blocks,
    Headers: _headers,
}


def _client_flag(client: ClientIdentity, flags: Flags) -> str:
    parts = []
    for definitions in encode_identity("nginx", client, ENCODERS):
        for definition in definitions:
            if isinstance(definition, GeoFlag):
                flags.geos.append(
                    {
                        "variable": definition.variable,
                        "entries": [("default", "0"), *((block, "1") for block in definition.blocks)],
                    }
                )
                parts.append(definition.variable)
            else:
                parts.append(
                    flags.add_map(
                        [f"http_{identifier(definition.header)}"],
                        definition.variable,
                        [("default", "0"), (f"~^{regex_literal(definition.value)}\\z", "1")],
                        definition.comment,
                    )
                )
    base = f"mg_client_{identifier(client.name)}"
    if not parts:
        # A client listing no identity kind matches nobody (as in decide()).
        return flags.add_map(["remote_addr"], base, [("default", "0")], f"client {client.name}: matches nobody")
    return flags.add_map(
        parts,
        base,
        [("default", "0"), ("1" * len(parts), "1")],
        f"client {client.name}: every identity kind it lists matched",
    )


def model_flag(models: frozenset[str], flags: Flags) -> FlagVar:
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
        [MODEL_CAPTURE],
        f"mg_models_{number}_spelling",
        [(MODEL_KEY_PREFIX + lowered, "/".join(names)) for lowered, names in sorted(folded.items())],
        f"model set {number} ({len(key)} model(s)): the listed spelling(s) of the model captured from the path",
        prefix=MODEL_KEY_PREFIX,
    )
    variable = flags.add_map(
        [MODEL_CAPTURE, spelling],
        f"mg_models_{number}",
        [("default", "0"), (SPELLING_GUARD, "1")],
        f"model set {number}: 1 when the captured model is spelled exactly as listed",
        separator="/",
    )
    return FlagVar(variable, number, number)


def rule_flag(
    rule: PolicyRule, models: frozenset[str] | None, rule_flags: dict[int, FlagVar], flags: Flags
) -> FlagVar | None:
    """The flag of ``rule`` in a location; ``models``: the models it is limited to there (None: any)."""
    client = rule_flags.get(rule.index)
    if models is None:
        return client
    model = model_flag(models, flags)
    if client is None:
        return model
    variable = flags.add_map(
        [client.name, model.name],
        f"{client.name}_models_{model.model_set}",
        [("default", "0"), ("11", "1")],
        f"{rule.label} for a listed model: 1 when one of its clients matches and the model is listed",
    )
    return FlagVar(variable, rule.index, model.model_set)
