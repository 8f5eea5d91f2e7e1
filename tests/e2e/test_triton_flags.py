"""``meshgen triton`` on the real server: a second Triton started with exactly the flags it emits for the
edge spec (admin identified by a header) must accept them all, refuse the restricted categories without
the header (HTTP 403 from Triton; gRPC UNAVAILABLE unless the metadata ``triton-grpc-protocol-<key>`` is
sent) and serve them with it, while the unrestricted categories need no header: defence in depth.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e '.[test,e2e]')")

import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from meshgen.policy import compile_policy
from meshgen.spec import load_spec
from meshgen.targets.triton.flags import GRPC_METADATA_PREFIX
from tests.e2e.calls import Call, Clients, all_calls
from tests.e2e.conftest import TritonInstall
from tests.e2e.exercise import SPECS_DIR
from tests.e2e.triton_server import TritonServer
from tests.support.targets import triton_output

pytestmark = pytest.mark.e2e

RESTRICTED_MESSAGE = "This API is restricted"
GRPC_RESTRICTED = "StatusCode.UNAVAILABLE"
# What the edge spec grants only to the admin header (health, metadata, inference: to lb by address).
EXPECTED_RESTRICTED = {"model-config", "model-repository", "statistics", "trace", "logging"}


@dataclass
class RestrictedServer:
    server: TritonServer
    flags: list[str]
    restricted: dict[str, dict[str, tuple[str, str]]]  # protocol -> category -> (header, value)


def restricted_categories(flags: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Parse ``--{http-restricted-api,grpc-restricted-protocol}=<api>[,<api>...]:<key>=<value>``."""
    result: dict[str, dict[str, tuple[str, str]]] = {"http": {}, "grpc": {}}
    for flag in flags:
        name, _, argument = flag.partition("=")
        protocol = {"--http-restricted-api": "http", "--grpc-restricted-protocol": "grpc"}.get(name)
        if protocol is None:
            continue
        apis, _, key_value = argument.partition(":")
        key, _, value = key_value.partition("=")
        for api in apis.split(","):
            result[protocol][api] = (key, value)
    return result


def generated_flags() -> list[str]:
    """The arguments of ``meshgen triton``'s file, split the way its documented ``xargs`` use splits them."""
    text = triton_output(compile_policy(load_spec(str(SPECS_DIR / "edge.yaml"))))
    return [arg for line in text.splitlines() if line and not line.startswith("#") for arg in shlex.split(line)]


@pytest.fixture(scope="module")
def restricted(triton_install: TritonInstall) -> Iterator[RestrictedServer]:
    # Every flag exactly as `meshgen triton` emits it (addresses and model control included): a flag
    # Triton 2.51 rejects makes the server exit, and the fixture fails with Triton's console output.
    flags = generated_flags()
    server = triton_install.start("restricted", flags)
    print(f"\nrestricted tritonserver ready in {server.start_seconds:.2f} s with {flags}")
    try:
        yield RestrictedServer(server, flags, restricted_categories(flags))
    finally:
        server.stop()


def _clients(server: TritonServer, headers: dict[str, str]) -> tuple[Clients, Any, Any]:
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    return Clients(http, grpc, server.ports.metrics, headers), http, grpc


def _run(call: Call, clients: Clients) -> tuple[Any, InferenceServerException | None]:
    try:
        return call.run(clients), None
    except InferenceServerException as error:
        return None, error


def _succeeded(call: Call, result: Any, error: InferenceServerException | None) -> str | None:
    if error is not None:
        return f"failed: {error.status()} {error.message()}"
    return None if call.check(result) else f"wrong answer {result!r}"


def _refused_by_triton(call: Call, result: Any, error: InferenceServerException | None) -> str | None:
    if call.truthy and error is None:
        return None if result is False else f"answered {result!r}"  # HTTP is_*_ready: False on 403
    if error is None:
        return f"succeeded with {result!r}"
    if call.protocol == "grpc":
        return None if error.status() == GRPC_RESTRICTED else f"failed with {error.status()} {error.message()}"
    if error.status() != "403" or RESTRICTED_MESSAGE not in (error.message() or ""):
        return f"failed with {error.status()} {error.message()}"
    return None


def _calls_as(restricted: RestrictedServer, headers: dict[str, str]) -> list[tuple[Call, Any, Any]]:
    clients, http, grpc = _clients(restricted.server, headers)
    try:
        return [(call, *_run(call, clients)) for call in all_calls()]
    finally:
        http.close()
        grpc.close()


def test_generated_flags_restrict_the_admin_categories(restricted: RestrictedServer) -> None:
    assert set(restricted.restricted["http"]) == EXPECTED_RESTRICTED
    assert restricted.restricted["grpc"] == restricted.restricted["http"]


def test_restricted_categories_refuse_calls_without_the_header(restricted: RestrictedServer) -> None:
    problems = []
    for call, result, error in _calls_as(restricted, {}):
        is_restricted = call.protocol != "metrics" and call.category in restricted.restricted[call.protocol]
        why = (_refused_by_triton if is_restricted else _succeeded)(call, result, error)
        if why is not None:
            problems.append(f"{call.label} without header (restricted={is_restricted}): {why}")
    assert not problems, "\n".join(problems)


def test_http_header_opens_the_restricted_categories(restricted: RestrictedServer) -> None:
    ((header, value),) = set(restricted.restricted["http"].values())
    problems = [
        f"{call.label} with {header}: {why}"
        for call, result, error in _calls_as(restricted, {header: value})
        if call.protocol != "grpc" and (why := _succeeded(call, result, error)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_grpc_needs_the_prefixed_metadata(restricted: RestrictedServer) -> None:
    ((header, value),) = set(restricted.restricted["grpc"].values())
    # The plain header (what the proxy checks) does not open gRPC: Triton wants its own metadata key.
    plain = {call.label: (call, result, error) for call, result, error in _calls_as(restricted, {header: value})}
    prefixed = _calls_as(restricted, {f"{GRPC_METADATA_PREFIX}{header}": value})
    problems = []
    for call, result, error in prefixed:
        if call.protocol != "grpc":
            continue
        if (why := _succeeded(call, result, error)) is not None:
            problems.append(f"{call.label} with {GRPC_METADATA_PREFIX}{header}: {why}")
        if call.category in restricted.restricted["grpc"]:
            _, plain_result, plain_error = plain[call.label]
            if (why := _refused_by_triton(call, plain_result, plain_error)) is not None:
                problems.append(f"{call.label} with only {header}: {why}")
    assert not problems, "\n".join(problems)


def test_generated_flags_alone_serve_the_repository(triton_install: TritonInstall) -> None:
    """Used as documented (``grep -v '^#' triton-args.txt | xargs tritonserver --model-repository=M``), the
    server must still load the models it served before the flags were added (default mode loads all)."""
    flags = generated_flags()
    ((header, value),) = set(restricted_categories(flags)["http"].values())
    with triton_install.start("generated-only", flags, load_all_models=False) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            index = client.get_model_repository_index(headers={header: value})
        finally:
            client.close()
    assert {entry["name"]: entry.get("state") for entry in index} == dict.fromkeys(
        ("add", "hidden", "identity"), "READY"
    )
