"""parse_jwks: what a spec's JWKS may hold, and the canonical public-only JWKS meshgen emits from it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshgen.jwks import JwksError, KeySet, PublicKey, parse_jwks
from tests.support.jwt_tokens import b64url, jwks, provider_key

RSA_KEY, EC_KEY = provider_key("idp-a", "RSA"), provider_key("idp-a", "EC")
RSA_JWK, EC_JWK = RSA_KEY.jwk(), EC_KEY.jwk()


def uint(value: int, size: int | None = None) -> str:
    return b64url(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


def text(*keys: Any) -> str:
    return json.dumps({"keys": list(keys)})


def rsa_jwk(**members: Any) -> dict[str, Any]:
    return {k: v for k, v in {**RSA_JWK, **members}.items() if v is not None}


def ec_jwk(**members: Any) -> dict[str, Any]:
    return {k: v for k, v in {**EC_JWK, **members}.items() if v is not None}


_SMALL_RSA = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
_P384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
_POINT = EC_KEY.private.public_key().public_numbers()

ERRORS: dict[str, tuple[str, str]] = {
    # label: (JWKS text, a part of the message)
    "not JSON": ("{keys: []}", "not valid JSON"),
    "NaN": ('{"keys": [NaN]}', "not valid JSON"),
    "a repeated member": ('{"keys": [], "keys": []}', "appears twice"),
    "an array": ("[]", "must be a JSON object"),
    "a bare JWK": (json.dumps(RSA_JWK), 'a JWKS wraps it: {"keys": [<the key>]}'),
    "no keys": ("{}", 'must have a "keys" array'),
    "keys not an array": ('{"keys": {}}', '"keys" must be an array'),
    "empty keys": ('{"keys": []}', "no usable signing key"),
    "a key that is not an object": (text("x"), "key 1: not a JSON object"),
    "oct": (text({"kty": "oct", "kid": "s", "alg": "HS256"}), "key 1 (kid 's'): kty 'oct' is a symmetric secret"),
    "oct with its secret": (
        text({"kty": "oct", "k": "c2VjcmV0"}),
        "a shared secret (member 'k') must never be published",
    ),
    "RSA private d": (
        text(RSA_KEY.jwk(with_private=True)),
        "key 1 (kid 'idp-a-rsa'): private key material (member 'd')",
    ),
    "RSA private p only": (text(rsa_jwk(p="AQAB")), "private key material (member 'p')"),
    "RSA oth": (text(rsa_jwk(oth=[])), "private key material (member 'oth')"),
    "EC private d": (text(EC_KEY.jwk(with_private=True)), "key 1 (kid 'idp-a-ec'): private key material (member 'd')"),
    "private member in the second key": (text(EC_JWK, rsa_jwk(qi="AQAB")), "key 2 (kid 'idp-a-rsa'): private key"),
    "no kty": (text(rsa_jwk(kty=None)), "kty must be a string"),
    "kid a number": (text(rsa_jwk(kid=5)), "key 1: kid must be a non-empty string"),
    "kid empty": (text(rsa_jwk(kid="")), "key 1 (kid ''): kid must be a non-empty string"),
    "duplicate kid": (
        text(RSA_JWK, ec_jwk(kid="idp-a-rsa")),
        "key 2 (kid 'idp-a-rsa'): kid 'idp-a-rsa' is also used by key 1",
    ),
    "use a number": (text(rsa_jwk(use=1)), "use must be a string"),
    "key_ops not a list": (text(rsa_jwk(key_ops="verify")), "key_ops must be an array of strings"),
    "alg a number": (text(rsa_jwk(alg=256)), "alg must be a string"),
    "RSA with ES256": (text(rsa_jwk(alg="ES256")), "alg 'ES256' does not fit an RSA key"),
    "RSA with HS256": (text(rsa_jwk(alg="HS256")), "does not fit an RSA key"),
    "RSA with none": (text(rsa_jwk(alg="none")), "does not fit an RSA key"),
    "EC with RS256": (text(ec_jwk(alg="RS256")), "alg 'RS256' does not fit crv 'P-256' (it needs ES256)"),
    "EC P-256 with ES384": (text(ec_jwk(alg="ES384")), "does not fit crv 'P-256'"),
    "RSA without n": (text(rsa_jwk(n=None)), "member 'n' must be a base64url string"),
    "RSA n a number": (text(rsa_jwk(n=12345)), "member 'n' must be a base64url string"),
    "RSA e padded": (text(rsa_jwk(e="AQAB=")), "member 'e' must be base64url without padding"),
    "RSA n standard base64": (text(rsa_jwk(n=RSA_JWK["n"][:-2] + "+/")), "base64url without padding"),
    "RSA n empty": (text(rsa_jwk(n="")), "base64url without padding"),
    "RSA e not canonical": (text(rsa_jwk(e="AQB")), "member 'e' is not canonical base64url"),
    "RSA n of a bad length": (text(rsa_jwk(n=RSA_JWK["n"] + "AAA")), "member 'n' is not valid base64url"),
    "RSA e even": (text(rsa_jwk(e=uint(65536))), "exponent e = 65536 is not 65537"),
    "RSA e 1": (text(rsa_jwk(e=uint(1))), "exponent e = 1"),
    "RSA e 5 (Envoy drops it)": (text(rsa_jwk(e=uint(5))), "Envoy drops such keys"),
    "RSA 1024 bits": (text(rsa_jwk(n=uint(_SMALL_RSA.n))), "modulus is too short: 1024 bits, at least 2048"),
    "RSA even modulus": (text(rsa_jwk(n=uint((1 << 2047) | 2))), "modulus n is even"),
    "EC without crv": (text(ec_jwk(crv=None)), "crv must be one of P-256, P-384, P-521, not None"),
    "EC secp256k1": (text(ec_jwk(crv="secp256k1", alg=None)), "not 'secp256k1'"),
    "EC x short": (text(ec_jwk(x=uint(_POINT.x % 2**240, 30))), "x must be 32 bytes for P-256, not 30"),
    "EC y with a leading zero byte too many": (
        text(ec_jwk(y=uint(_POINT.y, 33))),
        "y must be 32 bytes for P-256, not 33",
    ),
    "EC point off the curve": (text(ec_jwk(y=uint((_POINT.y + 1) % 2**256, 32))), "is not on P-256"),
    "EC P-384 point called P-256": (text(ec_jwk(x=uint(_P384.x, 48), y=uint(_P384.y, 48))), "x must be 32 bytes"),
    "only skipped keys": (text(rsa_jwk(use="enc")), "no usable signing key (key 1 (kid 'idp-a-rsa'): use 'enc'"),
}


@pytest.mark.parametrize("label", list(ERRORS))
def test_rejected(label: str) -> None:
    document, message = ERRORS[label]
    with pytest.raises(JwksError) as error:
        parse_jwks(document)
    assert message in str(error.value)


SKIPPED: dict[str, tuple[dict[str, Any], str]] = {
    "use enc": (rsa_jwk(use="enc"), "key 1 (kid 'idp-a-rsa'): use 'enc', not a signing key"),
    "use other": (rsa_jwk(use="x"), "use 'x', not a signing key"),
    "key_ops without verify": (rsa_jwk(key_ops=["encrypt"]), "key_ops ['encrypt'] lacks 'verify'"),
    "OKP": ({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}, "kty 'OKP' is not"),
    "unknown kty": ({"kty": "XYZ", "kid": "k"}, "key 1 (kid 'k'): kty 'XYZ' is not supported"),
}


@pytest.mark.parametrize("label", list(SKIPPED))
def test_skipped_keys_are_noted_and_dropped(label: str) -> None:
    member, note = SKIPPED[label]
    keys = parse_jwks(text(member, ec_jwk()))
    assert [key.kid for key in keys.keys] == ["idp-a-ec"]
    assert len(keys.skipped) == 1 and note in keys.skipped[0]


def test_canonical_json_keeps_order_and_only_public_members() -> None:
    spec = text(
        ec_jwk(x5c=["MIIB..."], ext=True, key_ops=["verify"]),
        rsa_jwk(alg=None, use=None, x5t="abc"),
    )
    keys = parse_jwks(spec)
    assert keys.skipped == ()
    assert json.loads(keys.json()) == {
        "keys": [
            {
                "kty": "EC",
                "kid": "idp-a-ec",
                "alg": "ES256",
                "use": "sig",
                "crv": "P-256",
                "x": EC_JWK["x"],
                "y": EC_JWK["y"],
            },
            {"kty": "RSA", "kid": "idp-a-rsa", "use": "sig", "n": RSA_JWK["n"], "e": "AQAB"},
        ]
    }
    assert keys.json() == json.dumps(json.loads(keys.json()), sort_keys=True, separators=(",", ":"))


def test_the_fixture_jwks_is_already_canonical() -> None:
    assert parse_jwks(jwks(RSA_KEY, EC_KEY)).json() == jwks(RSA_KEY, EC_KEY)


def test_ec_alg_is_pinned_from_the_curve() -> None:
    """An EC key without alg verifies tokens of any alg in Envoy (measured in test_jwt_reference): pin it."""
    keys = parse_jwks(text(ec_jwk(alg=None, kid=None)))
    assert keys.keys == (PublicKey("EC", None, "ES256", crv="P-256", x=EC_JWK["x"], y=EC_JWK["y"]),)
    p384 = parse_jwks(text({"kty": "EC", "crv": "P-384", "x": uint(_P384.x, 48), "y": uint(_P384.y, 48)}))
    assert p384.keys[0].alg == "ES384"


def test_rsa_without_alg_or_kid_stays_so() -> None:
    keys = parse_jwks(text(rsa_jwk(alg=None, kid=None)))
    assert keys == KeySet((PublicKey("RSA", None, None, n=RSA_JWK["n"], e="AQAB"),), ())


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_every_rsa_alg_fits(alg: str) -> None:
    assert parse_jwks(text(rsa_jwk(alg=alg))).keys[0].alg == alg


def test_exponent_3_and_key_ops_with_verify_are_accepted() -> None:
    keys = parse_jwks(text(rsa_jwk(e=uint(3), key_ops=["verify", "sign"]), ec_jwk()))
    assert [key.e for key in keys.keys] == ["Aw", None]


def test_keys_without_kid_may_repeat() -> None:
    keys = parse_jwks(text(rsa_jwk(kid=None), ec_jwk(kid=None)))
    assert [key.kid for key in keys.keys] == [None, None]
