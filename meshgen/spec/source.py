"""Read YAML into plain data while remembering where every value came from.

PyYAML's ``safe_load`` forgets positions, silently keeps the last of duplicate keys and expands
aliases without bound. The spec is a security document, so we compose the node graph ourselves:
duplicate keys are errors, anchors/aliases are refused (no billion-laughs expansion), and each
value's path maps to its line and column for error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from meshgen.errors import SourceLocation, SpecError

Path = tuple[str | int, ...]

MAX_SPEC_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 500_000


@dataclass(frozen=True)
class SourceDocument:
    """Plain data of a YAML document plus the location of every node in it."""

    file: str
    data: Any
    locations: Mapping[Path, SourceLocation]

    def location_of(self, path: Path) -> SourceLocation:
        """Location of ``path`` or of its nearest ancestor that exists in the document."""
        for end in range(len(path), -1, -1):
            found = self.locations.get(path[:end])
            if found is not None:
                return found
        return SourceLocation(self.file, 1, 1)


# libyaml parses ~10x faster; the pure-Python loader gives the same nodes where it is missing.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str, file: str) -> None:
    """Refuse aliases and deep nesting from the event stream, before any node is composed.

    Composing is recursive and aliases expand without bound (billion laughs), so both are stopped
    while the document is still a flat stream of events.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise SpecError(
                "YAML anchors and aliases are not supported in a spec; write values out in full",
                _location(file, event.start_mark),
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError("spec is nested too deeply", _location(file, event.start_mark))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _location(file: str, mark: Any) -> SourceLocation:
    if mark is None:
        return SourceLocation(file, 1, 1)
    return SourceLocation(file, mark.line + 1, mark.column + 1)


def parse_yaml(text: str | bytes, file: str) -> SourceDocument:
    """Parse one YAML document; raise SpecError with a location for anything malformed."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is larger than {MAX_SPEC_BYTES} bytes", SourceLocation(file, 1, 1))
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"spec is not valid UTF-8 (byte offset {exc.start})", SourceLocation(file, 1, 1)) from None
    if "\x00" in text:
        raise SpecError("spec contains a NUL character", SourceLocation(file, 1, 1))
    try:
        _check_events(text, file)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except SpecError:
        raise
    except yaml.reader.ReaderError as exc:
        raise SpecError(
            f"spec contains a character YAML does not allow (#x{exc.character:04x})", SourceLocation(file, 1, 1)
        ) from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"YAML syntax: {problem}", _location(file, exc.problem_mark)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML syntax: {exc}", SourceLocation(file, 1, 1)) from None
    if node is None:
        raise SpecError("spec is empty", SourceLocation(file, 1, 1))
    builder = _Builder(file, loader)
    data = builder.build(node, (), 0)
    return SourceDocument(file, data, builder.locations)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.locations: dict[Path, SourceLocation] = {}
        self.nodes = 0

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        here = _location(self.file, node.start_mark)
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise SpecError("spec is nested too deeply or has too many values", here)
        self.locations[path] = here
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise SpecError(f"invalid value: {exc.problem or exc.context}", here) from None
        except yaml.YAMLError:
            raise SpecError("invalid value", here) from None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key_location = _location(self.file, key_node.start_mark)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("YAML merge keys (<<) are not supported in a spec", key_location)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("mapping keys must be plain values", key_location)
            try:
                key = self.loader.construct_object(key_node)
            except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag on a key (`!x b: ...`)
                why = exc.problem or exc.context or "invalid"
                raise SpecError(f"mapping key {key_node.value!r}: {why}", key_location) from None
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise SpecError(f"mapping key {key_node.value!r} must be a string or number", key_location)
            if key in result:
                raise SpecError(f"duplicate key {key!r}", key_location)
            result[key] = self.build(value_node, (*path, key), depth + 1)
            # Errors about a key itself (e.g. an unknown field) point at the key, not its value.
            self.locations[(*path, key)] = key_location
        return result
