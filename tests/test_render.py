"""The fast paths of meshgen.render give exactly what PyYAML's generic safe paths give."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.render import _dump_block, _Dumper, json_document, load_yaml, load_yaml_all, to_yaml, yaml_block
from tests.support.goldens import GOLDEN_DIR

TRICKY_TEXTS = [
    "a: 1\nb: true\nc: null\nd: ~\ne: 1.5\nf: 0x1F\ng: '1'\nh: 2001-12-14\n",
    "- a\n- [1, 'x', {k: v}]\n- {}\n- []\n- ''\n",
    "base: &b {x: 1, y: two}\nuse:\n  <<: *b\n  y: three\nlist: [*b, *b]\n",
    "dup: 1\ndup: 2\nother: x\n",
    "1: int key\ntrue: bool key\n=: value key\n",
    "plain\n",
    "",
    "'quoted: yes'\n",
    "!!str 12\n",
    "- !!binary aGVsbG8=\n- !!set {a, b}\n- !!omap [a: 1]\n",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_load_yaml_equals_safe_load(text: str) -> None:
    assert load_yaml(text) == yaml.safe_load(text)


def test_load_yaml_refuses_what_safe_load_refuses() -> None:
    text = "? [a, b]\n: unhashable key\n"
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(text)
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml(text)


def test_load_yaml_all_equals_safe_load_all() -> None:
    text = "---\n".join(t for t in TRICKY_TEXTS if t)
    assert load_yaml_all(text) == list(yaml.safe_load_all(text))


def _generic_dump(value: Any, **options: Any) -> str:
    """The generic representer path, the reference for _Dumper's direct one."""

    class Generic(_Dumper):  # type: ignore[misc,valid-type]
        def represent_data(self, data: Any) -> yaml.Node:
            return super(_Dumper, self).represent_data(data)  # type: ignore[no-any-return]

    return yaml.dump(value, Dumper=Generic, **options)


VALUES: list[Any] = [
    {"a": [1, True, None, "yes", "No", "", "x: y", "- z", "#", "\u00e9", "tab\there", "line\nbreak"]},
    {"nested": {"deep": [{"k": "v"}, [], {}, [[]], 0, -1, 2.5]}, "": "empty key", "on": "off"},
    [{"x": ("tuple", 1)}, {"b": 2, "a": 1}],
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(
    "options",
    [
        {"sort_keys": False, "default_flow_style": False, "width": 1 << 30, "indent": 2},
        {"default_flow_style": True},
        {"default_flow_style": None},
        {},
    ],
)
def test_dumper_equals_generic_representer(value: Any, options: dict[str, Any]) -> None:
    assert yaml.dump(value, Dumper=_Dumper, **options) == _generic_dump(value, **options)


def test_to_yaml_round_trips() -> None:
    value = {"k": ["y", "n", "1", {"m": "v"}], "e": {}}
    assert load_yaml("key:" + to_yaml(value, 0) + "\n") == {"key": value}


# --- the emitters whose outputs are not parsed back at run time (Rendered.emitted) --------------------

# Strings an attacker controls reach the output (header values, model names in JSON bodies, JWT claims):
# every character class, indicators at every position, YAML 1.1 booleans and numbers, long keys.
HOSTILE_STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "y",
            "N",
            "on",
            "Off",
            "null",
            "~",
            "8000",
            "0x1f",
            "1e3",
            ".inf",
            "2026-12-01",
            "=",
            "<<",
            "-",
            "- a",
            "a: b",
            "a:",
            "a #b",
            "#a",
            "@type",
            ":path",
            "[x]",
            "{y}",
            "|",
            ">",
            "'q'",
            '"d"',
            "a\nb",
            "tail\n",
            "\u2028",
            "\x85",
            "\ufeff",
            "\x7f",
            "\U0001f600",
            " lead",
            "trail ",
            "x" * 140,
            "/v2/models/m/",
        ]
    ),
)
TREES = st.recursive(
    st.one_of(HOSTILE_STRINGS, st.integers(), st.booleans(), st.none()),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(HOSTILE_STRINGS, children, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=400)
@given(
    value=st.one_of(
        st.lists(TREES, min_size=1, max_size=4), st.dictionaries(HOSTILE_STRINGS, TREES, min_size=1, max_size=4)
    )
)
def test_yaml_block_is_pyyaml_and_round_trips(value: Any) -> None:
    text = yaml_block(value)
    assert text == _dump_block(value)
    assert yaml.safe_load(text) == value
    assert load_yaml("key:" + to_yaml(value, 0) + "\n") == {"key": value}


@settings(max_examples=400)
@given(value=TREES)
def test_json_document_round_trips(value: Any) -> None:
    assert json.loads(json_document(value)) == value


def test_emitters_reproduce_every_golden() -> None:
    """Every YAML document of every golden, written again by the fast emitter: byte for byte PyYAML's."""
    documents = [
        document
        for path in sorted(GOLDEN_DIR.glob("*/*.yaml"))
        for document in load_yaml_all(path.read_text(encoding="utf-8"))
        if isinstance(document, dict | list) and document
    ]
    assert len(documents) > 100
    for document in documents:
        assert yaml_block(document) == _dump_block(document)
    for path in sorted(GOLDEN_DIR.glob("*/*.json")):
        text = path.read_text(encoding="utf-8")
        assert json_document(json.loads(text)) == text
