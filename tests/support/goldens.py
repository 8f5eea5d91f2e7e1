"""Golden cases: ``tests/golden/<case>/`` holds ``spec.yaml`` and exactly the files ``meshgen all`` writes
for it, plus ``<output>.error`` for each output a target refuses, plus variant files for other options
(``<stem>.<option><ext>``, e.g. ``nginx.dry-run.conf``) for the cases in ``VARIANT_CASES``.

``pytest --update-goldens`` rewrites the directory (and removes files no longer expected). A golden is a
security claim: review every diff as code and say in the commit why it changed.
"""

from __future__ import annotations

import difflib
from pathlib import Path, PurePath

import pytest

from meshgen.bundle import build_bundle
from meshgen.errors import TargetError
from meshgen.policy import compile_policy
from meshgen.spec import LoadedSpec, load_spec_text
from meshgen.targets.registry import TARGETS

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
SPEC = "spec.yaml"
# Cases that also store every target's variants (dry-run, full, ...): enough to review each option's
# effect on a spec with deny and allow rules, addresses and headers, without doubling every golden.
VARIANT_CASES = frozenset({"headers-and-ips", "deny-allow-overlap"})


# Ambient copies of golden specs (mesh.mode: ambient): only istio.yaml differs from their sidecar twin.
AMBIENT_PREFIX = "ambient-"


def all_golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / SPEC).is_file())


def golden_cases() -> list[str]:
    """The sidecar-mode cases: what every target's tests run on (an ambient copy would repeat its twin)."""
    return [case for case in all_golden_cases() if not case.startswith(AMBIENT_PREFIX)]


def ambient_cases() -> list[str]:
    """The ambient-mode cases (``ambient-<twin>``): tests/test_istio_ambient.py."""
    return [case for case in all_golden_cases() if case.startswith(AMBIENT_PREFIX)]


def cases_generated_by(output: str) -> list[str]:
    """Golden cases for which ``meshgen all`` writes ``output`` (its target does not refuse the spec)."""
    return [case for case in golden_cases() if not (GOLDEN_DIR / case / error_name(output)).exists()]


def load_case(case: str) -> LoadedSpec:
    """The case's spec, named ``<case>/spec.yaml`` in diagnostics (stable in goldens wherever the checkout is)."""
    directory = GOLDEN_DIR / case
    return load_spec_text((directory / SPEC).read_bytes(), f"{case}/{SPEC}", base=directory)


def error_name(output: str) -> str:
    return f"{PurePath(output).stem}.error"


def variant_name(output: str, suffix: str) -> str:
    path = PurePath(output)
    return f"{path.stem}.{suffix}{path.suffix}"


def expected_files(case: str) -> dict[str, str]:
    """Every file the case's golden directory must hold besides spec.yaml."""
    policy = compile_policy(load_case(case))
    bundle = build_bundle(policy)
    files = dict(bundle.files)
    for name, error in bundle.skipped.items():
        files[error_name(name)] = f"{error}\n"
    if case in VARIANT_CASES:
        for target in TARGETS:
            for variant in target.variants:
                if variant.output not in bundle.files:
                    continue
                try:
                    files[variant_name(variant.output, variant.suffix)] = target.generate(policy, variant.options).text
                except TargetError as error:
                    files[error_name(variant_name(variant.output, variant.suffix))] = f"{error}\n"
    return dict(sorted(files.items()))


def assert_golden_directory(case: str, update: bool) -> None:
    """The directory holds exactly the expected files with exactly the expected contents."""
    directory = GOLDEN_DIR / case
    expected = expected_files(case)
    present = {p.name for p in directory.iterdir() if p.is_file() and p.name != SPEC}
    if update:
        for name, text in expected.items():
            (directory / name).write_text(text, encoding="utf-8")
        for name in present - expected.keys():
            (directory / name).unlink()
        return
    problems = [f"missing golden {case}/{name}" for name in sorted(expected.keys() - present)]
    problems += [f"unexpected file {case}/{name} (no output writes it)" for name in sorted(present - expected.keys())]
    for name in sorted(expected.keys() & present):
        have = (directory / name).read_text(encoding="utf-8")
        if have != expected[name]:
            problems.append(
                "".join(
                    difflib.unified_diff(
                        have.splitlines(keepends=True),
                        expected[name].splitlines(keepends=True),
                        f"golden/{case}/{name}",
                        "generated",
                    )
                )
            )
    if problems:
        pytest.fail(
            "golden directory differs (rerun with --update-goldens if intended, and review):\n" + "\n".join(problems)
        )
