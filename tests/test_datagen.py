"""EDG data files: names, content, replacement, size."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from edgenet.client.datagen import MAX_SAMPLE, MIN_SAMPLE, data_file_name, write_data_file


def samples(path: Path) -> list[int]:
    text = path.read_text("ascii")
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1]
    for line in lines:  # plain decimal, as the server's parser wants
        assert line.isdigit() and (line == "0" or not line.startswith("0"))
    return [int(line) for line in lines]


def test_file_name() -> None:
    assert data_file_name("camera1", 3) == "camera1-3.txt"
    assert data_file_name("camera1", int("007")) == "camera1-7.txt"
    assert data_file_name("x", 2**63 - 1) == f"x-{2**63 - 1}.txt"


def test_content_one_integer_per_line_in_range(tmp_path: Path) -> None:
    path = tmp_path / "camera1-1.txt"
    written = write_data_file(path, 1000, random.Random(1))
    values = samples(path)
    assert len(values) == 1000
    assert all(MIN_SAMPLE <= v <= MAX_SAMPLE for v in values)
    assert len(set(values)) > 500  # random, not constant
    assert written == path.stat().st_size


def test_seeded_generation_is_reproducible(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    write_data_file(a, 200, random.Random(7))
    write_data_file(b, 200, random.Random(7))
    assert a.read_bytes() == b.read_bytes()


def test_zero_samples_is_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "camera1-0.txt"
    write_data_file(path, 0)
    assert path.read_bytes() == b""


def test_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "camera1-2.txt"
    path.write_text("old content that is much longer than the new one\n" * 100)
    write_data_file(path, 3)
    assert len(samples(path)) == 3
    assert os.listdir(tmp_path) == ["camera1-2.txt"]


def test_creates_the_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "d-1.txt"
    write_data_file(path, 5)
    assert len(samples(path)) == 5


def test_unwritable_dir_raises_oserror_and_cleans_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        write_data_file(blocker / "d-1.txt", 5)
    assert os.listdir(tmp_path) == ["file"]


def test_negative_amount_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_data_file(tmp_path / "d-1.txt", -1)


def test_one_million_samples(tmp_path: Path) -> None:
    path = tmp_path / "camera1-9.txt"
    write_data_file(path, 1_000_000)
    data = path.read_bytes()
    assert data.count(b"\n") == 1_000_000
    values = [int(v) for v in data.split()]
    assert len(values) == 1_000_000
    assert min(values) == MIN_SAMPLE and max(values) == MAX_SAMPLE
