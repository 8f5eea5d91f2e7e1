"""Triton's endpoints per API category, loaded from the packaged data file ``triton.yaml``."""

from meshgen.catalog.model import (
    ANY_SEGMENT,
    CATEGORIES,
    Catalog,
    GrpcMethod,
    HttpEndpoint,
    HttpMatch,
    load_catalog,
)

__all__ = ["ANY_SEGMENT", "CATEGORIES", "Catalog", "GrpcMethod", "HttpEndpoint", "HttpMatch", "load_catalog"]
