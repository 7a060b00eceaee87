"""rankiqa.manifest: the rank-set manifest's writer and readers, and the ranking batch make-up."""

from __future__ import annotations

import pytest

from rankiqa import manifest
from rankiqa.errors import InputError


def _rows(references=("a", "b"), types=("GB", "JPEG"), levels=2, split="train"):
    return [(ref, kind, level, f"{kind}/{kind}{level}/{ref}.png" if level else f"pristine/{ref}.png", split)
            for ref in references for kind in types for level in range(levels + 1)]


def test_the_written_manifest_reads_back_as_a_complete_grid(tmp_path):
    path = tmp_path / manifest.MANIFEST_NAME
    path.write_text(manifest.manifest_text([*_rows(), *_rows(references=("c",), split="test")]))
    assert path.read_text().splitlines()[0] == "reference,type,level,path,split"
    rank_set = manifest.read_manifest(path, "train")
    assert (rank_set.references, rank_set.types, rank_set.levels) == (["a", "b"], ["GB", "JPEG"], [0, 1, 2])
    assert rank_set.max_level == 2 and rank_set.paths[("b", "JPEG", 1)] == "JPEG/JPEG1/b.png"
    assert rank_set.lines[("a", "GB", 0)] == 2
    assert manifest.manifest_levels(path) == (2, {"train": 2, "test": 1})
    (tmp_path / "GB").mkdir()
    assert manifest.manifest_images(tmp_path)[0] == tmp_path / "GB/GB1/a.png"


def test_a_missing_column_or_a_bad_level_names_the_file_and_line(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("reference,type,path,split\na,GB,x.png,train\n")
    with pytest.raises(InputError, match="lacks column") as err:
        manifest.manifest_levels(path)
    assert (err.value.path, err.value.line) == (str(path), 1)
    path.write_text(manifest.manifest_text(_rows()).replace(",GB,1,", ",GB,one,", 1))
    with pytest.raises(InputError, match="'one' is not an integer") as err:
        manifest.manifest_levels(path)
    assert err.value.line == 3
    path.write_text(manifest.manifest_text(_rows()).replace(",GB,1,", ",GB,-1,", 1))
    for read in (manifest.manifest_levels, lambda p: manifest.read_manifest(p, "train")):
        with pytest.raises(InputError, match="level -1 is negative") as err:
            read(path)
        assert err.value.line == 3
    path.write_text(manifest.manifest_text(_rows(levels=0)))
    with pytest.raises(InputError, match="no distorted levels"):
        manifest.manifest_levels(path)


EXPECTED_FIELDS = "expected 5 (reference,type,level,path,split)"


@pytest.mark.parametrize("read", [lambda path: manifest.read_manifest(path, "train"),
                                  manifest.manifest_levels], ids=["read_manifest", "manifest_levels"])
@pytest.mark.parametrize("row, message", [
    ("b,GB,1\n", f"3 fields, {EXPECTED_FIELDS}"),
    ("b,GB,1,GB/GB1/b.png,train,x\n", f"6 fields, {EXPECTED_FIELDS}"),
    # a quoted field over two lines: the row ends on the line after the one it starts on
    ('"b\nc",GB,1\n', f"3 fields, {EXPECTED_FIELDS}"),
])
def test_a_row_with_too_few_or_too_many_fields_names_the_file_and_line(tmp_path, read, row, message):
    path = tmp_path / manifest.MANIFEST_NAME
    text = manifest.manifest_text(_rows())
    path.write_text(text + row)
    with pytest.raises(InputError) as err:
        read(path)
    line = text.count("\n") + row.count("\n")  # the line the row ends on
    assert str(err.value) == f"{path}:{line}: {message}"


def test_a_bad_level_after_a_quoted_two_line_field_names_its_own_line(tmp_path):
    path = tmp_path / manifest.MANIFEST_NAME
    path.write_text('reference,type,level,path,split\n"a\nb",GB,0,x.png,train\nc,GB,one,y.png,train\n')
    with pytest.raises(InputError, match="'one' is not an integer") as err:
        manifest.manifest_levels(path)
    assert err.value.line == 4


def test_batch_make_up():
    assert manifest.group_size(images_per_group=2, max_level=5) == 12  # LIVE style: 2 images x 6 levels
    assert manifest.batch_size(types_per_batch=4, images_per_group=2, max_level=5) == 48
    assert manifest.batch_size(types_per_batch=9, images_per_group=1, max_level=4) == 45  # TID2013 style
