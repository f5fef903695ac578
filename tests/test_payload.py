import pytest
from scrapy import FormRequest, Request
from scrapy.http import JsonRequest
from scrapy.settings import default_settings

from scrapy_scrappey import ScrappeyConfigError
from scrapy_scrappey.payload import build_payload, merge_params


def test_get_maps_url_and_command():
    payload = build_payload(Request("https://example.com/a?b=1"), {})
    assert payload == {"cmd": "request.get", "url": "https://example.com/a?b=1"}


@pytest.mark.parametrize(
    ("method", "cmd"),
    [
        ("POST", "request.post"),
        ("PUT", "request.put"),
        ("PATCH", "request.patch"),
        ("DELETE", "request.delete"),
        ("HEAD", "request.get"),
        ("get", "request.get"),
    ],
)
def test_methods(method, cmd):
    assert build_payload(Request("https://e.com", method=method), {})["cmd"] == cmd


def test_options_is_a_clear_error():
    with pytest.raises(ScrappeyConfigError, match="no command for the OPTIONS method"):
        build_payload(Request("https://e.com", method="OPTIONS"), {})


def test_form_body_becomes_post_data():
    request = FormRequest(
        "https://e.com/login", formdata={"user": "ann", "pw": "s3cr&t"}
    )
    payload = build_payload(request, {})
    assert payload["cmd"] == "request.post"
    assert payload["postData"] == "user=ann&pw=s3cr%26t"
    assert (
        payload["customHeaders"]["Content-Type"] == "application/x-www-form-urlencoded"
    )


def test_json_body():
    payload = build_payload(JsonRequest("https://e.com/api", data={"a": 1}), {})
    assert payload["postData"] == '{"a": 1}'
    assert payload["customHeaders"]["Content-Type"] == "application/json"


def test_binary_body_is_rejected():
    with pytest.raises(ScrappeyConfigError, match="not UTF-8"):
        build_payload(Request("https://e.com", method="POST", body=b"\xff\xfe"), {})


def test_scrapy_default_headers_are_not_forwarded_but_user_headers_are():
    request = Request(
        "https://e.com", headers={"X-Token": "abc", "Accept-Encoding": "gzip"}
    )
    request.headers["User-Agent"] = default_settings.USER_AGENT
    for name, value in default_settings.DEFAULT_REQUEST_HEADERS.items():
        request.headers[name] = value
    assert build_payload(request, {})["customHeaders"] == {"X-Token": "abc"}
    request.headers["User-Agent"] = "MyBot/1.0"
    request.headers["Accept-Language"] = "pl"
    headers = build_payload(request, {})["customHeaders"]
    assert headers == {
        "X-Token": "abc",
        "User-Agent": "MyBot/1.0",
        "Accept-Language": "pl",
    }


def test_cookie_header_becomes_cookies_string():
    request = Request("https://e.com", headers={"Cookie": "a=1; b=2"})
    payload = build_payload(request, {})
    assert payload["cookies"] == "a=1; b=2"
    assert "customHeaders" not in payload


def test_params_win_over_mapped_fields_but_not_over_cmd_and_url():
    payload = build_payload(
        Request("https://e.com"),
        {"requestType": "request", "customHeaders": {"x": "y"}},
    )
    assert payload == {
        "cmd": "request.get",
        "url": "https://e.com",
        "requestType": "request",
        "customHeaders": {"x": "y"},
    }


def test_merge_params():
    request = Request("https://e.com")
    defaults = {"requestType": "request", "premiumProxy": True}
    assert merge_params(defaults, True, request) == defaults
    merged = merge_params(
        defaults, {"premiumProxy": None, "proxyCountry": "Poland"}, request
    )
    assert merged == {"requestType": "request", "proxyCountry": "Poland"}
    assert defaults == {"requestType": "request", "premiumProxy": True}  # not mutated


@pytest.mark.parametrize("value", ["yes", 1, ["a"]])
def test_merge_params_rejects_non_dict_meta(value):
    with pytest.raises(ScrappeyConfigError, match="'scrappey' meta key"):
        merge_params({}, value, Request("https://e.com"))


@pytest.mark.parametrize("name", ["cmd", "url"])
def test_merge_params_rejects_reserved_names(name):
    with pytest.raises(ScrappeyConfigError, match=f"sets '{name}'"):
        merge_params({}, {name: "x"}, Request("https://e.com"))
