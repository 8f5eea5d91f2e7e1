"""Stage 5: lay out documents with Jinja2 templates; values pass through language-aware filters."""

from __future__ import annotations

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
        text = yaml.dump(
            value,
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=False,
            width=_WIDTH,
            indent=2,
        )
        pad = " " * (indent + 2)
        return "\n" + "".join(pad + line + "\n" for line in text.splitlines()).rstrip("\n")
    # Double quotes keep control characters escaped on one line wherever the token is placed.
    style = '"' if isinstance(value, str) and not value.isprintable() else None
    text = yaml.dump(
        [value], Dumper=_Dumper, default_flow_style=True, allow_unicode=False, width=_WIDTH, default_style=style
    )
    return text.strip()[1:-1]


def yaml_document(document: dict[str, Any]) -> str:
    """A whole block-style YAML document, each top-level value written by ``to_yaml``."""
    lines = []
    for key, value in document.items():
        text = to_yaml(value, 0)
        lines.append(f"{key}:{text}\n" if text.startswith("\n") else f"{key}: {text}\n")
    return "".join(lines)


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
