"""The executable reference: what the spec allows, request by request.

Every target's output is tested against ``decide``. It reads the spec and the catalog directly,
not the compiled rules the targets consume, so a compilation mistake cannot hide in both.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from meshgen.catalog import GrpcMethod, HttpMatch, load_catalog
from meshgen.features import Feature
from meshgen.spec.model import Client, Jwt, Rule, Spec

if TYPE_CHECKING:
    from meshgen.jwks import KeySet
    from meshgen.policy.tokens import Provider

Protocol = Literal["http", "grpc", "metrics", "openai"]
GRPC_METHOD = "POST"


@dataclass(frozen=True)
class Identity:
    """What a proxy can know about the caller."""

    principal: str | None = None  # mTLS peer identity, Istio form "<td>/ns/<ns>/sa/<sa>"
    source_ip: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # The payload of a token the proxy already verified (what-if questions: `meshgen check`/`explain`
    # cannot sign tokens). Ignored when an Authorization header is present: that one is verified.
    verified_claims: Mapping[str, Any] | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass(frozen=True)
class Request:
    protocol: Protocol  # which Triton port the request arrives on
    method: str
    path: str  # HTTP path (query allowed) or gRPC "/package.Service/Method"
    identity: Identity = Identity()
    # gRPC: the model the request message names, as protobuf parses it ("" when it names none);
    # None when a proxy reading the body cannot prove it (not one canonical, uncompressed message).
    # OpenAI inference routes: the JSON body's top-level "model" as Python's json reads it; None (or
    # "") when it cannot be read safely (not JSON, another content-type, missing, not a string, empty,
    # compressed, over the limit).
    body_model: str | None = ""


EVERY_FEATURE: frozenset[Feature] = frozenset(Feature)


class TokenRefusal(Enum):
    """Why a request carrying a credential is refused before any rule is read."""

    INVALID = "invalid"  # the token fails verification: 401 / UNAUTHENTICATED
    AUDIENCE = "audience"  # verified, but its issuer takes no token for these audiences (403 by Envoy's filter)
    NOT_A_BEARER_TOKEN = "not-a-bearer-token"  # Authorization holds no "Bearer <token>": 403


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule_index: int | None
    reason: str
    token: TokenRefusal | None = None  # set when a credential was refused


@dataclass(frozen=True)
class _Caller:
    """What the rules match on: the request's identity, and the claims of its verified token."""

    identity: Identity
    claims: Mapping[str, Any] | None = None


def decide(
    spec: Spec, request: Request, enforced: Collection[Feature] = EVERY_FEATURE, now: float | None = None
) -> Decision:
    """``enforced``: what the deciding target can enforce (its capability table); by default everything,
    i.e. what the spec means. Per-model gRPC needs ``Feature.PER_MODEL_GRPC`` and body inspection on;
    per-model OpenAI inference ``Feature.PER_MODEL_JSON`` and body inspection on.
    ``now``: the time tokens are checked at (default: the current time)."""
    caller = _caller(spec, request.identity, enforced, time.time() if now is None else now)
    if isinstance(caller, Decision):
        return caller
    target = _resolve(spec, request)
    if isinstance(target, str):
        return Decision(False, None, target)
    inspects = spec.body_inspection.enabled
    feature = Feature.PER_MODEL_JSON if request.protocol == "openai" else Feature.PER_MODEL_GRPC
    reads_body = feature in enforced and inspects
    for index, rule in enumerate(spec.rules):
        if rule.action == "deny" and _rule_matches(spec, rule, target, request, reads_body, caller):
            return Decision(False, index, f"denied by rules[{index}]")
    for index, rule in enumerate(spec.rules):
        if rule.action == "allow" and _rule_matches(spec, rule, target, request, reads_body, caller):
            return Decision(True, index, f"allowed by rules[{index}]")
    return Decision(False, None, "no rule allows it (default deny)")


def _caller(spec: Spec, identity: Identity, enforced: Collection[Feature], now: float) -> _Caller | Decision:
    """The caller, with its token verified; or the refusal of a credential, which no rule can overrule.

    Where some rule uses a JWT client, the Authorization header is the token's only place: a header
    holding anything but a ``Bearer`` token that verifies is refused on every endpoint.
    """
    providers = jwt_providers(spec) if Feature.JWT in enforced else {}
    authorization = identity.header("authorization")
    if not providers:
        return _Caller(identity)
    if authorization is None:
        return _Caller(identity, identity.verified_claims)
    from meshgen.policy.tokens import Rejected, bearer_token, verify

    token = bearer_token(authorization)
    if token is None:
        return Decision(
            False,
            None,
            "the Authorization header holds no 'Bearer <token>' (the only place a token is read)",
            TokenRefusal.NOT_A_BEARER_TOKEN,
        )
    verdict = verify(token, providers, now)
    if isinstance(verdict, Rejected):
        refusal = TokenRefusal.AUDIENCE if verdict.audience else TokenRefusal.INVALID
        return Decision(False, None, f"token rejected: {verdict.reason}", refusal)
    return _Caller(identity, verdict.claims)


def jwt_providers(spec: Spec) -> dict[str, Provider]:
    """Issuer -> what the proxy verifies its tokens with, for the JWT clients rules use."""
    from meshgen.policy.tokens import Provider

    used = {name for rule in spec.rules if rule.from_ != "anyone" for name in rule.from_}
    by_issuer: dict[str, list[Jwt]] = {}
    for name in sorted(used):
        jwt = spec.clients[name].jwt
        if jwt is not None:
            by_issuer.setdefault(jwt.issuer, []).append(jwt)
    providers = {}
    for issuer, jwts in by_issuer.items():
        lists = [jwt.audiences for jwt in jwts]
        audiences = None if None in lists else tuple(sorted({a for wanted in lists for a in wanted or ()}))
        assert jwts[0].jwks.inline is not None  # the loader inlines every JWKS
        providers[issuer] = Provider(issuer, _key_set(jwts[0].jwks.inline), audiences)
    return providers


@functools.lru_cache(maxsize=64)
def _key_set(jwks: str) -> KeySet:
    # Building keys costs a millisecond or so; decide() runs for every request of a test matrix.
    from meshgen.jwks import parse_jwks

    return parse_jwks(jwks)


def _resolve(spec: Spec, request: Request) -> HttpMatch | GrpcMethod | str:
    """The catalog entry the request reaches, or why it reaches none."""
    catalog = load_catalog()
    if request.protocol == "openai" and spec.workload.ports.openai is None:
        return "the spec does not serve the openai port (workload.ports.openai)"
    if request.protocol == "grpc":
        method = catalog.match_grpc(request.path)
        if method is None:
            return f"unknown gRPC method {request.path}"
        if request.method != GRPC_METHOD:
            return "gRPC methods are only called with POST"
        return method
    path = request.path.split("?", 1)[0]
    match = catalog.match_http(request.protocol, path)
    if match is None:
        return f"{path} is not a Triton endpoint on the {request.protocol} port"
    if request.method not in match.endpoint.methods:
        return f"{request.method} is not a method of {match.endpoint.template}"
    return match


def _rule_matches(
    spec: Spec, rule: Rule, target: HttpMatch | GrpcMethod, request: Request, reads_body: bool, caller: _Caller
) -> bool:
    return _rule_covers(rule, target, request, reads_body) and _from_matches(spec, rule, caller)


def _rule_covers(rule: Rule, target: HttpMatch | GrpcMethod, request: Request, reads_body: bool) -> bool:
    if isinstance(target, GrpcMethod):
        if target.category not in rule.categories:
            return False
        if rule.models is None:
            return True
        if not target.model_scoped:
            return False  # server-scoped: needs a rule without models
        if rule.grpc_all_models:
            return True  # the conscious widening (allow rules only)
        if target.streaming or not reads_body or request.body_model is None:
            # The name is out of sight (a stream's later messages, a target that reads no bodies) or cannot
            # be proven: an allow does not grant the method, a deny applies to every model (fail closed).
            return rule.action == "deny"
        # "" (no name: the server-wide form of ModelStatistics/TraceSetting) is never a listed model.
        return request.body_model in rule.models
    if target.endpoint.category not in rule.categories:
        return False
    if rule.models is None:
        return True
    if target.endpoint.body_model:
        if not reads_body or not request.body_model:
            return rule.action == "deny"  # as for gRPC: unreadable, so no grant and every model denied
        return request.body_model in rule.models
    return target.model is not None and target.model in rule.models


def _from_matches(spec: Spec, rule: Rule, caller: _Caller) -> bool:
    if rule.from_ == "anyone":
        return True
    return any(client_matches(spec.clients[name], caller.identity, caller.claims) for name in rule.from_)


def client_matches(client: Client, identity: Identity, claims: Mapping[str, Any] | None = None) -> bool:
    """All identity kinds the client lists must match; any value within one kind matches.

    ``claims``: the payload of the caller's verified token, if it has one."""
    checks: list[bool] = []
    if client.principals is not None:
        checks.append(identity.principal in client.principals)
    if client.namespaces is not None:
        checks.append(_namespace(identity.principal) in client.namespaces)
    if client.ip_blocks is not None:
        checks.append(_in_blocks(identity.source_ip, client.ip_blocks))
    if client.headers is not None:
        checks.append(all(identity.header(name) == str(value) for name, value in client.headers.items()))
    if client.jwt is not None:
        checks.append(claims is not None and _token_matches(client.jwt, claims))
    return bool(checks) and all(checks)


def _token_matches(jwt: Jwt, claims: Mapping[str, Any]) -> bool:
    """An account (``iss`` and a non-empty string ``sub``) of the issuer, narrowed as the client says.

    "Any account" is what the proxies match: RE2 ``.+`` (Envoy) and istiod's ``<iss>/*``, neither of
    which matches a newline, so a ``sub`` holding one is no account."""
    subject = claims.get("sub")
    if claims.get("iss") != jwt.issuer or not isinstance(subject, str) or not subject or "\n" in subject:
        return False
    if jwt.subject is not None and subject != jwt.subject:
        return False
    if jwt.audiences is not None and not any(_claim_has(claims.get("aud"), a) for a in jwt.audiences):
        return False
    return all(_claim_has(claims.get(name), value) for name, value in (jwt.claims or {}).items())


def _claim_has(claim: Any, value: str) -> bool:
    """A string claim equal to ``value``, or a list claim with such a string in it."""
    if isinstance(claim, list):
        return any(isinstance(item, str) and item == value for item in claim)
    return isinstance(claim, str) and claim == value


def _namespace(principal: str | None) -> str | None:
    if principal is None:
        return None
    # SPIFFE identities issued by Istio are exactly <trust-domain>/ns/<ns>/sa/<sa>.
    parts = principal.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[2]


def _in_blocks(source_ip: str | None, blocks: list[str]) -> bool:
    if source_ip is None:
        return False
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(block, strict=False) for block in blocks)
