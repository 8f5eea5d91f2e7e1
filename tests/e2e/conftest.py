"""Fixtures of the end-to-end suites: a real Triton 2.51 (PyPI nvidia-pytriton) with a tiny model
repository, started once per session on free 127.0.0.1 ports and stopped by SIGTERM at the end.

Every e2e test needs the ``triton`` fixture (or its helpers), which skips when nvidia-pytriton is not
installed (``pip install -e '.[e2e]'``); nothing else is a reason to skip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.models import write_model_repository
from tests.e2e.triton_server import TritonServer, make_backend_directory, pytriton_root

NOT_INSTALLED = "nvidia-pytriton is not installed (pip install -e '.[test,e2e]')"


@dataclass(frozen=True)
class TritonInstall:
    """The wheel's server plus a model repository and backend directory for it."""

    root: Path
    model_repository: Path
    backend_directory: Path
    directory: Path

    def start(self, name: str, extra_flags: list[str] | None = None, *, load_all_models: bool = True) -> TritonServer:
        return TritonServer(
            self.root,
            self.model_repository,
            self.backend_directory,
            self.directory / f"{name}.log",
            extra_flags or [],
            load_all_models=load_all_models,
        )


@pytest.fixture(scope="session")
def triton_install(tmp_path_factory: pytest.TempPathFactory) -> TritonInstall:
    root = pytriton_root()
    if root is None:
        pytest.skip(NOT_INSTALLED)
    directory = tmp_path_factory.mktemp("triton")
    return TritonInstall(
        root,
        write_model_repository(directory / "models"),
        make_backend_directory(root, directory / "backends"),
        directory,
    )


@pytest.fixture(scope="session")
def triton(triton_install: TritonInstall) -> Iterator[TritonServer]:
    """The shared server behind every generated proxy (no restricted APIs: the proxy is the only guard)."""
    server = triton_install.start("triton")
    print(f"\ntritonserver ready in {server.start_seconds:.2f} s (ports {server.ports})")
    try:
        yield server
    finally:
        stopping = time.monotonic()
        server.stop()
        print(f"\ntritonserver stopped in {time.monotonic() - stopping:.2f} s")
