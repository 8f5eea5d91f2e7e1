"""Rules of the spec format that relate several fields, reported at the exact spec location."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from meshgen.catalog import load_catalog
from meshgen.errors import SpecError, SpecErrors, did_you_mean
from meshgen.spec.model import Client, EnvRef, Jwks, Rule, Spec
from meshgen.spec.source import SourceDocument


def check_spec(spec: Spec, doc: SourceDocument) -> None:
    """Every check, each client's, rule's and section's first error reported together (SpecErrors)."""
    errors: list[SpecError] = []
    for name, client in spec.clients.items():
        _collect(errors, _check_client, name, client, spec, doc)
    _collect(errors, _check_port_overrides, spec, doc)
    _collect(errors, _check_mesh, spec, doc)
    for index, rule in enumerate(spec.rules):
        _collect(errors, _check_rule, index, rule, spec, doc)
    if errors:
        raise SpecErrors(errors)


def _collect(errors: list[SpecError], check: Callable[..., None], *args: Any) -> None:
    try:
        check(*args)
    except SpecError as error:
        errors.append(error)


def _check_client(name: str, client: Client, spec: Spec, doc: SourceDocument) -> None:
    here = doc.location_of(("clients", name))
    if not (client.principals or client.namespaces or client.ip_blocks or client.headers or client.jwt):
        raise SpecError(
            f"client {name!r} has no identity: give it principals, namespaces, ipBlocks, headers or jwt", here
        )
    if client.jwt is not None and (client.jwt.jwks.file is None) == (client.jwt.jwks.inline is None):
        raise SpecError(
            f"client {name!r}: jwt.jwks needs exactly one of 'file' (a JWKS file, relative to the spec) or "
            "'inline' (the JWKS JSON)",
            doc.location_of(("clients", name, "jwt", "jwks")),
        )
    if any(c.jwt for c in spec.clients.values()):
        for header in client.headers or {}:
            if header.lower() == "authorization":
                raise SpecError(
                    f"client {name!r} is identified by the Authorization header, which carries the JWT clients' "
                    "tokens: the proxy verifies every Authorization header and refuses what is not a valid Bearer "
                    "token; identify this client by jwt or another header",
                    doc.location_of(("clients", name, "headers", header)),
                )
    if spec.mtls.mode == "DISABLE" and (client.principals or client.namespaces):
        raise SpecError(
            f"client {name!r} is identified by mTLS principals/namespaces but mtls.mode is DISABLE, "
            "so it could never match; enable mTLS or identify it otherwise",
            here,
        )
    seen: set[str] = set()
    for header in client.headers or {}:
        if header.lower() in seen:
            raise SpecError(
                f"client {name!r} lists header {header!r} twice (header names are case-insensitive)",
                doc.location_of(("clients", name, "headers", header)),
            )
        seen.add(header.lower())


def _check_mesh(spec: Spec, doc: SourceDocument) -> None:
    mesh = spec.mesh
    if mesh.mode == "sidecar":
        for key, value in (("waypoint", mesh.waypoint), ("trustDomain", mesh.trust_domain)):
            if value is not None:
                raise SpecError(
                    f"mesh.{key} only applies to mesh.mode: ambient (sidecars enforce every rule themselves)",
                    doc.location_of(("mesh", key)),
                )
        return
    if spec.workload.service is None:
        raise SpecError(
            "mesh.mode ambient needs workload.service: the name of the Kubernetes Service in front of the "
            "Triton pods, which the waypoint policies target (targetRefs)",
            doc.location_of(("mesh", "mode")),
        )


def _check_port_overrides(spec: Spec, doc: SourceDocument) -> None:
    served = spec.workload.ports.served()
    numbers: dict[int, str | int] = {}
    for key in spec.mtls.port_overrides:
        here = doc.location_of(("mtls", "portOverrides", key))
        if key not in served and key not in served.values():
            listed = ", ".join(f"{name}={number}" for name, number in served.items())
            raise SpecError(f"mtls.portOverrides: {key!r} is not one of the workload's ports ({listed})", here)
        number = served[key] if isinstance(key, str) else key
        if number in numbers:
            raise SpecError(f"mtls.portOverrides: {key!r} and {numbers[number]!r} name the same port", here)
        numbers[number] = key


def _check_rule(index: int, rule: Rule, spec: Spec, doc: SourceDocument) -> None:
    path = ("rules", index)
    here = doc.location_of(path)
    if (rule.allow is None) == (rule.deny is None):
        raise SpecError(f"rules[{index}] must have exactly one of 'allow' or 'deny'", here)
    key = rule.action
    categories = rule.categories
    for position, category in enumerate(categories):
        if categories.index(category) != position:
            raise SpecError(f"rules[{index}] lists {category!r} twice", doc.location_of((*path, key, position)))
    if isinstance(rule.from_, list):
        if not rule.from_:
            raise SpecError(
                f"rules[{index}].from is empty, so the rule applies to nobody; list clients or write 'from: anyone'",
                doc.location_of((*path, "from")),
            )
        for position, client in enumerate(rule.from_):
            where = doc.location_of((*path, "from", position))
            if client not in spec.clients:
                known = ", ".join(sorted(spec.clients)) or "none defined"
                raise SpecError(
                    f"rules[{index}].from: unknown client {client!r} (clients: {known})"
                    + did_you_mean(client, list(spec.clients)),
                    where,
                )
            if rule.from_.index(client) != position:
                raise SpecError(f"rules[{index}].from lists {client!r} twice", where)
    _check_models(index, rule, doc)


def _check_models(index: int, rule: Rule, doc: SourceDocument) -> None:
    path = ("rules", index)
    if rule.models is None:
        if rule.grpc_all_models:
            raise SpecError(
                f"rules[{index}].grpcAllModels only applies to a rule with 'models'",
                doc.location_of((*path, "grpcAllModels")),
            )
        return
    if rule.grpc_all_models and rule.action == "deny":
        raise SpecError(
            f"rules[{index}].grpcAllModels only applies to allow rules "
            "(a deny rule with models already denies gRPC for every model)",
            doc.location_of((*path, "grpcAllModels")),
        )
    for position, model in enumerate(rule.models):
        if rule.models.index(model) != position:
            raise SpecError(
                f"rules[{index}].models lists {model!r} twice", doc.location_of((*path, "models", position))
            )
    catalog = load_catalog()
    for position, category in enumerate(rule.categories):
        if not catalog.has_model_scoped(category):
            raise SpecError(
                f"rules[{index}]: category {category!r} has no model-scoped endpoints, so 'models' "
                "cannot apply to it; put it in a rule without 'models'",
                doc.location_of((*path, rule.action, position)),
            )


def resolve_header_values(
    spec: Spec, doc: SourceDocument, environ: Mapping[str, str] | None = None
) -> tuple[Spec, dict[tuple[str, str], str]]:
    """Replace ``{env: NAME}`` header values by the variable's value, read now (generation time).

    Also returns (client, header) -> NAME for every value so resolved: where a secret came from is
    part of the policy (lint, docs), not only its value.
    """
    env = os.environ if environ is None else environ
    clients: dict[str, Client] = {}
    sources: dict[tuple[str, str], str] = {}
    for name, client in spec.clients.items():
        if not client.headers or not any(isinstance(v, EnvRef) for v in client.headers.values()):
            clients[name] = client
            continue
        headers: dict[str, str | EnvRef] = {}
        for header, value in client.headers.items():
            if isinstance(value, EnvRef):
                here = doc.location_of(("clients", name, "headers", header))
                sources[(name, header)] = value.env
                resolved = env.get(value.env, "")
                if not resolved:
                    raise SpecError(
                        f"client {name!r} header {header!r}: environment variable {value.env} is not set or empty",
                        here,
                    )
                try:
                    headers[header] = Client.model_validate({"headers": {header: resolved}}).headers[header]  # type: ignore[index]
                except ValueError:
                    raise SpecError(
                        f"client {name!r} header {header!r}: the value of {value.env} is not a valid header value "
                        "(visible ASCII, no control characters or surrounding whitespace)",
                        here,
                    ) from None
            else:
                headers[header] = value
        clients[name] = client.model_copy(update={"headers": headers})
    return spec.model_copy(update={"clients": clients}), sources


def resolve_jwks(spec: Spec, doc: SourceDocument, base: Path) -> tuple[Spec, dict[str, str]]:
    """Read every JWT client's JWKS now (generation time), validate it, and inline it into the spec.

    Returns the spec with ``jwt.jwks.inline`` set everywhere, and client -> the file its JWKS was read
    from. Two clients of one issuer must name the same keys: a proxy verifies an issuer's tokens against
    one key set, and which one would otherwise depend on the order of clients.
    """
    from meshgen.jwks import JwksError, KeySet, parse_jwks

    clients: dict[str, Client] = {}
    files: dict[str, str] = {}
    keys: dict[str, KeySet] = {}
    first_client: dict[str, str] = {}
    for name, client in spec.clients.items():
        jwt = client.jwt
        if jwt is None:
            clients[name] = client
            continue
        here = doc.location_of(("clients", name, "jwt", "jwks"))
        text = jwt.jwks.inline
        if jwt.jwks.file is not None:
            path = base / jwt.jwks.file
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise SpecError(f"client {name!r}: cannot read jwt.jwks.file {str(path)!r}: {why}", here) from None
            files[name] = jwt.jwks.file
        assert text is not None  # check_spec: exactly one of file / inline
        source = f"jwt.jwks.file {jwt.jwks.file!r}" if jwt.jwks.file is not None else "jwt.jwks.inline"
        try:
            key_set = parse_jwks(text)
        except JwksError as why:
            raise SpecError(f"client {name!r}: {source} is not a usable JWKS: {why}", here) from None
        known = keys.setdefault(jwt.issuer, key_set)
        if known.json() != key_set.json():
            raise SpecError(
                f"client {name!r}: issuer {jwt.issuer!r} is also used by client {first_client[jwt.issuer]!r} with "
                "other keys; a proxy verifies one issuer's tokens against one key set: give both the same JWKS",
                here,
            )
        first_client.setdefault(jwt.issuer, name)
        resolved = jwt.model_copy(update={"jwks": Jwks(inline=text)})
        clients[name] = client.model_copy(update={"jwt": resolved})
    return spec.model_copy(update={"clients": clients}), files
