"""Turn spec text into a validated ``Spec`` or a SpecError that points at the offending line."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from meshgen.errors import SourceLocation, SpecError, SpecErrors, did_you_mean
from meshgen.spec.checks import check_spec, resolve_header_values, resolve_jwks
from meshgen.spec.model import Spec
from meshgen.spec.source import SourceDocument, parse_yaml


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with header values and JWKS files resolved, and where each part of it was written."""

    spec: Spec
    source: SourceDocument
    # (client, header as written) -> the environment variable its value was read from ({env: NAME})
    header_env: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # client -> the JWKS file (as written, relative to the spec) its keys were read from
    jwks_files: Mapping[str, str] = field(default_factory=dict)

    def location(self, *path: str | int) -> SourceLocation:
        return self.source.location_of(path)


def load_spec(path: str) -> LoadedSpec:
    """Load a spec file (``-`` for stdin)."""
    if path == "-":
        import sys

        return load_spec_text(sys.stdin.buffer.read(), "<stdin>", base=Path.cwd())
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path!r}: {exc.strerror}") from None
    return load_spec_text(data, path)


def load_spec_text(
    text: str | bytes, file: str, environ: Mapping[str, str] | None = None, base: Path | None = None
) -> LoadedSpec:
    """``base``: where files the spec names (JWKS) are found; by default the spec file's directory."""
    doc = parse_yaml(text, file)
    if not isinstance(doc.data, dict):
        raise SpecError("a spec must be a YAML mapping (apiVersion, kind, metadata, ...)", doc.location_of(()))
    try:
        spec = Spec.model_validate(doc.data)
    except ValidationError as exc:
        raise _all_errors(exc, doc) from None
    check_spec(spec, doc)
    resolved, header_env = resolve_header_values(spec, doc, environ)
    resolved, jwks_files = resolve_jwks(resolved, doc, base or Path(file).parent)
    return LoadedSpec(resolved, doc, header_env, jwks_files)


def _all_errors(exc: ValidationError, doc: SourceDocument) -> SpecErrors:
    """Every validation error, sorted by position (the CLI caps the list).

    One per value: a value that fits no member of a union (a header value that is neither a string nor
    ``{env: NAME}``) gets the first member's error only."""
    errors: dict[tuple[str | int, ...], SpecError] = {}
    for error in exc.errors():
        path = _data_path(doc.data, error["loc"])
        if path not in errors:
            errors[path] = SpecError(_describe(path, error), doc.location_of(path))
    return SpecErrors(list(errors.values()))


def _sort_key(location: SourceLocation) -> tuple[int, int]:
    return (location.line, location.column)


def _data_path(data: Any, loc: tuple[int | str, ...]) -> tuple[str | int, ...]:
    """Pydantic's error path minus the union-member names it inserts, following the data itself."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.isdigit() and int(part) in node:
            part = int(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and part not in node and _is_field_name(part):
            path.append(part)
            break
        else:
            continue
        path.append(part)
    return tuple(path)


def _is_field_name(part: int | str) -> bool:
    return isinstance(part, str) and not any(c in part for c in "[]()'\"")


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def _describe(path: tuple[str | int, ...], error: Any) -> str:
    kind = error["type"]
    where = _dotted(path)
    if kind == "extra_forbidden":
        return f"unknown field {where!r}" + did_you_mean(path[-1] if path else None, _known_keys(path[:-1]))
    if kind == "missing":
        return f"missing required field {where!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        return f"{where}: invalid value {error.get('input')!r}; expected {expected}" + did_you_mean(
            error.get("input"), choices
        )
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        return f"{where}: {error.get('input')!r} does not match {pattern}"
    return f"{where}: {message}"


def _known_keys(path: tuple[str | int, ...]) -> list[str]:
    """The keys the spec format allows in the mapping at ``path`` (for "did you mean"), following the model."""
    node: Any = Spec
    for part in path:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for n, f in node.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            node = field.annotation
        elif get_origin(node) is list and isinstance(part, int):
            node = get_args(node)[0]
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or n for n, f in node.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` to ``X`` (a union of several models: the first model)."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = (models or members)[0]
        else:
            return annotation
