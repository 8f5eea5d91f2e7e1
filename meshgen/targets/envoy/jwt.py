"""Verified JWTs on Envoy: the ``jwt_authn`` filter, and RBAC predicates on the payload it verified.

``jwt_authn`` has one provider per issuer (local JWKS, the issuer's audiences) and reads a token only
from ``Authorization: Bearer <token>`` (``from_headers`` set, so not from ``?access_token``). Its
requirement is "any provider, or no token at all": a request without a token goes on anonymous, a token
that fails verification is answered 401 (403 for an audience outside the issuer's) before any RBAC
filter, and a verified token is removed from the request (Triton never sees it) and its payload written
to dynamic metadata (``envoy.filters.http.jwt_authn`` / ``payload``), which only this filter can write.

An Authorization header still present after it was not read as a token (``bearer`` in lower case,
``Basic ...``): the RBAC filter's first deny entry refuses it (``UNREAD_AUTHORIZATION``,
meshgen.targets.envoy.rbac), so no unverified credential ever reaches Triton or matches a rule. The RBAC
predicates on the payload are the Jwt encoder there.
"""

from __future__ import annotations

from typing import Any

from meshgen.policy.model import Policy
from meshgen.spec.model import SPACE_DELIMITED_CLAIMS

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
PAYLOAD_KEY = "payload"  # the metadata key of the verified payload (Istio uses the same)
FAILURE_KEY = "failure"  # the metadata key of why verification failed (status code and message)
AUDIENCE_FAILURE = "Audiences in Jwt are not allowed"  # jwt_verify_lib's message for JwtAudienceNotAllowed
BEARER = "Bearer "
AUTHORIZATION = "authorization"
UNREAD_AUTHORIZATION = "authorization-not-a-verified-token"


def jwt_filter(policy: Policy, *, dry_run: bool) -> dict[str, Any] | None:
    """The jwt_authn filter for the policy's issuers (None: no rule uses a JWT client).

    A dry run verifies tokens (so shadow rules see the payload) but lets failures through.
    """
    if not policy.jwt_providers:
        return None
    providers: dict[str, Any] = {}
    for provider in policy.jwt_providers:
        config: dict[str, Any] = {"issuer": provider.issuer}
        if provider.audiences is not None:
            config["audiences"] = list(provider.audiences)
        config |= {
            "local_jwks": {"inline_string": provider.jwks},
            "from_headers": [{"name": AUTHORIZATION, "value_prefix": BEARER}],
            "payload_in_metadata": PAYLOAD_KEY,
            "failed_status_in_metadata": FAILURE_KEY,
            # Istio splits these claims into lists; so does this output, so a spec means the same on both.
            "normalize_payload_in_metadata": {"space_delimited_claims": list(SPACE_DELIMITED_CLAIMS)},
        }
        providers[provider.issuer] = config
    fallback: dict[str, Any] = {"allow_missing_or_failed": {}} if dry_run else {"allow_missing": {}}
    requirement = {"requires_any": {"requirements": [*({"provider_name": p} for p in providers), fallback]}}
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": JWT_TYPE,
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requirement}],
        },
    }
