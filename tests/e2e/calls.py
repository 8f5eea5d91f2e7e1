"""The tritonclient call list every e2e pass makes: one entry per API call, with its category and the
check its answer must pass when the call is granted.

A call never decides by itself whether it should be granted: the test records the wire requests it
produced and asks ``meshgen.policy.decide`` about each of them.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from tests.e2e.models import input_names

CallProtocol = Literal["http", "grpc", "metrics"]
FIRST = np.array([1, 2, 3], dtype=np.int32)
SECOND = np.array([10, 20, 30], dtype=np.int32)
EXPECTED_OUTPUT = {"add": FIRST + SECOND, "identity": FIRST, "hidden": -FIRST}
# Restoring the level the server was started with: the tests read the verbose log.
LOG_SETTINGS = {"log_verbose_level": 1}
TRACE_SETTINGS = {"trace_rate": "1000"}
STREAM_TIMEOUT = 10.0


@dataclass
class Clients:
    """The clients of one pass: tritonclient HTTP and gRPC, a plain HTTP connection to the metrics port,
    and the identity's headers (sent as HTTP headers or gRPC metadata on every call)."""

    http: Any  # tritonclient.http.InferenceServerClient (untyped)
    grpc: Any  # tritonclient.grpc.InferenceServerClient (untyped)
    metrics_port: int
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Call:
    label: str
    protocol: CallProtocol
    category: str
    model: str | None
    run: Callable[[Clients], Any]  # raises InferenceServerException when refused
    check: Callable[[Any], bool] = lambda result: True  # a granted call's answer is right
    truthy: bool = False  # tritonclient answers False instead of raising (is_*_live/ready on HTTP)


def _inputs(module: Any, model: str) -> list[Any]:
    tensors = []
    for name, data in zip(input_names(model), (FIRST, SECOND), strict=False):
        tensor = module.InferInput(name, list(data.shape), "INT32")
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    return tensors


def _infer(module: Any, model: str) -> Callable[[Clients], Any]:
    def run(clients: Clients) -> Any:
        client = clients.http if module is httpclient else clients.grpc
        return client.infer(model, _inputs(module, model), headers=dict(clients.headers)).as_numpy("OUTPUT0")

    return run


def _stream_infer(model: str) -> Callable[[Clients], Any]:
    """ModelStreamInfer: one request on a bidirectional stream; the answer (or error) comes to a callback."""

    def run(clients: Clients) -> Any:
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        clients.grpc.start_stream(
            callback=lambda result, error: answers.put((result, error)), headers=dict(clients.headers)
        )
        try:
            # A proxy can refuse the stream at its headers, before our request is written: the client
            # then raises "stream no longer valid" here and hands the refusal itself to the callback.
            with contextlib.suppress(InferenceServerException):
                clients.grpc.async_stream_infer(model, _inputs(grpcclient, model))
            result, error = answers.get(timeout=STREAM_TIMEOUT)
        finally:
            clients.grpc.stop_stream()
        if error is not None:
            raise error
        return result.as_numpy("OUTPUT0")

    return run


def _output_is(model: str) -> Callable[[Any], bool]:
    return lambda output: output is not None and np.array_equal(output, EXPECTED_OUTPUT[model])


def _metrics(clients: Clients) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", clients.metrics_port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers=dict(clients.headers))
        response = connection.getresponse()
        body = response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()
    if response.status != 200:
        raise InferenceServerException(msg=body, status=str(response.status))
    return body


def _named(names: list[str]) -> Callable[[Any], bool]:
    return lambda index: {entry["name"] for entry in index} >= set(names)


def http_calls() -> list[Call]:
    h = httpclient

    def with_headers(method: str, *args: Any, **kwargs: Any) -> Callable[[Clients], Any]:
        return lambda c: getattr(c.http, method)(*args, headers=dict(c.headers), **kwargs)

    return [
        Call("http is_server_live", "http", "health", None, with_headers("is_server_live"), bool, truthy=True),
        Call("http is_server_ready", "http", "health", None, with_headers("is_server_ready"), bool, truthy=True),
        Call(
            "http is_model_ready add", "http", "health", "add", with_headers("is_model_ready", "add"), bool, truthy=True
        ),
        Call(
            "http get_server_metadata",
            "http",
            "metadata",
            None,
            with_headers("get_server_metadata"),
            lambda m: m["name"] == "triton",
        ),
        Call(
            "http get_model_metadata add",
            "http",
            "metadata",
            "add",
            with_headers("get_model_metadata", "add"),
            lambda m: m["name"] == "add",
        ),
        Call(
            "http get_model_metadata hidden",
            "http",
            "metadata",
            "hidden",
            with_headers("get_model_metadata", "hidden"),
            lambda m: m["name"] == "hidden",
        ),
        Call("http infer add", "http", "inference", "add", _infer(h, "add"), _output_is("add")),
        Call("http infer identity", "http", "inference", "identity", _infer(h, "identity"), _output_is("identity")),
        Call("http infer hidden", "http", "inference", "hidden", _infer(h, "hidden"), _output_is("hidden")),
        Call(
            "http get_model_config add",
            "http",
            "model-config",
            "add",
            with_headers("get_model_config", "add"),
            lambda m: m["name"] == "add",
        ),
        Call(
            "http get_model_config hidden",
            "http",
            "model-config",
            "hidden",
            with_headers("get_model_config", "hidden"),
            lambda m: m["name"] == "hidden",
        ),
        Call(
            "http get_system_shared_memory_status",
            "http",
            "shared-memory",
            None,
            with_headers("get_system_shared_memory_status"),
            lambda s: s == [],
        ),
        Call(
            "http get_cuda_shared_memory_status",
            "http",
            "shared-memory",
            None,
            with_headers("get_cuda_shared_memory_status"),
            lambda s: s == [],
        ),
        Call(
            "http get_inference_statistics",
            "http",
            "statistics",
            None,
            with_headers("get_inference_statistics"),
            lambda s: len(s["model_stats"]) >= 2,
        ),
        Call(
            "http get_inference_statistics add",
            "http",
            "statistics",
            "add",
            with_headers("get_inference_statistics", "add"),
            lambda s: s["model_stats"][0]["name"] == "add",
        ),
        Call(
            "http get_trace_settings",
            "http",
            "trace",
            None,
            with_headers("get_trace_settings"),
            lambda s: "trace_level" in s,
        ),
        Call(
            "http get_trace_settings add",
            "http",
            "trace",
            "add",
            with_headers("get_trace_settings", "add"),
            lambda s: "trace_level" in s,
        ),
        Call(
            "http update_trace_settings",
            "http",
            "trace",
            None,
            with_headers("update_trace_settings", settings=TRACE_SETTINGS),
            lambda s: s["trace_rate"] == "1000",
        ),
        Call(
            "http get_log_settings",
            "http",
            "logging",
            None,
            with_headers("get_log_settings"),
            lambda s: "log_verbose_level" in s,
        ),
        Call(
            "http update_log_settings",
            "http",
            "logging",
            None,
            with_headers("update_log_settings", LOG_SETTINGS),
            lambda s: s["log_verbose_level"] == 1,
        ),
        Call(
            "http get_model_repository_index",
            "http",
            "model-repository",
            None,
            with_headers("get_model_repository_index"),
            _named(["add", "identity", "hidden"]),
        ),
        # Loading a loaded, unchanged model is a no-op for Triton: cheap proof that the call got through.
        Call("http load_model add", "http", "model-repository", "add", with_headers("load_model", "add")),
        Call("http load_model hidden", "http", "model-repository", "hidden", with_headers("load_model", "hidden")),
        # A real unload/load cycle (~1.8 s: a new Python stub starts); identity answers again after it.
        Call(
            "http unload_model identity",
            "http",
            "model-repository",
            "identity",
            with_headers("unload_model", "identity"),
        ),
        Call(
            "http load_model identity", "http", "model-repository", "identity", with_headers("load_model", "identity")
        ),
        Call(
            "http is_model_ready identity",
            "http",
            "health",
            "identity",
            with_headers("is_model_ready", "identity"),
            bool,
            truthy=True,
        ),
    ]


def grpc_calls() -> list[Call]:
    g = grpcclient

    def with_headers(method: str, *args: Any, **kwargs: Any) -> Callable[[Clients], Any]:
        return lambda c: getattr(c.grpc, method)(*args, headers=dict(c.headers), **kwargs)

    json = {"as_json": True}
    return [
        Call("grpc is_server_live", "grpc", "health", None, with_headers("is_server_live"), bool),
        Call("grpc is_server_ready", "grpc", "health", None, with_headers("is_server_ready"), bool),
        Call("grpc is_model_ready add", "grpc", "health", "add", with_headers("is_model_ready", "add"), bool),
        Call(
            "grpc get_server_metadata",
            "grpc",
            "metadata",
            None,
            with_headers("get_server_metadata", **json),
            lambda m: m["name"] == "triton",
        ),
        Call(
            "grpc get_model_metadata add",
            "grpc",
            "metadata",
            "add",
            with_headers("get_model_metadata", "add", **json),
            lambda m: m["name"] == "add",
        ),
        Call(
            "grpc get_model_metadata hidden",
            "grpc",
            "metadata",
            "hidden",
            with_headers("get_model_metadata", "hidden", **json),
            lambda m: m["name"] == "hidden",
        ),
        Call("grpc infer add", "grpc", "inference", "add", _infer(g, "add"), _output_is("add")),
        Call("grpc infer hidden", "grpc", "inference", "hidden", _infer(g, "hidden"), _output_is("hidden")),
        Call(
            "grpc stream_infer identity",
            "grpc",
            "inference",
            "identity",
            _stream_infer("identity"),
            _output_is("identity"),
        ),
        Call(
            "grpc get_model_config add",
            "grpc",
            "model-config",
            "add",
            with_headers("get_model_config", "add", **json),
            lambda m: m["config"]["name"] == "add",
        ),
        Call(
            "grpc get_system_shared_memory_status",
            "grpc",
            "shared-memory",
            None,
            with_headers("get_system_shared_memory_status", **json),
            lambda s: s == {},
        ),
        Call(
            "grpc get_cuda_shared_memory_status",
            "grpc",
            "shared-memory",
            None,
            with_headers("get_cuda_shared_memory_status", **json),
            lambda s: s == {},
        ),
        Call(
            "grpc get_inference_statistics",
            "grpc",
            "statistics",
            None,
            with_headers("get_inference_statistics", **json),
            lambda s: len(s["model_stats"]) >= 2,
        ),
        Call(
            "grpc get_trace_settings",
            "grpc",
            "trace",
            None,
            with_headers("get_trace_settings", **json),
            lambda s: "trace_level" in s["settings"],
        ),
        Call(
            "grpc update_trace_settings",
            "grpc",
            "trace",
            None,
            with_headers("update_trace_settings", settings=TRACE_SETTINGS, **json),
            lambda s: s["settings"]["trace_rate"]["value"] == ["1000"],
        ),
        Call(
            "grpc get_log_settings",
            "grpc",
            "logging",
            None,
            with_headers("get_log_settings", **json),
            lambda s: "log_verbose_level" in s["settings"],
        ),
        Call(
            "grpc update_log_settings",
            "grpc",
            "logging",
            None,
            with_headers("update_log_settings", LOG_SETTINGS, **json),
            lambda s: s["settings"]["log_verbose_level"]["uint32_param"] == 1,
        ),
        Call(
            "grpc get_model_repository_index",
            "grpc",
            "model-repository",
            None,
            with_headers("get_model_repository_index", **json),
            lambda s: _named(["add", "hidden"])(s["models"]),
        ),
        Call("grpc load_model hidden", "grpc", "model-repository", "hidden", with_headers("load_model", "hidden")),
        Call(
            "grpc unload_model identity",
            "grpc",
            "model-repository",
            "identity",
            with_headers("unload_model", "identity"),
        ),
        Call(
            "grpc load_model identity", "grpc", "model-repository", "identity", with_headers("load_model", "identity")
        ),
        Call(
            "grpc is_model_ready identity",
            "grpc",
            "health",
            "identity",
            with_headers("is_model_ready", "identity"),
            bool,
        ),
    ]


def metrics_calls() -> list[Call]:
    return [Call("metrics GET /metrics", "metrics", "metrics", None, _metrics, lambda body: "nv_" in body)]


def all_calls() -> list[Call]:
    return [*http_calls(), *grpc_calls(), *metrics_calls()]
