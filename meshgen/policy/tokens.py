"""The reference bearer-token verifier: what Envoy 1.40's jwt_authn filter decides for one token.

It models the configuration meshgen emits: one provider per issuer, each with ``issuer``, ``audiences``,
an inline JWKS, ``from_headers: [{name: authorization, value_prefix: "Bearer "}]``, ``payload_in_metadata``
and ``normalize_payload_in_metadata: {space_delimited_claims: [scope, permission]}``, under the requirement
``requires_any: [<each provider>, allow_missing]``. It follows the code, not the RFCs, where they differ
(each quirk was measured on the Envoy binary, see tests/test_jwt_reference.py):

- extraction (``bearer_token``): ``extractor.cc`` ``extractJWT``;
- parsing: ``jwt_verify_lib`` ``src/jwt.cc`` (``absl::StrSplit(jwt, '.', SkipEmpty())``, absl's lenient
  base64url, protobuf's JSON parser in its legacy mode, the claim type checks);
- checks in ``authenticator.cc`` order: issuer, time, audience, then the signature (``src/verify.cc``).
  So a token with a foreign audience is refused as such (403) even when its signature is forged.

``verify`` never raises on hostile input: every failure is a ``Rejected`` whose reason is Envoy's own
message (the body of its 401/403).
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshgen.jwks import KeySet, PublicKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

BEARER_PREFIX = "Bearer "
DEFAULT_CLOCK_SKEW = 60  # jwt_verify_lib kClockSkewInSecond; Envoy uses it when clock_skew_seconds is 0
SPACE_DELIMITED_CLAIMS = ("scope", "permission")
# jwt.cc isImplemented: an alg outside this list is refused before any key is looked at.
IMPLEMENTED_ALGS = frozenset(
    {f"{family}{bits}" for family in ("ES", "HS", "RS", "PS") for bits in (256, 384, 512)} | {"EdDSA"}
)

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_HTTP_OWS = " \t"


@dataclass(frozen=True)
class Provider:
    issuer: str  # "" accepts any iss, as in Envoy (meshgen always sets one)
    keys: KeySet
    audiences: tuple[str, ...] | None = None  # None (or empty): any audience, even none


@dataclass(frozen=True)
class Verified:
    """The payload as Envoy's metadata holds it: JSON numbers are floats (a protobuf Struct holds doubles), and
    ``scope``/``permission`` strings are split on spaces into lists (Istio's normalisation, and ours)."""

    claims: Mapping[str, Any]


@dataclass(frozen=True)
class Rejected:
    reason: str  # Envoy's message, the body of its reply
    audience: bool = False  # an audience mismatch: Envoy answers 403, not 401


def bearer_token(authorization: str | None) -> str | None:
    """The token Envoy extracts from an Authorization header value, or None when it finds none.

    The value is what Envoy sees: leading and trailing spaces/tabs dropped, and several Authorization
    headers joined into one value with "," (empty ones left out). The prefix "Bearer " is searched
    anywhere in it, case-sensitively ("bearer x" yields no token, "Foo Bearer x" does). The token is the
    rest after its first occurrence, minus any leading characters outside [A-Za-z0-9_.-]; if nothing is
    left, Envoy takes the whole value.
    """
    if authorization is None:
        return None
    value = authorization.strip(_HTTP_OWS)
    found = value.find(BEARER_PREFIX)
    if found < 0:
        return None
    start = found + len(BEARER_PREFIX)
    for index in range(start, len(value)):
        if value[index] in _TOKEN_CHARS:
            return value[index:]
    return value


def verify(
    token: str, providers: Mapping[str, Provider], now: float, skew_seconds: int = DEFAULT_CLOCK_SKEW
) -> Verified | Rejected:
    """Envoy's verdict on ``token`` for ``providers`` (by name) at ``now``, in seconds since the epoch and
    truncated to whole seconds as Envoy does. ``skew_seconds`` is the skew in effect (Envoy's
    ``clock_skew_seconds``, where 0 means 60)."""
    jwt = _parse(token)
    if isinstance(jwt, Rejected):
        return jwt
    # Each provider's verifier admits only tokens of its own issuer; the allow_missing verifier looks the
    # issuer up (an exact match first, else a provider without issuer) and its verdict is the one reported.
    candidates = [p for p in providers.values() if p.issuer == jwt.issuer]
    candidates += [p for p in providers.values() if p.issuer == ""]
    if not candidates:
        return Rejected("Jwt issuer is not configured")
    verdicts = [_check(jwt, provider, int(now), skew_seconds) for provider in candidates]
    if any(verdict is None for verdict in verdicts):
        return Verified(types.MappingProxyType(_normalised(jwt.payload)))
    first = verdicts[0]
    assert first is not None
    return first


# --- parsing (jwt_verify_lib src/jwt.cc Jwt::parseFromString) ------------------------------------------


@dataclass(frozen=True)
class _Jwt:
    alg: str
    kid: str  # "" when absent, as in jwt_verify_lib: it then matches every key
    issuer: str
    audiences: tuple[str, ...]
    nbf: int
    exp: int  # 0: no expiry
    payload: dict[str, Any]
    signed: bytes  # what the signature covers: the header and payload segments as sent
    signature: bytes


def _parse(token: str) -> _Jwt | Rejected:
    # StrSplit with SkipEmpty: "h..p.s", ".h.p.s" and "h.p.s." all count as three sections.
    sections = [part for part in token.split(".") if part]
    if len(sections) != 3:
        return Rejected("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    header_text, payload_text, signature_text = sections

    header_bytes = _base64url(header_text)
    if header_bytes is None:
        return Rejected("Jwt header is an invalid Base64url encoded")
    header = _json_object(header_bytes)
    if header is None:
        return Rejected("Jwt header is an invalid JSON")
    alg = header.get("alg")
    if not isinstance(alg, str):
        return Rejected("Jwt header [alg] field is required and must be a string")
    if alg not in IMPLEMENTED_ALGS:
        return Rejected("Jwt header [alg] is not supported")
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        return Rejected("Jwt header [kid] field is not a string")
    # typ, crit and every other header member are ignored (crit is not enforced).

    payload_bytes = _base64url(payload_text)
    if payload_bytes is None:
        return Rejected("Jwt payload is an invalid Base64url encoded")
    payload = _json_object(payload_bytes)
    if payload is None:
        return Rejected("Jwt payload is an invalid JSON")
    for name in ("iss", "sub"):
        if name in payload and not isinstance(payload[name], str):
            return Rejected(f"Jwt payload [{name}] field is not a string")
    times: dict[str, int] = {}
    for name in ("iat", "nbf", "exp"):
        value = payload.get(name)
        if value is None and name not in payload:
            times[name] = 0
            continue
        if not isinstance(value, float):
            return Rejected(f"Jwt payload [{name}] field is not an integer")
        if value < 0 or value >= 2.0**64:
            return Rejected(f"Jwt payload [{name}] field is not a positive 64 bit integer")
        times[name] = int(value)  # truncated, like the C++ cast: exp 0.5 is exp 0, i.e. none
    if "jti" in payload and not isinstance(payload["jti"], str):
        return Rejected("Jwt payload [jti] field is not a string")
    audiences = _audiences(payload)
    if audiences is None:
        return Rejected("Jwt payload [aud] field is not a string or string list")

    signature = _base64url(signature_text)
    if signature is None:
        return Rejected("Jwt signature is an invalid Base64url encoded")
    return _Jwt(
        alg=alg,
        kid=kid,
        issuer=payload.get("iss", ""),
        audiences=audiences,
        nbf=times["nbf"],
        exp=times["exp"],
        payload=payload,
        signed=f"{header_text}.{payload_text}".encode("ascii"),
        signature=signature,
    )


def _audiences(payload: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "aud" not in payload:
        return ()
    aud = payload["aud"]
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    return None


_BASE64URL_VALUES = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_ASCII_SPACE = frozenset(" \t\n\v\f\r")


def _base64url(text: str) -> bytes | None:
    """absl::WebSafeBase64Unescape: whitespace anywhere is skipped, padding is optional but, if present,
    must be exact, and stray low bits in the last character are ignored."""
    values: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in _BASE64URL_VALUES:
            values.append(_BASE64URL_VALUES[char])
        elif char == "=":
            break
        elif char not in _ASCII_SPACE:
            return None
        index += 1
    padding = 0
    for char in text[index:]:
        if char == "=":
            padding += 1
        elif char not in _ASCII_SPACE:
            return None
    leftover = len(values) % 4
    if leftover == 1:
        return None
    if padding and padding != {0: 0, 2: 2, 3: 1}[leftover]:
        return None
    out = bytearray()
    bits = count = 0
    for value in values:
        bits, count = (bits << 6) | value, count + 6
        if count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
            bits &= (1 << count) - 1
    return bytes(out)


# --- protobuf's JSON parser (JsonStringToMessage into a google.protobuf.Struct) ---------------------------


class _JsonError(Exception):
    pass


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        return _ProtoJson(data).document()
    except _JsonError:
        return None


class _ProtoJson:
    """protobuf 33/34's JSON lexer and Struct parser with ``allow_legacy_nonconformant_behavior`` (the default
    of ``JsonParseOptions``). Measured on Envoy: single-quoted strings, bare-word keys, trailing commas,
    raw control characters in strings, ``\\'`` and ``\\U`` escapes and a top-level ``null`` (an empty Struct)
    are accepted; a repeated key, invalid UTF-8, a lone surrogate, NaN/Infinity, a non-finite number,
    form feeds as whitespace and nesting deeper than 100 are not. Numbers become floats."""

    MAX_DEPTH = 100  # ParseOptions::kDefaultDepth

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = self.MAX_DEPTH

    # --- lexer -----------------------------------------------------------------------------------------

    def fail(self) -> _JsonError:
        return _JsonError(self.pos)

    def skip_to_token(self) -> int:
        """The next non-whitespace byte; at the end of input this is an error, as in SkipToToken."""
        while self.pos < len(self.data) and self.data[self.pos] in b" \t\r\n":
            self.pos += 1
        if self.pos >= len(self.data):
            raise self.fail()
        return self.data[self.pos]

    def at_eof(self) -> bool:
        while self.pos < len(self.data) and self.data[self.pos] in b" \t\r\n":
            self.pos += 1
        return self.pos >= len(self.data)

    def peek(self, literal: bytes) -> bool:
        """Consume ``literal`` if it comes next (after whitespace)."""
        if self.at_eof() or not self.data.startswith(literal, self.pos):
            return False
        self.pos += len(literal)
        return True

    def expect(self, literal: bytes) -> None:
        self.skip_to_token()
        if not self.data.startswith(literal, self.pos):
            raise self.fail()
        self.pos += len(literal)

    def push(self) -> None:
        if self.depth == 0:
            raise self.fail()
        self.depth -= 1

    # --- values ----------------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        result = self.struct()
        if not self.at_eof():
            raise self.fail()
        return result

    def struct(self) -> dict[str, Any]:
        if self.skip_to_token() == ord("n"):
            self.expect(b"null")
            return {}
        result: dict[str, Any] = {}

        def member(key: str) -> None:
            if key in result:  # ParseMap: "got unexpectedly-repeated repeated map key"
                raise self.fail()
            result[key] = self.value()

        self.visit_object(member)
        return result

    def value(self) -> Any:
        first = self.skip_to_token()
        if first == ord("{"):
            return self.struct()
        if first == ord("["):
            items: list[Any] = []
            self.visit_array(lambda: items.append(self.value()))
            return items
        if first in b"\"'":
            return self.string()
        if first == ord("-") or ord("0") <= first <= ord("9"):
            return self.number()
        for literal, result in ((b"true", True), (b"false", False), (b"null", None)):
            if first == literal[0]:
                self.expect(literal)  # a prefix match: what follows is checked by the enclosing container
                return result
        raise self.fail()

    def visit_object(self, member: Any) -> None:
        self.expect(b"{")
        self.push()
        if self.peek(b"}"):
            self.depth += 1
            return
        has_comma = True
        while True:
            if not has_comma:
                raise self.fail()
            quote = self.skip_to_token()
            key = self.string() if quote in b"\"'" else self.bare_word()
            self.expect(b":")
            member(key)
            has_comma = self.peek(b",")
            if self.peek(b"}"):
                break  # a trailing comma is accepted (legacy mode)
        self.depth += 1

    def visit_array(self, element: Any) -> None:
        self.expect(b"[")
        self.push()
        if self.peek(b"]"):
            self.depth += 1
            return
        has_comma = True
        while True:
            if not has_comma:
                raise self.fail()
            element()
            has_comma = self.peek(b",")
            if self.peek(b"]"):
                break
        self.depth += 1

    def bare_word(self) -> str:
        self.skip_to_token()
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _BARE_WORD:
            self.pos += 1
        word = self.data[start : self.pos].decode("ascii")
        if not word or word[0].isdigit() or word in ("null", "true", "false"):
            raise self.fail()
        return word

    def number(self) -> float:
        self.skip_to_token()
        start = self.pos
        state, previous = "int", 0
        while self.pos < len(self.data):
            char = self.data[self.pos]
            if not self._number_char(char, previous, state):
                break
            if char == ord(".") and state == "int":
                state = "fraction"
            elif char in b"eE" and state != "exponent":
                state = "exponent"
            previous = char
            self.pos += 1
        text = self.data[start : self.pos].decode("ascii")
        digits = text[1:] if text.startswith("-") else text
        if not text or text == "-" or (len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()):
            raise self.fail()
        if text.endswith("."):
            raise self.fail()
        try:
            result = float(text)  # the alphabet is [0-9.eE+-], where float() and absl::SimpleAtod agree
        except ValueError:
            raise self.fail() from None
        if not math.isfinite(result):
            raise self.fail()
        if not self.at_eof() and self.data[self.pos] not in b",]}":
            raise self.fail()
        return result

    @staticmethod
    def _number_char(char: int, previous: int, state: str) -> bool:
        # ParseRawNumber's TakeWhile predicate.
        if ord("0") <= char <= ord("9"):
            return True
        after_digit = ord("0") <= previous <= ord("9")
        if state == "int" and char == ord("-"):
            return not after_digit
        if state == "int" and after_digit and char == ord("."):
            return True
        if state != "exponent" and after_digit and char in b"eE":
            return True
        return previous in b"eE" and char in b"+-"

    def string(self) -> str:
        quote = self.skip_to_token()
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(self.data):
                raise self.fail()
            char = self.data[self.pos]
            self.pos += 1
            if char == quote:
                break
            if char != ord("\\"):
                out.append(char)  # control characters too (legacy mode)
                continue
            if self.pos >= len(self.data):
                raise self.fail()
            escape = self.data[self.pos]
            self.pos += 1
            if escape in b"uU":
                out += self.unicode_escape()
            elif escape in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[escape])
            else:
                raise self.fail()
        try:
            return out.decode("utf-8")  # utf8_range::IsStructurallyValid: the same well-formedness
        except UnicodeDecodeError:
            raise self.fail() from None

    def unicode_escape(self) -> bytes:
        rune = self.hex4()
        if 0xD800 <= rune <= 0xDBFF:
            self.expect(b"\\u")  # Expect() skips whitespace first, even here inside a string
            low = self.hex4()
            if not 0xDC00 <= low <= 0xDFFF:
                raise self.fail()
            rune = 0x10000 + ((rune & 0x3FF) << 10) + (low & 0x3FF)
        elif 0xDC00 <= rune <= 0xDFFF:
            raise self.fail()
        return chr(rune).encode("utf-8")

    def hex4(self) -> int:
        digits = self.data[self.pos : self.pos + 4]
        if len(digits) < 4 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
            raise self.fail()
        self.pos += 4
        return int(digits, 16)


_BARE_WORD = frozenset(b"_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# \' only in legacy mode; \u and \U are decoded apart.
_SIMPLE_ESCAPES = dict(zip(b"\"\\/bfnrt'", b"\"\\/\b\f\n\r\t'", strict=True))


# --- checks (authenticator.cc startVerify, jwt_verify_lib verify.cc) --------------------------------------


def _check(jwt: _Jwt, provider: Provider, now: int, skew: int) -> Rejected | None:
    if now + skew < jwt.nbf:
        return Rejected("Jwt not yet valid")
    if jwt.exp and now > jwt.exp + skew:
        return Rejected("Jwt is expired")
    if provider.audiences:
        allowed = {_sanitised_audience(a) for a in provider.audiences}
        if not any(_sanitised_audience(a) in allowed for a in jwt.audiences):
            return Rejected("Audiences in Jwt are not allowed", audience=True)
    matched = False
    for key in provider.keys.keys:
        # A kid on both sides must agree; a key or token without one matches any. A key's alg must equal the
        # token's; a key without alg takes the token's alg as a hint (see _signature_ok).
        if jwt.kid and key.kid and key.kid != jwt.kid:
            continue
        if key.alg and key.alg != jwt.alg:
            continue
        matched = True
        if _signature_ok(key, jwt):
            return None
    return Rejected("Jwt verification fails" if matched else "Jwks doesn't have key to match kid or alg from Jwt")


def _sanitised_audience(audience: str) -> str:
    """check_audience.cc: "https://x/", "http://x" and "x/" all mean "x"."""
    if not audience:
        return audience
    start = next((len(p) for p in ("http://", "https://") if audience.startswith(p)), 0)
    end = len(audience) - 1 if audience.endswith("/") else len(audience)
    return audience[start:end]


def _signature_ok(key: PublicKey, jwt: _Jwt) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    bits = {"384": 384, "512": 512}.get(jwt.alg[2:], 256)
    if key.kty == "EC":
        # Any alg reaches an EC key without alg; only ES384/ES512 change the hash. The signature is split in
        # half, whatever its length (a trailing odd byte is ignored): r || s, big-endian.
        hash_bits = bits if jwt.alg in ("ES384", "ES512") else 256
        half = len(jwt.signature) // 2
        r = int.from_bytes(jwt.signature[:half], "big")
        s = int.from_bytes(jwt.signature[half : 2 * half], "big")
        if not r or not s:
            return False
        try:
            _ec_key(key).verify(encode_dss_signature(r, s), jwt.signed, ec.ECDSA(_hash(hash_bits)))
        except InvalidSignature:
            return False
        return True
    rsa_key = _rsa_key(key)
    if jwt.alg[:2] not in ("RS", "PS"):
        return False
    # BoringSSL wants a signature exactly as long as the modulus; OpenSSL also takes shorter ones.
    if len(jwt.signature) != (rsa_key.key_size + 7) // 8:
        return False
    hash_ = _hash(bits)
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if jwt.alg.startswith("RS")
        else padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)  # BoringSSL's default: salt = hash
    )
    try:
        rsa_key.verify(jwt.signature, jwt.signed, pad, hash_)
    except InvalidSignature:
        return False
    return True


def _hash(bits: int) -> HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}[bits]


@functools.lru_cache(maxsize=256)
def _rsa_key(key: PublicKey) -> RSAPublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert key.n is not None and key.e is not None
    return rsa.RSAPublicNumbers(_uint(key.e), _uint(key.n)).public_key()


@functools.lru_cache(maxsize=256)
def _ec_key(key: PublicKey) -> EllipticCurvePublicKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    assert key.crv is not None and key.x is not None and key.y is not None
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[key.crv]
    return ec.EllipticCurvePublicNumbers(_uint(key.x), _uint(key.y), curve).public_key()


def _uint(text: str) -> int:
    decoded = _base64url(text)
    assert decoded is not None
    return int.from_bytes(decoded, "big")


def _normalised(payload: Mapping[str, Any]) -> dict[str, Any]:
    """setPayloadMetadata: a string claim is split on ' ' (not tabs), empty pieces dropped; a string with no
    pieces ("" or only spaces) stays a string."""
    claims = dict(payload)
    for name in SPACE_DELIMITED_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            pieces = [piece for piece in value.split(" ") if piece]
            if pieces:
                claims[name] = pieces
    return claims
