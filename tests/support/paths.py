"""Non-canonical request paths, and what each target is documented to make of them (docs/spec.md).

``decide()`` is the reference for canonical paths: no empty, ``.`` or ``..`` segment, no percent-escape,
no backslash. A target decides a non-canonical path in one of two documented ways:

* Envoy (and Istio's sidecar) canonicalize first — backslash to ``/``, decode %-escapes of unreserved
  characters, resolve dot segments, merge slashes (Envoy only) — then decide and forward the canonical
  path; an escaped slash or backslash (``%2F``, ``%5C``) is refused with 400 (no Triton path holds one).
* nginx refuses every non-canonical request URI with 400 (its locations match the normalized path but it
  would forward the raw one).

So a non-canonical request never reaches Triton in non-canonical form, and is allowed only when its
canonical form is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.istio_eval import normalize_path

ESCAPED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)


def _last(path: str, make: Callable[[str, str], str]) -> str:
    head, _, last = path.rpartition("/")
    return make(head, last)


# (name, raw path from a canonical one)
NON_CANONICAL_FORMS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("double slashes", lambda p: p.replace("/", "//")),
    ("dot segment", lambda p: _last(p, lambda head, last: f"{head}/./{last}")),
    ("dot-dot segment", lambda p: _last(p, lambda head, last: f"{head}/x/../{last}")),
    ("escaped dots", lambda p: _last(p, lambda head, last: f"{head}/x/%2e%2e/{last}")),
    ("escaped letter", lambda p: _last(p, lambda head, last: f"{head}/%{ord(last[0]):02X}{last[1:]}")),
    ("backslash", lambda p: _last(p, lambda head, last: f"{head or '/'}\\{last}")),
    ("escaped slash", lambda p: _last(p, lambda head, last: f"{head}%2F{last}")),
    ("escaped slash, lower case", lambda p: _last(p, lambda head, last: f"{head}%2f{last}")),
    ("escaped backslash", lambda p: _last(p, lambda head, last: f"{head}%5C{last}")),
)


def envoy_canonical(raw: str) -> str | None:
    """The path Envoy's generated HCM decides and forwards for ``raw`` (None: refused with 400)."""
    path, sep, query = raw.partition("?")
    if ESCAPED_SLASH.search(path):
        return None
    return re.sub("/+", "/", normalize_path(path)) + sep + query
