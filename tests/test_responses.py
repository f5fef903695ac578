import base64
import json
import logging
from pathlib import Path

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse, JsonResponse, Response, TextResponse
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyAPIError, ScrappeyAuthError, ScrappeyTransportError
from scrapy_scrappey.client import ApiReply, parse_reply
from scrapy_scrappey.codes import ERROR_CODES, ErrorKind
from scrapy_scrappey.responses import ScrappeyResponse, from_api_response, raw_response
from tests.crawl import KEY, crawl, settings_for
from tests.fake_api import OutcomeSpider, success

FIXTURES = Path(__file__).parent / "fixtures" / "scrappey"
SUCCESS_FIXTURES = sorted(FIXTURES.glob("response_success_*.json"))


def load(name):
    return json.loads((FIXTURES / name).read_text())


def reply(data, status=200):
    return parse_reply(status, json.dumps(data).encode())


@pytest.mark.parametrize("path", SUCCESS_FIXTURES, ids=lambda p: p.stem)
def test_every_documented_success_reply_parses(path):
    data = json.loads(path.read_text())
    parsed = reply(data)
    assert parsed.page_error() is None
    parsed.raise_for_error()
    request = Request("https://example.com/start")
    response = from_api_response(parsed.data, request=request)
    solution = data["solution"]
    assert response.status == solution["statusCode"]
    assert response.url == (solution.get("currentUrl") or request.url)
    assert response.body == solution["response"].encode()
    assert "scrappey" in response.flags
    assert response.request is request
    assert response.raw_api_response == data


def test_official_mock_is_a_json_response_with_headers():
    data = load("response_success_mock_official_tests.json")
    response = from_api_response(data, request=Request("https://example.com/start"))
    assert isinstance(response, JsonResponse)
    assert response.url == "https://example.com/page"
    assert response.json() == {"key": "value", "number": 42}
    assert response.headers["X-Custom-Header"] == b"custom-value"
    assert (
        response.scrappey_solution["cookieString"] == "session_id=abc123; token=xyz789"
    )


def test_html_class_and_dropped_encoding_headers():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 404,
            "currentUrl": "https://e.com/final",
            "response": "<html><body>Zürich</body></html>",
            "responseHeaders": {
                "content-type": "text/html; charset=iso-8859-1",
                "content-encoding": "br",
                "content-length": "5",
                "set-cookie": ["a=1", "b=2"],
                "x-number": 5,
            },
        },
    }
    response = from_api_response(data, request=Request("https://e.com/start"))
    assert isinstance(response, HtmlResponse)
    assert response.status == 404
    assert b"Content-Encoding" not in response.headers
    assert b"Content-Length" not in response.headers
    assert response.headers.getlist("Set-Cookie") == [b"a=1", b"b=2"]
    assert response.headers["X-Number"] == b"5"
    # the text arrived decoded; the announced charset must not garble it
    assert response.css("body::text").get() == "Zürich"


def test_base64_body_gives_binary_response():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": "",
            "base64Response": base64.b64encode(b"%PDF-1.4\x00\xff").decode(),
            "responseHeaders": {"content-type": "application/pdf"},
        },
    }
    response = from_api_response(data, request=Request("https://e.com/a.pdf"))
    assert not isinstance(response, TextResponse)
    assert isinstance(response, Response)
    assert response.body == b"%PDF-1.4\x00\xff"


def test_browser_json_uses_inner_text():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": '<html><pre>{"a":1}</pre></html>',
            "innerText": '{"a":1}',
            "responseHeaders": {"content-type": "application/json"},
        },
    }
    assert from_api_response(data, request=Request("https://e.com/api")).json() == {
        "a": 1
    }


def test_head_request_has_empty_body():
    data = {"data": "success", "solution": {"statusCode": 204, "response": "<html>"}}
    response = from_api_response(data, request=Request("https://e.com", method="HEAD"))
    assert response.status == 204
    assert response.body == b""


def test_replace_keeps_raw_payload():
    data = load("response_success_mock_go_tests.json")
    response = from_api_response(data, request=Request("https://e.com"))
    assert response.replace(body=b"x").raw_api_response is data
    assert (
        ScrappeyResponse.from_api_response(data, request=Request("https://e.com")).body
        == b"ok"
    )


def test_raw_response():
    response = raw_response(
        b'{"data": "success"}',
        status=200,
        request=Request("https://x/api/v1", method="POST"),
        url="https://x/api/v1",
    )
    assert isinstance(response, JsonResponse)
    assert response.json() == {"data": "success"}
    assert "scrappey_raw" in response.flags


# -- reply classification ----------------------------------------------------


def test_inferred_error_body():
    parsed = reply(load("inferred/error_response_body.json"))
    assert parsed.page_error() is parsed.error() is not None
    with pytest.raises(ScrappeyAPIError) as info:
        parsed.raise_for_error()
    assert info.value.code == "CODE-0010"
    assert info.value.kind is ErrorKind.SESSION_BOUND
    assert "CODE-0010" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "inferred/sessions_create_response.json",
        "inferred/sessions_destroy_response.json",
        "inferred/sessions_list_response.json",
        "inferred/sessions_active_response.json",
        "inferred/balance_response.json",
    ],
)
def test_inferred_session_replies_are_successes(name):
    assert reply(load(name)).error() is None


def test_http_401_mock():
    body = (FIXTURES / "error_http401_mock_go_tests.json").read_bytes()
    with pytest.raises(ScrappeyAuthError):
        parse_reply(401, body)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_is_classified(code):
    parsed = reply({"data": "error", "error": f"{code} {ERROR_CODES[code].message}"})
    with pytest.raises(ScrappeyAPIError) as info:
        parsed.raise_for_error()
    assert info.value.code == code
    assert info.value.kind is ERROR_CODES[code].kind
    assert ERROR_CODES[code].message in str(info.value)


@pytest.mark.parametrize(
    ("data", "code", "kind"),
    [
        (
            {"data": "error", "code": "CODE-0029", "error": "too many"},
            "CODE-0029",
            ErrorKind.SESSION_LIMIT,
        ),
        (
            {"data": "error", "error": {"code": "CODE-0004", "message": "Invalid cmd"}},
            "CODE-0004",
            ErrorKind.CONFIG,
        ),
        ({"error": "Session not found: abc"}, None, ErrorKind.SESSION),
        ({"data": "error"}, None, ErrorKind.TRANSIENT),
    ],
)
def test_error_code_locations(data, code, kind):
    with pytest.raises(ScrappeyAPIError) as info:
        reply(data).raise_for_error()
    assert (info.value.code, info.value.kind) == (code, kind)


def test_success_flag_wins_over_error_key():
    assert reply(load("response_success_readme_js.json")).page_error() is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b"<html>502 Bad Gateway</html>"),
        (200, b'{"solution": {"respo'),
        (503, b'{"data":"error"}'),
        (429, b"slow down"),
        (200, b"[1, 2]"),
    ],
)
def test_transport_failures(status, body):
    with pytest.raises(ScrappeyTransportError):
        parse_reply(status, body)
    assert issubclass(ScrappeyTransportError, OSError)


def test_non_json_4xx_is_a_config_error():
    with pytest.raises(ScrappeyAPIError) as info:
        parse_reply(400, b"bad request")
    assert info.value.kind is ErrorKind.CONFIG


def test_api_reply_is_immutable():
    parsed = ApiReply(200, {"data": "success"}, b"{}")
    with pytest.raises(AttributeError):
        parsed.status = 500  # type: ignore[misc]


# -- replies that hold no page (issue #16) -------------------------------------

PAGE_REQUEST = Request("https://e.com/start")


@pytest.mark.parametrize(
    "data",
    [
        {"data": "failed"},
        {"data": "pending"},
        {"data": 1},
        {},
        {"data": "success"},
        {"data": "success", "solution": None},
        {"data": "success", "solution": []},
        {"data": "success", "solution": "<html>"},
        {"data": "success", "solution": {"response": "<html>"}},
        {"data": "success", "solution": {"statusCode": 0}},
        {"data": "success", "solution": {"statusCode": 600}},
        {"data": "success", "solution": {"statusCode": True}},
        {"data": "success", "solution": {"statusCode": 200.5}},
        {"data": "success", "solution": {"statusCode": "OK"}},
        {"data": "success", "solution": {"statusCode": "²"}},
        {"data": "success", "solution": {"statusCode": "9" * 5000}},
        {"data": "success", "solution": {"statusCode": None}},
    ],
)
def test_a_reply_without_a_page_is_a_bad_reply_not_a_200(data):
    error = reply(data).page_error()
    assert error is not None
    assert error.kind is ErrorKind.BAD_REPLY
    assert str(error).startswith("Unreadable Scrappey API reply: '")
    with pytest.raises(ScrappeyAPIError) as info:
        from_api_response(data, request=PAGE_REQUEST)
    assert info.value.kind is ErrorKind.BAD_REPLY


def test_bad_reply_messages_name_the_culprit():
    def message(data):
        return str(reply(data).page_error())

    assert "'data' is 'failed', not 'success'" in message({"data": "failed"})
    assert "'data' is missing" in message({})
    assert "'solution' is an array, not an object" in message(
        {"data": "success", "solution": []}
    )
    assert "'solution.statusCode' is '²', not 100-599" in message(
        {"data": "success", "solution": {"statusCode": "²"}}
    )
    missing = message({"data": "success", "solution": {}})
    assert "'solution.statusCode' is missing" in missing
    assert "'filter'" in missing
    long = message({"data": "success", "solution": {"statusCode": "9" * 5000}})
    assert len(long) < 120


def test_a_non_success_data_flag_is_an_error_for_every_command():
    error = reply({"data": "pending"}).error()
    assert error is not None
    assert error.kind is ErrorKind.BAD_REPLY
    # with a message, the message is classified as usual
    error = reply({"data": "failed", "error": "CODE-0029 Too many"}).error()
    assert (error.code, error.kind) == ("CODE-0029", ErrorKind.SESSION_LIMIT)


@pytest.mark.parametrize("status", [200, "200", 404, "599", 100])
def test_valid_status_codes_make_pages(status):
    data = {"data": "success", "solution": {"statusCode": status}}
    assert reply(data).page_error() is None
    response = from_api_response(data, request=PAGE_REQUEST)
    assert response.status == int(status)
    assert response.body == b""  # onlyStatusCode: the status is the answer


# -- replies the plugin cannot read are Scrappey errors -------------------------


def test_a_lone_surrogate_is_delivered_as_a_replacement_character():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": "<html><p>a\ud800b</p></html>",
            "responseHeaders": {"content-type": "text/html", "x-odd": "c\udfffd"},
        },
    }
    response = from_api_response(data, request=PAGE_REQUEST)
    assert response.css("p::text").get() == "a\ufffdb"
    assert response.headers["X-Odd"] == "c\ufffdd".encode()


@pytest.mark.parametrize("url", [5, 1.5, True, ["https://e.com/x"], {"u": 1}])
def test_a_current_url_that_is_no_string_keeps_the_request_url(url):
    data = {"data": "success", "solution": {"statusCode": 200, "currentUrl": url}}
    response = from_api_response(data, request=PAGE_REQUEST)
    assert response.url == PAGE_REQUEST.url
    assert "scrappey_bad_current_url" in response.flags


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"data": "success", "solution": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        # parses, but deeper than any reply: json.dumps of a part would fail later
        b'{"data": "success", "solution": {"statusCode": 200, "responseHeaders": '
        b'{"x": ' + b"[" * 900 + b"]" * 900 + b"}}}",
    ],
)
def test_deeply_nested_json_is_a_transport_error(body):
    with pytest.raises(ScrappeyTransportError, match="invalid JSON"):
        parse_reply(200, body)


def test_odd_headers_never_break_the_response():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "responseHeaders": {
                "x-list": [1, {"a": None}, "v"],
                "x-crlf": "a\r\nSet-Cookie: forged=1",
                "bad name": "dropped",
                "x-inject\r\nSet-Cookie": "dropped",
                "": "dropped",
            },
        },
    }
    headers = from_api_response(data, request=PAGE_REQUEST).headers
    assert headers.getlist("X-List") == [b"1", b'{"a": null}', b"v"]
    assert headers["X-Crlf"] == b"a  Set-Cookie: forged=1"
    assert b"Set-Cookie" not in headers
    assert set(headers) == {b"X-List", b"X-Crlf", b"Content-Type"}


def test_an_empty_header_list_is_no_header():
    # Found by tests/test_replies_fuzz.py: Scrapy read it as a None content type.
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": "<p>x</p>",
            "responseHeaders": {"content-type": [], "x-empty": []},
        },
    }
    response = from_api_response(data, request=PAGE_REQUEST)
    assert b"X-Empty" not in response.headers
    assert response.text == "<p>x</p>"


# -- currentUrl -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(document.cookie)",
        "/relative/path",
        "relative",
        "data:text/html,<p>x",
        "ftp://e.com/file",
        "http://",
        "http://[::1",
        "http://e.com:99999/",
        "http://e.com/\r\nX: y",
        "http://e.com/\ud800",
    ],
)
def test_only_an_absolute_http_url_may_replace_the_request_url(url):
    data = {"data": "success", "solution": {"statusCode": 200, "currentUrl": url}}
    response = from_api_response(data, request=PAGE_REQUEST)
    assert response.url == PAGE_REQUEST.url
    assert response.flags == ["scrappey", "scrappey_bad_current_url"]
    assert response.follow("x").url == "https://e.com/x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://e.com/final", "https://e.com/final"),
        ("HTTP://E.com/a?b=1", "HTTP://E.com/a?b=1"),
        (" https://e.com/padded ", "https://e.com/padded"),
        ("https://api.e.com/v1?key=SECRET&x=1", "https://api.e.com/v1?key=***&x=1"),
        ("", PAGE_REQUEST.url),
        (None, PAGE_REQUEST.url),
    ],
)
def test_a_good_current_url_is_used_and_a_key_in_it_redacted(url, expected):
    data = {"data": "success", "solution": {"statusCode": 200, "currentUrl": url}}
    response = from_api_response(data, request=PAGE_REQUEST)
    assert response.url == expected
    assert response.flags == ["scrappey"]


def test_the_request_url_itself_is_never_redacted():
    request = Request("https://maps.e.com/embed?key=PUBLIC")
    data = {
        "data": "success",
        "solution": {"statusCode": 200, "currentUrl": request.url},
    }
    assert from_api_response(data, request=request).url == request.url


def test_unverified_success_is_no_page():
    data = success(TARGET, verified=False)
    parsed = reply(data)
    assert parsed.error() is None  # the API reports no error...
    error = parsed.page_error()
    assert error is not None  # ...but it vouches for no page
    assert (error.code, error.kind) == (None, ErrorKind.UNVERIFIED)
    assert "verified" in str(error)
    with pytest.raises(ScrappeyAPIError) as info:
        from_api_response(data, request=Request(TARGET))
    assert info.value.kind is ErrorKind.UNVERIFIED
    # Only an explicit false: a reply without the field is a page.
    del data["solution"]["verified"]
    assert reply(data).page_error() is None


# -- the same through real crawls ------------------------------------------------

TARGET = "http://127.0.0.1:9/"  # never fetched: the scripted API answers for it


def _settings(api, tmp_path, **extra):
    return settings_for(api, tmp_path, RETRY_TIMES=1, **extra)


@deferred_f_from_coro_f
async def test_crawl_never_turns_a_reply_without_a_page_into_a_200(
    tmp_path, scripted_api
):
    bad = {
        f"{TARGET}failed": {"data": "failed"},
        f"{TARGET}pending": {"data": "pending"},
        f"{TARGET}empty": {},
        f"{TARGET}no-solution": {"data": "success"},
        f"{TARGET}no-status": {"data": "success", "solution": {"response": "x"}},
        f"{TARGET}bad-status": success(f"{TARGET}bad-status", statusCode=700),
    }
    good = f"{TARGET}good"
    for url, body in bad.items():
        scripted_api.answer(url, 200, body)
    result = await crawl(
        OutcomeSpider, _settings(scripted_api, tmp_path), urls=[*bad, good]
    )
    spider = result.spider
    for url in bad:
        error = spider.outcome(url)
        assert isinstance(error, ScrappeyAPIError), url
        assert error.kind is ErrorKind.BAD_REPLY
    assert spider.outcome(good).status == 200
    assert result.items == [{"url": good, "status": 200}]
    assert result.stats["scrappey/errors/bad_reply"] == 2 * len(bad)
    assert result.stats["retry/reason_count/scrappey/bad_reply"] == len(bad)
    assert not scripted_api.open_sessions


@deferred_f_from_coro_f
async def test_crawl_retries_unverified_replies_and_never_hands_them_over(
    tmp_path, scripted_api
):
    unverified, good = f"{TARGET}unverified", f"{TARGET}good"
    scripted_api.answer(unverified, 200, success(unverified, verified=False))
    result = await crawl(
        OutcomeSpider, _settings(scripted_api, tmp_path), urls=[unverified, good]
    )
    error = result.spider.outcome(unverified)
    assert isinstance(error, ScrappeyAPIError)
    assert error.kind is ErrorKind.UNVERIFIED
    assert result.items == [{"url": good, "status": 200}]
    assert result.stats["scrappey/errors/unverified"] == 2  # RETRY_TIMES=1
    assert result.stats["retry/reason_count/scrappey/unverified"] == 1
    assert "scrappey/sessions/retired/errors" not in result.stats


@deferred_f_from_coro_f
async def test_crawl_reads_odd_replies_into_pages_or_scrappey_errors(
    tmp_path, scripted_api
):
    def solution(**fields):
        return success(TARGET, **fields)

    pages = {
        f"{TARGET}surrogate": solution(response="<p>a\ud800b</p>"),
        f"{TARGET}url-number": solution(currentUrl=5),
        f"{TARGET}url-list": solution(currentUrl=["https://e.com/"]),
        f"{TARGET}url-dict": solution(currentUrl={"href": "https://e.com/"}),
    }
    errors = {
        f"{TARGET}superscript": solution(statusCode="²"),
        f"{TARGET}long-status": solution(statusCode="9" * 5000),
    }
    deep = f"{TARGET}deep"
    for url, body in {**pages, **errors}.items():
        scripted_api.answer(url, 200, body)
    scripted_api.answer(deep, 200, b"[" * 50_000 + b"]" * 50_000)
    urls = [*pages, *errors, deep]
    result = await crawl(OutcomeSpider, _settings(scripted_api, tmp_path), urls=urls)
    spider = result.spider
    assert spider.outcome(f"{TARGET}surrogate").css("p::text").get() == "a\ufffdb"
    for url in pages:
        expected = url if "/url-" in url else TARGET  # the API's currentUrl
        assert spider.outcome(url).url == expected
    for url in errors:
        assert isinstance(spider.outcome(url), ScrappeyAPIError)
    assert isinstance(spider.outcome(deep), ScrappeyTransportError)
    assert result.stats["scrappey/responses/bad_current_url"] == 3


class FollowSpider(OutcomeSpider):
    def parse(self, response):  # type: ignore[no-untyped-def]
        yield from super().parse(response)
        if not response.url.endswith("secret.txt"):
            yield response.follow("secret.txt", callback=self.parse_secret)

    def parse_secret(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.url, "body": response.body.decode("utf-8", "replace")}


@deferred_f_from_coro_f
async def test_crawl_never_takes_a_file_or_script_url_from_the_api(
    tmp_path, caplog, scripted_api
):
    (tmp_path / "secret.txt").write_text("LOCAL-SECRET")
    current = {
        f"{TARGET}file/": (tmp_path / "index.html").as_uri(),
        f"{TARGET}script/": "javascript:fetch('/')",
        f"{TARGET}relative/": "/elsewhere/",
    }
    for url, current_url in current.items():
        scripted_api.answer(url, 200, success(current_url))
    result = await crawl(
        FollowSpider, _settings(scripted_api, tmp_path), urls=[*current]
    )
    for url in current:
        assert result.spider.outcome(url).url == url
    followed = sorted(i["url"] for i in result.items if "body" in i)
    assert followed == sorted(f"{url}secret.txt" for url in current)
    assert not any("LOCAL-SECRET" in i.get("body", "") for i in result.items)
    assert result.stats["scrappey/responses/bad_current_url"] == 3
    warnings = [r for r in caplog.records if "currentUrl" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


@deferred_f_from_coro_f
async def test_crawl_quotes_api_texts_redacted_and_escaped(
    tmp_path, caplog, scripted_api
):
    caplog.set_level(logging.DEBUG)
    texts = {
        f"{TARGET}bare": f"CODE-0031 bad key {KEY}\r\nFORGED LINE",
        f"{TARGET}param": f"CODE-0031 see https://scripted_api/v1?key={KEY}",
        f"{TARGET}field": f"CODE-0031 apiKey: {KEY[:-2]} rejected",
        f"{TARGET}encoded": f"CODE-0031 url=https%3A%2F%2Fapi%3Fkey%3D{KEY}",
        f"{TARGET}long": "CODE-0031 " + "x" * 10_000,
    }
    for url, text in texts.items():
        scripted_api.answer(url, 200, {"data": "error", "error": text})
    scripted_api.answer(f"{TARGET}current", 200, success(f"https://e.com/?key={KEY}"))
    urls = [*texts, f"{TARGET}current"]
    result = await crawl(OutcomeSpider, _settings(scripted_api, tmp_path), urls=urls)
    spider = result.spider
    messages = [str(spider.outcome(url)) for url in texts]
    assert "\\r\\nFORGED LINE" in messages[0]
    assert all(KEY[:5] not in m and len(m) < 500 for m in messages)
    assert spider.outcome(f"{TARGET}current").url == "https://e.com/?key=***"
    assert KEY[:5] not in caplog.text
    assert "\nFORGED" not in caplog.text
    assert result.stats["retry/reason_count/scrappey/CODE-0031"] == len(texts)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (402, b'{"message": "Insufficient balance"}'),
        (422, b'{"detail": "Unprocessable"}'),
        (403, b"{}"),
    ],
)
def test_4xx_json_without_error_is_an_error_not_a_page(status, body):
    with pytest.raises(ScrappeyAPIError) as info:
        parse_reply(status, body)
    assert info.value.kind is ErrorKind.CONFIG
    assert str(status) in str(info.value)


def test_text_body_declares_utf8_so_cache_replays_decode_right():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": "<p>日本語</p>",
            "responseHeaders": {"content-type": "text/html; charset=Shift_JIS"},
        },
    }
    response = from_api_response(data, request=Request("https://e.com"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    replay = HtmlResponse(
        url=response.url, headers=response.headers, body=response.body
    )
    assert "日本語" in replay.text


def test_text_without_content_type_declares_utf8():
    data = {
        "data": "success",
        "solution": {"statusCode": 200, "response": "<html><p>café</p></html>"},
    }
    response = from_api_response(data, request=Request("https://e.com/"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    data["solution"]["responseHeaders"] = {"content-type": "text/html"}
    response = from_api_response(data, request=Request("https://e.com/"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    replay = HtmlResponse(
        url=response.url, headers=response.headers, body=response.body
    )
    assert "café" in replay.text
