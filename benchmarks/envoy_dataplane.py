"""Envoy data plane: h2load against the generated bootstrap vs the same bootstrap without its policy.

One listener of the generated bootstrap (HTTP or gRPC), its route turned into a ``direct_response`` (a
trivial backend that costs the same in both variants); ``--concurrency 1``; h2load h2c (-c8 -m16). "No
policy" removes every filter meshgen adds (RBAC, and on gRPC the model guard with its skip matcher).
Pairs (policy, no policy) are alternated and the ratio is the median of the per-pair ratios, so a busy
shared machine hits both sides alike; Envoy's own CPU time per request (utime + stime from /proc over
the timed run, after a warm-up run) is the steadier figure. Requests, all ALLOWED, from client-0
(127.0.0.0/8, granted inference and metadata on every model):

- http: ``POST /v2/models/<last model>/infer``: the per-model trie lookup is on the hot path;
- grpc: ``ServerMetadata``, a path-only gRPC grant (the guard's matcher skips it).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.specs import model_names, write_spec
from tests.support.envoy_process import envoy_binary
from tests.support.processes import free_port, http_ok, stop_process, wait_until_ready

RBAC = "envoy.filters.http.rbac"
POLICY_FILTERS = frozenset({RBAC, "meshgen.grpc_model_guard"})
GRPC_METHOD = "/inference.GRPCInferenceService/ServerMetadata"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bench_config(spec: Path, *, rbac: bool, port: int, admin: int, listener_name: str = "http") -> dict[str, Any]:
    from meshgen.policy import compile_policy
    from meshgen.render import load_json
    from meshgen.spec import load_spec
    from tests.support.targets import envoy_output

    others = {name: f"127.0.0.1:{free_port()}" for name in ("http", "grpc", "metrics")}
    text = envoy_output(
        compile_policy(load_spec(str(spec))),
        bootstrap=True,
        listen={**others, listener_name: f"127.0.0.1:{port}"},
        admin=f"127.0.0.1:{admin}",
    )
    config: dict[str, Any] = load_json(text)
    listener = next(x for x in config["static_resources"]["listeners"] if x["name"] == f"triton_{listener_name}")
    config["static_resources"]["listeners"] = [listener]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("route")
        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    if not rbac:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in POLICY_FILTERS]
    return config


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Envoy:
    """Envoy on one core (``--concurrency 1``), ready once its admin /ready answers."""

    def __init__(self, config: Path, admin: int) -> None:
        self.process = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_ready(self.process, lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), 60, f"envoy on {config}")

    def stop(self) -> None:
        stop_process(self.process)


def h2load(
    url: str, body: Path, duration: float, log: Path, headers: tuple[str, ...] = (), requests: int | None = None
) -> dict[str, float]:
    """req/s, p50 and p99 (ms) and requests done of one h2load run; latencies from its per-request log."""
    length = ["-n", str(requests)] if requests else ["-D", str(max(1, round(duration)))]
    out = subprocess.run(
        [
            "h2load",
            "-c8",
            "-m16",
            *length,
            "-d",
            str(body),
            *[arg for header in headers for arg in ("-H", header)],
            "--log-file",
            str(log),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = 0.0
    done = 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            done = int(line.split(",")[2].split()[0])
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
            if ok == 0:
                raise RuntimeError(f"no 2xx responses from {url}: {out}")
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip())
    return {
        "rps": rps,
        "done": done,
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
    }


def measure(
    proxy: Envoy, url: str, body: Path, duration: float, log: Path, headers: tuple[str, ...]
) -> dict[str, float]:
    """A warm-up run, then a timed run with Envoy's CPU time per request."""
    h2load(url, body, duration, log, headers, requests=20000)
    before = cpu_seconds(proxy.process.pid)
    result = h2load(url, body, duration, log, headers)
    result["cpu_us"] = (cpu_seconds(proxy.process.pid) - before) * 1e6 / max(1.0, result["done"])
    return result


def envoy_dataplane(
    sizes: list[int], duration: float, pairs: int = 3, clients: int = 10, listeners: tuple[str, ...] = ("http", "grpc")
) -> list[dict[str, object]]:
    if shutil.which("h2load") is None:
        return [{"target": "envoy", "models": 0, "note": "h2load not installed (apt-get install nghttp2-client)"}]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="meshgen-envoy-bench-") as temp:
        directory = Path(temp)
        http_body = directory / "body.json"
        http_body.write_text('{"inputs": []}')
        grpc_body = directory / "body.grpc"
        grpc_body.write_bytes(b"\x00\x00\x00\x00\x00")  # one empty, uncompressed message
        for listener in listeners:
            for models in sizes:
                spec = write_spec(directory, models, clients, mtls=False)
                headers: tuple[str, ...] = ()
                if listener == "http":
                    path, body = f"/v2/models/{model_names(models)[-1]}/infer", http_body
                else:
                    path, body, headers = GRPC_METHOD, grpc_body, GRPC_HEADERS
                results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
                for _ in range(pairs):
                    for rbac in (True, False):
                        port, admin = free_port(), free_port()
                        config = directory / f"envoy-{listener}-{models}-{rbac}.json"
                        config.write_text(
                            json.dumps(bench_config(spec, rbac=rbac, port=port, admin=admin, listener_name=listener))
                        )
                        proxy = Envoy(config, admin)
                        try:
                            url = f"http://127.0.0.1:{port}{path}"
                            results[rbac].append(measure(proxy, url, body, duration, directory / "h2load.log", headers))
                        finally:
                            proxy.stop()
                ratios = [a["rps"] / b["rps"] for a, b in zip(results[True], results[False], strict=True)]
                rows.append(
                    {
                        "target": f"envoy {listener}",
                        "models": models,
                        "ratio": statistics.median(ratios),
                        "cpu_us": statistics.median(r["cpu_us"] for r in results[True]),
                        "base_cpu_us": statistics.median(r["cpu_us"] for r in results[False]),
                        "p50_ms": statistics.median(r["p50_ms"] for r in results[True]),
                        "p99_ms": statistics.median(r["p99_ms"] for r in results[True]),
                        "rps": statistics.median(r["rps"] for r in results[True]),
                        "base_rps": statistics.median(r["rps"] for r in results[False]),
                        "base_p50_ms": statistics.median(r["p50_ms"] for r in results[False]),
                    }
                )
    return rows
