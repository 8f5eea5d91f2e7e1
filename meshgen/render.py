"""Stage 5: lay out documents with Jinja2 templates; values pass through language-aware filters."""

from __future__ import annotations

import shlex
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml

# libyaml is ~10x faster for large policies; the pure-Python dumper emits the same text.
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Same for reading back generated output (the targets' self-checks): libyaml parses with the same
# safe constructor and resolver as yaml.safe_load, ~20x faster on multi-megabyte documents.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` on libyaml when available."""
    return yaml.load(text, Loader=_Loader)  # a safe loader


def load_yaml_all(text: str) -> list[Any]:
    """``list(yaml.safe_load_all(text))`` on libyaml when available."""
    return list(yaml.load_all(text, Loader=_Loader))  # a safe loader


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Never emit anchors/aliases: each generated value is written out where it applies."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# YAML 1.1 readers (Envoy's yaml-cpp, go-yaml behind kubectl) take these plain scalars for booleans,
# while PyYAML writes them unquoted: a header value "n" would turn into false.
_YAML11_BOOLEANS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false"})


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value.lower() in _YAML11_BOOLEANS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


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
    return env


def render(target: str, template: str, **context: Any) -> str:
    text = environment(target).get_template(template).render(**context)
    # "key: {{ block | yaml }}" leaves a space before the block's newline; drop it.
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
