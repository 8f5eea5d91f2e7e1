"""Stage 5: lay out documents with Jinja2 templates; values pass through language-aware filters."""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQUENCE_TAG = "tag:yaml.org,2002:seq"

# libyaml is ~10x faster for large policies; the pure-Python dumper emits the same text.
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Same for reading back generated output (the targets' self-checks): libyaml parses with the same
# safe constructor and resolver as yaml.safe_load, ~20x faster on multi-megabyte documents.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader, resolving the tag of each distinct scalar text once per document.

    Generated documents repeat the same scalars (type URLs, input names, actions) hundreds of thousands
    of times, and tag resolution (regexes run in Python) was about a quarter of the parse-back. Without
    path resolvers (none are registered) a scalar's tag depends only on its text and whether it was
    plain, so the cached tag is the one the resolver would return.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._scalar_tags: dict[tuple[str, bool], str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return str(super().resolve(kind, value, implicit))
        key = (value, bool(implicit[0]))
        tag = self._scalar_tags.get(key)
        if tag is None:
            tag = self._scalar_tags[key] = str(super().resolve(kind, value, implicit))
        return tag


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` on libyaml when available."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(loader, node)
    finally:
        loader.dispose()


def load_yaml_all(text: str) -> list[Any]:
    """``list(yaml.safe_load_all(text))`` on libyaml when available."""
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_node():
            documents.append(_construct(loader, loader.get_node()))
        return documents
    finally:
        loader.dispose()


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """What the loader's safe constructor builds from ``node``, taking a shortcut for what we generate.

    Strings, string-keyed mappings and sequences are built directly (the safe constructor builds the
    same: the scalar's text, a dict in key order where a repeated key keeps its last value, a list);
    its generic machinery (recursion bookkeeping, merge-key flattening, a generator per collection)
    cost as much as parsing. Any other node (ints, booleans, nulls, merge keys, ...) goes to the
    constructor itself, so the result is always what ``yaml.safe_load`` returns.
    """
    kind = type(node)
    if kind is yaml.ScalarNode and node.tag == _STR_TAG:
        return node.value
    if kind is yaml.SequenceNode and node.tag == _SEQUENCE_TAG:
        return [_construct(loader, item) for item in node.value]
    if (
        kind is yaml.MappingNode
        and node.tag == _MAP_TAG
        and all(type(key) is yaml.ScalarNode and key.tag == _STR_TAG for key, _ in node.value)
    ):
        return {key.value: _construct(loader, value) for key, value in node.value}
    return loader.construct_document(node)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Never emit anchors/aliases: each generated value is written out where it applies."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_data(self, data: Any) -> yaml.Node:
        """Generated values are almost all plain dicts, lists and strings; build their nodes directly.

        The generic path (alias bookkeeping, a representer lookup by type, a best-style pass per
        collection) was most of the dump time. These nodes are the ones it builds: no aliases
        (``ignore_aliases``), collections in ``default_flow_style`` (always given by ``to_yaml``), keys
        in insertion order. Anything else, or sorted keys, takes the generic path.
        """
        kind = type(data)
        if kind is str:
            return _represent_str(self, data)
        if self.default_flow_style is None:
            return super().represent_data(data)  # type: ignore[no-any-return]
        if kind is dict and not self.sort_keys:
            pairs = [(self.represent_data(key), self.represent_data(value)) for key, value in data.items()]
            return yaml.MappingNode(_MAP_TAG, pairs, flow_style=self.default_flow_style)
        if kind is list:
            items = [self.represent_data(item) for item in data]
            return yaml.SequenceNode(_SEQUENCE_TAG, items, flow_style=self.default_flow_style)
        return super().represent_data(data)  # type: ignore[no-any-return]


# YAML 1.1 readers (Envoy's yaml-cpp, go-yaml behind kubectl) take these plain scalars for booleans,
# while PyYAML writes them unquoted: a header value "n" would turn into false.
_YAML11_BOOLEANS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false"})


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value.lower() in _YAML11_BOOLEANS else None
    if "\n" in value and value.endswith("\n"):
        style = "|"  # scripts (the Lua guard) stay readable; PyYAML quotes instead where a block cannot hold them
    return dumper.represent_scalar(_STR_TAG, value, style=style)


_Dumper.add_representer(str, _represent_str)


_WIDTH = 1 << 30  # never fold long strings: one value, one line


def to_yaml(value: Any, indent: int = 0) -> str:
    """YAML for ``value`` placed after ``key: `` at column ``indent`` of a block document.

    Scalars come out as one quoted-as-needed token; collections as an indented block that starts on
    the next line, so templates write ``key: {{ value | yaml(2) }}`` at any depth.
    """
    if isinstance(value, dict | list) and value:
        lines: list[str] = []
        _nested(value, " " * (indent + 2), "", lines)
        return "\n" + "\n".join(lines)
    # Double quotes keep control characters escaped on one line wherever the token is placed.
    style = '"' if isinstance(value, str) and not value.isprintable() else None
    text = yaml.dump(
        [value], Dumper=_Dumper, default_flow_style=True, allow_unicode=False, width=_WIDTH, default_style=style
    )
    return text.strip()[1:-1]


def _dump_block(value: Any) -> str:
    """PyYAML's block-style dump of a non-empty collection: the text ``_block`` reproduces."""
    return yaml.dump(
        value,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=False,
        width=_WIDTH,
        indent=2,
    )


class _NotFast(Exception):
    """A value ``_block`` does not write itself (a multi-line string, a float, a long key): PyYAML does."""


# Scalars PyYAML writes plain in block context: no indicator first, no ': ' or ' #', ASCII, one line.
# Whether the resolver then reads them back as strings (not 8000, null, .inf) is asked of PyYAML itself.
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./\-]*")
_RESOLVER = yaml.resolver.Resolver()


_LONG_KEY = 100  # PyYAML writes a key of 128+ characters as "? key": leave those to PyYAML


@cache
def _string_token(value: str, key: bool) -> str:
    """How PyYAML writes this string as a block mapping key (``key``) or as a block value / list item."""
    if (
        _PLAIN.fullmatch(value)
        and value.lower() not in _YAML11_BOOLEANS
        and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG  # type: ignore[no-untyped-call]
    ):
        if key and len(value) > _LONG_KEY:
            raise _NotFast
        return value
    # Anything else: ask PyYAML, in the same context.
    text = _dump_block({value: 0} if key else {"k": value})
    token = text[: -len(": 0\n")] if key else text[len("k: ") : -1]
    if "\n" in token or (key and (not text.endswith(": 0\n") or token.startswith("?"))):
        raise _NotFast
    return token


def yaml_block(value: dict[str, Any] | list[Any]) -> str:
    """A whole block-style document (a non-empty collection at column 0): exactly PyYAML's dump."""
    lines: list[str] = []
    _nested(value, "", "", lines)
    return "\n".join(lines) + "\n"


def _block(value: Any, indent: str, first: str, lines: list[str]) -> None:
    """PyYAML's block layout of a non-empty collection at column ``len(indent)``, one string per line.

    ``first`` replaces the indentation of the first line (the "- " of an enclosing sequence item). Mappings
    keep insertion order; a list under a key is not indented (PyYAML's default); empty collections are
    flow ``{}`` / ``[]``. A value this code does not write itself (a multi-line string, a float, a long
    key) is dumped by PyYAML alone and indented into place: PyYAML's layout is relative to the enclosing
    indentation, and it writes an empty line of a block scalar without any. ``tests/test_render.py``
    checks the text equals PyYAML's dump of the whole value.
    """
    if type(value) is dict:
        lead = first
        for key, item in value.items():
            if type(key) is not str:
                raise _NotFast
            head = (lead or indent) + _string_token(key, True) + ":"
            lead = ""
            kind = type(item)
            if kind is dict and item:
                lines.append(head)
                _nested(item, indent + "  ", "", lines)
            elif kind is list and item:
                lines.append(head)
                _nested(item, indent, "", lines)
            else:
                lines.append(head + " " + _flow_leaf(item))
        return
    if type(value) is not list:
        raise _NotFast
    lead = first
    for item in value:
        dash = (lead or indent) + "- "
        lead = ""
        kind = type(item)
        if kind in (dict, list) and item:
            _nested(item, indent + "  ", dash, lines)
        else:
            lines.append(dash + _flow_leaf(item))


def _nested(value: Any, indent: str, first: str, lines: list[str]) -> None:
    """``_block``, or where it cannot write ``value`` itself, PyYAML's dump of it indented into place."""
    mark = len(lines)
    try:
        _block(value, indent, first, lines)
    except _NotFast:
        del lines[mark:]
        dumped = _dump_block(value).split("\n")[:-1]
        lines.append((first or indent) + dumped[0])
        lines += [indent + line if line else line for line in dumped[1:]]


def _flow_leaf(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _string_token(value, False)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if (kind is dict or kind is list) and not value:
        return "{}" if kind is dict else "[]"
    raise _NotFast


def yaml_document(document: dict[str, Any]) -> str:
    """A whole block-style YAML document, each top-level value written by ``to_yaml``."""
    lines = []
    for key, value in document.items():
        text = to_yaml(value, 0)
        lines.append(f"{key}:{text}\n" if text.startswith("\n") else f"{key}: {text}\n")
    return "".join(lines)


_JSON_LINE = 200  # a JSON object or array whose compact form is at most this long stays on one line


def json_document(value: Any) -> str:
    """``value`` as JSON, laid out for review: a container whose one-line form is short stays on one line.

    Envoy reads a ``.json`` bootstrap with its JSON parser; a ``.yaml`` one goes through yaml-cpp, which
    held 687 MB to validate the 5,000-model bootstrap that the JSON parser loads in 113 MB. One line per
    small object (a per-model map entry, a matcher input) keeps diffs per grant. Strings are written by
    the json module's ASCII encoder, so ``json.loads`` of the text is ``value``.
    """
    return _json_layout(value, "\n")[0] + "\n"


def _json_layout(value: Any, newline: str) -> tuple[str, bool]:
    """(text, whether it is one line) of ``value``, whose lines continue with ``newline`` (its indentation).

    Bottom-up: each child is laid out once, one level deeper; a container is one line when every child is
    and the line is short, else one child per line.
    """
    kind = type(value)
    if kind is dict or kind is list:
        if not value:
            return ("{}" if kind is dict else "[]"), True
        inner = newline + "  "
        items = []
        one_line = True
        for key, item in value.items() if kind is dict else ((None, item) for item in value):
            text, flat = _json_layout(item, inner)
            if key is not None:
                if type(key) is not str:
                    raise TypeError(f"not a JSON object key: {key!r}")
                text = _json_string(key) + ": " + text
            items.append(text)
            one_line = one_line and flat
        opening, closing = ("{", "}") if kind is dict else ("[", "]")
        if one_line:
            line = opening + ", ".join(items) + closing
            if len(line) <= _JSON_LINE:
                return line, True
        return opening + inner + ("," + inner).join(items) + newline + closing, False
    if kind is str:
        return _json_string(value), True
    if kind is bool:
        return ("true" if value else "false"), True
    if kind is int or kind is float or value is None:
        return json.dumps(value, allow_nan=False), True
    raise TypeError(f"not a JSON value: {value!r}")


_json_string = json.encoder.encode_basestring_ascii


def load_json(text: str) -> Any:
    return json.loads(text)


def comment(value: object) -> str:
    """Text for a ``#`` comment: one line of printable characters (a newline would end the comment)."""
    text = str(value)
    if not text.isprintable():
        raise AssertionError(f"generated comment text {text!r} is not one printable line")
    return text


@cache
def environment(target: str) -> jinja2.Environment:
    folder = resources.files("meshgen.templates").joinpath(target)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # output is YAML/NGINX, escaped by the filters below, never HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["yaml"] = to_yaml
    env.filters["shell_quote"] = shlex.quote
    env.filters["comment"] = comment
    return env


def render(target: str, template: str, **context: Any) -> str:
    text = environment(target).get_template(template).render(**context)
    # "key: {{ block | yaml }}" leaves a space before the block's newline; drop it.
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
