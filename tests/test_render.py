"""The fast paths of meshgen.render give exactly what PyYAML's generic safe paths give."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshgen.render import _Dumper, load_yaml, load_yaml_all, to_yaml

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
