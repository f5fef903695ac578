"""The browser engine: pages rendered by Chromium, one context per session."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import TYPE_CHECKING, Any

import aiohttp
from scrapy.utils.defer import deferred_f_from_coro_f

from tests.browser_site import browser_process

from ._support import Api

if TYPE_CHECKING:
    from scrapy_scrappey.local import LocalScrappey


async def _api(started: Any, make_local_server: Any, **kwargs: Any) -> Api:
    server: LocalScrappey = await make_local_server(**kwargs)
    http = await started(aiohttp.ClientSession())
    return Api(http, server, None)


async def _get(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    reply = await api.cmd("request.get", url=url, **fields)
    assert reply["data"] == "success", reply
    solution: dict[str, Any] = reply["solution"]
    return solution


@deferred_f_from_coro_f
async def test_js_page_is_rendered(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    solution = await _get(api, browser_site.url("/js/7"), innerText=True)
    assert '<p id="n">rendered 7</p>' in solution["response"]
    assert solution["innerText"] == "rendered 7"
    assert solution["type"] == "browser"
    assert solution["statusCode"] == 200
    assert solution["currentUrl"] == browser_site.url("/js/7")
    assert solution["responseHeaders"]["content-type"].startswith("text/html")
    assert "HeadlessChrome" not in solution["userAgent"]
    # What the target saw, with and without a session.
    session = await api.create("ua")
    for fields in ({}, {"session": session}):
        echo = await _get(api, browser_site.url("/echo"), innerText=True, **fields)
        sent = json.loads(echo["innerText"])["headers"]["User-Agent"]
        assert sent == echo["userAgent"]
        assert "HeadlessChrome" not in sent


@deferred_f_from_coro_f
async def test_http_engine_gets_the_unrendered_page(
    started, make_local_server, browser_site
):
    # The contrast that makes the test above meaningful.
    api = await _api(started, make_local_server)
    solution = await _get(api, browser_site.url("/js/7"))
    assert 'rendered 7</p>";' in solution["response"]
    assert '<p id="n">' not in solution["response"]
    assert solution["type"] == "request"


@deferred_f_from_coro_f
async def test_cookies_and_storage_persist_in_a_session_only(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    one, two = await api.create("one"), await api.create("two")
    await _get(api, browser_site.url("/set-cookie"), session=one)
    counts = []
    for session in (one, one, two, one):
        solution = await _get(api, browser_site.url("/storage"), session=session)
        counts.append(solution["response"].split('id="count">')[1].split("<")[0])
    echo_one = await _get(api, browser_site.url("/echo"), session=one, innerText=True)
    echo_two = await _get(api, browser_site.url("/echo"), session=two, innerText=True)
    assert counts == ["1", "2", "1", "3"]
    assert json.loads(echo_one["innerText"])["cookies"] == {"sid": "s1"}
    assert json.loads(echo_two["innerText"])["cookies"] == {}
    assert [c["name"] for c in echo_one["cookies"]] == ["sid"]


@deferred_f_from_coro_f
async def test_js_challenge_is_solved_once_per_session(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    first, second = await api.create("first"), await api.create("second")
    pages = []
    for n, session in enumerate([first, first, first, second, second]):
        solution = await _get(api, browser_site.url(f"/challenge/{n}"), session=session)
        pages.append((solution["statusCode"], f"secret {n}" in solution["response"]))
    assert pages == [(200, True)] * 5
    assert browser_site.challenges_served == 2
    assert browser_site.challenges_passed == 5


@deferred_f_from_coro_f
async def test_browser_actions_and_javascript_return(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    actions = [
        {"type": "wait_for_selector", "cssSelector": "#q"},
        {"type": "type", "cssSelector": "#q", "text": "hello"},
        {"type": "click", "cssSelector": "#go"},
        {"type": "wait", "wait": 10},
        {"type": "execute_js", "code": "document.getElementById('out').textContent"},
        {"type": "goto", "url": browser_site.url("/tall")},
        {"type": "scroll", "cssSelector": "#bottom"},
        {"type": "execute_js", "code": "window.scrollY > 1000"},
    ]
    solution = await _get(api, browser_site.url("/form"), browserActions=actions)
    assert solution["javascriptReturn"] == ["got hello", True]
    assert solution["currentUrl"] == browser_site.url("/tall")


@deferred_f_from_coro_f
async def test_failed_action_is_an_error_naming_it(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    actions = [{"type": "click", "cssSelector": "#missing", "timeout": 200}]
    reply = await api.cmd(
        "request.get", url=browser_site.url("/form"), browserActions=actions
    )
    assert reply["data"] == "error"
    assert "browserActions item 0 (click)" in reply["error"]
    ignored = [{**actions[0], "ignoreErrors": True}]
    solution = await _get(api, browser_site.url("/form"), browserActions=ignored)
    assert solution["javascriptReturn"] == []


@deferred_f_from_coro_f
async def test_screenshot_is_a_png_of_the_requested_size(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    solution = await _get(
        api,
        browser_site.url("/js/1"),
        screenshot=True,
        screenshotWidth=640,
        screenshotHeight=360,
    )
    png = base64.b64decode(solution["screenshot"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (640, 360)
    plain = await _get(api, browser_site.url("/js/1"))
    assert "screenshot" not in plain


@deferred_f_from_coro_f
async def test_css_selector_and_inner_text(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    solution = await _get(
        api, browser_site.url("/js/3"), cssSelector="#n", innerText=True
    )
    assert solution["response"] == '<p id="n">rendered 3</p>'
    assert solution["innerText"] == "rendered 3"
    missing = await api.cmd(
        "request.get", url=browser_site.url("/js/3"), cssSelector="#nope"
    )
    assert missing["data"] == "error"
    assert missing["error"].startswith("CODE-0027")


@deferred_f_from_coro_f
async def test_request_type_request_uses_the_session_cookies(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    session = await api.create("s")
    await _get(api, browser_site.url("/set-cookie"), session=session)
    solution = await _get(
        api,
        browser_site.url("/echo"),
        session=session,
        requestType="request",
        cookies="extra=1",
    )
    echo = json.loads(solution["response"])
    assert solution["type"] == "request"
    assert echo["cookies"] == {"sid": "s1", "extra": "1"}
    assert echo["headers"]["User-Agent"] == solution["userAgent"]


@deferred_f_from_coro_f
async def test_post_sends_method_body_and_headers(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    reply = await api.cmd(
        "request.post",
        url=browser_site.url("/echo"),
        postData="a=1&b=2",
        customHeaders={"X-Test": "yes"},
        innerText=True,
    )
    echo = json.loads(reply["solution"]["innerText"])
    assert (echo["method"], echo["body"]) == ("POST", "a=1&b=2")
    assert echo["headers"]["X-Test"] == "yes"


@deferred_f_from_coro_f
async def test_cookie_and_browser_shapes_are_tolerated(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    session = await api.create("shapes", browser="chrome")
    shapes = [
        "a=1; b=2",
        [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
        {"a": "1", "b": "2"},
    ]
    seen = []
    for cookies in shapes:
        solution = await _get(
            api,
            browser_site.url("/echo"),
            cookies=cookies,
            innerText=True,
            browser=[{"name": "chrome"}],
        )
        seen.append(json.loads(solution["innerText"])["cookies"])
    assert seen == [{"a": "1", "b": "2"}] * 3
    bad = await api.cmd(
        "request.get", url=browser_site.url("/echo"), cookies=5, session=session
    )
    assert bad["data"] == "error"
    assert "'cookies'" in bad["error"]


@deferred_f_from_coro_f
async def test_killed_browser_loses_its_sessions_and_is_relaunched(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    launches = browser_engine.launches
    session = await api.create("doomed")
    await _get(api, browser_site.url("/set-cookie"), session=session)
    victim = browser_process()
    victim.kill()
    await asyncio.get_running_loop().run_in_executor(None, victim.wait, 10)
    reply = await api.cmd("request.get", url=browser_site.url("/js/1"), session=session)
    assert reply["data"] == "error"
    assert reply["error"] == "Session not found: doomed"
    fresh = await api.create("fresh")
    solution = await _get(api, browser_site.url("/js/2"), session=fresh)
    stats = api.server.stats()
    assert "rendered 2" in solution["response"]
    assert solution["cookies"] == []
    assert browser_engine.launches == launches + 1
    assert stats["sessions"]["lost"] == 1
    assert stats["open_sessions"] == ["fresh"]


@deferred_f_from_coro_f
async def test_browser_engine_caps_sessions_at_20_by_default(
    started, make_local_server, browser_engine
):
    api = await _api(started, make_local_server, engine=browser_engine)
    for i in range(20):
        await api.create(f"s{i}")
    reply = await api.cmd("sessions.create", session="one-too-many")
    assert reply["data"] == "error"
    assert reply["error"].startswith("CODE-0029")
    assert api.server.stats()["sessions"]["open"] == 20


@deferred_f_from_coro_f
async def test_max_sessions_overrides_the_browser_default(
    started, make_local_server, browser_engine
):
    api = await _api(started, make_local_server, engine=browser_engine, max_sessions=2)
    await api.create("a")
    await api.create("b")
    reply = await api.cmd("sessions.create", session="c")
    assert reply["error"].startswith("CODE-0029")


@deferred_f_from_coro_f
async def test_video_is_served_as_motion_jpeg(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    actions = [{"type": "type", "cssSelector": "#q", "text": "abc"}]
    solution = await _get(
        api, browser_site.url("/form"), video=True, browserActions=actions
    )
    url = solution["videoUrl"]
    assert url.startswith(api.server.base_url + "/__local__/videos/")
    async with api.http.get(url) as response:
        body = await response.read()
        content_type = response.headers["Content-Type"]
    assert content_type == "multipart/x-mixed-replace; boundary=frame"
    frames = body.count(b"Content-Type: image/jpeg")
    assert frames >= 1
    assert body.count(b"\xff\xd8\xff") == frames  # one JPEG per part
    assert body.endswith(b"--frame--\r\n")
    async with api.http.get(api.server.base_url + "/__local__/videos/nope") as gone:
        assert gone.status == 404
    plain = await _get(api, browser_site.url("/form"))
    assert "videoUrl" not in plain


@deferred_f_from_coro_f
async def test_concurrent_first_requests_share_one_context(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    session = await api.create("twin")
    await asyncio.gather(
        _get(api, browser_site.url("/set-cookie"), session=session),
        _get(api, browser_site.url("/js/2"), session=session),
    )
    echo = await _get(api, browser_site.url("/echo"), session=session, innerText=True)
    engine = api.server.stats()["engine"]
    assert (engine["contexts"], engine["browser_contexts"]) == (1, 1)
    assert json.loads(echo["innerText"])["cookies"] == {"sid": "s1"}
    assert api.server.stats()["max_concurrent_by_session"] == {"twin": 2}


@deferred_f_from_coro_f
async def test_reused_page_keeps_one_listener_and_reports_its_own_load(
    started, make_local_server, browser_engine, browser_site
):
    api = await _api(started, make_local_server, engine=browser_engine)
    session = await api.create("reuse")
    urls = [browser_site.url(p) for p in ("/challenge/0", "/js/1", "/js/2")]
    seen = []
    for url in urls:
        solution = await _get(api, url, session=session)
        seen.append((solution["statusCode"], solution["currentUrl"]))
    assert seen == [(200, url) for url in urls]
    # Listeners cost driver messages: added once per page, not per request.
    (slot,) = api.server.engine._slots.values()  # type: ignore[attr-defined]
    (page,) = slot.idle
    events = page._impl_obj  # the public Page does not count listeners
    counts = {e: events.listener_count(e) for e in ("request", "response")}
    assert counts == {"request": 1, "response": 1}
