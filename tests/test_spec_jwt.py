"""JWT clients in the spec: what loads, what is refused (file:line:col), and what each target does with them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from meshgen.errors import SpecError, TargetError
from meshgen.policy import compile_policy
from meshgen.policy.identity import Claim, Jwt
from meshgen.spec import LoadedSpec, load_spec_text
from meshgen.targets.registry import TARGETS
from tests.support.jwt_tokens import jwks, provider_key

HEAD = """\
apiVersion: meshgen/v1
kind: TritonAccessPolicy
metadata: {name: triton, namespace: inference}
workload:
  selector: {app: triton}
"""
KEY, OTHER = provider_key("login"), provider_key("other", "EC")
ISSUER = "https://login.example.com/"


def client(jwt: str, extra: str = "") -> str:
    """A spec body with client ``a`` (line 7) whose jwt is the flow mapping ``jwt``, used by a rule."""
    return f"clients:\n  a: {{jwt: {jwt}{extra}}}\nrules:\n  - {{allow: [inference], from: [a]}}\n"


def load(body: str, directory: Path) -> LoadedSpec:
    (directory / "keys.json").write_text(jwks(KEY))
    (directory / "other.json").write_text(jwks(OTHER))
    (directory / "private.json").write_text(json.dumps({"keys": [KEY.jwk(with_private=True)]}))
    (directory / "secret.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    (directory / "enc-only.json").write_text(json.dumps({"keys": [{**KEY.jwk(), "use": "enc"}]}))
    (directory / "not-json.json").write_text("{keys: ")
    (directory / "empty.json").write_text('{"keys": []}')
    return load_spec_text(HEAD + textwrap.dedent(body), "spec.yaml", {}, base=directory)


GOOD = f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}}}"

# (spec body, expected line, message fragment)
ERRORS = [
    (client("{issuer: login.example.com, jwks: {file: keys.json}}"), 7, "is not a URL"),
    (client("{issuer: 'ftp://login.example.com/', jwks: {file: keys.json}}"), 7, "is not a URL"),
    (client("{issuer: 'https://*.example.com/', jwks: {file: keys.json}}"), 7, "wildcard"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: missing.json}}}}"), 7, "cannot read jwt.jwks.file"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: not-json.json}}}}"), 7, "not a usable JWKS"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: empty.json}}}}"), 7, "no usable signing key"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: enc-only.json}}}}"), 7, "no usable signing key"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: private.json}}}}"), 7, "private key material"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: secret.json}}}}"), 7, "not a usable JWKS"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{inline: '{{}}'}}}}"), 7, "not a usable JWKS"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{}}}}"), 7, "exactly one of 'file'"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json, inline: x}}}}"), 7, "exactly one of 'file'"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, claims: {{level: 3}}}}"), 7, "must be strings"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, claims: {{admin: true}}}}"), 7, "must be strings"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, claims: {{sub: x}}}}"), 7, "use jwt.subject"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, claims: {{exp: '1'}}}}"), 7, "checks it itself"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, claims: {{scope: 'a b'}}}}"), 7, "space-delimited"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, audiences: []}}"), 7, "at least 1"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, subject: ' x'}}"), 7, "printable"),
    (client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, tenant: x}}"), 7, "unknown field"),
    (
        f"clients:\n  a: {{jwt: {GOOD}}}\n  b: {{jwt: {{issuer: '{ISSUER}', jwks: {{file: other.json}}}}}}\n",
        8,
        "with other keys",
    ),
    (f"clients:\n  a: {{jwt: {GOOD}}}\n  b: {{headers: {{Authorization: x}}}}\n", 8, "Authorization header"),
]


@pytest.mark.parametrize(("body", "line", "fragment"), ERRORS, ids=[e[2] + f"-{i}" for i, e in enumerate(ERRORS)])
def test_invalid_jwt_clients_are_refused_at_their_line(body: str, line: int, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as raised:
        load(body, tmp_path)
    error = raised.value
    assert fragment in error.message, error.message
    assert error.location is not None and error.location.line == line, str(error)


def test_a_jwt_client_compiles_to_one_provider_per_issuer(tmp_path: Path) -> None:
    body = textwrap.dedent(
        f"""\
        clients:
          a: {{jwt: {{issuer: '{ISSUER}', jwks: {{file: keys.json}}, audiences: [triton], subject: s}}}}
          b: {{jwt: {{issuer: '{ISSUER}', jwks: {{inline: '{jwks(KEY)}'}}, audiences: [x, triton]}}}}
          c: {{jwt: {{issuer: 'https://other.example', jwks: {{file: other.json}}, claims: {{groups: g}}}}}}
          unused: {{jwt: {{issuer: 'https://unused.example', jwks: {{file: other.json}}}}}}
        rules:
          - {{allow: [inference], from: [a, b, c]}}
        """
    )
    loaded = load(body, tmp_path)
    assert loaded.jwks_files == {"a": "keys.json", "c": "other.json", "unused": "other.json"}
    policy = compile_policy(loaded)
    assert [(p.issuer, p.audiences) for p in policy.jwt_providers] == [
        ("https://login.example.com/", ("triton", "x")),
        ("https://other.example", None),
    ]
    assert json.loads(policy.jwt_providers[0].jwks) == {"keys": [KEY.jwk()]}
    assert policy.clients[0].kind(Jwt) == Jwt(ISSUER, "s", ("triton",), ())
    assert policy.clients[2].kind(Jwt) == Jwt("https://other.example", None, None, (Claim("groups", "g"),))


def test_nginx_refuses_a_jwt_client_naming_it_and_the_others_encode_it(tmp_path: Path) -> None:
    policy = compile_policy(load(client(GOOD), tmp_path))
    for target in TARGETS:
        if target.name == "nginx":
            with pytest.raises(TargetError, match=r"client 'a' \(used by rules\[0\]\) is identified by jwt"):
                target.generate(policy, target.options_type())
        else:
            assert target.generate(policy, target.options_type()).text


@pytest.mark.parametrize(
    ("field", "value"), [("subject", "'*admin'"), ("audiences", "['triton*']"), ("claims", "{groups: '*'}")]
)
def test_istio_refuses_values_it_would_read_as_wildcards(field: str, value: str, tmp_path: Path) -> None:
    policy = compile_policy(
        load(client(f"{{issuer: '{ISSUER}', jwks: {{file: keys.json}}, {field}: {value}}}"), tmp_path)
    )
    istio = next(t for t in TARGETS if t.name == "istio")
    with pytest.raises(TargetError, match="wildcard"):
        istio.generate(policy, istio.options_type())
