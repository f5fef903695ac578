"""Fuzzing how replies are read: random and mutated API replies, through real
crawls and through ``parse_reply`` / ``from_api_response`` directly.

Whatever the API answers, a request ends in its callback with a real page or
in its errback with a Scrappey error: never an empty "success", never a raw
Python exception, never the key in the log or the items.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyAPIError, ScrappeyTransportError
from scrapy_scrappey.client import parse_reply
from scrapy_scrappey.responses import from_api_response
from tests.crawl import KEY, crawl, settings_for
from tests.fake_api import OutcomeSpider, ScriptedApi, success

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

FORBIDDEN = KEY[:5]  # key_hint shows four characters, and no more
FORGED = "\r\nFORGED-LOG-LINE"
TARGET = "http://127.0.0.1:9/fuzz/"  # never fetched: the API answers for it
BATCH = 30

_NASTY = [
    KEY,
    f"key={KEY}",
    f"Key: {KEY}",
    f'{{"key": "{KEY}"}}',
    f"{TARGET}x?key={KEY}",
    FORGED,
    "\ud800",
    "a\udfffb",
    "\u202e\x1b[31m",
    "²",
    "9" * 5000,
    "200",
    "",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "/relative/path",
    "http://[::1",
    "https://example.com/final",
    "https://example.com/a\ud800b",
    f"https://example.com/{FORGED}",
    "CODE-0010 Blocked proxy on Datadome",
    "CODE-0029 Too many sessions open",
    "CODE-0004 Invalid cmd command",
    "Session not found",
]
_TEXT = (
    st.sampled_from(_NASTY)
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Lu"]), max_size=8)
)
#: Strings with what broke the plugin before: lone surrogates, controls, the key…
_HAZARDS = st.sampled_from(_NASTY) | st.text(
    st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]), min_size=1, max_size=4
).map(lambda odd: f"x{odd}y")
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**4), 10**4)
    | st.sampled_from([100, 200, 204, 302, 404, 503, 599, 600, 99, 1e400, 200.0])
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
_REPLY_FIELDS = ["data", "solution", "error", "code", "session", "info"]
_SOLUTION_FIELDS = [
    "statusCode",
    "currentUrl",
    "response",
    "responseHeaders",
    "innerText",
    "base64Response",
    "cookies",
]
_HEADER_NAMES = st.sampled_from(["content-type", "set-cookie", "location"]) | _TEXT
_RAW_BODIES = [
    b"",
    b"not json",
    b'{"data": "succ',
    b"[1, 2]",
    b"null",
    b'"success"',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"data": "success", "solution": ' + b"[" * 500 + b"]" * 500 + b"}",
    b'{"data": "success", "solution": {"statusCode": 2' + b"0" * 5000 + b"}}",
]


@st.composite
def _mutated(draw: st.DrawFn, url: str) -> dict[str, Any]:
    """A documented success with a few fields dropped or replaced."""
    reply = success(url)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["reply", "solution", "solution", "headers"]))
        parent = reply if where == "reply" else reply.get("solution")
        if where == "headers" and isinstance(parent, dict):
            parent = parent.get("responseHeaders")
        if not isinstance(parent, dict):
            continue
        fields = {"reply": _REPLY_FIELDS, "solution": _SOLUTION_FIELDS}.get(where)
        name = draw(st.sampled_from(fields) if fields else _HEADER_NAMES)
        if draw(st.integers(0, 3)) == 0:
            parent.pop(name, None)
        else:
            parent[name] = draw(_HAZARDS | _VALUES)
    return reply


@st.composite
def _reply(draw: st.DrawFn, url: str) -> tuple[int, bytes | dict[str, Any]]:
    """An HTTP status and a body: mostly mutated successes, some garbage."""
    status = draw(st.sampled_from([200] * 12 + [307, 402, 404, 500, 502]))
    kind = draw(st.sampled_from(["mutated"] * 6 + ["random", "raw"]))
    if kind == "raw":
        return status, draw(st.sampled_from(_RAW_BODIES) | st.binary(max_size=20))
    if kind == "random":
        return status, draw(st.dictionaries(st.sampled_from(_REPLY_FIELDS), _VALUES))
    return status, draw(_mutated(url))


def _is_page(status: int, body: bytes | dict[str, Any]) -> bool:
    """What the test expects: a page only for a 200 holding one (see README)."""
    if status != 200 or not isinstance(body, dict) or body.get("data") != "success":
        return False
    solution = body.get("solution")
    code = solution.get("statusCode") if isinstance(solution, dict) else None
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) == 3:
        code = int(code)
    return type(code) is int and 100 <= code <= 599


@contextmanager
def _records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _crawl_settings(api: ScriptedApi, tmp_path: Path) -> dict[str, Any]:
    return settings_for(
        api,
        tmp_path,
        RETRY_TIMES=1,
        RETRY_HTTP_CODES=[],  # the target's statuses go to the callback as they are
        HTTPERROR_ALLOW_ALL=True,
        REDIRECT_ENABLED=False,
        METAREFRESH_ENABLED=False,
        CONCURRENT_REQUESTS=8,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_SESSION_CONCURRENCY=4,
        LOG_LEVEL="DEBUG",
    )


def _check_log(records: list[logging.LogRecord]) -> None:
    for record in records:
        text = record.getMessage()
        assert record.exc_info is None, text
        assert "Traceback" not in text, text
        assert FORBIDDEN not in text, text
        assert FORGED not in text, text


def _check_outcome(url: str, reply: Any, outcomes: list[Any]) -> None:
    assert len(outcomes) == 1, (url, outcomes)
    (outcome,) = outcomes
    if _is_page(*reply):
        assert not isinstance(outcome, Exception), (reply, outcome)
        assert outcome.status == int(reply[1]["solution"]["statusCode"])
        assert outcome.url.startswith(("http://", "https://"))
        assert outcome.url.isprintable()
        assert FORBIDDEN not in outcome.url
    else:
        assert isinstance(outcome, (ScrappeyAPIError, ScrappeyTransportError)), (
            reply,
            outcome,
        )
        assert FORBIDDEN not in str(outcome)
        assert str(outcome).isprintable()  # no CR/LF to forge a log line


@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    replies=st.tuples(
        *(_reply(f"{TARGET}{i}") for i in range(BATCH)),
    )
)
@deferred_f_from_coro_f
async def test_fuzzed_replies_through_a_crawl(replies, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    urls = [f"{TARGET}{i}" for i in range(BATCH)]
    with _records() as records:
        async with ScriptedApi() as api:
            for url, (status, body) in zip(urls, replies, strict=True):
                api.answer(url, status, body, Location=f"{api.url}/moved")
            result = await crawl(
                OutcomeSpider, _crawl_settings(api, tmp_path), urls=urls
            )
    assert set(result.spider.outcomes) == set(urls)
    for url, reply in zip(urls, replies, strict=True):
        _check_outcome(url, reply, result.spider.outcomes[url])
    _check_log(records)
    assert not api.open_sessions
    assert api.created >= 1
    assert not api.elsewhere  # a redirect of the API was never followed
    assert FORBIDDEN not in repr(result.items)
    assert FORBIDDEN not in repr(result.stats)


# -- units: many more examples, no crawl ---------------------------------------


def _read(status: int, raw: bytes, request: Request) -> Any:
    """The page, or the Scrappey error, the plugin makes of one API answer."""
    try:
        parsed = parse_reply(status, raw, key=KEY)
        error = parsed.page_error()
        if error is not None:
            return error
        return from_api_response(parsed.data, request=request)
    except (ScrappeyAPIError, ScrappeyTransportError) as ex:
        return ex


@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
@given(reply=_reply(f"{TARGET}unit"))
def test_fuzzed_reply_is_a_page_or_a_scrappey_error(reply):
    status, body = reply
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    outcome = _read(status, raw, Request(f"{TARGET}unit"))
    if not _is_page(status, body):
        assert isinstance(outcome, (ScrappeyAPIError, ScrappeyTransportError))
        assert FORBIDDEN not in str(outcome)
        assert str(outcome).isprintable()
        assert len(str(outcome)) < 500
        return
    assert 100 <= outcome.status <= 599
    assert outcome.url.startswith(("http://", "https://"))
    assert outcome.url.isprintable()
    assert FORBIDDEN not in outcome.url
    assert isinstance(outcome.body, bytes)
