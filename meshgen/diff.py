"""``meshgen diff OLD NEW``: what each client gains and loses between two specs, from ``decide()``.

The request matrix is every catalog endpoint (HTTP, metrics and gRPC) x every model either spec names plus
one neither names x every client of either spec and ``anyone``. Each client is asked about with the identity
it has in the spec being decided (a client only one spec defines: that spec's identity, for both).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from meshgen.catalog import CATEGORIES, load_catalog
from meshgen.errors import MeshgenError
from meshgen.identity import representative_identity
from meshgen.policy import Identity, Request, decide
from meshgen.spec import LoadedSpec, Spec

UNLISTED_MODEL = "any-other-model"
Format = Literal["text", "markdown"]


@dataclass(frozen=True)
class Group:
    """What a change is reported per: one client, protocol, category and model (None: server-wide)."""

    client: str
    protocol: str
    category: str
    model: str | None


@dataclass(frozen=True)
class Change:
    group: Group
    gained: tuple[str, ...]  # endpoints (HTTP templates, gRPC method names) newly allowed
    lost: tuple[str, ...]
    total: int  # endpoints in the group


def load_git(ref: str, path: str) -> LoadedSpec:
    """The spec ``path`` as committed at ``ref``."""
    from meshgen.spec import load_spec_text

    spec_path = Path(path)
    try:
        shown = subprocess.run(
            ["git", "show", f"{ref}:./{spec_path.name}"],
            cwd=spec_path.parent.resolve(),
            capture_output=True,
            check=False,
        )
    except OSError as error:
        raise MeshgenError(f"--git: cannot run git: {error.strerror}") from None
    if shown.returncode != 0:
        why = shown.stderr.decode("utf-8", "replace").strip().splitlines()
        raise MeshgenError(f"--git: cannot read {path} at {ref}: {why[-1] if why else 'git failed'}")
    return load_spec_text(shown.stdout, f"{ref}:{path}", base=spec_path.parent)


def _requests(models: list[str]) -> Iterator[tuple[str, str, str | None, str, Request]]:
    """(protocol, category, model, endpoint, request) for every endpoint and model; identity filled later."""
    catalog = load_catalog()
    for category in CATEGORIES:
        for endpoint in catalog.http_endpoints(category):
            for model in models if endpoint.model_scoped else [None]:
                path = endpoint.template.replace("{model}", model or "")
                path = path.replace("{version}", "1").replace("{region}", "r").replace("{repo}", "r")
                for method in endpoint.methods:
                    label = f"{method} {endpoint.template}"
                    yield endpoint.port, category, model, label, Request(endpoint.port, method, path)
        for grpc in catalog.grpc_methods(category):
            for model in models if grpc.model_scoped else [None]:
                request = Request("grpc", "POST", grpc.path, body_model=model or "")
                yield "grpc", category, model, grpc.name, request


def diff_specs(old: Spec, new: Spec) -> list[Change]:
    import dataclasses

    models = sorted({m for spec in (old, new) for rule in spec.rules for m in rule.models or ()})
    models.append(UNLISTED_MODEL)
    clients = ["anyone", *sorted(set(old.clients) | set(new.clients))]
    changes: dict[Group, tuple[list[str], list[str], list[str]]] = {}
    for client in clients:
        old_identity = _identity(client, old, new)
        new_identity = _identity(client, new, old)
        for protocol, category, model, label, request in _requests(models):
            was = decide(old, dataclasses.replace(request, identity=old_identity)).allowed
            now = decide(new, dataclasses.replace(request, identity=new_identity)).allowed
            group = Group(client, protocol, category, model)
            gained, lost, every = changes.setdefault(group, ([], [], []))
            every.append(label)
            if now and not was:
                gained.append(label)
            elif was and not now:
                lost.append(label)
    found = [Change(group, tuple(g), tuple(lo), len(every)) for group, (g, lo, every) in changes.items()]
    return _collapse(found)


EVERY_MODEL = "*"


def _collapse(changes: list[Change]) -> list[Change]:
    """A category gained (or lost) in full, every model and every endpoint, is one change; else one per model.

    ``changes`` holds every group, changed or not; unchanged ones are left out of the result."""
    by_category: dict[tuple[str, str, str], list[Change]] = {}
    for change in changes:
        group = change.group
        by_category.setdefault((group.client, group.protocol, group.category), []).append(change)
    collapsed: list[Change] = []
    for (client, protocol, category), found in by_category.items():
        every = tuple(e for c in found for e in (*c.gained, *c.lost))
        total = sum(c.total for c in found)
        per_model = any(c.group.model is not None for c in found)
        group = Group(client, protocol, category, EVERY_MODEL)
        if per_model and all(len(c.gained) == c.total for c in found):
            collapsed.append(Change(group, every, (), total))
        elif per_model and all(len(c.lost) == c.total for c in found):
            collapsed.append(Change(group, (), every, total))
        else:
            collapsed += [c for c in found if c.gained or c.lost]
    return collapsed


def _identity(client: str, spec: Spec, other: Spec) -> Identity:
    if client == "anyone":
        return Identity()
    defined = spec.clients.get(client) or other.clients[client]
    return representative_identity(defined)


def _what(change: Change, endpoints: tuple[str, ...]) -> str:
    group = change.group
    what = f"{group.protocol} {group.category}"
    if group.model == EVERY_MODEL:
        return what + " (every endpoint, every model)"
    if group.model is not None:
        what += " (any model not listed)" if group.model == UNLISTED_MODEL else f" (model {group.model})"
    if len(endpoints) < change.total:
        what += ": " + ", ".join(endpoints)
    return what


def render_diff(changes: list[Change], old: str, new: str, fmt: Format) -> str:
    if fmt == "markdown":
        if not changes:
            return f"### Access changes: {old} → {new}\n\nNo client gains or loses access.\n"
        lines = [
            f"### Access changes: {old} → {new}",
            "",
            "| client | change | protocol | category | model | endpoints |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for change in changes:
            for sign, endpoints in (("gains", change.gained), ("loses", change.lost)):
                if endpoints:
                    group = change.group
                    model = {None: "", EVERY_MODEL: "every model"}.get(group.model, group.model)
                    which = "all" if len(endpoints) == change.total else ", ".join(endpoints)
                    lines.append(
                        f"| {group.client} | {sign} | {group.protocol} | {group.category} | {model} | {which} |"
                    )
        return "\n".join(lines) + "\n"
    if not changes:
        return f"access unchanged: {old} -> {new}\n"
    lines = [f"access changes: {old} -> {new}"]
    client = None
    for change in changes:
        if change.group.client != client:
            client = change.group.client
            lines.append(f"{client}:")
        if change.gained:
            lines.append(f"  + {_what(change, change.gained)}")
        if change.lost:
            lines.append(f"  - {_what(change, change.lost)}")
    return "\n".join(lines) + "\n"
