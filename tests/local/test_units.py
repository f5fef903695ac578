"""Pure helpers of the local server, without any server."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from scrapy_scrappey.local.faults import truncate_json
from scrapy_scrappey.local.protocol import ApiError, error_text
from scrapy_scrappey.local.server import _url_host
from scrapy_scrappey.local.translate import (
    build_spec,
    decode_body,
    inner_text,
    join_headers,
)
from scrapy_scrappey.local.validation import RequestParams


def _params(**fields: object) -> RequestParams:
    return RequestParams(
        cmd="request.post", method="POST", url="http://127.0.0.1/", **fields
    )  # type: ignore[arg-type]


def test_error_texts() -> None:
    assert (
        error_text("CODE-0031", "boom")
        == "CODE-0031 Request error, please try again: boom"
    )
    assert error_text("CODE-0004") == "CODE-0004 Invalid cmd command"
    assert error_text(None, "Session not found: x") == "Session not found: x"
    assert ApiError("CODE-0001").text == "CODE-0001 Server is overloaded"


def test_join_headers() -> None:
    joined = join_headers(
        [
            ("X-A", "1"),
            ("x-a", "2"),
            ("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026"),
            ("set-cookie", "b=2"),
        ]
    )
    assert joined == {"x-a": "1, 2", "set-cookie": "a=1; Expires=Wed, 21 Oct 2026\nb=2"}


def test_decode_body() -> None:
    assert decode_body("é".encode("cp1252"), "text/html; charset=windows-1252") == "é"
    assert decode_body("é".encode(), "text/html; charset=no-such-charset") == "é"
    assert decode_body(b"\xff", "text/plain") == "\ufffd"


def test_inner_text() -> None:
    assert inner_text("plain <b>text</b>", "text/plain") == "plain <b>text</b>"
    assert inner_text("<div>a<br>b</div><template>t</template>", "") == "a\nb"


def test_truncated_json_never_parses() -> None:
    payload = {"solution": {"response": "x" * 100}, "data": "success"}
    text = truncate_json(payload)
    assert json.dumps(payload).startswith(text)
    assert len(text) == len(json.dumps(payload)) // 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_build_spec_merges_cookies_and_encodes_forms() -> None:
    spec = build_spec(
        _params(
            custom_headers={
                "Cookie": "a=1",
                "content-type": "application/x-www-form-urlencoded",
            },
            cookies="b=2",
            post_data={"flag": True, "n": 1, "tags": ["x", "y"], "obj": {"k": None}},
        ),
        "UA/1",
    )
    headers = dict(spec.headers)
    assert headers["Cookie"] == "a=1; b=2"
    assert headers["User-Agent"] == "UA/1"
    assert spec.body is not None
    form = parse_qs(spec.body.decode())
    assert form == {
        "flag": ["true"],
        "n": ["1"],
        "tags": ["x", "y"],
        "obj": ['{"k": null}'],
    }
    assert spec.timeout == 60.0


def test_build_spec_drops_framing_headers_and_converts_timeout() -> None:
    spec = build_spec(
        _params(custom_headers={"Host": "evil", "Content-Length": "5"}, timeout=1.5),
        "UA",
    )
    assert {name.lower() for name, _ in spec.headers} == {"user-agent"}
    assert spec.body is None
    assert spec.timeout == 1.5


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
    ],
)
def test_url_host(host: str, shown: str) -> None:
    assert _url_host(host) == shown
