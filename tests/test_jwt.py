"""JWT clients on a real Envoy: every way a token can be wrong, and every place it can be put.

The case ``jwt-tenants`` (two issuers; partner: one account with an audience; research: a group claim;
batch: a subject with '/', from its network) runs as the generated bootstrap and as the filter output
in front of the stand-in backend. Tokens are minted by hand (tests/support/jwt_tokens.py) with the
keys whose public halves the case's JWKS files hold. Each request is decided by ``decide()``, which
verifies the token itself; the proxy must answer the same (401 only for a token that fails
verification), and a refused request must never reach the backend. The full request matrix of each
JWT client and its near misses runs in tests/test_envoy_conformance.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshgen.policy import Decision, Identity, Request, TokenRefusal, decide
from tests.support.goldens import GOLDEN_DIR
from tests.support.grpc_messages import request_message
from tests.support.h2client import GRPC_HEADERS, H2Response, H2Session, grpc_frame
from tests.support.jwt_tokens import claims, invalid_tokens, mint, provider_key
from tests.support.matrix import LOOPBACK_OUTSIDER_IP
from tests.test_envoy_conformance import RunningCase, start_case, start_filter_host

pytestmark = pytest.mark.envoy

CASE = "jwt-tenants"
LOGIN, PARTNER_IDP = "https://login.example.com/", "https://idp.partner.example"
LOGIN_RSA, LOGIN_EC, PARTNER_RSA = provider_key("login"), provider_key("login", "EC"), provider_key("partner")
STRANGER = provider_key("stranger")
SERVICE = "/inference.GRPCInferenceService/"

# (label, port, method, path, model named in the gRPC message)
PROBES = [
    ("health (anyone)", "http", "GET", "/v2/health/ready", None),
    ("partner's infer", "http", "POST", "/v2/models/add/infer", None),
    ("research's stats", "http", "GET", "/v2/models/stats", None),
    ("gRPC ServerLive (anyone)", "grpc", "POST", SERVICE + "ServerLive", None),
    ("gRPC partner's ModelInfer", "grpc", "POST", SERVICE + "ModelInfer", "add"),
    ("metrics (nobody)", "metrics", "GET", "/metrics", None),
]


def partner() -> dict[str, object]:
    return claims(LOGIN, "svc-partner", "triton", lifetime=3600)


def research() -> dict[str, object]:
    return claims(LOGIN, "alice", ["triton-research"], lifetime=3600, groups=["staff", "research"])


def authorization_values() -> dict[str, str]:
    """Authorization header values by label: good tokens, every invalid kind, odd placements."""
    good = mint(partner(), LOGIN_RSA)
    values = {
        "partner, RS256": f"Bearer {good}",
        "research, ES256": f"Bearer {mint(research(), LOGIN_EC)}",
        "batch": f"Bearer {mint(claims(PARTNER_IDP, 'batch/nightly', lifetime=3600), PARTNER_RSA)}",
        "login account of no client": f"Bearer {mint(claims(LOGIN, 'bob', 'triton', lifetime=3600), LOGIN_RSA)}",
    }
    for kind, token in invalid_tokens(partner(), LOGIN_RSA, STRANGER).items():
        values[f"invalid (RSA): {kind}"] = f"Bearer {token}"
    for kind, token in invalid_tokens(research(), LOGIN_EC, provider_key("stranger", "EC")).items():
        values[f"invalid (EC): {kind}"] = f"Bearer {token}"
    values |= {
        "other audience": f"Bearer {mint({**partner(), 'aud': 'someone-else'}, LOGIN_RSA)}",
        "no audience": f"Bearer {mint({k: v for k, v in partner().items() if k != 'aud'}, LOGIN_RSA)}",
        "login token signed with the partner IdP's key": f"Bearer {mint(partner(), PARTNER_RSA)}",
        "partner IdP token signed with login's key": (
            f"Bearer {mint(claims(PARTNER_IDP, 'batch/nightly', lifetime=3600), LOGIN_RSA, kid=PARTNER_RSA.kid)}"
        ),
        "lower-case bearer": f"bearer {good}",
        "upper-case BEARER": f"BEARER {good}",
        "Basic credentials": "Basic dXNlcjpwYXNz",
        "Bearer without a token": "Bearer",
        "token without a scheme": good,
        "two tokens in one header": f"Bearer {good},Bearer {good}",
        "scheme twice": f"Bearer Bearer {good}",
        "junk before the scheme": f"Token Bearer {good}",
    }
    return values


@dataclass(frozen=True)
class Observed:
    response: H2Response
    reached: bool  # the backend received the request
    credentials: list[str]  # Authorization values the backend received

    @property
    def status(self) -> str:
        """ "ok", "401" or "403", from HTTP status or gRPC status."""
        if self.response.status == 200 and self.response.grpc_status in (None, 0):
            return "ok"
        if self.response.status == 401 or self.response.grpc_status == 16:
            return "401"
        return "403" if self.response.status == 403 or self.response.grpc_status == 7 else str(self.response)


def send(
    case: RunningCase, port: str, method: str, path: str, model: str | None, headers: list[tuple[str, str]]
) -> Observed:
    backend = case.backend
    before = (len(backend.http_seen), len(backend.grpc_seen), len(backend.authorization_seen))
    with H2Session(case.listen[port], source_ip=LOOPBACK_OUTSIDER_IP) as session:
        if port == "grpc":
            response = session.request(
                method, path, [*GRPC_HEADERS, *headers], [grpc_frame(request_message(path, model or ""))]
            )
        else:
            response = session.request(method, path, headers)
    reached = (len(backend.http_seen), len(backend.grpc_seen)) != before[:2]
    return Observed(response, reached, backend.authorization_seen[before[2] :])


def expected_status(decision: Decision, audience_status: str) -> str:
    if decision.allowed:
        return "ok"
    if decision.token is TokenRefusal.INVALID:
        return "401"
    return audience_status if decision.token is TokenRefusal.AUDIENCE else "403"


def check(case: RunningCase, audience_status: str) -> list[str]:
    problems = []
    for label, value in authorization_values().items():
        for probe, port, method, path, model in PROBES:
            request = Request(
                port,  # type: ignore[arg-type]
                method,
                path,
                Identity(source_ip=LOOPBACK_OUTSIDER_IP, headers={"authorization": value}),
                body_model=model if model is not None else "",
            )
            decision = decide(case.spec, request)
            want = expected_status(decision, audience_status)
            seen = send(case, port, method, path, model, [("authorization", value)])
            if seen.status != want or seen.reached != decision.allowed or seen.credentials:
                problems.append(
                    f"{label} / {probe}: got {seen.status} (reached={seen.reached}, credentials={seen.credentials}), "
                    f"decide() says {want}: {decision.reason}"
                )
    return problems


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCase]:
    with start_case(CASE, tmp_path_factory.mktemp("jwt")) as running:
        yield running


def test_the_case_names_the_keys_the_tests_sign_with() -> None:
    jwks = (GOLDEN_DIR / CASE / "keys" / "login.jwks.json").read_text()
    assert LOGIN_RSA.kid in jwks and LOGIN_EC.kid in jwks
    assert PARTNER_RSA.kid in (GOLDEN_DIR / CASE / "keys" / "partner.jwks.json").read_text()


def test_every_token_and_placement_is_decided_as_decide_says(bootstrap: RunningCase) -> None:
    """Bootstrap: a token outside its issuer's audiences is a failed verification like any other (401)."""
    problems = check(bootstrap, audience_status="401")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:25])


def test_the_filter_output_decides_the_same_but_answers_403_for_an_audience(tmp_path: Path) -> None:
    """The filter output has no HCM to rewrite replies: Envoy's JWT filter answers a wrong audience 403."""
    with start_filter_host(CASE, tmp_path) as host:
        problems = check(host, audience_status="403")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:25])


def test_a_token_is_read_from_nowhere_else(bootstrap: RunningCase) -> None:
    """Query parameters, cookies and other headers are never token sources: the caller stays anonymous."""
    token = mint(partner(), LOGIN_RSA)
    for where, path, headers in [
        ("query access_token", f"/v2/models/add/infer?access_token={token}", []),
        ("cookie", "/v2/models/add/infer", [("cookie", f"access_token={token}")]),
        ("x-jwt-assertion", "/v2/models/add/infer", [("x-jwt-assertion", token)]),
        ("x-authorization", "/v2/models/add/infer", [("x-authorization", f"Bearer {token}")]),
    ]:
        seen = send(bootstrap, "http", "POST", path, None, headers)
        assert seen.status == "403" and not seen.reached, (where, seen)
    anyone = send(bootstrap, "http", "GET", f"/v2/health/ready?access_token={token}", None, [])
    assert anyone.status == "ok", anyone  # anonymous, and health is anyone's


def test_two_authorization_headers_are_refused(bootstrap: RunningCase) -> None:
    good = f"Bearer {mint(partner(), LOGIN_RSA)}"
    for pair in [(good, good), (good, "Basic eA=="), (good, f"Bearer {mint(partner(), STRANGER)}")]:
        seen = send(bootstrap, "http", "POST", "/v2/models/add/infer", None, [("authorization", v) for v in pair])
        assert seen.status in ("401", "403") and not seen.reached, (pair, seen)


def test_a_verified_token_is_removed_before_triton(bootstrap: RunningCase) -> None:
    good = f"Bearer {mint(partner(), LOGIN_RSA)}"
    for port, method, path, model in [
        ("http", "POST", "/v2/models/add/infer", None),
        ("grpc", "POST", SERVICE + "ModelInfer", "add"),
    ]:
        seen = send(bootstrap, port, method, path, model, [("authorization", good)])
        assert seen.status == "ok" and seen.reached and seen.credentials == [], seen


def test_expiry_has_sixty_seconds_of_clock_skew(bootstrap: RunningCase) -> None:
    for offset, allowed in [(-30, True), (-120, False)]:
        body = {**partner(), "exp": int(partner()["exp"]) - 3600 + offset}  # type: ignore[call-overload]
        seen = send(
            bootstrap,
            "http",
            "POST",
            "/v2/models/add/infer",
            None,
            [("authorization", f"Bearer {mint(body, LOGIN_RSA)}")],
        )
        assert (seen.status == "ok") == allowed, (offset, seen)


def near_miss_values() -> dict[str, str]:
    """Authorization values by label: tokens of login.example.com that verify (the issuer takes their
    audience) but fall just short of a client; the matrix's token variants cover the other narrowings."""
    return {
        # partner takes [triton] only; research's audience is the issuer's too, so these verify.
        "partner's subject, research's audience": f"Bearer {mint({**partner(), 'aud': 'triton-research'}, LOGIN_RSA)}",
        "partner's subject, research's audience in a list": (
            f"Bearer {mint({**partner(), 'aud': ['triton-research', 'other']}, LOGIN_RSA)}"
        ),
        # research is any account of the issuer in group research: an empty subject is no account.
        "research's claims, empty subject": f"Bearer {mint({**research(), 'sub': ''}, LOGIN_EC)}",
        # RE2's '.' (Envoy) and istiod's "<iss>/*" match no newline: such a subject is no account either.
        "research's claims, a subject with a newline": (
            f"Bearer {mint({**research(), 'sub': 'alice' + chr(10)}, LOGIN_EC)}"
        ),
        "research's group as a prefix": f"Bearer {mint({**research(), 'groups': ['staff', 'researchers']}, LOGIN_EC)}",
    }


def test_tokens_that_verify_but_fall_short_of_a_client_are_refused(bootstrap: RunningCase) -> None:
    """Each near miss verifies (so it is anonymous to nothing: health is ok) and is refused as a client."""
    problems = []
    for label, value in near_miss_values().items():
        for probe, port, method, path, model in PROBES:
            request = Request(
                port,  # type: ignore[arg-type]
                method,
                path,
                Identity(source_ip=LOOPBACK_OUTSIDER_IP, headers={"authorization": value}),
                body_model=model if model is not None else "",
            )
            decision = decide(bootstrap.spec, request)
            assert decision.token is None, (label, decision)  # verified; refused, if at all, by the rules
            assert decision.allowed == (path == "/v2/health/ready" or path.endswith("ServerLive")), (label, probe)
            seen = send(bootstrap, port, method, path, model, [("authorization", value)])
            want = "ok" if decision.allowed else "403"
            if seen.status != want or seen.reached != decision.allowed or seen.credentials:
                problems.append(f"{label} / {probe}: got {seen.status} (reached={seen.reached}), decide() says {want}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems)
