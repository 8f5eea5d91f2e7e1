"""Hostile input: every malformed spec is refused with one line and exit 2, fast, with bounded memory."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.errors import SpecError
from meshgen.spec import load_spec_text

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "triton-access.yaml").read_text()
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(20)
)
HOSTILE = {
    "billion-laughs": BILLION_LAUGHS,
    "deep-flow": "[" * 50_000,
    "deep-block": "".join("  " * i + "a:\n" for i in range(200)),
    "huge": "apiVersion: " + "x" * 3_000_000,
    "non-utf8": b"apiVersion: \xff\xfe\n",
    "nul": "apiVersion: meshgen/v1\x00",
    "multi-document": EXAMPLE + "\n---\n" + EXAMPLE,
    "python-tag": "!!python/object/apply:os.system ['true']",
    "merge-key": "base: &b {a: 1}\nx:\n  <<: *b\n",
    "scalar": "42",
    "tab-indent": "apiVersion:\n\t- x",
}


def assert_one_line_each(error: SpecError) -> None:
    """Each error is one ``file:line:col: error:`` line; several come at once (SpecErrors), capped."""
    lines = str(error).split("\n")
    assert all(line.startswith("spec.yaml:") and ": error: " in line for line in lines[:20]), lines
    assert len(lines) <= 21 and (len(lines) <= 20 or lines[20].startswith("... and "))
    assert all(lines.count(line) == 1 for line in lines)


def assert_refused(text: str | bytes) -> SpecError:
    try:
        load_spec_text(text, "spec.yaml", {})
    except SpecError as error:
        assert_one_line_each(error)
        return error
    pytest.fail("hostile input was accepted")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_are_refused(name: str) -> None:
    assert_refused(HOSTILE[name])


def test_every_truncation_of_the_example_is_refused_or_valid() -> None:
    for end in range(0, len(EXAMPLE), 7):
        try:
            load_spec_text(EXAMPLE[:end], "spec.yaml", {})
        except SpecError as error:
            assert_one_line_each(error)


def _wrong_types(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every location in the example, each paired with values of the wrong type for it."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _wrong_types(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _wrong_types(value, (*path, i))
    for bad in ([1, 2], {"k": "v"}, 3.5, True, None, "x" * 300):
        if type(bad) is not type(node):
            out.append((path, bad))
    return out


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _replace(data[path[0]], path[1:], value)  # type: ignore[index]
    return copy


def test_wrong_types_in_every_field_are_refused_cleanly() -> None:
    example = yaml.safe_load(EXAMPLE)
    accepted = 0
    for path, bad in _wrong_types(example):
        if not path:
            continue
        text = yaml.safe_dump(_replace(example, path, bad))
        try:
            load_spec_text(text, "spec.yaml", {})
            accepted += 1  # e.g. a model name replaced by a valid-looking string
        except SpecError as error:
            assert_one_line_each(error)
    assert accepted < 20


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        load_spec_text(data, "spec.yaml", {})
    except SpecError as error:
        assert_one_line_each(error)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(EXAMPLE) - 1), st.sampled_from(list(";{}'\"$|*\n\x00\t:-[]&!%@`#\\")))
def test_mutated_example_never_crashes(position: int, character: str) -> None:
    try:
        load_spec_text(EXAMPLE[:position] + character + EXAMPLE[position + 1 :], "spec.yaml", {})
    except SpecError as error:
        assert_one_line_each(error)


def _limited_memory() -> None:
    limit = 512 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("name", ["billion-laughs", "deep-flow", "huge", "non-utf8"])
def test_cli_refuses_hostile_input_in_bounded_time_and_memory(name: str) -> None:
    payload = HOSTILE[name]
    data = payload if isinstance(payload, bytes) else payload.encode()
    result = subprocess.run(
        [sys.executable, "-m", "meshgen", "istio", "-"],
        input=data,
        capture_output=True,
        timeout=20,
        preexec_fn=_limited_memory,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in lines[0]
