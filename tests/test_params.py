"""pylayers/params.py: the one param_str parser (YAML, never eval; unknown and missing keys refused)."""

from __future__ import annotations

import pytest

from pylayers.params import load_param_str, param_bool, param_int, parse_params
from rankiqa.errors import InputError


def test_yaml_and_json_mappings_read_and_empty_text_is_no_keys():
    assert load_param_str("{a: 1, b: [2, 3]}", "L") == {"a": 1, "b": [2, 3]}
    assert load_param_str('{"a": true}', "L") == {"a": True}
    assert load_param_str("", "L") == {} and load_param_str(None, "L") == {}


def test_python_expressions_are_text_not_code():
    with pytest.raises(InputError, match="must be a mapping"):
        load_param_str("__import__('os').getcwd()", "L")


def test_bad_text_names_where_it_came_from_with_the_prefix(tmp_path):
    source = tmp_path / "net.prototxt"
    with pytest.raises(InputError) as caught:
        load_param_str("{a: [1", source, prefix="layer 'data': ")
    assert caught.value.path == str(source)
    assert caught.value.message.startswith("layer 'data': param_str is not valid YAML")
    with pytest.raises(InputError, match="layer 'data': param_str must be a mapping"):
        load_param_str("[1, 2]", source, prefix="layer 'data': ")


def test_defaults_fill_in_and_unknown_or_missing_keys_are_refused():
    assert parse_params("{b: 5}", "L", {"a": 1, "b": 2}) == {"a": 1, "b": 5}
    with pytest.raises(InputError, match=r"unknown key\(s\) \['c'\]; known: \['a', 'b'\]"):
        parse_params("{c: 1}", "L", {"a": 1}, required=("b",))
    with pytest.raises(InputError, match=r"missing required key\(s\) \['b'\]"):
        parse_params("{a: 1}", "L", {"a": 1}, required=("b",))


def test_typed_values_are_checked():
    assert param_int({"n": 3}, "n", "L", 1) == 3
    for value in (True, 2.0, "3"):
        with pytest.raises(InputError, match="n must be an integer"):
            param_int({"n": value}, "n", "L")
    with pytest.raises(InputError, match="n must be >= 1, got 0"):
        param_int({"n": 0}, "n", "L", 1)
    assert param_bool({"f": False}, "f", "L") is False
    with pytest.raises(InputError, match="f must be true or false"):
        param_bool({"f": "yes"}, "f", "L")
