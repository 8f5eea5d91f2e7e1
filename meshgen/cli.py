"""Command line: ``meshgen <target> SPEC``. Heavy imports wait until a command runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from meshgen import __version__

if TYPE_CHECKING:
    from meshgen.policy import Policy

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

    run(spec, output, lambda policy: target.generate(
        policy,
        bootstrap=bootstrap,
        listen_overrides=_overrides(listen_http, listen_grpc, listen_metrics),
        upstream_overrides=_overrides(upstream_http, upstream_grpc, upstream_metrics),
        admin=admin,
        dry_run=dry_run,
    ))


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

    run(spec, output, lambda policy: target.generate(
        policy,
        full=full,
        listen_overrides=_overrides(listen_http, listen_grpc, listen_metrics),
        upstream_overrides=_overrides(upstream_http, upstream_grpc, upstream_metrics),
        prefix=prefix,
        daemon=not no_daemon,
        dry_run=dry_run,
    ))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        typer.echo(f"meshgen: internal error, please report it: {type(error).__name__}: {error}", err=True)
        sys.exit(EXIT_INTERNAL)
