"""JWT clients (issue 14) through the generated Envoy bootstrap, in front of the real Triton.

The bootstrap of ``specs/jwt-tenants.yaml`` (loopback variant) verifies bearer tokens of two issuers
(RS256 and ES256, keys from ``tests.support.jwt_tokens.provider_key``) and grants on their claims. Each
case of the table below is an identity (a source address and an Authorization value, minted when the
module starts) making one tritonclient call, HTTP or gRPC, with the outcome this suite expects:

* ``granted``: the call succeeds with the right answer (inference outputs compared with numpy), status
  200 / OK on the wire, and Triton's verbose log shows it arrived;
* ``denied``: HTTP 403 / gRPC PERMISSION_DENIED, and it never reached Triton;
* ``unauthenticated`` (a token that fails verification, even on health, which anyone may call): HTTP
  401 / gRPC UNAUTHENTICATED, and it never reached Triton.

``decide()`` with Envoy's capabilities, on each recorded wire request (the client's address, the exact
headers with the Authorization value, ``body_model`` = the call's model for gRPC), must say the same as
the table, and Triton's inference counts move by exactly the granted inferences.

The token is not forwarded: Triton's log never shows request headers, so a second, small Triton (the
"witness", started with ``--http-header-forward-pattern``/``--grpc-header-forward-pattern``) serves a
model ``add`` that also returns the headers it received as request parameters; behind its own Envoy,
an accepted token must not be among them while another header is.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e '.[test,e2e]')")

import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]

from meshgen.features import Feature
from meshgen.policy import Decision, TokenRefusal, compile_policy, decide
from meshgen.spec import Spec
from tests.e2e.calls import FIRST, SECOND, Call, Clients, _infer, _output_is, grpc_calls, http_calls
from tests.e2e.conftest import TritonInstall
from tests.e2e.exercise import E2eIdentity, Outcome, ProxyPorts, _run_call
from tests.e2e.test_proxies import _proxy, load_e2e_spec
from tests.e2e.triton_server import TritonServer
from tests.e2e.wire import GrpcRecorder, HttpTap, WireLog
from tests.support.jwt_tokens import claims, invalid_tokens, mint, provider_key
from tests.support.matrix import LOOPBACK_OUTSIDER_IP
from tests.support.relay import SourceRelay
from tests.support.targets import ENVOY, enforced_by

pytestmark = pytest.mark.e2e

SPEC_NAME = "jwt-tenants"
LOGIN = "https://login.example.com/"
PARTNER_IDP = "https://idp.partner.example"
LOGIN_KEY = provider_key("e2e-login", "RSA")  # keys/login.jwks.json
PARTNER_KEY = provider_key("e2e-partner", "EC")  # keys/partner.jwks.json
STRANGER_RSA, STRANGER_EC = provider_key("stranger", "RSA"), provider_key("stranger", "EC")
MAX_REPORTED = 30

Expected = Literal["granted", "denied", "unauthenticated"]
GRANTED: Expected = "granted"
DENIED: Expected = "denied"
UNAUTHENTICATED: Expected = "unauthenticated"
# The wire status (HTTP code / gRPC status name) and what tritonclient raises, per outcome.
WIRE = {
    "http": {"200": GRANTED, "403": DENIED, "401": UNAUTHENTICATED},
    "grpc": {"OK": GRANTED, "PERMISSION_DENIED": DENIED, "UNAUTHENTICATED": UNAUTHENTICATED},
}
CLIENT_REFUSAL = {
    "http": {DENIED: "403", UNAUTHENTICATED: "401"},
    "grpc": {DENIED: "StatusCode.PERMISSION_DENIED", UNAUTHENTICATED: "StatusCode.UNAUTHENTICATED"},
}


# --- the calls --------------------------------------------------------------------------------------


def _calls() -> dict[str, Call]:
    """The calls of the table by label: tests/e2e/calls.py's, plus a unary gRPC inference on identity."""
    wanted = {
        "http is_server_live",
        "http infer add",
        "http infer identity",
        "http infer hidden",
        "http get_model_metadata add",
        "http get_model_metadata hidden",
        "http get_inference_statistics",
        "http get_model_repository_index",
        "grpc is_server_ready",
        "grpc infer add",
        "grpc infer hidden",
        "grpc get_model_metadata add",
        "grpc get_inference_statistics",
        "grpc get_model_repository_index",
        "grpc stream_infer identity",
    }
    calls = {call.label: call for call in [*http_calls(), *grpc_calls()] if call.label in wanted}
    identity = Call(
        "grpc infer identity", "grpc", "inference", "identity", _infer(grpcclient, "identity"), _output_is("identity")
    )
    calls[identity.label] = identity
    assert set(calls) == wanted | {identity.label}
    return calls


CALLS = _calls()
EVERY_CALL = tuple(CALLS)
HEALTH = frozenset({"http is_server_live", "grpc is_server_ready"})
PARTNER_GRANTS = HEALTH | {
    "http infer add",
    "grpc infer add",  # per model: the gRPC model guard reads "add" from the message
    "http get_model_metadata add",
    "grpc get_model_metadata add",
}
RESEARCH_GRANTS = HEALTH | {
    "http infer add",
    "grpc infer add",
    "http infer identity",
    "grpc infer identity",
    "http get_model_metadata add",
    "grpc get_model_metadata add",
    "http get_model_metadata hidden",  # the deny of hidden is for inference only
    "http get_inference_statistics",
    "grpc get_inference_statistics",
    # not a stream: the deny of hidden applies to every stream (its later messages are out of sight)
}
BATCH_GRANTS = HEALTH | {"http infer identity", "grpc infer identity"}
OPS_GRANTS = HEALTH | {"http get_model_repository_index", "grpc get_model_repository_index"}
# A token that fails verification, on calls anyone may make and on calls its account would be granted.
INVALID_CALLS = ("http is_server_live", "grpc is_server_ready", "http infer add", "grpc infer add")
INVALID_BATCH_CALLS = ("http is_server_live", "grpc is_server_ready", "http infer identity", "grpc infer identity")


# --- the table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    identity: E2eIdentity
    call: Call
    expected: Expected

    @property
    def label(self) -> str:
        return f"{self.call.label} as {self.identity.label}"


def _first_host(block: str) -> str:
    return str(ipaddress.ip_network(block).network_address + 1)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def partner_claims() -> dict[str, Any]:
    return claims(LOGIN, "svc-partner", "triton")


def research_claims() -> dict[str, Any]:
    return claims(LOGIN, "alice", "triton-research", groups=["staff", "research"])


def batch_claims() -> dict[str, Any]:
    return claims(PARTNER_IDP, "batch/nightly")


def cases(spec: Spec) -> list[Case]:
    """Every case, grouped by identity (one client pass each), tokens minted now."""
    outside = LOOPBACK_OUTSIDER_IP
    batch_ip, ops_ip = (_first_host((spec.clients[name].ip_blocks or [])[0]) for name in ("batch", "ops"))
    partner = mint(partner_claims(), LOGIN_KEY)
    research = mint(research_claims(), LOGIN_KEY)
    batch = mint(batch_claims(), PARTNER_KEY)
    # Verified (the issuer takes triton-research) but partner wants audience triton: nobody's token.
    partner_for_research = mint({**partner_claims(), "aud": "triton-research"}, LOGIN_KEY)
    # Verified, audience triton-research, but not in group research.
    outside_the_group = mint({**research_claims(), "groups": ["staff"]}, LOGIN_KEY)

    def who(label: str, source_ip: str, headers: dict[str, str] | None = None) -> E2eIdentity:
        return E2eIdentity(label, source_ip, headers or {})

    # (identity, the calls granted to it): every call of EVERY_CALL, the others denied.
    valid = [
        (who("nobody", outside), HEALTH),
        (who("partner", outside, _bearer(partner)), PARTNER_GRANTS),
        (who("research", outside, _bearer(research)), RESEARCH_GRANTS),
        (who("svc-partner for triton-research", outside, _bearer(partner_for_research)), HEALTH),
        (who("research account outside the group", outside, _bearer(outside_the_group)), HEALTH),
        (who("batch", batch_ip, _bearer(batch)), BATCH_GRANTS),
        (who("batch's token from elsewhere", outside, _bearer(batch)), HEALTH),
        (who("batch's address without a token", batch_ip), HEALTH),
        (who("ops", ops_ip), OPS_GRANTS),
        (who("partner from ops' address", ops_ip, _bearer(partner)), PARTNER_GRANTS | OPS_GRANTS),
        # Not a "Bearer <token>": an unread credential is refused everywhere (403), even on health.
        (who("partner with 'bearer' in lower case", outside, {"authorization": f"bearer {partner}"}), frozenset()),
    ]
    table = [
        Case(identity, CALLS[label], GRANTED if label in granted else DENIED)
        for identity, granted in valid
        for label in EVERY_CALL
    ]
    login_bad = invalid_tokens(partner_claims(), LOGIN_KEY, STRANGER_RSA)
    login_bad["wrong audience"] = mint({**partner_claims(), "aud": "other-audience"}, LOGIN_KEY)
    login_kinds = (
        "bad signature (other key, same kid)",
        "tampered payload",
        "alg none, empty signature",
        "HS256 signed with the public key",
        "unknown kid",
        "unknown issuer",
        "expired",
        "not yet valid",
        "wrong audience",
        "two segments",
        "not a JWT",
    )
    for kind in login_kinds:
        identity = who(f"partner's token, {kind}", outside, _bearer(login_bad[kind]))
        table += [Case(identity, CALLS[label], UNAUTHENTICATED) for label in INVALID_CALLS]
    # The ES256 issuer, from batch's own address: the address does not make a bad token acceptable.
    batch_bad = invalid_tokens(batch_claims(), PARTNER_KEY, STRANGER_EC)
    for kind in ("bad signature (other key, same kid)", "expired"):
        identity = who(f"batch's token, {kind}", batch_ip, _bearer(batch_bad[kind]))
        table += [Case(identity, CALLS[label], UNAUTHENTICATED) for label in INVALID_BATCH_CALLS]
    return table


# --- running it -------------------------------------------------------------------------------------


@dataclass
class Observed:
    case: Case
    outcome: Outcome

    @property
    def label(self) -> str:
        return self.case.label

    def kind(self) -> str:
        """What happened: granted / denied / unauthenticated, or a description of anything else."""
        outcome, protocol = self.outcome, self.case.call.protocol
        statuses = [wire.status for wire in outcome.wire]
        if len(statuses) != 1:
            return f"wire requests {[(w.path, w.status) for w in outcome.wire]}"
        kind = WIRE[protocol].get(statuses[0] or "")
        if kind is None:
            return f"wire status {statuses[0]} ({_failure(outcome)})"
        if kind == GRANTED:
            if outcome.error is not None:
                return f"wire {statuses[0]} but the client failed: {_failure(outcome)}"
            return GRANTED if self.case.call.check(outcome.result) else f"wrong answer {outcome.result!r}"
        if outcome.error is None:
            # tritonclient.http's is_*_live/ready turn any non-200 into False instead of raising.
            refused = self.case.call.truthy and outcome.result is False
            return kind if refused else f"wire {statuses[0]} but the client got {outcome.result!r}"
        if outcome.error.status() != CLIENT_REFUSAL[protocol][kind]:
            return f"wire {statuses[0]} but the client got {_failure(outcome)}"
        return kind

    def decisions(self, spec: Spec, enforced: frozenset[Feature]) -> list[Decision]:
        """decide() on each wire request (Authorization and address as sent, body_model the call's model)."""
        return [decide(spec, self.outcome.request(wire), enforced) for wire in self.outcome.wire]


def _failure(outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"{outcome.error.status()} {outcome.error.message()}"
    return f"answered {outcome.result!r}"


def decided(decision: Decision) -> Expected:
    if decision.allowed:
        return GRANTED
    if decision.token in (TokenRefusal.INVALID, TokenRefusal.AUDIENCE):
        return UNAUTHENTICATED  # the bootstrap answers a foreign audience 401 too (Envoy's own is 403)
    return DENIED


def _identity_pass(server: TritonServer, proxy: ProxyPorts, mine: list[Case], direct: Any) -> list[Observed]:
    """One identity's calls, in order: HTTP through a tap and gRPC through a recorder, from its address."""
    identity = mine[0].identity
    log = WireLog()
    with ExitStack() as stack:
        http_tap = HttpTap(proxy.http, log, "http", identity.source_ip)
        stack.enter_context(http_tap)
        relay = stack.enter_context(SourceRelay("127.0.0.1", proxy.grpc, identity.source_ip))
        recorder = stack.enter_context(GrpcRecorder(f"127.0.0.1:{relay.port}", log, identity.source_ip))
        http = httpclient.InferenceServerClient(http_tap.url)
        stack.callback(http.close)
        grpc = grpcclient.InferenceServerClient(recorder.url)
        stack.callback(grpc.close)
        clients = Clients(http, grpc, 0, identity.headers)
        return [Observed(case, _run_call(case.call, clients, log, identity, server, direct)) for case in mine]


@dataclass
class Exercised:
    spec: Spec
    enforced: frozenset[Feature]
    observed: list[Observed]
    seconds: float


@pytest.fixture(scope="module")
def exercised(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercised]:
    # Module scope, main thread: Envoy dies with the thread that started it (PR_SET_PDEATHSIG).
    spec, loaded = load_e2e_spec(SPEC_NAME)
    enforced = enforced_by(ENVOY, compile_policy(loaded))
    assert Feature.JWT in enforced and Feature.PER_MODEL_GRPC in enforced
    started = time.monotonic()
    process, ports = _proxy("envoy", loaded, triton, tmp_path_factory.mktemp(SPEC_NAME))
    table = cases(spec)
    direct = httpclient.InferenceServerClient(triton.http_url)
    observed: list[Observed] = []
    try:
        with process:
            for label in dict.fromkeys(case.identity.label for case in table):
                mine = [case for case in table if case.identity.label == label]
                observed += _identity_pass(triton, ports, mine, direct)
    finally:
        direct.close()
    seconds = time.monotonic() - started
    counts = Counter(case.expected for case in table)
    protocols = Counter(case.call.protocol for case in table)
    print(
        f"\n{SPEC_NAME}/envoy: {len(table)} calls ({protocols['http']} HTTP, {protocols['grpc']} gRPC; "
        f"{counts[GRANTED]} granted, {counts[DENIED]} denied, {counts[UNAUTHENTICATED]} unauthenticated) "
        f"in {seconds:.1f} s"
    )
    yield Exercised(spec, enforced, observed, seconds)


def _report(problems: list[str], total: int) -> str:
    return f"{len(problems)} of {total} calls:\n" + "\n".join(problems[:MAX_REPORTED])


def test_the_table_covers_every_outcome_on_both_protocols(exercised: Exercised) -> None:
    covered = Counter((o.case.call.protocol, o.case.expected) for o in exercised.observed)
    for protocol in ("http", "grpc"):
        for expected in (GRANTED, DENIED, UNAUTHENTICATED):
            assert covered[(protocol, expected)], covered


def test_every_call_is_one_wire_request(exercised: Exercised) -> None:
    wrong = [
        f"{o.label}: {[(w.method, w.path) for w in o.outcome.wire]}"
        for o in exercised.observed
        if len(o.outcome.wire) != 1
    ]
    assert not wrong, _report(wrong, len(exercised.observed))


def test_every_call_carried_its_authorization(exercised: Exercised) -> None:
    """What decide() is asked about is what the proxy got: the identity's Authorization value as sent."""
    problems = []
    for o in exercised.observed:
        sent = o.case.identity.headers.get("authorization")
        for wire in o.outcome.wire:
            seen = next((v for k, v in wire.headers.items() if k.lower() == "authorization"), None)
            if seen != sent:
                problems.append(f"{o.label}: Authorization on the wire {seen!r}, expected {sent!r}")
    assert not problems, _report(problems, len(exercised.observed))


def test_outcomes_are_the_expected_ones(exercised: Exercised) -> None:
    problems = [
        f"{o.label}: expected {o.case.expected}, observed {o.kind()}"
        for o in exercised.observed
        if o.kind() != o.case.expected
    ]
    assert not problems, _report(problems, len(exercised.observed))


def test_decide_agrees_with_the_table(exercised: Exercised) -> None:
    problems = []
    for o in exercised.observed:
        for decision in o.decisions(exercised.spec, exercised.enforced):
            if decided(decision) != o.case.expected:
                problems.append(
                    f"{o.label}: expected {o.case.expected}, decide() says {decided(decision)} ({decision.reason})"
                )
    assert not problems, _report(problems, len(exercised.observed))


def test_only_granted_calls_reach_triton(exercised: Exercised) -> None:
    problems = [
        f"{o.label}: expected {o.case.expected} but Triton's log says reached={o.outcome.reached_triton()}"
        for o in exercised.observed
        if o.outcome.reached_triton() != (o.case.expected == GRANTED)
    ]
    assert not problems, _report(problems, len(exercised.observed))


def test_triton_counted_exactly_the_granted_inferences(exercised: Exercised) -> None:
    inference = [o for o in exercised.observed if o.case.call.category == "inference"]
    problems = [
        f"{o.label}: Triton counted {o.outcome.inferences_counted}, expected {int(o.case.expected == GRANTED)}"
        for o in inference
        if o.outcome.inferences_counted != int(o.case.expected == GRANTED)
    ]
    assert not problems, _report(problems, len(inference))


def test_the_run_is_fast(exercised: Exercised) -> None:
    assert exercised.seconds < 60, f"{len(exercised.observed)} calls took {exercised.seconds:.1f} s"


# --- the token is not forwarded -----------------------------------------------------------------------

WITNESS_HEADER = "x-meshgen-witness"
# ``add`` as in tests/e2e/models.py, plus a second output: the request's parameters, where Triton puts
# the headers its --*-header-forward-pattern flags select.
WITNESS_CONFIG = """name: "add"
backend: "python"
max_batch_size: 0
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ -1 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "PARAMETERS" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
WITNESS_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            first = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            second = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            parameters = np.array([request.parameters().encode()], dtype=np.object_)
            outputs = [pb_utils.Tensor("OUTPUT0", (first + second).astype(np.int32))]
            responses.append(pb_utils.InferenceResponse([*outputs, pb_utils.Tensor("PARAMETERS", parameters)]))
        return responses
"""
FORWARD_EVERY_HEADER = ["--http-header-forward-pattern=.*", "--grpc-header-forward-pattern=.*"]


@dataclass(frozen=True)
class Seen:
    """What the witness model answered: the sum, and the headers Triton handed it."""

    output: Any
    headers: dict[str, Any]
    text: str


def _witness_infer(module: Any, url: str, headers: dict[str, str]) -> Seen:
    client = module.InferenceServerClient(url)
    try:
        inputs = []
        for name, data in (("INPUT0", FIRST), ("INPUT1", SECOND)):
            tensor = module.InferInput(name, list(data.shape), "INT32")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        result = client.infer("add", inputs, headers=headers)
    finally:
        client.close()
    text = result.as_numpy("PARAMETERS")[0].decode()
    return Seen(result.as_numpy("OUTPUT0"), json.loads(text), text)


@dataclass
class Witnessed:
    token: str
    direct: dict[str, Seen]  # protocol -> answered without a proxy
    proxied: dict[str, Seen]  # "<protocol> as <who>" -> answered through Envoy


def _write_witness_repository(directory: Path) -> Path:
    version = directory / "add" / "1"
    version.mkdir(parents=True)
    (directory / "add" / "config.pbtxt").write_text(WITNESS_CONFIG, encoding="utf-8")
    (version / "model.py").write_text(WITNESS_MODEL, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def witnessed(triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    directory = tmp_path_factory.mktemp(f"{SPEC_NAME}-witness")
    repository = _write_witness_repository(directory / "models")
    witness = TritonServer(
        triton_install.root,
        repository,
        triton_install.backend_directory,
        directory / "witness.log",
        FORWARD_EVERY_HEADER,
    )
    with witness:
        _, loaded = load_e2e_spec(SPEC_NAME)
        process, ports = _proxy("envoy", loaded, witness, directory)
        tokens = {"partner": mint(partner_claims(), LOGIN_KEY), "research": mint(research_claims(), LOGIN_KEY)}
        urls = {"http": (httpclient, witness.http_url), "grpc": (grpcclient, witness.grpc_url)}
        direct = {
            protocol: _witness_infer(module, url, {**_bearer(tokens["partner"]), WITNESS_HEADER: protocol})
            for protocol, (module, url) in urls.items()
        }
        with process:
            proxied = {
                f"{protocol} as {name}": _witness_infer(
                    module, f"127.0.0.1:{getattr(ports, protocol)}", {**_bearer(token), WITNESS_HEADER: protocol}
                )
                for protocol, module in (("http", httpclient), ("grpc", grpcclient))
                for name, token in tokens.items()
            }
    yield Witnessed(tokens["partner"], direct, proxied)


def _authorization(seen: Seen) -> Any:
    return next((v for k, v in seen.headers.items() if k.lower() == "authorization"), None)


def test_the_witness_sees_the_token_without_a_proxy(witnessed: Witnessed) -> None:
    """The control: Triton does hand the Authorization header to the model when nothing removes it."""
    for protocol, seen in witnessed.direct.items():
        assert np.array_equal(seen.output, FIRST + SECOND), protocol
        assert _authorization(seen) == f"Bearer {witnessed.token}", (protocol, seen.headers)


def test_triton_never_sees_an_accepted_token(witnessed: Witnessed) -> None:
    assert len(witnessed.proxied) == 4
    for label, seen in witnessed.proxied.items():
        assert np.array_equal(seen.output, FIRST + SECOND), label  # granted: the token was accepted
        assert seen.headers.get(WITNESS_HEADER) == label.split()[0], (label, seen.headers)  # headers get through
        assert _authorization(seen) is None, (label, seen.headers)
        assert "Bearer" not in seen.text and witnessed.token.split(".")[2] not in seen.text, (label, seen.text)
