"""A stand-in for Triton's OpenAI-compatible frontend built on the frontend's own HTTP stack.

FastAPI 0.121.2 (the version the frontend pins) on uvicorn, with the frontend's routes (see
/work/notes/openai-frontend.md §1): POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET
/v1/models, /v1/models/{model_name}; POST /v1/models/{model_name}/load and /unload; GET /metrics and
/health/ready. Request bodies go through FastAPI's own body handling (content-type rules, stdlib
``json.loads`` with its encoding detection, last duplicate key wins) and pydantic validation, exactly as
in the frontend; only the engine is a stub that answers every model it is given.

Request models: the frontend's shape, not a permissive one. ``model: str`` is required; every other
field the frontend declares that the tests use is optional (the frontend requires ``messages`` and
``input``: optional here, so more bodies validate and reach the "parsed model" the tests check —
never fewer). Unknown top-level fields are refused (``extra="forbid"``, as in the frontend's
``CreateChatCompletionRequest`` and friends); message objects ignore unknown fields, as the frontend's
message models do (pydantic's default), which is where the tests hide a nested ``"model"``. The only
difference that matters is towards acceptance: the stub engine runs any model name (the real one
answers 400 "Unknown model" to names it does not serve, after parsing).

Every request is recorded (``Record``: path, method, headers, raw body, the model FastAPI parsed or
None when validation refused the body or the route names none, the status); each answer carries the
parsed model in ``x-parsed-model`` (``json.dumps`` of it, ASCII, cut at 200 characters). With
``"stream": true`` chat and completions answer ``text/event-stream``: ``chunks`` events
``chunk_interval`` seconds apart, then ``data: [DONE]``, with the time each event was produced
(``time.monotonic()``) in ``Record.chunk_times``.

uvicorn runs in a thread of the test process on a socket bound to a free 127.0.0.1 port. It is started
with the frontend's options except ``timeout_keep_alive`` (5 s in the frontend; longer here, so a proxy
never reuses a pooled connection uvicorn is closing in the middle of a test run).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

RECORD_KEY = "meshgen.openai_backend.record"
PARSED_HEADER = "x-parsed-model"
DEFAULT_MODELS = ("llama-3-8b-instruct", "llama-3-70b-instruct", "llama-3-70b-base", "e5-embeddings")


@dataclass
class Record:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    model: str | None = None  # what FastAPI/pydantic parsed (body "model" or the path's model name)
    status: int | None = None
    chunk_times: list[float] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


# --- request models: the frontend's shape (server@S:python/openai/openai_frontend/schemas/openai.py) ---


class Message(BaseModel):
    # The frontend's ChatCompletionRequest*Message models keep pydantic's default: unknown fields ignored.
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] | None = Field(None, min_length=1)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_tokens: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str | list[str] | list[int] | None = None
    max_tokens: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str] | list[int] | None = None
    dimensions: int | None = None
    encoding_format: str | None = None
    user: str | None = None


def _json(payload: Any, status: int = 200, model: str | None = None) -> Response:
    # json.dumps escapes everything non-ASCII (a lone surrogate in a model name cannot be UTF-8 encoded).
    headers = {PARSED_HEADER: json.dumps(model)[:200]} if model is not None else {}
    return Response(json.dumps(payload), status, headers, media_type="application/json")


class _Recorder:
    """Pure ASGI middleware: one Record per HTTP request, with the raw body and the response status."""

    def __init__(self, app: Any, backend: OpenAIBackend) -> None:
        self.app, self.backend = app, backend

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        record = Record(scope["method"], scope["path"], headers)
        scope[RECORD_KEY] = record
        self.backend._add(record)

        async def receiving() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                record.body += message.get("body", b"")
            return message

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.app(scope, receiving, sending)


def _record(raw: Request) -> Record:
    record: Record = raw.scope[RECORD_KEY]
    return record


def build_app(backend: OpenAIBackend) -> FastAPI:
    """The frontend's routes on a FastAPI app (docs routes left on, as in the frontend)."""
    app = FastAPI(title="OpenAI API stand-in")

    def events(record: Record, kind: str, model: str) -> AsyncIterator[str]:
        async def generate() -> AsyncIterator[str]:
            for index in range(backend.chunks):
                if index:
                    await asyncio.sleep(backend.chunk_interval)
                record.chunk_times.append(time.monotonic())
                chunk = {"id": f"{kind}-0", "object": f"{kind}.chunk", "model": model, "index": index}
                yield f"data: {json.dumps(chunk)}\n\n"
            record.chunk_times.append(time.monotonic())
            yield "data: [DONE]\n\n"

        return generate()

    def answer(raw: Request, kind: str, model: str, stream: bool | None) -> Response:
        record = _record(raw)
        record.model = model
        if stream:
            headers = {PARSED_HEADER: json.dumps(model)[:200]}
            return StreamingResponse(events(record, kind, model), media_type="text/event-stream", headers=headers)
        return _json({"id": f"{kind}-0", "object": kind, "model": model, "choices": []}, model=model)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request) -> Response:
        return answer(raw_request, "chat.completion", request.model, request.stream)

    @app.post("/v1/completions")
    async def create_completion(request: CompletionRequest, raw_request: Request) -> Response:
        return answer(raw_request, "text_completion", request.model, request.stream)

    @app.post("/v1/embeddings")
    async def create_embedding(request: EmbeddingRequest, raw_request: Request) -> Response:
        _record(raw_request).model = request.model
        data = [{"object": "embedding", "embedding": [0.0], "index": 0}]
        return _json({"object": "list", "data": data, "model": request.model}, model=request.model)

    @app.get("/v1/models")
    async def list_models() -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "triton"} for m in backend.models]
        return _json({"object": "list", "data": data})

    @app.get("/v1/models/{model_name}")
    async def retrieve_model(model_name: str, raw_request: Request) -> Response:
        _record(raw_request).model = model_name
        if model_name not in backend.models:
            return _json({"detail": f"Unknown model: {model_name}"}, 404, model_name)
        return _json({"id": model_name, "object": "model", "created": 0, "owned_by": "triton"}, model=model_name)

    @app.post("/v1/models/{model_name}/load")
    async def load_model(model_name: str, raw_request: Request) -> Response:
        _record(raw_request).model = model_name
        return _json({"status": "success", "message": f"Model {model_name} loaded"}, model=model_name)

    @app.post("/v1/models/{model_name}/unload")
    async def unload_model(model_name: str, raw_request: Request) -> Response:
        _record(raw_request).model = model_name
        return _json({"status": "success", "message": f"Model {model_name} unloaded"}, model=model_name)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response("# HELP nv_inference_count stand-in\nnv_inference_count 0\n", media_type="text/plain")

    @app.get("/health/ready")
    async def ready() -> Response:
        return Response(status_code=200)

    return app


class OpenAIBackend:
    """The stand-in frontend on ``127.0.0.1:<port>``, in a thread; ``records`` holds every request."""

    def __init__(
        self, models: tuple[str, ...] = DEFAULT_MODELS, *, chunks: int = 5, chunk_interval: float = 0.2
    ) -> None:
        self.models = models
        self.chunks, self.chunk_interval = chunks, chunk_interval
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            _Recorder(build_app(self), self),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=120,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="openai-backend", daemon=True
        )

    def _add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def since(self, mark: int) -> list[Record]:
        """The records after the first ``mark`` (take ``len(backend.records)`` before a request)."""
        with self._lock:
            return self.records[mark:]

    def start(self) -> OpenAIBackend:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the OpenAI stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> OpenAIBackend:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
