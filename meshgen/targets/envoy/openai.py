"""Per-model grants on the OpenAI frontend's inference routes: the model is the JSON body's ``"model"``.

Envoy's ``json_to_metadata`` filter parses the request body (buffered whole: it stops header iteration,
so RBAC after it decides only once the body is in) and writes the top-level ``model`` value, as a
``google.protobuf.Value``, to dynamic metadata ``envoy.filters.http.json_to_metadata`` / ``model``. RBAC
then matches it with a *string* matcher, so only a JSON string can grant: a number, a boolean, an object,
an absent key, an empty string (never written), a body that does not parse, a content-type other than
``application/json`` (exact; ``; charset=utf-8`` also accepted) or an empty one leave no string, and
the model is *unproven*: an allow limited to models does not match, a deny limited to models does.

Where the parsers differ they differ towards refusal: Envoy's JSON reader takes the last of duplicate
keys and decodes escapes like Python's ``json``; what it rejects (a lone surrogate escape, NaN, UTF-16
bodies) Python may accept, and those requests are refused when the decision depends on the model.
Proved on the real Envoy in front of the frontend's own FastAPI stack (tests/test_openai_body.py).
"""

from __future__ import annotations

from typing import Any

from meshgen.policy.model import HttpGrant, Policy

JSON_FILTER = "envoy.filters.http.json_to_metadata"
JSON_TYPE = "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata"
# Istio reads it as `experimental.envoy.filters.http.json_to_metadata[model]`: keep the filter's name.
NAMESPACE = JSON_FILTER
MODEL_KEY = "model"
# FastAPI parses application/json (any case, any parameters); json_to_metadata compares exactly. Other
# spellings are not read, so they are refused where the decision depends on the model.
CONTENT_TYPES = ("application/json", "application/json; charset=utf-8")


def body_limited(policy: Policy) -> tuple[HttpGrant, ...]:
    """Grants limited to models on routes whose model is in the JSON body (the filter is needed)."""
    return tuple(g for rule in policy.rules for g in rule.http if g.endpoint.body_model and g.models is not None)


def json_filter() -> dict[str, Any]:
    rule = {"selectors": [{"key": MODEL_KEY}], "on_present": {"metadata_namespace": NAMESPACE, "key": MODEL_KEY}}
    return {
        "name": JSON_FILTER,
        "typed_config": {
            "@type": JSON_TYPE,
            "request_rules": {"rules": [rule], "allow_content_types": list(CONTENT_TYPES)},
        },
    }
