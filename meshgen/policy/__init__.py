"""Stage 3: target-neutral rules, and the reference ``decide`` every target is tested against."""

from meshgen.policy.compile import compile_policy
from meshgen.policy.decide import Decision, Identity, Request, TokenRefusal, decide
from meshgen.policy.identity import ClientIdentity
from meshgen.policy.model import GrpcGrant, HttpGrant, Policy, PolicyRule

__all__ = [
    "ClientIdentity",
    "Decision",
    "GrpcGrant",
    "HttpGrant",
    "Identity",
    "Policy",
    "PolicyRule",
    "Request",
    "TokenRefusal",
    "compile_policy",
    "decide",
]
