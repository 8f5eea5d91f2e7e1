"""The registered targets as tests call them: plain keyword values in, generated text out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshgen.address import PortAddresses, parse_address
from meshgen.features import Feature
from meshgen.policy.model import Policy
from meshgen.targets.contract import Target, enforced_features
from meshgen.targets.envoy import EnvoyOptions
from meshgen.targets.istio import IstioOptions
from meshgen.targets.nginx import NginxOptions
from meshgen.targets.registry import target_named

ISTIO = target_named("istio")
ENVOY = target_named("envoy")
NGINX = target_named("nginx")
TRITON = target_named("triton")


def port_addresses(addresses: Mapping[str, str] | None) -> PortAddresses:
    """{"http": "127.0.0.1:8000", ...} as the options' typed value (missing ports stay unset)."""
    parsed = {port: parse_address(value) for port, value in (addresses or {}).items() if value}
    return PortAddresses(**parsed)


def istio_output(policy: Policy, *, dry_run: bool = False) -> str:
    return ISTIO.generate(policy, IstioOptions(dry_run=dry_run)).text


def envoy_output(
    policy: Policy,
    *,
    bootstrap: bool = False,
    listen: Mapping[str, str] | None = None,
    upstream: Mapping[str, str] | None = None,
    admin: str | None = None,
    dry_run: bool = False,
) -> str:
    options = EnvoyOptions(
        bootstrap=bootstrap,
        listen=port_addresses(listen),
        upstream=port_addresses(upstream),
        admin=parse_address(admin) if admin else None,
        dry_run=dry_run,
    )
    return ENVOY.generate(policy, options).text


def nginx_output(
    policy: Policy,
    *,
    full: bool = False,
    listen: Mapping[str, str] | None = None,
    upstream: Mapping[str, str] | None = None,
    prefix: str | None = None,
    daemon: bool = True,
    dry_run: bool = False,
) -> str:
    options = NginxOptions(
        full=full,
        listen=port_addresses(listen),
        upstream=port_addresses(upstream),
        prefix=prefix,
        no_daemon=not daemon,
        dry_run=dry_run,
    )
    return NGINX.generate(policy, options).text


def triton_output(policy: Policy) -> str:
    return TRITON.generate(policy, TRITON.options_type()).text


def enforced_by(target: Target[Any], policy: Policy, options: Any = None) -> frozenset[Feature]:
    """What ``target`` decides as the spec means it: ``decide(spec, request, enforced_by(...))`` is its reference."""
    return enforced_features(target.effective_capabilities(policy, options or target.options_type()))
