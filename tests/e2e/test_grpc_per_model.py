"""Per-model gRPC through the generated Envoy bootstrap, in front of the real Triton.

The bootstrap of ``specs/grpc-models.yaml`` (loopback variant) runs a Lua gRPC model guard that reads the
model name from the request message of unary model-scoped methods; RBAC grants or denies on it. Each
client calls tritonclient.grpc (and, for the parser-differential bypass of grpc-body-authz-notes.md,
grpcio with raw message bytes) through a :class:`GrpcRecorder` and a SourceRelay from its own loopback
address. For every call:

* the outcome is the one this suite expects (``Probe.granted``), and ``decide()`` on the equivalent
  request (gRPC POST of the recorded ``:path``, the client's address, ``body_model`` = the model the
  message names) says the same;
* granted: the right answer (inference outputs compared with numpy) and status OK on the wire;
  denied: PERMISSION_DENIED at the client and on the wire;
* Triton's verbose log has an arrival line (gRPC ``step START``) for every granted call and none for a
  denied one; its inference counts move by exactly the granted inferences, and the statistics of
  ``hidden`` (which nobody may infer on) do not move at all;
* a refusal's details say why: the bypass "cannot be proven (name-wire-type)"; a plain RBAC denial
  "RBAC: access denied" (an expected failure today: the bootstrap labels every refusal "larger than the
  inspection limit", see ``test_plain_refusals_say_rbac_access_denied``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e '.[test,e2e]')")

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs
import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from meshgen.policy import decide
from meshgen.spec import Spec
from tests.e2e.calls import EXPECTED_OUTPUT, FIRST, Call, Clients, _infer, _output_is, _stream_infer
from tests.e2e.exercise import E2eIdentity, Outcome, _run_call, identities, to_request
from tests.e2e.test_proxies import GRPC_REFUSAL, _proxy, load_e2e_spec
from tests.e2e.triton_server import TritonServer
from tests.e2e.wire import GrpcRecorder, WireLog
from tests.support.grpc_messages import bypass_message, parsed_model
from tests.support.relay import SourceRelay

pytestmark = pytest.mark.e2e

SPEC_NAME = "grpc-models"
SERVICE = "/inference.GRPCInferenceService"
MODEL_METADATA = f"{SERVICE}/ModelMetadata"
MODEL_INFER = f"{SERVICE}/ModelInfer"
RAW_TIMEOUT = 10.0
JSON = {"as_json": True}
# The details of a refusal: Envoy's own for an RBAC denial; the bootstrap's local-reply mapper's for an
# RBAC denial of a model the guard could not prove (the bypass: the name field once as fixed32).
RBAC_REFUSAL = "RBAC: access denied"
UNPROVEN_REFUSAL = "meshgen: the model named by the request message cannot be proven (name-wire-type)"


@dataclass
class RawClients(Clients):
    """The pass's clients plus a grpcio channel to the same recorder, for messages sent as raw bytes."""

    channel: Any = None  # grpc.Channel (untyped)


@dataclass(frozen=True)
class Probe:
    client: str  # the spec's client (identity label) that makes the call
    call: Call
    granted: bool  # what this suite expects; decide() must say the same

    @property
    def body_model(self) -> str:
        """What the request message names, as protobuf parses it ("" for none)."""
        return self.call.model or ""


def _tritonclient(method: str, *args: Any, **kwargs: Any) -> Callable[[Clients], Any]:
    return lambda c: getattr(c.grpc, method)(*args, headers=dict(c.headers), **kwargs)


def _raw(path: str, message: bytes) -> Callable[[Clients], Any]:
    """A generic unary call of ``path`` with ``message`` as it is (no serializer)."""

    def run(clients: Clients) -> Any:
        assert isinstance(clients, RawClients)
        try:
            return clients.channel.unary_unary(path)(
                message, metadata=list(clients.headers.items()), timeout=RAW_TIMEOUT
            )
        except grpc.RpcError as error:  # as tritonclient reports it: status "StatusCode.<NAME>"
            raise InferenceServerException(msg=error.details(), status=str(error.code())) from error

    return run


def _infer_call(model: str) -> Call:
    return Call(f"infer {model}", "grpc", "inference", model, _infer(grpcclient, model), _output_is(model))


def _stream_call(model: str) -> Call:
    return Call(f"stream_infer {model}", "grpc", "inference", model, _stream_infer(model), _output_is(model))


def _ready_call(model: str) -> Call:
    ready = _tritonclient("is_model_ready", model)
    return Call(f"is_model_ready {model}", "grpc", "health", model, ready, lambda answer: answer is True)


def _per_model_calls(model: str) -> list[Call]:
    """tenant's model-scoped unary calls on ``model``; each answer must be about that model."""

    def about(method: str, category: str, check: Callable[[Any], bool], **kwargs: Any) -> Call:
        run = _tritonclient(method, **kwargs, **JSON)
        return Call(f"{method} {model}", "grpc", category, model, run, check)

    return [
        _infer_call(model),
        about("get_model_metadata", "metadata", lambda m: m["name"] == model, model_name=model),
        _ready_call(model),
        about("get_model_config", "model-config", lambda m: m["config"]["name"] == model, model_name=model),
        about(
            "get_inference_statistics",
            "statistics",
            lambda s: [entry["name"] for entry in s["model_stats"]] == [model],
            model_name=model,
        ),
        about("get_trace_settings", "trace", lambda s: "trace_level" in s["settings"], model_name=model),
    ]


def _server_wide(method: str, category: str) -> Call:
    """A call naming no model (ModelStatistics/TraceSetting with an empty name; RepositoryIndex)."""
    return Call(f"{method} (no model)", "grpc", category, None, _tritonclient(method, **JSON))


def _repository(method: str, model: str) -> Call:
    return Call(f"{method} {model}", "grpc", "model-repository", model, _tritonclient(method, model))


def _bypass(path: str) -> Call:
    """grpc-body-authz-notes.md: ``add`` as the name, then field 1 as fixed32, then ``hidden``; protobuf
    (Triton) reads ``hidden``, a reader ignoring wire types ``add``. A granted one would answer about hidden."""
    method = path.rsplit("/", 1)[-1]
    message = bypass_message(path, "add", "hidden")
    check: Callable[[Any], bool]
    if method == "ModelInfer":
        # hidden's input after the names (protobuf merges concatenated messages), so Triton could run it.
        tensor = service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="INT32", shape=[len(FIRST)])
        inputs = service_pb2.ModelInferRequest(inputs=[tensor], raw_input_contents=[FIRST.tobytes()])
        message += inputs.SerializeToString()

        def check(reply: bytes) -> bool:
            output = service_pb2.ModelInferResponse.FromString(reply).raw_output_contents[0]
            return bool(np.array_equal(np.frombuffer(output, dtype=np.int32), EXPECTED_OUTPUT["hidden"]))
    else:

        def check(reply: bytes) -> bool:
            return bool(service_pb2.ModelMetadataResponse.FromString(reply).name == "hidden")

    assert parsed_model(path, message) == "hidden"
    category = "inference" if method == "ModelInfer" else "metadata"
    return Call(f"raw {method} bypass add->hidden", "grpc", category, "hidden", _raw(path, message), check)


def probes() -> list[Probe]:
    """Every call this suite makes, in order, and whether it must be granted."""
    tenant = [
        *(Probe("tenant", call, True) for model in ("add", "identity") for call in _per_model_calls(model)),
        # hidden is nobody's, except ModelReady: health is granted to anyone, for every model (rules[0]).
        *(Probe("tenant", call, call.category == "health") for call in _per_model_calls("hidden")),
        # The server-wide forms name no model: never one of tenant's listed models.
        Probe("tenant", _server_wide("get_inference_statistics", "statistics"), False),
        Probe("tenant", _server_wide("get_trace_settings", "trace"), False),
        # A stream's later messages could name another model: never granted per model.
        Probe("tenant", _stream_call("add"), False),
        Probe("tenant", _bypass(MODEL_METADATA), False),
        Probe("tenant", _bypass(MODEL_INFER), False),
    ]
    bulk = [
        Probe("bulk", _infer_call("add"), True),
        Probe("bulk", _infer_call("identity"), True),
        Probe("bulk", _infer_call("hidden"), False),
        # The per-model deny of hidden cannot see a stream's later messages: it applies to every stream.
        Probe("bulk", _stream_call("identity"), False),
        Probe("bulk", _bypass(MODEL_INFER), False),
    ]
    nobody = [Probe("nobody", _infer_call("add"), False), Probe("nobody", _ready_call("add"), True)]
    loader = [
        Probe("loader", _repository("unload_model", "add"), False),
        Probe("loader", _repository("load_model", "add"), False),
        Probe("loader", _server_wide("get_model_repository_index", "model-repository"), False),
        # A real cycle (a new Python stub starts): identity is loaded again afterwards.
        Probe("loader", _repository("unload_model", "identity"), True),
        Probe("loader", _repository("load_model", "identity"), True),
    ]
    return [*tenant, *bulk, *nobody, *loader]  # loader last: identity is briefly unloaded


@dataclass
class Observed:
    probe: Probe
    outcome: Outcome

    @property
    def label(self) -> str:
        return f"{self.probe.call.label} as {self.probe.client}"

    @property
    def succeeded(self) -> bool:
        return self.outcome.error is None and self.probe.call.check(self.outcome.result)

    def decided(self, spec: Spec, body_model: str | None) -> bool:
        """decide() on each recorded wire request, naming ``body_model`` in its message."""
        wires = self.outcome.wire
        return bool(wires) and all(
            decide(spec, dataclasses.replace(to_request(wire), body_model=body_model)).allowed for wire in wires
        )


@dataclass
class Exercised:
    spec: Spec
    observed: list[Observed]
    hidden_before: dict[str, Any]
    hidden_after: dict[str, Any]
    models_ready_after: dict[str, bool]
    seconds: float


def _hidden_statistics(direct: Any) -> dict[str, Any]:
    entry: dict[str, Any] = direct.get_inference_statistics("hidden")["model_stats"][0]
    return entry


def _client_pass(
    server: TritonServer, grpc_port: int, identity: E2eIdentity, calls: list[Probe], direct: Any
) -> Iterator[Observed]:
    """One client's calls through a SourceRelay from its address and a recorder, in order."""
    log = WireLog()
    with ExitStack() as stack:
        relay = stack.enter_context(SourceRelay("127.0.0.1", grpc_port, identity.source_ip))
        recorder = stack.enter_context(GrpcRecorder(f"127.0.0.1:{relay.port}", log, identity.source_ip))
        client = grpcclient.InferenceServerClient(recorder.url)
        stack.callback(client.close)
        channel = grpc.insecure_channel(recorder.url)
        stack.callback(channel.close)
        clients = RawClients(None, client, 0, identity.headers, channel)
        observed = [Observed(p, _run_call(p.call, clients, log, identity, server, direct)) for p in calls]
    yield from observed


@pytest.fixture(scope="module")
def exercised(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercised]:
    # Module scope, main thread: Envoy dies with the thread that started it (PR_SET_PDEATHSIG).
    spec, loaded = load_e2e_spec(SPEC_NAME)
    people = {identity.label: identity for identity in identities(spec)}
    started = time.monotonic()
    process, ports = _proxy("envoy", loaded, triton, tmp_path_factory.mktemp(SPEC_NAME))
    direct = httpclient.InferenceServerClient(triton.http_url)
    try:
        hidden_before = _hidden_statistics(direct)
        with process:
            observed: list[Observed] = []
            all_probes = probes()
            for client in dict.fromkeys(p.client for p in all_probes):
                mine = [p for p in all_probes if p.client == client]
                observed += _client_pass(triton, ports.grpc, people[client], mine, direct)
        hidden_after = _hidden_statistics(direct)
        ready = {model: bool(direct.is_model_ready(model)) for model in ("add", "identity", "hidden")}
        for model, is_ready in ready.items():
            if not is_ready:  # a wrongly granted unload must not break the other e2e suites
                direct.load_model(model)
    finally:
        direct.close()
    seconds = time.monotonic() - started
    print(
        f"\n{SPEC_NAME}/envoy: {len(observed)} gRPC calls ({sum(o.probe.granted for o in observed)} granted)"
        f" in {seconds:.1f} s"
    )
    yield Exercised(spec, observed, hidden_before, hidden_after, ready, seconds)


def _report(problems: list[str], total: int) -> str:
    return f"{len(problems)} of {total} calls:\n" + "\n".join(problems)


def _failure(observed: Observed) -> str:
    error = observed.outcome.error
    if error is not None:
        return f"{error.status()} {error.message()}"
    return f"answered {observed.outcome.result!r}"


def test_every_call_is_one_wire_request(exercised: Exercised) -> None:
    wrong = [f"{o.label}: {[w.path for w in o.outcome.wire]}" for o in exercised.observed if len(o.outcome.wire) != 1]
    assert not wrong, _report(wrong, len(exercised.observed))


def test_outcomes_are_the_expected_ones(exercised: Exercised) -> None:
    problems = [
        f"{o.label}: expected granted={o.probe.granted}, {'succeeded' if o.succeeded else _failure(o)}"
        for o in exercised.observed
        if o.succeeded != o.probe.granted
    ]
    assert not problems, _report(problems, len(exercised.observed))


def test_decide_agrees_with_the_observed_outcome(exercised: Exercised) -> None:
    problems = []
    for o in exercised.observed:
        decided = o.decided(exercised.spec, o.probe.body_model)
        if decided != o.succeeded:
            problems.append(f"{o.label}: decide()={decided}, observed granted={o.succeeded} ({_failure(o)})")
    assert not problems, _report(problems, len(exercised.observed))


def test_the_bypass_is_unproven_and_denied_either_way(exercised: Exercised) -> None:
    """decide() denies the bypass both for the model Triton would run and for an unprovable name (None)."""
    bypasses = [o for o in exercised.observed if "bypass" in o.probe.call.label]
    assert len(bypasses) == 3
    for o in bypasses:
        assert not o.decided(exercised.spec, "hidden"), o.label
        assert not o.decided(exercised.spec, None), o.label


def test_the_bypass_refusal_says_why(exercised: Exercised) -> None:
    details = {
        o.label: o.outcome.error.message() for o in exercised.observed if "bypass" in o.label and o.outcome.error
    }
    assert details and set(details.values()) == {UNPROVEN_REFUSAL}, details


def test_plain_refusals_say_rbac_access_denied(exercised: Exercised) -> None:
    plain = [o for o in exercised.observed if not o.probe.granted and "bypass" not in o.label]
    details = {o.label: o.outcome.error.message() for o in plain if o.outcome.error is not None}
    wrong = {label: message for label, message in details.items() if message != RBAC_REFUSAL}
    assert len(details) == len(plain) and not wrong, _report([f"{k}: {v!r}" for k, v in wrong.items()], len(plain))


def test_granted_calls_succeed_with_correct_results(exercised: Exercised) -> None:
    problems = []
    for o in (o for o in exercised.observed if o.probe.granted):
        if not o.succeeded:
            problems.append(f"{o.label}: {_failure(o)}")
        elif [w.status for w in o.outcome.wire] != ["OK"]:
            problems.append(f"{o.label}: wire status {[w.status for w in o.outcome.wire]}")
    assert not problems, _report(problems, len(exercised.observed))


def test_denied_calls_get_permission_denied(exercised: Exercised) -> None:
    problems = []
    for o in (o for o in exercised.observed if not o.probe.granted):
        if o.outcome.error is None or o.outcome.error.status() != GRPC_REFUSAL:
            problems.append(f"{o.label}: {_failure(o)}")
        elif [w.status for w in o.outcome.wire] != ["PERMISSION_DENIED"]:
            problems.append(f"{o.label}: wire status {[w.status for w in o.outcome.wire]}")
    assert not problems, _report(problems, len(exercised.observed))


def test_only_granted_calls_reach_triton(exercised: Exercised) -> None:
    problems = [
        f"{o.label}: granted={o.probe.granted} but Triton's log says reached={o.outcome.reached_triton()}"
        for o in exercised.observed
        if o.outcome.reached_triton() != o.probe.granted
    ]
    assert not problems, _report(problems, len(exercised.observed))


def test_triton_counted_exactly_the_granted_inferences(exercised: Exercised) -> None:
    inference = [o for o in exercised.observed if o.probe.call.category == "inference" and o.probe.call.model]
    problems = [
        f"{o.label}: Triton counted {o.outcome.inferences_counted}, expected {int(o.probe.granted)}"
        for o in inference
        if o.outcome.inferences_counted != int(o.probe.granted)
    ]
    assert not problems, _report(problems, len(inference))


def test_the_statistics_of_hidden_did_not_move(exercised: Exercised) -> None:
    assert exercised.hidden_after == exercised.hidden_before


def test_every_model_is_loaded_afterwards(exercised: Exercised) -> None:
    assert exercised.models_ready_after == {"add": True, "identity": True, "hidden": True}
