"""Test identity providers: signing keys, their JWKS, and tokens good and hostile, minted by hand.

Keys are derived from a seed (``provider_key("idp-a", "RSA")``), so goldens and examples can check in
the public JWKS and tests can mint matching tokens without a private key in the repository. Tokens are
assembled here byte by byte with ``cryptography`` alone, because the hostile ones (``alg: none``, HMAC
signed with the public key, DER-encoded ECDSA, ...) are exactly what a JWT library refuses to make.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

KeyType = Literal["RSA", "EC"]
Claims = Mapping[str, Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, size: int | None = None) -> str:
    return b64url(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # RS256 / ES256
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self, *, with_private: bool = False, alg: bool = True, kid: bool = True) -> dict[str, Any]:
        """The public JWK (``with_private``: also the private members, for the spec's negative tests)."""
        key: dict[str, Any]
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.private_numbers()
            public = numbers.public_numbers
            key = {"kty": "RSA", "n": _uint(public.n), "e": _uint(public.e)}
            if with_private:
                key |= {
                    "d": _uint(numbers.d),
                    "p": _uint(numbers.p),
                    "q": _uint(numbers.q),
                    "dp": _uint(numbers.dmp1),
                    "dq": _uint(numbers.dmq1),
                    "qi": _uint(numbers.iqmp),
                }
        else:
            ec_numbers = self.private.private_numbers()
            point = ec_numbers.public_numbers
            key = {"kty": "EC", "crv": "P-256", "x": _uint(point.x, 32), "y": _uint(point.y, 32)}
            if with_private:
                key["d"] = _uint(ec_numbers.private_value, 32)
        if kid:
            key["kid"] = self.kid
        if alg:
            key["alg"] = self.alg
        key["use"] = "sig"
        return key

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def jwks(*keys: SigningKey) -> str:
    """The JWKS text a spec points at (deterministic: sorted keys, no spaces)."""
    return json.dumps({"keys": [key.jwk() for key in keys]}, sort_keys=True, separators=(",", ":"))


# --- deterministic keys -------------------------------------------------------------------------------


_SMALL_PRIMES = [n for n in range(3, 8000, 2) if all(n % d for d in range(3, int(n**0.5) + 1, 2))]


def _probable_prime(candidate: int, rounds: int = 8) -> bool:
    """Miller-Rabin after trial division (which rejects most candidates for the price of one pow)."""
    if candidate < 2 or candidate % 2 == 0:
        return candidate == 2
    for small in _SMALL_PRIMES:
        if candidate % small == 0:
            return candidate == small
    d, s = candidate - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    witnesses = random.Random(candidate)
    for _ in range(rounds):
        x = pow(witnesses.randrange(2, candidate - 1), d, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


def _prime(rng: random.Random, bits: int, e: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top two bits set: n has all its bits
        if candidate % e != 1 and _probable_prime(candidate):
            return candidate


@functools.cache
def provider_key(seed: str, kind: KeyType = "RSA") -> SigningKey:
    """A key pair derived from ``seed``: the same on every run and machine. kid = ``<seed>-<rsa|ec>``."""
    digest = hashlib.sha256(f"meshgen-test-key:{seed}:{kind}".encode()).digest()
    if kind == "EC":
        scalar = int.from_bytes(digest, "big") % (2**255)  # below P-256's order
        return SigningKey(f"{seed}-ec", "ES256", ec.derive_private_key(scalar, ec.SECP256R1()))
    rng = random.Random(digest)
    e = 65537
    p, q = _prime(rng, 1024, e), _prime(rng, 1024, e)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), rsa.RSAPublicNumbers(e, p * q)
    )
    return SigningKey(f"{seed}-rsa", "RS256", numbers.private_key())


# --- tokens -------------------------------------------------------------------------------------------


def claims(
    iss: str, sub: str | None = None, aud: str | list[str] | None = None, lifetime: int = 6 * 3600, **extra: Any
) -> dict[str, Any]:
    """A token body valid from now for ``lifetime`` seconds. Modules mint tokens at import, and a full run
    takes about 20 minutes: the default outlives any run (a 10-minute default expired mid-CI)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": iss}
    if sub is not None:
        body["sub"] = sub
    if aud is not None:
        body["aud"] = aud
    body |= {"iat": now, "nbf": now - 5, "exp": now + lifetime}
    return body | extra


def _compact(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def sign(alg: str, key: SigningKey | bytes, signing_input: bytes) -> bytes:
    if alg == "none":
        return b""
    if alg.startswith("HS"):
        secret = key if isinstance(key, bytes) else key.public_pem()  # the key-confusion attack
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(secret, signing_input, digest).digest()
    assert isinstance(key, SigningKey)
    hash_ = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if isinstance(key.private, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        return key.private.sign(signing_input, pad, hash_)
    r, s = decode_dss_signature(key.private.sign(signing_input, ec.ECDSA(hash_)))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JOSE wants raw r||s, not DER


def mint(
    body: Claims,
    key: SigningKey | bytes,
    *,
    alg: str | None = None,
    kid: str | Literal[False] | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS. ``kid`` None: the key's own; False: no kid; ``alg`` None: the key's own."""
    algorithm = alg or (key.alg if isinstance(key, SigningKey) else "HS256")
    head: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if kid is not False:
        chosen = kid if kid is not None else (key.kid if isinstance(key, SigningKey) else None)
        if chosen is not None:
            head["kid"] = chosen
    head |= dict(header or {})
    signing_input = f"{_compact(head)}.{_compact(body)}"
    return f"{signing_input}.{b64url(sign(algorithm, key, signing_input.encode()))}"


def der_signed(body: Claims, key: SigningKey) -> str:
    """An ES256 token whose signature is DER (what cryptography returns), not JOSE's r||s."""
    signing_input = f"{_compact({'alg': key.alg, 'typ': 'JWT', 'kid': key.kid})}.{_compact(body)}"
    return f"{signing_input}.{b64url(key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))}"


def invalid_tokens(body: Claims, key: SigningKey, stranger: SigningKey) -> dict[str, str]:
    """Tokens that must be rejected by a verifier trusting ``key`` for ``body['iss']``, by label.

    ``stranger`` is a key the verifier does not trust. Every token claims ``body``'s issuer unless the
    label says otherwise; the audience case is built by the caller (it depends on the configuration).
    """
    now = int(time.time())
    good = mint(body, key)
    head, payload, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return {
        "bad signature (other key, same kid)": mint(body, stranger, kid=key.kid, alg=key.alg),
        "tampered payload": f"{head}.{_compact({**body, 'sub': 'someone-else'})}.{signature}",
        "signature bit flipped": f"{head}.{payload}.{flipped}",
        "alg none, empty signature": mint(body, b"", alg="none", kid=key.kid),
        "alg none, with signature": f"{_compact({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "HS256 signed with the public key": mint(body, key, alg="HS256", kid=key.kid),
        "unknown kid": mint(body, key, kid="no-such-key"),
        "unknown issuer": mint({**body, "iss": "https://unknown.example.com/"}, key),
        "unknown issuer, stranger's key": mint({**body, "iss": "https://unknown.example.com/"}, stranger),
        "expired": mint({**body, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, key),
        "not yet valid": mint({**body, "iat": now, "nbf": now + 3600, "exp": now + 7200}, key),
        "other algorithm for the key": mint(body, key, alg="RS384" if key.alg.startswith("RS") else "ES384"),
        "two segments": f"{head}.{payload}",
        "not a JWT": "not-a-jwt",
        "garbage segments": "aaa.bbb.ccc",
        "header not JSON": f"{b64url(b'{not json')}.{payload}.{signature}",
        "payload not JSON": f"{head}.{b64url(b'[1,2')}.{signature}",
        "padding in segments": f"{head}=.{payload}.{signature}",
    }


def signing_key_for(jwks_text: str) -> SigningKey | None:
    """The test key (``provider_key``) behind the first key of a JWKS, if it is one of ours."""
    for key in json.loads(jwks_text).get("keys", []):
        seed, _, kind = str(key.get("kid", "")).rpartition("-")
        if kind not in ("rsa", "ec") or not seed:
            continue
        candidate = provider_key(seed, "RSA" if kind == "rsa" else "EC")
        if all(candidate.jwk().get(member) == value for member, value in key.items()):
            return candidate
    return None
