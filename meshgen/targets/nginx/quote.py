"""Writing values into nginx configuration safely.

nginx's tokenizer treats whitespace, ``;``, ``{``, ``}``, ``#`` and quotes as syntax, and most directives
expand ``$name`` as a variable even inside quotes. So every value the generator writes goes through
``nginx_arg``: it refuses what cannot be held literally (control characters, ``$``, non-ASCII) and
double-quotes, crossplane-style, whatever is not a plain token. Regexes are built from an allow-list of
characters with everything else written as ``\\xHH``, so no value can change a pattern's meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshgen.errors import TargetError

# Tokens made of these characters need no quotes and cannot end or open a directive or block.
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_./:=,@+-]+$")
# Anything printable except '$' (variable expansion); quoting handles the rest.
_QUOTABLE = re.compile(r"^[\x20-\x23\x25-\x7e]+$")
_BACKSLASH_TO_ESCAPE = re.compile(r"\\(?=[\\\"'trn]|$)")
_REGEX_LITERAL = re.compile(r"[A-Za-z0-9_]")
_MAP_LITERAL = re.compile(r"^[A-Za-z0-9_:/]*$")  # what a map source writes besides variables
VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def nginx_arg(value: object) -> str:
    """One directive argument holding ``value`` literally (never a variable reference)."""
    text = str(value)
    if _PLAIN_TOKEN.match(text):
        return text
    if not _QUOTABLE.match(text):
        raise TargetError(
            f"nginx: cannot write {text!r} into the configuration: control characters, '$' and non-ASCII "
            "characters cannot be held literally"
        )
    # nginx unescapes only \\ \" \' \t \r \n inside quotes and keeps other backslashes (regex \x2e, \z),
    # so only a backslash that would start one of those (or close the string) is doubled.
    return '"' + _BACKSLASH_TO_ESCAPE.sub(r"\\\\", text).replace('"', '\\"') + '"'


@dataclass(frozen=True)
class MapSource:
    """The string a ``map`` reads: a literal prefix, then generated variables joined by a separator."""

    variables: tuple[str, ...]  # variable names without '$'
    separator: str = ""
    prefix: str = ""


def nginx_map_source(source: MapSource) -> str:
    """``"<prefix>$a<sep>$b"`` as one quoted argument; every piece is checked, none is taken as given."""
    for literal in (source.prefix, source.separator):
        if not _MAP_LITERAL.match(literal):
            raise AssertionError(f"map source literal {literal!r} is not plain")
    return '"' + source.prefix + source.separator.join(nginx_variable(v) for v in source.variables) + '"'


def nginx_variable(name: str) -> str:
    """``$name`` for a variable the generator defined; names are derived from validated spec names."""
    if not VARIABLE_NAME.match(name):
        raise AssertionError(f"generated nginx variable name {name!r} is not a plain identifier")
    return "$" + name


def regex_literal(text: str) -> str:
    r"""PCRE matching exactly ``text``: letters, digits and ``_`` as is, every other character as ``\xHH``."""
    out = []
    for char in text:
        if _REGEX_LITERAL.match(char):
            out.append(char)
        elif 0x20 < ord(char) < 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            raise TargetError(f"nginx: cannot match {text!r} exactly: only visible ASCII characters can be matched")
    return "".join(out)
