"""CI smoke: the benchmark harness runs end to end with tiny sizes (no thresholds), so it never rots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.envoy


def test_benchmark_smoke_prints_one_table() -> None:
    args = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"]
    if shutil.which("h2load") is None:
        args.append("--skip-dataplane")
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("## Compile", "## CLI start-up", "## Validate the largest config"):
        assert section in out, out
    assert "| 30 | 3 |" in out  # the largest smoke size made it into the compile table
    assert "| envoy --mode validate | 30 | 3 |" in out
    if "--skip-dataplane" not in args:
        assert "| envoy http | 10 |" in out and "| envoy grpc | 10 |" in out, out
        assert "## gRPC model guard" in out and "| per-model | 100 B |" in out, out
        assert "gRPC inspection" not in out, out  # no section of it failed
