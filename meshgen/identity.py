"""A representative identity per client: what a caller that *is* this client presents.

Used by ``meshgen check`` and ``meshgen explain`` to ask the reference ``decide`` about a client by name.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from meshgen.policy import Identity
from meshgen.spec import Client


def representative_identity(client: Client) -> Identity:
    principal = None
    if client.principals:
        principal = client.principals[0]
    elif client.namespaces:
        principal = f"cluster.local/ns/{client.namespaces[0]}/sa/default"
    source_ip = None
    if client.ip_blocks:
        network = ipaddress.ip_network(client.ip_blocks[0], strict=False)
        source_ip = str(network.network_address + (1 if network.num_addresses > 1 else 0))
    headers = {name: str(value) for name, value in (client.headers or {}).items()}
    return Identity(principal, source_ip, headers, _token_claims(client))


def _token_claims(client: Client) -> dict[str, Any] | None:
    """The payload of a verified token that makes its bearer this JWT client (its first audience)."""
    if client.jwt is None:
        return None
    jwt = client.jwt
    claims: dict[str, Any] = {"iss": jwt.issuer, "sub": jwt.subject or "any-account"}
    if jwt.audiences:
        claims["aud"] = jwt.audiences[0]
    return claims | dict(jwt.claims or {})
