"""meshgen benchmarks: one command, one table.  ``python benchmarks/run.py [--smoke]``.

Sections (all ratios measured side by side in this one run; the machine may be shared):
compile scaling per target and ``meshgen all`` (time, output size, peak RSS); CLI start-up vs
``python -c "import typer"``; Envoy data plane (and NGINX's, from benchmarks/nginx_dataplane.py when
present); the Envoy gRPC model guard's cost, buffered RSS and real Triton request sizes
(benchmarks/envoy_inspection.py); Envoy and nginx validate time and peak RSS on the largest config.
``--smoke``: tiny sizes and durations, no thresholds (CI runs it so the harness never rots).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.specs import write_spec  # noqa: E402

TARGETS = ("istio", "envoy-rbac", "envoy-bootstrap", "nginx")
Row = dict[str, object]


def timed(command: list[str], **kwargs: object) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of one child process.

    Peak RSS is the child's own VmHWM, polled from /proc: wait4's ru_maxrss would also count the
    forking Python's resident size, which the child inherits across exec.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    peak_kb = 0
    status_file = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    return time.perf_counter() - start, peak_kb / 1024, process.returncode


def compile_rows(directory: Path, sizes: list[int], clients: list[int]) -> list[Row]:
    rows: list[Row] = []
    for models in sizes:
        for count in clients:
            spec = write_spec(directory, models, count, mtls=False)
            row: Row = {"models": models, "clients": count}
            for target in TARGETS:
                result = subprocess.run(
                    [sys.executable, str(ROOT / "benchmarks" / "compile_worker.py"), str(spec), target],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                data = json.loads(result.stdout)
                row[f"{target}_s"] = data["seconds"]
                row[f"{target}_kb"] = data["bytes"] / 1024
            out = directory / f"all-{models}x{count}"
            seconds, rss, code = timed([sys.executable, "-m", "meshgen", "all", str(spec), "-o", str(out)], cwd=ROOT)
            row["all_s"], row["all_rss_mb"], row["all_ok"] = seconds, rss, code == 0
            rows.append(row)
    return rows


def startup_row(runs: int) -> Row:
    def median(command: list[str]) -> float:
        return statistics.median(timed(command)[0] for _ in range(runs))

    floor = median([sys.executable, "-c", "import typer"])
    meshgen = median([sys.executable, "-m", "meshgen", "--version"])
    return {"typer_s": floor, "meshgen_s": meshgen, "ratio": meshgen / floor}


def validate_rows(directory: Path, models: int, clients: int) -> list[Row]:
    from tests.support.envoy_process import envoy_binary

    spec = write_spec(directory, models, clients, mtls=False)
    rows: list[Row] = []
    config = directory / "validate-envoy.json"
    subprocess.run(
        [sys.executable, "-m", "meshgen", "envoy", "--bootstrap", str(spec), "-o", str(config)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    seconds, rss, code = timed([envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"])
    rows.append(
        {
            "tool": "envoy --mode validate",
            "models": models,
            "clients": clients,
            "seconds": seconds,
            "rss_mb": rss,
            "ok": code == 0,
            "mb": config.stat().st_size / 2**20,
        }
    )
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        rows.append({"tool": "nginx -t", "note": "nginx not installed"})
        return rows
    prefix = directory / "nginx-prefix"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = directory / "validate-nginx.conf"
    made = subprocess.run(
        [sys.executable, "-m", "meshgen", "nginx", "--full", "--prefix", str(prefix), str(spec), "-o", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        rows.append({"tool": "nginx -t", "note": f"meshgen nginx --full failed: {made.stderr.strip()[:120]}"})
        return rows
    seconds, rss, code = timed([nginx, "-t", "-q", "-p", str(prefix), "-c", str(conf)])
    note = ""
    if code != 0:
        check = subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
        note = (check.stderr.strip().splitlines() or [""])[0][-160:]
    rows.append(
        {
            "tool": "nginx -t",
            "models": models,
            "clients": clients,
            "seconds": seconds,
            "rss_mb": rss,
            "ok": code == 0,
            "mb": conf.stat().st_size / 2**20,
            "note": note,
        }
    )
    return rows


def dataplane_rows(sizes: list[int], duration: float, pairs: int) -> tuple[list[Row], list[str]]:
    from benchmarks.envoy_dataplane import envoy_dataplane

    rows: list[Row] = list(envoy_dataplane(sizes, duration, pairs=pairs))
    notes: list[str] = []
    try:
        module = importlib.import_module("benchmarks.nginx_dataplane")
    except ImportError:
        notes.append("nginx data plane: benchmarks/nginx_dataplane.py not present yet: skipped")
    else:
        try:
            rows.extend(module.nginx_dataplane(sizes, duration))
        except Exception as error:  # one section failing must not lose the table
            notes.append(f"nginx data plane failed: {error!r}")
    return rows, notes


def inspection_rows(duration: float, pairs: int, smoke: bool) -> tuple[list[Row], list[Row], list[Row], list[str]]:
    """The gRPC model guard (benchmarks/envoy_inspection.py): cost rows, buffered-RSS rows, payload sizes.

    ``smoke``: the 100-byte message only and two 1 MiB calls held open.
    """
    from benchmarks import envoy_inspection as inspection

    sizes = ["100 B"] if smoke else list(inspection.SIZES)
    held = ((2,), (inspection.MIB,)) if smoke else ((8, 32), (inspection.MIB, 4 * inspection.MIB))
    parts: list[tuple[str, Callable[[], list[Row]]]] = [
        ("cost", lambda: inspection.envoy_inspection(duration, pairs, sizes)),
        ("buffered RSS", lambda: inspection.buffered_rss(*held)),
        ("payload sizes", inspection.triton_payload_sizes),
    ]
    results: list[list[Row]] = []
    notes: list[str] = []
    for name, call in parts:
        try:
            results.append(call())
        except Exception as error:  # one section failing must not lose the table
            notes.append(f"gRPC inspection {name} failed: {error!r}")
            results.append([])
    return results[0], results[1], results[2], notes


def fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, rows: list[Row], columns: list[str]) -> str:
    lines = [f"## {title}", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds, no thresholds")
    parser.add_argument("--skip-dataplane", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        sizes, clients, dp_sizes, duration, pairs, runs, largest = [10, 30], [3], [10], 1.0, 1, 3, (30, 3)
    else:
        sizes, clients, dp_sizes, duration, pairs, runs, largest = (
            [10, 100, 1000, 5000],
            [10, 100],
            [10, 100, 1000, 5000],
            5.0,
            3,
            15,
            (5000, 100),
        )
    sections: list[str] = [
        f"# meshgen benchmarks ({'smoke' if args.smoke else 'full'}) "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs, {os.uname().machine}"
    ]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="meshgen-bench-") as temp:
        directory = Path(temp)
        compile_ = compile_rows(directory, sizes, clients)
        sections.append(
            table(
                "Compile (seconds per fresh process incl. import; KB of output; `all` via the CLI)",
                compile_,
                [
                    "models",
                    "clients",
                    *[f"{t}_s" for t in TARGETS],
                    "all_s",
                    "all_rss_mb",
                    "all_ok",
                    *[f"{t}_kb" for t in TARGETS],
                ],
            )
        )
        sections.append(
            table("CLI start-up (median wall seconds)", [startup_row(runs)], ["typer_s", "meshgen_s", "ratio"])
        )
        if not args.skip_dataplane:
            rows, more = dataplane_rows(dp_sizes, duration, pairs)
            notes += more
            sections.append(
                table(
                    "Data plane (ratio = req/s with policy / without; h2c, --concurrency 1)",
                    rows,
                    [
                        "target",
                        "models",
                        "ratio",
                        "cpu_us",
                        "base_cpu_us",
                        "p50_ms",
                        "p99_ms",
                        "rps",
                        "base_rps",
                        "note",
                    ],
                )
            )
            from benchmarks import envoy_inspection as inspection

            rows, rss, payloads, more = inspection_rows(duration, pairs, args.smoke)
            notes += more
            sections.append(
                table(
                    "gRPC model guard (ratio = req/s with the guard / without; cpu = Envoy µs per request; "
                    "per-model: vs bodyInspection off + grpcAllModels; all-models: vs the guard deleted)",
                    rows,
                    inspection.COLUMNS,
                )
            )
            sections.append(
                table(
                    "gRPC model guard: Envoy RSS per inspected call held open (whole message, no END_STREAM)",
                    rss,
                    inspection.RSS_COLUMNS,
                )
            )
            sections.append(table("Triton ModelInferRequest sizes", payloads, inspection.PAYLOAD_COLUMNS))
        sections.append(
            table(
                "Validate the largest config",
                validate_rows(directory, *largest),
                ["tool", "models", "clients", "mb", "seconds", "rss_mb", "ok", "note"],
            )
        )
    if notes:
        sections.append("\n".join(f"note: {note}" for note in notes))
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
