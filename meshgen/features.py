"""What a spec can ask a target to enforce. Every target's capability table has one row per feature.

Identity kinds are features (a client identified by principals needs a target that can check them),
and so are the ways a grant can be narrowed (per model on HTTP paths, from a gRPC message, from an OpenAI JSON body) and
modes of output (dry-run). Adding a feature here makes every target's capability table incomplete
until it says what it does with it (tests/test_targets.py).
"""

from __future__ import annotations

from enum import Enum


class Feature(Enum):
    PRINCIPALS = "principals"
    NAMESPACES = "namespaces"
    IP_BLOCKS = "ipBlocks"
    HEADERS = "headers"
    JWT = "jwt"
    PER_MODEL_HTTP = "per-model HTTP grants"
    PER_MODEL_GRPC = "per-model gRPC grants"
    PER_MODEL_JSON = "per-model OpenAI grants (JSON body)"
    DRY_RUN = "dry-run"

    @property
    def is_identity(self) -> bool:
        return self in IDENTITY_FEATURES

    @property
    def narrows_grants(self) -> bool:
        """A feature whose absence would leave a grant wider than the spec wrote it."""
        return self in (Feature.PER_MODEL_HTTP, Feature.PER_MODEL_GRPC, Feature.PER_MODEL_JSON)


IDENTITY_FEATURES = frozenset({Feature.PRINCIPALS, Feature.NAMESPACES, Feature.IP_BLOCKS, Feature.HEADERS, Feature.JWT})
