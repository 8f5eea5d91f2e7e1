"""Command line: ``meshgen <target> SPEC``, one command per registered target, plus the everyday commands.

Target commands are built from the registry (meshgen/targets/registry.py): each target's options
dataclass declares its flags, so a new target or option needs no change here. Heavy imports
(pydantic, Jinja2, PyYAML) wait until a command runs.
"""

from __future__ import annotations

import gc
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from meshgen import __version__
from meshgen.address import PORT_NAMES, Address, PortAddresses, parse_address
from meshgen.errors import MeshgenError
from meshgen.targets.contract import CliOption, PortAddressFlags, Target, ValueKind, cli_options
from meshgen.targets.registry import TARGETS

if TYPE_CHECKING:
    from meshgen.errors import CompileWarning
    from meshgen.policy import Policy
    from meshgen.spec import LoadedSpec

EXIT_ERROR = 2
EXIT_INTERNAL = 3


def _no_flag_types() -> None:
    """Typer >= 0.20 prints ``<bool>`` after every flag (``--version <bool>``); a flag takes no value."""
    from typer.core import TyperOption

    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "meshgen", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else show(self, ctx)

    display_type_rich.meshgen = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_flag_types()

app = typer.Typer(
    name="meshgen",
    help="Compile a Triton access spec into Istio, Envoy and NGINX policies that grant exactly what it says.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SpecArg = Annotated[str, typer.Argument(metavar="SPEC", help="Spec file, or - for stdin.")]
OutputOpt = Annotated[
    Optional[str],  # noqa: UP045 - Typer needs Optional on 3.11
    typer.Option("--output", "-o", metavar="FILE", help="Write here (atomically) instead of stdout."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshgen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """meshgen: a zero-trust front door for NVIDIA Triton Inference Server."""


@contextmanager
def diagnostics(writing: str | None = None) -> Iterator[None]:
    """Every user error becomes one ``file:line:col: error: ...`` line on stderr and exit 2."""
    try:
        yield
    except MeshgenError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as error:
        typer.echo(f"error: cannot write {writing or error.filename}: {error.strerror}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


def _warn(warnings: Iterable[CompileWarning]) -> None:
    for warning in warnings:
        typer.echo(str(warning), err=True)


def load(spec_path: str) -> LoadedSpec:
    from meshgen.spec import load_spec

    return load_spec(spec_path)


def compiled(spec_path: str) -> Policy:
    from meshgen.policy import compile_policy

    return compile_policy(load(spec_path))


# --- one command per target, from its declaration ----------------------------------------------------


def _address(flag: str, value: str | None) -> Address | None:
    if value is None:
        return None
    try:
        return parse_address(value)
    except ValueError as error:
        raise MeshgenError(f"{flag}: {error}") from None


@dataclass(frozen=True)
class _OptionField:
    """One field of a target's options dataclass: its command-line parameters and how to build it."""

    name: str
    parameters: tuple[inspect.Parameter, ...]
    build: Callable[[Mapping[str, Any]], Any]


def _option_field(name: str, option: CliOption) -> _OptionField:
    if isinstance(option, PortAddressFlags):
        # One flag per Triton port: --listen-http, --listen-grpc, ...
        flags = [(f"{option.prefix}_{port}", f"--{option.prefix}-{port}", port) for port in PORT_NAMES]
        parameters = tuple(
            _parameter(key, str | None, None, flag, option.help.format(port=port), "ADDR") for key, flag, port in flags
        )
        return _OptionField(
            name, parameters, lambda values: PortAddresses(*(_address(flag, values[key]) for key, flag, _ in flags))
        )
    match option.kind:
        case ValueKind.SWITCH:
            return _OptionField(
                name, (_parameter(name, bool, False, option.name, option.help),), lambda values: values[name]
            )
        case ValueKind.ADDRESS:
            return _OptionField(
                name,
                (_parameter(name, str | None, None, option.name, option.help, "ADDR"),),
                lambda values: _address(option.name, values[name]),
            )
        case ValueKind.DIRECTORY:
            return _OptionField(
                name,
                (_parameter(name, str | None, None, option.name, option.help, "DIR"),),
                lambda values: values[name],
            )


def _parameter(
    name: str,
    annotation: Any,
    default: Any,
    flag: str,
    help: str,
    metavar: str | None = None,
) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=annotation,
        default=typer.Option(default, flag, help=help, metavar=metavar),
    )


# Runnable from the repository's root; tests/test_cli_newcomer.py runs every one of them.
TARGET_EXAMPLES = {
    "istio": [
        "meshgen istio examples/triton-access.yaml -o istio.yaml",
        "meshgen istio examples/triton-access.yaml --dry-run",
    ],
    "envoy": ["meshgen envoy examples/triton-access.yaml --bootstrap -o envoy.yaml"],
    "nginx": ["meshgen nginx tests/golden/headers-and-ips/spec.yaml --full --prefix /tmp/mg --no-daemon -o nginx.conf"],
    "triton": ["meshgen triton examples/triton-access.yaml"],
}


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog, one command a line."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def _register(target: Target[Any]) -> None:
    fields = [_option_field(name, option) for name, option in cli_options(target.options_type)]

    def command(spec: str, output: str | None, **values: Any) -> None:
        from meshgen.output import write_output

        with diagnostics(output):
            options = target.options_type(**{field.name: field.build(values) for field in fields})
            policy = compiled(spec)
            _warn(policy.warnings)
            generated = target.generate(policy, options)
            _warn([item.warning() for item in generated.withheld])
            _warn(generated.warnings)
            write_output(generated.text, output)

    spec_parameter = inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=SpecArg)
    output_parameter = inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=OutputOpt, default=None)
    # Typer reads the command's parameters from its signature.
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [spec_parameter, output_parameter, *(p for field in fields for p in field.parameters)]
    )
    command.__annotations__ = {}
    epilog = examples(*TARGET_EXAMPLES.get(target.name, [f"meshgen {target.name} examples/triton-access.yaml"]))
    app.command(name=target.name, help=target.summary, epilog=epilog)(command)


for _target in TARGETS:
    _register(_target)


# --- everyday commands --------------------------------------------------------------------------------


@app.command(
    name="all",
    epilog=examples(
        "meshgen all examples/triton-access.yaml -o deploy/generated",
        "meshgen all examples/triton-access.yaml -o deploy/generated --check",
    ),
)
def all_outputs(
    spec: SpecArg,
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Directory of the outputs.")],
    check_only: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 with a diff if DIR is not current.")
    ] = False,
) -> None:
    """Every output of every target, plus a kustomization.yaml; --check is the CI drift gate."""
    from pathlib import Path

    from meshgen.bundle import build_bundle, drift, output_names
    from meshgen.output import write_atomic

    directory = Path(output)
    with diagnostics():
        policy = compiled(spec)
        bundle = build_bundle(policy)
    _warn(policy.warnings)
    _warn(bundle.warnings)
    for name, reason in bundle.skipped.items():
        typer.echo(f"note: {name} not generated: {reason.message}", err=True)
    if check_only:
        diffs = drift(bundle, directory)
        for diff in diffs:
            typer.echo(diff, nl=False)
        if diffs:
            typer.echo(
                f"{len(diffs)} file(s) in {directory} are not current; run: meshgen all {spec} -o {output}", err=True
            )
            raise typer.Exit(1)
        return
    with diagnostics(str(directory)):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in bundle.files.items():
            write_atomic(directory / name, text)
        for name in output_names():
            if name not in bundle.files and (directory / name).is_file():
                (directory / name).unlink()


@app.command(
    epilog=examples(
        "meshgen lint examples/triton-access.yaml", "meshgen lint tests/golden/default-deny/spec.yaml --strict"
    )
)
def lint(
    spec: SpecArg,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there is any finding.")] = False,
) -> None:
    """Warn about risky but legal choices (stable codes, see docs/lint.md)."""
    from meshgen.lint import lint as find

    with diagnostics():
        findings = find(load(spec))
    for finding in findings:
        typer.echo(str(finding), err=True)
    if findings and strict:
        raise typer.Exit(1)


@app.command(
    epilog="Grants a rule makes but that do not apply to the request (per-model rules, targets that withhold them) "
    "are named below the verdict, with what would change it.\n\n"
    + examples(
        "meshgen check examples/triton-access.yaml --from gateway --grpc ModelInfer --model resnet50",
        'meshgen check examples/triton-access.yaml --from ops --http "GET /v2/models/stats" --target envoy',
    )
)
def check(
    spec: SpecArg,
    from_: Annotated[str, typer.Option("--from", metavar="CLIENT|anyone", help="Who sends the request.")],
    http: Annotated[Optional[str], typer.Option(metavar='"METHOD PATH"', help="An HTTP request.")] = None,  # noqa: UP045
    grpc: Annotated[Optional[str], typer.Option(metavar="METHOD", help="A gRPC method, e.g. ModelInfer.")] = None,  # noqa: UP045
    header: Annotated[list[str], typer.Option(metavar="K=V", help="An extra request header.")] = [],  # noqa: B006
    port: Annotated[Optional[str], typer.Option(help="http, metrics or openai (default: by path).")] = None,  # noqa: UP045
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(metavar="NAME", help="With --grpc or an OpenAI inference route: the model the body names."),
    ] = None,
    target: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(metavar="TARGET", help="Decide as this target enforces it (istio, envoy, nginx)."),
    ] = None,
) -> None:
    """What-if: ALLOW/DENY for one request and the rule that decides (exit 0 allow, 1 deny)."""
    from meshgen.policy.decide import EVERY_FEATURE
    from meshgen.whatif import what_if
    from meshgen.why import check_grpc_method, check_notes, target_view

    with diagnostics():
        loaded = load(spec)
        view = target_view(loaded, target) if target is not None else None
        enforced = EVERY_FEATURE if view is None else view.enforced
        result = what_if(loaded, from_, http, grpc, header, port, model, enforced)
        check_grpc_method(result.request, result.decision)
        notes = check_notes(loaded, result.request, result.decision, enforced, view)
    typer.echo(result.text() + ("" if view is None else f" [as {view.name} enforces it]"))
    for note in notes:
        typer.echo(f"  {note}")
    raise typer.Exit(0 if result.decision.allowed else 1)


@app.command(
    epilog=examples(
        "meshgen explain examples/triton-access.yaml", "meshgen explain examples/triton-access.yaml --format markdown"
    )
)
def explain(
    spec: SpecArg,
    format: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
) -> None:
    """The access matrix: categories x clients per protocol, per-model grants, withheld gRPC, denies."""
    from meshgen.explain import render_explanation

    if format not in ("table", "markdown", "json"):
        typer.echo("error: --format must be table, markdown or json", err=True)
        raise typer.Exit(EXIT_ERROR)
    with diagnostics():
        loaded = load(spec)
    typer.echo(render_explanation(loaded, format), nl=False)  # type: ignore[arg-type]


@app.command(
    epilog=examples(
        "meshgen init --model-repository /models -o spec.yaml",
        "meshgen init -o spec.yaml && meshgen lint spec.yaml --strict",
    )
)
def init(
    output: OutputOpt = None,
    model_repository: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--model-repository", metavar="DIR", help="A Triton model repository: list its models."),
    ] = None,
    name: Annotated[str, typer.Option(metavar="NAME", help="metadata.name and the app label.")] = "triton",
    namespace: Annotated[str, typer.Option(metavar="NS", help="metadata.namespace.")] = "inference",
) -> None:
    """A commented starter spec: default deny, health for anyone, metrics for a monitoring client."""
    from meshgen.init import repository_models, starter_spec
    from meshgen.output import write_output
    from meshgen.spec import load_spec_text

    with diagnostics(output):
        models = repository_models(model_repository) if model_repository is not None else None
        text = starter_spec(output or "spec.yaml", name, namespace, models)
        load_spec_text(text, "<init>")  # --name/--namespace must make a valid spec
        write_output(text, output)


@app.command(
    epilog="Exit 0: access unchanged; 1: some client gains or loses access; 2: error.\n\n"
    + examples(
        "meshgen diff tests/golden/default-deny/spec.yaml examples/triton-access.yaml",
        "meshgen diff --git HEAD examples/triton-access.yaml --format markdown",
    )
)
def diff(
    old: Annotated[str, typer.Argument(metavar="OLD", help="The spec before (with --git: the spec, as now).")],
    new: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(metavar="NEW", help="The spec after (not with --git)."),
    ] = None,
    git: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--git", metavar="REF", help="Compare the spec as committed at REF with the file as it is now."),
    ] = None,
    format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="text or markdown.")] = "text",
) -> None:
    """What each client gains and loses between two specs, per protocol, category and model."""
    from meshgen.diff import diff_specs, load_git, render_diff

    if format not in ("text", "markdown"):
        typer.echo("error: --format must be text or markdown", err=True)
        raise typer.Exit(EXIT_ERROR)
    if (git is None) == (new is None):
        typer.echo("error: give OLD and NEW, or --git REF and one spec", err=True)
        raise typer.Exit(EXIT_ERROR)
    with diagnostics():
        if git is not None:
            before, after, names = load_git(git, old), load(old), (f"{git}:{old}", old)
        else:
            assert new is not None
            before, after, names = load(old), load(new), (old, new)
        changes = diff_specs(before.spec, after.spec)
    typer.echo(render_diff(changes, *names, format), nl=False)  # type: ignore[arg-type]
    raise typer.Exit(1 if changes else 0)


@app.command(epilog=examples("meshgen schema > spec.schema.json"))
def schema() -> None:
    """JSON Schema of the spec, for editors (yaml-language-server) and CI validation."""
    import json

    from meshgen.spec.model import Spec

    document = Spec.model_json_schema(by_alias=True, mode="validation")
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "meshgen TritonAccessPolicy (meshgen/v1)"
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


def main() -> None:
    # One run builds large acyclic trees (policy data, YAML nodes, template output) that reference
    # counting frees; the cyclic collector would only re-traverse them, again and again as they grow:
    # 40 % of `meshgen all` for 1,000 models x 100 clients, for no memory saved (docs/performance.md).
    gc.disable()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        typer.echo(f"meshgen: internal error, please report it: {type(error).__name__}: {error}", err=True)
        sys.exit(EXIT_INTERNAL)
