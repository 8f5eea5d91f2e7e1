"""Command line: ``meshgen <target> SPEC``. Heavy imports wait until a command runs."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from meshgen import __version__

if TYPE_CHECKING:
    from meshgen.policy import Policy
    from meshgen.spec import LoadedSpec

EXIT_ERROR = 2
EXIT_INTERNAL = 3

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


def run(spec_path: str, output: str | None, generate: Callable[[Policy], str]) -> None:
    """Load, compile, generate and write; every user error becomes one line on stderr and exit 2."""
    from meshgen.errors import MeshgenError
    from meshgen.output import write_output
    from meshgen.policy import compile_policy
    from meshgen.spec import load_spec

    try:
        policy = compile_policy(load_spec(spec_path))
        for warning in policy.warnings:
            typer.echo(str(warning), err=True)
        text = generate(policy)
        write_output(text, output)
    except MeshgenError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as error:
        typer.echo(f"error: cannot write {output}: {error.strerror}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def istio(
    spec: SpecArg,
    output: OutputOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Annotate policies istio.io/dry-run.")] = False,
) -> None:
    """Istio AuthorizationPolicy (DENY + ALLOW) and PeerAuthentication."""
    from meshgen.targets import istio as target

    run(spec, output, lambda policy: target.generate(policy, dry_run=dry_run))


@app.command()
def lint(
    spec: SpecArg,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there is any finding.")] = False,
) -> None:
    """Warn about risky but legal choices (stable codes, see docs/lint.md)."""
    from meshgen.errors import MeshgenError
    from meshgen.lint import lint as find
    from meshgen.spec import load_spec

    try:
        findings = find(load_spec(spec))
    except MeshgenError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_ERROR) from None
    for finding in findings:
        typer.echo(str(finding), err=True)
    if findings and strict:
        raise typer.Exit(1)


def _load(spec: str) -> LoadedSpec:
    from meshgen.errors import MeshgenError
    from meshgen.spec import load_spec

    try:
        return load_spec(spec)
    except MeshgenError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def check(
    spec: SpecArg,
    from_: Annotated[str, typer.Option("--from", metavar="CLIENT|anyone", help="Who sends the request.")],
    http: Annotated[Optional[str], typer.Option(metavar='"METHOD PATH"', help="An HTTP request.")] = None,  # noqa: UP045
    grpc: Annotated[Optional[str], typer.Option(metavar="METHOD", help="A gRPC method, e.g. ModelInfer.")] = None,  # noqa: UP045
    header: Annotated[list[str], typer.Option(metavar="K=V", help="An extra request header.")] = [],  # noqa: B006
    port: Annotated[Optional[str], typer.Option(help="http or metrics (default: by path).")] = None,  # noqa: UP045
) -> None:
    """What-if: ALLOW/DENY for one request and the rule that decides (exit 0 allow, 1 deny)."""
    from meshgen.errors import MeshgenError
    from meshgen.whatif import what_if

    loaded = _load(spec)
    try:
        result = what_if(loaded, from_, http, grpc, header, port)
    except MeshgenError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(result.text())
    raise typer.Exit(0 if result.decision.allowed else 1)


@app.command()
def explain(
    spec: SpecArg,
    format: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
) -> None:
    """The access matrix: categories x clients per protocol, per-model grants, withheld gRPC, denies."""
    from meshgen.explain import render_explanation

    if format not in ("table", "markdown", "json"):
        typer.echo("error: --format must be table, markdown or json", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(render_explanation(_load(spec), format), nl=False)  # type: ignore[arg-type]


@app.command()
def schema() -> None:
    """JSON Schema of the spec, for editors (yaml-language-server) and CI validation."""
    import json

    from meshgen.spec.model import Spec

    document = Spec.model_json_schema(by_alias=True, mode="validation")
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "meshgen TritonAccessPolicy (meshgen/v1)"
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


@app.command(name="all")
def all_outputs(
    spec: SpecArg,
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Directory of the outputs.")],
    check_only: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 with a diff if DIR is not current.")
    ] = False,
) -> None:
    """Every output the spec can express, plus a kustomization.yaml; --check is the CI drift gate."""
    from pathlib import Path

    from meshgen.bundle import OUTPUT_NAMES, build_bundle, drift
    from meshgen.errors import MeshgenError
    from meshgen.output import write_atomic
    from meshgen.policy import compile_policy

    directory = Path(output)
    try:
        bundle = build_bundle(compile_policy(_load(spec)))
    except MeshgenError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_ERROR) from None
    for name, reason in bundle.skipped.items():
        typer.echo(f"note: {name} not generated: {reason}", err=True)
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
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in bundle.files.items():
            write_atomic(directory / name, text)
        for name in OUTPUT_NAMES:
            if name not in bundle.files and (directory / name).is_file():
                (directory / name).unlink()
    except OSError as error:
        typer.echo(f"error: cannot write {directory}: {error.strerror}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def triton(spec: SpecArg, output: OutputOpt = None) -> None:
    """Triton launch flags (restricted APIs, disabled endpoints, model control) that follow from the spec."""
    from meshgen.targets import triton as target

    run(spec, output, target.generate)


AddressOpt = Annotated[Optional[str], typer.Option(metavar="ADDR")]  # noqa: UP045


def _overrides(http: str | None, grpc: str | None, metrics: str | None) -> dict[str, str | None]:
    return {"http": http, "grpc": grpc, "metrics": metrics}


@app.command()
def envoy(
    spec: SpecArg,
    output: OutputOpt = None,
    bootstrap: Annotated[bool, typer.Option("--bootstrap", help="A complete, runnable Envoy bootstrap.")] = False,
    listen_http: AddressOpt = None,
    listen_grpc: AddressOpt = None,
    listen_metrics: AddressOpt = None,
    upstream_http: AddressOpt = None,
    upstream_grpc: AddressOpt = None,
    upstream_metrics: AddressOpt = None,
    admin: Annotated[Optional[str], typer.Option(metavar="ADDR", help="Add an admin listener here.")] = None,  # noqa: UP045
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Shadow rules only: record, never deny.")] = False,
) -> None:
    """Envoy RBAC HTTP filters (DENY then ALLOW), or a runnable bootstrap with --bootstrap."""
    from meshgen.targets import envoy as target

    run(
        spec,
        output,
        lambda policy: target.generate(
            policy,
            bootstrap=bootstrap,
            listen_overrides=_overrides(listen_http, listen_grpc, listen_metrics),
            upstream_overrides=_overrides(upstream_http, upstream_grpc, upstream_metrics),
            admin=admin,
            dry_run=dry_run,
        ),
    )


@app.command()
def nginx(
    spec: SpecArg,
    output: OutputOpt = None,
    full: Annotated[bool, typer.Option("--full", help="A complete nginx.conf that runs as is.")] = False,
    listen_http: AddressOpt = None,
    listen_grpc: AddressOpt = None,
    listen_metrics: AddressOpt = None,
    upstream_http: AddressOpt = None,
    upstream_grpc: AddressOpt = None,
    upstream_metrics: AddressOpt = None,
    prefix: Annotated[Optional[str], typer.Option(metavar="DIR", help="pid/log/temp paths under DIR.")] = None,  # noqa: UP045
    no_daemon: Annotated[bool, typer.Option("--no-daemon", help="Emit 'daemon off;' (foreground).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Log decisions, deny nothing.")] = False,
) -> None:
    """NGINX http{} drop-in (geo/map, upstreams, one server per Triton port), or a full nginx.conf."""
    from meshgen.targets import nginx as target

    run(
        spec,
        output,
        lambda policy: target.generate(
            policy,
            full=full,
            listen_overrides=_overrides(listen_http, listen_grpc, listen_metrics),
            upstream_overrides=_overrides(upstream_http, upstream_grpc, upstream_metrics),
            prefix=prefix,
            daemon=not no_daemon,
            dry_run=dry_run,
        ),
    )


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
