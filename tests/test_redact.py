"""The key and control characters never reach the user through API texts."""

from __future__ import annotations

import pytest

from scrapy_scrappey import ScrappeyAPIError
from scrapy_scrappey._redact import (
    API_TEXT_LIMIT,
    api_text,
    key_hint,
    redact_text,
    redact_url,
)
from scrapy_scrappey.client import parse_reply
from scrapy_scrappey.codes import ErrorKind

KEY = "S3cr3tKeyValue+/=987"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {KEY}", "bad key S3cr…"),
        (f"key={KEY}", "key=***"),
        (f"key: {KEY}", "key: ***"),
        (f'{{"apiKey": "{KEY}"}}', '{"apiKey": "***"}'),
        (f"api_key={KEY}&x=1", "api_key=***&x=1"),
        ("S3cr3tKeyValue%2B%2F%3D987", "S3cr…"),  # url-encoded
        ("S3cr3tKeyValue+%2F%3D987", "S3cr…"),  # form-encoded
        ("s3cr3tkeyvalue", "S3cr…"),  # another case
        ("S3cr3tKe", "S3cr…"),  # cut short
        (f"url=https%3A%2F%2Fapi%3Fkey%3D{KEY}", "url=https%3A%2F%2Fapi%3Fkey%3D***"),
    ],
)
def test_the_key_is_redacted_in_any_form(text, expected):
    quoted = api_text(text, KEY)
    assert KEY[:5].lower() not in quoted.lower()
    assert quoted == expected


def test_a_key_field_with_another_value_is_redacted_too():
    assert api_text("Invalid key: abc123, key=zzz", "") == "Invalid key: ***, key=***"
    assert api_text("monkey=1 keyboard: 2", "") == "monkey=1 keyboard: 2"


def test_redacting_twice_changes_nothing():
    once = api_text(f"key={KEY} and {KEY}", KEY)
    assert api_text(once, KEY) == once
    assert redact_text(redact_text(KEY, KEY), KEY) == "S3cr…"


def test_url_encoded_key_parameters_are_redacted_in_urls():
    url = f"https://e.com/?next=https%3A%2F%2Fapi%3Fkey%3D{KEY}"
    assert redact_url(url) == "https://e.com/?next=https%3A%2F%2Fapi%3Fkey%3D***"


def test_control_characters_are_escaped_and_length_bounded():
    assert api_text("a\r\nb\x1b[31m\u202e\ud800\x00") == (
        "a\\r\\nb\\x1b[31m\\u202e\\ud800\\x00"
    )
    assert api_text("Zürich ✓") == "Zürich ✓"
    long = api_text("é" * 10_000)
    assert long.startswith("é" * API_TEXT_LIMIT + "…")
    assert long.endswith("(9700 more characters)")


def test_api_errors_carry_only_safe_text():
    body = f'{{"data": "error", "error": "CODE-0031 key {KEY}\\r\\nFORGED"}}'
    error = parse_reply(200, body.encode(), key=KEY).error()
    assert isinstance(error, ScrappeyAPIError)
    assert error.kind is ErrorKind.TRANSIENT
    for text in (str(error), error.api_message, repr(error)):
        assert KEY[:5] not in text
        assert "\n" not in text
    assert str(error) == "CODE-0031 key S3cr…\\r\\nFORGED"


def test_a_4xx_detail_is_redacted_and_bounded():
    body = f'{{"message": "no balance for {KEY}{"x" * 5000}"}}'.encode()
    with pytest.raises(ScrappeyAPIError) as info:
        parse_reply(402, body, key=KEY)
    assert KEY[:5] not in str(info.value)
    assert len(str(info.value)) < 400


def test_errors_built_anywhere_are_escaped():
    error = ScrappeyAPIError("line\nbreak", code=None, kind=ErrorKind.TRANSIENT)
    assert str(error) == "Scrappey API error: line\\nbreak"


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        (KEY, "S3cr…"),
        ("abcdefgh", "abcd…"),
        ("abcdefg", "abc…"),  # never more than half of the key
        ("abcd", "ab…"),
        ("abc", "a…"),
        ("a", "…"),
        ("", "(none)"),
    ],
)
def test_key_hint_shows_at_most_four_characters_and_half_the_key(key, hint):
    assert key_hint(key) == hint
