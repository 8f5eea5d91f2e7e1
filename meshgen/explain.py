"""``meshgen explain``: the access matrix (categories x clients, per protocol) as the reference decides it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meshgen.catalog import CATEGORIES, load_catalog
from meshgen.identity import representative_identity
from meshgen.policy import Decision, Identity, Request, decide
from meshgen.spec import LoadedSpec, Spec
from meshgen.spec.source import SourceDocument

if TYPE_CHECKING:
    from meshgen.why import WithheldGrant

ANY_MODEL = "any-model"
_EMPTY_SOURCE = SourceDocument("<explain>", {}, {})
Format = Literal["table", "markdown", "json"]


@dataclass(frozen=True)
class Cell:
    """What one client may do with one category over one protocol."""

    access: Literal["all", "some", "none"]
    models: tuple[str, ...] = ()  # when access is "some" because of per-model grants
    denied_by: tuple[int, ...] = ()  # deny rules that override an allow
    withheld_on: tuple[str, ...] = ()  # targets that do not make a per-model gRPC grant shown here

    def text(self) -> str:
        if self.access == "all":
            return "allow"
        parts = []
        if self.models:
            parts.append("models: " + ", ".join(self.models))
        elif self.access == "some":
            parts.append("partial")
        if self.withheld_on:
            parts.append("withheld on " + ", ".join(self.withheld_on))
        if self.denied_by:
            parts.append("DENY " + ", ".join(f"rules[{i}]" for i in self.denied_by))
        return "; ".join(parts) or "-"

    def as_json(self) -> dict[str, object]:
        return {
            "access": self.access,
            "models": list(self.models),
            "deniedBy": list(self.denied_by),
            "grpcWithheld": bool(self.withheld_on),
            "withheldOn": list(self.withheld_on),
        }


def access_matrix(spec: Spec) -> dict[str, dict[str, dict[str, Cell]]]:
    """{subject: {category: {"http": Cell, "grpc": Cell}}}; subjects are 'anyone' then each client."""
    subjects: dict[str, Identity] = {"anyone": Identity()}
    subjects.update({name: representative_identity(client) for name, client in spec.clients.items()})
    listed = sorted({m for rule in spec.rules for m in rule.models or ()})
    return {
        name: {category: _cells(spec, name, identity, category, listed) for category in CATEGORIES}
        for name, identity in subjects.items()
    }


def _cells(spec: Spec, subject: str, identity: Identity, category: str, listed: list[str]) -> dict[str, Cell]:
    catalog = load_catalog()
    # KServe HTTP (and the metrics port) in one table, the OpenAI frontend in its own where it is served.
    http: list[tuple[str | None, Decision]] = []
    openai: list[tuple[str | None, Decision]] = []
    for endpoint in catalog.http_endpoints(category):
        for model in [*listed, ANY_MODEL] if endpoint.model_scoped else [None]:
            path = endpoint.template if endpoint.body_model else endpoint.template.replace("{model}", model or "")
            path = path.replace("{version}", "1").replace("{region}", "r").replace("{repo}", "r")
            request = Request(endpoint.port, endpoint.methods[0], path, identity)
            if endpoint.body_model:
                request = Request(endpoint.port, endpoint.methods[0], path, identity, body_model=model or "")
            (openai if endpoint.port == "openai" else http).append((model, decide(spec, request)))
    grpc: list[tuple[str | None, Decision]] = []
    for method in catalog.grpc_methods(category):
        # Model-scoped methods name the model in the request message: one decision per listed model.
        for model in [*listed, ANY_MODEL] if method.model_scoped else [None]:
            request = Request("grpc", "POST", method.path, identity, body_model=model or "")
            grpc.append((model, decide(spec, request)))
    per_model = [
        rule
        for rule in spec.rules
        if rule.action == "allow"
        and rule.models is not None
        and not rule.grpc_all_models
        and category in rule.categories
        and (rule.from_ == "anyone" or subject in rule.from_)
    ]
    withheld_on = _withholding_targets(spec, "grpc") if per_model and catalog.grpc_methods(category) else ()
    cells = {"http": _summarize(spec, http, ()), "grpc": _summarize(spec, grpc, withheld_on)}
    if spec.workload.ports.openai is not None:
        body_routes = any(e.body_model for e in catalog.http_endpoints(category))
        json_withheld_on = _withholding_targets(spec, "openai") if per_model and body_routes else ()
        cells["openai"] = _summarize(spec, openai, json_withheld_on)
    return cells


def _withholding_targets(spec: Spec, body: Literal["grpc", "openai"]) -> tuple[str, ...]:
    """Targets whose capability tables do not make per-model grants read from a gRPC message or an
    OpenAI JSON body (for this spec's switches)."""
    from meshgen.features import Feature
    from meshgen.policy import compile_policy
    from meshgen.spec import LoadedSpec
    from meshgen.targets.contract import Enforced
    from meshgen.targets.registry import TARGETS

    policy = compile_policy(LoadedSpec(spec, _EMPTY_SOURCE))
    found = []
    for target in TARGETS:
        feature = Feature.PER_MODEL_GRPC if body == "grpc" else Feature.PER_MODEL_JSON
        support = target.effective_capabilities(policy, target.options_type())[feature]
        if not isinstance(support, Enforced) and target.name != "triton":
            found.append(target.name)
    return tuple(found)


def _summarize(spec: Spec, decisions: list[tuple[str | None, Decision]], withheld_on: tuple[str, ...]) -> Cell:
    if not decisions:
        return Cell("none")
    allowed = [model for model, d in decisions if d.allowed]
    denied_by = tuple(sorted({d.rule_index for _, d in decisions if not d.allowed and d.rule_index is not None}))
    if len(allowed) == len(decisions):
        return Cell("all")
    if not allowed:
        return Cell("none", denied_by=denied_by, withheld_on=withheld_on)
    models = tuple(sorted({m for m in allowed if m not in (None, ANY_MODEL)}))
    only_models = all(m not in (None, ANY_MODEL) for m in allowed)
    return Cell("some", models if only_models else (), denied_by, withheld_on)


def render_explanation(loaded: LoadedSpec, fmt: Format) -> str:
    matrix = access_matrix(loaded.spec)
    subjects = list(matrix)
    if fmt == "json":
        data = {
            "subjects": subjects,
            "categories": list(CATEGORIES),
            "access": {
                s: {c: {p: cell.as_json() for p, cell in cells.items()} for c, cells in row.items()}
                for s, row in matrix.items()
            },
            "withheld": [item.as_json() for item in _withheld(loaded)],
        }
        return json.dumps(data, indent=2) + "\n"
    sections = []
    protocols = ["http", "grpc"] + (["openai"] if loaded.spec.workload.ports.openai is not None else [])
    titles = {"http": "HTTP", "grpc": "GRPC", "openai": "OPENAI"}
    for protocol in protocols:
        rows = [[category, *(matrix[s][category][protocol].text() for s in subjects)] for category in CATEGORIES]
        header = [f"{titles[protocol]} category", *subjects]
        sections.append(_markdown(header, rows) if fmt == "markdown" else _table(header, rows))
    title = f"Access matrix for {loaded.spec.metadata.namespace}/{loaded.spec.metadata.name}"
    withheld = [item.text() for item in _withheld(loaded)]
    if withheld:
        bullet = "- " if fmt == "markdown" else "  "
        sections.append(
            "Withheld grants (a rule grants them, these targets do not make them):\n"
            + "\n".join(bullet + line for line in withheld)
        )
    if fmt == "markdown":
        return f"### {title}\n\n" + "\n\n".join(sections) + "\n"
    return f"{title}\n\n" + "\n\n".join(sections) + "\n"


def _withheld(loaded: LoadedSpec) -> list[WithheldGrant]:
    from meshgen.why import withheld_grants

    return withheld_grants(loaded)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])
