"""Turn spec text into a validated ``Spec`` or a SpecError that points at the offending line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from meshgen.errors import SourceLocation, SpecError
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
        raise _first_error(exc, doc) from None
    check_spec(spec, doc)
    resolved, header_env = resolve_header_values(spec, doc, environ)
    resolved, jwks_files = resolve_jwks(resolved, doc, base or Path(file).parent)
    return LoadedSpec(resolved, doc, header_env, jwks_files)


def _first_error(exc: ValidationError, doc: SourceDocument) -> SpecError:
    errors = sorted(
        ((_data_path(doc.data, e["loc"]), e) for e in exc.errors()),
        key=lambda pair: _sort_key(doc.location_of(pair[0])),
    )
    path, error = errors[0]
    message = _describe(path, error)
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more)"
    return SpecError(message, doc.location_of(path))


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
        return f"unknown field {where!r}"
    if kind == "missing":
        return f"missing required field {where!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{where}: invalid value {error.get('input')!r}; expected {expected}"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        return f"{where}: {error.get('input')!r} does not match {pattern}"
    return f"{where}: {message}"
