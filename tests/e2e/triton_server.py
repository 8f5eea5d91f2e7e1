"""Start the real ``tritonserver`` 2.51 shipped in PyPI ``nvidia-pytriton`` (CPU, Python backend only).

Recipe and pitfalls: shared/reference/triton-server-notes.md. The binary needs a backend directory
holding the Python backend plus the stub built for the running Python, the interpreter's libpython
first on LD_LIBRARY_PATH (else the stub may load the distro's libpython and crash), and the venv's
``bin`` first on PATH (the stub finds ``python3`` and numpy there).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.processes import free_port, http_ok, stop_process, wait_until_ready

EXIT_TIMEOUT = 5  # seconds Triton waits for open connections and in-flight requests after SIGTERM
STOP_TIMEOUT = 30.0  # then it unloads its models (Python stubs) and exits
READY_TIMEOUT = 60.0


def pytriton_root() -> Path | None:
    """``site-packages/pytriton`` when nvidia-pytriton is installed, else None."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def tritonserver_binary(root: Path) -> Path:
    return root / "tritonserver" / "bin" / "tritonserver"


def make_backend_directory(root: Path, directory: Path) -> Path:
    """A ``--backend-directory`` with the Python backend and the stub for this interpreter."""
    python_dir = directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    shipped = root / "tritonserver" / "backends" / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(shipped / name, python_dir / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return directory


def server_environment(root: Path) -> dict[str, str]:
    libs = [str(sysconfig.get_config_var("LIBDIR")), str(root.parent / "nvidia_pytriton.libs")]
    previous = os.environ.get("LD_LIBRARY_PATH")
    environment = dict(os.environ)
    environment["LD_LIBRARY_PATH"] = ":".join([*libs, *([previous] if previous else [])])
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return environment


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int


class TritonServer:
    """One ``tritonserver`` process on free 127.0.0.1 ports; ``stop()`` (or the context manager) ends it.

    ``extra_flags`` are appended after ours, so a test can add e.g. restricted-API flags;
    ``load_all_models=False`` leaves model control to them. The server
    logs verbosely to ``log_path``: tests read it to prove which requests arrived.
    """

    def __init__(
        self,
        root: Path,
        model_repository: Path,
        backend_directory: Path,
        log_path: Path,
        extra_flags: Sequence[str] = (),
        *,
        load_all_models: bool = True,
    ) -> None:
        self.ports = TritonPorts(free_port(), free_port(), free_port())
        self.log_path = log_path
        self.console_path = log_path.with_suffix(".console")
        command = [
            str(tritonserver_binary(root)),
            f"--model-repository={model_repository}",
            f"--backend-directory={backend_directory}",
            "--http-address=127.0.0.1",
            f"--http-port={self.ports.http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.ports.grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            # Explicit mode so tests can unload and load; --load-model=* loads the whole repository first.
            *(["--model-control-mode=explicit", "--load-model=*"] if load_all_models else []),
            "--log-verbose=1",
            f"--log-file={log_path}",
            # Open keep-alive connections (a proxy's upstream pool) would hold a SIGTERM for 30 s.
            f"--exit-timeout-secs={EXIT_TIMEOUT}",
            *extra_flags,
        ]
        self.command = command
        started = time.monotonic()
        with open(self.console_path, "wb") as console:
            self._process = subprocess.Popen(
                command, stdout=console, stderr=subprocess.STDOUT, env=server_environment(root)
            )
        self._wait_ready()
        self.start_seconds = time.monotonic() - started

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def _wait_ready(self) -> None:
        # /v2/health/ready turns 200 once every --load-model has loaded. A restricted "health" API
        # would answer 403 here; nothing in these tests restricts health without also passing headers.
        url = f"http://127.0.0.1:{self.ports.http}/v2/health/ready"
        wait_until_ready(self._process, lambda: http_ok(url), READY_TIMEOUT, "tritonserver", self.console)

    def console(self) -> str:
        text = self.console_path.read_text(encoding="utf-8", errors="replace") if self.console_path.exists() else ""
        return text[-4000:]

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM (Triton unloads its models and exits); SIGKILL our own process only if it hangs."""
        stop_process(self._process, timeout=STOP_TIMEOUT)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
