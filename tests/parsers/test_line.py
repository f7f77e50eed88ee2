"""The pure line parsers, driven with byte strings only."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pihub.parsers import PARSERS, JsonLineParser, KeyValueParser
from pihub.parsers.line import parse_number


def feed_all(parser, *chunks: bytes) -> list:
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def counters(parser) -> tuple[int, int, int, int]:
    return parser.lines, parser.readings, parser.malformed, parser.overflows


# A stream with every kind of line: CRLF, CR, noise, printable garbage, invalid json,
# a non-object, a blank line, multi-byte UTF-8, an overlong line.
SAMPLE = (
    b'{"temperature": 21.5, "humidity": 40}\r\n'
    b"\x00\xff\xfe{\"t\": 1}\n"
    b"\r\n"
    b'OK {"light": 512}\r'
    b'{"msg": "caf\xc3\xa9 } {"}\n'
    b"[1, 2]\n"
    b'{"broken": }\n'
    + b"x" * 100 + b"\n"
    + b'{"last": -3}\n'
)
SAMPLE_READINGS = [{"temperature": 21.5, "humidity": 40}, {"t": 1}, {"light": 512}, {"msg": "café } {"},
                   {"last": -3}]


# ---------------------------------------------------------------------------- JSON framing


def test_json_lines_become_readings_in_order():
    p = JsonLineParser()
    assert p.feed(b'{"a": 1}\n{"b": 2.5, "c": "x"}\n') == [{"a": 1}, {"b": 2.5, "c": "x"}]
    assert counters(p) == (2, 2, 0, 0)
    assert p.last_error is None


def test_a_partial_line_waits_for_its_end():
    p = JsonLineParser()
    assert p.feed(b'{"temp') == []
    assert p.pending == 6
    assert p.feed(b'erature": 2') == []
    assert p.feed(b'1.5}\n{"n"') == [{"temperature": 21.5}]
    assert p.pending == 4
    assert p.lines == 1


def test_the_sample_stream_parses_as_expected():
    p = JsonLineParser(max_line=64)
    assert p.feed(SAMPLE) == SAMPLE_READINGS
    # blank line skipped; [1, 2], {"broken": } malformed; 100 x's overflowed
    assert counters(p) == (7, 5, 2, 1)


def test_a_split_at_any_byte_position_changes_nothing():
    for cut in range(len(SAMPLE) + 1):
        p = JsonLineParser(max_line=64)
        assert feed_all(p, SAMPLE[:cut], SAMPLE[cut:]) == SAMPLE_READINGS, f"split at byte {cut}"
        assert counters(p) == (7, 5, 2, 1), f"split at byte {cut}"


def test_feeding_one_byte_at_a_time_changes_nothing():
    p = JsonLineParser(max_line=64)
    assert feed_all(p, *(SAMPLE[i:i + 1] for i in range(len(SAMPLE)))) == SAMPLE_READINGS
    assert counters(p) == (7, 5, 2, 1)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_any_chunking_of_the_sample_changes_nothing(cuts):
    bounds = [0, *sorted(cuts), len(SAMPLE)]
    p = JsonLineParser(max_line=64)
    assert feed_all(p, *(SAMPLE[a:b] for a, b in itertools.pairwise(bounds))) == SAMPLE_READINGS
    assert counters(p) == (7, 5, 2, 1)


_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), st.booleans(), st.none())
_objects = st.dictionaries(st.text(max_size=6), _values, max_size=4)
_line = st.one_of(
    _objects.map(lambda d: json.dumps(d).encode()),
    _objects.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
)
_term = st.sampled_from([b"\n", b"\r\n", b"\r"])


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(_line, _term), max_size=12), data=st.data())
def test_generated_streams_parse_the_same_however_they_are_chunked(lines, data):
    stream = b"".join(line + term for line, term in lines)
    whole = JsonLineParser(max_line=64)
    expected = whole.feed(stream)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    bounds = [0, *sorted(cuts), len(stream)]
    chunked = JsonLineParser(max_line=64)
    assert feed_all(chunked, *(stream[a:b] for a, b in itertools.pairwise(bounds))) == expected
    assert counters(chunked) == counters(whole)
    assert whole.lines == whole.readings + whole.malformed
    assert chunked.pending <= chunked.max_line


@settings(max_examples=100, deadline=None)
@given(objs=st.lists(_objects, max_size=8))
def test_every_object_written_as_a_line_comes_back(objs):
    p = JsonLineParser(max_line=1 << 16)
    assert p.feed(b"".join(json.dumps(o).encode() + b"\r\n" for o in objs)) == objs


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"\r"])
def test_lf_crlf_and_cr_all_end_a_line(term):
    p = JsonLineParser()
    assert p.feed(b'{"a": 1}' + term + b'{"a": 2}' + term) == [{"a": 1}, {"a": 2}]
    assert counters(p) == (2, 2, 0, 0)


def test_a_crlf_split_between_feeds_gives_no_extra_line():
    p = JsonLineParser()
    assert p.feed(b'{"a": 1}\r') == [{"a": 1}]
    assert p.feed(b'\n{"a": 2}\r\n') == [{"a": 2}]
    assert counters(p) == (2, 2, 0, 0)


def test_blank_lines_are_skipped_and_not_counted():
    p = JsonLineParser()
    assert p.feed(b"\n\r\n  \t\n") == []
    assert counters(p) == (0, 0, 0, 0)


def test_noise_bytes_before_a_line_are_dropped():
    p = JsonLineParser()
    assert p.feed(b'\x00\x00\xff\xf0\x1b {"boot": 1}\n') == [{"boot": 1}]
    assert p.malformed == 0


def test_printable_garbage_before_the_object_is_skipped():
    p = JsonLineParser()
    assert p.feed(b'sensor ready> {"t": 20}\n') == [{"t": 20}]
    assert p.malformed == 0


def test_a_line_of_only_noise_is_malformed():
    p = JsonLineParser()
    assert p.feed(b"\x00\xff\xfe\n") == []
    assert counters(p) == (1, 0, 1, 0)
    assert "noise" in p.last_error


def test_the_tail_of_a_line_joined_midway_is_malformed_and_the_next_line_parses():
    p = JsonLineParser()
    assert p.feed(b'ure": 21.5, "humidity": 40}\n{"temperature": 21.6}\n') == [{"temperature": 21.6}]
    assert counters(p) == (2, 1, 1, 0)


# ---------------------------------------------------------------------------- bad input


def test_invalid_json_is_counted_and_its_text_kept_for_the_log():
    p = JsonLineParser()
    assert p.feed(b'{"t": 21.5, "h": }\n') == []
    assert counters(p) == (1, 0, 1, 0)
    assert p.last_error.startswith("not valid JSON: Expecting value at line 1 column 18")
    assert '\'{"t": 21.5, "h": }\'' in p.last_error


def test_the_quoted_text_of_a_long_bad_line_is_cut():
    p = JsonLineParser()
    p.feed(b"{" + b"a" * 500 + b"\n")
    assert p.malformed == 1
    assert len(p.last_error) < 200 and p.last_error.endswith("...")


@pytest.mark.parametrize(("line", "kind"), [
    (b"42", "a number"), (b"[1, 2]", "a list"), (b'"text"', "a string"), (b"null", "null"),
    (b"true", "a boolean"),
])
def test_json_that_is_not_an_object_is_malformed(line, kind):
    p = JsonLineParser()
    assert p.feed(line + b"\n") == []
    assert counters(p) == (1, 0, 1, 0)
    assert f"json value is {kind}, not an object" in p.last_error


def test_braces_inside_strings_do_not_break_framing():
    # Platypush counts braces and tracks only backslashes: the "}" in "a } b" would end
    # its object, leaving ' b", "t": 1}' and misframing every later object.
    stream = b'{"msg": "a } b", "t": 1}\n{"msg": "{{", "t": 2}\n{"t": 3}\n'
    assert JsonLineParser().feed(stream) == [{"msg": "a } b", "t": 1}, {"msg": "{{", "t": 2}, {"t": 3}]
    # the reference framer works on plain objects, so the difference is the braces
    assert platypush_brace_framing(b'{"a": {"b": 1}}\n{"t": 3}\n') == [{"a": {"b": 1}}, {"t": 3}]
    assert platypush_brace_framing(stream) != [{"msg": "a } b", "t": 1}, {"msg": "{{", "t": 2}, {"t": 3}]


def platypush_brace_framing(stream: bytes) -> list:
    """Platypush's serial framing (PLATYPUSH.md §6.4), to pin why pihub does not use it."""
    out, buf, depth, escaped, started = [], b"", 0, False, False
    for byte in stream:
        ch = bytes([byte])
        if not started and ch != b"{":
            continue
        started = True
        buf += ch
        if escaped:
            escaped = False
        elif ch == b"\\":
            escaped = True
        elif ch == b"{":
            depth += 1
        elif ch == b"}":
            depth -= 1
            if depth == 0:
                try:
                    out.append(json.loads(buf))
                except ValueError:
                    out.append(None)
                buf, started = b"", False
    return out


def test_nan_infinity_and_out_of_range_numbers_become_null():
    p = JsonLineParser()
    assert p.feed(b'{"a": NaN, "b": -Infinity, "c": 1e999, "d": 1.5}\n') == [
        {"a": None, "b": None, "c": None, "d": 1.5}]


def test_deep_nesting_is_malformed_not_a_crash():
    p = JsonLineParser(max_line=1 << 16)
    assert p.feed(b'{"a": ' + b"[" * 20000 + b"]" * 20000 + b"}\n") == []
    assert p.malformed == 1
    assert "nested too deeply" in p.last_error


def test_an_integer_too_long_to_convert_is_malformed_not_a_crash():
    p = JsonLineParser(max_line=1 << 16)
    assert p.feed(b'{"a": ' + b"9" * 5000 + b"}\n") == []
    assert p.malformed == 1
    assert p.last_error.startswith("not valid JSON")


def test_invalid_utf8_is_malformed():
    p = JsonLineParser()
    assert p.feed(b'{"a": "\xc3\x28"}\n') == []
    assert p.malformed == 1
    assert "invalid utf-8 at byte 7" in p.last_error


def test_utf8_split_between_feeds_is_fine():
    p = JsonLineParser()
    raw = '{"place": "café"}\n'.encode()
    cut = raw.index(b"\xc3") + 1
    assert feed_all(p, raw[:cut], raw[cut:]) == [{"place": "café"}]


# ---------------------------------------------------------------------------- overlong lines


def test_an_overlong_line_is_dropped_counted_and_the_next_line_parses():
    p = JsonLineParser(max_line=32)
    assert p.feed(b'{"a": "' + b"x" * 100 + b'"}\n{"b": 1}\n') == [{"b": 1}]
    assert counters(p) == (1, 1, 0, 1)
    assert p.last_error == "line longer than 32 bytes dropped"


def test_the_buffer_stays_bounded_while_a_device_sends_no_newline():
    p = JsonLineParser(max_line=32)
    for _ in range(1000):
        assert p.feed(b"y" * 50) == []
        assert p.pending <= 32
    assert p.overflows == 1  # one line, however long
    assert p.feed(b'tail\n{"ok": 1}\n') == [{"ok": 1}]  # the overlong line's tail is dropped with it
    assert counters(p) == (1, 1, 0, 1)


def test_an_overlong_line_split_across_feeds_counts_once():
    p = JsonLineParser(max_line=16)
    assert feed_all(p, b'{"a": "0123', b"456789abcdef", b'"}\n{"b": 2}\n') == [{"b": 2}]
    assert counters(p) == (1, 1, 0, 1)


def test_a_line_of_exactly_max_line_bytes_is_kept():
    line = b'{"a": "' + b"x" * 23 + b'"}'
    assert len(line) == 32
    p = JsonLineParser(max_line=32)
    assert p.feed(line + b"\r\n") == [{"a": "x" * 23}]
    p = JsonLineParser(max_line=31)
    assert p.feed(line + b"\r\n") == []
    assert p.overflows == 1


def test_max_line_below_the_minimum_is_refused():
    with pytest.raises(ValueError, match="max_line must be at least 16 bytes, not 4"):
        JsonLineParser(max_line=4)


def test_reset_drops_the_partial_line_and_keeps_counters():
    p = JsonLineParser()
    p.feed(b'{"a": 1}\n{"half')
    p.reset()
    assert p.pending == 0
    assert p.feed(b'{"b": 2}\n') == [{"b": 2}]
    assert counters(p) == (2, 2, 0, 0)


def test_reset_ends_an_overlong_line_being_dropped():
    p = JsonLineParser(max_line=16)
    p.feed(b"z" * 40)
    p.reset()
    assert p.feed(b'{"b": 2}\n') == [{"b": 2}]


def test_stats_and_repr():
    p = JsonLineParser()
    p.feed(b'{"a": 1}\nbad\n')
    assert p.stats() == {"lines": 2, "readings": 1, "malformed": 1, "overflows": 0,
                         "last_error": p.last_error}
    assert repr(p) == "<JsonLineParser lines=2 readings=1 malformed=1 overflows=0>"


# ---------------------------------------------------------------------------- key=value


@pytest.mark.parametrize("line", [
    b"temp=21.5 hum=40", b"temp=21.5,hum=40", b"temp:21.5", b"temp: 21.5;  hum : 40",
    b"  temp = 21.5 , hum=40 ", b"temp=21.5\thum=40", b"\x00\xfftemp=21.5 hum=40",
])
def test_key_value_forms(line):
    p = KeyValueParser()
    (reading,) = p.feed(line + b"\r\n")
    assert reading["temp"] == 21.5
    assert reading.get("hum", 40) == 40
    assert counters(p) == (1, 1, 0, 0)


def test_key_value_numbers_and_strings():
    p = KeyValueParser()
    assert p.feed(b'n=7 neg=-3 f=.5 e=2e3 unit=21.5C mode=auto nan=nan name="living room" t=12:30\n') == [
        {"n": 7, "neg": -3, "f": 0.5, "e": 2000.0, "unit": "21.5C", "mode": "auto", "nan": "nan",
         "name": "living room", "t": "12:30"}]
    assert isinstance(p.feed(b"n=7\n")[0]["n"], int)


def test_key_value_keys_may_hold_dots_and_dashes_and_the_last_duplicate_wins():
    assert KeyValueParser().feed(b"sensor.temp-1=1 sensor.temp-1=2\n") == [{"sensor.temp-1": 2}]


@pytest.mark.parametrize(("line", "error"), [
    (b"hello", "expected key=value at column 1"),
    (b"temp=21.5 junk", "expected key=value at column 11"),
    (b"temp=", "no value for key 'temp'"),
    (b"1temp=3", "expected key=value at column 1"),
    (b'name="unterminated', "expected key=value at column 1"),
    (b'name="a"b=1', "expected key=value at column 1"),
])
def test_key_value_bad_lines_are_malformed_whole(line, error):
    p = KeyValueParser()
    assert p.feed(line + b"\n") == []
    assert counters(p) == (1, 0, 1, 0)
    assert p.last_error.startswith(error)


def test_key_value_framing_is_shared_with_json():
    p = KeyValueParser(max_line=16)
    assert feed_all(p, b"a=1\r", b"\nb=2 c=", b"3\n", b"x=" + b"9" * 40 + b"\nd=4\n") == [
        {"a": 1}, {"b": 2, "c": 3}, {"d": 4}]
    assert counters(p) == (3, 3, 0, 1)


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("+12", 12), ("-0.25", -0.25), ("1.", 1.0), ("1e-3", 0.001), ("1e999", None),
    ("0x10", "0x10"), ("inf", "inf"), ("", ""), ("1_000", "1_000"), ("٣", "٣"),
])
def test_parse_number(text, value):
    assert parse_number(text) == value
    assert type(parse_number(text)) is type(value)


def test_parsers_table_names_the_formats():
    assert PARSERS == {"json": JsonLineParser, "keyvalue": KeyValueParser}
