"""Validate and normalise a JWKS given in a spec, before meshgen inlines it into Envoy and Istio configs.

Envoy loads an inline JWKS when the listener is configured, and a JWKS it cannot use fails the whole
config (``Jwks doesn't have any valid public key``), so one bad account key would take every route down.
Envoy also accepts things that must never be shipped, such as private key members. So meshgen checks
each key itself and emits only a canonical, public-only JWKS (``KeySet.json``).

The rules are at least as strict as Envoy 1.40's jwt_verify_lib (``src/jwks.cc``). Where that library
silently drops a key (an RSA exponent other than 3 or 65537), this module rejects the key, so a key the
spec lists is never ignored without a word.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

KeyType = Literal["RSA", "EC"]

RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# RFC 7518 §3.4: each ES* algorithm names exactly one curve. Its coordinates are that many bytes long.
EC_CURVES: Mapping[str, tuple[str, int]] = {"P-256": ("ES256", 32), "P-384": ("ES384", 48), "P-521": ("ES512", 66)}
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # BoringSSL refuses larger moduli
# jwt_verify_lib (createRsaFromJwk) drops every other exponent as "non-standard".
RSA_EXPONENTS = frozenset({3, 65537})

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class JwksError(ValueError):
    """The JWKS cannot be used. The message says what is wrong and, for one key, which key."""


@dataclass(frozen=True)
class PublicKey:
    """One public signing key, members as base64url text (no padding), as they are emitted."""

    kty: KeyType
    kid: str | None
    alg: str | None
    n: str | None = None  # RSA
    e: str | None = None  # RSA
    crv: str | None = None  # EC
    x: str | None = None  # EC
    y: str | None = None  # EC

    def jwk(self) -> dict[str, str]:
        members: dict[str, str] = {"kty": self.kty, "use": "sig"}
        if self.kid is not None:
            members["kid"] = self.kid
        if self.alg is not None:
            members["alg"] = self.alg
        public = (
            (("n", self.n), ("e", self.e)) if self.kty == "RSA" else (("crv", self.crv), ("x", self.x), ("y", self.y))
        )
        for name, value in public:
            if value is not None:
                members[name] = value
        return members


@dataclass(frozen=True)
class KeySet:
    keys: tuple[PublicKey, ...]
    skipped: tuple[
        str, ...
    ] = ()  # why each dropped key was dropped, e.g. "key 1 (kid 'x'): use 'enc', not a signing key"

    def json(self) -> str:
        """The canonical JWKS text to inline: public members only, every key marked ``use: sig``."""
        return json.dumps({"keys": [key.jwk() for key in self.keys]}, sort_keys=True, separators=(",", ":"))


class _Skip(Exception):
    """This key is not a signing key meshgen emits; the message says why."""


def parse_jwks(text: str) -> KeySet:
    """Check a JWKS given in a spec and keep its usable signing keys, in order. Raises JwksError."""
    try:
        document = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise JwksError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise JwksError('a JWKS must be a JSON object {"keys": [...]}')
    if "keys" not in document:
        if "kty" in document:
            raise JwksError('this is a single JWK; a JWKS wraps it: {"keys": [<the key>]}')
        raise JwksError('a JWKS must have a "keys" array')
    members = document["keys"]
    if not isinstance(members, list):
        raise JwksError('"keys" must be an array')

    keys: list[PublicKey] = []
    skipped: list[str] = []
    kids: dict[str, str] = {}
    for index, member in enumerate(members, start=1):
        label = _label(index, member)
        try:
            key = _public_key(member)
        except _Skip as reason:
            skipped.append(f"{label}: {reason}")
            continue
        except JwksError as error:
            raise JwksError(f"{label}: {error}") from None
        if key.kid is not None:
            if key.kid in kids:
                # Envoy tries every key whose kid matches, so a duplicate would make rotation ambiguous.
                raise JwksError(f"{label}: kid {key.kid!r} is also used by {kids[key.kid]}")
            kids[key.kid] = label
        keys.append(key)
    if not keys:
        notes = "; ".join(skipped)
        raise JwksError("no usable signing key" + (f" ({notes})" if notes else ""))
    return KeySet(tuple(keys), tuple(skipped))


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Envoy's JSON parser rejects a repeated member and Python keeps the last one: the JWKS would mean
    # different things to meshgen and to Envoy.
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"member {name!r} appears twice")
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _label(index: int, member: object) -> str:
    kid = member.get("kid") if isinstance(member, dict) else None
    return f"key {index} (kid {kid!r})" if isinstance(kid, str) else f"key {index}"


def _public_key(member: object) -> PublicKey:
    if not isinstance(member, dict):
        raise JwksError("not a JSON object")
    # Checked before anything else: whatever the key type, shipping it to every proxy leaks it.
    for name in PRIVATE_MEMBERS:
        if name in member:
            if name == "k":
                raise JwksError("a shared secret (member 'k') must never be published: publish only public keys")
            raise JwksError(f"private key material (member {name!r}): publish only the public key")
    kid = member.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise JwksError("kid must be a non-empty string")
    kty = member.get("kty")
    if not isinstance(kty, str):
        raise JwksError("kty must be a string")
    if kty == "oct":
        raise JwksError("kty 'oct' is a symmetric secret: a shared secret must never be published")
    if kty not in ("RSA", "EC"):
        # OKP (Ed25519) works in Envoy but meshgen does not emit it (Istio and our tests cover RSA and EC).
        raise _Skip(f"kty {kty!r} is not supported (only RSA and EC keys are emitted)")
    use = member.get("use")
    if use is not None:
        if not isinstance(use, str):
            raise JwksError("use must be a string")
        if use != "sig":
            raise _Skip(f"use {use!r}, not a signing key")
    key_ops = member.get("key_ops")
    if key_ops is not None:
        if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
            raise JwksError("key_ops must be an array of strings")
        if "verify" not in key_ops:
            raise _Skip(f"key_ops {key_ops!r} lacks 'verify', not a signing key")
    alg = member.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise JwksError("alg must be a string")
    if kty == "RSA":
        return _rsa(member, kid, alg)
    return _ec(member, kid, alg)


def _rsa(member: Mapping[str, Any], kid: str | None, alg: str | None) -> PublicKey:
    if alg is not None and alg not in RSA_ALGS:
        raise JwksError(f"alg {alg!r} does not fit an RSA key (use one of {', '.join(sorted(RSA_ALGS))})")
    n_text, n_bytes = _member_bytes(member, "n")
    e_text, e_bytes = _member_bytes(member, "e")
    n, e = int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")
    if e not in RSA_EXPONENTS:
        raise JwksError(f"exponent e = {e} is not 65537 (or 3): Envoy drops such keys")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise JwksError(f"modulus is too short: {bits} bits, at least {MIN_RSA_BITS} needed")
    if bits > MAX_RSA_BITS:
        raise JwksError(f"modulus is too long: {bits} bits, at most {MAX_RSA_BITS} (BoringSSL's limit)")
    if n % 2 == 0:
        raise JwksError("modulus n is even: not an RSA key")
    from cryptography.hazmat.primitives.asymmetric import rsa  # lazy: CLI start-up for specs without JWT

    try:
        rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as error:
        raise JwksError(f"not a valid RSA public key: {error}") from None
    return PublicKey("RSA", kid, alg, n=n_text, e=e_text)


def _ec(member: Mapping[str, Any], kid: str | None, alg: str | None) -> PublicKey:
    crv = member.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise JwksError(f"crv must be one of {', '.join(EC_CURVES)}, not {crv!r}")
    curve_alg, size = EC_CURVES[crv]
    if alg is not None and alg != curve_alg:
        raise JwksError(f"alg {alg!r} does not fit crv {crv!r} (it needs {curve_alg})")
    x_text, x_bytes = _member_bytes(member, "x")
    y_text, y_bytes = _member_bytes(member, "y")
    for name, value in (("x", x_bytes), ("y", y_bytes)):
        if len(value) != size:
            raise JwksError(f"{name} must be {size} bytes for {crv}, not {len(value)}")
    from cryptography.hazmat.primitives.asymmetric import ec  # lazy: CLI start-up for specs without JWT

    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[crv]
    point = ec.EllipticCurvePublicNumbers(int.from_bytes(x_bytes, "big"), int.from_bytes(y_bytes, "big"), curve)
    try:
        point.public_key()
    except ValueError:
        raise JwksError(f"the point (x, y) is not on {crv}") from None
    # Pin alg even when the spec leaves it out: jwt_verify_lib verifies an EC key without alg for a token
    # of ANY alg (RS256, HS256, EdDSA...), hashing with SHA-256 unless it says ES384/ES512. The curve
    # allows exactly one JOSE algorithm, so pinning changes nothing for a correct token.
    return PublicKey("EC", kid, alg or curve_alg, crv=crv, x=x_text, y=y_text)


def _member_bytes(member: Mapping[str, Any], name: str) -> tuple[str, bytes]:
    text = member.get(name)
    if not isinstance(text, str):
        raise JwksError(f"member {name!r} must be a base64url string")
    if not text or "=" in text or not _BASE64URL.fullmatch(text):
        raise JwksError(f"member {name!r} must be base64url without padding (RFC 7515 §2)")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwksError(f"member {name!r} is not valid base64url") from None
    # A non-canonical encoding (stray low bits in the last character) would be emitted as given; refuse it.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != text:
        raise JwksError(f"member {name!r} is not canonical base64url")
    return text, decoded
