import base64
import json
from pathlib import Path

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse, JsonResponse, Response, TextResponse

from scrapy_scrappey import ScrappeyAPIError, ScrappeyAuthError, ScrappeyTransportError
from scrapy_scrappey.client import ApiReply, parse_reply
from scrapy_scrappey.codes import ERROR_CODES, ErrorKind
from scrapy_scrappey.responses import ScrappeyResponse, from_api_response, raw_response

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
    assert info.value.kind is ErrorKind.SESSION
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
