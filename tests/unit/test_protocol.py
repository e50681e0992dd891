"""Framing, counts, tokens and addresses: pure, so checked over any input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcrun.errors import ProtocolError
from bcrun.protocol import (
    COUNT_MAX,
    LINE_MAX,
    InetAddress,
    LineDecoder,
    Token,
    UnixAddress,
    format_count,
    parse_address,
    parse_count,
    token_number,
)

line_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=40
)
endings = st.sampled_from([b"\r\n", b"\n", b"\r"])


def decode_in_chunks(data: bytes, cuts: list[int]) -> list[str]:
    decoder = LineDecoder()
    lines: list[str] = []
    points = sorted({min(c, len(data)) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        lines += decoder.feed(data[start:point])
        start = point
    return lines


@given(
    st.lists(st.tuples(line_text, endings), max_size=20), st.lists(st.integers(0, 2000))
)
def test_every_ending_and_every_split_gives_the_same_lines(pairs, cuts):
    data = b"".join(text.encode() + end for text, end in pairs)
    expected = [text for text, _ in pairs if text]
    assert decode_in_chunks(data, cuts) == expected


@given(st.binary(max_size=600), st.lists(st.integers(0, 600)))
def test_arbitrary_bytes_give_only_clean_bounded_lines(data, cuts):
    try:
        lines = decode_in_chunks(data, cuts)
    except ProtocolError:
        # Only a run of more than LINE_MAX bytes without an ending may do this.
        assert any(len(run) > LINE_MAX for run in re.split(rb"[\r\n]", data))
        return
    for line in lines:
        assert line and "\r" not in line and "\n" not in line
        assert len(line) <= LINE_MAX


def test_partial_lines_are_kept_between_reads():
    decoder = LineDecoder()
    assert decoder.feed(b"1") == []
    assert decoder.feed(b"2\r") == ["12"]
    # The \n completing a \r\n split across reads is no empty line (no 0).
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n\n3\n") == ["3"]


def test_overlong_line_is_refused_before_its_end():
    decoder = LineDecoder(limit=8)
    assert decoder.feed(b"12345678\n") == ["12345678"]
    decoder.feed(b"1234")
    with pytest.raises(ProtocolError, match="longer than 8"):
        decoder.feed(b"56789")


@pytest.mark.parametrize("text", ["0", "1", "007", "2147483647"])
def test_counts(text):
    assert parse_count(text) == int(text)
    assert format_count(int(text)) == f"{int(text)}\r\n".encode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "-1",
        "+1",
        "1.0",
        "abc",
        "0x10",
        "\u00b2",
        "2147483648",
        "9" * 40,
    ],
)
def test_bad_counts(text):
    with pytest.raises(ProtocolError):
        parse_count(text)


@given(st.integers(0, COUNT_MAX))
def test_count_round_trip(count):
    (line,) = LineDecoder().feed(format_count(count))
    assert parse_count(line) == count


def test_format_count_refuses_out_of_range():
    for count in (-1, COUNT_MAX + 1):
        with pytest.raises(ValueError):
            format_count(count)


def test_token_has_128_random_bits_and_hides_them():
    token = Token.new(3)
    assert re.fullmatch(r"3-[0-9a-f]{32}", str(token))
    assert token.secret not in repr(token)
    assert Token.new(3) != token
    assert token_number(str(token)) == 3


@given(st.text(max_size=60))
def test_token_matches_only_itself(text):
    token = Token(1, "00ff")
    assert token.matches(text) == (text == "1-00ff")


@pytest.mark.parametrize(
    ("line", "number"),
    [("1-ab", 1), ("12-", 12), ("0-00", 0), ("x-1", None), ("1", None), ("1-AB", None)],
)
def test_token_number(line, number):
    assert token_number(line) == number


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/b.sock", UnixAddress("/run/b.sock")),
        ("./a:b", UnixAddress("./a:b")),
        ("sock", UnixAddress("sock")),
        ("host:7000", InetAddress("host", "7000")),
        (":7000", InetAddress(None, "7000")),
        ("[::1]:7000", InetAddress("::1", "7000")),
        ("127.0.0.1:0", InetAddress("127.0.0.1", "0")),
        ("localhost:http", InetAddress("localhost", "http")),
    ],
)
def test_addresses(value, address):
    assert parse_address(value) == address


@pytest.mark.parametrize(
    "value", ["", "host:", "[::1]", "[::1]7000", "[]:1", "::1:7000"]
)
def test_bad_addresses(value):
    with pytest.raises(ProtocolError):
        parse_address(value)


def test_address_round_trip():
    for value in ["/a/b", "h:1", "[::1]:2", ":3"]:
        assert str(parse_address(value)) == value


def test_lines_before_an_overlong_one_are_kept_and_the_error_follows():
    decoder = LineDecoder(limit=10)
    assert decoder.feed(b"quit\r\n" + b"x" * 30) == ["quit"]
    with pytest.raises(ProtocolError):
        decoder.feed(b"\r\n")
