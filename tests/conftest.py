"""Shared pytest options: ``--update-goldens`` rewrites expected outputs instead of comparing.

Every test parses back every output it generates, emitted ones included (the CLI skips that for
outputs written by meshgen.render's proven emitters): set here, so CLI processes the tests start
inherit it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from meshgen.targets.contract import VERIFY_EMITTED

os.environ[VERIFY_EMITTED] = "1"

# CI runs are reproducible (derandomized); `--hypothesis-profile=deep` explores 2,000+ random examples.
settings.register_profile("default", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("deep", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/<case>/<target files> from the current generator. Review every diff.",
    )


@pytest.fixture(scope="session")
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))
