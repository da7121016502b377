"""VOT format: round trips of every region form and special code, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wibergian.experiments.fusion.vot import (
    Region,
    VOTFormatError,
    groundtruth_path,
    load_dataset,
    read_regions,
    result_path,
    write_regions,
    write_sequence_list,
)

REGIONS = [
    Region.rectangle(10, 20.5, 30.25, 40),
    Region.rectangle(0.1, 1e-3, 123.456789, 7.0),
    Region.polygon([1, 2, 11, 2, 11, 22, 1, 22]),
    Region.polygon([0.5, 0.25, 10.125, 3.0, 8.0, 12.75, -1.5, 9.0, 2.0, 5.0]),
    Region.special(0),
    Region.special(1),
    Region.special(2),
]


def test_round_trip_every_form(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    write_regions(p, REGIONS)
    back = read_regions(p)
    assert back == REGIONS
    assert [r.code for r in back[-3:]] == [0, 1, 2]
    assert p.read_text().splitlines()[-3:] == ["0", "1", "2"]


def test_region_boxes() -> None:
    assert REGIONS[0].to_box() == (10, 20.5, 30.25, 40)
    # axis-aligned polygon: the min/max rule gives the rectangle exactly
    assert REGIONS[2].to_box() == (1, 2, 10, 20)
    # rotated pentagon: min/max of the vertices
    assert REGIONS[3].to_box() == (-1.5, 0.25, 10.125 + 1.5, 12.75 - 0.25)
    assert REGIONS[4].to_box() is None


@pytest.mark.parametrize("text, fragment", [
    ("1,2,3", "3 values"),
    ("1,2,3,4,5,6", "6 values"),
    ("1,2,3,4,5,6,7,8,9", "9 values"),
    ("1,2,abc,4", "not a list of numbers"),
    ("3", "special code"),
    ("1.5", "special code"),
    ("1,2,-3,4", "negative"),
    ("1,nan,3,4", "non-finite"),
    ("", "empty line"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "gt.txt"
    p.write_text(f"1,2,3,4\n5,6,7,8\n{text}\n9,9,9,9\n")
    with pytest.raises(VOTFormatError) as err:
        read_regions(p)
    assert f"{p}:3" in str(err.value)
    assert fragment in str(err.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(VOTFormatError, match="file not found") as err:
        read_regions(tmp_path / "nope.txt")
    assert "nope.txt" in str(err.value)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(VOTFormatError, match="empty"):
        read_regions(tmp_path / "empty.txt")


def _folder(root: Path, n_gt: int = 4, n_res: int = 4) -> None:
    gt = [Region.polygon([x, 5, x + 10, 5, x + 10, 25, x, 25]) for x in range(n_gt)]
    write_regions(groundtruth_path(root / "x", "s1").parent.parent.parent / "sequences" / "s1"
                  / "groundtruth.txt", gt)
    write_sequence_list(root, ["s1"])
    write_regions(result_path(root, "trkA", "s1"),
                  [Region.special(1)] + [Region.rectangle(1, 5, 10, 20)] * (n_res - 1))
    write_regions(result_path(root, "trkB", "s1"),
                  [Region.special(1), Region.special(2)] + [Region.special(0)] * (n_res - 2))


def test_load_dataset(tmp_path: Path) -> None:
    _folder(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.trackers == ["trkA", "trkB"]
    s = ds.sequences[0]
    np.testing.assert_array_equal(s.gt[2], [2, 5, 10, 20])
    assert s.valid.tolist() == [[False, True, True, True], [False, False, False, False]]
    np.testing.assert_array_equal(s.boxes[0, 1], [1, 5, 10, 20])
    # first-frame size from the initialisation code = the ground truth's frame-0 size
    np.testing.assert_array_equal(s.first_size, [[10, 20], [10, 20]])


def test_unequal_lengths_name_the_file(tmp_path: Path) -> None:
    _folder(tmp_path, n_gt=5, n_res=4)
    with pytest.raises(VOTFormatError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "trkA" in msg and "s1_001.txt" in msg and "4 lines" in msg and "has 5" in msg


def test_missing_result_file(tmp_path: Path) -> None:
    _folder(tmp_path)
    result_path(tmp_path, "trkB", "s1").unlink()
    with pytest.raises(VOTFormatError, match="file not found") as err:
        load_dataset(tmp_path)
    assert "trkB" in str(err.value)


def test_list_names_missing_sequence(tmp_path: Path) -> None:
    _folder(tmp_path)
    write_sequence_list(tmp_path, ["s1", "ghost"])
    with pytest.raises(VOTFormatError) as err:
        load_dataset(tmp_path)
    assert "list.txt:2" in str(err.value) and "ghost" in str(err.value)


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "res.txt"
    p.write_bytes(b"1\n10,20,30,40\n10,2\xff0,30,40\n")
    with pytest.raises(VOTFormatError, match=r"res\.txt:3: not UTF-8") as info:
        read_regions(p)
    assert "0xff" in str(info.value)
    # list.txt too
    _folder(tmp_path / "d")
    (tmp_path / "d" / "sequences" / "list.txt").write_bytes(b"s1\n\xc3(\n")
    with pytest.raises(VOTFormatError, match=r"list\.txt:2: not UTF-8"):
        load_dataset(tmp_path / "d")


@pytest.mark.parametrize("line", ["1e300,5,10,20", "1,5,1e300,20", "1,-2e6,10,20",
                                  "0,0,1e7,0,1e7,10,0,10"])
def test_absurd_coordinate_is_a_data_error_naming_file_and_line(tmp_path: Path,
                                                                line: str) -> None:
    _folder(tmp_path)
    p = result_path(tmp_path, "trkA", "s1")
    lines = p.read_text().splitlines()
    lines[2] = line
    p.write_text("\n".join(lines) + "\n")
    # raised by the loader, i.e. before any training starts
    with pytest.raises(VOTFormatError, match=r"_001\.txt:3: implausible value") as info:
        load_dataset(tmp_path)
    assert str(p) in str(info.value) and "pixels" in str(info.value)
    # a large but plausible coordinate (a 4K frame) still loads
    lines[2] = "3839.5,2159,10,20"
    p.write_text("\n".join(lines) + "\n")
    assert load_dataset(tmp_path).sequences[0].boxes[0, 2, 0] == 3839.5
