"""The reference decision, read like the spec: each row is a request and what the spec implies."""

from __future__ import annotations

import pytest

from meshgen.features import Feature
from meshgen.policy import Identity, Request, decide
from meshgen.policy.decide import EVERY_FEATURE
from tests.support.goldens import load_case

GATEWAY = Identity(principal="cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")
WEB = Identity(principal="cluster.local/ns/web/sa/frontend")
WEB_OTHER_TD = Identity(principal="example.org/ns/web/sa/frontend")
OPS = Identity(source_ip="10.20.3.4")
ADMIN = Identity(headers={"X-Triton-Admin": "change-me-admin-token"})
ADMIN_WRONG_CASE = Identity(headers={"x-triton-admin": "CHANGE-ME-ADMIN-TOKEN"})
MONITORING = Identity(source_ip="10.60.0.9")
NOBODY = Identity()

# (protocol, method, path, identity, allowed, deciding rule)
TRITON_ACCESS = [
    ("http", "GET", "/v2/health/live", NOBODY, True, 0),
    ("http", "HEAD", "/v2/health/live", NOBODY, False, None),
    ("grpc", "POST", "/grpc.health.v1.Health/Check", NOBODY, True, 0),
    ("http", "POST", "/v2/models/resnet50/infer", GATEWAY, True, 1),
    ("http", "POST", "/v2/models/resnet50/versions/2/infer", WEB, True, 1),
    ("http", "POST", "/v2/models/resnet50/infer", WEB_OTHER_TD, True, 1),
    ("http", "POST", "/v2/models/resnet50/infer?x=1", WEB, True, 1),
    ("http", "POST", "/v2/models/bert/infer", GATEWAY, False, None),
    ("http", "POST", "/v2/models/Resnet50/infer", GATEWAY, False, None),
    ("http", "GET", "/v2/models/resnet50", GATEWAY, True, 1),
    ("http", "GET", "/v2", GATEWAY, False, None),  # server-scoped: needs a rule without models
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelInfer", GATEWAY, False, None),  # withheld
    ("http", "POST", "/v2/models/resnet50/infer", NOBODY, False, None),
    ("http", "POST", "/v2/repository/models/m/load", OPS, True, 2),
    ("grpc", "POST", "/inference.GRPCInferenceService/RepositoryModelLoad", ADMIN, True, 2),
    ("http", "GET", "/v2/models/stats", ADMIN, True, 2),
    ("http", "GET", "/v2/models/stats", GATEWAY, False, None),  # not metadata of a model named stats
    ("http", "POST", "/v2/logging", ADMIN_WRONG_CASE, False, None),
    ("metrics", "GET", "/metrics", MONITORING, True, 3),
    ("metrics", "GET", "/metrics", OPS, False, None),
    ("http", "GET", "/metrics", MONITORING, False, None),
    ("http", "GET", "/v2/systemsharedmemory/status", ADMIN, False, 4),
    ("grpc", "POST", "/inference.GRPCInferenceService/CudaSharedMemoryRegister", OPS, False, 4),
    ("grpc", "POST", "/inference.GRPCInferenceService/Unknown", OPS, False, None),
    ("grpc", "GET", "/inference.GRPCInferenceService/ServerLive", NOBODY, False, None),
    ("http", "GET", "/v2/unknown", OPS, False, None),
]


@pytest.mark.parametrize(("protocol", "method", "path", "identity", "allowed", "rule"), TRITON_ACCESS)
def test_triton_access_example(
    protocol: str, method: str, path: str, identity: Identity, allowed: bool, rule: int | None
) -> None:
    decision = decide(load_case("triton-access").spec, Request(protocol, method, path, identity))  # type: ignore[arg-type]
    assert (decision.allowed, decision.rule_index) == (allowed, rule), decision.reason


TENANT_A = Identity(principal="cluster.local/ns/tenant-a/sa/x")
TENANT_B = Identity(principal="cluster.local/ns/tenant-b/sa/client")
BATCH = Identity(source_ip="10.30.0.7")
INFER, STREAM = "/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ModelStreamInfer"
UNPROVEN = None  # a request message whose model a proxy cannot prove
# (protocol, method, path, identity, model named in the gRPC message, target reads bodies, allowed, rule)
PER_MODEL = [
    ("http", "POST", "/v2/models/fraud-detect/infer", TENANT_A, "", True, True, 0),
    ("http", "GET", "/v2/models/churn.v2/ready", TENANT_A, "", True, True, 0),
    ("grpc", "POST", INFER, TENANT_A, "fraud-detect", True, True, 0),  # read from the body
    ("grpc", "POST", INFER, TENANT_A, "other", True, False, None),
    ("grpc", "POST", INFER, TENANT_A, "Fraud-detect", True, False, None),  # names are case-sensitive
    ("grpc", "POST", INFER, TENANT_A, "", True, False, None),  # no name is never a listed model
    ("grpc", "POST", INFER, TENANT_A, UNPROVEN, True, False, None),
    ("grpc", "POST", INFER, TENANT_A, "fraud-detect", False, False, None),  # withheld where bodies are unread
    ("grpc", "POST", STREAM, TENANT_A, "fraud-detect", True, False, None),  # streams: never per model
    ("grpc", "POST", INFER, TENANT_B, "anything", True, True, 1),  # grpcAllModels
    ("grpc", "POST", STREAM, TENANT_B, "anything", False, True, 1),
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelConfig", TENANT_B, UNPROVEN, True, True, 1),
    ("http", "GET", "/v2/models/other/config", TENANT_B, "", True, False, None),
    ("http", "POST", "/v2/models/other/infer", BATCH, "", True, True, 2),
    ("http", "POST", "/v2/models/churn.v2/infer", BATCH, "", True, False, 3),  # deny with models
    ("grpc", "POST", INFER, BATCH, "churn.v2", True, False, 3),
    ("grpc", "POST", INFER, BATCH, "other", True, True, 2),
    ("grpc", "POST", INFER, BATCH, UNPROVEN, True, False, 3),  # the deny applies when the model is unproven
    ("grpc", "POST", INFER, BATCH, "other", False, False, 3),  # ... and where bodies are unread (fails closed)
    ("grpc", "POST", STREAM, BATCH, "other", True, False, 3),  # ... and to streams
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelStatistics", BATCH, UNPROVEN, True, True, 2),
    ("http", "GET", "/v2/health/ready", NOBODY, "", True, True, 4),
]


@pytest.mark.parametrize(("protocol", "method", "path", "identity", "body", "reads", "allowed", "rule"), PER_MODEL)
def test_per_model_rules(
    protocol: str,
    method: str,
    path: str,
    identity: Identity,
    body: str | None,
    reads: bool,
    allowed: bool,
    rule: int | None,
) -> None:
    enforced = EVERY_FEATURE if reads else EVERY_FEATURE - {Feature.PER_MODEL_GRPC}
    request = Request(protocol, method, path, identity, body_model=body)  # type: ignore[arg-type]
    decision = decide(load_case("per-model").spec, request, enforced)
    assert (decision.allowed, decision.rule_index) == (allowed, rule), decision.reason


def test_switching_body_inspection_off_withholds_per_model_grpc() -> None:
    spec = load_case("per-model").spec
    off = spec.model_copy(update={"body_inspection": spec.body_inspection.model_copy(update={"enabled": False})})
    assert decide(spec, Request("grpc", "POST", INFER, TENANT_A, body_model="fraud-detect")).allowed
    assert not decide(off, Request("grpc", "POST", INFER, TENANT_A, body_model="fraud-detect")).allowed
    assert not decide(off, Request("grpc", "POST", INFER, BATCH, body_model="other")).allowed  # the deny fails closed


def test_a_client_needs_every_identity_kind_it_lists() -> None:
    spec = load_case("identity-kinds").spec
    both = Identity(principal="cluster.local/ns/c/sa/three", source_ip="10.50.1.1")
    assert decide(spec, Request("http", "GET", "/v2/models/m/config", both)).allowed
    assert not decide(spec, Request("http", "GET", "/v2/models/m/config", Identity(principal=both.principal))).allowed
    assert not decide(spec, Request("http", "GET", "/v2/models/m/config", Identity(source_ip="10.50.1.1"))).allowed
