"""Envoy data plane: h2load against the generated bootstrap vs the same bootstrap without RBAC.

The generated bootstrap's HTTP listener, with its route turned into a ``direct_response`` (a trivial
backend that costs the same in both variants); ``--concurrency 1``; h2load h2c (-c8 -m16). Pairs
(RBAC, no RBAC) are alternated and the ratio is the median of the per-pair ratios, so a busy shared
machine hits both sides alike. The request is an ALLOWED ``POST /v2/models/<last model>/infer`` from
client-0 (127.0.0.0/8), which is granted every model: the per-model lookup is on the hot path.
"""

from __future__ import annotations

import json
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


def bench_config(spec: Path, *, rbac: bool, port: int, admin: int) -> dict[str, Any]:
    from meshgen.policy import compile_policy
    from meshgen.render import load_yaml
    from meshgen.spec import load_spec
    from tests.support.targets import envoy_output

    text = envoy_output(
        compile_policy(load_spec(str(spec))),
        bootstrap=True,
        listen={"http": f"127.0.0.1:{port}", "grpc": f"127.0.0.1:{free_port()}", "metrics": f"127.0.0.1:{free_port()}"},
        admin=f"127.0.0.1:{admin}",
    )
    config: dict[str, Any] = load_yaml(text)
    listener = config["static_resources"]["listeners"][0]
    assert listener["name"] == "triton_http"
    config["static_resources"]["listeners"] = [listener]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("route")
        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    if not rbac:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != RBAC]
    return config


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


def h2load(url: str, body: Path, duration: float, log: Path) -> dict[str, float]:
    """req/s, p50 and p99 (ms) of one h2load run; latencies from its per-request log."""
    out = subprocess.run(
        [
            "h2load",
            "-c8",
            "-m16",
            "-D",
            str(max(1, round(duration))),
            "--warm-up-time",
            "1",
            "-d",
            str(body),
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
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
            if ok == 0:
                raise RuntimeError(f"no 2xx responses from {url}: {out}")
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip())
    return {
        "rps": rps,
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
    }


def envoy_dataplane(sizes: list[int], duration: float, pairs: int = 3, clients: int = 10) -> list[dict[str, object]]:
    if shutil.which("h2load") is None:
        return [{"target": "envoy", "models": 0, "note": "h2load not installed (apt-get install nghttp2-client)"}]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="meshgen-envoy-bench-") as temp:
        directory = Path(temp)
        body = directory / "body.json"
        body.write_text('{"inputs": []}')
        for models in sizes:
            spec = write_spec(directory, models, clients, mtls=False)
            path = f"/v2/models/{model_names(models)[-1]}/infer"
            results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(pairs):
                for rbac in (True, False):
                    port, admin = free_port(), free_port()
                    config = directory / f"envoy-{models}-{rbac}.json"
                    config.write_text(json.dumps(bench_config(spec, rbac=rbac, port=port, admin=admin)))
                    proxy = Envoy(config, admin)
                    try:
                        results[rbac].append(
                            h2load(f"http://127.0.0.1:{port}{path}", body, duration, directory / "h2load.log")
                        )
                    finally:
                        proxy.stop()
            ratios = [a["rps"] / b["rps"] for a, b in zip(results[True], results[False], strict=True)]
            rows.append(
                {
                    "target": "envoy",
                    "models": models,
                    "ratio": statistics.median(ratios),
                    "p50_ms": statistics.median(r["p50_ms"] for r in results[True]),
                    "p99_ms": statistics.median(r["p99_ms"] for r in results[True]),
                    "rps": statistics.median(r["rps"] for r in results[True]),
                    "base_rps": statistics.median(r["rps"] for r in results[False]),
                    "base_p50_ms": statistics.median(r["p50_ms"] for r in results[False]),
                }
            )
    return rows
