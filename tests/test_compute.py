"""Upload validation and the four computations."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenet.server.compute import DataError, SampleValidator, average, stats_of_file


def validate(data: bytes, step: int) -> int:
    v = SampleValidator()
    for i in range(0, len(data), step):
        v.feed(data[i : i + step])
    return v.finish()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1 << 20])
def test_valid_content_counts_samples_across_chunk_boundaries(step: int) -> None:
    data = b"1\n-22\n333\r\n0\n" + b"98765432109876543210\n" * 5 + b"-7"
    assert validate(data, step) == 10


@pytest.mark.parametrize("data,line", [
    (b"1\n2\nx\n", 3), (b"1\n\n2\n", 2), (b"1.5\n", 1), (b" 1\n", 1), (b"1\n2\n3 ", 3),
    (b"--1\n", 1), (b"+1\n", 1), (b"1\n-\n", 2),
])
@pytest.mark.parametrize("step", [1, 4, 1 << 20])
def test_invalid_content_names_the_line(data: bytes, line: int, step: int) -> None:
    with pytest.raises(DataError) as err:
        validate(data, step)
    assert f"line {line} " in err.value.message


def test_overlong_line_is_refused_with_bounded_buffer() -> None:
    v = SampleValidator()
    with pytest.raises(DataError):
        for _ in range(100):
            v.feed(b"1" * 1000)


def test_empty_upload_has_no_samples() -> None:
    assert validate(b"", 1) == 0


def test_stats_are_exact_for_big_and_negative_integers(tmp_path: Path) -> None:
    values = [10**40, -(10**40) - 7, 3, -2, 0]
    path = tmp_path / "f.txt"
    path.write_text("\n".join(map(str, values)) + "\n")
    st = stats_of_file(path)
    assert (st.count, st.total, st.minimum, st.maximum) == (5, sum(values), min(values), max(values))
    assert st.result("SUM") == str(sum(values))
    assert st.result("AVERAGE") == "-1.2"


def test_stats_across_read_blocks(tmp_path: Path) -> None:
    values = list(range(-50_000, 250_000, 3))
    path = tmp_path / "f.txt"
    path.write_text("\n".join(map(str, values)))  # no final newline
    st = stats_of_file(path)
    assert (st.count, st.total, st.minimum, st.maximum) == (
        len(values), sum(values), min(values), max(values))


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("")
    with pytest.raises(DataError):
        stats_of_file(path)


@pytest.mark.parametrize("total,count,text", [
    (10, 4, "2.5"), (9, 3, "3.0"), (-10, 3, "-3.3333333333"), (2, 3, "0.6666666667"),
    (10**30 + 1, 2, "500000000000000000000000000000.5"),
])
def test_average_is_a_plain_decimal(total: int, count: int, text: str) -> None:
    assert average(total, count) == text


@pytest.mark.parametrize("data", [
    b"1\n-2\n", b"-1\r\n2\r\n", b"5\n" * 5000, b"-" + b"9" * 1000 + b"\n", b"0\n-0\n",
])
def test_fast_path_accepts_valid_blocks(data: bytes) -> None:
    from edgenet.server.compute import _block_is_valid

    assert _block_is_valid(data)


@pytest.mark.parametrize("data", [
    b"\n1\n", b"1\n\n", b"1-\n", b"--1\n", b"-\n", b"1\r\r\n", b"\r\n", b"1\n\r\n", b"1\r2\n",
    b"1 \n", b"-\r\n", b"1\n2-3\n", b"x\n", b"1\n-\n2\n",
])
def test_fast_path_refuses_what_the_regex_refuses(data: bytes) -> None:
    import re

    from edgenet.server.compute import _block_is_valid

    assert not re.fullmatch(rb"(?:-?[0-9]+\r?\n)*", data)
    assert not _block_is_valid(data)


def test_line_length_limit_is_exact() -> None:
    ok = b"1" * 4096 + b"\n"
    assert validate(b"5\n" + ok, 1 << 20) == 2
    with pytest.raises(DataError):
        validate(b"5\n" + b"1" * 4097 + b"\n5\n", 1 << 20)


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_agrees_with_regex_on_random_lines(seed: int) -> None:
    import random
    import re

    from edgenet.server.compute import _block_is_valid

    rng = random.Random(seed)
    alphabet = [b"1", b"23", b"-", b"\n", b"\r\n", b"\r", b"x", b"0"]
    for _ in range(300):
        block = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) + b"\n"
        expect = bool(re.fullmatch(rb"(?:-?[0-9]+\r?\n)*", block))
        assert _block_is_valid(block) == expect, block


@pytest.mark.parametrize("seed", range(30))
def test_streamed_validation_agrees_with_regex_whatever_the_chunking(seed: int) -> None:
    import random
    import re

    rng = random.Random(seed)
    alphabet = [b"1", b"23", b"-", b"\n", b"\r\n", b"\r", b"x", b"0", b"-4\n", b"56\n"]
    for _ in range(100):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        lines_ok = bool(re.fullmatch(rb"(?:-?[0-9]+\r?\n)*(?:-?[0-9]+\r?)?", data))
        step = rng.randint(1, 8)
        try:
            validate(data, step)
            accepted = True
        except DataError:
            accepted = False
        assert accepted == lines_ok, (data, step)
