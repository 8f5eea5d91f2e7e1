"""Per-model OpenAI grants read from the JSON body, on a real Envoy: no forbidden model reaches the frontend.

The golden case ``llm-tenants`` (chat-app: llama-3-8b-instruct and llama-3-70b-instruct; search:
e5-embeddings; nobody: llama-3-70b-base) runs as the generated bootstrap in front of the frontend's own
stack (tests/support/openai_backend.py: FastAPI 0.121.2 + pydantic, stdlib ``json.loads``). A hostile
client controls every byte and the framing (HTTP/1.1 with Content-Length or chunks, h2c DATA frames):
each request of the corpus, and each random mutation of valid bodies, must be refused by Envoy or reach
the backend naming (as FastAPI parses it) a model the client may use. THE PROPERTY is
``forbidden_reached``.

Each corpus case is also compared with ``decide()`` given the model a proxy can read (``readable_model``:
at most bodyInspection.maxBytes, one of the two content-types json_to_metadata reads, a JSON text in
UTF-8, a leading BOM ignored, without NaN or lone surrogates, whose top level is an object with a
non-empty string "model"; the last duplicate key wins, as in Python). Envoy must forward exactly what
that reference allows (``KNOWN_PERMISSIVE`` lists the exceptions, each a reported generator problem).
The same request is sent to the backend directly: where FastAPI would run a model the client may use
and Envoy refuses, the case must be in ``EXPECTED_REFUSALS`` with the reason (fail closed), and no other.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.features import Feature
from meshgen.policy import Identity, Request, compile_policy, decide
from meshgen.spec import LoadedSpec, Spec
from tests.support.envoy_process import EnvoyProcess
from tests.support.goldens import load_case
from tests.support.h2client import H2Session
from tests.support.matrix import LOOPBACK_OUTSIDER_IP, loopback_variant
from tests.support.openai_backend import OpenAIBackend, Record
from tests.support.processes import free_port
from tests.support.targets import ENVOY, enforced_by, envoy_output

pytestmark = pytest.mark.envoy

CASE = "llm-tenants"
CHAT = "/v1/chat/completions"
PORTS = ("http", "grpc", "metrics", "openai")
# What json_to_metadata reads (exact strings); every other content-type leaves the model unproven.
READ_CONTENT_TYPES = ("application/json", "application/json; charset=utf-8")
FORBIDDEN = "llama-3-70b-base"  # denied to anyone
MIB = 1024 * 1024
BOM = b"\xef\xbb\xbf"


@dataclass
class OpenAIProxy:
    spec: Spec  # the loopback variant the bootstrap was generated from
    port: int  # Envoy's openai listener
    backend: OpenAIBackend
    enforced: frozenset[Feature]

    @property
    def max_bytes(self) -> int:
        return self.spec.body_inspection.max_bytes

    def readable(self, case: Case) -> str | None:
        return readable_model(case, self.max_bytes)

    def source(self, client: str) -> str:
        """The first address of the client's (loopback) ipBlock."""
        if client == "nobody":
            return LOOPBACK_OUTSIDER_IP
        blocks = self.spec.clients[client].ip_blocks
        assert blocks, f"{client} has no ipBlocks"
        block = ipaddress.ip_network(blocks[0])
        return str(block.network_address + (0 if block.num_addresses == 1 else 1))

    def allows(self, client: str, body_model: str | None, path: str = CHAT) -> bool:
        identity = Identity(source_ip=self.source(client))
        return decide(
            self.spec, Request("openai", "POST", path, identity, body_model=body_model), self.enforced
        ).allowed


@contextmanager
def envoy_in_front(loaded: LoadedSpec, directory: Path, backend: OpenAIBackend) -> Iterator[OpenAIProxy]:
    """The spec's loopback bootstrap on free ports, every upstream on ``backend`` (only openai is used)."""
    spec = loopback_variant(loaded.spec)
    policy = compile_policy(LoadedSpec(spec, loaded.source))
    listen = {port: free_port() for port in PORTS}
    admin = free_port()
    text = envoy_output(
        policy,
        bootstrap=True,
        listen={port: f"127.0.0.1:{listen[port]}" for port in PORTS},
        upstream={port: f"127.0.0.1:{backend.port}" for port in PORTS},
        admin=f"127.0.0.1:{admin}",
    )
    config = directory / "envoy.json"
    config.write_text(text, encoding="utf-8")
    enforced = enforced_by(ENVOY, policy)
    with EnvoyProcess(config, admin, directory / "envoy.log"):
        yield OpenAIProxy(spec, listen["openai"], backend, enforced)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIProxy]:
    with OpenAIBackend() as backend, envoy_in_front(load_case(CASE), tmp_path_factory.mktemp("openai"), backend) as p:
        assert Feature.PER_MODEL_JSON in p.enforced
        yield p


# --- clients: raw HTTP/1.1 (any bytes, any framing) and raw HTTP/2 ------------------------------------


@dataclass
class Outcome:
    status: int | None  # None: no response (connection closed or reset)
    headers: dict[str, str]
    body: bytes
    reached: list[Record]  # what the backend received for this request

    @property
    def forwarded(self) -> bool:
        return bool(self.reached)

    @property
    def parsed(self) -> list[str | None]:
        return [record.model for record in self.reached]


@dataclass(frozen=True)
class Case:
    label: str
    body: bytes
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    transport: str = "h1"  # h1 (Content-Length), chunked (HTTP/1.1 chunks), h2 (h2c DATA frames)
    splits: tuple[int, ...] = ()  # chunk / DATA frame boundaries (byte offsets into body)
    content_types: tuple[str, ...] | None = None  # several Content-Type headers (overrides content_type)
    path: str = CHAT  # the request target as sent
    decide_path: str | None = None  # the path decide() is asked about, when not ``path``

    @property
    def decided(self) -> str:
        return self.decide_path or self.path

    def header_list(self) -> list[tuple[str, str]]:
        types = self.content_types if self.content_types is not None else (self.content_type,)
        return [*(("content-type", t) for t in types if t is not None), *self.headers]

    def pieces(self) -> list[bytes]:
        bounds = [0, *self.splits, len(self.body)]
        return [self.body[a:b] for a, b in pairwise(bounds)]


def http1(port: int, source: str, case: Case, method: str = "POST") -> tuple[int | None, dict[str, str], bytes]:
    head = [f"{method} {case.path} HTTP/1.1", "Host: localhost", "Connection: close"]
    head += [f"{name}: {value}" for name, value in case.header_list()]
    if case.transport == "chunked":
        head.append("Transfer-Encoding: chunked")
        payload = [b"%x\r\n%s\r\n" % (len(p), p) for p in case.pieces() if p] + [b"0\r\n\r\n"]
    else:
        head.append(f"Content-Length: {len(case.body)}")
        payload = [case.body]
    data = ["\r\n".join(head).encode("latin-1") + b"\r\n\r\n", *payload]
    sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))

    def send() -> None:
        try:
            for index, piece in enumerate(data):
                if index > 1:
                    time.sleep(0.005)  # chunks leave in separate segments
                sock.sendall(piece)
        except OSError:
            pass  # the proxy answered (413) and closed before the whole body was sent

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    except (OSError, http.client.HTTPException):
        return None, {}, b""
    finally:
        sender.join(timeout=15)
        sock.close()


def http2(port: int, source: str, case: Case) -> tuple[int | None, dict[str, str], bytes]:
    with H2Session(port, source_ip=source, timeout=15) as session:
        response = session.request("POST", case.path, case.header_list(), case.pieces() or [b""])
    return response.status, response.headers, response.body


def send(proxy: OpenAIProxy, client: str, case: Case) -> Outcome:
    mark = len(proxy.backend.records)
    transport = http2 if case.transport == "h2" else http1
    status, headers, body = transport(proxy.port, proxy.source(client), case)
    return Outcome(status, headers, body, proxy.backend.since(mark))


# --- the reference: what a proxy can read, and what the client may use ---------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _valid_unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False  # a lone surrogate escape
        return True
    if isinstance(value, list):
        return all(_valid_unicode(v) for v in value)
    if isinstance(value, dict):
        return all(_valid_unicode(k) and _valid_unicode(v) for k, v in value.items())
    return True


# Envoy's json_to_metadata keeps no value longer than this (MAX_PAYLOAD_VALUE_LEN); model names are 200 at most.
METADATA_VALUE_LIMIT = 8 * 1024


def readable_model(case: Case, max_bytes: int) -> str | None:
    """The model a proxy reading the body can rely on (``Request.body_model``), or None: the body is at
    most ``max_bytes`` (the spec's bodyInspection.maxBytes), has one of the two content-types, and is
    a JSON text in UTF-8 (a leading BOM ignored, as RFC 8259 §8.1 lets parsers do) without NaN or
    lone surrogates; what Python's json cannot read (a 5000-digit integer, 3000 nested arrays) neither."""
    types = case.content_types if case.content_types is not None else (case.content_type,)
    if len(types) != 1 or types[0] not in READ_CONTENT_TYPES or len(case.body) > max_bytes:
        return None
    try:
        document = json.loads(case.body.removeprefix(BOM).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None  # not UTF-8, not JSON, NaN, too deep
    if not isinstance(document, dict) or not _valid_unicode(document):
        return None
    model = document.get("model")
    if not isinstance(model, str) or not model or len(model.encode("utf-8", "surrogatepass")) > METADATA_VALUE_LIMIT:
        return None  # json_to_metadata writes no value over its limit: unproven
    return model


# --- the corpus ----------------------------------------------------------------------------------------

MESSAGES = '"messages":[{"role":"user","content":"hi"}]'
ESCAPED_KEY = "".join(f"\\u{ord(c):04x}" for c in "model")


def escape(value: str, index: int) -> str:
    """``value`` with the character at ``index`` written as a \\u escape (JSON text, unquoted)."""
    return value[:index] + f"\\u{ord(value[index]):04x}" + value[index + 1 :]


def corpus(allowed: str, other: str, max_bytes: int) -> list[Case]:
    """Hostile bodies around ``allowed`` (the client's model), FORBIDDEN (anyone's) and ``other`` (the
    other tenant's). The same labels for every client."""
    a, f, o = (json.dumps(m) for m in (allowed, FORBIDDEN, other))

    def doc(*members: str) -> bytes:
        return ("{" + ",".join(members) + "}").encode()

    plain = doc(f'"model":{a}', MESSAGES)
    nested = f'"messages":[{{"role":"user","content":"hi","model":{f}}}]'
    padding = '"messages":[{"role":"user","content":"%s"}]'
    split_at = plain.index(allowed.encode()) + 4
    deep = "[" * 3000 + "]" * 3000

    def sized(size: int) -> bytes:
        body = doc(f'"model":{a}', padding % "")
        return body.replace(b'"content":""', b'"content":"' + b"x" * (size - len(body)) + b'"')

    cases = [
        Case("allowed model", plain),
        Case("forbidden model", doc(f'"model":{f}', MESSAGES)),
        Case("other tenant's model", doc(f'"model":{o}', MESSAGES)),
        Case("no model", doc(MESSAGES)),
        # duplicate keys: Python keeps the last
        Case("duplicate: allowed first, forbidden last", doc(f'"model":{a}', f'"model":{f}', MESSAGES)),
        Case("duplicate: forbidden first, allowed last", doc(f'"model":{f}', f'"model":{a}', MESSAGES)),
        Case("duplicate: forbidden after messages", doc(f'"model":{a}', MESSAGES, f'"model":{f}')),
        Case("duplicate: same model twice", doc(f'"model":{a}', f'"model":{a}', MESSAGES)),
        Case("duplicate: allowed then a number", doc(f'"model":{a}', '"model":1', MESSAGES)),
        Case("duplicate: a number then allowed", doc('"model":1', f'"model":{a}', MESSAGES)),
        Case("duplicate: allowed then null", doc(f'"model":{a}', '"model":null', MESSAGES)),
        # escapes
        Case("escaped key, forbidden last", doc(f'"model":{a}', f'"mod\\u0065l":{f}', MESSAGES)),
        Case("escaped key, forbidden first", doc(f'"mod\\u0065l":{f}', f'"model":{a}', MESSAGES)),
        Case("escaped key only, allowed", doc(f'"mod\\u0065l":{a}', MESSAGES)),
        Case("fully escaped key, allowed", doc(f'"{ESCAPED_KEY}":{a}', MESSAGES)),
        Case("escaped value, forbidden", doc(f'"model":"{escape(FORBIDDEN, len(FORBIDDEN) - 3)}"', MESSAGES)),
        Case("escaped value, allowed", doc(f'"model":"{escape(allowed, 2)}"', MESSAGES)),
        Case("escaped value, upper-case hex digits", doc(f'"model":"\\u{ord(allowed[0]):04X}{allowed[1:]}"', MESSAGES)),
        Case("NUL appended to allowed", doc(f'"model":"{allowed}\\u0000"', MESSAGES)),
        Case("NUL prepended to allowed", doc(f'"model":"\\u0000{allowed}"', MESSAGES)),
        Case("allowed with a trailing space", doc(f'"model":"{allowed} "', MESSAGES)),
        Case("upper-case key, allowed", doc(f'"Model":{a}', MESSAGES)),
        Case("upper-case key after forbidden", doc(f'"model":{f}', f'"Model":{a}', MESSAGES)),
        Case("key with a space", doc(f'"model ":{a}', MESSAGES)),
        Case("key with an escaped NUL, allowed", doc(f'"model\\u0000":{a}', MESSAGES)),
        Case("key with an escaped NUL after forbidden", doc(f'"model":{f}', f'"model\\u0000":{a}', MESSAGES)),
        # nesting
        Case("nested model only", doc(f'"messages":[{{"role":"user","content":"hi","model":{a}}}]')),
        Case("allowed top level, forbidden nested", doc(f'"model":{a}', nested)),
        Case("forbidden top level, allowed nested", doc(f'"model":{f}', nested.replace(f, a))),
        Case("model in an object under another key", doc(f'"response_format":{{"model":{a}}}', f'"model":{f}')),
        Case("top-level array", f"[{plain.decode()}]".encode()),
        Case("deeply nested array beside allowed", doc(f'"model":{a}', f'"messages":[{{"role":"u","x":{deep}}}]')),
        # not a string
        Case("model is a number", doc('"model":1', MESSAGES)),
        Case("model is null", doc('"model":null', MESSAGES)),
        Case("model is true", doc('"model":true', MESSAGES)),
        Case("model is a list", doc(f'"model":[{a}]', MESSAGES)),
        Case("model is an object", doc(f'"model":{{"model":{a}}}', MESSAGES)),
        Case("model is empty", doc('"model":""', MESSAGES)),
        # encodings
        Case("UTF-8 BOM, allowed", b"\xef\xbb\xbf" + plain),
        Case("UTF-8 BOM, forbidden", b"\xef\xbb\xbf" + doc(f'"model":{f}', MESSAGES)),
        Case("UTF-16 with BOM, allowed", plain.decode().encode("utf-16")),
        Case("UTF-16-LE, allowed", plain.decode().encode("utf-16-le")),
        Case("UTF-16-BE, forbidden", doc(f'"model":{f}', MESSAGES).decode().encode("utf-16-be")),
        Case("UTF-32 with BOM, allowed", plain.decode().encode("utf-32")),
        Case("UTF-32-BE, forbidden", doc(f'"model":{f}', MESSAGES).decode().encode("utf-32-be")),
        Case("invalid UTF-8 in content", plain.replace(b'"hi"', b'"h\xffi"')),
        Case("CESU-8 surrogate bytes in content", plain.replace(b'"hi"', b'"h\xed\xa0\x80i"')),
        Case("overlong UTF-8 in the key", plain.replace(b'"model"', b'"mod\xc1\xa5l"')),
        Case("lone surrogate escape after allowed", doc(f'"model":"{allowed}\\ud800"', MESSAGES)),
        Case("lone surrogate escape in content", plain.replace(b'"hi"', b'"h\\udc00i"')),
        Case("surrogate pair escape in content", plain.replace(b'"hi"', b'"\\ud83d\\ude00"')),
        # syntax
        Case("trailing garbage", plain + b" x"),
        Case("two documents, forbidden second", plain + doc(f'"model":{f}')),
        Case("two documents, allowed second", doc(f'"model":{f}') + plain),
        Case("leading and trailing whitespace", b" \r\n\t" + plain + b"\n\t "),
        Case("form feed before the object", b"\x0c" + plain),
        Case("NaN beside allowed", plain.replace(b'"content":"hi"', b'"content":"hi","n":NaN')),
        Case("Infinity beside allowed", plain.replace(b'"content":"hi"', b'"content":"hi","n":-Infinity')),
        Case("model is NaN", doc('"model":NaN', MESSAGES)),
        Case(
            "5000-digit integer beside allowed", plain.replace(b'"content":"hi"', b'"content":"hi","n":' + b"7" * 5000)
        ),
        Case("comment after allowed", doc(f'"model":{a} /* c */', MESSAGES)),
        Case("single quotes", plain.replace(b'"', b"'")),
        Case("trailing comma", doc(f'"model":{a}', MESSAGES + ",")),
        Case("empty body", b""),
        Case("very long model string", doc(f'"model":"{allowed}{"x" * 100_000}"', MESSAGES)),
        Case("allowed with 512 KiB of content", doc(f'"model":{a}', padding % ("x" * (512 * 1024)))),
        # framing
        Case("chunked, the model name split", plain, transport="chunked", splits=(3, split_at, split_at + 3)),
        Case("chunked, forbidden split", doc(f'"model":{f}', MESSAGES), transport="chunked", splits=(12, 16)),
        Case("chunked, duplicate split", doc(f'"model":{a}', f'"model":{f}'), transport="chunked", splits=(20,)),
        Case("HTTP/2, allowed split in DATA frames", plain, transport="h2", splits=(3, split_at, split_at + 3)),
        Case("HTTP/2, forbidden", doc(f'"model":{f}', MESSAGES), transport="h2", splits=(14,)),
        Case("HTTP/2, duplicate forbidden last", doc(f'"model":{a}', f'"model":{f}'), transport="h2"),
        Case("HTTP/2, missing content-type", plain, content_type=None, transport="h2"),
        # size
        Case("allowed, body over 1 MiB", doc(f'"model":{a}', padding % ("x" * (MIB + 4096)))),
        Case("allowed, body of exactly maxBytes", sized(max_bytes)),
        Case("allowed, body of maxBytes + 1", sized(max_bytes + 1)),
        Case("allowed, body over 4 MiB", doc(f'"model":{a}', padding % ("x" * (4 * MIB + 4096)))),
        Case(
            "allowed, body over 4 MiB, HTTP/2", doc(f'"model":{a}', padding % ("x" * (4 * MIB + 4096))), transport="h2"
        ),
        Case("allowed, body over 1 MiB, HTTP/2", doc(f'"model":{a}', padding % ("x" * (MIB + 4096))), transport="h2"),
        Case(
            "allowed, body over 1 MiB, chunked",
            doc(f'"model":{a}', padding % ("x" * (MIB + 4096))),
            transport="chunked",
            splits=tuple(range(65536, MIB, 65536)),
        ),
        # request targets
        Case("query string, allowed", plain, path=CHAT + "?model=x", decide_path=CHAT),
        Case("query string, forbidden", doc(f'"model":{f}', MESSAGES), path=CHAT + "?x=1", decide_path=CHAT),
        Case("trailing slash, allowed", plain, path=CHAT + "/"),
        Case("double slash, allowed", plain, path="/v1//chat/completions", decide_path=CHAT),
        Case("double slash, forbidden", doc(f'"model":{f}'), path="/v1//chat/completions", decide_path=CHAT),
        Case("dot segment, forbidden", doc(f'"model":{f}'), path="/v1/x/../chat/completions", decide_path=CHAT),
        Case("escaped letter, allowed", plain, path="/v1/chat/%63ompletions", decide_path=CHAT),
        Case("escaped letter, forbidden", doc(f'"model":{f}'), path="/v1/chat/%63ompletions", decide_path=CHAT),
        Case("absolute-form target, allowed", plain, path="http://localhost" + CHAT, decide_path=CHAT),
        Case("absolute-form target, forbidden", doc(f'"model":{f}'), path="http://localhost" + CHAT, decide_path=CHAT),
        Case("upper-case path", plain, path=CHAT.upper()),
        # content-encoding
        Case("gzip body, Content-Encoding gzip", gzip.compress(plain), headers=(("content-encoding", "gzip"),)),
        Case(
            "gzip forbidden body, Content-Encoding gzip",
            gzip.compress(doc(f'"model":{f}')),
            headers=(("content-encoding", "gzip"),),
        ),
        Case("plain body, Content-Encoding gzip", plain, headers=(("content-encoding", "gzip"),)),
        # content-types
        Case("application/json; charset=utf-8", plain, content_type="application/json; charset=utf-8"),
        Case("APPLICATION/JSON", plain, content_type="APPLICATION/JSON"),
        Case("application/json;charset=UTF-8", plain, content_type="application/json;charset=UTF-8"),
        Case(
            "application/json; charset=utf-16 with UTF-16",
            plain.decode().encode("utf-16"),
            content_type="application/json; charset=utf-16",
        ),
        Case("text/plain", plain, content_type="text/plain"),
        Case("missing content-type", plain, content_type=None),
        Case("missing content-type, forbidden", doc(f'"model":{f}', MESSAGES), content_type=None),
        Case("empty content-type", plain, content_type=""),
        Case("application/vnd.api+json", plain, content_type="application/vnd.api+json"),
        Case("two content-types, text/plain first", plain, content_types=("text/plain", "application/json")),
        Case("two content-types, application/json first", plain, content_types=("application/json", "text/plain")),
    ]
    labels = [c.label for c in cases]
    assert len(labels) == len(set(labels)), "corpus labels must be unique"
    return cases


# client -> (a model it may use, one it may not). lab may use every model but llama-3-70b-base: there the
# deny limited to models alone refuses an unreadable body (no allow limited to models is in play).
CLIENTS = {
    "chat-app": ("llama-3-8b-instruct", "e5-embeddings"),
    "search": ("e5-embeddings", "llama-3-8b-instruct"),
    "lab": ("llama-3-8b-instruct", "llama-3-70b-base"),
}

# Fail-closed differences: Envoy refuses a body from which FastAPI, reached directly, parses a model the
# client may use. The model is then unproven for the proxy (decide() with the readable model agrees).
NOT_READ = (
    "json_to_metadata reads only the exact content-types 'application/json' and 'application/json; charset=utf-8'"
)
EXPECTED_REFUSALS: dict[str, str] = {
    "UTF-16 with BOM, allowed": "json_to_metadata parses UTF-8 only; Python's json.loads detects UTF-16/32",
    "UTF-16-LE, allowed": "json_to_metadata parses UTF-8 only; Python's json.loads detects UTF-16/32",
    "UTF-32 with BOM, allowed": "json_to_metadata parses UTF-8 only; Python's json.loads detects UTF-16/32",
    "CESU-8 surrogate bytes in content": "invalid UTF-8 for Envoy; Python decodes bodies with 'surrogatepass'",
    "lone surrogate escape in content": "Envoy's JSON parser rejects a lone surrogate escape; Python keeps it",
    "NaN beside allowed": "NaN is not JSON (Envoy refuses the body); Python's json.loads accepts it",
    "Infinity beside allowed": "-Infinity is not JSON (Envoy refuses the body); Python's json.loads accepts it",
    "allowed, body of maxBytes + 1": "over bodyInspection.maxBytes: Envoy's buffer limit answers 413",
    "allowed, body over 4 MiB": "over bodyInspection.maxBytes (4 MiB): Envoy's buffer limit answers 413",
    "APPLICATION/JSON": NOT_READ,
    "application/json;charset=UTF-8": NOT_READ,
    "application/json; charset=utf-16 with UTF-16": NOT_READ,
    "missing content-type": NOT_READ + " (FastAPI 0.121.2 parses a body without one)",
    "empty content-type": NOT_READ + " (FastAPI 0.121.2 parses a body with an empty one)",
    "application/vnd.api+json": NOT_READ + " (FastAPI parses application/*+json)",
    "HTTP/2, missing content-type": NOT_READ + " (FastAPI 0.121.2 parses a body without one)",
    "two content-types, application/json first": "two Content-Type headers are not one type Envoy reads; "
    "FastAPI takes the first",
}
# Fail-closed refusals only a client granted every model (lab) can see: FastAPI would run what it parses.
EXPECTED_REFUSALS_FOR: dict[str, dict[str, str]] = {
    "lab": {
        "lone surrogate escape after allowed": "Envoy's JSON parser rejects a lone surrogate escape; Python keeps "
        "it (and the frontend then finds no such model)",
        "very long model string": "json_to_metadata keeps no value over 8 KiB: the model is unproven",
    },
}
# Envoy forwards a body decide() says is unproven. Not a model bypass (the model Envoy reads is the one
# FastAPI parses) but a limit not enforced: reported, and test_http2_bodies_over_the_limit_are_refused.
KNOWN_PERMISSIVE: dict[str, str] = {
    "allowed, body over 4 MiB, HTTP/2": "over HTTP/2 the stream buffer (~16 MiB), not maxBytes, bounds the body read",
}


@dataclass
class Row:
    client: str
    case: Case
    outcome: Outcome  # through Envoy
    direct: list[str | None]  # the model FastAPI parses from the same request sent straight to it
    readable: str | None
    reference: bool  # decide() with body_model = readable
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        def models(values: list[str | None]) -> str:
            return ", ".join(json.dumps(m)[:24] for m in values) or "-"

        verdict = "allow" if self.reference else "deny"
        return (
            f"{self.client:8} | {self.case.label:47} | {self.outcome.status} | {models(self.outcome.parsed):22}"
            f" | {models(self.direct):22} | {verdict}"
        )


INFERENCE = (CHAT, "/v1/completions", "/v1/embeddings")


def forbidden_reached(proxy: OpenAIProxy, client: str, outcome: Outcome) -> list[str]:
    """THE PROPERTY: every model FastAPI parsed for a request is one the client may use (on the route
    FastAPI ran)."""
    problems = []
    for record in outcome.reached:
        if record.model is not None and record.path not in INFERENCE:
            problems.append(f"a model parsed on {record.path!r}")
        if record.model is not None and not proxy.allows(client, record.model, record.path):
            problems.append(f"SECURITY: forbidden model {record.model!r} reached the backend ({record.status})")
        if record.model is None and record.status is not None and record.status < 400:
            problems.append(f"the backend answered {record.status} without parsing a model")
    return problems


def direct(proxy: OpenAIProxy, case: Case) -> list[str | None]:
    """The models FastAPI parses from ``case`` sent to it directly, to the path Envoy forwards (its
    normalised form), HTTP/2 cases over HTTP/1.1 (uvicorn speaks no h2c)."""
    mark = len(proxy.backend.records)
    transport = "h1" if case.transport == "h2" else case.transport
    http1(proxy.backend.port, "127.0.0.1", dataclasses.replace(case, transport=transport, path=case.decided))
    return [record.model for record in proxy.backend.since(mark)]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_hostile_bodies_never_get_a_forbidden_model_to_the_backend(proxy: OpenAIProxy, client: str) -> None:
    allowed, other = CLIENTS[client]
    assert proxy.allows(client, allowed) and not proxy.allows(client, FORBIDDEN) and not proxy.allows(client, other)
    rows = []
    for case in corpus(allowed, other, proxy.max_bytes):
        outcome = send(proxy, client, case)
        readable = proxy.readable(case)
        reference = proxy.allows(client, readable, case.decided)
        row = Row(client, case, outcome, direct(proxy, case), readable, reference)
        problems = row.problems
        problems += forbidden_reached(proxy, client, outcome)
        if not outcome.forwarded and outcome.status not in (403, 413):
            problems.append(f"refused with an unexpected answer {outcome.status}")
        if outcome.forwarded and outcome.parsed != row.direct:
            problems.append(f"FastAPI parsed {outcome.parsed} through Envoy, {row.direct} directly")
        if outcome.forwarded != row.reference and case.label not in KNOWN_PERMISSIVE:
            problems.append(
                f"Envoy {'forwarded' if outcome.forwarded else 'refused'}; decide() with {readable!r}: "
                f"{'allow' if row.reference else 'deny'}"
            )
        fastapi_allows = any(m is not None and proxy.allows(client, m, case.decided) for m in row.direct)
        fail_closed = fastapi_allows and not outcome.forwarded
        expected = {**EXPECTED_REFUSALS, **EXPECTED_REFUSALS_FOR.get(client, {})}
        if fail_closed != (case.label in expected) and case.label not in KNOWN_PERMISSIVE:
            problems.append(
                "a refusal of a model FastAPI would run: list it in EXPECTED_REFUSALS"
                if fail_closed
                else "listed in EXPECTED_REFUSALS, but not refused"
            )
        rows.append(row)
    print(f"\n{client} | case | Envoy status | model parsed via Envoy | model parsed directly | decide(readable)")
    for row in rows:
        print(row.line() + ("  <-- " + "; ".join(row.problems) if row.problems else ""))
    bad = [f"{r.case.label}: {'; '.join(r.problems)} body={r.case.body[:120]!r}" for r in rows if r.problems]
    assert not bad, "\n".join(bad)


@pytest.mark.xfail(
    strict=True,
    reason="known limit: over HTTP/2 Envoy 1.40 buffers a body for json_to_metadata past maxBytes (up to "
    "~16 MiB measured) even with the listener's buffer limit and HTTP/2 windows at maxBytes, and decides on "
    "the model it read, which is the model FastAPI parses (no bypass); HTTP/1.1 is refused at the limit. "
    "When Envoy enforces it, drop this marker and the KNOWN_PERMISSIVE entry",
)
def test_http2_bodies_over_the_limit_are_refused(proxy: OpenAIProxy) -> None:
    body = b'{"model":"llama-3-8b-instruct","user":"' + b"x" * proxy.max_bytes + b'"}'
    outcome = send(proxy, "chat-app", Case("h2 over the limit", body, transport="h2"))
    assert not outcome.forwarded and outcome.status in (403, 413), outcome


@pytest.mark.parametrize(
    ("client", "path", "model"),
    [
        ("search", "/v1/embeddings", "e5-embeddings"),
        ("chat-app", "/v1/completions", "llama-3-70b-instruct"),
    ],
)
def test_the_other_inference_routes_read_the_body_the_same_way(
    proxy: OpenAIProxy, client: str, path: str, model: str
) -> None:
    good = json.dumps({"model": model}).encode()
    duplicate = f'{{"model":{json.dumps(model)},"model":"{FORBIDDEN}"}}'.encode()
    escaped = f'{{"model":{json.dumps(model)},"mod\\u0065l":"{FORBIDDEN}"}}'.encode()
    outcome = send(proxy, client, Case("good", good, path=path))
    assert outcome.status == 200 and outcome.parsed == [model], outcome
    for body in (duplicate, escaped, json.dumps({"model": FORBIDDEN}).encode()):
        outcome = send(proxy, client, Case("bad", body, path=path))
        assert outcome.status == 403 and not outcome.reached, (body, outcome)


OPS_TOKEN = (("x-ops-token", "ops-S3cret"),)
# (client, extra headers, method, raw path, the path decide() sees): the stand-in's other routes, with the
# model in the path (percent-decoded by uvicorn, so escapes must not reach a forbidden model).
ROUTES = [
    ("ops", OPS_TOKEN, "GET", "/v1/models", "/v1/models"),
    ("chat-app", (), "GET", "/v1/models", "/v1/models"),
    ("ops", OPS_TOKEN, "GET", "/v1/models/llama-3-8b-instruct", "/v1/models/llama-3-8b-instruct"),
    ("ops", OPS_TOKEN, "POST", "/v1/models/llama-3-8b-instruct/load", "/v1/models/llama-3-8b-instruct/load"),
    ("ops", OPS_TOKEN, "POST", "/v1/models/e5-embeddings/unload", "/v1/models/e5-embeddings/unload"),
    ("ops", (), "POST", "/v1/models/e5-embeddings/unload", "/v1/models/e5-embeddings/unload"),
    ("ops", OPS_TOKEN, "POST", f"/v1/models/{FORBIDDEN}/load", f"/v1/models/{FORBIDDEN}/load"),
    ("ops", OPS_TOKEN, "POST", "/v1/models/llama-3-70b-b%61se/load", f"/v1/models/{FORBIDDEN}/load"),
    ("ops", OPS_TOKEN, "POST", "/v1/models/%6Clama-3-70b-base/load", f"/v1/models/{FORBIDDEN}/load"),
    ("ops", OPS_TOKEN, "GET", "/v1/models/llama-3-70b-bas%65", f"/v1/models/{FORBIDDEN}"),
    ("ops", OPS_TOKEN, "POST", f"/v1/models/x/../{FORBIDDEN}/load", f"/v1/models/{FORBIDDEN}/load"),
    ("ops", OPS_TOKEN, "GET", "/metrics", "/metrics"),
    ("prometheus", (), "GET", "/metrics", "/metrics"),
    ("search", (), "GET", "/metrics", "/metrics"),
    ("nobody", (), "GET", "/health/ready", "/health/ready"),
]


@pytest.mark.parametrize(
    ("client", "headers", "method", "raw", "path"), ROUTES, ids=[f"{r[0]} {r[2]} {r[3]}" for r in ROUTES]
)
def test_the_other_routes_follow_decide_and_no_forbidden_path_model_arrives(
    proxy: OpenAIProxy, client: str, headers: tuple[tuple[str, str], ...], method: str, raw: str, path: str
) -> None:
    identity = Identity(source_ip=proxy.source(client), headers=dict(headers))
    expected = decide(proxy.spec, Request("openai", method, path, identity), proxy.enforced).allowed
    mark = len(proxy.backend.records)
    status, _, _ = http1(proxy.port, proxy.source(client), Case("route", b"", None, headers, path=raw), method)
    reached = proxy.backend.since(mark)
    assert bool(reached) == expected, (status, reached)
    assert status in ((200,) if expected else (403,)), status
    for record in reached:
        if record.model is not None:  # a model named by the path, as uvicorn decoded it
            check = Request("openai", method, record.path, identity)
            assert decide(proxy.spec, check, proxy.enforced).allowed, ("SECURITY", record)


@pytest.mark.parametrize("client", ["nobody", "ops", "prometheus"])
def test_a_client_without_an_inference_grant_is_refused_whatever_it_names(proxy: OpenAIProxy, client: str) -> None:
    for model in ("llama-3-8b-instruct", "e5-embeddings", FORBIDDEN):
        case = Case("x", json.dumps({"model": model}).encode(), headers=OPS_TOKEN if client == "ops" else ())
        outcome = send(proxy, client, case)
        assert outcome.status == 403 and not outcome.reached, (client, model, outcome)


# --- property-based: random mutations of valid bodies --------------------------------------------------

ALLOWED = "llama-3-8b-instruct"
VALID = [
    f'{{"model":"{ALLOWED}",{MESSAGES}}}'.encode(),
    f'{{{MESSAGES},"model":"{ALLOWED}","stream":false}}'.encode(),
    f'{{"model":"{ALLOWED}","messages":[{{"role":"user","content":"hi","model":"{FORBIDDEN}"}}]}}'.encode(),
    f'{{"model":"{ALLOWED}","user":"{FORBIDDEN}",{MESSAGES}}}'.encode(),
    f'{{"model":"{ALLOWED}","model":"llama-3-70b-instruct","temperature":0.5}}'.encode(),
]
# What insertions draw from: JSON syntax, escapes, a BOM, NUL, invalid and CESU-8 bytes, a second key.
TOKENS = [
    *rb'" , { } : \ \u0065 \ud800 NaN null ] "model": "model"'.split(b" "),
    *(b" ", b"\n", b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", f'"{FORBIDDEN}"'.encode()),
]


KEYS = [b"model", b"mod\\u0065l", b"Model", b"model\\u0000", b"\\u006dodel"]
NAMES = [
    ALLOWED.encode(),
    FORBIDDEN.encode(),
    b"llama-3-70b-instruct",
    b"e5-embeddings",
    b"llama-3-70b-\\u0062ase",
    b"",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        anchors = [i for i in range(len(body)) if body.startswith(b"model", i)] or [0]
        center = draw(st.sampled_from(anchors))
        at = max(0, min(len(body), center + draw(st.integers(-8, 30))))
        kind = draw(st.sampled_from(["insert", "token", "delete", "duplicate", "case", "escape", "forbid", "member"]))
        if kind == "member":  # a whole "model" member, valid JSON, after an opening brace or a comma
            places = [i + 1 for i, byte in enumerate(body) if byte in b"{,"] or [0]
            where = draw(st.sampled_from(places))
            body[where:where] = b'"%s":"%s",' % (draw(st.sampled_from(KEYS)), draw(st.sampled_from(NAMES)))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "token":
            body[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete" and body:
            del body[at : at + draw(st.integers(1, 4))]
        elif kind == "duplicate" and body:
            start = max(0, at - draw(st.integers(0, 30)))
            body[at:at] = body[start : at + draw(st.integers(0, 30))]
        elif kind == "case" and at < len(body):
            body[at : at + 1] = bytes(body[at : at + 1]).swapcase()
        elif kind == "escape" and at < len(body) and 0x61 <= body[at] <= 0x7A:
            body[at : at + 1] = b"\\u%04x" % body[at]
        elif kind == "forbid":
            index = body.find(ALLOWED.encode())
            if index >= 0:
                body[index : index + len(ALLOWED)] = FORBIDDEN.encode()
    return bytes(body)


PROPERTY_RUNS: list[tuple[bool, bool]] = []  # (forwarded, decide() with the readable model)


def test_random_mutations_never_get_a_forbidden_model_to_the_backend(proxy: OpenAIProxy) -> None:
    @settings(
        max_examples=max(200, settings().max_examples),  # --hypothesis-profile=deep: 2,000
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        body=mutated(),
        content_type=st.sampled_from([*READ_CONTENT_TYPES, "application/json", None, "APPLICATION/JSON"]),
        transport=st.sampled_from(["h1", "h1", "chunked", "h2"]),
    )
    def check(body: bytes, content_type: str | None, transport: str) -> None:
        splits = (len(body) // 3, 2 * len(body) // 3) if transport != "h1" and len(body) > 3 else ()
        case = Case("mutation", body, content_type, transport=transport, splits=splits)
        outcome = send(proxy, "chat-app", case)
        reference = proxy.allows("chat-app", proxy.readable(case))
        PROPERTY_RUNS.append((outcome.forwarded, reference))
        problems = forbidden_reached(proxy, "chat-app", outcome)
        assert not problems, (body, content_type, transport, problems)
        if not outcome.forwarded:
            assert outcome.status in (400, 403, 413), (body, outcome)
        # Envoy forwards only what the reference can prove allowed (the converse may differ: fail closed).
        assert not outcome.forwarded or reference, (body, content_type, transport, outcome.parsed)

    check()
    forwarded = sum(1 for f, _ in PROPERTY_RUNS if f)
    differ = sum(1 for f, r in PROPERTY_RUNS if r and not f)
    print(
        f"\nopenai body property: {len(PROPERTY_RUNS)} mutated bodies, {forwarded} forwarded, "
        f"{differ} refused although the reference allows"
    )
    assert len(PROPERTY_RUNS) >= 200 and forwarded >= 20, "the mutations must also produce bodies Envoy forwards"
