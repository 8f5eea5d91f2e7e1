"""Server-sent events from the OpenAI frontend stream through the generated proxies, unbuffered.

The stand-in frontend (tests/support/openai_backend.py) answers ``"stream": true`` with five
``data:`` events 200 ms apart, then ``data: [DONE]``. Through the Envoy bootstrap of ``llm-tenants``
(which buffers the *request* body to read its model) and through nginx --full, a granted stream must
reach the client as it is produced: the first event well before the backend produces the last one.
A stream naming a model the client may not use is refused with 403 and never reaches the backend.

nginx reads no request bodies, so it cannot grant per model: for ``llm-tenants`` it refuses every
OpenAI inference request (decide() for nginx's capabilities agrees). Its streaming is checked on a
variant of the spec where chat-app may use every model and the deny limited to models is gone.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from meshgen.features import Feature
from meshgen.policy import Identity, Request, compile_policy, decide
from meshgen.spec import LoadedSpec, Spec
from tests.support.goldens import load_case
from tests.support.matrix import LOOPBACK_OUTSIDER_IP, loopback_variant
from tests.support.nginx_process import NGINX, NginxProcess
from tests.support.openai_backend import OpenAIBackend, Record
from tests.support.processes import free_port
from tests.support.targets import NGINX as NGINX_TARGET
from tests.support.targets import enforced_by, nginx_output
from tests.test_openai_body import CASE, CHAT, FORBIDDEN, PORTS, envoy_in_front

CHAT_APP, SEARCH = "127.0.1.1", "127.0.3.1"  # the loopback variant of chat-app's and search's ipBlocks
FIRST_EVENT_WITHIN = 1.0  # seconds from sending the request
MIN_DURATION = 0.8  # the stand-in's 5 events, 200 ms apart
MAX_LAG = 0.3  # an event reaches the client within this long after the backend produced it


@dataclass
class Stream:
    status: int | None
    content_type: str
    sent: float  # time.monotonic() when the request was sent
    events: list[tuple[float, bytes]]  # (arrival, "data: ..." event)
    reached: list[Record]

    def summary(self) -> str:
        if not self.events:
            return f"{self.status}, no events"
        first, last = self.events[0][0] - self.sent, self.events[-1][0] - self.sent
        return f"{self.status}, {len(self.events)} events, first after {first:.3f} s, last after {last:.3f} s"


def stream(port: int, backend: OpenAIBackend, source: str, model: str, path: str = CHAT) -> Stream:
    body = {"model": model, "stream": True}
    body |= {"messages": [{"role": "user", "content": "hi"}]} if path == CHAT else {"prompt": "hi"}
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    mark = len(backend.records)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        sent = time.monotonic()
        sock.sendall(head.encode() + data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        events: list[tuple[float, bytes]] = []
        pending = b""
        if response.status == 200:
            while chunk := response.read1(65536):
                now = time.monotonic()
                pending += chunk
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    events.append((now, event))
        else:
            response.read()
        content_type = response.getheader("content-type") or ""
        return Stream(response.status, content_type, sent, events, backend.since(mark))
    finally:
        sock.close()


def assert_streamed(result: Stream, model: str) -> None:
    """Every event arrived as it was produced: the first well before the last one existed."""
    assert result.status == 200 and result.content_type.startswith("text/event-stream"), result
    assert len(result.reached) == 1 and result.reached[0].model == model, result.reached
    produced = result.reached[0].chunk_times
    assert [e for _, e in result.events][-1] == b"data: [DONE]", result.events
    assert len(result.events) == len(produced) == 6, (result.events, produced)
    arrivals = [t for t, _ in result.events]
    assert arrivals[0] - result.sent < FIRST_EVENT_WITHIN, result.summary()
    assert arrivals[0] < produced[-2] - 0.5, "the first event waited for the last one to be produced"
    assert arrivals[-1] - result.sent >= MIN_DURATION, result.summary()
    lags = [arrival - made for arrival, made in zip(arrivals, produced, strict=True)]
    assert all(0 <= lag < MAX_LAG for lag in lags), lags
    print(f"\n{model}: {result.summary()}; lag per event {', '.join(f'{lag * 1000:.0f} ms' for lag in lags)}")


def assert_refused(result: Stream) -> None:
    assert result.status == 403 and not result.reached, (result.summary(), result.reached)


@pytest.fixture(scope="module")
def backend() -> Iterator[OpenAIBackend]:
    with OpenAIBackend() as running:
        yield running


# --- Envoy ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy_port(backend: OpenAIBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with envoy_in_front(load_case(CASE), tmp_path_factory.mktemp("openai-sse"), backend) as proxy:
        yield proxy.port


@pytest.mark.envoy
@pytest.mark.parametrize(
    ("path", "model"), [(CHAT, "llama-3-8b-instruct"), ("/v1/completions", "llama-3-70b-instruct")]
)
def test_envoy_streams_a_granted_model_as_it_is_produced(
    envoy_port: int, backend: OpenAIBackend, path: str, model: str
) -> None:
    assert_streamed(stream(envoy_port, backend, CHAT_APP, model, path), model)


@pytest.mark.envoy
@pytest.mark.parametrize(("source", "model"), [(CHAT_APP, FORBIDDEN), (SEARCH, "llama-3-8b-instruct")])
def test_envoy_refuses_a_stream_of_a_model_the_client_may_not_use(
    envoy_port: int, backend: OpenAIBackend, source: str, model: str
) -> None:
    assert_refused(stream(envoy_port, backend, source, model))


# --- nginx ----------------------------------------------------------------------------------------------


@contextmanager
def nginx_in_front(loaded: LoadedSpec, backend: OpenAIBackend) -> Iterator[tuple[int, Spec, frozenset[Feature]]]:
    spec = loopback_variant(loaded.spec)
    policy = compile_policy(LoadedSpec(spec, loaded.source))
    listen = {port: free_port() for port in PORTS}
    text = nginx_output(
        policy,
        full=True,
        daemon=False,
        listen={port: f"127.0.0.1:{listen[port]}" for port in PORTS},
        upstream={port: f"127.0.0.1:{backend.port}" for port in PORTS},
    )
    with NginxProcess(text, list(listen.values())):
        yield listen["openai"], spec, enforced_by(NGINX_TARGET, policy)


def every_model_for_chat_app() -> LoadedSpec:
    """llm-tenants where chat-app's inference grant covers every model and no deny names models."""
    loaded = load_case(CASE)
    rules = []
    for rule in loaded.spec.rules:
        if rule.action == "deny" and rule.models is not None:
            continue
        rules.append(rule.model_copy(update={"models": None}) if rule.from_ == ["chat-app"] else rule)
    return LoadedSpec(loaded.spec.model_copy(update={"rules": rules}), loaded.source)


needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


@pytest.mark.nginx
@needs_nginx
def test_nginx_streams_as_it_is_produced_and_refuses_what_it_cannot_prove(backend: OpenAIBackend) -> None:
    with nginx_in_front(every_model_for_chat_app(), backend) as (port, spec, enforced):

        def allowed(source: str, model: str) -> bool:
            request = Request("openai", "POST", CHAT, Identity(source_ip=source), body_model=model)
            return decide(spec, request, enforced).allowed

        assert allowed(CHAT_APP, "llama-3-8b-instruct") and not allowed(SEARCH, "e5-embeddings")
        assert_streamed(stream(port, backend, CHAT_APP, "llama-3-8b-instruct"), "llama-3-8b-instruct")
        # search's grant is limited to e5-embeddings: nginx cannot read the model, so it refuses it.
        assert_refused(stream(port, backend, SEARCH, "e5-embeddings"))
        assert_refused(stream(port, backend, LOOPBACK_OUTSIDER_IP, "llama-3-8b-instruct"))


@pytest.mark.nginx
@needs_nginx
def test_nginx_refuses_every_per_model_stream_of_the_golden_spec(backend: OpenAIBackend) -> None:
    with nginx_in_front(load_case(CASE), backend) as (port, spec, enforced):
        for source, model in [(CHAT_APP, "llama-3-8b-instruct"), (CHAT_APP, FORBIDDEN), (SEARCH, "e5-embeddings")]:
            request = Request("openai", "POST", CHAT, Identity(source_ip=source), body_model=model)
            assert not decide(spec, request, enforced).allowed
            assert_refused(stream(port, backend, source, model))
