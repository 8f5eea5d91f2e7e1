"""The reference decision, read like the spec: each row is a request and what the spec implies."""

from __future__ import annotations

import pytest

from meshgen.policy import Identity, Request, decide
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
PER_MODEL = [
    ("http", "POST", "/v2/models/fraud-detect/infer", TENANT_A, True, 0),
    ("http", "GET", "/v2/models/churn.v2/ready", TENANT_A, True, 0),
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelInfer", TENANT_A, False, None),
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelInfer", TENANT_B, True, 1),  # grpcAllModels
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelConfig", TENANT_B, True, 1),
    ("http", "GET", "/v2/models/other/config", TENANT_B, False, None),
    ("http", "POST", "/v2/models/other/infer", BATCH, True, 2),
    ("http", "POST", "/v2/models/churn.v2/infer", BATCH, False, 3),  # deny with models
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelInfer", BATCH, False, 3),  # fails closed on gRPC
    ("grpc", "POST", "/inference.GRPCInferenceService/ModelStatistics", BATCH, True, 2),
    ("http", "GET", "/v2/health/ready", NOBODY, True, 4),
]


@pytest.mark.parametrize(("protocol", "method", "path", "identity", "allowed", "rule"), PER_MODEL)
def test_per_model_rules(
    protocol: str, method: str, path: str, identity: Identity, allowed: bool, rule: int | None
) -> None:
    decision = decide(load_case("per-model").spec, Request(protocol, method, path, identity))  # type: ignore[arg-type]
    assert (decision.allowed, decision.rule_index) == (allowed, rule), decision.reason


def test_a_client_needs_every_identity_kind_it_lists() -> None:
    spec = load_case("identity-kinds").spec
    both = Identity(principal="cluster.local/ns/c/sa/three", source_ip="10.50.1.1")
    assert decide(spec, Request("http", "GET", "/v2/models/m/config", both)).allowed
    assert not decide(spec, Request("http", "GET", "/v2/models/m/config", Identity(principal=both.principal))).allowed
    assert not decide(spec, Request("http", "GET", "/v2/models/m/config", Identity(source_ip="10.50.1.1"))).allowed
