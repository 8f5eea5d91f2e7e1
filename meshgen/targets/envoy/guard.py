"""The gRPC model guard: Envoy's Lua filter reading the model name from a unary call's request message.

It runs only for the methods some rule grants or denies per model (docs/targets.md, SECURITY.md): it
checks that the body is exactly one canonical, uncompressed message of at most ``bodyInspection.maxBytes``
and records the name (or why it cannot be proven, and that it ran) as dynamic metadata under ``NAMESPACE``, plus the
request header ``MODEL_HEADER`` for a flat RBAC lookup. It never decides: the RBAC filters do, and a
grant that needs the name also needs the metadata, which only the guard can write (a client's own copy
of the header is removed and, without the metadata, worthless). The Istio target inserts the very same
filter with an EnvoyFilter, so the text is rendered here once for both.
"""

from __future__ import annotations

import re
from typing import Any

from meshgen.catalog import GrpcMethod, load_catalog
from meshgen.policy.model import Policy
from meshgen.render import environment, render

NAMESPACE = "envoy.filters.http.meshgen_grpc"  # Istio: when key experimental.envoy.filters.http.meshgen_grpc[...]
MODEL_KEY = "model"
UNPROVEN_KEY = "unproven"
INSPECTED_KEY = "inspected"  # "1" whenever the guard ran: its absence means it did not (deny rules fail closed)
MODEL_HEADER = "x-meshgen-grpc-model"
MAX_NAME = 1024  # bytes of a model name
MAX_FIELDS = 10_000  # top-level fields of one message (a hostile message of tiny fields costs no more)
GUARD_NAME = "meshgen.grpc_model_guard"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"

_LUA_PLAIN = re.compile(r"[A-Za-z0-9 ./_-]")


def lua_string(value: object) -> str:
    """A Lua string literal holding ``value``: plain characters as is, every other byte as ``\\ddd``."""
    text = str(value)
    return (
        '"' + "".join(c if _LUA_PLAIN.fullmatch(c) else "".join(f"\\{b:03d}" for b in c.encode()) for c in text) + '"'
    )


def lua_int(value: object) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AssertionError(f"not an integer for the Lua guard: {value!r}")
    return str(value)


environment("envoy").filters.update(lua_string=lua_string, lua_int=lua_int)


def inspected_methods(policy: Policy) -> tuple[GrpcMethod, ...]:
    """The methods some rule of the (lowered) policy limits to models, in catalog order."""
    limited = {grant.method for rule in policy.rules for grant in rule.grpc if grant.models is not None}
    return tuple(method for method in load_catalog().grpc if method in limited)


def guard_source(policy: Policy) -> str:
    methods = inspected_methods(policy)
    return render(
        "envoy",
        "grpc_model_guard.lua.j2",
        fields=[(method.path, method.model_field) for method in methods],
        limit=policy.body_inspection.max_bytes,
        namespace=NAMESPACE,
        model_key=MODEL_KEY,
        unproven_key=UNPROVEN_KEY,
        inspected_key=INSPECTED_KEY,
        header=MODEL_HEADER,
        max_name=MAX_NAME,
        max_fields=MAX_FIELDS,
    )


def guard_filter(policy: Policy) -> dict[str, Any]:
    """The Lua HTTP filter entry (the Istio EnvoyFilter's patch value is exactly this)."""
    return {
        "name": GUARD_NAME,
        "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": guard_source(policy)}},
    }
