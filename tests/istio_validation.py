"""Offline validation of Istio ``security.istio.io`` documents, for tests.

A generated AuthorizationPolicy / PeerAuthentication must survive three layers before it
takes effect in a cluster, and this module mirrors each of them:

1. the kube-apiserver structural schema (the CRD's ``openAPIV3Schema``) plus ``metadata``;
2. the CRD's ``x-kubernetes-validations`` CEL rules, also run by the kube-apiserver;
3. istiod's validating webhook (``pkg/config/validation/validation.go`` and
   ``pkg/config/security/security.go`` at istio/istio 1.30.3), which CEL does not cover.

The CRDs are third-party data: they are read at test time from the shared reference folder
(``$MESHGEN_SHARED_REFERENCE`` or ``<repo>/../shared/reference``) and never copied into the repo.

Deliberate choices (where this is stricter or looser than a real cluster):

* Unknown fields are errors. The apiserver silently prunes them, which would hide a typo
  such as ``method:`` for ``methods:`` and change what the policy grants.
* ``null`` values are schema errors. The apiserver prunes them too, and ``rules: null``
  turning a DENY into "DENY without rules" is exactly the kind of bug these tests hunt.
* ``ipBlocks``/CIDRs use ``ipaddress.ip_network(strict=False)``: istiod parses them with Go's
  ``netip.ParsePrefix``, which accepts host bits (``10.1.2.3/16``). The prefix length must be
  plain decimal, as Go requires (Python would also accept a netmask such as ``/255.255.0.0``).
* ``rules: []`` under DENY/CUSTOM is reported like an unset ``rules``: it can never match.
* Upper-case methods are not an istiod check; Istio's docs say requests are answered with
  400 otherwise, so a lower-case method in a policy is always a generator bug.
* RequestAuthentication gets all three layers: ``validateJwtRule`` and the private-key warning are
  mirrored. istiod parses ``jwks`` with lestrrat-go/jwx v1 (``jwk.Parse``); here PyJWT's ``PyJWK``
  stands in for it, key by key, so an exotic key one library takes and the other refuses can differ.
  Stricter than the webhook: a JWKS with no keys at all is an error, because Envoy then refuses the
  whole listener ("Jwks doesn't have any valid public key").
* ``request.auth.claims[...]`` keys that pass the webhook's ``a[b]`` check but that istiod's
  ``extractNameInNestedBrackets`` cannot split (e.g. ``request.auth.claimsX[a]``) are errors: istiod
  silently drops such a rule (ALLOW) or condition (DENY).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import celpy
import jwt
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from jsonschema import Draft7Validator  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "ALLOW_MISSING_ENV",
    "ENVOY_FILTER_WARNING",
    "SHARED_REFERENCE_ENV",
    "SharedReferenceMissingError",
    "crd_dir",
    "shared_reference_dir",
    "validate_istio_document",
    "validate_istio_documents",
    "webhook_warnings",
]

SHARED_REFERENCE_ENV = "MESHGEN_SHARED_REFERENCE"
# Read by the tests (not here): lets a checkout without the shared folder skip instead of fail.
ALLOW_MISSING_ENV = "MESHGEN_ALLOW_MISSING_SHARED"

GROUP = "security.istio.io"
CRD_FILES: Mapping[str, str] = {
    "AuthorizationPolicy": "authorizationpolicies.security.istio.io.yaml",
    "PeerAuthentication": "peerauthentications.security.istio.io.yaml",
    "RequestAuthentication": "requestauthentications.security.istio.io.yaml",
    "EnvoyFilter": "envoyfilters.networking.istio.io.yaml",
}
GROUPS: Mapping[str, str] = {"EnvoyFilter": "networking.istio.io"}  # every other kind: GROUP

Errors = list[str]


class SharedReferenceMissingError(FileNotFoundError):
    """The shared reference folder (holding ``istio-crds/``) could not be found."""


# ---------------------------------------------------------------------------------------------
# Locating and loading the CRDs
# ---------------------------------------------------------------------------------------------


def shared_reference_dir() -> Path:
    """The shared reference folder; raises SharedReferenceMissingError when it is absent.

    Recomputed on every call (it is only a few stats) so a test can point the env var elsewhere.
    """
    override = os.environ.get(SHARED_REFERENCE_ENV)
    repo_root = Path(__file__).resolve().parents[1]
    folder = Path(override) if override else repo_root.parent / "shared" / "reference"
    if not (folder / "istio-crds").is_dir():
        source = f"${SHARED_REFERENCE_ENV}" if override else f"default (set ${SHARED_REFERENCE_ENV})"
        raise SharedReferenceMissingError(
            f"Istio CRD reference folder not found: {folder / 'istio-crds'} [{source}]. "
            "The CRDs are read from the shared reference folder at test time and are never "
            "copied into the repository."
        )
    return folder


def crd_dir() -> Path:
    """The folder holding the Istio CRD YAML files."""
    return shared_reference_dir() / "istio-crds"


@cache
def _served_schemas(crd_path: Path, kind: str) -> Mapping[str, Mapping[str, Any]]:
    """version name -> openAPIV3Schema, for the served versions of one CRD file."""
    # libyaml's loader when present: the pure-Python one costs ~0.1 s per CRD.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_path.read_text(encoding="utf-8"), Loader=loader)
    spec = crd["spec"]
    group = GROUPS.get(kind, GROUP)
    if spec["group"] != group or spec["names"]["kind"] != kind:
        raise ValueError(f"{crd_path} is not the {group} {kind} CRD")
    return {
        version["name"]: version["schema"]["openAPIV3Schema"]
        for version in spec["versions"]
        if version.get("served", False)
    }


def _schemas_for(kind: str) -> Mapping[str, Mapping[str, Any]]:
    return _served_schemas(crd_dir() / CRD_FILES[kind], kind)


# ---------------------------------------------------------------------------------------------
# Layer 1: structural schema (+ metadata)
# ---------------------------------------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)
# Kubernetes "qualified name" (label key name part) and label value syntax.
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

# ObjectMeta fields a client may send. Unknown metadata keys are rejected like unknown spec
# fields (kubectl's default strict field validation rejects them too).
_METADATA_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "generateName": {"type": "string"},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "selfLink": {"type": "string"},
    },
}

_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not")
_SUBSCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf")


def _close_objects(schema: dict[str, Any]) -> None:
    """Add ``additionalProperties: false`` wherever ``properties`` is listed, in place.

    Skipped where the schema preserves unknown fields (``status``): that is the one place the
    apiserver keeps them. Nested schemas are still closed, as the apiserver prunes there.
    """
    for sub in schema.get("properties", {}).values():
        _close_objects(sub)
    for key in _SUBSCHEMA_KEYS:
        if isinstance(schema.get(key), dict):
            _close_objects(schema[key])
    for key in _SUBSCHEMA_LIST_KEYS:
        for sub in schema.get(key, []):
            _close_objects(sub)
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and not preserve and "additionalProperties" not in schema:
        schema["additionalProperties"] = False


def _strict_document_schema(crd_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The CRD schema, closed, with the implicit apiVersion/kind/metadata made explicit."""
    schema = copy.deepcopy(dict(crd_schema))
    _close_objects(schema)
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": copy.deepcopy(dict(_METADATA_SCHEMA)),
        **schema["properties"],
    }
    schema["required"] = ["apiVersion", "kind", "metadata"]
    schema["additionalProperties"] = False
    return schema


@cache
def _validator(crd_path: Path, kind: str, version: str) -> Any:
    schema = _strict_document_schema(_served_schemas(crd_path, kind)[version])
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _child_schema(schema: Mapping[str, Any], step: str | int) -> Mapping[str, Any]:
    """The schema governing ``step`` below ``schema`` (empty when the schema says nothing)."""
    if isinstance(step, int):
        items = schema.get("items")
        return items if isinstance(items, Mapping) else {}
    properties = schema.get("properties", {})
    if step in properties:
        return properties[step]  # type: ignore[no-any-return]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else {}


def _join(path: str, schema: Mapping[str, Any], step: str | int) -> str:
    """Kubernetes-style field path: ``a.b``, list index ``a[0]``, map entry ``a[key]``."""
    if isinstance(step, int) or step not in schema.get("properties", {}):
        return f"{path}[{step}]"
    return f"{path}.{step}" if path else step


def _format_path(schema: Mapping[str, Any], steps: Iterable[str | int]) -> str:
    path = ""
    for step in steps:
        path = _join(path, schema, step)
        schema = _child_schema(schema, step)
    return path


def _schema_error_messages(error: Any, root: Mapping[str, Any]) -> Errors:
    steps = list(error.absolute_path)
    path = _format_path(root, steps)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = error.schema.get("properties", {})
        extra = [key for key in error.instance if key not in known]
        # Same wording as kubectl's strict field validation, so failures read familiarly.
        return [f'unknown field "{path + "." if path else ""}{key}"' for key in extra]
    return [f"{path or '<document>'}: {error.message}"]


# k8s: type / unsupported-value errors stop CEL ("some validation rules were not checked").
_BLOCKING_VALIDATORS = frozenset({"type", "enum"})


def _schema_errors(doc: Mapping[str, Any], kind: str, version: str) -> tuple[Errors, bool]:
    """Schema errors, and whether any of them blocks CEL evaluation (as in the apiserver)."""
    validator = _validator(crd_dir() / CRD_FILES[kind], kind, version)
    errors: Errors = []
    blocking = False
    for error in sorted(validator.iter_errors(doc), key=lambda e: [str(s) for s in e.absolute_path]):
        errors.extend(_schema_error_messages(error, validator.schema))
        in_metadata = bool(error.absolute_path) and error.absolute_path[0] == "metadata"
        blocking = blocking or (error.validator in _BLOCKING_VALIDATORS and not in_metadata)
    return errors, blocking


def _label_key_errors(key: str, where: str) -> Errors:
    prefix, slash, name = key.rpartition("/")
    errors: Errors = []
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix)):
        errors.append(f"{where}: key prefix {prefix!r} must be a DNS-1123 subdomain of at most 253 chars")
    if len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(
            f"{where}: key name {name!r} must be 1-63 chars of [A-Za-z0-9-_.], starting and ending with an alphanumeric"
        )
    return errors


def _label_value_errors(value: str, where: str) -> Errors:
    if value and (len(value) > 63 or not _QUALIFIED_NAME_RE.fullmatch(value)):
        return [
            f"{where}: value {value!r} must be empty or 1-63 chars of [A-Za-z0-9-_.], "
            "starting and ending with an alphanumeric"
        ]
    return []


def _metadata_errors(metadata: Any) -> Errors:
    """Name/namespace/label syntax; types and unknown keys are left to the schema."""
    if not isinstance(metadata, Mapping):
        return []
    errors: Errors = []
    name = metadata.get("name")
    if isinstance(name, str) and (len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(name)):
        errors.append(f"metadata.name: {name!r} must be a lowercase DNS-1123 subdomain of at most 253 chars")
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and (len(namespace) > 63 or not _DNS1123_LABEL_RE.fullmatch(namespace)):
        errors.append(f"metadata.namespace: {namespace!r} must be a lowercase DNS-1123 label of at most 63 chars")
    for field in ("labels", "annotations"):
        entries = metadata.get(field)
        for key, value in entries.items() if isinstance(entries, Mapping) else ():
            where = f"metadata.{field}[{key}]"
            errors.extend(_label_key_errors(str(key), where))
            if field == "labels" and isinstance(value, str):
                errors.extend(_label_value_errors(value, where))
    return errors


# ---------------------------------------------------------------------------------------------
# Layer 2: x-kubernetes-validations (CEL)
# ---------------------------------------------------------------------------------------------


def _cel_url(value: Any) -> Any:
    """Kubernetes' ``url()``: an absolute URI or absolute path, else an evaluation error."""
    text = str(value)
    try:
        absolute = bool(urlsplit(text).scheme) or text.startswith("/")
    except ValueError:
        absolute = False
    if not absolute:
        return CELEvalError(f"URL is invalid: {text!r} is not an absolute URI or path")
    return celtypes.StringType(text)


def _cel_get_scheme(value: Any) -> Any:
    return celtypes.StringType(urlsplit(str(value)).scheme)


# The Kubernetes CEL library functions used by these CRDs that celpy lacks.
_K8S_CEL_FUNCTIONS: Mapping[str, Callable[..., Any]] = {"url": _cel_url, "getScheme": _cel_get_scheme}


@lru_cache(maxsize=1)
def _cel_environment() -> celpy.Environment:
    # Building the environment (lark parser) is the slow part: do it once per process.
    return celpy.Environment()


@cache
def _cel_program(rule: str) -> celpy.Runner:
    env = _cel_environment()
    return env.program(env.compile(rule), functions=dict(_K8S_CEL_FUNCTIONS))


@lru_cache(maxsize=4096)
def _rule_outcome(expression: str, value_json: str) -> str | None:
    """None when the rule holds, "" when it is false, else the evaluation error.

    Memoised on the value's canonical JSON: celpy interprets the parse tree (~1 ms per
    evaluation) and test documents repeat the same sub-objects many times over.
    """
    result: Any
    try:
        result = _cel_program(expression).evaluate({"self": json_to_cel(json.loads(value_json))})
    except CELEvalError as exc:
        result = exc
    if isinstance(result, CELEvalError):
        return str(result.args[0] if result.args else result)
    return None if isinstance(result, celtypes.BoolType) and bool(result) else ""


def _rule_error(rule: Mapping[str, Any], value: Any, path: str) -> str | None:
    """None when the rule holds; otherwise its message (k8s reports evaluation errors too)."""
    expression = str(rule["rule"])
    message = rule.get("message") or f"failed rule: {expression}"
    outcome = _rule_outcome(expression, json.dumps(value, sort_keys=True, default=str))
    if outcome is None:
        return None
    where = path or "<document>"
    return f"{where}: {message}" + (f" (rule could not be evaluated: {outcome})" if outcome else "")


def _cel_children(schema: Mapping[str, Any], value: Any) -> Iterable[tuple[str | int, Any]]:
    """(step, child value) pairs the schema describes: properties, map values, list items."""
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        has_map_values = isinstance(schema.get("additionalProperties"), Mapping)
        for key, child in value.items():
            if key in properties or has_map_values:
                yield key, child
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        yield from enumerate(value)


def _cel_errors(schema: Mapping[str, Any], value: Any, path: str = "") -> Errors:
    """Walk schema and document together, running each node's rules on that node's value."""
    errors: Errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        error = _rule_error(rule, value, path)
        if error:
            errors.append(error)
    for step, child in _cel_children(schema, value):
        # The apiserver prunes nulls before CEL runs, so a null subtree has no rules to run.
        if child is not None:
            errors.extend(_cel_errors(_child_schema(schema, step), child, _join(path, schema, step)))
    return errors


# ---------------------------------------------------------------------------------------------
# Layer 3: istiod webhook. Everything here is defensive about types: layer 1 already reported
# wrong types, and this layer must not crash on them.
# ---------------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_SOURCE_FIELDS = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
    "trustDomains", "notTrustDomains",
)  # fmt: skip
_OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
# Source fields that also work on TCP (istiod's tcpRulesInFrom); trust domains come from the
# peer certificate like principals, so they count as TCP attributes too.
_TCP_SOURCE_FIELDS = (
    "principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "trustDomains", "notTrustDomains",
)  # fmt: skip
_IP_FIELDS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
_CUSTOM_FORBIDDEN_SOURCE_FIELDS = (
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "principals", "notPrincipals",
    "requestPrincipals", "notRequestPrincipals", "trustDomains", "notTrustDomains",
)  # fmt: skip
_CUSTOM_FORBIDDEN_WHEN_KEYS = frozenset(
    {"source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal"}
)

_PORT_RE = re.compile(r"[0-9]+")  # Go strconv.ParseUint(s, 10, 32): ASCII digits only, no sign
_PREFIX_BITS_RE = re.compile(r"0|[1-9][0-9]{0,2}")  # Go netip.ParsePrefix: decimal, no leading zero
# Envoy's pchar (RFC 3986) for literal segments of a path template (security.go validLiteral).
_PATH_LITERAL_RE = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")
_MATCH_ONE, _MATCH_ANY = "{*}", "{**}"
_DENY_TCP_WARNING = (
    "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use "
    "of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port"
)
_MEANINGLESS_WITHOUT_RULES = (
    "{action} action without `rules` is meaningless as it will never be triggered, "
    "add an empty rule `{{}}` if you want it be triggered for every request"
)


def _port_error(port: str) -> str | None:
    if _PORT_RE.fullmatch(port) and int(port) <= 65535:
        return None
    return f"bad port ({port}): must be a decimal number in 0..65535"


def _ip_error(value: str) -> str | None:
    """security.ValidateIPs: a '/' means CIDR (host bits allowed), otherwise a single IP."""
    if "/" in value:
        address, _, bits = value.partition("/")
        try:
            if "%" in address or not _PREFIX_BITS_RE.fullmatch(bits):
                raise ValueError(value)
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"bad CIDR range ({value})"
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"bad IP address ({value})"
    return None


def _service_account_error(value: str) -> str | None:
    """security.CheckServiceAccount for one value: ``sa`` or ``ns/sa``, no wildcard, <= 320."""
    if "*" in value:
        return f"wildcard not allowed in service account {value!r}"
    namespace, slash, account = value.rpartition("/")
    if value.count("/") > 1 or (slash and not namespace) or not account:
        return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {value!r}"
    if len(value) > 320:
        return f"value cannot exceed 320 characters, found {value!r}"
    return None


def _trust_domain_error(value: str) -> str | None:
    """One ``*`` at most, only as the first or last character, and no ``/``."""
    stars = value.count("*")
    if "/" in value or stars > 1 or (stars == 1 and value[0] != "*" and value[-1] != "*"):
        return f"bad trust domain {value!r}: at most one '*', only at the start or end, and no '/'"
    return None


def _path_template_error(path: str) -> str | None:
    """security.CheckValidPathTemplate for one path."""
    has_template = _MATCH_ONE in path or _MATCH_ANY in path
    seen_match_any = False
    for segment in path.strip("/").split("/"):
        if segment in (_MATCH_ONE, _MATCH_ANY):
            if seen_match_any:
                return f"invalid or unsupported path {path}: {{**}} is not the last operator"
            seen_match_any = segment == _MATCH_ANY
            continue
        if "{" in segment or "}" in segment:
            return f"invalid or unsupported path {path}: Contains '{{' or '}}' beyond a supported path template"
        if has_template and not _PATH_LITERAL_RE.fullmatch(segment):
            return f"invalid or unsupported path {path}: Contains segment {segment} with invalid string literal"
    return None


def _method_error(method: str) -> str | None:
    if method != method.upper():
        return f"method {method!r} must be upper-case (Istio answers 400 to lower-case methods)"
    return None


def _value_errors(values: Any, where: str, check: Callable[[str], str | None]) -> Errors:
    errors: Errors = []
    for index, value in enumerate(_items(values)):
        if isinstance(value, str) and value:
            problem = check(value)
            if problem:
                errors.append(f"{where}[{index}]: {problem}")
    return errors


def _empty_string_errors(value: Any, path: str) -> Errors:
    """security.CheckEmptyValues, extended to every string under ``rules`` (incl. ``when.key``).

    Not applied to ``selector.matchLabels``: an empty label value is valid Kubernetes.
    """
    if isinstance(value, str):
        return [f"{path}: empty value not allowed"] if value == "" else []
    if isinstance(value, Mapping):
        return [err for key, child in value.items() for err in _empty_string_errors(child, f"{path}.{key}")]
    return [err for i, child in enumerate(_items(value)) for err in _empty_string_errors(child, f"{path}[{i}]")]


# --- when conditions (security.ValidateAttribute) ---------------------------------------------

_WHEN_PLAIN_KEYS = frozenset(
    {
        "source.ip", "remote.ip", "source.namespace", "source.serviceAccount", "source.trustDomain",
        "source.principal", "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
        "destination.ip", "destination.port", "connection.sni",
    }
)  # fmt: skip
# Keys that carry a sub-key in brackets: request.headers[x-a], request.auth.claims[iss], ...
_WHEN_MAP_PREFIXES = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_REQUEST_CLAIMS = "request.auth.claims"
_WHEN_VALUE_CHECKS: Mapping[str, Callable[[str], str | None]] = {
    "source.ip": _ip_error,
    "remote.ip": _ip_error,
    "destination.ip": _ip_error,
    "destination.port": _port_error,
    "source.serviceAccount": _service_account_error,
}


def _map_key_error(key: str) -> str | None:
    """security.validateMapKey: ``a[b]`` with a non-empty ``a`` and ``b``."""
    open_at = key.find("[")
    if key.endswith("]") and 0 < open_at < len(key) - 2:
        return None
    return f"bad key ({key}): should have format a[b]"


def _claim_names_error(key: str) -> str | None:
    """istiod's extractNameInNestedBrackets on what follows ``request.auth.claims`` (model/util.go)."""
    brackets = key[len(_REQUEST_CLAIMS) :]
    begin = 0
    while begin < len(brackets):
        end = brackets.find("]", begin)
        nested = brackets.find("[", begin + 1)
        if brackets[begin] != "[" or end == -1 or (nested != -1 and nested < end):
            # istiod falls back to one `[name]` around the whole rest, else errors and drops the rule.
            if brackets.startswith("[") and brackets.endswith("]"):
                return None
            return f"istiod cannot extract the claim names from {key} (it drops the rule or condition)"
        begin = end + 1
    return None


def _when_key_error(key: str) -> str | None:
    if key.startswith(_REQUEST_CLAIMS):
        return _map_key_error(key) or _claim_names_error(key)
    if key.startswith(_WHEN_MAP_PREFIXES):
        return _map_key_error(key)
    if key in _WHEN_PLAIN_KEYS:
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


def _when_errors(condition: Any, where: str) -> Errors:
    condition = _mapping(condition)
    key = condition.get("key")
    if not isinstance(key, str) or not key:
        return [f"{where}.key: `key` must not be empty"]
    if not _items(condition.get("values")) and not _items(condition.get("notValues")):
        return [f"{where}: at least one of `values` or `notValues` must be set for key {key}"]
    key_error = _when_key_error(key)
    if key_error:
        return [f"{where}.key: invalid `key` {key}: {key_error}"]
    check = _WHEN_VALUE_CHECKS.get(key)
    if check is None:
        return []
    return [
        err
        for field in ("values", "notValues")
        for err in _value_errors(condition.get(field), f"{where}.{field}", check)
    ]


# --- sources and operations --------------------------------------------------------------------


def _source_errors(source: Mapping[str, Any], where: str) -> Errors:
    errors: Errors = []
    if not any(_items(source.get(field)) for field in _SOURCE_FIELDS):
        errors.append(f"{where}: `from.source` must not be empty")
    for field in _IP_FIELDS:
        errors += _value_errors(source.get(field), f"{where}.{field}", _ip_error)
    for field in ("serviceAccounts", "notServiceAccounts"):
        if len(_items(source.get(field))) > 16:
            errors.append(f"{where}.{field}: may not have more than 16 values")
        errors += _value_errors(source.get(field), f"{where}.{field}", _service_account_error)
    for field in ("trustDomains", "notTrustDomains"):
        errors += _value_errors(source.get(field), f"{where}.{field}", _trust_domain_error)
    return errors


def _operation_errors(operation: Mapping[str, Any], where: str) -> Errors:
    errors: Errors = []
    if not any(_items(operation.get(field)) for field in _OPERATION_FIELDS):
        errors.append(f"{where}: `to.operation` must not be empty")
    for field in ("ports", "notPorts"):
        errors += _value_errors(operation.get(field), f"{where}.{field}", _port_error)
    for field in ("paths", "notPaths"):
        errors += _value_errors(operation.get(field), f"{where}.{field}", _path_template_error)
    for field in ("methods", "notMethods"):
        errors += _value_errors(operation.get(field), f"{where}.{field}", _method_error)
    return errors


def _clause_errors(rule: Mapping[str, Any], where: str, field: str, inner: str) -> Errors:
    """``from``/``to``: present-but-empty list, and each entry's ``source``/``operation``."""
    errors: Errors = []
    clauses = rule.get(field)
    if field in rule and isinstance(clauses, list) and not clauses:
        errors.append(f"{where}.{field}: `{field}` must not be empty")
    for index, clause in enumerate(_items(clauses)):
        at = f"{where}.{field}[{index}]"
        body = _mapping(clause).get(inner)
        if not isinstance(body, Mapping):
            errors.append(f"{at}: `{field}.{inner}` must not be nil")
        elif inner == "source":
            errors += _source_errors(body, f"{at}.source")
        else:
            errors += _operation_errors(body, f"{at}.operation")
    return errors


def _rule_errors(rule: Any, index: int) -> Errors:
    where = f"spec.rules[{index}]"
    if not isinstance(rule, Mapping):
        return [f"{where}: `rule` must not be nil"]
    errors = _clause_errors(rule, where, "from", "source")
    errors += _clause_errors(rule, where, "to", "operation")
    for position, condition in enumerate(_items(rule.get("when"))):
        errors += _when_errors(condition, f"{where}.when[{position}]")
    errors += _empty_string_errors(rule, where)
    return list(dict.fromkeys(errors))  # one report per problem, in order


def _custom_rule_errors(rule: Any, where: str) -> Errors:
    """Source fields and ``when`` keys the ext-authz (CUSTOM) path cannot evaluate."""
    unsupported = "is currently not supported with CUSTOM action"
    errors: Errors = []
    for position, clause in enumerate(_items(_mapping(rule).get("from"))):
        source = _mapping(_mapping(clause).get("source"))
        at = f"{where}.from[{position}].source"
        errors += [
            f"{at}.{field}: {field} {unsupported}"
            for field in _CUSTOM_FORBIDDEN_SOURCE_FIELDS
            if _items(source.get(field))
        ]
    for position, condition in enumerate(_items(_mapping(rule).get("when"))):
        key = _mapping(condition).get("key")
        if isinstance(key, str) and (key in _CUSTOM_FORBIDDEN_WHEN_KEYS or key.startswith("request.auth.")):
            errors.append(f"{where}.when[{position}].key: {key} {unsupported}")
    return errors


def _custom_action_errors(spec: Mapping[str, Any]) -> Errors:
    errors: Errors = []
    provider_name = _mapping(spec.get("provider")).get("name")
    if spec.get("rules") is not None and not (isinstance(provider_name, str) and provider_name):
        errors.append("spec.provider.name: `provider.name` must not be empty")
    for index, rule in enumerate(_items(spec.get("rules"))):
        errors += _custom_rule_errors(rule, f"spec.rules[{index}]")
    return errors


def _action_errors(spec: Mapping[str, Any]) -> Errors:
    action = spec.get("action") or "ALLOW"
    errors: Errors = []
    if action in ("DENY", "CUSTOM") and not spec.get("rules"):
        # rules unset (istiod's check) or [] (never matches either): both are meaningless.
        errors.append(f"spec.rules: {_MEANINGLESS_WITHOUT_RULES.format(action=action)}")
    if action == "CUSTOM":
        errors += _custom_action_errors(spec)
    elif spec.get("provider") is not None:
        errors.append(f"spec.provider: `provider` must not be with non CUSTOM action, found {action}")
    return errors


# --- selector / targetRef (shared by all three kinds) ---------------------------------------------

# (canonical group, kind) pairs istiod accepts for targetRef(s); version is not checked.
_ALLOWED_TARGET_REFS = frozenset(
    {
        ("core", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    }
)


def _target_ref_errors(ref: Any, where: str) -> Errors:
    # Empty name and cross-namespace refs are already schema/CEL errors; istiod adds the kind list.
    ref = _mapping(ref)
    group, kind = ref.get("group") or "core", ref.get("kind")
    if (group, kind) in _ALLOWED_TARGET_REFS:
        return []
    return [
        f"{where}: targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, "
        f"gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass but was {group}/{kind}"
    ]


def _attachment_errors(spec: Mapping[str, Any]) -> Errors:
    # istiod's empty-key / wildcard selector checks and its one-of check duplicate CEL rules
    # that already ran in layer 2, so only the targetRef kind list is added here.
    errors: Errors = []
    if "targetRef" in spec:
        errors += _target_ref_errors(spec["targetRef"], "spec.targetRef")
    for index, ref in enumerate(_items(spec.get("targetRefs"))):
        errors += _target_ref_errors(ref, f"spec.targetRefs[{index}]")
    return errors


def _selector_warnings(spec: Mapping[str, Any]) -> Errors:
    if "selector" in spec and not _mapping(_mapping(spec["selector"]).get("matchLabels")):
        return ["spec.selector: workload selector specified without labels"]
    return []


# --- per-kind entry points -------------------------------------------------------------------


def _authorization_policy_errors(spec: Mapping[str, Any]) -> Errors:
    errors = _attachment_errors(spec) + _action_errors(spec)
    for index, rule in enumerate(_items(spec.get("rules"))):
        errors += _rule_errors(rule, index)
    return errors


def _peer_authentication_errors(spec: Mapping[str, Any]) -> Errors:
    errors: Errors = []
    port_level = spec.get("portLevelMtls")
    if port_level is None:
        return errors
    if not _mapping(_mapping(spec.get("selector")).get("matchLabels")):
        errors.append("spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS")
    if isinstance(port_level, Mapping) and not port_level:
        errors.append("spec.portLevelMtls: port level mTLS, if defined, must have at least one element")
    for port in _mapping(port_level):
        # Map keys are uint32 in the proto: istiod cannot even decode a non-numeric key.
        if not (_PORT_RE.fullmatch(str(port)) and 0 < int(port) <= 65535):
            errors.append(f"spec.portLevelMtls[{port}]: port must be in range 1..65535")
    return errors


_APPLY_TO = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                       "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP",
                       "LISTENER_FILTER"})  # fmt: skip
_PATCH_OPERATIONS = frozenset({"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST",
                               "REPLACE"})  # fmt: skip
_HCM = ("envoy.filters.network.http_connection_manager", "envoy.http_connection_manager")
ENVOY_FILTER_WARNING = (
    "EnvoyFilter exposes internal implementation details that may change at any time. Prefer other APIs if "
    "possible, and exercise extreme caution, especially around upgrades."
)


def _envoy_filter_errors(spec: Mapping[str, Any]) -> Errors:
    """pkg/config/validation/envoyfilter/envoyfilter.go ``validateEnvoyFilter`` (1.30.3), less the proto
    decoding of patch values (the tests run those in a real Envoy instead)."""
    errors: Errors = []
    for index, patch in enumerate(_items(spec.get("configPatches"))):
        where = f"spec.configPatches[{index}]"
        patch = _mapping(patch)
        match = _mapping(patch.get("match"))
        if match.get("context") == "WAYPOINT":
            continue  # istiod: "TODO(zirain): Add validation for waypoint proxy"
        body = _mapping(patch.get("patch"))
        if patch.get("applyTo") not in _APPLY_TO:
            errors.append(f"{where}: Envoy filter: missing applyTo")
        elif not body:
            errors.append(f"{where}: Envoy filter: missing patch")
        elif body.get("operation") not in _PATCH_OPERATIONS:
            errors.append(f"{where}: Envoy filter: missing patch operation")
        elif body.get("operation") != "REMOVE" and body.get("value") is None:
            errors.append(f"{where}: Envoy filter: missing patch value for non-remove operation")
        elif patch["applyTo"] in ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER") and match:
            listener = match.get("listener")
            if listener is None and (match.get("routeConfiguration") or match.get("cluster")):
                errors.append(
                    f"{where}: Envoy filter: applyTo for listener class objects cannot have non listener match"
                )
                continue
            chain_filter = _mapping(_mapping(_mapping(listener).get("filterChain")).get("filter"))
            if chain_filter:
                sub = chain_filter.get("subFilter")
                if not chain_filter.get("name"):
                    errors.append(f"{where}: Envoy filter: filter match has no name to match on")
                elif sub is not None and patch["applyTo"] != "HTTP_FILTER":
                    errors.append(f"{where}: Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only")
                elif sub is not None and chain_filter["name"] not in _HCM:
                    errors.append(f"{where}: Envoy filter: subfilter match requires filter match with {_HCM[0]}")
                elif sub is not None and not _mapping(sub).get("name"):
                    errors.append(f"{where}: Envoy filter: subfilter match has no name to match on")
    return errors


# --- RequestAuthentication (validation.go ValidateRequestAuthentication / validateJwtRule) -----------

_STRICT_HEADER_NAME_RE = re.compile(r"[-_A-Za-z0-9]+")  # ValidateStrictHTTPHeaderName
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")
# PyJWK needs an algorithm to pick the key parser; the JWK's own `alg` is not trusted for that.
_KEY_ALGORITHMS: Mapping[str, str] = {"RSA": "RS256", "oct": "HS256", "OKP": "EdDSA"}
_CURVE_ALGORITHMS: Mapping[str, str] = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}


def _jwks_keys(text: str) -> tuple[list[Mapping[str, Any]], str | None]:
    """The JWKs of an inline ``jwks`` (a set, or one bare key as jwx's Parse also takes), or the parse error."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        return [], f"invalid JSON: {exc}"
    if not isinstance(document, Mapping):
        return [], "a JWK set must be a JSON object"
    if "keys" not in document:
        return [document], None
    if not isinstance(document["keys"], list):
        return [], "`keys` must be an array"
    return list(document["keys"]), None


def _jwk_error(key: Any, index: int) -> str | None:
    if not isinstance(key, Mapping):
        return f"key {index} is not a JSON object"
    kty = key.get("kty")
    algorithm = _CURVE_ALGORITHMS.get(key.get("crv", "P-256")) if kty == "EC" else _KEY_ALGORITHMS.get(str(kty))
    if algorithm is None:
        return f"key {index}: unsupported kty {kty!r}" + (f" / crv {key.get('crv')!r}" if kty == "EC" else "")
    try:
        jwt.PyJWK(dict(key), algorithm)
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        return f"key {index}: {exc}"
    return None


def _jwks_errors(text: str, where: str) -> Errors:
    keys, problem = _jwks_keys(text)
    problems = [problem] if problem else [error for i, key in enumerate(keys) if (error := _jwk_error(key, i))]
    if problems:
        return [f"{where}: jwks parse error: {'; '.join(problems)}"]
    if not keys:
        return [f"{where}: jwks has no keys: Envoy refuses the listener (Jwks doesn't have any valid public key)"]
    return []


def _jwks_uri_error(uri: str) -> str | None:
    """security.ParseJwksURI: Go url.Parse, then an http/https scheme and a numeric port."""
    if _CONTROL_CHARS_RE.search(uri):
        return f"parse {uri!r}: net/url: invalid control character in URL"
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        return f"parse {uri!r}: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"URI scheme {parts.scheme!r} is not supported"
    host = parts.netloc.rpartition("@")[2]
    port = host.rpartition("]")[2].partition(":")[2] if host.startswith("[") else host.partition(":")[2]
    if port and not port.isdigit():
        return f"parse {uri!r}: invalid port {':' + port!r} after host"
    return None


def _location_errors(rule: Mapping[str, Any], where: str) -> Errors:
    errors: Errors = []
    for index, location in enumerate(_items(rule.get("fromHeaders"))):
        at = f"{where}.fromHeaders[{index}]"
        if location is None:
            errors.append(f"{at}: location header name must be non-null")
        elif not _mapping(location).get("name"):
            errors.append(f"{at}: location header name must be non-empty string")
    for field, message in (("fromParams", "location query"), ("fromCookies", "cookie name")):
        for index, value in enumerate(_items(rule.get(field))):
            if value == "":
                errors.append(f"{where}.{field}[{index}]: {message} must be non-empty string")
    return errors


def _claim_to_header_errors(rule: Mapping[str, Any], where: str) -> Errors:
    errors: Errors = []
    for index, entry in enumerate(_items(rule.get("outputClaimToHeaders"))):
        at = f"{where}.outputClaimToHeaders[{index}]"
        if entry is None:
            errors.append(f"{at}: outputClaimToHeaders must not be null")
            continue
        header, claim = _mapping(entry).get("header"), _mapping(entry).get("claim")
        if not header or not claim:
            errors.append(f"{at}: outputClaimToHeaders header and claim value must be non-empty string")
        elif isinstance(header, str) and not _STRICT_HEADER_NAME_RE.fullmatch(header):
            errors.append(f"{at}: header name {header} is not a valid header name")
    return errors


def _jwt_rule_errors(rule: Any, where: str) -> Errors:
    rule = _mapping(rule)
    errors: Errors = []
    for index, audience in enumerate(_items(rule.get("audiences"))):
        if audience == "":
            errors.append(f"{where}.audiences[{index}]: audience must be non-empty string")
    # jwks_uri is the proto field name of jwksUri: protojson fills the same field from either.
    jwks_uri = rule.get("jwksUri") or rule.get("jwks_uri")
    if not rule.get("issuer") and not jwks_uri:
        errors.append(f"{where}: issuer or jwksUri must be non-empty string")
    if isinstance(jwks_uri, str) and (problem := _jwks_uri_error(jwks_uri)):
        errors.append(f"{where}.jwksUri: {problem}")
    if isinstance(rule.get("jwks"), str) and rule["jwks"]:
        errors += _jwks_errors(rule["jwks"], f"{where}.jwks")
    return errors + _location_errors(rule, where) + _claim_to_header_errors(rule, where)


def _request_authentication_errors(spec: Mapping[str, Any]) -> Errors:
    errors = _attachment_errors(spec)
    for index, rule in enumerate(_items(spec.get("jwtRules"))):
        errors += _jwt_rule_errors(rule, f"spec.jwtRules[{index}]")
    return errors


def _private_jwks_warnings(spec: Mapping[str, Any]) -> Errors:
    """warnPrivateJwksKeys: jwx's RSA/ECDSA/OKP private keys (they carry `d`) and every symmetric key."""
    warnings: Errors = []
    for index, rule in enumerate(_items(spec.get("jwtRules"))):
        text = _mapping(rule).get("jwks")
        if not isinstance(text, str) or not text or _jwks_errors(text, ""):
            continue  # istiod warns only about a JWKS it could parse
        for position, key in enumerate(_jwks_keys(text)[0]):
            if key.get("kty") == "oct" or "d" in key:
                warnings.append(
                    f"spec.jwtRules[{index}].jwks: jwks key at index {position} contains private key material; "
                    "only public keys are used for verification"
                )
    return warnings


_WEBHOOK_CHECKS: Mapping[str, Callable[[Mapping[str, Any]], Errors]] = {
    "AuthorizationPolicy": _authorization_policy_errors,
    "PeerAuthentication": _peer_authentication_errors,
    "RequestAuthentication": _request_authentication_errors,
    "EnvoyFilter": _envoy_filter_errors,
}


def _bodies(clauses: Any, inner: str) -> list[Mapping[str, Any]]:
    """The ``source``/``operation`` mappings of a ``from``/``to`` list, skipping malformed ones."""
    bodies = (_mapping(clause).get(inner) for clause in _items(clauses))
    return [body for body in bodies if isinstance(body, Mapping)]


def _deny_tcp_warning(rule: Mapping[str, Any]) -> bool:
    """istiod: a DENY rule using only HTTP attributes (no ports) denies all TCP traffic."""
    sources, operations = _bodies(rule.get("from"), "source"), _bodies(rule.get("to"), "operation")
    # istiod tests presence (Go nil), not non-emptiness, of the TCP-capable fields.
    tcp_in_from = any(s.get(field) is not None for s in sources for field in _TCP_SOURCE_FIELDS)
    tcp_in_to = any(o.get(field) is not None for o in operations for field in ("ports", "notPorts"))
    return bool((sources and not operations and not tcp_in_from) or (operations and not tcp_in_to))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Deep copy to dict/list: jsonschema's type checks want real dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(child) for child in value]
    return value


def _kind_and_version(doc: Mapping[str, Any]) -> tuple[str, str] | str:
    """(kind, version) of a supported document, or the error explaining why not."""
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind not in CRD_FILES:
        return f"kind: unsupported {kind!r}; expected one of {', '.join(CRD_FILES)}"
    served = _schemas_for(str(kind))
    group, _, version = str(api_version).partition("/")
    wanted = GROUPS.get(str(kind), GROUP)
    if group != wanted or version not in served:
        expected = ", ".join(f"{wanted}/{name}" for name in served)
        return f"apiVersion: unsupported {api_version!r} for {kind}; expected one of {expected}"
    return str(kind), version


def validate_istio_document(doc: Mapping[str, Any]) -> list[str]:
    """Errors (empty list = valid) for one Kubernetes document of kind AuthorizationPolicy, PeerAuthentication
    or RequestAuthentication in security.istio.io/v1 or v1beta1. Unknown kinds/apiVersions are errors.

    Raises SharedReferenceMissingError when the CRD folder cannot be found.
    """
    if not isinstance(doc, Mapping):
        return [f"<document>: expected a mapping, got {type(doc).__name__}"]
    doc = _plain(doc)
    target = _kind_and_version(doc)
    if isinstance(target, str):
        return [target]
    kind, version = target
    errors, blocking = _schema_errors(doc, kind, version)
    errors += _metadata_errors(doc.get("metadata"))
    if blocking:
        errors.append(
            "some validation rules were not checked because the object was invalid; "
            "correct the existing errors to complete validation"
        )
    else:
        errors += _cel_errors(_validator(crd_dir() / CRD_FILES[kind], kind, version).schema, doc)
    errors += _WEBHOOK_CHECKS[kind](_mapping(doc.get("spec")))
    return errors


def webhook_warnings(doc: Mapping[str, Any]) -> list[str]:
    """istiod webhook warnings (not errors), e.g. DENY rule with only HTTP attributes and no ports."""
    if not isinstance(doc, Mapping) or doc.get("kind") not in CRD_FILES:
        return []
    spec = _mapping(_plain(doc).get("spec"))
    if doc.get("kind") == "EnvoyFilter":
        # Every EnvoyFilter, always; plus a workloadSelector without labels applies namespace-wide.
        labels = _mapping(spec.get("workloadSelector")).get("labels")
        namespace_wide = "workloadSelector" in spec and not labels
        return [ENVOY_FILTER_WARNING] + (
            ["Envoy filter: will be applied to all services in namespace"] if namespace_wide else []
        )
    warnings = _selector_warnings(spec)
    if doc.get("kind") == "RequestAuthentication":
        warnings += _private_jwks_warnings(spec)
    if doc.get("kind") == "AuthorizationPolicy" and spec.get("action") == "DENY":
        for index, rule in enumerate(_items(spec.get("rules"))):
            if isinstance(rule, Mapping) and _deny_tcp_warning(rule):
                warnings.append(f"spec.rules[{index}]: {_DENY_TCP_WARNING}")
    return warnings


def _document_label(doc: Any) -> str:
    doc = _mapping(doc)
    metadata = _mapping(doc.get("metadata"))
    parts = (doc.get("kind"), metadata.get("namespace"), metadata.get("name"))
    return "/".join(str(part) for part in parts if part)


def validate_istio_documents(docs: Iterable[Mapping[str, Any] | None]) -> list[str]:
    """Errors for a YAML stream's documents, each prefixed with ``Kind/namespace/name``.

    Empty documents (``None`` from ``yaml.safe_load_all`` on a stray ``---``) are skipped.
    """
    errors: Errors = []
    for position, doc in enumerate(docs):
        if doc is None:
            continue
        label = _document_label(doc) or f"document {position}"
        errors += [f"{label}: {error}" for error in validate_istio_document(doc)]
    return errors
