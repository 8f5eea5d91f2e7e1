"""NGINX data plane: throughput of the generated config vs a plain proxy of the same upstream.

For each size N, a spec granting inference/metadata on N models (per-model rules, header-identified
client) is compiled with ``meshgen nginx --full``; one nginx runs it with, in the same http{}, a trivial
backend server (``return 200``) as the upstream. The baseline is the same nginx binary with the same
listener and upstream but ``location / { proxy_pass ...; }`` only. wrk (HTTP/1.1, keep-alive,
``--latency``) sends the same allowed request — POST to a versioned per-model path of a mid-list model —
to each, alternating baseline and generated runs; medians are reported (ratios: the machine is shared).
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from meshgen.policy import compile_policy
from meshgen.spec import load_spec_text
from tests.support.processes import free_port, listening, stop_process, wait_until_ready
from tests.support.targets import nginx_output

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
ROUNDS = 3  # alternated (baseline, generated) pairs per size
CLIENT_HEADER = ("x-tenant-key", "Bench-Key-1")

BACKEND = """
server {{
    listen 127.0.0.1:{port};
    access_log off;
    location / {{ return 200 "ok"; }}
}}
"""
PLAIN = """worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/cb; proxy_temp_path {prefix}/px; fastcgi_temp_path {prefix}/fc;
    uwsgi_temp_path {prefix}/uw; scgi_temp_path {prefix}/sc;
    upstream plain_backend {{ server 127.0.0.1:{backend}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{listen};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{ proxy_pass http://plain_backend; }}
    }}
    {backend_server}
}}
"""


def _spec(models: int) -> str:
    names = ", ".join(f"model-{i:05d}" for i in range(models))
    return f"""apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {{name: bench, namespace: bench}}
workload: {{selector: {{app: triton}}}}
clients:
  tenant: {{headers: {{{CLIENT_HEADER[0]}: "{CLIENT_HEADER[1]}"}}}}
  ops: {{ipBlocks: ["10.9.0.0/16"]}}
rules:
  - {{allow: [health], from: anyone}}
  - {{allow: [inference, metadata], models: [{names}], from: [tenant]}}
  - {{allow: [model-repository, statistics], from: [ops]}}
  - {{deny: [inference], models: [model-00000], from: anyone}}
"""


def _generated_config(models: int, prefix: Path, listen: int, backend: int) -> str:
    policy = compile_policy(load_spec_text(_spec(models).encode(), f"<bench-{models}>"))
    text = nginx_output(
        policy,
        full=True,
        daemon=False,
        prefix=str(prefix),
        listen={
            "http": f"127.0.0.1:{listen}",
            "grpc": f"127.0.0.1:{free_port()}",
            "metrics": f"127.0.0.1:{free_port()}",
        },
        upstream={"http": f"127.0.0.1:{backend}", "grpc": f"127.0.0.1:{backend}", "metrics": f"127.0.0.1:{backend}"},
    )
    # Same process hosts the trivial backend; no access log on the measured path either (as the baseline).
    text = text.replace("    access_log " + str(prefix) + "/access.log;", "    access_log off;", 1)
    closing = text.rstrip().rfind("}")
    return text[:closing] + BACKEND.format(port=backend) + "}\n"


class _Nginx:
    def __init__(self, config: str, prefix: Path, port: int) -> None:
        path = prefix / "nginx.conf"
        path.write_text(config, encoding="utf-8")
        check = subprocess.run(
            [NGINX, "-t", "-q", "-p", str(prefix), "-c", str(path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(check.stderr)
        self.process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_ready(self.process, lambda: listening(port), 120, "nginx")  # 5,000 models: ~15 s

    def stop(self) -> None:
        stop_process(self.process)


def _wrk(port: int, path: str, duration: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run: 1 thread, 32 connections, POST with the client header."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.body = "{}"\n'
            f'wrk.headers["{CLIENT_HEADER[0]}"] = "{CLIENT_HEADER[1]}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        result = subprocess.run(
            [
                WRK,
                "-t1",
                "-c32",
                f"-d{max(duration, 1.0):.0f}s",
                "--latency",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 30,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    out = result.stdout
    if re.search(r"Non-2xx or 3xx responses: \d+", out):
        raise RuntimeError(f"the benchmark request was not allowed:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _latency_ms(out, "50%"), _latency_ms(out, "99%")


def _latency_ms(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percentile} latency in wrk output:\n{out}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def nginx_dataplane(sizes: list[int], duration: float) -> list[dict[str, object]]:
    """One row per size: generated config vs plain proxy, alternated runs of ``duration`` s, medians."""
    rows: list[dict[str, object]] = []
    for models in sizes:
        path = f"/v2/models/model-{models // 2:05d}/versions/1/infer"  # mid-list, allowed
        prefix = Path(tempfile.mkdtemp(prefix="meshgen-bench-nginx-", dir="/tmp"))
        prefix.chmod(0o755)
        try:
            listen, backend = free_port(), free_port()
            temps = {
                "prefix": prefix,
                "listen": listen,
                "backend": backend,
                "backend_server": BACKEND.format(port=backend),
            }
            configs = {"plain": PLAIN.format(**temps), "generated": _generated_config(models, prefix, listen, backend)}
            runs: dict[str, list[tuple[float, float, float]]] = {"plain": [], "generated": []}
            for _ in range(ROUNDS):
                for kind in ("plain", "generated"):
                    server = _Nginx(configs[kind], prefix, listen)
                    try:
                        _wrk(listen, path, 1.0)  # warm-up: connections, upstream keepalive
                        runs[kind].append(_wrk(listen, path, duration))
                    finally:
                        server.stop()
            plain_rps = statistics.median(r[0] for r in runs["plain"])
            generated_rps = statistics.median(r[0] for r in runs["generated"])
            rows.append(
                {
                    "target": "nginx",
                    "models": models,
                    "ratio": round(generated_rps / plain_rps, 3),
                    "p50_ms": round(statistics.median(r[1] for r in runs["generated"]), 3),
                    "p99_ms": round(statistics.median(r[2] for r in runs["generated"]), 3),
                    "rps": round(generated_rps),
                }
            )
        finally:
            shutil.rmtree(prefix, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in nginx_dataplane([10, 100, 1000], 5.0):
        print(row)
