"""Per-model gRPC read from the request body, on a real Envoy: the guard agrees with protobuf or refuses.

The case ``grpc-per-model`` (tenant: models add/simple only; bulk: every model but ``blocked``) runs as the
generated bootstrap in front of the stand-in backend, which parses every message it receives with
Triton's own protobuf classes. A hostile client controls every byte and every frame (raw HTTP/2): each
request of the corpus, and each random mutation of valid ones, must be refused, or reach the backend
naming a model the client may use, as protobuf parses it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.policy import Identity, Request, decide
from tests.support.grpc_messages import bypass_message, request_message
from tests.support.h2client import GRPC_HEADERS, H2Response, H2Session, grpc_frame
from tests.support.matrix import LOOPBACK_OUTSIDER_IP
from tests.test_envoy_conformance import RunningCase, start_case

pytestmark = pytest.mark.envoy

SERVICE = "/inference.GRPCInferenceService/"
INFER, METADATA, LOAD, STREAM = (
    SERVICE + m for m in ("ModelInfer", "ModelMetadata", "RepositoryModelLoad", "ModelStreamInfer")
)
TENANT, BULK = "127.0.1.1", "127.0.3.1"  # the loopback variant of tenant's and bulk's ipBlocks
TENANT_MODELS = {"add", "simple"}
LIMIT = 4096  # the case's bodyInspection.maxBytes


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCase]:
    with start_case("grpc-per-model", tmp_path_factory.mktemp("grpc-body")) as running:
        yield running


@dataclass(frozen=True)
class Outcome:
    response: H2Response
    reached: list[tuple[str, str | None]]  # (method, model protobuf parsed) the backend received

    @property
    def passed(self) -> bool:
        return self.response.status == 200 and self.response.grpc_status == 0

    @property
    def refused(self) -> bool:
        return not self.reached and (self.response.status in (400, 403) or self.response.grpc_status == 7)


def send(
    envoy: RunningCase,
    source: str,
    method: str,
    frames: list[bytes],
    headers: tuple[tuple[str, str], ...] = GRPC_HEADERS,
) -> Outcome:
    before = len(envoy.backend.grpc_models)
    with H2Session(envoy.listen["grpc"], source_ip=source) as session:
        response = session.request("POST", method, list(headers), frames)
    return Outcome(response, envoy.backend.grpc_models[before:])


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    tag = varint(number << 3 | wire)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload


def name(value: str, number: int = 1) -> bytes:
    return field(number, 2, value.encode())


OTHER_WIRE_TYPES = {
    "varint": (0, b"\x05"),
    "fixed64": (1, b"\0" * 8),
    "fixed32": (5, b"\0" * 4),
    "start group": (3, b""),
    "end group": (4, b""),
}
# (label, method, request message body bytes) that must be refused for tenant.
NON_CANONICAL: list[tuple[str, str, bytes]] = [
    ("bypass: fixed32 name field between two names", METADATA, bypass_message(METADATA, "add", "hidden")),
    ("name twice, same", INFER, name("add") + name("add")),
    ("name twice, other last", INFER, name("add") + name("hidden")),
    ("name twice, other first", INFER, name("hidden") + name("add")),
    ("non-minimal tag", METADATA, b"\x8a\x00\x03add"),
    ("non-minimal length", METADATA, b"\x0a\x83\x00add"),
    ("5-byte tag truncated to field 1 by protobuf", METADATA, b"\x8a\x80\x80\x80\x10\x03add"),
    ("6-byte tag", METADATA, b"\x8a\x80\x80\x80\x80\x00\x03add"),
    ("length past the end", METADATA, b"\x0a\x09add"),
    ("truncated tag", METADATA, name("add") + b"\x80"),
    ("truncated varint field", METADATA, name("add") + b"\x10\xff"),
    ("field number 0", METADATA, b"\x02\x03add"),
    ("wire type 6", METADATA, name("add") + b"\x0e"),
    ("wire type 7", METADATA, name("add") + b"\x0f"),
    ("unknown field in a group", METADATA, b"\x4b" + name("hidden") + b"\x4c" + name("add")),
    ("name with NUL", METADATA, name("add\0")),
    ("name with a space", METADATA, name("add ")),
    ("name in UTF-8", METADATA, field(1, 2, "addé".encode())),
    ("name too long", METADATA, field(1, 2, b"a" * 2000)),
    ("too many fields", INFER, name("add") + b"\x18\x01" * 10_001),
    ("name field for load is 2, not 1", LOAD, name("add", 1)),
]
for _label, (_wire, _payload) in OTHER_WIRE_TYPES.items():
    for _where, _body in (
        ("before", field(1, _wire, _payload) + name("add")),
        ("after", name("add") + field(1, _wire, _payload)),
        ("between", name("hidden") + field(1, _wire, _payload) + name("add")),
    ):
        NON_CANONICAL.append((f"name field as {_label}, {_where} the name", METADATA, _body))


@pytest.mark.parametrize(("label", "method", "body"), NON_CANONICAL, ids=[c[0] for c in NON_CANONICAL])
def test_non_canonical_messages_are_refused_for_a_per_model_client(
    envoy: RunningCase, label: str, method: str, body: bytes
) -> None:
    outcome = send(envoy, TENANT, method, [grpc_frame(body)])
    assert outcome.refused, (label, outcome)


# (label, frames) built around the allowed message "add": framing the guard must refuse.
def framings() -> list[tuple[str, list[bytes]]]:
    good = request_message(INFER, "add")
    frame = grpc_frame(good)
    return [
        ("headers only, no message", []),
        ("compressed flag", [grpc_frame(good, compressed=True)]),
        ("declared length longer than the data", [grpc_frame(good, declared_length=len(good) + 4)]),
        ("declared length shorter than the data", [grpc_frame(good, declared_length=len(good) - 1) + b"x"]),
        ("two messages in a unary call", [frame + grpc_frame(request_message(INFER, "hidden"))]),
        ("two messages, the allowed one second", [grpc_frame(request_message(INFER, "hidden")) + frame]),
        ("a partial second prefix", [frame + b"\0\0"]),
        ("prefix only", [frame[:5]]),
        ("over the inspection limit", [grpc_frame(good + field(15, 2, b"\0" * 120) * 40)]),
    ]


@pytest.mark.parametrize(("label", "frames"), framings(), ids=[f[0] for f in framings()])
def test_framing_the_guard_cannot_prove_is_refused(envoy: RunningCase, label: str, frames: list[bytes]) -> None:
    outcome = send(envoy, TENANT, INFER, frames)
    assert outcome.refused, (label, outcome)


def test_over_the_limit_is_permission_denied_with_a_clear_message(envoy: RunningCase) -> None:
    big = request_message(INFER, "add") + field(15, 2, b"\0" * 120) * 40
    assert len(big) > LIMIT
    outcome = send(envoy, TENANT, INFER, [grpc_frame(big)])
    assert outcome.refused and outcome.response.grpc_status == 7, outcome
    message = outcome.response.trailers.get("grpc-message", outcome.response.headers.get("grpc-message", ""))
    assert message == f"meshgen: the request message is larger than the inspection limit ({LIMIT} bytes)"
    far_over = send(envoy, TENANT, INFER, [grpc_frame(big * 40)])  # past the stream window too
    assert far_over.refused and far_over.response.headers.get("grpc-message") == message, far_over


@pytest.mark.parametrize(
    ("reason", "frames"),
    [
        ("name-twice", [grpc_frame(name("add") + name("add"))]),
        ("more-than-one-message", [grpc_frame(name("add")) + grpc_frame(name("add"))]),
        ("compressed", [grpc_frame(name("add"), compressed=True)]),
    ],
)
def test_refusals_of_unprovable_messages_say_why(envoy: RunningCase, reason: str, frames: list[bytes]) -> None:
    outcome = send(envoy, TENANT, INFER, frames)
    assert outcome.response.headers.get("grpc-message") == (
        f"meshgen: the model named by the request message cannot be proven ({reason})"
    ), outcome


def test_a_plain_denial_keeps_envoys_own_message(envoy: RunningCase) -> None:
    # The guard proved "hidden"; RBAC denies it. The inspection messages are for what the guard refused.
    outcome = send(envoy, TENANT, METADATA, [grpc_frame(request_message(METADATA, "hidden"))])
    assert outcome.refused and outcome.response.headers.get("grpc-message") == "RBAC: access denied", outcome


@pytest.mark.parametrize(
    "content_type",
    ["application/grpc+json", "application/grpcx", "text/plain", "application/grpc;charset=utf-8", None],
)
def test_other_content_types_are_refused(envoy: RunningCase, content_type: str | None) -> None:
    headers = (("te", "trailers"),) + ((("content-type", content_type),) if content_type else ())
    outcome = send(envoy, TENANT, METADATA, [grpc_frame(request_message(METADATA, "add"))], headers)
    assert outcome.refused, outcome


def test_a_message_split_across_data_frames_is_read_whole(envoy: RunningCase) -> None:
    frame = grpc_frame(request_message(INFER, "add") + field(15, 2, b"\0" * 500))
    outcome = send(envoy, TENANT, INFER, [frame[:3], frame[3:7], frame[7:300], frame[300:]])
    assert outcome.passed and outcome.reached == [(INFER, "add")], outcome


def test_a_clients_own_model_header_is_worthless(envoy: RunningCase) -> None:
    headers = (*GRPC_HEADERS, ("x-meshgen-grpc-model", "add"))
    outcome = send(envoy, TENANT, INFER, [grpc_frame(request_message(INFER, "hidden"))], headers)
    assert outcome.refused, outcome
    outcome = send(envoy, TENANT, INFER, [grpc_frame(b"\x0d\0\0\0\0")], headers)  # unproven + forged header
    assert outcome.refused, outcome


def test_stream_infer_is_never_granted_per_model(envoy: RunningCase) -> None:
    """A stream's later messages are never seen: a per-model client may not stream, whatever it names first."""
    from tests.support.relay import SourceRelay

    with (
        SourceRelay("127.0.0.1", envoy.listen["grpc"], TENANT) as relay,
        grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel,
    ):
        call = channel.stream_stream(STREAM)
        messages = iter([request_message(INFER, "add"), request_message(INFER, "hidden")])
        with pytest.raises(grpc.RpcError) as raised:
            list(call(messages, timeout=5))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_clients_whose_grant_does_not_depend_on_the_model_see_no_limit(envoy: RunningCase) -> None:
    """bulk's metadata calls are not inspected: compressed, odd and large messages pass; its inference
    calls are (a deny names a model), so there the guard applies."""
    large = request_message(METADATA, "anything") + field(15, 2, b"\0" * 200) * 100
    assert len(large) > LIMIT
    for frames in ([grpc_frame(large)], [grpc_frame(b"\x0d\0\0\0\0" + name("x"))]):
        outcome = send(envoy, BULK, METADATA, frames)
        assert outcome.passed, outcome
    compressed = [grpc_frame(gzip.compress(request_message(METADATA, "m")), compressed=True)]
    outcome = send(envoy, BULK, METADATA, compressed, (*GRPC_HEADERS, ("grpc-encoding", "gzip")))
    assert outcome.passed and outcome.reached == [(METADATA, "m")], outcome
    assert send(envoy, BULK, INFER, [grpc_frame(request_message(INFER, "blocked"))]).refused
    assert send(envoy, BULK, INFER, [grpc_frame(bypass_message(INFER, "other", "blocked"))]).refused
    assert send(envoy, BULK, INFER, [grpc_frame(request_message(INFER, "other"))]).passed


# --- property-based: random mutations of valid requests ------------------------------------------------

VALID = [
    request_message(INFER, "add") + field(3, 2, b"id-7") + field(2, 2, b"1"),
    request_message(METADATA, "simple") + field(2, 2, b"3"),
    name("add") + field(15, 2, b"\x01\x02\x03\x04"),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "append-field"]))
        at = draw(st.integers(0, len(body)))
        if kind == "flip" and body:
            body[min(at, len(body) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and body:
            del body[at : at + draw(st.integers(1, 3))]
        elif kind == "duplicate" and body:
            end = min(len(body), at + draw(st.integers(1, 8)))
            body[at:at] = body[at:end]
        else:
            wire = draw(st.sampled_from([0, 1, 2, 5]))
            body += field(1, wire, {0: b"\x01", 1: b"\0" * 8, 2: b"hidden", 5: b"\0" * 4}[wire])
    return bytes(body)


PROPERTY_RUNS: list[int] = []


def test_random_mutations_never_get_a_forbidden_model_to_the_backend(envoy: RunningCase) -> None:
    @settings(
        max_examples=max(300, settings.default.max_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=mutated(), method=st.sampled_from([INFER, METADATA]))
    def check(body: bytes, method: str) -> None:
        PROPERTY_RUNS.append(1)
        outcome = send(envoy, TENANT, method, [grpc_frame(body)])
        for reached_method, model in outcome.reached:
            # None: protobuf cannot parse the message at all (e.g. invalid UTF-8 in another string field),
            # so Triton refuses the call and runs no model; the guard checks only the name's encoding.
            assert model is None or model in TENANT_MODELS, (body.hex(), reached_method, model)
        if outcome.passed:
            assert outcome.reached, (body.hex(), outcome)

    check()
    print(f"grpc body property: {len(PROPERTY_RUNS)} mutated messages")
    assert len(PROPERTY_RUNS) >= 300


def test_reference_agrees_on_the_corpus_verdicts(envoy: RunningCase) -> None:
    """decide() itself: an unproven model is denied to tenant, allowed to bulk's metadata calls."""
    tenant, bulk = Identity(source_ip=TENANT), Identity(source_ip=BULK)
    spec = envoy.spec
    assert not decide(spec, Request("grpc", "POST", INFER, tenant, body_model=None)).allowed
    assert decide(spec, Request("grpc", "POST", METADATA, bulk, body_model=None)).allowed
    assert not decide(spec, Request("grpc", "POST", INFER, bulk, body_model=None)).allowed
    assert not decide(spec, Request("grpc", "POST", INFER, Identity(source_ip=LOOPBACK_OUTSIDER_IP))).allowed
