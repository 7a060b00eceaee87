"""What derived data were made from (``rankiqa.provenance``): file records, their differences (a touched
file whose content is the same is unchanged where a hash was recorded), and the messages naming them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rankiqa import provenance
from rankiqa.provenance import Changes

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2's example


def _touch(path: Path, seconds: int = 1) -> None:
    """Move the modification time forward, the content unchanged."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def test_digests_of_files_and_of_json_definitions(tmp_path: Path) -> None:
    (tmp_path / "abc").write_bytes(b"abc")
    assert provenance.sha256_file(tmp_path / "abc") == ABC_SHA256
    assert provenance.sha256_file(tmp_path / "abc", chunk=1) == ABC_SHA256  # the same in any block size
    assert provenance.sha256_json({"b": [1, 2], "a": "x"}) == provenance.sha256_json({"a": "x", "b": [1, 2]})
    assert provenance.sha256_json({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()


def test_records_are_size_and_time_plus_a_hash_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"abc")
    size_time = [3, path.stat().st_mtime_ns]
    assert provenance.file_record(path) == size_time
    assert provenance.file_record(path, with_hash=True) == [*size_time, ABC_SHA256]
    assert provenance.file_record(tmp_path / "gone") == provenance.MISSING == [-1, -1]
    (tmp_path / "big.bin").write_bytes(b"x" * 10)
    records = provenance.fingerprint({"small": path, "big": tmp_path / "big.bin", "gone": tmp_path / "no"},
                                     hash_below=5)
    big = [10, (tmp_path / "big.bin").stat().st_mtime_ns]
    assert records == {"small": [*size_time, ABC_SHA256], "big": big, "gone": [-1, -1]}


def test_folder_files_are_every_visible_file_by_relative_path(tmp_path: Path) -> None:
    for name in ("b.png", "sub/a b.png", ".hidden", ".cache/x.png", "sub/.lock"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "empty").mkdir()
    assert provenance.folder_files(tmp_path) == {"b.png": tmp_path / "b.png",
                                                 "sub/a b.png": tmp_path / "sub/a b.png"}


def test_compare_tells_added_removed_and_modified_files(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("same", "edited", "gone", "touched", "touched_nohash")}
    for name, path in files.items():
        path.write_text(name)
    old = {name: provenance.file_record(path, with_hash=name != "touched_nohash")
           for name, path in files.items()}
    files["edited"].write_text("edited, longer")
    files["gone"].unlink()
    _touch(files["touched"])
    _touch(files["touched_nohash"])
    (tmp_path / "new").write_text("new")
    changes = provenance.compare(old, {**files, "new": tmp_path / "new"})
    assert (changes.added, changes.removed, changes.modified) == (["new"], ["gone"],
                                                                  ["edited", "touched_nohash"])
    # a touched file with a recorded hash is unchanged; its record takes the new time (no rehash next time)
    assert changes.records["touched"] == provenance.file_record(files["touched"], with_hash=True)
    assert changes.records["edited"][2] == provenance.sha256_file(files["edited"])
    del files["gone"]
    assert changes and not provenance.compare(changes.records, {**files, "new": tmp_path / "new"})


def test_diff_records_compares_sizes_and_times_without_reading_files() -> None:
    old = {"a": [1, 10, "h"], "b": [2, 20], "c": [3, 30], "d": [-1, -1]}
    new = {"a": [1, 10], "b": [2, 21], "c": [-1, -1], "d": [4, 40], "e": [5, 50]}
    changes = provenance.diff_records(old, new)
    assert (changes.added, changes.removed, changes.modified) == (["d", "e"], ["c"], ["b"])
    assert changes.records == new


def test_content_records_compare_byte_for_byte(tmp_path: Path) -> None:
    files = {"train.txt": tmp_path / "train.txt", "test.txt": tmp_path / "test.txt"}
    for path in files.values():
        path.write_text("a.png 1.00\n")
    recorded = provenance.content(files)
    assert set(recorded) == {"train.txt", "test.txt"}
    _touch(files["train.txt"])
    assert not provenance.compare_content(recorded, files)  # the same bytes
    files["test.txt"].write_text("a.png 2.00\n")
    files["train.txt"].unlink()
    changes = provenance.compare_content(recorded, files)
    assert (changes.removed, changes.modified) == (["train.txt"], ["test.txt"])


def test_messages_list_five_names_then_count_the_rest() -> None:
    changes = Changes(added=["n.png"], modified=[f"{i}.png" for i in range(7)])
    assert changes.describe() == "7 modified (0.png, 1.png, 2.png, 3.png, 4.png and 2 more), 1 added (n.png)"
    assert Changes().describe() == "" and not Changes()


def test_differences_name_changed_settings_and_skip_keys_not_recorded() -> None:
    old = {"seed": 0, "splits": 1, "types": ["GB"]}
    new = {"seed": 1, "splits": 1, "types": ["GB"], "rule": "sorted"}
    assert provenance.differences(old, new, ["seed", "splits", "types", "rule"]) == ["seed: 0 -> 1"]


def test_read_json_is_none_for_what_is_not_a_readable_object(tmp_path: Path) -> None:
    for name, text in (("ok.json", '{"a": 1}'), ("list.json", "[1]"), ("bad.json", "{"), ("bin.json", None)):
        path = tmp_path / name
        if text is None:
            path.write_bytes(b"\xff\xfe")
        else:
            path.write_text(text)
    assert provenance.read_json(tmp_path / "ok.json") == {"a": 1}
    for name in ("list.json", "bad.json", "bin.json", "gone.json"):
        assert provenance.read_json(tmp_path / name) is None
