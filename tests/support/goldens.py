"""Golden cases: ``tests/golden/<case>/spec.yaml`` beside one expected file per target."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from meshgen.spec import LoadedSpec, load_spec

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"


def golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / "spec.yaml").is_file())


def load_case(case: str) -> LoadedSpec:
    return load_spec(str(GOLDEN_DIR / case / "spec.yaml"))


def assert_golden(case: str, filename: str, actual: str, update: bool) -> None:
    """Compare with the stored golden; a missing golden fails unless --update-goldens is given."""
    path = GOLDEN_DIR / case / filename
    if update:
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"missing golden {path.relative_to(GOLDEN_DIR.parent)}; run pytest --update-goldens and review it")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{case}/{filename}",
                "generated",
            )
        )
        pytest.fail(f"output differs from golden (rerun with --update-goldens if intended):\n{diff}")
