"""Envoy gRPC model guard: what inspecting the request message costs on the generated gRPC listener.

Measured on the GENERATED bootstrap's ``triton_grpc`` listener (``envoy_output(..., bootstrap=True)``), one
Envoy per variant (``--concurrency 1``), h2load h2c with a file body (``-d``: the 5-byte gRPC prefix and a
protobuf ``ModelInferRequest`` of the wanted size) and ``content-type: application/grpc``, ``te: trailers``.

Stand-in backend, the same in both variants of a pair: every route becomes a ``direct_response`` 200 with
``grpc-status: 0`` added (a trailers-only gRPC OK), preceded by an ``envoy.filters.http.buffer`` filter (right
before the router) so the answer comes only once the whole unary message has arrived, as Triton answers. A bare
``direct_response`` answers at the request headers and the client then resets the stream, so the variant
without the guard would never wait for the body while the guarded one must. The listener's
``local_reply_config`` is dropped: it applies only to Envoy's own replies (the direct_response is one
internally; with a real backend allowed calls never reach it), so keeping it would bill a per-request
mapper walk to the guarded variant alone (and its ``unproven`` mapper, lacking ``match_if_key_not_found:
false``, rewrites every local reply's grpc-message).

Method: every variant of a comparison has its own Envoy, all started at once and idle but for the one
under load; each pair runs h2load once against each variant, the order rotating from pair to pair; ratio =
median of the per-pair req/s ratios. CPU per call = Δ(utime+stime) of the Envoy PID (/proc/<pid>/stat) over
the run / calls that passed RBAC; ``cpu_bound_ratio`` = 1 / median per-pair CPU ratio, the req/s ratio
Envoy's core allows when Envoy is the bottleneck (``util`` near 1). On a shared 2-core machine the req/s
ratio also carries other processes' load and h2load's own limits (``client_util``): read both.

* ``per-model``: client-0 of benchmarks/specs.py (10 models, 10 clients, plaintext; client-0 is
  127.0.0.0/8) is granted ModelInfer by a rule listing the models, so its calls are inspected; the call
  names the last model. Baseline: the same spec with ``bodyInspection: {enabled: false}`` and
  ``grpcAllModels: true`` on every allow rule that lists models: the same clients keep the same gRPC methods,
  only the model check (and so the guard) is gone; this is the bootstrap a user without per-model gRPC has
  (no guard, no metadata predicates, Envoy's default HTTP/2 windows). From 1 MiB up a third variant, that
  baseline given the guarded listener's HTTP/2 windows (maxBytes + 5), separates the window's effect
  (``*_same_window``). 16 MiB messages use ``maxBytes: 17 MiB`` in both specs. h2load ``-c8 -m16`` for
  100 B, ``-c4 -m4`` for 1 MiB, ``-c2 -m2`` for 16 MiB.
* ``all-models``: client-0's rule sets ``grpcAllModels: true`` while the other tenants stay per model, so the
  guard is present and match_delegate skips it for client-0. Baseline: that very bootstrap with the guard
  filter deleted (nothing else changes).

Before the measurements one call to each variant must answer grpc-status 0 and show (a response header
formatted from the guard's ``inspected`` metadata) that the guard ran on it exactly where expected: on the
per-model guarded variant, not on the skipped all-models one; after each run the gRPC RBAC filters must show
no denial and every call allowed (but those h2load abandoned in flight at its end).

``buffered_rss``: Envoy's VmRSS growth per inspected call held open (whole message sent, no END_STREAM).
``triton_payload_sizes``: real ModelInferRequest sizes.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.envoy_dataplane import Envoy
from benchmarks.specs import LOOPBACK_CLIENT, make_spec, model_names
from tests.support.processes import free_port

GUARD = "meshgen.grpc_model_guard"
NAMESPACE = "envoy.filters.http.meshgen_grpc"  # the guard's dynamic metadata
INSPECTED_HEADER = "x-bench-inspected"
RBAC = "envoy.filters.http.rbac"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
MIB = 2**20
# name -> (message bytes, h2load connections, streams per connection)
SIZES: dict[str, tuple[int, int, int]] = {"100 B": (100, 8, 16), "1 MiB": (MIB, 4, 4), "16 MiB": (16 * MIB, 2, 2)}
MODELS, CLIENTS = 10, 10
Row = dict[str, object]


# ---------------------------------------------------------------- messages


def infer_message(model: str, size: int) -> bytes:
    """A serialized ModelInferRequest for ``model`` of exactly ``size`` bytes (one UINT8 input, raw contents)."""
    from tritonclient.grpc import service_pb2  # type: ignore[import-untyped]

    payload = max(0, size - 40)
    for _ in range(8):
        message = service_pb2.ModelInferRequest(model_name=model)
        tensor = message.inputs.add(name="INPUT0", datatype="UINT8")
        tensor.shape.append(payload)
        message.raw_input_contents.append(b"\x01" * payload)
        if message.ByteSize() == size:
            return bytes(message.SerializeToString())
        payload += size - message.ByteSize()
    raise ValueError(f"cannot build a {size}-byte ModelInferRequest")


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


# ---------------------------------------------------------------- specs and configs


def _per_model_spec(max_bytes: int | None) -> dict[str, Any]:
    spec = make_spec(MODELS, CLIENTS, mtls=False)
    if max_bytes is not None:
        spec["bodyInspection"] = {"maxBytes": max_bytes}
    return spec


def _without_inspection(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["bodyInspection"] = {**spec.get("bodyInspection", {}), "enabled": False}
    for rule in spec["rules"]:
        if "allow" in rule and rule.get("models") and "inference" in rule["allow"]:
            rule["grpcAllModels"] = True
    return spec


def _client0_all_models(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for rule in spec["rules"]:
        if rule.get("from") == [LOOPBACK_CLIENT] and "allow" in rule:
            rule["grpcAllModels"] = True
    return spec


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def grpc_config(
    spec: dict[str, Any], directory: Path, *, port: int, admin: int, buffer_bytes: int, drop_guard: bool = False
) -> dict[str, Any]:
    """The generated bootstrap's gRPC listener alone, with the stand-in backend (see the module docstring)."""
    from meshgen.policy import compile_policy
    from meshgen.render import load_yaml
    from meshgen.spec import load_spec
    from tests.support.targets import envoy_output

    path = directory / "inspection-spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    text = envoy_output(
        compile_policy(load_spec(str(path))),
        bootstrap=True,
        listen={"http": f"127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{port}", "metrics": f"127.0.0.1:{free_port()}"},
        admin=f"127.0.0.1:{admin}",
    )
    config: dict[str, Any] = load_yaml(text)
    listeners = [item for item in config["static_resources"]["listeners"] if item["name"] == "triton_grpc"]
    assert len(listeners) == 1
    config["static_resources"]["listeners"] = listeners
    hcm = _hcm(config)
    hcm.pop("local_reply_config", None)
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("route")
        route["direct_response"] = {"status": 200}
        route["response_headers_to_add"] = [
            {"header": {"key": "grpc-status", "value": "0"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            # Shows the probe whether the guard ran on the call (it sets "inspected" whenever it does).
            {"header": {"key": INSPECTED_HEADER, "value": f"%DYNAMIC_METADATA({NAMESPACE}:inspected)%"}},
        ]
    filters = hcm["http_filters"]
    if drop_guard:
        assert any(f["name"] == GUARD for f in filters), "no guard to drop"
        filters = [f for f in filters if f["name"] != GUARD]
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": buffer_bytes,
        },
    }
    assert filters[-1]["name"] == "envoy.filters.http.router"
    hcm["http_filters"] = [*filters[:-1], buffer, filters[-1]]
    return config


def filter_names(config: dict[str, Any]) -> list[str]:
    return [str(f["name"]) for f in _hcm(config)["http_filters"]]


# ---------------------------------------------------------------- measuring


def stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=^http\\.bench_grpc\\.", timeout=5) as reply:
        text = reply.read().decode()
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            values[name] = int(value)
    return values


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def check_call(port: int, frame: bytes, inspected: bool | None = None) -> None:
    """One ModelInfer through the listener; it must answer grpc-status 0 (and, unless ``inspected`` is None,
    have been inspected by the guard or not)."""
    from tests.support.h2client import H2Session

    session = H2Session(port, timeout=60)
    try:
        chunks = [frame[i : i + 65536] for i in range(0, len(frame), 65536)]
        response = session.request("POST", METHOD, [("content-type", "application/grpc"), ("te", "trailers")], chunks)
    finally:
        session.close()
    if response.status != 200 or response.grpc_status != 0:
        raise RuntimeError(
            f"probe ModelInfer not allowed: status {response.status}, grpc-status {response.grpc_status}, "
            f"{response.headers.get('grpc-message', '')!r}, reset {response.reset}"
        )
    seen = response.headers.get(INSPECTED_HEADER, "") not in ("", "-")
    if inspected is not None and seen != inspected:
        raise RuntimeError(f"probe ModelInfer {'not ' if inspected else ''}inspected by the guard: {response.headers}")


def h2load(port: int, body: Path, duration: float, connections: int, streams: int, log: Path) -> dict[str, float]:
    log.unlink(missing_ok=True)  # h2load appends to --log-file: an old log would skew the latencies
    out = subprocess.run(
        [
            "h2load",
            f"-c{connections}",
            f"-m{streams}",
            "-D",
            str(max(1, round(duration))),
            "--warm-up-time",
            "1",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            str(log),
            f"http://127.0.0.1:{port}{METHOD}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=True,
    ).stdout
    rps, ok = 0.0, 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
    if ok == 0 or rps == 0:
        raise RuntimeError(f"no 2xx responses: {out}")
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip())
    return {"rps": rps, "p50_ms": latencies[len(latencies) // 2] / 1000}


def with_ports(config: dict[str, Any], port: int, admin: int) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    return config


class Running:
    """One variant's Envoy, started once for the whole comparison (its h2load runs alternate with the others')."""

    def __init__(self, config: dict[str, Any], directory: Path, name: str, body: Path, inspected: bool) -> None:
        self.port, self.admin = free_port(), free_port()
        path = directory / f"inspection-{name}.json"
        path.write_text(json.dumps(with_ports(config, self.port, self.admin)))
        self.proxy = Envoy(path, self.admin)
        try:
            check_call(self.port, body.read_bytes(), inspected)
        except Exception:
            self.proxy.stop()
            raise

    def measure(self, directory: Path, body: Path, size: str, duration: float) -> dict[str, float]:
        """h2load once: req/s, p50, Envoy CPU per request and utilisation, h2load's utilisation; RBAC check."""
        _, connections, streams = SIZES[size]
        pid = self.proxy.process.pid
        before, cpu_before, wall = stats(self.admin), cpu_seconds(pid), time.monotonic()
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = h2load(self.port, body, duration, connections, streams, directory / "h2load.log")
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        time.sleep(0.2)  # let calls h2load abandoned at its end drain out of the counters
        after, cpu_after, wall = stats(self.admin), cpu_seconds(pid), time.monotonic() - wall
        requests = after["http.bench_grpc.downstream_rq_total"] - before["http.bench_grpc.downstream_rq_total"]
        rbac = {k: v - before.get(k, 0) for k, v in after.items() if ".rbac." in k and "shadow" not in k}
        denied = sum(v for k, v in rbac.items() if k.endswith(".denied"))
        allowed = [v for k, v in rbac.items() if k.endswith(".allowed")]
        # Calls still in flight when h2load stops were counted at their headers but never reached RBAC.
        if denied or not allowed or not 0 <= requests - min(allowed) <= connections * streams:
            raise RuntimeError(f"RBAC did not allow every request ({requests} requests): {rbac}")
        result["cpu_us"] = (cpu_after - cpu_before) / min(allowed) * 1e6
        result["util"] = (cpu_after - cpu_before) / wall  # of one core: below ~0.9, Envoy was not the bottleneck
        client = client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime
        result["client_util"] = client / wall  # h2load's, of one core (it runs one thread)
        result["requests"] = min(allowed)
        return result

    def stop(self) -> None:
        self.proxy.stop()


def _compare(
    case: str,
    size: str,
    variants: dict[str, dict[str, Any]],
    inspected: str,
    directory: Path,
    body: Path,
    duration: float,
    pairs: int,
) -> Row:
    """``variants``: "guard", "base" and optionally "same_window" (the base with the guarded listener's
    HTTP/2 windows); the probe call must be inspected on the variant named ``inspected`` only (""
    for none). All their Envoys run at once (idle but for the one under load); each pair runs h2load
    once against every variant, the order rotating from pair to pair."""
    names = list(variants)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    running: dict[str, Running] = {}
    try:
        for name in names:
            running[name] = Running(variants[name], directory, name, body, name == inspected)
        for index in range(pairs):
            # Rotate which side goes first so a drift in the machine's load does not favour one side.
            for name in names[index % len(names) :] + names[: index % len(names)]:
                results[name].append(running[name].measure(directory, body, size, duration))
    finally:
        for proxy in running.values():
            proxy.stop()

    def ratios(base: str, key: str = "rps") -> list[float]:
        return [a[key] / b[key] for a, b in zip(results["guard"], results[base], strict=True)]

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    row: Row = {
        "case": case,
        "size": size,
        "ratio": statistics.median(ratios("base")),
        "ratios": " ".join(f"{r:.2f}" for r in ratios("base")),
        "rps": med("guard", "rps"),
        "base_rps": med("base", "rps"),
        "cpu_us": med("guard", "cpu_us"),
        "base_cpu_us": med("base", "cpu_us"),
        # base CPU / guard CPU per call: the req/s ratio Envoy's own core would allow when it is the bottleneck
        "cpu_bound_ratio": 1 / statistics.median(ratios("base", "cpu_us")),
        "util": med("guard", "util"),
        "base_util": med("base", "util"),
        "client_util": med("guard", "client_util"),
        "base_client_util": med("base", "client_util"),
        "p50_ms": med("guard", "p50_ms"),
        "base_p50_ms": med("base", "p50_ms"),
    }
    if "same_window" in results:
        row["ratio_same_window"] = statistics.median(ratios("same_window"))
        row["cpu_bound_ratio_same_window"] = 1 / statistics.median(ratios("same_window", "cpu_us"))
        row["same_window_cpu_us"] = med("same_window", "cpu_us")
    return row


def _same_window(guarded: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(base)
    _hcm(config)["http2_protocol_options"] = copy.deepcopy(_hcm(guarded)["http2_protocol_options"])
    return config


def envoy_inspection(duration: float, pairs: int, sizes: Sequence[str] = tuple(SIZES)) -> list[Row]:
    """Table rows: per-model ModelInfer with the guard vs without it (each size; from 1 MiB up also vs the
    baseline given the guarded listener's HTTP/2 windows), and the all-models client (guard skipped by
    match_delegate) vs the same bootstrap with the guard deleted (100 B)."""
    if shutil.which("h2load") is None:
        return [{"case": "inspection", "note": "h2load not installed (apt-get install nghttp2-client)"}]
    model = model_names(MODELS)[-1]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="meshgen-inspection-bench-") as temp:
        directory = Path(temp)

        def config(spec: dict[str, Any], buffer_bytes: int, drop_guard: bool = False) -> dict[str, Any]:
            return grpc_config(spec, directory, port=1, admin=2, buffer_bytes=buffer_bytes, drop_guard=drop_guard)

        for size in sizes:
            message_bytes = SIZES[size][0]
            max_bytes = 17 * MIB if message_bytes > 4 * MIB else None
            buffer_bytes = (max_bytes or 4 * MIB) + 5
            body = directory / f"frame-{message_bytes}.bin"
            body.write_bytes(grpc_frame(infer_message(model, message_bytes)))
            spec = _per_model_spec(max_bytes)
            variants = {"guard": config(spec, buffer_bytes), "base": config(_without_inspection(spec), buffer_bytes)}
            assert GUARD in filter_names(variants["guard"]) and GUARD not in filter_names(variants["base"])
            if message_bytes >= MIB:
                variants["same_window"] = _same_window(variants["guard"], variants["base"])
            rows.append(_compare("per-model", size, variants, "guard", directory, body, duration, pairs))
        size = "100 B"
        body = directory / "frame-100.bin"
        body.write_bytes(grpc_frame(infer_message(model, SIZES[size][0])))
        spec = _client0_all_models(_per_model_spec(None))
        variants = {"guard": config(spec, 4 * MIB + 5), "base": config(spec, 4 * MIB + 5, drop_guard=True)}
        rows.append(_compare("all-models (skipped)", size, variants, "", directory, body, duration, pairs))
    return rows


# ---------------------------------------------------------------- memory


def _open_streams(port: int, frame: bytes, count: int) -> list[socket.socket]:
    """``count`` connections, each one ModelInfer whose whole message is sent but not END_STREAM."""
    import h2.config
    import h2.connection
    import h2.events

    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        headers = [
            (":method", "POST"),
            (":path", METHOD),
            (":scheme", "http"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        connection.send_headers(1, headers)
        sock.sendall(connection.data_to_send())
        sent = 0
        while sent < len(frame):
            allowed = min(connection.local_flow_control_window(1), connection.max_outbound_frame_size)
            if allowed <= 0:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("envoy closed the connection while the message was sent")
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        raise RuntimeError(f"stream ended before END_STREAM: {event}")
                sock.sendall(connection.data_to_send())
                continue
            chunk = frame[sent : sent + allowed]
            connection.send_data(1, chunk)
            sent += len(chunk)
            sock.sendall(connection.data_to_send())
        sockets.append(sock)
    return sockets


def buffered_rss(counts: Sequence[int] = (8, 32), sizes: Sequence[int] = (MIB, 4 * MIB)) -> list[Row]:
    """Envoy VmRSS growth per inspected ModelInfer held open with its whole message buffered by the guard.

    Generated bootstrap (default maxBytes 4 MiB), per-model client; the message is sent in full on its own
    connection but END_STREAM is withheld, so the guard's ``body()`` holds it. Control: the same number of
    calls whose message is 100 bytes. RSS is read 0.5 s after the last byte; the connections are then closed.
    """
    model = model_names(MODELS)[-1]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="meshgen-inspection-rss-") as temp:
        directory = Path(temp)
        port, admin = free_port(), free_port()
        config = grpc_config(_per_model_spec(None), directory, port=port, admin=admin, buffer_bytes=4 * MIB + 5)
        path = directory / "rss-envoy.json"
        path.write_text(json.dumps(config))
        for size in (100, *sizes):
            frame = grpc_frame(infer_message(model, size))
            for count in counts:
                proxy = Envoy(path, admin)  # a fresh process each time: allocators keep freed memory
                try:
                    check_call(port, grpc_frame(infer_message(model, 100)))
                    time.sleep(0.3)
                    before = rss_kb(proxy.process.pid)
                    held = _open_streams(port, frame, count)
                    time.sleep(0.5)
                    during = rss_kb(proxy.process.pid)
                    active = stats(admin).get("http.bench_grpc.downstream_rq_active", -1)
                    if active != count:
                        raise RuntimeError(f"{active} calls held open by Envoy, expected {count}")
                    for sock in held:
                        sock.close()
                finally:
                    proxy.stop()
                rows.append(
                    {
                        "message_bytes": size,
                        "streams": count,
                        "rss_before_mb": before / 1024,
                        "rss_held_mb": during / 1024,
                        "growth_per_stream_mb": (during - before) / 1024 / count,
                        "per_message_byte": (during - before) * 1024 / count / size,
                    }
                )
    return rows


# ---------------------------------------------------------------- real payload sizes


def triton_payload_sizes() -> list[Row]:
    """Serialized ModelInferRequest sizes for typical Triton calls (tritonclient's own request builder)."""
    import numpy as np
    from tritonclient.grpc import InferInput  # type: ignore[import-untyped]
    from tritonclient.grpc._utils import _get_inference_request  # type: ignore[import-untyped]

    def size_of(model: str, inputs: list[Any]) -> int:
        request = _get_inference_request(model, inputs, "", "", None, 0, False, False, 0, None, None)
        return int(request.ByteSize())

    def tensor(name: str, array: Any, datatype: str) -> Any:
        item = InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        return item

    rows: list[Row] = []
    for batch in (1, 8):
        image = np.zeros((batch, 3, 224, 224), dtype=np.float32)
        rows.append(
            {
                "payload": f"resnet50 FP32 {batch}x3x224x224",
                "bytes": size_of("resnet50", [tensor("input", image, "FP32")]),
            }
        )
    ids = np.zeros((1, 384), dtype=np.int64)
    bert = [tensor(name, ids, "INT64") for name in ("input_ids", "attention_mask", "token_type_ids")]
    rows.append({"payload": "BERT INT64 1x384 x3", "bytes": size_of("bert", bert)})
    for label, characters in (("LLM prompt 2 KB text", 2_000), ("LLM prompt 32k tokens (~128 KB text)", 128_000)):
        prompt = np.array([("x" * characters).encode()], dtype=np.object_)
        llm = [
            tensor("text_input", prompt, "BYTES"),
            tensor("max_tokens", np.array([256], dtype=np.int32), "INT32"),
            tensor("stream", np.array([False]), "BOOL"),
        ]
        rows.append({"payload": label, "bytes": size_of("llm", llm)})
    for row in rows:
        size = int(row["bytes"])  # type: ignore[call-overload]
        row["mib"] = size / MIB
        row["fits_4mib"] = size <= 4 * MIB
    return rows


def markdown(rows: list[Row], columns: list[str]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows])


COLUMNS = [
    "case",
    "size",
    "ratio",
    "ratios",
    "rps",
    "base_rps",
    "cpu_us",
    "base_cpu_us",
    "cpu_bound_ratio",
    "util",
    "base_util",
    "client_util",
    "base_client_util",
    "p50_ms",
    "base_p50_ms",
    "ratio_same_window",
    "cpu_bound_ratio_same_window",
    "same_window_cpu_us",
    "note",
]
RSS_COLUMNS = ["message_bytes", "streams", "rss_before_mb", "rss_held_mb", "growth_per_stream_mb", "per_message_byte"]
PAYLOAD_COLUMNS = ["payload", "bytes", "mib", "fits_4mib"]

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Envoy gRPC model guard benchmark (this section alone)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated, of: " + ", ".join(SIZES))
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    print("## Payload sizes\n" + markdown(triton_payload_sizes(), PAYLOAD_COLUMNS), flush=True)
    if not args.skip_rss:
        print("\n## Buffered RSS\n" + markdown(buffered_rss(), RSS_COLUMNS), flush=True)
    rows = envoy_inspection(args.duration, args.pairs, [s.strip() for s in args.sizes.split(",") if s.strip()])
    print("\n## Inspection\n" + markdown(rows, COLUMNS), flush=True)
