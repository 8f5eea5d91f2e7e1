"""Triton's gRPC request messages, built and parsed with protobuf itself (tritonclient's grpc_service.proto).

The proxies under test decide on what their guard reads from these bytes; the stand-in backend parses
what reaches it with the same protobuf classes Triton's server is generated from, so a test can tell
which model a request would really have run.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import message_factory
from tritonclient.grpc import service_pb2  # type: ignore[import-untyped]

from meshgen.catalog import GrpcMethod, load_catalog

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


@cache
def _message_class(method_path: str) -> Any:
    name = method_path.rsplit("/", 1)[-1]
    method = SERVICE.methods_by_name.get(name)
    if method is None or not method_path.startswith("/inference.GRPCInferenceService/"):
        return None
    return message_factory.GetMessageClass(method.input_type)


def _method(method_path: str) -> GrpcMethod | None:
    return load_catalog().match_grpc(method_path)


def _field_name(method: GrpcMethod) -> str:
    assert method.model_field is not None
    cls = _message_class(method.path)
    return str(cls.DESCRIPTOR.fields_by_number[method.model_field].name)


def request_message(method_path: str, model: str) -> bytes:
    """The serialized request message of ``method_path`` naming ``model`` ("" names none)."""
    method = _method(method_path)
    cls = _message_class(method_path)
    if method is None or cls is None or not method.model_scoped or not model:
        return b""
    message = cls()
    setattr(message, _field_name(method), model)
    return bytes(message.SerializeToString())


def parsed_model(method_path: str, body: bytes) -> str | None:
    """The model protobuf reads from ``body`` for ``method_path`` ("" when none); None if it does not parse
    or the method names no model."""
    method = _method(method_path)
    cls = _message_class(method_path)
    if method is None or cls is None or not method.model_scoped:
        return None
    message = cls()
    try:
        message.ParseFromString(body)
    except Exception:  # protobuf's DecodeError and friends: Triton refuses the call as well
        return None
    return str(getattr(message, _field_name(method)))


def bypass_message(method_path: str, allowed: str, other: str) -> bytes:
    """grpc-body-authz-notes.md: the name as a string, then the name's field number with another wire type
    (fixed32), then the name again. A reader ignoring wire types takes ``allowed``; protobuf, ``other``."""
    method = _method(method_path)
    assert method is not None and method.model_field is not None
    field = method.model_field
    string = bytes([field << 3 | 2])
    fixed32 = bytes([field << 3 | 5])
    return (
        string
        + bytes([len(allowed)])
        + allowed.encode()
        + fixed32
        + b"\0\0\0\0"
        + string
        + bytes([len(other)])
        + other.encode()
    )
