"""rankiqa.lists: the '<path> <value>' format, with the byte-order mark and tabs every reader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankiqa.errors import InputError
from rankiqa.lists import read_list, split_path_value, write_list

BOM = "\ufeff"


def test_split_path_value_takes_the_last_field_after_spaces_or_tabs() -> None:
    assert split_path_value("a/b.png 3.5") == ("a/b.png", "3.5")
    assert split_path_value("a/b.png\t3.5\n") == ("a/b.png", "3.5")
    assert split_path_value("my dir/b c.png \t 2") == ("my dir/b c.png", "2")
    assert split_path_value("lonely") is None


def test_read_list_accepts_a_byte_order_mark_and_tabs(tmp_path: Path) -> None:
    for name in ("x.png", "y z.png"):
        (tmp_path / name).write_bytes(b"")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{BOM}x.png\t4.5\ny z.png 1\n", encoding="utf-8")
    assert read_list(listed) == [(str(tmp_path / "x.png"), 4.5), (str(tmp_path / "y z.png"), 1.0)]


def test_write_then_read_round_trip_and_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    write_list(listed, [("/a b/c.png", 2.0), ("/d.png", 0.25)])
    assert read_list(listed, check_files=False) == [("/a b/c.png", 2.0), ("/d.png", 0.25)]
    listed.write_text("/d.png 1\n/e.png\n")
    with pytest.raises(InputError, match="expected '<path> <value>'") as caught:
        read_list(listed, check_files=False)
    assert (caught.value.path, caught.value.line) == (str(listed), 2)
